//! Configuration (SPEC §9): a TOML file, `IDGATE_<SECTION>_<KEY>` environment overrides, parsed
//! once into typed values.
//!
//! Settings with a closed set of values (`revocation.feed`, `replay.backend`, `log.level`,
//! `log.format`) are enums, read through [`Choice`]: an unknown value is reported together with
//! every other problem, with the accepted values listed.
//!
//! **Invariants:** unknown keys are refused (a typo never silently falls back to a default);
//! every bad value is reported, all at once, before anything starts; secrets appear only as
//! SHA-256 hashes; relative paths are resolved against the config file's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::replay::{RedisReplayOptions, RedisTarget};
use crate::verify::policy::{DEFAULT_CLOCK_SKEW_S, DEFAULT_MAX_PRESENTATION_AGE_S};

/// A setting read as one of `T`'s values. A value `T` does not accept is kept as its error
/// (serde's, which lists the accepted values) so that [`load`] reports it with the others
/// instead of stopping at the first.
#[derive(Clone, Debug)]
pub struct Choice<T>(Result<T, String>);

impl<T> Choice<T> {
    fn new(value: T) -> Choice<T> {
        Choice(Ok(value))
    }

    /// The value, or the problem (for `name`) pushed onto `problems`.
    fn get(&self, name: &str, problems: &mut Vec<String>) -> Option<&T> {
        match &self.0 {
            Ok(value) => Some(value),
            Err(message) => {
                problems.push(format!("{name}: {message}"));
                None
            }
        }
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Choice<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = toml::Value::deserialize(deserializer)?;
        Ok(Choice(
            T::deserialize(value).map_err(|e: toml::de::Error| e.message().to_string()),
        ))
    }
}

/// Where revocations come from besides the admin API (`revocation.feed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationFeed {
    /// This instance's durable log only.
    None,
    /// A Redis stream shared by several instances (`revocation.redis_url`).
    Redis,
}

/// Where replay nonces are recorded (`replay.backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayBackend {
    /// This process's memory.
    Memory,
    /// A Redis shared by several instances (not supported by this build).
    Redis,
}

/// `log.level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

/// `log.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// The whole configuration, as written in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub trust: TrustConfig,
    pub policy: PolicyConfig,
    pub revocation: RevocationConfig,
    pub replay: ReplaySection,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub tenants: Vec<TenantConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public API listener.
    pub listen: String,
    /// Operator listener: metrics, health, admin.
    pub admin_listen: String,
    pub max_body_bytes: usize,
    /// Most items (presentations, signatures, IDs) in one request.
    pub max_batch_items: usize,
    /// Most items accepted but not yet answered, over all requests; past it, 503.
    pub max_pending_items: usize,
    /// Verification threads; 0 = one per core.
    pub verify_threads: usize,
    /// Threads for HTTP and I/O (tokio workers); 0 = one per core.
    pub io_threads: usize,
    /// Most open client connections per listener; further connections wait to be accepted.
    pub max_connections: usize,
    /// Time allowed for a request's headers to arrive.
    pub header_read_timeout_ms: u64,
    /// Time allowed for a whole request, body and work included.
    pub request_timeout_ms: u64,
    /// On shutdown, how long in-flight requests may take to finish.
    pub drain_timeout_s: u64,
    /// Small `/v1/verify` requests arriving together are verified as one batch of up to this many
    /// presentations (0 disables coalescing).
    pub coalesce_max_items: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            max_body_bytes: 16 * 1024 * 1024,
            max_batch_items: 10_000,
            max_pending_items: 200_000,
            verify_threads: 0,
            io_threads: 0,
            max_connections: 4096,
            header_read_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            drain_timeout_s: 30,
            coalesce_max_items: 512,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// JWKS file of trusted issuer keys.
    pub jwks: PathBuf,
    /// Memory for the cache of verified issuer JWTs, in MiB (0 disables it).
    pub cache_mb: u64,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            jwks: "trust.jwks.json".into(),
            cache_mb: 256,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub clock_skew_s: i64,
    pub max_presentation_age_s: i64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            clock_skew_s: DEFAULT_CLOCK_SKEW_S,
            max_presentation_age_s: DEFAULT_MAX_PRESENTATION_AGE_S,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    pub data_dir: PathBuf,
    pub feed: Choice<RevocationFeed>,
    /// With `feed = "redis"`: the feed's own Redis (it must persist: `appendonly yes`).
    pub redis_url: String,
    /// The stream's key (the feed's other keys are named after it).
    pub feed_stream: String,
    /// How often an instance confirms it is caught up with the feed (its blocking read's
    /// timeout); staleness is measured from the last confirmation.
    pub feed_heartbeat_ms: u64,
    /// Accept a feed Redis without an append-only file (tests and demos only).
    pub feed_allow_volatile: bool,
    /// How often the lock holder writes a shared snapshot (after which the stream is trimmed
    /// behind the older of the two snapshots kept).
    pub feed_snapshot_s: u64,
    /// With `feed = "redis"`: once the last confirmed feed position is older than this,
    /// would-be-`valid` items are `status_undetermined` and status answers `undetermined`.
    /// With `feed = "none"` the local log is authoritative and always current.
    pub max_staleness_s: i64,
    /// When the log has grown by this many bytes since the last snapshot, a background
    /// compaction folds it into a new snapshot.
    pub snapshot_log_bytes: u64,
    /// Largest `POST /admin/v1/revocations` body (JSON Lines, streamed).
    pub max_admin_body_bytes: usize,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            data_dir: "idgate-data".into(),
            feed: Choice::new(RevocationFeed::None),
            redis_url: String::new(),
            feed_stream: "idgate:revocations".into(),
            feed_heartbeat_ms: 1000,
            feed_allow_volatile: false,
            feed_snapshot_s: 300,
            max_staleness_s: 300,
            snapshot_log_bytes: 256 << 20,
            max_admin_body_bytes: 1 << 30,
        }
    }
}

