//! What the shared revocation feed keeps beside its stream (docs/feed-design.md): shared
//! snapshots, bulk-import chunks, and the lock that says which instance writes heartbeats and
//! snapshots.
//!
//! Keys, all named after `revocation.feed_stream` (`S`):
//!
//! ```text
//! S:lock                 the holder's random token, PX = lock TTL
//! S:snaps                sorted set: member and score = the position a snapshot covers
//! S:snap:<n>             manifest of the snapshot at position n (written after its chunks)
//! S:snap:<n>:<i>         chunk i: packed 24-byte slots, at most CHUNK_BYTES
//! S:imports              sorted set: "<import id hex>:<chunks>", score = its commit's sequence
//! S:import:<id hex>:<i>  chunk i of a bulk import (written before its commit entry)
//! ```
//!
//! **Invariants:**
//! - A manifest is written only after every chunk it names, and carries their SHA-256: a
//!   reader either loads a whole snapshot or refuses it, never part of one.
//! - The stream is trimmed only behind the oldest snapshot kept (`XTRIM MINID <n>`), so a
//!   reader that finds entries missing always finds a snapshot that covers them.
//! - An import's commit entry is appended (by one script) only if all its chunks exist, and
//!   chunks are deleted only once a kept snapshot covers the commit.

use redis::Value;
use redis::aio::MultiplexedConnection;
use sha2::{Digest, Sha256};

use super::feed::{FeedError, FeedKeys, redis_error};
use super::table::{SLOT_BYTES, Slot};

/// The largest chunk: 8 MiB of whole slots.
pub const CHUNK_BYTES: usize = (8 << 20) / SLOT_BYTES * SLOT_BYTES;
/// Shared snapshots kept; the stream is trimmed behind the oldest.
pub const SNAPSHOTS_KEPT: usize = 2;
/// Import chunks that no commit ever claimed expire after this (a crashed importer).
pub const IMPORT_CHUNK_TTL_S: u64 = 7 * 86_400;

const MANIFEST_MAGIC: [u8; 4] = *b"IDGM";
const MANIFEST_LEN: usize = 4 + 8 + 4 + 8 + 8 + 32;

/// A set of slots stored as chunks: how many, how many slots, and the SHA-256 of all bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunked {
    pub chunks: u32,
    pub entries: u64,
    pub sha256: [u8; 32],
}

/// A shared snapshot's manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    /// The feed position the snapshot covers: every entry up to and including it.
    pub position: u64,
    pub chunked: Chunked,
    /// Wall-clock time the holder captured it.
    pub created: i64,
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MANIFEST_LEN);
        out.extend_from_slice(&MANIFEST_MAGIC);
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.chunked.chunks.to_le_bytes());
        out.extend_from_slice(&self.chunked.entries.to_le_bytes());
        out.extend_from_slice(&self.created.to_le_bytes());
        out.extend_from_slice(&self.chunked.sha256);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Manifest> {
        if bytes.len() != MANIFEST_LEN || bytes[..4] != MANIFEST_MAGIC {
            return None;
        }
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        Some(Manifest {
            position: u64_at(4)?,
            chunked: Chunked {
                chunks: u32::from_le_bytes(bytes[12..16].try_into().ok()?),
                entries: u64_at(16)?,
                sha256: bytes[32..64].try_into().ok()?,
            },
            created: u64_at(24)? as i64,
        })
    }
}

/// The payload of an import's commit entry: its ID and what its chunks must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportCommit {
    pub id: [u8; 16],
    pub chunked: Chunked,
}

const COMMIT_LEN: usize = 16 + 4 + 8 + 32;

