//! Redis Cluster: which primary holds a key, and the topology task that keeps that map.
//!
//! The client's own cluster connection sends a pipeline to one slot only, so the store routes
//! itself: keys are grouped by the primary that owns their slot (`CLUSTER SLOTS`) and each
//! primary gets one pipeline per batch on its own supervised [`Node`]. A `MOVED`/`ASK` reply
//! (resharding, failover) answers that item `replay_unavailable` and triggers a topology
//! refresh; it is never followed blindly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Value};
use tokio::sync::Notify;

use super::Context;
use super::node::{self, Node, Refusal};
use crate::metrics::RedisFault;

/// Slots in a Redis Cluster.
pub const SLOTS: usize = 16384;
/// How often the topology is re-read without a reason.
const REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// The least time between two topology reads.
const REFRESH_MIN: Duration = Duration::from_millis(500);

/// The slot of a key, as Redis computes it: CRC16 (XMODEM) of the key, or of its hash tag (the
/// bytes between the first `{` and the next `}`, if not empty).
pub fn slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS as u16
}

/// Which node owns each slot (`None`: no primary serves it — items there are unavailable).
pub(super) struct SlotMap {
    pub(super) owners: Vec<Option<u16>>,
    pub(super) nodes: Vec<Arc<Node>>,
}

impl SlotMap {
    fn empty() -> SlotMap {
        SlotMap {
            owners: vec![None; SLOTS],
            nodes: Vec::new(),
        }
    }
}

