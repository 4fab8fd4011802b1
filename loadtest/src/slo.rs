//! Verdicts: the `--slo` terms and the exit code of a finished run (see the exit codes in
//! `main.rs`), with one line on stderr for every reason behind it.

use anyhow::{Context, Result, bail};

use crate::report::{Report, RunReport};

/// A parsed `--slo`: `(term, limit)`, latency limits in microseconds, `min_rate` in items/s.
pub type Slo = Vec<(String, f64)>;

/// Reads `p99=5ms,p999=20ms,min_rate=20000`.
pub fn parse(text: &str) -> Result<Slo> {
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

/// The terms `run` misses, as printable lines.
pub fn misses(run: &RunReport, slo: &[(String, f64)]) -> Vec<String> {
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

/// The run's exit code: the highest of 4 (a schedule not kept: figures void), 5 (`/metrics`
/// disagree), 3 (an SLO missed on a `max` or `rate` phase) and 1 (a failed check), else 0.
/// Prints each reason to stderr.
pub fn exit_code(report: &Report, slo: Option<&[(String, f64)]>) -> u8 {
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
        if let Some(slo) = slo
            && (run.phase == "max" || run.phase == "rate")
        {
            for miss in misses(run, slo) {
                eprintln!("SLO missed: {miss}");
                code = code.max(3);
            }
        }
    }
    if report.checks.iter().any(|c| !c.passed) {
        code = code.max(1);
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slo_terms_are_read_in_microseconds_and_items_per_second() {
        let slo = parse("p99=5ms,p999=250us,max=1s,min_rate=20000").unwrap();
        assert_eq!(
            slo,
            [
                ("p99".to_string(), 5_000.0),
                ("p999".to_string(), 250.0),
                ("max".to_string(), 1e6),
                ("min_rate".to_string(), 20_000.0),
            ]
        );
        assert!(parse("p99=5").is_err());
        assert!(parse("p42=5ms").is_err());
        assert!(parse("p99").is_err());
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn misses_name_the_run_and_the_term() {
        let mut run = RunReport {
            scenario: "verify:1".into(),
            phase: "max".into(),
            items_per_s: 900.0,
            ..RunReport::default()
        };
        run.latency_us.p99 = 6_000;
        let slo = parse("p99=5ms,p50=1ms,min_rate=1000").unwrap();
        assert_eq!(
            misses(&run, &slo),
            [
                "verify:1 max: p99 6.00 ms > 5.00 ms",
                "verify:1 max: 900 items/s < 1000"
            ]
        );
    }
}
