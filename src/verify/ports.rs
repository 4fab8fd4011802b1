//! The ports: what the checks need from the rest of the system, as interfaces `verify/` owns and
//! other modules implement — issuer keys ([`KeyLookup`], by `trust::TrustStore`), revocation
//! ([`RevocationSource`], by `revocation::RevocationList`) and replay ([`ReplayGuard`], by
//! `replay::MemoryReplayStore`).
//!
//! **Architecture invariant:** `verify/` imports none of `trust`, `config`, `gateway`, `api`,
//! `replay`, `revocation`, `server`, `cli`; the dependency runs from them to these traits.

use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::cache::IssuerCache;
use crate::ed25519::CheckedKey;

/// A trusted issuer key as check 4 sees it.
#[derive(Clone, Copy, Debug)]
pub struct IssuerKey<'a> {
    pub key: &'a CheckedKey,
    /// The key's position in its store: signatures under one key share a batch term.
    pub group: u32,
    /// The issuer (`iss`) the key belongs to; `None` means any issuer.
    pub issuer: Option<&'a str>,
    /// Whether the key may vouch for the credential asked about (status and validity window).
    pub valid_for_credential: bool,
}

/// Issuer keys by `kid`; implemented by `trust::TrustStore`.
pub trait KeyLookup: Send + Sync + std::fmt::Debug {
    /// The key with this `kid`, judged for a credential issued at `credential_iat`.
    fn issuer_key(&self, kid: &str, credential_iat: i64) -> Option<IssuerKey<'_>>;
    /// How many keys are trusted (`idgate_trust_keys`).
    fn key_count(&self) -> usize;
}

/// A trust-store snapshot together with the issuer cache made under it (see `cache.rs`).
#[derive(Debug)]
pub struct TrustContext {
    pub keys: Arc<dyn KeyLookup>,
    pub cache: IssuerCache,
}

impl TrustContext {
    pub fn new(keys: impl KeyLookup + 'static, cache_bytes: u64) -> TrustContext {
        TrustContext {
            keys: Arc::new(keys),
            cache: IssuerCache::new(cache_bytes),
        }
    }
}

/// What the revocation list says of one credential (check 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// No adverse entry applies.
    Good,
    Revoked {
        reason: &'static str,
        since: i64,
    },
    Suspended {
        reason: &'static str,
        since: i64,
    },
}

/// The revocation list as the checks see it; implemented by `revocation::RevocationList`.
pub trait RevocationSource: Sync {
    /// The standing of credential `jti` of subject `sub`, issued at `iat` (for `before`).
    fn standing(&self, sub: &str, jti: &str, iat: i64) -> Standing;
    /// False when the data is older than allowed (check 13, `status_undetermined`).
    fn is_current(&self, now: i64) -> bool;
}

/// A revocation source with no entries that is always current (tools run without a list).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRevocations;

impl RevocationSource for NoRevocations {
    fn standing(&self, _sub: &str, _jti: &str, _iat: i64) -> Standing {
        Standing::Good
    }
    fn is_current(&self, _now: i64) -> bool {
        true
    }
}

/// One replay check-and-insert request (check 14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayRequest {
    /// 128-bit digest of (`iss`, `jti`, KB `nonce`).
    pub key: u128,
    /// The KB-JWT's `iat` (for the start-up watermark).
    pub kb_iat: i64,
    /// When the entry may be forgotten: `kb.iat + max_presentation_age + skew`.
    pub expires_at: i64,
}

/// The replay store's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayAnswer {
    /// First use: recorded.
    Fresh,
    /// Already recorded.
    Replayed,
    /// Store full, unreachable, or the KB-JWT predates the watermark: fail closed.
    Unavailable,
}

/// The replay store as the checks see it. `check_and_insert` must be atomic per key: of any
/// number of concurrent calls with one key, exactly one gets `Fresh`.
pub trait ReplayGuard: Sync {
    fn check_and_insert(&self, requests: &[ReplayRequest], now: i64) -> Vec<ReplayAnswer>;
}

/// The replay "store" for [`crate::verify::Verifier::verify_before_replay`] when the replay step
/// is resolved later through [`crate::verify::Unresolved::into_requests`]: that path never
/// consults it, and if anything ever did, every item would fail closed (`Unavailable`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Deferred;

impl ReplayGuard for Deferred {
    fn check_and_insert(&self, requests: &[ReplayRequest], _now: i64) -> Vec<ReplayAnswer> {
        vec![ReplayAnswer::Unavailable; requests.len()]
    }
}

/// The replay key of SPEC §3: a 128-bit digest of (`iss`, `jti`, `nonce`), length-prefixed so
/// no two distinct triples share an encoding.
pub fn replay_key(iss: &str, jti: &str, nonce: &str) -> u128 {
    let mut hasher = Sha256::new();
    for field in [iss, jti, nonce] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field.as_bytes());
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

/// The shared state a batch is checked against.
#[derive(Clone, Copy)]
pub struct State<'a> {
    pub trust: &'a TrustContext,
    pub revocation: &'a dyn RevocationSource,
    pub replay: &'a dyn ReplayGuard,
}

impl std::fmt::Debug for State<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("trust_keys", &self.trust.keys.key_count())
            .finish_non_exhaustive()
    }
}
