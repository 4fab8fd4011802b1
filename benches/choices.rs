//! The hand-written pieces against the well-known crates the design card named, measured in one
//! run so that each choice has a figure behind it:
//!
//! 1. the replay store (`replay::MemoryReplayStore`) against a `dashmap` with the same
//!    check-and-insert and capacity check;
//! 2. the revocation table (`revocation::RevocationList`) against a `dashmap` of `Record`s under
//!    the same 120-bit keys: lookups and memory per entry;
//! 3. the `/v1/verify` envelope parse (serde_json, on a tokio thread) as a share of verifying
//!    what it carries (the engine, cold cache, 2 threads);
//! 4. the Prometheus text encoder (`metrics::Metrics::render`) and its increments against the
//!    `prometheus-client` crate.
//!
//! Each group's variants are first measured by criterion (absolute times and their spread), then
//! timed again in interleaved rounds, every variant once per round in rotating order, because
//! this machine is shared and drifts by tens of percent from minute to minute: the summary at the
//! end gives per-round medians and, for each ratio, the median of the per-round ratios.
//! Memory per entry is the resident-set growth (`VmRSS` in `/proc/self/status`) of a fresh child
//! process that builds one structure from inputs made before the first reading, with mimalloc
//! told to return freed memory at once (`MIMALLOC_PURGE_DELAY=0`), so that what building it
//! passed through (old tables after a resize, sort buffers) is not counted.
//!
//! One file, though long (~1,300 lines): the four comparisons share the interleaved-rounds
//! driver, the summary and the memory-child protocol; each is its own section below, in the
//! order above.
//!
//! `cargo bench --bench choices` for figures; `cargo test --bench choices` (and
//! `cargo test --benches`) runs every routine once, one interleaved round, and the memory
//! children on 20,000 entries, as a smoke test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark tooling: a failed setup should stop loudly

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use dashmap::DashMap;
use idgate::metrics::{Gauges, Metrics};
use idgate::mint::{self, CorpusSpec};
use idgate::replay::{MemoryReplayOptions, MemoryReplayStore};
use idgate::revocation::{Entry, Kind, Reason, Record, RevocationList, Slot, Status, id_key};
use idgate::trust::TrustStore;
use idgate::verify::{
    Batch, Engine, EngineConfig, Limits, NoRevocations, Outcome, Policy, ReplayAnswer, ReplayGuard,
    ReplayRequest, State, TrustContext, Verifier,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Deserialize;

// The same allocator as the binary, so the figures (memory above all) are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: i64 = 1_763_900_000;
/// Criterion samples per benchmark.
const SAMPLES: usize = 20;
/// Interleaved rounds per group, and the least time one variant's share of a round takes.
const INTERLEAVED_ROUNDS: usize = 15;
const ROUND_TARGET: Duration = Duration::from_millis(25);
/// Keys per replay batch (a 256-presentation request).
const REPLAY_BATCH: usize = 256;
/// Live entries a replay store holds before the timed keys arrive.
const REPLAY_PREFILL: usize = 65_536;
/// Entries of the revocation structures in the lookup benchmarks.
const REVOCATION_ENTRIES: usize = 1_000_000;
/// Lookups per iteration and thread.
const PROBES: usize = 4096;
/// Metric increments per iteration.
const INCREMENTS: usize = 1024;

// ---------------------------------------------------------------------------------------------
// Variants, criterion, and the interleaved rounds.

/// One way of doing what a group compares: `routine(iters)` runs `iters` iterations of
/// `elements` elements each and returns the time they took, setup excluded.
struct Variant<'a> {
    name: &'static str,
    elements: u64,
    routine: Box<dyn Fn(u64) -> Duration + 'a>,
}

impl<'a> Variant<'a> {
    fn new(name: &'static str, elements: u64, routine: impl Fn(u64) -> Duration + 'a) -> Self {
        Variant {
            name,
            elements,
            routine: Box::new(routine),
        }
    }
}

/// Per-element nanoseconds of every variant, one value per interleaved round, by
/// `group/variant`.
static ROUNDS: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

