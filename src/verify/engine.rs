//! The batch engine: a dedicated rayon pool and cofactored batch verification with per-item
//! fallback.
//!
//! **Invariants:**
//! - All CPU-heavy verification runs on this pool, never on an async runtime's threads.
//! - A batch is only a shortcut: when it fails, every member is re-verified alone (in parallel),
//!   so a member's verdict is always the single verdict of [`SignatureJob::verify_single`].
//! - Batch randomness comes from the thread-local CSPRNG, fresh per batch; an attacker who cannot
//!   predict it cannot make a bad signature pass a batch (ZIP-215 batch soundness).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::ed25519::batch;
use crate::ed25519::{SignatureError, SignatureJob};

/// How many signatures go into one batch at most. Larger batches amortise the multiscalar
/// multiplication better (Pippenger widens its window with size): measured per signature, 1,024
/// costs 12% less than 256 in the last run (8–14% over five), and 2,048 or 4,096 only 5–8% less
/// again while a failed batch costs twice as much to fall back from (`raw_batch_size` in
/// `benches/engine.rs`, BENCHMARKS.md "Criterion details"). A batch never takes more than its share of a request,
/// so small requests still spread over every core.
pub const DEFAULT_MAX_BATCH_SIGNATURES: usize = 1024;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    /// Upper bound on signatures per batch.
    pub max_batch_signatures: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            threads: 0,
            max_batch_signatures: DEFAULT_MAX_BATCH_SIGNATURES,
        }
    }
}

/// Counters the metrics endpoint reads (`idgate_signature_batches_total{result}`).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Batches whose combined equation held.
    pub batches_ok: AtomicU64,
    /// Batches that failed and were resolved item by item.
    pub batches_fallback: AtomicU64,
    /// Signatures verified (batched or alone), whatever the verdict.
    pub signatures: AtomicU64,
    /// Signatures verified by each pool thread (index = rayon thread index): shows that work
    /// really spreads over every core.
    pub per_thread: Vec<AtomicU64>,
}

impl EngineStats {
    fn record(&self, signatures: usize) {
        self.signatures
            .fetch_add(signatures as u64, Ordering::Relaxed);
        if let Some(slot) = rayon::current_thread_index().and_then(|i| self.per_thread.get(i)) {
            slot.fetch_add(signatures as u64, Ordering::Relaxed);
        }
    }

    /// How many pool threads have verified at least one signature.
    pub fn threads_used(&self) -> usize {
        self.per_thread
            .iter()
            .filter(|n| n.load(Ordering::Relaxed) > 0)
            .count()
    }
}

/// The verification thread pool. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Engine {
    pool: rayon::ThreadPool,
    threads: usize,
    max_batch_signatures: usize,
    stats: Arc<EngineStats>,
}

impl Engine {
    /// Starts the pool.
    pub fn new(config: &EngineConfig) -> Result<Engine, rayon::ThreadPoolBuildError> {
        let threads = if config.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            config.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("idgate-verify-{i}"))
            .build()?;
        Ok(Engine {
            pool,
            threads,
            max_batch_signatures: config.max_batch_signatures.max(1),
            stats: Arc::new(EngineStats {
                per_thread: (0..threads).map(|_| AtomicU64::new(0)).collect(),
                ..EngineStats::default()
            }),
        })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Upper bound on signatures per batch.
    pub fn max_batch_signatures(&self) -> usize {
        self.max_batch_signatures
    }

    /// The engine's counters.
    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// Queues `work` on the pool and returns at once (the async bridge uses this; the caller is
    /// never a pool thread and never blocks).
    pub fn spawn(&self, work: impl FnOnce() + Send + 'static) {
        self.pool.spawn(work);
    }

    /// A rayon scope whose spawned tasks run on the pool, started in the order they were spawned
    /// (`spawn_fifo`), while the calling thread (not a pool thread) runs `work`; returns when
    /// `work` and every task spawned are done.
    pub fn in_place_scope_fifo<'scope, R>(
        &self,
        work: impl FnOnce(&rayon::ScopeFifo<'scope>) -> R,
    ) -> R {
        self.pool.in_place_scope_fifo(work)
    }

    /// Runs `work` on the pool and returns its result; the caller's thread blocks meanwhile.
    pub fn install<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        self.pool.install(work)
    }

    /// How many items each parallel chunk should hold so that every thread gets work and no chunk
    /// carries more than `max_batch_signatures` signatures (`signatures_per_item` per item).
    pub fn chunk_len(&self, items: usize, signatures_per_item: usize) -> usize {
        let per_thread = items.div_ceil(self.threads.max(1));
        per_thread.clamp(1, self.items_per_batch(signatures_per_item))
    }

    /// How many items with `signatures_per_item` signatures each fill one batch (at least one).
    pub fn items_per_batch(&self, signatures_per_item: usize) -> usize {
        (self.max_batch_signatures / signatures_per_item.max(1)).max(1)
    }

    /// Verifies one batch of jobs and returns one verdict per job, in order. Call from inside
    /// [`Engine::install`] so the fallback runs on the pool.
    pub fn verify_jobs(&self, jobs: &[SignatureJob]) -> Vec<Result<(), SignatureError>> {
        match jobs.len() {
            0 => return Vec::new(),
            // A batch of one costs more than the single equation and proves nothing more.
            1 => {
                self.stats.record(1);
                return jobs.iter().map(SignatureJob::verify_single).collect();
            }
            _ => {}
        }
        let passed = batch::verify_batch(jobs.iter().map(SignatureJob::item), &mut rand::rng());
        self.stats.record(jobs.len());
        if passed {
            self.stats.batches_ok.fetch_add(1, Ordering::Relaxed);
            return vec![Ok(()); jobs.len()];
        }
        self.stats.batches_fallback.fetch_add(1, Ordering::Relaxed);
        jobs.par_iter()
            .with_min_len(4)
            .map(|job| {
                self.stats.record(1);
                job.verify_single()
            })
            .collect()
    }

    /// Verifies any number of jobs: splits them into batches across the pool.
    pub fn verify_all(&self, jobs: &[SignatureJob]) -> Vec<Result<(), SignatureError>> {
        let chunk = self.chunk_len(jobs.len(), 1);
        self.install(|| {
            jobs.par_chunks(chunk)
                .flat_map_iter(|batch| self.verify_jobs(batch))
                .collect()
        })
    }
}
