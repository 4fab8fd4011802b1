//! `wrk`, the reference load generator of SPEC §11 ("`wrk -c64`"), driven with the scenario's
//! own requests: every connection sends a different prebuilt body, in order, each body once (a
//! wrap-around — more requests than bodies — is counted and reported, since a presentation sent
//! twice is a replay).
//!
//! Also runs the same requests against the comparison services of `compare/node` and
//! `compare/go` (SPEC §11's "Node fastify + jose" and "a Go net/http + crypto/ed25519
//! service"), so the figures of what one would deploy instead come from this machine and this
//! run.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// What one wrk run measured.
#[derive(Clone, Debug, Default)]
pub struct WrkRun {
    pub requests: u64,
    pub requests_per_s: f64,
    /// Responses outside 2xx/3xx.
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors.
    pub socket_errors: u64,
    /// Times a wrk thread ran out of bodies and started over.
    pub wrapped: u64,
}

const SCRIPT: &str = r#"-- Written by loadtest: each thread sends its share of the bodies file, one body per line.
local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end
function init(args)
  local n = tonumber(os.getenv("IDGATE_WRK_THREADS"))
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. os.getenv("IDGATE_WRK_TOKEN"),
  }
  prepared = {}
  local i = 0
  for line in io.lines(os.getenv("IDGATE_WRK_BODIES")) do
    if i % n == id then
      prepared[#prepared + 1] = wrk.format("POST", nil, headers, line)
    end
    i = i + 1
  end
  position = 0
  wrapped = 0
end
function request()
  position = position + 1
  if position > #prepared then
    position = 1
    wrapped = wrapped + 1
  end
  return prepared[position]
end
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("wrapped")
  end
  io.write(string.format("wrapped: %d\n", total))
end
"#;

/// One body for every request: wrk's static request (no Lua call per request), as stateless
/// scenarios need.
const STATIC_SCRIPT: &str = r#"-- Written by loadtest: one body for every request.
local file = io.open(os.getenv("IDGATE_WRK_BODIES"), "rb")
local body = file:read("*l")
file:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("IDGATE_WRK_TOKEN")
function done(summary, latency, requests)
  io.write("wrapped: 0\n")
end
"#;

/// Bodies and script for wrk, in a temporary directory that lives as long as this value. A
/// single body is sent as wrk's static request; several go through a per-request Lua call.
pub struct Workload {
    dir: tempfile::TempDir,
}

impl Workload {
    /// Writes `bodies` (JSON without raw newlines, one per line) and the script.
    pub fn new(bodies: &[Bytes]) -> Result<Workload, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        let write = || -> std::io::Result<()> {
            let mut file =
                std::io::BufWriter::new(std::fs::File::create(dir.path().join("bodies.jsonl"))?);
            for body in bodies {
                if body.contains(&b'\n') {
                    return Err(std::io::Error::other("a body holds a newline"));
                }
                file.write_all(body)?;
                file.write_all(b"\n")?;
            }
            file.flush()?;
            let script = if bodies.len() == 1 {
                STATIC_SCRIPT
            } else {
                SCRIPT
            };
            std::fs::write(dir.path().join("post.lua"), script)
        };
        write().map_err(|e| format!("cannot write the wrk workload: {e}"))?;
        Ok(Workload { dir })
    }

    /// Runs wrk against `url` (closed loop: `connections` connections, `seconds` long).
    pub fn run(
        &self,
        url: &str,
        token: &str,
        connections: usize,
        seconds: u64,
    ) -> Result<WrkRun, String> {
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(connections.max(1));
        let output = Command::new("wrk")
            .args([
                &format!("-t{threads}"),
                &format!("-c{connections}"),
                &format!("-d{seconds}s"),
                "-s",
            ])
            .arg(self.dir.path().join("post.lua"))
            .arg(url)
            .env("IDGATE_WRK_BODIES", self.dir.path().join("bodies.jsonl"))
            .env("IDGATE_WRK_THREADS", threads.to_string())
            .env("IDGATE_WRK_TOKEN", token)
            .output()
            .map_err(|_| "wrk is not installed (apt-get install wrk)".to_string())?;
        let text = String::from_utf8_lossy(&output.stdout);
        parse(&text).ok_or_else(|| {
            format!(
                "wrk failed: {} {}",
                text.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })
    }
}

/// Reads wrk's summary (and the script's `wrapped:` line).
fn parse(text: &str) -> Option<WrkRun> {
    let mut run = WrkRun::default();
    let mut rate = None;
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("Requests/sec:") {
            rate = value.trim().parse().ok();
        } else if let Some(value) = line.strip_prefix("Non-2xx or 3xx responses:") {
            run.non_2xx = value.trim().parse().ok()?;
        } else if let Some(value) = line.strip_prefix("wrapped:") {
            run.wrapped = value.trim().parse().ok()?;
        } else if let Some(value) = line.strip_prefix("Socket errors:") {
            run.socket_errors = value
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        } else if let Some((count, _)) = line.split_once(" requests in ") {
            run.requests = count.trim().parse().ok()?;
        }
    }
    run.requests_per_s = rate?;
    Some(run)
}