/// Measures a group's variants with criterion, then in interleaved rounds (see the file
/// comment). Each variant's iteration count per round is the smallest power of two that takes
/// `ROUND_TARGET`.
fn compare(c: &mut Criterion, group_name: &str, variants: &[Variant<'_>]) {
    let mut group = c.benchmark_group(group_name);
    for variant in variants {
        group.throughput(Throughput::Elements(variant.elements));
        group.bench_function(variant.name, |b| {
            b.iter_custom(|iters| (variant.routine)(iters))
        });
    }
    group.finish();
    let (rounds, target) = if bench_mode() {
        (INTERLEAVED_ROUNDS, ROUND_TARGET)
    } else {
        (1, Duration::ZERO)
    };
    let iters: Vec<u64> = variants
        .iter()
        .map(|variant| {
            let mut iters = 1;
            while (variant.routine)(iters) < target {
                iters *= 2;
            }
            iters
        })
        .collect();
    for round in 0..rounds {
        for k in 0..variants.len() {
            let index = (round + k) % variants.len();
            let variant = &variants[index];
            let elapsed = (variant.routine)(iters[index]);
            ROUNDS
                .lock()
                .unwrap()
                .entry(format!("{group_name}/{}", variant.name))
                .or_default()
                .push(elapsed.as_secs_f64() * 1e9 / (iters[index] * variant.elements) as f64);
        }
    }
}

fn middle(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// Median per-element nanoseconds of `group/variant` over the rounds (`None`: not run).
fn median(id: &str) -> Option<f64> {
    middle(ROUNDS.lock().unwrap().get(id)?.clone())
}

/// Median over the rounds of `theirs / ours`.
fn ratio(ours: &str, theirs: &str) -> Option<f64> {
    let rounds = ROUNDS.lock().unwrap();
    let (a, b) = (rounds.get(ours)?, rounds.get(theirs)?);
    middle(a.iter().zip(b).map(|(a, b)| b / a).collect())
}

fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Runs `work(thread)` on `threads` scoped threads released together; the wall time from the
/// release to the last one's end (thread start-up is not counted).
fn parallel(threads: usize, work: impl Fn(usize) + Sync) -> Duration {
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let (barrier, work) = (&barrier, &work);
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    work(thread);
                    (start, Instant::now())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    end - start
}

/// A uniform 128-bit key for `i` (SplitMix64 twice), like the SHA-256-derived keys in use.
fn key_of(i: u64) -> u128 {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (u128::from(mix(i)) << 64) | u128::from(mix(i ^ 0x5555_5555_5555_5555))
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// Resident-set growth per entry of `structure` built in a fresh child process (see the file
/// comment).
fn memory_per_entry(structure: &str, entries: usize) -> f64 {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--measure-memory", structure, &entries.to_string()])
        // Freed memory goes back to the OS at once (mimalloc's default keeps it for a second),
        // so the growth is what the structure holds, not what building it passed through.
        .env("MIMALLOC_PURGE_DELAY", "0")
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "{}",
        String::from_utf8_lossy(&child.stderr)
    );
    let growth: f64 = String::from_utf8(child.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    growth / entries as f64
}

/// Child mode: builds one structure of `entries` entries and prints its resident-set growth.
/// Inputs are built before the first reading; the structure is kept alive past the second.
fn measure_memory(structure: &str, entries: usize) {
    let replay_requests: Vec<ReplayRequest> = if structure.starts_with("replay") {
        (0..entries as u64).map(replay_request).collect()
    } else {
        Vec::new()
    };
    let records: Vec<(u128, Record)> = if structure.starts_with("revocation-dashmap") {
        (0..entries).map(revocation_record).collect()
    } else {
        Vec::new()
    };
    let slots: Vec<Slot> = if structure == "revocation-list" {
        revocation_slots(entries)
    } else {
        Vec::new()
    };
    let before = rss_bytes();
    let keep: Box<dyn std::any::Any> = match structure {
        "replay-store" => {
            let store = replay_store();
            fill_replay(&store, &replay_requests);
            Box::new(store)
        }
        "replay-dashmap" => {
            let store = DashReplay::<std::hash::RandomState>::new();
            fill_replay(&store, &replay_requests);
            Box::new(store)
        }
        "replay-dashmap-foldhash" => {
            let store = DashReplay::<foldhash::fast::FixedState>::new();
            fill_replay(&store, &replay_requests);
            Box::new(store)
        }
        "revocation-list" => Box::new(revocation_list(&slots)),
        "revocation-dashmap" => {
            let map: DashMap<u128, Record> = DashMap::default();
            records.iter().for_each(|(k, r)| {
                map.insert(*k, *r);
            });
            Box::new(map)
        }
        "revocation-dashmap-foldhash" => {
            let map: DashMap<u128, Record, foldhash::fast::FixedState> = DashMap::default();
            records.iter().for_each(|(k, r)| {
                map.insert(*k, *r);
            });
            Box::new(map)
        }
        other => panic!("unknown structure {other}"),
    };
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_bytes();
    black_box(&keep);
    println!("{}", after.saturating_sub(before));
}

// ---------------------------------------------------------------------------------------------
// 1. Replay store vs dashmap.

/// The dashmap equivalent of `MemoryReplayStore::check_one`: the entry API holds the key's
/// shard across check and insert (so exactly one of concurrent requests is fresh), a global
/// count refuses past `capacity`, and an expired entry found under the key is renewed in place.
/// It keeps no expiry index: expired keys that are never seen again stay until a `retain` scan,
/// which the store's per-second buckets avoid. So this side does slightly less work per key.
struct DashReplay<S> {
    map: DashMap<u128, i64, S>,
    capacity: usize,
    live: AtomicUsize,
}

impl<S: std::hash::BuildHasher + Default + Clone> DashReplay<S> {
    fn new() -> DashReplay<S> {
        DashReplay {
            map: DashMap::with_hasher(S::default()),
            capacity: 10_000_000,
            live: AtomicUsize::new(0),
        }
    }

    fn check_one(&self, request: &ReplayRequest, now: i64) -> ReplayAnswer {
        let expires_at = request.expires_at.max(now);
        match self.map.entry(request.key) {
            dashmap::mapref::entry::Entry::Occupied(mut entry) => {
                if *entry.get() >= now {
                    ReplayAnswer::Replayed
                } else {
                    entry.insert(expires_at);
                    ReplayAnswer::Fresh
                }
            }
            dashmap::mapref::entry::Entry::Vacant(entry) => {
                if self.live.fetch_add(1, Ordering::Relaxed) < self.capacity {
                    entry.insert(expires_at);
                    ReplayAnswer::Fresh
                } else {
                    self.live.fetch_sub(1, Ordering::Relaxed);
                    ReplayAnswer::Unavailable
                }
            }
        }
    }
}

impl<S: std::hash::BuildHasher + Default + Clone + Send + Sync> ReplayGuard for DashReplay<S> {
    fn check_and_insert(&self, requests: &[ReplayRequest], now: i64) -> Vec<ReplayAnswer> {
        requests
            .iter()
            .map(|request| self.check_one(request, now))
            .collect()
    }
}

/// Builds one empty replay store (of the implementation under test).
type MakeStore<'a> = &'a (dyn Fn() -> Box<dyn ReplayGuard> + Sync);

fn replay_store() -> MemoryReplayStore {
    MemoryReplayStore::new(MemoryReplayOptions {
        capacity: 10_000_000,
        watermark: None,
    })
}

/// Request `i`: expiries spread over 60 seconds, as traffic over a minute leaves them.
fn replay_request(i: u64) -> ReplayRequest {
    ReplayRequest {
        key: key_of(i),
        kb_iat: NOW,
        expires_at: NOW + 65 + (i % 60) as i64,
    }
}

fn fill_replay(store: &dyn ReplayGuard, requests: &[ReplayRequest]) {
    for batch in requests.chunks(REPLAY_BATCH) {
        black_box(store.check_and_insert(batch, NOW));
    }
}

/// The replay groups. One iteration is one store round: a new store is built and given
/// `REPLAY_PREFILL` entries (untimed), then `threads` threads together check 65,536 keys against
/// it in 256-key batches: fresh ones (taking the store from 65,536 to 131,072 entries, one table
/// doubling on every side), or the prefilled ones again. Then the dashmap's missing expiry, as
/// a `retain` sweep over a million entries.
fn replay(c: &mut Criterion) {
    let store = || Box::new(replay_store()) as Box<dyn ReplayGuard>;
    let dash = || Box::new(DashReplay::<std::hash::RandomState>::new()) as Box<dyn ReplayGuard>;
    let dash_fold =
        || Box::new(DashReplay::<foldhash::fast::FixedState>::new()) as Box<dyn ReplayGuard>;
    let implementations: [(&'static str, MakeStore<'_>); 3] = [
        ("store", &store),
        ("dashmap", &dash),
        ("dashmap_foldhash", &dash_fold),
    ];
    let prefill: Vec<ReplayRequest> = (0..REPLAY_PREFILL as u64).map(replay_request).collect();
    let fresh: Vec<ReplayRequest> = (REPLAY_PREFILL as u64..2 * REPLAY_PREFILL as u64)
        .map(replay_request)
        .collect();
    for (case, checked, expected) in [
        ("replay_fresh", &fresh, ReplayAnswer::Fresh),
        ("replay_replayed", &prefill, ReplayAnswer::Replayed),
    ] {
        // Every answer as expected once, before anything is timed.
        for (_, make) in &implementations {
            let store = make();
            fill_replay(store.as_ref(), &prefill);
            assert!(
                store
                    .check_and_insert(checked, NOW)
                    .iter()
                    .all(|a| *a == expected)
            );
        }
        // Thread t checks batches t, t + threads, t + 2·threads, … of the round's keys.
        let batches: Vec<&[ReplayRequest]> = checked.chunks(REPLAY_BATCH).collect();
        for threads in [1usize, 2] {
            let (prefill, batches) = (&prefill, &batches);
            let variants: Vec<Variant<'_>> = implementations
                .iter()
                .map(|&(name, make)| {
                    Variant::new(name, checked.len() as u64, move |iters| {
                        let mut elapsed = Duration::ZERO;
                        for _ in 0..iters {
                            let store = make();
                            fill_replay(store.as_ref(), prefill);
                            elapsed += parallel(threads, |thread| {
                                for batch in batches.iter().skip(thread).step_by(threads) {
                                    black_box(store.check_and_insert(batch, NOW));
                                }
                            });
                            drop(store);
                        }
                        elapsed
                    })
                })
                .collect();
            compare(c, &format!("{case}_{threads}_thread"), &variants);
        }
    }

    // What the dashmap would need to forget expired keys: a periodic sweep of every entry
    // (here nothing has expired, so it is the scan alone). The store has no such sweep.
    let entries = if bench_mode() {
        REVOCATION_ENTRIES
    } else {
        20_000
    };
    let swept = DashReplay::<foldhash::fast::FixedState>::new();
    let requests: Vec<ReplayRequest> = (0..entries as u64).map(replay_request).collect();
    fill_replay(&swept, &requests);
    let swept = &swept;
    let sweep = [Variant::new(
        "dashmap_foldhash_retain",
        entries as u64,
        move |iters| {
            let start = Instant::now();
            for _ in 0..iters {
                swept.map.retain(|_, expires_at| *expires_at >= NOW);
            }
            start.elapsed()
        },
    )];
    compare(c, "replay_sweep", &sweep);
}

// ---------------------------------------------------------------------------------------------
// 2. Revocation table vs dashmap.

fn revocation_id(i: usize) -> String {
    format!("{:010}", 1_000_000_000 + i)
}

/// Entry `i` as benches/revocations.rs writes them: subject entries, one in ten suspended, one
/// in three with `before`.
fn revocation_entry(i: usize) -> Entry {
    Entry {
        kind: Kind::Subject,
        id: revocation_id(i),
        status: if i % 10 == 9 {
            Status::Suspended
        } else {
            Status::Revoked
        },
        reason: Some(Reason::ALL[i % Reason::ALL.len()]),
        before: i.is_multiple_of(3).then_some(NOW),
        at: NOW,
    }
}

/// Entry `i` as the dashmap holds it: the list's key for (kind, id) and the same record.
fn revocation_record(i: usize) -> (u128, Record) {
    let entry = revocation_entry(i);
    (
        id_key(entry.kind, &entry.id),
        Record {
            kind: entry.kind,
            status: entry.status,
            reason: entry.reason,
            before: entry.before,
            at: entry.at,
        },
    )
}

fn revocation_slots(entries: usize) -> Vec<Slot> {
    (0..entries).map(|i| revocation_entry(i).slot()).collect()
}

/// The list, with every entry applied in one `apply_slots` call (a bulk update).
fn revocation_list(slots: &[Slot]) -> RevocationList {
    let list = RevocationList::new();
    assert_eq!(list.apply_slots(slots), slots.len());
    list
}

fn revocation(c: &mut Criterion) {
    let entries = if bench_mode() {
        REVOCATION_ENTRIES
    } else {
        20_000
    };
    let list = revocation_list(&revocation_slots(entries));
    let records: Vec<(u128, Record)> = (0..entries).map(revocation_record).collect();
    let dash: DashMap<u128, Record> = DashMap::default();
    let dash_fold: DashMap<u128, Record, foldhash::fast::FixedState> = DashMap::default();
    for (key, record) in &records {
        dash.insert(*key, *record);
        dash_fold.insert(*key, *record);
    }
    // Half on the list, half not, in a scattered order.
    let ids: Vec<String> = (0..PROBES * 2)
        .map(|i| {
            let n = i.wrapping_mul(2_654_435_761) % entries;
            revocation_id(if i % 2 == 0 { n } else { entries + n })
        })
        .collect();
    let keys: Vec<u128> = ids.iter().map(|id| id_key(Kind::Subject, id)).collect();
    let parsed: Vec<idgate::id::Id<'_>> = ids
        .iter()
        .map(|id| idgate::id::Id::parse(id).unwrap())
        .collect();

    let (list, dash, dash_fold) = (&list, &dash, &dash_fold);
    let list_by_key = move |key: &u128| list.table().get(*key).and_then(|s| s.record());
    let dash_by_key = move |key: &u128| dash.get(key).map(|r| *r);
    let dash_fold_by_key = move |key: &u128| dash_fold.get(key).map(|r| *r);
    for hits in [
        keys.iter().filter(|k| list_by_key(k).is_some()).count(),
        keys.iter().filter(|k| dash_by_key(k).is_some()).count(),
        keys.iter()
            .filter(|k| dash_fold_by_key(k).is_some())
            .count(),
    ] {
        assert_eq!(hits, PROBES);
    }
    for threads in [1usize, 2] {
        let elements = (PROBES * threads) as u64;
        let variants = [
            Variant::new("list", elements, lookups(threads, &keys, list_by_key)),
            Variant::new("dashmap", elements, lookups(threads, &keys, dash_by_key)),
            Variant::new(
                "dashmap_foldhash",
                elements,
                lookups(threads, &keys, dash_fold_by_key),
            ),
        ];
        compare(
            c,
            &format!("revocation_lookup_by_key_{threads}_thread"),
            &variants,
        );
    }
    // By ID text, as the API looks up: the SHA-256 of (kind, ID) included on every side.
    let threads = 2;
    let elements = (PROBES * threads) as u64;
    let variants = [
        Variant::new(
            "list",
            elements,
            lookups(threads, &parsed, |id| list.lookup(Kind::Subject, *id)),
        ),
        Variant::new(
            "dashmap",
            elements,
            lookups(threads, &parsed, |id| {
                dash.get(&id_key(Kind::Subject, id.as_str())).map(|r| *r)
            }),
        ),
        Variant::new(
            "dashmap_foldhash",
            elements,
            lookups(threads, &parsed, |id| {
                dash_fold
                    .get(&id_key(Kind::Subject, id.as_str()))
                    .map(|r| *r)
            }),
        ),
    ];
    compare(c, "revocation_lookup_by_id_2_thread", &variants);
}

/// A routine: each of `threads` threads looks its `PROBES` probes up once per iteration and
/// counts the adverse records (half of them). Generic over the lookup so that it is inlined: no
/// indirect call per lookup on either side.
fn lookups<'a, P: Sync>(
    threads: usize,
    probes: &'a [P],
    lookup: impl Fn(&P) -> Option<Record> + Sync + 'a,
) -> impl Fn(u64) -> Duration + 'a {
    move |iters| {
        parallel(threads, |thread| {
            let mine = &probes[thread * PROBES..(thread + 1) * PROBES];
            for _ in 0..iters {
                let adverse = mine
                    .iter()
                    .filter(|p| lookup(p).is_some_and(|r| r.status != Status::Active))
                    .count();
                black_box(adverse);
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// 3. The /v1/verify envelope parse against the verification it precedes.

/// `src/api/verify.rs`'s request body, field for field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the fields are what is parsed; the bench only counts them
struct VerifyRequest<'a> {
    #[serde(borrow)]
    presentations: Vec<Cow<'a, str>>,
    #[serde(default)]
    return_claims: bool,
}

/// The same body with each presentation in a newtype, so that `borrow` applies to the `Cow`
/// itself (escape-free text is then borrowed from the body, not copied).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // as above
struct BorrowingVerifyRequest<'a> {
    #[serde(borrow)]
    presentations: Vec<BorrowedText<'a>>,
    #[serde(default)]
    return_claims: bool,
}

#[derive(Deserialize)]
#[serde(transparent)]
struct BorrowedText<'a>(#[serde(borrow)] Cow<'a, str>);

fn envelope(c: &mut Criterion) {
    let issuers = mint::issuers(3, 1);
    let presentations = mint::fresh_presentations(&CorpusSpec {
        issuers: issuers.clone(),
        count: 257,
        now: NOW,
        audience: "aud".into(),
        seed: 21,
    });
    let trust = TrustStore::from_jwks(mint::jwks(&issuers).to_string().as_bytes()).expect("jwks");
    let verifier = Verifier::new(
        Arc::new(
            Engine::new(&EngineConfig {
                threads: 2,
                ..EngineConfig::default()
            })
            .expect("engine"),
        ),
        Limits::default(),
    );
    let replay = replay_store();
    let policy = Policy::default();
    for count in [256usize, 1] {
        // Distinct presentations for each size, so that the first verification of each is
        // valid; the repeats after it are replays, found after every other check has run.
        let texts = if count == 1 {
            &presentations[256..]
        } else {
            &presentations[..256]
        };
        let body = serde_json::to_vec(&serde_json::json!({ "presentations": texts })).unwrap();
        let parsed: VerifyRequest<'_> = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.presentations.len(), count);
        // serde's `borrow` reaches a `Cow` field itself, not one inside a `Vec`: every
        // presentation is copied into its own `String`. The borrowing variant below measures
        // what a newtype around the `Cow` would save.
        assert!(
            parsed
                .presentations
                .iter()
                .all(|p| matches!(p, Cow::Owned(_)))
        );
        let borrowed: BorrowingVerifyRequest<'_> = serde_json::from_slice(&body).unwrap();
        assert!(
            borrowed
                .presentations
                .iter()
                .all(|p| matches!(p.0, Cow::Borrowed(_)))
        );
        // The same call as benches/engine.rs's engine_cold: a fresh, empty issuer cache per
        // iteration, built and dropped outside the timed part.
        let verify = |trust_context: &TrustContext| {
            let batch = Batch::new(texts, NOW, &policy, false);
            verifier.verify(
                &batch,
                State {
                    trust: trust_context,
                    revocation: &NoRevocations,
                    replay: &replay,
                },
            )
        };
        let first = verify(&TrustContext::new(trust.clone(), 64 << 20));
        assert!(
            first.iter().all(|v| v.outcome == Outcome::Valid),
            "{:?}",
            first.iter().map(|v| v.outcome).collect::<Vec<_>>()
        );
        let (body, trust, verify) = (&body, &trust, &verify);
        let elements = count as u64;
        let variants = [
            Variant::new("parse", elements, move |iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let parsed: VerifyRequest<'_> =
                        serde_json::from_slice(black_box(body)).unwrap();
                    black_box(parsed.presentations.len());
                }
                start.elapsed()
            }),
            Variant::new("parse_borrowing", elements, move |iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let parsed: BorrowingVerifyRequest<'_> =
                        serde_json::from_slice(black_box(body)).unwrap();
                    black_box(parsed.presentations.len());
                }
                start.elapsed()
            }),
            Variant::new("verify_cold_2_threads", elements, move |iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let cold = TrustContext::new(trust.clone(), 64 << 20);
                    let start = Instant::now();
                    black_box(verify(&cold).len());
                    elapsed += start.elapsed();
                    drop(cold);
                }
                elapsed
            }),
        ];
        compare(c, &format!("verify_envelope_{count}"), &variants);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Prometheus text: Metrics::render against prometheus-client.

const DURATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const ITEM_BUCKETS: [f64; 13] = [
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];
/// The status codes `Metrics` counts (`0` is rendered as `other`).
const CODES: [u16; 13] = [
    200, 400, 401, 403, 404, 405, 408, 413, 415, 429, 500, 503, 0,
];
const CODE_LABELS: [&str; 13] = [
    "200", "400", "401", "403", "404", "405", "408", "413", "415", "429", "500", "503", "other",
];
const TENANTS: [&str; 4] = ["bank-a", "bank-b", "telco-c", "agency-d"];
const SHED_REASONS: [&str; 4] = ["pending_limit", "rate_limit", "too_large", "timeout"];
/// `idgate_replay_unavailable_total{cause}` (memory backend: no Redis families).
const UNAVAILABLE_CAUSES: [&str; 6] = [
    "watermark",
    "full",
    "redis_down",
    "redis_timeout",
    "redis_error",
    "redis_data_lost",
];
/// The scalar gauges of `Metrics::render` (name, help).
const GAUGES: [(&str, &str); 14] = [
    (
        "idgate_verify_pending_items",
        "Items accepted and not yet answered.",
    ),
    ("idgate_replay_entries", "Nonces held by the replay store."),
    (
        "idgate_replay_capacity",
        "Most nonces the replay store may hold.",
    ),
    (
        "idgate_revocation_entries",
        "Revoked or suspended credentials and subjects.",
    ),
    (
        "idgate_revocation_last_update_timestamp_seconds",
        "Wall-clock time of the last applied revocation update.",
    ),
    (
        "idgate_revocation_records",
        "Revocation records held, reinstatement tombstones included.",
    ),
    (
        "idgate_revocation_log_bytes",
        "Bytes of revocation log not yet folded into a snapshot.",
    ),
    (
        "idgate_revocation_snapshot_bytes",
        "Size of the current revocation snapshot.",
    ),
    (
        "idgate_revocation_compaction_duration_seconds",
        "Duration of the last compaction (log folded into a snapshot).",
    ),
    (
        "idgate_revocation_compaction_timestamp_seconds",
        "Wall-clock time the last compaction completed (0: none since start).",
    ),
    ("idgate_trust_keys", "Trusted issuer keys loaded."),
    (
        "idgate_issuer_cache_entries",
        "Verified issuer JWTs cached.",
    ),
    (
        "idgate_connections_open",
        "Open client connections (public listener).",
    ),
    (
        "idgate_ready",
        "1 when ready to serve, 0 while starting or draining.",
    ),
];

