//! The shared revocation feed (issue 17, docs/feed-design.md): publishing and reading a Redis
//! Stream whose entry IDs are a contiguous sequence `<n>-0`.
//!
//! **Invariants:**
//! - An entry's ID is allocated inside the same Lua call that appends it, so IDs are `1-0`,
//!   `2-0`, … with no holes; a reader that sees `q > p + 1` after `p` knows entries are missing.
//! - A publish carries a 16-byte token; repeating the call with the same token (after an
//!   ambiguous timeout) returns the sequence number of the first append and appends nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::RngExt;
use redis::Value;
use redis::aio::MultiplexedConnection;

/// Appends one entry, or returns the sequence number under which the same token already did.
/// KEYS: stream, sequence key, token key. ARGV: kind, payload, token TTL in seconds.
const PUBLISH: &str = r"
local existing = redis.call('GET', KEYS[3])
if existing then return tonumber(existing) end
local n = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], n .. '-0', 'k', ARGV[1], 'r', ARGV[2])
redis.call('SET', KEYS[3], n, 'EX', ARGV[3])
return n
";

/// Appends an import's commit entry only if every chunk it names exists (checked inside the
/// same atomic call), and records the import so its chunks are deleted once a kept snapshot
/// covers it. KEYS: stream, sequence key, token key, imports index, chunk keys…
/// ARGV: payload, token TTL in seconds, index member.
const COMMIT_IMPORT: &str = r"
local existing = redis.call('GET', KEYS[3])
if existing then return tonumber(existing) end
for i = 5, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    return redis.error_reply('IDGATE_CHUNK_MISSING an import chunk is gone')
  end
end
local n = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], n .. '-0', 'k', 'm', 'r', ARGV[1])
redis.call('ZADD', KEYS[4], n, ARGV[3])
redis.call('SET', KEYS[3], n, 'EX', ARGV[2])
return n
";

/// How long a publish token is remembered: far longer than any retry of it.
const TOKEN_TTL_S: u64 = 86_400;

/// How long a publish token is remembered: a day for writes; a minute for heartbeats, which
/// are retried only within one heartbeat and come every second (a day of them would be 86,400
/// keys).
fn token_ttl_s(kind: EntryKind) -> u64 {
    match kind {
        EntryKind::Heartbeat => 60,
        _ => TOKEN_TTL_S,
    }
}

/// What a stream entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// One admin request: a revocation log record payload.
    Update,
    /// A liveness mark from the lock holder: its wall clock in milliseconds (8 bytes, LE).
    Heartbeat,
    /// A bulk import's commit: its chunks (stored beside the stream) become visible at once.
    ImportCommit,
}

impl EntryKind {
    fn tag(self) -> &'static str {
        match self {
            EntryKind::Update => "u",
            EntryKind::Heartbeat => "h",
            EntryKind::ImportCommit => "m",
        }
    }

    fn from_tag(tag: &[u8]) -> Option<EntryKind> {
        match tag {
            b"u" => Some(EntryKind::Update),
            b"h" => Some(EntryKind::Heartbeat),
            b"m" => Some(EntryKind::ImportCommit),
            _ => None,
        }
    }
}

/// One entry read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    pub sequence: u64,
    pub kind: EntryKind,
    pub payload: Vec<u8>,
}

