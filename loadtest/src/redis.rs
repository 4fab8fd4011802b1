//! `--replay redis`: the Redis server behind the spawned gateway's replay store, and what the
//! report reads from it.
//!
//! - [`RedisServer`]: a `redis-server` of this run's own, on a free port (never 6379), without
//!   persistence (`--save "" --appendonly no`) and with `--maxmemory-policy noeviction` (the
//!   gateway refuses any other policy); killed when the run ends.
//! - [`fill`]: `--redis-fill N` writes N live keys exactly as the gateway does (key
//!   `idgate:replay:` + 16 raw bytes, value `1`, `SET … NX PXAT`) and measures Redis's
//!   `used_memory` per key (`INFO memory`), the figure `maxmemory` is sized from.
//! - [`Sample`] / [`phase`]: per phase, the gateway's own `idgate_redis_round_trip_seconds`
//!   histogram delta (pipelines, p50/p90/p99 interpolated within the buckets as Prometheus'
//!   `histogram_quantile` does), and from `INFO` the server's CPU time and `SET` calls over the
//!   same window: on a machine where Redis shares the cores with the gateway and the
//!   generator, its CPU is part of the cost of the backend.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::{RngExt, SeedableRng};
use serde::Serialize;

/// The gateway's default `replay.key_prefix`, which the spawned gateway keeps.
pub const KEY_PREFIX: &str = "idgate:replay:";

/// The histogram the gateway records each replay pipeline in.
const ROUND_TRIP: &str = "idgate_redis_round_trip_seconds";

/// A `redis-server` owned by this process (killed on drop).
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    /// `redis_version` from `INFO server`.
    pub version: String,
    child: Child,
    /// Its working directory and log (removed with it).
    dir: tempfile::TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 other than Redis's default (which a developer's own server
/// may hold, and which tests must never touch).
fn free_port() -> Result<u16> {
    for _ in 0..20 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if port != 6379 {
            return Ok(port);
        }
    }
    bail!("no free port found")
}

impl RedisServer {
    /// Starts `redis-server` (from `PATH`) without persistence and waits until it answers
    /// `PING`.
    pub fn start() -> Result<RedisServer> {
        RedisServer::start_with(&["--appendonly", "no"])
    }