/// `[replay]` as written (`replay::MemoryReplayOptions` is what the store is built with).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplaySection {
    pub backend: Choice<ReplayBackend>,
    /// Most live entries of the memory store (with Redis the bound is the server's `maxmemory`).
    pub capacity: usize,
    /// One Redis server, `redis://[user:password@]host:port[/db]`.
    pub redis_url: String,
    /// A Redis Cluster, by any of its nodes (mutually exclusive with `redis_url`).
    pub redis_cluster: Vec<String>,
    /// Bound on every Redis connect and round trip.
    pub redis_timeout_ms: u64,
    /// Prepended to every key idgate writes.
    pub key_prefix: String,
    /// With `rediss://`: a PEM file of roots to trust instead of the system's.
    pub redis_ca_file: Option<PathBuf>,
}

impl Default for ReplaySection {
    fn default() -> Self {
        ReplaySection {
            backend: Choice::new(ReplayBackend::Memory),
            capacity: 10_000_000,
            redis_url: String::new(),
            redis_cluster: Vec::new(),
            redis_timeout_ms: 250,
            key_prefix: "idgate:replay:".into(),
            redis_ca_file: None,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// SHA-256 (hex) of the admin bearer token; empty disables the admin API.
    pub token_sha256: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: Choice<LogLevel>,
    pub format: Choice<LogFormat>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: Choice::new(LogLevel::Info),
            format: Choice::new(LogFormat::Json),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Metric label and log field; `[a-z0-9_-]`, 1–64 characters.
    pub name: String,
    /// SHA-256 (hex) of the tenant's API key.
    pub api_key_sha256: String,
    /// Accepted KB-JWT audiences (compared literally).
    pub audiences: Vec<String>,
    #[serde(default = "default_true")]
    pub require_key_binding: bool,
    #[serde(default)]
    pub allow_status_queries: bool,
    /// Items (presentations, signatures, IDs) per second; 0 = unlimited.
    #[serde(default)]
    pub rate_limit_items_per_s: u64,
}

fn default_true() -> bool {
    true
}

/// The configuration, checked: addresses parsed, hashes decoded, paths resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_batch_items: usize,
    pub max_pending_items: usize,
    pub verify_threads: usize,
    pub io_threads: usize,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub drain_timeout: Duration,
    pub coalesce_max_items: usize,
    pub trust_jwks: PathBuf,
    pub cache_bytes: u64,
    pub clock_skew_s: i64,
    pub max_presentation_age_s: i64,
    pub data_dir: PathBuf,
    pub max_staleness_s: i64,
    pub snapshot_log_bytes: u64,
    pub max_admin_body_bytes: usize,
    pub replay_capacity: usize,
    /// `Some` with `replay.backend = "redis"`.
    pub replay_redis: Option<RedisReplayOptions>,
    /// `Some` with `revocation.feed = "redis"`.
    pub revocation_feed: Option<FeedOptions>,
    pub admin_token_sha256: Option<[u8; 32]>,
    pub log_level: LogLevel,
    pub log_json: bool,
    pub tenants: Vec<TenantSettings>,
}

/// One tenant, checked.
#[derive(Clone, Debug)]
pub struct TenantSettings {
    pub name: String,
    pub api_key_sha256: [u8; 32],
    pub audiences: Vec<String>,
    pub require_key_binding: bool,
    pub allow_status_queries: bool,
    pub rate_limit_items_per_s: u64,
}

/// Everything wrong with a configuration, one line each.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: impl Into<String>) -> ConfigError {
        ConfigError {
            problems: vec![problem.into()],
        }
    }
}