/// Why a feed operation failed. Never carries payload bytes.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("the feed's Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the feed's Redis failed: {0}")]
    Redis(String),
    #[error("the feed's stream holds an entry this gateway cannot read ({0})")]
    Malformed(&'static str),
    #[error("applying the feed locally failed: {0}")]
    Local(String),
    #[error("the feed refused the write: {0}")]
    Refused(&'static str),
}

pub(super) fn redis_error(error: &redis::RedisError) -> FeedError {
    // The error's kind and code only: its detail may quote arguments.
    FeedError::Redis(format!("{:?} {}", error.kind(), error.code().unwrap_or("")))
}

/// The feed's key names, derived from `revocation.feed_stream`.
#[derive(Debug, Clone)]
pub struct FeedKeys {
    pub stream: String,
    pub sequence: String,
    pub epoch: String,
    token_prefix: String,
}

impl FeedKeys {
    pub fn new(stream: &str) -> FeedKeys {
        FeedKeys {
            stream: stream.to_string(),
            sequence: format!("{stream}:seq"),
            epoch: format!("{stream}:epoch"),
            token_prefix: format!("{stream}:req:"),
        }
    }

    fn token(&self, token: &[u8; 16]) -> String {
        let mut key = self.token_prefix.clone();
        for byte in token {
            key.push_str(&format!("{byte:02x}"));
        }
        key
    }
}

/// Appends entries to the feed. Cheap to clone (the clones share one connection).
#[derive(Clone)]
pub struct Publisher {
    /// The connection in use; `None` after a fault, until the next attempt reconnects.
    connection: std::sync::Arc<tokio::sync::Mutex<Option<MultiplexedConnection>>>,
    /// Where to reconnect; `None` for a publisher on a given connection only (tests).
    client: Option<redis::Client>,
    keys: FeedKeys,
    /// The bound on one attempt.
    attempt_timeout: Duration,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("stream", &self.keys.stream)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(
        connection: MultiplexedConnection,
        keys: FeedKeys,
        attempt_timeout: Duration,
    ) -> Publisher {
        Publisher {
            connection: std::sync::Arc::new(tokio::sync::Mutex::new(Some(connection))),
            client: None,
            keys,
            attempt_timeout,
        }
    }

    /// A publisher that replaces its connection after a fault (a timeout or a broken
    /// connection) by connecting to `client` again on its next attempt.
    pub fn reconnecting(
        client: redis::Client,
        connection: MultiplexedConnection,
        keys: FeedKeys,
        attempt_timeout: Duration,
    ) -> Publisher {
        Publisher {
            client: Some(client),
            ..Publisher::new(connection, keys, attempt_timeout)
        }
    }

    /// The connection to use for one attempt, connecting if the last one was dropped.
    async fn connection(&self, bound: Duration) -> Result<MultiplexedConnection, FeedError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let Some(client) = &self.client else {
            return Err(FeedError::Redis("the connection was lost".into()));
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(bound))
            .set_response_timeout(None);
        let connection = tokio::time::timeout(
            bound,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| FeedError::Timeout(bound))?
        .map_err(|e| redis_error(&e))?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Drops the connection after a fault, so the next attempt makes a new one.
    async fn fault(&self) {
        if self.client.is_some() {
            *self.connection.lock().await = None;
        }
    }

    /// Appends one entry and returns its sequence number. Attempts that time out or fail are
    /// repeated with the same token until `deadline`: whichever attempt landed, the entry is
    /// in the stream once, and its number is returned. An error means the outcome is unknown
    /// (it may have landed): the caller reports it as such.
    pub async fn publish(
        &self,
        kind: EntryKind,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<u64, FeedError> {
        let token: [u8; 16] = rand::rng().random();
        self.publish_with_token(kind, payload, &token, deadline)
            .await
    }

    /// Appends an import's commit entry (its chunks already stored under
    /// [`FeedKeys::import_chunk`]). Retried like [`Publisher::publish`]; refused when a chunk
    /// is missing.
    pub async fn commit_import(
        &self,
        commit: &super::feed_share::ImportCommit,
        deadline: Instant,
    ) -> Result<u64, FeedError> {
        let token: [u8; 16] = rand::rng().random();
        let token_key = self.keys.token(&token);
        let member = format!(
            "{}:{}",
            commit
                .id
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            commit.chunked.chunks
        );
        let payload = commit.encode();
        self.run_retried(deadline, |command| {
            command
                .arg(COMMIT_IMPORT)
                .arg(4 + commit.chunked.chunks as usize)
                .arg(&self.keys.stream)
                .arg(&self.keys.sequence)
                .arg(&token_key)
                .arg(self.keys.imports());
            for index in 0..commit.chunked.chunks {
                command.arg(self.keys.import_chunk(&commit.id, index));
            }
            command
                .arg(payload.as_slice())
                .arg(TOKEN_TTL_S)
                .arg(&member);
        })
        .await
    }

    /// Stores one import chunk (not yet visible to anyone: only a commit entry makes it so).
    pub async fn put_chunk(
        &self,
        key: &str,
        bytes: &[u8],
        deadline: Instant,
    ) -> Result<(), FeedError> {
        let bound = self
            .attempt_timeout
            .max(Duration::from_secs(5))
            .min(deadline.saturating_duration_since(Instant::now()));
        let mut connection = self.connection(bound).await?;
        let mut command = redis::cmd("SET");
        command
            .arg(key)
            .arg(bytes)
            .arg("EX")
            .arg(super::feed_share::IMPORT_CHUNK_TTL_S);
        match tokio::time::timeout(bound, command.query_async::<()>(&mut connection)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                self.fault().await;
                Err(redis_error(&error))
            }
            Err(_) => {
                self.fault().await;
                Err(FeedError::Timeout(bound))
            }
        }
    }

    /// [`Publisher::publish`] with a given token (tests repeat a token by hand).
    pub async fn publish_with_token(
        &self,
        kind: EntryKind,
        payload: &[u8],
        token: &[u8; 16],
        deadline: Instant,
    ) -> Result<u64, FeedError> {
        let token_key = self.keys.token(token);
        self.run_retried(deadline, |command| {
            command
                .arg(PUBLISH)
                .arg(3)
                .arg(&self.keys.stream)
                .arg(&self.keys.sequence)
                .arg(&token_key)
                .arg(kind.tag())
                .arg(payload)
                .arg(token_ttl_s(kind));
        })
        .await
    }

    /// Runs one idempotent `EVAL` (built by `build`) until it returns a sequence number or
    /// `deadline` passes. A refusal by the script itself (`IDGATE_…`) is final.
    async fn run_retried(
        &self,
        deadline: Instant,
        build: impl Fn(&mut redis::Cmd),
    ) -> Result<u64, FeedError> {
        let mut last = FeedError::Timeout(self.attempt_timeout);
        let mut pause = Duration::from_millis(10);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(last);
            }
            let bound = self.attempt_timeout.min(deadline - now);
            let mut connection = match self.connection(bound).await {
                Ok(connection) => connection,
                Err(error) => {
                    last = error;
                    tokio::time::sleep(
                        pause.min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                    continue;
                }
            };
            let mut command = redis::cmd("EVAL");
            build(&mut command);
            let attempt = command.query_async::<u64>(&mut connection);
            match tokio::time::timeout(bound, attempt).await {
                Ok(Ok(sequence)) => return Ok(sequence),
                Ok(Err(error)) if error.code() == Some("IDGATE_CHUNK_MISSING") => {
                    return Err(FeedError::Refused(
                        "a chunk of the import is gone (it expired or was trimmed); nothing was committed",
                    ));
                }
                Ok(Err(error)) => {
                    // An error reply (it has a code) leaves the connection usable; anything
                    // else (I/O, a broken connection) does not.
                    if error.code().is_none() {
                        self.fault().await;
                    }
                    last = redis_error(&error);
                }
                Err(_) => {
                    self.fault().await;
                    last = FeedError::Timeout(bound);
                }
            }
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}

/// How the feed's Redis persists what it acknowledges (`CONFIG GET appendonly appendfsync`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    pub appendonly: bool,
    /// `always`, `everysec` or `no`, as the server reports it.
    pub appendfsync: String,
    /// `maxmemory-policy`: anything but `noeviction` may drop a feed key under memory
    /// pressure (the stream, its sequence, a snapshot), which is a lost revocation.
    pub eviction: String,
}

impl Persistence {
    /// Reads the server's persistence settings.
    pub async fn read(connection: &mut MultiplexedConnection) -> Result<Persistence, FeedError> {
        let mut pipe = redis::pipe();
        pipe.cmd("CONFIG").arg("GET").arg("appendonly");
        pipe.cmd("CONFIG").arg("GET").arg("appendfsync");
        pipe.cmd("CONFIG").arg("GET").arg("maxmemory-policy");
        let (appendonly, appendfsync, eviction): (Value, Value, Value) = pipe
            .query_async(connection)
            .await
            .map_err(|e| redis_error(&e))?;
        let value = |reply: &Value| -> Option<String> {
            let text = match reply {
                Value::Array(pair) => bytes(pair.get(1)?)?,
                Value::Map(pairs) => bytes(&pairs.first()?.1)?,
                _ => return None,
            };
            Some(String::from_utf8_lossy(text).into_owned())
        };
        Ok(Persistence {
            appendonly: value(&appendonly).ok_or(FeedError::Malformed("CONFIG GET appendonly"))?
                == "yes",
            appendfsync: value(&appendfsync)
                .ok_or(FeedError::Malformed("CONFIG GET appendfsync"))?,
            eviction: value(&eviction)
                .ok_or(FeedError::Malformed("CONFIG GET maxmemory-policy"))?,
        })
    }

    /// The start-up rule: a feed whose Redis does not write an append-only file could lose
    /// acknowledged revocations, so it is refused unless `feed_allow_volatile` (tests, demos).
    /// An evicting `maxmemory-policy` is refused always: it loses data while running.
    pub fn check(&self, allow_volatile: bool) -> Result<(), String> {
        if self.eviction != "noeviction" {
            return Err(format!(
                "the revocation feed's Redis has maxmemory-policy {}: it may evict a feed key (a lost revocation) under memory pressure; set maxmemory-policy noeviction on that server",
                self.eviction
            ));
        }
        if self.appendonly || allow_volatile {
            return Ok(());
        }
        Err("the revocation feed's Redis has appendonly no: an acknowledged revocation could be lost on its restart; set appendonly yes (and appendfsync always or everysec) on that server, or revocation.feed_allow_volatile = true for tests and demos".into())
    }
}

/// Reads up to `count` entries after sequence `after`, waiting up to `block` for the first
/// one. Runs on its own connection: a blocking read must not share the publishing one.
pub async fn read_after(
    connection: &mut MultiplexedConnection,
    keys: &FeedKeys,
    after: u64,
    count: usize,
    block: Duration,
) -> Result<Vec<FeedEntry>, FeedError> {
    let reply: Value = xread(keys, after, count, block)
        .query_async(connection)
        .await
        .map_err(|e| redis_error(&e))?;
    parse_xread(reply)
}

/// `XREAD COUNT count BLOCK block STREAMS stream <after>-0`.
fn xread(keys: &FeedKeys, after: u64, count: usize, block: Duration) -> redis::Cmd {
    let mut command = redis::cmd("XREAD");
    command
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("STREAMS")
        .arg(&keys.stream)
        .arg(format!("{after}-0"));
    command
}

/// The entries of an `XREAD` reply for one stream (`Nil` when the block timed out).
fn parse_xread(reply: Value) -> Result<Vec<FeedEntry>, FeedError> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams,
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        _ => return Err(FeedError::Malformed("XREAD reply")),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(mut parts) = stream else {
            return Err(FeedError::Malformed("XREAD stream"));
        };
        let Some(Value::Array(entries)) = parts.pop() else {
            return Err(FeedError::Malformed("XREAD entries"));
        };
        for entry in entries {
            out.push(parse_entry(entry)?);
        }
    }
    Ok(out)
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn parse_entry(entry: Value) -> Result<FeedEntry, FeedError> {
    let Value::Array(parts) = entry else {
        return Err(FeedError::Malformed("entry"));
    };
    let [id, fields] = parts.as_slice() else {
        return Err(FeedError::Malformed("entry"));
    };
    let id = bytes(id).ok_or(FeedError::Malformed("entry ID"))?;
    let sequence = parse_id(id).ok_or(FeedError::Malformed("entry ID not <n>-0"))?;
    let Value::Array(fields) = fields else {
        return Err(FeedError::Malformed("entry fields"));
    };
    let (mut kind, mut payload) = (None, None);
    for pair in fields.chunks(2) {
        let [name, value] = pair else {
            return Err(FeedError::Malformed("entry fields"));
        };
        match bytes(name) {
            Some(b"k") => kind = bytes(value).and_then(EntryKind::from_tag),
            Some(b"r") => payload = bytes(value).map(<[u8]>::to_vec),
            _ => {}
        }
    }
    Ok(FeedEntry {
        sequence,
        kind: kind.ok_or(FeedError::Malformed("entry kind"))?,
        payload: payload.ok_or(FeedError::Malformed("entry payload"))?,
    })
}

