//! HTTP: routes and the request and response shapes of SPEC §4. The only module that knows
//! HTTP, JSON request bodies and status codes.
//!
//! One file per route ([`route`] lists them): `verify.rs`, `signatures.rs`, `status.rs`,
//! `revocations.rs`, `trust.rs`, `probes.rs`; the steps they share are `access.rs`
//! (authentication and admission) and `body.rs` (limits and JSON parsing); this file is the
//! entry point and the dispatch.
//!
//! Every request gets a request id (`x-request-id`, taken from the client when it is a short
//! token, generated otherwise), one structured log line, and metrics by route and status.
//! **Invariant:** logs and errors carry counts, routes, tenants and ids — never presentations,
//! ID numbers or keys; a malformed body's error describes its shape, never its content
//! (`json_error`).

mod access;
mod body;
pub mod error;
mod probes;
mod revocations;
pub mod route;
mod signatures;
mod status;
mod trust;
mod verify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Method;
use hyper::header::{HeaderMap, HeaderValue};

pub use error::ApiError;
pub use route::Route;

use crate::gateway::Gateway;
use crate::metrics::Shed;

pub type Request = hyper::Request<hyper::body::Incoming>;
pub type Response = hyper::Response<Full<Bytes>>;

/// Which listener a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Public,
    Operator,
}

/// What a handler reports besides its response (for the log line and metrics).
pub(super) struct Handled {
    pub(super) response: Response,
    pub(super) items: usize,
    pub(super) tenant: Option<String>,
}

impl Handled {
    pub(super) fn plain(response: Response) -> Handled {
        Handled {
            response,
            items: 0,
            tenant: None,
        }
    }
}

/// The client's `x-request-id` if it is a short token, else a fresh one.
fn request_id(headers: &HeaderMap) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok())
        && (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return id.to_string();
    }
    format!(
        "{:08x}{:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Time allowed for one `POST /admin/v1/revocations` (a large bulk upload).
const BULK_UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Entry point for every request on either listener.
pub async fn handle(gateway: Gateway, listener: Listener, request: Request) -> Response {
    let started = Instant::now();
    let request_id = request_id(request.headers());
    let method = request.method().clone();
    let route = Route::of(listener, &method, request.uri().path());
    // Bulk revocation uploads may be large (streamed, up to `max_admin_body_bytes`).
    let timeout = if route == Route::AdminRevocationsPost {
        gateway.settings().request_timeout.max(BULK_UPLOAD_TIMEOUT)
    } else {
        gateway.settings().request_timeout
    };
    let handled =
        match tokio::time::timeout(timeout, dispatch(&gateway, listener, route, request)).await {
            Ok(Ok(handled)) => handled,
            Ok(Err(error)) => {
                match &error {
                    ApiError::RateLimited(_) => gateway.metrics().shed(Shed::RateLimit),
                    ApiError::Overloaded(_) => gateway.metrics().shed(Shed::Pending),
                    ApiError::TooLarge(_) => gateway.metrics().shed(Shed::TooLarge),
                    _ => {}
                }
                Handled::plain(error.response())
            }
            Err(_) => {
                gateway.metrics().shed(Shed::Timeout);
                Handled::plain(ApiError::Timeout.response())
            }
        };
    let mut response = handled.response;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    gateway
        .metrics()
        .request(route.index(), status, elapsed.as_secs_f64());
    tracing::info!(
        target: "idgate::request",
        request_id = %request_id,
        method = %method,
        route = route.as_str(),
        status,
        duration_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
        items = handled.items,
        tenant = handled.tenant.as_deref().unwrap_or("-"),
    );
    response
}

async fn dispatch(
    gateway: &Gateway,
    listener: Listener,
    route: Route,
    request: Request,
) -> Result<Handled, ApiError> {
    let method = request.method().clone();
    let needs = |expected: Method| {
        if method == expected {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed)
        }
    };
    match route {
        Route::Verify => {
            needs(Method::POST)?;
            verify::verify(gateway, request).await
        }
        Route::Signatures => {
            needs(Method::POST)?;
            signatures::signatures(gateway, request).await
        }
        Route::Status => {
            needs(Method::POST)?;
            status::status(gateway, request).await
        }
        Route::Metrics => {
            needs(Method::GET)?;
            Ok(probes::metrics(gateway))
        }
        Route::Livez => Ok(probes::livez()),
        Route::Readyz => Ok(probes::readyz(gateway)),
        Route::AdminRevocationsPost => {
            access::admin_auth(gateway, &request)?;
            revocations::post_revocations(gateway, request).await
        }
        Route::AdminRevocationsGet => {
            needs(Method::GET)?;
            access::admin_auth(gateway, &request)?;
            revocations::get_revocation(gateway, request.uri().path())
        }
        Route::AdminTrustReload => {
            needs(Method::POST)?;
            access::admin_auth(gateway, &request)?;
            trust::reload_trust(gateway)
        }
        Route::Other
            if listener == Listener::Operator
                && request.uri().path() == "/admin/v1/revocations" =>
        {
            Err(ApiError::MethodNotAllowed)
        }
        Route::Other => Err(ApiError::NotFound),
    }
}
