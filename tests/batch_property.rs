//! Property: for any mix of valid, corrupted and edge-case signatures, the engine's batch
//! verdicts equal the single verdicts item by item (and the independent reference rule).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, OnceLock};

use common::reference_verdict;
use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use idgate::ed25519::verify_one;
use idgate::verify::{Engine, EngineConfig, Limits, SignatureInput, Verifier};
use proptest::prelude::*;
use sha2::{Digest, Sha512};

/// A point of order 8 (its multiples are the whole 8-torsion subgroup).
fn torsion(multiple: u8) -> EdwardsPoint {
    let order8 = CompressedEdwardsY(
        common::hex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
            .try_into()
            .unwrap(),
    )
    .decompress()
    .unwrap();
    order8 * Scalar::from(multiple)
}

fn scalar(seed: u64, domain: u8) -> Scalar {
    let mut hasher = Sha512::new();
    hasher.update([domain]);
    hasher.update(seed.to_le_bytes());
    Scalar::from_bytes_mod_order_wide(&hasher.finalize().into())
}

fn challenge(r: &[u8; 32], a: &[u8; 32], message: &[u8]) -> Scalar {
    let mut hasher = Sha512::new();
    hasher.update(r);
    hasher.update(a);
    hasher.update(message);
    Scalar::from_bytes_mod_order_wide(&hasher.finalize().into())
}

/// Signs with secret scalar `a`, publishing `public` (which may be a·B plus torsion) and
/// committing to `r_point` (which may be r·B plus torsion).
fn sign_raw(
    a: Scalar,
    public: EdwardsPoint,
    r: Scalar,
    r_point: EdwardsPoint,
    message: &[u8],
) -> SignatureInput {
    let a_bytes = public.compress().0;
    let r_bytes = r_point.compress().0;
    let s = r + challenge(&r_bytes, &a_bytes, message) * a;
    let mut signature = r_bytes.to_vec();
    signature.extend_from_slice(s.as_bytes());
    SignatureInput {
        public_key: a_bytes.to_vec(),
        message: message.to_vec(),
        signature,
    }
}

