//! Verification: SD-JWT parsing, the signature rule, the batch engine and the per-item checks.
//!
//! Synchronous by design: no tokio, no HTTP. Callers (the gateway, the offline tools, benches)
//! hand a batch of presentations and a "now"; they get one [`Verdict`] per presentation, in
//! input order.
//!
//! Flow of one batch (see ARCHITECTURE.md):
//! 1. the batch is cut into chunks, one or more per pool thread;
//! 2. per chunk, in parallel: parse (checks 1–4), collect the signatures (issuer signatures
//!    only when the issuer JWT is not cached), verify them as one cofactored batch (per-item
//!    fallback on failure), then run checks 5–13;
//! 3. on the calling thread, in input order: checks 14–15 against the replay store, with an
//!    in-batch duplicate counted as `replayed`. The nonce is recorded last, only for items that
//!    passed everything else, so a forged item can never burn a genuine one's nonce.
//!
//! **Architecture invariant:** the verdict of an item depends only on its own bytes, "now", the
//! policy, the trust store, the revocation data, and replay keys of items *before* it — never on
//! which other signatures shared its batch.

pub mod batch;
pub mod cache;
pub mod disclosure;
pub mod engine;
pub mod extract;
pub mod json;
pub mod outcome;
pub mod presentation;
pub mod signature;
pub mod skeleton;

use std::sync::Arc;

use hashbrown::HashSet;
use rayon::prelude::*;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

pub use cache::IssuerCache;
pub use engine::{Engine, EngineConfig, EngineStats};
pub use outcome::{CredentialSummary, Outcome, Rejection, Verdict};
pub use presentation::Limits;
pub use signature::{SignatureError, SignatureJob};

use presentation::{Disclosure, HolderKey, IssuerJwt, KbJwt, KeyBinding};
use skeleton::Digest;

use crate::trust::TrustStore;

/// A trust-store snapshot together with the issuer cache made under it (see `cache.rs`).
#[derive(Debug)]
pub struct TrustContext {
    pub store: TrustStore,
    pub cache: IssuerCache,
}

impl TrustContext {
    pub fn new(store: TrustStore, cache_bytes: u64) -> TrustContext {
        TrustContext {
            store,
            cache: IssuerCache::new(cache_bytes),
        }
    }
}

/// Which audiences a KB-JWT may name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audiences {
    /// Any audience (the offline verifier without `--audience`).
    Any,
    /// Exactly these strings (a tenant's `audiences`).
    Only(Vec<String>),
}

impl Audiences {
    fn accepts(&self, claimed: &[presentation::Text]) -> bool {
        match self {
            Audiences::Any => true,
            Audiences::Only(allowed) => claimed
                .iter()
                .any(|aud| allowed.iter().any(|a| a.as_str() == aud.as_str())),
        }
    }
}

/// The checks' tunables: a tenant's policy plus the global time settings.
#[derive(Clone, Debug)]
pub struct Policy {
    pub clock_skew_s: i64,
    pub max_presentation_age_s: i64,
    pub require_key_binding: bool,
    pub audiences: Audiences,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            clock_skew_s: 5,
            max_presentation_age_s: 60,
            require_key_binding: true,
            audiences: Audiences::Any,
        }
    }
}

/// What the revocation list says of one credential (check 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// No adverse entry applies.
    Good,
    Revoked {
        reason: &'static str,
        since: i64,
    },
    Suspended {
        reason: &'static str,
        since: i64,
    },
}

/// The revocation list as the checks see it; implemented by `revocation::RevocationList`.
pub trait RevocationSource: Sync {
    /// The standing of credential `jti` of subject `sub`, issued at `iat` (for `before`).
    fn standing(&self, sub: &str, jti: &str, iat: i64) -> Standing;
    /// False when the data is older than allowed (check 13, `status_undetermined`).
    fn is_current(&self, now: i64) -> bool;
}

/// A revocation source with no entries that is always current (tools run without a list).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRevocations;

impl RevocationSource for NoRevocations {
    fn standing(&self, _sub: &str, _jti: &str, _iat: i64) -> Standing {
        Standing::Good
    }
    fn is_current(&self, _now: i64) -> bool {
        true
    }
}

/// One replay check-and-insert request (check 14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayRequest {
    /// 128-bit digest of (`iss`, `jti`, KB `nonce`).
    pub key: u128,
    /// The KB-JWT's `iat` (for the start-up watermark).
    pub kb_iat: i64,
    /// When the entry may be forgotten: `kb.iat + max_presentation_age + skew`.
    pub expires_at: i64,
}

