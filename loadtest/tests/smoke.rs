//! CI smoke run: a few seconds of load against a spawned gateway; the report must follow its
//! schema, and the gateway's `/metrics` must agree with the generator's own counts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

/// One `loadtest --spawn --smoke` run with `extra` arguments; its report, if it wrote one.
struct Smoke {
    dir: tempfile::TempDir,
    output: std::process::Output,
    stdout: String,
    stderr: String,
    report: Option<Value>,
}

fn smoke(extra: &[&str]) -> Smoke {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let html = dir.path().join("report.html");
    let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["--spawn", "--smoke", "--json", json.to_str().unwrap()])
        .args(["--html", html.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    let report = std::fs::read(&json)
        .ok()
        .map(|bytes| serde_json::from_slice(&bytes).unwrap());
    Smoke {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        dir,
        output,
        report,
    }
}

#[test]
fn a_smoke_run_produces_a_valid_report_and_matching_metrics() {
    let run = smoke(&[]);
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    assert!(
        run.output.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        run.output.status
    );
    let report = run.report.expect("a report");
    assert_eq!(report["schema"], "idgate-loadtest/1");
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(report["issuers_jwks"]["keys"].as_array().unwrap().len() == 3);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "two scenarios, a max and a 50% phase each");
    for run in runs {
        for field in [
            "scenario",
            "phase",
            "model",
            "connections",
            "requests",
            "items",
            "requests_per_s",
            "items_per_s",
            "latency_us",
            "statuses",
            "errors",
            "late_sends",
            "schedule_kept",
            "metrics_check",
            "series",
        ] {
            assert!(run.get(field).is_some(), "run lacks {field}: {run}");
        }
        for field in ["p50", "p90", "p99", "p999", "max", "mean"] {
            assert!(run["latency_us"][field].is_number(), "{field}");
        }
        assert!(run["requests"].as_u64().unwrap() > 0, "{run}");
        assert_eq!(run["metrics_check"]["compared"], true);
        assert_eq!(
            run["metrics_check"]["matched"], true,
            "{}",
            run["metrics_check"]
        );
        assert!(run["ceiling_items_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(
            run["statuses"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["200"],
            "{run}"
        );
    }
    assert_eq!(runs[0]["model"], "closed");
    assert_eq!(runs[1]["model"], "open");
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["passed"] == true),
        "{}",
        report["checks"]
    );
    let page = std::fs::read_to_string(run.dir.path().join("report.html")).unwrap();
    assert!(page.contains("<svg") && page.contains("verify:64"));
    assert!(stdout.contains("verify:64") && stdout.contains("status:1000"));
}

/// `--wrk` on verify:N and the comparison services (compare/node, `npm ci` there first;
/// compare/go, built with Debian's golang-go; `.ci/run` installs wrk, Go and the Node service's
/// packages): every presentation wrk sent is verified `valid` per the gateway's /metrics,
/// nothing wraps around into replays, and each comparison service refuses a forged presentation
/// and answers every wrk request with all signatures valid.
#[test]
fn wrk_and_the_comparison_services_run_on_fresh_presentations() {
    let compare = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../compare");
    let run = smoke(&[
        "--scenario",
        "verify:1",
        "--no-latency-phases",
        "--no-ceiling",
        "--wrk",
        "--compare-node",
        compare.join("node").to_str().unwrap(),
        "--compare-go",
        compare.join("go").to_str().unwrap(),
    ]);
    let stderr = &run.stderr;
    let report = run.report.unwrap_or_else(|| panic!("no report: {stderr}"));
    let checks = report["checks"].as_array().unwrap();
    let check = |prefix: &str| {
        checks
            .iter()
            .find(|c| c["name"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no check {prefix}: {}", report["checks"]))
    };
    let verified = check("wrk: every presentation sent was verified valid");
    assert_eq!(verified["passed"], true, "{verified}");
    // The rate comparison is a measurement (it may miss on a busy machine); it must exist.
    assert!(
        check("wrk agrees within 10%")["detail"]
            .as_str()
            .unwrap()
            .contains("signatures/s")
    );
    let node = check("node fastify+jose");
    assert_eq!(node["passed"], true, "{node}\n{stderr}");
    assert!(node["detail"].as_str().unwrap().contains("idgate / node"));
    let go = check("go net/http+crypto/ed25519");
    assert_eq!(go["passed"], true, "{go}\n{stderr}");
    assert!(go["detail"].as_str().unwrap().contains("idgate / go"));
}
