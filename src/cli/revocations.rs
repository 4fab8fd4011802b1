//! `idgate revocations import|stats`: the offline side of the revocation data directory.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::revocation::import::import_file;
use crate::revocation::store::{load, revocation_dir};
use crate::revocation::{Kind, Reason, Status};

/// Imports a JSON Lines file into the data directory (all or nothing) and prints a summary.
pub fn import(file: &Path, data_dir: &Path) -> Result<()> {
    let summary = import_file(file, data_dir)?;
    println!(
        "imported {} entries from {} in {:.2} s ({:.0} entries/s): {} took effect; the list now holds {} revoked or suspended ({} records, reinstatements included); snapshot {} bytes in {}",
        summary.entries,
        file.display(),
        summary.seconds,
        summary.entries as f64 / summary.seconds.max(1e-9),
        summary.applied,
        summary.adverse,
        summary.records,
        summary.snapshot_bytes,
        revocation_dir(data_dir).display(),
    );
    Ok(())
}

/// Publishes a JSON Lines file to the shared feed: chunks of at most 8 MiB stored beside the
/// stream, then one commit entry that names them (appended only if every chunk is there).
/// Every instance applies the whole file when it reads the commit; before it, no instance
/// applies any of it.
pub fn import_to_feed(file: &Path, url: &str, stream: &str, allow_volatile: bool) -> Result<()> {
    use crate::revocation::feed::{FeedKeys, Persistence, Publisher};
    use crate::revocation::feed_share::{ImportCommit, pack};
    use std::time::{Duration, Instant};

    if !url.starts_with("redis://") {
        anyhow::bail!("--feed must be a URL like redis://127.0.0.1:6379");
    }
    let started = Instant::now();
    let slots = crate::revocation::import::parse_file(file)?;
    let parsed = started.elapsed();
    let (chunks, chunked) = pack(&slots);
    drop(slots);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sequence = runtime.block_on(async {
        // The error's kind only: its text may quote a URL with a password.
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("--feed: {:?}", e.kind()))?;
        let mut connection = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("the feed's Redis did not answer within 5 s"))?
        .map_err(|e| anyhow::anyhow!("cannot reach the feed's Redis: {:?}", e.kind()))?;
        let persistence = Persistence::read(&mut connection).await?;
        persistence.check(allow_volatile).map_err(anyhow::Error::msg)?;
        let keys = FeedKeys::new(stream);
        let publisher =
            Publisher::reconnecting(client, connection, keys.clone(), Duration::from_secs(10));
        let id: [u8; 16] = rand::random();
        let deadline = Instant::now() + Duration::from_secs(600);
        for (index, chunk) in chunks.iter().enumerate() {
            publisher
                .put_chunk(&keys.import_chunk(&id, index as u32), chunk, deadline)
                .await
                .with_context(|| format!("storing chunk {index}; nothing was committed"))?;
        }
        let commit = ImportCommit { id, chunked };
        publisher
            .commit_import(&commit, deadline)
            .await
            .context("committing the import (if it timed out, it may or may not have been committed: running the import again is harmless)")
    })?;
    println!(
        "published {} entries from {} to the feed in {:.2} s ({:.2} s parsing): {} chunks, commit entry {sequence}; every instance applies them when it reads that entry",
        chunked.entries,
        file.display(),
        started.elapsed().as_secs_f64(),
        parsed.as_secs_f64(),
        chunked.chunks,
    );
    Ok(())
}

/// Prints counts by kind, status and reason (read-only: safe beside a running gateway).
pub fn stats(data_dir: &Path, json: bool) -> Result<()> {
    let dir = revocation_dir(data_dir);
    let loaded =
        load(&dir, false).with_context(|| format!("revocation data in {}", dir.display()))?;
    let mut by_status: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut by_reason: BTreeMap<&str, u64> = BTreeMap::new();
    let mut with_before = 0u64;
    for shard in loaded.list.table().capture() {
        for slot in shard.sorted() {
            let Some(record) = slot.record() else {
                continue;
            };
            *by_status
                .entry((record.kind.as_str(), record.status.as_str()))
                .or_default() += 1;
            if record.status != Status::Active {
                let reason = record.reason.unwrap_or(Reason::Other).as_str();
                *by_reason.entry(reason).or_default() += 1;
                with_before += u64::from(record.before.is_some());
            }
        }
    }
    let count = |kind: Kind, status: Status| {
        by_status
            .get(&(kind.as_str(), status.as_str()))
            .copied()
            .unwrap_or(0)
    };
    if json {
        let mut kinds = serde_json::Map::new();
        for kind in [Kind::Subject, Kind::Credential] {
            let mut statuses = serde_json::Map::new();
            for status in Status::ALL {
                statuses.insert(status.as_str().into(), count(kind, status).into());
            }
            kinds.insert(kind.as_str().into(), statuses.into());
        }
        let reasons: serde_json::Map<String, serde_json::Value> = Reason::ALL
            .iter()
            .map(|r| {
                (
                    r.as_str().to_string(),
                    by_reason.get(r.as_str()).copied().unwrap_or(0).into(),
                )
            })
            .collect();
        let out = serde_json::json!({
            "adverse": loaded.list.len(),
            "records": loaded.list.records(),
            "by_kind_and_status": kinds,
            "adverse_by_reason": reasons,
            "subject_entries_with_before": with_before,
            "last_update": loaded.list.last_update(),
            "snapshot_bytes": loaded.snapshot_bytes,
            "log_segments": loaded.live_segments.len(),
            "log_bytes": loaded.log_bytes,
            "log_records": loaded.recovery.records,
            "torn_tail_bytes": loaded.recovery.torn_bytes,
        });
        println!("{out:#}");
        return Ok(());
    }
    println!("revocation data in {}", dir.display());
    println!(
        "  snapshot: {} bytes; log after it: {} segment(s), {} bytes, {} records{}",
        loaded.snapshot_bytes,
        loaded.live_segments.len(),
        loaded.log_bytes,
        loaded.recovery.records,
        if loaded.recovery.torn_bytes > 0 {
            format!(
                " (+{} bytes of a torn last write, never acknowledged)",
                loaded.recovery.torn_bytes
            )
        } else {
            String::new()
        }
    );
    println!(
        "  {} revoked or suspended, {} records in all (reinstatements are kept so late, older updates cannot undo them)",
        loaded.list.len(),
        loaded.list.records()
    );
    println!(
        "  last update: {} (unix seconds)",
        loaded.list.last_update()
    );
    println!();
    println!(
        "  {:<12}{:>14}{:>14}{:>14}",
        "kind", "revoked", "suspended", "active"
    );
    for kind in [Kind::Subject, Kind::Credential] {
        println!(
            "  {:<12}{:>14}{:>14}{:>14}",
            kind.as_str(),
            count(kind, Status::Revoked),
            count(kind, Status::Suspended),
            count(kind, Status::Active)
        );
    }
    println!();
    println!("  {:<14}{:>14}", "reason", "entries");
    for reason in Reason::ALL {
        println!(
            "  {:<14}{:>14}",
            reason.as_str(),
            by_reason.get(reason.as_str()).copied().unwrap_or(0)
        );
    }
    println!("  subject entries limited by `before`: {with_before}");
    Ok(())
}
