//! Parsing an SD-JWT presentation (SPEC §1) into its checked parts.
//!
//! `issuer-jwt "~" *(disclosure "~") [kb-jwt]`
//!
//! Parsing decides checks 1 (`malformed`, including every limit) and 2 (`unsupported_alg`) and
//! prepares the rest: the issuer JWT's claims (cacheable, see `cache.rs`), decoded disclosures and
//! the key-binding JWT. Problems that belong to later checks (a bad disclosure, a broken KB-JWT)
//! are recorded, not raised, so the first failing check in SPEC order is what gets reported.
//!
//! **Invariant:** any `&str` input yields `Ok` or a [`Rejection`]; nothing here panics or
//! allocates more than a small multiple of the (size-limited) input.

use sha2::{Digest as _, Sha256};

use super::extract::{self, Shape};
use super::json::JsonError;
use super::outcome::{Outcome, Rejection};
use super::skeleton::{self, Container, Digest, SdObject};
use crate::b64;
use crate::ed25519::CheckedKey;
use crate::id::Id;

pub use super::key_binding::{KbClaims, KbJwt, KeyBinding, parse_key_binding};

/// A short owned string (claims, `kid`, `typ`, nonces): kept inline up to 24 bytes, so typical
/// values cost no allocation to read, clone or drop.
pub type Text = compact_str::CompactString;

/// Size limits of SPEC §1 (configurable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_presentation_bytes: usize,
    pub max_disclosures: usize,
    pub max_json_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_presentation_bytes: 16 * 1024,
            max_disclosures: 64,
            max_json_depth: 16,
        }
    }
}

pub(super) const fn malformed(detail: &'static str) -> Rejection {
    Rejection::new(Outcome::Malformed, detail)
}

/// Where the holder's key comes from (`cnf.jwk`).
#[derive(Clone, Debug)]
pub enum HolderKey {
    /// No `cnf`: only a bearer copy is possible.
    Absent,
    /// A `cnf` that is not an Ed25519 OKP JWK we can use.
    Unusable,
    Key(CheckedKey),
}

impl HolderKey {
    /// Decompresses the key once (signature work, not parsing): the point then goes into the
    /// batch and, with the credential, into the issuer cache, so a holder showing the card again
    /// costs no decompression. A key that is not a curve point is unusable.
    pub fn decompressed(self) -> HolderKey {
        match self {
            HolderKey::Key(key) => match CheckedKey::new_on_curve(*key.as_bytes()) {
                Ok(key) => HolderKey::Key(key),
                Err(_) => HolderKey::Unusable,
            },
            other => other,
        }
    }
}

/// The claims idgate decides on, lifted out of the issuer payload.
#[derive(Clone, Debug)]
pub struct CredentialClaims {
    pub iss: Text,
    pub iat: i64,
    pub exp: i64,
    pub nbf: Option<i64>,
    pub vct: Text,
    pub sub: Text,
    pub jti: Text,
    pub holder_key: HolderKey,
}

/// A parsed issuer-signed JWT. Immutable once built, so it can be cached and shared.
#[derive(Clone, Debug)]
pub struct IssuerJwt {
    pub kid: Text,
    /// Header `alg` is EdDSA/Ed25519 and `_sd_alg` is sha-256 (or absent).
    pub algorithms_supported: bool,
    pub claims: CredentialClaims,
    /// The payload's skeleton for disclosure validation, or the check-8 problem found in it.
    pub sd: Result<SdObject, &'static str>,
    /// Length of the decoded payload JSON (the cache weighs entries by it). The payload itself
    /// is not kept: when claims are requested it is decoded again from the presentation, whose
    /// issuer JWT is byte for byte the one parsed here (the cache key is its SHA-256).
    pub payload_len: usize,
    /// The signature, if it is 64 bytes of base64url (otherwise `bad_signature`, rule 1 of §2).
    pub signature: Option<[u8; 64]>,
    /// Length of `header.payload`, the JWS signing input, within the issuer JWT text.
    pub signing_input_len: usize,
}

/// One decoded disclosure.
#[derive(Clone, Debug)]
pub struct Disclosure<'a> {
    /// base64url(SHA-256(disclosure text)), the digest the payload refers to.
    pub digest: Digest,
    /// Hash of the claim name for an object property; `None` for an array element.
    pub name: Option<u64>,
    /// The skeleton of the disclosed value, if it is an object or array.
    pub value: Option<Container>,
    /// The disclosure as presented (decoded again only when claims are requested).
    pub text: &'a str,
}

