//! The gateway under load: spawned for the run (`--spawn`, with its at-rest checks: idle
//! memory, and with `--revocation-list` the start-up time and memory per entry; with
//! `--replay redis` on a redis-server of its own, filled with `--redis-fill` keys) or an
//! existing one (`--target`); and posting a corpus's revocations to it before a phase.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use idgate::revocation::Entry;

use crate::corpus::Issuers;
use crate::redis::{self, RedisServer};
use crate::report::{Check, RedisInfo};
use crate::{Args, ReplayBackend, SETUP, spawn};

/// Where the load goes.
pub struct Target {
    pub public: SocketAddr,
    pub operator: Option<SocketAddr>,
    pub api_key: String,
    pub admin_token: Option<String>,
    /// The spawned gateway's replay store (`None`: an external gateway's, unknown).
    pub backend: Option<&'static str>,
    /// Dropped (killed) before `redis`, which it uses.
    pub spawned: Option<spawn::Spawned>,
    /// `--replay redis`: the server behind the spawned gateway's replay store.
    pub redis: Option<RedisServer>,
    /// What `--redis-fill` measured.
    pub redis_fill: Option<redis::Fill>,
}

impl Target {
    /// The report's `gateway.redis`.
    pub fn redis_info(&self) -> Option<RedisInfo> {
        self.redis.as_ref().map(|server| RedisInfo {
            version: server.version.clone(),
            url: server.url(),
            fill: self.redis_fill.clone(),
        })
    }
}

impl Target {
    /// The gateway the flags name, and the checks made on it before any load.
    pub fn connect(
        args: &Args,
        backend: ReplayBackend,
        verify_threads: usize,
        issuers: &Issuers,
    ) -> Result<(Target, Vec<Check>)> {
        if !args.spawn {
            let public = args
                .target
                .context("give --spawn, or --target ADDR with --api-key")?;
            let api_key = args
                .api_key
                .clone()
                .context("--api-key is required with --target")?;
            eprintln!(
                "note: the target gateway must trust these issuers (print them with --seed {} via the JSON report's jwks)",
                args.seed
            );
            let target = Target {
                public,
                operator: args.operator,
                api_key,
                admin_token: args.admin_token.clone(),
                backend: None,
                spawned: None,
                redis: None,
                redis_fill: None,
            };
            return Ok((target, Vec::new()));
        }
        let mut checks = Vec::new();
        let redis = match backend {
            ReplayBackend::Memory => None,
            ReplayBackend::Redis => {
                let server = RedisServer::start()?;
                eprintln!(
                    "replay store: redis-server {} at {} (log {})",
                    server.version,
                    server.url(),
                    server.log_path().display()
                );
                Some(server)
            }
        };
        let options = spawn::GatewayOptions {
            verify_threads,
            io_threads: args.io_threads,
            max_presentation_age_s: 900,
            revocation_list: 0,
            redis_url: redis.as_ref().map(RedisServer::url),
            feed_url: None,
            feed_stream: None,
        };
        let spawned = if args.revocation_list > 0 {
            spawn_with_revocation_list(issuers, options, args.revocation_list, &mut checks)?
        } else {
            spawn::spawn(&issuers.jwks(), &options)?
        };
        // The gateway at rest, before any load.
        std::thread::sleep(Duration::from_millis(500));
        if let Some(rss) = spawned.rss_bytes().filter(|_| args.revocation_list == 0) {
            let mib = rss as f64 / (1 << 20) as f64;
            checks.push(Check {
                name: if args.replay.len() > 1 {
                    format!("idle gateway RSS < 30 MiB ({})", backend.name())
                } else {
                    "idle gateway RSS < 30 MiB".into()
                },
                passed: mib < 30.0,
                detail: format!("{mib:.1} MiB"),
            });
        }
        let redis_fill = match &redis {
            Some(server) if args.redis_fill > 0 => {
                let fill = fill_redis(server, args.redis_fill, args.seed)?;
                checks.push(Check {
                    name: format!(
                        "redis memory per live key at {} keys (idgate's key format)",
                        fill.keys
                    ),
                    passed: true,
                    detail: format!(
                        "{:.1} B of used_memory ({:.1} B of RSS); {} keys written in {:.1} s",
                        fill.bytes_per_key, fill.rss_bytes_per_key, fill.keys, fill.seconds
                    ),
                });
                Some(fill)
            }
            _ => None,
        };
        let target = Target {
            public: spawned.public,
            operator: Some(spawned.operator),
            api_key: spawned.api_key.clone(),
            admin_token: Some(spawned.admin_token.clone()),
            backend: Some(backend.name()),
            spawned: Some(spawned),
            redis,
            redis_fill,
        };
        Ok((target, checks))
    }
}

