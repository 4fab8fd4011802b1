//! The durable revocation log: append-only, checksummed, fsynced before anyone is answered.
//!
//! Format: a sequence of records, one per accepted update request (so a request is all or
//! nothing):
//!
//! ```text
//! record  = magic "IDGR" (4) ‖ payload length u32 LE ‖ CRC-32C of payload u32 LE ‖ payload
//! payload = entry count u32 LE ‖ entry*
//! entry   = kind u8 ‖ status u8 ‖ reason u8 (255: none) ‖ has_before u8 ‖ at u32 LE ‖
//!           before u32 LE ‖ id length u8 ‖ id bytes
//! ```
//!
//! **Invariants:**
//! - A record is acknowledged only after `fdatasync` returned for it (group commit: one sync
//!   covers every record written since the last one).
//! - On start, a damaged record at the very end (nothing valid after it) is a torn write from a
//!   crash: it was never acknowledged, so it is cut off. A damaged record *followed by valid
//!   ones* is corruption: start-up refuses with the byte offset, rather than silently dropping
//!   acknowledged entries.
//! - After a failed write the file is cut back to its last good length, so a later record never
//!   lands behind garbage.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::entry::{Entry, Kind, Reason, Status};

const MAGIC: [u8; 4] = *b"IDGR";
const HEADER: usize = 12;
/// The largest payload a record may declare (a 64 MiB request body cannot encode more).
const MAX_PAYLOAD: usize = 256 << 20;

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("revocation log {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "revocation log {path} is corrupt at byte {offset} ({reason}), and valid records follow: refusing to start rather than drop acknowledged revocations; restore the file from a backup, or move it away to start empty"
    )]
    Corrupt {
        path: String,
        offset: u64,
        reason: &'static str,
    },
}

/// What opening the log found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    pub records: u64,
    pub entries: u64,
    /// Bytes of a torn last record that were cut off.
    pub torn_bytes: u64,
}

/// An open log, ready to append.
#[derive(Debug)]
pub struct Log {
    file: File,
    path: PathBuf,
    len: u64,
}

fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    let kind = match entry.kind {
        Kind::Subject => 0,
        Kind::Credential => 1,
    };
    let status = match entry.status {
        Status::Revoked => 0,
        Status::Suspended => 1,
        Status::Active => 2,
    };
    let reason = entry
        .reason
        .and_then(|r| Reason::ALL.iter().position(|x| *x == r))
        .map_or(255, |i| i as u8);
    out.extend_from_slice(&[kind, status, reason, u8::from(entry.before.is_some())]);
    // Entries are validated: times fit in u32, IDs are at most 64 bytes.
    out.extend_from_slice(&(entry.at.clamp(0, u32::MAX as i64) as u32).to_le_bytes());
    out.extend_from_slice(
        &(entry.before.unwrap_or(0).clamp(0, u32::MAX as i64) as u32).to_le_bytes(),
    );
    out.push(entry.id.len().min(255) as u8);
    out.extend_from_slice(entry.id.as_bytes());
}

/// Encodes one record holding `entries`.
pub fn encode_record(entries: &[Entry]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4 + entries.len() * 24);
    payload.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for entry in entries {
        encode_entry(entry, &mut payload);
    }
    let mut record = Vec::with_capacity(HEADER + payload.len());
    record.extend_from_slice(&MAGIC);
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    record.extend_from_slice(&payload);
    record
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn decode_payload(payload: &[u8], out: &mut Vec<Entry>) -> Option<()> {
    let count = u32_at(payload, 0)? as usize;
    let mut at = 4;
    for _ in 0..count {
        let fixed = payload.get(at..at + 13)?;
        let kind = match fixed[0] {
            0 => Kind::Subject,
            1 => Kind::Credential,
            _ => return None,
        };
        let status =
            *[Status::Revoked, Status::Suspended, Status::Active].get(fixed[1] as usize)?;
        let reason = match fixed[2] {
            255 => None,
            r => Some(*Reason::ALL.get(r as usize)?),
        };
        let has_before = fixed[3] == 1;
        let entry_at = i64::from(u32_at(fixed, 4)?);
        let before = i64::from(u32_at(fixed, 8)?);
        let id_len = fixed[12] as usize;
        let id = std::str::from_utf8(payload.get(at + 13..at + 13 + id_len)?).ok()?;
        let entry = Entry {
            kind,
            id: id.to_string(),
            status,
            reason,
            before: has_before.then_some(before),
            at: entry_at,
        };
        entry.validate().ok()?;
        out.push(entry);
        at += 13 + id_len;
    }
    (at == payload.len()).then_some(())
}