/// The sections an `IDGATE_<SECTION>_<KEY>` variable may name.
const SECTIONS: [&str; 7] = [
    "server",
    "trust",
    "policy",
    "revocation",
    "replay",
    "admin",
    "log",
];

/// Reads `path` (or the defaults when `None`), applies `IDGATE_*` overrides from `env`, and
/// checks everything.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let text = match path {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(format!("cannot read {}: {e}", path.display())))?,
        None => String::new(),
    };
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::one(format!("not valid TOML: {e}")))?;
    apply_overrides(&mut table, env)?;
    let config: Config = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::one(e.message().to_string()))?;
    let base = path.and_then(Path::parent).unwrap_or(Path::new("."));
    check(&config, base)
}

/// `IDGATE_SERVER_ADMIN_LISTEN=…` sets `[server] admin_listen`. Values are read as TOML scalars
/// (numbers, booleans), falling back to strings. Variables naming no known section are ignored
/// (`IDGATE_VECTORS_DIR` belongs to the tests); unknown keys in a known section are refused by
/// the same check as in the file.
fn apply_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("IDGATE_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some(section) = SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) else {
            continue;
        };
        let key = &rest[section.len() + 1..];
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw));
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(ConfigError::one(format!("[{section}] is not a table")));
        };
        section_table.insert(key.to_string(), value);
    }
    Ok(())
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

