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
//! The other two tests damage the log of a cleanly stopped gateway: a flipped byte inside an
//! early record (followed by whole records) refuses the start, naming the file and offset; a
//! torn tail appended to the newest segment is dropped and everything acknowledged kept, and
//! later appends do not land behind it. Log files are found by listing `<data>/revocations/`
//! (names starting with `log`; the snapshot and lock are ignored), so the tests do not depend
//! on how many segments there are.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed setup should stop loudly

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use common::gateway::{
    ADMIN_TOKEN, BinaryGateway, Client, Options, TELCO_KEY, spawn_serve, write_config,
};
use common::{Scheme, http};
use idgate::revocation::Reason;

/// Kill-nine rounds (at least this many; `IDGATE_CRASH_ROUNDS` may ask for more).
const ROUNDS: usize = 20;
/// Client threads per round, inclusive range.
const CLIENTS: (u64, u64) = (3, 4);
/// Delay between the clients' start and the SIGKILL, in milliseconds, inclusive range.
const KILL_DELAY_MS: (u64, u64) = (50, 600);
/// Percent of rounds whose start is first interrupted by a SIGKILL during start-up (while the
/// snapshot and log are loaded, a torn tail cut, leftovers removed), 0-150 ms after the spawn.
const KILL_DURING_START_PERCENT: u64 = 25;
/// Percent of rounds that end with SIGTERM (drain: in-flight requests are still answered)
/// followed 0-30 ms later by SIGKILL, instead of a plain SIGKILL.
const TERM_THEN_KILL_PERCENT: u64 = 20;
/// Entries per request, inclusive range.
const ENTRIES: (u64, u64) = (50, 300);
/// `revocation.snapshot_log_bytes` for the harness (the gateway's default is 256 MiB): the log
/// is compacted every 64 KiB of records (about a dozen requests), many times a round, so kills
/// land in the middle of snapshots and of the deletion of covered segments too.
const SNAPSHOT_LOG_BYTES: u64 = 65_536;
/// IDs per `POST /v1/status` (the gateway's `max_batch_items` is raised to this).
const STATUS_CHUNK: usize = 25_000;
/// `at` of entry `i` of request `q` is `AT_BASE + q * 1000 + i`: distinct for every entry.
const AT_BASE: i64 = 1_600_000_000;

// ---- deterministic randomness ---------------------------------------------------------------

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// xorshift64*: deterministic from the printed seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(splitmix(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

// ---- what was sent --------------------------------------------------------------------------

/// One entry as sent.
#[derive(Clone, Debug)]
struct Sent {
    subject: bool,
    id: String,
    status: &'static str,
    reason: &'static str,
    before: Option<i64>,
    at: i64,
}

impl Sent {
    fn kind(&self) -> &'static str {
        if self.subject {
            "subject"
        } else {
            "credential"
        }
    }

    fn other_kind(&self) -> &'static str {
        if self.subject {
            "credential"
        } else {
            "subject"
        }
    }
}

/// The entries of request `number` (sent in round `round`): a function of the seed.
fn entries_for(seed: u64, round: usize, number: u64) -> Vec<Sent> {
    let mut rng = Rng::new(seed ^ splitmix(number.wrapping_add(1)));
    let count = rng.range(ENTRIES);
    (0..count)
        .map(|i| {
            let subject = rng.percent(40);
            Sent {
                subject,
                id: format!("r{round}-q{number}-{i}"),
                status: if rng.percent(30) {
                    "suspended"
                } else {
                    "revoked"
                },
                reason: Reason::ALL[rng.below(Reason::ALL.len() as u64) as usize].as_str(),
                before: (subject && rng.percent(50))
                    .then(|| 1_500_000_000 + rng.below(100_000_000) as i64),
                at: AT_BASE + number as i64 * 1000 + i as i64,
            }
        })
        .collect()
}

