//! The traffic, generated before the run: presentations (fresh holder keys, unique nonces,
//! current `iat`), status-query ID lists and raw signature items, with configurable shares of
//! invalid items. Deterministic from a seed; minted in parallel on every core.

use idgate::mint::{self, CredentialSpec, Holder, Issuer, KeyBindingSpec};
use idgate::revocation::{Entry, Kind, Reason, Status};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use rayon::prelude::*;
use serde_json::{Value, json};

/// The audience every presentation is made for (the spawned gateway's tenant accepts it).
pub const AUDIENCE: &str = "urn:idgate:loadtest";

/// Shares of invalid items in a presentation corpus.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Mix {
    pub bad_signature: f64,
    pub expired: f64,
    pub revoked: f64,
    pub replayed: f64,
}

impl Mix {
    /// Parses `bad_signature=0.01,expired=0.01,revoked=0.01,replayed=0.01`.
    pub fn parse(text: &str) -> anyhow::Result<Mix> {
        let mut mix = Mix::default();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("expected name=share, got {part:?}"))?;
            let value: f64 = value.parse()?;
            anyhow::ensure!(
                (0.0..=1.0).contains(&value),
                "{name}: a share is between 0 and 1"
            );
            match name {
                "bad_signature" => mix.bad_signature = value,
                "expired" => mix.expired = value,
                "revoked" => mix.revoked = value,
                "replayed" => mix.replayed = value,
                other => anyhow::bail!(
                    "unknown invalid kind {other:?} (bad_signature, expired, revoked, replayed)"
                ),
            }
        }
        anyhow::ensure!(
            mix.bad_signature + mix.expired + mix.revoked + mix.replayed <= 1.0,
            "the shares add up to more than 1"
        );
        Ok(mix)
    }
}

/// The outcome a presentation is made to get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Valid,
    BadSignature,
    Expired,
    Revoked,
    Replayed,
}

/// The issuers of a corpus and their trust store.
#[derive(Clone, Debug)]
pub struct Issuers {
    pub issuers: Vec<Issuer>,
}

impl Issuers {
    /// Three issuers (a national scheme's few issuing keys), deterministic from `seed`.
    pub fn new(seed: u64) -> Issuers {
        Issuers {
            issuers: mint::issuers(3, seed),
        }
    }

    pub fn jwks(&self) -> Value {
        mint::jwks(&self.issuers)
    }
}

/// A presentation corpus.
#[derive(Clone, Debug, Default)]
pub struct Presentations {
    pub items: Vec<String>,
    pub kinds: Vec<Expect>,
    /// Entries to post before the run so that `Revoked` items are revoked.
    pub revocations: Vec<Entry>,
}

fn pick(rng: &mut StdRng, mix: &Mix) -> Expect {
    let roll: f64 = rng.random();
    let mut edge = mix.bad_signature;
    if roll < edge {
        return Expect::BadSignature;
    }
    edge += mix.expired;
    if roll < edge {
        return Expect::Expired;
    }
    edge += mix.revoked;
    if roll < edge {
        return Expect::Revoked;
    }
    edge += mix.replayed;
    if roll < edge {
        return Expect::Replayed;
    }
    Expect::Valid
}

/// Changes the payload's `exp` (keeping it valid base64url JSON) without re-signing: the issuer
/// signature then fails in the batch (the fallback's cost is what this measures).
fn break_signature(presentation: &str) -> String {
    let Some((issuer_jwt, rest)) = presentation.split_once('~') else {
        return presentation.to_string();
    };
    let mut segments: Vec<String> = issuer_jwt.split('.').map(str::to_string).collect();
    let Some(payload) = segments.get(1).and_then(|p| idgate::b64::decode(p).ok()) else {
        return presentation.to_string();
    };
    let Ok(mut payload) = serde_json::from_slice::<Value>(&payload) else {
        return presentation.to_string();
    };
    payload["exp"] = json!(payload["exp"].as_i64().unwrap_or(0) + 1);
    if let Some(segment) = segments.get_mut(1) {
        *segment = idgate::b64::encode(payload.to_string());
    }
    format!("{}~{rest}", segments.join("."))
}

