//! The one Ed25519 acceptance rule of SPEC §2, applied identically in every path: keys, the
//! rule's byte-level pre-checks, signature jobs and (in [`batch`]) the cofactored equation.
//!
//! A leaf module: it imports nothing from the rest of the crate, so `trust/` (which checks keys
//! at load) and `verify/` (which runs the rule) both depend on it and not on each other.
//!
//! A signature is accepted exactly when:
//! 1. it is 64 bytes and the public key is 32 bytes (enforced by the types here);
//! 2. S < ℓ;
//! 3. A and R are canonical point encodings;
//! 4. neither A nor R is one of the 8 small-order points;
//! 5. the cofactored equation `[8][S]B = [8]R + [8][k]A` holds.
//!
//! Rules 2–4 are byte-level pre-checks done here, before a signature may enter a batch; rule 5 is
//! decided by the cofactored equation (`batch.rs`, zebra's ZIP-215 equation) either in a batch or
//! alone. Because both the batch equation and the single equation are cofactored and every input
//! reaching them has passed the same pre-checks, a signature's verdict cannot depend on its batch
//! neighbours (up to the 2^-128 soundness error of the random batch coefficients, which only ever
//! errs towards *rejecting* a batch, and a rejected batch is resolved item by item).
//!
//! **Invariant:** nothing outside this module constructs a [`SignatureJob`] or a [`CheckedKey`]
//! without passing the pre-checks, so a job that reaches zebra is already rule-2-to-4 clean.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use hex_literal::hex;

pub mod batch;

use batch::{Item, KeyPoint};

/// Why a signature was refused. The names are the `error` values of `POST /v1/signatures/verify`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SignatureError {
    /// Wrong length, bad encoding, or a public key that is not a curve point.
    #[error("malformed")]
    Malformed,
    /// The public key is small-order or non-canonically encoded (rules 3–4 for A).
    #[error("weak_key")]
    WeakKey,
    /// Any other failure: S ≥ ℓ, R non-canonical or small-order or off the curve, equation false.
    #[error("bad_signature")]
    BadSignature,
}

impl SignatureError {
    /// The wire name, as used in API responses.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureError::Malformed => "malformed",
            SignatureError::WeakKey => "weak_key",
            SignatureError::BadSignature => "bad_signature",
        }
    }
}

/// The group order ℓ = 2^252 + 27742317777372353535851937790883648493, little-endian.
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
];

/// The canonical encodings of the 8 points of small order (the 8-torsion subgroup). Non-canonical
/// encodings of these points are refused earlier by [`is_canonical_point_encoding`], so this list
/// is complete for our purposes; `tests::small_order_table_is_the_eight_torsion` proves it.
const SMALL_ORDER_ENCODINGS: [[u8; 32]; 8] = [
    // Identity (order 1).
    hex!("0100000000000000000000000000000000000000000000000000000000000000"),
    // (0, -1), order 2.
    hex!("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    // (±sqrt(-1), 0), order 4.
    hex!("0000000000000000000000000000000000000000000000000000000000000000"),
    hex!("0000000000000000000000000000000000000000000000000000000000000080"),
    // Order 8.
    hex!("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    hex!("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
    hex!("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    hex!("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
];

/// Rule 2: is the little-endian scalar strictly below ℓ?
pub fn is_canonical_scalar(s: &[u8; 32]) -> bool {
    for i in (0..32).rev() {
        if s[i] != GROUP_ORDER[i] {
            return s[i] < GROUP_ORDER[i];
        }
    }
    false
}

/// Rule 3: is this a canonical encoding of a field element and sign?
///
/// Non-canonical means the 255-bit y is ≥ p = 2^255 − 19 (19 values), or x = 0 with the sign bit
/// set (y = ±1, where the sign of x cannot be 1). Whether y is on the curve at all is decided
/// later by decompression.
pub fn is_canonical_point_encoding(point: &[u8; 32]) -> bool {
    let top = point[31] & 0x7f;
    let y_at_least_p = top == 0x7f && point[1..31].iter().all(|&b| b == 0xff) && point[0] >= 0xed;
    if y_at_least_p {
        return false;
    }
    let sign_set = point[31] & 0x80 != 0;
    if sign_set {
        // y = 1 and y = p − 1 are the only y with x = 0.
        let mut y = *point;
        y[31] &= 0x7f;
        let is_one = y[0] == 1 && y[1..].iter().all(|&b| b == 0);
        let is_minus_one = y[0] == 0xec && y[1..31].iter().all(|&b| b == 0xff) && y[31] == 0x7f;
        if is_one || is_minus_one {
            return false;
        }
    }
    true
}

/// Rule 4 (for a canonical encoding): is this one of the 8 small-order points?
pub fn is_small_order_encoding(point: &[u8; 32]) -> bool {
    SMALL_ORDER_ENCODINGS.iter().any(|known| known == point)
}

/// A public key that passed rules 3–4 (canonical, not small-order), possibly decompressed.
///
/// Decompression costs about a tenth of a presentation, so it happens once per key: at load for
/// trusted issuer keys, when the credential is parsed for holder keys (and the point is cached
/// with the credential). Keys of raw signature items stay bytes; the equation decompresses them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CheckedKey {
    bytes: [u8; 32],
    point: Option<EdwardsPoint>,
}

impl std::fmt::Debug for CheckedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Public keys are not secret, but a short prefix is all a log ever needs.
        write!(
            f,
            "CheckedKey({:02x}{:02x}{:02x}{:02x}…)",
            self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]
        )
    }
}

