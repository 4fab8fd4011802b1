//! `--feed`: the shared revocation feed (`revocation.feed = "redis"`) measured on two spawned
//! gateways, A and B, sharing one redis-server of this run's own with its append-only file on
//! (`appendfsync everysec`, the setting the README recommends). Three figures, one run:
//!
//! 1. **Propagation** under `--feed-rate` updates/s (default 1,000): background updates (one
//!    credential per `POST /admin/v1/revocations`, open loop) go to A, and every 10 ms one probe
//!    update more; each probe is timed from the start of its POST to A until B's `/v1/status`
//!    answers `revoked` (B is polled every 0.2 ms on a keep-alive connection, so the figure's
//!    resolution is one status round trip plus 0.2 ms). Probes count toward the rate.
//! 2. **Cost on a busy instance**: closed-loop `verify:256` on B, `--rounds` rounds, while
//!    `--feed-rate` updates/s are published meanwhile: in "applying" rounds to A (B applies
//!    them), in control rounds to a third gateway C on a stream of its own in the same Redis
//!    (B does not), so that the publisher, Redis and the generator do the same work either way
//!    and only B's applying differs (control, applying, applying, control, …). The ratio is
//!    the median applying round over the median control one.
//! 3. **Bulk import**: `--feed-import` entries (default 10,000,000) written to a JSON Lines file
//!    and published with `idgate revocations import FILE --feed URL`; timed from the command's
//!    start until both gateways' `idgate_revocation_entries` include them.
//!
//! The summary goes to the terminal and to the JSON report (`--json`, default
//! `target/loadtest-feed.json`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use idgate::clock::unix_now;
use idgate::revocation::{Entry, Kind, Reason, Status};
use serde::Serialize;

use crate::corpus::{Issuers, Mix};
use crate::load::{self, Plan, Progress};
use crate::metrics_check::scrape;
use crate::phases::{Phase, ScenarioRun, Session};
use crate::redis::RedisServer;
use crate::report::Machine;
use crate::scenario::{self, Scenario};
use crate::spawn::{self, GatewayOptions, Spawned};
use crate::target::Target;
use crate::{Args, ReplayBackend};

/// One probe update every this long, on top of the background updates.
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// Between two status queries to B while a probe is in flight.
const POLL_EVERY: Duration = Duration::from_micros(200);
/// A probe not seen on B within this long counts as lost.
const PROBE_GIVE_UP: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize)]
pub struct FeedReport {
    pub schema: &'static str,
    pub generated_at: i64,
    pub machine: Machine,
    pub redis_version: String,
    pub appendfsync: String,
    pub verify_threads: usize,
    pub propagation: Propagation,
    pub busy: Busy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import: Option<Import>,
}

#[derive(Debug, Serialize)]
pub struct Propagation {
    /// Updates per second asked for (background plus probes).
    pub target_updates_per_s: f64,
    /// Background updates A acknowledged per second of the window, plus the probes.
    pub achieved_updates_per_s: f64,
    pub background_errors: u64,
    pub probes: usize,
    /// Probes B never showed within 5 s.
    pub probes_lost: usize,
    pub propagation_ms: Quantiles,
    /// A's answer to the probe's POST (the `XADD` and the local log).
    pub publish_ack_ms: Quantiles,
    /// CPU seconds each process used during the phase (warm-up included).
    pub cpu_s: Cpu,
}

#[derive(Debug, Serialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Serialize)]
pub struct Busy {
    pub scenario: String,
    pub updates_per_s: f64,
    pub rounds: Vec<BusyRound>,
    pub median_control_items_per_s: f64,
    /// Each applying round over the control round beside it (rounds 1/2, 4/3, 5/6, 8/7, …).
    pub pair_ratios: Vec<f64>,
    pub median_loaded_items_per_s: f64,
    /// Applying over control; the target is ≥ 0.95.
    pub ratio: f64,
}

