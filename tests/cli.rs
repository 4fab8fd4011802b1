//! The offline tools as a user runs them: `idgate verify` and `idgate verify-signatures`, real
//! binary, real files, real pipes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{AUDIENCE, NOW, Scheme, idgate_bin};
use ed25519_dalek::{Signer, SigningKey};
use idgate::b64;
use idgate::mint::{CredentialSpec, Holder, Issuer, KeyBindingSpec};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;
use serde_json::{Value, json};

/// Runs the binary with `args`, feeding `stdin`; returns stdout lines parsed as JSON, and stderr.
fn run(args: &[&str], stdin: &str) -> (Vec<Value>, String) {
    let mut child = Command::new(idgate_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let text = stdin.to_string();
    let feeder = std::thread::spawn(move || input.write_all(text.as_bytes()));
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "idgate {args:?} failed: {stderr}");
    let lines = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, stderr)
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(scheme: &Scheme) -> Files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("trust.jwks.json"),
            scheme.jwks().to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("revocations.jsonl"),
            common::revocations_jsonl(NOW),
        )
        .unwrap();
        Files { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

fn verify_args<'a>(files: &'a Files, extra: &[&'a str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "verify".into(),
        "--trust".into(),
        files.path("trust.jwks.json"),
    ];
    args.extend(["--revocations".into(), files.path("revocations.jsonl")]);
    args.extend([
        "--audience".into(),
        AUDIENCE.into(),
        "--at".into(),
        NOW.to_string(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn run_verify(files: &Files, extra: &[&str], lines: &[String]) -> Vec<Value> {
    let args = verify_args(files, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, _) = run(&args, &(lines.join("\n") + "\n"));
    assert_eq!(out.len(), lines.len(), "one output line per input line");
    out
}

#[test]
fn every_outcome_of_the_spec_is_produced_by_the_offline_verifier() {
    let mut scheme = Scheme::new(21);
    let files = Files::new(&scheme);
    let cases = common::outcome_cases(&mut scheme);
    let lines: Vec<String> = cases.iter().map(|c| c.presentation.clone()).collect();
    let results = run_verify(&files, &[], &lines);
    let mut seen = std::collections::BTreeSet::new();
    for (case, result) in cases.iter().zip(&results) {
        assert_eq!(
            result["outcome"], case.expected,
            "case {:?}: {result}",
            case.name
        );
        seen.insert(case.expected);
    }

    // status_undetermined: the revocation file is an hour old and may be at most a minute old.
    let as_of = (NOW - 3600).to_string();
    let stale = run_verify(
        &files,
        &["--max-staleness", "60", "--revocations-as-of", &as_of],
        &[scheme.present("1", "c-stale")],
    );
    assert_eq!(stale[0]["outcome"], "status_undetermined");
    seen.insert("status_undetermined");

    // replay_unavailable: a replay store that can hold nothing fails closed.
    let full = run_verify(
        &files,
        &["--replay-capacity", "0"],
        &[scheme.present("1", "c-full")],
    );
    assert_eq!(full[0]["outcome"], "replay_unavailable");
    seen.insert("replay_unavailable");

    let all: std::collections::BTreeSet<&str> = idgate::verify::Outcome::ALL
        .iter()
        .map(|o| o.as_str())
        .collect();
    assert_eq!(seen, all, "every outcome of SPEC §3 must be covered");
}

#[test]
fn input_may_be_raw_or_json_strings_on_stdin_and_results_keep_input_order() {
    let mut scheme = Scheme::new(22);
    let files = Files::new(&scheme);
    let a = scheme.present("1111111111", "card-a");
    let b = scheme.present("2222222222", "card-b");
    let lines = vec![
        serde_json::to_string(&a).unwrap(),
        String::new(),
        b,
        "   ".into(),
        "\"not json".into(),
    ];
    let results = run_verify(&files, &["--claims", "-"], &lines);
    assert_eq!(results[0]["outcome"], "valid");
    assert_eq!(results[0]["sub"], "1111111111");
    assert_eq!(results[0]["claims"]["given_name"], "Amina");
    assert_eq!(results[1]["outcome"], "malformed");
    assert_eq!(results[2]["sub"], "2222222222");
    assert_eq!(results[3]["outcome"], "malformed");
    assert_eq!(results[4]["outcome"], "malformed");
}

#[test]
fn bearer_copies_need_allow_bearer() {
    let mut scheme = Scheme::new(23);
    let files = Files::new(&scheme);
    let holder = scheme.holder();
    let credential = scheme.issuer.issue(
        &mut scheme.rng,
        &CredentialSpec::id_card("1", "c1", NOW - 10, Some(holder.public_key())),
    );
    let bearer = vec![Holder::sd_jwt(&credential, None)];
    assert_eq!(
        run_verify(&files, &[], &bearer)[0]["outcome"],
        "key_binding_missing"
    );
    assert_eq!(
        run_verify(&files, &["--allow-bearer"], &bearer)[0]["outcome"],
        "valid"
    );
}

#[test]
fn a_bad_trust_store_or_revocation_file_stops_with_a_clear_error() {
    let scheme = Scheme::new(24);
    let files = Files::new(&scheme);
    std::fs::write(files.path("bad.jsonl"), "{\"kind\":\"subject\",\"id\":\"x\",\"status\":\"revoked\",\"reason\":\"lost\",\"at\":1}\nnot json\n").unwrap();
    let output = Command::new(idgate_bin())
        .args([
            "verify",
            "--trust",
            &files.path("trust.jwks.json"),
            "--revocations",
            &files.path("bad.jsonl"),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("line 2"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(files.path("empty.jwks.json"), "{\"keys\": []}").unwrap();
    let output = Command::new(idgate_bin())
        .args(["verify", "--trust", &files.path("empty.jwks.json")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no keys"));
}

#[test]
fn verify_signatures_answers_each_line_with_the_rule() {
    let key = SigningKey::from_bytes(&[9u8; 32]);
    let public = b64::encode(key.verifying_key().to_bytes());
    let line = |public: &str, message: &[u8], signature: &[u8]| {
        json!({"public_key": public, "message": b64::encode(message), "signature": b64::encode(signature)}).to_string()
    };
    let good = key.sign(b"hello").to_bytes();
    let identity = {
        let mut bytes = [0u8; 32];
        bytes[0] = 1;
        b64::encode(bytes)
    };
    let input = [
        line(&public, b"hello", &good),
        line(&public, b"hellO", &good),
        line(&identity, b"hello", &good),
        line(&public, b"hello", &good[..63]),
        "{not json".to_string(),
    ]
    .join("\n");
    let (out, _) = run(&["verify-signatures"], &input);
    assert_eq!(
        out,
        vec![
            json!({"valid": true}),
            json!({"valid": false, "error": "bad_signature"}),
            json!({"valid": false, "error": "weak_key"}),
            json!({"valid": false, "error": "malformed"}),
            json!({"valid": false, "error": "malformed"}),
        ]
    );
}

/// Mints `n` fresh presentations (a new holder each) in parallel.
fn mint_fresh(issuer: &Issuer, n: usize) -> Vec<String> {
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut rng = StdRng::seed_from_u64(i as u64);
            let holder = Holder::generate(&mut rng);
            let sub = format!("{:010}", 1_000_000_000 + i);
            let spec = CredentialSpec::id_card(
                &sub,
                &format!("card-{i}"),
                NOW - 86_400,
                Some(holder.public_key()),
            );
            let credential = issuer.issue(&mut rng, &spec);
            let kb = KeyBindingSpec {
                aud: AUDIENCE.into(),
                nonce: format!("n{i}"),
                iat: NOW - 1,
            };
            holder.present(&credential, None, &kb)
        })
        .collect()
}

#[test]
fn a_file_of_100000_presentations_verifies_on_every_core() {
    let scheme = Scheme::new(25);
    let files = Files::new(&scheme);
    let presentations = mint_fresh(&scheme.issuer, 100_000);
    let path = files.path("presentations.txt");
    std::fs::write(&path, presentations.join("\n") + "\n").unwrap();
    let mut args = verify_args(&files, &["--stats", "--threads", "2"]);
    args.push(path);
    let output = Command::new(idgate_bin()).args(&args).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut count = 0;
    for (i, line) in stdout.lines().enumerate() {
        let result: Value = serde_json::from_str(line).unwrap();
        assert_eq!(result["outcome"], "valid", "line {}", i + 1);
        assert_eq!(
            result["sub"],
            format!("{:010}", 1_000_000_000 + i),
            "order kept"
        );
        count += 1;
    }
    assert_eq!(count, 100_000);
    let stats: Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stderr).trim()).unwrap();
    assert_eq!(stats["items"], 100_000);
    assert_eq!(stats["signatures"], 200_000);
    assert_eq!(stats["threads"], 2);
    assert_eq!(
        stats["threads_used"], 2,
        "both pool threads must have verified: {stats}"
    );
    assert!(Path::new(&files.path("presentations.txt")).exists());
}

/// Blocks of input are verified several at a time; replays are still decided in input order
/// across blocks (the first showing is `valid`, every later copy `replayed`, wherever the copies
/// fall), and every answer lands on its own line.
#[test]
fn replays_are_decided_in_input_order_across_blocks() {
    let scheme = Scheme::new(26);
    let files = Files::new(&scheme);
    let presentations = mint_fresh(&scheme.issuer, 6_000);
    // (line, what it is): originals in order, copies of earlier lines placed in the next block
    // (verified at the same time on the other thread) and in later ones (blocks are 512 lines),
    // and a line that is no presentation.
    let mut lines: Vec<String> = Vec::new();
    let mut expected: Vec<(&str, Option<usize>)> = Vec::new();
    for (i, presentation) in presentations.iter().enumerate() {
        lines.push(presentation.clone());
        expected.push(("valid", Some(i)));
        if i == 600 {
            lines.push(presentations[500].clone());
            expected.push(("replayed", Some(500)));
        }
        if i == 2_100 {
            lines.push(presentations[100].clone());
            expected.push(("replayed", Some(100)));
        }
        if i == 4_500 {
            lines.push("not a presentation".into());
            expected.push(("malformed", None));
            lines.push(presentations[2_050].clone());
            expected.push(("replayed", Some(2_050)));
        }
    }
    lines.push(presentations[10].clone());
    expected.push(("replayed", Some(10)));
    let path = files.path("presentations.txt");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let mut args = verify_args(&files, &["--threads", "2"]);
    args.push(path);
    let output = Command::new(idgate_bin()).args(&args).output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let results: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), expected.len());
    for (line, (result, (outcome, original))) in results.iter().zip(&expected).enumerate() {
        assert_eq!(result["outcome"], *outcome, "line {}", line + 1);
        if let (Some(i), "valid") = (original, *outcome) {
            assert_eq!(
                result["sub"],
                format!("{:010}", 1_000_000_000 + i),
                "line {}",
                line + 1
            );
        }
    }
}

#[test]
fn serve_refuses_an_unknown_setting_value_and_lists_the_accepted_ones() {
    let scheme = Scheme::new(25);
    let dir = tempfile::tempdir().unwrap();
    let config = common::gateway::write_config(dir.path(), &scheme, &Default::default());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[replay]\n", "[replay]\nbackend = \"redis-ish\"\n")
            .replace("[log]\n", "[log]\nlevel = \"loud\"\n"),
    )
    .unwrap();
    let output = Command::new(idgate_bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Both problems at once, each with what would have been accepted.
    assert!(
        stderr
            .contains("replay.backend: unknown variant `redis-ish`, expected `memory` or `redis`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("log.level: unknown variant `loud`, expected one of `error`, `warn`, `info`, `debug`, `trace`"),
        "{stderr}"
    );
}
