//! `POST /admin/v1/trust/reload`: re-reads the trust store; a store that fails to load leaves
//! the previous keys in force.

use hyper::StatusCode;

use super::error::json_response;
use super::{ApiError, Handled};
use crate::gateway::Gateway;

pub(super) fn reload_trust(gateway: &Gateway) -> Result<Handled, ApiError> {
    match gateway.reload_trust() {
        Ok(keys) => {
            tracing::info!(keys, "trust store reloaded");
            Ok(Handled::plain(json_response(
                StatusCode::OK,
                format!("{{\"keys\":{keys}}}"),
            )))
        }
        Err(error) => {
            tracing::warn!(error = %error, "trust store reload refused; the previous keys stay in force");
            Err(ApiError::BadRequest(format!(
                "trust store not reloaded, the previous keys stay in force: {error}"
            )))
        }
    }
}
