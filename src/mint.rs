//! Minting: an issuer and a holder-wallet simulator producing SD-JWT VC presentations.
//!
//! Used by tests, benches, the demo and the load generator, so that all of them exercise the
//! same format an ID authority and a phone would produce (SPEC §1). Deterministic when given a
//! seeded RNG. Not used on any verification path.

use ed25519_dalek::{Signer, SigningKey};
use rand::Rng;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::b64;

/// An issuing authority with one Ed25519 key.
#[derive(Clone)]
pub struct Issuer {
    key: SigningKey,
    pub kid: String,
    pub iss: String,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("kid", &self.kid)
            .field("iss", &self.iss)
            .finish_non_exhaustive()
    }
}

/// What to put in a credential.
#[derive(Clone, Debug)]
pub struct CredentialSpec {
    pub sub: String,
    pub jti: String,
    pub vct: String,
    pub iat: i64,
    pub exp: i64,
    pub nbf: Option<i64>,
    /// The holder's public key for `cnf.jwk`; `None` issues a bearer credential.
    pub holder: Option<[u8; 32]>,
    /// Selectively disclosable top-level claims.
    pub disclosable: Vec<(String, Value)>,
    /// Claims in the clear (besides the registered ones).
    pub plain: Vec<(String, Value)>,
    /// Decoy digests added to the top-level `_sd`.
    pub decoys: usize,
}

impl CredentialSpec {
    /// A typical national ID card credential for `sub`, valid for three years from `iat`.
    pub fn id_card(sub: &str, jti: &str, iat: i64, holder: Option<[u8; 32]>) -> CredentialSpec {
        CredentialSpec {
            sub: sub.to_string(),
            jti: jti.to_string(),
            vct: "urn:eudi:pid:1".to_string(),
            iat,
            exp: iat + 3 * 365 * 24 * 3600,
            nbf: None,
            holder,
            disclosable: vec![
                ("given_name".into(), json!("Amina")),
                ("family_name".into(), json!("Okafor")),
                ("birthdate".into(), json!("1990-04-12")),
                ("nationality".into(), json!("NG")),
            ],
            plain: Vec::new(),
            decoys: 2,
        }
    }
}

/// An issued credential: the issuer-signed JWT and all its disclosures.
#[derive(Clone, Debug)]
pub struct Credential {
    pub issuer_jwt: String,
    /// (claim name, disclosure text) in issue order.
    pub disclosures: Vec<(String, String)>,
}

/// Key-binding parameters for one presentation.
#[derive(Clone, Debug)]
pub struct KeyBindingSpec {
    pub aud: String,
    pub nonce: String,
    pub iat: i64,
}

/// Base64url(JSON) of a value; `Value` serialisation cannot fail.
fn b64_json(value: &Value) -> String {
    b64::encode(value.to_string())
}

/// Signs `header.payload` and returns compact JWS text.
pub fn sign_jws(key: &SigningKey, header: &Value, payload: &Value) -> String {
    let signing_input = format!("{}.{}", b64_json(header), b64_json(payload));
    let signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64::encode(signature.to_bytes()))
}

/// A fresh random salt (128 bits, as RFC 9901 recommends).
fn salt(rng: &mut impl Rng) -> String {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    b64::encode(bytes)
}

/// base64url(SHA-256(text)), the digest of a disclosure.
pub fn digest(text: &str) -> String {
    b64::encode(Sha256::digest(text.as_bytes()))
}

/// An object-property disclosure `[salt, name, value]`.
pub fn disclosure(rng: &mut impl Rng, name: &str, value: &Value) -> String {
    b64_json(&json!([salt(rng), name, value]))
}

/// An RFC 8037 public JWK for an Ed25519 key.
pub fn public_jwk(public_key: &[u8; 32]) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": b64::encode(public_key)})
}

impl Issuer {
    pub fn new(secret: [u8; 32], kid: &str, iss: &str) -> Issuer {
        Issuer {
            key: SigningKey::from_bytes(&secret),
            kid: kid.to_string(),
            iss: iss.to_string(),
        }
    }

    /// A new issuer with a random key.
    pub fn generate(rng: &mut impl Rng, kid: &str, iss: &str) -> Issuer {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Issuer::new(secret, kid, iss)
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The issuer's secret key bytes (for the demo's data directory; never logged).
    pub fn secret(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The trust-store member for this issuer's key.
    pub fn jwk(&self) -> Value {
        crate::trust::jwk_json(&self.kid, &self.iss, &self.public_key())
    }

    /// Issues a credential.
    pub fn issue(&self, rng: &mut impl Rng, spec: &CredentialSpec) -> Credential {
        let mut disclosures = Vec::with_capacity(spec.disclosable.len());
        let mut digests = Vec::with_capacity(spec.disclosable.len() + spec.decoys);
        for (name, value) in &spec.disclosable {
            let text = disclosure(rng, name, value);
            digests.push(digest(&text));
            disclosures.push((name.clone(), text));
        }
        for _ in 0..spec.decoys {
            digests.push(digest(&salt(rng)));
        }
        // Digest order must not reveal which claim is which (RFC 9901 §4.2.4.1).
        digests.sort();
        let mut payload = Map::new();
        payload.insert("iss".into(), json!(self.iss));
        payload.insert("iat".into(), json!(spec.iat));
        payload.insert("exp".into(), json!(spec.exp));
        if let Some(nbf) = spec.nbf {
            payload.insert("nbf".into(), json!(nbf));
        }
        payload.insert("vct".into(), json!(spec.vct));
        payload.insert("sub".into(), json!(spec.sub));
        payload.insert("jti".into(), json!(spec.jti));
        if let Some(holder) = spec.holder {
            payload.insert("cnf".into(), json!({"jwk": public_jwk(&holder)}));
        }
        for (name, value) in &spec.plain {
            payload.insert(name.clone(), value.clone());
        }
        payload.insert("_sd".into(), json!(digests));
        payload.insert("_sd_alg".into(), json!("sha-256"));
        let header = json!({"alg": "EdDSA", "typ": "dc+sd-jwt", "kid": self.kid});
        Credential {
            issuer_jwt: sign_jws(&self.key, &header, &Value::Object(payload)),
            disclosures,
        }
    }
}

/// A phone's wallet key.
#[derive(Clone)]
pub struct Holder {
    key: SigningKey,
}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Holder(..)")
    }
}

