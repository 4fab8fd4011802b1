//! `revocation.feed = "redis"` inside the gateway: the start-up checks, the applier task and
//! the publishing half of `POST /admin/v1/revocations` (docs/feed-design.md).
//!
//! **Invariants:**
//! - An admin write is answered `200` only after the feed's Redis returned its sequence number;
//!   every instance, this one included, applies it by reading the stream.
//! - The list follows the feed: it is current only while the applier has confirmed, within
//!   `max_staleness_s`, that it holds everything the stream holds.

use std::sync::Weak;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;

use crate::clock::unix_now;
use crate::config::FeedOptions;
use crate::revocation::feed::{
    self, Applier, EntryKind, FeedError, FeedKeys, Persistence, Position, Publisher, Step,
};
use crate::revocation::log::RecordBuilder;
use crate::revocation::store::RevocationStore;

/// Why the feed could not start.
#[derive(Debug, thiserror::Error)]
pub enum FeedStartError {
    #[error("revocation.feed = \"redis\": cannot reach the feed's Redis: {0}")]
    Unreachable(String),
    #[error("revocation.feed = \"redis\": {0}")]
    Unsafe(String),
}

/// The running feed: how to publish, and how far this instance has applied.
#[derive(Debug)]
pub struct Feed {
    publisher: Publisher,
    applied: watch::Receiver<u64>,
    keys: FeedKeys,
    start: Position,
    options: FeedOptions,
}

/// How long a publishing instance waits for its own applier before answering.
const OWN_APPLY_WAIT: Duration = Duration::from_secs(1);

async fn connect(url: &str, timeout: Duration) -> Result<MultiplexedConnection, FeedStartError> {
    let client = redis::Client::open(url).map_err(|e| FeedStartError::Unreachable(kind(&e)))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None);
    match tokio::time::timeout(
        timeout,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(FeedStartError::Unreachable(kind(&error))),
        Err(_) => Err(FeedStartError::Unreachable("connect timed out".into())),
    }
}

/// An error's kind only: its text may quote a URL with a password.
fn kind(error: &redis::RedisError) -> String {
    format!("{:?}", error.kind())
}

impl Feed {
    /// Connects, refuses a server that does not persist (unless allowed), reads the feed's
    /// epoch and this instance's recorded position, and makes `store`'s list follow the feed.
    pub async fn open(
        options: &FeedOptions,
        store: &RevocationStore,
        max_staleness_s: i64,
        timeout: Duration,
    ) -> Result<(Feed, watch::Sender<u64>), FeedStartError> {
        let mut connection = connect(&options.url, timeout).await?;
        let persistence = Persistence::read(&mut connection)
            .await
            .map_err(|e| FeedStartError::Unreachable(e.to_string()))?;
        if let Err(refusal) = persistence.check(options.allow_volatile) {
            return Err(FeedStartError::Unsafe(refusal));
        }
        if persistence.appendonly {
            tracing::info!(
                appendfsync = %persistence.appendfsync,
                "revocation feed: the feed's Redis writes an append-only file"
            );
        } else {
            tracing::warn!(
                "revocation feed: the feed's Redis does not persist (feed_allow_volatile = true): acknowledged revocations can be lost on its restart; for tests and demos only"
            );
        }
        let keys = FeedKeys::new(&options.stream);
        let epoch = feed::feed_epoch(&mut connection, &keys)
            .await
            .map_err(|e| FeedStartError::Unreachable(e.to_string()))?;
        let dir = revocation_dir_of(store);
        let recorded = Position::load(&dir).ok().flatten();
        let start = match recorded {
            Some(position) if position.epoch == epoch => position,
            // A new feed, or a feed made anew: read it from its start (entries already in the
            // local log are applied again, which is harmless; a trimmed start is a gap).
            _ => Position { epoch, sequence: 0 },
        };
        store.list().follow_feed(max_staleness_s);
        let (sender, applied) = watch::channel(start.sequence);
        let client = redis::Client::open(options.url.as_str())
            .map_err(|e| FeedStartError::Unreachable(kind(&e)))?;
        let publisher = Publisher::reconnecting(client, connection, keys.clone(), timeout);
        Ok((
            Feed {
                publisher,
                applied,
                keys,
                start,
                options: options.clone(),
            },
            sender,
        ))
    }

