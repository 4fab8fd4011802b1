//! `revocation.feed = "redis"` end to end: gateways in this process sharing one real
//! `redis-server` (AOF on) as their revocation feed. A revocation posted to one is refused on
//! the others within a second (propagation p99 over 200 updates ≤ 250 ms); a stopped feed
//! (`SIGSTOP`) turns would-be-valid items `status_undetermined` and back after `SIGCONT`; a
//! feed Redis without an append-only file is refused at start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Scheme;
use common::gateway::{Client, Options, TestGateway, eventually, readyz, write_config};
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
    // Every instance holds all 201 entries, and says how far it applied the feed (201 update
    // entries, and the lock holder's heartbeats between them) and when it last confirmed it
    // was caught up.
    for gateway in [a, b, c] {
        eventually(Duration::from_secs(2), "the feed gauges", || {
            gateway.metric("idgate_revocation_feed_applied_sequence") >= 201.0
                && gateway.metric("idgate_revocation_feed_entries_applied_total") >= 201.0
                && gateway.metric("idgate_revocation_entries") == 201.0
        });
        let confirmed = gateway.metric("idgate_revocation_feed_confirmed_timestamp_seconds");
        assert!((unix_now() as f64 - confirmed).abs() <= 2.0, "{confirmed}");
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
        .expect_err("refused");
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

/// 100 requests of 100 revocations each are posted to A while the feed's Redis (AOF,
/// `appendfsync always`) is killed with `SIGKILL` and restarted on its files 300 ms later.
/// Every request answered `200` is then on A and on B; any other answer is a `503` (outcome
/// unknown), never a `200` for something lost. The publisher reconnects by itself.
#[test]
fn every_acknowledged_update_survives_a_killed_and_restarted_feed_redis() {
    if !redis::available() {
        return;
    }
    let mut server = durable_redis();
    let scheme = Scheme::live(174);
    // Publishing gives up after 3/4 of the request timeout: 3 s here.
    let options = Options {
        request_timeout_ms: 4000,
        ..feed_options(&server.url(), 300)
    };
    let a = TestGateway::start(&scheme, &options);
    let b = TestGateway::start(&scheme, &options);
    for gateway in [&a, &b] {
        eventually(Duration::from_secs(15), "/readyz 200", || {
            readyz(gateway) == 200
        });
    }
    let done = std::sync::atomic::AtomicUsize::new(0);
    let acknowledged = std::thread::scope(|scope| {
        let publisher = scope.spawn(|| {
            let mut acknowledged = Vec::new();
            for request in 0..100 {
                let body: String = (0..100)
                    .map(|i| {
                        format!(
                            "{}\n",
                            serde_json::json!({"kind": "credential", "id": format!("card-k{request}-{i}"), "status": "revoked", "reason": "stolen", "at": unix_now()})
                        )
                    })
                    .collect();
                let reply = a.revoke(&body);
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                match reply.status {
                    200 => acknowledged.push(request),
                    503 => {}
                    other => panic!("status {other}: {}", reply.text()),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            acknowledged
        });
        std::thread::sleep(Duration::from_millis(300));
        server.kill();
        let at_kill = done.load(std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        server.restart();
        let at_restart = done.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            at_kill > 0 && at_restart < 100,
            "the outage should fall inside the run: {at_kill} requests done at the kill, {at_restart} at the restart"
        );
        publisher.join().unwrap()
    });
    // The publisher repeats an attempt (same token) until its deadline, so requests in flight
    // across a short outage are still acknowledged; none is acknowledged and then missing.
    assert!(!acknowledged.is_empty());
    for gateway in [&a, &b] {
        eventually(
            Duration::from_secs(10),
            "caught up after the restart",
            || readyz(gateway) == 200,
        );
        for &request in &acknowledged {
            let ids: Vec<String> = (0..100).map(|i| format!("card-k{request}-{i}")).collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            eventually(
                Duration::from_secs(5),
                "an acknowledged request applied",
                || {
                    let status = gateway.status(&[], &ids).json();
                    status["results"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|r| r["status"] == "revoked")
                },
            );
        }
    }
}
