//! Tenants: who may call the API, with which policy, how fast.
//!
//! **Invariants:** API keys are never stored, only their SHA-256; a presented key is hashed and
//! compared with *every* tenant's hash in constant time, so neither the result nor the time taken
//! tells an attacker how close a guess was or which tenant it nearly matched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::TenantSettings;
use crate::verify::{Audiences, Policy};

/// One tenant.
#[derive(Debug)]
pub struct Tenant {
    /// Position in the config (metrics index).
    pub index: usize,
    pub name: String,
    key_sha256: [u8; 32],
    pub policy: Policy,
    pub allow_status_queries: bool,
    limiter: Option<RateLimiter>,
}

impl Tenant {
    /// Takes `items` from the tenant's rate budget; `Err` is how long to wait (`Retry-After`).
    pub fn admit(&self, items: u64, now: Instant) -> Result<(), Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(limiter) => limiter.take(items, now),
        }
    }
}

/// Token bucket in items per second with a one-second burst. A request larger than the burst is
/// admitted when the bucket is not in debt and leaves it in debt, so big requests are never
/// starved yet the long-run rate holds.
///
/// Hand-written rather than `governor`: governor's GCRA answers a request for more cells than
/// its burst with `InsufficientCapacity`, forever — a tenant limited to 1,000 items/s could never
/// send the 10,000-item batch `max_batch_items` allows. Admitting into debt keeps every
/// allowed request possible (SPEC §4: a tenant's item rate limit, `429` with `Retry-After`),
/// and it is a dozen lines under one mutex taken once per request.
#[derive(Debug)]
struct RateLimiter {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    fn new(rate: u64) -> RateLimiter {
        RateLimiter {
            rate: rate as f64,
            state: Mutex::new((rate as f64, Instant::now())),
        }
    }

    fn take(&self, items: u64, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock();
        let (tokens, last) = *state;
        let refilled =
            (tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate).min(self.rate);
        if refilled < 0.0 {
            *state = (refilled, now);
            return Err(Duration::from_secs_f64(-refilled / self.rate));
        }
        *state = (refilled - items as f64, now);
        Ok(())
    }
}

/// All tenants, for authentication. A tenant is handed out as an `Arc<Tenant>`: a handle that
/// is always a real tenant with its real policy, so no code path needs a fallback policy.
#[derive(Debug)]
pub struct Tenants {
    tenants: Vec<Arc<Tenant>>,
}

impl Tenants {
    pub fn new(
        settings: &[TenantSettings],
        clock_skew_s: i64,
        max_presentation_age_s: i64,
    ) -> Tenants {
        let tenants = settings
            .iter()
            .enumerate()
            .map(|(index, tenant)| {
                Arc::new(Tenant {
                    index,
                    name: tenant.name.clone(),
                    key_sha256: tenant.api_key_sha256,
                    policy: Policy {
                        clock_skew_s,
                        max_presentation_age_s,
                        require_key_binding: tenant.require_key_binding,
                        audiences: Audiences::Only(tenant.audiences.clone()),
                    },
                    allow_status_queries: tenant.allow_status_queries,
                    limiter: (tenant.rate_limit_items_per_s > 0)
                        .then(|| RateLimiter::new(tenant.rate_limit_items_per_s)),
                })
            })
            .collect();
        Tenants { tenants }
    }

    /// The tenant whose key is `Authorization: Bearer <key>`, if any.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Option<Arc<Tenant>> {
        let key = bearer_token(authorization?)?;
        let presented: [u8; 32] = Sha256::digest(key).into();
        let mut found = None;
        // No early exit: every tenant is compared, whatever matches.
        for tenant in &self.tenants {
            if bool::from(tenant.key_sha256.ct_eq(&presented)) {
                found = Some(tenant);
            }
        }
        found.map(Arc::clone)
    }

    pub fn names(&self) -> Vec<String> {
        self.tenants.iter().map(|t| t.name.clone()).collect()
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let rest = value
        .strip_prefix(b"Bearer ")
        .or_else(|| value.strip_prefix(b"bearer "))?;
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Constant-time check of a bearer token against a configured SHA-256 (the admin token).
pub fn token_matches(authorization: Option<&[u8]>, expected_sha256: &[u8; 32]) -> bool {
    let Some(token) = authorization.and_then(bearer_token) else {
        return false;
    };
    let presented: [u8; 32] = Sha256::digest(token).into();
    bool::from(presented.ct_eq(expected_sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants(rate: u64) -> Tenants {
        let settings = TenantSettings {
            name: "bank-a".into(),
            api_key_sha256: Sha256::digest(b"secret-key").into(),
            audiences: vec!["aud".into()],
            require_key_binding: true,
            allow_status_queries: false,
            rate_limit_items_per_s: rate,
        };
        Tenants::new(&[settings], 5, 60)
    }

    #[test]
    fn only_the_right_bearer_key_authenticates() {
        let tenants = tenants(0);
        assert_eq!(
            tenants
                .authenticate(Some(b"Bearer secret-key"))
                .map(|t| t.name.clone()),
            Some("bank-a".to_string())
        );
        assert!(tenants.authenticate(Some(b"Bearer secret-kez")).is_none());
        assert!(tenants.authenticate(Some(b"secret-key")).is_none());
        assert!(tenants.authenticate(Some(b"Bearer ")).is_none());
        assert!(tenants.authenticate(None).is_none());
    }

    #[test]
    fn the_rate_limit_holds_over_time_and_says_when_to_retry() {
        let tenants = tenants(100);
        let tenant = tenants.authenticate(Some(b"Bearer secret-key")).unwrap();
        let start = Instant::now();
        assert!(tenant.admit(100, start).is_ok());
        // Bucket empty but not in debt: one more request is admitted, leaving debt.
        assert!(tenant.admit(50, start).is_ok());
        let wait = tenant.admit(1, start).unwrap_err();
        assert!((0.45..=0.55).contains(&wait.as_secs_f64()), "{wait:?}");
        assert!(tenant.admit(1, start + Duration::from_millis(600)).is_ok());
        // A request bigger than the burst still gets through when the bucket has recovered.
        assert!(tenant.admit(1000, start + Duration::from_secs(5)).is_ok());
        assert!(tenant.admit(1, start + Duration::from_secs(6)).is_err());
    }
}
