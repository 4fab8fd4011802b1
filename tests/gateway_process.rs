//! The gateway as the `idgate serve` binary, where the process is the subject: `kill -9`,
//! SIGTERM under load (the drain), SIGHUP (trust reload), and the no-argument demo. The rest of
//! the HTTP behaviour is tested in process (`tests/gateway.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Scheme;
use common::gateway::{API_KEY, BinaryGateway, Client, Options, write_config};
use common::http::{self, request};
use serde_json::{Value, json};

/// Requests held open across SIGTERM, and the presentations in each.
const HELD_REQUESTS: u64 = 3;
const HELD_ITEMS: u64 = 16;

/// A `POST /v1/verify` stopped halfway: its head is sent with `Expect: 100-continue`, and
/// [`HeldRequest::open`] returns once the gateway has answered `100 Continue`, which hyper sends
/// only when a handler starts reading the body. From then until [`HeldRequest::finish`] sends
/// the body, the request is provably in progress at the gateway.
struct HeldRequest {
    stream: TcpStream,
    body: Vec<u8>,
}

impl HeldRequest {
    fn open(public: SocketAddr, id: &str, presentations: &[String]) -> HeldRequest {
        let body = json!({ "presentations": presentations })
            .to_string()
            .into_bytes();
        let mut stream = TcpStream::connect(public).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let head = format!(
            "POST /v1/verify HTTP/1.1\r\nHost: {public}\r\nAuthorization: Bearer {API_KEY}\r\n\
             x-request-id: {id}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Expect: 100-continue\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        let mut interim = Vec::new();
        let mut byte = [0u8; 1];
        while !interim.ends_with(b"\r\n\r\n") {
            let read = stream.read(&mut byte).unwrap();
            assert_eq!(
                read, 1,
                "held request {id}: the connection closed before 100 Continue"
            );
            interim.push(byte[0]);
        }
        let interim = String::from_utf8_lossy(&interim);
        assert!(
            interim.starts_with("HTTP/1.1 100"),
            "held request {id}: expected 100 Continue, got {interim}"
        );
        HeldRequest { stream, body }
    }

    /// Sends the body; the status and the JSON answer (the gateway closes the connection after
    /// it, as asked).
    fn finish(mut self) -> (u16, Value) {
        self.stream.write_all(&self.body).unwrap();
        let mut response = Vec::new();
        self.stream.read_to_end(&mut response).unwrap();
        let text = String::from_utf8(response).unwrap();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {text}"));
        assert!(
            !head.to_ascii_lowercase().contains("transfer-encoding"),
            "the answer is chunked; decode it here: {head}"
        );
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (
            status,
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}")),
        )
    }
}

#[test]
fn acknowledged_revocations_survive_kill_minus_nine() {
    let scheme = Scheme::live(36);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &scheme, &Options::default());
    let first = BinaryGateway::start(&config);
    let mut acknowledged = Vec::new();
    for i in 0..25 {
        let id = format!("card-{i}");
        let entry = json!({"kind": "credential", "id": id, "status": "revoked", "reason": "stolen", "at": 1_000 + i});
        if first.revoke(&format!("{entry}\n")).status == 200 {
            acknowledged.push(id);
        }
    }
    assert_eq!(acknowledged.len(), 25);
    drop(first); // SIGKILL: no shutdown, no flush.
    let second = BinaryGateway::start(&config);
    for id in &acknowledged {
        let reply = second.revocation("credential", id);
        assert_eq!(reply.status, 200, "{id} lost after kill -9");
        assert_eq!(reply.json()["status"], "revoked");
    }
    assert!(second.metrics().contains("idgate_revocation_entries 25"));
}

