//! The crash harness: clients stream revocations to the admin API of the real binary, which is
//! killed with SIGKILL at random moments (mid-request, mid-fsync, mid-snapshot: compaction is
//! set to run every few kilobytes), then restarted on the same data directory. After every
//! restart:
//!
//! - every entry of every acknowledged request is present, with exactly the status, reason,
//!   `at` and `before` that were sent;
//! - every unacknowledged request is all or nothing, and once seen (present or absent) after a
//!   restart it stays that way;
//! - nothing else is present: `idgate_revocation_entries` equals the entries found.
//!
//! The seed is printed; set `IDGATE_CRASH_SEED` to replay a run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed setup should stop loudly

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gateway::{ADMIN_TOKEN, BinaryGateway, Client, Options, write_config};
use common::{Scheme, http};

const ROUNDS: usize = 20;
const CLIENTS: usize = 3;

#[derive(Clone, Debug)]
struct Sent {
    kind: &'static str,
    id: String,
    status: &'static str,
    reason: &'static str,
    before: Option<i64>,
    at: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Answered 200: must be present forever.
    Acked,
    /// Not answered: may be either, but all or nothing, and stable once observed.
    Unknown,
    Present,
    Absent,
}

struct Request {
    round: usize,
    entries: Vec<Sent>,
    fate: Fate,
}

