//! Interop: presentations minted by independent implementations (PyPI `sd-jwt`, npm `@sd-jwt/*`)
//! verify through `idgate verify`, and each kind of tampering gets its own outcome.
//!
//! The generators live in `tests/interop/` with pinned versions; `scripts/test` installs them
//! (a Python venv and `npm ci`). Outside CI, a missing toolchain skips with a notice; in CI
//! (`CI=true`) it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// The command that runs a generator, if its toolchain is installed.
fn generator(kind: &str) -> Option<Command> {
    let dir = interop_dir();
    let (program, script, marker) = match kind {
        "python" => (
            dir.join(".venv/bin/python"),
            "gen_python.py",
            dir.join(".venv/bin/python"),
        ),
        _ => (
            PathBuf::from("node"),
            "gen_node.mjs",
            dir.join("node_modules/@sd-jwt/core"),
        ),
    };
    if !marker.exists() {
        common::cannot_run(&format!(
            "the {kind} interop toolchain is not installed ({}; scripts/test sets it up)",
            marker.display()
        ));
        return None;
    }
    let mut command = Command::new(program);
    command.current_dir(&dir).arg(script);
    Some(command)
}

struct Case {
    name: String,
    presentation: String,
    expect: String,
    at: i64,
    audience: String,
}

fn generate(kind: &str, out: &Path) -> Option<Vec<Case>> {
    let mut command = generator(kind)?;
    let status = command.arg(out).stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "{kind} generator failed");
    let text = std::fs::read_to_string(out.join("cases.jsonl")).unwrap();
    Some(
        text.lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line).unwrap();
                Case {
                    name: v["name"].as_str().unwrap().into(),
                    presentation: v["presentation"].as_str().unwrap().into(),
                    expect: v["expect"].as_str().unwrap().into(),
                    at: v["at"].as_i64().unwrap(),
                    audience: v["audience"].as_str().unwrap().into(),
                }
            })
            .collect(),
    )
}

/// Verifies each case alone through the binary (its own `--at` and `--audience`).
fn idgate_outcome(trust: &Path, case: &Case) -> String {
    let mut child = Command::new(common::idgate_bin())
        .args([
            "verify",
            "--trust",
            trust.to_str().unwrap(),
            "--at",
            &case.at.to_string(),
            "--audience",
            &case.audience,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", case.presentation).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    result["outcome"].as_str().unwrap().to_string()
}

fn check_implementation(kind: &str) {
    let out = tempfile::tempdir().unwrap();
    let Some(cases) = generate(kind, out.path()) else {
        return;
    };
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    for required in [
        "valid",
        "payload_byte",
        "disclosure_tampered",
        "kb_sd_hash",
        "kb_signature",
        "wrong_key",
        "expired",
        "stale_iat",
    ] {
        assert!(
            names.contains(required),
            "{kind} generator lost case {required}"
        );
    }
    let trust = out.path().join("trust.jwks.json");
    let mut failures = Vec::new();
    for case in &cases {
        let outcome = idgate_outcome(&trust, case);
        if outcome != case.expect {
            failures.push(format!(
                "{kind}/{}: expected {}, got {outcome}",
                case.name, case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // The outcomes differ by kind of tampering: each expected outcome appears.
    let outcomes: BTreeSet<&str> = cases.iter().map(|c| c.expect.as_str()).collect();
    for outcome in [
        "valid",
        "bad_signature",
        "disclosure_invalid",
        "key_binding_invalid",
        "expired",
        "presentation_stale",
    ] {
        assert!(outcomes.contains(outcome), "{kind}: no case for {outcome}");
    }
}

#[test]
fn presentations_from_python_sd_jwt_get_the_expected_outcomes() {
    check_implementation("python");
}

#[test]
fn presentations_from_npm_sd_jwt_get_the_expected_outcomes() {
    check_implementation("node");
}