impl CheckedKey {
    /// Checks a public key against rules 3 and 4 (no decompression).
    pub fn new(bytes: [u8; 32]) -> Result<CheckedKey, SignatureError> {
        if !is_canonical_point_encoding(&bytes) || is_small_order_encoding(&bytes) {
            return Err(SignatureError::WeakKey);
        }
        Ok(CheckedKey { bytes, point: None })
    }

    /// Rules 3 and 4, then decompression (the key must be a curve point): for keys used more
    /// than once.
    pub fn new_on_curve(bytes: [u8; 32]) -> Result<CheckedKey, SignatureError> {
        let key = CheckedKey::new(bytes)?;
        let point = CompressedEdwardsY(bytes)
            .decompress()
            .ok_or(SignatureError::Malformed)?;
        Ok(CheckedKey {
            point: Some(point),
            ..key
        })
    }

    /// [`CheckedKey::new`] for a slice of any length.
    pub fn from_slice(bytes: &[u8]) -> Result<CheckedKey, SignatureError> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SignatureError::Malformed)?;
        CheckedKey::new(bytes)
    }

    /// The 32-byte encoding.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    fn key_point(&self) -> KeyPoint {
        self.point
            .map_or(KeyPoint::Bytes(self.bytes), KeyPoint::Point)
    }
}

/// A signature that passed rules 2–4, bound to its key and message hash, ready for rule 5.
///
/// Building one computes `k = SHA-512(R ‖ A ‖ M)` once, so the message may be dropped afterwards
/// and the job moved into a batch on another thread.
#[derive(Clone, Debug)]
pub struct SignatureJob {
    item: Item,
}

impl SignatureJob {
    /// Applies the byte-level rules to `signature` and hashes the message. Jobs with the same
    /// `group` must have the same key (a trusted key's index), and share its batch term.
    pub fn new(
        key: &CheckedKey,
        signature: &[u8; 64],
        message: &[u8],
        group: Option<u32>,
    ) -> Result<SignatureJob, SignatureError> {
        check_signature_encoding(signature)?;
        let (r, s) = signature.split_at(32);
        let r: [u8; 32] = r.try_into().map_err(|_| SignatureError::Malformed)?;
        let s: [u8; 32] = s.try_into().map_err(|_| SignatureError::Malformed)?;
        // Rule 2 was checked on the bytes, so this always succeeds.
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s))
            .ok_or(SignatureError::BadSignature)?;
        // ring's SHA-512 (assembly) rather than the sha2 crate's: on this project's machine it
        // hashes an issuer JWT in ~20% less time (`cargo bench --bench engine -- sha512`), and
        // SHA-512 is the largest cost after the curve. The digest is the same function's output.
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA512);
        hasher.update(&r);
        hasher.update(&key.bytes);
        hasher.update(message);
        let digest: [u8; 64] = hasher
            .finish()
            .as_ref()
            .try_into()
            .map_err(|_| SignatureError::Malformed)?;
        let k = Scalar::from_bytes_mod_order_wide(&digest);
        Ok(SignatureJob {
            item: Item {
                r,
                s,
                k,
                key: key.key_point(),
                group,
            },
        })
    }

    /// Rule 5 alone: the cofactored equation for this one signature.
    pub fn verify_single(&self) -> Result<(), SignatureError> {
        self.item.verify_single()
    }

    pub(crate) fn item(&self) -> &Item {
        &self.item
    }
}