/// A presentation split into its parts. The issuer part is parsed separately (it may come from
/// the cache); see [`split`] and [`parse_issuer`].
#[derive(Debug)]
pub struct Parts<'a> {
    pub issuer_jwt: &'a str,
    /// The raw disclosure texts (already counted against the limit).
    pub disclosures: Vec<&'a str>,
    /// Everything up to and including the last `~`: the `sd_hash` input.
    pub sd_hash_input: &'a str,
    /// The KB-JWT text, empty for a bearer copy.
    pub kb_jwt: &'a str,
}

/// Splits a presentation at its tildes and applies the size limits.
pub fn split<'a>(presentation: &'a str, limits: &Limits) -> Result<Parts<'a>, Rejection> {
    if presentation.len() > limits.max_presentation_bytes {
        return Err(malformed("presentation exceeds the size limit"));
    }
    let bytes = presentation.as_bytes();
    let last_tilde =
        memchr::memrchr(b'~', bytes).ok_or(malformed("no '~': not an SD-JWT presentation"))?;
    // Tildes are ASCII, so every index found below is a char boundary.
    let (sd_hash_input, kb_jwt) = presentation.split_at(last_tilde + 1);
    let mut tildes = memchr::memchr_iter(b'~', &bytes[..last_tilde]);
    let issuer_end = tildes.next().unwrap_or(last_tilde);
    let issuer_jwt = presentation.get(..issuer_end).unwrap_or_default();
    if issuer_jwt.is_empty() {
        return Err(malformed("empty issuer-signed JWT"));
    }
    let mut disclosures = Vec::new();
    let mut start = issuer_end + 1;
    for end in tildes.chain((issuer_end < last_tilde).then_some(last_tilde)) {
        if disclosures.len() == limits.max_disclosures {
            return Err(malformed("too many disclosures"));
        }
        disclosures.push(presentation.get(start..end).unwrap_or_default());
        start = end + 1;
    }
    Ok(Parts {
        issuer_jwt,
        disclosures,
        sd_hash_input,
        kb_jwt,
    })
}

/// The decoded payload of a compact JWS (`None` if it is not three segments with a base64url
/// payload).
pub fn decode_payload(jws: &str) -> Option<Vec<u8>> {
    let (_, payload, _) = jws_segments(jws)?;
    b64::decode(payload).ok()
}

/// Splits compact JWS text into its three segments.
pub(super) fn jws_segments(text: &str) -> Option<(&str, &str, &str)> {
    let mut dots = memchr::memchr_iter(b'.', text.as_bytes());
    let first = dots.next()?;
    let second = dots.next()?;
    if dots.next().is_some() {
        return None;
    }
    // Dots are ASCII, so these are char boundaries.
    Some((
        text.get(..first)?,
        text.get(first + 1..second)?,
        text.get(second + 1..)?,
    ))
}

/// What verification reads from a JWS header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) alg_supported: bool,
    pub(super) typ: Option<Text>,
    pub(super) kid: Option<Text>,
    pub(super) crit: bool,
}

impl Header {
    fn parse(segment: &str, limits: &Limits) -> Result<Header, JsonError> {
        let read = |bytes: &[u8]| {
            let header = parse_object(bytes, limits, 1)?.shape;
            Ok(Header {
                alg_supported: is_supported_alg(&header),
                typ: header.field("typ").and_then(Shape::as_str).map(Text::from),
                kid: header.field("kid").and_then(Shape::as_str).map(Text::from),
                crit: header.field("crit").is_some(),
            })
        };
        b64::with_decoded::<_, 512>(segment, read).map_err(|_| JsonError::Invalid)?
    }

