//! The in-memory replay store (SPEC §3, `replay.backend = "memory"`): nonce check-and-insert for key-bound presentations.
//!
//! **Invariants:**
//! - Check-and-insert is atomic per key: the key's shard is locked across both steps, so of any
//!   number of concurrent requests with one key exactly one is `Fresh`.
//! - A live entry is never evicted. When the store holds `capacity` live entries it refuses new
//!   ones (`Unavailable`, i.e. `replay_unavailable`): failing closed beats forgetting a nonce.
//! - Expired entries are dropped cheaply: each shard keeps its keys in one-second expiry buckets
//!   and drops whole buckets as time passes; no scan of live entries ever happens.
//! - The store does not survive a restart, so it refuses KB-JWTs minted before it started (the
//!   watermark): a replay of a pre-restart presentation cannot slip through, and a phone's next
//!   refresh (a new `iat`) is accepted.
//! - Memory is bounded by `capacity` (plus hash-table slack): 103 bytes per live entry measured
//!   at 1,000,000 entries (RSS growth; BENCHMARKS.md, "Design choices, measured").
//!
//! Why not dashmap (the design card's suggestion), measured in that section: dashmap with
//! foldhash does a check-and-insert in 0.36–0.80× this store's time and holds an entry in 0.72×
//! its memory (a global capacity counter works the same on both). Its one loss is expiry: it
//! has no expiry order, so dropping expired nonces is a `retain` over every live entry (2.99 ms
//! per million, once a second, shard lock by shard lock), where this store drops whole
//! one-second buckets and never scans live entries. That is the one measured reason the store
//! stays, and it was weighed, not assumed: the per-key difference (tens of nanoseconds against
//! ~30 µs for a presentation's signatures) is below 0.2% of a presentation, while a `retain`
//! over 10 million live nonces would hold each shard's lock for a scan every second. Where
//! several instances run, the Redis store (`replay/redis/`) replaces this one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use std::sync::Arc;

use hashbrown::HashMap;
use parking_lot::Mutex;

use crate::metrics::{ReplayMetrics, Unavailable};

use crate::verify::{ReplayAnswer, ReplayGuard, ReplayRequest};

const SHARDS: usize = 64;

/// Replay store settings.
#[derive(Clone, Copy, Debug)]
pub struct MemoryReplayOptions {
    /// Maximum live entries; past it new nonces are refused.
    pub capacity: usize,
    /// KB-JWTs with `iat` before this are refused (the start time); `None` disables the
    /// watermark (the offline verifier, whose "now" is a parameter).
    pub watermark: Option<i64>,
}

#[derive(Default)]
struct Shard {
    /// Live keys and their expiry.
    entries: HashMap<u128, i64, foldhash::fast::FixedState>,
    /// Keys by expiry second, oldest first; a bucket is dropped whole once it has expired.
    buckets: BTreeMap<i64, VecDeque<u128>>,
}

impl Shard {
    /// Drops every entry whose expiry is before `now`; returns how many went.
    fn expire(&mut self, now: i64) -> usize {
        let mut dropped = 0;
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() >= now {
                break;
            }
            for key in entry.remove() {
                // A key is in exactly one bucket (inserted once, never renewed), so this always
                // removes it; the check keeps the count honest even so.
                if self.entries.remove(&key).is_some() {
                    dropped += 1;
                }
            }
        }
        dropped
    }
}

/// The memory replay store. Share it behind an `Arc`.
pub struct MemoryReplayStore {
    shards: Vec<Mutex<Shard>>,
    capacity: usize,
    watermark: Option<i64>,
    live: AtomicUsize,
    /// The second of the last sweep of every shard (see `check_one`).
    last_sweep: AtomicI64,
    metrics: Arc<ReplayMetrics>,
}

impl std::fmt::Debug for MemoryReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryReplayStore")
            .field("capacity", &self.capacity)
            .field("live", &self.len())
            .finish()
    }
}

impl MemoryReplayStore {
    pub fn new(config: MemoryReplayOptions) -> MemoryReplayStore {
        MemoryReplayStore::with_metrics(config, Arc::default())
    }

    /// A store that counts its refusals in `metrics` (the gateway's).
    pub fn with_metrics(
        config: MemoryReplayOptions,
        metrics: Arc<ReplayMetrics>,
    ) -> MemoryReplayStore {
        MemoryReplayStore {
            metrics,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            capacity: config.capacity,
            watermark: config.watermark,
            live: AtomicUsize::new(0),
            last_sweep: AtomicI64::new(i64::MIN),
        }
    }