#[derive(Debug, Serialize)]
pub struct BusyRound {
    pub round: u32,
    pub loaded: bool,
    pub items_per_s: f64,
    pub p99_ms: f64,
    /// Updates the publisher (A, or C in control rounds) acknowledged per second meanwhile.
    pub updates_per_s: f64,
    /// Feed entries B applied during the round.
    pub feed_entries_applied: f64,
    /// CPU seconds each process used during the round (where the cost went).
    pub cpu_s: Cpu,
}

#[derive(Debug, Serialize)]
pub struct Cpu {
    pub a: f64,
    pub b: f64,
    pub redis: f64,
    /// The control gateway C (busy-instance rounds only).
    #[serde(skip_serializing_if = "is_nan")]
    pub control: f64,
}

fn is_nan(value: &f64) -> bool {
    value.is_nan()
}

impl Cpu {
    fn take(a: &Spawned, b: &Spawned, redis: &RedisServer) -> Cpu {
        let redis_cpu = redis
            .info("cpu")
            .ok()
            .map(|info| {
                ["used_cpu_user", "used_cpu_sys"]
                    .iter()
                    .filter_map(|k| info.get(*k)?.parse::<f64>().ok())
                    .sum()
            })
            .unwrap_or(f64::NAN);
        Cpu {
            a: a.cpu_seconds().unwrap_or(f64::NAN),
            b: b.cpu_seconds().unwrap_or(f64::NAN),
            redis: redis_cpu,
            control: f64::NAN,
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            a: self.a - before.a,
            b: self.b - before.b,
            redis: self.redis - before.redis,
            control: f64::NAN,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Import {
    pub entries: usize,
    pub file_bytes: u64,
    /// The `idgate revocations import --feed` process, start to exit.
    pub command_s: f64,
    /// From the command's start until A, then B, report every entry.
    pub visible_on_a_s: f64,
    pub visible_on_b_s: f64,
    /// The later of the two; the target is ≤ 60 s.
    pub visible_on_both_s: f64,
}

/// A keep-alive HTTP/1.1 connection that reopens itself after an error.
struct Connection {
    address: SocketAddr,
    bearer: String,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
}

impl Connection {
    fn new(address: SocketAddr, token: &str) -> Connection {
        Connection {
            address,
            bearer: format!("Bearer {token}"),
            sender: None,
        }
    }

    async fn post(&mut self, path: &str, body: String) -> Result<(u16, Bytes)> {
        if self.sender.is_none() {
            let stream = tokio::net::TcpStream::connect(self.address).await?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().context("connected above")?;
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, self.address.to_string())
            .header(hyper::header::AUTHORIZATION, self.bearer.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let exchange = async {
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        match tokio::time::timeout(Duration::from_secs(10), exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            failure => {
                self.sender = None;
                bail!("{path}: {failure:?}")
            }
        }
    }
}

fn revocation_line(id: String, now: i64) -> String {
    let entry = Entry {
        kind: Kind::Credential,
        id,
        status: Status::Revoked,
        reason: Some(Reason::Lost),
        before: None,
        at: now,
    };
    serde_json::to_string(&entry).unwrap_or_default() + "\n"
}

fn quantiles(mut values: Vec<f64>) -> Quantiles {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if values.is_empty() {
            0.0
        } else {
            values[((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1]
        }
    };
    Quantiles {
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn metric(operator: SocketAddr, name: &str) -> f64 {
    scrape(operator)
        .and_then(|page| page.get(name).copied())
        .unwrap_or(f64::NAN)
}

/// Background updates to A at `rate` per second for `seconds` (each a new credential), on a
/// runtime of their own; joins to the number A acknowledged in the measured window and the
/// errors.
fn background(
    a: &Spawned,
    rate: f64,
    warmup: Duration,
    duration: Duration,
    seed: u64,
) -> std::thread::JoinHandle<(u64, u64)> {
    let now = unix_now();
    let count = (rate * (warmup + duration).as_secs_f64() * 1.1) as usize + 16;
    let requests: Vec<load::Request> = (0..count)
        .map(|i| load::Request {
            path: scenario::ADMIN_REVOCATIONS,
            body: Bytes::from(revocation_line(format!("feedbg-{seed}-{i}"), now)),
            items: 1,
        })
        .collect();
    let plan = Plan {
        requests: Arc::new(requests),
        connections: 16,
        warmup,
        duration,
        rate: Some(rate),
        bearer: a.admin_token.clone(),
        timeout: Duration::from_secs(30),
    };
    let operator = a.operator;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a one-thread runtime");
        let stats = runtime.block_on(load::run(operator, plan, Arc::new(Progress::default())));
        let ok = stats.statuses.get(&200).copied().unwrap_or(0);
        (ok, stats.requests - ok + stats.errors.values().sum::<u64>())
    })
}

/// Probes: one update to A every 10 ms, each followed on B until it shows. Returns the
/// propagation and acknowledgement times in ms of the probes started after `warmup`, and how
/// many were lost.
fn probe(
    a: &Spawned,
    b: &Spawned,
    warmup: Duration,
    duration: Duration,
    seed: u64,
) -> Result<(Vec<f64>, Vec<f64>, usize)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (a_operator, a_token) = (a.operator, a.admin_token.clone());
    let (b_public, b_key) = (b.public, b.api_key.clone());
    runtime.block_on(async move {
        let mut to_a = Connection::new(a_operator, &a_token);
        let mut to_b = Connection::new(b_public, &b_key);
        let start = Instant::now();
        let (mut propagation, mut ack, mut lost) = (Vec::new(), Vec::new(), 0);
        let mut k = 0u64;
        while start.elapsed() < warmup + duration {
            let scheduled = start + PROBE_EVERY * k as u32;
            k += 1;
            if scheduled < Instant::now() {
                continue; // behind: skip slots rather than send in a burst
            }
            tokio::time::sleep_until(scheduled.into()).await;
            let id = format!("feedprobe-{seed}-{k}");
            let measured = scheduled >= start + warmup;
            let sent = Instant::now();
            let (status, body) = to_a
                .post(
                    scenario::ADMIN_REVOCATIONS,
                    revocation_line(id.clone(), unix_now()),
                )
                .await?;
            if status != 200 {
                bail!(
                    "A refused a probe update: {status} {}",
                    String::from_utf8_lossy(&body)
                );
            }
            let acknowledged = sent.elapsed();
            let query = serde_json::json!({ "credentials": [id] }).to_string();
            let seen = loop {
                let (status, body) = to_b.post("/v1/status", query.clone()).await?;
                if status != 200 {
                    bail!("B refused a status query: {status}");
                }
                let answer: serde_json::Value = serde_json::from_slice(&body)?;
                if answer["results"][0]["status"] == "revoked" {
                    break Some(sent.elapsed());
                }
                if sent.elapsed() > PROBE_GIVE_UP {
                    break None;
                }
                std::thread::sleep(POLL_EVERY);
            };
            if measured {
                ack.push(acknowledged.as_secs_f64() * 1e3);
                match seen {
                    Some(latency) => propagation.push(latency.as_secs_f64() * 1e3),
                    None => lost += 1,
                }
            }
        }
        Ok((propagation, ack, lost))
    })
}

/// A and B on the feed, and the control C on a stream of its own in the same Redis.
fn spawn_gateways(
    args: &Args,
    issuers: &Issuers,
    verify_threads: usize,
    url: &str,
) -> Result<[Spawned; 3]> {
    let options = GatewayOptions {
        verify_threads,
        io_threads: args.io_threads,
        max_presentation_age_s: 900,
        revocation_list: 0,
        redis_url: None,
        feed_url: Some(url.to_string()),
        feed_stream: None,
    };
    let a = spawn::spawn(&issuers.jwks(), &options)?;
    let b = spawn::spawn(&issuers.jwks(), &options)?;
    let c = spawn::spawn(
        &issuers.jwks(),
        &GatewayOptions {
            feed_stream: Some(CONTROL_STREAM.into()),
            ..options
        },
    )?;
    Ok([a, b, c])
}

/// The control gateway's stream, which B does not read.
const CONTROL_STREAM: &str = "idgate:loadtest-control";

/// Writes `entries` new credential revocations as JSON Lines.
fn write_import_file(path: &std::path::Path, entries: usize, seed: u64) -> Result<u64> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let now = unix_now();
    for i in 0..entries {
        out.write_all(revocation_line(format!("feedimp-{seed}-{i:08}"), now).as_bytes())?;
    }
    out.into_inner()?.sync_all()?;
    Ok(std::fs::metadata(path)?.len())
}

fn import(a: &Spawned, b: &Spawned, url: &str, entries: usize, seed: u64) -> Result<Import> {
    let dir = tempfile::Builder::new()
        .prefix("idgate-loadtest-import-")
        .tempdir()?;
    let file = dir.path().join("import.jsonl");
    eprintln!("feed: writing {entries} entries to {}", file.display());
    let file_bytes = write_import_file(&file, entries, seed)?;
    let before = [a, b].map(|g| metric(g.operator, "idgate_revocation_entries"));
    let started = Instant::now();
    let mut command = std::process::Command::new(&a.binary)
        .args(["revocations", "import"])
        .arg(&file)
        .args(["--feed", url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run idgate revocations import")?;
    let mut command_s = None;
    let mut visible = [None, None];
    let deadline = started + Duration::from_secs(600);
    while command_s.is_none() || visible.iter().any(Option::is_none) {
        if Instant::now() > deadline {
            bail!("the import was not visible on both gateways within 600 s");
        }
        if command_s.is_none()
            && let Some(status) = command.try_wait()?
        {
            command_s = Some(started.elapsed().as_secs_f64());
            if !status.success() {
                let mut why = String::new();
                if let Some(mut stderr) = command.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut why);
                }
                bail!("idgate revocations import failed ({status}): {why}");
            }
        }
        for (i, gateway) in [a, b].into_iter().enumerate() {
            if visible[i].is_none()
                && metric(gateway.operator, "idgate_revocation_entries")
                    >= before[i] + entries as f64
            {
                visible[i] = Some(started.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let [Some(on_a), Some(on_b)] = visible else {
        bail!("checked above");
    };
    Ok(Import {
        entries,
        file_bytes,
        command_s: command_s.unwrap_or(f64::NAN),
        visible_on_a_s: on_a,
        visible_on_b_s: on_b,
        visible_on_both_s: on_a.max(on_b),
    })
}

/// Runs the three measurements and writes the report.
pub fn run(
    args: &Args,
    issuers: &Issuers,
    verify_threads: usize,
    runtime: &tokio::runtime::Runtime,
) -> Result<ExitCode> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "everysec"])?;
    let persistence = redis.info("persistence")?;
    let appendfsync = redis
        .connection()
        .ok()
        .and_then(|mut c| {
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("appendfsync")
                .query::<Vec<String>>(&mut c)
                .ok()
        })
        .and_then(|v| v.get(1).cloned())
        .unwrap_or_default();
    if persistence.get("aof_enabled").map(String::as_str) != Some("1") {
        bail!("the feed's redis-server did not turn its append-only file on");
    }
    eprintln!(
        "feed: redis-server {} at {} (appendonly yes, appendfsync {appendfsync})",
        redis.version,
        redis.url()
    );
    let [a, b, c] = spawn_gateways(args, issuers, verify_threads, &redis.url())?;
    let warmup = Duration::from_secs(args.warmup);
    let duration = Duration::from_secs(args.duration);
    let rate = args.feed_rate;
    let probe_rate = 1.0 / PROBE_EVERY.as_secs_f64();
    let background_rate = (rate - probe_rate).max(1.0);

    // 1. Propagation under load.
    eprintln!(
        "feed: propagation A → B at {rate:.0} updates/s for {} s",
        args.duration
    );
    let cpu_before = Cpu::take(&a, &b, &redis);
    let load = background(&a, background_rate, warmup, duration, args.seed);
    let (propagation, ack, lost) = probe(&a, &b, warmup, duration, args.seed)?;
    let (acknowledged, background_errors) = load.join().map_err(|_| anyhow::anyhow!("panicked"))?;
    let cpu_s = Cpu::take(&a, &b, &redis).since(&cpu_before);
    let probes = propagation.len() + lost;
    let propagation = Propagation {
        target_updates_per_s: rate,
        achieved_updates_per_s: (acknowledged as f64 + probes as f64) / duration.as_secs_f64(),
        background_errors,
        probes,
        probes_lost: lost,
        propagation_ms: quantiles(propagation),
        publish_ack_ms: quantiles(ack),
        cpu_s,
    };

    // 2. verify:256 on B, applying the feed or not, with the same publishing either way.
    let scenario = Scenario::Verify(256);
    let mut scenario_run = ScenarioRun::prepare(args, scenario, issuers, verify_threads)?;
    let target_b = Target {
        public: b.public,
        operator: Some(b.operator),
        api_key: b.api_key.clone(),
        admin_token: Some(b.admin_token.clone()),
        backend: Some(ReplayBackend::Memory.name()),
        spawned: None,
        redis: None,
        redis_fill: None,
    };
    let mix = Mix::parse("")?;
    let mut session = Session {
        args,
        target: &target_b,
        issuers,
        mix: &mix,
        comparisons: &[],
        runtime,
        stalled: false,
    };
    let phase = Phase::first(None);
    let mut rounds = Vec::new();
    // Round 0 is a warm-up, not counted: a fresh gateway's first round runs faster than the
    // rest whatever it does (measured: 10–30% above the later control rounds).
    for round in 0..=args.rounds.max(2) {
        // control, applying, applying, control, control, applying, ...
        let loaded = matches!(round % 4, 2 | 3);
        let corpus = session.corpus(&mut scenario_run, &phase);
        let applied_before = metric(b.operator, "idgate_revocation_feed_entries_applied_total");
        let cpu_before = Cpu::take(&a, &b, &redis);
        let control_before = c.cpu_seconds().unwrap_or(f64::NAN);
        // The same publishing either way: to A (B applies it) or to the control C (B does not).
        let publisher = if loaded { &a } else { &c };
        let seed = args.seed ^ (u64::from(round) << 32);
        let load = background(publisher, rate, warmup, duration, seed);
        let measured = session.run(&target_b, &scenario_run, &phase, &corpus)?;
        let (ok, _) = load.join().map_err(|_| anyhow::anyhow!("panicked"))?;
        let updates = ok as f64 / duration.as_secs_f64();
        let applied =
            metric(b.operator, "idgate_revocation_feed_entries_applied_total") - applied_before;
        let mut cpu_s = Cpu::take(&a, &b, &redis).since(&cpu_before);
        cpu_s.control = c.cpu_seconds().unwrap_or(f64::NAN) - control_before;
        eprintln!(
            "feed: verify:256 on B, round {round} ({}): {:.0} items/s",
            if round == 0 {
                "warm-up, not counted"
            } else if loaded {
                "B applying the feed"
            } else {
                "control"
            },
            measured.run.items_per_s
        );
        if round == 0 {
            continue;
        }
        rounds.push(BusyRound {
            round,
            loaded,
            items_per_s: measured.run.items_per_s,
            p99_ms: measured.run.latency_us.p99 as f64 / 1e3,
            updates_per_s: updates,
            feed_entries_applied: applied,
            cpu_s,
        });
    }
    let pick = |loaded: bool| -> Vec<f64> {
        rounds
            .iter()
            .filter(|r| r.loaded == loaded)
            .map(|r| r.items_per_s)
            .collect()
    };
    let control = median(&mut pick(false));
    let busy_median = median(&mut pick(true));
    let pair_ratios: Vec<f64> = rounds
        .chunks(2)
        .filter_map(|pair| {
            let [x, y] = pair else { return None };
            let (control, applying) = if x.loaded { (y, x) } else { (x, y) };
            (control.loaded != applying.loaded).then(|| applying.items_per_s / control.items_per_s)
        })
        .collect();
    let busy = Busy {
        pair_ratios,
        scenario: scenario.name(),
        updates_per_s: rate,
        ratio: busy_median / control,
        median_control_items_per_s: control,
        median_loaded_items_per_s: busy_median,
        rounds,
    };

    // 3. Bulk import.
    let import = if args.feed_import > 0 {
        Some(import(&a, &b, &redis.url(), args.feed_import, args.seed)?)
    } else {
        None
    };

    let report = FeedReport {
        schema: "idgate-loadtest-feed/1",
        generated_at: unix_now(),
        machine: Machine::this(cores),
        redis_version: redis.version.clone(),
        appendfsync,
        verify_threads,
        propagation,
        busy,
        import,
    };
    print_summary(&report);
    let path = args
        .json
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/loadtest-feed.json"));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    eprintln!("feed: report written to {}", path.display());
    drop((a, b, c));
    let p = &report.propagation;
    if p.probes == 0 || p.probes_lost > 0 || p.background_errors > 0 {
        eprintln!(
            "feed: {} probes, {} lost, {} background updates refused or failed: the figures are void",
            p.probes, p.probes_lost, p.background_errors
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(report: &FeedReport) {
    let p = &report.propagation;
    println!(
        "feed propagation A → B   {:.0} updates/s asked, {:.0} acknowledged/s   p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms   ({} probes, {} lost; A's ack p50 {:.2} ms, p99 {:.2} ms)",
        p.target_updates_per_s,
        p.achieved_updates_per_s,
        p.propagation_ms.p50,
        p.propagation_ms.p99,
        p.propagation_ms.max,
        p.probes,
        p.probes_lost,
        p.publish_ack_ms.p50,
        p.publish_ack_ms.p99,
    );
    println!(
        "feed propagation CPU s: A {:.1}, B {:.1}, redis {:.1}",
        p.cpu_s.a, p.cpu_s.b, p.cpu_s.redis
    );
    let b = &report.busy;
    for round in &b.rounds {
        println!(
            "feed busy B  round {}  {:<11} {:>9.0} items/s   p99 {:>7.1} ms   {:>5.0} updates/s published, {:.0} feed entries applied on B; CPU s: A {:.1}, C {:.1}, B {:.1}, redis {:.1}",
            round.round,
            if round.loaded {
                "B applying"
            } else {
                "control"
            },
            round.items_per_s,
            round.p99_ms,
            round.updates_per_s,
            round.feed_entries_applied,
            round.cpu_s.a,
            round.cpu_s.control,
            round.cpu_s.b,
            round.cpu_s.redis
        );
    }
    println!(
        "feed busy B  {} with {:.0} updates/s applied: {:.0} vs {:.0} items/s in control rounds (medians) = {:.3}",
        b.scenario,
        b.updates_per_s,
        b.median_loaded_items_per_s,
        b.median_control_items_per_s,
        b.ratio
    );
    let pairs: Vec<String> = b.pair_ratios.iter().map(|r| format!("{r:.3}")).collect();
    println!(
        "feed busy B  applying / control, round pair by round pair: {}",
        pairs.join(", ")
    );
    if let Some(i) = &report.import {
        println!(
            "feed import  {} entries ({:.0} MiB): command {:.1} s, on A after {:.1} s, on B after {:.1} s, on both {:.1} s",
            i.entries,
            i.file_bytes as f64 / (1 << 20) as f64,
            i.command_s,
            i.visible_on_a_s,
            i.visible_on_b_s,
            i.visible_on_both_s
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_and_medians_average_the_middle_pair() {
        let q = quantiles((1..=200).map(f64::from).collect());
        assert_eq!((q.p50, q.p99, q.max), (100.0, 198.0, 200.0));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        let empty = quantiles(Vec::new());
        assert_eq!(empty.max, 0.0);
    }
}