/// A comparison service: what SPEC §11 says one would deploy instead of idgate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `compare/node`: Node fastify + jose, one cluster worker per core (`npm ci` there first).
    Node,
    /// `compare/go`: a standard-library Go net/http + crypto/ed25519 service (built here with
    /// `go build`, offline).
    Go,
}

impl Kind {
    /// The name checks and printed figures use.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Node => "node fastify+jose",
            Kind::Go => "go net/http+crypto/ed25519",
        }
    }

    /// The short name in ratios (`idgate / node`).
    pub fn short(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Go => "go",
        }
    }

    /// What the service needs, for errors when it does not start.
    fn needs(self) -> &'static str {
        match self {
            Kind::Node => "Node.js, and `npm ci` in its directory",
            Kind::Go => "Go: apt-get install golang-go",
        }
    }
}

/// A comparison service, running until dropped.
pub struct Comparison {
    child: Child,
    pub addr: SocketAddr,
    _jwks: tempfile::NamedTempFile,
    /// The Go service's build directory.
    _build: Option<tempfile::TempDir>,
}

impl Comparison {
    /// Starts the service in `dir` on a free port, trusting `jwks`, accepting `api_key`, using
    /// every core; waits up to 20 s for `/livez`.
    pub fn start(
        kind: Kind,
        dir: &Path,
        jwks: &serde_json::Value,
        api_key: &str,
    ) -> Result<Comparison, String> {
        let mut file =
            tempfile::NamedTempFile::new().map_err(|e| format!("no temporary file: {e}"))?;
        file.write_all(jwks.to_string().as_bytes())
            .map_err(|e| format!("cannot write the JWKS: {e}"))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let (mut command, build) = match kind {
            Kind::Node => {
                let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
                let mut command = Command::new("node");
                command
                    .arg(dir.join("server.js"))
                    .env("WORKERS", workers.to_string());
                (command, None)
            }
            Kind::Go => {
                let build = build_go(dir)?;
                let command = Command::new(build.path().join("idgate-compare-go"));
                (command, Some(build))
            }
        };
        command
            .env("PORT", port.to_string())
            .env("JWKS", file.path())
            .env("API_KEY", api_key)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = command.spawn().map_err(|e| {
            format!(
                "cannot start the {} service (needs {}): {e}",
                kind.label(),
                kind.needs()
            )
        })?;
        let service = Comparison {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _jwks: file,
            _build: build,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if crate::SETUP
                .get(service.addr, "/livez")
                .is_ok_and(|r| r.status == 200)
            {
                return Ok(service);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "the {} service in {} did not answer /livez within 20 s (needs {})",
            kind.label(),
            dir.display(),
            kind.needs()
        ))
    }

