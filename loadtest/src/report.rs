//! Reports: the JSON report (schema `idgate-loadtest/1`, documented in loadtest/README.md), a
//! terminal summary, and a self-contained HTML page with SVG charts.
//!
//! The two charts (five log-scale bars, two polylines: about 70 lines) are written by hand, not
//! with plotters. Measured in a scratch crate: plotters with only its SVG backend would add 3
//! crates to loadtest's tree (plotters, plotters-backend, plotters-svg; num-traits is already
//! in it), about 3 s of build and 83 KB of release binary; with its default features, 36 crates
//! (font-kit, image, the C freetype and fontconfig bindings). So the cost is not the reason:
//! charts of a fixed size and shape would not get much shorter, and by hand the page stays the
//! same as the reports earlier runs wrote (scripts/benchmarks.sh keeps one beside each JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::load::Stats;

pub const SCHEMA: &str = "idgate-loadtest/1";

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub generated_at: i64,
    pub machine: Machine,
    pub gateway: GatewayInfo,
    pub runs: Vec<RunReport>,
    /// With two `--replay` backends: per scenario, the second's items/s over the first's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replay_ab: Vec<ReplayAb>,
    /// Extra checks run alongside (idle memory, the stall test).
    pub checks: Vec<Check>,
}

/// One scenario's A/B comparison of two replay backends, round by round.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayAb {
    pub scenario: String,
    /// `"<second>/<first>"`, e.g. `redis/memory`.
    pub ratio_of: String,
    /// The second backend's items/s over the first's, per round.
    pub ratios: Vec<f64>,
    pub median: f64,
    /// The second gateway's CPU per verdict over the first's, per round (less sensitive than
    /// items/s to how much of a shared machine each phase got).
    pub cpu_per_verdict_ratios: Vec<f64>,
    pub cpu_per_verdict_median: f64,
}

/// The A/B comparisons of `runs` (empty unless two backends ran).
pub fn replay_ab(runs: &[RunReport], backends: &[crate::ReplayBackend]) -> Vec<ReplayAb> {
    let [a, b] = backends else {
        return Vec::new();
    };
    let mut scenarios: Vec<&str> = runs.iter().map(|r| r.scenario.as_str()).collect();
    scenarios.dedup();
    scenarios
        .into_iter()
        .map(|scenario| {
            // (first, second) of each round.
            let pairs: Vec<(&RunReport, &RunReport)> = runs
                .iter()
                .filter(|r| r.scenario == scenario && r.replay == Some(a.name()))
                .filter_map(|first| {
                    let second = runs.iter().find(|r| {
                        r.scenario == scenario
                            && r.replay == Some(b.name())
                            && r.round == first.round
                    })?;
                    Some((first, second))
                })
                .collect();
            let ratios: Vec<f64> = pairs
                .iter()
                .map(|(x, y)| y.items_per_s / x.items_per_s.max(1e-9))
                .collect();
            let cpu = |r: &RunReport| r.gateway.as_ref().and_then(|g| g.cpu_us_per_verdict);
            let cpu_ratios: Vec<f64> = pairs
                .iter()
                .filter_map(|(x, y)| Some(cpu(y)? / cpu(x)?))
                .collect();
            ReplayAb {
                scenario: scenario.to_string(),
                ratio_of: format!("{}/{}", b.name(), a.name()),
                median: median(&ratios),
                ratios,
                cpu_per_verdict_median: median(&cpu_ratios),
                cpu_per_verdict_ratios: cpu_ratios,
            }
        })
        .collect()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
}

