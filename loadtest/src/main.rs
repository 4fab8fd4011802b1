//! `loadtest`: idgate's load generator and benchmark suite.
//!
//! `cargo run --release -p loadtest -- --spawn` starts a gateway and runs the whole suite: for
//! each scenario, the engine's in-process ceiling on the same corpus, then the closed-loop
//! maximum, then open-loop runs at 50% and 90% of it; a terminal summary, a JSON report and an
//! HTML report. See loadtest/README.md for the options, scenarios and the report schema.
//!
//! Exit codes: 0 ok; 1 error; 2 bad arguments; 3 an SLO was missed; 4 the generator could not
//! keep its schedule (figures void); 5 the gateway's `/metrics` disagree with the generator.
#![forbid(unsafe_code)]
// A tool, not a request path: setup failures should stop loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod ceiling;
mod corpus;
mod http;
mod load;
mod report;
mod spawn;
mod wrk;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use idgate::clock::unix_now;
use idgate::revocation::Entry;
use idgate::verify::SignatureInput;
use serde_json::json;

use corpus::{Issuers, Mix};
use load::{Plan, Progress, Request};
use report::{Check, GatewayInfo, Machine, Report, RunReport};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator and benchmark suite for idgate.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, about)]
struct Args {
    /// Start a gateway for the run (release build, fresh data directory, free ports).
    #[arg(long)]
    spawn: bool,
    /// Public address of an already running gateway (instead of --spawn).
    #[arg(long, value_name = "ADDR")]
    target: Option<SocketAddr>,
    /// Operator address of that gateway (for /metrics and posting revocations).
    #[arg(long, value_name = "ADDR")]
    operator: Option<SocketAddr>,
    /// Tenant API key for --target (its tenant must accept the audience urn:idgate:loadtest).
    #[arg(long, env = "IDGATE_LOADTEST_API_KEY")]
    api_key: Option<String>,
    /// Admin token for --target (to post the corpus's revocations).
    #[arg(long, env = "IDGATE_LOADTEST_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Scenario (repeatable): verify:N, signatures:N, status:N, mix, bad-batch:N, replay-flood,
    /// oversized, revoke:N (durable admin writes, N entries per request). Default: the suite.
    #[arg(long = "scenario", value_name = "SCENARIO")]
    scenarios: Vec<String>,
    /// Connections (default: per scenario).
    #[arg(long)]
    connections: Option<usize>,
    /// Seconds measured per phase.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of warm-up before each measured phase (not counted).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Open loop at this many requests per second (only this phase runs).
    #[arg(long)]
    rate: Option<f64>,
    /// Shares of invalid presentations: bad_signature=0.01,expired=0.01,revoked=0.01,replayed=0.01
    #[arg(long, default_value = "")]
    invalid: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// JSON report path (default: target/loadtest-report.json).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// HTML report path (default: target/loadtest-report.html).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Fail (exit 3) when missed, e.g. p99=5ms,p999=20ms,min_rate=20000 (items/s); checked on
    /// the max or --rate phase of every scenario.
    #[arg(long)]
    slo: Option<String>,
    /// Skip the in-process ceiling.
    #[arg(long)]
    no_ceiling: bool,
    /// Only the closed-loop maximum (no 50%/90% open-loop phases).
    #[arg(long)]
    no_latency_phases: bool,
    /// With --spawn: SIGSTOP the gateway for this long in the middle of the first open-loop
    /// phase (the stall must show in p99.9/max).
    #[arg(long, value_name = "MS")]
    stall_ms: Option<u64>,
    /// Gateway verification threads with --spawn (0: one per core).
    #[arg(long, default_value_t = 0)]
    verify_threads: usize,
    /// Gateway I/O threads with --spawn (0: the gateway's default).
    #[arg(long, default_value_t = 0)]
    io_threads: usize,
    /// A few seconds of a few scenarios (CI).
    #[arg(long)]
    smoke: bool,
    /// After the closed-loop maximum of stateless scenarios (signatures:N, status:N) and of
    /// verify:N, run `wrk` with the same requests and connections and check that the two agree
    /// within 10% (verify:N: fresh presentations, each sent once; /metrics must count every
    /// one of them valid).
    #[arg(long)]
    wrk: bool,
    /// With --wrk: also run wrk with the same verify:N requests against the comparison service
    /// in DIR (`compare/node`: Node fastify + jose, SPEC §11; `npm ci` there first) and print
    /// both figures side by side.
    #[arg(long, value_name = "DIR", requires = "wrk")]
    compare_node: Option<PathBuf>,
    /// With --wrk: the same against the Go comparison service in DIR (`compare/go`: net/http +
    /// crypto/ed25519, SPEC §11; standard library only, built here with `go build`, which needs
    /// `apt-get install golang-go`).
    #[arg(long, value_name = "DIR", requires = "wrk")]
    compare_go: Option<PathBuf>,
    /// With --spawn: start the gateway on a revocation list of this many subject entries
    /// (written as a snapshot first); reports the start-up time to ready and the gateway's
    /// resident memory per entry.
    #[arg(long, value_name = "N", default_value_t = 0)]
    revocation_list: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Verify(usize),
    Signatures(usize),
    Status(usize),
    Mix,
    BadBatch(usize),
    ReplayFlood,
    Oversized,
    Revoke(usize),
}

