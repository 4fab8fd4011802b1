//! A blocking HTTP/1.1 client on hyper for setup calls and checks: one request per
//! connection (`Connection: close`), over real sockets, on a current-thread tokio runtime made
//! for the call.
//!
//! Every call is bounded: connecting by [`Client::connect_timeout`], and the whole exchange
//! after it (sending the request, reading the head and the complete body) by
//! [`Client::timeout`]. A response is only returned whole: a body cut short of its
//! `Content-Length`, a reset or a timeout is an error, never a truncated [`Response`].
//!
//! The request carries `Host`, `Connection: close` and `Content-Length` (also `0` on a GET),
//! then the caller's headers, with header names in title case as a hand-written client would
//! send them. Load itself goes through keep-alive connections elsewhere (`loadtest/src/load.rs`);
//! tests about raw bytes on the wire write to a `TcpStream` themselves.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONNECTION, CONTENT_LENGTH, HOST};
use hyper_util::rt::TokioIo;

/// A whole response: status, headers in the order received, body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Names as received (hyper servers send them in lower case), values lossily decoded.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    ///
    /// # Panics
    ///
    /// When the body is not JSON, with the body in the message: this is a test helper, and the
    /// body is what the failing test needs to show.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// How long a call may take. A plain value: each call opens its own connection and runtime.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// Bound on the TCP connect.
    pub connect_timeout: Duration,
    /// Bound on everything after the connect: writing the request, reading the whole response.
    pub timeout: Duration,
}

impl Client {
    pub const fn new(connect_timeout: Duration, timeout: Duration) -> Client {
        Client {
            connect_timeout,
            timeout,
        }
    }

    /// Sends one request to `addr` and reads the whole response.
    ///
    /// Errors: `InvalidInput` for a method, path or header hyper refuses; `TimedOut` when a
    /// bound is passed; otherwise the connection's or hyper's error.
    pub fn request(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, addr.to_string())
            .header(CONNECTION, "close")
            .header(CONTENT_LENGTH, body.len());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        block_on(exchange(addr, request, *self))?
    }

    /// `GET path` with no body and no extra headers.
    pub fn get(&self, addr: SocketAddr, path: &str) -> io::Result<Response> {
        self.request(addr, "GET", path, &[], b"")
    }
}

async fn exchange(
    addr: SocketAddr,
    request: hyper::Request<Full<Bytes>>,
    client: Client,
) -> io::Result<Response> {
    let timed_out = |what: &str, limit: Duration| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} {addr} took longer than {limit:?}"),
        )
    };
    let stream = tokio::time::timeout(client.connect_timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out("connecting to", client.connect_timeout))??;
    let call = async {
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .title_case_headers(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        // The connection task ends when the server closes (Connection: close) or when the
        // runtime is dropped after the call.
        tokio::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .map_err(io::Error::other)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(io::Error::other)?
            .to_bytes()
            .to_vec();
        Ok(Response {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(client.timeout, call)
        .await
        .map_err(|_| timed_out("the exchange with", client.timeout))?
}

/// Runs `future` to completion on a fresh current-thread runtime. Inside a tokio runtime (where
/// blocking on another one would panic) the call runs on a scoped thread of its own.
fn block_on<F>(future: F) -> io::Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let run = move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map(|runtime| runtime.block_on(future))
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    std::thread::scope(|scope| {
        scope
            .spawn(run)
            .join()
            .map_err(|_| io::Error::other("the HTTP call's thread panicked"))?
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    const QUICK: Client = Client::new(Duration::from_secs(5), Duration::from_secs(5));

    /// A one-connection server: reads the request head (and `Content-Length` body), sends it
    /// back over `seen`, then writes `reply` and closes (after `hold`, if given).
    fn serve_once(
        reply: &'static [u8],
        hold: Option<Duration>,
    ) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (send, seen) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                let n = stream.read(&mut buffer).unwrap();
                request.extend_from_slice(&buffer[..n]);
                let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                    assert!(n > 0, "closed before the head ended");
                    continue;
                };
                let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if request.len() >= end + 4 + length || n == 0 {
                    break;
                }
            }
            let _ = send.send(request);
            if let Some(hold) = hold {
                std::thread::sleep(hold);
            }
            let _ = stream.write_all(reply);
        });
        (addr, seen)
    }

    #[test]
    fn a_reply_is_read_whole_with_status_headers_and_body() {
        let (addr, seen) = serve_once(
            b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\nx-request-id: abc\r\ncontent-type: text/plain\r\n\r\nhello",
            None,
        );
        let reply = QUICK
            .request(
                addr,
                "POST",
                "/v1/verify",
                &[("authorization", "Bearer k"), ("x-extra", "1")],
                b"{\"a\":1}",
            )
            .unwrap();
        assert_eq!(reply.status, 201);
        assert_eq!(reply.body, b"hello");
        assert_eq!(reply.text(), "hello");
        assert_eq!(reply.header("X-Request-Id"), Some("abc"));
        assert_eq!(reply.header("content-type"), Some("text/plain"));
        assert_eq!(reply.header("missing"), None);
        let request = String::from_utf8(seen.recv().unwrap()).unwrap();
        assert!(
            request.starts_with("POST /v1/verify HTTP/1.1\r\n"),
            "{request}"
        );
        for line in [
            format!("Host: {addr}"),
            "Connection: close".into(),
            "Content-Length: 7".into(),
            "Authorization: Bearer k".into(),
            "X-Extra: 1".into(),
        ] {
            assert!(
                request.contains(&format!("\r\n{line}\r\n")),
                "{line} in {request}"
            );
        }
        assert!(request.ends_with("\r\n\r\n{\"a\":1}"), "{request}");
    }

    #[test]
    fn a_get_says_its_body_is_empty() {
        let (addr, seen) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", None);
        let reply = QUICK.get(addr, "/metrics").unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json(), serde_json::json!({}));
        let request = String::from_utf8(seen.recv().unwrap()).unwrap();
        assert!(
            request.starts_with("GET /metrics HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("\r\nContent-Length: 0\r\n"), "{request}");
    }

    #[test]
    fn a_chunked_body_is_decoded() {
        let (addr, _seen) = serve_once(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            None,
        );
        assert_eq!(QUICK.get(addr, "/").unwrap().body, b"abcde");
    }

    #[test]
    fn a_body_short_of_its_content_length_is_an_error() {
        let (addr, _seen) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf", None);
        assert!(QUICK.get(addr, "/").is_err());
    }

    #[test]
    fn a_connection_closed_without_an_answer_is_an_error() {
        let (addr, _seen) = serve_once(b"", None);
        assert!(QUICK.get(addr, "/").is_err());
    }

    #[test]
    fn a_refused_connection_is_an_error() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // The listener is dropped: nothing listens on addr any more.
        assert!(QUICK.get(addr, "/").is_err());
    }

    #[test]
    fn a_server_that_never_answers_times_out_within_the_bound() {
        let (addr, _seen) = serve_once(
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            Some(Duration::from_secs(5)),
        );
        let client = Client::new(Duration::from_secs(5), Duration::from_millis(300));
        let started = Instant::now();
        let error = client.get(addr, "/").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_bad_method_is_invalid_input() {
        let error = QUICK
            .request(SocketAddr::from(([127, 0, 0, 1], 9)), "GE T", "/", &[], b"")
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn calls_work_from_inside_a_tokio_runtime() {
        let (addr, _seen) = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n", None);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let reply = runtime
            .block_on(async { QUICK.get(addr, "/livez") })
            .unwrap();
        assert_eq!(reply.status, 204);
    }
}