/// `<n>-0` → `n`; anything else is not one of ours.
fn parse_id(id: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(id).ok()?;
    let (n, seq) = text.split_once('-')?;
    if seq != "0" || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// Where this instance is in the feed: the feed's epoch and the last applied sequence number.
///
/// Written to `<revocations>/feed-position` only after the log records of every entry up to
/// `sequence` are durable, so the file is never ahead of the log. It may be behind (a crash
/// between the two): the entries after it are then applied again, which is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub epoch: [u8; 16],
    pub sequence: u64,
}

const POSITION_FILE: &str = "feed-position";
const POSITION_MAGIC: [u8; 4] = *b"IDGP";
const POSITION_LEN: usize = 4 + 16 + 8 + 4;

impl Position {
    fn encode(&self) -> [u8; POSITION_LEN] {
        let mut out = [0u8; POSITION_LEN];
        out[..4].copy_from_slice(&POSITION_MAGIC);
        out[4..20].copy_from_slice(&self.epoch);
        out[20..28].copy_from_slice(&self.sequence.to_le_bytes());
        let crc = crc32c::crc32c(&out[..28]);
        out[28..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Position> {
        if bytes.len() != POSITION_LEN || bytes[..4] != POSITION_MAGIC {
            return None;
        }
        let crc = u32::from_le_bytes(bytes[28..].try_into().ok()?);
        if crc != crc32c::crc32c(&bytes[..28]) {
            return None;
        }
        Some(Position {
            epoch: bytes[4..20].try_into().ok()?,
            sequence: u64::from_le_bytes(bytes[20..28].try_into().ok()?),
        })
    }

    /// The recorded position in `dir`: `Ok(None)` when there is none, or when the file is
    /// damaged (then the position is unknown, and the caller resynchronises from a snapshot
    /// as a new instance would).
    pub fn load(dir: &std::path::Path) -> std::io::Result<Option<Position>> {
        match std::fs::read(dir.join(POSITION_FILE)) {
            Ok(bytes) => Ok(Position::decode(&bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Records the position durably: a temporary file, fsynced, renamed over the old one, and
    /// the directory fsynced.
    pub fn store(&self, dir: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        let temporary = dir.join("feed-position.tmp");
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&self.encode())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, dir.join(POSITION_FILE))?;
        super::log::sync_dir(dir)
    }
}

/// The feed's epoch: 16 random bytes under `<stream>:epoch`, made by the first instance that
/// finds none. A different epoch from the one an instance recorded means the feed was made
/// anew (a Redis that came back empty): the recorded position means nothing there.
pub async fn feed_epoch(
    connection: &mut MultiplexedConnection,
    keys: &FeedKeys,
) -> Result<[u8; 16], FeedError> {
    let (value,): (Vec<u8>,) = epoch_pipe(keys)
        .query_async(connection)
        .await
        .map_err(|e| redis_error(&e))?;
    value
        .try_into()
        .map_err(|_| FeedError::Malformed("feed epoch"))
}

/// `SET epoch <random> NX` (ignored) and `GET epoch`: the feed's epoch, made if there is none.
fn epoch_pipe(keys: &FeedKeys) -> redis::Pipeline {
    let candidate: [u8; 16] = rand::rng().random();
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(&keys.epoch)
        .arg(&candidate[..])
        .arg("NX")
        .ignore();
    pipe.cmd("GET").arg(&keys.epoch);
    pipe
}

/// [`feed_epoch`] and then [`read_after`] in one round trip (Redis runs them in that order,
/// so the entries read belong to the epoch returned). The entries are `None` when the epoch is
/// not `expected`: they would be another feed's.
pub async fn epoch_and_read_after(
    connection: &mut MultiplexedConnection,
    keys: &FeedKeys,
    expected: [u8; 16],
    after: u64,
    count: usize,
    block: Duration,
) -> Result<([u8; 16], Option<Vec<FeedEntry>>), FeedError> {
    let mut pipe = epoch_pipe(keys);
    pipe.add_command(xread(keys, after, count, block));
    let (epoch, reply): (Vec<u8>, Value) = pipe
        .query_async(connection)
        .await
        .map_err(|e| redis_error(&e))?;
    let epoch: [u8; 16] = epoch
        .try_into()
        .map_err(|_| FeedError::Malformed("feed epoch"))?;
    if epoch != expected {
        return Ok((epoch, None));
    }
    Ok((epoch, Some(parse_xread(reply)?)))
}

/// Counters of one instance's applier, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Stream entries applied (every kind).
    pub entries_applied: AtomicU64,
    /// Gaps repaired from a shared snapshot (joining with an empty directory included).
    pub gaps_repaired: AtomicU64,
    /// Bulk imports applied from the feed.
    pub imports_applied: AtomicU64,
    /// Wall-clock seconds when this instance last applied an entry (0: never).
    pub last_entry_at: AtomicI64,
    /// The holder's clock (seconds) in the newest heartbeat applied (0: none yet).
    pub last_heartbeat: AtomicI64,
    /// Creation time of the newest shared snapshot this instance wrote or loaded (0: none).
    pub snapshot_created: AtomicI64,
    /// Whether this instance holds the feed's lock (writes heartbeats and snapshots).
    pub lock_holder: AtomicBool,
}

/// What one read of the feed did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `entries` read and applied; the position is now `to` (unchanged if none came).
    Applied { entries: usize, to: u64 },
    /// The entry after `at` is missing from the stream (the next one there is `next`):
    /// nothing after `at` was applied. The caller repairs from a snapshot.
    Gap { at: u64, next: u64 },
    /// The feed's epoch is not the one the position belongs to (its Redis came back empty, or
    /// is another server): the position is now the new epoch's start, nothing was applied, and
    /// the next step reads the new feed from its first entry (entries this instance already
    /// holds are applied again, which is harmless).
    NewEpoch,
}

/// What a repair from a shared snapshot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Loaded the snapshot at `to` (holding `entries`); the position is now `to`.
    Repaired { to: u64, entries: u64 },
    /// No shared snapshot covers the position needed: nothing changed.
    NoSnapshot,
}

/// Applies the feed, in order, to one instance's store, and records how far it got.
#[derive(Debug)]
pub struct Applier {
    keys: FeedKeys,
    /// The revocation directory, where `feed-position` lives.
    dir: std::path::PathBuf,
    position: Position,
    stats: Arc<FeedStats>,
    /// When the position was last recorded (`None`: not yet by this applier).
    saved_at: Option<std::time::Instant>,
    /// The position last recorded (or started from): where a failed save rewinds to, so that
    /// what the failure may have dropped is read and written again.
    saved: Position,
}

impl Applier {
    /// Starts from `position` (the recorded one, or the feed's epoch at sequence 0).
    pub fn new(keys: FeedKeys, dir: std::path::PathBuf, position: Position) -> Applier {
        Applier::with_stats(keys, dir, position, Arc::default())
    }

