//! Who may call, and whether now: tenant and admin authentication, then admission (item
//! count, the tenant's rate limit, the pending bound — in that order, so a request that could
//! never run does not spend the tenant's budget).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::{AUTHORIZATION, HeaderValue};

use super::{ApiError, Request};
use crate::gateway::{Gateway, Reservation, Tenant, tenants};

/// The tenant whose API key the request bears.
pub(super) fn authenticate(gateway: &Gateway, request: &Request) -> Result<Arc<Tenant>, ApiError> {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    gateway
        .tenants()
        .authenticate(header)
        .ok_or(ApiError::Unauthorized)
}

/// The admin token, compared in constant time; the admin API is off without one.
pub(super) fn admin_auth(gateway: &Gateway, request: &Request) -> Result<(), ApiError> {
    let expected = gateway
        .settings()
        .admin_token_sha256
        .ok_or(ApiError::Forbidden(
            "the admin API is disabled (set admin.token_sha256)",
        ))?;
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if tenants::token_matches(header, &expected) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Item count, tenant rate limit, pending bound: in that order.
pub(super) fn admit(
    gateway: &Gateway,
    tenant: &Tenant,
    items: usize,
) -> Result<Reservation, ApiError> {
    let max = gateway.settings().max_batch_items;
    if items > max {
        return Err(ApiError::TooLarge(format!(
            "{items} items; at most {max} per request"
        )));
    }
    tenant
        .admit(items as u64, Instant::now())
        .map_err(ApiError::RateLimited)?;
    gateway
        .reserve(items)
        .ok_or(ApiError::Overloaded(Duration::from_secs(1)))
}
