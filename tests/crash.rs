//! Durability of the revocation admin API under crashes, against the real binary.
//!
//! SPEC: an acknowledged update survives `kill -9`; each `POST /admin/v1/revocations` is all or
//! nothing; a torn tail (a crash in the middle of an append) is dropped; a corrupt byte in the
//! middle of the log makes the gateway refuse to start, naming the byte offset.
//!
//! The kill-nine harness reuses one data directory for every round. Each round starts the
//! gateway, checks everything sent in all earlier rounds, lets 3-4 clients stream requests (a
//! unique request number each, 50-300 entries with unique IDs) and kills the process with
//! SIGKILL after a seeded random delay, while the clients are still sending. The log is compacted
//! every [`SNAPSHOT_LOG_BYTES`], so kills also land in the middle of snapshots. Some rounds
//! instead end with SIGTERM and a SIGKILL in the middle of the drain, and some starts are first
//! killed while loading (cutting a torn tail, removing leftovers). After every restart:
//!
//! - (a) every entry of every acknowledged (HTTP 200) request is present with exactly the sent
//!   status, reason, `at` (`since`) and `before`;
//! - (b) every unacknowledged request (in flight at the kill) is all or nothing, and once seen
//!   after a restart (whole or absent) it stays that way; a request refused with a definite
//!   error status has nothing applied;
//! - (c) nothing else is present: `idgate_revocation_entries` (and `_records`) equal the number
//!   of entries found, and IDs never sent (or sent under the other kind) are `active`;
//! - (d) `POST /v1/status` and `GET /admin/v1/revocations/{kind}/{id}` agree with what was sent.
//!
//! The seed is printed (and is in every failure); `IDGATE_CRASH_SEED=<seed>` replays a run's
//! choices (request contents, delays, client counts, endings; where the kill lands is up to the
//! scheduler), and `IDGATE_CRASH_ROUNDS=<n>` runs more rounds for a soak.
//!
//! The damaged-log tests are in `tests/damaged_log.rs`; what both send and check is in
//! `tests/common/crash/`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed setup should stop loudly

mod common;

use std::ops::RangeInclusive;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::RngExt;
use serde_json::Value;

use common::crash::check::check;
use common::crash::launch::{stop_cleanly, tail, up};
use common::crash::requests::{Answer, Fate, Request, body_of, entries_for};
use common::crash::{self, Stream, config_in};
use common::gateway::ADMIN_TOKEN;
use common::http;

/// Kill-nine rounds (at least this many; `IDGATE_CRASH_ROUNDS` may ask for more).
const ROUNDS: usize = 20;
/// Client threads per round.
const CLIENTS: RangeInclusive<usize> = 3..=4;
/// Delay between the clients' start and the SIGKILL, in milliseconds.
const KILL_DELAY_MS: RangeInclusive<u64> = 50..=600;
/// Percent of rounds whose start is first interrupted by a SIGKILL during start-up (while the
/// snapshot and log are loaded, a torn tail cut, leftovers removed), 0-150 ms after the spawn.
const KILL_DURING_START_PERCENT: u32 = 25;
/// Percent of rounds that end with SIGTERM (drain: in-flight requests are still answered)
/// followed 0-30 ms later by SIGKILL, instead of a plain SIGKILL.
const TERM_THEN_KILL_PERCENT: u32 = 20;
/// `revocation.snapshot_log_bytes` for the harness (the gateway's default is 256 MiB): the log
/// is compacted every 64 KiB of records (about a dozen requests), many times a round, so kills
/// land in the middle of snapshots and of the deletion of covered segments too.
const SNAPSHOT_LOG_BYTES: u64 = 65_536;

/// Spawns `idgate serve` and SIGKILLs it after `after` (whatever it is doing by then).
fn kill_during_start(config: &Path, after: Duration) -> ExitStatus {
    let mut child = Command::new(common::idgate_bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let _ = child.kill();
    child.wait().unwrap()
}

/// Posts requests until `stop` or until the gateway is gone; returns what it sent and how each
/// was answered.
fn client(
    operator: std::net::SocketAddr,
    seed: u64,
    round: usize,
    index: usize,
    next_number: &AtomicU64,
    stop: &AtomicBool,
) -> Vec<Request> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut sent = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let number = next_number.fetch_add(1, Ordering::Relaxed);
        let entries = entries_for(seed, round, number);
        let body = body_of(&entries, number);
        let reply = http::request(
            operator,
            "POST",
            "/admin/v1/revocations",
            &[("Authorization", &auth)],
            body.as_bytes(),
        );
        let answer = match reply {
            Ok(reply) if reply.status == 200 => {
                // Checked after the round (a panic here would only say "client panicked").
                let applied = serde_json::from_slice::<Value>(&reply.body)
                    .ok()
                    .and_then(|v| v["applied"].as_u64());
                if applied == Some(entries.len() as u64) {
                    Answer::Acked
                } else {
                    Answer::Refused {
                        status: 200,
                        body: format!("200 with an unexpected body: {}", reply.text()),
                    }
                }
            }
            Ok(reply) => Answer::Refused {
                status: reply.status,
                body: reply.text(),
            },
            Err(error) => Answer::Unanswered(error.to_string()),
        };
        let gone = matches!(answer, Answer::Unanswered(_));
        sent.push(Request::new(round, number, index, entries, answer));
        if gone {
            break;
        }
    }
    sent
}