fn check(config: &Config, base: &Path) -> Result<Settings, ConfigError> {
    let mut problems = Vec::new();
    let mut address = |name: &str, text: &str| match text.parse::<SocketAddr>() {
        Ok(address) => Some(address),
        Err(_) => {
            problems.push(format!(
                "server.{name} = {text:?} is not an address like 127.0.0.1:8080"
            ));
            None
        }
    };
    let listen = address("listen", &config.server.listen);
    let admin_listen = address("admin_listen", &config.server.admin_listen);
    let server = &config.server;
    let mut positive = |name: &str, value: u64| {
        if value == 0 {
            problems.push(format!("{name} must be greater than 0"));
        }
    };
    positive("server.max_body_bytes", server.max_body_bytes as u64);
    positive("server.max_batch_items", server.max_batch_items as u64);
    positive("server.max_pending_items", server.max_pending_items as u64);
    positive("server.max_connections", server.max_connections as u64);
    positive(
        "server.header_read_timeout_ms",
        server.header_read_timeout_ms,
    );
    positive("server.request_timeout_ms", server.request_timeout_ms);
    positive("replay.capacity", config.replay.capacity as u64);
    if server.max_pending_items < server.max_batch_items {
        problems.push("server.max_pending_items must be at least server.max_batch_items (or no full request could ever run)".into());
    }
    if !(0..=3600).contains(&config.policy.clock_skew_s) {
        problems.push("policy.clock_skew_s must be between 0 and 3600".into());
    }
    if !(1..=86_400).contains(&config.policy.max_presentation_age_s) {
        problems.push("policy.max_presentation_age_s must be between 1 and 86400".into());
    }
    if config.revocation.max_staleness_s <= 0 {
        problems.push("revocation.max_staleness_s must be greater than 0".into());
    }
    if config.revocation.snapshot_log_bytes < 4096 {
        problems.push("revocation.snapshot_log_bytes must be at least 4096".into());
    }
    if config.revocation.max_admin_body_bytes == 0 {
        problems.push("revocation.max_admin_body_bytes must be greater than 0".into());
    }
    let revocation_feed = feed_options(config, &mut problems);
    let replay_redis = redis_replay(config, base, &mut problems);
    let log_level = config.log.level.get("log.level", &mut problems).copied();
    let log_format = config.log.format.get("log.format", &mut problems).copied();
    let admin_token_sha256 = match config.admin.token_sha256.as_str() {
        "" => None,
        text => {
            let hash = hex32(text);
            if hash.is_none() {
                problems.push(
                    "admin.token_sha256 must be 64 hex digits (the SHA-256 of the admin token)"
                        .into(),
                );
            }
            hash
        }
    };
    let mut tenants = Vec::with_capacity(config.tenants.len());
    for (index, tenant) in config.tenants.iter().enumerate() {
        let label = format!("tenants[{index}] ({})", tenant.name);
        let name_ok = (1..=64).contains(&tenant.name.len())
            && tenant
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            problems.push(format!(
                "{label}: name must be 1-64 characters of [a-z0-9_-] (it is a metric label)"
            ));
        }
        if config.tenants[..index]
            .iter()
            .any(|other| other.name == tenant.name)
        {
            problems.push(format!("{label}: duplicate tenant name"));
        }
        let key = hex32(&tenant.api_key_sha256);
        if key.is_none() {
            problems.push(format!("{label}: api_key_sha256 must be 64 hex digits"));
        }
        if config.tenants[..index].iter().any(|other| {
            other
                .api_key_sha256
                .eq_ignore_ascii_case(&tenant.api_key_sha256)
        }) {
            problems.push(format!("{label}: another tenant has the same API key"));
        }
        if tenant.audiences.is_empty() || tenant.audiences.iter().any(String::is_empty) {
            problems.push(format!(
                "{label}: audiences must list at least one non-empty audience"
            ));
        }
        if let Some(api_key_sha256) = key {
            tenants.push(TenantSettings {
                name: tenant.name.clone(),
                api_key_sha256,
                audiences: tenant.audiences.clone(),
                require_key_binding: tenant.require_key_binding,
                allow_status_queries: tenant.allow_status_queries,
                rate_limit_items_per_s: tenant.rate_limit_items_per_s,
            });
        }
    }
    if config.tenants.is_empty() {
        problems.push("no [[tenants]]: nobody could call the API".into());
    }
    let (Some(listen), Some(admin_listen), true) = (listen, admin_listen, problems.is_empty())
    else {
        return Err(ConfigError { problems });
    };
    let resolve = |path: &Path| {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            base.join(path)
        }
    };
    Ok(Settings {
        listen,
        admin_listen,
        max_body_bytes: server.max_body_bytes,
        max_batch_items: server.max_batch_items,
        max_pending_items: server.max_pending_items,
        verify_threads: server.verify_threads,
        io_threads: server.io_threads,
        max_connections: server.max_connections,
        header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
        request_timeout: Duration::from_millis(server.request_timeout_ms),
        drain_timeout: Duration::from_secs(server.drain_timeout_s),
        coalesce_max_items: server.coalesce_max_items,
        trust_jwks: resolve(&config.trust.jwks),
        cache_bytes: config.trust.cache_mb.saturating_mul(1 << 20),
        clock_skew_s: config.policy.clock_skew_s,
        max_presentation_age_s: config.policy.max_presentation_age_s,
        data_dir: resolve(&config.revocation.data_dir),
        max_staleness_s: config.revocation.max_staleness_s,
        snapshot_log_bytes: config.revocation.snapshot_log_bytes,
        max_admin_body_bytes: config.revocation.max_admin_body_bytes,
        replay_capacity: config.replay.capacity,
        replay_redis,
        revocation_feed,
        admin_token_sha256,
        log_level: log_level.unwrap_or(LogLevel::Info),
        log_json: log_format == Some(LogFormat::Json),
        tenants,
    })
}

/// The shared revocation feed's settings (`revocation.feed = "redis"`).
#[derive(Clone, Debug)]
pub struct FeedOptions {
    pub url: String,
    pub stream: String,
    pub heartbeat: Duration,
    pub allow_volatile: bool,
    pub snapshot_every: Duration,
}

/// `[revocation]` with `feed = "redis"`, checked; `None` for the local log alone.
fn feed_options(config: &Config, problems: &mut Vec<String>) -> Option<FeedOptions> {
    let revocation = &config.revocation;
    let feed = revocation.feed.get("revocation.feed", problems).copied();
    if feed != Some(RevocationFeed::Redis) {
        if !revocation.redis_url.is_empty() {
            problems
                .push("revocation.redis_url is set but revocation.feed is not \"redis\"".into());
        }
        return None;
    }
    let url = revocation.redis_url.as_str();
    if url.is_empty() {
        problems.push("revocation.feed = \"redis\" needs revocation.redis_url".into());
    } else if !url.starts_with("redis://") || redis::Client::open(url).is_err() {
        problems.push(
            "revocation.redis_url must be a URL like redis://127.0.0.1:6379 (redis://[user:password@]host:port[/db]); rediss:// is not supported for the feed yet".into(),
        );
    }
    if revocation.feed_stream.is_empty() || revocation.feed_stream.len() > 256 {
        problems.push("revocation.feed_stream must be 1 to 256 bytes".into());
    }
    if !(50..=60_000).contains(&revocation.feed_heartbeat_ms) {
        problems.push("revocation.feed_heartbeat_ms must be between 50 and 60000".into());
    }
    if !(1..=86_400).contains(&revocation.feed_snapshot_s) {
        problems.push("revocation.feed_snapshot_s must be between 1 and 86400".into());
    }
    if revocation.feed_heartbeat_ms >= config.revocation.max_staleness_s.saturating_mul(1000) as u64
    {
        problems.push(
            "revocation.feed_heartbeat_ms must be less than revocation.max_staleness_s".into(),
        );
    }
    Some(FeedOptions {
        url: url.to_string(),
        stream: revocation.feed_stream.clone(),
        heartbeat: Duration::from_millis(revocation.feed_heartbeat_ms),
        allow_volatile: revocation.feed_allow_volatile,
        snapshot_every: Duration::from_secs(revocation.feed_snapshot_s),
    })
}