    /// [`Header::parse`], memoised per thread on the segment text. Headers repeat byte for byte
    /// (one per issuer key, one per wallet implementation), so nearly every lookup hits; the memo
    /// holds 8 short entries, so it stays tiny and can never grow.
    pub(super) fn read(segment: &str, limits: &Limits) -> Result<Header, JsonError> {
        const ENTRIES: usize = 8;
        const MAX_SEGMENT: usize = 256;
        type Memo = Vec<(usize, Box<str>, Result<Header, JsonError>)>;
        thread_local! {
            static MEMO: std::cell::RefCell<Memo> = const { std::cell::RefCell::new(Vec::new()) };
        }
        if segment.len() > MAX_SEGMENT {
            return Header::parse(segment, limits);
        }
        let depth = limits.max_json_depth;
        let found = MEMO.with_borrow(|memo| {
            memo.iter()
                .find(|(d, s, _)| *d == depth && **s == *segment)
                .map(|(_, _, h)| h.clone())
        });
        if let Some(header) = found {
            return header;
        }
        let header = Header::parse(segment, limits);
        MEMO.with_borrow_mut(|memo| {
            if memo.len() == ENTRIES {
                let _oldest = memo.remove(0);
            }
            memo.push((depth, Box::from(segment), header.clone()));
        });
        header
    }
}

/// Parses a decoded JWS segment that must be a JSON object, capturing `capture` levels.
pub(super) fn parse_object<'b>(
    bytes: &'b [u8],
    limits: &Limits,
    capture: usize,
) -> Result<extract::Extracted<'b>, JsonError> {
    let parsed = extract::parse(bytes, limits.max_json_depth, capture)?;
    match parsed.container {
        Some(Container::Object(_)) => Ok(parsed),
        _ => Err(JsonError::Invalid),
    }
}

fn is_supported_alg(header: &Shape<'_>) -> bool {
    matches!(
        header.field("alg").and_then(Shape::as_str),
        Some("EdDSA" | "Ed25519")
    )
}

/// Reads `cnf.jwk` as an RFC 8037 Ed25519 key that passes the key rules of SPEC §2.
fn holder_key(cnf: Option<&Shape<'_>>) -> HolderKey {
    let Some(cnf) = cnf else {
        return HolderKey::Absent;
    };
    let jwk = cnf.field("jwk");
    let field = |name: &str| jwk.and_then(|jwk| jwk.field(name)).and_then(Shape::as_str);
    if field("kty") != Some("OKP")
        || field("crv") != Some("Ed25519")
        || jwk.is_some_and(|jwk| jwk.field("d").is_some())
    {
        return HolderKey::Unusable;
    }
    match field("x")
        .and_then(b64::decode_array::<32>)
        .map(CheckedKey::new)
    {
        Some(Ok(key)) => HolderKey::Key(key),
        _ => HolderKey::Unusable,
    }
}

/// The registered claims of an issuer payload, read in one pass over its fields.
#[derive(Default)]
struct Registered<'p, 'de> {
    iss: Option<&'p Shape<'de>>,
    iat: Option<&'p Shape<'de>>,
    exp: Option<&'p Shape<'de>>,
    nbf: Option<&'p Shape<'de>>,
    vct: Option<&'p Shape<'de>>,
    sub: Option<&'p Shape<'de>>,
    jti: Option<&'p Shape<'de>>,
    cnf: Option<&'p Shape<'de>>,
    sd_alg: Option<&'p Shape<'de>>,
}

impl<'p, 'de> Registered<'p, 'de> {
    fn read(payload: &'p Shape<'de>) -> Registered<'p, 'de> {
        let mut claims = Registered::default();
        if let Shape::Fields(fields) = payload {
            for (name, value) in fields {
                let slot = match name.as_ref() {
                    "iss" => &mut claims.iss,
                    "iat" => &mut claims.iat,
                    "exp" => &mut claims.exp,
                    "nbf" => &mut claims.nbf,
                    "vct" => &mut claims.vct,
                    "sub" => &mut claims.sub,
                    "jti" => &mut claims.jti,
                    "cnf" => &mut claims.cnf,
                    "_sd_alg" => &mut claims.sd_alg,
                    _ => continue,
                };
                *slot = Some(value);
            }
        }
        claims
    }
}

pub(super) fn text_claim(value: Option<&Shape<'_>>) -> Option<Text> {
    value.and_then(Shape::as_str).map(Text::from)
}