impl Scenario {
    fn parse(text: &str) -> Result<Scenario> {
        let (name, size) = text
            .split_once(':')
            .map_or((text, None), |(n, s)| (n, Some(s)));
        let size = |default: usize| -> Result<usize> {
            Ok(size.map(str::parse).transpose()?.unwrap_or(default).max(1))
        };
        Ok(match name {
            "verify" => Scenario::Verify(size(256)?),
            "signatures" => Scenario::Signatures(size(256)?),
            "status" => Scenario::Status(size(10_000)?),
            "mix" => Scenario::Mix,
            "bad-batch" => Scenario::BadBatch(size(256)?),
            "replay-flood" => Scenario::ReplayFlood,
            "oversized" => Scenario::Oversized,
            "revoke" => Scenario::Revoke(size(1000)?),
            other => bail!("unknown scenario {other:?}"),
        })
    }

    fn name(self) -> String {
        match self {
            Scenario::Verify(n) => format!("verify:{n}"),
            Scenario::Signatures(n) => format!("signatures:{n}"),
            Scenario::Status(n) => format!("status:{n}"),
            Scenario::Mix => "mix".into(),
            Scenario::BadBatch(n) => format!("bad-batch:{n}"),
            Scenario::ReplayFlood => "replay-flood".into(),
            Scenario::Oversized => "oversized".into(),
            Scenario::Revoke(n) => format!("revoke:{n}"),
        }
    }

    fn connections(self) -> usize {
        match self {
            Scenario::Verify(1) | Scenario::ReplayFlood => 64,
            Scenario::Verify(n) | Scenario::BadBatch(n) if n < 64 => 32,
            Scenario::Status(_) => 4,
            Scenario::Revoke(_) => 16,
            Scenario::Mix => 32,
            _ => 8,
        }
    }

    /// Signatures per item (for the signatures/s column).
    fn signatures_per_item(self) -> Option<f64> {
        match self {
            Scenario::Verify(_) | Scenario::BadBatch(_) | Scenario::ReplayFlood => Some(2.0),
            Scenario::Signatures(_) => Some(1.0),
            _ => None,
        }
    }

    /// Open-loop phases make sense where the work per request is what it claims.
    fn latency_phases(self) -> bool {
        matches!(
            self,
            Scenario::Verify(_) | Scenario::Signatures(_) | Scenario::Status(_) | Scenario::Mix
        )
    }
}

/// The suite run when no scenario is named.
const SUITE: [&str; 9] = [
    "verify:256",
    "verify:1",
    "signatures:256",
    "status:10000",
    "mix",
    "bad-batch:256",
    "replay-flood",
    "oversized",
    "revoke:1000",
];
const SMOKE: [&str; 2] = ["verify:64", "status:1000"];

/// The admin route the `revoke` scenario posts to (on the operator port).
const ADMIN_REVOCATIONS: &str = "/admin/v1/revocations";

/// The `route` label of a path in `idgate_requests_total`.
fn route_label(path: &str) -> String {
    if path == ADMIN_REVOCATIONS {
        format!("POST {path}")
    } else {
        path.to_string()
    }
}

/// Where the load goes.
struct Target {
    public: SocketAddr,
    operator: Option<SocketAddr>,
    api_key: String,
    admin_token: Option<String>,
    spawned: Option<spawn::Spawned>,
}

/// A `/v1/verify` request carrying `items`.
fn verify_request(items: &[String]) -> Request {
    Request {
        path: "/v1/verify",
        body: Bytes::from(json!({ "presentations": items }).to_string()),
        items: items.len() as u32,
    }
}

/// Requests (and what must be set up for them) for about `items` items.
struct Built {
    requests: Vec<Request>,
    revocations: Vec<Entry>,
}