/// The cluster's current map and what refreshes it.
pub(super) struct Cluster {
    seeds: Vec<ConnectionInfo>,
    pub(super) map: ArcSwap<SlotMap>,
    refresh: Notify,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.map.load().nodes.len())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    pub(super) fn new(seeds: &[String]) -> Result<Cluster, String> {
        let seeds = seeds
            .iter()
            .map(|url| {
                url.as_str()
                    .into_connection_info()
                    .map_err(|e| format!("replay.redis_cluster: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Cluster {
            seeds,
            map: ArcSwap::from_pointee(SlotMap::empty()),
            refresh: Notify::new(),
        })
    }

    /// Asks the topology task to re-read the slot map now.
    pub(super) fn refresh_soon(&self) {
        self.refresh.notify_one();
    }

    /// Reads `CLUSTER SLOTS` from the first seed or known node that answers and installs the
    /// new map: nodes that stay keep their supervisor, new ones get one, gone ones stop.
    pub(super) async fn refresh(&self, context: &Arc<Context>) -> Result<(), Refusal> {
        let mut last = Refusal::Fault(RedisFault::Connection, "no cluster node answered".into());
        let known: Vec<ConnectionInfo> = self
            .map
            .load()
            .nodes
            .iter()
            .filter_map(|n| n.address.parse_addr(&self.seeds[0]))
            .collect();
        for info in known.iter().chain(self.seeds.iter()) {
            match read_slots(info, context).await {
                Ok(ranges) => return self.install(ranges, context),
                Err(refusal) => last = refusal,
            }
        }
        Err(last)
    }

    /// Installs a new map; all or nothing (a node that cannot be set up leaves the old map, so
    /// no slot ever points at a missing node).
    fn install(
        &self,
        ranges: Vec<(u16, u16, String, u16)>,
        context: &Arc<Context>,
    ) -> Result<(), Refusal> {
        let unusable =
            |what: &str| Refusal::Fault(RedisFault::Other, format!("CLUSTER SLOTS: {what}"));
        let old = self.map.load_full();
        let mut by_address: HashMap<String, usize> = HashMap::new();
        let mut map = SlotMap::empty();
        let mut owned: Vec<Vec<(u16, u16)>> = Vec::new();
        for (start, end, host, port) in ranges {
            let address = format!("{host}:{port}");
            let index = *by_address.entry(address).or_insert_with(|| {
                owned.push(Vec::new());
                owned.len() - 1
            });
            owned[index].push((start, end));
            for slot in start..=end.min(SLOTS as u16 - 1) {
                map.owners[slot as usize] = Some(index as u16);
            }
        }
        let mut addresses: Vec<(String, usize)> = by_address.into_iter().collect();
        addresses.sort_by_key(|(_, index)| *index);
        for (address, index) in addresses {
            let epoch_key = epoch_key_for(&context.key_prefix, &map.owners, index as u16);
            let reuse = old
                .nodes
                .iter()
                .find(|n| n.address == address && Some(&n.epoch_key) == epoch_key.as_ref())
                .cloned();
            let node = match reuse {
                Some(node) => node,
                None => {
                    let Some((host, port)) = address.rsplit_once(':') else {
                        return Err(unusable("an address without a port"));
                    };
                    let Ok(port) = port.parse() else {
                        return Err(unusable("a port that is not a number"));
                    };
                    let Some(epoch_key) = epoch_key else {
                        return Err(unusable("no epoch key maps to a node's slots"));
                    };
                    let info = super::at_address(&self.seeds[0], host, port);
                    let Ok(client) = super::client(info, context.ca.as_deref()) else {
                        return Err(unusable("a node address the client refuses"));
                    };
                    let node = Arc::new(Node::new(address, client, epoch_key));
                    context
                        .runtime
                        .spawn(node::supervise(Arc::clone(&node), Arc::clone(context)));
                    node
                }
            };
            map.nodes.push(node);
        }
        // A slot that moved to another primary (a failover, a resharding) may have lost the
        // writes its old owner had not passed on: the new owner's epoch key says nothing about
        // them. Treat it as lost data (the watermark), as a restarted single server is.
        fn address(m: &SlotMap, slot: usize) -> Option<&str> {
            m.owners[slot]
                .and_then(|i| m.nodes.get(i as usize))
                .map(|n| n.address.as_str())
        }
        // Any change of owner counts, an unowned slot that gets an owner included (its keys
        // were on a primary that failed).
        let moved = !old.nodes.is_empty()
            && (0..SLOTS).any(|slot| address(&old, slot) != address(&map, slot));
        if moved {
            // Raised before the new map is installed, so that a batch routed by it sees it.
            let watermark = super::after_loss(context, crate::clock::unix_now());
            context
                .watermark
                .fetch_max(watermark, std::sync::atomic::Ordering::SeqCst);
            context.metrics.redis_epoch_change();
            tracing::warn!(
                watermark,
                "redis cluster slots moved to another primary: presentations minted before the watermark are replay_unavailable"
            );
        }
        for node in &old.nodes {
            if !map.nodes.iter().any(|n| Arc::ptr_eq(n, node)) {
                node.close();
            }
        }
        self.map.store(Arc::new(map));
        Ok(())
    }
}

/// Re-reads the topology every [`REFRESH_INTERVAL`] and whenever asked, but at most once per
/// [`REFRESH_MIN`] (doubling to [`REFRESH_INTERVAL`] while it fails): a burst of misrouted
/// items or an unreachable cluster never turns into a burst of connects.
pub(super) async fn watch(cluster: Arc<Cluster>, context: Arc<Context>) {
    let mut pause = REFRESH_MIN;
    loop {
        tokio::select! {
            () = tokio::time::sleep(REFRESH_INTERVAL) => {}
            () = cluster.refresh.notified() => {}
        }
        match cluster.refresh(&context).await {
            Ok(()) => pause = REFRESH_MIN,
            Err(Refusal::Fault(_, reason) | Refusal::Unsafe(reason)) => {
                tracing::warn!(reason = %reason, "redis cluster topology could not be read");
                pause = (pause * 2).min(REFRESH_INTERVAL);
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// An epoch key that lives on the node with index `node`: `<prefix>epoch:{n}` for the smallest
/// `n` whose slot that node owns (each primary's data set has its own epoch). The prefix has no
/// braces (config refuses them with a cluster), so the tag decides the slot; a node owning any
/// slot is found within a few thousand tries, and `None` means it owns none.
fn epoch_key_for(prefix: &str, owners: &[Option<u16>], node: u16) -> Option<Vec<u8>> {
    (0u32..100_000).find_map(|n| {
        let key = format!("{prefix}epoch:{{{n}}}").into_bytes();
        (owners.get(slot(&key) as usize).copied().flatten() == Some(node)).then_some(key)
    })
}

/// `CLUSTER SLOTS` of one node: (first slot, last slot, primary host, primary port).
async fn read_slots(
    info: &ConnectionInfo,
    context: &Context,
) -> Result<Vec<(u16, u16, String, u16)>, Refusal> {
    let client = super::client(info.clone(), context.ca.as_deref())
        .map_err(|e| Refusal::Fault(RedisFault::Other, e.to_string()))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(context.timeout))
        .set_response_timeout(Some(context.timeout));
    let mut connection = match tokio::time::timeout(
        context.timeout,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    {
        Err(_) => {
            return Err(Refusal::Fault(
                RedisFault::Timeout,
                "connect timed out".into(),
            ));
        }
        Ok(Err(error)) => return Err(node::fault_of(&error)),
        Ok(Ok(connection)) => connection,
    };
    let mut pipe = redis::pipe();
    pipe.cmd("CLUSTER").arg("SLOTS");
    let values = node::query(&mut connection, &pipe, context.timeout).await?;
    let Some(Value::Array(ranges)) = values.into_iter().next() else {
        return Err(Refusal::Fault(
            RedisFault::Other,
            "CLUSTER SLOTS gave no table (is cluster mode enabled?)".into(),
        ));
    };
    let mut out = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            continue;
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            continue;
        };
        let host = match primary.first() {
            Some(Value::BulkString(bytes)) if !bytes.is_empty() => {
                String::from_utf8_lossy(bytes).into_owned()
            }
            // An empty host means "the address you reached me on".
            _ => match info.addr() {
                ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.clone(),
                _ => continue,
            },
        };
        let Some(Value::Int(port)) = primary.get(1) else {
            continue;
        };
        out.push((*start as u16, *end as u16, host, *port as u16));
    }
    if out.is_empty() {
        return Err(Refusal::Fault(
            RedisFault::Other,
            "CLUSTER SLOTS is empty".into(),
        ));
    }
    Ok(out)
}

/// `host:port` → connection info with the seed's settings (credentials, database).
trait ParseAddr {
    fn parse_addr(&self, seed: &ConnectionInfo) -> Option<ConnectionInfo>;
}

impl ParseAddr for String {
    fn parse_addr(&self, seed: &ConnectionInfo) -> Option<ConnectionInfo> {
        let (host, port) = self.rsplit_once(':')?;
        Some(super::at_address(seed, host, port.parse().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `redis-cli CLUSTER KEYSLOT` (and the cluster spec's CRC16 check value).
        assert_eq!(
            crc16::State::<crc16::XMODEM>::calculate(b"123456789"),
            0x31C3
        );
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(
            slot(b"foo{}{bar}"),
            crc16::State::<crc16::XMODEM>::calculate(b"foo{}{bar}") % SLOTS as u16,
            "an empty tag hashes the whole key"
        );
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
    }

    #[test]
    fn each_node_gets_an_epoch_key_in_its_own_slots() {
        let mut owners = vec![None; SLOTS];
        for (slot, owner) in owners.iter_mut().enumerate() {
            *owner = Some((slot * 3 / SLOTS) as u16);
        }
        for node in 0..3u16 {
            let key = epoch_key_for("idgate:replay:", &owners, node).unwrap();
            assert_eq!(owners[slot(&key) as usize], Some(node));
        }
    }
}
