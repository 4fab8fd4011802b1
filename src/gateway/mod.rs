//! The gateway's shared state and the one bridge from async handlers to the verification pool.
//!
//! `Gateway` is a cheap-clone handle (`Arc` inside). HTTP lives in `api/` and `server.rs`; this
//! module knows nothing of status codes.
//!
//! Its state is private: handlers reach it through methods, and verifying a tenant's
//! presentations has exactly one entry, [`Gateway::verify_presentations`] (`verify.rs`), whether
//! the request is coalesced with others or verified alone.
//!
//! **Invariants:**
//! - Verification and the rendering of its answers (verdicts to response bytes) run on the rayon
//!   pool, reached only through [`Gateway::on_engine`] and [`Gateway::verify_presentations`];
//!   async tasks never block and never hold a lock across `.await`. The request envelope (the
//!   JSON array of presentations; serde copies each into a `Cow::Owned`) is parsed on the tokio
//!   thread that read the body: measured, it is 2.0% of the time its 256 presentations take to
//!   verify, 0.39% for a single presentation (BENCHMARKS.md, "Design choices, measured"), and parsing it there lets
//!   a malformed body be refused before it takes a pool slot.
//! - Pending work is bounded: a request reserves its item count before any work is queued and
//!   the reservation is released when the *work* finishes (not when the client leaves), so the
//!   bound is honest even for abandoned requests.
//! - The trust store is an immutable snapshot swapped atomically; a reload that fails leaves
//!   the old one in force.

pub mod coalesce;
pub mod feed;
pub mod tenants;
mod verify;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::clock::unix_now;
use crate::config::Settings;
use crate::ed25519::SignatureError;
use crate::metrics::{Gauges, Metrics};
use crate::replay::{MemoryReplayOptions, MemoryReplayStore, RedisReplay, RedisStartError};
use crate::revocation::log::{LogError, Recovery};
use crate::revocation::store::RevocationStore;
use crate::trust::{TrustError, TrustStore};
use crate::verify::{Engine, EngineConfig, Limits, SignatureInput, TrustContext, Verifier};

