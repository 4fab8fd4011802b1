//! `POST /v1/status`: the standing of ID numbers and credential serials, in bulk (SPEC §4).

use std::borrow::Cow;
use std::io::Write as _;

use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;

use super::access::{admit, authenticate};
use super::body::{parse_json, read_body};
use super::error::json_response;
use super::{ApiError, Handled, Request, Route};
use crate::clock::unix_now;
use crate::gateway::{Gateway, Texts};
use crate::id::{self, Id};
use crate::revocation::{Kind, Record, Status};
use crate::verify::RevocationSource;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusRequest<'a> {
    #[serde(borrow, default)]
    subjects: Vec<Cow<'a, str>>,
    #[serde(borrow, default)]
    credentials: Vec<Cow<'a, str>>,
}

/// Appends one status result. An [`Id`] is `[A-Za-z0-9._-]` only, so it needs no escaping.
fn write_status(out: &mut Vec<u8>, kind: Kind, id: Id<'_>, record: Option<Record>, current: bool) {
    out.extend_from_slice(b"{\"kind\":\"");
    out.extend_from_slice(kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"id\":\"");
    out.extend_from_slice(id.as_str().as_bytes());
    let writer = out;
    match record {
        _ if !current => {
            let _ = write!(writer, "\",\"status\":\"undetermined\"}}");
        }
        Some(record) if record.status != Status::Active => {
            let reason = record.reason.map_or("other", |r| r.as_str());
            match (kind, record.before) {
                // A subject with `before` is in good standing now; only older credentials are
                // affected (a lost phone, re-provisioned).
                (Kind::Subject, Some(before)) => {
                    let _ = write!(
                        writer,
                        "\",\"status\":\"active\",\"reason\":\"{reason}\",\"since\":{},\"revoked_before\":{before}}}",
                        record.at
                    );
                }
                _ => {
                    let _ = write!(
                        writer,
                        "\",\"status\":\"{}\",\"reason\":\"{reason}\",\"since\":{}}}",
                        record.status.as_str(),
                        record.at
                    );
                }
            }
        }
        _ => {
            let _ = write!(writer, "\",\"status\":\"active\"}}");
        }
    }
}

pub(super) async fn status(gateway: &Gateway, request: Request) -> Result<Handled, ApiError> {
    let tenant = authenticate(gateway, &request)?;
    if !tenant.allow_status_queries {
        return Err(ApiError::Forbidden(
            "this tenant may not make status queries",
        ));
    }
    let body = read_body(request, gateway.settings().max_body_bytes).await?;
    let parsed: StatusRequest<'_> = parse_json(&body)?;
    for (list, name) in [
        (&parsed.subjects, "subjects"),
        (&parsed.credentials, "credentials"),
    ] {
        if let Some(index) = list.iter().position(|text| Id::parse(text).is_none()) {
            return Err(ApiError::BadRequest(format!(
                "{name}[{index}] is not an ID ({})",
                id::RULE
            )));
        }
    }
    let items = parsed.subjects.len() + parsed.credentials.len();
    let reservation = admit(gateway, &tenant, items)?;
    gateway.metrics().batch(Route::Status.index(), items);
    let mut subjects = Texts::new(body.clone());
    parsed.subjects.iter().for_each(|id| subjects.push(id));
    let mut credentials = Texts::new(body.clone());
    parsed
        .credentials
        .iter()
        .for_each(|id| credentials.push(id));
    let engine_side = gateway.clone();
    let body = gateway
        .on_engine(move || {
            let _reservation = reservation;
            let list = engine_side.revocations().list();
            let now = unix_now();
            let current = list.is_current(now);
            let mut out = Vec::with_capacity(48 + items * 64);
            let _ = write!(out, "{{\"as_of\":{},\"results\":[", list.as_of(now));
            let mut first = true;
            for (kind, ids) in [(Kind::Subject, &subjects), (Kind::Credential, &credentials)] {
                for index in 0..ids.len() {
                    if !std::mem::take(&mut first) {
                        out.push(b',');
                    }
                    // Checked before admission, so always an ID; were it not, the answer is
                    // `undetermined`, never a standing.
                    match Id::parse(ids.get(index)) {
                        Some(id) => {
                            write_status(&mut out, kind, id, list.lookup(kind, id), current)
                        }
                        None => {
                            let _ = write!(
                                out,
                                "{{\"kind\":\"{}\",\"status\":\"undetermined\"}}",
                                kind.as_str()
                            );
                        }
                    }
                }
            }
            out.extend_from_slice(b"]}");
            Bytes::from(out)
        })
        .await
        .map_err(|_| ApiError::Internal("status lookup failed"))?;
    Ok(Handled {
        response: json_response(StatusCode::OK, body),
        items,
        tenant: Some(tenant.name.clone()),
    })
}