/// Adds ℓ to the little-endian S (a non-canonical scalar for the same value).
fn add_group_order(signature: &mut [u8]) {
    let order = Scalar::ZERO - Scalar::ONE;
    let mut l = *order.as_bytes();
    l[0] += 1; // ℓ − 1 + 1, no carry since ℓ − 1 ends in 0xec.
    let mut carry = 0u16;
    for (byte, add) in signature[32..].iter_mut().zip(l) {
        let sum = u16::from(*byte) + u16::from(add) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
}

/// A y < 19 that is on the curve and not small-order, encoded non-canonically as y + p.
fn non_canonical_point_encoding() -> [u8; 32] {
    for y in 2u8..19 {
        let mut canonical = [0u8; 32];
        canonical[0] = y;
        if let Some(point) = CompressedEdwardsY(canonical).decompress()
            && !point.is_small_order()
        {
            let mut encoding = [0xffu8; 32];
            encoding[0] = 0xed + y;
            encoding[31] = 0x7f;
            return encoding;
        }
    }
    unreachable!("some small y is on the curve")
}

/// One item of a given kind, deterministic in `seed`.
fn item(kind: u8, seed: u64) -> SignatureInput {
    let message = format!("message {seed}").into_bytes();
    let a = scalar(seed, 1);
    let r = scalar(seed, 2);
    let public = ED25519_BASEPOINT_POINT * a;
    let commitment = ED25519_BASEPOINT_POINT * r;
    let t = torsion((seed % 7 + 1) as u8);
    match kind % 11 {
        0..=2 => sign_raw(a, public, r, commitment, &message),
        3 => {
            let mut item = sign_raw(a, public, r, commitment, &message);
            item.signature[(seed % 64) as usize] ^= 1 << (seed % 8);
            item
        }
        4 => {
            let mut item = sign_raw(a, public, r, commitment, &message);
            item.message.push(b'!');
            item
        }
        // Mixed-order key: valid under the cofactored equation only.
        5 => sign_raw(a, public + t, r, commitment, &message),
        // Mixed-order R: likewise.
        6 => sign_raw(a, public, r, commitment + t, &message),
        7 => {
            let mut item = sign_raw(a, public, r, commitment, &message);
            add_group_order(&mut item.signature);
            item
        }
        // Small-order key with an R that makes the equation hold: refused by rule 4 only.
        8 => {
            let key = torsion((seed % 8) as u8);
            sign_raw(Scalar::ZERO, key, r, commitment, &message)
        }
        // Small-order R.
        9 => sign_raw(a, public, Scalar::ZERO, torsion((seed % 8) as u8), &message),
        // Non-canonical R or A encoding.
        _ => {
            let mut item = sign_raw(a, public, r, commitment, &message);
            let encoding = non_canonical_point_encoding();
            if seed.is_multiple_of(2) {
                item.signature[..32].copy_from_slice(&encoding);
            } else {
                item.public_key = encoding.to_vec();
            }
            item
        }
    }
}

/// SPEC §2 rules 1–4 on bytes (the pre-check that precedes zebra in the SPEC's measurement).
fn prechecks_pass(item: &SignatureInput) -> bool {
    use idgate::ed25519::{
        check_signature_encoding, is_canonical_point_encoding, is_small_order_encoding,
    };
    let (Ok(key), Ok(signature)) = (
        <[u8; 32]>::try_from(item.public_key.as_slice()),
        <[u8; 64]>::try_from(item.signature.as_slice()),
    ) else {
        return false;
    };
    is_canonical_point_encoding(&key)
        && !is_small_order_encoding(&key)
        && check_signature_encoding(&signature).is_ok()
}

/// The SPEC's measured construction: byte pre-checks, then ed25519-zebra's cofactored single
/// verification. Our own equation must agree with it everywhere.
fn zebra_verdict(item: &SignatureInput) -> bool {
    prechecks_pass(item)
        && ed25519_zebra::VerificationKey::try_from(item.public_key.as_slice())
            .and_then(|key| {
                key.verify(
                    &ed25519::Signature::from_slice(&item.signature).expect("64 bytes"),
                    &item.message,
                )
            })
            .is_ok()
}

fn engines() -> Vec<Verifier> {
    [2, 3, 8, 64, 256]
        .into_iter()
        .map(|max_batch_signatures| {
            Verifier::new(
                Arc::new(
                    Engine::new(&EngineConfig {
                        threads: 2,
                        max_batch_signatures,
                    })
                    .unwrap(),
                ),
                Limits::default(),
            )
        })
        .collect()
}

/// Engines for the mixed property (tests run in parallel, so each property owns its engines
/// and their fallback counters).
fn verifiers() -> &'static [Verifier] {
    static VERIFIERS: OnceLock<Vec<Verifier>> = OnceLock::new();
    VERIFIERS.get_or_init(engines)
}

fn valid_only_verifiers() -> &'static [Verifier] {
    static VERIFIERS: OnceLock<Vec<Verifier>> = OnceLock::new();
    VERIFIERS.get_or_init(engines)
}

