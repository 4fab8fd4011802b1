//! `POST /v1/verify`: a tenant's presentations, verified through
//! [`Gateway::verify_presentations`]; verdicts rendered on the pool.

use std::borrow::Cow;
use std::io::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;

use super::access::{admit, authenticate};
use super::body::{parse_json, read_body};
use super::error::json_response;
use super::{ApiError, Handled, Request, Route};
use crate::gateway::{Gateway, Presentations, Texts, VerifyError};
use crate::verify::{Outcome, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest<'a> {
    #[serde(borrow)]
    presentations: Vec<Cow<'a, str>>,
    #[serde(default)]
    return_claims: bool,
}

/// `{"results": [...], "counts": {...}}`, and the outcome counts for metrics.
fn render_verdicts(verdicts: &[Verdict]) -> (Bytes, [u32; Outcome::ALL.len()]) {
    let mut counts = [0u32; Outcome::ALL.len()];
    let mut out = Vec::with_capacity(32 + verdicts.len() * 160);
    out.extend_from_slice(b"{\"results\":[");
    for (index, verdict) in verdicts.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        // Our own plain structs: serialising into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, verdict);
        if let Some(count) = counts.get_mut(verdict.outcome.index()) {
            *count += 1;
        }
    }
    out.extend_from_slice(b"],\"counts\":{");
    let mut first = true;
    for (outcome, count) in Outcome::ALL.iter().zip(counts) {
        if count > 0 {
            if !first {
                out.push(b',');
            }
            first = false;
            let _ = write!(out, "\"{}\":{count}", outcome.as_str());
        }
    }
    out.extend_from_slice(b"}}");
    (Bytes::from(out), counts)
}

pub(super) async fn verify(gateway: &Gateway, request: Request) -> Result<Handled, ApiError> {
    let tenant = authenticate(gateway, &request)?;
    let body = read_body(request, gateway.settings().max_body_bytes).await?;
    let parsed: VerifyRequest<'_> = parse_json(&body)?;
    let items = parsed.presentations.len();
    let reservation = admit(gateway, &tenant, items)?;
    gateway.metrics().batch(Route::Verify.index(), items);
    let mut texts = Texts::new(body.clone());
    for presentation in &parsed.presentations {
        texts.push(presentation);
    }
    let presentations = Presentations {
        tenant: Arc::clone(&tenant),
        texts,
        return_claims: parsed.return_claims,
        reservation,
    };
    let (body, counts) = gateway
        .verify_presentations(presentations, render_verdicts)
        .await
        .map_err(|error| match error {
            VerifyError::ShuttingDown => {
                ApiError::Unavailable("the gateway is shutting down".into())
            }
            VerifyError::EngineGone => ApiError::Internal("verification failed"),
        })?;
    for (outcome, count) in Outcome::ALL.iter().zip(counts) {
        if count > 0 {
            gateway
                .metrics()
                .verifications(tenant.index, *outcome, u64::from(count));
        }
    }
    Ok(Handled {
        response: json_response(StatusCode::OK, body),
        items,
        tenant: Some(tenant.name.clone()),
    })
}
