//! The measurement phases of a scenario: the closed-loop maximum (or one open-loop `--rate`
//! phase), then open-loop phases at 50% and 90% of that maximum. Each phase gets a fresh
//! corpus sized for it, posts its revocations, scrapes `/metrics` before and after the load,
//! and yields one [`RunReport`], its checks and the phases it calls for next.
//!
//! **Invariant:** the `/metrics` scrapes bracket exactly one phase's load (warm-up included,
//! which the generator's `all_*` counts include too), so their difference is that phase's.

use std::hash::BuildHasher;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use idgate::clock::unix_now;

use crate::corpus::{Issuers, Mix};
use crate::load::{self, Plan, Progress};
use crate::metrics_check::{self, scrape};
use crate::report::{Check, RunReport};
use crate::scenario::{self, ADMIN_REVOCATIONS, Scenario};
use crate::target::Target;
use crate::{Args, wrk, wrk_checks};

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

impl Session<'_> {
    /// Builds the phase's corpus, runs the load and checks it.
    pub fn measure(&mut self, scenario: &mut ScenarioRun, phase: &Phase) -> Result<Measured> {
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
        crate::target::post_revocations(self.target, &built.revocations)?;
        let paths: Vec<&str> = {
            let mut p: Vec<&str> = built.requests.iter().map(|r| r.path).collect();
            p.sort();
            p.dedup();
            p
        };
        let requests = Arc::new(built.requests);
        let plan = Plan {
            requests: Arc::clone(&requests),
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
        let before = self.target.operator.and_then(scrape);
        let stall = self.start_stall(phase);
        let stats = run_load(
            self.runtime,
            self.target,
            plan,
            &format!("{} {}", scenario.name, phase.name),
        );
        let stall_ms = stall.and_then(|t| t.join().ok()).and(args.stall_ms);
        let after = self.target.operator.and_then(scrape);

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
            run.metrics_check = metrics_check::compare(before, after, &stats, &paths);
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
                checks.extend(self.wrk_checks(scenario, &requests, &run, seed));
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
