//! The key-binding JWT of a presentation (SPEC §1, RFC 9901 §4.3): parsed into its claims for
//! check 7, with problems recorded (`KeyBinding::Invalid`) rather than raised, so the first
//! failing check in SPEC order is the one reported. Part of parsing a presentation
//! (`presentation.rs`), kept apart because it shares nothing with the issuer JWT's claims.

use super::extract::Shape;
use super::json::JsonError;
use super::outcome::{Outcome, Rejection};
use super::presentation::{
    Header, Limits, Text, jws_segments, malformed, parse_object, text_claim,
};
use super::skeleton::Digest;
use crate::b64;

/// The key-binding JWT's claims.
#[derive(Clone, Debug)]
pub struct KbClaims {
    pub iat: i64,
    pub audiences: Vec<Text>,
    pub nonce: Text,
    /// The claimed `sd_hash`; `None` when it is not 43 bytes long, so cannot match any digest.
    pub sd_hash: Option<Digest>,
}

/// A KB-JWT that parsed (its signature and `sd_hash` are checked later).
#[derive(Clone, Debug)]
pub struct KbJwt<'a> {
    pub claims: KbClaims,
    pub signature: Option<[u8; 64]>,
    /// `header.payload`, the bytes the holder signed.
    pub signing_input: &'a str,
}

/// The key-binding part of a presentation.
#[derive(Clone, Debug)]
pub enum KeyBinding<'a> {
    /// The presentation ends with `~`: a bearer copy.
    Absent,
    /// Present but unusable; the reason becomes `key_binding_invalid`.
    Invalid(&'static str),
    Present(KbJwt<'a>),
}

/// Parses the KB-JWT text. `Err` is check 1 or 2; problems for check 7 are `KeyBinding::Invalid`.
pub fn parse_key_binding<'a>(text: &'a str, limits: &Limits) -> Result<KeyBinding<'a>, Rejection> {
    if text.is_empty() {
        return Ok(KeyBinding::Absent);
    }
    let Some((header_b64, payload_b64, signature_b64)) = jws_segments(text) else {
        return Ok(KeyBinding::Invalid(
            "KB-JWT is not three dot-separated segments",
        ));
    };
    let header = match Header::read(header_b64, limits) {
        Ok(header) => header,
        Err(JsonError::TooDeep) => return Err(malformed("JSON nesting exceeds the limit")),
        Err(JsonError::Invalid) => {
            return Ok(KeyBinding::Invalid(
                "KB-JWT header is not a base64url JSON object",
            ));
        }
    };
    let signing_input = &text[..header_b64.len() + 1 + payload_b64.len()];
    let signature = b64::decode_array::<64>(signature_b64);
    // Header and payload must both be JSON objects before the alg is judged (check 2), and the
    // alg before anything else about the KB-JWT (check 7).
    let read = |bytes: &[u8]| match parse_object(bytes, limits, 2) {
        Ok(payload) => Ok(Some(key_binding_claims(&payload.shape, &header))),
        Err(JsonError::TooDeep) => Err(malformed("JSON nesting exceeds the limit")),
        Err(JsonError::Invalid) => Ok(None),
    };
    match b64::with_decoded::<_, 512>(payload_b64, read) {
        Err(_) => Ok(KeyBinding::Invalid("KB-JWT payload is not base64url")),
        Ok(Err(rejection)) => Err(rejection),
        Ok(Ok(None)) => Ok(KeyBinding::Invalid("KB-JWT payload is not a JSON object")),
        Ok(Ok(Some(_))) if !header.alg_supported => Err(Rejection::new(
            Outcome::UnsupportedAlg,
            "KB-JWT alg must be EdDSA or Ed25519",
        )),
        Ok(Ok(Some(Err(detail)))) => Ok(KeyBinding::Invalid(detail)),
        Ok(Ok(Some(Ok(claims)))) => Ok(KeyBinding::Present(KbJwt {
            claims,
            signature,
            signing_input,
        })),
    }
}

/// The KB-JWT header and payload checks of check 7 (the alg is checked by the caller, check 2).
fn key_binding_claims(payload: &Shape<'_>, header: &Header) -> Result<KbClaims, &'static str> {
    if header.typ.as_deref() != Some("kb+jwt") {
        return Err("KB-JWT typ must be kb+jwt");
    }
    if header.crit {
        return Err("KB-JWT header has crit extensions we do not understand");
    }
    let iat = payload
        .field("iat")
        .and_then(Shape::as_date)
        .ok_or("KB-JWT iat missing or not a number")?;
    let audiences = match payload.field("aud") {
        Some(Shape::Str(aud)) => vec![Text::from(aud.as_ref())],
        Some(Shape::Items(items))
            if !items.is_empty() && items.iter().all(|i| i.as_str().is_some()) =>
        {
            items
                .iter()
                .filter_map(Shape::as_str)
                .map(Text::from)
                .collect()
        }
        _ => return Err("KB-JWT aud missing or not a string"),
    };
    let (Some(nonce), Some(sd_hash)) = (
        text_claim(payload.field("nonce")),
        payload.field("sd_hash").and_then(Shape::as_str),
    ) else {
        return Err("KB-JWT nonce or sd_hash missing");
    };
    if nonce.is_empty() {
        return Err("KB-JWT nonce is empty");
    }
    Ok(KbClaims {
        iat,
        audiences,
        nonce,
        sd_hash: Digest::try_from(sd_hash.as_bytes()).ok(),
    })
}