/// The replay store's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayAnswer {
    /// First use: recorded.
    Fresh,
    /// Already recorded.
    Replayed,
    /// Store full, unreachable, or the KB-JWT predates the watermark: fail closed.
    Unavailable,
}

/// The replay store as the checks see it. `check_and_insert` must be atomic per key: of any
/// number of concurrent calls with one key, exactly one gets `Fresh`.
pub trait ReplayGuard: Sync {
    fn check_and_insert(&self, requests: &[ReplayRequest], now: i64) -> Vec<ReplayAnswer>;
}

/// The replay key of SPEC §3: a 128-bit digest of (`iss`, `jti`, `nonce`), length-prefixed so
/// no two distinct triples share an encoding.
pub fn replay_key(iss: &str, jti: &str, nonce: &str) -> u128 {
    let mut hasher = Sha256::new();
    for field in [iss, jti, nonce] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field.as_bytes());
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

/// One batch to verify.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a, S> {
    pub presentations: &'a [S],
    /// Unix seconds; every time check uses this.
    pub now: i64,
    pub options: Options<'a>,
}

/// The policy and `return_claims` of a batch's items: one for all, or one per item (small
/// requests of several tenants verified together).
#[derive(Clone, Copy, Debug)]
pub enum Options<'a> {
    Same {
        policy: &'a Policy,
        return_claims: bool,
    },
    PerItem(&'a [(&'a Policy, bool)]),
}

impl<'a, S> Batch<'a, S> {
    /// A batch whose items share one policy.
    pub fn new(
        presentations: &'a [S],
        now: i64,
        policy: &'a Policy,
        return_claims: bool,
    ) -> Batch<'a, S> {
        Batch {
            presentations,
            now,
            options: Options::Same {
                policy,
                return_claims,
            },
        }
    }

    /// Policy and `return_claims` of item `index`. A per-item list shorter than the batch (a
    /// caller bug) falls back to the strictest reading: the first entry, without claims.
    fn item(&self, index: usize) -> (&'a Policy, bool) {
        match self.options {
            Options::Same {
                policy,
                return_claims,
            } => (policy, return_claims),
            Options::PerItem(items) => match items.get(index).or(items.first()) {
                Some(&(policy, return_claims)) => (policy, return_claims),
                None => (&STRICT, false),
            },
        }
    }
}

/// The policy used if a caller passes no per-item policy at all: everything refused that can be.
static STRICT: Policy = Policy {
    clock_skew_s: 0,
    max_presentation_age_s: 0,
    require_key_binding: true,
    audiences: Audiences::Only(Vec::new()),
};

/// The shared state a batch is checked against.
#[derive(Clone, Copy)]
pub struct State<'a> {
    pub trust: &'a TrustContext,
    pub revocation: &'a dyn RevocationSource,
    pub replay: &'a dyn ReplayGuard,
}

impl std::fmt::Debug for State<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("trust_keys", &self.trust.store.len())
            .finish_non_exhaustive()
    }
}

/// The verifier: the engine plus the parsing limits. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Verifier {
    engine: Arc<Engine>,
    limits: Limits,
}

/// A batch's items after checks 1–13, before the replay check (see
/// [`Verifier::verify_before_replay`]).
pub struct Unresolved {
    pending: Vec<Pending>,
    now: i64,
}

impl Unresolved {
    /// Check 14: records the nonces of the items that passed everything else, in item order;
    /// one verdict per item.
    pub fn resolve(self, replay: &dyn ReplayGuard) -> Vec<Verdict> {
        resolve_replays(self.pending, self.now, replay)
    }
}

impl std::fmt::Debug for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unresolved")
            .field("items", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// An item between checks 13 and 14.
enum Pending {
    Done(Verdict),
    /// Passed checks 1–13; valid unless the replay store says otherwise.
    NeedsReplay(Verdict, ReplayRequest),
}

/// Which signature of an item a batch slot holds.
struct Prepared<'a> {
    issuer: Arc<IssuerJwt>,
    /// Set when the issuer JWT was parsed (not cached) and should be cached once verified.
    cache_key: Option<[u8; 32]>,
    issuer_job: Option<usize>,
    holder_job: Option<usize>,
    key_binding: KeyBinding<'a>,
    /// A key-binding failure found before any signature work (`key_binding_invalid`).
    key_binding_problem: Option<&'static str>,
    /// Result of disclosure processing: the processed claims (if asked for) or check-8 failure.
    disclosed: Result<Option<Map<String, Value>>, Rejection>,
}

