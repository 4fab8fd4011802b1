//! The compact table behind the revocation list: 24-byte packed records in sorted, immutable
//! per-shard arrays, plus a small per-shard overlay of recent updates.
//!
//! Layout per entry: a 120-bit digest of (kind, id), one metadata byte (kind, status, reason,
//! whether `before` is set) packed into the low byte of the 128-bit key, and `at` and `before`
//! as 32-bit Unix seconds. A shard's base array is sorted by key and indexed by the key's top
//! bits (one `u32` per four entries), so a lookup touches about two cache lines.
//!
//! Why not dashmap (the design card's suggestion), measured at 1,000,000 entries (BENCHMARKS.md,
//! "Design choices, measured"): dashmap with foldhash looks up in 0.37–0.80× this table's time,
//! but holds an entry in 109 bytes against 28 (3.9×): 4.4 GB instead of 1.1 GB for the 40
//! million entries of a national list (SPEC §5), and the lookup is 11–70 ns either way beside a
//! status request's parsing and answer.
//!
//! **Invariants:**
//! - Readers take one shard's read lock for one lookup; a writer holds a shard's write lock only
//!   to insert a few hundred overlay entries or to swap in a base array built outside the lock.
//!   Long work (merging, bulk imports) never happens under a lock readers need.
//! - One writer at a time (`writer` mutex): the table changes only through [`Table::apply`] and
//!   [`Table::from_shards`], so a capture taken under the writer mutex is an exact cut.
//! - For each key the record with the newest `at` wins; on a tie, the later-applied one.
//! - A shard's overlay never exceeds `max(OVERLAY_MIN, base/8)` entries: past it, it is merged.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hashbrown::HashMap;
use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;

use super::entry::{Kind, Reason, Status};

/// Shards (a power of two); a key's shard comes from its bits 8..16.
pub const SHARDS: usize = 256;
/// A shard's overlay may hold at least this many entries before it is merged.
const OVERLAY_MIN: usize = 1024;
/// Overlay inserts per write-lock hold.
const INSERTS_PER_LOCK: usize = 256;
/// Bytes of one encoded slot (snapshot files).
pub const SLOT_BYTES: usize = 24;

/// One packed record (24 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    hi: u64,
    /// Low 64 bits of the key; its low byte is the metadata.
    lo: u64,
    at: u32,
    before: u32,
}

/// What the list holds per (kind, id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub status: Status,
    pub reason: Option<Reason>,
    pub before: Option<i64>,
    pub at: i64,
}

impl Record {
    /// Does this record make a credential issued at `iat` revoked or suspended?
    pub fn affects(&self, iat: i64) -> bool {
        self.status != Status::Active && self.before.is_none_or(|before| iat < before)
    }
}

const NO_REASON: u8 = 7;

impl Slot {
    /// Packs a record under `key` (a digest whose low byte is ignored). Times must be validated
    /// (0..=MAX_TIME).
    pub fn new(key: u128, record: &Record) -> Slot {
        let kind = match record.kind {
            Kind::Subject => 0u8,
            Kind::Credential => 1,
        };
        let status = match record.status {
            Status::Revoked => 0u8,
            Status::Suspended => 1,
            Status::Active => 2,
        };
        let reason = record
            .reason
            .and_then(|r| Reason::ALL.iter().position(|x| *x == r))
            .map_or(NO_REASON, |i| i as u8);
        let meta = kind | status << 1 | reason << 3 | u8::from(record.before.is_some()) << 6;
        let key = key & !0xFF;
        Slot {
            hi: (key >> 64) as u64,
            lo: key as u64 | u64::from(meta),
            at: record.at.clamp(0, u32::MAX as i64) as u32,
            before: record.before.unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
        }
    }

    /// The 120-bit key (low byte zero).
    pub fn key(&self) -> u128 {
        (u128::from(self.hi) << 64) | u128::from(self.lo & !0xFF)
    }

    fn meta(&self) -> u8 {
        self.lo as u8
    }