fn build(
    scenario: Scenario,
    items: usize,
    issuers: &Issuers,
    mix: &Mix,
    seed: u64,
    now: i64,
) -> Built {
    match scenario {
        Scenario::Verify(n) => {
            let corpus = corpus::presentations(issuers, items.max(n), mix, seed, now);
            let requests = corpus.items.chunks(n).map(verify_request).collect();
            Built {
                requests,
                revocations: corpus.revocations,
            }
        }
        Scenario::BadBatch(n) => {
            // Exactly one broken issuer signature in every request: each engine batch falls
            // back to verifying its members one by one.
            let corpus = corpus::presentations(issuers, items.max(n), mix, seed, now);
            let broken = corpus::presentations(
                issuers,
                corpus.items.len() / n + 1,
                &Mix {
                    bad_signature: 1.0,
                    ..Mix::default()
                },
                seed ^ 0xbad,
                now,
            );
            let requests = corpus
                .items
                .chunks(n)
                .zip(broken.items.iter())
                .map(|(chunk, bad)| {
                    let mut chunk = chunk.to_vec();
                    let middle = chunk.len() / 2;
                    chunk[middle] = bad.clone();
                    verify_request(&chunk)
                })
                .collect();
            Built {
                requests,
                revocations: corpus.revocations,
            }
        }
        Scenario::ReplayFlood => {
            // One presentation shown over and over: the replay check's own cost.
            let corpus = corpus::presentations(issuers, 1, &Mix::default(), seed, now);
            Built {
                requests: vec![verify_request(&corpus.items)],
                revocations: Vec::new(),
            }
        }
        Scenario::Signatures(n) => {
            let items = corpus::signature_items(items.max(n), mix.bad_signature, seed);
            let requests = items
                .chunks(n)
                .map(|chunk| Request {
                    path: "/v1/signatures/verify",
                    body: Bytes::from(json!({ "items": chunk }).to_string()),
                    items: chunk.len() as u32,
                })
                .collect();
            Built {
                requests,
                revocations: Vec::new(),
            }
        }
        Scenario::Status(n) => {
            let ids = corpus::status_ids(items.max(n), 0.01, seed, now);
            let requests = ids
                .ids
                .chunks(n)
                .map(|chunk| Request {
                    path: "/v1/status",
                    body: Bytes::from(json!({ "subjects": chunk }).to_string()),
                    items: chunk.len() as u32,
                })
                .collect();
            Built {
                requests,
                revocations: ids.revocations,
            }
        }
        Scenario::Revoke(n) => {
            let requests = (0..items.max(n).div_ceil(n))
                .map(|r| {
                    let body: String = (0..n)
                        .map(|i| {
                            let entry = Entry {
                                kind: if i % 4 == 0 {
                                    idgate::revocation::Kind::Subject
                                } else {
                                    idgate::revocation::Kind::Credential
                                },
                                id: format!("lt{seed}-q{r}-{i}"),
                                status: idgate::revocation::Status::Revoked,
                                reason: Some(idgate::revocation::Reason::Lost),
                                before: (i % 4 == 0).then_some(now),
                                at: now,
                            };
                            serde_json::to_string(&entry).unwrap_or_default() + "\n"
                        })
                        .collect();
                    Request {
                        path: ADMIN_REVOCATIONS,
                        body: Bytes::from(body),
                        items: n as u32,
                    }
                })
                .collect();
            Built {
                requests,
                revocations: Vec::new(),
            }
        }
        Scenario::Mix => {
            // 70% single presentations (scanners), 20% batches of 64 (back offices), 10% status
            // queries of 1,000 IDs (a telecom's sweep), interleaved.
            let singles = build(Scenario::Verify(1), items * 7 / 10, issuers, mix, seed, now);
            let batches = build(
                Scenario::Verify(64),
                items * 2 / 10,
                issuers,
                mix,
                seed ^ 0x64,
                now,
            );
            let status = build(
                Scenario::Status(1000),
                items / 10,
                issuers,
                mix,
                seed ^ 0x5a,
                now,
            );
            let mut requests = Vec::new();
            let (mut a, mut b, mut c) = (
                singles.requests.into_iter(),
                batches.requests.into_iter(),
                status.requests.into_iter(),
            );
            loop {
                let before = requests.len();
                for _ in 0..70 {
                    requests.extend(a.next());
                }
                requests.extend(b.next());
                if requests.len() % 10 == 0 {
                    requests.extend(c.next());
                }
                if requests.len() == before {
                    break;
                }
            }
            let mut revocations = singles.revocations;
            revocations.extend(batches.revocations);
            revocations.extend(status.revocations);
            Built {
                requests,
                revocations,
            }
        }
        Scenario::Oversized => {
            // One item more than the gateway's default max_batch_items: 413 without any work.
            let tiny: Vec<&str> = vec!["x"; 10_001];
            Built {
                requests: vec![Request {
                    path: "/v1/verify",
                    body: Bytes::from(json!({ "presentations": tiny }).to_string()),
                    items: 0,
                }],
                revocations: Vec::new(),
            }
        }
    }
}

/// The in-process ceiling for a scenario, in items per second.
fn ceiling(
    scenario: Scenario,
    issuers: &Issuers,
    threads: usize,
    connections: usize,
    seed: u64,
    now: i64,
) -> Result<Option<(f64, usize)>> {
    Ok(match scenario {
        Scenario::Verify(n) | Scenario::BadBatch(n) => {
            let mut corpus =
                corpus::presentations(issuers, 8192.max(n), &Mix::default(), seed ^ 0xce11, now);
            if let Scenario::BadBatch(_) = scenario {
                // The same shape as the load: one broken issuer signature in every batch.
                let broken = corpus::presentations(
                    issuers,
                    corpus.items.len() / n + 1,
                    &Mix {
                        bad_signature: 1.0,
                        ..Mix::default()
                    },
                    seed ^ 0xbad,
                    now,
                );
                for (batch, bad) in corpus.items.chunks_mut(n).zip(broken.items) {
                    let middle = batch.len() / 2;
                    batch[middle] = bad;
                }
            }
            // Single presentations are verified in batches of concurrent requests (coalescing).
            let batch = if n == 1 { connections } else { n };
            Some((
                ceiling::presentations(&issuers.jwks(), &corpus.items, batch, threads, now)?,
                batch,
            ))
        }
        Scenario::Signatures(n) => {
            let items = corpus::signature_items(16_384.max(n), 0.0, seed ^ 0xce11);
            let inputs: Vec<SignatureInput> = items
                .iter()
                .map(|v| SignatureInput {
                    public_key: idgate::b64::decode(v["public_key"].as_str().unwrap_or(""))
                        .unwrap_or_default(),
                    message: idgate::b64::decode(v["message"].as_str().unwrap_or(""))
                        .unwrap_or_default(),
                    signature: idgate::b64::decode(v["signature"].as_str().unwrap_or(""))
                        .unwrap_or_default(),
                })
                .collect();
            Some((ceiling::signatures(&inputs, n, threads)?, n))
        }
        Scenario::Status(n) => {
            let ids = corpus::status_ids(100_000.max(n), 0.01, seed ^ 0xce11, now);
            Some((ceiling::status(&ids.ids, &ids.revocations, threads)?, n))
        }
        _ => None,
    })
}