    /// [`Applier::new`], counting into `stats`.
    pub fn with_stats(
        keys: FeedKeys,
        dir: std::path::PathBuf,
        position: Position,
        stats: Arc<FeedStats>,
    ) -> Applier {
        Applier {
            keys,
            dir,
            position,
            stats,
            saved_at: None,
            saved: position,
        }
    }

    /// Brings the position past a gap (or to a first position, joining with an empty data
    /// directory): loads the newest shared snapshot that covers at least `needed`, makes it
    /// durable in `store` (folded into a local snapshot: an entry already newer locally keeps
    /// winning), then records its position. The list stays as it was if none can be loaded.
    pub async fn repair(
        &mut self,
        connection: &mut MultiplexedConnection,
        store: &super::store::RevocationStore,
        needed: u64,
    ) -> Result<Repair, FeedError> {
        let Some((manifest, slots)) =
            super::feed_share::load_snapshot(connection, &self.keys, needed).await?
        else {
            return Ok(Repair::NoSnapshot);
        };
        let entries = slots.len() as u64;
        store
            .merge_slots(slots)
            .await
            .map_err(|e| FeedError::Local(e.to_string()))?;
        self.position.sequence = manifest.position;
        self.save(store, 1, true).await?;
        self.stats.gaps_repaired.fetch_add(1, Ordering::Relaxed);
        self.stats
            .snapshot_created
            .fetch_max(manifest.created, Ordering::Relaxed);
        Ok(Repair::Repaired {
            to: manifest.position,
            entries,
        })
    }

