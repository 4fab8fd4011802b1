//! The shared replay store (SPEC §8, `replay.backend = "redis"`): nonce check-and-insert in
//! Redis, so that a presentation accepted by one instance is `replayed` on every other.
//!
//! **Invariants** (the memory store's, kept over a network):
//! - Check-and-insert is atomic per key: one `SET <prefix><key> 1 NX PXAT <expiry ms>` per
//!   distinct nonce; of any number of concurrent sets of one key, Redis answers exactly one `OK`.
//!   Only items that passed every other check are sent (nonces are recorded last), one pipeline
//!   per node per engine batch, and a pipeline is never retried (a retried `SET NX` that had
//!   landed would read as `replayed`).
//! - Fail closed: no connection, a timeout (`replay.redis_timeout_ms`), a connection error, an
//!   error reply (`OOM` included), a short reply → `replay_unavailable` for the items concerned,
//!   never `valid`.
//! - A lost live entry is covered by the watermark: a node is used only while it is a primary
//!   with `maxmemory-policy noeviction` (checked on connect and every second), and lost data (a
//!   restart without persistence, `FLUSHALL`, a failover to a replica that missed writes, a
//!   slot moved to another primary, evictions, a node refused and back) is detected by an
//!   epoch key without TTL read *after* the sets in every pipeline, by the server's `run_id`
//!   and `evicted_keys`, and by the slot map. Detection raises the watermark to the detection
//!   second + skew + 2 × the allowed clock offset + 1 (`after_loss`); the new epoch key
//!   records it, so an instance started later inherits it. Presentations minted before it are
//!   `replay_unavailable`, later ones are accepted. Not covered (a memory restart has the same
//!   gap): a loss no running instance saw, for presentations whose `iat` ran up to the skew
//!   ahead; and a clock step on the Redis host between two checks.
//! - Nothing waits on Redis while holding a thread: the round trip is a tokio future; the
//!   gateway verifies on the pool, awaits this, and finishes on the pool (ARCHITECTURE.md).

mod cluster;
mod node;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use redis::{IntoConnectionInfo, Value};
use tokio::runtime::Handle;
use tokio::task::JoinSet;

use cluster::Cluster;
pub use cluster::slot;
use node::{Node, NodeState, Refusal};

use crate::metrics::{RedisFault, RedisNodes, ReplayMetrics, Unavailable};
use crate::verify::{ReplayAnswer, ReplayRequest};

/// Where the store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (`redis://host:port/db`).
    Single(String),
    /// A Redis Cluster, by any of its nodes (the topology is read from them).
    Cluster(Vec<String>),
}

/// Shown as `host:port` only: a URL may carry a password.
impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |url: &String| match url.as_str().into_connection_info() {
            Ok(info) => match info.addr() {
                redis::ConnectionAddr::Tcp(host, port)
                | redis::ConnectionAddr::TcpTls { host, port, .. } => format!("{host}:{port}"),
                _ => "<redis>".into(),
            },
            Err(_) => "<invalid>".into(),
        };
        match self {
            RedisTarget::Single(url) => f.debug_tuple("Single").field(&redacted(url)).finish(),
            RedisTarget::Cluster(urls) => f
                .debug_tuple("Cluster")
                .field(&urls.iter().map(redacted).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// Redis replay-store settings.
#[derive(Clone, Debug)]
pub struct RedisReplayOptions {
    pub target: RedisTarget,
    /// Bound on every connect and round trip.
    pub timeout: Duration,
    /// Prepended to every key (replay entries and the epoch key).
    pub key_prefix: String,
    /// Largest accepted offset between this host's clock and the server's (`PXAT` expiries are
    /// by the server's clock); the policy's clock skew.
    pub max_clock_offset_s: i64,
    /// With `rediss://`: PEM roots to trust instead of the system's.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisStartError {
    #[error("{0}")]
    Config(String),
    #[error("replay.backend = \"redis\": {node} is unsafe for the replay store: {reason}")]
    Unsafe { node: String, reason: String },
}

/// State shared by the store, its node supervisors and the topology task.
#[derive(Debug)]
struct Context {
    timeout: Duration,
    max_clock_offset_s: i64,
    key_prefix: String,
    /// KB-JWTs with `iat` before this are refused (lost data detected at this second).
    watermark: AtomicI64,
    metrics: Arc<ReplayMetrics>,
    runtime: Handle,
    /// PEM roots for `rediss://` (`None`: the system's).
    ca: Option<Vec<u8>>,
}

#[derive(Debug)]
enum Topology {
    Single(Arc<Node>),
    Cluster(Arc<Cluster>),
}

/// The Redis replay store (cheap to clone).
#[derive(Clone, Debug)]
pub struct RedisReplay {
    context: Arc<Context>,
    topology: Arc<Topology>,
}

/// A client for one server: TCP_NODELAY on; with `rediss://`, TLS (rustls, ring) against
/// `ca` or the system's roots.
fn client(info: redis::ConnectionInfo, ca: Option<&[u8]>) -> redis::RedisResult<redis::Client> {
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    let info = info.set_tcp_settings(tcp);
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    match ca {
        Some(ca) if tls => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.to_vec()),
            },
        ),
        _ => redis::Client::open(info),
    }
}