#[test]
fn acknowledged_revocations_survive_twenty_random_kill_nine_rounds() {
    let seed = crash::seed();
    let rounds = std::env::var("IDGATE_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(ROUNDS);
    eprintln!("crash harness: IDGATE_CRASH_SEED={seed} ({rounds} rounds)");
    let started = Instant::now();
    let mut rng = crash::rng(seed, Stream::Rounds, 0);
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), Some(SNAPSHOT_LOG_BYTES));
    let revocations = dir.path().join("data").join("revocations");
    let next_number = Arc::new(AtomicU64::new(0));
    let mut requests: Vec<Request> = Vec::new();
    let (mut snapshots_written, mut kills_mid_snapshot) = (0, 0);

    // Start r checks what rounds 0..r sent (and killed), then runs round r.
    for round in 0..=rounds {
        let mut context = format!(
            "seed {seed} (IDGATE_CRASH_SEED={seed}), start {round} (after {round} kill -9 rounds)"
        );
        let mut first_start = String::new();
        if round > 0 && rng.random_ratio(KILL_DURING_START_PERCENT, 100) {
            let after = Duration::from_millis(rng.random_range(0..=150));
            let status = kill_during_start(&config, after);
            first_start = format!(
                ", after a start killed at {} ms ({status})",
                after.as_millis()
            );
            context.push_str(&first_start);
        }
        let checking = Instant::now();
        let mut gateway = up(&config, &context);
        // Its own stream: the round's choices do not depend on how many requests got through.
        let mut sampling = crash::rng(seed, Stream::Sampling, round as u64);
        let checked = check(&gateway, &mut requests, round, &mut sampling, &context);
        let checking = checking.elapsed();
        if round == rounds {
            eprintln!(
                "start {round}: {} entries present, all as sent",
                checked.entries_present
            );
            stop_cleanly(gateway, &context);
            break;
        }

        let clients = rng.random_range(CLIENTS);
        let delay = Duration::from_millis(rng.random_range(KILL_DELAY_MS));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..clients)
            .map(|index| {
                let (stop, next) = (Arc::clone(&stop), Arc::clone(&next_number));
                let operator = gateway.operator;
                std::thread::spawn(move || client(operator, seed, round, index, &next, &stop))
            })
            .collect();
        let term_first = rng
            .random_ratio(TERM_THEN_KILL_PERCENT, 100)
            .then(|| Duration::from_millis(rng.random_range(0..=30)));
        std::thread::sleep(delay);
        if let Some(grace) = term_first {
            gateway.signal("TERM"); // drain: in-flight requests are still answered ...
            std::thread::sleep(grace);
        }
        let _ = gateway.child.kill(); // ... SIGKILL, while the clients are posting
        let (status, logs) = gateway.wait(Duration::from_secs(10));
        stop.store(true, Ordering::Relaxed);
        let killed = status.signal() == Some(9);
        assert!(
            killed || (term_first.is_some() && status.success()),
            "{context}: the gateway ended with {status} before the kill; last log lines:\n{}",
            tail(&logs, 20)
        );
        let mut sent: Vec<Request> = threads
            .into_iter()
            .flat_map(|t| {
                t.join()
                    .unwrap_or_else(|_| panic!("{context}: a client thread panicked"))
            })
            .collect();
        sent.sort_by_key(|r| r.number);
        let messages: Vec<Value> = logs
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect();
        let written = messages
            .iter()
            .filter(|l| l["message"] == "revocation snapshot written")
            .count();
        let failed: Vec<&Value> = messages
            .iter()
            .filter(|l| {
                l["level"] == "ERROR"
                    || l["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("snapshot failed"))
            })
            .collect();
        snapshots_written += written;
        assert!(
            failed.is_empty(),
            "{context}: the gateway logged errors before the kill: {failed:?}"
        );
        let mid_snapshot = revocations.join("snapshot.tmp").exists();
        kills_mid_snapshot += usize::from(mid_snapshot);
        let acked = sent
            .iter()
            .filter(|r| matches!(r.answer, Answer::Acked))
            .count();
        let ending = match term_first {
            None => format!("kill -9 after {} ms", delay.as_millis()),
            Some(grace) => format!(
                "SIGTERM after {} ms, kill -9 {} ms later ({})",
                delay.as_millis(),
                grace.as_millis(),
                if killed { "killed" } else { "had exited 0" }
            ),
        };
        eprintln!(
            "round {round} (started{first_start} and checked in {} ms): {clients} clients, {ending}{}: {} requests ({acked} acknowledged), {written} snapshots written",
            checking.as_millis(),
            if mid_snapshot {
                ", a snapshot.tmp was left"
            } else {
                ""
            },
            sent.len()
        );
        requests.extend(sent);
    }

    let count = |f: fn(&Fate) -> bool| requests.iter().filter(|r| f(&r.fate)).count();
    let acked = count(|f| *f == Fate::Acked);
    let whole = count(|f| matches!(f, Fate::FoundWhole(_)));
    let absent = count(|f| matches!(f, Fate::FoundAbsent(_)));
    let refused = count(|f| *f == Fate::Refused);
    let entries: usize = requests.iter().map(|r| r.entries.len()).sum();
    eprintln!(
        "seed {seed}: {rounds} rounds in {:.1} s: {} requests ({entries} entries): {acked} acknowledged, {whole} unacknowledged but durable, {absent} unacknowledged and dropped, {refused} refused; {snapshots_written} snapshots written, {kills_mid_snapshot} kills left a snapshot.tmp",
        started.elapsed().as_secs_f64(),
        requests.len(),
    );
    assert!(
        acked >= rounds,
        "seed {seed}: too few acknowledged requests to mean anything ({acked})"
    );
    assert!(
        snapshots_written > 0,
        "seed {seed}: no snapshot was written in {rounds} rounds (snapshot_log_bytes = {SNAPSHOT_LOG_BYTES}): the harness does not exercise compaction"
    );
}