pub use coalesce::Coalescer;
pub use tenants::{Tenant, Tenants};
pub use verify::{Presentations, VerifyError};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Revocations(#[from] LogError),
    #[error("cannot start the verification pool: {0}")]
    Pool(String),
    #[error(transparent)]
    Replay(#[from] RedisStartError),
    #[error(transparent)]
    Feed(#[from] feed::FeedStartError),
}

/// The replay store behind the verifier's `ReplayGuard` seam: answered at once (memory) or
/// over the network (Redis; see `verify.rs` for how a batch waits for it without a thread).
#[derive(Debug)]
pub(crate) enum Replay {
    Memory(MemoryReplayStore),
    Redis(RedisReplay),
}

/// The verification pool went away (the process is shutting down, or a job panicked).
#[derive(Debug, thiserror::Error)]
#[error("the verification pool did not answer")]
pub struct EngineGone;

/// Items accepted and not yet answered, with a hard bound.
#[derive(Debug)]
struct PendingBound {
    current: AtomicUsize,
    max: usize,
}

/// A share of the pending bound, released on drop.
#[derive(Debug)]
pub struct Reservation {
    pending: Arc<Inner>,
    items: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pending
            .pending
            .current
            .fetch_sub(self.items, Ordering::Relaxed);
    }
}

/// Everything the handlers share.
#[derive(Debug)]
struct Inner {
    settings: Settings,
    verifier: Verifier,
    trust: ArcSwap<TrustContext>,
    revocations: RevocationStore,
    /// With `revocation.feed = "redis"`.
    feed: Option<feed::Feed>,
    replay: Replay,
    tenants: Tenants,
    metrics: Metrics,
    pending: PendingBound,
    ready: AtomicBool,
    connections: AtomicU64,
    /// Set once the coalescer task runs (it needs the runtime).
    coalescer: std::sync::OnceLock<Coalescer>,
}

/// The shared handle.
#[derive(Clone, Debug)]
pub struct Gateway(Arc<Inner>);

impl Gateway {
    /// Loads the trust store and the revocation log and starts the verification pool. Not
    /// ready until [`Gateway::set_ready`]. `routes` are the request-metric labels (the API's
    /// routes, which this module does not know). With `replay.backend = "redis"` it connects
    /// to Redis first (inside the tokio runtime) and refuses to start on an unsafe server.
    pub async fn open(
        settings: Settings,
        routes: &'static [&'static str],
    ) -> Result<(Gateway, Recovery), StartError> {
        let store = TrustStore::load(&settings.trust_jwks)?;
        let (revocations, recovery) =
            RevocationStore::open(&settings.data_dir, settings.snapshot_log_bytes)?;
        let (feed, applied) = match &settings.revocation_feed {
            Some(options) => {
                let (feed, applied) = feed::Feed::open(
                    options,
                    &revocations,
                    settings.max_staleness_s,
                    settings.request_timeout.min(Duration::from_secs(2)),
                )
                .await?;
                (Some(feed), Some(applied))
            }
            None => (None, None),
        };
        let engine = Engine::new(&EngineConfig {
            threads: settings.verify_threads,
            ..EngineConfig::default()
        })
        .map_err(|e| StartError::Pool(e.to_string()))?;
        let tenants = Tenants::new(
            &settings.tenants,
            settings.clock_skew_s,
            settings.max_presentation_age_s,
        );
        let metrics = Metrics::new(tenants.names(), routes);
        let replay = match &settings.replay_redis {
            Some(options) => Replay::Redis(
                RedisReplay::connect(options.clone(), Arc::clone(&metrics.replay)).await?,
            ),
            // The store does not survive a restart: refuse KB-JWTs minted before this start.
            None => Replay::Memory(MemoryReplayStore::with_metrics(
                MemoryReplayOptions {
                    capacity: settings.replay_capacity,
                    watermark: Some(unix_now()),
                },
                Arc::clone(&metrics.replay),
            )),
        };
        let inner = Inner {
            verifier: Verifier::new(Arc::new(engine), Limits::default()),
            trust: ArcSwap::from_pointee(TrustContext::new(store, settings.cache_bytes)),
            revocations,
            feed,
            replay,
            tenants,
            metrics,
            pending: PendingBound {
                current: AtomicUsize::new(0),
                max: settings.max_pending_items,
            },
            ready: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            coalescer: std::sync::OnceLock::new(),
            settings,
        };
        let gateway = Gateway(Arc::new(inner));
        if let (Some(feed), Some(applied)) = (&gateway.0.feed, applied) {
            feed.spawn_applier(
                Arc::downgrade(&gateway.0),
                |inner| &inner.revocations,
                applied,
            );
        }
        Ok((gateway, recovery))
    }

    /// The configuration it was opened with.
    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn tenants(&self) -> &Tenants {
        &self.0.tenants
    }

    /// The revocation list and its durable log.
    pub fn revocations(&self) -> &RevocationStore {
        &self.0.revocations
    }

    /// The shared revocation feed, with `revocation.feed = "redis"`.
    pub fn feed(&self) -> Option<&feed::Feed> {
        self.0.feed.as_ref()
    }

    /// Forgets replay entries that expired by `now` (the sweeper).
    pub fn expire_replays(&self, now: i64) {
        // Redis expires its entries itself (PXAT).
        if let Replay::Memory(store) = &self.0.replay {
            store.expire(now);
        }
    }

    /// The current trust snapshot (with its issuer cache).
    pub fn trust(&self) -> Arc<TrustContext> {
        self.0.trust.load_full()
    }

    /// Reloads the trust store from its file; on any error the old one stays in force.
    pub fn reload_trust(&self) -> Result<usize, TrustError> {
        let result = TrustStore::load(&self.0.settings.trust_jwks);
        self.0.metrics.trust_reload(result.is_ok());
        let store = result?;
        let keys = store.len();
        // A new context means a new, empty issuer cache: no verdict outlives its keys.
        self.0.trust.store(Arc::new(TrustContext::new(
            store,
            self.0.settings.cache_bytes,
        )));
        Ok(keys)
    }

    /// Reserves `items` of the pending bound, or `None` if that would pass it.
    pub fn reserve(&self, items: usize) -> Option<Reservation> {
        let pending = &self.0.pending;
        let before = pending.current.fetch_add(items, Ordering::Relaxed);
        if before + items > pending.max {
            pending.current.fetch_sub(items, Ordering::Relaxed);
            return None;
        }
        Some(Reservation {
            pending: Arc::clone(&self.0),
            items,
        })
    }

    /// The bridge: runs `work` on the verification pool and awaits its result without blocking
    /// the async runtime.
    pub async fn on_engine<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, EngineGone> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.0.verifier.engine().spawn(move || {
            let _ = sender.send(work());
        });
        receiver.await.map_err(|_| EngineGone)
    }

    /// Verifies raw signature items with the same rule and engine (call it on the pool, through
    /// [`Gateway::on_engine`]).
    pub fn verify_signatures(&self, items: &[SignatureInput]) -> Vec<Result<(), SignatureError>> {
        self.0.verifier.verify_signatures(items)
    }

    /// Starts the coalescer (must run inside the tokio runtime).
    pub fn start_coalescer(&self) {
        if self.0.settings.coalesce_max_items > 0 {
            let _ = self.0.coalescer.set(Coalescer::start(
                self.clone(),
                self.0.settings.coalesce_max_items,
            ));
        }
    }

    fn coalescer(&self) -> Option<&Coalescer> {
        self.0.coalescer.get()
    }

    pub fn set_ready(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::SeqCst);
    }

    /// Ready to serve: started, not draining, and (with Redis) every node has a checked
    /// connection — an instance that can only answer `replay_unavailable` is not ready — and
    /// (with a shared revocation feed) caught up with it.
    pub fn is_ready(&self) -> bool {
        let redis_ok = match &self.0.replay {
            Replay::Memory(_) => true,
            Replay::Redis(redis) => redis.is_ready(),
        };
        // With a shared feed: caught up, and confirmed recently enough to answer.
        let feed_ok = self.0.feed.is_none()
            || crate::verify::RevocationSource::is_current(
                self.0.revocations.list().as_ref(),
                unix_now(),
            );
        self.0.ready.load(Ordering::SeqCst) && redis_ok && feed_ok
    }

    /// Tracks open client connections (the metric).
    pub fn connection_opened(&self) {
        self.0.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Values for the metrics endpoint.
    pub fn gauges(&self) -> Gauges {
        let trust = self.trust();
        let stats = self.0.verifier.engine().stats();
        let revocation_stats = self.0.revocations.stats();
        let (replay_entries, replay_capacity, redis) = match &self.0.replay {
            Replay::Memory(store) => (store.len() as u64, store.capacity() as u64, None),
            Replay::Redis(redis) => (0, 0, Some(redis.nodes())),
        };
        let revocation_feed = self.0.feed.as_ref().map(|feed| {
            let stats = feed.stats();
            let load = |v: &std::sync::atomic::AtomicI64| v.load(Ordering::Relaxed);
            let count = |v: &AtomicU64| v.load(Ordering::Relaxed);
            crate::metrics::FeedGauges {
                applied: feed.applied(),
                confirmed: self.0.revocations.list().as_of(0),
                entries_applied: count(&stats.entries_applied),
                gaps_repaired: count(&stats.gaps_repaired),
                imports_applied: count(&stats.imports_applied),
                last_entry: load(&stats.last_entry_at),
                last_heartbeat: load(&stats.last_heartbeat),
                snapshot_created: load(&stats.snapshot_created),
                lock_holder: stats.lock_holder.load(Ordering::Relaxed),
            }
        });
        Gauges {
            redis,
            revocation_feed,
            verify_pending_items: self.0.pending.current.load(Ordering::Relaxed) as u64,
            replay_entries,
            replay_capacity,
            revocation_entries: self.0.revocations.list().len() as u64,
            revocation_last_update: self.0.revocations.list().last_update(),
            revocation_records: self.0.revocations.list().records() as u64,
            revocation_log_bytes: self.0.revocations.log_bytes(),
            revocation_snapshot_bytes: revocation_stats.snapshot_bytes.load(Ordering::Relaxed),
            revocation_snapshot_seconds: revocation_stats
                .last_snapshot_micros
                .load(Ordering::Relaxed) as f64
                / 1e6,
            revocation_snapshot_timestamp: revocation_stats
                .last_snapshot_at
                .load(Ordering::Relaxed),
            revocation_snapshots_ok: revocation_stats.snapshots_ok.load(Ordering::Relaxed),
            revocation_snapshots_failed: revocation_stats.snapshots_failed.load(Ordering::Relaxed),
            trust_keys: trust.keys.key_count() as u64,
            signature_batches_ok: stats.batches_ok.load(Ordering::Relaxed),
            signature_batches_fallback: stats.batches_fallback.load(Ordering::Relaxed),
            issuer_cache_entries: trust.cache.len(),
            connections_open: self.0.connections.load(Ordering::Relaxed),
            ready: self.is_ready(),
        }
    }

    /// The data directory (for the demo banner and tools).
    pub fn data_dir(&self) -> &Path {
        &self.0.settings.data_dir
    }
}

/// Text items of a request (presentations, IDs) without copying them out of the request body:
/// spans into the body, or owned strings where JSON escapes had to be decoded.
#[derive(Clone, Debug, Default)]
pub struct Texts {
    body: Bytes,
    items: Vec<Text>,
}

#[derive(Clone, Debug)]
enum Text {
    Span(usize, usize),
    Owned(String),
}

impl Texts {
    pub fn new(body: Bytes) -> Texts {
        Texts {
            body,
            items: Vec::new(),
        }
    }

    /// Adds an item that is `text`: a span if `text` lies inside the body, a copy otherwise.
    pub fn push(&mut self, text: &str) {
        let start = (text.as_ptr() as usize).wrapping_sub(self.body.as_ptr() as usize);
        let item = if start <= self.body.len() && start + text.len() <= self.body.len() {
            Text::Span(start, start + text.len())
        } else {
            Text::Owned(text.to_owned())
        };
        self.items.push(item);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Item `index` (empty if out of range, which the caller never asks).
    pub fn get(&self, index: usize) -> &str {
        match self.items.get(index) {
            Some(Text::Span(start, end)) => self
                .body
                .get(*start..*end)
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .unwrap_or(""),
            Some(Text::Owned(text)) => text,
            None => "",
        }
    }
}