/// The JSON Lines body of a request; its style varies with the request number (key order, CRLF
/// line ends, no newline after the last line), all of which the API accepts.
fn body_of(entries: &[Sent], number: u64) -> String {
    let style = number % 4;
    let mut body = String::with_capacity(entries.len() * 120);
    for (i, e) in entries.iter().enumerate() {
        let before = e
            .before
            .map(|b| format!(",\"before\":{b}"))
            .unwrap_or_default();
        if style == 3 {
            body.push_str(&format!(
                "{{\"at\":{},\"reason\":\"{}\"{before},\"status\":\"{}\",\"id\":\"{}\",\"kind\":\"{}\"}}",
                e.at,
                e.reason,
                e.status,
                e.id,
                e.kind()
            ));
        } else {
            body.push_str(&format!(
                "{{\"kind\":\"{}\",\"id\":\"{}\",\"status\":\"{}\",\"reason\":\"{}\"{before},\"at\":{}}}",
                e.kind(),
                e.id,
                e.status,
                e.reason,
                e.at
            ));
        }
        let last = i + 1 == entries.len();
        match style {
            1 => body.push_str("\r\n"),
            2 if last => {}
            _ => body.push('\n'),
        }
    }
    body
}

/// How the gateway answered a request.
#[derive(Clone, Debug)]
enum Answer {
    /// `200`: durable, must survive every later crash.
    Acked,
    /// A definite error status: nothing may be applied.
    Refused { status: u16, body: String },
    /// No (complete) answer: the process died while the request was in flight.
    Unanswered(String),
}

/// What a request's entries must look like after a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Acknowledged: every entry present, exactly.
    Acked,
    /// Refused: no entry present, ever.
    Refused,
    /// Unacknowledged and not yet observed: all or nothing.
    Unknown,
    /// Unacknowledged, found whole after the restart of this round: must stay whole.
    FoundWhole(usize),
    /// Unacknowledged, found absent after the restart of this round: must stay absent.
    FoundAbsent(usize),
}

#[derive(Debug)]
struct Request {
    round: usize,
    number: u64,
    client: usize,
    entries: Vec<Sent>,
    answer: Answer,
    fate: Fate,
}

impl Request {
    fn new(round: usize, number: u64, client: usize, entries: Vec<Sent>, answer: Answer) -> Self {
        let fate = match answer {
            Answer::Acked => Fate::Acked,
            Answer::Refused { .. } => Fate::Refused,
            Answer::Unanswered(_) => Fate::Unknown,
        };
        Request {
            round,
            number,
            client,
            entries,
            answer,
            fate,
        }
    }

    fn describe(&self) -> String {
        let answer = match &self.answer {
            Answer::Acked => "acknowledged (200)".to_string(),
            Answer::Refused { status, body } => format!("refused ({status}: {body})"),
            Answer::Unanswered(error) => format!("no answer ({error})"),
        };
        format!(
            "request q{} (round {}, client {}, {} entries, {answer}, {:?})",
            self.number,
            self.round,
            self.client,
            self.entries.len(),
            self.fate
        )
    }
}

// ---- starting the binary --------------------------------------------------------------------

/// The outcome of starting `idgate serve`.
enum Launch {
    /// Ready; with the stderr lines written until then.
    Up(BinaryGateway, Vec<String>),
    Exited {
        status: ExitStatus,
        stderr: Vec<String>,
    },
}

/// Starts `idgate serve --config CONFIG` and waits until it is ready or has exited, keeping its
/// stderr for the failure message either way.
// The child is moved into the returned value (whose `Drop` kills and reaps it) or reaped here.
#[allow(clippy::zombie_processes)]
fn launch(config: &Path, within: Duration) -> Launch {
    let (mut child, logs) = spawn_serve(config);
    let deadline = Instant::now() + within;
    let mut seen: Vec<String> = Vec::new();
    let mut listening: Option<(std::net::SocketAddr, std::net::SocketAddr)> = None;
    loop {
        match logs.recv_timeout(Duration::from_millis(10)) {
            Ok(line) => {
                let log: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if log["message"] == "listening" {
                    listening = Some((
                        log["public"].as_str().unwrap().parse().unwrap(),
                        log["operator"].as_str().unwrap().parse().unwrap(),
                    ));
                }
                seen.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(10))
            }
        }
        if let Some((public, operator)) = listening {
            let ready = http::request(operator, "GET", "/readyz", &[], b"")
                .is_ok_and(|reply| reply.status == 200);
            if ready {
                let gateway = BinaryGateway {
                    public,
                    operator,
                    child,
                    logs,
                };
                return Launch::Up(gateway, seen);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            let until = Instant::now() + Duration::from_secs(2);
            while let Ok(line) = logs.recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                seen.push(line);
            }
            return Launch::Exited {
                status,
                stderr: seen,
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the gateway neither became ready nor exited within {within:?}; stderr:\n{}",
                seen.join("\n")
            );
        }
    }
}

