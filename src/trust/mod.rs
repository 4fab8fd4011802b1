//! The trust store (SPEC §6): issuer public keys from a JWKS file, checked once at load.
//!
//! **Invariants:**
//! - A [`TrustStore`] only exists fully validated: every key is an RFC 8037 Ed25519 OKP key,
//!   canonical, not small-order, on the curve; `kid`s are unique; no private key material (`d`)
//!   is accepted. Loading is all or nothing, which is what makes reload-with-swap safe.
//! - A store is immutable; a reload builds a new one and the caller swaps it in atomically.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::b64;
use crate::ed25519::CheckedKey;
use crate::verify::{IssuerKey, KeyLookup};

/// Whether a key may still vouch for credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    /// Kept so its credentials get `key_not_valid` rather than `unknown_key`.
    Retired,
}

/// One trusted issuer key.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    /// Position in the store: signatures under one key share a term in a batch.
    pub index: u32,
    pub kid: String,
    pub key: CheckedKey,
    /// The issuer (`iss`) this key belongs to; `None` means any issuer.
    pub issuer: Option<String>,
    /// Credentials with `iat` before this are refused (`key_not_valid`).
    pub not_before: Option<i64>,
    /// Credentials with `iat` at or after this are refused (`key_not_valid`).
    pub expires: Option<i64>,
    pub status: KeyStatus,
}

impl TrustedKey {
    /// Check 4 of SPEC §3: may this key vouch for a credential issued at `credential_iat`?
    pub fn is_valid_for(&self, credential_iat: i64) -> bool {
        self.status == KeyStatus::Active
            && self.not_before.is_none_or(|nbf| credential_iat >= nbf)
            && self.expires.is_none_or(|exp| credential_iat < exp)
    }
}

/// A validated, immutable set of issuer keys, indexed by `kid`.
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    keys: HashMap<String, TrustedKey>,
}

impl KeyLookup for TrustStore {
    fn issuer_key(&self, kid: &str, credential_iat: i64) -> Option<IssuerKey<'_>> {
        self.key(kid).map(|key| IssuerKey {
            key: &key.key,
            group: key.index,
            issuer: key.issuer.as_deref(),
            valid_for_credential: key.is_valid_for(credential_iat),
        })
    }

    fn key_count(&self) -> usize {
        self.len()
    }
}

/// Why a JWKS was refused. Messages name the key by position and `kid`, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read trust store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("trust store is not a JWKS: {0}")]
    NotJwks(String),
    #[error("trust store holds no keys")]
    Empty,
    #[error("trust store key #{index} ({kid}): {reason}")]
    Key {
        index: usize,
        kid: String,
        reason: String,
    },
}

#[derive(Deserialize)]
struct JwksFile {
    keys: Vec<serde_json::Map<String, serde_json::Value>>,
}

impl TrustStore {
    /// Reads and validates a JWKS file.
    pub fn load(path: &Path) -> Result<TrustStore, TrustError> {
        let bytes = std::fs::read(path).map_err(|source| TrustError::Io {
            path: path.display().to_string(),
            source,
        })?;
        TrustStore::from_jwks(&bytes)
    }

    /// Validates a JWKS document. Unknown members are ignored (RFC 7517 §4); known ones are strict.
    pub fn from_jwks(bytes: &[u8]) -> Result<TrustStore, TrustError> {
        let file: JwksFile =
            serde_json::from_slice(bytes).map_err(|e| TrustError::NotJwks(e.to_string()))?;
        if file.keys.is_empty() {
            return Err(TrustError::Empty);
        }
        let mut keys = HashMap::with_capacity(file.keys.len());
        for (index, member) in file.keys.iter().enumerate() {
            let kid_for_errors = member
                .get("kid")
                .and_then(|v| v.as_str())
                .unwrap_or("<no kid>")
                .to_string();
            let fail = |reason: &str| TrustError::Key {
                index,
                kid: kid_for_errors.clone(),
                reason: reason.to_string(),
            };
            let mut key = parse_key(member).map_err(&fail)?;
            key.index = u32::try_from(index).map_err(|_| fail("too many keys"))?;
            if keys.contains_key(&key.kid) {
                return Err(fail("duplicate kid"));
            }
            keys.insert(key.kid.clone(), key);
        }
        Ok(TrustStore { keys })
    }

    /// The key with this `kid`, if trusted.
    pub fn key(&self, kid: &str) -> Option<&TrustedKey> {
        self.keys.get(kid)
    }

    /// Number of keys (`idgate_trust_keys`).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is loaded.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// All keys, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &TrustedKey> {
        self.keys.values()
    }
}

