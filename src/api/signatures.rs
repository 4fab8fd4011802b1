//! `POST /v1/signatures/verify`: raw Ed25519 items under the same rule and engine.

use std::borrow::Cow;

use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;

use super::access::{admit, authenticate};
use super::body::{parse_json, read_body};
use super::error::json_response;
use super::{ApiError, Handled, Request, Route};
use crate::ed25519::SignatureError;
use crate::gateway::Gateway;
use crate::verify::SignatureInput;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignaturesRequest<'a> {
    #[serde(borrow)]
    items: Vec<SignatureItem<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureItem<'a> {
    #[serde(borrow)]
    public_key: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(borrow)]
    signature: Cow<'a, str>,
}

pub(super) async fn signatures(gateway: &Gateway, request: Request) -> Result<Handled, ApiError> {
    let tenant = authenticate(gateway, &request)?;
    let body = read_body(request, gateway.settings().max_body_bytes).await?;
    let parsed: SignaturesRequest<'_> = parse_json(&body)?;
    let items = parsed.items.len();
    let reservation = admit(gateway, &tenant, items)?;
    gateway.metrics().batch(Route::Signatures.index(), items);
    // base64url errors are item-level (`malformed`), not request-level.
    let inputs: Vec<Option<SignatureInput>> = parsed
        .items
        .iter()
        .map(|item| {
            Some(SignatureInput {
                public_key: crate::b64::decode(&item.public_key).ok()?,
                message: crate::b64::decode(&item.message).ok()?,
                signature: crate::b64::decode(&item.signature).ok()?,
            })
        })
        .collect();
    let engine_side = gateway.clone();
    let body = gateway
        .on_engine(move || {
            let _reservation = reservation;
            let usable: Vec<SignatureInput> = inputs
                .iter()
                .map(|i| i.clone().unwrap_or_default())
                .collect();
            let results = engine_side.verify_signatures(&usable);
            let mut out = Vec::with_capacity(16 + results.len() * 40);
            out.extend_from_slice(b"{\"results\":[");
            for (index, (input, result)) in inputs.iter().zip(results).enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                let result = if input.is_some() {
                    result
                } else {
                    Err(SignatureError::Malformed)
                };
                match result {
                    Ok(()) => out.extend_from_slice(b"{\"valid\":true}"),
                    Err(error) => {
                        out.extend_from_slice(b"{\"valid\":false,\"error\":\"");
                        out.extend_from_slice(error.as_str().as_bytes());
                        out.extend_from_slice(b"\"}");
                    }
                }
            }
            out.extend_from_slice(b"]}");
            Bytes::from(out)
        })
        .await
        .map_err(|_| ApiError::Internal("verification failed"))?;
    Ok(Handled {
        response: json_response(StatusCode::OK, body),
        items,
        tenant: Some(tenant.name.clone()),
    })
}