/// `[replay]` with `backend = "redis"`, checked; `None` for the memory backend.
fn redis_replay(
    config: &Config,
    base: &Path,
    problems: &mut Vec<String>,
) -> Option<RedisReplayOptions> {
    let replay = &config.replay;
    let backend = replay.backend.get("replay.backend", problems).copied();
    let url_ok = |problems: &mut Vec<String>, name: &str, url: &str| {
        if url.contains("#insecure") {
            problems.push(format!(
                "{name}: #insecure (TLS without certificate checks) is refused; give replay.redis_ca_file instead"
            ));
        }
        let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
        if !scheme_ok || redis::Client::open(url).is_err() {
            problems.push(format!(
                "{name} must be a URL like redis://127.0.0.1:6379 or rediss://host:6380 (redis[s]://[user:password@]host:port[/db])"
            ));
        }
    };
    if replay.redis_timeout_ms == 0 || replay.redis_timeout_ms > 60_000 {
        problems.push("replay.redis_timeout_ms must be between 1 and 60000".into());
    }
    if replay.key_prefix.is_empty() || replay.key_prefix.len() > 256 {
        problems.push("replay.key_prefix must be 1 to 256 bytes".into());
    }
    if replay.redis_timeout_ms >= config.server.request_timeout_ms {
        problems.push("replay.redis_timeout_ms must be less than server.request_timeout_ms".into());
    }
    if backend != Some(ReplayBackend::Redis) {
        if !replay.redis_url.is_empty() || !replay.redis_cluster.is_empty() {
            problems.push(
                "replay.redis_url / replay.redis_cluster are set but replay.backend is not \"redis\""
                    .into(),
            );
        }
        return None;
    }
    let target = match (replay.redis_url.as_str(), replay.redis_cluster.as_slice()) {
        ("", []) => {
            problems.push(
                "replay.backend = \"redis\" needs replay.redis_url (one server) or replay.redis_cluster (a cluster)"
                    .into(),
            );
            return None;
        }
        (url, []) => {
            url_ok(problems, "replay.redis_url", url);
            RedisTarget::Single(url.to_string())
        }
        ("", nodes) => {
            for (index, url) in nodes.iter().enumerate() {
                url_ok(problems, &format!("replay.redis_cluster[{index}]"), url);
            }
            let tls = nodes.iter().filter(|u| u.starts_with("rediss://")).count();
            if tls != 0 && tls != nodes.len() {
                problems.push(
                    "replay.redis_cluster mixes redis:// and rediss://: use one scheme for every node"
                        .into(),
                );
            }
            if replay.key_prefix.contains(['{', '}']) {
                problems.push(
                    "replay.key_prefix must not contain { or } with replay.redis_cluster (a hash tag would put every key in one slot)"
                        .into(),
                );
            }
            RedisTarget::Cluster(nodes.to_vec())
        }
        (_, _) => {
            problems.push(
                "replay.redis_url and replay.redis_cluster are mutually exclusive: set one".into(),
            );
            return None;
        }
    };
    let tls = match &target {
        RedisTarget::Single(url) => url.starts_with("rediss://"),
        RedisTarget::Cluster(urls) => urls.iter().all(|u| u.starts_with("rediss://")),
    };
    if replay.redis_ca_file.is_some() && !tls {
        problems.push("replay.redis_ca_file is set but the Redis URLs are not rediss://".into());
    }
    Some(RedisReplayOptions {
        target,
        timeout: Duration::from_millis(replay.redis_timeout_ms.max(1)),
        key_prefix: replay.key_prefix.clone(),
        max_clock_offset_s: config.policy.clock_skew_s.max(1),
        ca_file: replay.redis_ca_file.as_ref().map(|path| base.join(path)),
    })
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
