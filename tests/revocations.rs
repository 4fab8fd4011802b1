//! The revocation list at scale, through the real binary: offline import (all or nothing, line
//! numbers, refused beside a running gateway), `revocations stats`, streamed admin bodies larger
//! than the API body limit, and background compaction across restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed setup should stop loudly

mod common;

use std::path::Path;
use std::process::Command;

use common::gateway::{BinaryGateway, Client, Options, write_config};
use common::{Scheme, idgate_bin};
use serde_json::Value;

fn entry_line(i: usize, status: &str) -> String {
    let reasons = ["lost", "stolen", "deceased"];
    let reason = if status == "active" {
        String::new()
    } else {
        format!(",\"reason\":\"{}\"", reasons[i % 3])
    };
    let kind = if i.is_multiple_of(2) {
        "subject"
    } else {
        "credential"
    };
    format!(
        "{{\"kind\":\"{kind}\",\"id\":\"imp-{i}\",\"status\":\"{status}\"{reason},\"at\":{}}}\n",
        1000 + i
    )
}

fn idgate(args: &[&str]) -> std::process::Output {
    Command::new(idgate_bin()).args(args).output().unwrap()
}

fn import(file: &Path, data_dir: &Path) -> std::process::Output {
    idgate(&[
        "revocations",
        "import",
        file.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
}

fn stats_json(data_dir: &Path) -> Value {
    let out = idgate(&[
        "revocations",
        "stats",
        "--json",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn import_is_all_or_nothing_and_the_gateway_starts_from_it() {
    let scheme = Scheme::new(80);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &scheme, &Options::default());
    let data_dir = dir.path().join("data");
    let file = dir.path().join("entries.jsonl");
    let count = 30_000;
    let mut lines: Vec<String> = (0..count)
        .map(|i| entry_line(i, if i % 10 == 0 { "suspended" } else { "revoked" }))
        .collect();
    let good = lines.concat();
    lines[21_337] =
        "{\"kind\":\"subject\",\"id\":\"imp-x\",\"status\":\"revoked\",\"at\":5}\n".into();
    std::fs::write(&file, lines.concat()).unwrap();

    let out = import(&file, &data_dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 21338")
            && stderr.contains("reason is required")
            && stderr.contains("nothing was imported"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("imp-x"),
        "errors never quote the ID: {stderr}"
    );
    assert_eq!(stats_json(&data_dir)["records"], 0);

    std::fs::write(&file, &good).unwrap();
    let out = import(&file, &data_dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("imported {count} entries")));
    let stats = stats_json(&data_dir);
    assert_eq!(stats["adverse"], count);
    assert_eq!(stats["by_kind_and_status"]["subject"]["suspended"], 3000);
    assert_eq!(stats["by_kind_and_status"]["subject"]["revoked"], 12_000);
    assert_eq!(stats["by_kind_and_status"]["credential"]["revoked"], 15_000);
    assert_eq!(stats["adverse_by_reason"]["stolen"], 10_000);

    // The gateway starts from the imported data; a second import is refused while it runs.
    let gateway = BinaryGateway::start(&config);
    let reply = gateway.status(&["imp-0", "imp-2", "imp-3"], &["imp-1", "imp-2"]);
    let results = reply.json()["results"].clone();
    let statuses: Vec<&str> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["suspended", "revoked", "active", "revoked", "active"]
    );
    assert_eq!(results[1]["reason"], "deceased");
    assert_eq!(gateway.metric("idgate_revocation_entries"), count as f64);
    let out = import(&file, &data_dir);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Stats are read-only and work beside the running gateway.
    assert_eq!(stats_json(&data_dir)["adverse"], count);
}

#[test]
fn a_streamed_admin_body_beyond_the_api_body_limit_is_applied_whole_or_not_at_all() {
    let scheme = Scheme::new(81);
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        max_body_bytes: 1 << 20,
        ..Options::default()
    };
    let config = write_config(dir.path(), &scheme, &options);
    let gateway = BinaryGateway::start(&config);
    let count = 40_000; // ~4 MB of JSON Lines, four times the public body limit
    let mut body: String = (0..count).map(|i| entry_line(i, "revoked")).collect();
    assert!(body.len() > 3 << 20);
    body.push_str("{\"kind\":\"subject\",\"id\":\"late\",\"status\":\"revoked\",\"reason\":\"lost\",\"at\":1,\"extra\":true}\n");
    let reply = gateway.revoke(&body);
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.text().contains(&format!("line {}", count + 1)),
        "{}",
        reply.text()
    );
    assert_eq!(
        gateway.revocation("subject", "imp-0").status,
        404,
        "nothing applied"
    );
    assert_eq!(gateway.metric("idgate_revocation_entries"), 0.0);

    let body: String = (0..count).map(|i| entry_line(i, "revoked")).collect();
    let reply = gateway.revoke(&body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["applied"], count);
    assert_eq!(gateway.metric("idgate_revocation_entries"), count as f64);
    assert_eq!(
        gateway.revocation("credential", "imp-39999").json()["status"],
        "revoked"
    );
}

#[test]
fn compaction_runs_in_the_background_and_restarts_see_everything() {
    let scheme = Scheme::new(82);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &scheme, &Options::default());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen(
            "[revocation]\n",
            "[revocation]\nsnapshot_log_bytes = 8192\n",
            1,
        ),
    )
    .unwrap();
    let gateway = BinaryGateway::start(&config);
    for round in 0..40 {
        let body: String = (0..200)
            .map(|i| entry_line(round * 200 + i, "revoked"))
            .collect();
        assert_eq!(gateway.revoke(&body).status, 200);
        // Reinstate a few: tombstones must survive compaction too.
        assert_eq!(
            gateway
                .revoke(&entry_line(round * 200, "active").replace("\"at\":", "\"at\":9"))
                .status,
            200
        );
    }
    let compactions = gateway.metric("idgate_revocation_compactions_total{result=\"ok\"}");
    assert!(compactions >= 2.0, "{}", gateway.metrics());
    assert_eq!(
        gateway.metric("idgate_revocation_compactions_total{result=\"error\"}"),
        0.0
    );
    assert!(gateway.metric("idgate_revocation_snapshot_bytes") > 0.0);
    assert!(gateway.metric("idgate_revocation_log_bytes") < 200_000.0);
    assert_eq!(gateway.metric("idgate_revocation_entries"), 7960.0);
    drop(gateway); // kill -9
    let revocation_dir = dir.path().join("data").join("revocations");
    let segments = std::fs::read_dir(&revocation_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("log.")
        })
        .count();
    assert!(
        segments <= 3,
        "covered segments are deleted ({segments} left)"
    );
    let again = BinaryGateway::start(&config);
    assert_eq!(again.metric("idgate_revocation_entries"), 7960.0);
    assert_eq!(again.metric("idgate_revocation_records"), 8000.0);
    assert_eq!(
        again.revocation("subject", "imp-200").json()["status"],
        "active"
    );
    assert_eq!(
        again.revocation("credential", "imp-7999").json()["status"],
        "revoked"
    );
}
