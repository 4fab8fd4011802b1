//! The Redis replay store over TLS (`rediss://`): a real `redis-server` speaking TLS only, with a
//! throwaway CA and server certificate made by `openssl` for this test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Scheme;
use common::gateway::{Client, Options, TestGateway, readyz};
use common::redis;

/// A `redis-server` with its plain port off and a TLS port on; killed when dropped.
struct TlsRedis {
    port: u16,
    child: Child,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA (`ca.crt`) and a server certificate for 127.0.0.1 signed by it (`server.crt/key`).
fn certificates(dir: &Path) {
    let p256 = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let ca = [
        &["req", "-x509"][..],
        &p256,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=idgate test CA",
        ],
    ]
    .concat();
    openssl(dir, &ca);
    let csr = [
        &["req"][..],
        &p256,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat();
    openssl(dir, &csr);
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
}

fn start_tls_redis(dir: &Path) -> TlsRedis {
    let port = redis::free_port(false);
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--tls-port", &port.to_string()])
        .args([
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let server = TlsRedis { port, child };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pong = Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--tls",
                "--cacert",
            ])
            .arg(dir.join("ca.crt"))
            .arg("ping")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG");
        if pong {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "the TLS redis-server did not answer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn gateway(scheme: &Scheme, replay: String) -> TestGateway {
    TestGateway::start(
        scheme,
        &Options {
            replay_extra: replay,
            ..Options::default()
        },
    )
}

#[test]
fn rediss_with_the_servers_ca_shares_replays_and_an_untrusted_certificate_fails_closed() {
    if !redis::available() {
        return;
    }
    if Command::new("openssl").arg("version").output().is_err() {
        common::cannot_run("openssl is not on PATH (Debian: apt-get install openssl)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let server = start_tls_redis(dir.path());
    let url = format!("rediss://127.0.0.1:{}", server.port);
    let ca = dir.path().join("ca.crt");
    let mut scheme = Scheme::live(1901);

    let trusted = format!(
        "backend = \"redis\"\nredis_url = \"{url}\"\nredis_ca_file = \"{}\"\n",
        ca.display()
    );
    let a = gateway(&scheme, trusted.clone());
    let b = gateway(&scheme, trusted);
    let deadline = Instant::now() + Duration::from_secs(15);
    while readyz(&a) != 200 || readyz(&b) != 200 {
        assert!(Instant::now() < deadline, "gateways on rediss:// not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let p = scheme.present("1012345678", "card-0001");
    assert_eq!(a.outcomes(std::slice::from_ref(&p)), ["valid"]);
    assert_eq!(b.outcomes(std::slice::from_ref(&p)), ["replayed"]);

    // The system roots do not know this CA: the connection is refused, the gateway is not
    // ready, and items fail closed at once.
    let untrusted = gateway(
        &scheme,
        format!("backend = \"redis\"\nredis_url = \"{url}\"\nredis_timeout_ms = 500\n"),
    );
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(readyz(&untrusted), 503);
    let q = scheme.present("2012345678", "card-0002");
    let started = Instant::now();
    assert_eq!(
        untrusted.outcomes(std::slice::from_ref(&q)),
        ["replay_unavailable"]
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        untrusted.metric("idgate_redis_errors_total{kind=\"connection\"}")
            + untrusted.metric("idgate_redis_errors_total{kind=\"other\"}")
            >= 1.0
    );
    // The same presentation through a trusting gateway is still fresh: nothing was recorded.
    assert_eq!(a.outcomes(std::slice::from_ref(&q)), ["valid"]);
}
