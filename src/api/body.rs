//! Request bodies: size limits (refused before reading when the length is declared) and JSON
//! parsing whose errors never echo the body.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::header::CONTENT_LENGTH;
use serde::Deserialize;

use super::{ApiError, Request};

pub(super) fn body_too_large(limit: usize) -> ApiError {
    ApiError::TooLarge(format!("the body is larger than {limit} bytes"))
}

/// Refuses a body whose declared `Content-Length` is over `limit`, before reading any of it.
pub(super) fn refuse_declared_length(request: &Request, limit: usize) -> Result<(), ApiError> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(body_too_large(limit));
    }
    Ok(())
}

/// Reads the whole body, refusing more than `limit` bytes (before reading, when the client
/// declares a length).
pub(super) async fn read_body(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || body_too_large(limit);
    refuse_declared_length(&request, limit)?;
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error)
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(_) => Err(ApiError::BadRequest("the body could not be read".into())),
    }
}

/// Parses a JSON body; the error describes the problem without quoting any of the body (see
/// `json_error`).
pub(super) fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        ApiError::BadRequest(format!(
            "malformed request body: {}",
            crate::json_error::describe(&error)
        ))
    })
}
