//! `revocation.feed = "redis"` end to end: gateways in this process sharing one real
//! `redis-server` (AOF on) as their revocation feed. A revocation posted to one is refused on
//! the others within a second (propagation p99 over 200 updates ≤ 250 ms); a stopped feed
//! (`SIGSTOP`) turns would-be-valid items `status_undetermined` and back after `SIGCONT`; a
//! feed Redis without an append-only file is refused at start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Scheme;
use common::gateway::{Client, Options, TestGateway, write_config};
use common::http;
use common::redis::{self, RedisServer};
use idgate::clock::unix_now;

fn feed_options(url: &str, max_staleness_s: i64) -> Options {
    Options {
        revocation_extra: format!(
            "feed = \"redis\"\nredis_url = \"{url}\"\nfeed_heartbeat_ms = 200\nmax_staleness_s = {max_staleness_s}\n"
        ),
        ..Options::default()
    }
}

fn readyz(gateway: &impl Client) -> u16 {
    http::request(gateway.operator(), "GET", "/readyz", &[], b"")
        .unwrap()
        .status
}

/// Polls `condition` every 5 ms until it holds; panics with `what` after `within`.
fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn durable_redis() -> RedisServer {
    RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
}

fn start(scheme: &Scheme, url: &str, max_staleness_s: i64) -> TestGateway {
    let gateway = TestGateway::start(scheme, &feed_options(url, max_staleness_s));
    eventually(Duration::from_secs(15), "/readyz 200", || {
        readyz(&gateway) == 200
    });
    gateway
}

fn credential_status(gateway: &impl Client, id: &str) -> String {
    let reply = gateway.status(&[], &[id]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["results"][0]["status"]
        .as_str()
        .unwrap()
        .to_string()
}

fn revoke(gateway: &impl Client, id: &str) {
    let entry = serde_json::json!({"kind": "credential", "id": id, "status": "revoked", "reason": "stolen", "at": unix_now()});
    let reply = gateway.revoke(&format!("{entry}\n"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.json()["feed_sequence"].as_u64().unwrap() >= 1);
}

#[test]
fn a_revocation_posted_to_one_gateway_is_refused_on_the_others_within_a_second() {
    if !redis::available() {
        return;
    }
    let server = durable_redis();
    let mut scheme = Scheme::live(171);
    let gateways: Vec<TestGateway> = (0..3).map(|_| start(&scheme, &server.url(), 300)).collect();
    let (a, b, c) = (&gateways[0], &gateways[1], &gateways[2]);
    assert_eq!(
        b.outcomes(&[scheme.present("3000000001", "card-f")]),
        ["valid"]
    );

    revoke(a, "card-f");
    for other in [b, c] {
        eventually(
            Duration::from_secs(1),
            "revoked on another instance",
            || credential_status(other, "card-f") == "revoked",
        );
    }
    assert_eq!(
        c.outcomes(&[scheme.present("3000000001", "card-f")]),
        ["revoked"]
    );
    // The instance that took the write shows it when it answers.
    assert_eq!(credential_status(a, "card-f"), "revoked");

    // Propagation of 200 updates, one at a time: from the start of the POST to A until B
    // answers `revoked`.
    let mut latencies = Vec::new();
    for n in 0..200 {
        let id = format!("card-p{n}");
        let started = Instant::now();
        revoke(a, &id);
        eventually(Duration::from_secs(1), "propagated", || {
            credential_status(b, &id) == "revoked"
        });
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    eprintln!("propagation A → B over 200 updates: p50 {p50:?}, p99 {p99:?}");
    assert!(p99 <= Duration::from_millis(250), "p99 {p99:?}");
    // Every instance holds all 201 entries.
    for gateway in [a, b, c] {
        let status = gateway.status(&[], &["card-p0", "card-p199"]).json();
        assert_eq!(status["results"][0]["status"], "revoked");
        assert_eq!(status["results"][1]["status"], "revoked");
    }
}

#[test]
fn a_stopped_feed_makes_would_be_valid_items_undetermined_until_it_is_back() {
    if !redis::available() {
        return;
    }
    let server = durable_redis();
    let mut scheme = Scheme::live(172);
    let a = start(&scheme, &server.url(), 2);
    let b = start(&scheme, &server.url(), 2);
    revoke(&a, "card-s");
    eventually(Duration::from_secs(1), "revoked on B", || {
        credential_status(&b, "card-s") == "revoked"
    });
    assert_eq!(
        b.outcomes(&[scheme.present("3000000002", "card-ok")]),
        ["valid"]
    );

    server.pause();
    let stopped = Instant::now();
    eventually(Duration::from_secs(3), "undetermined on B", || {
        b.outcomes(&[scheme.present("3000000002", "card-ok")]) == ["status_undetermined"]
            && credential_status(&b, "card-ok") == "undetermined"
    });
    assert!(
        stopped.elapsed() >= Duration::from_millis(1500),
        "too early: {:?}",
        stopped.elapsed()
    );
    // A known revocation stays a revocation, never `valid`.
    assert_eq!(
        b.outcomes(&[scheme.present("3000000003", "card-s")]),
        ["revoked"]
    );
    assert_eq!(readyz(&b), 503);
    let as_of = b.status(&[], &["card-ok"]).json()["as_of"]
        .as_i64()
        .unwrap();
    assert!(
        unix_now() - as_of >= 2,
        "as_of {as_of} is the last confirmation"
    );

    server.resume();
    eventually(Duration::from_secs(5), "valid again on B", || {
        b.outcomes(&[scheme.present("3000000002", "card-ok")]) == ["valid"]
    });
    assert_eq!(credential_status(&b, "card-ok"), "active");
    assert_eq!(readyz(&b), 200);
}

#[test]
fn a_feed_redis_without_aof_is_refused_at_start_unless_volatile_is_allowed() {
    if !redis::available() {
        return;
    }
    let server = RedisServer::start();
    let scheme = Scheme::live(173);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &scheme, &feed_options(&server.url(), 300));
    let settings = idgate::config::load(Some(&config), Vec::new()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let error = runtime
        .block_on(idgate::gateway::Gateway::open(
            settings,
            idgate::api::route::LABELS,
        ))
        .err()
        .expect("refused");
    let message = error.to_string();
    assert!(message.contains("appendonly no"), "{message}");
    assert!(!message.contains(&server.port.to_string()), "{message}");

    let mut options = feed_options(&server.url(), 300);
    options
        .revocation_extra
        .push_str("feed_allow_volatile = true\n");
    let gateway = TestGateway::start(&scheme, &options);
    eventually(Duration::from_secs(15), "/readyz 200", || {
        readyz(&gateway) == 200
    });
    revoke(&gateway, "card-v");
    assert_eq!(credential_status(&gateway, "card-v"), "revoked");
}
