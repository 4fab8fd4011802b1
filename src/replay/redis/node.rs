//! One Redis server of the replay store and the supervisor that holds its connection.
//!
//! **Invariants:**
//! - A request uses a connection only after it passed the checks (`maxmemory-policy` is
//!   `noeviction`, the server's clock within the allowed offset, the epoch key read); while there
//!   is none, requests fail at once (`redis_down`) — nobody waits for a connect.
//! - One supervisor task per node makes every connection attempt, one at a time, with jittered
//!   exponential backoff; a request that sees a fault only drops the connection and wakes the
//!   supervisor, so faults never turn into a reconnect storm.
//! - A connection whose server may have lost data (epoch key missing or changed, another
//!   `run_id`, evictions, the node refused until now) raises the store's watermark
//!   (`after_loss`) before it is used; so does an epoch key that says it was made after a loss.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use rand::RngExt as _;
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;

use super::Context;
use crate::clock::unix_now;
use crate::metrics::RedisFault;

/// First reconnect delay; doubled per failure up to [`BACKOFF_MAX`], each drawn in [½, 1]×.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often a live connection is re-checked (eviction policy, clock, epoch).
pub(super) const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A connection that served this long resets the backoff.
const STABLE: Duration = Duration::from_secs(5);

/// Connection state (`idgate_redis_nodes{state}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Checked and in use.
    Up,
    /// Not connected, or the last attempt or request failed.
    Down,
    /// Reachable but refused by the checks (eviction policy, clock offset).
    Refused,
}

/// A checked connection, the epoch it was checked with, and its generation (a fault report
/// from an older one is ignored).
#[derive(Debug)]
pub(super) struct Live {
    pub(super) connection: MultiplexedConnection,
    /// The epoch key's value when this connection was checked. A pipeline on this connection is
    /// trusted only if it reads this value: comparing with the node's *latest* epoch instead
    /// would trust a pipeline sent on the old connection before a loss and answered after the
    /// reconnect had installed the new epoch (its sets landed in the emptied data set).
    pub(super) epoch: Vec<u8>,
    generation: u64,
}

/// What the previous connection saw, to recognise a server that lost data.
#[derive(Debug, Default)]
struct Known {
    epoch: Option<Vec<u8>>,
    run_id: Option<String>,
    /// `evicted_keys` of `INFO stats` at the last check: any increase means entries are gone.
    evicted: Option<u64>,
}

/// Why a connection attempt did not give a usable connection.
#[derive(Debug)]
pub(super) enum Refusal {
    /// Unreachable, timed out, or an error reply: try again later.
    Fault(RedisFault, String),
    /// Reachable and unsafe to use (the reason names the setting and the value found).
    Unsafe(String),
}

