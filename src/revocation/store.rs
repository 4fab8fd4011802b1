//! The durable revocation store: the in-memory list, backed by the log, updated through one
//! group-commit writer thread.
//!
//! **Invariants:**
//! - An update is applied to the list only after its record is durable, so verification and
//!   status queries never see an entry that a crash could take back.
//! - One writer thread owns the log: concurrent requests queue (a bounded channel), and every
//!   record waiting when a write starts shares that write's single `fdatasync` (group commit).
//! - Entries are applied in log order, so the list after a restart equals the list before it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::log::{Log, LogError, RecordBuilder, Recovery, read_segment, sync_dir};
use super::table::Slot;
use super::{Entry, RevocationList, snapshot};

/// Requests waiting for the writer at most (each holds one request's entries).
const QUEUE: usize = 1024;
/// A write gathers waiting records up to about this many bytes.
const GROUP_BYTES: usize = 64 << 20;

struct Commit {
    record: Vec<u8>,
    slots: Vec<Slot>,
    /// False: written and applied, made durable by a later [`Job::Sync`] (the shared feed's
    /// records).
    sync: bool,
    done: oneshot::Sender<Result<(), String>>,
}

/// What the writer thread is asked to do.
enum Job {
    /// Append one record, then apply it (grouped with the other waiting commits).
    Commit(Commit),
    /// Fold a whole set of slots into a new snapshot, then apply them (a feed snapshot or a
    /// bulk import that arrived through the shared feed).
    Merge {
        slots: Vec<Slot>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Make every record written so far durable.
    Sync {
        done: oneshot::Sender<Result<(), String>>,
    },
}

/// Hands the writer the job `make` builds around its answer channel and waits for the answer.
async fn send_job(
    sender: &mpsc::Sender<Job>,
    make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Job,
) -> Result<(), CommitError> {
    let (done, answer) = oneshot::channel();
    sender
        .send(make(done))
        .await
        .map_err(|_| CommitError::Closed)?;
    answer
        .await
        .map_err(|_| CommitError::Closed)?
        .map_err(CommitError::Io)
}

/// Why an update was not made durable.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("the revocation store is shut down")]
    Closed,
    #[error("writing the revocation log failed: {0}")]
    Io(String),
}

/// Counters the operator sees (SPEC §10 and the revocation metrics).
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Bytes in log segments not yet folded into a snapshot.
    pub log_bytes: AtomicU64,
    pub snapshot_bytes: AtomicU64,
    pub snapshots_ok: AtomicU64,
    pub snapshots_failed: AtomicU64,
    /// Duration of the last snapshot, in microseconds.
    pub last_snapshot_micros: AtomicU64,
    /// Wall-clock time the last snapshot completed.
    pub last_snapshot_at: AtomicI64,
    running: AtomicBool,
}

/// The store. Share it behind an `Arc`.
pub struct RevocationStore {
    list: Arc<RevocationList>,
    commits: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<StoreStats>,
    dir: PathBuf,
    _lock: File,
}

impl std::fmt::Debug for RevocationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationStore")
            .field("dir", &self.dir)
            .field("entries", &self.list.len())
            .finish()
    }
}

/// The revocation directory inside a data directory.
pub fn revocation_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("revocations")
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("log.{number:020}"))
}

/// The log segments in `dir`, oldest first.
pub fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        // `log` alone is the single log of earlier builds: the oldest segment.
        let Some(number) = name.to_str().and_then(|n| match n {
            "log" => Some(0),
            _ => n.strip_prefix("log.")?.parse::<u64>().ok(),
        }) else {
            continue;
        };
        found.push((number, entry.path()));
    }
    found.sort();
    Ok(found)
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Takes the data directory's exclusive lock: one gateway or import at a time.
pub fn lock_dir(dir: &Path) -> Result<File, LogError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let path = dir.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LogError::Locked {
            path: dir.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(io_error(&path)(source)),
    }
}