/// Starts the gateway; a refusal is a failure, reported with `context` and the process' stderr.
fn up(config: &Path, context: &str) -> BinaryGateway {
    match launch(config, Duration::from_secs(30)) {
        Launch::Up(gateway, _) => gateway,
        Launch::Exited { status, stderr } => panic!(
            "{context}: the gateway did not start ({status}); stderr:\n{}",
            stderr.join("\n")
        ),
    }
}

/// SIGTERM, and a clean exit (0) within 20 s.
fn stop_cleanly(gateway: BinaryGateway, context: &str) {
    gateway.signal("TERM");
    let (status, logs) = gateway.wait(Duration::from_secs(20));
    assert!(
        status.success(),
        "{context}: SIGTERM ended the gateway with {status}; last log lines:\n{}",
        tail(&logs, 20)
    );
}

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

fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Writes the trust store and config into `dir` (status queries of up to [`STATUS_CHUNK`] IDs)
/// and returns the config path.
fn config_in(dir: &Path, snapshot_log_bytes: Option<u64>) -> PathBuf {
    let scheme = Scheme::new(0xC4A5);
    let options = Options {
        max_batch_items: STATUS_CHUNK,
        ..Options::default()
    };
    let config = write_config(dir, &scheme, &options);
    if let Some(bytes) = snapshot_log_bytes {
        set_snapshot_log_bytes(&config, bytes);
    }
    config
}

/// Sets `revocation.snapshot_log_bytes` in a config written by `write_config`.
fn set_snapshot_log_bytes(config: &Path, bytes: u64) {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(
        text.contains("\n[revocation]\n") && !text.contains("snapshot_log_bytes"),
        "write_config's [revocation] section changed; set snapshot_log_bytes another way"
    );
    let text = text.replacen(
        "\n[revocation]\n",
        &format!("\n[revocation]\nsnapshot_log_bytes = {bytes}\n"),
        1,
    );
    std::fs::write(config, text).unwrap();
}

// ---- clients --------------------------------------------------------------------------------

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

// ---- checking -------------------------------------------------------------------------------

#[derive(Deserialize)]
struct StatusReply<'a> {
    #[serde(borrow)]
    results: Vec<StatusResult<'a>>,
}

/// One `/v1/status` result (IDs are `[A-Za-z0-9._-]`: no escapes, so borrowed).
#[derive(Debug, Deserialize)]
struct StatusResult<'a> {
    kind: &'a str,
    id: &'a str,
    status: &'a str,
    reason: Option<&'a str>,
    since: Option<i64>,
    revoked_before: Option<i64>,
}

