//! Engine benchmarks with criterion (absolute times and their spread): the engine against the raw
//! cofactored batch primitive, parsing step by step, the issuer cache (quick_cache vs moka), batch
//! size, and the cost of a bad signature in a batch. The target *ratios* come from `ratios.rs`,
//! which interleaves its measurements so that machine noise cancels.
//!
//! `cargo bench --bench engine` for figures; `cargo test --benches` runs each once (CI smoke).

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark tooling: a failed setup should stop loudly

use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_zebra::{VerificationKeyBytes, batch};
use idgate::mint::{self, CorpusSpec};
use idgate::replay::{MemoryReplayOptions, MemoryReplayStore};
use idgate::trust::TrustStore;
use idgate::verify::presentation::{self, HolderKey, KeyBinding};
use idgate::verify::{
    Batch, Engine, EngineConfig, Limits, NoRevocations, Policy, State, TrustContext, Verifier,
    disclosure,
};
use rayon::prelude::*;

// The same allocator as the binary, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: i64 = 1_763_900_000;
const BATCH: usize = 256;

struct Fixture {
    presentations: Vec<String>,
    trust: TrustStore,
    /// The presentations' signatures as (key, signature, signed bytes), issuer then holder.
    signatures: Vec<([u8; 32], [u8; 64], Vec<u8>)>,
}

fn fixture(count: usize, seed: u64) -> Fixture {
    let issuers = mint::issuers(3, 1);
    let presentations = mint::fresh_presentations(&CorpusSpec {
        issuers: issuers.clone(),
        count,
        now: NOW,
        audience: "aud".into(),
        seed,
    });
    let trust = TrustStore::from_jwks(mint::jwks(&issuers).to_string().as_bytes()).expect("jwks");
    let limits = Limits::default();
    let mut signatures = Vec::with_capacity(count * 2);
    for text in &presentations {
        let parts = presentation::split(text, &limits).expect("split");
        let issuer = presentation::parse_issuer(parts.issuer_jwt, &limits).expect("issuer");
        let key = trust.key(&issuer.kid).expect("kid").key.as_bytes();
        let message = parts.issuer_jwt.as_bytes()[..issuer.signing_input_len].to_vec();
        signatures.push((*key, issuer.signature.expect("sig"), message));
        let KeyBinding::Present(kb) =
            presentation::parse_key_binding(parts.kb_jwt, &limits).expect("kb")
        else {
            panic!("kb")
        };
        let HolderKey::Key(holder) = issuer.claims.holder_key else {
            panic!("cnf")
        };
        signatures.push((
            *holder.as_bytes(),
            kb.signature.expect("kb sig"),
            kb.signing_input.as_bytes().to_vec(),
        ));
    }
    Fixture {
        presentations,
        trust,
        signatures,
    }
}

/// The raw primitive: zebra's cofactored batch verifier, hashing included, nothing else.
fn raw_batch(signatures: &[([u8; 32], [u8; 64], Vec<u8>)]) -> bool {
    let mut verifier = batch::Verifier::new();
    for (key, signature, message) in signatures {
        verifier.queue((
            VerificationKeyBytes::from(*key),
            ed25519::Signature::from_bytes(signature),
            message,
        ));
    }
    verifier.verify(rand::rng()).is_ok()
}

fn engine(threads: usize) -> Arc<Engine> {
    Arc::new(
        Engine::new(&EngineConfig {
            threads,
            ..EngineConfig::default()
        })
        .expect("engine"),
    )
}

fn verify(
    verifier: &Verifier,
    trust: &TrustContext,
    replay: &MemoryReplayStore,
    presentations: &[String],
) -> usize {
    let policy = Policy::default();
    let batch = Batch::new(presentations, NOW, &policy, false);
    let verdicts = verifier.verify(
        &batch,
        State {
            trust,
            revocation: &NoRevocations,
            replay,
        },
    );
    verdicts.len()
}

fn replay_store() -> MemoryReplayStore {
    MemoryReplayStore::new(MemoryReplayOptions {
        capacity: 10_000_000,
        watermark: None,
    })
}

/// A cold engine as deployed: the issuer cache is on but empty, so every presentation pays the
/// lookup miss, both signatures and the insert. A fresh cache per iteration, built and dropped
/// outside the timed part.
fn bench_cold(
    b: &mut criterion::Bencher<'_>,
    verifier: &Verifier,
    trust: &TrustStore,
    presentations: &[String],
) {
    let replay = replay_store();
    b.iter_batched_ref(
        || TrustContext::new(trust.clone(), 64 << 20),
        |cold| verify(verifier, cold, &replay, presentations),
        BatchSize::PerIteration,
    )
}

