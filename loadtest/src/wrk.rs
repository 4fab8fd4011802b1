//! `wrk`, the reference load generator of SPEC §11 ("`wrk -c64`"), driven with the scenario's
//! own requests: every connection sends a different prebuilt body, in order, each body once (a
//! wrap-around — more requests than bodies — is counted and reported, since a presentation sent
//! twice is a replay).
//!
//! Also runs the same requests against the comparison service of `compare/node` (SPEC §11's
//! "Node fastify + jose"), so the figure of what one would deploy instead comes from this
//! machine and this run.

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

/// The comparison service of `compare/node`, running until dropped.
pub struct NodeService {
    child: Child,
    pub addr: SocketAddr,
    _jwks: tempfile::NamedTempFile,
}

impl NodeService {
    /// Starts `node DIR/server.js` (its `npm ci` done) with one worker per core, on a free
    /// port, trusting `jwks`, accepting `api_key`; waits up to 20 s for `/livez`.
    pub fn start(
        dir: &Path,
        jwks: &serde_json::Value,
        api_key: &str,
    ) -> Result<NodeService, String> {
        let mut file =
            tempfile::NamedTempFile::new().map_err(|e| format!("no temporary file: {e}"))?;
        file.write_all(jwks.to_string().as_bytes())
            .map_err(|e| format!("cannot write the JWKS: {e}"))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut command = Command::new("node");
        command
            .arg(dir.join("server.js"))
            .env("PORT", port.to_string())
            .env("JWKS", file.path())
            .env("API_KEY", api_key)
            .env("WORKERS", workers.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start node (is Node.js installed?): {e}"))?;
        let service = NodeService {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _jwks: file,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Some((200, _)) = crate::http::get(service.addr, "/livez", None) {
                return Ok(service);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "the node service in {} did not answer /livez within 20 s (run `npm ci` there)",
            dir.display()
        ))
    }
}

impl Drop for NodeService {
    fn drop(&mut self) {
        // The cluster's workers exit when their primary's IPC channel closes (server.js).
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
}
