//! `loadtest`: idgate's load generator and benchmark suite.
//!
//! `cargo run --release -p loadtest -- --spawn` starts a gateway and runs the whole suite: for
//! each scenario, the engine's in-process ceiling on the same corpus, then the closed-loop
//! maximum, then open-loop runs at 50% and 90% of it; a terminal summary, a JSON report and an
//! HTML report. See loadtest/README.md for the options, scenarios and the report schema.
//!
//! Exit codes: 0 ok; 1 error; 2 bad arguments; 3 an SLO was missed; 4 the generator could not
//! keep its schedule (figures void); 5 the gateway's `/metrics` disagree with the generator.
//!
//! This file holds the flags and the run's outline; each step lives in its own module:
//! `scenario` (what each scenario sends), `target` (the gateway), `redis` (its redis-server
//! with `--replay redis`), `phases` (one measured phase), `metrics_check` and `wrk_checks` (the
//! cross-checks), `report`, `slo` (the verdict); `feed` (`--feed`, the shared revocation
//! feed's figures).
#![forbid(unsafe_code)]
// A tool, not a request path: setup failures should stop loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod ceiling;
mod corpus;
mod feed;
mod load;
mod metrics_check;
mod phases;
mod redis;
mod report;
mod scenario;
mod slo;
mod spawn;
mod target;
mod wrk;
mod wrk_checks;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use idgate::clock::unix_now;

use corpus::{Issuers, Mix};
use phases::{Phase, ScenarioRun, Session};
use report::{GatewayInfo, Machine, Report};
use scenario::{SMOKE, SUITE, Scenario};
use target::Target;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Blocking one-shot calls for setup and checks (readiness, revocations, `/metrics`): 5 s to
/// connect, 300 s for the rest (a post of 10,000 durable revocations on a busy machine). The
/// load itself goes through `load.rs`.
const SETUP: testkit::http::Client =
    testkit::http::Client::new(Duration::from_secs(5), Duration::from_secs(300));

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
    /// The spawned gateway's replay store: `memory` (its own) or `redis` (a redis-server this
    /// run starts on a free port, without persistence, `noeviction`; killed at the end). With
    /// `redis` each phase reports the gateway's Redis round trip and the server's CPU.
    /// `memory,redis`: two gateways, one per store, and each scenario's maximum measured on
    /// both in --rounds interleaved rounds with the same requests (A/B).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "memory")]
    replay: Vec<ReplayBackend>,
    /// With two --replay backends: rounds per scenario (the order alternates: A B, B A, ...).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// With --replay redis: before the load, write N live keys in the gateway's key format
    /// (`SET idgate:replay:<16 bytes> 1 NX PXAT`) and report Redis's memory per key.
    #[arg(long, value_name = "N", default_value_t = 0)]
    redis_fill: u64,
    /// Measure the shared revocation feed instead of the scenarios: two spawned gateways on a
    /// redis-server of this run's own (append-only file on); propagation A → B under
    /// --feed-rate updates/s, verify:256 on B with and without them (--rounds rounds), and a
    /// --feed-import entry import (see loadtest/README.md). Implies --spawn.
    #[arg(long)]
    feed: bool,
    /// With --feed: revocation updates per second posted to A.
    #[arg(long, value_name = "N", default_value_t = 1000.0)]
    feed_rate: f64,
    /// With --feed: entries in the bulk import (0: none).
    #[arg(long, value_name = "N", default_value_t = 10_000_000)]
    feed_import: usize,
}

/// `--replay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayBackend {
    Memory,
    Redis,
}

impl ReplayBackend {
    pub fn name(self) -> &'static str {
        match self {
            ReplayBackend::Memory => "memory",
            ReplayBackend::Redis => "redis",
        }
    }
}

