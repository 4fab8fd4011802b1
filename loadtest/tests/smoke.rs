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

impl Smoke {
    fn assert_success(&self) {
        assert!(
            self.output.status.success(),
            "exit {:?}\n{}\n{}",
            self.output.status,
            self.stdout,
            self.stderr
        );
    }
}

fn smoke(extra: &[&str]) -> Smoke {
    // Exit code 4 means only that the generator could not keep its open-loop schedule: its
    // figures are void, which on a CI machine running other tests beside this one happens now
    // and then. Such a run is repeated (at most three attempts); the run that is checked is
    // always one that exited 0 or failed for another reason.
    let mut attempt = 1;
    loop {
        let run = smoke_once(extra);
        if run.output.status.code() != Some(4) || attempt == 3 {
            return run;
        }
        eprintln!(
            "attempt {attempt}: schedule not kept, running again\n{}",
            run.stderr
        );
        attempt += 1;
    }
}

fn smoke_once(extra: &[&str]) -> Smoke {
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
    run.assert_success();
    let stdout = &run.stdout;
    let report = run.report.expect("a report");
    assert_eq!(report["schema"], "idgate-loadtest/1");
    assert_eq!(report["gateway"]["replay"], "memory");
    assert!(report["gateway"].get("redis").is_none());
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
        assert!(run.get("redis").is_none(), "{run}");
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

/// For a test that cannot run because a tool outside the repository is missing (`why` says
/// which, and how to get it): with `CI=true` the test fails; otherwise it prints a notice, adds
/// it to the file `IDGATE_TEST_NOTICES` names (scripts/test lists them after the run) and the
/// caller returns without testing. The same rule as the gateway's tests (tests/common).
fn cannot_run(why: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true, but loadtest smoke::{test} cannot run: {why}");
    }
    let notice = format!("skipped: loadtest smoke::{test}: {why}\n");
    eprint!("NOTICE: {notice}");
    if let Some(path) = std::env::var_os("IDGATE_TEST_NOTICES") {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(notice.as_bytes()))
            .unwrap_or_else(|e| panic!("cannot record the skip in {path:?}: {e}"));
    }
}

/// Whether `redis-server` is on `PATH`; when it is not, [`cannot_run`] says so.
fn redis_server_installed() -> bool {
    let installed = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok();
    if !installed {
        cannot_run("redis-server is not installed (apt-get install redis-server)");
    }
    installed
}

/// `--replay redis`: the generator starts its own redis-server (a free port, never 6379), the
/// spawned gateway keeps its replay nonces there (every presentation `valid`, each phase
/// reporting the gateway's round trips to Redis), `--redis-fill` writes keys in the gateway's
/// format and measures their memory, and the server is gone when the run ends.
#[test]
fn a_redis_replay_smoke_run_reports_round_trips_and_stops_its_server() {
    if !redis_server_installed() {
        return;
    }
    let run = smoke(&[
        "--replay",
        "redis",
        "--redis-fill",
        "20000",
        "--scenario",
        "verify:64",
        "--scenario",
        "verify:1",
        "--no-latency-phases",
        "--no-ceiling",
    ]);
    run.assert_success();
    let stdout = &run.stdout;
    let report = run.report.expect("a report");
    let gateway = &report["gateway"];
    assert_eq!(gateway["replay"], "redis", "{gateway}");
    let url = gateway["redis"]["url"].as_str().unwrap();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 6379, "{url}");
    let fill = &gateway["redis"]["fill"];
    assert_eq!(fill["keys"], 20000, "{fill}");
    let per_key = fill["bytes_per_key"].as_f64().unwrap();
    assert!((40.0..1000.0).contains(&per_key), "{fill}");
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let mut keys_before = 20_000;
    for run in runs {
        let valid = run["outcomes"]["valid"].as_u64().unwrap_or(0);
        assert!(valid > 0, "{run}");
        assert_eq!(
            run["outcomes"].as_object().unwrap().len(),
            1,
            "only valid verdicts: {}",
            run["outcomes"]
        );
        assert_eq!(
            run["metrics_check"]["matched"], true,
            "{}",
            run["metrics_check"]
        );
        let redis = &run["redis"];
        assert!(redis["round_trips"].as_u64().unwrap() > 0, "{redis}");
        assert!(
            redis["sets_per_round_trip"].as_f64().unwrap() >= 1.0,
            "{redis}"
        );
        let rt = &redis["round_trip_us"];
        let (p50, p99) = (rt["p50"].as_f64().unwrap(), rt["p99"].as_f64().unwrap());
        assert!(p50 > 0.0 && p50 <= p99, "{rt}");
        // Every nonce the gateway accepted is a key in Redis (warm-up included, so at least).
        let keys = redis["keys"].as_u64().unwrap();
        assert!(keys >= keys_before + valid, "{redis}");
        keys_before = keys;
    }
    assert!(stdout.contains("redis verify:64") && stdout.contains("round trip p50"));
    // The run's redis-server is gone.
    let refused = std::net::TcpStream::connect(("127.0.0.1", port)).is_err();
    assert!(refused, "redis-server on port {port} still answers");
}

