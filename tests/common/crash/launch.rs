//! Starting `idgate serve` on a crash test's data directory and stopping it: a start either
//! becomes ready or exits (a refused start is a result the tests look at, with its stderr).

use std::path::Path;
use std::process::ExitStatus;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::super::gateway::{BinaryGateway, spawn_serve};
use super::super::http;

/// The outcome of starting `idgate serve`.
pub enum Launch {
    /// Ready; with the stderr lines written until then.
    Up(BinaryGateway, Vec<String>),
    Exited {
        status: ExitStatus,
        stderr: Vec<String>,
    },
}

/// Starts `idgate serve --config CONFIG` and waits until it is ready or has exited, keeping its
/// stderr for the failure message either way.
// The child is moved into the returned value (whose `Drop` kills and reaps it) or reaped here.
#[allow(clippy::zombie_processes)]
pub fn launch(config: &Path, within: Duration) -> Launch {
    let (mut child, logs) = spawn_serve(config);
    let deadline = Instant::now() + within;
    let mut seen: Vec<String> = Vec::new();
    let mut listening: Option<(std::net::SocketAddr, std::net::SocketAddr)> = None;
    loop {
        match logs.recv_timeout(Duration::from_millis(10)) {
            Ok(line) => {
                let log: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if log["message"] == "listening" {
                    listening = Some((
                        log["public"].as_str().unwrap().parse().unwrap(),
                        log["operator"].as_str().unwrap().parse().unwrap(),
                    ));
                }
                seen.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(10))
            }
        }
        if let Some((public, operator)) = listening {
            let ready = http::request(operator, "GET", "/readyz", &[], b"")
                .is_ok_and(|reply| reply.status == 200);
            if ready {
                let gateway = BinaryGateway {
                    public,
                    operator,
                    child,
                    logs,
                };
                return Launch::Up(gateway, seen);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            let until = Instant::now() + Duration::from_secs(2);
            while let Ok(line) = logs.recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                seen.push(line);
            }
            return Launch::Exited {
                status,
                stderr: seen,
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the gateway neither became ready nor exited within {within:?}; stderr:\n{}",
                seen.join("\n")
            );
        }
    }
}

/// Starts the gateway; a refusal is a failure, reported with `context` and the process' stderr.
pub fn up(config: &Path, context: &str) -> BinaryGateway {
    match launch(config, Duration::from_secs(30)) {
        Launch::Up(gateway, _) => gateway,
        Launch::Exited { status, stderr } => panic!(
            "{context}: the gateway did not start ({status}); stderr:\n{}",
            stderr.join("\n")
        ),
    }
}

/// SIGTERM, and a clean exit (0) within 20 s.
pub fn stop_cleanly(gateway: BinaryGateway, context: &str) {
    gateway.signal("TERM");
    let (status, logs) = gateway.wait(Duration::from_secs(20));
    assert!(
        status.success(),
        "{context}: SIGTERM ended the gateway with {status}; last log lines:\n{}",
        tail(&logs, 20)
    );
}

/// The last `n` lines, for a failure message.
pub fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}
