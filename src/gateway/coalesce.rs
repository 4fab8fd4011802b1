//! Coalescing: small `/v1/verify` requests that arrive together are verified as one batch.
//!
//! A QR scanner sends one presentation per request; verified alone, each costs two single
//! signature verifications, about twice the per-signature cost of a batch. The coalescer takes
//! every small request waiting at the moment it dispatches (up to `max_items` presentations) and
//! hands them to the engine as one batch with per-item policies. It never waits to fill a batch:
//! with the pool idle a lone request goes out at once; with the pool busy (two batches in
//! flight) requests pile up and the next batch is bigger. Latency is therefore never traded for
//! batch size beyond the time the pool is busy anyway.
//!
//! **Invariant:** a request's verdicts are the same as if it had been sent alone, except that a
//! second presentation of the same nonce in the same batch is `replayed` — which the replay
//! store would have answered anyway.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{EngineGone, Gateway, Reservation, Texts};
use crate::revocation::unix_now;
use crate::verify::{Batch, Options, Policy, State, Verdict};

/// Batches being verified at once: one running, one ready to start when it finishes.
const IN_FLIGHT: usize = 2;

/// One small request waiting to be verified.
#[derive(Debug)]
pub struct Job {
    pub texts: Texts,
    pub tenant: usize,
    pub return_claims: bool,
    /// Released when the batch holding this request is done.
    pub reservation: Reservation,
    pub reply: oneshot::Sender<Result<Vec<Verdict>, EngineGone>>,
}

/// The coalescer's queue.
#[derive(Debug)]
pub struct Coalescer {
    jobs: mpsc::Sender<Job>,
}

impl Coalescer {
    /// Starts the dispatch task (inside the tokio runtime).
    pub fn start(gateway: Gateway, max_items: usize) -> Coalescer {
        // Queue bound: the pending-items bound already limits what can be waiting here.
        let (jobs, receiver) = mpsc::channel(4096);
        tokio::spawn(dispatch(gateway, receiver, max_items));
        Coalescer { jobs }
    }

    /// Queues a job; `Err` gives it back if the coalescer is gone (shutting down).
    pub async fn submit(&self, job: Job) -> Result<(), Job> {
        self.jobs.send(job).await.map_err(|e| e.0)
    }
}

async fn dispatch(gateway: Gateway, mut receiver: mpsc::Receiver<Job>, max_items: usize) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = receiver.recv().await else {
            return;
        };
        let mut items = first.texts.len();
        let mut jobs = vec![first];
        while items < max_items {
            match receiver.try_recv() {
                Ok(job) => {
                    items += job.texts.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        if jobs.len() > 1 {
            gateway.metrics.coalesced_batch();
        }
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let engine_side = gateway.clone();
            let result = gateway
                .on_engine(move || verify_jobs(&engine_side, jobs))
                .await;
            if result.is_err() {
                tracing::error!("the verification pool dropped a coalesced batch");
            }
            drop(slot);
        });
    }
}

/// Runs on the pool: verifies every job's presentations as one batch and answers each job.
fn verify_jobs(gateway: &Gateway, jobs: Vec<Job>) {
    let fallback = Policy::default();
    let mut presentations: Vec<&str> = Vec::new();
    let mut options: Vec<(&Policy, bool)> = Vec::new();
    for job in &jobs {
        let policy = gateway
            .tenants
            .get(job.tenant)
            .map_or(&fallback, |tenant| &tenant.policy);
        for index in 0..job.texts.len() {
            presentations.push(job.texts.get(index));
            options.push((policy, job.return_claims));
        }
    }
    let trust = gateway.trust();
    let batch = Batch {
        presentations: &presentations,
        now: unix_now(),
        options: Options::PerItem(&options),
    };
    let state = State {
        trust: &trust,
        revocation: gateway.revocations.list().as_ref(),
        replay: &gateway.replay,
    };
    let mut verdicts = gateway.verifier.verify(&batch, state).into_iter();
    drop(presentations);
    for job in jobs {
        let mine: Vec<Verdict> = verdicts.by_ref().take(job.texts.len()).collect();
        let _ = job.reply.send(Ok(mine));
        drop(job.reservation);
    }
}