    pub fn at(&self) -> u32 {
        self.at
    }

    /// Decodes the record; `None` only for a metadata byte no writer produces (corruption).
    pub fn record(&self) -> Option<Record> {
        let meta = self.meta();
        let kind = if meta & 1 == 0 {
            Kind::Subject
        } else {
            Kind::Credential
        };
        let status = *Status::ALL.get(usize::from(meta >> 1 & 3))?;
        let reason = match meta >> 3 & 7 {
            NO_REASON => None,
            r => Some(*Reason::ALL.get(usize::from(r))?),
        };
        if meta & 0x80 != 0 {
            return None;
        }
        Some(Record {
            kind,
            status,
            reason,
            before: (meta & 0x40 != 0).then_some(i64::from(self.before)),
            at: i64::from(self.at),
        })
    }

    fn is_adverse(&self) -> bool {
        self.meta() >> 1 & 3 != 2
    }

    /// Little-endian encoding (snapshot files).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hi.to_le_bytes());
        out.extend_from_slice(&self.lo.to_le_bytes());
        out.extend_from_slice(&self.at.to_le_bytes());
        out.extend_from_slice(&self.before.to_le_bytes());
    }

    /// Decodes [`Slot::encode`]'s bytes; `None` if the metadata is impossible.
    pub fn decode(bytes: &[u8; SLOT_BYTES]) -> Option<Slot> {
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let u32_at = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[i..i + 4]);
            u32::from_le_bytes(b)
        };
        let slot = Slot {
            hi: u64_at(0),
            lo: u64_at(8),
            at: u32_at(16),
            before: u32_at(20),
        };
        slot.record().map(|_| slot)
    }
}

/// The shard a key lives in.
pub fn shard_of(key: u128) -> usize {
    (key >> 8) as usize & (SHARDS - 1)
}

/// A sorted, immutable array with a bucket index on the key's top bits.
struct Base {
    slots: Vec<Slot>,
    /// `starts[b]..starts[b + 1]` is bucket `b`.
    starts: Vec<u32>,
    bits: u32,
}

impl Base {
    /// `slots` must be sorted by key with no duplicate keys.
    fn new(slots: Vec<Slot>) -> Base {
        let bits = (slots.len() / 4).max(1).ilog2().min(24);
        let buckets = 1usize << bits;
        let mut starts = vec![0u32; buckets + 1];
        for slot in &slots {
            starts[Self::bucket_of(slot.hi, bits) + 1] += 1;
        }
        for b in 0..buckets {
            starts[b + 1] += starts[b];
        }
        Base {
            slots,
            starts,
            bits,
        }
    }

    fn bucket_of(hi: u64, bits: u32) -> usize {
        if bits == 0 {
            0
        } else {
            (hi >> (64 - bits)) as usize
        }
    }

    fn get(&self, key: u128) -> Option<&Slot> {
        let b = Self::bucket_of((key >> 64) as u64, self.bits);
        let range = self.starts[b] as usize..self.starts[b + 1] as usize;
        self.slots.get(range)?.iter().find(|s| s.key() == key)
    }
}

struct Shard {
    base: Arc<Base>,
    overlay: HashMap<u128, Slot, foldhash::fast::FixedState>,
}

impl Shard {
    fn get(&self, key: u128) -> Option<Slot> {
        self.overlay
            .get(&key)
            .copied()
            .or_else(|| self.base.get(key).copied())
    }

    fn capture(&self) -> ShardCapture {
        ShardCapture {
            base: Arc::clone(&self.base),
            overlay: self.overlay.values().copied().collect(),
        }
    }

    fn overlay_limit(&self) -> usize {
        (self.base.slots.len() / 8).max(OVERLAY_MIN)
    }
}

impl std::fmt::Debug for ShardCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardCapture")
            .field("base", &self.base.slots.len())
            .field("overlay", &self.overlay.len())
            .finish()
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("total", &self.total())
            .field("adverse", &self.adverse())
            .finish()
    }
}