/// SIGTERM while 8 clients send and [`HELD_REQUESTS`] requests are provably in progress: the held
/// requests (sent on after the listener is gone) and every request the gateway accepted are
/// answered in full, the process exits 0, and the logs hold no key, ID number or presentation.
#[test]
fn sigterm_during_load_loses_no_accepted_request_and_exits_zero() {
    let mut scheme = Scheme::live(37);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &scheme, &Options::default());
    let gateway = BinaryGateway::start(&config);
    let presentations: Vec<String> = (0..400)
        .map(|i| {
            scheme.present(
                &format!("{:010}", 3_000_000_000u64 + i),
                &format!("card-{i}"),
            )
        })
        .collect();
    let secret_markers: Vec<String> = presentations.iter().map(|p| p[..40].to_string()).collect();
    let id_numbers: Vec<String> = (0..400)
        .map(|i| format!("{:010}", 3_000_000_000u64 + i))
        .collect();
    let public = gateway.public;
    let presentations = Arc::new(presentations);
    // Held requests: fresh presentations of their own, so every answer must be `valid`.
    let held_bodies: Vec<Vec<String>> = (0..HELD_REQUESTS)
        .map(|h| {
            (0..HELD_ITEMS)
                .map(|i| {
                    scheme.present(
                        &format!("{:010}", 3_100_000_000u64 + h * 100 + i),
                        &format!("held-{h}-{i}"),
                    )
                })
                .collect()
        })
        .collect();
    // Clients send until the gateway stops taking connections, so the load cannot end before the
    // signal; each request carries 32 presentations, so it takes long enough to be caught.
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let presentations = Arc::clone(&presentations);
            std::thread::spawn(move || {
                let mut answered = Vec::new();
                let give_up = Instant::now() + Duration::from_secs(30);
                for round in 0.. {
                    let id = format!("c{client}-r{round}");
                    let start = (client * 50 + round) % (presentations.len() - 32);
                    let body =
                        json!({"presentations": presentations[start..start + 32]}).to_string();
                    let auth = format!("Bearer {API_KEY}");
                    let sent = Instant::now();
                    // A refused or reset connection is a request the server never accepted.
                    match request(
                        public,
                        "POST",
                        "/v1/verify",
                        &[("Authorization", &auth), ("x-request-id", &id)],
                        body.as_bytes(),
                    ) {
                        Ok(reply) => answered.push((id, reply.status, sent, Instant::now())),
                        Err(_) => break,
                    }
                    if Instant::now() > give_up {
                        break;
                    }
                }
                answered
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let held: Vec<HeldRequest> = held_bodies
        .iter()
        .enumerate()
        .map(|(h, presentations)| HeldRequest::open(public, &format!("held-{h}"), presentations))
        .collect();
    let signalled = Instant::now();
    gateway.signal("TERM");
    // The drain has begun once the listener is gone; only then do the held requests send their
    // bodies, and each must still get its whole answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(public).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the public listener still accepts 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for (h, request) in held.into_iter().enumerate() {
        let (status, reply) = request.finish();
        assert_eq!(
            status, 200,
            "held request {h}, in flight at SIGTERM: {reply}"
        );
        let outcomes: Vec<&str> = reply["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(
            outcomes, ["valid"; HELD_ITEMS as usize],
            "held request {h}: {reply}"
        );
    }
    let answered: Vec<(String, u16, Instant, Instant)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    // Some requests were in flight when the signal was sent, and got their whole answer.
    let spanning = answered
        .iter()
        .filter(|(_, status, sent, done)| *status == 200 && *sent < signalled && *done > signalled)
        .count();
    assert!(
        spanning > 0,
        "no request was in flight at SIGTERM ({} answered), so the drain was not tested",
        answered.len()
    );
    let (status, logs) = gateway.wait(Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
    let held_ids: Vec<String> = (0..HELD_REQUESTS).map(|h| format!("held-{h}")).collect();
    let received: HashSet<&str> = answered
        .iter()
        .filter(|(_, s, _, _)| *s == 200)
        .map(|(id, _, _, _)| id.as_str())
        .chain(held_ids.iter().map(String::as_str))
        .collect();
    let mut accepted = 0;
    for line in &logs {
        let log: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        if log["route"] == "/v1/verify" {
            accepted += 1;
            let id = log["request_id"].as_str().unwrap();
            assert_eq!(log["status"], 200);
            assert!(
                received.contains(id),
                "request {id} was accepted and answered by the server but never reached its client"
            );
        }
    }
    assert!(
        accepted > 0 && !received.is_empty(),
        "the load must overlap the shutdown"
    );
    for id in &held_ids {
        assert!(
            logs.iter()
                .any(|l| l.contains(&format!("\"request_id\":\"{id}\""))),
            "the held request {id} is not in the request log"
        );
    }
    assert!(
        logs.iter().any(|l| l.contains("shutting down"))
            && logs.iter().any(|l| l.contains("stopped"))
    );
    // Nothing personal or secret in the logs.
    for line in &logs {
        assert!(
            !line.contains(API_KEY) && !id_numbers.iter().any(|id| line.contains(id.as_str())),
            "{line}"
        );
        assert!(
            !secret_markers
                .iter()
                .any(|marker| line.contains(marker.as_str())),
            "a presentation leaked into the logs"
        );
    }
}

#[test]
fn sighup_reloads_the_trust_store() {
    let mut scheme = Scheme::live(42);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &scheme, &Options::default());
    let gateway = BinaryGateway::start(&config);
    assert_eq!(gateway.outcomes(&[scheme.present("1", "c1")]), ["valid"]);
    std::fs::write(
        dir.path().join("trust.jwks.json"),
        json!({"keys": [scheme.other.jwk()]}).to_string(),
    )
    .unwrap();
    gateway.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.metric("idgate_trust_keys") != 1.0 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        gateway.outcomes(&[scheme.present("1", "c2")]),
        ["unknown_key"]
    );
}

#[test]
fn the_demo_starts_with_no_arguments_and_its_curl_works() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::idgate_bin())
        .current_dir(dir.path())
        .env("IDGATE_SERVER_LISTEN", "127.0.0.1:0")
        .env("IDGATE_SERVER_ADMIN_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    while !banner.contains("curl -s") {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the demo stopped: {banner}"
        );
        banner.push_str(&line);
    }
    let field = |prefix: &str| {
        banner
            .split(prefix)
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let public: std::net::SocketAddr = field("API:       http://").parse().unwrap();
    let key = field("API key: ");
    let minted = std::process::Command::new(common::idgate_bin())
        .current_dir(dir.path())
        .args(["mint", "--data-dir", "idgate-data"])
        .output()
        .unwrap();
    assert!(minted.status.success());
    let presentation = String::from_utf8(minted.stdout).unwrap().trim().to_string();
    let reply = http::post_json(
        public,
        "/v1/verify",
        &key,
        &json!({"presentations": [presentation]}),
    );
    assert_eq!(
        reply.json()["results"][0]["outcome"],
        "valid",
        "{}",
        reply.text()
    );
    assert!(dir.path().join("idgate-data/idgate.toml").exists());
    let _ = child.kill();
    let _ = child.wait();
}