impl ImportCommit {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(COMMIT_LEN);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.chunked.chunks.to_le_bytes());
        out.extend_from_slice(&self.chunked.entries.to_le_bytes());
        out.extend_from_slice(&self.chunked.sha256);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<ImportCommit> {
        if bytes.len() != COMMIT_LEN {
            return None;
        }
        Some(ImportCommit {
            id: bytes[..16].try_into().ok()?,
            chunked: Chunked {
                chunks: u32::from_le_bytes(bytes[16..20].try_into().ok()?),
                entries: u64::from_le_bytes(bytes[20..28].try_into().ok()?),
                sha256: bytes[28..60].try_into().ok()?,
            },
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl FeedKeys {
    pub fn lock(&self) -> String {
        format!("{}:lock", self.stream)
    }
    fn snapshots(&self) -> String {
        format!("{}:snaps", self.stream)
    }
    fn manifest(&self, position: u64) -> String {
        format!("{}:snap:{position}", self.stream)
    }
    fn snapshot_chunk(&self, position: u64, index: u32) -> String {
        format!("{}:snap:{position}:{index}", self.stream)
    }
    pub(super) fn imports(&self) -> String {
        format!("{}:imports", self.stream)
    }
    pub fn import_chunk(&self, id: &[u8; 16], index: u32) -> String {
        format!("{}:import:{}:{index}", self.stream, hex(id))
    }
}

/// Packs `slots` into chunks of at most [`CHUNK_BYTES`], with their count and checksum.
pub fn pack(slots: &[Slot]) -> (Vec<Vec<u8>>, Chunked) {
    let mut hash = Sha256::new();
    let chunks: Vec<Vec<u8>> = slots
        .chunks(CHUNK_BYTES / SLOT_BYTES)
        .map(|part| {
            let mut bytes = Vec::with_capacity(part.len() * SLOT_BYTES);
            for slot in part {
                slot.encode(&mut bytes);
            }
            hash.update(&bytes);
            bytes
        })
        .collect();
    let chunked = Chunked {
        chunks: chunks.len() as u32,
        entries: slots.len() as u64,
        sha256: hash.finalize().into(),
    };
    (chunks, chunked)
}

/// Reads chunks back (`key(i)` for each) and checks them against `expected`. `Ok(None)` when a
/// chunk is missing, the wrong size, fails the checksum, or holds a slot that does not decode.
pub async fn read_chunks(
    connection: &mut MultiplexedConnection,
    key: impl Fn(u32) -> String,
    expected: &Chunked,
) -> Result<Option<Vec<Slot>>, FeedError> {
    let mut hash = Sha256::new();
    let mut slots = Vec::with_capacity(expected.entries.min(1 << 28) as usize);
    for index in 0..expected.chunks {
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key(index))
            .query_async(connection)
            .await
            .map_err(|e| redis_error(&e))?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        if bytes.len() % SLOT_BYTES != 0 || bytes.len() > CHUNK_BYTES {
            return Ok(None);
        }
        hash.update(&bytes);
        for raw in bytes.chunks_exact(SLOT_BYTES) {
            let Some(slot) = raw.try_into().ok().and_then(Slot::decode) else {
                return Ok(None);
            };
            slots.push(slot);
        }
    }
    let sha256: [u8; 32] = hash.finalize().into();
    if sha256 != expected.sha256 || slots.len() as u64 != expected.entries {
        return Ok(None);
    }
    Ok(Some(slots))
}

/// Takes the lock, or renews it when `token` holds it. Returns whether `token` holds it now.
const LOCK: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

pub async fn hold_lock(
    connection: &mut MultiplexedConnection,
    keys: &FeedKeys,
    token: &[u8; 16],
    ttl_ms: u64,
) -> Result<bool, FeedError> {
    let held: i64 = redis::cmd("EVAL")
        .arg(LOCK)
        .arg(1)
        .arg(keys.lock())
        .arg(&token[..])
        .arg(ttl_ms)
        .query_async(connection)
        .await
        .map_err(|e| redis_error(&e))?;
    Ok(held == 1)
}

/// What writing a snapshot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub manifest: Manifest,
    /// The position the stream was trimmed behind (entries below it are gone), if any.
    pub trimmed_to: Option<u64>,
}

/// Writes a shared snapshot at `position` (chunks, then the manifest, then its entry in the
/// index), drops the snapshots beyond the newest [`SNAPSHOTS_KEPT`], trims the stream behind
/// the oldest one kept, and deletes the import chunks that snapshot covers.
pub async fn publish_snapshot(
    connection: &mut MultiplexedConnection,
    keys: &FeedKeys,
    position: u64,
    slots: &[Slot],
    created: i64,
) -> Result<Published, FeedError> {
    let (chunks, chunked) = pack(slots);
    for (index, chunk) in chunks.iter().enumerate() {
        let () = redis::cmd("SET")
            .arg(keys.snapshot_chunk(position, index as u32))
            .arg(chunk.as_slice())
            .query_async(connection)
            .await
            .map_err(|e| redis_error(&e))?;
    }
    drop(chunks);
    let manifest = Manifest {
        position,
        chunked,
        created,
    };
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(keys.manifest(position))
        .arg(manifest.encode())
        .ignore();
    pipe.cmd("ZADD")
        .arg(keys.snapshots())
        .arg(position)
        .arg(position)
        .ignore();
    pipe.cmd("ZREVRANGE").arg(keys.snapshots()).arg(0).arg(-1);
    let (positions,): (Vec<u64>,) = pipe
        .query_async(connection)
        .await
        .map_err(|e| redis_error(&e))?;
    for &old in positions.iter().skip(SNAPSHOTS_KEPT) {
        drop_snapshot(connection, keys, old).await?;
    }
    let mut trimmed_to = None;
    if positions.len() >= SNAPSHOTS_KEPT {
        let oldest = positions[SNAPSHOTS_KEPT - 1];
        let () = redis::cmd("XTRIM")
            .arg(&keys.stream)
            .arg("MINID")
            .arg(format!("{oldest}-0"))
            .query_async(connection)
            .await
            .map_err(|e| redis_error(&e))
            .map(|_: Value| ())?;
        // Imports committed at or before the oldest snapshot kept are inside every snapshot
        // kept: their chunks are no longer needed.
        let covered: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys.imports())
            .arg("-inf")
            .arg(oldest)
            .query_async(connection)
            .await
            .map_err(|e| redis_error(&e))?;
        for member in &covered {
            let Some((id, chunks)) = member.split_once(':') else {
                continue;
            };
            let chunks: u32 = chunks.parse().unwrap_or(0);
            let mut pipe = redis::pipe();
            for index in 0..chunks {
                pipe.cmd("DEL")
                    .arg(format!("{}:import:{id}:{index}", keys.stream))
                    .ignore();
            }
            pipe.cmd("ZREM").arg(keys.imports()).arg(member).ignore();
            let () = pipe
                .query_async(connection)
                .await
                .map_err(|e| redis_error(&e))?;
        }
        trimmed_to = Some(oldest);
    }
    Ok(Published {
        manifest,
        trimmed_to,
    })
}

