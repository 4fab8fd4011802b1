//! The cache of verified issuer-signed JWTs.
//!
//! A holder shows the same credential many times (a fresh KB-JWT each time); with this cache the
//! repeat costs one signature (the holder's), not two.
//!
//! The cache is quick_cache (S3-FIFO-style, sharded): the design card named moka, but measured
//! here (BENCHMARKS.md, "Criterion details"; `cargo bench --bench engine -- issuer_cache`) 4,096
//! misses-and-inserts cost 2.52 ms with moka against 0.57 ms with quick_cache (0.62 µs vs 0.14 µs
//! each, 4.4×) and 4,096 hits 0.99 ms against 0.18 ms (0.24 µs vs 0.04 µs, 5.6×), which on fresh
//! presentations decides whether the cache pays for itself.
//!
//! **Invariants:**
//! - Key: SHA-256 of the issuer-JWT bytes, so a hit means byte-identical input whose issuer
//!   signature already passed the rule of SPEC §2 under this trust store.
//! - Only *verified* JWTs enter; a forged one is never cached (it would let cheap garbage evict
//!   honest entries, and a cached failure buys nothing).
//! - Stored: the parsed claims, nothing time-dependent. Time, key-binding, disclosure, status and
//!   replay checks run on every presentation.
//! - The cache belongs to one trust-store snapshot (`TrustContext`): a reload builds a new,
//!   empty one, so no verdict outlives the keys it was made under.

use std::sync::Arc;

use super::presentation::IssuerJwt;

/// Default memory budget for cached issuer JWTs.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// Approximate memory of one cached JWT: its claims, skeleton and the cache's own overhead
/// (estimated as twice the decoded payload's length plus 1 KiB; the payload itself is not kept).
#[derive(Clone, Copy, Debug, Default)]
struct Footprint;

impl quick_cache::Weighter<[u8; 32], Arc<IssuerJwt>> for Footprint {
    fn weight(&self, _key: &[u8; 32], jwt: &Arc<IssuerJwt>) -> u64 {
        (jwt.payload_len * 2 + 1024) as u64
    }
}

type Inner =
    quick_cache::sync::Cache<[u8; 32], Arc<IssuerJwt>, Footprint, foldhash::fast::RandomState>;

/// Bounded, concurrent cache of verified issuer JWTs.
#[derive(Clone)]
pub struct IssuerCache {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for IssuerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerCache")
            .field("entries", &self.len())
            .finish()
    }
}

impl IssuerCache {
    /// A cache holding roughly `max_bytes` of parsed JWTs; 0 disables caching.
    pub fn new(max_bytes: u64) -> IssuerCache {
        let options = quick_cache::OptionsBuilder::new()
            // Typical entries weigh about 2 KiB.
            .estimated_items_capacity((max_bytes / 2048).max(16) as usize)
            .weight_capacity(max_bytes)
            .build();
        // Invalid options (only a zero capacity) mean no cache, which is always correct.
        let inner = match options {
            Ok(options) if max_bytes > 0 => Some(Arc::new(Inner::with_options(
                options,
                Footprint,
                foldhash::fast::RandomState::default(),
                Default::default(),
            ))),
            _ => None,
        };
        IssuerCache { inner }
    }

    /// A cached, verified issuer JWT with this key.
    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<IssuerJwt>> {
        self.inner.as_ref()?.get(key)
    }

    /// Records a verified issuer JWT.
    pub fn insert(&self, key: [u8; 32], jwt: Arc<IssuerJwt>) {
        if let Some(cache) = &self.inner {
            cache.insert(key, jwt);
        }
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| c.len() as u64)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