/// `info` pointed at another `host:port`, keeping its scheme (TLS or not) and settings.
fn at_address(info: &redis::ConnectionInfo, host: &str, port: u16) -> redis::ConnectionInfo {
    let addr = match info.addr() {
        redis::ConnectionAddr::TcpTls { insecure, .. } => redis::ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: *insecure,
            tls_params: None,
        },
        _ => redis::ConnectionAddr::Tcp(host.to_string(), port),
    };
    info.clone().set_addr(addr)
}

impl RedisReplay {
    /// Connects (inside the tokio runtime) and starts the supervisors. Refuses to start when a
    /// reachable server is unsafe (eviction policy, clock); an unreachable one is retried in
    /// the background, items `replay_unavailable` and `/readyz` false until it answers.
    pub async fn connect(
        options: RedisReplayOptions,
        metrics: Arc<ReplayMetrics>,
    ) -> Result<RedisReplay, RedisStartError> {
        // TLS to Redis uses rustls with ring, the process's one crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = match &options.ca_file {
            None => None,
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                RedisStartError::Config(format!(
                    "replay.redis_ca_file: cannot read {}: {e}",
                    path.display()
                ))
            })?),
        };
        let context = Arc::new(Context {
            ca,
            timeout: options.timeout,
            max_clock_offset_s: options.max_clock_offset_s,
            key_prefix: options.key_prefix.clone(),
            watermark: AtomicI64::new(i64::MIN),
            metrics,
            runtime: Handle::current(),
        });
        let topology = match &options.target {
            RedisTarget::Single(url) => {
                let info = url
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| RedisStartError::Config(format!("replay.redis_url: {e}")))?;
                let address = match info.addr() {
                    redis::ConnectionAddr::Tcp(host, port)
                    | redis::ConnectionAddr::TcpTls { host, port, .. } => format!("{host}:{port}"),
                    other => other.to_string(),
                };
                let client = client(info, context.ca.as_deref())
                    .map_err(|e| RedisStartError::Config(format!("replay.redis_url: {e}")))?;
                let epoch_key = format!("{}epoch", options.key_prefix).into_bytes();
                let node = Arc::new(Node::new(address, client, epoch_key));
                refuse_if_unsafe(&node, node.attempt(&context).await)?;
                tokio::spawn(node::supervise(Arc::clone(&node), Arc::clone(&context)));
                Topology::Single(node)
            }
            RedisTarget::Cluster(seeds) => {
                let cluster = Arc::new(Cluster::new(seeds).map_err(RedisStartError::Config)?);
                match cluster.refresh(&context).await {
                    Ok(()) => {
                        // Wait for each primary's first check, so an unsafe one stops the start.
                        for node in cluster.map.load().nodes.iter() {
                            for _ in 0..100 {
                                if node.state() != NodeState::Down || node.last_refusal().is_some()
                                {
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            if node.state() == NodeState::Refused {
                                return Err(RedisStartError::Unsafe {
                                    node: node.address.clone(),
                                    reason: node.last_refusal().unwrap_or_default(),
                                });
                            }
                        }
                    }
                    Err(Refusal::Fault(_, reason) | Refusal::Unsafe(reason)) => {
                        tracing::warn!(reason = %reason, "redis cluster not reachable at start; retrying in the background");
                    }
                }
                tokio::spawn(cluster::watch(Arc::clone(&cluster), Arc::clone(&context)));
                Topology::Cluster(cluster)
            }
        };
        Ok(RedisReplay {
            context,
            topology: Arc::new(topology),
        })
    }

    /// True while every node the keys map to has a checked connection (`/readyz`).
    pub fn is_ready(&self) -> bool {
        match &*self.topology {
            Topology::Single(node) => node.state() == NodeState::Up,
            Topology::Cluster(cluster) => {
                let map = cluster.map.load();
                !map.nodes.is_empty()
                    && map.owners.iter().all(Option::is_some)
                    && map.nodes.iter().all(|n| n.state() == NodeState::Up)
            }
        }
    }

    /// Nodes by connection state (`idgate_redis_nodes`).
    pub fn nodes(&self) -> RedisNodes {
        let mut counts = RedisNodes::default();
        let mut count = |node: &Node| match node.state() {
            NodeState::Up => counts.up += 1,
            NodeState::Down => counts.down += 1,
            NodeState::Refused => counts.refused += 1,
        };
        match &*self.topology {
            Topology::Single(node) => count(node),
            Topology::Cluster(cluster) => cluster.map.load().nodes.iter().for_each(|n| count(n)),
        }
        counts
    }

    /// The current watermark (unix seconds; `i64::MIN` for none).
    pub fn watermark(&self) -> i64 {
        self.context.watermark.load(Ordering::SeqCst)
    }

    /// The tokio runtime the store runs on (the pool hands its round trips to it).
    pub fn runtime(&self) -> &Handle {
        &self.context.runtime
    }

    /// Check-and-insert for one batch: one answer per request, in order.
    pub async fn check_and_insert(
        &self,
        requests: &[ReplayRequest],
        now: i64,
    ) -> Vec<ReplayAnswer> {
        let metrics = &self.context.metrics;
        let mut answers = vec![ReplayAnswer::Unavailable; requests.len()];
        let watermark = self.watermark();
        // Per node: the request indexes it holds.
        let mut groups: Vec<(Arc<Node>, Vec<usize>)> = Vec::new();
        let mut unrouted = 0;
        let mut below_watermark = 0;
        let keys: Vec<Vec<u8>> = requests.iter().map(|r| self.key(r.key)).collect();
        match &*self.topology {
            Topology::Single(node) => {
                let mut indexes = Vec::with_capacity(requests.len());
                for (i, request) in requests.iter().enumerate() {
                    if request.kb_iat < watermark {
                        below_watermark += 1;
                    } else {
                        indexes.push(i);
                    }
                }
                groups.push((Arc::clone(node), indexes));
            }
            Topology::Cluster(cluster) => {
                let map = cluster.map.load();
                let mut by_node: Vec<Vec<usize>> = vec![Vec::new(); map.nodes.len()];
                for (i, request) in requests.iter().enumerate() {
                    if request.kb_iat < watermark {
                        below_watermark += 1;
                        continue;
                    }
                    match map.owners[slot(&keys[i]) as usize] {
                        Some(owner) => by_node[owner as usize].push(i),
                        None => unrouted += 1,
                    }
                }
                for (node, indexes) in map.nodes.iter().zip(by_node) {
                    if !indexes.is_empty() {
                        groups.push((Arc::clone(node), indexes));
                    }
                }
                if unrouted > 0 {
                    cluster.refresh_soon();
                }
            }
        }
        metrics.unavailable(Unavailable::Watermark, below_watermark);
        metrics.unavailable(Unavailable::RedisDown, unrouted);
        let keys = Arc::new(keys);
        let expiries: Arc<Vec<i64>> = Arc::new(
            requests
                .iter()
                .map(|r| pxat(r.expires_at, now, self.context.max_clock_offset_s))
                .collect(),
        );
        let iats: Arc<Vec<i64>> = Arc::new(requests.iter().map(|r| r.kb_iat).collect());
        let mut tasks = JoinSet::new();
        let single = groups.len() == 1;
        let mut first = None;
        for (node, indexes) in groups {
            if indexes.is_empty() {
                continue;
            }
            let context = Arc::clone(&self.context);
            let topology = Arc::clone(&self.topology);
            let keys = Arc::clone(&keys);
            let expiries = Arc::clone(&expiries);
            let iats = Arc::clone(&iats);
            let work = async move {
                let result = insert(&context, &node, &keys, &expiries, &iats, &indexes).await;
                // Error replies (MOVED, ASK, CLUSTERDOWN…) and an unreadable epoch key may mean
                // the map is stale; the topology task reads it at most twice a second.
                if result.iter().any(|r| {
                    r.1 == Err(Unavailable::RedisError) || r.1 == Err(Unavailable::RedisDataLost)
                }) && let Topology::Cluster(cluster) = &*topology
                {
                    cluster.refresh_soon();
                }
                result
            };
            if single {
                first = Some(work.await);
            } else {
                tasks.spawn(work);
            }
        }
        let mut record = |results: Vec<(usize, Result<ReplayAnswer, Unavailable>)>| {
            for (i, result) in results {
                match result {
                    Ok(answer) => answers[i] = answer,
                    Err(cause) => metrics.unavailable(cause, 1),
                }
            }
        };
        if let Some(results) = first {
            record(results);
        }
        while let Some(joined) = tasks.join_next().await {
            // A panicked task leaves its items Unavailable.
            if let Ok(results) = joined {
                record(results);
            }
        }
        answers
    }

    fn key(&self, key: u128) -> Vec<u8> {
        let prefix = self.context.key_prefix.as_bytes();
        let mut out = Vec::with_capacity(prefix.len() + 16);
        out.extend_from_slice(prefix);
        out.extend_from_slice(&key.to_le_bytes());
        out
    }
}

