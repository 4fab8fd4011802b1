//! Real gateways for tests: in-process (its own thread and runtime, `127.0.0.1:0`, stopped by
//! the test) or as the `idgate` binary (for signals and `kill -9`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::http::{self, Reply};
use super::{AUDIENCE, Scheme};

pub const API_KEY: &str = "bank-api-key";
pub const TELCO_KEY: &str = "telco-api-key";
pub const ADMIN_TOKEN: &str = "admin-token";

/// Settings a test may change.
#[derive(Clone, Debug)]
pub struct Options {
    pub replay_capacity: usize,
    pub max_pending_items: usize,
    pub max_batch_items: usize,
    pub max_body_bytes: usize,
    pub rate_limit_items_per_s: u64,
    pub coalesce_max_items: usize,
    pub verify_threads: usize,
    pub request_timeout_ms: u64,
    /// More lines for the `[replay]` section (e.g. `backend = "redis"` and its settings; see
    /// `common::redis::replay_settings`).
    pub replay_extra: String,
    /// Extra `[revocation]` lines (e.g. the shared feed's settings).
    pub revocation_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            replay_capacity: 100_000,
            max_pending_items: 200_000,
            max_batch_items: 10_000,
            max_body_bytes: 16 << 20,
            rate_limit_items_per_s: 0,
            coalesce_max_items: 512,
            verify_threads: 2,
            request_timeout_ms: 30_000,
            replay_extra: String::new(),
            revocation_extra: String::new(),
        }
    }
}

/// Writes the trust store and a config file into `dir`; returns the config path.
pub fn write_config(dir: &Path, scheme: &Scheme, options: &Options) -> PathBuf {
    std::fs::write(dir.join("trust.jwks.json"), scheme.jwks().to_string()).unwrap();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
max_body_bytes = {max_body}
max_batch_items = {max_batch}
max_pending_items = {max_pending}
verify_threads = {threads}
io_threads = 2
request_timeout_ms = {timeout}
drain_timeout_s = 10
coalesce_max_items = {coalesce}

[trust]
jwks = "trust.jwks.json"

[revocation]
data_dir = "data"
{revocation_extra}

[replay]
capacity = {replay}
{replay_extra}

[admin]
token_sha256 = "{admin}"

[log]
format = "json"

[[tenants]]
name = "bank"
api_key_sha256 = "{bank}"
audiences = ["{AUDIENCE}"]
rate_limit_items_per_s = {rate}

[[tenants]]
name = "telco"
api_key_sha256 = "{telco}"
audiences = ["{AUDIENCE}"]
allow_status_queries = true
"#,
        max_body = options.max_body_bytes,
        max_batch = options.max_batch_items,
        max_pending = options.max_pending_items,
        threads = options.verify_threads,
        timeout = options.request_timeout_ms,
        coalesce = options.coalesce_max_items,
        replay = options.replay_capacity,
        replay_extra = options.replay_extra,
        revocation_extra = options.revocation_extra,
        rate = options.rate_limit_items_per_s,
        admin = hex::encode(Sha256::digest(ADMIN_TOKEN)),
        bank = hex::encode(Sha256::digest(API_KEY)),
        telco = hex::encode(Sha256::digest(TELCO_KEY)),
    );
    let path = dir.join("idgate.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Calls shared by both kinds of test gateway.
pub trait Client {
    fn public(&self) -> SocketAddr;
    fn operator(&self) -> SocketAddr;

    fn verify(&self, presentations: &[String]) -> Reply {
        http::post_json(
            self.public(),
            "/v1/verify",
            API_KEY,
            &serde_json::json!({ "presentations": presentations }),
        )
    }

    fn status(&self, subjects: &[&str], credentials: &[&str]) -> Reply {
        http::post_json(
            self.public(),
            "/v1/status",
            TELCO_KEY,
            &serde_json::json!({"subjects": subjects, "credentials": credentials}),
        )
    }

    fn revoke(&self, jsonl: &str) -> Reply {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        http::request(
            self.operator(),
            "POST",
            "/admin/v1/revocations",
            &[("Authorization", &auth)],
            jsonl.as_bytes(),
        )
        .unwrap()
    }

    fn revocation(&self, kind: &str, id: &str) -> Reply {
        http::get(
            self.operator(),
            &format!("/admin/v1/revocations/{kind}/{id}"),
            Some(ADMIN_TOKEN),
        )
    }

    fn metrics(&self) -> String {
        http::get(self.operator(), "/metrics", None).text()
    }

    /// One sample of a metric line (`name{labels}`), 0 when absent.
    fn metric(&self, series: &str) -> f64 {
        testkit::metrics::parse(&self.metrics())
            .get(series)
            .copied()
            .unwrap_or(0.0)
    }

    /// The outcomes of verifying `presentations`.
    fn outcomes(&self, presentations: &[String]) -> Vec<String> {
        let reply = self.verify(presentations);
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["outcome"].as_str().unwrap().to_string())
            .collect()
    }
}

