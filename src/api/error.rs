//! Request-level errors and the one place that turns them into HTTP responses (SPEC §4).
//!
//! Error bodies are `{"error": {"code": "snake_case", "message": "..."}}`. Messages are written
//! here or are fixed texts from lower layers; they never echo request bytes, IDs or keys.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};

/// Why a request (not an item) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The body is not the JSON the route expects.
    BadRequest(String),
    /// No or unknown bearer key.
    Unauthorized,
    /// Authenticated, but not allowed this route.
    Forbidden(&'static str),
    NotFound,
    MethodNotAllowed,
    /// Body or item count over the limit.
    TooLarge(String),
    /// The tenant's item rate limit; retry after this long.
    RateLimited(Duration),
    /// Pending work is at its bound; retry after this long.
    Overloaded(Duration),
    /// The request did not finish in time.
    Timeout,
    /// A dependency failed (the revocation log, the pool); nothing was applied.
    Unavailable(String),
    Internal(&'static str),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::TooLarge(_) => "too_large",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::Timeout => "timeout",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::BadRequest(message)
            | ApiError::TooLarge(message)
            | ApiError::Unavailable(message) => message.clone(),
            ApiError::Unauthorized => {
                "a valid 'Authorization: Bearer <key>' header is required".into()
            }
            ApiError::Forbidden(why) | ApiError::Internal(why) => (*why).into(),
            ApiError::NotFound => "no such route or entry".into(),
            ApiError::MethodNotAllowed => "method not allowed on this route".into(),
            ApiError::RateLimited(_) => "the tenant's item rate limit is exceeded".into(),
            ApiError::Overloaded(_) => "too much verification work is pending".into(),
            ApiError::Timeout => "the request did not complete in time".into(),
        }
    }

    /// The HTTP response for this error.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({"error": {"code": self.code(), "message": self.message()}});
        let mut response = json_response(self.status(), body.to_string().into_bytes());
        let retry_after = match self {
            ApiError::RateLimited(wait) | ApiError::Overloaded(wait) => {
                Some(wait.as_secs_f64().ceil().max(1.0) as u64)
            }
            ApiError::Unavailable(_) => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A plain-text response (health and metrics endpoints).
pub fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