    pub fn position(&self) -> Position {
        self.position
    }

    /// Reads what follows the position (waiting up to `block`), commits its updates to
    /// `store` (in order, sharing the writer's group commits), then records the new position.
    /// An entry that does not decode stops the step with an error before it: it is never
    /// skipped.
    pub async fn step(
        &mut self,
        connection: &mut MultiplexedConnection,
        store: &super::store::RevocationStore,
        block: Duration,
    ) -> Result<Step, FeedError> {
        // Checked with every read (one round trip): a feed made anew numbers its entries from
        // 1 again, and reading it after the old position would skip them.
        let (epoch, entries) = epoch_and_read_after(
            connection,
            &self.keys,
            self.position.epoch,
            self.position.sequence,
            READ_COUNT,
            block,
        )
        .await?;
        let Some(entries) = entries else {
            self.position = Position { epoch, sequence: 0 };
            self.save(store, 1, true).await?;
            return Ok(Step::NewEpoch);
        };
        // Updates wait in `pending` until the read is done (or an import commit needs them
        // durable first); the position passes only what `store` has made durable.
        let mut pending = Vec::new();
        let mut taken = self.position.sequence;
        let mut applied = 0;
        let mut stop = None;
        let mut force = false;
        for entry in &entries {
            if entry.sequence != taken + 1 {
                stop = Some(Stop::Gap(Step::Gap {
                    at: taken,
                    next: entry.sequence,
                }));
                break;
            }
            match entry.kind {
                EntryKind::Update => {
                    let Some(record) = super::log::RecordBuilder::from_payload(&entry.payload)
                    else {
                        stop = Some(Stop::Malformed("update payload"));
                        break;
                    };
                    pending.push(record);
                }
                EntryKind::Heartbeat => {
                    let Ok(millis) = <[u8; 8]>::try_from(entry.payload.as_slice()) else {
                        stop = Some(Stop::Malformed("heartbeat payload"));
                        break;
                    };
                    self.stats.last_heartbeat.fetch_max(
                        i64::from_le_bytes(millis).div_euclid(1000),
                        Ordering::Relaxed,
                    );
                }
                EntryKind::ImportCommit => {
                    let Some(commit) = super::feed_share::ImportCommit::decode(&entry.payload)
                    else {
                        stop = Some(Stop::Malformed("import commit payload"));
                        break;
                    };
                    // The updates before it first: the merge must not overtake them.
                    self.commit(store, &mut pending).await?;
                    let keys = &self.keys;
                    let slots = super::feed_share::read_chunks(
                        connection,
                        |i| keys.import_chunk(&commit.id, i),
                        &commit.chunked,
                    )
                    .await?;
                    let Some(slots) = slots else {
                        // Its chunks are gone: only a shared snapshot that covers the commit
                        // can bring this instance past it.
                        stop = Some(Stop::Gap(Step::Gap {
                            at: taken,
                            next: entry.sequence + 1,
                        }));
                        break;
                    };
                    store
                        .merge_slots(slots)
                        .await
                        .map_err(|e| FeedError::Local(e.to_string()))?;
                    self.stats.imports_applied.fetch_add(1, Ordering::Relaxed);
                    force = true;
                }
            }
            taken = entry.sequence;
            applied += 1;
        }
        self.commit(store, &mut pending).await?;
        self.position.sequence = taken;
        if applied > 0 {
            self.stats
                .entries_applied
                .fetch_add(applied as u64, Ordering::Relaxed);
            self.stats
                .last_entry_at
                .store(crate::clock::unix_now(), Ordering::Relaxed);
        }
        self.save(store, applied, force || stop.is_some()).await?;
        match stop {
            None => Ok(Step::Applied {
                entries: applied,
                to: self.position.sequence,
            }),
            Some(Stop::Gap(gap)) => Ok(gap),
            Some(Stop::Malformed(what)) => Err(FeedError::Malformed(what)),
        }
    }

