//! `idgate verify` as a whole process against the raw primitive on the same presentations.
//!
//! Mints N fresh presentations (3 issuer keys, a new holder key each) into a file, then
//! alternates: the raw cofactored batch primitive (zebra) on all of their signatures on all cores
//! in this process, and `idgate verify FILE > /dev/null` timed from spawn to exit. Reports the
//! median of each and the median per-round ratio (target, issue #2: ≥ 80%).
//!
//! `cargo bench --bench offline` (50,000 presentations, 5 rounds; `-- --count N --rounds R`);
//! `cargo test --benches` runs a 2,000-presentation round as a smoke test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark tooling: a failed setup should stop loudly

use std::process::{Command, Stdio};
use std::time::Instant;

use ed25519_zebra::{VerificationKeyBytes, batch};
use idgate::mint::{self, CorpusSpec};
use idgate::trust::TrustStore;
use idgate::verify::Limits;
use idgate::verify::presentation::{self, HolderKey, KeyBinding};
use rayon::prelude::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: i64 = 1_763_900_000;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let count = arg(&args, "--count", if full { 50_000 } else { 2_000 });
    let rounds = arg(&args, "--rounds", if full { 5 } else { 1 });

    let dir = tempfile::tempdir().expect("tempdir");
    let issuers = mint::issuers(3, 1);
    let started = Instant::now();
    let presentations = mint::fresh_presentations(&CorpusSpec {
        issuers: issuers.clone(),
        count,
        now: NOW,
        audience: "aud".into(),
        seed: 50,
    });
    eprintln!(
        "minted {count} presentations in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // `--corpus-dir DIR` keeps the corpus (presentations.txt, trust.jwks.json) for profiling.
    let corpus_dir = args
        .iter()
        .position(|a| a == "--corpus-dir")
        .and_then(|i| args.get(i + 1))
        .map_or_else(|| dir.path().to_path_buf(), std::path::PathBuf::from);
    std::fs::create_dir_all(&corpus_dir).expect("corpus dir");
    let input = corpus_dir.join("presentations.txt");
    std::fs::write(&input, presentations.join("\n") + "\n").expect("write corpus");
    let jwks = corpus_dir.join("trust.jwks.json");
    std::fs::write(&jwks, mint::jwks(&issuers).to_string()).expect("write jwks");
    let trust = TrustStore::from_jwks(mint::jwks(&issuers).to_string().as_bytes()).expect("jwks");

    // The same signatures, extracted once (not timed).
    let limits = Limits::default();
    let signatures: Vec<([u8; 32], [u8; 64], Vec<u8>)> = presentations
        .par_iter()
        .flat_map_iter(|text| {
            let parts = presentation::split(text, &limits).expect("split");
            let issuer = presentation::parse_issuer(parts.issuer_jwt, &limits).expect("issuer");
            let key = *trust.key(&issuer.kid).expect("kid").key.as_bytes();
            let KeyBinding::Present(kb) =
                presentation::parse_key_binding(parts.kb_jwt, &limits).expect("kb")
            else {
                panic!("kb")
            };
            let HolderKey::Key(holder) = issuer.claims.holder_key else {
                panic!("cnf")
            };
            [
                (
                    key,
                    issuer.signature.expect("sig"),
                    parts.issuer_jwt.as_bytes()[..issuer.signing_input_len].to_vec(),
                ),
                (
                    *holder.as_bytes(),
                    kb.signature.expect("kb sig"),
                    kb.signing_input.as_bytes().to_vec(),
                ),
            ]
        })
        .collect();
    let raw = || {
        let started = Instant::now();
        // Batches of the engine's size, spread over all cores.
        let ok = signatures
            .par_chunks(idgate::verify::engine::DEFAULT_MAX_BATCH_SIGNATURES)
            .all(|chunk| {
                let mut verifier = batch::Verifier::new();
                for (key, signature, message) in chunk {
                    verifier.queue((
                        VerificationKeyBytes::from(*key),
                        ed25519::Signature::from_bytes(signature),
                        message,
                    ));
                }
                verifier.verify(rand::rng()).is_ok()
            });
        assert!(ok);
        started.elapsed().as_secs_f64()
    };
    let process = || {
        let started = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_idgate"))
            .args([
                "verify",
                "--trust",
                jwks.to_str().expect("utf-8"),
                "--at",
                &NOW.to_string(),
                input.to_str().expect("utf-8"),
            ])
            .stdout(Stdio::null())
            .status()
            .expect("spawn idgate");
        assert!(status.success());
        started.elapsed().as_secs_f64()
    };
    // Check once that every line verifies (untimed), so the timing is of real work.
    let output = Command::new(env!("CARGO_BIN_EXE_idgate"))
        .args([
            "verify",
            "--trust",
            jwks.to_str().expect("utf-8"),
            "--at",
            &NOW.to_string(),
            input.to_str().expect("utf-8"),
        ])
        .output()
        .expect("spawn idgate");
    let valid = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.contains("\"outcome\":\"valid\""))
        .count();
    assert_eq!(valid, count, "every presentation must verify");

    let (mut raw_times, mut process_times, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (r, p) = if round % 2 == 0 {
            (raw(), process())
        } else {
            let p = process();
            (raw(), p)
        };
        eprintln!(
            "  round {round}: raw {r:.3} s, process {p:.3} s, ratio {:.1}%",
            100.0 * r / p
        );
        raw_times.push(r);
        process_times.push(p);
        ratios.push(r / p);
    }
    let (raw_s, process_s, ratio) = (
        median(&mut raw_times),
        median(&mut process_times),
        median(&mut ratios),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "offline verify, {count} fresh presentations, {cores} cores, {rounds} interleaved rounds"
    );
    println!(
        "  raw primitive (zebra batch, all cores): {:>8.3} s  {:>8.0} presentations/s",
        raw_s,
        count as f64 / raw_s
    );
    println!(
        "  idgate verify, whole process:           {:>8.3} s  {:>8.0} presentations/s",
        process_s,
        count as f64 / process_s
    );
    println!(
        "  process / raw: {:.1}% (target >= 80%: {})",
        ratio * 100.0,
        if ratio >= 0.8 { "met" } else { "NOT met" }
    );
}