    /// Starts `redis-server` with `persistence` (e.g. `--appendonly yes --appendfsync
    /// everysec` for `--feed`) instead of none.
    pub fn start_with(persistence: &[&str]) -> Result<RedisServer> {
        let dir = tempfile::Builder::new()
            .prefix("idgate-loadtest-redis-")
            .tempdir()?;
        let mut last_error = String::new();
        // Another process may take the port between the probe and the server's bind: retry.
        for _ in 0..5 {
            let port = free_port()?;
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(persistence)
                .args(["--maxmemory-policy", "noeviction"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(dir.path().join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot start redis-server ({e}); --replay redis and --feed need it (apt-get install redis-server)"
                    )
                })?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = child.try_wait()? {
                    last_error = format!(
                        "redis-server on port {port} exited ({status}): {}",
                        std::fs::read_to_string(dir.path().join("redis.log"))
                            .unwrap_or_default()
                            .lines()
                            .last()
                            .unwrap_or("")
                    );
                    break;
                }
                let probe = RedisServer::at(port).and_then(|mut c| {
                    redis::cmd("PING")
                        .query::<String>(&mut c)
                        .map_err(anyhow::Error::from)
                });
                if probe.is_ok() {
                    let mut server = RedisServer {
                        port,
                        version: String::new(),
                        child,
                        dir,
                    };
                    server.version = server
                        .info("server")?
                        .get("redis_version")
                        .cloned()
                        .unwrap_or_default();
                    return Ok(server);
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = format!("redis-server on port {port} did not answer PING");
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        bail!("{last_error}")
    }

    fn at(port: u16) -> Result<redis::Connection> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        // Refused quickly while the server is still starting; no need for the client's retries.
        TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
        let client = redis::Client::open(format!("redis://{address}"))?;
        let connection = client.get_connection_with_timeout(Duration::from_secs(5))?;
        connection.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(connection)
    }

    /// The URL the gateway's `replay.redis_url` gets.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A new connection to the server.
    pub fn connection(&self) -> Result<redis::Connection> {
        RedisServer::at(self.port)
    }

    /// `INFO <sections>` as `field → value`.
    pub fn info(&self, sections: &str) -> Result<BTreeMap<String, String>> {
        let mut command = redis::cmd("INFO");
        for section in sections.split_whitespace() {
            command.arg(section);
        }
        let text: String = command.query(&mut self.connection()?)?;
        Ok(parse_info(&text))
    }

    /// Where its log is (kept until the run ends).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }
}

/// `field:value` lines of an `INFO` reply (sections and blank lines skipped).
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One `key=value,key=value` field of `INFO` (`cmdstat_set`, `db0`), as numbers.
fn subfields(value: &str) -> BTreeMap<&str, f64> {
    value
        .split(',')
        .filter_map(|p| p.split_once('='))
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect()
}

/// What `--redis-fill` found.
#[derive(Clone, Debug, Serialize)]
pub struct Fill {
    pub keys: u64,
    /// `used_memory` before and after the fill.
    pub used_memory_before: u64,
    pub used_memory_after: u64,
    /// `(after − before) / keys`.
    pub bytes_per_key: f64,
    /// `used_memory_rss` growth per key (what the process holds, allocator slack included).
    pub rss_bytes_per_key: f64,
    pub seconds: f64,
    /// The server's time per `SET` (`INFO commandstats`) over each 2^18 keys written: how its
    /// cost moves as the key count crosses a power of two (its hash tables double and are
    /// rehashed incrementally).
    pub steps: Vec<FillStep>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FillStep {
    /// Keys in the database at the end of the step.
    pub keys: u64,
    pub set_usec_per_call: f64,
}

/// `(calls, usec)` of `cmdstat_set` so far.
fn set_stats(server: &RedisServer) -> Result<(f64, f64)> {
    let info = server.info("commandstats")?;
    let set = info
        .get("cmdstat_set")
        .map(|v| subfields(v))
        .unwrap_or_default();
    Ok((
        set.get("calls").copied().unwrap_or(0.0),
        set.get("usec").copied().unwrap_or(0.0),
    ))
}

/// Writes `count` live keys in the gateway's format (prefix + 16 random bytes, value `1`,
/// `SET NX PXAT`, expiring `ttl` from now), pipelined, each of which must be answered `OK`;
/// returns Redis's memory growth per key from `INFO memory`.
pub fn fill(server: &RedisServer, count: u64, ttl: Duration, seed: u64) -> Result<Fill> {
    // A divisor of the step below, so that steps end on its multiples.
    const PIPELINE: u64 = 8192;
    let memory = |server: &RedisServer| -> Result<(u64, u64, u64)> {
        let info = server.info("memory keyspace")?;
        let number = |field: &str| -> Result<u64> {
            info.get(field)
                .with_context(|| format!("INFO memory has no {field}"))?
                .parse()
                .with_context(|| format!("INFO {field}"))
        };
        let keys = info
            .get("db0")
            .map_or(0.0, |db| subfields(db).get("keys").copied().unwrap_or(0.0));
        Ok((
            number("used_memory")?,
            number("used_memory_rss")?,
            keys as u64,
        ))
    };
    let mut connection = server.connection()?;
    let (before, rss_before, keys_before) = memory(server)?;
    let started = Instant::now();
    let expiry_ms = (idgate::clock::unix_now() as u128 * 1000 + ttl.as_millis()) as u64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x6669_6c6c);
    const STEP: u64 = 1 << 18;
    let mut steps = Vec::new();
    let mut last = set_stats(server)?;
    let mut written = 0;
    while written < count {
        let n = PIPELINE.min(count - written);
        let mut pipe = redis::pipe();
        for _ in 0..n {
            let mut key = Vec::with_capacity(KEY_PREFIX.len() + 16);
            key.extend_from_slice(KEY_PREFIX.as_bytes());
            key.extend_from_slice(&rng.random::<u128>().to_le_bytes());
            pipe.cmd("SET")
                .arg(key)
                .arg(1)
                .arg("NX")
                .arg("PXAT")
                .arg(expiry_ms);
        }
        let replies: Vec<redis::Value> = pipe.query(&mut connection)?;
        let fresh = replies
            .iter()
            .filter(|v| matches!(v, redis::Value::Okay))
            .count() as u64;
        anyhow::ensure!(
            fresh == n,
            "filling Redis: {} of {n} SET NX were not answered OK",
            n - fresh
        );
        written += n;
        if (keys_before + written) % STEP < n || written == count {
            let now = set_stats(server)?;
            let calls = (now.0 - last.0).max(1.0);
            steps.push(FillStep {
                keys: keys_before + written,
                set_usec_per_call: (now.1 - last.1) / calls,
            });
            last = now;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (after, rss_after, keys_after) = memory(server)?;
    anyhow::ensure!(
        keys_after - keys_before == count,
        "Redis holds {} new keys, {count} written",
        keys_after - keys_before
    );
    Ok(Fill {
        keys: count,
        used_memory_before: before,
        used_memory_after: after,
        bytes_per_key: after.saturating_sub(before) as f64 / count as f64,
        rss_bytes_per_key: rss_after.saturating_sub(rss_before) as f64 / count as f64,
        seconds,
        steps,
    })
}

/// What the report reads from the server at each end of a phase.
#[derive(Clone, Debug)]
pub struct Sample {
    at: Instant,
    cpu_s: f64,
    set_calls: f64,
    set_usec: f64,
    keys: u64,
    used_memory: u64,
}

impl Sample {
    pub fn take(server: &RedisServer) -> Option<Sample> {
        let info = server.info("cpu commandstats keyspace memory").ok()?;
        let number = |field: &str| info.get(field).and_then(|v| v.parse::<f64>().ok());
        let set = info.get("cmdstat_set").map(|v| subfields(v));
        let keys = info
            .get("db0")
            .and_then(|db| subfields(db).get("keys").copied())
            .unwrap_or(0.0);
        Some(Sample {
            at: Instant::now(),
            cpu_s: number("used_cpu_user")? + number("used_cpu_sys")?,
            set_calls: set
                .as_ref()
                .and_then(|s| s.get("calls").copied())
                .unwrap_or(0.0),
            set_usec: set
                .as_ref()
                .and_then(|s| s.get("usec").copied())
                .unwrap_or(0.0),
            keys: keys as u64,
            used_memory: number("used_memory")? as u64,
        })
    }
}

/// The Redis side of one phase, in the JSON report (`runs[].redis`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Phase {
    /// Replay pipelines the gateway sent (one per engine batch), from its histogram.
    pub round_trips: u64,
    /// `SET` commands the server ran per pipeline.
    pub sets_per_round_trip: f64,
    /// Round trip as the gateway measured it (`idgate_redis_round_trip_seconds`), in µs;
    /// quantiles are interpolated within the histogram's buckets.
    pub round_trip_us: RoundTrip,
    /// Server CPU (user + system) over the phase, in core-seconds per second.
    pub server_cpu_cores: f64,
    /// Server time per `SET` (`INFO commandstats`), µs.
    pub set_usec_per_call: f64,
    /// Keys and `used_memory` at the end of the phase.
    pub keys: u64,
    pub used_memory: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RoundTrip {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
    /// The bucket (lower, upper bound, µs) p99 falls in: the resolution of the figure.
    pub p99_bucket: (f64, f64),
}

/// The phase's Redis figures from the gateway's `/metrics` (`before`, `after`) and the server's
/// `INFO` at both ends.
pub fn phase(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    start: &Sample,
    end: &Sample,
) -> Phase {
    let buckets = bucket_deltas(before, after);
    let delta = |key: &str| {
        after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
    };
    let count = delta(&format!("{ROUND_TRIP}_count"));
    let sum = delta(&format!("{ROUND_TRIP}_sum"));
    let seconds = end.at.duration_since(start.at).as_secs_f64().max(1e-9);
    let sets = end.set_calls - start.set_calls;
    Phase {
        round_trips: count.max(0.0) as u64,
        sets_per_round_trip: if count > 0.0 { sets / count } else { 0.0 },
        round_trip_us: RoundTrip {
            p50: quantile(&buckets, 0.5) * 1e6,
            p90: quantile(&buckets, 0.9) * 1e6,
            p99: quantile(&buckets, 0.99) * 1e6,
            mean: if count > 0.0 { sum / count * 1e6 } else { 0.0 },
            p99_bucket: {
                let (lo, hi) = bucket_of(&buckets, 0.99);
                (lo * 1e6, hi * 1e6)
            },
        },
        server_cpu_cores: (end.cpu_s - start.cpu_s) / seconds,
        set_usec_per_call: if sets > 0.0 {
            (end.set_usec - start.set_usec) / sets
        } else {
            0.0
        },
        keys: end.keys,
        used_memory: end.used_memory,
    }
}

/// `(upper bound in seconds, cumulative count)` of the round-trip histogram's change from
/// `before` to `after`, by bound (`+Inf` last).
fn bucket_deltas(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<(f64, f64)> {
    let prefix = format!("{ROUND_TRIP}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = after
        .iter()
        .filter_map(|(key, value)| {
            let labels = key.strip_prefix(&prefix)?;
            let le = labels
                .split(',')
                .find_map(|l| l.trim_end_matches('}').strip_prefix("le=\""))?
                .trim_end_matches('"');
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, value - before.get(key).copied().unwrap_or(0.0)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The bucket (lower, upper bound) holding quantile `q`; the upper bound is the largest
/// finite one when `q` falls in `+Inf`.
fn bucket_of(buckets: &[(f64, f64)], q: f64) -> (f64, f64) {
    let Some(&(_, total)) = buckets.last() else {
        return (0.0, 0.0);
    };
    if total <= 0.0 {
        return (0.0, 0.0);
    }
    let rank = q * total;
    let mut lower = 0.0;
    let mut largest_finite = 0.0;
    for &(bound, cumulative) in buckets {
        if bound.is_finite() {
            largest_finite = bound;
        }
        if cumulative >= rank {
            return (lower, if bound.is_finite() { bound } else { lower });
        }
        lower = bound;
    }
    (largest_finite, largest_finite)
}

/// Quantile `q` of a cumulative histogram, in the histogram's unit: linear within the bucket
/// that holds it (from 0 for the first bucket), its lower bound if that is `+Inf` (Prometheus'
/// `histogram_quantile`).
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return 0.0;
    };
    if total <= 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(bound, cumulative) in buckets {
        if cumulative >= rank {
            if !bound.is_finite() {
                return lower;
            }
            let inside = cumulative - below;
            return if inside > 0.0 {
                lower + (bound - lower) * (rank - below) / inside
            } else {
                bound
            };
        }
        (lower, below) = (bound, cumulative);
    }
    lower
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(counts: &[(&str, u64)], sum: f64) -> BTreeMap<String, f64> {
        let mut text = format!("# TYPE {ROUND_TRIP} histogram\n");
        let mut cumulative = 0;
        for (le, n) in counts {
            cumulative += n;
            text.push_str(&format!(
                "{ROUND_TRIP}_bucket{{le=\"{le}\"}} {cumulative}\n"
            ));
        }
        text.push_str(&format!(
            "{ROUND_TRIP}_sum {sum}\n{ROUND_TRIP}_count {cumulative}\n"
        ));
        testkit::metrics::parse(&text)
    }

    fn sample(at: Instant, cpu_s: f64, set_calls: f64, set_usec: f64) -> Sample {
        Sample {
            at,
            cpu_s,
            set_calls,
            set_usec,
            keys: 7,
            used_memory: 1000,
        }
    }

    #[test]
    fn quantiles_are_interpolated_within_the_phase_s_buckets() {
        let before = page(
            &[("0.0001", 50), ("0.0005", 0), ("0.001", 0), ("+Inf", 0)],
            0.005,
        );
        // The phase: 100 pipelines, 60 in (0.1, 0.5] ms, 39 in (0.5, 1] ms, 1 above 1 ms.
        let after = page(
            &[("0.0001", 50), ("0.0005", 60), ("0.001", 39), ("+Inf", 1)],
            0.005 + 0.05,
        );
        let now = Instant::now();
        let phase = phase(
            &before,
            &after,
            &sample(now, 1.0, 1000.0, 500.0),
            &sample(now + Duration::from_secs(2), 2.0, 26_600.0, 13_300.0),
        );
        assert_eq!(phase.round_trips, 100);
        assert!((phase.sets_per_round_trip - 256.0).abs() < 1e-9);
        let rt = &phase.round_trip_us;
        // p50: rank 50 of 60 in (100, 500] µs → 100 + 400 * 50/60.
        assert!(
            (rt.p50 - (100.0 + 400.0 * 50.0 / 60.0)).abs() < 1e-6,
            "{rt:?}"
        );
        // p90: rank 90, 30 into the 39 of (500, 1000].
        assert!(
            (rt.p90 - (500.0 + 500.0 * 30.0 / 39.0)).abs() < 1e-6,
            "{rt:?}"
        );
        // p99: rank 99 is the 39th of (500, 1000] → its upper bound.
        assert!((rt.p99 - 1000.0).abs() < 1e-6, "{rt:?}");
        assert_eq!(rt.p99_bucket, (500.0, 1000.0));
        assert!((rt.mean - 500.0).abs() < 1e-6, "{rt:?}");
        assert!((phase.server_cpu_cores - 0.5).abs() < 1e-3);
        assert!((phase.set_usec_per_call - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_quantile_in_the_overflow_bucket_is_the_largest_bound_and_no_pipelines_is_zero() {
        let before = page(&[("0.001", 0), ("+Inf", 0)], 0.0);
        let after = page(&[("0.001", 1), ("+Inf", 9)], 1.0);
        let buckets = bucket_deltas(&before, &after);
        assert_eq!(quantile(&buckets, 0.99), 0.001);
        assert_eq!(bucket_of(&buckets, 0.99), (0.001, 0.001));
        assert_eq!(quantile(&bucket_deltas(&before, &before), 0.99), 0.0);
    }

    #[test]
    fn info_fields_and_subfields_are_read() {
        let info = parse_info(
            "# Memory\r\nused_memory:1234\r\n\r\n# Commandstats\r\ncmdstat_set:calls=10,usec=25,usec_per_call=2.50,rejected_calls=0\r\n# Keyspace\r\ndb0:keys=3,expires=2,avg_ttl=100\r\n",
        );
        assert_eq!(info["used_memory"], "1234");
        assert_eq!(subfields(&info["cmdstat_set"])["usec"], 25.0);
        assert_eq!(subfields(&info["db0"])["keys"], 3.0);
    }
}
