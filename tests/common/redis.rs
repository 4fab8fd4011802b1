//! Real `redis-server` processes for the replay-store tests: each on its own free port (never
//! 6379), bound to 127.0.0.1, without persistence unless asked (`--save "" --appendonly no`),
//! killed when dropped; a 3-primary Redis Cluster built with `redis-cli --cluster create`.
//!
//! Each server runs under a small `sh` guardian whose stdin is a pipe from this process: when
//! the test process dies in any way (even `kill -9` by the test runner), the pipe closes and the
//! guardian kills its server, so no `redis-server` outlives its test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `redis-server` and `redis-cli` can run; if not, [`super::cannot_run`] (a failure
/// with `CI=true`, else a skip with a notice) and `false`.
pub fn available() -> bool {
    for tool in ["redis-server", "redis-cli"] {
        let runs = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !runs {
            super::cannot_run(&format!(
                "{tool} is not on PATH (Debian: apt-get install redis-server; scripts/test installs it)"
            ));
            return false;
        }
    }
    true
}

/// A port nothing listens on now (`bus`: port + 10000 free too, for a cluster node).
pub fn free_port(bus: bool) -> u16 {
    for _ in 0..200 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        if port == 6379 {
            continue;
        }
        if bus {
            let Some(bus_port) = port.checked_add(10_000) else {
                continue;
            };
            if TcpListener::bind((Ipv4Addr::LOCALHOST, bus_port)).is_err() {
                continue;
            }
        }
        return port;
    }
    panic!("no free port found");
}

/// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS…` (bounded: 15 s), returning its stdout; panics
/// if it fails or replies with an error.
pub fn cli(port: u16, args: &[&str]) -> String {
    let (ok, stdout, stderr) = cli_raw(port, args, Duration::from_secs(15));
    let first = stdout.lines().next().unwrap_or("");
    assert!(
        ok && !first.starts_with("ERR") && !first.starts_with("(error)"),
        "redis-cli -p {port} {args:?} failed: {stdout}{stderr}"
    );
    stdout
}

/// `redis-cli` without judging the answer: (exit status ok, stdout, stderr). `None`-like
/// empty output when it had to be killed after `within`.
pub fn cli_raw(port: u16, args: &[&str], within: Duration) -> (bool, String, String) {
    let port = port.to_string();
    let mut command = Command::new("redis-cli");
    command
        .args(["-h", "127.0.0.1", "-p", &port])
        .args(args)
        .stdin(Stdio::null());
    run_bounded(command, within)
}

/// Runs a command to completion within `within` (killed after), returning (success, stdout,
/// stderr).
fn run_bounded(mut command: Command, within: Duration) -> (bool, String, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes on threads so a chatty command cannot block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    match status {
        Some(status) => (status.success(), stdout, stderr),
        None => (false, stdout, format!("{stderr}(killed after {within:?})")),
    }
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// One `redis-server` process (restartable on the same port).
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    /// Arguments after the common ones (`--port`, `--bind`, …).
    extra: Vec<String>,
    guardian: Option<Child>,
    pid: u32,
}