/// Parses the issuer-signed JWT (checks 1–2 for this part).
pub fn parse_issuer(text: &str, limits: &Limits) -> Result<IssuerJwt, Rejection> {
    let (header_b64, payload_b64, signature_b64) = jws_segments(text).ok_or(malformed(
        "issuer-signed JWT is not three dot-separated segments",
    ))?;
    let too_deep = |error: JsonError, otherwise: &'static str| match error {
        JsonError::TooDeep => malformed("JSON nesting exceeds the limit"),
        JsonError::Invalid => malformed(otherwise),
    };
    let header = Header::read(header_b64, limits)
        .map_err(|e| too_deep(e, "issuer JWT header is not a base64url JSON object"))?;
    let payload_json =
        b64::decode(payload_b64).map_err(|_| malformed("issuer JWT payload is not base64url"))?;
    let payload = parse_object(&payload_json, limits, 3)
        .map_err(|e| too_deep(e, "issuer JWT payload is not a JSON object"))?;

    if !matches!(header.typ.as_deref(), Some("dc+sd-jwt" | "vc+sd-jwt")) {
        return Err(malformed("issuer JWT typ must be dc+sd-jwt"));
    }
    if header.crit {
        return Err(malformed(
            "issuer JWT header has crit extensions we do not understand",
        ));
    }
    let kid = header
        .kid
        .as_deref()
        .filter(|kid| !kid.is_empty())
        .ok_or(malformed("issuer JWT header has no kid"))?;
    let registered = Registered::read(&payload.shape);
    let iss = text_claim(registered.iss).ok_or(malformed("iss claim missing or not a string"))?;
    let vct = text_claim(registered.vct).ok_or(malformed("vct claim missing or not a string"))?;
    let iat = registered
        .iat
        .and_then(Shape::as_date)
        .ok_or(malformed("iat claim missing or not a number"))?;
    let exp = registered
        .exp
        .and_then(Shape::as_date)
        .ok_or(malformed("exp claim missing or not a number"))?;
    let nbf = match registered.nbf {
        None => None,
        Some(value) => Some(
            value
                .as_date()
                .ok_or(malformed("nbf claim is not a number"))?,
        ),
    };
    let sub = text_claim(registered.sub)
        .filter(|s| Id::parse(s).is_some())
        .ok_or(malformed("sub claim missing or not an ID number"))?;
    let jti = text_claim(registered.jti)
        .filter(|s| Id::parse(s).is_some())
        .ok_or(malformed("jti claim missing or not a serial"))?;
    let sd_alg_supported = registered
        .sd_alg
        .is_none_or(|alg| alg.as_str() == Some("sha-256"));
    let holder_key = holder_key(registered.cnf);
    let algorithms_supported = header.alg_supported && sd_alg_supported;
    let sd = match (payload.problem, payload.container) {
        (Some(problem), _) => Err(problem),
        (None, Some(Container::Object(skeleton))) => Ok(skeleton),
        (None, _) => Err("payload is not an object"),
    };
    Ok(IssuerJwt {
        kid: Text::from(kid),
        algorithms_supported,
        claims: CredentialClaims {
            iss,
            iat,
            exp,
            nbf,
            vct,
            sub,
            jti,
            holder_key,
        },
        sd,
        payload_len: payload_json.len(),
        signature: b64::decode_array::<64>(signature_b64),
        signing_input_len: header_b64.len() + 1 + payload_b64.len(),
    })
}

/// Decodes the disclosures. `Err(r)` is a rejection for check 1 (a limit); `Ok(Err(detail))`
/// means `disclosure_invalid`, decided later in order.
#[allow(clippy::type_complexity)]
pub fn decode_disclosures<'a>(
    texts: &[&'a str],
    limits: &Limits,
) -> Result<Result<Vec<Disclosure<'a>>, &'static str>, Rejection> {
    let mut out = Vec::with_capacity(texts.len());
    let mut problem = None;
    for text in texts {
        match decode_disclosure(text, limits) {
            Ok(disclosure) => out.push(disclosure),
            Err(DisclosureError::TooDeep) => {
                return Err(malformed("JSON nesting exceeds the limit"));
            }
            Err(DisclosureError::Invalid(detail)) => {
                // Keep scanning: a later disclosure may break a limit, and limits come first.
                problem.get_or_insert(detail);
            }
        }
    }
    Ok(match problem {
        Some(detail) => Err(detail),
        None => Ok(out),
    })
}

enum DisclosureError {
    TooDeep,
    Invalid(&'static str),
}

fn decode_disclosure<'a>(
    text: &'a str,
    limits: &Limits,
) -> Result<Disclosure<'a>, DisclosureError> {
    b64::with_decoded::<_, 384>(text, |bytes| read_disclosure(text, bytes, limits))
        .map_err(|_| DisclosureError::Invalid("disclosure is not base64url"))?
}