/// `POST /v1/status` for `(kind is subject, id)` pairs; calls `each(i, result)` with the result
/// for `ids[i]`, for every `i`.
fn status_of(
    gateway: &BinaryGateway,
    ids: &[(bool, &str)],
    context: &str,
    mut each: impl FnMut(usize, &StatusResult<'_>),
) {
    // Results come subjects first, then credentials, each in input order.
    let order: Vec<usize> = (0..ids.len())
        .filter(|&i| ids[i].0)
        .chain((0..ids.len()).filter(|&i| !ids[i].0))
        .collect();
    let list = |subject: bool| {
        let quoted: Vec<String> = ids
            .iter()
            .filter(|(s, _)| *s == subject)
            .map(|(_, id)| format!("\"{id}\""))
            .collect();
        quoted.join(",")
    };
    let body = format!(
        "{{\"subjects\":[{}],\"credentials\":[{}]}}",
        list(true),
        list(false)
    );
    let auth = format!("Bearer {TELCO_KEY}");
    let reply = http::request(
        gateway.public,
        "POST",
        "/v1/status",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{context}: POST /v1/status failed: {e}"));
    assert_eq!(
        reply.status,
        200,
        "{context}: POST /v1/status: {}",
        reply.text()
    );
    let parsed: StatusReply<'_> = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("{context}: POST /v1/status answer: {e}"));
    assert_eq!(
        parsed.results.len(),
        ids.len(),
        "{context}: POST /v1/status answered a different number of results"
    );
    for (&i, result) in order.iter().zip(&parsed.results) {
        let (subject, id) = ids[i];
        let kind = if subject { "subject" } else { "credential" };
        assert!(
            result.id == id && result.kind == kind,
            "{context}: POST /v1/status answered {result:?} in the place of {kind} {id}"
        );
        each(i, result);
    }
}

/// Whether a status result says "no entry": `Ok(false)`, the exact sent entry: `Ok(true)`, or
/// anything else: `Err`.
fn observe(result: &StatusResult<'_>, sent: &Sent) -> Result<bool, String> {
    if result.reason.is_none() && result.since.is_none() && result.revoked_before.is_none() {
        return if result.status == "active" {
            Ok(false)
        } else {
            Err(format!(
                "status {:?} without reason or since",
                result.status
            ))
        };
    }
    // A subject revoked with `before` is in good standing; only older credentials are not.
    let status = if sent.before.is_some() {
        "active"
    } else {
        sent.status
    };
    if result.status == status
        && result.reason == Some(sent.reason)
        && result.since == Some(sent.at)
        && result.revoked_before == sent.before
    {
        Ok(true)
    } else {
        Err(format!(
            "sent {sent:?} (status query should say {status}), /v1/status says {result:?}"
        ))
    }
}

fn is_absent(result: &StatusResult<'_>) -> bool {
    result.status == "active"
        && result.reason.is_none()
        && result.since.is_none()
        && result.revoked_before.is_none()
}

/// One series of the Prometheus text (its name and labels as written), if present.
fn metric(text: &str, name: &str) -> Option<f64> {
    testkit::metrics::parse(text).get(name).copied()
}

/// What one check found.
#[derive(Debug, Default)]
struct Checked {
    entries_present: usize,
    unacked_whole: usize,
    unacked_absent: usize,
}

/// Checks every request sent so far against the gateway of start number `start` (see the
/// module docs), updating the fates of unacknowledged requests. Panics with every problem found
/// (up to 15 shown), each naming the request number, the round that sent it and its answer.
fn check(
    gateway: &BinaryGateway,
    requests: &mut [Request],
    start: usize,
    rng: &mut Rng,
    context: &str,
) -> Checked {
    let mut problems: Vec<String> = Vec::new();

    // (a), (b), (d): every entry ever sent, through bulk status queries.
    let flat: Vec<(usize, usize)> = requests
        .iter()
        .enumerate()
        .flat_map(|(r, request)| (0..request.entries.len()).map(move |e| (r, e)))
        .collect();
    let mut present = vec![0usize; requests.len()];
    let mut missing: Vec<Vec<String>> = vec![Vec::new(); requests.len()];
    for chunk in flat.chunks(STATUS_CHUNK) {
        let ids: Vec<(bool, &str)> = chunk
            .iter()
            .map(|&(r, e)| {
                let sent = &requests[r].entries[e];
                (sent.subject, sent.id.as_str())
            })
            .collect();
        status_of(gateway, &ids, context, |i, result| {
            let (r, e) = chunk[i];
            let sent = &requests[r].entries[e];
            match observe(result, sent) {
                Ok(true) => present[r] += 1,
                Ok(false) => {
                    if missing[r].len() < 3 {
                        missing[r].push(sent.id.clone());
                    }
                }
                Err(why) => problems.push(format!(
                    "{}: {} {} is present with other values than sent: {why}",
                    requests[r].describe(),
                    sent.kind(),
                    sent.id
                )),
            }
        });
    }
    let round = start;
    let mut checked = Checked::default();
    for (r, request) in requests.iter_mut().enumerate() {
        let (found, n) = (present[r], request.entries.len());
        let whole = found == n;
        let none = found == 0;
        let problem = match request.fate {
            Fate::Acked if !whole => Some(format!(
                "acknowledged, but only {found} of {n} entries present (missing e.g. {:?})",
                missing[r]
            )),
            Fate::Refused if !none => Some(format!(
                "refused with an error, but {found} of {n} entries present"
            )),
            Fate::FoundWhole(seen) if !whole => Some(format!(
                "was whole after the restart of round {seen}, now {found} of {n} entries present"
            )),
            Fate::FoundAbsent(seen) if !none => Some(format!(
                "was absent after the restart of round {seen}, now {found} of {n} entries present"
            )),
            Fate::Unknown if !whole && !none => Some(format!(
                "unacknowledged and half applied: {found} of {n} entries present (missing e.g. {:?})",
                missing[r]
            )),
            Fate::Unknown if whole => {
                request.fate = Fate::FoundWhole(round);
                None
            }
            Fate::Unknown => {
                request.fate = Fate::FoundAbsent(round);
                None
            }
            _ => None,
        };
        if let Some(problem) = problem {
            problems.push(format!("{}: {problem}", request.describe()));
        }
        match request.fate {
            Fate::FoundWhole(_) => checked.unacked_whole += 1,
            Fate::FoundAbsent(_) => checked.unacked_absent += 1,
            _ => {}
        }
        checked.entries_present += found;
    }

    // (c) Nothing else: the gateway's own counts, IDs next to the sent ones, and sent IDs under
    // the other kind.
    let metrics = http::get(gateway.operator, "/metrics", None).text();
    for name in ["idgate_revocation_entries", "idgate_revocation_records"] {
        let value = metric(&metrics, name);
        if value != Some(checked.entries_present as f64) {
            problems.push(format!(
                "{name} is {value:?}, but {} entries were found (the list holds entries nobody sent, or the metric is wrong)",
                checked.entries_present
            ));
        }
    }
    let mut strangers: Vec<(bool, String)> = Vec::new();
    let next = requests.iter().map(|r| r.number + 1).max().unwrap_or(0);
    for k in 0..50u64 {
        strangers.push((k % 2 == 0, format!("r{round}-q{}-{k}", next + 1000 + k)));
        strangers.push((k % 2 == 1, format!("never-{k}")));
    }
    if !requests.is_empty() {
        for _ in 0..100 {
            let request = &requests[rng.below(requests.len() as u64) as usize];
            let Some(sent) = request.entries.first() else {
                continue;
            };
            // One past the last entry: never sent.
            strangers.push((
                sent.subject,
                format!(
                    "r{}-q{}-{}",
                    request.round,
                    request.number,
                    request.entries.len()
                ),
            ));
            // A sent ID under the other kind.
            let sent = &request.entries[rng.below(request.entries.len() as u64) as usize];
            strangers.push((!sent.subject, sent.id.clone()));
        }
    }
    let ids: Vec<(bool, &str)> = strangers.iter().map(|(s, id)| (*s, id.as_str())).collect();
    status_of(gateway, &ids, context, |i, result| {
        if !is_absent(result) {
            let (subject, id) = ids[i];
            let kind = if subject { "subject" } else { "credential" };
            problems.push(format!(
                "{kind} {id} was never sent, but /v1/status says {result:?}"
            ));
        }
    });

    // (d) Spot checks of the fields only the admin API shows (`status` of subjects with
    // `before`, `before` itself), for entries that must be present and entries that must not.
    let whole: Vec<usize> = (0..requests.len())
        .filter(|&r| present[r] == requests[r].entries.len() && present[r] > 0)
        .collect();
    let absent: Vec<usize> = (0..requests.len()).filter(|&r| present[r] == 0).collect();
    let mut spots: Vec<(&Sent, bool)> = Vec::new();
    for (pool, samples, expected) in [(&whole, 30, true), (&absent, 5, false)] {
        if pool.is_empty() {
            continue;
        }
        for _ in 0..samples {
            let request = &requests[pool[rng.below(pool.len() as u64) as usize]];
            let sent = &request.entries[rng.below(request.entries.len() as u64) as usize];
            spots.push((sent, expected));
        }
    }
    for (sent, expected) in spots {
        let path = format!("/admin/v1/revocations/{}/{}", sent.kind(), sent.id);
        let reply = http::get(gateway.operator, &path, Some(ADMIN_TOKEN));
        if !expected {
            if reply.status != 404 {
                problems.push(format!(
                    "GET {path}: {} {} (expected 404: the request was not applied)",
                    reply.status,
                    reply.text()
                ));
            }
            continue;
        }
        let want = json!({
            "kind": sent.kind(), "id": sent.id, "status": sent.status, "reason": sent.reason,
            "before": sent.before, "at": sent.at,
        });
        let got = (reply.status == 200).then(|| reply.json());
        if got.as_ref() != Some(&want) {
            problems.push(format!(
                "GET {path}: {} {} (expected 200 {want})",
                reply.status,
                reply.text()
            ));
        }
    }
    // The other kind of a present entry is not on record either.
    if let Some(&r) = whole.first() {
        let sent = &requests[r].entries[0];
        let path = format!("/admin/v1/revocations/{}/{}", sent.other_kind(), sent.id);
        let reply = http::get(gateway.operator, &path, Some(ADMIN_TOKEN));
        if reply.status != 404 {
            problems.push(format!(
                "GET {path}: {} {} (expected 404: only the other kind was sent)",
                reply.status,
                reply.text()
            ));
        }
    }

    if !problems.is_empty() {
        let shown = problems.len().min(15);
        panic!(
            "{context}: {} problem(s) after the restart; the first {shown}:\n  {}",
            problems.len(),
            problems[..shown].join("\n  ")
        );
    }
    checked
}

fn seed() -> u64 {
    std::env::var("IDGATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

#[test]
fn acknowledged_revocations_survive_twenty_random_kill_nine_rounds() {
    let seed = seed();
    let rounds = std::env::var("IDGATE_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(ROUNDS);
    eprintln!("crash harness: IDGATE_CRASH_SEED={seed} ({rounds} rounds)");
    let started = Instant::now();
    let mut rng = Rng::new(seed);
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
        if round > 0 && rng.percent(KILL_DURING_START_PERCENT) {
            let after = Duration::from_millis(rng.below(151));
            let status = kill_during_start(&config, after);
            first_start = format!(
                ", after a start killed at {} ms ({status})",
                after.as_millis()
            );
            context.push_str(&first_start);
        }
        let checking = Instant::now();
        let mut gateway = up(&config, &context);
        // Its own RNG: the round's choices do not depend on how many requests got through.
        let mut sampling = Rng::new(seed ^ splitmix(round as u64));
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

        let clients = rng.range(CLIENTS) as usize;
        let delay = Duration::from_millis(rng.range(KILL_DELAY_MS));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..clients)
            .map(|index| {
                let (stop, next) = (Arc::clone(&stop), Arc::clone(&next_number));
                let operator = gateway.operator;
                std::thread::spawn(move || client(operator, seed, round, index, &next, &stop))
            })
            .collect();
        let term_first = rng
            .percent(TERM_THEN_KILL_PERCENT)
            .then(|| Duration::from_millis(rng.below(31)));
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

// ---- damaged logs ---------------------------------------------------------------------------

/// The log files (names starting with `log`) in a revocation directory, oldest first (by the
/// number after `log.` where there is one, else by name).
fn log_files(revocations: &Path) -> Vec<PathBuf> {
    let mut files: Vec<(Option<u64>, String, PathBuf)> = std::fs::read_dir(revocations)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("log").then(|| {
                let number = name
                    .strip_prefix("log.")
                    .and_then(|n| n.parse::<u64>().ok());
                (number, name, e.path())
            })
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, _, path)| path).collect()
}

/// Byte ranges of the records in a log file (`"IDGR" ‖ len u32 LE ‖ crc u32 LE ‖ payload`,
/// src/revocation/log.rs); panics if the file is not a sequence of whole records.
fn records_in(bytes: &[u8], path: &Path) -> Vec<std::ops::Range<usize>> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        assert!(
            bytes.len() >= at + 12 && bytes[at..at + 4] == *b"IDGR",
            "{}: no record header at byte {at}: the log format changed (see src/revocation/log.rs); update this test",
            path.display()
        );
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let end = at + 12 + len;
        assert!(
            end <= bytes.len(),
            "{}: record at {at} runs past the end",
            path.display()
        );
        records.push(at..end);
        at = end;
    }
    records
}

/// Posts `requests` acknowledged requests of distinct entries (tagged `tag`), returning them.
fn post_acknowledged(
    gateway: &BinaryGateway,
    seed: u64,
    tag: usize,
    first: u64,
    requests: u64,
) -> Vec<Request> {
    (first..first + requests)
        .map(|number| {
            let mut entries = entries_for(seed, tag, number);
            entries.truncate(20 + number as usize % 7);
            let reply = gateway.revoke(&body_of(&entries, number));
            assert_eq!(reply.status, 200, "request q{number}: {}", reply.text());
            assert_eq!(
                reply.json()["applied"],
                entries.len(),
                "request q{number}: {}",
                reply.text()
            );
            Request::new(tag, number, 0, entries, Answer::Acked)
        })
        .collect()
}

/// The value of `needle` as a whole number in `text` (not part of a longer number).
fn mentions_number(text: &str, needle: usize) -> bool {
    let needle = needle.to_string();
    text.match_indices(&needle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + needle.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// Starts the gateway on a log damaged at byte `flipped` (inside the record at `record`) and
/// checks the refusal: non-zero exit within 5 s, "corrupt", the offset, the file name, and the
/// file left as it was.
fn assert_refuses(config: &Path, log: &Path, record: usize, flipped: usize, damaged: &[u8]) {
    let what = format!("byte {flipped} flipped (in the record at {record})");
    let started = Instant::now();
    let (status, stderr) = match launch(config, Duration::from_secs(10)) {
        Launch::Up(gateway, _) => {
            let text = http::get(gateway.operator, "/metrics", None).text();
            panic!(
                "{what}: started on the damaged log {} (idgate_revocation_entries {:?})",
                log.display(),
                metric(&text, "idgate_revocation_entries")
            )
        }
        Launch::Exited { status, stderr } => (status, stderr.join("\n")),
    };
    let took = started.elapsed();
    assert!(
        !status.success(),
        "{what}: exited 0 on a corrupt log: {stderr}"
    );
    assert!(
        took < Duration::from_secs(5),
        "{what}: took {took:?} to refuse"
    );
    assert!(
        stderr.contains("corrupt"),
        "{what}: stderr does not say the log is corrupt:\n{stderr}"
    );
    assert!(
        mentions_number(&stderr, record) || mentions_number(&stderr, flipped),
        "{what}: stderr names neither the damaged record's offset ({record}) nor the flipped byte's ({flipped}):\n{stderr}"
    );
    let name = log.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stderr.contains(&name),
        "{what}: stderr does not name the file {name}:\n{stderr}"
    );
    assert!(
        std::fs::read(log).unwrap() == damaged,
        "{what}: the refused start changed the damaged log (the operator must find it as it was)"
    );
}

/// A stopped gateway's data directory holding `requests` acknowledged requests in its log.
struct WrittenLog {
    seed: u64,
    dir: tempfile::TempDir,
    config: PathBuf,
    revocations: PathBuf,
    requests: Vec<Request>,
}

/// Starts a gateway on a fresh directory, posts `requests` acknowledged requests, stops it.
fn written_log(requests: u64) -> WrittenLog {
    let seed = seed();
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), None);
    let revocations = dir.path().join("data").join("revocations");
    let gateway = up(&config, "first start");
    let requests = post_acknowledged(&gateway, seed, 0, 0, requests);
    stop_cleanly(gateway, &format!("after {} requests", requests.len()));
    WrittenLog {
        seed,
        dir,
        config,
        revocations,
        requests,
    }
}

