//! What each item of a batch is checked against: the policy (a tenant's, or the offline tool's),
//! and the batch itself with its per-item options.
//!
//! **Invariant:** there is no lenient default on a request path. [`Policy::default`] exists for
//! the offline tools and tests; a batch whose per-item options are missing falls back to
//! [`STRICT`], which refuses everything it can.

use super::presentation;

/// The accepted clock skew when the configuration names none (seconds, SPEC §3).
pub const DEFAULT_CLOCK_SKEW_S: i64 = 5;

/// The oldest a KB-JWT may be when the configuration names no age (seconds, SPEC §3).
pub const DEFAULT_MAX_PRESENTATION_AGE_S: i64 = 60;

/// Which audiences a KB-JWT may name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audiences {
    /// Any audience (the offline verifier without `--audience`).
    Any,
    /// Exactly these strings (a tenant's `audiences`).
    Only(Vec<String>),
}

impl Audiences {
    pub(super) fn accepts(&self, claimed: &[presentation::Text]) -> bool {
        match self {
            Audiences::Any => true,
            Audiences::Only(allowed) => claimed
                .iter()
                .any(|aud| allowed.iter().any(|a| a.as_str() == aud.as_str())),
        }
    }
}

/// The checks' tunables: a tenant's policy plus the global time settings.
#[derive(Clone, Debug)]
pub struct Policy {
    pub clock_skew_s: i64,
    pub max_presentation_age_s: i64,
    pub require_key_binding: bool,
    pub audiences: Audiences,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            clock_skew_s: DEFAULT_CLOCK_SKEW_S,
            max_presentation_age_s: DEFAULT_MAX_PRESENTATION_AGE_S,
            require_key_binding: true,
            audiences: Audiences::Any,
        }
    }
}

/// One batch to verify.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a, S> {
    pub presentations: &'a [S],
    /// Unix seconds; every time check uses this.
    pub now: i64,
    pub options: Options<'a>,
}

/// The policy and `return_claims` of a batch's items: one for all, or one per item (small
/// requests of several tenants verified together).
#[derive(Clone, Copy, Debug)]
pub enum Options<'a> {
    Same {
        policy: &'a Policy,
        return_claims: bool,
    },
    PerItem(&'a [(&'a Policy, bool)]),
}

impl<'a, S> Batch<'a, S> {
    /// A batch whose items share one policy.
    pub fn new(
        presentations: &'a [S],
        now: i64,
        policy: &'a Policy,
        return_claims: bool,
    ) -> Batch<'a, S> {
        Batch {
            presentations,
            now,
            options: Options::Same {
                policy,
                return_claims,
            },
        }
    }

    /// Policy and `return_claims` of item `index`. A per-item list shorter than the batch (a
    /// caller bug) falls back to the strictest reading: the first entry, without claims.
    pub(super) fn item(&self, index: usize) -> (&'a Policy, bool) {
        match self.options {
            Options::Same {
                policy,
                return_claims,
            } => (policy, return_claims),
            Options::PerItem(items) => match items.get(index).or(items.first()) {
                Some(&(policy, return_claims)) => (policy, return_claims),
                None => (&STRICT, false),
            },
        }
    }
}

/// The policy used if a caller passes no per-item policy at all: everything refused that can be.
pub static STRICT: Policy = Policy {
    clock_skew_s: 0,
    max_presentation_age_s: 0,
    require_key_binding: true,
    audiences: Audiences::Only(Vec::new()),
};
