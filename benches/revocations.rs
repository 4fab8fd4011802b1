//! The revocation list at national scale, in process: import rate, memory per entry, lookups/s,
//! snapshot write and load.
//!
//! 1. Writes N JSON Lines entries to a file and imports them with `idgate revocations import`'s
//!    code path (parallel parse, all or nothing, one snapshot) into a fresh data directory.
//! 2. Loads that data directory as the gateway does at start, measuring the resident-memory
//!    growth per entry and the load time.
//! 3. Looks up IDs on every core (half of them on the list), hashing included.
//!
//! `cargo bench --bench revocations` (10,000,000 entries; `-- --entries N`);
//! `cargo test --benches` runs 200,000 entries as a smoke test.
//! The end-to-end figures (start-up to ready, gateway RSS, status IDs/s, durable writes/s) come
//! from the load generator: see BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark tooling: a failed setup should stop loudly

use std::io::Write;
use std::time::{Duration, Instant};

use idgate::revocation::import::import_file;
use idgate::revocation::store::{load, revocation_dir};
use idgate::revocation::{Kind, Reason, Status};
use rayon::prelude::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: i64 = 1_763_900_000;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

fn id(i: usize) -> String {
    format!("{:010}", 1_000_000_000 + i)
}

fn line(i: usize) -> String {
    let status = if i % 10 == 9 { "suspended" } else { "revoked" };
    let reason = Reason::ALL[i % Reason::ALL.len()].as_str();
    if i.is_multiple_of(3) {
        format!(
            "{{\"kind\":\"subject\",\"id\":\"{}\",\"status\":\"{status}\",\"reason\":\"{reason}\",\"before\":{NOW},\"at\":{NOW}}}\n",
            id(i)
        )
    } else {
        format!(
            "{{\"kind\":\"subject\",\"id\":\"{}\",\"status\":\"{status}\",\"reason\":\"{reason}\",\"at\":{NOW}}}\n",
            id(i)
        )
    }
}

/// Child mode: load a data directory in a fresh process and report time and memory growth.
fn measure_load(data_dir: &std::path::Path) {
    let before = rss_bytes();
    let started = Instant::now();
    let loaded = load(&revocation_dir(data_dir), false).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_bytes();
    println!(
        "{} {seconds} {}",
        loaded.list.records(),
        after.saturating_sub(before)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--measure-load") {
        measure_load(std::path::Path::new(&args[i + 1]));
        return;
    }
    let full = args.iter().any(|a| a == "--bench");
    let entries = arg(&args, "--entries", if full { 10_000_000 } else { 200_000 });
    let threads = rayon::current_num_threads();
    let dir = tempfile::tempdir().expect("tempdir");

    // 1. The import file and its import.
    let file = dir.path().join("entries.jsonl");
    let started = Instant::now();
    {
        let mut out =
            std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(&file).unwrap());
        for start in (0..entries).step_by(1_000_000) {
            let text: String = (start..(start + 1_000_000).min(entries))
                .into_par_iter()
                .map(line)
                .collect();
            out.write_all(text.as_bytes()).unwrap();
        }
        out.flush().unwrap();
    }
    let file_bytes = std::fs::metadata(&file).unwrap().len();
    eprintln!(
        "wrote {entries} entries ({:.0} MiB) in {:.1} s",
        file_bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    let data_dir = dir.path().join("data");
    let summary = import_file(&file, &data_dir).unwrap();
    assert_eq!(summary.entries, entries);
    assert_eq!(summary.adverse, entries);
    println!(
        "import: {entries} entries in {:.2} s = {:.0} entries/s ({threads} threads; target: 10M in <= 30 s)",
        summary.seconds,
        entries as f64 / summary.seconds
    );
    std::fs::remove_file(&file).unwrap();

    // 2. Load as the gateway does, in a fresh process (this one's allocator already holds the
    //    import's memory); memory growth per entry.
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--measure-load")
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "{}",
        String::from_utf8_lossy(&child.stderr)
    );
    let reply = String::from_utf8(child.stdout).unwrap();
    let fields: Vec<f64> = reply
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(fields[0] as usize, entries);
    println!(
        "load: {entries} entries in {:.2} s in a fresh process; resident memory growth {:.1} bytes/entry (target <= 48)",
        fields[1],
        fields[2] / entries as f64
    );
    let list = load(&revocation_dir(&data_dir), false).unwrap().list;

    // 3. Lookups on every core: half on the list, half not; SHA-256 of the ID included.
    let probes: Vec<String> = (0..1_000_000usize)
        .into_par_iter()
        .map(|i| {
            let n = i.wrapping_mul(2_654_435_761) % entries;
            if i % 2 == 0 { id(n) } else { id(entries + n) }
        })
        .collect();
    // Parsed once, as the API does before a lookup.
    let probes: Vec<idgate::id::Id<'_>> = probes
        .iter()
        .map(|p| idgate::id::Id::parse(p).unwrap())
        .collect();
    let rounds = if full { 10 } else { 1 };
    let started = Instant::now();
    let mut hits = 0usize;
    for _ in 0..rounds {
        hits += probes
            .par_iter()
            .filter(|p| {
                list.lookup(Kind::Subject, **p)
                    .is_some_and(|r| r.status != Status::Active)
            })
            .count();
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(hits, rounds * probes.len() / 2);
    println!(
        "lookups: {:.0} lookups/s on {threads} threads ({entries} entries, half hits, ID hashing included)",
        (rounds * probes.len()) as f64 / seconds
    );
}