/// `--replay memory,redis`: two gateways, each round's requests sent to both (each store
/// accepts every presentation once), the order alternating, and the per-round ratios reported.
#[test]
fn an_a_b_run_sends_each_round_to_both_gateways_in_alternating_order() {
    if !redis_server_installed() {
        return;
    }
    let run = smoke(&[
        "--replay",
        "memory,redis",
        "--rounds",
        "2",
        "--scenario",
        "verify:64",
        "--no-ceiling",
    ]);
    run.assert_success();
    let stdout = &run.stdout;
    let report = run.report.expect("a report");
    assert_eq!(report["gateway"]["replay"], "memory,redis");
    let runs = report["runs"].as_array().unwrap();
    let order: Vec<(String, u64)> = runs
        .iter()
        .map(|r| {
            (
                r["replay"].as_str().unwrap().to_string(),
                r["round"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [("memory", 1), ("redis", 1), ("redis", 2), ("memory", 2)];
    assert_eq!(
        order,
        expected.map(|(b, r)| (b.to_string(), r)),
        "one max phase per backend and round, alternating"
    );
    for run in runs {
        assert_eq!(run["phase"], "max");
        assert_eq!(run["outcomes"].as_object().unwrap().len(), 1, "{run}");
        assert!(run["outcomes"]["valid"].as_u64().unwrap() > 0, "{run}");
        assert_eq!(run["metrics_check"]["matched"], true, "{run}");
        assert_eq!(
            run.get("redis").is_some(),
            run["replay"] == "redis",
            "{run}"
        );
    }
    let ab = &report["replay_ab"][0];
    assert_eq!(ab["scenario"], "verify:64");
    assert_eq!(ab["ratio_of"], "redis/memory");
    assert_eq!(ab["ratios"].as_array().unwrap().len(), 2, "{ab}");
    assert!(ab["median"].as_f64().unwrap() > 0.0, "{ab}");
    assert!(stdout.contains("A/B verify:64: redis/memory"), "{stdout}");
}

#[test]
fn redis_needs_a_spawned_gateway_and_the_fill_needs_redis() {
    for (args, says) in [
        (
            &[
                "--replay",
                "redis",
                "--target",
                "127.0.0.1:1",
                "--api-key",
                "k",
            ][..],
            "--spawn",
        ),
        (&["--spawn", "--redis-fill", "10"][..], "--replay redis"),
        (
            &["--spawn", "--replay", "memory,redis", "--wrk"][..],
            "one --replay",
        ),
        (&["--spawn", "--replay", "redis,redis"][..], "memory,redis"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// `--feed`: two gateways on a redis-server of the run's own (append-only file on) and a
/// control gateway on a stream of its own. Every probe posted to A shows on B, the rounds
/// alternate control and applying with the feed applied on B only in the latter, and the
/// import reaches both gateways.
#[test]
fn a_feed_smoke_run_measures_propagation_the_busy_instance_and_an_import() {
    if !redis_server_installed() {
        return;
    }
    let run = smoke(&[
        "--feed",
        "--feed-import",
        "100000",
        "--rounds",
        "2",
        "--no-ceiling",
    ]);
    run.assert_success();
    let report = run.report.expect("a report");
    assert_eq!(report["schema"], "idgate-loadtest-feed/1");
    assert_eq!(report["appendfsync"], "everysec", "{report}");
    let p = &report["propagation"];
    // Two seconds measured, one probe every 10 ms.
    assert!(p["probes"].as_u64().unwrap() >= 150, "{p}");
    assert_eq!(p["probes_lost"], 0, "{p}");
    assert_eq!(p["background_errors"], 0, "{p}");
    let ms = &p["propagation_ms"];
    let (p50, p99) = (ms["p50"].as_f64().unwrap(), ms["p99"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p99 && p99 < 1000.0, "{ms}");
    // The acknowledgement comes before the update shows on B.
    assert!(p["publish_ack_ms"]["p50"].as_f64().unwrap() <= p50, "{p}");
    let achieved = p["achieved_updates_per_s"].as_f64().unwrap();
    assert!((900.0..1100.0).contains(&achieved), "{p}");
    let rounds = report["busy"]["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{rounds:?}");
    assert_eq!(rounds[0]["loaded"], false);
    assert_eq!(rounds[1]["loaded"], true);
    // B applies the published updates only when they go to A.
    let applied = |r: &Value| r["feed_entries_applied"].as_f64().unwrap();
    assert!(applied(&rounds[0]) < 100.0, "{rounds:?}");
    assert!(applied(&rounds[1]) >= 1800.0, "{rounds:?}");
    for round in rounds {
        assert!(round["items_per_s"].as_f64().unwrap() > 0.0, "{round}");
        assert!(round["updates_per_s"].as_f64().unwrap() >= 900.0, "{round}");
    }
    assert!(report["busy"]["ratio"].as_f64().unwrap() > 0.0);
    assert_eq!(report["busy"]["pair_ratios"].as_array().unwrap().len(), 1);
    let import = &report["import"];
    assert_eq!(import["entries"], 100000, "{import}");
    let both = import["visible_on_both_s"].as_f64().unwrap();
    assert!(both > 0.0 && both < 60.0, "{import}");
    assert!(
        run.stdout.contains("feed propagation A → B"),
        "{}",
        run.stdout
    );
}