/// `--redis-fill`: `keys` live keys as the gateway writes them, expiring when a presentation
/// minted now would (the spawned gateway's 900 s age plus 5 s skew).
fn fill_redis(server: &RedisServer, keys: u64, seed: u64) -> Result<redis::Fill> {
    eprintln!("filling Redis with {keys} live keys in idgate's format");
    let fill = redis::fill(server, keys, Duration::from_secs(905), seed)?;
    eprintln!(
        "redis: {:.1} B of used_memory per live key ({} → {} bytes)",
        fill.bytes_per_key, fill.used_memory_before, fill.used_memory_after
    );
    let steps: Vec<String> = fill
        .steps
        .iter()
        .map(|s| format!("{}k {:.2}", s.keys / 1000, s.set_usec_per_call))
        .collect();
    eprintln!(
        "redis: server µs per SET while filling, by keys reached: {}",
        steps.join(", ")
    );
    Ok(fill)
}

/// Spawns the gateway on a revocation list of `entries` subject entries, checking its memory
/// per entry (against the same gateway without the list, spawned first) and its time to ready.
fn spawn_with_revocation_list(
    issuers: &Issuers,
    options: spawn::GatewayOptions,
    entries: usize,
    checks: &mut Vec<Check>,
) -> Result<spawn::Spawned> {
    // The same gateway without the list first: the baseline its memory is measured from.
    let empty = spawn::spawn(&issuers.jwks(), &options)?;
    std::thread::sleep(Duration::from_millis(500));
    let baseline = empty.rss_bytes().unwrap_or(0);
    drop(empty);
    let spawned = spawn::spawn(
        &issuers.jwks(),
        &spawn::GatewayOptions {
            revocation_list: entries,
            ..options
        },
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let n = entries as f64;
    let rss = spawned.rss_bytes().unwrap_or(0);
    let per_entry = rss.saturating_sub(baseline) as f64 / n;
    checks.push(Check {
        name: format!("gateway memory per revocation entry at {n:.0} entries <= 48 B"),
        passed: per_entry <= 48.0,
        detail: format!(
            "{per_entry:.1} B (RSS {:.0} MiB, empty gateway {:.1} MiB)",
            rss as f64 / (1 << 20) as f64,
            baseline as f64 / (1 << 20) as f64
        ),
    });
    let ready = spawned.ready_after.as_secs_f64();
    checks.push(Check {
        name: format!("start with {n:.0} revocation entries ready <= 10 s"),
        passed: ready <= 10.0,
        detail: format!("{ready:.2} s from process start to /readyz 200"),
    });
    Ok(spawned)
}

/// Posts `entries` to the target's admin API (10,000 per request), so that revoked items in
/// the corpus verify as revoked. Without an operator address and admin token it says so and
/// posts nothing.
pub fn post_revocations(target: &Target, entries: &[Entry]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let (Some(operator), Some(token)) = (target.operator, target.admin_token.as_deref()) else {
        eprintln!(
            "note: {} revocations not posted (no --operator/--admin-token); revoked items will verify as valid",
            entries.len()
        );
        return Ok(());
    };
    for chunk in entries.chunks(10_000) {
        let body: String = chunk
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default() + "\n")
            .collect();
        let auth = format!("Bearer {token}");
        let reply = SETUP
            .request(
                operator,
                "POST",
                "/admin/v1/revocations",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/jsonl"),
                ],
                body.as_bytes(),
            )
            .ok();
        anyhow::ensure!(
            reply.as_ref().map(|r| r.status) == Some(200),
            "posting revocations failed: {:?}",
            reply.map(|r| r.text())
        );
    }
    Ok(())
}
