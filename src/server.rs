//! Listeners, connection limits, timeouts and graceful shutdown.
//!
//! `run` takes already-bound listeners and a shutdown future (the way mini-redis does), so tests
//! bind `127.0.0.1:0` and stop the server when they like.
//!
//! **Invariants:**
//! - At most `max_connections` connections per listener are open; past it the accept loop waits
//!   (clients queue in the kernel's backlog) instead of spawning without bound.
//! - Request headers must arrive within `header_read_timeout`; whole requests (body and work)
//!   within `request_timeout` (enforced in `api::handle`).
//! - Shutdown order: readiness false → listeners stop accepting → in-flight requests finish (up
//!   to `drain_timeout`) → the revocation log is closed (every acknowledged update is already
//!   fsynced; the writer finishes what is queued) → `run` returns.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::api::{self, Listener};
use crate::clock::unix_now;
use crate::gateway::Gateway;

/// The two bound listeners.
#[derive(Debug)]
pub struct Listeners {
    pub public: TcpListener,
    pub operator: TcpListener,
}

impl Listeners {
    pub async fn bind(public: SocketAddr, operator: SocketAddr) -> std::io::Result<Listeners> {
        Ok(Listeners {
            public: TcpListener::bind(public).await?,
            operator: TcpListener::bind(operator).await?,
        })
    }

    pub fn public_addr(&self) -> std::io::Result<SocketAddr> {
        self.public.local_addr()
    }

    pub fn operator_addr(&self) -> std::io::Result<SocketAddr> {
        self.operator.local_addr()
    }
}

fn builder(gateway: &Gateway) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(gateway.settings().header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    builder
}

async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    gateway: Gateway,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(gateway.settings().max_connections));
    let builder = builder(&gateway);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot { Ok(slot) => slot, Err(_) => return },
            _ = stop.changed() => return,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let handler = gateway.clone();
        let service = service_fn(move |request| {
            let gateway = handler.clone();
            async move { Ok::<_, Infallible>(api::handle(gateway, kind, request).await) }
        });
        let connection = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        let counted = kind == Listener::Public;
        if counted {
            gateway.connection_opened();
        }
        let gateway = gateway.clone();
        tokio::spawn(async move {
            // Errors here are client-side (resets, bad HTTP); the request log has the rest.
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
            if counted {
                gateway.connection_closed();
            }
            drop(slot);
        });
    }
}

/// Serves both listeners until `shutdown` resolves, then drains and closes.
pub async fn run(gateway: Gateway, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    gateway.start_coalescer();
    let graceful = Arc::new(GracefulShutdown::new());
    let (stop, stopped) = watch::channel(false);
    let loops = [
        tokio::spawn(accept_loop(
            listeners.public,
            Listener::Public,
            gateway.clone(),
            Arc::clone(&graceful),
            stopped.clone(),
        )),
        tokio::spawn(accept_loop(
            listeners.operator,
            Listener::Operator,
            gateway.clone(),
            Arc::clone(&graceful),
            stopped.clone(),
        )),
    ];
    // Expired nonces leave the replay store even without traffic (the gauge stays honest).
    let sweeper = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                gateway.expire_replays(unix_now());
            }
        })
    };
    gateway.set_ready(true);
    tracing::info!("ready");

    shutdown.await;
    tracing::info!("shutting down: not ready, no new connections, draining");
    gateway.set_ready(false);
    let _ = stop.send(true);
    for accept in loops {
        let _ = accept.await;
    }
    sweeper.abort();
    let drain = gateway.settings().drain_timeout;
    match Arc::try_unwrap(graceful) {
        Ok(graceful) => {
            if tokio::time::timeout(drain, graceful.shutdown())
                .await
                .is_err()
            {
                tracing::warn!(
                    seconds = drain.as_secs(),
                    "drain deadline passed; closing remaining connections"
                );
            }
        }
        Err(_) => tracing::warn!("connections still referenced at shutdown"),
    }
    // Every acknowledged update was fsynced before its answer; this stops the writer cleanly.
    let revocations = gateway.clone();
    let _ = tokio::task::spawn_blocking(move || revocations.revocations().close()).await;
    tracing::info!("stopped");
}