fn refuse_if_unsafe(node: &Node, attempt: Result<(), Refusal>) -> Result<(), RedisStartError> {
    match attempt {
        Err(Refusal::Unsafe(reason)) => Err(RedisStartError::Unsafe {
            node: node.address.clone(),
            reason,
        }),
        Err(Refusal::Fault(_, reason)) => {
            tracing::warn!(node = %node.address, reason = %reason, "redis not reachable at start; retrying in the background (not ready until it answers)");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// The `PXAT` of an entry (ms, by the Redis server's clock): through the end of its expiry
/// second, never before `now` (a clock step back must not make a just-seen nonce forgettable at
/// once), plus the largest accepted offset between this host's clock and the server's, so that
/// a server whose clock runs ahead does not drop the entry while a gateway still accepts it.
fn pxat(expires_at: i64, now: i64, max_clock_offset_s: i64) -> i64 {
    expires_at
        .max(now)
        .saturating_add(max_clock_offset_s)
        .saturating_add(1)
        .saturating_mul(1000)
        .saturating_sub(1)
}

/// The watermark for data lost at `second` (by a gateway's clock): a presentation accepted
/// before the loss has a KB-JWT `iat` of at most its acceptance time plus the clock skew (the
/// freshness check lets `iat` be that far ahead), by the clock of whichever gateway accepted it —
/// which may be up to twice the allowed offset from Redis ahead of this one. So: `second` + skew
/// + 2 × offset + 1 (the offset bound is the skew).
fn after_loss(context: &Context, second: i64) -> i64 {
    second
        .saturating_add(context.max_clock_offset_s.saturating_mul(3))
        .saturating_add(1)
}

/// One pipeline to one node: the sets of `indexes`, then the epoch key.
async fn insert(
    context: &Context,
    node: &Node,
    keys: &[Vec<u8>],
    expiries: &[i64],
    iats: &[i64],
    indexes: &[usize],
) -> Vec<(usize, Result<ReplayAnswer, Unavailable>)> {
    let Some(live) = node.live() else {
        return indexes
            .iter()
            .map(|&i| (i, Err(Unavailable::RedisDown)))
            .collect();
    };
    // The watermark again, read after the connection (and, in a cluster, the slot map) was
    // taken: a loss detected since the batch began raised it before installing either, so a
    // batch that uses the new connection also sees the new watermark.
    let watermark = context.watermark.load(Ordering::SeqCst);
    let (indexes, late): (Vec<usize>, Vec<usize>) =
        indexes.iter().partition(|&&i| iats[i] >= watermark);
    let mut results: Vec<(usize, Result<ReplayAnswer, Unavailable>)> = late
        .into_iter()
        .map(|i| (i, Err(Unavailable::Watermark)))
        .collect();
    if !indexes.is_empty() {
        results.extend(pipeline(context, node, &live, keys, expiries, &indexes).await);
    }
    results
}

/// The pipeline of [`insert`] on `live`.
async fn pipeline(
    context: &Context,
    node: &Node,
    live: &node::Live,
    keys: &[Vec<u8>],
    expiries: &[i64],
    indexes: &[usize],
) -> Vec<(usize, Result<ReplayAnswer, Unavailable>)> {
    let all = |cause: Unavailable| indexes.iter().map(|&i| (i, Err(cause))).collect();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for &i in indexes {
        pipe.cmd("SET")
            .arg(&keys[i])
            .arg(1)
            .arg("NX")
            .arg("PXAT")
            .arg(expiries[i]);
    }
    pipe.cmd("GET").arg(&node.epoch_key);
    let mut connection = live.connection.clone();
    let start = Instant::now();
    let reply = node::query(&mut connection, &pipe, context.timeout).await;
    context
        .metrics
        .redis_round_trip
        .observe(node::elapsed_seconds(start));
    let values = match reply {
        Ok(values) => values,
        Err(Refusal::Fault(fault, _)) => {
            context.metrics.redis_error(fault);
            node.fault(live);
            return all(if fault == RedisFault::Timeout {
                Unavailable::RedisTimeout
            } else {
                Unavailable::RedisError
            });
        }
        Err(Refusal::Unsafe(_)) => return all(Unavailable::RedisError),
    };
    let (Some(epoch), true) = (values.last(), values.len() == indexes.len() + 1) else {
        context.metrics.redis_error(RedisFault::Other);
        return all(Unavailable::RedisError);
    };
    // Compared with the epoch this connection was checked with, not the node's latest: see
    // `Live::epoch`.
    let epoch_kept = matches!(epoch, Value::BulkString(value) if *value == live.epoch);
    if !epoch_kept {
        // The data set changed under this batch (flushed, restarted empty): none of its
        // answers can be trusted. The reconnect re-reads the epoch and raises the watermark.
        node.fault(live);
        return all(Unavailable::RedisDataLost);
    }
    indexes
        .iter()
        .zip(&values)
        .map(|(&i, value)| {
            let answer = match value {
                Value::Okay => Ok(ReplayAnswer::Fresh),
                Value::Nil => Ok(ReplayAnswer::Replayed),
                Value::ServerError(error) => {
                    context.metrics.redis_error(if error.code() == "OOM" {
                        RedisFault::Oom
                    } else {
                        RedisFault::Other
                    });
                    Err(Unavailable::RedisError)
                }
                _ => {
                    context.metrics.redis_error(RedisFault::Other);
                    Err(Unavailable::RedisError)
                }
            };
            (i, answer)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_outlives_its_window_by_the_allowed_clock_offset() {
        // Expiry second 1000, 5 s offset: kept through the end of second 1005.
        assert_eq!(pxat(1000, 990, 5), 1_006_000 - 1);
        // Never before now (plus the offset).
        assert_eq!(pxat(1000, 2000, 5), 2_006_000 - 1);
    }

    #[test]
    fn debug_never_shows_a_password() {
        let target = RedisTarget::Single("redis://user:s3cret@10.0.0.5:6380/2".into());
        let shown = format!("{target:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("10.0.0.5:6380"), "{shown}");
        let cluster = RedisTarget::Cluster(vec!["rediss://:pw-x@h1:7000".into()]);
        assert!(!format!("{cluster:?}").contains("pw-x"));
    }
}
