//! The ceiling: what the engine does in this process on the same corpus with the same core
//! count, measured before the HTTP phase. End-to-end figures are reported as a fraction of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use idgate::replay::{MemoryReplayOptions, MemoryReplayStore};
use idgate::revocation::{Entry, RevocationList};
use idgate::trust::TrustStore;
use idgate::verify::{
    Batch, Engine, EngineConfig, Limits, NoRevocations, Policy, SignatureInput, State,
    TrustContext, Verifier,
};

/// How long the ceiling is measured (after one warm-up pass); `--smoke` shortens it.
static MEASURE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(3000);

/// Sets how long each ceiling is measured.
pub fn set_measure(duration: Duration) {
    MEASURE_MS.store(
        duration.as_millis() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
}

fn verifier(threads: usize) -> anyhow::Result<Verifier> {
    Ok(Verifier::new(
        Arc::new(Engine::new(&EngineConfig {
            threads,
            ..EngineConfig::default()
        })?),
        Limits::default(),
    ))
}

/// Runs `pass` until `MEASURE` has elapsed; returns items per second.
fn measure(mut pass: impl FnMut() -> usize) -> f64 {
    pass();
    let measure = Duration::from_millis(MEASURE_MS.load(std::sync::atomic::Ordering::Relaxed));
    let started = Instant::now();
    let mut items = 0;
    while started.elapsed() < measure {
        items += pass();
    }
    items as f64 / started.elapsed().as_secs_f64()
}

/// Presentations verified in batches of `batch` on `threads` threads, cold issuer cache (as for
/// fresh credentials), a real replay store.
pub fn presentations(
    jwks: &serde_json::Value,
    items: &[String],
    batch: usize,
    threads: usize,
    now: i64,
) -> anyhow::Result<f64> {
    let store = TrustStore::from_jwks(jwks.to_string().as_bytes())?;
    let verifier = verifier(threads)?;
    let policy = Policy::default();
    let sample = &items[..items.len().min(20_000)];
    Ok(measure(|| {
        let trust = TrustContext::new(store.clone(), 256 << 20);
        let replay = MemoryReplayStore::new(MemoryReplayOptions {
            capacity: 10_000_000,
            watermark: None,
        });
        let state = State {
            trust: &trust,
            revocation: &NoRevocations,
            replay: &replay,
        };
        for chunk in sample.chunks(batch.max(1)) {
            verifier.verify(&Batch::new(chunk, now, &policy, false), state);
        }
        sample.len()
    }))
}

/// Raw signature items through the same engine.
pub fn signatures(inputs: &[SignatureInput], batch: usize, threads: usize) -> anyhow::Result<f64> {
    let verifier = verifier(threads)?;
    let sample = &inputs[..inputs.len().min(50_000)];
    Ok(measure(|| {
        for chunk in sample.chunks(batch.max(1)) {
            verifier.verify_signatures(chunk);
        }
        sample.len()
    }))
}

/// Status lookups against a list holding `revocations`, on `threads` threads.
pub fn status(ids: &[String], revocations: &[Entry], threads: usize) -> anyhow::Result<f64> {
    use rayon::prelude::*;
    let list = RevocationList::new();
    for entry in revocations {
        list.apply(entry);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let kind = idgate::revocation::Kind::Subject;
    Ok(measure(|| {
        let found: usize = pool.install(|| {
            ids.par_chunks(1024)
                .map(|chunk| {
                    chunk
                        .iter()
                        .filter(|id| {
                            idgate::id::Id::parse(id)
                                .is_some_and(|id| list.lookup(kind, id).is_some())
                        })
                        .count()
                })
                .sum()
        });
        std::hint::black_box(found);
        ids.len()
    }))
}
