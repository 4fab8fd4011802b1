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

use tokio::sync::{Semaphore, mpsc};

use super::Gateway;
use super::verify::Request;

/// Batches being verified at once: one running, one ready to start when it finishes.
const IN_FLIGHT: usize = 2;

/// The coalescer's queue.
#[derive(Debug)]
pub struct Coalescer {
    jobs: mpsc::Sender<Request>,
}

impl Coalescer {
    /// Starts the dispatch task (inside the tokio runtime).
    pub fn start(gateway: Gateway, max_items: usize) -> Coalescer {
        // Queue bound: the pending-items bound already limits what can be waiting here.
        let (jobs, receiver) = mpsc::channel(4096);
        tokio::spawn(dispatch(gateway, receiver, max_items));
        Coalescer { jobs }
    }

    /// Queues a request; `Err` gives it back if the coalescer is gone (shutting down).
    pub(super) async fn submit(&self, request: Request) -> Result<(), Request> {
        self.jobs.send(request).await.map_err(|e| e.0)
    }
}

async fn dispatch(gateway: Gateway, mut receiver: mpsc::Receiver<Request>, max_items: usize) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = receiver.recv().await else {
            return;
        };
        let mut items = first.presentations.texts.len();
        let mut requests = vec![first];
        while items < max_items {
            match receiver.try_recv() {
                Ok(request) => {
                    items += request.presentations.texts.len();
                    requests.push(request);
                }
                Err(_) => break,
            }
        }
        if requests.len() > 1 {
            gateway.metrics().coalesced_batch();
        }
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let engine_side = gateway.clone();
            let result = gateway
                .on_engine(move || engine_side.verify_on_pool(requests))
                .await;
            if result.is_err() {
                tracing::error!("the verification pool dropped a coalesced batch");
            }
            drop(slot);
        });
    }
}