fn gauges() -> Gauges {
    Gauges {
        verify_pending_items: 512,
        replay_entries: 1_234_567,
        replay_capacity: 10_000_000,
        revocation_entries: 40_000_000,
        revocation_last_update: NOW,
        revocation_records: 40_000_123,
        revocation_log_bytes: 123_456_789,
        revocation_snapshot_bytes: 960_000_000,
        revocation_snapshot_seconds: 2.5,
        revocation_snapshot_timestamp: NOW,
        revocation_snapshots_ok: 17,
        revocation_snapshots_failed: 1,
        trust_keys: 12,
        signature_batches_ok: 987_654,
        signature_batches_fallback: 21,
        issuer_cache_entries: 65_536,
        connections_open: 64,
        ready: true,
        redis: None,
        revocation_feed: None,
    }
}

fn gauge_values(gauges: &Gauges) -> [f64; 14] {
    [
        gauges.verify_pending_items as f64,
        gauges.replay_entries as f64,
        gauges.replay_capacity as f64,
        gauges.revocation_entries as f64,
        gauges.revocation_last_update as f64,
        gauges.revocation_records as f64,
        gauges.revocation_log_bytes as f64,
        gauges.revocation_snapshot_bytes as f64,
        gauges.revocation_snapshot_seconds,
        gauges.revocation_snapshot_timestamp as f64,
        gauges.trust_keys as f64,
        gauges.issuer_cache_entries as f64,
        gauges.connections_open as f64,
        if gauges.ready { 1.0 } else { 0.0 },
    ]
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerificationLabels {
    tenant: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The same series as `Metrics` in prometheus-client's idiom: families keyed by label sets,
/// a registry, gauges set from `Gauges` at scrape time.
struct ClientMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily<RouteLabels>,
    batch_items: HistogramFamily<RouteLabels>,
    verifications: Family<VerificationLabels, Counter>,
    gauges: Vec<Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl ClientMetrics {
    fn new() -> ClientMetrics {
        let mut registry = Registry::default();
        let build_info = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        build_info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register("idgate_build_info", "Build information.", build_info);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "idgate_requests",
            "HTTP requests answered, by route and status code.",
            requests.clone(),
        );
        let durations: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register(
            "idgate_request_duration_seconds",
            "Time from request start to response, by route.",
            durations.clone(),
        );
        let batch_items: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(|| Histogram::new(ITEM_BUCKETS));
        registry.register(
            "idgate_batch_items",
            "Items per accepted request, by route.",
            batch_items.clone(),
        );
        let verifications = Family::<VerificationLabels, Counter>::default();
        registry.register(
            "idgate_verifications",
            "Presentation verdicts, by tenant and outcome.",
            verifications.clone(),
        );
        let results =
            |registry: &mut Registry, name: &str, help: &str, values: [(&'static str, u64); 2]| {
                let family = Family::<ResultLabels, Counter>::default();
                for (result, value) in values {
                    family.get_or_create(&ResultLabels { result }).inc_by(value);
                }
                registry.register(name, help, family);
            };
        let fixed = gauges();
        results(
            &mut registry,
            "idgate_signature_batches",
            "Signature batches: ok, or fallen back to one-by-one.",
            [
                ("ok", fixed.signature_batches_ok),
                ("fallback", fixed.signature_batches_fallback),
            ],
        );
        let coalesced = Counter::<u64>::default();
        coalesced.inc_by(4321);
        registry.register(
            "idgate_coalesced_batches",
            "Engine batches formed from several small /v1/verify requests.",
            coalesced,
        );
        let shed = Family::<ReasonLabels, Counter>::default();
        for reason in SHED_REASONS {
            shed.get_or_create(&ReasonLabels { reason }).inc();
        }
        registry.register(
            "idgate_shed",
            "Requests refused before work started, by reason.",
            shed,
        );
        let mut gauge_handles = Vec::new();
        for (name, help) in GAUGES {
            let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
            registry.register(name, help, gauge.clone());
            gauge_handles.push(gauge);
        }
        results(
            &mut registry,
            "idgate_revocation_compactions",
            "Compactions of the revocation log into a snapshot, by result.",
            [
                ("ok", fixed.revocation_snapshots_ok),
                ("error", fixed.revocation_snapshots_failed),
            ],
        );
        results(
            &mut registry,
            "idgate_trust_reloads",
            "Trust-store reloads, by result.",
            [("ok", 3), ("error", 1)],
        );
        let unavailable = Family::<CauseLabels, Counter>::default();
        for cause in UNAVAILABLE_CAUSES {
            unavailable.get_or_create(&CauseLabels { cause }).inc_by(0);
        }
        registry.register(
            "idgate_replay_unavailable",
            "Items answered replay_unavailable, by cause.",
            unavailable,
        );
        ClientMetrics {
            registry,
            requests,
            durations,
            batch_items,
            verifications,
            gauges: gauge_handles,
        }
    }

    fn request(&self, route: &'static str, code: usize, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                code: CODE_LABELS[code],
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }

    fn render(&self, gauges: &Gauges) -> String {
        for (gauge, value) in self.gauges.iter().zip(gauge_values(gauges)) {
            gauge.set(value);
        }
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }
}

fn metrics(c: &mut Criterion) {
    let routes: &'static [&'static str] = idgate::api::route::LABELS;
    let hand = Metrics::new(TENANTS.iter().map(|t| t.to_string()).collect(), routes);
    let client = ClientMetrics::new();
    // Every series present and non-zero on both sides: each (route, code) answered, each route
    // with a batch, each (tenant, outcome) counted.
    for (r, route) in routes.iter().enumerate() {
        for (c, code) in CODES.iter().enumerate() {
            let seconds = 0.0003 * (1 + r * 13 + c) as f64;
            hand.request(r, *code, seconds);
            client.request(route, c, seconds);
        }
        hand.batch(r, 1 + r * 50);
        client
            .batch_items
            .get_or_create(&RouteLabels { route })
            .observe((1 + r * 50) as f64);
    }
    for (t, tenant) in TENANTS.iter().enumerate() {
        for outcome in Outcome::ALL {
            hand.verifications(t, outcome, 7);
            client
                .verifications
                .get_or_create(&VerificationLabels {
                    tenant,
                    outcome: outcome.as_str(),
                })
                .inc_by(7);
        }
    }
    let gauges = gauges();
    let hand_text = hand.render(&gauges);
    let client_text = client.render(&gauges);
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    assert!(
        series(&hand_text).abs_diff(series(&client_text)) <= 2,
        "{} vs {} series",
        series(&hand_text),
        series(&client_text)
    );
    if bench_mode() {
        println!(
            "metrics exposition: hand-written {} series / {} bytes, prometheus-client {} series / {} bytes",
            series(&hand_text),
            hand_text.len(),
            series(&client_text),
            client_text.len()
        );
    }

    let gauges = &gauges;
    let (hand, client) = (&hand, &client);
    let renders = [
        Variant::new("hand_written", 1, move |iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(hand.render(gauges).len());
            }
            start.elapsed()
        }),
        Variant::new("prometheus_client", 1, move |iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(client.render(gauges).len());
            }
            start.elapsed()
        }),
    ];
    compare(c, "metrics_render", &renders);

    // Increments, one thread, cycling over label sets as requests would. A counter alone
    // (verdicts by tenant and outcome), and a request's record (counter + duration histogram).
    // prometheus-client twice: looking the label set up in the family each time (its usual
    // idiom), and through handles resolved once at start-up (what a closed label set allows).
    let outcomes = Outcome::ALL;
    let verification_handles: Vec<Counter> = TENANTS
        .iter()
        .flat_map(|tenant| {
            outcomes.iter().map(|outcome| {
                client
                    .verifications
                    .get_or_create_owned(&VerificationLabels {
                        tenant,
                        outcome: outcome.as_str(),
                    })
            })
        })
        .collect();
    let request_handles: Vec<(Counter, Histogram)> = routes
        .iter()
        .flat_map(|route| {
            CODE_LABELS.iter().map(|code| {
                (
                    client
                        .requests
                        .get_or_create_owned(&RequestLabels { route, code }),
                    client.durations.get_or_create_owned(&RouteLabels { route }),
                )
            })
        })
        .collect();
    let per_tenant = outcomes.len();
    let (verification_handles, request_handles) = (&verification_handles, &request_handles);
    let counters = [
        Variant::new(
            "hand_written",
            INCREMENTS as u64,
            increments(move |i| {
                let j = pick(i, TENANTS.len() * per_tenant);
                hand.verifications(j / per_tenant, outcomes[j % per_tenant], 1);
            }),
        ),
        Variant::new(
            "prometheus_client_family",
            INCREMENTS as u64,
            increments(move |i| {
                let j = pick(i, TENANTS.len() * per_tenant);
                client
                    .verifications
                    .get_or_create(&VerificationLabels {
                        tenant: TENANTS[j / per_tenant],
                        outcome: outcomes[j % per_tenant].as_str(),
                    })
                    .inc();
            }),
        ),
        Variant::new(
            "prometheus_client_handle",
            INCREMENTS as u64,
            increments(move |i| {
                verification_handles[pick(i, verification_handles.len())].inc();
            }),
        ),
    ];
    compare(c, "metrics_increment_counter", &counters);
    let requests = [
        Variant::new(
            "hand_written",
            INCREMENTS as u64,
            increments(move |i| {
                let j = pick(i, routes.len() * CODES.len());
                hand.request(j / CODES.len(), CODES[j % CODES.len()], 0.003);
            }),
        ),
        Variant::new(
            "prometheus_client_family",
            INCREMENTS as u64,
            increments(move |i| {
                let j = pick(i, routes.len() * CODES.len());
                client.request(routes[j / CODES.len()], j % CODES.len(), 0.003);
            }),
        ),
        Variant::new(
            "prometheus_client_handle",
            INCREMENTS as u64,
            increments(move |i| {
                let (counter, histogram) = &request_handles[pick(i, request_handles.len())];
                counter.inc();
                histogram.observe(0.003);
            }),
        ),
    ];
    compare(c, "metrics_increment_request", &requests);
}