/// One Redis server.
pub(super) struct Node {
    /// `host:port`, for logs (never credentials).
    pub(super) address: String,
    client: redis::Client,
    /// The key whose value identifies this server's data set (no TTL).
    pub(super) epoch_key: Vec<u8>,
    live: ArcSwapOption<Live>,
    state: AtomicU8,
    generations: AtomicU64,
    known: Mutex<Known>,
    kick: Notify,
    closed: AtomicBool,
    /// The last refusal's reason (start-up reports it).
    last_refusal: Mutex<Option<String>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("address", &self.address)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Node {
    pub(super) fn new(address: String, client: redis::Client, epoch_key: Vec<u8>) -> Node {
        Node {
            address,
            client,
            epoch_key,
            live: ArcSwapOption::empty(),
            state: AtomicU8::new(NodeState::Down as u8),
            generations: AtomicU64::new(0),
            known: Mutex::new(Known::default()),
            kick: Notify::new(),
            closed: AtomicBool::new(false),
            last_refusal: Mutex::new(None),
        }
    }

    pub(super) fn state(&self) -> NodeState {
        match self.state.load(Ordering::Relaxed) {
            0 => NodeState::Up,
            2 => NodeState::Refused,
            _ => NodeState::Down,
        }
    }

    fn set_state(&self, state: NodeState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// The checked connection, if there is one.
    pub(super) fn live(&self) -> Option<Arc<Live>> {
        self.live.load_full()
    }

    /// A request on `live` failed: drop that connection (unless a newer one replaced it) and
    /// wake the supervisor.
    pub(super) fn fault(&self, live: &Live) {
        let current = self.live.load();
        if current
            .as_ref()
            .is_some_and(|c| c.generation == live.generation)
        {
            self.live.store(None);
            self.set_state(NodeState::Down);
            self.kick.notify_one();
        }
    }

    /// Stops the supervisor (the node left the cluster).
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.live.store(None);
        self.kick.notify_one();
    }

    pub(super) fn last_refusal(&self) -> Option<String> {
        self.last_refusal.lock().clone()
    }

    /// One connection attempt with its checks; installs the connection on success.
    pub(super) async fn attempt(&self, context: &Context) -> Result<(), Refusal> {
        let was_refused = self.state() == NodeState::Refused;
        let result = self.connect_and_check(context, was_refused).await;
        match &result {
            Ok(()) => {
                self.set_state(NodeState::Up);
                *self.last_refusal.lock() = None;
            }
            Err(Refusal::Fault(fault, reason)) => {
                context.metrics.redis_error(*fault);
                self.set_state(NodeState::Down);
                tracing::debug!(node = %self.address, reason = %reason, "redis replay node unreachable");
            }
            Err(Refusal::Unsafe(reason)) => {
                self.set_state(NodeState::Refused);
                *self.last_refusal.lock() = Some(reason.clone());
                // Counted and logged once per refusal, not once per retry.
                if !was_refused {
                    context.metrics.redis_refusal();
                    tracing::error!(node = %self.address, reason = %reason, "redis replay node refused: replay_unavailable until it is fixed");
                }
            }
        }
        result
    }

    /// `after_refusal`: the node was refused until now (an evicting policy, a clock off): entries
    /// may have been evicted or expired early meanwhile, so the connection raises the
    /// watermark as a loss does.
    async fn connect_and_check(
        &self,
        context: &Context,
        after_refusal: bool,
    ) -> Result<(), Refusal> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(context.timeout))
            .set_response_timeout(Some(context.timeout));
        let connect = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        let mut connection = match tokio::time::timeout(context.timeout, connect).await {
            Err(_) => {
                return Err(Refusal::Fault(
                    RedisFault::Timeout,
                    "connect timed out".into(),
                ));
            }
            Ok(Err(error)) => return Err(fault_of(&error)),
            Ok(Ok(connection)) => connection,
        };
        // A new epoch says when it was made and whether its maker knew of an older one (a loss)
        // or had none (a cold start): every gateway that reads it later applies the matching
        // watermark, so one started after a loss is covered too.
        let had_contact = self.known.lock().epoch.is_some();
        let token: [u8; 16] = rand::rng().random();
        let value = Epoch {
            created_s: unix_now(),
            loss: had_contact || after_refusal,
        }
        .encode(&token);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("CONFIG").arg("GET").arg("maxmemory-policy");
        pipe.cmd("TIME");
        pipe.cmd("INFO").arg("server");
        pipe.cmd("INFO").arg("replication");
        pipe.cmd("INFO").arg("stats");
        pipe.cmd("SET").arg(&self.epoch_key).arg(value).arg("NX");
        pipe.cmd("GET").arg(&self.epoch_key);
        let values = query(&mut connection, &pipe, context.timeout).await?;
        let [policy, time, info, replication, stats, created, epoch] = values.as_slice() else {
            return Err(Refusal::Fault(RedisFault::Other, "short reply".into()));
        };
        check_policy(policy)?;
        check_clock(time, context.max_clock_offset_s)?;
        check_primary(replication)?;
        let run_id = info_field(info, "run_id");
        let evicted = info_field(stats, "evicted_keys").and_then(|v| v.parse::<u64>().ok());
        let Value::BulkString(epoch) = epoch else {
            return Err(Refusal::Fault(
                RedisFault::Other,
                "the epoch key cannot be read".into(),
            ));
        };
        let created = matches!(created, Value::Okay);
        {
            let mut known = self.known.lock();
            // What this gateway saw itself: the epoch gone or changed, another server identity,
            // entries evicted, or the node refused until now.
            let lost = (created && known.epoch.is_some())
                || known.epoch.as_ref().is_some_and(|k| k != epoch)
                || (known.run_id.is_some() && run_id.is_some() && known.run_id != run_id)
                || known
                    .evicted
                    .zip(evicted)
                    .is_some_and(|(before, now)| now > before)
                || after_refusal;
            // What the epoch's maker saw (applied on every connection, first contact included;
            // an old epoch gives a watermark long past).
            let mut watermark = Epoch::decode(epoch).map_or(i64::MIN, |e| {
                if e.loss {
                    super::after_loss(context, e.created_s)
                } else {
                    e.created_s
                }
            });
            if lost {
                watermark = watermark.max(super::after_loss(context, unix_now()));
            }
            // Raised before the connection is installed, so that a batch using it sees it.
            let before = context.watermark.fetch_max(watermark, Ordering::SeqCst);
            if watermark > before && watermark > unix_now() - 3600 {
                context.metrics.redis_epoch_change();
                tracing::warn!(node = %self.address, watermark, lost, created, "redis replay data may be lost (new epoch, server identity, evictions): presentations minted before the watermark are replay_unavailable");
            }
            known.epoch = Some(epoch.clone());
            known.run_id = run_id;
            known.evicted = evicted;
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.live.store(Some(Arc::new(Live {
            connection,
            epoch: epoch.clone(),
            generation,
        })));
        Ok(())
    }