/// A consistent copy of one shard: its base array and overlay at the moment of the capture.
pub struct ShardCapture {
    base: Arc<Base>,
    overlay: Vec<Slot>,
}

impl ShardCapture {
    /// Every record of the shard, sorted by key.
    pub fn sorted(&self) -> Vec<Slot> {
        let mut overlay = self.overlay.clone();
        overlay.sort_unstable_by_key(Slot::key);
        merge_replacing(&self.base.slots, &overlay)
    }
}

/// Merges two sorted runs; on equal keys the second run's record wins outright (it is the
/// current state).
fn merge_replacing(older: &[Slot], newer_run: &[Slot]) -> Vec<Slot> {
    let mut out = Vec::with_capacity(older.len() + newer_run.len());
    let (mut i, mut j) = (0, 0);
    while i < older.len() && j < newer_run.len() {
        let (a, b) = (older[i], newer_run[j]);
        match a.key().cmp(&b.key()) {
            std::cmp::Ordering::Less => {
                out.push(a);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(b);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&older[i..]);
    out.extend_from_slice(&newer_run[j..]);
    out
}

/// Applies `updates` (in order) to the sorted `current` records: the new sorted records and
/// how many updates took effect.
fn apply_sorted(current: &[Slot], updates: &[Slot]) -> (Vec<Slot>, usize) {
    let mut sorted = updates.to_vec();
    // Stable: updates to one key keep their application order.
    sorted.sort_by_key(Slot::key);
    let mut out = Vec::with_capacity(current.len() + sorted.len());
    let (mut i, mut j, mut applied) = (0, 0, 0);
    while j < sorted.len() {
        let key = sorted[j].key();
        while i < current.len() && current[i].key() < key {
            out.push(current[i]);
            i += 1;
        }
        let mut winner = None;
        if i < current.len() && current[i].key() == key {
            winner = Some(current[i]);
            i += 1;
        }
        while j < sorted.len() && sorted[j].key() == key {
            let update = sorted[j];
            if winner.is_none_or(|w: Slot| w.at <= update.at) {
                winner = Some(update);
                applied += 1;
            }
            j += 1;
        }
        out.extend(winner);
    }
    out.extend_from_slice(&current[i..]);
    (out, applied)
}

/// The sharded table.
pub struct Table {
    shards: Box<[RwLock<Shard>]>,
    writer: Mutex<()>,
    total: AtomicUsize,
    adverse: AtomicUsize,
}

impl Default for Table {
    fn default() -> Self {
        Table::from_sorted_shards(vec![Vec::new(); SHARDS])
    }
}

/// Why a set of shard arrays cannot be a table (a corrupt snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeError {
    pub shard: usize,
    pub reason: &'static str,
}

impl Table {
    /// A table from per-shard arrays, each sorted by key with keys in their shard. Checked.
    pub fn from_shards(shards: Vec<Vec<Slot>>) -> Result<Table, ShapeError> {
        if shards.len() != SHARDS {
            return Err(ShapeError {
                shard: 0,
                reason: "wrong number of shards",
            });
        }
        shards
            .par_iter()
            .enumerate()
            .try_for_each(|(index, slots)| {
                let error = |reason| ShapeError {
                    shard: index,
                    reason,
                };
                if slots.iter().any(|s| shard_of(s.key()) != index) {
                    return Err(error("entry in the wrong shard"));
                }
                if slots.windows(2).any(|w| w[0].key() >= w[1].key()) {
                    return Err(error("entries out of order"));
                }
                Ok(())
            })?;
        Ok(Table::from_sorted_shards(shards))
    }

    fn from_sorted_shards(shards: Vec<Vec<Slot>>) -> Table {
        let total = shards.iter().map(Vec::len).sum();
        let adverse = shards
            .par_iter()
            .map(|s| s.iter().filter(|x| x.is_adverse()).count())
            .sum();
        let shards = shards
            .into_par_iter()
            .map(|slots| {
                RwLock::new(Shard {
                    base: Arc::new(Base::new(slots)),
                    overlay: HashMap::default(),
                })
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Table {
            shards,
            writer: Mutex::new(()),
            total: AtomicUsize::new(total),
            adverse: AtomicUsize::new(adverse),
        }
    }

    /// The record under `key`, tombstones included.
    pub fn get(&self, key: u128) -> Option<Slot> {
        self.shards[shard_of(key)].read().get(key & !0xFF)
    }

    /// Records, tombstones included.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Revoked or suspended records.
    pub fn adverse(&self) -> usize {
        self.adverse.load(Ordering::Relaxed)
    }

    /// Applies updates in order; returns how many took effect (were not beaten by a newer `at`).
    pub fn apply(&self, updates: &[Slot]) -> usize {
        let _writer = self.writer.lock();
        if updates.len() <= 64 {
            let mut applied = 0;
            for slot in updates {
                let index = shard_of(slot.key());
                applied += self.apply_to_shard(index, std::slice::from_ref(slot));
            }
            return applied;
        }
        let mut by_shard = vec![Vec::new(); SHARDS];
        for slot in updates {
            by_shard[shard_of(slot.key())].push(*slot);
        }
        let apply = |(index, group): (usize, &Vec<Slot>)| self.apply_to_shard(index, group);
        if updates.len() >= 16_384 {
            by_shard.par_iter().enumerate().map(apply).sum()
        } else {
            by_shard.iter().enumerate().map(apply).sum()
        }
    }

    /// Applies one shard's updates (caller holds the writer mutex).
    fn apply_to_shard(&self, index: usize, updates: &[Slot]) -> usize {
        let lock = &self.shards[index];
        let (limit, overlay_len) = {
            let shard = lock.read();
            (shard.overlay_limit(), shard.overlay.len())
        };
        if overlay_len + updates.len() > limit {
            return self.merge_shard(index, updates);
        }
        let mut applied = 0;
        for chunk in updates.chunks(INSERTS_PER_LOCK) {
            let mut shard = lock.write();
            for &slot in chunk {
                let key = slot.key();
                let old = shard.get(key);
                if old.is_some_and(|old| old.at > slot.at) {
                    continue;
                }
                shard.overlay.insert(key, slot);
                applied += 1;
                self.count(old, slot);
            }
        }
        applied
    }

    fn count(&self, old: Option<Slot>, new: Slot) {
        if old.is_none() {
            self.total.fetch_add(1, Ordering::Relaxed);
        }
        match (old.is_some_and(|o| o.is_adverse()), new.is_adverse()) {
            (false, true) => {
                self.adverse.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.adverse.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Builds a new base array from the shard's current state and `updates`, outside the lock,
    /// then swaps it in.
    fn merge_shard(&self, index: usize, updates: &[Slot]) -> usize {
        let lock = &self.shards[index];
        let capture = lock.read().capture();
        let current = capture.sorted();
        let (merged, applied) = apply_sorted(&current, updates);
        let before_total = current.len();
        let before_adverse = current.iter().filter(|s| s.is_adverse()).count();
        let after_adverse = merged.iter().filter(|s| s.is_adverse()).count();
        let after_total = merged.len();
        let base = Arc::new(Base::new(merged));
        {
            let mut shard = lock.write();
            shard.base = base;
            shard.overlay = HashMap::default();
        }
        drop(capture);
        self.total
            .fetch_add(after_total - before_total, Ordering::Relaxed);
        if after_adverse >= before_adverse {
            self.adverse
                .fetch_add(after_adverse - before_adverse, Ordering::Relaxed);
        } else {
            self.adverse
                .fetch_sub(before_adverse - after_adverse, Ordering::Relaxed);
        }
        applied
    }

    /// An exact cut of the whole table (no update is half-visible in it). Cheap: base arrays
    /// are shared, only overlays are copied.
    pub fn capture(&self) -> Vec<ShardCapture> {
        let _writer = self.writer.lock();
        self.shards
            .iter()
            .map(|lock| lock.read().capture())
            .collect()
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
