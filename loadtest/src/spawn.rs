//! `--spawn`: start an `idgate` gateway for the run (release build, fresh data directory, free
//! ports), trusting the corpus issuers, with a tenant and an admin token for the generator.
//!
//! The binary is the real `idgate` next to this one (`target/release/idgate`); when it is missing
//! it is built with `cargo build --release --bin idgate` first, so `cargo run --release -p
//! loadtest -- --spawn` works on a fresh clone. The gateway's log goes to `gateway.log` in the
//! data directory (it still logs one line per request, as in production). With `--replay redis`
//! its `[replay]` section points at the run's own redis-server (`redis.rs`).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// A running gateway owned by this process (killed on drop).
#[derive(Debug)]
pub struct Spawned {
    pub public: SocketAddr,
    pub operator: SocketAddr,
    pub api_key: String,
    pub admin_token: String,
    pub binary: PathBuf,
    /// From process start to the first `/readyz` 200.
    pub ready_after: Duration,
    child: Child,
    /// Owns the gateway's data directory (removed when the run ends).
    dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            eprintln!(
                "the gateway had exited ({status}) before the run ended; its log ends:\n{}",
                self.log_tail(20)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Spawned {
    /// The gateway's process id (for the stall test's `SIGSTOP`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(why)` once the gateway process is gone (exited, or a zombie not yet reaped).
    pub fn gone(&self) -> Option<String> {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) {
            Err(e) => Some(format!("no /proc entry: {e}")),
            Ok(stat) => {
                let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
                (state == "Z" || state == "X").then(|| format!("process state {state}"))
            }
        }
    }

    /// The last `lines` lines of the gateway's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// CPU time (user + system, every thread) the gateway has used so far, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / clock_ticks_per_second())
    }

    /// Context switches (voluntary and not) of every gateway thread so far, from
    /// `/proc/<pid>/task/*/status` (threads that ended are not counted).
    pub fn context_switches(&self) -> Option<u64> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id())).ok()?;
        let mut total = 0;
        for task in tasks.flatten() {
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            total += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
        Some(total)
    }

    /// Resident memory of the gateway process (from `/proc`), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

/// `getconf CLK_TCK` (the unit of `/proc/<pid>/stat` times), read once; 100 if unknown.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t: &f64| t > 0.0)
            .unwrap_or(100.0)
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `idgate` binary: beside this executable, else built.
pub fn idgate_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let sibling = exe.with_file_name("idgate");
    if sibling.is_file() {
        return Ok(sibling);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("no workspace root")?;
    eprintln!("building the gateway: cargo build --release --bin idgate");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace)
        .args(["build", "--release", "--bin", "idgate"])
        .status()
        .context("cannot run cargo to build the gateway")?;
    if !status.success() {
        bail!("building the gateway failed");
    }
    let built = workspace.join("target").join("release").join("idgate");
    if built.is_file() {
        Ok(built)
    } else {
        bail!("{} was not built", built.display())
    }
}

/// Gateway settings a run may set.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    pub verify_threads: usize,
    pub io_threads: usize,
    pub max_presentation_age_s: i64,
    /// Subject revocation entries written as a snapshot before start (0: none).
    pub revocation_list: usize,
    /// `replay.backend = "redis"` on this server (`None`: the memory store).
    pub redis_url: Option<String>,
    /// `revocation.feed = "redis"` on this server (`None`: no shared feed), and its stream
    /// key (`None`: the default).
    pub feed_url: Option<String>,
    pub feed_stream: Option<String>,
}

