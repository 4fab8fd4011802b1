//! The gateway's one way to verify presentations: [`Gateway::verify_presentations`].
//!
//! A request's presentations either join the coalescer's next batch (small requests) or go to the
//! pool alone; either way they end in [`Gateway::verify_on_pool`], the one place that builds a
//! verify batch for the gateway. Each request carries its tenant as an `Arc<Tenant>`, so its
//! policy is always the tenant's own — there is no fallback policy to fall back to.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Gateway, Replay, Reservation, Tenant, Texts};
use crate::clock::unix_now;
use crate::verify::{Batch, Deferred, Options, Policy, State, Verdict};

/// One tenant's presentations, admitted (their share of the pending bound reserved).
#[derive(Debug)]
pub struct Presentations {
    pub tenant: Arc<Tenant>,
    pub texts: Texts,
    pub return_claims: bool,
    /// Released when the verification is done (not when the client leaves).
    pub reservation: Reservation,
}

/// Why presentations were not verified.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("the verification pool did not answer")]
    EngineGone,
}

/// What a request does with its verdicts, on the pool: render them and send the answer back.
type Answer = Box<dyn FnOnce(&[Verdict]) + Send>;

/// Presentations on their way to the pool, with what to do with their verdicts there.
pub(super) struct Request {
    pub(super) presentations: Presentations,
    answer: Answer,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("items", &self.presentations.texts.len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Verifies a tenant's presentations — coalesced with other small requests when the
    /// coalescer runs and the request is small, alone otherwise — and runs `render` on the
    /// verdicts (one per presentation, in order) on the pool.
    pub async fn verify_presentations<R: Send + 'static>(
        &self,
        presentations: Presentations,
        render: impl FnOnce(&[Verdict]) -> R + Send + 'static,
    ) -> Result<R, VerifyError> {
        let items = presentations.texts.len();
        let (sender, receiver) = oneshot::channel();
        let request = Request {
            presentations,
            answer: Box::new(move |verdicts| {
                let _ = sender.send(render(verdicts));
            }),
        };
        let small = items > 0 && items * 4 <= self.settings().coalesce_max_items;
        match self.coalescer() {
            Some(coalescer) if small => coalescer
                .submit(request)
                .await
                .map_err(|_| VerifyError::ShuttingDown)?,
            _ => {
                let gateway = self.clone();
                self.0
                    .verifier
                    .engine()
                    .spawn(move || gateway.verify_on_pool(vec![request]));
            }
        }
        receiver.await.map_err(|_| VerifyError::EngineGone)
    }

    /// Runs on the pool: verifies the requests' presentations as one batch (each item under its
    /// own tenant's policy) and answers each request with its verdicts.
    ///
    /// With the memory store the replay step runs here too. With Redis the batch is split
    /// around the round trip: checks 1–13 here, the one pipeline per node as a tokio task (no
    /// pool thread waits for it), then the replay answers are applied and the verdicts rendered
    /// back on the pool.
    pub(super) fn verify_on_pool(&self, requests: Vec<Request>) {
        let mut presentations: Vec<&str> = Vec::new();
        let mut options: Vec<(&Policy, bool)> = Vec::new();
        for request in &requests {
            let texts = &request.presentations.texts;
            let policy = &request.presentations.tenant.policy;
            for index in 0..texts.len() {
                presentations.push(texts.get(index));
                options.push((policy, request.presentations.return_claims));
            }
        }
        let options = match (requests.as_slice(), options.first()) {
            // One request: one policy for all (the common, large-batch case).
            ([_], Some(&(policy, return_claims))) => Options::Same {
                policy,
                return_claims,
            },
            _ => Options::PerItem(&options),
        };
        let batch = Batch {
            presentations: &presentations,
            now: unix_now(),
            options,
        };
        let trust = self.trust();
        let revocations = self.0.revocations.list();
        match &self.0.replay {
            Replay::Memory(store) => {
                let state = State {
                    trust: &trust,
                    revocation: revocations.as_ref(),
                    replay: store,
                };
                let verdicts = self.0.verifier.verify(&batch, state);
                drop(presentations);
                answer(requests, &verdicts);
            }
            Replay::Redis(redis) => {
                let state = State {
                    trust: &trust,
                    revocation: revocations.as_ref(),
                    replay: &Deferred,
                };
                let unresolved = self.0.verifier.verify_before_replay(&batch, state);
                drop(presentations);
                let (replay_requests, awaiting) = unresolved.into_requests();
                if replay_requests.is_empty() {
                    answer(requests, &awaiting.finish(&[]));
                    return;
                }
                let redis = redis.clone();
                let engine = Arc::clone(self.0.verifier.engine());
                redis.clone().runtime().spawn(async move {
                    let answers = redis
                        .check_and_insert(&replay_requests, awaiting.now())
                        .await;
                    engine.spawn(move || answer(requests, &awaiting.finish(&answers)));
                });
            }
        }
    }
}

/// Hands each request its share of the batch's verdicts and releases its reservation.
fn answer(requests: Vec<Request>, verdicts: &[Verdict]) {
    let mut rest = verdicts;
    for request in requests {
        let (mine, others) = rest.split_at(request.presentations.texts.len().min(rest.len()));
        rest = others;
        (request.answer)(mine);
        drop(request.presentations.reservation);
    }
}