    /// The periodic check of a live connection: eviction policy, clock, epoch. On a fault the
    /// connection is dropped (the next attempt re-reads the epoch); on an unsafe answer it is
    /// dropped and the node is refused.
    async fn recheck(&self, context: &Context, live: &Live) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("CONFIG").arg("GET").arg("maxmemory-policy");
        pipe.cmd("TIME");
        pipe.cmd("INFO").arg("replication");
        pipe.cmd("INFO").arg("stats");
        pipe.cmd("GET").arg(&self.epoch_key);
        let mut connection = live.connection.clone();
        let outcome = match query(&mut connection, &pipe, context.timeout).await {
            Err(refusal) => Err(refusal),
            Ok(values) => match values.as_slice() {
                [policy, time, replication, stats, epoch] => check_policy(policy)
                    .and_then(|()| check_clock(time, context.max_clock_offset_s))
                    .and_then(|()| check_primary(replication))
                    .and_then(|()| self.check_evictions(context, stats))
                    .and_then(|()| match epoch {
                        Value::BulkString(value) if *value == live.epoch => Ok(()),
                        _ => Err(Refusal::Fault(
                            RedisFault::Other,
                            "the epoch key changed".into(),
                        )),
                    }),
                _ => Err(Refusal::Fault(RedisFault::Other, "short reply".into())),
            },
        };
        match outcome {
            Ok(()) => {}
            Err(Refusal::Fault(fault, reason)) => {
                context.metrics.redis_error(fault);
                tracing::warn!(node = %self.address, reason = %reason, "redis replay connection check failed; reconnecting");
                self.fault(live);
            }
            Err(Refusal::Unsafe(reason)) => {
                context.metrics.redis_refusal();
                tracing::error!(node = %self.address, reason = %reason, "redis replay node refused: replay_unavailable until it is fixed");
                *self.last_refusal.lock() = Some(reason);
                self.fault(live);
                self.set_state(NodeState::Refused);
            }
        }
    }

    /// Evictions since the last check (possible only if the policy changed and back between
    /// two checks): entries are gone, so raise the watermark as a loss does.
    fn check_evictions(&self, context: &Context, stats: &Value) -> Result<(), Refusal> {
        let evicted = info_field(stats, "evicted_keys").and_then(|v| v.parse::<u64>().ok());
        let mut known = self.known.lock();
        if known
            .evicted
            .zip(evicted)
            .is_some_and(|(before, now)| now > before)
        {
            let watermark = super::after_loss(context, unix_now());
            context.watermark.fetch_max(watermark, Ordering::SeqCst);
            context.metrics.redis_epoch_change();
            tracing::warn!(node = %self.address, watermark, "redis evicted keys: presentations minted before the watermark are replay_unavailable");
        }
        known.evicted = evicted.or(known.evicted);
        Ok(())
    }
}

/// The epoch key's value: `<token hex>:<created unix s>:<cold|loss>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Epoch {
    created_s: i64,
    /// Made by a gateway that knew an older epoch (the data set was lost), not at a cold start.
    loss: bool,
}

