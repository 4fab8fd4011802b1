//! Configuration (SPEC §9): a TOML file, `IDGATE_<SECTION>_<KEY>` environment overrides, parsed
//! once into typed values.
//!
//! **Invariants:** unknown keys are refused (a typo never silently falls back to a default);
//! every bad value is reported, all at once, before anything starts; secrets appear only as
//! SHA-256 hashes; relative paths are resolved against the config file's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The whole configuration, as written in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub trust: TrustConfig,
    pub policy: PolicyConfig,
    pub revocation: RevocationConfig,
    pub replay: ReplayConfig,
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
            clock_skew_s: 5,
            max_presentation_age_s: 60,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    pub data_dir: PathBuf,
    /// `none` (this instance's durable log) or `redis` (not supported by this build).
    pub feed: String,
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
            feed: "none".into(),
            max_staleness_s: 300,
            snapshot_log_bytes: 256 << 20,
            max_admin_body_bytes: 1 << 30,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayConfig {
    /// `memory`, or `redis` (not supported by this build).
    pub backend: String,
    pub capacity: usize,
    pub redis_url: String,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            backend: "memory".into(),
            capacity: 10_000_000,
            redis_url: "redis://127.0.0.1:6379".into(),
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
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
    /// `json` (one object per line) or `text`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "json".into(),
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
    pub admin_token_sha256: Option<[u8; 32]>,
    pub log_level: String,
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
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
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
    if config.revocation.feed != "none" {
        problems.push(format!(
            "revocation.feed = {:?}: only \"none\" is supported by this build",
            config.revocation.feed
        ));
    }
    if config.replay.backend != "memory" {
        problems.push(format!(
            "replay.backend = {:?}: only \"memory\" is supported by this build",
            config.replay.backend
        ));
    }
    if !["error", "warn", "info", "debug", "trace"].contains(&config.log.level.as_str()) {
        problems.push(format!(
            "log.level = {:?} must be one of error, warn, info, debug, trace",
            config.log.level
        ));
    }
    if !["json", "text"].contains(&config.log.format.as_str()) {
        problems.push(format!(
            "log.format = {:?} must be json or text",
            config.log.format
        ));
    }
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
        admin_token_sha256,
        log_level: config.log.level.clone(),
        log_json: config.log.format == "json",
        tenants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    fn check_text(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idgate.toml");
        std::fs::write(&path, text).unwrap();
        load(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn tenant() -> String {
        format!(
            "[[tenants]]\nname = \"bank-a\"\napi_key_sha256 = \"{KEY}\"\naudiences = [\"urn:idgate:any\"]\n"
        )
    }

    #[test]
    fn the_spec_example_loads_with_its_defaults() {
        let settings = check_text(&tenant(), &[]).unwrap();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.max_batch_items, 10_000);
        assert!(settings.tenants[0].require_key_binding);
        assert!(!settings.tenants[0].allow_status_queries);
        assert!(
            settings.trust_jwks.ends_with("trust.jwks.json") && settings.trust_jwks.is_absolute()
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error =
            check_text(&format!("[server]\nlisten_port = 1\n{}", tenant()), &[]).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `listen_port`"),
            "{error}"
        );
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let text = format!(
            "[server]\nlisten = \"nowhere\"\nmax_body_bytes = 0\n[policy]\nclock_skew_s = -1\n[log]\nformat = \"xml\"\n[admin]\ntoken_sha256 = \"zz\"\n{}[[tenants]]\nname = \"Bad Name\"\napi_key_sha256 = \"short\"\naudiences = []\n",
            tenant()
        );
        let problems = check_text(&text, &[]).unwrap_err().problems;
        for expected in [
            "server.listen",
            "max_body_bytes",
            "clock_skew_s",
            "log.format",
            "admin.token_sha256",
            "name must be",
            "api_key_sha256 must be",
            "audiences must",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "missing {expected}: {problems:#?}"
            );
        }
    }

    #[test]
    fn environment_overrides_win_and_are_checked_too() {
        let settings = check_text(
            &tenant(),
            &[
                ("IDGATE_SERVER_LISTEN", "127.0.0.1:0"),
                ("IDGATE_SERVER_MAX_BATCH_ITEMS", "50"),
                ("IDGATE_VECTORS_DIR", "/x"),
            ],
        )
        .unwrap();
        assert_eq!(settings.listen.port(), 0);
        assert_eq!(settings.max_batch_items, 50);
        let error = check_text(&tenant(), &[("IDGATE_SERVER_LISTN", "x")]).unwrap_err();
        assert!(error.to_string().contains("listn"), "{error}");
    }
}