impl Verifier {
    pub fn new(engine: Arc<Engine>, limits: Limits) -> Verifier {
        Verifier { engine, limits }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Verifies a batch of presentations; one verdict per input, in input order.
    pub fn verify<S: AsRef<str> + Sync>(
        &self,
        batch: &Batch<'_, S>,
        state: State<'_>,
    ) -> Vec<Verdict> {
        self.verify_before_replay(batch, state)
            .resolve(state.replay)
    }

    /// Checks 1–13 of every item on the pool; check 14 (replay) is left to
    /// [`Unresolved::resolve`], which must then run once, in input order relative to other
    /// batches sharing the replay store. Lets a caller verify the next batch on the pool while
    /// it resolves and writes the previous one (the offline verifier does).
    pub fn verify_before_replay<S: AsRef<str> + Sync>(
        &self,
        batch: &Batch<'_, S>,
        state: State<'_>,
    ) -> Unresolved {
        let chunk = self.engine.chunk_len(batch.presentations.len(), 2);
        let pending: Vec<Pending> = self.engine.install(|| {
            batch
                .presentations
                .par_chunks(chunk)
                .enumerate()
                .flat_map_iter(|(number, items)| {
                    self.verify_chunk(items, number * chunk, batch, state)
                })
                .collect()
        });
        Unresolved {
            pending,
            now: batch.now,
        }
    }

    /// [`Verifier::verify_before_replay`] on the calling thread: the items are verified in
    /// batches of the engine's size, one after another (only a failed batch's fallback uses the
    /// pool). For a caller that supplies the parallelism itself by running many such calls on the
    /// pool at once — the offline verifier runs one per block, taken in input order, so the
    /// oldest block finishes first and the writer never waits on it while later blocks idle.
    pub fn verify_before_replay_here<S: AsRef<str>>(
        &self,
        batch: &Batch<'_, S>,
        state: State<'_>,
    ) -> Unresolved {
        let chunk = self.engine.items_per_batch(2);
        let pending = batch
            .presentations
            .chunks(chunk)
            .enumerate()
            .flat_map(|(number, items)| self.verify_chunk(items, number * chunk, batch, state))
            .collect();
        Unresolved {
            pending,
            now: batch.now,
        }
    }

    /// Checks 1–13 for one chunk, with its signatures verified as one batch.
    fn verify_chunk<S: AsRef<str>>(
        &self,
        items: &[S],
        offset: usize,
        batch: &Batch<'_, S>,
        state: State<'_>,
    ) -> Vec<Pending> {
        let mut jobs = Vec::with_capacity(items.len() * 2);
        let prepared: Vec<Result<Prepared<'_>, Rejection>> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                self.prepare(
                    item.as_ref(),
                    batch.item(offset + i).1,
                    state.trust,
                    &mut jobs,
                )
            })
            .collect();
        let results = self.engine.verify_jobs(&jobs);
        let passed = |slot: Option<usize>| slot.map(|i| results.get(i).is_some_and(Result::is_ok));
        prepared
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Err(rejection) => Pending::Done(Verdict::rejected(rejection)),
                Ok(item) => {
                    let issuer_ok = passed(item.issuer_job);
                    let holder_ok = passed(item.holder_job);
                    if let (Some(true), Some(key)) = (issuer_ok, item.cache_key) {
                        state.trust.cache.insert(key, Arc::clone(&item.issuer));
                    }
                    decide(
                        item,
                        issuer_ok,
                        holder_ok,
                        batch.item(offset + i).0,
                        batch.now,
                        state.revocation,
                    )
                }
            })
            .collect()
    }

    /// Checks 1–4 and everything that needs no signature verdict; queues the signatures.
    fn prepare<'a>(
        &self,
        presentation: &'a str,
        return_claims: bool,
        trust: &TrustContext,
        jobs: &mut Vec<SignatureJob>,
    ) -> Result<Prepared<'a>, Rejection> {
        let limits = &self.limits;
        let parts = presentation::split(presentation, limits)?;
        let digests = presentation::digests(&parts, !parts.kb_jwt.is_empty());
        let (issuer, cache_key) = match trust.cache.get(&digests.cache_key) {
            Some(cached) => (cached, None),
            None => {
                let mut parsed = presentation::parse_issuer(parts.issuer_jwt, limits)?;
                parsed.claims.holder_key = parsed.claims.holder_key.decompressed();
                (Arc::new(parsed), Some(digests.cache_key))
            }
        };
        let disclosures = presentation::decode_disclosures(&parts.disclosures, limits)?;
        let key_binding = presentation::parse_key_binding(parts.kb_jwt, limits)?;
        // Disclosure processing can hit the depth limit (check 1), so it runs before check 2.
        let disclosed = match &disclosures {
            Ok(disclosures) => process_disclosures(
                &issuer,
                parts.issuer_jwt,
                disclosures,
                limits,
                return_claims,
            )?,
            Err(detail) => Err(Rejection::new(Outcome::DisclosureInvalid, detail)),
        };
        if !issuer.algorithms_supported {
            return Err(Rejection::new(
                Outcome::UnsupportedAlg,
                "alg must be EdDSA or Ed25519 and _sd_alg sha-256",
            ));
        }
        let trusted = trust.store.key(&issuer.kid).ok_or(Rejection::new(
            Outcome::UnknownKey,
            "no trusted key with this kid",
        ))?;
        if trusted
            .issuer
            .as_deref()
            .is_some_and(|iss| iss != issuer.claims.iss)
        {
            return Err(Rejection::new(
                Outcome::UnknownKey,
                "the key with this kid belongs to another issuer",
            ));
        }
        if !trusted.is_valid_for(issuer.claims.iat) {
            return Err(Rejection::new(
                Outcome::KeyNotValid,
                "issuer key retired or not valid at the credential's iat",
            ));
        }
        let bad_signature = Rejection::new(Outcome::BadSignature, "issuer signature fails");
        let issuer_job = match cache_key {
            // A cache hit means this exact JWT's signature already passed under this trust store.
            None => None,
            Some(_) => {
                let signature = issuer.signature.as_ref().ok_or(bad_signature)?;
                let message = parts
                    .issuer_jwt
                    .as_bytes()
                    .get(..issuer.signing_input_len)
                    .ok_or(bad_signature)?;
                jobs.push(
                    SignatureJob::new(&trusted.key, signature, message, Some(trusted.index))
                        .map_err(|_| bad_signature)?,
                );
                Some(jobs.len() - 1)
            }
        };
        let (holder_job, key_binding_problem) = match &key_binding {
            KeyBinding::Present(kb) => match queue_holder_signature(
                &issuer.claims.holder_key,
                kb,
                digests.sd_hash.as_ref(),
                jobs,
            ) {
                Ok(slot) => (Some(slot), None),
                Err(problem) => (None, Some(problem)),
            },
            _ => (None, None),
        };
        Ok(Prepared {
            issuer,
            cache_key,
            issuer_job,
            holder_job,
            key_binding,
            key_binding_problem,
            disclosed,
        })
    }

    /// Verifies raw signature items (`POST /v1/signatures/verify`, `idgate verify-signatures`)
    /// with the same rule and engine.
    pub fn verify_signatures(&self, items: &[SignatureInput]) -> Vec<Result<(), SignatureError>> {
        let chunk = self.engine.chunk_len(items.len(), 1);
        self.engine.install(|| {
            items
                .par_chunks(chunk)
                .flat_map_iter(|chunk| self.verify_signature_chunk(chunk))
                .collect()
        })
    }

    /// [`Verifier::verify_signatures`] on the calling thread, in batches of the engine's size
    /// (see [`Verifier::verify_before_replay_here`]).
    pub fn verify_signatures_here(
        &self,
        items: &[SignatureInput],
    ) -> Vec<Result<(), SignatureError>> {
        items
            .chunks(self.engine.items_per_batch(1))
            .flat_map(|chunk| self.verify_signature_chunk(chunk))
            .collect()
    }

    /// Raw signature items as one batch.
    fn verify_signature_chunk(
        &self,
        chunk: &[SignatureInput],
    ) -> impl Iterator<Item = Result<(), SignatureError>> {
        let mut jobs = Vec::with_capacity(chunk.len());
        let slots: Vec<Result<usize, SignatureError>> = chunk
            .iter()
            .map(|item| {
                let key = signature::CheckedKey::from_slice(&item.public_key)?;
                let signature: &[u8; 64] = item
                    .signature
                    .as_slice()
                    .try_into()
                    .map_err(|_| SignatureError::Malformed)?;
                jobs.push(SignatureJob::new(&key, signature, &item.message, None)?);
                Ok(jobs.len() - 1)
            })
            .collect();
        let results = self.engine.verify_jobs(&jobs);
        slots.into_iter().map(move |slot| {
            slot.and_then(|i| {
                results
                    .get(i)
                    .copied()
                    .unwrap_or(Err(SignatureError::BadSignature))
            })
        })
    }
}