fn parse_key(
    member: &serde_json::Map<String, serde_json::Value>,
) -> Result<TrustedKey, &'static str> {
    let text = |name: &str| -> Result<Option<&str>, &'static str> {
        match member.get(name) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err("a string member has another type"),
        }
    };
    let time = |name: &str| -> Result<Option<i64>, &'static str> {
        match member.get(name) {
            None => Ok(None),
            Some(value) => value
                .as_i64()
                .map(Some)
                .ok_or("nbf/exp must be integer seconds"),
        }
    };
    if member.contains_key("d") {
        return Err("holds a private key (d): a trust store must hold public keys only");
    }
    if text("kty")? != Some("OKP") {
        return Err("kty must be OKP");
    }
    if text("crv")? != Some("Ed25519") {
        return Err("crv must be Ed25519");
    }
    if let Some(alg) = text("alg")?
        && alg != "EdDSA"
        && alg != "Ed25519"
    {
        return Err("alg must be EdDSA or Ed25519");
    }
    if let Some(usage) = text("use")?
        && usage != "sig"
    {
        return Err("use must be sig");
    }
    let kid = text("kid")?.ok_or("kid is required")?;
    if kid.is_empty() || kid.len() > 256 {
        return Err("kid must be 1 to 256 characters");
    }
    let x = text("x")?.ok_or("x is required")?;
    let bytes = b64::decode(x).map_err(|_| "x is not base64url")?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| "x is not 32 bytes")?;
    let key = CheckedKey::new_on_curve(bytes).map_err(|_| "x is not a usable Ed25519 public key (length, small order, non-canonical, or not on the curve)")?;
    let status = match text("status")? {
        None | Some("active") => KeyStatus::Active,
        Some("retired") => KeyStatus::Retired,
        Some(_) => return Err("status must be active or retired"),
    };
    let not_before = time("nbf")?;
    let expires = time("exp")?;
    if let (Some(nbf), Some(exp)) = (not_before, expires)
        && nbf >= exp
    {
        return Err("nbf must be before exp");
    }
    Ok(TrustedKey {
        index: 0,
        kid: kid.to_string(),
        key,
        issuer: text("iss")?.map(str::to_string),
        not_before,
        expires,
        status,
    })
}

/// The JWKS member for a public key, as the trust store reads it (used by tools and the demo).
pub fn jwk_json(kid: &str, issuer: &str, public_key: &[u8; 32]) -> serde_json::Value {
    serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64::encode(public_key),
        "kid": kid,
        "iss": issuer,
        "alg": "EdDSA",
        "use": "sig",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_bytes(seed: u8) -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes()
    }

    fn check(jwks: serde_json::Value) -> Result<TrustStore, String> {
        TrustStore::from_jwks(jwks.to_string().as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_well_formed_jwks_loads_with_its_validity_window() {
        let mut jwk = jwk_json("k1", "https://issuer.example", &key_bytes(1));
        jwk["nbf"] = 100.into();
        jwk["exp"] = 200.into();
        let store = check(serde_json::json!({"keys": [jwk, jwk_json("k2", "https://issuer.example", &key_bytes(2))]})).unwrap();
        assert_eq!(store.len(), 2);
        let k1 = store.key("k1").unwrap();
        assert!(!k1.is_valid_for(99));
        assert!(k1.is_valid_for(100));
        assert!(!k1.is_valid_for(200));
        assert!(store.key("k2").unwrap().is_valid_for(0));
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        let good = jwk_json("k1", "i", &key_bytes(1));
        let cases = [
            (serde_json::json!({"keys": []}), "no keys"),
            (
                serde_json::json!({"keys": [good.clone(), good.clone()]}),
                "duplicate kid",
            ),
            (
                serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": b64::encode([0u8; 32])}]}),
                "usable",
            ),
            (
                serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": b64::encode([1u8; 31])}]}),
                "32 bytes",
            ),
            (
                serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "!!"}]}),
                "base64url",
            ),
            (
                serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k", "x": "AA"}]}),
                "kty",
            ),
            (
                serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64::encode(key_bytes(1))}]}),
                "kid is required",
            ),
            (
                serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": b64::encode(key_bytes(1)), "d": "AA"}]}),
                "private key",
            ),
            (
                serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": b64::encode(key_bytes(1)), "status": "paused"}]}),
                "status",
            ),
            (serde_json::json!({"nokeys": 1}), "not a JWKS"),
        ];
        for (jwks, expected) in cases {
            let error = check(jwks).unwrap_err();
            assert!(
                error.contains(expected),
                "{error} should mention {expected}"
            );
        }
    }
}