fn post_revocations(target: &Target, entries: &[Entry]) -> Result<()> {
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
        let reply = http::request(
            operator,
            "POST",
            "/admin/v1/revocations",
            Some(token),
            Some("application/jsonl"),
            body.as_bytes(),
        );
        anyhow::ensure!(
            reply.as_ref().map(|r| r.0) == Some(200),
            "posting revocations failed: {:?}",
            reply.map(|r| String::from_utf8_lossy(&r.1).into_owned())
        );
    }
    Ok(())
}

/// `name{labels}` → value, from a Prometheus text page.
fn scrape(operator: SocketAddr) -> Option<BTreeMap<String, f64>> {
    let (status, body) = http::get(operator, "/metrics", None)?;
    (status == 200).then(|| {
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                l.rsplit_once(' ')
                    .and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            })
            .collect()
    })
}

/// Compares the gateway's counter deltas with the generator's own counts.
fn metrics_check(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    stats: &load::Stats,
    paths: &[&str],
) -> report::MetricsCheck {
    let delta = |key: &str| {
        after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
    };
    let mut mismatches = Vec::new();
    for ((path, status), count) in &stats.all_statuses {
        let key = format!(
            "idgate_requests_total{{route=\"{}\",code=\"{status}\"}}",
            route_label(path)
        );
        let server = delta(&key);
        if (server - *count as f64).abs() > 0.5 {
            mismatches.push(format!("{key}: gateway {server}, generator {count}"));
        }
    }
    // Requests the gateway answered that the generator never saw answered (e.g. timeouts).
    for path in paths {
        let generator: u64 = stats
            .all_statuses
            .iter()
            .filter(|((p, _), _)| p == path)
            .map(|(_, n)| n)
            .sum();
        let prefix = format!("idgate_requests_total{{route=\"{}\",", route_label(path));
        let server: f64 = after
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .map(|k| delta(k))
            .sum();
        if (server - generator as f64).abs() > 0.5 {
            mismatches.push(format!(
                "{path}: gateway answered {server}, generator received {generator}"
            ));
        }
    }
    for (outcome, count) in &stats.all_outcomes {
        let server: f64 = after
            .keys()
            .filter(|k| {
                k.starts_with("idgate_verifications_total{")
                    && k.ends_with(&format!("outcome=\"{outcome}\"}}"))
            })
            .map(|k| delta(k))
            .sum();
        if (server - *count as f64).abs() > 0.5 {
            mismatches.push(format!(
                "verifications {outcome}: gateway {server}, generator {count}"
            ));
        }
    }
    report::MetricsCheck {
        compared: true,
        matched: mismatches.is_empty(),
        mismatches,
    }
}

struct Phase {
    name: String,
    rate: Option<f64>,
}

/// Runs one phase with a progress bar.
fn run_phase(
    runtime: &tokio::runtime::Runtime,
    target: &Target,
    plan: Plan,
    label: &str,
) -> load::Stats {
    let progress = Arc::new(Progress::default());
    let bar = indicatif::ProgressBar::new(plan.warmup.as_secs() + plan.duration.as_secs());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>22} [{bar:30}] {pos}/{len}s {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(label.to_string());
    let ticker = {
        let progress = Arc::clone(&progress);
        let bar = bar.clone();
        std::thread::spawn(move || {
            let (mut last_items, mut elapsed) = (0u64, 0u64);
            while !bar.is_finished() {
                std::thread::sleep(Duration::from_secs(1));
                elapsed += 1;
                let items = progress.items.load(Ordering::Relaxed);
                bar.set_position(elapsed);
                bar.set_message(format!(
                    "{} items/s, {} errors",
                    items - last_items,
                    progress.errors.load(Ordering::Relaxed)
                ));
                last_items = items;
            }
        })
    };
    let address = if plan.requests.first().map(|r| r.path) == Some(ADMIN_REVOCATIONS) {
        target.operator.unwrap_or(target.public)
    } else {
        target.public
    };
    let stats = runtime.block_on(load::run(address, plan, Arc::clone(&progress)));
    bar.finish_and_clear();
    let _ = ticker.join();
    stats
}