    /// Writes and applies the pending update records; [`Applier::save`] makes them durable
    /// before it records a position past them.
    async fn commit(
        &self,
        store: &super::store::RevocationStore,
        pending: &mut Vec<super::log::RecordBuilder>,
    ) -> Result<(), FeedError> {
        store
            .write_records(std::mem::take(pending))
            .await
            .map_err(|e| FeedError::Local(e.to_string()))
    }

    /// Makes the records written so far durable (one sync), then records the position. Unless
    /// `force`d, at most every [`POSITION_EVERY`]: a recorded position that lags only means
    /// that a restart applies the entries after it again, in order, which leaves the list as
    /// it was (the newest `at` wins, and on a tie the later-applied, which is applied later
    /// again); the entries are still in the feed, which is trimmed only behind a snapshot.
    async fn save(
        &mut self,
        store: &super::store::RevocationStore,
        applied: usize,
        force: bool,
    ) -> Result<(), FeedError> {
        if applied == 0
            || (!force
                && self
                    .saved_at
                    .is_some_and(|at| at.elapsed() < POSITION_EVERY))
        {
            return Ok(());
        }
        let (position, dir) = (self.position, self.dir.clone());
        let saved = async {
            store
                .sync()
                .await
                .map_err(|e| FeedError::Local(e.to_string()))?;
            tokio::task::spawn_blocking(move || position.store(&dir))
                .await
                .map_err(|e| FeedError::Local(e.to_string()))?
                .map_err(|e| FeedError::Local(format!("feed position: {e}")))
        }
        .await;
        if let Err(error) = saved {
            self.position = self.saved;
            return Err(error);
        }
        self.saved = position;
        self.saved_at = Some(std::time::Instant::now());
        Ok(())
    }
}

/// Why a step stopped before the end of what it read.
enum Stop {
    Gap(Step),
    Malformed(&'static str),
}

/// The feed position is recorded at most this often while entries keep coming (each record
/// costs a file write and two fsyncs; at 1,000 updates/s, one per read would be most of the
/// cost of applying the feed).
pub const POSITION_EVERY: Duration = Duration::from_millis(250);

/// Entries read per `XREAD`.
pub const READ_COUNT: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sequence_ids_are_accepted() {
        assert_eq!(parse_id(b"1-0"), Some(1));
        assert_eq!(parse_id(b"18446744073709551615-0"), Some(u64::MAX));
        for bad in [
            &b"1-1"[..],
            b"-0",
            b"1",
            b"+1-0",
            b"1700000000000-3",
            b"x-0",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_position_survives_a_store_and_a_damaged_one_reads_as_unknown() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Position::load(dir.path()).unwrap(), None);
        let position = Position {
            epoch: [9; 16],
            sequence: 4711,
        };
        position.store(dir.path()).unwrap();
        assert_eq!(Position::load(dir.path()).unwrap(), Some(position));
        let later = Position {
            sequence: 4712,
            ..position
        };
        later.store(dir.path()).unwrap();
        assert_eq!(Position::load(dir.path()).unwrap(), Some(later));
        // Any flipped bit, and a short file, are damage: the position is unknown.
        let good = later.encode();
        for bit in 0..good.len() * 8 {
            let mut bad = good;
            bad[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(dir.path().join(POSITION_FILE), bad).unwrap();
            assert_eq!(Position::load(dir.path()).unwrap(), None, "bit {bit}");
        }
        std::fs::write(dir.path().join(POSITION_FILE), &good[..20]).unwrap();
        assert_eq!(Position::load(dir.path()).unwrap(), None);
    }

    #[test]
    fn a_timed_out_block_reads_as_no_entries() {
        assert_eq!(parse_xread(Value::Nil).unwrap(), Vec::new());
    }
}