fn read_disclosure<'a>(
    text: &'a str,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Disclosure<'a>, DisclosureError> {
    match extract::parse_plain_disclosure(bytes, limits.max_json_depth) {
        Some(plain) => Ok(Disclosure {
            digest: disclosure_digest(text),
            name: plain.name.map(claim_name).transpose()?,
            value: plain.value,
            text,
        }),
        None => read_disclosure_in_general(text, bytes, limits),
    }
}

/// base64url(SHA-256(disclosure text)): the digest the payload refers to.
fn disclosure_digest(text: &str) -> Digest {
    b64::encode_digest(&Sha256::digest(text.as_bytes()).into())
}

/// A claim name's hash, unless the name is reserved.
fn claim_name(name: &str) -> Result<u64, DisclosureError> {
    if name == "_sd" || name == "..." {
        return Err(DisclosureError::Invalid(
            "disclosure uses a reserved claim name",
        ));
    }
    Ok(skeleton::name_hash(name))
}

/// Any disclosure, through the general parser (the reference for the fast path above).
fn read_disclosure_in_general<'a>(
    text: &'a str,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Disclosure<'a>, DisclosureError> {
    let parts = extract::parse_disclosure(bytes, limits.max_json_depth)
        .map_err(|e| match e {
            JsonError::TooDeep => DisclosureError::TooDeep,
            JsonError::Invalid => DisclosureError::Invalid("disclosure is not JSON"),
        })?
        .ok_or(DisclosureError::Invalid("disclosure is not a JSON array"))?;
    let mut elements = parts.elements.into_iter();
    let (salt, name, value) = match (
        elements.next(),
        elements.next(),
        elements.next(),
        elements.next(),
    ) {
        (Some(salt), Some(name), Some(value), None) => (salt, Some(name), value),
        (Some(salt), Some(value), None, None) => (salt, None, value),
        _ => {
            return Err(DisclosureError::Invalid(
                "disclosure is not a 2- or 3-element array",
            ));
        }
    };
    if salt.0.as_str().is_none() {
        return Err(DisclosureError::Invalid("disclosure salt is not a string"));
    }
    let name = match &name {
        None => None,
        Some((Shape::Str(name), _)) => Some(claim_name(name)?),
        Some(_) => {
            return Err(DisclosureError::Invalid(
                "disclosure claim name is not a string",
            ));
        }
    };
    if let Some(problem) = parts.problem {
        return Err(DisclosureError::Invalid(problem));
    }
    Ok(Disclosure {
        digest: disclosure_digest(text),
        name,
        value: value.1,
        text,
    })
}

/// The two SHA-256 digests a presentation needs, sharing the work on their common prefix (the
/// `sd_hash` input starts with the issuer JWT, which is the cache key's input).
#[derive(Clone, Copy, Debug)]
pub struct Digests {
    /// SHA-256 of the issuer-JWT bytes: the issuer-cache key.
    pub cache_key: [u8; 32],
    /// base64url(SHA-256(sd_hash input)), when there is a KB-JWT to compare it with.
    pub sd_hash: Option<Digest>,
}

/// Computes [`Digests`] for `parts` in one pass over the issuer JWT.
pub fn digests(parts: &Parts<'_>, with_sd_hash: bool) -> Digests {
    let mut hasher = Sha256::new();
    hasher.update(parts.issuer_jwt.as_bytes());
    let cache_key = hasher.clone().finalize().into();
    let sd_hash = with_sd_hash.then(|| {
        // `split` guarantees the sd_hash input starts with the issuer JWT.
        hasher.update(
            parts
                .sd_hash_input
                .as_bytes()
                .get(parts.issuer_jwt.len()..)
                .unwrap_or_default(),
        );
        b64::encode_digest(&hasher.finalize().into())
    });
    Digests { cache_key, sd_hash }
}

/// base64url(SHA-256(input)) compared with the KB-JWT's `sd_hash`.
pub fn sd_hash_matches(sd_hash_input: &str, claimed: &str) -> bool {
    let digest = b64::encode_digest(&Sha256::digest(sd_hash_input.as_bytes()).into());
    claimed.as_bytes() == digest.as_slice()
}

/// The issuer-cache key: SHA-256 of the issuer-JWT bytes.
pub fn issuer_cache_key(issuer_jwt: &str) -> [u8; 32] {
    Sha256::digest(issuer_jwt.as_bytes()).into()
}

#[cfg(test)]
#[path = "presentation_tests.rs"]
mod tests;
