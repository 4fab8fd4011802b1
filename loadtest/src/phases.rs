//! The measurement phases of a scenario: the closed-loop maximum (or one open-loop `--rate`
//! phase), then open-loop phases at 50% and 90% of that maximum. Each phase gets a fresh
//! corpus sized for it, posts its revocations, scrapes `/metrics` before and after the load,
//! and yields one [`RunReport`], its checks and the phases it calls for next.
//!
//! **Invariant:** the `/metrics` scrapes bracket exactly one phase's load (warm-up included,
//! which the generator's `all_*` counts include too), so their difference is that phase's.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use idgate::clock::unix_now;

use crate::corpus::{Issuers, Mix};
use crate::load::{self, Plan, Progress};
use crate::metrics_check::{self, scrape};
use crate::report::{Check, GatewayPhase, RunReport};
use crate::scenario::{self, ADMIN_REVOCATIONS, Scenario};
use crate::target::Target;
use crate::{Args, redis, wrk, wrk_checks};

/// One phase: its name in the report (`max`, `rate`, `50%`, `90%`) and its open-loop rate.
#[derive(Clone, Debug)]
pub struct Phase {
    pub name: String,
    /// Requests per second; `None`: closed loop.
    pub rate: Option<f64>,
}

impl Phase {
    /// The phase a scenario starts with: `--rate` alone, or the closed-loop maximum.
    pub fn first(rate: Option<f64>) -> Phase {
        match rate {
            Some(rate) => Phase {
                name: "rate".into(),
                rate: Some(rate),
            },
            None => Phase {
                name: "max".into(),
                rate: None,
            },
        }
    }
}

/// What every phase of the run shares.
pub struct Session<'a> {
    pub args: &'a Args,
    pub target: &'a Target,
    pub issuers: &'a Issuers,
    pub mix: &'a Mix,
    pub comparisons: &'a [(wrk::Kind, &'a Path)],
    pub runtime: &'a tokio::runtime::Runtime,
    /// Whether the `--stall-ms` stall has happened (once per run).
    pub stalled: bool,
}

/// One scenario's state across its phases.
pub struct ScenarioRun {
    scenario: Scenario,
    name: String,
    connections: usize,
    /// Items per second and batch size of the engine's ceiling, unless `--no-ceiling`.
    ceiling: Option<(f64, usize)>,
    phases_run: u64,
}

impl ScenarioRun {
    /// Measures the scenario's ceiling (unless `--no-ceiling`) and prints it.
    pub fn prepare(
        args: &Args,
        scenario: Scenario,
        issuers: &Issuers,
        verify_threads: usize,
    ) -> Result<ScenarioRun> {
        let connections = args.connections.unwrap_or_else(|| scenario.connections());
        let name = scenario.name();
        let ceiling = if args.no_ceiling {
            None
        } else {
            scenario::ceiling(
                scenario,
                issuers,
                verify_threads,
                connections,
                args.seed,
                unix_now(),
            )?
        };
        if let Some((items_per_s, batch)) = ceiling {
            eprintln!(
                "{name}: engine ceiling {items_per_s:.0} items/s (batches of {batch}, {verify_threads} threads)"
            );
        }
        Ok(ScenarioRun {
            scenario,
            name,
            connections,
            ceiling,
            phases_run: 0,
        })
    }
}

/// What one phase produced.
pub struct Measured {
    pub run: RunReport,
    pub checks: Vec<Check>,
    /// Phases to run next (the open-loop shares, after a maximum).
    pub next: Vec<Phase>,
}

/// A phase's corpus, built once (with two backends, the same requests go to both gateways:
/// each has its own replay store, so each accepts every presentation once).
pub struct Corpus {
    requests: Arc<Vec<load::Request>>,
    revocations: Vec<idgate::revocation::Entry>,
    /// The routes the requests go to.
    paths: Vec<&'static str>,
    seed: u64,
}

impl<'a> Session<'a> {
    /// Builds the phase's corpus, runs the load and checks it.
    pub fn measure(&mut self, scenario: &mut ScenarioRun, phase: &Phase) -> Result<Measured> {
        let corpus = self.corpus(scenario, phase);
        self.run(self.target, scenario, phase, &corpus)
    }