    /// Live entries (`idgate_replay_entries`); may include entries due to expire.
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Configured capacity (`idgate_replay_capacity`).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Drops expired entries in every shard (called periodically by the gateway so that the
    /// entry gauge falls even when no traffic arrives).
    pub fn expire(&self, now: i64) {
        for shard in &self.shards {
            let dropped = shard.lock().expire(now);
            self.live.fetch_sub(dropped, Ordering::Relaxed);
        }
    }

    fn check_one(&self, request: &ReplayRequest, now: i64) -> ReplayAnswer {
        if self.watermark.is_some_and(|start| request.kb_iat < start) {
            self.metrics.unavailable(Unavailable::Watermark, 1);
            return ReplayAnswer::Unavailable;
        }
        // The low bits of a SHA-256 digest are uniform.
        let shard = &self.shards[(request.key as usize) % SHARDS];
        for attempt in 0..2 {
            let mut shard = shard.lock();
            let dropped = shard.expire(now);
            if dropped > 0 {
                self.live.fetch_sub(dropped, Ordering::Relaxed);
            }
            if shard.entries.contains_key(&request.key) {
                return ReplayAnswer::Replayed;
            }
            // Reserve a slot in the global count first; roll back if that overshoots. Exact
            // under concurrency without a global lock.
            if self.live.fetch_add(1, Ordering::Relaxed) < self.capacity {
                // Keep an entry at least until `now`, even if its nominal expiry is already past
                // (a clock step backwards must not make a just-seen nonce forgettable at once).
                let expires_at = request.expires_at.max(now);
                shard.entries.insert(request.key, expires_at);
                shard
                    .buckets
                    .entry(expires_at)
                    .or_default()
                    .push_back(request.key);
                return ReplayAnswer::Fresh;
            }
            self.live.fetch_sub(1, Ordering::Relaxed);
            drop(shard);
            // Full, as far as the count knows: other shards may hold expired entries that only
            // a sweep releases. Sweep at most once per second (expiry has second resolution),
            // then try once more; a store full of live entries refuses.
            let sweep_due = self.last_sweep.fetch_max(now, Ordering::Relaxed) < now;
            if attempt > 0 || !sweep_due {
                break;
            }
            self.expire(now);
        }
        self.metrics.unavailable(Unavailable::Full, 1);
        ReplayAnswer::Unavailable
    }
}

impl ReplayGuard for MemoryReplayStore {
    fn check_and_insert(&self, requests: &[ReplayRequest], now: i64) -> Vec<ReplayAnswer> {
        requests
            .iter()
            .map(|request| self.check_one(request, now))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: u128, kb_iat: i64) -> ReplayRequest {
        ReplayRequest {
            key,
            kb_iat,
            expires_at: kb_iat + 65,
        }
    }

    fn check(store: &MemoryReplayStore, key: u128, kb_iat: i64, now: i64) -> ReplayAnswer {
        store.check_and_insert(&[request(key, kb_iat)], now)[0]
    }

    #[test]
    fn a_nonce_is_fresh_once_then_replayed_until_it_expires() {
        let store = MemoryReplayStore::new(MemoryReplayOptions {
            capacity: 1000,
            watermark: None,
        });
        assert_eq!(check(&store, 7, 100, 100), ReplayAnswer::Fresh);
        assert_eq!(check(&store, 7, 100, 150), ReplayAnswer::Replayed);
        assert_eq!(
            check(&store, 7, 100, 165),
            ReplayAnswer::Replayed,
            "alive up to and including its expiry second"
        );
        assert_eq!(store.len(), 1);
        store.expire(166);
        assert_eq!(store.len(), 0);
        assert_eq!(check(&store, 7, 100, 166), ReplayAnswer::Fresh);
    }

    #[test]
    fn a_full_store_refuses_new_nonces_and_keeps_live_ones() {
        let capacity = 37;
        let store = MemoryReplayStore::new(MemoryReplayOptions {
            capacity,
            watermark: None,
        });
        let mut accepted = Vec::new();
        let mut refused = 0;
        for key in 0..(capacity as u128 * 4) {
            match check(&store, key, 100, 100) {
                ReplayAnswer::Fresh => accepted.push(key),
                ReplayAnswer::Unavailable => refused += 1,
                ReplayAnswer::Replayed => panic!("distinct keys cannot be replays"),
            }
        }
        assert_eq!(accepted.len(), capacity);
        assert_eq!(refused, capacity * 3);
        // Nothing live was forgotten to make room.
        for key in accepted {
            assert_eq!(check(&store, key, 100, 120), ReplayAnswer::Replayed);
        }
        // Once they expire, room returns.
        assert_eq!(check(&store, u128::MAX, 200, 200), ReplayAnswer::Fresh);
    }

    #[test]
    fn presentations_minted_before_the_start_are_refused() {
        let store = MemoryReplayStore::new(MemoryReplayOptions {
            capacity: 100,
            watermark: Some(1000),
        });
        assert_eq!(check(&store, 1, 999, 1001), ReplayAnswer::Unavailable);
        assert_eq!(check(&store, 1, 1000, 1001), ReplayAnswer::Fresh);
    }

    #[test]
    fn concurrent_inserts_of_one_key_yield_exactly_one_fresh() {
        let store = std::sync::Arc::new(MemoryReplayStore::new(MemoryReplayOptions {
            capacity: 100,
            watermark: None,
        }));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let store = std::sync::Arc::clone(&store);
                std::thread::spawn(move || check(&store, 42, 100, 100))
            })
            .collect();
        let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            answers
                .iter()
                .filter(|a| **a == ReplayAnswer::Fresh)
                .count(),
            1
        );
        assert_eq!(
            answers
                .iter()
                .filter(|a| **a == ReplayAnswer::Replayed)
                .count(),
            15
        );
    }
}