    /// Publishes one admin request's record and returns its sequence number once the feed's
    /// Redis acknowledged it; then waits (at most a second) for this instance to apply it, so
    /// the instance that took the write shows it at once. An error means the outcome is not
    /// known: the write may or may not be in the feed.
    pub async fn publish(
        &self,
        record: &RecordBuilder,
        deadline: Instant,
    ) -> Result<u64, FeedError> {
        let sequence = self
            .publisher
            .publish(EntryKind::Update, &record.payload(), deadline)
            .await?;
        let mut applied = self.applied.clone();
        let _ = tokio::time::timeout(OWN_APPLY_WAIT, applied.wait_for(|n| *n >= sequence)).await;
        Ok(sequence)
    }

    /// The last sequence number this instance applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Runs the applier until the gateway is gone: reads the stream from the recorded
    /// position, applies it, confirms freshness after each read that leaves nothing unread,
    /// and on any fault waits and reconnects (the list then grows stale and fails closed).
    pub fn spawn_applier<G: Send + Sync + 'static>(
        &self,
        owner: Weak<G>,
        store_of: fn(&G) -> &RevocationStore,
        applied: watch::Sender<u64>,
    ) {
        let options = self.options.clone();
        let keys = self.keys.clone();
        let start = self.start;
        tokio::spawn(async move {
            let Some(gateway) = owner.upgrade() else {
                return;
            };
            let dir = revocation_dir_of(store_of(&gateway));
            drop(gateway);
            let mut applier = Applier::new(keys, dir, start);
            let mut connection: Option<MultiplexedConnection> = None;
            let mut pause = Duration::from_millis(50);
            let mut reported_gap = false;
            loop {
                let Some(gateway) = owner.upgrade() else {
                    return;
                };
                if connection.is_none() {
                    match connect(
                        &options.url,
                        options.heartbeat.max(Duration::from_millis(250)),
                    )
                    .await
                    {
                        Ok(c) => connection = Some(c),
                        Err(error) => {
                            tracing::warn!(%error, "revocation feed: reconnecting");
                        }
                    }
                }
                let Some(conn) = connection.as_mut() else {
                    drop(gateway);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                    continue;
                };
                let read_started = unix_now();
                // A blocking read is bounded by the heartbeat; a stalled server is noticed by
                // the guard below, not waited for.
                let step = tokio::time::timeout(
                    options.heartbeat * 2 + Duration::from_millis(500),
                    applier.step(conn, store_of(&gateway), options.heartbeat),
                )
                .await;
                match step {
                    Ok(Ok(Step::Applied { entries, to })) => {
                        pause = Duration::from_millis(50);
                        reported_gap = false;
                        let _ = applied.send(to);
                        // Fewer entries than asked means nothing was left unread as of the
                        // read's start.
                        if entries < feed::READ_COUNT {
                            store_of(&gateway).list().confirm_feed(read_started);
                        }
                    }
                    Ok(Ok(Step::Gap { at, next })) => {
                        if !reported_gap {
                            tracing::error!(
                                at,
                                next,
                                "revocation feed: entries after {at} are gone from the stream (trimmed while this instance was away); status_undetermined until repaired from a snapshot"
                            );
                            reported_gap = true;
                        }
                        drop(gateway);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "revocation feed: read failed; reconnecting");
                        connection = None;
                        drop(gateway);
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                    Err(_) => {
                        tracing::warn!(
                            "revocation feed: the feed's Redis did not answer; reconnecting"
                        );
                        connection = None;
                    }
                }
            }
        });
    }
}

fn revocation_dir_of(store: &RevocationStore) -> std::path::PathBuf {
    store.dir().to_path_buf()
}
