//! Snapshots: the whole list folded into one checksummed file, so a start reads one file and a
//! short log tail instead of every update ever made.
//!
//! Format (little-endian):
//!
//! ```text
//! header = magic "IDGS" ‖ version u32 (1) ‖ next_segment u64 ‖ last_update i64 ‖
//!          shard count u32 ‖ reserved u32 ‖ per shard (count u64 ‖ CRC-32C u32 ‖ reserved u32) ‖
//!          CRC-32C of everything before it u32
//! body   = per shard, in order: count × 24-byte slots (sorted by key)
//! ```
//!
//! **Invariants:**
//! - A snapshot covers every log segment numbered below `next_segment`, and nothing after.
//! - It is written to `snapshot.tmp`, fsynced, renamed over `snapshot` and the directory fsynced:
//!   a crash leaves either the old snapshot or the new one, never a mix. Segments it covers
//!   are deleted only after that.
//! - Any damage (checksum, order, shard membership, impossible metadata) refuses the start with
//!   the file name and shard: a snapshot is never partly loaded.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::log::{LogError, sync_dir};
use super::table::{SHARDS, SLOT_BYTES, ShardCapture, Slot, Table};

const MAGIC: [u8; 4] = *b"IDGS";
const VERSION: u32 = 1;
const FIXED: usize = 4 + 4 + 8 + 8 + 4 + 4;
const HEADER: usize = FIXED + SHARDS * 16 + 4;

/// The snapshot's path inside the revocation directory.
pub fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("snapshot")
}

fn tmp_path(dir: &Path) -> PathBuf {
    dir.join("snapshot.tmp")
}

/// A loaded snapshot.
#[derive(Debug)]
pub struct Loaded {
    pub table: Table,
    pub next_segment: u64,
    pub last_update: i64,
    pub bytes: u64,
}

/// What a written snapshot holds.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub records: u64,
    pub bytes: u64,
}

fn corrupt(path: &Path, offset: u64, reason: &'static str) -> LogError {
    LogError::Corrupt {
        path: path.display().to_string(),
        offset,
        reason,
    }
}

/// Writes a snapshot of `shards` covering segments below `next_segment`, atomically.
pub fn write(
    dir: &Path,
    shards: &[ShardCapture],
    next_segment: u64,
    last_update: i64,
) -> std::io::Result<Written> {
    let tmp = tmp_path(dir);
    let file = File::create(&tmp)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&[0u8; HEADER])?;
    let mut table = Vec::with_capacity(SHARDS);
    let mut records = 0u64;
    let mut bytes = Vec::new();
    for shard in shards {
        let slots = shard.sorted();
        bytes.clear();
        bytes.reserve(slots.len() * SLOT_BYTES);
        for slot in &slots {
            slot.encode(&mut bytes);
        }
        out.write_all(&bytes)?;
        table.push((slots.len() as u64, crc32c::crc32c(&bytes)));
        records += slots.len() as u64;
    }
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&next_segment.to_le_bytes());
    header.extend_from_slice(&last_update.to_le_bytes());
    header.extend_from_slice(&(SHARDS as u32).to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    for (count, crc) in &table {
        header.extend_from_slice(&count.to_le_bytes());
        header.extend_from_slice(&crc.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
    }
    header.extend_from_slice(&crc32c::crc32c(&header).to_le_bytes());
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header)?;
    file.sync_all()?;
    let size = file.metadata()?.len();
    drop(file);
    std::fs::rename(&tmp, snapshot_path(dir))?;
    sync_dir(dir)?;
    Ok(Written {
        records,
        bytes: size,
    })
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Loads the snapshot in `dir`, if there is one: shards are read, checked and indexed in
/// parallel.
pub fn load(dir: &Path) -> Result<Option<Loaded>, LogError> {
    let path = snapshot_path(dir);
    let io = |source| LogError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io(error)),
    };
    let size = file.metadata().map_err(io)?.len();
    let mut header = vec![0u8; HEADER];
    if size < HEADER as u64 {
        return Err(corrupt(&path, 0, "truncated snapshot header"));
    }
    file.read_exact_at(&mut header, 0).map_err(io)?;
    if header[..4] != MAGIC {
        return Err(corrupt(&path, 0, "not a snapshot file"));
    }
    if crc32c::crc32c(&header[..HEADER - 4]) != u32_at(&header, HEADER - 4) {
        return Err(corrupt(&path, 0, "snapshot header checksum mismatch"));
    }
    if u32_at(&header, 4) != VERSION || u32_at(&header, 24) as usize != SHARDS {
        return Err(corrupt(&path, 4, "unsupported snapshot version"));
    }
    let next_segment = u64_at(&header, 8);
    let last_update = u64_at(&header, 16) as i64;
    let mut shards = Vec::with_capacity(SHARDS);
    let mut offset = HEADER as u64;
    for index in 0..SHARDS {
        let at = FIXED + index * 16;
        let count = u64_at(&header, at);
        let crc = u32_at(&header, at + 8);
        let len = count
            .checked_mul(SLOT_BYTES as u64)
            .filter(|len| offset + len <= size)
            .ok_or_else(|| corrupt(&path, at as u64, "shard extends past the end of the file"))?;
        shards.push((offset, len, crc));
        offset += len;
    }
    if offset != size {
        return Err(corrupt(
            &path,
            offset,
            "trailing bytes after the last shard",
        ));
    }
    let decoded = shards
        .par_iter()
        .map(|&(offset, len, crc)| {
            // Read in pieces straight into the slot array: no second copy of the shard in memory.
            const PIECE: usize = SLOT_BYTES * 16_384;
            let count = (len / SLOT_BYTES as u64) as usize;
            let mut slots = Vec::with_capacity(count);
            let mut piece = vec![0u8; PIECE.min(len as usize)];
            let mut done = 0u64;
            let mut sum = 0u32;
            while done < len {
                let take = (len - done).min(PIECE as u64) as usize;
                let bytes = &mut piece[..take];
                file.read_exact_at(bytes, offset + done).map_err(io)?;
                sum = crc32c::crc32c_append(sum, bytes);
                for chunk in bytes.chunks_exact(SLOT_BYTES) {
                    let mut array = [0u8; SLOT_BYTES];
                    array.copy_from_slice(chunk);
                    slots.push(
                        Slot::decode(&array)
                            .ok_or_else(|| corrupt(&path, offset, "impossible record in shard"))?,
                    );
                }
                done += take as u64;
            }
            if sum != crc {
                return Err(corrupt(&path, offset, "shard checksum mismatch"));
            }
            Ok(slots)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let table = Table::from_shards(decoded).map_err(|error| {
        corrupt(
            &path,
            shards.get(error.shard).map_or(0, |s| s.0),
            error.reason,
        )
    })?;
    Ok(Some(Loaded {
        table,
        next_segment,
        last_update,
        bytes: size,
    }))
}

/// Removes a snapshot that was being written when the process stopped.
pub fn remove_leftover(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(tmp_path(dir)) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}