fn parse_slo(text: &str) -> Result<Vec<(String, f64)>> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (name, value) = part.split_once('=').context("SLO terms are name=value")?;
            let number = |suffix: &str, scale: f64| {
                value
                    .strip_suffix(suffix)
                    .and_then(|v| v.parse::<f64>().ok())
                    .map(|v| v * scale)
            };
            let micros = number("ms", 1e3)
                .or_else(|| number("us", 1.0))
                .or_else(|| number("s", 1e6));
            match name {
                "p50" | "p90" | "p99" | "p999" | "max" => Ok((
                    name.to_string(),
                    micros.context("latency SLOs need a unit: ms, us or s")?,
                )),
                "min_rate" => Ok((name.to_string(), value.parse()?)),
                other => bail!("unknown SLO term {other:?} (p50, p90, p99, p999, max, min_rate)"),
            }
        })
        .collect()
}

fn slo_misses(run: &RunReport, slo: &[(String, f64)]) -> Vec<String> {
    slo.iter()
        .filter_map(|(name, limit)| {
            let value = match name.as_str() {
                "p50" => run.latency_us.p50 as f64,
                "p90" => run.latency_us.p90 as f64,
                "p99" => run.latency_us.p99 as f64,
                "p999" => run.latency_us.p999 as f64,
                "max" => run.latency_us.max as f64,
                _ => {
                    return (run.items_per_s < *limit).then(|| {
                        format!(
                            "{} {}: {:.0} items/s < {limit}",
                            run.scenario, run.phase, run.items_per_s
                        )
                    });
                }
            };
            (value > *limit).then(|| {
                format!(
                    "{} {}: {name} {:.2} ms > {:.2} ms",
                    run.scenario,
                    run.phase,
                    value / 1e3,
                    limit / 1e3
                )
            })
        })
        .collect()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("loadtest: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut args: Args) -> Result<ExitCode> {
    if args.smoke {
        args.duration = args.duration.min(2);
        args.warmup = args.warmup.min(1);
        if args.scenarios.is_empty() {
            args.scenarios = SMOKE.iter().map(|s| s.to_string()).collect();
        }
        ceiling::set_measure(Duration::from_secs(1));
    }
    let scenarios: Vec<Scenario> = if args.scenarios.is_empty() {
        SUITE
            .iter()
            .map(|s| Scenario::parse(s))
            .collect::<Result<_>>()?
    } else {
        args.scenarios
            .iter()
            .map(|s| Scenario::parse(s))
            .collect::<Result<_>>()?
    };
    let mix = Mix::parse(&args.invalid)?;
    let slo = args.slo.as_deref().map(parse_slo).transpose()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let verify_threads = if args.verify_threads == 0 {
        cores
    } else {
        args.verify_threads
    };
    let issuers = Issuers::new(args.seed);
    let comparisons: Vec<(wrk::Kind, &std::path::Path)> = [
        (wrk::Kind::Node, args.compare_node.as_deref()),
        (wrk::Kind::Go, args.compare_go.as_deref()),
    ]
    .into_iter()
    .filter_map(|(kind, dir)| Some((kind, dir?)))
    .collect();
    let mut checks = Vec::new();

    let target = if args.spawn {
        let options = spawn::GatewayOptions {
            verify_threads,
            io_threads: args.io_threads,
            max_presentation_age_s: 900,
            revocation_list: 0,
        };
        let spawned = if args.revocation_list > 0 {
            // The same gateway without the list first: the baseline its memory is measured from.
            let empty = spawn::spawn(&issuers.jwks(), &options)?;
            std::thread::sleep(Duration::from_millis(500));
            let baseline = empty.rss_bytes().unwrap_or(0);
            drop(empty);
            let spawned = spawn::spawn(
                &issuers.jwks(),
                &spawn::GatewayOptions {
                    revocation_list: args.revocation_list,
                    ..options
                },
            )?;
            std::thread::sleep(Duration::from_millis(500));
            let n = args.revocation_list as f64;
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
            spawned
        } else {
            spawn::spawn(&issuers.jwks(), &options)?
        };
        // The gateway at rest, before any load.
        std::thread::sleep(Duration::from_millis(500));
        if let Some(rss) = spawned.rss_bytes().filter(|_| args.revocation_list == 0) {
            let mib = rss as f64 / (1 << 20) as f64;
            checks.push(Check {
                name: "idle gateway RSS < 30 MiB".into(),
                passed: mib < 30.0,
                detail: format!("{mib:.1} MiB"),
            });
        }
        Target {
            public: spawned.public,
            operator: Some(spawned.operator),
            api_key: spawned.api_key.clone(),
            admin_token: Some(spawned.admin_token.clone()),
            spawned: Some(spawned),
        }
    } else {
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
        Target {
            public,
            operator: args.operator,
            api_key,
            admin_token: args.admin_token.clone(),
            spawned: None,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.max(2))
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    let mut stalled = false;

    for scenario in scenarios {
        let connections = args.connections.unwrap_or_else(|| scenario.connections());
        let name = scenario.name();
        let now = unix_now();
        let ceiling = if args.no_ceiling {
            None
        } else {
            ceiling(
                scenario,
                &issuers,
                verify_threads,
                connections,
                args.seed,
                now,
            )?
        };
        if let Some((items_per_s, batch)) = ceiling {
            eprintln!(
                "{name}: engine ceiling {items_per_s:.0} items/s (batches of {batch}, {verify_threads} threads)"
            );
        }
        let seconds = (args.warmup + args.duration) as f64;
        let phases: Vec<Phase> = match args.rate {
            Some(rate) => vec![Phase {
                name: "rate".into(),
                rate: Some(rate),
            }],
            None => vec![Phase {
                name: "max".into(),
                rate: None,
            }],
        };
        let mut phases = std::collections::VecDeque::from(phases);
        let mut max_rps = None;
        let mut phase_index = 0u64;
        while let Some(phase) = phases.pop_front() {
            phase_index += 1;
            // Enough fresh items for the phase (no presentation shown twice unless meant to).
            let items = match (phase.rate, ceiling) {
                (Some(rate), _) => (rate * seconds * 1.1) as usize * scenario_items(scenario),
                (None, Some((items_per_s, _))) => (items_per_s * seconds * 1.3) as usize,
                (None, None) => 200_000,
            }
            .clamp(1000, 3_000_000);
            let seed = args.seed.wrapping_mul(1000).wrapping_add(phase_index) ^ hash(&name);
            let built = build(scenario, items, &issuers, &mix, seed, unix_now());
            post_revocations(&target, &built.revocations)?;
            let paths: Vec<&str> = {
                let mut p: Vec<&str> = built.requests.iter().map(|r| r.path).collect();
                p.sort();
                p.dedup();
                p
            };
            let requests = Arc::new(built.requests);
            let plan = Plan {
                requests: Arc::clone(&requests),
                connections,
                warmup: Duration::from_secs(args.warmup),
                duration: Duration::from_secs(args.duration),
                rate: phase.rate,
                bearer: if let Scenario::Revoke(_) = scenario {
                    target
                        .admin_token
                        .clone()
                        .context("revoke:N needs --admin-token or --spawn")?
                } else {
                    target.api_key.clone()
                },
                timeout: Duration::from_secs(30),
            };
            let before = target.operator.and_then(scrape);
            // The stall test: SIGSTOP the spawned gateway mid-way through an open-loop phase.
            let stall = match (args.stall_ms, &target.spawned, phase.rate) {
                (Some(ms), Some(spawned), Some(_)) if !stalled => {
                    stalled = true;
                    let pid = spawned.pid();
                    let at =
                        Duration::from_secs(args.warmup) + Duration::from_secs(args.duration) / 2;
                    Some(std::thread::spawn(move || {
                        std::thread::sleep(at);
                        let _ = std::process::Command::new("kill")
                            .args(["-STOP", &pid.to_string()])
                            .status();
                        std::thread::sleep(Duration::from_millis(ms));
                        let _ = std::process::Command::new("kill")
                            .args(["-CONT", &pid.to_string()])
                            .status();
                    }))
                }
                _ => None,
            };
            let stats = run_phase(&runtime, &target, plan, &format!("{name} {}", phase.name));
            let stall_ms = stall.and_then(|t| t.join().ok()).and(args.stall_ms);
            let after = target.operator.and_then(scrape);
            let mut run = RunReport::from_stats(&stats, args.duration as f64);
            run.scenario = name.clone();
            run.phase = phase.name.clone();
            run.model = if phase.rate.is_some() {
                "open".into()
            } else {
                "closed".into()
            };
            run.connections = connections;
            run.target_rate_rps = phase.rate;
            run.signatures_per_s = scenario.signatures_per_item().map(|s| run.items_per_s * s);
            run.schedule_kept = stats.generator_late_share() <= 0.01;
            if let Some((items_per_s, batch)) = ceiling {
                run.ceiling_items_per_s = Some(items_per_s);
                run.ceiling_batch = Some(batch);
                run.ratio_to_ceiling = Some(run.items_per_s / items_per_s);
            }
            if let (Some(before), Some(after)) = (&before, &after) {
                run.metrics_check = metrics_check(before, after, &stats, &paths);
            }
            if let Some(ms) = stall_ms {
                let max_ms = run.latency_us.max as f64 / 1e3;
                checks.push(Check {
                    name: format!("{ms} ms stall shows in max ({name} {})", phase.name),
                    passed: max_ms >= ms as f64 * 0.9,
                    detail: format!(
                        "p99.9 {:.1} ms, max {max_ms:.1} ms",
                        run.latency_us.p999 as f64 / 1e3
                    ),
                });
            }
            if phase.name == "max" {
                max_rps = Some(run.requests_per_s);
                if args.wrk
                    && matches!(scenario, Scenario::Signatures(_) | Scenario::Status(_))
                    && let Some(first) = requests.first()
                {
                    checks.push(wrk_compare(
                        &target,
                        std::slice::from_ref(&first.body),
                        first.path,
                        connections,
                        args.duration,
                        run.requests_per_s,
                        &name,
                    ));
                }
                if args.wrk && matches!(scenario, Scenario::Verify(_)) {
                    // Fresh presentations for wrk (a presentation is accepted once): enough
                    // for wrk running at up to 2.5x our rate.
                    let count = ((run.requests_per_s * args.duration as f64 * 2.5) as usize)
                        .clamp(1000, 3_000_000)
                        * scenario_items(scenario);
                    let fresh = build(
                        scenario,
                        count,
                        &issuers,
                        &Mix::default(),
                        seed ^ 0x77_72_6b,
                        unix_now(),
                    );
                    let bodies: Vec<Bytes> =
                        fresh.requests.iter().map(|r| r.body.clone()).collect();
                    checks.extend(wrk_verify(
                        &target,
                        &bodies,
                        connections,
                        args.duration,
                        run.requests_per_s,
                        scenario_items(scenario),
                        &name,
                        &comparisons,
                        &issuers.jwks(),
                    ));
                }
            }
            runs.push(run);
            if phase.name == "max"
                && !args.no_latency_phases
                && scenario.latency_phases()
                && let Some(max) = max_rps
            {
                let shares: &[f64] = if args.smoke { &[0.5] } else { &[0.5, 0.9] };
                for &share in shares {
                    phases.push_back(Phase {
                        name: format!("{:.0}%", share * 100.0),
                        rate: Some(max * share),
                    });
                }
            }
        }
    }
    drop(runtime);

    let report = Report {
        schema: report::SCHEMA,
        generated_at: unix_now(),
        machine: Machine {
            cores,
            cpu: cpu_model(),
        },
        gateway: GatewayInfo {
            binary: target
                .spawned
                .as_ref()
                .map(|s| s.binary.display().to_string()),
            public: target.public.to_string(),
            spawned: target.spawned.is_some(),
            verify_threads,
        },
        runs,
        checks,
    };
    report::print_summary(&report);
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/loadtest-report.json"));
    let html_path = args
        .html
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/loadtest-report.html"));
    for path in [&json_path, &html_path] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
    }
    let mut document = serde_json::to_value(&report)?;
    document["issuers_jwks"] = issuers.jwks();
    std::fs::write(&json_path, serde_json::to_string_pretty(&document)?)?;
    std::fs::write(&html_path, report::html(&report))?;
    println!(
        "\nreports: {} and {}",
        json_path.display(),
        html_path.display()
    );

    let mut code = 0u8;
    for run in &report.runs {
        if !run.schedule_kept {
            eprintln!(
                "{} {}: the generator could not keep its schedule ({} late sends, max lag {:.1} ms): figures void",
                run.scenario,
                run.phase,
                run.late_sends.generator,
                run.late_sends.max_generator_lag_ms
            );
            code = code.max(4);
        }
        if run.metrics_check.compared && !run.metrics_check.matched {
            eprintln!(
                "{} {}: /metrics disagree with the generator: {:?}",
                run.scenario, run.phase, run.metrics_check.mismatches
            );
            code = code.max(5);
        }
        if let Some(slo) = &slo
            && (run.phase == "max" || run.phase == "rate")
        {
            for miss in slo_misses(run, slo) {
                eprintln!("SLO missed: {miss}");
                code = code.max(3);
            }
        }
    }
    if report.checks.iter().any(|c| !c.passed) {
        code = code.max(1);
    }
    Ok(ExitCode::from(code))
}

/// Runs `wrk` on the scenario's request (closed loop, same connections) and compares its
/// requests/s with the generator's.
fn wrk_compare(
    target: &Target,
    bodies: &[Bytes],
    path: &str,
    connections: usize,
    seconds: u64,
    ours: f64,
    name: &str,
) -> Check {
    let check_name = format!("wrk agrees within 10% ({name}, closed loop)");
    let result = wrk::Workload::new(bodies).and_then(|workload| {
        workload.run(
            &format!("http://{}{path}", target.public),
            &target.api_key,
            connections,
            seconds,
        )
    });
    match result {
        Ok(run) if run.non_2xx == 0 && run.socket_errors == 0 => {
            let diff = ours / run.requests_per_s - 1.0;
            Check {
                name: check_name,
                passed: diff.abs() <= 0.10,
                detail: format!(
                    "loadtest {ours:.0} req/s, wrk {:.0} req/s ({:+.1}%)",
                    run.requests_per_s,
                    diff * 100.0
                ),
            }
        }
        Ok(run) => Check {
            name: check_name,
            passed: false,
            detail: format!(
                "wrk got {} non-2xx answers and {} socket errors",
                run.non_2xx, run.socket_errors
            ),
        },
        Err(detail) => Check {
            name: check_name,
            passed: false,
            detail,
        },
    }
}

/// verify:N under wrk: fresh presentations, each sent once; the gateway's /metrics must count
/// every presentation wrk sent as `valid`. Optionally the same requests against the comparison
/// services (Node, Go), side by side (signatures/s = 2 per presentation on each).
#[allow(clippy::too_many_arguments)] // one call site; the values are the phase's own
fn wrk_verify(
    target: &Target,
    bodies: &[Bytes],
    connections: usize,
    seconds: u64,
    ours: f64,
    items_per_request: usize,
    name: &str,
    comparisons: &[(wrk::Kind, &std::path::Path)],
    jwks: &serde_json::Value,
) -> Vec<Check> {
    let check_name = format!("wrk agrees within 10% ({name}, closed loop, fresh presentations)");
    let failed = |name: String, detail: String| Check {
        name,
        passed: false,
        detail,
    };
    let workload = match wrk::Workload::new(bodies) {
        Ok(workload) => workload,
        Err(detail) => return vec![failed(check_name, detail)],
    };
    let valid = |metrics: &BTreeMap<String, f64>| -> f64 {
        metrics
            .iter()
            .filter(|(k, _)| {
                k.starts_with("idgate_verifications_total{") && k.contains("outcome=\"valid\"")
            })
            .map(|(_, v)| v)
            .sum()
    };
    let before = target.operator.and_then(scrape);
    let url = format!("http://{}/v1/verify", target.public);
    let run = match workload.run(&url, &target.api_key, connections, seconds) {
        Ok(run) => run,
        Err(detail) => return vec![failed(check_name, detail)],
    };
    let after = target.operator.and_then(scrape);
    let sent = run.requests as f64 * items_per_request as f64;
    let counted = match (&before, &after) {
        (Some(before), Some(after)) => Some(valid(after) - valid(before)),
        _ => None,
    };
    let diff = ours / run.requests_per_s - 1.0;
    let idgate_signatures = run.requests_per_s * items_per_request as f64 * 2.0;
    eprintln!(
        "{name}: wrk -c{connections}: {:.0} req/s = {idgate_signatures:.0} signatures/s (valid per /metrics: {})",
        run.requests_per_s,
        counted.map_or("-".into(), |c| format!("{c:.0} of {sent:.0}"))
    );
    let mut problems = Vec::new();
    if run.non_2xx > 0 || run.socket_errors > 0 {
        problems.push(format!(
            "{} non-2xx, {} socket errors",
            run.non_2xx, run.socket_errors
        ));
    }
    if run.wrapped > 0 {
        problems.push(format!("wrk ran out of fresh bodies {} times", run.wrapped));
    }
    // wrk counts only completed requests; a request cut off at the end may still be verified.
    match counted {
        Some(counted)
            if counted < sent || counted > sent + (connections * items_per_request) as f64 =>
        {
            problems.push(format!(
                "/metrics counted {counted:.0} valid of {sent:.0} sent"
            ));
        }
        Some(_) => {}
        None => problems.push("no /metrics to count valid verdicts".into()),
    }
    let mut checks = vec![
        Check {
            name: format!("wrk: every presentation sent was verified valid ({name})"),
            passed: problems.is_empty(),
            detail: if problems.is_empty() {
                format!(
                    "{sent:.0} sent, {} counted valid by /metrics",
                    counted.map_or("-".into(), |c| format!("{c:.0}"))
                )
            } else {
                problems.join("; ")
            },
        },
        Check {
            name: check_name,
            passed: diff.abs() <= 0.10,
            detail: format!(
                "loadtest {ours:.0} req/s, wrk {:.0} req/s ({:+.1}%) = {idgate_signatures:.0} signatures/s",
                run.requests_per_s,
                diff * 100.0
            ),
        },
    ];
    for &(kind, dir) in comparisons {
        let label = kind.label();
        let short = kind.short();
        let check_name = format!("{label}, same requests under wrk ({name})");
        let result = wrk::Comparison::start(kind, dir, jwks, &target.api_key).and_then(|service| {
            let body = bodies
                .last()
                .ok_or("no request to check the service with")?;
            service.check_verifies(body, &target.api_key)?;
            workload.run(
                &format!("http://{}/v1/verify", service.addr),
                &target.api_key,
                connections,
                seconds,
            )
        });
        checks.push(match result {
            Ok(other) => {
                let other_signatures = other.requests_per_s * items_per_request as f64 * 2.0;
                eprintln!(
                    "{name}: {label} under the same wrk run: {:.0} req/s = {other_signatures:.0} signatures/s; idgate / {short} = {:.2}x",
                    other.requests_per_s,
                    idgate_signatures / other_signatures
                );
                Check {
                    name: check_name,
                    passed: other.non_2xx == 0 && other.socket_errors == 0 && other.wrapped == 0,
                    detail: format!(
                        "idgate {idgate_signatures:.0} signatures/s, {short} {other_signatures:.0} signatures/s: idgate / {short} = {:.2}x ({} non-2xx, {} socket errors, {} wraps)",
                        idgate_signatures / other_signatures,
                        other.non_2xx,
                        other.socket_errors,
                        other.wrapped
                    ),
                }
            }
            Err(detail) => failed(check_name, detail),
        });
    }
    checks
}

/// Items per request of a scenario (for sizing open-loop corpora).
fn scenario_items(scenario: Scenario) -> usize {
    match scenario {
        Scenario::Verify(n)
        | Scenario::Signatures(n)
        | Scenario::Status(n)
        | Scenario::BadBatch(n)
        | Scenario::Revoke(n) => n,
        Scenario::Mix => 110,
        Scenario::ReplayFlood | Scenario::Oversized => 1,
    }
}

fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