/// Removes one snapshot: first from the index and its manifest (so no reader starts on it),
/// then its chunks.
async fn drop_snapshot(
    connection: &mut MultiplexedConnection,
    keys: &FeedKeys,
    position: u64,
) -> Result<(), FeedError> {
    let mut pipe = redis::pipe();
    pipe.cmd("ZREM")
        .arg(keys.snapshots())
        .arg(position)
        .ignore();
    pipe.cmd("GET").arg(keys.manifest(position));
    pipe.cmd("DEL").arg(keys.manifest(position)).ignore();
    let (manifest,): (Option<Vec<u8>>,) = pipe
        .query_async(connection)
        .await
        .map_err(|e| redis_error(&e))?;
    let chunks = manifest
        .as_deref()
        .and_then(Manifest::decode)
        .map_or(0, |m| m.chunked.chunks);
    if chunks > 0 {
        let mut pipe = redis::pipe();
        for index in 0..chunks {
            pipe.cmd("DEL")
                .arg(keys.snapshot_chunk(position, index))
                .ignore();
        }
        let () = pipe
            .query_async(connection)
            .await
            .map_err(|e| redis_error(&e))?;
    }
    Ok(())
}

/// The newest shared snapshot that covers at least `position` and reads back whole (a damaged
/// one is passed over for the next older one). `Ok(None)`: there is none.
pub async fn load_snapshot(
    connection: &mut MultiplexedConnection,
    keys: &FeedKeys,
    position: u64,
) -> Result<Option<(Manifest, Vec<Slot>)>, FeedError> {
    let positions: Vec<u64> = redis::cmd("ZREVRANGEBYSCORE")
        .arg(keys.snapshots())
        .arg("+inf")
        .arg(position)
        .query_async(connection)
        .await
        .map_err(|e| redis_error(&e))?;
    for at in positions {
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(keys.manifest(at))
            .query_async(connection)
            .await
            .map_err(|e| redis_error(&e))?;
        let Some(manifest) = bytes.as_deref().and_then(Manifest::decode) else {
            tracing::warn!(
                position = at,
                "revocation feed: a shared snapshot's manifest is missing or damaged; trying an older one"
            );
            continue;
        };
        if manifest.position != at {
            continue;
        }
        match read_chunks(
            connection,
            |i| keys.snapshot_chunk(at, i),
            &manifest.chunked,
        )
        .await?
        {
            Some(slots) => return Ok(Some((manifest, slots))),
            None => tracing::warn!(
                position = at,
                "revocation feed: a shared snapshot fails its checksum or is incomplete; trying an older one"
            ),
        }
    }
    Ok(None)
}