/// Everything on disk, loaded.
#[derive(Debug)]
pub struct Loaded {
    pub list: RevocationList,
    /// The open newest segment (writable loads only) and its number.
    pub log: Option<(Log, u64)>,
    /// Segments replayed on top of the snapshot.
    pub live_segments: Vec<(u64, PathBuf)>,
    pub recovery: Recovery,
    pub snapshot_bytes: u64,
    pub log_bytes: u64,
}

/// Loads the snapshot and the log segments after it. `writable`: also cut a torn tail, remove
/// leftovers (covered segments, an unfinished snapshot) and open the newest segment for
/// appending (creating one if there is none). Read-only loads change nothing on disk.
pub fn load(dir: &Path, writable: bool) -> Result<Loaded, LogError> {
    if writable {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        snapshot::remove_leftover(dir).map_err(io_error(dir))?;
    }
    let (list, snapshot_segment, snapshot_bytes) = match snapshot::load(dir)? {
        Some(loaded) => (
            RevocationList::from_table(loaded.table, loaded.last_update),
            loaded.next_segment,
            loaded.bytes,
        ),
        None => (RevocationList::new(), 0, 0),
    };
    let all = segments(dir).map_err(io_error(dir))?;
    let (covered, live): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|(number, _)| *number < snapshot_segment);
    if writable {
        remove_segments(dir, &covered).map_err(io_error(dir))?;
    }
    let mut recovery = Recovery::default();
    let mut log_bytes = 0;
    let mut log = None;
    let mut replayed_any = false;
    for (i, (number, path)) in live.iter().enumerate() {
        let newest = i + 1 == live.len();
        let (slots, found) = if newest && writable {
            let (opened, slots, found) = Log::open(path)?;
            log_bytes += opened.len();
            log = Some((opened, *number));
            (slots, found)
        } else {
            let (slots, found) = read_segment(path, newest)?;
            log_bytes += std::fs::metadata(path).map_err(io_error(path))?.len();
            (slots, found)
        };
        recovery.records += found.records;
        recovery.entries += found.entries;
        recovery.torn_bytes += found.torn_bytes;
        replayed_any |= !slots.is_empty();
        list.table().apply(&slots);
    }
    if replayed_any {
        // The log does not carry wall-clock times; its last write is when it last changed.
        let modified = live
            .last()
            .and_then(|(_, path)| std::fs::metadata(path).ok()?.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        list.mark_updated(modified.max(list.last_update()));
    }
    if writable && log.is_none() {
        let number = snapshot_segment.max(live.last().map_or(0, |(n, _)| n + 1));
        let (opened, _, _) = Log::open(&segment_path(dir, number))?;
        log = Some((opened, number));
    }
    Ok(Loaded {
        list,
        log,
        live_segments: live,
        recovery,
        snapshot_bytes,
        log_bytes,
    })
}