/// A running gateway known only by its addresses (to drive it from another thread).
#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    pub public: SocketAddr,
    pub operator: SocketAddr,
}

impl Client for Addresses {
    fn public(&self) -> SocketAddr {
        self.public
    }
    fn operator(&self) -> SocketAddr {
        self.operator
    }
}

/// A gateway in this process.
pub struct TestGateway {
    pub public: SocketAddr,
    pub operator: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client for TestGateway {
    fn public(&self) -> SocketAddr {
        self.public
    }
    fn operator(&self) -> SocketAddr {
        self.operator
    }
}

impl TestGateway {
    pub fn start(scheme: &Scheme, options: &Options) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), scheme, options);
        TestGateway::start_with(dir, &config)
    }

    /// Starts on an existing directory and config (a "restart" keeps the data directory).
    pub fn start_with(dir: tempfile::TempDir, config: &Path) -> TestGateway {
        let settings = idgate::config::load(Some(config), Vec::new()).unwrap();
        let (addresses, receive) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (gateway, _) =
                    idgate::gateway::Gateway::open(settings, idgate::api::route::LABELS)
                        .await
                        .unwrap();
                let listeners = idgate::server::Listeners::bind(
                    gateway.settings().listen,
                    gateway.settings().admin_listen,
                )
                .await
                .unwrap();
                addresses
                    .send((
                        listeners.public_addr().unwrap(),
                        listeners.operator_addr().unwrap(),
                    ))
                    .unwrap();
                idgate::server::run(gateway, listeners, async {
                    let _ = stopped.await;
                })
                .await;
            });
        });
        let (public, operator) = receive.recv_timeout(Duration::from_secs(30)).unwrap();
        TestGateway {
            public,
            operator,
            dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops the server (graceful shutdown) and returns its data directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.shutdown();
        let placeholder = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, placeholder)
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The `idgate serve` binary, with its log lines collected.
pub struct BinaryGateway {
    pub public: SocketAddr,
    pub operator: SocketAddr,
    pub child: Child,
    pub logs: mpsc::Receiver<String>,
}

impl Client for BinaryGateway {
    fn public(&self) -> SocketAddr {
        self.public
    }
    fn operator(&self) -> SocketAddr {
        self.operator
    }
}

/// Spawns `idgate serve --config CONFIG` with its stderr log lines arriving on the receiver (a
/// thread reads them). The caller owns the child: kill and reap it.
pub fn spawn_serve(config: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(super::idgate_bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (send, logs) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                return;
            }
        }
    });
    (child, logs)
}

impl BinaryGateway {
    /// Starts `idgate serve --config CONFIG` and waits until it listens.
    // The child is moved into the returned value, whose `Drop` kills and reaps it.
    #[allow(clippy::zombie_processes)]
    pub fn start(config: &Path) -> BinaryGateway {
        let (child, logs) = spawn_serve(config);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = logs
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the gateway did not start listening");
            let log: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if log["message"] == "listening" {
                let public = log["public"].as_str().unwrap().parse().unwrap();
                let operator = log["operator"].as_str().unwrap().parse().unwrap();
                // Wait for readiness too.
                while http::request(operator, "GET", "/readyz", &[], b"")
                    .map(|r| r.status)
                    .ok()
                    != Some(200)
                {
                    assert!(Instant::now() < deadline, "never ready");
                    std::thread::sleep(Duration::from_millis(20));
                }
                return BinaryGateway {
                    public,
                    operator,
                    child,
                    logs,
                };
            }
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (bounded), returning its exit status and remaining logs.
    pub fn wait(mut self, within: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Every line: the reader thread drops its sender when it reaches the end of the
                // exited process's stderr, which disconnects the channel.
                let mut logs = Vec::new();
                loop {
                    match self
                        .logs
                        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    {
                        Ok(line) => logs.push(line),
                        Err(mpsc::RecvTimeoutError::Disconnected) => return (status, logs),
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            panic!("the log reader did not reach the end of stderr in time")
                        }
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not exit in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BinaryGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /readyz` on the operator port: its status code.
pub fn readyz(gateway: &impl Client) -> u16 {
    http::request(gateway.operator(), "GET", "/readyz", &[], b"")
        .unwrap()
        .status
}

/// Polls `condition` every 5 ms until it holds; panics with `what` after `within`.
pub fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