/// Mints `count` presentations for time `now`: item `i` depends only on (`seed`, `i`).
pub fn presentations(
    issuers: &Issuers,
    count: usize,
    mix: &Mix,
    seed: u64,
    now: i64,
) -> Presentations {
    let made: Vec<(String, Expect, Option<Entry>)> = (0..count)
        .into_par_iter()
        .map(|i| {
            let mut rng =
                StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let kind = pick(&mut rng, mix);
            let issuer = &issuers.issuers[i % issuers.issuers.len()];
            let holder = Holder::generate(&mut rng);
            let sub = format!(
                "{:010}",
                1_000_000_000 + (seed as usize % 1000) * 1_000_000 + i % 1_000_000
            );
            let jti = format!("lt{seed}-{i}");
            let mut spec =
                CredentialSpec::id_card(&sub, &jti, now - 86_400, Some(holder.public_key()));
            if kind == Expect::Expired {
                spec.iat = now - 4 * 365 * 86_400;
                spec.exp = now - 3600;
            }
            let credential = issuer.issue(&mut rng, &spec);
            let kb = KeyBindingSpec {
                aud: AUDIENCE.into(),
                nonce: mint::nonce(&mut rng),
                iat: now,
            };
            let mut text = holder.present(&credential, None, &kb);
            if kind == Expect::BadSignature {
                text = break_signature(&text);
            }
            let revocation = (kind == Expect::Revoked).then(|| Entry {
                kind: Kind::Credential,
                id: jti.clone(),
                status: Status::Revoked,
                reason: Some(Reason::Stolen),
                before: None,
                at: now - 60,
            });
            (text, kind, revocation)
        })
        .collect();
    let mut corpus = Presentations::default();
    for (text, kind, revocation) in made {
        corpus.items.push(text);
        corpus.kinds.push(kind);
        corpus.revocations.extend(revocation);
    }
    // Replays: copies of earlier items (in the same request or an earlier one).
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(7));
    for i in 1..corpus.items.len() {
        if corpus.kinds[i] == Expect::Replayed {
            let source = rng.random_range(0..i);
            corpus.items[i] = corpus.items[source].clone();
        }
    }
    corpus
}

/// Status-query IDs: a population of subject ID numbers, `revoked` of them revoked.
pub struct StatusIds {
    pub ids: Vec<String>,
    pub revocations: Vec<Entry>,
}

pub fn status_ids(count: usize, revoked: f64, seed: u64, now: i64) -> StatusIds {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ids = Vec::with_capacity(count);
    let mut revocations = Vec::new();
    for _ in 0..count {
        let id = format!("{:010}", rng.random_range(1_000_000_000u64..9_999_999_999));
        if rng.random::<f64>() < revoked {
            revocations.push(Entry {
                kind: Kind::Subject,
                id: id.clone(),
                status: Status::Revoked,
                reason: Some(Reason::Lost),
                before: None,
                at: now - 60,
            });
        }
        ids.push(id);
    }
    StatusIds { ids, revocations }
}

/// Raw signature items as JSON objects, `bad` of them with a flipped signature bit.
pub fn signature_items(count: usize, bad: f64, seed: u64) -> Vec<Value> {
    (0..count)
        .into_par_iter()
        .map(|i| {
            let mut rng = StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
            let holder = Holder::generate(&mut rng);
            let mut message = vec![0u8; 64];
            rng.fill_bytes(&mut message);
            let header = json!({"alg": "EdDSA"});
            let key = idgate::b64::encode(holder.public_key());
            // A compact JWS of the message, signed by the holder's key: its signature segment.
            let jws = holder.sign_jws(&header, &json!({"m": idgate::b64::encode(&message)}));
            let signing_input = jws.rsplit_once('.').map_or("", |(input, _)| input).to_string();
            let mut signature = idgate::b64::decode(jws.rsplit('.').next().unwrap_or("")).unwrap_or_default();
            if rng.random::<f64>() < bad
                && let Some(byte) = signature.get_mut(5)
            {
                *byte ^= 1;
            }
            json!({"public_key": key, "message": idgate::b64::encode(signing_input.as_bytes()), "signature": idgate::b64::encode(&signature)})
        })
        .collect()
}