/// Which of a group's label sets increment `i` touches: scattered, as requests arrive.
fn pick(i: usize, sets: usize) -> usize {
    i.wrapping_mul(7919) % sets
}

/// A routine of `INCREMENTS` calls of `increment` per iteration (the closure's own type, so
/// that it is inlined: no indirect call per increment on either side).
fn increments(increment: impl Fn(usize)) -> impl Fn(u64) -> Duration {
    move |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            for i in 0..INCREMENTS {
                increment(black_box(i));
            }
        }
        start.elapsed()
    }
}

// ---------------------------------------------------------------------------------------------
// The summary.

/// One group's line: the first variant's median per element, then each other variant's and
/// its ratio to the first (median of the per-round ratios).
fn group_line(group: &str, variants: &[&str], unit: &str) {
    let Some(first) = median(&format!("{group}/{}", variants[0])) else {
        return;
    };
    let mut line = format!("  {group}: {} {first:.1} {unit}", variants[0]);
    for variant in &variants[1..] {
        let id = format!("{group}/{variant}");
        if let (Some(value), Some(ratio)) =
            (median(&id), ratio(&format!("{group}/{}", variants[0]), &id))
        {
            line += &format!("; {variant} {value:.1} {unit} = {ratio:.2}x");
        }
    }
    println!("{line}");
}