impl RevocationStore {
    /// Opens `data_dir/revocations` (creating it), takes its lock, loads the snapshot and the
    /// log after it, and starts the writer thread. A background snapshot runs whenever the log
    /// has grown by `snapshot_log_bytes`.
    pub fn open(
        data_dir: &Path,
        snapshot_log_bytes: u64,
    ) -> Result<(RevocationStore, Recovery), LogError> {
        let dir = revocation_dir(data_dir);
        let lock = lock_dir(&dir)?;
        let loaded = load(&dir, true)?;
        let Some((log, segment)) = loaded.log else {
            return Err(LogError::Io {
                path: dir.display().to_string(),
                source: std::io::Error::other("no writable log segment"),
            });
        };
        let list = Arc::new(loaded.list);
        let stats = Arc::new(StoreStats::default());
        stats.log_bytes.store(loaded.log_bytes, Ordering::Relaxed);
        stats
            .snapshot_bytes
            .store(loaded.snapshot_bytes, Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel(QUEUE);
        let writer = {
            let mut writer = Writer {
                log,
                segment,
                since_snapshot: loaded.log_bytes,
                snapshot_log_bytes,
                dir: dir.clone(),
                list: Arc::clone(&list),
                stats: Arc::clone(&stats),
                snapshot: None,
            };
            std::thread::Builder::new()
                .name("idgate-revocation-log".into())
                .spawn(move || writer.run(receiver))
                .map_err(io_error(&dir))?
        };
        let store = RevocationStore {
            list,
            commits: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            stats,
            dir,
            _lock: lock,
        };
        Ok((store, loaded.recovery))
    }

    /// Makes `entries` durable as one record, then applies them. Returns once both are done.
    pub async fn commit(&self, entries: Vec<Entry>) -> Result<(), CommitError> {
        let mut builder = RecordBuilder::default();
        for entry in &entries {
            builder.push(entry);
        }
        self.commit_record(builder).await
    }

    /// Makes a built record durable, then applies it. Returns once both are done.
    pub async fn commit_record(&self, builder: RecordBuilder) -> Result<(), CommitError> {
        let sender = self.commits.lock().clone().ok_or(CommitError::Closed)?;
        let (record, slots) = builder.finish();
        send_job(&sender, |done| {
            Job::Commit(Commit {
                record,
                slots,
                sync: true,
                done,
            })
        })
        .await
    }

    /// Writes several built records to the log, in order, and applies them, without making
    /// them durable: [`RevocationStore::sync`] does that later. For the shared feed's entries
    /// only: the feed holds them, and the applier records its position past them only after
    /// a sync, so a crash in between loses nothing (they are read again). Returns once all are
    /// applied, or at the first that failed (those before it may be applied).
    pub async fn write_records(&self, builders: Vec<RecordBuilder>) -> Result<(), CommitError> {
        if builders.is_empty() {
            return Ok(());
        }
        let sender = self.commits.lock().clone().ok_or(CommitError::Closed)?;
        let mut answers = Vec::with_capacity(builders.len());
        for builder in builders {
            let (record, slots) = builder.finish();
            let (done, answer) = oneshot::channel();
            sender
                .send(Job::Commit(Commit {
                    record,
                    slots,
                    sync: false,
                    done,
                }))
                .await
                .map_err(|_| CommitError::Closed)?;
            answers.push(answer);
        }
        for answer in answers {
            answer
                .await
                .map_err(|_| CommitError::Closed)?
                .map_err(CommitError::Io)?;
        }
        Ok(())
    }

    /// Makes every record written so far durable ([`RevocationStore::write_records`]).
    pub async fn sync(&self) -> Result<(), CommitError> {
        let sender = self.commits.lock().clone().ok_or(CommitError::Closed)?;
        send_job(&sender, |done| Job::Sync { done }).await
    }

    /// Makes `slots` durable and applies them all at once: the writer seals the log, writes
    /// a snapshot of the list with `slots` folded in (the same rule as applying them: the newer
    /// `at` wins), and only once that snapshot is durable applies them to the list. Used for
    /// sets too large for one log record: a shared feed snapshot, a bulk import from the feed.
    pub async fn merge_slots(&self, slots: Vec<Slot>) -> Result<(), CommitError> {
        let sender = self.commits.lock().clone().ok_or(CommitError::Closed)?;
        send_job(&sender, |done| Job::Merge { slots, done }).await
    }

    /// The revocation directory (`<data_dir>/revocations`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The in-memory list (for lookups).
    pub fn list(&self) -> &Arc<RevocationList> {
        &self.list
    }

    /// Bytes in log segments not yet folded into a snapshot (`idgate_revocation_log_bytes`).
    pub fn log_bytes(&self) -> u64 {
        self.stats.log_bytes.load(Ordering::Relaxed)
    }

    /// Snapshot and log counters.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Stops taking updates, lets the writer finish what is queued (each already fsynced when
    /// answered) and any snapshot in progress, and waits for it.
    pub fn close(&self) {
        drop(self.commits.lock().take());
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
    }
}

impl Drop for RevocationStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread's state: it alone appends to the log and changes the list.
struct Writer {
    log: Log,
    segment: u64,
    since_snapshot: u64,
    snapshot_log_bytes: u64,
    dir: PathBuf,
    list: Arc<RevocationList>,
    stats: Arc<StoreStats>,
    snapshot: Option<JoinHandle<()>>,
}

impl Writer {
    fn run(&mut self, mut receiver: mpsc::Receiver<Job>) {
        let mut held: Option<Job> = None;
        while let Some(job) = held.take().or_else(|| receiver.blocking_recv()) {
            let first = match job {
                Job::Commit(commit) => commit,
                Job::Merge { slots, done } => {
                    let _ = done.send(self.merge(&slots));
                    continue;
                }
                Job::Sync { done } => {
                    let _ = done.send(self.log.sync().map_err(|e| e.to_string()));
                    continue;
                }
            };
            let mut group = vec![first];
            let mut bytes = group[0].record.len();
            while bytes < GROUP_BYTES {
                match receiver.try_recv() {
                    Ok(Job::Commit(commit)) => {
                        bytes += commit.record.len();
                        group.push(commit);
                    }
                    Ok(other) => {
                        // Handled after this group, in arrival order.
                        held = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let records: Vec<&[u8]> = group.iter().map(|c| c.record.as_slice()).collect();
            // One sync for the group when any of it asked for one (it also covers records
            // written unsynced before).
            let written = if group.iter().any(|c| c.sync) {
                self.log.append_all(&records)
            } else {
                self.log.append_unsynced(&records)
            };
            match written {
                Ok(()) => {
                    self.stats
                        .log_bytes
                        .fetch_add(bytes as u64, Ordering::Relaxed);
                    self.since_snapshot += bytes as u64;
                    for commit in group {
                        self.list.apply_slots(&commit.slots);
                        let _ = commit.done.send(Ok(()));
                    }
                    if self.since_snapshot >= self.snapshot_log_bytes {
                        self.start_snapshot();
                    }
                }
                Err(error) => {
                    tracing::error!(error = %error, "revocation log write failed; the updates were not applied");
                    for commit in group {
                        let _ = commit.done.send(Err(error.to_string()));
                    }
                }
            }
        }
        if self.log.has_unsynced()
            && let Err(error) = self.log.sync()
        {
            tracing::error!(error = %error, "cannot sync the revocation log at shutdown; the shared feed's newest entries are read again at the next start");
        }
        if let Some(running) = self.snapshot.take() {
            let _ = running.join();
        }
    }

    /// [`RevocationStore::merge_slots`]: a synchronous snapshot with `slots` folded in, then
    /// the list updated. Nothing is applied if the snapshot could not be made durable.
    fn merge(&mut self, slots: &[Slot]) -> Result<(), String> {
        if let Some(running) = self.snapshot.take() {
            let _ = running.join();
        }
        // Records written unsynced are durable before their segment is sealed.
        self.log.sync().map_err(|e| e.to_string())?;
        let next = self.segment + 1;
        let (log, _, _) = Log::open(&segment_path(&self.dir, next)).map_err(|e| e.to_string())?;
        self.log = log;
        self.segment = next;
        self.since_snapshot = 0;
        let started = Instant::now();
        let shards: Vec<Vec<Slot>> = {
            use rayon::prelude::*;
            self.list
                .table()
                .capture()
                .par_iter()
                .map(super::table::ShardCapture::sorted)
                .collect()
        };
        let merged = super::table::Table::from_shards(shards)
            .map_err(|e| format!("shard {}: {}", e.shard, e.reason))?;
        merged.apply(slots);
        let written = snapshot::write(&self.dir, &merged.capture(), next, super::unix_now())
            .map_err(|e| format!("writing the merged snapshot: {e}"))?;
        drop(merged);
        let removed = remove_covered(&self.dir, next).unwrap_or(0);
        let stats = &self.stats;
        stats.log_bytes.fetch_sub(
            removed.min(stats.log_bytes.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        stats.snapshot_bytes.store(written.bytes, Ordering::Relaxed);
        stats
            .last_snapshot_micros
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        stats
            .last_snapshot_at
            .store(super::unix_now(), Ordering::Relaxed);
        stats.snapshots_ok.fetch_add(1, Ordering::Relaxed);
        self.list.apply_slots(slots);
        Ok(())
    }

    /// Seals the current segment, captures the list exactly as the sealed segments leave it, and
    /// writes the snapshot on a background thread.
    fn start_snapshot(&mut self) {
        if self.stats.running.load(Ordering::Acquire) {
            return;
        }
        if let Some(done) = self.snapshot.take() {
            let _ = done.join();
        }
        // Records written unsynced are durable before their segment is sealed.
        if let Err(error) = self.log.sync() {
            tracing::error!(error = %error, "cannot sync the revocation log; snapshot skipped");
            self.stats.snapshots_failed.fetch_add(1, Ordering::Relaxed);
            self.since_snapshot = 0;
            return;
        }
        let next = self.segment + 1;
        match Log::open(&segment_path(&self.dir, next)) {
            Ok((log, _, _)) => {
                self.log = log;
                self.segment = next;
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot start a new revocation log segment; snapshot skipped");
                self.stats.snapshots_failed.fetch_add(1, Ordering::Relaxed);
                self.since_snapshot = 0;
                return;
            }
        }
        self.since_snapshot = 0;
        let capture = self.list.table().capture();
        let last_update = self.list.last_update();
        let dir = self.dir.clone();
        let stats = Arc::clone(&self.stats);
        stats.running.store(true, Ordering::Release);
        let spawned = std::thread::Builder::new()
            .name("idgate-revocation-snapshot".into())
            .spawn(move || {
                let started = Instant::now();
                let result = snapshot::write(&dir, &capture, next, last_update)
                    .and_then(|written| {
                        let removed = remove_covered(&dir, next)?;
                        stats.log_bytes.fetch_sub(
                            removed.min(stats.log_bytes.load(Ordering::Relaxed)),
                            Ordering::Relaxed,
                        );
                        Ok(written)
                    });
                drop(capture);
                match result {
                    Ok(written) => {
                        let took = started.elapsed();
                        stats
                            .snapshot_bytes
                            .store(written.bytes, Ordering::Relaxed);
                        stats
                            .last_snapshot_micros
                            .store(took.as_micros() as u64, Ordering::Relaxed);
                        stats
                            .last_snapshot_at
                            .store(super::unix_now(), Ordering::Relaxed);
                        stats.snapshots_ok.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            records = written.records,
                            bytes = written.bytes,
                            seconds = took.as_secs_f64(),
                            "revocation snapshot written"
                        );
                    }
                    Err(error) => {
                        stats.snapshots_failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %error, "revocation snapshot failed; the log is kept");
                    }
                }
                stats.running.store(false, Ordering::Release);
            });
        match spawned {
            Ok(handle) => self.snapshot = Some(handle),
            Err(error) => {
                self.stats.running.store(false, Ordering::Release);
                self.stats.snapshots_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %error, "cannot start the snapshot thread");
            }
        }
    }
}

/// Deletes the log segments numbered below `next` (a durable snapshot covers them) and makes
/// that durable; returns the bytes they held.
pub fn remove_covered(dir: &Path, next: u64) -> std::io::Result<u64> {
    let covered: Vec<_> = segments(dir)?
        .into_iter()
        .filter(|(number, _)| *number < next)
        .collect();
    remove_segments(dir, &covered)
}

fn remove_segments(dir: &Path, covered: &[(u64, PathBuf)]) -> std::io::Result<u64> {
    if covered.is_empty() {
        return Ok(0);
    }
    let mut removed = 0u64;
    for (_, path) in covered {
        removed += std::fs::metadata(path)?.len();
        std::fs::remove_file(path)?;
    }
    sync_dir(dir)?;
    Ok(removed)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