/// Engine vs raw primitive, all cores, 256 fresh presentations (3 issuer keys), cold and warm.
fn engine_vs_primitive(c: &mut Criterion) {
    let fixture = fixture(BATCH, 7);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all = engine(0);
    let verifier = Verifier::new(Arc::clone(&all), Limits::default());
    let warm = TrustContext::new(fixture.trust.clone(), 64 << 20);
    let replay = replay_store();
    verify(&verifier, &warm, &replay, &fixture.presentations);

    let mut group = c.benchmark_group("presentations_256");
    group.throughput(Throughput::Elements(BATCH as u64));
    // Same chunking as the engine: one batch of (BATCH / cores) presentations per core.
    let per_chunk = all.chunk_len(BATCH, 2) * 2;
    group.bench_function(BenchmarkId::new("raw_primitive", cores), |b| {
        b.iter(|| {
            all.install(|| {
                fixture
                    .signatures
                    .par_chunks(per_chunk)
                    .map(raw_batch)
                    .all(|ok| ok)
            })
        })
    });
    group.bench_function(BenchmarkId::new("engine_cold", cores), |b| {
        bench_cold(b, &verifier, &fixture.trust, &fixture.presentations)
    });
    let uncached = TrustContext::new(fixture.trust.clone(), 0);
    group.bench_function(BenchmarkId::new("engine_cache_off", cores), |b| {
        b.iter(|| verify(&verifier, &uncached, &replay, &fixture.presentations))
    });
    group.bench_function(BenchmarkId::new("engine_warm", cores), |b| {
        b.iter(|| verify(&verifier, &warm, &replay, &fixture.presentations))
    });
    group.finish();
}

/// The parsing steps one by one (one thread), to see where parsing time goes.
fn parse_parts(c: &mut Criterion) {
    let fixture = fixture(BATCH, 12);
    let limits = Limits::default();
    let texts = &fixture.presentations;
    let parts: Vec<_> = texts
        .iter()
        .map(|t| presentation::split(t, &limits).expect("split"))
        .collect();
    let issuers: Vec<_> = parts
        .iter()
        .map(|p| presentation::parse_issuer(p.issuer_jwt, &limits).expect("issuer"))
        .collect();
    let mut group = c.benchmark_group("parse_parts");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("split", |b| {
        b.iter(|| {
            texts
                .iter()
                .map(|t| {
                    presentation::split(t, &limits)
                        .map(|p| p.disclosures.len())
                        .unwrap_or(0)
                })
                .sum::<usize>()
        })
    });
    let payloads: Vec<Vec<u8>> = parts
        .iter()
        .map(|p| {
            idgate::b64::decode(p.issuer_jwt.split('.').nth(1).expect("payload")).expect("b64")
        })
        .collect();
    group.bench_function("payload_serde_value", |b| {
        b.iter(|| {
            payloads
                .iter()
                .filter(|p| serde_json::from_slice::<serde_json::Value>(p).is_ok())
                .count()
        })
    });
    group.bench_function("payload_serde_ignored", |b| {
        b.iter(|| {
            payloads
                .iter()
                .filter(|p| serde_json::from_slice::<serde::de::IgnoredAny>(p).is_ok())
                .count()
        })
    });
    group.bench_function("payload_extract", |b| {
        b.iter(|| {
            payloads
                .iter()
                .filter(|p| idgate::verify::extract::parse(p, 16, 3).is_ok())
                .count()
        })
    });
    group.bench_function("payload_b64", |b| {
        b.iter(|| {
            parts
                .iter()
                .filter(|p| {
                    idgate::b64::decode(p.issuer_jwt.split('.').nth(1).expect("payload")).is_ok()
                })
                .count()
        })
    });
    // k = SHA-512(R ‖ A ‖ M) for the issuer signature (R ‖ A stand-in: 64 bytes), by the sha2
    // crate (what zebra and dalek use) and by ring (what `SignatureJob::new` uses).
    let signing_inputs: Vec<Vec<u8>> = parts
        .iter()
        .map(|p| {
            let (input, _) = p.issuer_jwt.rsplit_once('.').expect("signature");
            [&[7u8; 64][..], input.as_bytes()].concat()
        })
        .collect();
    group.bench_function("sha512_sha2", |b| {
        b.iter(|| {
            use sha2::Digest;
            signing_inputs
                .iter()
                .map(|m| sha2::Sha512::digest(m)[0] as usize)
                .sum::<usize>()
        })
    });
    group.bench_function("sha512_ring", |b| {
        b.iter(|| {
            signing_inputs
                .iter()
                .map(|m| ring::digest::digest(&ring::digest::SHA512, m).as_ref()[0] as usize)
                .sum::<usize>()
        })
    });
    group.bench_function("digests", |b| {
        b.iter(|| {
            parts
                .iter()
                .map(|p| presentation::digests(p, true).cache_key[0] as usize)
                .sum::<usize>()
        })
    });
    group.bench_function("parse_issuer", |b| {
        b.iter(|| {
            parts
                .iter()
                .filter(|p| presentation::parse_issuer(p.issuer_jwt, &limits).is_ok())
                .count()
        })
    });
    group.bench_function("decode_disclosures", |b| {
        b.iter(|| {
            parts
                .iter()
                .filter(|p| presentation::decode_disclosures(&p.disclosures, &limits).is_ok())
                .count()
        })
    });
    group.bench_function("parse_key_binding", |b| {
        b.iter(|| {
            parts
                .iter()
                .filter(|p| presentation::parse_key_binding(p.kb_jwt, &limits).is_ok())
                .count()
        })
    });
    let decoded: Vec<_> = parts
        .iter()
        .map(|p| {
            presentation::decode_disclosures(&p.disclosures, &limits)
                .expect("l")
                .expect("d")
        })
        .collect();
    group.bench_function("process_disclosures", |b| {
        b.iter(|| {
            issuers
                .iter()
                .zip(&decoded)
                .filter(|(i, d)| disclosure::validate(i.sd.as_ref().expect("sd"), d, 16).is_ok())
                .count()
        })
    });
    group.finish();
}