impl Epoch {
    fn encode(self, token: &[u8; 16]) -> String {
        let kind = if self.loss { "loss" } else { "cold" };
        format!("{}:{}:{kind}", hex::encode(token), self.created_s)
    }

    fn decode(value: &[u8]) -> Option<Epoch> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.split(':');
        let (_token, created, kind) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Epoch {
            created_s: created.parse().ok()?,
            loss: match kind {
                "loss" => true,
                "cold" => false,
                _ => return None,
            },
        })
    }
}

/// The supervisor: connects (with backoff), re-checks the live connection every
/// [`CHECK_INTERVAL`], reconnects when a request or a check drops it.
pub(super) async fn supervise(node: Arc<Node>, context: Arc<Context>) {
    let mut failures: u32 = 0;
    // When the last connection was installed: one dropped soon after (a server that passes the
    // checks and then fails its pipelines) counts as a failure, so reconnects back off too.
    let mut last_up: Option<Instant> = None;
    while !node.closed.load(Ordering::Relaxed) {
        match node.live() {
            None => {
                if let Some(up) = last_up.take() {
                    if up.elapsed() < STABLE {
                        failures = failures.saturating_add(1);
                        tokio::time::sleep(backoff(failures)).await;
                    } else {
                        failures = 0;
                    }
                }
                if node.attempt(&context).await.is_ok() {
                    last_up = Some(Instant::now());
                    continue;
                }
                failures = failures.saturating_add(1);
                let delay = backoff(failures);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = node.kick.notified() => {}
                }
            }
            Some(live) => {
                tokio::select! {
                    () = tokio::time::sleep(CHECK_INTERVAL) => node.recheck(&context, &live).await,
                    () = node.kick.notified() => {}
                }
            }
        }
    }
}

/// The delay before attempt `failures + 1`: exponential, capped, drawn in [½, 1]× so that many
/// gateways restarting against one Redis do not reconnect in lockstep.
fn backoff(failures: u32) -> Duration {
    let base = BACKOFF_MIN
        .saturating_mul(1u32 << failures.min(16).saturating_sub(1))
        .min(BACKOFF_MAX);
    let factor: f64 = rand::rng().random_range(0.5..=1.0);
    base.mul_f64(factor)
}

/// Runs a pipeline (errors inline) within `timeout`.
pub(super) async fn query(
    connection: &mut MultiplexedConnection,
    pipe: &redis::Pipeline,
    timeout: Duration,
) -> Result<Vec<Value>, Refusal> {
    match tokio::time::timeout(timeout, pipe.query_async::<Vec<Value>>(connection)).await {
        Err(_) => Err(Refusal::Fault(
            RedisFault::Timeout,
            "no answer within the timeout".into(),
        )),
        Ok(Err(error)) => Err(fault_of(&error)),
        Ok(Ok(values)) => Ok(values),
    }
}

