//! The operator's read-only routes: `GET /metrics`, `/livez`, `/readyz`.

use hyper::StatusCode;

use super::Handled;
use super::error::text_response;
use crate::gateway::Gateway;

pub(super) fn metrics(gateway: &Gateway) -> Handled {
    let text = gateway.metrics().render(&gateway.gauges());
    Handled::plain(text_response(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        text,
    ))
}

pub(super) fn livez() -> Handled {
    Handled::plain(text_response(StatusCode::OK, "text/plain", "ok\n"))
}

pub(super) fn readyz(gateway: &Gateway) -> Handled {
    Handled::plain(if gateway.is_ready() {
        text_response(StatusCode::OK, "text/plain", "ready\n")
    } else {
        text_response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
    })
}