    /// The phase's corpus: enough fresh items for it, drawn from a seed of its own.
    pub fn corpus(&self, scenario: &mut ScenarioRun, phase: &Phase) -> Corpus {
        let args = self.args;
        scenario.phases_run += 1;
        let seconds = (args.warmup + args.duration) as f64;
        // Enough fresh items for the phase (no presentation shown twice unless meant to).
        let items = match (phase.rate, scenario.ceiling) {
            (Some(rate), _) => {
                (rate * seconds * 1.1) as usize * scenario.scenario.items_per_request()
            }
            (None, Some((items_per_s, _))) => (items_per_s * seconds * 1.3) as usize,
            (None, None) => 200_000,
        }
        .clamp(1000, 3_000_000);
        let seed = args
            .seed
            .wrapping_mul(1000)
            .wrapping_add(scenario.phases_run)
            ^ name_seed(&scenario.name);
        let built = scenario::build(
            scenario.scenario,
            items,
            self.issuers,
            self.mix,
            seed,
            unix_now(),
        );
        let mut paths: Vec<&'static str> = built.requests.iter().map(|r| r.path).collect();
        paths.sort();
        paths.dedup();
        Corpus {
            requests: Arc::new(built.requests),
            revocations: built.revocations,
            paths,
            seed,
        }
    }

    /// Runs `corpus` against `target` (which becomes the session's gateway) and checks it.
    pub fn run(
        &mut self,
        target: &'a Target,
        scenario: &ScenarioRun,
        phase: &Phase,
        corpus: &Corpus,
    ) -> Result<Measured> {
        self.target = target;
        let args = self.args;
        let (requests, paths, seed) = (&corpus.requests, &corpus.paths, corpus.seed);
        crate::target::post_revocations(self.target, &corpus.revocations)?;
        let plan = Plan {
            requests: Arc::clone(requests),
            connections: scenario.connections,
            warmup: Duration::from_secs(args.warmup),
            duration: Duration::from_secs(args.duration),
            rate: phase.rate,
            bearer: if let Scenario::Revoke(_) = scenario.scenario {
                self.target
                    .admin_token
                    .clone()
                    .context("revoke:N needs --admin-token or --spawn")?
            } else {
                self.target.api_key.clone()
            },
            timeout: Duration::from_secs(30),
        };
        if let Some(spawned) = &self.target.spawned
            && let Some(why) = spawned.gone()
        {
            anyhow::bail!(
                "the gateway is gone ({why}) before {} {}; its log ends:\n{}",
                scenario.name,
                phase.name,
                spawned.log_tail(20)
            );
        }
        let before = self.target.operator.and_then(scrape);
        let redis_before = self.target.redis.as_ref().and_then(redis::Sample::take);
        let cpu_before = self.gateway_cpu();
        let stall = self.start_stall(phase);
        let stats = run_load(
            self.runtime,
            self.target,
            plan,
            &format!("{} {}", scenario.name, phase.name),
        );
        let stall_ms = stall.and_then(|t| t.join().ok()).and(args.stall_ms);
        let after = self.target.operator.and_then(scrape);
        let redis_after = self.target.redis.as_ref().and_then(redis::Sample::take);
        let cpu_after = self.gateway_cpu();

        let name = &scenario.name;
        let mut run = RunReport::from_stats(&stats, args.duration as f64);
        run.scenario = name.clone();
        run.phase = phase.name.clone();
        run.model = if phase.rate.is_some() {
            "open".into()
        } else {
            "closed".into()
        };
        run.connections = scenario.connections;
        run.target_rate_rps = phase.rate;
        run.replay = self.target.backend;
        run.signatures_per_s = scenario
            .scenario
            .signatures_per_item()
            .map(|s| run.items_per_s * s);
        run.schedule_kept = stats.generator_late_share() <= 0.01;
        if let Some((items_per_s, batch)) = scenario.ceiling {
            run.ceiling_items_per_s = Some(items_per_s);
            run.ceiling_batch = Some(batch);
            run.ratio_to_ceiling = Some(run.items_per_s / items_per_s);
        }
        if let (Some(before), Some(after)) = (&before, &after) {
            run.metrics_check = metrics_check::compare(before, after, &stats, paths);
            if let (Some(start), Some(end)) = (&redis_before, &redis_after) {
                run.redis = Some(redis::phase(before, after, start, end));
            }
            run.gateway = Some(gateway_phase(before, after, cpu_before, cpu_after));
        }
        let mut checks = Vec::new();
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
        let mut next = Vec::new();
        if phase.name == "max" {
            if args.wrk {
                checks.extend(self.wrk_checks(scenario, requests, &run, seed));
            }
            if !args.no_latency_phases && scenario.scenario.latency_phases() {
                let shares: &[f64] = if args.smoke { &[0.5] } else { &[0.5, 0.9] };
                next = shares
                    .iter()
                    .map(|&share| Phase {
                        name: format!("{:.0}%", share * 100.0),
                        rate: Some(run.requests_per_s * share),
                    })
                    .collect();
            }
        }
        Ok(Measured { run, checks, next })
    }

    /// The spawned gateway's CPU seconds and context switches so far, and when they were read.
    fn gateway_cpu(&self) -> Option<(f64, u64, Instant)> {
        let spawned = self.target.spawned.as_ref()?;
        Some((
            spawned.cpu_seconds()?,
            spawned.context_switches()?,
            Instant::now(),
        ))
    }