impl Machine {
    /// This machine, with `cores` cores and the CPU model `/proc/cpuinfo` names.
    pub fn this(cores: usize) -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine { cores, cpu }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct GatewayInfo {
    /// The gateway binary (when spawned).
    pub binary: Option<String>,
    pub public: String,
    pub spawned: bool,
    pub verify_threads: usize,
    /// The spawned gateways' replay stores: `memory`, `redis` or `memory,redis` (`--replay`).
    pub replay: String,
    /// With `--replay redis`: the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisInfo>,
}

/// The redis-server of a `--replay redis` run.
#[derive(Clone, Debug, Serialize)]
pub struct RedisInfo {
    pub version: String,
    pub url: String,
    /// What `--redis-fill` measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fill: Option<crate::redis::Fill>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Late {
    /// Sends that started late because their connection was still waiting for the server.
    pub server_backpressure: u64,
    /// Sends that started late although their connection was free: the generator's own lag.
    pub generator: u64,
    pub max_generator_lag_ms: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct MetricsCheck {
    pub compared: bool,
    pub matched: bool,
    pub mismatches: Vec<String>,
}

/// What the gateway spent on a phase (warm-up included, like the `/metrics` cross-check).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GatewayPhase {
    /// CPU (user + system, every thread) in core-seconds per second; `None` unless spawned.
    pub cpu_cores: Option<f64>,
    /// Gateway CPU per presentation verdict, µs; `None` unless spawned.
    pub cpu_us_per_verdict: Option<f64>,
    /// Context switches of the gateway's threads per verdict; `None` unless spawned.
    pub context_switches_per_verdict: Option<f64>,
    /// Engine batches formed from several small requests (`idgate_coalesced_batches_total`).
    pub coalesced_batches: u64,
    /// Verdicts per coalesced batch (an upper bound on a coalesced batch's size: verdicts of
    /// lone requests are counted too).
    pub verdicts_per_coalesced_batch: Option<f64>,
    /// Batch-verification equations (`idgate_signature_batches_total`, ok and fallback; an
    /// engine batch is split across the pool threads, a lone signature is not counted).
    pub signature_batches: u64,
    /// Verdicts per such equation: how large the batches the engine verified were (each
    /// presentation holds two signatures).
    pub verdicts_per_signature_batch: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SecondReport {
    pub t: usize,
    pub requests: u64,
    pub items: u64,
    pub errors: u64,
    pub p99_us: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    pub scenario: String,
    /// The spawned gateway's replay store (`memory`, `redis`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<&'static str>,
    /// With two `--replay` backends: the A/B round (1, 2, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
    /// `max` (closed loop, as fast as possible), `50%` / `90%` (open loop at that share of the
    /// max), or `rate` (open loop at a given rate).
    pub phase: String,
    pub model: String,
    pub connections: usize,
    pub target_rate_rps: Option<f64>,
    pub duration_s: f64,
    pub requests: u64,
    pub items: u64,
    pub requests_per_s: f64,
    pub items_per_s: f64,
    /// Ed25519 signatures per second (two per presentation; one per raw item).
    pub signatures_per_s: Option<f64>,
    /// Latencies in microseconds (open loop: from the intended send time).
    pub latency_us: Latency,
    pub statuses: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub outcomes: BTreeMap<String, u64>,
    pub late_sends: Late,
    /// False when the generator could not keep an open-loop schedule: figures are then void.
    pub schedule_kept: bool,
    pub ceiling_items_per_s: Option<f64>,
    pub ceiling_batch: Option<usize>,
    pub ratio_to_ceiling: Option<f64>,
    pub metrics_check: MetricsCheck,
    /// The gateway's side of the phase, from `/proc` (spawned only) and its `/metrics`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayPhase>,
    /// With `--replay redis`: the gateway's round trips to Redis and the server's CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<crate::redis::Phase>,
    pub series: Vec<SecondReport>,
}

impl RunReport {
    pub fn from_stats(stats: &Stats, seconds: f64) -> RunReport {
        let latency = &stats.latency;
        let percentile = |q: f64| {
            if latency.is_empty() {
                0
            } else {
                latency.value_at_quantile(q)
            }
        };
        RunReport {
            duration_s: seconds,
            requests: stats.requests,
            items: stats.items,
            requests_per_s: stats.requests as f64 / seconds,
            items_per_s: stats.items as f64 / seconds,
            latency_us: Latency {
                p50: percentile(0.5),
                p90: percentile(0.9),
                p99: percentile(0.99),
                p999: percentile(0.999),
                max: latency.max(),
                mean: if latency.is_empty() {
                    0.0
                } else {
                    latency.mean()
                },
            },
            statuses: stats
                .statuses
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            errors: stats
                .errors
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            outcomes: stats.outcomes.clone(),
            late_sends: Late {
                server_backpressure: stats.late_server,
                generator: stats.late_generator,
                max_generator_lag_ms: stats.max_generator_lag.as_secs_f64() * 1e3,
            },
            series: stats
                .series
                .iter()
                .enumerate()
                .map(|(t, s)| SecondReport {
                    t,
                    requests: s.requests,
                    items: s.items,
                    errors: s.errors,
                    p99_us: if s.latency.is_empty() {
                        0
                    } else {
                        s.latency.value_at_quantile(0.99)
                    },
                })
                .collect(),
            ..RunReport::default()
        }
    }
}

/// Writes the JSON report, with the corpus issuers' JWKS beside the schema's fields (so an
/// external gateway can be set up to trust them), and the HTML page; creates their
/// directories and prints where they are.
pub fn write(
    report: &Report,
    json_path: &Path,
    html_path: &Path,
    issuers_jwks: serde_json::Value,
) -> anyhow::Result<()> {
    for path in [json_path, html_path] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
    }
    let mut document = serde_json::to_value(report)?;
    document["issuers_jwks"] = issuers_jwks;
    std::fs::write(json_path, serde_json::to_string_pretty(&document)?)?;
    std::fs::write(html_path, html(report))?;
    println!(
        "\nreports: {} and {}",
        json_path.display(),
        html_path.display()
    );
    Ok(())
}

fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

/// One line per run, for the terminal.
/// A run's name in the terminal and HTML tables: its scenario, and in an A/B run its backend
/// and round.
fn label(run: &RunReport) -> String {
    match (run.round, run.replay) {
        (Some(round), Some(replay)) => format!("{} {replay} #{round}", run.scenario),
        _ => run.scenario.clone(),
    }
}

pub fn print_summary(report: &Report) {
    let w = report
        .runs
        .iter()
        .map(|r| label(r).len())
        .max()
        .unwrap_or(0)
        .max(16);
    println!(
        "\n{:<w$} {:<5} {:>5} {:>11} {:>11} {:>11} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9}  notes",
        "scenario",
        "phase",
        "conns",
        "req/s",
        "items/s",
        "ceiling",
        "ratio",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9",
        "max ms"
    );
    for run in &report.runs {
        let ceiling = run
            .ceiling_items_per_s
            .map_or("-".into(), |c| format!("{c:.0}"));
        let ratio = run
            .ratio_to_ceiling
            .map_or("-".into(), |r| format!("{:.0}%", r * 100.0));
        let mut notes = Vec::new();
        let not_ok: u64 = run
            .statuses
            .iter()
            .filter(|(code, _)| code.as_str() != "200")
            .map(|(_, n)| n)
            .sum();
        if not_ok > 0 {
            notes.push(format!("non-200: {not_ok}"));
        }
        let errors: u64 = run.errors.values().sum();
        if errors > 0 {
            notes.push(format!("errors: {errors}"));
        }
        if !run.schedule_kept {
            notes.push("SCHEDULE NOT KEPT".into());
        }
        if run.metrics_check.compared && !run.metrics_check.matched {
            notes.push("METRICS MISMATCH".into());
        }
        println!(
            "{:<w$} {:<5} {:>5} {:>11.0} {:>11.0} {:>11} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9}  {}",
            label(run),
            run.phase,
            run.connections,
            run.requests_per_s,
            run.items_per_s,
            ceiling,
            ratio,
            ms(run.latency_us.p50),
            ms(run.latency_us.p90),
            ms(run.latency_us.p99),
            ms(run.latency_us.p999),
            ms(run.latency_us.max),
            notes.join("; ")
        );
    }
    for run in &report.runs {
        if let Some(gateway) = run.gateway.as_ref().filter(|g| g.cpu_cores.is_some()) {
            println!(
                "gateway {:<14} {:<5} {}",
                label(run),
                run.phase,
                gateway_line(gateway)
            );
        }
        if let Some(redis) = &run.redis {
            println!(
                "redis {:<16} {:<5} {}",
                label(run),
                run.phase,
                redis_line(redis)
            );
        }
    }
    for ab in &report.replay_ab {
        let list = |values: &[f64]| {
            values
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "A/B {}: {} items/s, median {:.3} over {} rounds ({}); gateway CPU per verdict, median {:.3} ({})",
            ab.scenario,
            ab.ratio_of,
            ab.median,
            ab.ratios.len(),
            list(&ab.ratios),
            ab.cpu_per_verdict_median,
            list(&ab.cpu_per_verdict_ratios),
        );
    }
    for check in &report.checks {
        println!(
            "check {:<28} {}  {}",
            check.name,
            if check.passed { "ok" } else { "FAILED" },
            check.detail
        );
    }
}

/// A phase's gateway CPU and batching in one line (terminal).
fn gateway_line(gateway: &GatewayPhase) -> String {
    let mut line = format!(
        "CPU {:.2} cores, {:.1} µs and {:.2} context switches per verdict",
        gateway.cpu_cores.unwrap_or(0.0),
        gateway.cpu_us_per_verdict.unwrap_or(0.0),
        gateway.context_switches_per_verdict.unwrap_or(0.0)
    );
    if let Some(size) = gateway.verdicts_per_signature_batch {
        let _ = write!(
            line,
            "; {} signature batches, {size:.1} verdicts each",
            gateway.signature_batches
        );
    }
    if let Some(size) = gateway.verdicts_per_coalesced_batch {
        let _ = write!(
            line,
            "; {} coalesced batches, {size:.1} verdicts each",
            gateway.coalesced_batches
        );
    }
    line
}

/// A phase's Redis figures in one line (terminal and HTML).
fn redis_line(redis: &crate::redis::Phase) -> String {
    let rt = &redis.round_trip_us;
    format!(
        "round trip p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms (in the {:.2}–{:.2} ms bucket), mean {:.3} ms; {} pipelines of {:.1} SETs; redis-server CPU {:.0}% of a core, {:.2} µs per SET; {} keys",
        rt.p50 / 1e3,
        rt.p90 / 1e3,
        rt.p99 / 1e3,
        rt.p99_bucket.0 / 1e3,
        rt.p99_bucket.1 / 1e3,
        rt.mean / 1e3,
        redis.round_trips,
        redis.sets_per_round_trip,
        redis.server_cpu_cores * 100.0,
        redis.set_usec_per_call,
        redis.keys,
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart of latency percentiles (log scale).
fn percentile_chart(run: &RunReport) -> String {
    let bars = [
        ("p50", run.latency_us.p50),
        ("p90", run.latency_us.p90),
        ("p99", run.latency_us.p99),
        ("p99.9", run.latency_us.p999),
        ("max", run.latency_us.max),
    ];
    let top = bars.iter().map(|(_, v)| *v).max().unwrap_or(1).max(1) as f64;
    let scale = |v: u64| {
        if v == 0 {
            0.0
        } else {
            (v as f64).ln().max(0.0) / top.ln().max(1.0) * 360.0
        }
    };
    let mut svg = String::from(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="520" height="130" font-family="sans-serif" font-size="12">"#,
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = 8 + i * 24;
        let _ = write!(
            svg,
            r##"<text x="0" y="{ty}">{label}</text><rect x="50" y="{y}" width="{w:.1}" height="16" fill="#4a7bd0"/><text x="{tx:.1}" y="{ty}">{ms} ms</text>"##,
            ty = y + 12,
            w = scale(*value),
            tx = 56.0 + scale(*value),
            ms = ms(*value)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Items per second over the run, with p99 latency per second.
fn series_chart(run: &RunReport) -> String {
    let width = 520.0;
    let height = 140.0;
    let points = &run.series;
    if points.is_empty() {
        return String::new();
    }
    let max_items = points.iter().map(|p| p.items).max().unwrap_or(1).max(1) as f64;
    let max_p99 = points.iter().map(|p| p.p99_us).max().unwrap_or(1).max(1) as f64;
    let step = width / points.len().max(2).saturating_sub(1) as f64;
    let line = |value: &dyn Fn(&SecondReport) -> f64, top: f64| {
        points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "{:.1},{:.1}",
                    i as f64 * step,
                    height - value(p) / top * (height - 10.0)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h2}" font-family="sans-serif" font-size="11"><polyline fill="none" stroke="#2a9d4a" stroke-width="2" points="{items}"/><polyline fill="none" stroke="#d05a4a" stroke-width="1" stroke-dasharray="4 3" points="{p99}"/><text x="0" y="{ly}" fill="#2a9d4a">items/s (max {mi:.0})</text><text x="200" y="{ly}" fill="#d05a4a">p99 per second (max {mp} ms)</text></svg>"##,
        w = width,
        h2 = height + 20.0,
        items = line(&|p| p.items as f64, max_items),
        p99 = line(&|p| p.p99_us as f64, max_p99),
        ly = height + 16.0,
        mi = max_items,
        mp = ms(max_p99 as u64),
    )
}

/// The self-contained HTML report.
pub fn html(report: &Report) -> String {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>idgate load test</title><style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}.run{margin:2em 0;border-top:1px solid #ddd}</style></head><body>",
    );
    let _ = write!(
        page,
        "<h1>idgate load test</h1><p>{cores} cores ({cpu}); gateway {public} ({spawned}, {threads} verify threads, {replay} replay store); schema {SCHEMA}</p>",
        cores = report.machine.cores,
        cpu = escape(&report.machine.cpu),
        public = escape(&report.gateway.public),
        spawned = if report.gateway.spawned {
            "spawned"
        } else {
            "external"
        },
        threads = report.gateway.verify_threads,
        replay = report.gateway.replay,
    );
    page.push_str("<table><tr><th>scenario</th><th>phase</th><th>conns</th><th>req/s</th><th>items/s</th><th>ceiling</th><th>ratio</th><th>p50 ms</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>");
    for run in &report.runs {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&label(run)),
            escape(&run.phase),
            run.connections,
            run.requests_per_s,
            run.items_per_s,
            run.ceiling_items_per_s
                .map_or("-".into(), |c| format!("{c:.0}")),
            run.ratio_to_ceiling
                .map_or("-".into(), |r| format!("{:.0}%", r * 100.0)),
            ms(run.latency_us.p50),
            ms(run.latency_us.p90),
            ms(run.latency_us.p99),
            ms(run.latency_us.p999),
            ms(run.latency_us.max),
        );
    }
    page.push_str("</table>");
    for check in &report.checks {
        let _ = write!(
            page,
            "<p>check {}: <b>{}</b> — {}</p>",
            escape(&check.name),
            if check.passed { "ok" } else { "FAILED" },
            escape(&check.detail)
        );
    }
    for run in &report.runs {
        let _ = write!(
            page,
            "<div class=\"run\"><h2>{} — {} ({} loop, {} connections)</h2><p>latency percentiles</p>{}<p>throughput over time</p>{}<p>statuses {:?}; errors {:?}; outcomes {:?}; late sends: server {} / generator {}</p></div>",
            escape(&label(run)),
            escape(&run.phase),
            escape(&run.model),
            run.connections,
            percentile_chart(run),
            series_chart(run),
            run.statuses,
            run.errors,
            run.outcomes,
            run.late_sends.server_backpressure,
            run.late_sends.generator,
        );
        if let Some(redis) = &run.redis {
            let _ = write!(page, "<p>redis: {}</p>", escape(&redis_line(redis)));
        }
    }
    page.push_str("</body></html>");
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReplayBackend::{Memory, Redis};

    fn run(scenario: &str, replay: &'static str, round: u32, items: f64, cpu: f64) -> RunReport {
        RunReport {
            scenario: scenario.into(),
            replay: Some(replay),
            round: Some(round),
            items_per_s: items,
            gateway: Some(GatewayPhase {
                cpu_us_per_verdict: Some(cpu),
                ..GatewayPhase::default()
            }),
            ..RunReport::default()
        }
    }

    #[test]
    fn a_b_ratios_pair_each_round_whatever_the_order() {
        let runs = [
            run("verify:1", "memory", 1, 100.0, 50.0),
            run("verify:1", "redis", 1, 80.0, 60.0),
            run("verify:1", "redis", 2, 90.0, 55.0),
            run("verify:1", "memory", 2, 100.0, 50.0),
            run("verify:1", "memory", 3, 200.0, 50.0),
            run("verify:1", "redis", 3, 170.0, 65.0),
            run("verify:256", "memory", 1, 10.0, 20.0),
            run("verify:256", "redis", 1, 11.0, 20.0),
        ];
        let ab = replay_ab(&runs, &[Memory, Redis]);
        assert_eq!(ab.len(), 2);
        assert_eq!(ab[0].scenario, "verify:1");
        assert_eq!(ab[0].ratio_of, "redis/memory");
        assert_eq!(ab[0].ratios, [0.8, 0.9, 0.85]);
        assert!((ab[0].median - 0.85).abs() < 1e-12);
        assert_eq!(ab[0].cpu_per_verdict_ratios, [1.2, 1.1, 1.3]);
        assert!((ab[0].cpu_per_verdict_median - 1.2).abs() < 1e-12);
        assert!((ab[1].median - 1.1).abs() < 1e-12);
        assert!(replay_ab(&runs, &[Memory]).is_empty());
    }
}
