//! Rule 5 of SPEC §2: the cofactored Ed25519 equation, alone or as a random linear combination.
//!
//! This is ed25519-zebra's batch equation (ZIP-215 form) written on curve25519-dalek's public
//! API, for one reason: zebra takes keys as bytes and decompresses each per batch, while our keys
//! are mostly decompressed already — trusted issuer keys once at load, holder keys once when the
//! credential is parsed (and kept with it in the issuer cache). A decompression is about a tenth
//! of a presentation's cost. zebra remains the reference: `tests/batch_property.rs` checks this
//! code against zebra's single and batch verdicts, and the benches measure against zebra's batch.
//!
//! Single: `[8]([S]B − [k]A − R) = 0`.
//! Batch:  `[8](−(Σ zᵢ·Sᵢ)·B + Σ zᵢ·Rᵢ + Σ_keys (Σ zᵢ·kᵢ)·A) = 0`, with independent random
//! 128-bit `zᵢ`; signatures under one key share that key's term (issuer keys repeat). The signs
//! are zebra's: only the B coefficient is negated, once per batch, instead of two scalar
//! negations (each a Montgomery reduction) per signature.
//!
//! **Invariant:** if every item satisfies the single equation, the batch equation holds; if one
//! does not, the batch fails except with probability ≤ 2⁻¹²⁸ (the cofactor multiplication
//! removes any small-order component first, which is what makes batch and single agree on
//! mixed-order inputs). A failed batch is only a hint: the engine then verifies item by item.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use rand::Rng;

use super::signature::SignatureError;

/// A public key as the equation needs it: a point, or bytes to decompress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPoint {
    Point(EdwardsPoint),
    Bytes([u8; 32]),
}

impl KeyPoint {
    fn point(&self) -> Result<EdwardsPoint, SignatureError> {
        match self {
            KeyPoint::Point(point) => Ok(*point),
            // Only reached for keys never decompressed before (raw signature items); a key that
            // is not a curve point is the key's fault, not the signature's.
            KeyPoint::Bytes(bytes) => CompressedEdwardsY(*bytes)
                .decompress()
                .ok_or(SignatureError::Malformed),
        }
    }
}

/// One signature, pre-checked and hashed, ready for the equation.
#[derive(Clone, Debug)]
pub struct Item {
    pub(crate) r: [u8; 32],
    pub(crate) s: Scalar,
    /// `k = SHA-512(R ‖ A ‖ M) mod ℓ`.
    pub(crate) k: Scalar,
    pub(crate) key: KeyPoint,
    /// Items with the same group share a key (and a term in the batch); `None`: its own term.
    pub(crate) group: Option<u32>,
}

impl Item {
    /// The single equation.
    pub fn verify_single(&self) -> Result<(), SignatureError> {
        let a = self.key.point()?;
        let r = CompressedEdwardsY(self.r)
            .decompress()
            .ok_or(SignatureError::BadSignature)?;
        let check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&self.k, &(-a), &self.s) - r;
        if check.mul_by_cofactor().is_identity() {
            Ok(())
        } else {
            Err(SignatureError::BadSignature)
        }
    }
}

/// The batch equation over `items`; `false` means "at least one fails, or a point is invalid".
pub fn verify_batch<'i>(
    items: impl ExactSizeIterator<Item = &'i Item>,
    rng: &mut impl Rng,
) -> bool {
    let mut scalars: Vec<Scalar> = Vec::with_capacity(items.len() * 2 + 1);
    let mut points: Vec<EdwardsPoint> = Vec::with_capacity(items.len() * 2 + 1);
    scalars.push(Scalar::ZERO);
    points.push(ED25519_BASEPOINT_POINT);
    // (group, accumulated coefficient, key point): a handful of issuer keys per batch.
    let mut shared: Vec<(u32, Scalar, EdwardsPoint)> = Vec::new();
    let mut b_coefficient = Scalar::ZERO;
    for item in items {
        let Some(r) = CompressedEdwardsY(item.r).decompress() else {
            return false;
        };
        let z = Scalar::from(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()));
        b_coefficient += z * item.s;
        scalars.push(z);
        points.push(r);
        let zk = z * item.k;
        match item.group {
            Some(group) => match shared.iter_mut().find(|(g, _, _)| *g == group) {
                Some((_, coefficient, _)) => *coefficient += zk,
                None => {
                    let Ok(a) = item.key.point() else {
                        return false;
                    };
                    shared.push((group, zk, a));
                }
            },
            None => {
                let Ok(a) = item.key.point() else {
                    return false;
                };
                scalars.push(zk);
                points.push(a);
            }
        }
    }
    if let Some(first) = scalars.first_mut() {
        *first = -b_coefficient;
    }
    for (_, coefficient, point) in shared {
        scalars.push(coefficient);
        points.push(point);
    }
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points)
        .mul_by_cofactor()
        .is_identity()
}