#[test]
fn every_edge_case_kind_is_exercised_with_its_expected_verdict() {
    // Guards the generator itself: each kind must produce what its comment claims.
    let expect = [
        true, true, true, false, false, true, true, false, false, false, false,
    ];
    for (kind, expected) in expect.iter().enumerate() {
        for seed in 0..8 {
            let item = item(kind as u8, seed);
            assert_eq!(
                reference_verdict(&item.public_key, &item.message, &item.signature),
                *expected,
                "kind {kind} seed {seed}"
            );
        }
    }
    // And the mixed-order kinds really are refused by the cofactorless equation (so the batch
    // must be cofactored to agree), as dalek's verify_strict shows. A mixed R always breaks it;
    // a mixed key A + T exactly when k·T is not the identity.
    let strict_accepts = |item: &SignatureInput| {
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(&item.public_key.clone().try_into().unwrap())
                .unwrap();
        let signature = ed25519_dalek::Signature::from_slice(&item.signature).unwrap();
        key.verify_strict(&item.message, &signature).is_ok()
    };
    let mut refused_mixed_keys = 0;
    for seed in 0..16 {
        assert!(!strict_accepts(&item(6, seed)), "mixed R, seed {seed}");
        let mixed_key = item(5, seed);
        let r: [u8; 32] = mixed_key.signature[..32].try_into().unwrap();
        let a: [u8; 32] = mixed_key.public_key.clone().try_into().unwrap();
        let k_t = torsion((seed % 7 + 1) as u8) * challenge(&r, &a, &mixed_key.message);
        let cofactorless_holds = curve25519_dalek::traits::IsIdentity::is_identity(&k_t);
        assert_eq!(
            strict_accepts(&mixed_key),
            cofactorless_holds,
            "mixed key, seed {seed}"
        );
        refused_mixed_keys += usize::from(!cofactorless_holds);
    }
    assert!(refused_mixed_keys > 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn batch_verdicts_equal_single_verdicts(
        kinds in prop::collection::vec((any::<u8>(), any::<u64>()), 1..120),
        which in 0usize..5,
    ) {
        let items: Vec<SignatureInput> = kinds.iter().map(|(kind, seed)| item(*kind, *seed)).collect();
        let stats = verifiers()[which].engine().stats();
        let fallbacks = stats.batches_fallback.load(std::sync::atomic::Ordering::Relaxed);
        let batched = verifiers()[which].verify_signatures(&items);
        // The fallback makes verdicts right whatever the batch says; so also require that a batch
        // of valid signatures (mixed-order ones included) is accepted as a batch.
        if batched.iter().all(Result::is_ok) {
            prop_assert_eq!(stats.batches_fallback.load(std::sync::atomic::Ordering::Relaxed), fallbacks);
        }
        for (item, verdict) in items.iter().zip(&batched) {
            let single = verify_one(&item.public_key, &item.message, &item.signature);
            prop_assert_eq!(verdict, &single);
            prop_assert_eq!(single.is_ok(), reference_verdict(&item.public_key, &item.message, &item.signature));
            prop_assert_eq!(single.is_ok(), zebra_verdict(item));
        }
        // zebra's batch over the items our pre-checks admit must agree with ours as a whole.
        let admitted: Vec<&SignatureInput> = items.iter().filter(|i| prechecks_pass(i)).collect();
        if !admitted.is_empty() {
            let mut verifier = ed25519_zebra::batch::Verifier::new();
            for item in &admitted {
                let key: [u8; 32] = item.public_key.clone().try_into().unwrap();
                let signature = ed25519::Signature::from_slice(&item.signature).unwrap();
                verifier.queue((ed25519_zebra::VerificationKeyBytes::from(key), signature, &item.message[..]));
            }
            let all_ours = admitted.iter().all(|i| verify_one(&i.public_key, &i.message, &i.signature).is_ok());
            prop_assert_eq!(verifier.verify(rand::rng()).is_ok(), all_ours);
        }
    }

    /// Valid signatures, mixed-order ones included, pass as a batch: the batch equation must be
    /// cofactored like the single one, or honest neighbours of a mixed-order key would pay for a
    /// fallback (and a cofactorless batch would disagree with the rule).
    #[test]
    fn valid_mixes_pass_as_a_batch(
        kinds in prop::collection::vec((prop::sample::select(vec![0u8, 1, 2, 5, 6]), any::<u64>()), 2..120),
        which in 1usize..5,
    ) {
        let items: Vec<SignatureInput> = kinds.iter().map(|(kind, seed)| item(*kind, *seed)).collect();
        let stats = valid_only_verifiers()[which].engine().stats();
        let fallbacks = stats.batches_fallback.load(std::sync::atomic::Ordering::Relaxed);
        let verdicts = valid_only_verifiers()[which].verify_signatures(&items);
        prop_assert!(verdicts.iter().all(Result::is_ok));
        prop_assert_eq!(stats.batches_fallback.load(std::sync::atomic::Ordering::Relaxed), fallbacks);
    }
}
