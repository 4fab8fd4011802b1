//! The revocation list (SPEC §5): which credentials and subjects are revoked or suspended.
//!
//! Semantics:
//! - `credential` entries match a presentation's `jti`; `subject` entries match its `sub`, and
//!   with `before` only credentials issued (`iat`) before that time.
//! - For each (kind, id) the entry with the newest `at` wins (on a tie, the later-applied one);
//!   `active` reinstates, and is kept as a tombstone so an older adverse entry arriving late
//!   cannot resurrect a revocation.
//! - IDs are kept as 120-bit digests of (kind, id), never as text: the list holds national ID
//!   numbers, and a digest is all a lookup needs.
//!
//! The packed table is in [`table`], the durable side (log segments, snapshots, the writer
//! thread) in [`log`], [`snapshot`] and [`store`], bulk parsing in [`import`].
//!
//! **Invariant:** reads never wait for a long write: a lookup holds one shard's read lock, and
//! writers hold a shard's write lock only for a few hundred inserts or to swap in an array built
//! outside it.

pub mod entry;
pub mod feed;
pub mod feed_share;
pub mod import;
pub mod log;
pub mod snapshot;
pub mod store;
pub mod table;

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

use sha2::{Digest, Sha256};

pub use entry::{Entry, EntryError, Kind, Reason, Status};
pub use table::{Record, Slot, Table};

use crate::clock::unix_now;
use crate::id::Id;
use crate::verify::{RevocationSource, Standing};

/// The 120-bit digest under which an ID is stored (the low byte is always zero).
pub fn id_key(kind: Kind, id: &str) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update([kind as u8]);
    hasher.update(id.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first) & !0xFF
}

impl Entry {
    /// The packed form the list stores.
    pub fn slot(&self) -> Slot {
        Slot::new(
            id_key(self.kind, &self.id),
            &Record {
                kind: self.kind,
                status: self.status,
                reason: self.reason,
                before: self.before,
                at: self.at,
            },
        )
    }
}

/// The in-memory revocation list. Share it behind an `Arc`.
pub struct RevocationList {
    table: Table,
    /// Wall-clock time of the last applied update (`idgate_revocation_last_update_timestamp_seconds`).
    last_update: AtomicI64,
    /// With a shared feed: when this instance last confirmed it had applied everything the
    /// feed held (unix seconds; 0: never). [`LOCAL`] without one: the local log is
    /// authoritative.
    confirmed_at: AtomicI64,
    /// With a shared feed: how old a confirmation may be before the list is not current.
    max_staleness_s: AtomicI64,
}

/// `confirmed_at` of a list that follows no feed.
const LOCAL: i64 = i64::MAX;

impl Default for RevocationList {
    fn default() -> Self {
        RevocationList::from_table(Table::default(), 0)
    }
}

impl std::fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationList")
            .field("adverse", &self.len())
            .field("records", &self.records())
            .finish()
    }
}

/// A JSON Lines file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}: {error}")]
    Entry { line: usize, error: EntryError },
}

impl RevocationList {
    pub fn new() -> RevocationList {
        RevocationList::default()
    }

    /// A list over an existing table (loaded from a snapshot).
    pub fn from_table(table: Table, last_update: i64) -> RevocationList {
        RevocationList {
            table,
            last_update: AtomicI64::new(last_update),
            confirmed_at: AtomicI64::new(LOCAL),
            max_staleness_s: AtomicI64::new(0),
        }
    }

    /// From now on the list is current only while a feed confirmation is at most
    /// `max_staleness_s` old; until the first one it is not current.
    pub fn follow_feed(&self, max_staleness_s: i64) {
        self.max_staleness_s
            .store(max_staleness_s, Ordering::Relaxed);
        self.confirmed_at.store(0, Ordering::Relaxed);
    }

    /// The feed applier confirmed, at `at`, that everything the feed held is applied.
    pub fn confirm_feed(&self, at: i64) {
        self.confirmed_at.fetch_max(at, Ordering::Relaxed);
    }

    /// What the list's answers are as of: `now` for a local list, the last feed confirmation
    /// for a list that follows a feed (0 if none yet).
    pub fn as_of(&self, now: i64) -> i64 {
        match self.confirmed_at.load(Ordering::Relaxed) {
            LOCAL => now,
            at => at,
        }
    }

    /// Loads a JSON Lines file of entries (blank lines skipped). All or nothing.
    pub fn load_jsonl(path: &Path) -> Result<RevocationList, LoadError> {
        let text = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let slots = import::parse_jsonl_parallel(&text, 1)?;
        let list = RevocationList::new();
        list.apply_slots(&slots);
        Ok(list)
    }

    /// Applies one update; returns false when a newer entry for the same ID already won.
    pub fn apply(&self, entry: &Entry) -> bool {
        self.apply_slots(&[entry.slot()]) == 1
    }

    /// Applies updates in order; returns how many took effect.
    pub fn apply_slots(&self, slots: &[Slot]) -> usize {
        if slots.is_empty() {
            return 0;
        }
        let applied = self.table.apply(slots);
        self.last_update.store(unix_now(), Ordering::Relaxed);
        applied
    }