/// A record at `at` if it is whole and its checksum holds: `(payload, next offset)`.
fn record_at(bytes: &[u8], at: usize) -> Result<(&[u8], usize), &'static str> {
    let header = bytes
        .get(at..at + HEADER)
        .ok_or("truncated record header")?;
    if header[..4] != MAGIC {
        return Err("bad record marker");
    }
    let len = u32_at(header, 4).ok_or("truncated record header")? as usize;
    if len > MAX_PAYLOAD {
        return Err("impossible record length");
    }
    let payload = bytes
        .get(at + HEADER..at + HEADER + len)
        .ok_or("truncated record")?;
    if crc32c::crc32c(payload) != u32_at(header, 8).ok_or("truncated record header")? {
        return Err("checksum mismatch");
    }
    Ok((payload, at + HEADER + len))
}

/// True if any whole, checksummed record starts after `from`.
fn valid_record_after(bytes: &[u8], from: usize) -> bool {
    let mut search = from + 1;
    while let Some(found) = memchr::memmem::find(bytes.get(search..).unwrap_or_default(), &MAGIC) {
        let at = search + found;
        if record_at(bytes, at).is_ok() {
            return true;
        }
        search = at + 1;
    }
    false
}

impl Log {
    /// Opens (or creates) the log at `path`, returning every entry in it, in order.
    pub fn open(path: &Path) -> Result<(Log, Vec<Entry>, Recovery), LogError> {
        let io = |source| LogError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut entries = Vec::new();
        let mut recovery = Recovery::default();
        let mut at = 0;
        while at < bytes.len() {
            let decoded = record_at(&bytes, at).and_then(|(payload, next)| {
                decode_payload(payload, &mut entries)
                    .ok_or("record does not decode")
                    .map(|()| next)
            });
            match decoded {
                Ok(next) => {
                    recovery.records += 1;
                    at = next;
                }
                Err(reason) if valid_record_after(&bytes, at) => {
                    return Err(LogError::Corrupt {
                        path: path.display().to_string(),
                        offset: at as u64,
                        reason,
                    });
                }
                Err(_) => {
                    // A torn last write: never acknowledged, so cut it off.
                    recovery.torn_bytes = (bytes.len() - at) as u64;
                    file.set_len(at as u64).map_err(io)?;
                    file.sync_all().map_err(io)?;
                    break;
                }
            }
        }
        recovery.entries = entries.len() as u64;
        let len = at as u64;
        // Make the file's own directory entry durable (a fresh log must survive a crash too).
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok((
            Log {
                file,
                path: path.to_path_buf(),
                len,
            },
            entries,
            recovery,
        ))
    }

    /// Appends records and makes them durable. On failure the file is cut back to where it was.
    pub fn append(&mut self, records: &[u8]) -> std::io::Result<()> {
        let result = self
            .file
            .write_all(records)
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += records.len() as u64;
                Ok(())
            }
            Err(error) => {
                // Best effort: if even this fails, the next start finds a torn tail (no valid
                // record can follow it, since nothing else is appended after a failure).
                let _ = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_data());
                Err(error)
            }
        }
    }

    /// Bytes in the log.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, at: i64) -> Entry {
        Entry {
            kind: Kind::Subject,
            id: id.into(),
            status: Status::Revoked,
            reason: Some(Reason::Lost),
            before: Some(at),
            at,
        }
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, entries, _) = Log::open(&path).unwrap();
        assert!(entries.is_empty());
        log.append(&encode_record(&[entry("a", 1), entry("b", 2)]))
            .unwrap();
        log.append(&encode_record(&[entry("c", 3)])).unwrap();
        drop(log);
        // A crash in the middle of a third append.
        let third = encode_record(&[entry("d", 4)]);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&third[..third.len() - 3]).unwrap();
        drop(file);
        let (log, entries, recovery) = Log::open(&path).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(
            recovery,
            Recovery {
                records: 2,
                entries: 3,
                torn_bytes: third.len() as u64 - 3
            }
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), log.len());
    }

    #[test]
    fn a_corrupt_byte_in_the_middle_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _, _) = Log::open(&path).unwrap();
        for i in 0..5 {
            log.append(&encode_record(&[entry(&format!("id{i}"), i)]))
                .unwrap();
        }
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let error = Log::open(&path).unwrap_err().to_string();
        assert!(
            error.contains("corrupt at byte") && error.contains("refusing to start"),
            "{error}"
        );
        // And nothing was cut: the file is left for the operator.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}