/// xorshift64*: deterministic from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn entries_for(request: usize, seed: u64) -> Vec<Sent> {
    let mut rng = Rng(seed ^ (request as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let count = 20 + rng.below(150) as usize;
    let reasons = ["lost", "stolen", "compromised", "deceased", "other"];
    (0..count)
        .map(|i| {
            let subject = rng.below(3) == 0;
            Sent {
                kind: if subject { "subject" } else { "credential" },
                id: format!("q{request}-{i}"),
                status: if rng.below(4) == 0 {
                    "suspended"
                } else {
                    "revoked"
                },
                reason: reasons[rng.below(reasons.len() as u64) as usize],
                before: (subject && rng.below(2) == 0)
                    .then(|| 1_700_000_000 + rng.below(1000) as i64),
                at: 1_600_000_000 + request as i64,
            }
        })
        .collect()
}

fn body_of(entries: &[Sent]) -> String {
    entries
        .iter()
        .map(|e| {
            let mut line = serde_json::json!({
                "kind": e.kind, "id": e.id, "status": e.status, "reason": e.reason, "at": e.at,
            });
            if let Some(before) = e.before {
                line["before"] = before.into();
            }
            line.to_string() + "\n"
        })
        .collect()
}

/// What `/v1/status` says of one entry: `None` when absent, else whether it matches exactly.
fn observed(result: &serde_json::Value, sent: &Sent) -> Option<bool> {
    result.get("reason")?;
    let expected_status = if sent.before.is_some() {
        "active"
    } else {
        sent.status
    };
    Some(
        result["status"] == expected_status
            && result["reason"] == sent.reason
            && result["since"] == sent.at
            && result.get("revoked_before").and_then(|b| b.as_i64()) == sent.before,
    )
}

/// Looks up every entry of every request; returns, per request, (present, matching) counts.
fn look_up(gateway: &BinaryGateway, requests: &[Request]) -> Vec<(usize, usize)> {
    let all: Vec<(usize, &Sent)> = requests
        .iter()
        .enumerate()
        .flat_map(|(r, request)| request.entries.iter().map(move |e| (r, e)))
        .collect();
    let mut counts = vec![(0, 0); requests.len()];
    for chunk in all.chunks(4000) {
        let subjects: Vec<&str> = chunk
            .iter()
            .filter(|(_, e)| e.kind == "subject")
            .map(|(_, e)| e.id.as_str())
            .collect();
        let credentials: Vec<&str> = chunk
            .iter()
            .filter(|(_, e)| e.kind == "credential")
            .map(|(_, e)| e.id.as_str())
            .collect();
        let reply = gateway.status(&subjects, &credentials);
        assert_eq!(reply.status, 200, "{}", reply.text());
        let results = reply.json()["results"].as_array().unwrap().clone();
        // Results come subjects first, then credentials, each in input order.
        let ordered = chunk
            .iter()
            .filter(|(_, e)| e.kind == "subject")
            .chain(chunk.iter().filter(|(_, e)| e.kind == "credential"));
        for ((r, sent), result) in ordered.zip(results.iter()) {
            assert_eq!(result["id"], sent.id.as_str());
            if let Some(matches) = observed(result, sent) {
                counts[*r].0 += 1;
                counts[*r].1 += usize::from(matches);
            }
        }
    }
    counts
}

#[test]
fn acknowledged_revocations_survive_twenty_random_kill_nine_rounds() {
    let seed = std::env::var("IDGATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash harness seed: IDGATE_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let scheme = Scheme::new(90);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &scheme, &Options::default());
    let text = std::fs::read_to_string(&config).unwrap();
    // Compaction every 16 KiB of log: kills also land in the middle of snapshots.
    std::fs::write(
        &config,
        text.replacen(
            "[revocation]\n",
            "[revocation]\nsnapshot_log_bytes = 16384\n",
            1,
        ),
    )
    .unwrap();
    let next_request = Arc::new(AtomicUsize::new(0));
    let mut requests: Vec<Request> = Vec::new();
    let started = Instant::now();
    let mut compactions_seen = 0.0;

    for round in 0..ROUNDS {
        let gateway = BinaryGateway::start(&config);
        let stop = Arc::new(AtomicBool::new(false));
        let sent: Arc<Mutex<Vec<(usize, bool)>>> = Arc::default();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (stop, sent, next) = (
                    Arc::clone(&stop),
                    Arc::clone(&sent),
                    Arc::clone(&next_request),
                );
                let operator = gateway.operator;
                std::thread::spawn(move || {
                    let auth = format!("Bearer {ADMIN_TOKEN}");
                    while !stop.load(Ordering::Relaxed) {
                        let q = next.fetch_add(1, Ordering::Relaxed);
                        let body = body_of(&entries_for(q, seed));
                        let reply = http::request(
                            operator,
                            "POST",
                            "/admin/v1/revocations",
                            &[("Authorization", &auth)],
                            body.as_bytes(),
                        );
                        let acked = reply.as_ref().is_ok_and(|r| r.status == 200);
                        sent.lock().unwrap().push((q, acked));
                        if reply.is_err() {
                            break; // the gateway is gone
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50 + rng.below(350)));
        compactions_seen += gateway.metric("idgate_revocation_compactions_total{result=\"ok\"}");
        drop(gateway); // SIGKILL, while the clients are still posting
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().unwrap();
        }
        let mut sent = std::mem::take(&mut *sent.lock().unwrap());
        sent.sort();
        for (q, acked) in sent {
            requests.push(Request {
                round,
                entries: entries_for(q, seed),
                fate: if acked { Fate::Acked } else { Fate::Unknown },
            });
        }

        // Restart and check everything sent so far.
        let gateway = BinaryGateway::start(&config);
        let counts = look_up(&gateway, &requests);
        let mut present_entries = 0;
        for (request, &(present, matching)) in requests.iter_mut().zip(&counts) {
            let n = request.entries.len();
            let what = format!(
                "seed {seed}, round {round}, request {} (sent in round {}, {n} entries)",
                request.entries[0].id, request.round
            );
            assert_eq!(
                present, matching,
                "{what}: entries present with other values than sent"
            );
            match request.fate {
                Fate::Acked | Fate::Present => {
                    assert_eq!(
                        present, n,
                        "{what}: {:?} but only {present} present",
                        request.fate
                    )
                }
                Fate::Absent => assert_eq!(
                    present, 0,
                    "{what}: absent after an earlier restart, now {present} present"
                ),
                Fate::Unknown => {
                    assert!(
                        present == 0 || present == n,
                        "{what}: unacknowledged and half applied ({present}/{n})"
                    );
                    request.fate = if present == n {
                        Fate::Present
                    } else {
                        Fate::Absent
                    };
                }
            }
            present_entries += present;
        }
        assert_eq!(
            gateway.metric("idgate_revocation_entries"),
            present_entries as f64,
            "seed {seed}, round {round}: the list holds entries nobody sent"
        );
        drop(gateway);
    }
    let acked = requests.iter().filter(|r| r.fate == Fate::Acked).count();
    let unacked_applied = requests.iter().filter(|r| r.fate == Fate::Present).count();
    eprintln!(
        "{ROUNDS} rounds in {:.1} s: {} requests, {acked} acknowledged, {unacked_applied} unacknowledged but durable, {compactions_seen} compactions",
        started.elapsed().as_secs_f64(),
        requests.len()
    );
    assert!(
        acked >= ROUNDS,
        "too few acknowledged requests to mean anything ({acked})"
    );
}

/// Posts `count` one-entry requests (`card-0`…), stops the gateway with SIGTERM, and returns
/// the path of the (single) log segment.
fn log_with_entries(
    config: &std::path::Path,
    data: &std::path::Path,
    count: usize,
) -> std::path::PathBuf {
    let gateway = BinaryGateway::start(config);
    for i in 0..count {
        let line = format!(
            "{{\"kind\":\"credential\",\"id\":\"card-{i}\",\"status\":\"revoked\",\"reason\":\"lost\",\"at\":{}}}\n",
            100 + i
        );
        assert_eq!(gateway.revoke(&line).status, 200);
    }
    gateway.signal("TERM");
    let (status, _) = gateway.wait(Duration::from_secs(20));
    assert!(status.success());
    let mut segments: Vec<_> = std::fs::read_dir(data.join("revocations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("log."))
        .collect();
    segments.sort();
    segments.pop().unwrap()
}

#[test]
fn a_corrupt_byte_in_the_middle_of_the_log_refuses_start_and_a_torn_tail_is_dropped() {
    let scheme = Scheme::new(91);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &scheme, &Options::default());
    let log = log_with_entries(&config, &dir.path().join("data"), 10);
    let whole = std::fs::read(&log).unwrap();

    // One flipped bit inside the third record's payload.
    let record = whole.len() / 10;
    let mut corrupt = whole.clone();
    corrupt[2 * record + 20] ^= 0x08;
    std::fs::write(&log, &corrupt).unwrap();
    let output = std::process::Command::new(common::idgate_bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "started on a corrupt log: {stderr}"
    );
    assert!(
        stderr.contains("is corrupt at byte")
            && stderr.contains("refusing to start")
            && stderr.contains(&(2 * record).to_string()),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&log).unwrap(),
        corrupt,
        "a corrupt log is left untouched for the operator"
    );

    // A torn tail (a crash in the middle of an append) is cut, everything before it kept.
    let mut torn = whole.clone();
    torn.extend_from_slice(&whole[..record - 3]);
    std::fs::write(&log, &torn).unwrap();
    let gateway = BinaryGateway::start(&config);
    for i in 0..10 {
        assert_eq!(
            gateway
                .revocation("credential", &format!("card-{i}"))
                .json()["status"],
            "revoked"
        );
    }
    assert_eq!(gateway.metric("idgate_revocation_entries"), 10.0);
    assert_eq!(
        std::fs::read(&log).unwrap(),
        whole,
        "the torn record was cut off"
    );
}