impl RedisServer {
    /// A server without persistence on a free port.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A server without persistence with extra `redis-server` arguments (e.g.
    /// `["--maxmemory-policy", "allkeys-lru"]`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_on(free_port(false), extra)
    }

    /// A server on `port` (a free port chosen by the caller).
    pub fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let cluster = extra.iter().any(|a| a == "--cluster-enabled");
        let mut last = String::new();
        // A port found free can be taken by another test before the server binds it: then try
        // another one (a cluster node needs its bus port too).
        let mut port = port;
        for _ in 0..5 {
            let mut server = RedisServer {
                port,
                dir: tempfile::tempdir().unwrap(),
                extra: extra.clone(),
                guardian: None,
                pid: 0,
            };
            match server.launch() {
                Ok(()) => return server,
                Err(log) => last = log,
            }
            port = free_port(cluster);
        }
        panic!("redis-server did not start: {last}");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The server's own directory (cluster config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Starts the process and waits until it answers `PING` (bounded). `Err(log tail)` if it
    /// exited (e.g. the port was taken).
    fn launch(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let dir = self.dir.path().to_str().unwrap().to_string();
        let mut args: Vec<String> = [
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
            "--dir",
            &dir,
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.extra.iter().cloned());
        // The guardian: starts the server in the background (its stdin is then /dev/null),
        // prints its pid, and kills it when its own stdin (our pipe) reaches end of file.
        let script = r#"log="$1"; shift
redis-server "$@" >>"$log" 2>&1 &
pid=$!
echo "$pid"
read _ignored
kill -9 "$pid" 2>/dev/null
exit 0"#;
        let mut guardian = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(self.log_path())
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(guardian.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        self.pid = line.trim().parse().unwrap();
        self.guardian = Some(guardian);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, stdout, _) = cli_raw(self.port, &["PING"], Duration::from_secs(2));
            if stdout.trim() == "PONG" {
                return Ok(());
            }
            if !alive(self.pid) || Instant::now() > deadline {
                let log = self.log_tail();
                self.reap();
                return Err(format!("port {}: {log}", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (if running) and its guardian, and waits until the port refuses
    /// connections.
    fn reap(&mut self) {
        if self.pid != 0 && alive(self.pid) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
        if let Some(mut guardian) = self.guardian.take() {
            drop(guardian.stdin.take());
            let _ = guardian.wait();
        }
    }

    /// `redis-cli` on this server (see [`cli`]).
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// `SIGKILL`: the server dies at once (nothing saved); returns once the port refuses
    /// connections.
    pub fn kill(&mut self) {
        signal(self.pid, "KILL");
        self.reap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
            assert!(Instant::now() < deadline, "port {} still open", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A new, empty server on the same port (after [`RedisServer::kill`]).
    pub fn restart(&mut self) {
        if let Err(log) = self.launch() {
            panic!("redis-server did not restart: {log}");
        }
    }

    /// `SIGSTOP`: the server stops answering (connections stay open, the kernel still accepts
    /// new ones).
    pub fn pause(&self) {
        signal(self.pid, "STOP");
    }

    /// `SIGCONT` after [`RedisServer::pause`].
    pub fn resume(&self) {
        signal(self.pid, "CONT");
    }

    /// Keys in the current database.
    pub fn dbsize(&self) -> u64 {
        self.cli(&["DBSIZE"]).trim().parse().unwrap()
    }

    /// `PTTL` of every key (ms; -1: no expiry), by a script (the keys are binary).
    pub fn pttls(&self) -> Vec<i64> {
        let script = "local t = {} for _, k in ipairs(redis.call('KEYS', '*')) do \
                      t[#t + 1] = redis.call('PTTL', k) end return t";
        self.cli(&["EVAL", script, "0"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().parse().unwrap())
            .collect()
    }

    /// `PEXPIRETIME` of every key (unix ms; -1: no expiry), by a script (the keys are binary).
    pub fn pexpiretimes(&self) -> Vec<i64> {
        let script = "local t = {} for _, k in ipairs(redis.call('KEYS', '*')) do \
                      t[#t + 1] = redis.call('PEXPIRETIME', k) end return t";
        self.cli(&["EVAL", script, "0"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().parse().unwrap())
            .collect()
    }

    /// One field of `INFO` (e.g. `used_memory`).
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let info = self.cli(&["INFO", section]);
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_string())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A stopped process dies of SIGKILL too.
        self.reap();
    }
}

/// A Redis Cluster of three primaries (no replicas) on 127.0.0.1.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with `redis-cli --cluster create`, and
    /// waits until every node reports `cluster_state:ok` (bounded).
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(&[])
    }

    /// [`RedisCluster::start`] with more `redis-server` arguments for every node (e.g.
    /// `["--cluster-require-full-coverage", "no"]`).
    pub fn start_with(extra: &[&str]) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let port = free_port(true);
                // The config file is the node's own (written into its directory, `--dir`).
                let config_file = format!("nodes-{port}.conf");
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &config_file,
                    "--cluster-node-timeout",
                    "5000",
                ];
                args.extend_from_slice(extra);
                RedisServer::start_on(port, &args)
            })
            .collect();
        let mut args = vec!["--cluster".to_string(), "create".to_string()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        let mut command = Command::new("redis-cli");
        command.args(&args).stdin(Stdio::null());
        let (ok, stdout, stderr) = run_bounded(command, Duration::from_secs(60));
        assert!(
            ok && stdout.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed: {stdout}{stderr}"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            loop {
                let info = node.cli(&["CLUSTER", "INFO"]);
                if info.lines().any(|l| l.trim() == "cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} not ok: {info}",
                    node.port
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// `redis://…` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

/// `[replay]` lines for one server (for `Options::replay_extra`).
pub fn replay_settings(url: &str, timeout_ms: u64) -> String {
    format!("backend = \"redis\"\nredis_url = \"{url}\"\nredis_timeout_ms = {timeout_ms}\n")
}

/// `[replay]` lines for a cluster known by `seeds`.
pub fn cluster_settings(seeds: &[String], timeout_ms: u64) -> String {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "backend = \"redis\"\nredis_cluster = [{}]\nredis_timeout_ms = {timeout_ms}\n",
        seeds.join(", ")
    )
}

impl RedisCluster {
    /// The node that owns each slot, by index in [`RedisCluster::nodes`] (`None`: unowned or
    /// not known to node 0), read from node 0's `CLUSTER NODES`.
    pub fn slot_owners(&self) -> Vec<Option<usize>> {
        let mut owners = vec![None; 16384];
        for line in self.nodes[0].cli(&["CLUSTER", "NODES"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(address) = fields.get(1) else {
                continue;
            };
            let port: u16 = address
                .split('@')
                .next()
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| p.parse().ok())
                .unwrap();
            let Some(index) = self.nodes.iter().position(|n| n.port == port) else {
                continue;
            };
            for range in fields.iter().skip(8) {
                // `[slot->-id]` / `[slot-<-id]`: a migration in progress, not an owner.
                if range.starts_with('[') {
                    continue;
                }
                let (start, end) = match range.split_once('-') {
                    Some((s, e)) => (s.parse::<usize>().unwrap(), e.parse::<usize>().unwrap()),
                    None => {
                        let slot = range.parse::<usize>().unwrap();
                        (slot, slot)
                    }
                };
                for owner in &mut owners[start..=end] {
                    *owner = Some(index);
                }
            }
        }
        owners
    }

    /// `CLUSTER MYID` of node `index`.
    pub fn node_id(&self, index: usize) -> String {
        self.nodes[index]
            .cli(&["CLUSTER", "MYID"])
            .trim()
            .to_string()
    }
}

impl RedisServer {
    /// `total_connections_received` of `INFO stats`: every connection the server accepted,
    /// this `redis-cli` one included (a stopped server accepts the ones queued in its backlog
    /// once resumed).
    pub fn connections_received(&self) -> u64 {
        self.info_field("stats", "total_connections_received")
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// The most connection attempts one node's supervisor (src/replay/redis/node.rs) can start
/// within `window` of a server that stopped answering: the first fault is seen one timeout in,
/// each attempt then lasts the timeout (the server never answers the handshake), and attempt
/// k + 1 comes at least backoff(k) after attempt k failed, backoff(k) being drawn in [½, 1] ×
/// min(50 ms × 2^(k−1), 2 s) (whether or not the connection that served before lived 5 s, no
/// attempt comes sooner than this).
pub fn supervisor_attempts_within(window: Duration, timeout: Duration) -> u64 {
    let mut at = timeout;
    let mut attempts = 0;
    let mut failures = 0u32;
    while at <= window {
        attempts += 1;
        failures += 1;
        let backoff = Duration::from_millis(50)
            .saturating_mul(1 << (failures - 1).min(16))
            .min(Duration::from_secs(2));
        at += timeout + backoff / 2;
    }
    attempts
}

/// The most topology reads (`CLUSTER SLOTS`, src/replay/redis/cluster.rs) a gateway can make
/// within `window`: at most one per 500 ms, plus one under way at the start.
pub fn topology_reads_within(window: Duration) -> u64 {
    (window.as_millis() / 500) as u64 + 1
}