#[test]
fn a_corrupt_byte_in_the_middle_of_the_log_refuses_start() {
    let WrittenLog {
        seed,
        dir: _dir,
        config,
        revocations,
        mut requests,
    } = written_log(8);

    // The second record (whole records follow it): damage, not a torn tail.
    let mut records: Vec<(PathBuf, std::ops::Range<usize>)> = Vec::new();
    for path in log_files(&revocations) {
        let bytes = std::fs::read(&path).unwrap();
        records.extend(
            records_in(&bytes, &path)
                .into_iter()
                .map(|r| (path.clone(), r)),
        );
    }
    assert!(
        records.len() >= 3,
        "expected the 8 acknowledged requests in log records after a clean stop, found {} record(s) in {:?}",
        records.len(),
        log_files(&revocations)
    );
    let (log, record) = records[1].clone();
    let original = std::fs::read(&log).unwrap();

    // Every byte of the header (marker, length, checksum), and payload bytes spread over the
    // record (entry count, kinds, statuses, times, IDs), one at a time.
    let payload = record.len() - 12;
    let positions: Vec<usize> = (0..12)
        .chain((0..8).map(|k| 12 + k * (payload - 1) / 7))
        .map(|offset| record.start + offset)
        .collect();
    let started = Instant::now();
    for &flipped in &positions {
        let mut damaged = original.clone();
        damaged[flipped] ^= 0x10;
        std::fs::write(&log, &damaged).unwrap();
        assert_refuses(&config, &log, record.start, flipped, &damaged);
    }
    eprintln!(
        "{} single-byte corruptions of the record at {} of {} refused in {:.2} s",
        positions.len(),
        record.start,
        log.display(),
        started.elapsed().as_secs_f64()
    );

    // Put the byte back: everything is there again.
    std::fs::write(&log, &original).unwrap();
    let gateway = up(&config, "after repairing the flipped byte");
    check(
        &gateway,
        &mut requests,
        1,
        &mut Rng::new(seed),
        "after the repair",
    );
    stop_cleanly(gateway, "after the repair");
}

