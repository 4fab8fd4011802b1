//! Outcomes of SPEC §3 and the per-item verdict.
//!
//! **Invariant:** the declaration order of [`Outcome`] is the check order of SPEC §3, and every
//! presentation gets exactly one outcome: the first check it fails.

use std::sync::Arc;

use serde::Serialize;
use serde::ser::SerializeStruct;

use super::presentation::IssuerJwt;

/// One presentation's outcome. Wire names are the `snake_case` names of SPEC §3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Malformed,
    UnsupportedAlg,
    UnknownKey,
    KeyNotValid,
    BadSignature,
    KeyBindingMissing,
    KeyBindingInvalid,
    DisclosureInvalid,
    NotYetValid,
    Expired,
    PresentationStale,
    AudienceMismatch,
    Revoked,
    Suspended,
    StatusUndetermined,
    Replayed,
    ReplayUnavailable,
    Valid,
}

impl Outcome {
    /// Every outcome, in check order (closed set: safe as a metric label).
    pub const ALL: [Outcome; 18] = [
        Outcome::Malformed,
        Outcome::UnsupportedAlg,
        Outcome::UnknownKey,
        Outcome::KeyNotValid,
        Outcome::BadSignature,
        Outcome::KeyBindingMissing,
        Outcome::KeyBindingInvalid,
        Outcome::DisclosureInvalid,
        Outcome::NotYetValid,
        Outcome::Expired,
        Outcome::PresentationStale,
        Outcome::AudienceMismatch,
        Outcome::Revoked,
        Outcome::Suspended,
        Outcome::StatusUndetermined,
        Outcome::Replayed,
        Outcome::ReplayUnavailable,
        Outcome::Valid,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Malformed => "malformed",
            Outcome::UnsupportedAlg => "unsupported_alg",
            Outcome::UnknownKey => "unknown_key",
            Outcome::KeyNotValid => "key_not_valid",
            Outcome::BadSignature => "bad_signature",
            Outcome::KeyBindingMissing => "key_binding_missing",
            Outcome::KeyBindingInvalid => "key_binding_invalid",
            Outcome::DisclosureInvalid => "disclosure_invalid",
            Outcome::NotYetValid => "not_yet_valid",
            Outcome::Expired => "expired",
            Outcome::PresentationStale => "presentation_stale",
            Outcome::AudienceMismatch => "audience_mismatch",
            Outcome::Revoked => "revoked",
            Outcome::Suspended => "suspended",
            Outcome::StatusUndetermined => "status_undetermined",
            Outcome::Replayed => "replayed",
            Outcome::ReplayUnavailable => "replay_unavailable",
            Outcome::Valid => "valid",
        }
    }

    /// Index into [`Outcome::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A failed check: the outcome plus a fixed, human-readable reason. The reason is always a
/// static string, so it can never carry request bytes, ID numbers or keys into a response or log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub outcome: Outcome,
    pub detail: &'static str,
}

impl Rejection {
    pub const fn new(outcome: Outcome, detail: &'static str) -> Rejection {
        Rejection { outcome, detail }
    }
}

/// What the credential says about itself (`iss`, `sub`, `jti`, `vct`, `exp`), returned for
/// `valid` items. Shares the parsed credential rather than copying its strings.
#[derive(Clone, Debug)]
pub struct CredentialSummary(pub(crate) Arc<IssuerJwt>);

impl CredentialSummary {
    pub fn iss(&self) -> &str {
        &self.0.claims.iss
    }
    pub fn sub(&self) -> &str {
        &self.0.claims.sub
    }
    pub fn jti(&self) -> &str {
        &self.0.claims.jti
    }
    pub fn vct(&self) -> &str {
        &self.0.claims.vct
    }
    pub fn exp(&self) -> i64 {
        self.0.claims.exp
    }
}

impl PartialEq for CredentialSummary {
    fn eq(&self, other: &Self) -> bool {
        (self.iss(), self.sub(), self.jti(), self.vct(), self.exp())
            == (
                other.iss(),
                other.sub(),
                other.jti(),
                other.vct(),
                other.exp(),
            )
    }
}

impl Serialize for CredentialSummary {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("CredentialSummary", 5)?;
        out.serialize_field("iss", self.iss())?;
        out.serialize_field("sub", self.sub())?;
        out.serialize_field("jti", self.jti())?;
        out.serialize_field("vct", self.vct())?;
        out.serialize_field("exp", &self.exp())?;
        out.end()
    }
}

/// The `/v1/verify` result object (also one output line of `idgate verify`).
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// Why the item failed (fixed text), absent for `valid`.
    pub detail: Option<&'static str>,
    /// `iss`, `sub`, `jti`, `vct`, `exp` of a valid credential.
    pub credential: Option<CredentialSummary>,
    /// Revocation reason, for `revoked` and `suspended`.
    pub reason: Option<&'static str>,
    /// When the adverse entry took effect (its `at`), for `revoked` and `suspended`.
    pub since: Option<i64>,
    /// The processed, disclosed payload, when the caller asked for it and the item is `valid`.
    pub claims: Option<serde_json::Value>,
}

impl Serialize for Verdict {
    /// `{"outcome", ["detail"], [iss, sub, jti, vct, exp], ["reason", "since"], ["claims"]}`:
    /// written field by field (serde's `flatten` would route every result through a map).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = 1
            + usize::from(self.detail.is_some())
            + self.credential.as_ref().map_or(0, |_| 5)
            + usize::from(self.reason.is_some())
            + usize::from(self.since.is_some())
            + usize::from(self.claims.is_some());
        let mut out = serializer.serialize_struct("Verdict", fields)?;
        out.serialize_field("outcome", &self.outcome)?;
        if let Some(detail) = self.detail {
            out.serialize_field("detail", detail)?;
        }
        if let Some(credential) = &self.credential {
            out.serialize_field("iss", credential.iss())?;
            out.serialize_field("sub", credential.sub())?;
            out.serialize_field("jti", credential.jti())?;
            out.serialize_field("vct", credential.vct())?;
            out.serialize_field("exp", &credential.exp())?;
        }
        if let Some(reason) = self.reason {
            out.serialize_field("reason", reason)?;
        }
        if let Some(since) = self.since {
            out.serialize_field("since", &since)?;
        }
        if let Some(claims) = &self.claims {
            out.serialize_field("claims", claims)?;
        }
        out.end()
    }
}

impl Verdict {
    /// A verdict for a failed check.
    pub fn rejected(rejection: Rejection) -> Verdict {
        Verdict {
            outcome: rejection.outcome,
            detail: Some(rejection.detail),
            credential: None,
            reason: None,
            since: None,
            claims: None,
        }
    }
}
