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
//! Where each part lives: [`policy`] (what an item is checked against), [`ports`] (the
//! interfaces other modules implement: keys, revocation, replay), `checks.rs` (checks 1–13 of
//! one chunk), `replays.rs` (checks 14–15), [`engine`] (the pool and the batch equation's
//! driver); parsing is in [`presentation`], [`skeleton`], [`extract`], [`json`], [`disclosure`].
//!
//! **Architecture invariant:** `verify/` imports none of `trust`, `config`, `gateway`, `api`,
//! `replay`, `revocation`, `server`, `cli` (only the leaf modules `ed25519`, `id`, `b64`); the
//! modules it needs implement its [`ports`].
//!
//! **Invariant:** the verdict of an item depends only on its own bytes, "now", the
//! policy, the trust store, the revocation data, and replay keys of items *before* it — never on
//! which other signatures shared its batch.

pub mod cache;
mod checks;
pub mod disclosure;
pub mod engine;
pub mod extract;
pub mod json;
mod key_binding;
pub mod outcome;
pub mod policy;
pub mod ports;
pub mod presentation;
mod replays;
pub mod skeleton;

use std::sync::Arc;

use rayon::prelude::*;

pub use cache::IssuerCache;
pub use engine::{Engine, EngineConfig, EngineStats};
pub use outcome::{CredentialSummary, Outcome, Rejection, Verdict};
pub use policy::{Audiences, Batch, Options, Policy};
pub use ports::{
    Deferred, IssuerKey, KeyLookup, NoRevocations, ReplayAnswer, ReplayGuard, ReplayRequest,
    RevocationSource, Standing, State, TrustContext, replay_key,
};
pub use presentation::Limits;
pub use replays::AwaitingReplay;

use crate::ed25519::{CheckedKey, SignatureError, SignatureJob};
use checks::BeforeReplay;

/// The verifier: the engine plus the parsing limits. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Verifier {
    engine: Arc<Engine>,
    limits: Limits,
}

/// A batch's items after checks 1–13, before the replay check (see
/// [`Verifier::verify_before_replay`]).
pub struct Unresolved {
    pending: Vec<BeforeReplay>,
    now: i64,
}

impl Unresolved {
    /// Check 14: records the nonces of the items that passed everything else, in item order;
    /// one verdict per item.
    pub fn resolve(self, replay: &dyn ReplayGuard) -> Vec<Verdict> {
        replays::resolve_replays(self.pending, self.now, replay)
    }

    /// Check 14 for a store answered asynchronously (Redis): the store requests (distinct
    /// nonces of the items that passed everything else, in item order; in-batch duplicates are
    /// already resolved) and the batch awaiting their answers. Pass the store's answers to
    /// [`AwaitingReplay::finish`].
    pub fn into_requests(self) -> (Vec<ReplayRequest>, AwaitingReplay) {
        replays::plan(self.pending, self.now)
    }
}

impl std::fmt::Debug for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unresolved")
            .field("items", &self.pending.len())
            .finish_non_exhaustive()
    }
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
        let pending: Vec<BeforeReplay> = self.engine.install(|| {
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
    pub fn verify_before_replay_sequential<S: AsRef<str>>(
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
    /// (see [`Verifier::verify_before_replay_sequential`]).
    pub fn verify_signatures_sequential(
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
                let key = CheckedKey::from_slice(&item.public_key)?;
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