/// Rules 2–4 for the signature half: S < ℓ, R canonical and not small-order.
pub fn check_signature_encoding(signature: &[u8; 64]) -> Result<(), SignatureError> {
    let (r, s) = signature.split_at(32);
    let r: &[u8; 32] = r.try_into().map_err(|_| SignatureError::Malformed)?;
    let s: &[u8; 32] = s.try_into().map_err(|_| SignatureError::Malformed)?;
    if !is_canonical_scalar(s) || !is_canonical_point_encoding(r) || is_small_order_encoding(r) {
        return Err(SignatureError::BadSignature);
    }
    Ok(())
}

/// The whole rule for one signature, alone. The batch engine must agree with this on every input.
pub fn verify_one(
    public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let key = CheckedKey::from_slice(public_key)?;
    let signature: &[u8; 64] = signature
        .try_into()
        .map_err(|_| SignatureError::Malformed)?;
    SignatureJob::new(&key, signature, message, None)?.verify_single()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_order_table_is_the_eight_torsion() {
        let mut seen = std::collections::HashSet::new();
        for encoding in SMALL_ORDER_ENCODINGS {
            let point = CompressedEdwardsY(encoding).decompress().unwrap();
            assert!(point.is_small_order());
            assert_eq!(
                point.compress().0,
                encoding,
                "table entries must be canonical"
            );
            assert!(seen.insert(encoding));
        }
        // The 8-torsion subgroup has exactly 8 elements, so the table is complete.
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn canonical_point_check_matches_a_decompress_recompress_round_trip() {
        // Every y in the dangerous ranges, with both sign bits, plus random values.
        let mut candidates: Vec<[u8; 32]> = Vec::new();
        for low in 0u8..=255 {
            let mut near_p = [0xffu8; 32];
            near_p[0] = low;
            near_p[31] = 0x7f;
            candidates.push(near_p);
            let mut small = [0u8; 32];
            small[0] = low;
            candidates.push(small);
        }
        for seed in 0u64..2000 {
            let mut bytes = [0u8; 32];
            for (i, chunk) in bytes.chunks_mut(8).enumerate() {
                chunk.copy_from_slice(
                    &(seed
                        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        .rotate_left(i as u32 * 7))
                    .to_le_bytes(),
                );
            }
            candidates.push(bytes);
        }
        let with_signs: Vec<[u8; 32]> = candidates
            .iter()
            .flat_map(|c| {
                let mut set = *c;
                set[31] |= 0x80;
                let mut clear = *c;
                clear[31] &= 0x7f;
                [set, clear]
            })
            .collect();
        let mut decodable = 0;
        for encoding in with_signs {
            if let Some(point) = CompressedEdwardsY(encoding).decompress() {
                decodable += 1;
                let round_trips = point.compress().0 == encoding;
                assert_eq!(
                    is_canonical_point_encoding(&encoding),
                    round_trips,
                    "{encoding:02x?}"
                );
            }
        }
        assert!(decodable > 500, "the sample must exercise many real points");
    }

    #[test]
    fn scalar_check_is_a_strict_bound_at_the_group_order() {
        assert!(!is_canonical_scalar(&GROUP_ORDER));
        let mut below = GROUP_ORDER;
        below[0] -= 1;
        assert!(is_canonical_scalar(&below));
        let mut above = GROUP_ORDER;
        above[0] += 1;
        assert!(!is_canonical_scalar(&above));
        assert!(is_canonical_scalar(&[0u8; 32]));
        assert!(!is_canonical_scalar(&[0xffu8; 32]));
    }

    #[test]
    fn weak_keys_are_refused_and_honest_keys_accepted() {
        for encoding in SMALL_ORDER_ENCODINGS {
            assert_eq!(CheckedKey::new(encoding), Err(SignatureError::WeakKey));
        }
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let key = CheckedKey::new(signing.verifying_key().to_bytes()).unwrap();
        let signature = ed25519_dalek::Signer::sign(&signing, b"message").to_bytes();
        assert_eq!(verify_one(key.as_bytes(), b"message", &signature), Ok(()));
        assert_eq!(
            verify_one(key.as_bytes(), b"massage", &signature),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            verify_one(&key.as_bytes()[..31], b"message", &signature),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_one(key.as_bytes(), b"message", &signature[..63]),
            Err(SignatureError::Malformed)
        );
    }
}