/// One raw signature item, already base64-decoded.
#[derive(Clone, Debug, Default)]
pub struct SignatureInput {
    pub public_key: Vec<u8>,
    pub message: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Check 8 (and check 1 for the processed depth): the outer `Err` is a limit violation to report
/// at once, the inner one a `disclosure_invalid` to report in order.
fn process_disclosures(
    issuer: &IssuerJwt,
    issuer_jwt: &str,
    disclosures: &[Disclosure<'_>],
    limits: &Limits,
    build: bool,
) -> Result<Result<Option<Map<String, Value>>, Rejection>, Rejection> {
    let payload = match &issuer.sd {
        Ok(payload) => payload,
        Err(detail) => return Ok(Err(Rejection::new(Outcome::DisclosureInvalid, detail))),
    };
    let checked =
        disclosure::validate(payload, disclosures, limits.max_json_depth).and_then(|()| {
            if build {
                // `issuer` was parsed from (or cached under the digest of) these exact bytes.
                let payload = presentation::decode_payload(issuer_jwt).ok_or(Rejection::new(
                    Outcome::Malformed,
                    "issuer JWT payload is not base64url",
                ))?;
                disclosure::build_claims(&payload, disclosures, limits.max_json_depth).map(Some)
            } else {
                Ok(None)
            }
        });
    match checked {
        Ok(claims) => Ok(Ok(claims)),
        Err(rejection) if rejection.outcome == Outcome::Malformed => Err(rejection),
        Err(rejection) => Ok(Err(rejection)),
    }
}

/// Check 7's preconditions, then queue the holder's signature. `Err` is the problem's detail.
fn queue_holder_signature(
    holder_key: &HolderKey,
    kb: &KbJwt<'_>,
    sd_hash: Option<&Digest>,
    jobs: &mut Vec<SignatureJob>,
) -> Result<usize, &'static str> {
    let HolderKey::Key(key) = holder_key else {
        return Err("no usable cnf.jwk to check the KB-JWT against");
    };
    if sd_hash.is_none_or(|digest| kb.claims.sd_hash.as_ref() != Some(digest)) {
        return Err("KB-JWT sd_hash does not match the presentation");
    }
    let signature = kb.signature.as_ref().ok_or("KB-JWT signature fails")?;
    jobs.push(
        SignatureJob::new(key, signature, kb.signing_input.as_bytes(), None)
            .map_err(|_| "KB-JWT signature fails")?,
    );
    Ok(jobs.len() - 1)
}

/// Checks 5–13 in SPEC order, once the signatures are known.
fn decide(
    item: Prepared<'_>,
    issuer_ok: Option<bool>,
    holder_ok: Option<bool>,
    policy: &Policy,
    now: i64,
    revocation: &dyn RevocationSource,
) -> Pending {
    let reject =
        |outcome, detail| Pending::Done(Verdict::rejected(Rejection::new(outcome, detail)));
    let claims = &item.issuer.claims;
    if issuer_ok == Some(false) {
        return reject(Outcome::BadSignature, "issuer signature fails");
    }
    let kb = match &item.key_binding {
        KeyBinding::Absent if policy.require_key_binding => {
            return reject(
                Outcome::KeyBindingMissing,
                "no KB-JWT and the policy requires key binding",
            );
        }
        KeyBinding::Absent => None,
        KeyBinding::Invalid(detail) => return reject(Outcome::KeyBindingInvalid, detail),
        KeyBinding::Present(kb) => Some(kb),
    };
    if let Some(problem) = item.key_binding_problem {
        return reject(Outcome::KeyBindingInvalid, problem);
    }
    if holder_ok == Some(false) {
        return reject(Outcome::KeyBindingInvalid, "KB-JWT signature fails");
    }
    let disclosed_claims = match item.disclosed {
        Ok(claims) => claims,
        Err(rejection) => return Pending::Done(Verdict::rejected(rejection)),
    };
    let skew = policy.clock_skew_s;
    if claims.nbf.is_some_and(|nbf| nbf > now + skew) || claims.iat > now + skew {
        return reject(Outcome::NotYetValid, "credential nbf/iat is in the future");
    }
    if now - skew >= claims.exp {
        return reject(Outcome::Expired, "credential exp has passed");
    }
    if let Some(kb) = kb {
        let oldest = now - policy.max_presentation_age_s - skew;
        if kb.claims.iat < oldest || kb.claims.iat > now + skew {
            return reject(
                Outcome::PresentationStale,
                "KB-JWT iat outside the accepted window",
            );
        }
        if !policy.audiences.accepts(&kb.claims.audiences) {
            return reject(
                Outcome::AudienceMismatch,
                "KB-JWT aud is not an accepted audience",
            );
        }
    }
    match revocation.standing(&claims.sub, &claims.jti, claims.iat) {
        Standing::Good => {}
        Standing::Revoked { reason, since } => {
            return Pending::Done(adverse(Outcome::Revoked, reason, since));
        }
        Standing::Suspended { reason, since } => {
            return Pending::Done(adverse(Outcome::Suspended, reason, since));
        }
    }
    if !revocation.is_current(now) {
        return reject(
            Outcome::StatusUndetermined,
            "revocation data is older than max_staleness",
        );
    }
    let verdict = Verdict {
        outcome: Outcome::Valid,
        detail: None,
        credential: Some(CredentialSummary(Arc::clone(&item.issuer))),
        reason: None,
        since: None,
        claims: disclosed_claims.map(Value::Object),
    };
    match kb {
        // A bearer copy is not replay-tracked (SPEC §3).
        None => Pending::Done(verdict),
        Some(kb) => Pending::NeedsReplay(
            verdict,
            ReplayRequest {
                key: replay_key(&claims.iss, &claims.jti, &kb.claims.nonce),
                kb_iat: kb.claims.iat,
                expires_at: kb.claims.iat + policy.max_presentation_age_s + skew,
            },
        ),
    }
}

fn adverse(outcome: Outcome, reason: &'static str, since: i64) -> Verdict {
    Verdict {
        outcome,
        detail: None,
        credential: None,
        reason: Some(reason),
        since: Some(since),
        claims: None,
    }
}

/// Checks 14–15, in input order: in-batch duplicates first, then one call to the store.
fn resolve_replays(pending: Vec<Pending>, now: i64, replay: &dyn ReplayGuard) -> Vec<Verdict> {
    let mut seen: HashSet<u128, foldhash::fast::RandomState> = HashSet::default();
    let mut requests = Vec::new();
    // Per item: None = final, Some(i) = answer i of the store, or a duplicate marker.
    let mut slots: Vec<Slot> = Vec::with_capacity(pending.len());
    let mut verdicts: Vec<Verdict> = Vec::with_capacity(pending.len());
    for item in pending {
        match item {
            Pending::Done(verdict) => {
                slots.push(Slot::Final);
                verdicts.push(verdict);
            }
            Pending::NeedsReplay(verdict, request) => {
                if seen.insert(request.key) {
                    slots.push(Slot::Store(requests.len()));
                    requests.push(request);
                } else {
                    slots.push(Slot::Duplicate);
                }
                verdicts.push(verdict);
            }
        }
    }
    let answers = if requests.is_empty() {
        Vec::new()
    } else {
        replay.check_and_insert(&requests, now)
    };
    for (verdict, slot) in verdicts.iter_mut().zip(slots) {
        let answer = match slot {
            Slot::Final => continue,
            Slot::Duplicate => ReplayAnswer::Replayed,
            // A store that answers short is treated as unavailable: fail closed.
            Slot::Store(i) => answers.get(i).copied().unwrap_or(ReplayAnswer::Unavailable),
        };
        let rejection = match answer {
            ReplayAnswer::Fresh => continue,
            ReplayAnswer::Replayed => Rejection::new(
                Outcome::Replayed,
                "this presentation's nonce was already used",
            ),
            ReplayAnswer::Unavailable => Rejection::new(
                Outcome::ReplayUnavailable,
                "the replay store cannot record this nonce",
            ),
        };
        *verdict = Verdict::rejected(rejection);
    }
    verdicts
}

enum Slot {
    Final,
    Store(usize),
    Duplicate,
}
