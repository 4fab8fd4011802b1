//! The revocation entry of SPEC §5 and its JSON Lines form.
//!
//! **Invariant:** an [`Entry`] only exists validated: a valid ID, a reason where the status needs
//! one, `before` only on subject entries, times within the range the list stores.

use serde::{Deserialize, Serialize};

use crate::id::Id;

/// What an entry matches: a presentation's `sub` or its `jti`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Subject,
    Credential,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Subject => "subject",
            Kind::Credential => "credential",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "subject" => Some(Kind::Subject),
            "credential" => Some(Kind::Credential),
            _ => None,
        }
    }
}

/// `active` reinstates (removes the adverse entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Revoked,
    Suspended,
    Active,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Revoked, Status::Suspended, Status::Active];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Revoked => "revoked",
            Status::Suspended => "suspended",
            Status::Active => "active",
        }
    }
}

/// Why a credential or subject was revoked or suspended (closed set: safe as a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Lost,
    Stolen,
    Compromised,
    Deceased,
    Cancelled,
    Superseded,
    Other,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::Lost,
        Reason::Stolen,
        Reason::Compromised,
        Reason::Deceased,
        Reason::Cancelled,
        Reason::Superseded,
        Reason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Lost => "lost",
            Reason::Stolen => "stolen",
            Reason::Compromised => "compromised",
            Reason::Deceased => "deceased",
            Reason::Cancelled => "cancelled",
            Reason::Superseded => "superseded",
            Reason::Other => "other",
        }
    }
}

/// One revocation-list update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub kind: Kind,
    pub id: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// Subject entries only: affects credentials with `iat < before`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    /// When the update was decided; the newest `at` wins.
    pub at: i64,
}

/// Latest time the list can store (times are kept as 32-bit unsigned seconds: until 2106).
pub const MAX_TIME: i64 = u32::MAX as i64 - 1;

/// Why an entry was refused. Never carries the ID itself (it may be a national ID number).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("not a revocation entry: {0}")]
    Json(String),
    #[error("id must be 1-64 characters of [A-Za-z0-9._-]")]
    BadId,
    #[error("reason is required for revoked and suspended entries")]
    MissingReason,
    #[error("before applies to subject entries only")]
    BeforeOnCredential,
    #[error("at and before must be unix seconds between 0 and {MAX_TIME}")]
    TimeOutOfRange,
}

impl Entry {
    /// Parses and validates one JSON entry.
    pub fn parse(line: &[u8]) -> Result<Entry, EntryError> {
        let entry: Entry = serde_json::from_slice(line)
            .map_err(|e| EntryError::Json(crate::json_error::describe(&e)))?;
        entry.validate()?;
        Ok(entry)
    }

    /// Checks the invariants listed in the module docs.
    pub fn validate(&self) -> Result<(), EntryError> {
        if Id::parse(&self.id).is_none() {
            return Err(EntryError::BadId);
        }
        if self.status != Status::Active && self.reason.is_none() {
            return Err(EntryError::MissingReason);
        }
        if self.kind == Kind::Credential && self.before.is_some() {
            return Err(EntryError::BeforeOnCredential);
        }
        let in_range = |t: i64| (0..=MAX_TIME).contains(&t);
        if !in_range(self.at) || self.before.is_some_and(|b| !in_range(b)) {
            return Err(EntryError::TimeOutOfRange);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_validate() {
        let entry = Entry::parse(br#"{"kind":"subject","id":"1012345678","status":"revoked","reason":"lost","before":1763900000,"at":1763900000}"#).unwrap();
        assert_eq!(entry.kind, Kind::Subject);
        assert_eq!(entry.before, Some(1763900000));
        let cases: [(&[u8], &str); 7] = [
            (br#"{"kind":"subject","id":"a b","status":"revoked","reason":"lost","at":1}"#, "id must be"),
            (br#"{"kind":"subject","id":"x","status":"revoked","at":1}"#, "reason is required"),
            (br#"{"kind":"credential","id":"x","status":"revoked","reason":"lost","before":5,"at":1}"#, "subject entries only"),
            (br#"{"kind":"subject","id":"x","status":"revoked","reason":"lost","at":-1}"#, "unix seconds"),
            (br#"{"kind":"subject","id":"x","status":"gone","reason":"lost","at":1}"#, "allowed set"),
            (br#"{"kind":"subject","id":"x","status":"revoked","reason":"lost","at":1,"extra":1}"#, "unknown field"),
            (br#"{"kind":"subject","id":"x","status":"revoked","reason":"lost"}"#, "missing field `at`"),
        ];
        for (line, expected) in cases {
            let error = Entry::parse(line).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{error} should mention {expected}"
            );
        }
    }

    #[test]
    fn errors_never_quote_the_id() {
        let error = Entry::parse(
            br#"{"kind":"subject","id":9876543210,"status":"revoked","reason":"lost","at":1}"#,
        )
        .unwrap_err();
        assert!(!error.to_string().contains("9876543210"), "{error}");
        let error = Entry::parse(
            br#"{"kind":"9876543210","id":"x","status":"revoked","reason":"lost","at":1}"#,
        )
        .unwrap_err();
        assert!(!error.to_string().contains("9876543210"), "{error}");
    }
}
