//! `revocation.feed = "redis"` inside the gateway: the start-up checks, the applier task and
//! the publishing half of `POST /admin/v1/revocations` (docs/feed-design.md).
//!
//! **Invariants:**
//! - An admin write is answered `200` only after the feed's Redis returned its sequence number;
//!   every instance, this one included, applies it by reading the stream.
//! - The list follows the feed: it is current only while the applier has confirmed, within
//!   `max_staleness_s`, that it holds everything the stream holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;

use crate::clock::unix_now;
use crate::config::FeedOptions;
use crate::revocation::feed::{
    self, Applier, EntryKind, FeedError, FeedKeys, FeedStats, Persistence, Position, Publisher,
    Repair, Step,
};
use crate::revocation::feed_share;
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
    stats: Arc<FeedStats>,
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
                stats: Arc::default(),
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
        acknowledged: &crate::metrics::Histogram,
    ) -> Result<u64, FeedError> {
        let started = Instant::now();
        let published = self
            .publisher
            .publish(EntryKind::Update, &record.payload(), deadline)
            .await;
        acknowledged.observe(started.elapsed().as_secs_f64());
        let sequence = published?;
        let mut applied = self.applied.clone();
        let _ = tokio::time::timeout(OWN_APPLY_WAIT, applied.wait_for(|n| *n >= sequence)).await;
        Ok(sequence)
    }

    /// The last sequence number this instance applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// The applier's and the lock's counters.
    pub fn stats(&self) -> &FeedStats {
        &self.stats
    }

    /// Runs the lock loop until the gateway is gone: every heartbeat, take or renew the feed's
    /// lock; while held, append a heartbeat entry (the holder's clock). Every instance also
    /// reads the newest shared snapshot's age. The applier writes snapshots while the lock is
    /// held ([`FeedStats::lock_holder`]).
    fn spawn_holder<G: Send + Sync + 'static>(&self, owner: Weak<G>) {
        let options = self.options.clone();
        let keys = self.keys.clone();
        let publisher = self.publisher.clone();
        let stats = Arc::clone(&self.stats);
        let token: [u8; 16] = rand::random();
        let ttl = (options.heartbeat * 5).max(Duration::from_secs(3));
        tokio::spawn(async move {
            let mut connection: Option<MultiplexedConnection> = None;
            let mut ticker = tokio::time::interval(options.heartbeat);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if owner.strong_count() == 0 {
                    stats.lock_holder.store(false, Ordering::Relaxed);
                    return;
                }
                if connection.is_none() {
                    connection = connect(
                        &options.url,
                        options.heartbeat.max(Duration::from_millis(250)),
                    )
                    .await
                    .ok();
                }
                let Some(conn) = connection.as_mut() else {
                    stats.lock_holder.store(false, Ordering::Relaxed);
                    continue;
                };
                let bound = options.heartbeat.max(Duration::from_millis(250));
                let held = tokio::time::timeout(
                    bound,
                    feed_share::hold_lock(conn, &keys, &token, ttl.as_millis() as u64),
                )
                .await;
                let held = match held {
                    Ok(Ok(held)) => held,
                    _ => {
                        connection = None;
                        stats.lock_holder.store(false, Ordering::Relaxed);
                        continue;
                    }
                };
                let was = stats.lock_holder.swap(held, Ordering::Relaxed);
                if held != was {
                    tracing::info!(
                        held,
                        "revocation feed: lock (heartbeats and shared snapshots) {}",
                        if held { "taken" } else { "released" }
                    );
                }
                if held {
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    let _ = publisher
                        .publish(
                            EntryKind::Heartbeat,
                            &now_ms.to_le_bytes(),
                            Instant::now() + bound,
                        )
                        .await;
                } else if let Ok(Ok(Some(manifest))) =
                    tokio::time::timeout(bound, feed_share::newest_manifest(conn, &keys)).await
                {
                    stats
                        .snapshot_created
                        .fetch_max(manifest.created, Ordering::Relaxed);
                }
            }
        });
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
        self.spawn_holder(owner.clone());
        let options = self.options.clone();
        let keys = self.keys.clone();
        let start = self.start;
        let stats = Arc::clone(&self.stats);
        tokio::spawn(async move {
            let Some(gateway) = owner.upgrade() else {
                return;
            };
            let dir = revocation_dir_of(store_of(&gateway));
            drop(gateway);
            let mut applier = Applier::with_stats(keys.clone(), dir, start, Arc::clone(&stats));
            let snapshotting = Arc::new(AtomicBool::new(false));
            let mut last_snapshot: Option<(Instant, u64)> = None;
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
                        let due = last_snapshot.is_none_or(|(at, position)| {
                            at.elapsed() >= options.snapshot_every && to > position
                        });
                        if stats.lock_holder.load(Ordering::Relaxed)
                            && due
                            && !snapshotting.swap(true, Ordering::AcqRel)
                        {
                            last_snapshot = Some((Instant::now(), to));
                            spawn_snapshot(
                                store_of(&gateway),
                                to,
                                &options,
                                &keys,
                                Arc::clone(&stats),
                                Arc::clone(&snapshotting),
                            );
                        }
                        // Caught up after applying something: let a few more entries gather
                        // before the next read (a Kafka consumer's `fetch.max.wait.ms`), so a
                        // steady stream of updates costs a read per few entries, not per
                        // entry. At most APPLY_LINGER on each entry's way to this instance.
                        if entries > 0 && entries < feed::READ_COUNT {
                            drop(gateway);
                            tokio::time::sleep(APPLY_LINGER).await;
                        }
                    }
                    Ok(Ok(Step::NewEpoch)) => {
                        tracing::error!(
                            "revocation feed: the feed's Redis holds a different feed (it came back empty, or is another server); reading the new feed from its start, and updates acknowledged before it was lost are only on the instances that applied them"
                        );
                        let _ = applied.send(0);
                    }
                    Ok(Ok(Step::Gap { at, next })) => {
                        if !reported_gap {
                            tracing::warn!(
                                at,
                                next,
                                "revocation feed: entries after {at} are gone from the stream (trimmed while this instance was away, or it joins with an empty directory); status_undetermined until repaired from a shared snapshot"
                            );
                            reported_gap = true;
                        }
                        let repair = tokio::time::timeout(
                            Duration::from_secs(120),
                            applier.repair(conn, store_of(&gateway), next - 1),
                        )
                        .await;
                        match repair {
                            Ok(Ok(Repair::Repaired { to, entries })) => {
                                tracing::info!(
                                    to,
                                    entries,
                                    "revocation feed: repaired from a shared snapshot"
                                );
                                reported_gap = false;
                                let _ = applied.send(to);
                                continue;
                            }
                            Ok(Ok(Repair::NoSnapshot)) => {
                                tracing::error!(
                                    needed = next - 1,
                                    "revocation feed: no shared snapshot covers the missing entries; status_undetermined until one is written"
                                );
                            }
                            Ok(Err(error)) => {
                                tracing::warn!(%error, "revocation feed: repair failed; retrying");
                                connection = None;
                            }
                            Err(_) => {
                                tracing::warn!("revocation feed: repair timed out; retrying");
                                connection = None;
                            }
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

/// How long the applier waits after a read that caught up with the feed (having applied at
/// least one entry) before it reads again. Measured (BENCHMARKS.md, "Shared revocation feed"):
/// at 1,000 updates/s it is most of the difference between applying the feed and not on a busy
/// instance, and it adds at most this much to the propagation time.
const APPLY_LINGER: Duration = Duration::from_millis(2);

/// Captures the list as it stands at `position` (the applier is between steps, so exactly the
/// entries up to it are applied) and writes it as a shared snapshot on a task of its own;
/// the stream is then trimmed behind the older snapshot kept.
fn spawn_snapshot(
    store: &RevocationStore,
    position: u64,
    options: &FeedOptions,
    keys: &FeedKeys,
    stats: Arc<FeedStats>,
    running: Arc<AtomicBool>,
) {
    let capture = store.list().table().capture();
    let (url, keys) = (options.url.clone(), keys.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        let slots = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            for shard in &capture {
                all.extend_from_slice(&shard.sorted());
            }
            all
        })
        .await;
        let result = match (slots, connect(&url, Duration::from_secs(2)).await) {
            (Ok(slots), Ok(mut connection)) => tokio::time::timeout(
                Duration::from_secs(300),
                feed_share::publish_snapshot(&mut connection, &keys, position, &slots, unix_now()),
            )
            .await
            .map_err(|_| "timed out".to_string())
            .and_then(|r| r.map_err(|e| e.to_string())),
            (Err(error), _) => Err(error.to_string()),
            (_, Err(error)) => Err(error.to_string()),
        };
        match result {
            Ok(published) => {
                stats
                    .snapshot_created
                    .fetch_max(published.manifest.created, Ordering::Relaxed);
                tracing::info!(
                    position,
                    entries = published.manifest.chunked.entries,
                    chunks = published.manifest.chunked.chunks,
                    trimmed_to = published.trimmed_to,
                    seconds = started.elapsed().as_secs_f64(),
                    "revocation feed: shared snapshot written"
                );
            }
            Err(error) => {
                tracing::warn!(%error, position, "revocation feed: shared snapshot failed; the stream is not trimmed")
            }
        }
        running.store(false, Ordering::Release);
    });
}

fn revocation_dir_of(store: &RevocationStore) -> std::path::PathBuf {
    store.dir().to_path_buf()
}