    /// Checks that the service verifies: `body` (a `/v1/verify` request of valid presentations)
    /// must be accepted, and the same body with one holder signature altered refused (a
    /// service answering 200 to everything would otherwise pass the load run).
    pub fn check_verifies(&self, body: &[u8], api_key: &str) -> Result<(), String> {
        let auth = format!("Bearer {api_key}");
        let post = |body: &[u8]| {
            crate::SETUP
                .request(
                    self.addr,
                    "POST",
                    "/v1/verify",
                    &[
                        ("Authorization", &auth),
                        ("Content-Type", "application/json"),
                    ],
                    body,
                )
                .map(|reply| reply.status)
                .map_err(|_| "the service did not answer")
        };
        let forged = forge(body).ok_or("no presentation to forge in the request")?;
        match (post(body)?, post(&forged)?) {
            (200, 422) => Ok(()),
            (honest, forged) => Err(format!(
                "expected 200 for valid presentations and 422 for a forged one, got {honest} and {forged}"
            )),
        }
    }
}

/// `body` with one signature character of its first presentation's KB-JWT changed.
fn forge(body: &[u8]) -> Option<Vec<u8>> {
    let mut request: serde_json::Value = serde_json::from_slice(body).ok()?;
    let first = request.get_mut("presentations")?.get_mut(0)?;
    let mut text = first.as_str()?.to_owned();
    // Well inside the last segment (an 86-character Ed25519 signature), away from the padding
    // bits of its last character.
    let (_, signature) = text.rsplit_once('.')?;
    if signature.len() != 86 {
        return None;
    }
    let at = text.len() - 10;
    let replacement = if text.as_bytes()[at] == b'A' {
        "B"
    } else {
        "A"
    };
    text.replace_range(at..=at, replacement);
    *first = serde_json::Value::String(text);
    serde_json::to_vec(&request).ok()
}

/// Builds `compare/go` into a temporary directory: standard library only, no network.
fn build_go(dir: &Path) -> Result<tempfile::TempDir, String> {
    let build = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
    let output = Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(build.path().join("idgate-compare-go"))
        .arg(".")
        .current_dir(dir)
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .output()
        .map_err(|e| format!("cannot run go (needs {}): {e}", Kind::Go.needs()))?;
    if !output.status.success() {
        return Err(format!(
            "go build in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(build)
}

impl Drop for Comparison {
    fn drop(&mut self) {
        // Node's cluster workers exit when their primary's IPC channel closes (server.js).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_summary_is_read() {
        let text = "Running 10s test @ http://127.0.0.1:1/v1/verify\n  2 threads and 64 connections\n\
                    148873 requests in 10.01s, 52.11MB read\n  Socket errors: connect 0, read 2, write 0, timeout 3\n\
                    Non-2xx or 3xx responses: 7\nRequests/sec:  14872.13\nTransfer/sec:      5.21MB\nwrapped: 1\n";
        let run = parse(text).expect("parsed");
        assert_eq!(run.requests, 148_873);
        assert!((run.requests_per_s - 14_872.13).abs() < 1e-6);
        assert_eq!(run.non_2xx, 7);
        assert_eq!(run.socket_errors, 5);
        assert_eq!(run.wrapped, 1);
        assert!(parse("wrk: connection refused").is_none());
    }

    #[test]
    fn a_forged_request_differs_in_one_signature_character() {
        let signature = "x".repeat(86);
        let body =
            serde_json::json!({"presentations": [format!("h.p.s~d~k.p.{signature}"), "other"]});
        let body = serde_json::to_vec(&body).unwrap();
        let forged: serde_json::Value = serde_json::from_slice(&forge(&body).unwrap()).unwrap();
        let text = forged["presentations"][0].as_str().unwrap();
        let (head, tail) = text.rsplit_once('.').unwrap();
        assert_eq!(head, "h.p.s~d~k.p");
        assert_eq!(tail.len(), 86);
        assert_eq!(tail.chars().filter(|&c| c != 'x').count(), 1);
        assert_eq!(tail.as_bytes()[76], b'A');
        assert_eq!(forged["presentations"][1], "other");
        assert!(forge(b"{\"presentations\": []}").is_none());
        assert!(forge(b"{\"presentations\": [\"h.p.short\"]}").is_none());
    }
}
