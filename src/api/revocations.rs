//! The admin revocation routes: `POST /admin/v1/revocations` (a JSON Lines bulk upload,
//! streamed into one durable log record, all or nothing) and
//! `GET /admin/v1/revocations/{kind}/{id}`.

use http_body_util::BodyExt;
use hyper::StatusCode;

use super::body::{body_too_large, refuse_declared_length};
use super::error::json_response;
use super::{ApiError, Handled, Request};
use crate::gateway::Gateway;
use crate::id::{self, Id};
use crate::revocation::{self, Kind};

/// Streams a JSON Lines body into one log record: each piece is parsed as it arrives, so
/// memory holds the packed entries, not the text. All or nothing.
pub(super) async fn post_revocations(
    gateway: &Gateway,
    request: Request,
) -> Result<Handled, ApiError> {
    let limit = gateway.settings().max_admin_body_bytes;
    let too_large = || body_too_large(limit);
    refuse_declared_length(&request, limit)?;
    let mut body = request.into_body();
    let mut stream = revocation::import::JsonlStream::default();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::BadRequest("the body could not be read".into()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len();
        if received > limit {
            return Err(too_large());
        }
        stream
            .feed(&data)
            .map_err(|error| ApiError::BadRequest(format!("nothing applied: {error}")))?;
    }
    let record = stream
        .finish()
        .map_err(|error| ApiError::BadRequest(format!("nothing applied: {error}")))?;
    let items = record.len();
    let sequence = match gateway.feed() {
        // Shared: answered once the feed's Redis holds it; every instance applies it from
        // there, this one included.
        Some(feed) => {
            let deadline = std::time::Instant::now() + gateway.settings().request_timeout * 3 / 4;
            let published = feed
                .publish(&record, deadline, &gateway.metrics().feed_publish)
                .await;
            let sequence = published.map_err(|error| {
                ApiError::Unavailable(format!(
                    "the revocation feed did not confirm the update ({error}); it may or may not have been applied: send it again (applying twice is harmless)"
                ))
            })?;
            Some(sequence)
        }
        None => {
            gateway
                .revocations()
                .commit_record(record)
                .await
                .map_err(|error| ApiError::Unavailable(format!("nothing applied: {error}")))?;
            None
        }
    };
    let feed = sequence.map_or(String::new(), |n| format!(",\"feed_sequence\":{n}"));
    let body = format!(
        "{{\"applied\":{items},\"entries\":{}{feed}}}",
        gateway.revocations().list().len()
    );
    Ok(Handled {
        response: json_response(StatusCode::OK, body),
        items,
        tenant: None,
    })
}

pub(super) fn get_revocation(gateway: &Gateway, path: &str) -> Result<Handled, ApiError> {
    let rest = path
        .strip_prefix("/admin/v1/revocations/")
        .unwrap_or_default();
    let (kind, id) = rest.split_once('/').ok_or(ApiError::NotFound)?;
    let kind = Kind::parse(kind).ok_or(ApiError::BadRequest(
        "kind must be subject or credential".into(),
    ))?;
    let id =
        Id::parse(id).ok_or_else(|| ApiError::BadRequest(format!("not an ID ({})", id::RULE)))?;
    let record = gateway
        .revocations()
        .list()
        .lookup(kind, id)
        .ok_or(ApiError::NotFound)?;
    let body = serde_json::json!({
        "kind": kind.as_str(),
        "id": id.as_str(),
        "status": record.status.as_str(),
        "reason": record.reason.map(|r| r.as_str()),
        "before": record.before,
        "at": record.at,
    });
    Ok(Handled::plain(json_response(
        StatusCode::OK,
        body.to_string(),
    )))
}
