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

use super::entry::{Entry, Kind, MAX_TIME, Reason, Status};
use super::id_key;
use super::table::{Record, Slot};
use crate::id::Id;

const MAGIC: [u8; 4] = *b"IDGR";
const HEADER: usize = 12;
/// The largest payload a record may declare (admin bodies are limited well below it).
const MAX_PAYLOAD: usize = (u32::MAX >> 1) as usize;

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("revocation log {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "revocation data in {path} is in use by another idgate process (a running gateway or an import); stop it first, or use the admin API"
    )]
    Locked { path: String },
    #[error(
        "revocation data {path} is corrupt at byte {offset} ({reason}): refusing to start rather than drop acknowledged revocations; restore the file from a backup, or move the revocation directory away to start empty"
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
    /// How much of `len` the last successful sync made durable.
    synced: u64,
    /// A sync (or cutting back after a failed write) failed: the file's contents past `synced`
    /// are unknown, so nothing more is written or synced until the process restarts and reads
    /// the log again (PostgreSQL's answer to a failed fsync). Without it, a later sync would
    /// succeed and a feed position could be recorded past records the failure dropped.
    failed: bool,
    #[cfg(test)]
    fail_next_sync: bool,
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
    let mut builder = RecordBuilder::default();
    for entry in entries {
        builder.push(entry);
    }
    builder.finish().0
}

/// Builds one record (one all-or-nothing update) entry by entry, along with the packed slots
/// the list will apply once the record is durable.
#[derive(Debug, Default)]
pub struct RecordBuilder {
    payload: Vec<u8>,
    count: u32,
    slots: Vec<Slot>,
}