    /// The record for (kind, id), tombstones included.
    pub fn lookup(&self, kind: Kind, id: Id<'_>) -> Option<Record> {
        self.lookup_text(kind, id.as_str())
    }

    /// [`RevocationList::lookup`] for text the caller already knows to be an ID (a verified
    /// credential's `sub` and `jti`, checked when it was parsed); any other text finds nothing.
    fn lookup_text(&self, kind: Kind, id: &str) -> Option<Record> {
        self.table.get(id_key(kind, id)).and_then(|s| s.record())
    }

    /// Revoked or suspended records (`idgate_revocation_entries`).
    pub fn len(&self) -> usize {
        self.table.adverse()
    }

    /// Records held, reinstatement tombstones included.
    pub fn records(&self) -> usize {
        self.table.total()
    }

    /// True when nothing is revoked or suspended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wall-clock time of the last applied update, 0 if none.
    pub fn last_update(&self) -> i64 {
        self.last_update.load(Ordering::Relaxed)
    }

    /// Sets the last-update time (restored state).
    pub fn mark_updated(&self, at: i64) {
        self.last_update.store(at, Ordering::Relaxed);
    }

    /// The underlying table (captures for snapshots and statistics).
    pub fn table(&self) -> &Table {
        &self.table
    }
}

impl RevocationSource for RevocationList {
    fn standing(&self, sub: &str, jti: &str, iat: i64) -> Standing {
        let mut worst = Standing::Good;
        for record in [
            self.lookup_text(Kind::Credential, jti),
            self.lookup_text(Kind::Subject, sub),
        ]
        .into_iter()
        .flatten()
        {
            if !record.affects(iat) {
                continue;
            }
            let reason = record.reason.unwrap_or(Reason::Other).as_str();
            worst = match (record.status, worst) {
                (Status::Revoked, _) => {
                    return Standing::Revoked {
                        reason,
                        since: record.at,
                    };
                }
                (Status::Suspended, Standing::Good) => Standing::Suspended {
                    reason,
                    since: record.at,
                },
                _ => worst,
            };
        }
        worst
    }

    fn is_current(&self, now: i64) -> bool {
        // A local list is authoritative: every acknowledged update is already applied. One
        // that follows a feed is current while its last confirmation is recent enough.
        match self.confirmed_at.load(Ordering::Relaxed) {
            LOCAL => true,
            at => now.saturating_sub(at) <= self.max_staleness_s.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind, id: &str, status: Status, before: Option<i64>, at: i64) -> Entry {
        let reason = (status != Status::Active).then_some(Reason::Lost);
        Entry {
            kind,
            id: id.into(),
            status,
            reason,
            before,
            at,
        }
    }

    #[test]
    fn subject_entries_with_before_spare_newer_credentials() {
        let list = RevocationList::new();
        list.apply(&entry(
            Kind::Subject,
            "1012345678",
            Status::Revoked,
            Some(1000),
            1000,
        ));
        assert_eq!(
            list.standing("1012345678", "card-1", 999),
            Standing::Revoked {
                reason: "lost",
                since: 1000
            }
        );
        assert_eq!(list.standing("1012345678", "card-2", 1000), Standing::Good);
        assert_eq!(list.standing("other", "card-1", 999), Standing::Good);
    }

    #[test]
    fn newest_at_wins_and_reinstatement_is_remembered() {
        let list = RevocationList::new();
        list.apply(&entry(
            Kind::Credential,
            "card-1",
            Status::Suspended,
            None,
            10,
        ));
        assert_eq!(list.len(), 1);
        assert!(list.apply(&entry(Kind::Credential, "card-1", Status::Active, None, 20)));
        assert_eq!(list.len(), 0);
        assert!(
            !list.apply(&entry(
                Kind::Credential,
                "card-1",
                Status::Revoked,
                None,
                15
            )),
            "older entry loses"
        );
        assert_eq!(list.standing("s", "card-1", 0), Standing::Good);
        assert!(list.apply(&entry(
            Kind::Credential,
            "card-1",
            Status::Revoked,
            None,
            30
        )));
        assert_eq!(
            list.standing("s", "card-1", 0),
            Standing::Revoked {
                reason: "lost",
                since: 30
            }
        );
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn revoked_outranks_suspended_across_kinds() {
        let list = RevocationList::new();
        list.apply(&entry(
            Kind::Credential,
            "card-1",
            Status::Suspended,
            None,
            10,
        ));
        list.apply(&entry(Kind::Subject, "s1", Status::Revoked, None, 5));
        assert_eq!(
            list.standing("s1", "card-1", 0),
            Standing::Revoked {
                reason: "lost",
                since: 5
            }
        );
        assert_eq!(
            list.standing("s2", "card-1", 0),
            Standing::Suspended {
                reason: "lost",
                since: 10
            }
        );
    }

    #[test]
    fn a_bad_line_is_reported_by_number_and_nothing_loads() {
        let text = b"{\"kind\":\"subject\",\"id\":\"a\",\"status\":\"revoked\",\"reason\":\"lost\",\"at\":1}\n\n{\"kind\":\"subject\"}\n";
        match import::parse_jsonl_parallel(text, 1) {
            Err(LoadError::Entry { line, .. }) => assert_eq!(line, 3),
            other => panic!("expected a line error, got {other:?}"),
        }
    }
}
