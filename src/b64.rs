//! base64url without padding (RFC 4648 §5), as JOSE and SD-JWT use it.
//!
//! Decoding is strict: no padding, no whitespace, no non-zero trailing bits, so every byte string
//! has exactly one accepted text form. base64-simd picks AVX2/SSE at run time; decoding a
//! presentation's segments is a visible share of verification when done a byte at a time.

use base64_simd::{Out, URL_SAFE_NO_PAD};

/// Encodes bytes as unpadded base64url.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode_to_string(bytes)
}

/// Decodes unpadded base64url; any deviation is an error.
pub fn decode(text: &str) -> Result<Vec<u8>, base64_simd::Error> {
    URL_SAFE_NO_PAD.decode_to_vec(text)
}

/// Decodes into `buffer` (which must hold the decoded bytes); for small segments that need no
/// heap allocation.
pub fn decode_into<'b>(text: &str, buffer: &'b mut [u8]) -> Result<&'b [u8], base64_simd::Error> {
    URL_SAFE_NO_PAD
        .decode(text.as_bytes(), Out::from_slice(buffer))
        .map(|decoded| &*decoded)
}

/// Decodes `text`, on the stack when it fits `STACK` bytes, and hands the bytes to `use_bytes`.
pub fn with_decoded<T, const STACK: usize>(
    text: &str,
    use_bytes: impl FnOnce(&[u8]) -> T,
) -> Result<T, base64_simd::Error> {
    if text.len() / 4 * 3 + 3 <= STACK {
        let mut buffer = [0u8; STACK];
        Ok(use_bytes(decode_into(text, &mut buffer)?))
    } else {
        Ok(use_bytes(&decode(text)?))
    }
}

/// Decodes into a fixed-size array (signatures, keys); wrong lengths are errors.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    // Base64 of N bytes without padding has exactly this many characters; checking first keeps
    // an oversized input from being decoded at all.
    if text.len() != (N * 4).div_ceil(3) {
        return None;
    }
    let mut out = [0u8; N];
    let decoded = URL_SAFE_NO_PAD
        .decode(text.as_bytes(), Out::from_slice(&mut out))
        .ok()?;
    (decoded.len() == N).then_some(out)
}

/// Encodes a SHA-256 digest (43 characters) into a stack buffer; used for disclosure digests.
pub fn encode_digest(digest: &[u8; 32]) -> [u8; 43] {
    let mut out = [0u8; 43];
    // 32 bytes always encode to exactly 43 characters.
    let written = URL_SAFE_NO_PAD
        .encode(digest, Out::from_slice(&mut out))
        .len();
    debug_assert_eq!(written, 43);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_is_strict() {
        assert_eq!(decode("AQID").unwrap(), vec![1, 2, 3]);
        assert!(decode("AQI=").is_err(), "padding is refused");
        assert!(decode("AQJ").is_err(), "non-zero trailing bits are refused");
        assert!(decode("A+/B").is_err(), "the standard alphabet is refused");
        assert!(decode("AQ ID").is_err(), "whitespace is refused");
        assert!(decode("A").is_err(), "a lone character is refused");
        assert_eq!(decode_array::<3>("AQID"), Some([1, 2, 3]));
        assert_eq!(decode_array::<4>("AQID"), None);
        let digest = [0xabu8; 32];
        assert_eq!(
            std::str::from_utf8(&encode_digest(&digest)).unwrap(),
            encode(digest)
        );
    }

    #[test]
    fn round_trips_at_every_length() {
        for n in 0..200usize {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
            assert_eq!(decode(&encode(&bytes)).unwrap(), bytes);
        }
    }
}
