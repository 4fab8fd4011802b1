//! The tests' HTTP calls: thin wrappers over `testkit::http` (one request per connection,
//! `Connection: close`, real sockets), bounded in time: 5 s to connect, 60 s for the rest.
//! Tests about raw bytes on the wire (a slow header, a malformed request) write to a
//! `TcpStream` themselves instead.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// A whole response: `status`, `headers`, `body`, with `json()`, `text()` and `header()`.
pub type Reply = testkit::http::Response;

const CLIENT: testkit::http::Client =
    testkit::http::Client::new(Duration::from_secs(5), Duration::from_secs(60));

/// Sends one request and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    CLIENT.request(addr, method, path, headers, body)
}

/// `POST path` with a JSON body and a bearer token.
pub fn post_json(addr: SocketAddr, path: &str, token: &str, body: &Value) -> Reply {
    let auth = format!("Bearer {token}");
    request(
        addr,
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .unwrap()
}

/// `GET path`, optionally with a bearer token.
pub fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    request(addr, "GET", path, &headers, b"").unwrap()
}