/// Writes a snapshot of `count` subject entries (IDs `1000000000`, `1000000001`, ...; 90%
/// revoked, 10% suspended) into a gateway data directory.
pub fn preload_revocations(data_dir: &Path, count: usize, now: i64) -> Result<()> {
    use idgate::revocation::{Entry, Kind, Reason, RevocationList, Status, snapshot, store};
    use rayon::prelude::*;
    let started = Instant::now();
    let list = RevocationList::new();
    const CHUNK: usize = 4_000_000;
    for start in (0..count).step_by(CHUNK) {
        let slots: Vec<_> = (start..(start + CHUNK).min(count))
            .into_par_iter()
            .map(|i| {
                Entry {
                    kind: Kind::Subject,
                    id: format!("{:010}", 1_000_000_000 + i),
                    status: if i % 10 == 9 {
                        Status::Suspended
                    } else {
                        Status::Revoked
                    },
                    reason: Some(Reason::ALL[i % Reason::ALL.len()]),
                    before: (i % 3 == 0).then_some(now - 86_400),
                    at: now - 86_400,
                }
                .slot()
            })
            .collect();
        list.apply_slots(&slots);
    }
    let dir = store::revocation_dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    snapshot::write(&dir, &list.table().capture(), 0, now)?;
    eprintln!(
        "preloaded {count} revocation entries in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The config's `[replay]` section: the memory store sized for long runs, or Redis at `url`
/// with the gateway's defaults otherwise (timeout 250 ms, prefix `idgate:replay:`).
fn replay_section(redis_url: Option<&str>) -> String {
    match redis_url {
        None => "[replay]\ncapacity = 50000000\n".into(),
        Some(url) => format!(
            "[replay]\nbackend = \"redis\"\nredis_url = \"{url}\"\nredis_timeout_ms = 250\nkey_prefix = \"{prefix}\"\n",
            prefix = crate::redis::KEY_PREFIX
        ),
    }
}

/// Starts the gateway.
pub fn spawn(jwks: &serde_json::Value, options: &GatewayOptions) -> Result<Spawned> {
    let binary = idgate_binary()?;
    let dir = tempfile::Builder::new()
        .prefix("idgate-loadtest-")
        .tempdir()?;
    let api_key = format!("lt-{}", hex(&rand::random::<[u8; 12]>()));
    let admin_token = format!("admin-{}", hex(&rand::random::<[u8; 12]>()));
    std::fs::write(dir.path().join("trust.jwks.json"), jwks.to_string())?;
    if options.revocation_list > 0 {
        preload_revocations(
            &dir.path().join("data"),
            options.revocation_list,
            idgate::clock::unix_now(),
        )?;
    }
    let config = format!(
        r#"# Written by loadtest --spawn.
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
verify_threads = {verify_threads}
io_threads = {io_threads}
max_connections = 4096

[trust]
jwks = "trust.jwks.json"

[policy]
# Long runs: a presentation minted before the run stays fresh for its whole length.
max_presentation_age_s = {age}

[revocation]
data_dir = "data"
{feed}
{replay}

[admin]
token_sha256 = "{admin}"

[log]
format = "json"

[[tenants]]
name = "loadtest"
api_key_sha256 = "{key}"
audiences = ["{audience}"]
allow_status_queries = true
"#,
        verify_threads = options.verify_threads,
        io_threads = options.io_threads,
        age = options.max_presentation_age_s,
        admin = hex(&Sha256::digest(admin_token.as_bytes())),
        key = hex(&Sha256::digest(api_key.as_bytes())),
        audience = crate::corpus::AUDIENCE,
        replay = replay_section(options.redis_url.as_deref()),
        feed = options
            .feed_url
            .as_ref()
            .map(|url| {
                let stream = options
                    .feed_stream
                    .as_ref()
                    .map(|s| format!("feed_stream = \"{s}\"\n"))
                    .unwrap_or_default();
                format!("feed = \"redis\"\nredis_url = \"{url}\"\n{stream}")
            })
            .unwrap_or_default(),
    );
    let config_path = dir.path().join("idgate.toml");
    std::fs::write(&config_path, config)?;
    let started = Instant::now();
    let mut child = Command::new(&binary)
        .args(["serve", "--config"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut log = std::fs::File::create(dir.path().join("gateway.log"))?;
    let (addresses, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut announced = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !announced && line.contains("\"listening\"") {
                let parsed: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                let public = parsed["public"]
                    .as_str()
                    .and_then(|a| a.parse::<SocketAddr>().ok());
                let operator = parsed["operator"]
                    .as_str()
                    .and_then(|a| a.parse::<SocketAddr>().ok());
                if let (Some(public), Some(operator)) = (public, operator) {
                    let _ = addresses.send((public, operator));
                    announced = true;
                }
            }
            let _ = writeln!(log, "{line}");
        }
    });
    let (public, operator) = receive
        .recv_timeout(Duration::from_secs(120))
        .context("the gateway did not start listening")?;
    let spawned = Spawned {
        public,
        operator,
        api_key,
        admin_token,
        binary,
        child,
        dir,
        ready_after: Duration::ZERO,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while crate::SETUP.get(operator, "/readyz").ok().map(|r| r.status) != Some(200) {
        if Instant::now() > deadline {
            bail!("the gateway did not become ready");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut spawned = spawned;
    spawned.ready_after = started.elapsed();
    Ok(spawned)
}
