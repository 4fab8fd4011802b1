//! The `--wrk` cross-checks after a closed-loop maximum: wrk, SPEC §11's reference generator,
//! sends the same requests over as many connections, and its rate must agree with ours within
//! 10%; for verify:N every fresh presentation wrk sent must be counted `valid` by `/metrics`;
//! and the comparison services (`compare/node`, `compare/go`) get the same wrk requests, for
//! figures side by side.

use std::path::Path;

use bytes::Bytes;

use crate::metrics_check::{scrape, valid_verdicts};
use crate::report::Check;
use crate::target::Target;
use crate::wrk;

/// Runs `wrk` on the scenario's request (closed loop, same connections) and compares its
/// requests/s with the generator's.
pub fn rate(
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
pub fn verify(
    target: &Target,
    bodies: &[Bytes],
    connections: usize,
    seconds: u64,
    ours: f64,
    items_per_request: usize,
    name: &str,
    comparisons: &[(wrk::Kind, &Path)],
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
    let before = target.operator.and_then(scrape);
    let url = format!("http://{}/v1/verify", target.public);
    let run = match workload.run(&url, &target.api_key, connections, seconds) {
        Ok(run) => run,
        Err(detail) => return vec![failed(check_name, detail)],
    };
    let after = target.operator.and_then(scrape);
    let sent = run.requests as f64 * items_per_request as f64;
    let counted = match (&before, &after) {
        (Some(before), Some(after)) => Some(valid_verdicts(after) - valid_verdicts(before)),
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
