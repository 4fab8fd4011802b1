//! A damaged revocation log, against the real binary.
//!
//! SPEC: a torn tail (a crash in the middle of an append) is dropped; a corrupt byte in the
//! middle of the log makes the gateway refuse to start, naming the byte offset.
//!
//! Both tests damage the log of a cleanly stopped gateway: a flipped byte inside an early record
//! (followed by whole records) refuses the start, naming the file and offset; a torn tail
//! appended to the newest segment is dropped and everything acknowledged kept, and later appends
//! do not land behind it. Log files are found by listing `<data>/revocations/` (names starting
//! with `log`; the snapshot and lock are ignored), so the tests do not depend on how many
//! segments there are. The requests and the check after each restart are the crash harness'
//! (`tests/common/crash/`, see `tests/crash.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed setup should stop loudly

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::crash::check::{check, metric};
use common::crash::launch::{Launch, launch, stop_cleanly, up};
use common::crash::requests::{Answer, Request, body_of, entries_for};
use common::crash::{self, Stream, config_in};
use common::gateway::{BinaryGateway, Client};
use common::http;

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
    let seed = crash::seed();
    eprintln!("damaged log: IDGATE_CRASH_SEED={seed} replays the requests written");
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
        &mut crash::rng(seed, Stream::Sampling, 0),
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
            &mut crash::rng(seed, Stream::Sampling, 0),
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
            &mut crash::rng(seed, Stream::Sampling, 0),
            &context,
        );
        stop_cleanly(gateway, &context);
    }
}
