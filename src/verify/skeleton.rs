//! The part of a JSON document that RFC 9901 §7 validation needs, owned and compact.
//!
//! For each object: hashes of its claim names (for collision checks), its `_sd` digests, and
//! its nested containers; for each array: its `{"...": digest}` elements and nested containers.
//! Scalars are dropped. This is what a cached issuer JWT keeps, and what a disclosure's value
//! contributes, so validating disclosures allocates almost nothing.
//!
//! Every digest must be 43 base64url characters (a SHA-256 digest, the only `_sd_alg` we
//! accept); anything else under `_sd` or `...` is refused when the skeleton is built.

use std::hash::BuildHasher;

/// A base64url SHA-256 digest, as text.
pub type Digest = [u8; 43];

/// An object's skeleton.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SdObject {
    /// Hashes of the claim names present, `_sd` excluded.
    pub names: Vec<u64>,
    /// The `_sd` digests, in order.
    pub digests: Vec<Digest>,
    /// Nested objects and arrays (values of the claims).
    pub children: Vec<Container>,
}

/// An array's skeleton.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SdArray {
    /// The `{"...": digest}` elements, in order.
    pub digests: Vec<Digest>,
    /// Nested objects and arrays among the other elements.
    pub children: Vec<Container>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Container {
    Object(SdObject),
    Array(SdArray),
}

/// Hash of a claim name. Equal names always hash equal, so a collision between two *different*
/// names can only make us refuse (never accept) a presentation, with probability 2^-64.
pub fn name_hash(name: &str) -> u64 {
    foldhash::fast::FixedState::with_seed(0x1d9a_7e5c_0b3f_4a21).hash_one(name)
}

/// Which bytes are base64url characters. A table instead of a chain of comparisons: digests
/// are random text, so a branch per character mispredicts about half the time (measured: it
/// made this check the single most expensive step of parsing an issuer payload).
const BASE64URL: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        i += 1;
    }
    table
};

/// True when every byte is a base64url character (branch-free).
pub fn is_base64url(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| ok & BASE64URL[b as usize])
}

/// The text as a digest, if it is 43 base64url characters.
pub fn digest_of(text: &str) -> Option<Digest> {
    let bytes: &[u8; 43] = text.as_bytes().try_into().ok()?;
    is_base64url(bytes).then_some(*bytes)
}