/// The newest shared snapshot's manifest, if any (for its age).
pub async fn newest_manifest(
    connection: &mut MultiplexedConnection,
    keys: &FeedKeys,
) -> Result<Option<Manifest>, FeedError> {
    let positions: Vec<u64> = redis::cmd("ZREVRANGE")
        .arg(keys.snapshots())
        .arg(0)
        .arg(0)
        .query_async(connection)
        .await
        .map_err(|e| redis_error(&e))?;
    let Some(at) = positions.first() else {
        return Ok(None);
    };
    let bytes: Option<Vec<u8>> = redis::cmd("GET")
        .arg(keys.manifest(*at))
        .query_async(connection)
        .await
        .map_err(|e| redis_error(&e))?;
    Ok(bytes.as_deref().and_then(Manifest::decode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_and_commits_round_trip_and_refuse_damage() {
        let chunked = Chunked {
            chunks: 3,
            entries: 700_001,
            sha256: [7; 32],
        };
        let manifest = Manifest {
            position: 4711,
            chunked,
            created: 1_790_000_000,
        };
        assert_eq!(Manifest::decode(&manifest.encode()), Some(manifest));
        let mut bad = manifest.encode();
        bad[0] ^= 1;
        assert_eq!(Manifest::decode(&bad), None);
        assert_eq!(Manifest::decode(&manifest.encode()[1..]), None);
        let commit = ImportCommit {
            id: [3; 16],
            chunked,
        };
        assert_eq!(ImportCommit::decode(&commit.encode()), Some(commit));
        assert_eq!(ImportCommit::decode(&commit.encode()[..59]), None);
    }

    #[test]
    fn packing_cuts_whole_slots_at_eight_mebibytes() {
        let per_chunk = CHUNK_BYTES / SLOT_BYTES;
        let slots: Vec<Slot> = (0..per_chunk + 5)
            .map(|i| {
                let entry = crate::revocation::Entry {
                    kind: crate::revocation::Kind::Credential,
                    id: format!("c{i}"),
                    status: crate::revocation::Status::Revoked,
                    reason: None,
                    at: 1,
                    before: None,
                };
                entry.slot()
            })
            .collect();
        let (chunks, chunked) = pack(&slots);
        assert_eq!(chunked.chunks, 2);
        assert_eq!(chunks[0].len(), CHUNK_BYTES);
        const { assert!(CHUNK_BYTES <= 8 << 20) };
        assert_eq!(chunks[1].len(), 5 * SLOT_BYTES);
        assert_eq!(chunked.entries, slots.len() as u64);
    }
}