#[test]
fn a_torn_tail_is_dropped_and_the_rest_kept() {
    let WrittenLog {
        seed,
        dir: _dir,
        config,
        revocations,
        mut requests,
    } = written_log(6);

    let newest = |what: &str| {
        log_files(&revocations)
            .pop()
            .unwrap_or_else(|| panic!("{what}: no log file in {}", revocations.display()))
    };
    let logs = log_files(&revocations);
    let first = logs
        .iter()
        .find_map(|path| {
            let bytes = std::fs::read(path).unwrap();
            let first = records_in(&bytes, path).into_iter().next()?;
            Some(bytes[first].to_vec())
        })
        .expect("no log record after 6 acknowledged requests");

    // (1) The first 7 bytes of a record header ("IDGR" and 3 bytes of its length).
    // (2) A whole header and all but the last 3 bytes of the payload.
    // (3) A header promising far more payload than follows.
    let mut huge = first[..12].to_vec();
    huge[4..8].copy_from_slice(&(1u32 << 20).to_le_bytes());
    huge.extend_from_slice(b"junk");
    let tails: [(&str, Vec<u8>); 3] = [
        ("7 header bytes", first[..7].to_vec()),
        (
            "a record without its last 3 bytes",
            first[..first.len() - 3].to_vec(),
        ),
        ("a header promising 1 MiB", huge),
    ];
    for (step, (what, tail)) in tails.iter().enumerate() {
        let context = format!("torn tail {}: {what}", step + 1);
        let log = newest(&context);
        let mut bytes = std::fs::read(&log).unwrap();
        let before = bytes.len();
        bytes.extend_from_slice(tail);
        std::fs::write(&log, &bytes).unwrap();

        let (gateway, startup) = match launch(&config, Duration::from_secs(30)) {
            Launch::Up(gateway, startup) => (gateway, startup),
            Launch::Exited { status, stderr } => panic!(
                "{context}: the gateway did not start ({status}); stderr:\n{}",
                stderr.join("\n")
            ),
        };
        check(
            &gateway,
            &mut requests,
            step + 1,
            &mut Rng::new(seed),
            &context,
        );
        let loaded = startup
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "revocation log loaded");
        if let Some(torn) = loaded.as_ref().and_then(|l| l["torn_bytes"].as_u64()) {
            assert_eq!(
                torn,
                tail.len() as u64,
                "{context}: the start reported {torn} torn bytes"
            );
        }
        let after = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        assert!(
            after as usize <= before,
            "{context}: the torn bytes are still in {} ({after} bytes, {before} before the damage)",
            log.display()
        );
        // Later records must not land behind the torn bytes: post more, crash, restart.
        let more = post_acknowledged(&gateway, seed, step + 1, 100 * (step as u64 + 1), 3);
        requests.extend(more);
        let mut gateway = gateway;
        gateway.child.kill().unwrap();
        let _ = gateway.wait(Duration::from_secs(10));
        let gateway = up(
            &config,
            &format!("{context}, then 3 more requests and kill -9"),
        );
        check(
            &gateway,
            &mut requests,
            step + 1,
            &mut Rng::new(seed),
            &context,
        );
        stop_cleanly(gateway, &context);
    }
}