/// Why the flags do not go together, if they do not.
fn refusal(args: &Args) -> Option<&'static str> {
    let redis = args.replay.contains(&ReplayBackend::Redis);
    let two = args.replay.len() > 1;
    if args.replay.len() > 2 || (two && args.replay[0] == args.replay[1]) {
        Some("--replay takes memory, redis, or memory,redis")
    } else if (redis || two) && !args.spawn {
        Some(
            "--replay redis (and two backends) need --spawn (an external gateway's replay store is its own)",
        )
    } else if args.redis_fill > 0 && !redis {
        Some("--redis-fill needs --replay redis")
    } else if two && (args.wrk || args.stall_ms.is_some()) {
        Some("--wrk and --stall-ms take one --replay backend")
    } else if args.feed && (args.target.is_some() || args.replay != [ReplayBackend::Memory]) {
        Some(
            "--feed spawns its own two gateways (memory replay stores); it takes no --target or --replay",
        )
    } else if args.feed && !(args.feed_rate > 100.0 && args.feed_rate <= 100_000.0) {
        Some(
            "--feed-rate must be above 100 (the probes alone send 100 updates/s) and at most 100000",
        )
    } else if args.rounds == 0 {
        Some("--rounds must be at least 1")
    } else {
        None
    }
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
    if let Some(refusal) = refusal(&args) {
        eprintln!("loadtest: {refusal}");
        return Ok(ExitCode::from(2));
    }
    if args.smoke {
        args.duration = args.duration.min(2);
        args.warmup = args.warmup.min(1);
        if args.scenarios.is_empty() {
            args.scenarios = SMOKE.iter().map(|s| s.to_string()).collect();
        }
        ceiling::set_measure(Duration::from_secs(1));
    }
    let names: Vec<&str> = if args.scenarios.is_empty() {
        SUITE.to_vec()
    } else {
        args.scenarios.iter().map(String::as_str).collect()
    };
    let scenarios: Vec<Scenario> = names
        .into_iter()
        .map(Scenario::parse)
        .collect::<Result<_>>()?;
    let mix = Mix::parse(&args.invalid)?;
    let slo = args.slo.as_deref().map(slo::parse).transpose()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let verify_threads = if args.verify_threads == 0 {
        cores
    } else {
        args.verify_threads
    };
    let issuers = Issuers::new(args.seed);
    if args.feed {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores.max(2))
            .enable_all()
            .build()?;
        args.spawn = true;
        return feed::run(&args, &issuers, verify_threads, &runtime);
    }
    let comparisons: Vec<(wrk::Kind, &Path)> = [
        (wrk::Kind::Node, args.compare_node.as_deref()),
        (wrk::Kind::Go, args.compare_go.as_deref()),
    ]
    .into_iter()
    .filter_map(|(kind, dir)| Some((kind, dir?)))
    .collect();

    let mut targets = Vec::new();
    let mut checks = Vec::new();
    for &backend in &args.replay {
        let (target, at_rest) = Target::connect(&args, backend, verify_threads, &issuers)?;
        targets.push(target);
        checks.extend(at_rest);
    }
    let target = &targets[0];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.max(2))
        .enable_all()
        .build()?;
    let mut session = Session {
        args: &args,
        target,
        issuers: &issuers,
        mix: &mix,
        comparisons: &comparisons,
        runtime: &runtime,
        stalled: false,
    };
    let mut runs = Vec::new();
    for scenario in scenarios {
        let mut scenario = ScenarioRun::prepare(&args, scenario, &issuers, verify_threads)?;
        if targets.len() > 1 {
            // A/B: each round's corpus to both gateways, back to back, alternating who is first.
            let phase = Phase::first(args.rate);
            for round in 1..=args.rounds {
                let corpus = session.corpus(&mut scenario, &phase);
                let order: &[usize] = if round % 2 == 1 { &[0, 1] } else { &[1, 0] };
                for &i in order {
                    let mut measured = session.run(&targets[i], &scenario, &phase, &corpus)?;
                    measured.run.round = Some(round);
                    checks.extend(measured.checks);
                    runs.push(measured.run);
                }
            }
            continue;
        }
        let mut phases = VecDeque::from([Phase::first(args.rate)]);
        while let Some(phase) = phases.pop_front() {
            let measured = session.measure(&mut scenario, &phase)?;
            checks.extend(measured.checks);
            phases.extend(measured.next);
            runs.push(measured.run);
        }
    }
    drop(runtime);
    let replay_ab = report::replay_ab(&runs, &args.replay);

    let report = Report {
        schema: report::SCHEMA,
        generated_at: unix_now(),
        machine: Machine::this(cores),
        gateway: GatewayInfo {
            binary: target
                .spawned
                .as_ref()
                .map(|s| s.binary.display().to_string()),
            public: target.public.to_string(),
            spawned: target.spawned.is_some(),
            verify_threads,
            replay: args
                .replay
                .iter()
                .map(|b| b.name())
                .collect::<Vec<_>>()
                .join(","),
            redis: targets.iter().find_map(Target::redis_info),
        },
        runs,
        replay_ab,
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
    report::write(&report, &json_path, &html_path, issuers.jwks())?;
    Ok(ExitCode::from(slo::exit_code(&report, slo.as_deref())))
}