/// Memory per entry of each structure, printed against the first (the hand-written one).
fn memory_lines(structures: &[&str], entries: usize) {
    let measured: Vec<f64> = structures
        .iter()
        .map(|s| memory_per_entry(s, entries))
        .collect();
    for (structure, bytes) in structures.iter().zip(&measured) {
        println!(
            "  {structure}: {bytes:.1} B/entry = {:.2}x {}",
            bytes / measured[0],
            structures[0]
        );
    }
}

fn summary() {
    let entries = if bench_mode() {
        REVOCATION_ENTRIES
    } else {
        20_000
    };
    let rounds = if bench_mode() { INTERLEAVED_ROUNDS } else { 1 };
    println!(
        "\n=== choices summary: medians over {rounds} interleaved rounds; each ratio is the median \
         of the per-round ratios, other / first (above 1: the first is faster)"
    );
    println!("1. replay store vs dashmap, ns per key (wall time / keys, all threads together):");
    let replay_variants = ["store", "dashmap", "dashmap_foldhash"];
    for case in ["replay_fresh", "replay_replayed"] {
        for threads in [1, 2] {
            group_line(&format!("{case}_{threads}_thread"), &replay_variants, "ns");
        }
    }
    if let Some(sweep) = median("replay_sweep/dashmap_foldhash_retain") {
        println!(
            "  dashmap_foldhash retain sweep over {entries} entries: {:.2} ms ({sweep:.2} ns per entry)",
            sweep * entries as f64 / 1e6
        );
    }
    println!("   memory per entry at {entries} entries (RSS growth, fresh process):");
    memory_lines(
        &["replay-store", "replay-dashmap", "replay-dashmap-foldhash"],
        entries,
    );
    println!("2. revocation list vs dashmap, ns per lookup (all threads together), half hits:");
    let list_variants = ["list", "dashmap", "dashmap_foldhash"];
    for group in [
        "revocation_lookup_by_key_1_thread",
        "revocation_lookup_by_key_2_thread",
        "revocation_lookup_by_id_2_thread",
    ] {
        group_line(group, &list_variants, "ns");
    }
    println!("   memory per entry at {entries} entries (RSS growth, fresh process):");
    memory_lines(
        &[
            "revocation-list",
            "revocation-dashmap",
            "revocation-dashmap-foldhash",
        ],
        entries,
    );
    println!("3. /v1/verify envelope parse against verifying its presentations (cold, 2 threads):");
    for count in [256, 1] {
        let group = format!("verify_envelope_{count}");
        let verify = format!("{group}/verify_cold_2_threads");
        for parse in ["parse", "parse_borrowing"] {
            let parse = format!("{group}/{parse}");
            if let (Some(p), Some(v), Some(share)) =
                (median(&parse), median(&verify), ratio(&verify, &parse))
            {
                println!(
                    "  {parse}: {:.2} us; verify {:.1} us; parse = {:.2}% of verify",
                    p * count as f64 / 1e3,
                    v * count as f64 / 1e3,
                    100.0 * share
                );
            }
        }
    }
    println!("4. metrics: hand-written vs prometheus-client (ns per scrape, per increment):");
    group_line(
        "metrics_render",
        &["hand_written", "prometheus_client"],
        "ns",
    );
    for group in ["metrics_increment_counter", "metrics_increment_request"] {
        group_line(
            group,
            &[
                "hand_written",
                "prometheus_client_family",
                "prometheus_client_handle",
            ],
            "ns",
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--measure-memory") {
        measure_memory(&args[i + 1], args[i + 2].parse().unwrap());
        return;
    }
    let mut criterion = Criterion::default()
        .sample_size(SAMPLES)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    replay(&mut criterion);
    revocation(&mut criterion);
    envelope(&mut criterion);
    metrics(&mut criterion);
    criterion.final_summary();
    summary();
}