/// The metric kind of a client-side error.
pub(super) fn fault_of(error: &redis::RedisError) -> Refusal {
    let kind = if error.is_timeout() {
        RedisFault::Timeout
    } else if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal()
    {
        RedisFault::Connection
    } else if error.code() == Some("OOM") {
        RedisFault::Oom
    } else {
        RedisFault::Other
    };
    // The error's text comes from the client or server, never from a request.
    Refusal::Fault(kind, error.to_string())
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Some(text.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn check_policy(reply: &Value) -> Result<(), Refusal> {
    let value = match reply {
        Value::Array(items) => items.get(1).and_then(text),
        Value::Map(pairs) => pairs.first().and_then(|(_, v)| text(v)),
        Value::ServerError(error) => {
            return Err(Refusal::Unsafe(format!(
                "cannot read maxmemory-policy (CONFIG GET answered {}); the replay store needs maxmemory-policy noeviction",
                error.code()
            )));
        }
        _ => None,
    };
    match value.as_deref() {
        Some("noeviction") => Ok(()),
        Some(other) => Err(Refusal::Unsafe(format!(
            "maxmemory-policy is {other}; the replay store needs maxmemory-policy noeviction (an evicted nonce could be replayed)"
        ))),
        None => Err(Refusal::Unsafe(
            "maxmemory-policy cannot be read; the replay store needs maxmemory-policy noeviction"
                .into(),
        )),
    }
}

/// PXAT expiries use the server's clock: refuse a server whose clock is off by more than the
/// allowed offset (its entries would expire early or late by as much).
fn check_clock(reply: &Value, max_offset_s: i64) -> Result<(), Refusal> {
    let seconds = match reply {
        Value::Array(items) => items
            .first()
            .and_then(text)
            .and_then(|s| s.parse::<i64>().ok()),
        _ => None,
    };
    let Some(seconds) = seconds else {
        return Err(Refusal::Fault(
            RedisFault::Other,
            "TIME gave no answer".into(),
        ));
    };
    let offset = seconds - unix_now();
    if offset.abs() > max_offset_s {
        return Err(Refusal::Unsafe(format!(
            "the server's clock is {offset} s off this host's (at most {max_offset_s} s allowed: entries expire by the server's clock)"
        )));
    }
    Ok(())
}

/// `field:value` of an `INFO` section.
fn info_field(info: &Value, field: &str) -> Option<String> {
    let text = text(info)?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(|value| value.trim().to_string())
}

/// A replica answers `READONLY` to every set (and may lag): refuse it.
fn check_primary(replication: &Value) -> Result<(), Refusal> {
    match info_field(replication, "role").as_deref() {
        Some("master") => Ok(()),
        Some(role) => Err(Refusal::Unsafe(format!(
            "the server is a replica (role:{role}); point the replay store at the primary"
        ))),
        None => Err(Refusal::Fault(
            RedisFault::Other,
            "INFO replication gave no role".into(),
        )),
    }
}

/// Round trips are timed whether or not they are answered.
pub(super) fn elapsed_seconds(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for failures in 1..40 {
            let delay = backoff(failures);
            assert!(delay >= BACKOFF_MIN / 2, "{delay:?}");
            assert!(delay <= BACKOFF_MAX, "{delay:?}");
        }
        assert!(backoff(1) <= BACKOFF_MIN);
        assert!(backoff(30) >= BACKOFF_MAX / 2);
    }

    #[test]
    fn only_noeviction_is_accepted_and_the_refusal_names_the_value() {
        let reply = |policy: &str| {
            Value::Array(vec![
                Value::BulkString(b"maxmemory-policy".to_vec()),
                Value::BulkString(policy.as_bytes().to_vec()),
            ])
        };
        assert!(check_policy(&reply("noeviction")).is_ok());
        match check_policy(&reply("allkeys-lru")) {
            Err(Refusal::Unsafe(reason)) => {
                assert!(
                    reason.contains("maxmemory-policy is allkeys-lru"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(check_policy(&Value::Nil), Err(Refusal::Unsafe(_))));
    }

    #[test]
    fn a_server_clock_off_by_more_than_allowed_is_refused() {
        let at = |seconds: i64| {
            Value::Array(vec![
                Value::BulkString(seconds.to_string().into_bytes()),
                Value::BulkString(b"0".to_vec()),
            ])
        };
        assert!(check_clock(&at(unix_now()), 5).is_ok());
        assert!(matches!(
            check_clock(&at(unix_now() + 60), 5),
            Err(Refusal::Unsafe(_))
        ));
        assert!(matches!(
            check_clock(&at(unix_now() - 60), 5),
            Err(Refusal::Unsafe(_))
        ));
    }

    #[test]
    fn epochs_round_trip_and_foreign_values_are_ignored() {
        for loss in [false, true] {
            let epoch = Epoch {
                created_s: 1_790_000_000,
                loss,
            };
            assert_eq!(
                Epoch::decode(epoch.encode(&[7; 16]).as_bytes()),
                Some(epoch)
            );
        }
        assert_eq!(Epoch::decode(b"0123abcd"), None);
        assert_eq!(Epoch::decode(b"ab:12:other"), None);
    }

    #[test]
    fn only_a_primary_is_used() {
        let info = |role: &str| {
            Value::BulkString(format!("# Replication\r\nrole:{role}\r\n").into_bytes())
        };
        assert!(check_primary(&info("master")).is_ok());
        assert!(matches!(
            check_primary(&info("slave")),
            Err(Refusal::Unsafe(_))
        ));
    }

    #[test]
    fn run_id_is_read_from_info_server() {
        let info =
            Value::BulkString(b"# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\n".to_vec());
        assert_eq!(info_field(&info, "run_id").as_deref(), Some("abc123"));
        assert_eq!(info_field(&info, "run").as_deref(), None);
    }
}