/// The issuer cache: quick_cache (used) against moka (named by the design card), miss-and-insert
/// then hit, on 32-byte keys and `Arc` values as the engine uses them.
fn issuer_cache(c: &mut Criterion) {
    let fixture = fixture(64, 13);
    let limits = Limits::default();
    let jwt = Arc::new(
        presentation::parse_issuer(
            presentation::split(&fixture.presentations[0], &limits)
                .expect("split")
                .issuer_jwt,
            &limits,
        )
        .expect("issuer"),
    );
    let keys: Vec<[u8; 32]> = (0u64..4096)
        .map(|i| {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            key
        })
        .collect();
    let mut group = c.benchmark_group("issuer_cache");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("quick_cache_miss_insert", |b| {
        b.iter_batched_ref(
            || idgate::verify::IssuerCache::new(64 << 20),
            |cache| {
                for key in &keys {
                    if cache.get(key).is_none() {
                        cache.insert(*key, Arc::clone(&jwt));
                    }
                }
            },
            BatchSize::PerIteration,
        )
    });
    let warm = idgate::verify::IssuerCache::new(64 << 20);
    keys.iter().for_each(|k| warm.insert(*k, Arc::clone(&jwt)));
    group.bench_function("quick_cache_hit", |b| {
        b.iter(|| keys.iter().filter(|k| warm.get(k).is_some()).count())
    });
    let moka_new = || {
        moka::sync::Cache::<[u8; 32], Arc<presentation::IssuerJwt>>::builder()
            .max_capacity(64 << 20)
            .weigher(|_, v: &Arc<presentation::IssuerJwt>| (v.payload_len * 2 + 512) as u32)
            .build()
    };
    group.bench_function("moka_miss_insert", |b| {
        b.iter_batched_ref(
            moka_new,
            |cache| {
                for key in &keys {
                    if cache.get(key).is_none() {
                        cache.insert(*key, Arc::clone(&jwt));
                    }
                }
            },
            BatchSize::PerIteration,
        )
    });
    let warm = moka_new();
    keys.iter().for_each(|k| warm.insert(*k, Arc::clone(&jwt)));
    group.bench_function("moka_hit", |b| {
        b.iter(|| keys.iter().filter(|k| warm.get(*k).is_some()).count())
    });
    group.finish();
}

/// The raw primitive per signature by batch size (presentation-shaped signatures, one thread).
fn batch_size(c: &mut Criterion) {
    let fixture = fixture(2048, 10);
    let mut group = c.benchmark_group("raw_batch_size");
    for size in [16usize, 64, 128, 256, 512, 1024, 2048, 4096] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| raw_batch(&fixture.signatures[..size]))
        });
    }
    group.finish();
}

/// One forged presentation among 256: the fallback's cost against an all-honest batch.
fn bad_signature_cost(c: &mut Criterion) {
    let fixture = fixture(BATCH, 11);
    // A payload edit that keeps it valid base64url JSON (exp + 1): the issuer signature then
    // fails in the batch, which falls back to verifying its members one by one.
    let mut poisoned = fixture.presentations.clone();
    let victim = &mut poisoned[BATCH / 2];
    let (issuer_jwt, rest) = victim.split_once('~').expect("presentation");
    let mut segments: Vec<String> = issuer_jwt.split('.').map(str::to_string).collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&idgate::b64::decode(&segments[1]).expect("b64")).expect("json");
    payload["exp"] = serde_json::json!(payload["exp"].as_i64().expect("exp") + 1);
    segments[1] = idgate::b64::encode(payload.to_string());
    *victim = format!("{}~{rest}", segments.join("."));
    let verifier = Verifier::new(engine(0), Limits::default());
    let mut group = c.benchmark_group("one_bad_in_256");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("all_honest", |b| {
        bench_cold(b, &verifier, &fixture.trust, &fixture.presentations)
    });
    group.bench_function("one_forged", |b| {
        bench_cold(b, &verifier, &fixture.trust, &poisoned)
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4)).warm_up_time(std::time::Duration::from_secs(1));
    targets = engine_vs_primitive, parse_parts, issuer_cache, batch_size, bad_signature_cost
}
criterion_main!(benches);