impl RecordBuilder {
    pub fn push(&mut self, entry: &Entry) {
        if self.payload.is_empty() {
            self.payload.extend_from_slice(&[0; 4]);
        }
        encode_entry(entry, &mut self.payload);
        self.count += 1;
        self.slots.push(entry.slot());
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Payload bytes so far.
    pub fn bytes(&self) -> usize {
        self.payload.len()
    }

    /// A builder holding a record payload that came from elsewhere (the shared feed), if it
    /// decodes whole under the same rules as a record read back from disk: a payload that does
    /// not is refused, never partly applied.
    pub fn from_payload(payload: &[u8]) -> Option<RecordBuilder> {
        let mut slots = Vec::new();
        decode_payload(payload, &mut slots)?;
        Some(RecordBuilder {
            payload: payload.to_vec(),
            count: u32_at(payload, 0)?,
            slots,
        })
    }

    /// The payload as it would be written (entry count in front), for the shared feed.
    pub fn payload(&self) -> Vec<u8> {
        let mut payload = self.payload.clone();
        if payload.is_empty() {
            payload.extend_from_slice(&[0; 4]);
        }
        payload[..4].copy_from_slice(&self.count.to_le_bytes());
        payload
    }

    /// The record's bytes and its slots.
    pub fn finish(mut self) -> (Vec<u8>, Vec<Slot>) {
        if self.payload.is_empty() {
            self.payload.extend_from_slice(&[0; 4]);
        }
        self.payload[..4].copy_from_slice(&self.count.to_le_bytes());
        let mut record = Vec::with_capacity(HEADER + self.payload.len());
        record.extend_from_slice(&MAGIC);
        record.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32c::crc32c(&self.payload).to_le_bytes());
        record.extend_from_slice(&self.payload);
        (record, self.slots)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn decode_payload(payload: &[u8], out: &mut Vec<Slot>) -> Option<()> {
    let count = u32_at(payload, 0)? as usize;
    let mut at = 4;
    for _ in 0..count {
        let fixed = payload.get(at..at + 13)?;
        let kind = match fixed[0] {
            0 => Kind::Subject,
            1 => Kind::Credential,
            _ => return None,
        };
        let status = *Status::ALL.get(fixed[1] as usize)?;
        let reason = match fixed[2] {
            255 => None,
            r => Some(*Reason::ALL.get(r as usize)?),
        };
        let before = match fixed[3] {
            0 => None,
            1 => Some(i64::from(u32_at(fixed, 8)?)),
            _ => return None,
        };
        let entry_at = i64::from(u32_at(fixed, 4)?);
        let id_len = fixed[12] as usize;
        let id = std::str::from_utf8(payload.get(at + 13..at + 13 + id_len)?).ok()?;
        let record = Record {
            kind,
            status,
            reason,
            before,
            at: entry_at,
        };
        // The same rules as a fresh entry: a record that decodes to an invalid entry is damage.
        let valid = Id::parse(id).is_some()
            && (status == Status::Active || reason.is_some())
            && (kind == Kind::Subject || before.is_none())
            && entry_at <= MAX_TIME
            && before.is_none_or(|b| b <= MAX_TIME);
        if !valid {
            return None;
        }
        out.push(Slot::new(id_key(kind, id), &record));
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

/// Does the damage from `at` to the end look like a write that never finished (a torn tail)
/// rather than damage to acknowledged data? A crash leaves a record cut short, or extents the
/// file system allocated but never filled (zeros). Our records never end in a zero byte (the
/// last bytes are an ID), so a complete record with a bad checksum and a non-zero end is
/// corruption — even as the last record.
fn looks_torn(bytes: &[u8], at: usize) -> bool {
    let rest = &bytes[at..];
    if rest.len() < 8 {
        return MAGIC.starts_with(&rest[..rest.len().min(4)]) || rest.iter().all(|&b| b == 0);
    }
    if rest[..4] != MAGIC {
        return rest.iter().all(|&b| b == 0);
    }
    let len = u32_at(rest, 4).map_or(usize::MAX, |l| l as usize);
    if len > MAX_PAYLOAD {
        return false;
    }
    match rest.get(HEADER..HEADER + len) {
        None => true,
        Some(payload) => payload.last() == Some(&0),
    }
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

/// What scanning a segment's bytes found: its updates, what recovery saw, and the length of
/// its whole records.
struct Scan {
    slots: Vec<Slot>,
    recovery: Recovery,
    good_len: usize,
}

/// Decodes every record of a segment. A damaged record is a torn tail only when `torn_allowed`
/// (the newest segment) and no valid record follows it; anything else is corruption.
fn scan(bytes: &[u8], path: &Path, torn_allowed: bool) -> Result<Scan, LogError> {
    let mut slots = Vec::new();
    let mut recovery = Recovery::default();
    let mut at = 0;
    while at < bytes.len() {
        let decoded = record_at(bytes, at).and_then(|(payload, next)| {
            decode_payload(payload, &mut slots)
                .ok_or("record does not decode")
                .map(|()| next)
        });
        match decoded {
            Ok(next) => {
                recovery.records += 1;
                at = next;
            }
            Err(reason)
                if !torn_allowed || valid_record_after(bytes, at) || !looks_torn(bytes, at) =>
            {
                return Err(LogError::Corrupt {
                    path: path.display().to_string(),
                    offset: at as u64,
                    reason,
                });
            }
            Err(_) => {
                recovery.torn_bytes = (bytes.len() - at) as u64;
                break;
            }
        }
    }
    recovery.entries = slots.len() as u64;
    Ok(Scan {
        slots,
        recovery,
        good_len: at,
    })
}

/// Reads a segment without changing it: a sealed one (`newest == false`) must be whole; the
/// newest may end in a torn record, which is reported and skipped.
pub fn read_segment(path: &Path, newest: bool) -> Result<(Vec<Slot>, Recovery), LogError> {
    let bytes = std::fs::read(path).map_err(|source| LogError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let scan = scan(&bytes, path, newest)?;
    Ok((scan.slots, scan.recovery))
}

/// Makes a directory's entries (created, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

impl Log {
    /// Opens (or creates) the newest segment at `path` for appending, returning every update
    /// in it, in order. A torn last record (a write that was never acknowledged) is cut off.
    pub fn open(path: &Path) -> Result<(Log, Vec<Slot>, Recovery), LogError> {
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
        let scan = scan(&bytes, path, true)?;
        if scan.good_len < bytes.len() {
            // Keep what is cut for the operator, then cut it.
            let kept = PathBuf::from(format!("{}.torn-{}", path.display(), scan.good_len));
            std::fs::write(&kept, &bytes[scan.good_len..]).map_err(io)?;
            tracing::warn!(
                bytes = bytes.len() - scan.good_len,
                offset = scan.good_len,
                kept = %kept.display(),
                "revocation log ended in a torn write (never acknowledged); cut off"
            );
            file.set_len(scan.good_len as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        // Make the file's own directory entry durable (a fresh log must survive a crash too).
        if let Some(dir) = path.parent() {
            sync_dir(dir).map_err(io)?;
        }
        Ok((
            Log {
                file,
                path: path.to_path_buf(),
                len: scan.good_len as u64,
                synced: scan.good_len as u64,
                failed: false,
                #[cfg(test)]
                fail_next_sync: false,
            },
            scan.slots,
            scan.recovery,
        ))
    }

    /// Appends records and makes them durable. On failure the file is cut back to where it was.
    pub fn append(&mut self, records: &[u8]) -> std::io::Result<()> {
        self.append_all(&[records])
    }

    /// Appends several records with one sync (group commit). On failure the file is cut back.
    pub fn append_all(&mut self, records: &[&[u8]]) -> std::io::Result<()> {
        self.append_unsynced(records)?;
        self.sync()
    }

    /// Appends records without making them durable yet: [`Log::sync`] does, later (the shared
    /// feed's records, which the feed itself holds until the applier's position passes them).
    /// On failure the file is cut back to where it was.
    pub fn append_unsynced(&mut self, records: &[&[u8]]) -> std::io::Result<()> {
        self.refuse_if_failed()?;
        match records.iter().try_for_each(|r| self.file.write_all(r)) {
            Ok(()) => {
                self.len += records.iter().map(|r| r.len() as u64).sum::<u64>();
                Ok(())
            }
            Err(error) => {
                self.cut_back(self.len);
                Err(error)
            }
        }
    }

    /// Makes every appended record durable. On failure the file is cut back to what the last
    /// successful sync made durable (a later sync cannot be trusted to cover pages a failed
    /// one dropped).
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.refuse_if_failed()?;
        if self.synced == self.len {
            return Ok(());
        }
        #[cfg(test)]
        let synced = if std::mem::take(&mut self.fail_next_sync) {
            Err(std::io::Error::other("injected fsync failure"))
        } else {
            self.file.sync_data()
        };
        #[cfg(not(test))]
        let synced = self.file.sync_data();
        match synced {
            Ok(()) => {
                self.synced = self.len;
                Ok(())
            }
            Err(error) => {
                self.len = self.synced;
                self.cut_back(self.synced);
                self.failed = true;
                Err(error)
            }
        }
    }

    /// Best effort; if even this fails, the log takes nothing more (`failed`), so the next
    /// start finds a torn tail with nothing valid after it.
    fn cut_back(&mut self, len: u64) {
        if self
            .file
            .set_len(len)
            .and_then(|()| self.file.sync_data())
            .is_err()
        {
            self.failed = true;
        }
    }

    fn refuse_if_failed(&self) -> std::io::Result<()> {
        if self.failed {
            return Err(std::io::Error::other(
                "an earlier fsync of the revocation log failed; it takes no more writes until the gateway restarts",
            ));
        }
        Ok(())
    }

    /// Makes the next [`Log::sync`] fail as a failed `fdatasync` would.
    #[cfg(test)]
    pub fn fail_next_sync(&mut self) {
        self.fail_next_sync = true;
    }

    /// True when records were appended since the last sync.
    pub fn has_unsynced(&self) -> bool {
        self.synced != self.len
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
    fn a_payload_rebuilds_the_same_record_and_damage_is_refused() {
        let mut builder = RecordBuilder::default();
        for e in [entry("a", 1), entry("b", 2)] {
            builder.push(&e);
        }
        let payload = builder.payload();
        let rebuilt = RecordBuilder::from_payload(&payload).unwrap();
        assert_eq!(rebuilt.len(), 2);
        assert_eq!(rebuilt.finish(), builder.finish());
        // An empty request is a valid (empty) record.
        let empty = RecordBuilder::default().payload();
        assert!(RecordBuilder::from_payload(&empty).unwrap().is_empty());
        // A truncated payload, a count that does not match, an invalid kind: refused whole.
        assert!(RecordBuilder::from_payload(&payload[..payload.len() - 1]).is_none());
        let mut wrong_count = payload.clone();
        wrong_count[0] = 3;
        assert!(RecordBuilder::from_payload(&wrong_count).is_none());
        let mut bad_kind = payload.clone();
        bad_kind[4] = 7;
        assert!(RecordBuilder::from_payload(&bad_kind).is_none());
        assert!(RecordBuilder::from_payload(&[]).is_none());
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, slots, _) = Log::open(&path).unwrap();
        assert!(slots.is_empty());
        log.append(&encode_record(&[entry("a", 1), entry("b", 2)]))
            .unwrap();
        log.append(&encode_record(&[entry("c", 3)])).unwrap();
        drop(log);
        // A crash in the middle of a third append.
        let third = encode_record(&[entry("d", 4)]);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&third[..third.len() - 3]).unwrap();
        drop(file);
        let (log, slots, recovery) = Log::open(&path).unwrap();
        assert_eq!(
            slots,
            [entry("a", 1), entry("b", 2), entry("c", 3)].map(|e| e.slot())
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
        // What was cut is kept beside the log for the operator.
        let kept = dir.path().join(format!("log.torn-{}", log.len()));
        assert_eq!(std::fs::read(kept).unwrap(), third[..third.len() - 3]);
    }

    #[test]
    fn unsynced_records_are_counted_until_a_sync_and_a_synced_append_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _, _) = Log::open(&path).unwrap();
        assert!(!log.has_unsynced());
        log.append_unsynced(&[&encode_record(&[entry("a", 1)])])
            .unwrap();
        assert!(log.has_unsynced());
        log.sync().unwrap();
        assert!(!log.has_unsynced());
        log.append_unsynced(&[&encode_record(&[entry("b", 2)])])
            .unwrap();
        // A synced group commit also makes the unsynced record before it durable.
        log.append(&encode_record(&[entry("c", 3)])).unwrap();
        assert!(!log.has_unsynced());
        let len = log.len();
        drop(log);
        let (reopened, slots, _) = Log::open(&path).unwrap();
        assert_eq!(reopened.len(), len);
        assert_eq!(
            slots,
            [entry("a", 1), entry("b", 2), entry("c", 3)].map(|e| e.slot())
        );
    }

    #[test]
    fn after_a_failed_sync_the_log_takes_nothing_more_and_keeps_only_what_was_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _, _) = Log::open(&path).unwrap();
        log.append(&encode_record(&[entry("a", 1)])).unwrap();
        log.append_unsynced(&[&encode_record(&[entry("b", 2)])])
            .unwrap();
        log.fail_next_sync();
        assert!(log.sync().is_err());
        // Not a later sync that succeeds (which would let a position be recorded past "b"),
        // and no more appends.
        assert!(log.sync().is_err());
        assert!(
            log.append_unsynced(&[&encode_record(&[entry("c", 3)])])
                .is_err()
        );
        assert!(log.append(&encode_record(&[entry("d", 4)])).is_err());
        drop(log);
        let (_, slots, _) = Log::open(&path).unwrap();
        assert_eq!(slots, [entry("a", 1).slot()]);
    }

    /// A log at `path` holding `n` one-entry records (`id0`, `id1`, ...).
    fn write_records(path: &Path, n: i64) {
        let (mut log, _, _) = Log::open(path).unwrap();
        for i in 0..n {
            log.append(&encode_record(&[entry(&format!("id{i}"), i)]))
                .unwrap();
        }
    }

    #[test]
    fn a_flipped_byte_in_the_last_record_is_corruption_but_a_zero_filled_tail_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        write_records(&path, 3);
        let whole = std::fs::read(&path).unwrap();
        let last = whole.len() - whole.len() / 3;
        // A complete last record whose checksum fails: acknowledged data was damaged.
        let mut flipped = whole.clone();
        flipped[last + HEADER + 2] ^= 0x10;
        std::fs::write(&path, &flipped).unwrap();
        let error = Log::open(&path).unwrap_err().to_string();
        assert!(error.contains("corrupt at byte"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), flipped, "left untouched");
        // Extents allocated but never written (zeros) after a crash: a torn write.
        let mut zeroed = whole.clone();
        for byte in &mut zeroed[last + HEADER..] {
            *byte = 0;
        }
        std::fs::write(&path, &zeroed).unwrap();
        let (_, slots, recovery) = Log::open(&path).unwrap();
        assert_eq!(slots.len(), 2);
        assert_eq!(recovery.torn_bytes, (whole.len() - last) as u64);
        let mut tail_of_zeros = whole.clone();
        tail_of_zeros.extend_from_slice(&[0; 300]);
        std::fs::write(&path, &tail_of_zeros).unwrap();
        assert_eq!(Log::open(&path).unwrap().1.len(), 3);
    }

    #[test]
    fn a_corrupt_byte_in_the_middle_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        write_records(&path, 5);
        let mut bytes = std::fs::read(&path).unwrap();
        let whole = bytes.clone();
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
        // A sealed segment may not even end in a torn record.
        std::fs::write(&path, &whole[..whole.len() - 2]).unwrap();
        assert!(read_segment(&path, false).is_err());
        assert_eq!(read_segment(&path, true).unwrap().1.records, 4);
    }
}