    /// The stall test: SIGSTOP the spawned gateway mid-way through the first open-loop phase,
    /// SIGCONT it `--stall-ms` later. The thread ends after the SIGCONT.
    fn start_stall(&mut self, phase: &Phase) -> Option<JoinHandle<()>> {
        let (Some(ms), Some(spawned), Some(_)) =
            (self.args.stall_ms, &self.target.spawned, phase.rate)
        else {
            return None;
        };
        if self.stalled {
            return None;
        }
        self.stalled = true;
        let pid = spawned.pid();
        let at =
            Duration::from_secs(self.args.warmup) + Duration::from_secs(self.args.duration) / 2;
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

    /// `--wrk` after a maximum: the same requests under wrk (stateless scenarios), or fresh
    /// presentations for it (verify:N, a presentation being accepted once), drawn from the
    /// phase's `seed`.
    fn wrk_checks(
        &self,
        scenario: &ScenarioRun,
        requests: &[load::Request],
        run: &RunReport,
        seed: u64,
    ) -> Vec<Check> {
        let args = self.args;
        match scenario.scenario {
            Scenario::Signatures(_) | Scenario::Status(_) => {
                let Some(first) = requests.first() else {
                    return Vec::new();
                };
                vec![wrk_checks::rate(
                    self.target,
                    std::slice::from_ref(&first.body),
                    first.path,
                    scenario.connections,
                    args.duration,
                    run.requests_per_s,
                    &scenario.name,
                )]
            }
            Scenario::Verify(_) => {
                // Fresh presentations for wrk: enough for wrk running at up to 2.5x our rate.
                let per_request = scenario.scenario.items_per_request();
                let count = ((run.requests_per_s * args.duration as f64 * 2.5) as usize)
                    .clamp(1000, 3_000_000)
                    * per_request;
                let fresh = scenario::build(
                    scenario.scenario,
                    count,
                    self.issuers,
                    &Mix::default(),
                    seed ^ 0x77_72_6b,
                    unix_now(),
                );
                let bodies: Vec<Bytes> = fresh.requests.iter().map(|r| r.body.clone()).collect();
                wrk_checks::verify(
                    self.target,
                    &bodies,
                    scenario.connections,
                    args.duration,
                    run.requests_per_s,
                    per_request,
                    &scenario.name,
                    self.comparisons,
                    &self.issuers.jwks(),
                )
            }
            _ => Vec::new(),
        }
    }
}

/// The gateway's CPU over the phase (from `/proc`, when spawned) and its coalesced batches
/// (from the `/metrics` scrapes around it).
fn gateway_phase(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    cpu_before: Option<(f64, u64, Instant)>,
    cpu_after: Option<(f64, u64, Instant)>,
) -> GatewayPhase {
    let verdicts = metrics_check::verdicts(after) - metrics_check::verdicts(before);
    let coalesced = metrics_check::delta(before, after, "idgate_coalesced_batches_total");
    let signature_batches = ["ok", "fallback"]
        .iter()
        .map(|result| {
            let key = format!("idgate_signature_batches_total{{result=\"{result}\"}}");
            metrics_check::delta(before, after, &key)
        })
        .sum::<f64>();
    let cpu = cpu_before
        .zip(cpu_after)
        .map(|((c0, s0, t0), (c1, s1, t1))| {
            let seconds = t1.duration_since(t0).as_secs_f64().max(1e-9);
            ((c1 - c0) / seconds, c1 - c0, s1.saturating_sub(s0))
        });
    GatewayPhase {
        cpu_cores: cpu.map(|(cores, _, _)| cores),
        cpu_us_per_verdict: cpu
            .filter(|_| verdicts > 0.0)
            .map(|(_, seconds, _)| seconds / verdicts * 1e6),
        context_switches_per_verdict: cpu
            .filter(|_| verdicts > 0.0)
            .map(|(_, _, switches)| switches as f64 / verdicts),
        coalesced_batches: coalesced.max(0.0) as u64,
        verdicts_per_coalesced_batch: (coalesced > 0.0).then(|| verdicts / coalesced),
        signature_batches: signature_batches.max(0.0) as u64,
        verdicts_per_signature_batch: (signature_batches > 0.0)
            .then(|| verdicts / signature_batches),
    }
}

/// A scenario's share of the per-phase seed, from its name. foldhash with a fixed seed: the
/// same for every run of a build, so `--seed` reproduces a run's corpora.
fn name_seed(name: &str) -> u64 {
    foldhash::quality::FixedState::with_seed(0).hash_one(name)
}

/// Runs one phase's load with a progress bar.
fn run_load(
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
