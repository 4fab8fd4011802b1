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
//! negations (each a Montgomery reduction) per signature. The two sums (`Σ zᵢ·Sᵢ` and each
//! shared key's `Σ zᵢ·kᵢ`) are accumulated exactly as 512-bit integers and reduced once
//! ([`WideSum`]), instead of one modular multiplication and addition per signature.
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

use super::SignatureError;

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

/// `Σ zᵢ·xᵢ` over the integers, reduced mod ℓ once at the end.
///
/// A batch needs two kinds of such sums: the basepoint coefficient `Σ zᵢ·Sᵢ` and, per shared
/// key, `Σ zᵢ·kᵢ` (a holder key's term is a single product and stays one scalar
/// multiplication). Each term reduced on its own costs a scalar multiplication (two Montgomery
/// reductions) and a modular addition; accumulating the exact products and reducing once costs
/// eight 64-bit multiplications per term instead.
///
/// **Invariant:** no overflow. `zᵢ < 2¹²⁸` and `xᵢ < ℓ < 2²⁵³`, so a term is below `2³⁸¹` and
/// 512 bits hold the sum of up to `2¹³¹` terms, far beyond any batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WideSum([u64; 8]);

impl WideSum {
    /// Adds `z·x`; `x` must be reduced (every `S` passed rule 2 and every `k` is reduced).
    pub(crate) fn add_product(&mut self, z: u128, x: &Scalar) {
        let bytes = x.as_bytes();
        let mut limbs = [0u64; 4];
        for (limb, chunk) in limbs.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *limb = u64::from_le_bytes(word);
        }
        for (i, z_limb) in [z as u64, (z >> 64) as u64].into_iter().enumerate() {
            let mut carry = 0u64;
            for (j, limb) in limbs.iter().enumerate() {
                let t = u128::from(z_limb) * u128::from(*limb)
                    + u128::from(self.0[i + j])
                    + u128::from(carry);
                self.0[i + j] = t as u64;
                carry = (t >> 64) as u64;
            }
            for word in &mut self.0[i + 4..] {
                if carry == 0 {
                    break;
                }
                let (sum, overflow) = word.overflowing_add(carry);
                *word = sum;
                carry = u64::from(overflow);
            }
            debug_assert_eq!(carry, 0, "a batch sum outgrew 512 bits");
        }
    }

    /// The sum mod ℓ.
    pub(crate) fn reduce(&self) -> Scalar {
        let mut bytes = [0u8; 64];
        for (chunk, limb) in bytes.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&limb.to_le_bytes());
        }
        Scalar::from_bytes_mod_order_wide(&bytes)
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
    let mut shared: Vec<(u32, WideSum, EdwardsPoint)> = Vec::new();
    let mut b_coefficient = WideSum::default();
    for item in items {
        let Some(r) = CompressedEdwardsY(item.r).decompress() else {
            return false;
        };
        let z = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
        b_coefficient.add_product(z, &item.s);
        scalars.push(Scalar::from(z));
        points.push(r);
        match item.group {
            Some(group) => match shared.iter_mut().find(|(g, _, _)| *g == group) {
                Some((_, coefficient, _)) => coefficient.add_product(z, &item.k),
                None => {
                    let Ok(a) = item.key.point() else {
                        return false;
                    };
                    let mut coefficient = WideSum::default();
                    coefficient.add_product(z, &item.k);
                    shared.push((group, coefficient, a));
                }
            },
            None => {
                let Ok(a) = item.key.point() else {
                    return false;
                };
                scalars.push(Scalar::from(z) * item.k);
                points.push(a);
            }
        }
    }
    if let Some(first) = scalars.first_mut() {
        *first = -b_coefficient.reduce();
    }
    for (_, coefficient, point) in shared {
        scalars.push(coefficient.reduce());
        points.push(point);
    }
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points)
        .mul_by_cofactor()
        .is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// ℓ − 1, the largest reduced scalar.
    fn largest() -> Scalar {
        -Scalar::ONE
    }

    /// The same sum the slow way: one scalar multiplication and addition per term.
    fn reference(terms: &[(u128, Scalar)]) -> Scalar {
        terms
            .iter()
            .fold(Scalar::ZERO, |sum, (z, x)| sum + Scalar::from(*z) * x)
    }

    fn wide(terms: &[(u128, Scalar)]) -> Scalar {
        let mut sum = WideSum::default();
        for (z, x) in terms {
            sum.add_product(*z, x);
        }
        sum.reduce()
    }

    #[test]
    fn the_largest_terms_do_not_overflow() {
        // 4,096 maximal terms carry through every limb; the sum is exact (≈ 2³⁹³).
        let terms = vec![(u128::MAX, largest()); 4096];
        assert_eq!(wide(&terms), reference(&terms));
        assert_eq!(wide(&[]), Scalar::ZERO);
        assert_eq!(
            wide(&[(0, largest()), (u128::MAX, Scalar::ZERO)]),
            Scalar::ZERO
        );
    }

    proptest! {
        #[test]
        fn wide_sums_equal_scalar_arithmetic(
            terms in prop::collection::vec(
                (any::<u128>(), any::<[u8; 64]>(), prop::bool::ANY),
                0..64,
            ),
        ) {
            // Random reduced scalars, and now and then the largest one.
            let terms: Vec<(u128, Scalar)> = terms
                .into_iter()
                .map(|(z, bytes, top)| {
                    (z, if top { largest() } else { Scalar::from_bytes_mod_order_wide(&bytes) })
                })
                .collect();
            prop_assert_eq!(wide(&terms), reference(&terms));
        }
    }
}
