//! The durable revocation store: the in-memory list, backed by the log, updated through one
//! group-commit writer thread.
//!
//! **Invariants:**
//! - An update is applied to the list only after its record is durable, so verification and
//!   status queries never see an entry that a crash could take back.
//! - One writer thread owns the log: concurrent requests queue (a bounded channel), and every
//!   record waiting when a write starts shares that write's single `fdatasync` (group commit).
//! - Entries are applied in log order, so the list after a restart equals the list before it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::RevocationList;
use super::entry::Entry;
use super::log::{Log, LogError, Recovery, encode_record};

/// Requests waiting for the writer at most (each holds one request's entries).
const QUEUE: usize = 1024;
/// A write gathers waiting records up to about this many bytes.
const GROUP_BYTES: usize = 64 << 20;

struct Commit {
    record: Vec<u8>,
    entries: Vec<Entry>,
    done: oneshot::Sender<Result<(), String>>,
}

/// Why an update was not made durable.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("the revocation store is shut down")]
    Closed,
    #[error("writing the revocation log failed: {0}")]
    Io(String),
}

/// The store. Share it behind an `Arc`.
pub struct RevocationStore {
    list: Arc<RevocationList>,
    commits: Mutex<Option<mpsc::Sender<Commit>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    log_bytes: Arc<AtomicU64>,
    path: PathBuf,
}

impl std::fmt::Debug for RevocationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationStore")
            .field("path", &self.path)
            .field("entries", &self.list.len())
            .finish()
    }
}

/// Where the log lives inside a data directory.
pub fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("revocations").join("log")
}

impl RevocationStore {
    /// Opens `data_dir/revocations/log` (creating it), replays it into a fresh list and starts
    /// the writer thread.
    pub fn open(data_dir: &Path) -> Result<(RevocationStore, Recovery), LogError> {
        let path = log_path(data_dir);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| LogError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let (log, entries, recovery) = Log::open(&path)?;
        let list = Arc::new(RevocationList::new());
        for entry in &entries {
            list.apply(entry);
        }
        let log_bytes = Arc::new(AtomicU64::new(log.len()));
        let (sender, receiver) = mpsc::channel(QUEUE);
        let writer = {
            let list = Arc::clone(&list);
            let log_bytes = Arc::clone(&log_bytes);
            std::thread::Builder::new()
                .name("idgate-revocation-log".into())
                .spawn(move || write_loop(log, receiver, &list, &log_bytes))
                .map_err(|source| LogError::Io {
                    path: path.display().to_string(),
                    source,
                })?
        };
        let store = RevocationStore {
            list,
            commits: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            log_bytes,
            path,
        };
        Ok((store, recovery))
    }

    /// Makes `entries` durable as one record, then applies them. Returns once both are done.
    pub async fn commit(&self, entries: Vec<Entry>) -> Result<(), CommitError> {
        let sender = self.commits.lock().clone().ok_or(CommitError::Closed)?;
        let (done, answer) = oneshot::channel();
        let record = encode_record(&entries);
        sender
            .send(Commit {
                record,
                entries,
                done,
            })
            .await
            .map_err(|_| CommitError::Closed)?;
        answer
            .await
            .map_err(|_| CommitError::Closed)?
            .map_err(CommitError::Io)
    }

    /// The in-memory list (for lookups).
    pub fn list(&self) -> &Arc<RevocationList> {
        &self.list
    }

    /// Bytes in the log (`idgate_revocation_log_bytes`).
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes.load(Ordering::Relaxed)
    }

    /// Stops taking updates, lets the writer finish what is queued (each already fsynced when
    /// answered), and waits for it.
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

fn write_loop(
    mut log: Log,
    mut receiver: mpsc::Receiver<Commit>,
    list: &RevocationList,
    log_bytes: &AtomicU64,
) {
    while let Some(first) = receiver.blocking_recv() {
        let mut group = vec![first];
        let mut bytes = group[0].record.len();
        while bytes < GROUP_BYTES {
            match receiver.try_recv() {
                Ok(commit) => {
                    bytes += commit.record.len();
                    group.push(commit);
                }
                Err(_) => break,
            }
        }
        let mut buffer = Vec::with_capacity(bytes);
        for commit in &group {
            buffer.extend_from_slice(&commit.record);
        }
        match log.append(&buffer) {
            Ok(()) => {
                log_bytes.store(log.len(), Ordering::Relaxed);
                for commit in group {
                    for entry in &commit.entries {
                        list.apply(entry);
                    }
                    let _ = commit.done.send(Ok(()));
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
}