impl Holder {
    pub fn new(secret: [u8; 32]) -> Holder {
        Holder {
            key: SigningKey::from_bytes(&secret),
        }
    }

    pub fn generate(rng: &mut impl Rng) -> Holder {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Holder::new(secret)
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The SD-JWT part of a presentation (through the `~` before the KB-JWT), revealing the
    /// disclosures whose names are in `reveal` (`None`: all).
    pub fn sd_jwt(credential: &Credential, reveal: Option<&[&str]>) -> String {
        let mut text = credential.issuer_jwt.clone();
        text.push('~');
        for (name, disclosure) in &credential.disclosures {
            if reveal.is_none_or(|names| names.contains(&name.as_str())) {
                text.push_str(disclosure);
                text.push('~');
            }
        }
        text
    }

    /// A KB-JWT over an SD-JWT prefix (which must end with `~`).
    pub fn key_binding_jwt(&self, sd_jwt: &str, kb: &KeyBindingSpec) -> String {
        let header = json!({"alg": "EdDSA", "typ": "kb+jwt"});
        let payload = json!({
            "iat": kb.iat,
            "aud": kb.aud,
            "nonce": kb.nonce,
            "sd_hash": digest(sd_jwt),
        });
        sign_jws(&self.key, &header, &payload)
    }

    /// Any compact JWS signed with the holder's key (raw signature items for load tests).
    pub fn sign_jws(&self, header: &Value, payload: &Value) -> String {
        sign_jws(&self.key, header, payload)
    }

    /// A full presentation: what the phone's QR code carries.
    pub fn present(
        &self,
        credential: &Credential,
        reveal: Option<&[&str]>,
        kb: &KeyBindingSpec,
    ) -> String {
        let sd_jwt = Holder::sd_jwt(credential, reveal);
        let kb_jwt = self.key_binding_jwt(&sd_jwt, kb);
        sd_jwt + &kb_jwt
    }
}

/// A random nonce as a phone would mint it for each QR refresh.
pub fn nonce(rng: &mut impl Rng) -> String {
    salt(rng)
}

/// A reproducible corpus of fresh presentations: `issuers` share the credentials round-robin,
/// every presentation has its own holder key, credential and nonce. Minted in parallel.
#[derive(Clone, Debug)]
pub struct CorpusSpec {
    pub issuers: Vec<Issuer>,
    pub count: usize,
    /// KB-JWT `iat` (and credential `iat` minus a day).
    pub now: i64,
    pub audience: String,
    pub seed: u64,
}

/// Mints `spec.count` presentations; item `i` depends only on (`seed`, `i`).
pub fn fresh_presentations(spec: &CorpusSpec) -> Vec<String> {
    use rand::SeedableRng;
    use rayon::prelude::*;
    (0..spec.count)
        .into_par_iter()
        .map(|i| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(
                spec.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            let issuer = &spec.issuers[i % spec.issuers.len().max(1)];
            let holder = Holder::generate(&mut rng);
            let sub = format!("{:010}", 1_000_000_000 + i % 9_000_000_000);
            let credential = issuer.issue(
                &mut rng,
                &CredentialSpec::id_card(
                    &sub,
                    &format!("card-{i}"),
                    spec.now - 86_400,
                    Some(holder.public_key()),
                ),
            );
            let kb = KeyBindingSpec {
                aud: spec.audience.clone(),
                nonce: nonce(&mut rng),
                iat: spec.now,
            };
            holder.present(&credential, None, &kb)
        })
        .collect()
}

/// `n` issuers with deterministic keys (`issuer-1`…), for corpora and demos.
pub fn issuers(n: usize, seed: u64) -> Vec<Issuer> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (1..=n)
        .map(|i| {
            Issuer::generate(
                &mut rng,
                &format!("issuer-{i}"),
                &format!("https://id{i}.example.gov"),
            )
        })
        .collect()
}

/// The JWKS trusting `issuers`.
pub fn jwks(issuers: &[Issuer]) -> Value {
    json!({"keys": issuers.iter().map(Issuer::jwk).collect::<Vec<_>>()})
}
