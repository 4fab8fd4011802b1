//! `replay.backend = "redis"` against real `redis-server` processes (tests/common/redis.rs):
//! two gateways sharing one Redis (cross-instance replays, 64 racing requests, 1,000
//! presentations sent to both at once), and every fault failing closed — a stopped server
//! (`SIGSTOP`), a killed and restarted empty one (`SIGKILL`), `FLUSHALL`, an evicting
//! `maxmemory-policy` (at run time and at start), out of memory, killed client connections, and
//! nothing listening. The Redis Cluster is in `tests/redis_cluster.rs`.
//!
//! Gateways run in process (tests/common/gateway.rs) except where the process exit is the
//! subject. Every wait is a poll with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::Scheme;
use common::gateway::{
    Client, Options, TestGateway, eventually, readyz, spawn_serve, write_config,
};
use common::http;
use common::redis::{self, RedisServer};
use idgate::clock::unix_now;

/// The Redis timeout of most tests (the default).
const TIMEOUT_MS: u64 = 250;

fn options(url: &str, timeout_ms: u64) -> Options {
    Options {
        replay_extra: redis::replay_settings(url, timeout_ms),
        ..Options::default()
    }
}

/// A presentation whose KB-JWT `iat` is the current second (a phone showing its code now).
fn fresh(scheme: &mut Scheme) -> String {
    // `Scheme` stamps KB-JWTs `now - 2`.
    scheme.now = unix_now() + 2;
    scheme.present("1012345678", "card-0001")
}

fn wait_ready(gateway: &impl Client) {
    eventually(Duration::from_secs(15), "/readyz 200", || {
        readyz(gateway) == 200
    });
}

/// A gateway on `url`, ready.
fn gateway(scheme: &Scheme, url: &str, timeout_ms: u64) -> TestGateway {
    let gateway = TestGateway::start(scheme, &options(url, timeout_ms));
    wait_ready(&gateway);
    gateway
}

/// The single outcome of verifying one presentation.
fn outcome(gateway: &impl Client, presentation: &str) -> String {
    gateway.outcomes(&[presentation.to_string()]).remove(0)
}

/// Sends fresh presentations (one every 50 ms) until one is `valid`, each answer being `valid`
/// or `replay_unavailable` (a store that cannot vouch fails closed, never anything else).
fn until_fresh_is_valid(gateway: &impl Client, scheme: &mut Scheme, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let answer = outcome(gateway, &fresh(scheme));
        match answer.as_str() {
            "valid" => return,
            "replay_unavailable" => {}
            other => panic!("a fresh presentation got {other}"),
        }
        assert!(
            Instant::now() < deadline,
            "no fresh presentation was valid within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the wall clock is past second `second`.
fn wait_past_second(second: i64) {
    eventually(Duration::from_secs(3), "the next second", || {
        unix_now() > second
    });
}

fn kb_iat(presentation: &str) -> i64 {
    let kb_jwt = presentation.rsplit('~').next().unwrap();
    let payload = kb_jwt.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&idgate::b64::decode(payload).unwrap()).unwrap();
    claims["iat"].as_i64().unwrap()
}

#[test]
fn a_presentation_accepted_by_one_gateway_is_replayed_on_the_other() {
    if !redis::available() {
        return;
    }
    let server = RedisServer::start();
    let mut scheme = Scheme::live(1601);
    let a = gateway(&scheme, &server.url(), TIMEOUT_MS);
    let b = gateway(&scheme, &server.url(), TIMEOUT_MS);

    let p = scheme.present("1012345678", "card-0001");
    let q = scheme.present("2012345678", "card-0002");
    assert_eq!(outcome(&a, &p), "valid");
    assert_eq!(outcome(&b, &p), "replayed");
    assert_eq!(outcome(&a, &p), "replayed");
    assert_eq!(outcome(&b, &q), "valid");
    assert_eq!(outcome(&a, &q), "replayed");
    // In one batch on B: an in-batch duplicate, a fresh one and two replays.
    let r = scheme.present("3012345678", "card-0003");
    let mut expected: Vec<i64> = [&p, &q, &r]
        .iter()
        // The end of the replay window's last second (KB iat + 60 s age + 5 s skew), plus the
        // 5 s of clock offset allowed between this host and Redis, in Redis's ms.
        .map(|x| (kb_iat(x) + 60 + 5 + 5 + 1) * 1000 - 1)
        .collect();
    assert_eq!(
        b.outcomes(&[r.clone(), r, p, q]),
        ["valid", "replayed", "replayed", "replayed"]
    );

    // Three replay entries expiring exactly then, and the epoch key without an expiry.
    let mut expiries = server.pexpiretimes();
    expiries.sort();
    expected.insert(0, -1);
    expected.sort();
    assert_eq!(expiries, expected, "the epoch key has no expiry (-1)");
    for gateway in [&a, &b] {
        assert_eq!(gateway.metric("idgate_redis_nodes{state=\"up\"}"), 1.0);
        assert_eq!(gateway.metric("idgate_redis_nodes{state=\"down\"}"), 0.0);
        assert!(gateway.metric("idgate_redis_round_trip_seconds_count") >= 2.0);
        assert_eq!(
            gateway.metric("idgate_replay_unavailable_total{cause=\"redis_error\"}"),
            0.0
        );
    }
}

#[test]
fn sixty_four_concurrent_requests_over_two_gateways_yield_exactly_one_valid() {
    if !redis::available() {
        return;
    }
    let server = RedisServer::start();
    let mut scheme = Scheme::live(1602);
    let gateways = Arc::new([
        gateway(&scheme, &server.url(), TIMEOUT_MS),
        gateway(&scheme, &server.url(), TIMEOUT_MS),
    ]);
    let presentation = scheme.present("1012345678", "card-0001");
    let start = Arc::new(Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let gateways = Arc::clone(&gateways);
            let presentation = presentation.clone();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                outcome(&gateways[i % 2], &presentation)
            })
        })
        .collect();
    let outcomes: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        outcomes.iter().filter(|o| *o == "valid").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "replayed").count(),
        63,
        "{outcomes:?}"
    );
}

#[test]
fn a_thousand_presentations_sent_to_both_gateways_at_once_are_each_accepted_once() {
    if !redis::available() {
        return;
    }
    const COUNT: usize = 1000;
    const BATCH: usize = 50;
    let server = RedisServer::start();
    let mut scheme = Scheme::live(1603);
    let gateways = Arc::new([
        gateway(&scheme, &server.url(), TIMEOUT_MS),
        gateway(&scheme, &server.url(), TIMEOUT_MS),
    ]);
    let presentations: Arc<Vec<String>> = Arc::new(
        (0..COUNT)
            .map(|i| scheme.present(&format!("{}", 1_000_000_000 + i), &format!("card-{i}")))
            .collect(),
    );
    let batches = COUNT / BATCH;
    // Two senders per gateway (even and odd batches), all four starting together: every batch
    // reaches A and B at about the same time.
    let start = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|sender| {
            let gateways = Arc::clone(&gateways);
            let presentations = Arc::clone(&presentations);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let gateway = &gateways[sender / 2];
                start.wait();
                let mut answers = Vec::new();
                for batch in (sender % 2..batches).step_by(2) {
                    let range = batch * BATCH..(batch + 1) * BATCH;
                    let outcomes = gateway.outcomes(&presentations[range.clone()]);
                    assert_eq!(outcomes.len(), BATCH);
                    answers.extend(range.zip(outcomes));
                }
                answers
            })
        })
        .collect();
    let mut by_presentation: Vec<Vec<String>> = vec![Vec::new(); COUNT];
    for thread in threads {
        for (i, outcome) in thread.join().unwrap() {
            by_presentation[i].push(outcome);
        }
    }
    for (i, mut outcomes) in by_presentation.into_iter().enumerate() {
        outcomes.sort();
        assert_eq!(outcomes, ["replayed", "valid"], "presentation {i}");
    }
    // One entry per presentation (plus the epoch key).
    assert_eq!(server.dbsize(), COUNT as u64 + 1);
}

#[test]
fn a_stopped_redis_fails_closed_within_the_timeout_and_recovers_on_sigcont() {
    if !redis::available() {
        return;
    }
    let server = RedisServer::start();
    let mut scheme = Scheme::live(1604);
    let gateways = Arc::new([
        gateway(&scheme, &server.url(), TIMEOUT_MS),
        gateway(&scheme, &server.url(), TIMEOUT_MS),
    ]);
    let [a, b] = &*gateways;
    let before = scheme.present("1012345678", "card-0001");
    assert_eq!(outcome(a, &before), "valid");
    let limit = Duration::from_millis(2 * TIMEOUT_MS);
    // Every answer of the test, by presentation: none may be `valid` twice.
    let mut answers: HashMap<String, Vec<String>> = HashMap::new();
    answers
        .entry(before.clone())
        .or_default()
        .push("valid".into());

    server.pause();
    let stopped_at = Instant::now();
    // Sequential requests, alternating gateways, then concurrent ones: each answered
    // replay_unavailable (for the new presentation and the recorded one alike) and in less
    // than twice the timeout.
    let mut sent = Vec::new();
    for i in 0..10 {
        let new = fresh(&mut scheme);
        let started = Instant::now();
        let outcomes = gateways[i % 2].outcomes(&[new.clone(), before.clone()]);
        let took = started.elapsed();
        assert!(took < limit, "request {i} took {took:?}");
        assert_eq!(
            outcomes,
            ["replay_unavailable", "replay_unavailable"],
            "request {i}"
        );
        sent.push(new);
    }
    let concurrent: Vec<Vec<String>> = (0..8)
        .map(|_| (0..4).map(|_| fresh(&mut scheme)).collect())
        .collect();
    let start = Arc::new(Barrier::new(concurrent.len()));
    let threads: Vec<_> = concurrent
        .iter()
        .enumerate()
        .map(|(t, mine)| {
            let gateways = Arc::clone(&gateways);
            let mine = mine.clone();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                for (i, presentation) in mine.iter().enumerate() {
                    let started = Instant::now();
                    let outcomes =
                        gateways[(t + i) % 2].outcomes(std::slice::from_ref(presentation));
                    let took = started.elapsed();
                    assert!(took < limit, "thread {t} request {i} took {took:?}");
                    assert_eq!(outcomes, ["replay_unavailable"], "thread {t} request {i}");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    sent.extend(concurrent.into_iter().flatten());
    for presentation in &sent {
        answers
            .entry(presentation.clone())
            .or_default()
            .push("replay_unavailable".into());
    }
    for gateway in [a, b] {
        eventually(Duration::from_secs(3), "/readyz 503 while stopped", || {
            readyz(gateway) == 503
        });
        assert!(gateway.metric("idgate_redis_errors_total{kind=\"timeout\"}") >= 1.0);
        assert_eq!(gateway.metric("idgate_redis_nodes{state=\"up\"}"), 0.0);
    }
    let timeouts = |g: &TestGateway| {
        g.metric("idgate_replay_unavailable_total{cause=\"redis_timeout\"}")
            + g.metric("idgate_replay_unavailable_total{cause=\"redis_down\"}")
    };
    assert!(timeouts(a) + timeouts(b) >= 2.0 * 10.0 + 32.0);
    assert!(
        stopped_at.elapsed() < Duration::from_secs(20),
        "the stopped phase itself took {:?}",
        stopped_at.elapsed()
    );

    server.resume();
    // Both gateways recover by themselves: fresh presentations are valid again, the one
    // accepted before is still known (no data was lost, so no watermark either).
    for gateway in [a, b] {
        until_fresh_is_valid(gateway, &mut scheme, Duration::from_secs(10));
        wait_ready(gateway);
        assert_eq!(outcome(gateway, &before), "replayed");
    }
    // The presentations refused while Redis was stopped: a pipeline that timed out may still
    // have been executed once the server resumed (then `replayed`), one that never left was
    // not (then `valid` once, on one gateway, and `replayed` on the other).
    for presentation in &sent {
        for gateway in [a, b] {
            let answer = outcome(gateway, presentation);
            assert!(
                answer == "valid" || answer == "replayed",
                "after recovery: {answer}"
            );
            answers
                .entry(presentation.clone())
                .or_default()
                .push(answer);
        }
    }
    for (presentation, outcomes) in &answers {
        let valid = outcomes.iter().filter(|o| *o == "valid").count();
        assert!(valid <= 1, "accepted {valid} times: {outcomes:?}");
        if presentation != &before {
            // Once unavailable, then at most once valid, else replayed.
            assert_eq!(outcomes.len(), 3, "{outcomes:?}");
        }
    }
}

/// What the lost-data tests share: `lose` wipes Redis's data under two running gateways; a
/// presentation accepted before (an older `iat`) must never be `valid` again, and a fresh one
/// must be.
fn lost_data_is_detected(seed: u64, lose: impl FnOnce(&mut RedisServer)) {
    let mut server = RedisServer::start();
    let mut scheme = Scheme::live(seed);
    let a = gateway(&scheme, &server.url(), TIMEOUT_MS);
    let b = gateway(&scheme, &server.url(), TIMEOUT_MS);
    // Accepted before the loss, with an `iat` of this second (after A's first contact, which
    // set A's watermark to its start second).
    let first = fresh(&mut scheme);
    let second = fresh(&mut scheme);
    let third = fresh(&mut scheme);
    // And one from a phone whose clock is 4 s fast (inside the 5 s skew).
    scheme.now = unix_now() + 6;
    let ahead = scheme.present("1012345678", "card-0001");
    assert_eq!(
        a.outcomes(&[first.clone(), second.clone(), ahead.clone()]),
        ["valid", "valid", "valid"]
    );
    assert_eq!(outcome(&b, &third), "valid");
    assert_eq!(outcome(&b, &first), "replayed");
    let epoch_changes = |g: &TestGateway| g.metric("idgate_redis_epoch_changes_total");
    let changes_before = (epoch_changes(&a), epoch_changes(&b));
    // The loss must come in a later second than those `iat`s, so that the watermark (the
    // second of detection) is above them.
    wait_past_second(kb_iat(&third).max(kb_iat(&first)));

    lose(&mut server);
    // Right after the loss, before any periodic check has run: the recorded nonce of `first`
    // is gone from Redis, yet neither gateway may accept it.
    assert_ne!(outcome(&a, &first), "valid");
    assert_ne!(outcome(&b, &first), "valid");
    // Both detect the loss and accept fresh presentations again (after the clock skew: the
    // watermark is the second of detection + 5 s + 1, above any `iat` accepted before).
    // Both detect the loss; the watermark is the detection second + skew + 2 × the allowed
    // Redis clock offset + 1 = 16 s ahead with the defaults.
    until_fresh_is_valid(&a, &mut scheme, Duration::from_secs(30));
    until_fresh_is_valid(&b, &mut scheme, Duration::from_secs(30));
    // `second`, `third` and `ahead` were not sent since the loss (their entries are simply
    // gone): the watermark refuses them on both gateways; so it does `first`.
    for gateway in [&a, &b] {
        for old in [&first, &second, &third, &ahead] {
            assert_eq!(outcome(gateway, old), "replay_unavailable");
        }
        assert!(gateway.metric("idgate_replay_unavailable_total{cause=\"watermark\"}") >= 4.0);
        wait_ready(gateway);
    }
    assert!(epoch_changes(&a) > changes_before.0);
    assert!(epoch_changes(&b) > changes_before.1);
    // Fresh presentations stay valid, once.
    let new = fresh(&mut scheme);
    assert_eq!(outcome(&b, &new), "valid");
    assert_eq!(outcome(&a, &new), "replayed");
}

#[test]
fn a_redis_killed_and_restarted_empty_refuses_old_presentations_and_accepts_fresh_ones() {
    if !redis::available() {
        return;
    }
    lost_data_is_detected(1605, |server| {
        server.kill();
        server.restart();
        // Empty but for the epoch key a gateway may have written already.
        assert!(server.dbsize() <= 1);
    });
}

#[test]
fn a_flushall_refuses_old_presentations_and_accepts_fresh_ones() {
    if !redis::available() {
        return;
    }
    lost_data_is_detected(1606, |server| {
        server.cli(&["FLUSHALL"]);
        assert_eq!(server.dbsize(), 0);
    });
}

#[test]
fn an_evicting_policy_set_on_a_running_server_fails_closed_until_it_is_set_back() {
    if !redis::available() {
        return;
    }
    let server = RedisServer::start();
    let mut scheme = Scheme::live(1607);
    let a = gateway(&scheme, &server.url(), TIMEOUT_MS);
    let before = scheme.present("1012345678", "card-0001");
    assert_eq!(outcome(&a, &before), "valid");

    server.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let changed = Instant::now();
    // Accepted until the next check (every second), refused from then on.
    loop {
        match outcome(&a, &fresh(&mut scheme)).as_str() {
            "valid" => {}
            "replay_unavailable" => break,
            other => panic!("{other}"),
        }
        assert!(
            changed.elapsed() < Duration::from_millis(2500),
            "still accepting {:?} after the policy changed",
            changed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..5 {
        assert_eq!(outcome(&a, &fresh(&mut scheme)), "replay_unavailable");
        assert_eq!(outcome(&a, &before), "replay_unavailable");
    }
    assert_eq!(readyz(&a), 503);
    assert!(a.metric("idgate_redis_refusals_total") >= 1.0);
    assert_eq!(a.metric("idgate_redis_nodes{state=\"refused\"}"), 1.0);
    assert!(a.metric("idgate_replay_unavailable_total{cause=\"redis_down\"}") >= 10.0);

    // While the policy was wrong, entries may have been evicted (the epoch key, without a TTL,
    // survives a volatile-* policy): coming back raises the watermark as a loss does.
    let changes = a.metric("idgate_redis_epoch_changes_total");
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    until_fresh_is_valid(&a, &mut scheme, Duration::from_secs(30));
    wait_ready(&a);
    assert_eq!(a.metric("idgate_redis_nodes{state=\"up\"}"), 1.0);
    assert!(a.metric("idgate_redis_epoch_changes_total") > changes);
    assert_eq!(outcome(&a, &before), "replay_unavailable");
}

#[test]
fn a_gateway_started_after_a_loss_inherits_its_watermark() {
    if !redis::available() {
        return;
    }
    let server = RedisServer::start();
    let mut scheme = Scheme::live(1611);
    let a = gateway(&scheme, &server.url(), TIMEOUT_MS);
    let accepted = fresh(&mut scheme);
    assert_eq!(outcome(&a, &accepted), "valid");
    wait_past_second(kb_iat(&accepted));
    server.cli(&["FLUSHALL"]);
    // A detects the loss and writes a new epoch that says so.
    assert_ne!(outcome(&a, &accepted), "valid");
    eventually(Duration::from_secs(5), "A reconnected", || {
        a.metric("idgate_redis_nodes{state=\"up\"}") == 1.0
    });
    // B starts afterwards: it never saw the old epoch, yet must not accept the old one.
    let b = gateway(&scheme, &server.url(), TIMEOUT_MS);
    assert_eq!(outcome(&b, &accepted), "replay_unavailable");
    assert!(b.metric("idgate_replay_unavailable_total{cause=\"watermark\"}") >= 1.0);
    until_fresh_is_valid(&b, &mut scheme, Duration::from_secs(30));
}

#[test]
fn a_gateway_refuses_to_start_against_a_server_that_may_evict() {
    if !redis::available() {
        return;
    }
    let server = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let scheme = Scheme::live(1608);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &scheme, &options(&server.url(), TIMEOUT_MS));
    let (mut child, logs) = spawn_serve(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway did not exit against an allkeys-lru server");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines: Vec<String> = logs.iter().collect();
    let stderr = lines.join("\n");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("maxmemory-policy is allkeys-lru"),
        "the error names the setting and the value found: {stderr}"
    );
    assert!(!stderr.contains("\"listening\""), "{stderr}");
}

#[test]
fn an_out_of_memory_redis_fails_closed() {
    if !redis::available() {
        return;
    }
    let server = RedisServer::start();
    let mut scheme = Scheme::live(1609);
    let a = gateway(&scheme, &server.url(), TIMEOUT_MS);
    let before = fresh(&mut scheme);
    assert_eq!(outcome(&a, &before), "valid");

    server.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    let refused: Vec<String> = (0..5).map(|_| fresh(&mut scheme)).collect();
    assert_eq!(a.outcomes(&refused), ["replay_unavailable"; 5]);
    assert_eq!(outcome(&a, &fresh(&mut scheme)), "replay_unavailable");
    assert_ne!(outcome(&a, &before), "valid");
    assert!(a.metric("idgate_redis_errors_total{kind=\"oom\"}") >= 6.0);
    assert!(a.metric("idgate_replay_unavailable_total{cause=\"redis_error\"}") >= 6.0);
    // Nothing refused was recorded.
    assert_eq!(server.dbsize(), 2);

    server.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(outcome(&a, &fresh(&mut scheme)), "valid");
    assert_eq!(a.outcomes(&refused), ["valid"; 5]);
    assert_eq!(outcome(&a, &before), "replayed");
}

#[test]
fn killed_client_connections_are_reestablished_and_nothing_is_accepted_twice() {
    if !redis::available() {
        return;
    }
    let server = RedisServer::start();
    let mut scheme = Scheme::live(1610);
    let a = gateway(&scheme, &server.url(), TIMEOUT_MS);
    let b = gateway(&scheme, &server.url(), TIMEOUT_MS);
    let before = fresh(&mut scheme);
    assert_eq!(outcome(&a, &before), "valid");

    let killed: u64 = server
        .cli(&["CLIENT", "KILL", "TYPE", "normal"])
        .trim()
        .parse()
        .unwrap();
    assert!(killed >= 2, "CLIENT KILL killed {killed} connections");
    // Straight after: the dead connections cannot accept anything.
    for gateway in [&a, &b] {
        let answer = outcome(gateway, &before);
        assert!(
            answer == "replayed" || answer == "replay_unavailable",
            "{answer}"
        );
    }
    for gateway in [&a, &b] {
        until_fresh_is_valid(gateway, &mut scheme, Duration::from_secs(10));
        wait_ready(gateway);
        // The same data set: still replayed, no watermark raised.
        assert_eq!(outcome(gateway, &before), "replayed");
        assert_eq!(
            gateway.metric("idgate_replay_unavailable_total{cause=\"watermark\"}"),
            0.0
        );
    }
    assert!(
        a.metric("idgate_redis_errors_total{kind=\"connection\"}")
            + b.metric("idgate_redis_errors_total{kind=\"connection\"}")
            >= 1.0
    );
    let new = fresh(&mut scheme);
    assert_eq!(outcome(&a, &new), "valid");
    assert_eq!(outcome(&b, &new), "replayed");
}

#[test]
fn an_unreachable_redis_is_answered_at_once_and_the_gateway_is_not_ready_until_it_comes() {
    if !redis::available() {
        return;
    }
    // A long timeout, so that "at once" is clearly not "after a timeout".
    const LONG_TIMEOUT_MS: u64 = 2000;
    let port = redis::free_port(false);
    let url = format!("redis://127.0.0.1:{port}");
    let mut scheme = Scheme::live(1611);
    let a = TestGateway::start(&scheme, &options(&url, LONG_TIMEOUT_MS));
    for i in 0..10 {
        let started = Instant::now();
        let outcomes = a.outcomes(&[fresh(&mut scheme)]);
        let took = started.elapsed();
        assert_eq!(outcomes, ["replay_unavailable"], "request {i}");
        assert!(
            took < Duration::from_millis(250),
            "request {i} took {took:?}"
        );
        assert_eq!(readyz(&a), 503);
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(a.metric("idgate_redis_nodes{state=\"down\"}"), 1.0);
    assert!(a.metric("idgate_replay_unavailable_total{cause=\"redis_down\"}") >= 10.0);
    assert!(a.metric("idgate_redis_errors_total{kind=\"connection\"}") >= 1.0);

    // The supervisor keeps trying: once a server listens there, the gateway becomes ready.
    let server = RedisServer::start_on(port, &[]);
    assert_eq!(server.port, port, "the port was taken meanwhile");
    wait_ready(&a);
    until_fresh_is_valid(&a, &mut scheme, Duration::from_secs(5));
}

/// Exit status and stderr of `idgate serve` on a config with these `[replay]` lines.
fn serve_with_replay(replay: &str) -> (bool, String) {
    let scheme = Scheme::live(1612);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &scheme,
        &Options {
            replay_extra: replay.into(),
            ..Options::default()
        },
    );
    let (mut child, logs) = spawn_serve(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("idgate serve did not exit on a bad [replay] section");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.success(), logs.iter().collect::<Vec<_>>().join("\n"))
}

#[test]
fn redis_url_and_redis_cluster_together_are_refused() {
    let (ok, stderr) = serve_with_replay(
        "backend = \"redis\"\nredis_url = \"redis://127.0.0.1:7000\"\n\
         redis_cluster = [\"redis://127.0.0.1:7001\"]\n",
    );
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("replay.redis_url and replay.redis_cluster are mutually exclusive"),
        "{stderr}"
    );
}

#[test]
fn the_redis_backend_without_a_server_is_refused() {
    let (ok, stderr) = serve_with_replay("backend = \"redis\"\n");
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("replay.backend = \"redis\" needs replay.redis_url"),
        "{stderr}"
    );
}

/// The store itself (no gateway) under a `FLUSHALL` that lands while batches re-sending
/// recorded nonces are in flight, a big one (3,000 sets, executed by Redis in several chunks
/// between which other connections run) and small ones: none of those nonces may ever be
/// answered `Fresh`, each having been accepted once already. Round 0 records nonces with a KB
/// `iat` of now, the others with `iat` 5 s ahead (a phone whose clock is fast, inside the skew).
#[test]
fn a_flushall_under_batches_in_flight_never_accepts_a_recorded_nonce_again() {
    if !redis::available() {
        return;
    }
    use idgate::replay::{RedisReplay, RedisReplayOptions, RedisTarget};
    use idgate::verify::{ReplayAnswer, ReplayRequest};
    use rand::{RngExt, SeedableRng};
    let server = RedisServer::start();
    let url = server.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = RedisReplay::connect(
            RedisReplayOptions {
                target: RedisTarget::Single(url.clone()),
                timeout: Duration::from_millis(1000),
                key_prefix: "idgate:replay:".into(),
                max_clock_offset_s: 5,
                ca_file: None,
            },
            Arc::default(),
        )
        .await
        .unwrap();
        let mut flusher = ::redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1699);
        let mut doubles = Vec::new();
        for round in 0..6 {
            let iat_offset = if round == 0 { 0 } else { 5 };
            // Accept a set of nonces (waiting for the store to be ready and past its watermark).
            let deadline = Instant::now() + Duration::from_secs(15);
            let (old, now) = loop {
                let now = unix_now();
                let iat = now + iat_offset;
                let old: Vec<ReplayRequest> = (0..3000)
                    .map(|_| ReplayRequest {
                        key: rng.random(),
                        kb_iat: iat,
                        expires_at: iat + 65,
                    })
                    .collect();
                let answers = store.check_and_insert(&old, now).await;
                if answers.iter().all(|a| *a == ReplayAnswer::Fresh) {
                    break (Arc::new(old), now);
                }
                assert!(Instant::now() < deadline, "round {round}: not accepting");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            // The loss comes in a later second than the acceptance.
            while unix_now() <= now {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let senders: Vec<_> = (0..4)
                .map(|t| {
                    let store = store.clone();
                    let old = Arc::clone(&old);
                    let stop = Arc::clone(&stop);
                    tokio::spawn(async move {
                        let mut fresh = 0;
                        let mut sent = 0;
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            // Big and small batches.
                            let part: &[ReplayRequest] = if t == 0 {
                                &old
                            } else {
                                &old[t * 10..t * 10 + 10]
                            };
                            let answers = store.check_and_insert(part, unix_now()).await;
                            fresh += answers
                                .iter()
                                .filter(|a| **a == ReplayAnswer::Fresh)
                                .count();
                            sent += 1;
                            tokio::task::yield_now().await;
                        }
                        (fresh, sent)
                    })
                })
                .collect();
            tokio::time::sleep(Duration::from_micros(rng.random_range(500..5000))).await;
            let _: () = ::redis::cmd("FLUSHALL")
                .query_async(&mut flusher)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for sender in senders {
                let (fresh, sent) = sender.await.unwrap();
                assert!(sent >= 1);
                if fresh > 0 {
                    doubles.push(format!("round {round}: {fresh} in {sent} batches"));
                }
            }
        }
        assert!(doubles.is_empty(), "nonces accepted twice: {doubles:?}");
    });
}

/// The API key of the `open` tenant of [`with_open_tenant`].
const OPEN_KEY: &str = "open-api-key";

/// `options` plus a tenant `open` that accepts bearer copies (`require_key_binding = false`): a
/// `[[tenants]]` table after the `[replay]` lines (TOML lets an array of tables grow anywhere).
fn with_open_tenant(mut options: Options) -> Options {
    use sha2::Digest as _;
    options.replay_extra.push_str(&format!(
        "\n[[tenants]]\nname = \"open\"\napi_key_sha256 = \"{}\"\naudiences = [\"{}\"]\nrequire_key_binding = false\n",
        hex::encode(sha2::Sha256::digest(OPEN_KEY)),
        common::AUDIENCE,
    ));
    options
}

/// A bearer copy (no KB-JWT) of a fresh credential: never replay-tracked (SPEC §3).
fn bearer_copy(scheme: &mut Scheme, jti: &str) -> String {
    let now = scheme.now;
    let holder = scheme.holder();
    let spec = idgate::mint::CredentialSpec::id_card(
        "1012345678",
        jti,
        now - 86_400,
        Some(holder.public_key()),
    );
    let credential = scheme.issuer.issue(&mut scheme.rng, &spec);
    idgate::mint::Holder::sd_jwt(&credential, None)
}

/// T5: a Redis that stalls (`SIGSTOP`) holds only the items that need it. With a long
/// `redis_timeout_ms` (2 s), four batches of key-bound presentations wait on the stopped server
/// for the whole timeout; meanwhile `POST /v1/signatures/verify`, bearer copies (valid for a
/// tenant that allows them, `key_binding_missing` for one that does not) and a forged
/// presentation are answered in well under the timeout: the Redis round trip holds no
/// verification thread (there are two) and no coalesced batch of work that does not need it.
#[test]
fn while_redis_is_stopped_work_that_needs_no_replay_store_is_answered_at_once() {
    if !redis::available() {
        return;
    }
    use common::gateway::API_KEY;
    use serde_json::json;
    const LONG_TIMEOUT_MS: u64 = 2000;
    const FAST: Duration = Duration::from_millis(LONG_TIMEOUT_MS / 4);
    let server = RedisServer::start();
    let mut scheme = Scheme::live(1613);
    let a = TestGateway::start(
        &scheme,
        &with_open_tenant(options(&server.url(), LONG_TIMEOUT_MS)),
    );
    wait_ready(&a);
    let before = fresh(&mut scheme);
    assert_eq!(outcome(&a, &before), "valid");

    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let signature = ed25519_dalek::Signer::sign(&key, b"payload").to_bytes();
    let item = |message: &[u8]| {
        json!({"public_key": idgate::b64::encode(key.verifying_key().to_bytes()),
               "message": idgate::b64::encode(message),
               "signature": idgate::b64::encode(signature)})
    };
    let signatures = json!({"items": [item(b"payload"), item(b"other")]});
    let expected_signatures =
        json!({"results": [{"valid": true}, {"valid": false, "error": "bad_signature"}]});
    let forged = common::tamper_payload(&fresh(&mut scheme));
    // Checked once while Redis runs, so the stalled phase compares like with like.
    let reply = http::post_json(a.public, "/v1/signatures/verify", API_KEY, &signatures);
    assert_eq!(reply.json(), expected_signatures);
    let open = |presentations: &[String]| {
        let reply = http::post_json(
            a.public,
            "/v1/verify",
            OPEN_KEY,
            &json!({ "presentations": presentations }),
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["outcome"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(open(&[bearer_copy(&mut scheme, "card-b0")]), ["valid"]);

    let stalled: Vec<Vec<String>> = (0..4)
        .map(|_| (0..8).map(|_| fresh(&mut scheme)).collect())
        .collect();
    let bearers: Vec<String> = (0..40)
        .map(|i| bearer_copy(&mut scheme, &format!("card-b{}", i + 1)))
        .collect();
    let public = a.public;
    server.pause();
    let stopped_at = Instant::now();
    let start = Arc::new(Barrier::new(stalled.len() + 1));
    let threads: Vec<_> = stalled
        .into_iter()
        .map(|batch| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                let started = Instant::now();
                let reply = http::post_json(
                    public,
                    "/v1/verify",
                    API_KEY,
                    &json!({ "presentations": batch }),
                );
                (started, Instant::now(), reply)
            })
        })
        .collect();
    start.wait();
    // Let the key-bound batches reach Redis and wait there.
    std::thread::sleep(Duration::from_millis(200));
    let mut fast_done = Vec::new();
    let mut round = 0;
    while stopped_at.elapsed() < Duration::from_millis(1200) {
        let started = Instant::now();
        let reply = http::post_json(a.public, "/v1/signatures/verify", API_KEY, &signatures);
        assert_eq!(reply.json(), expected_signatures, "round {round}");
        let took = started.elapsed();
        assert!(took < FAST, "round {round}: signatures took {took:?}");

        let started = Instant::now();
        let pair = [bearers[2 * round].clone(), bearers[2 * round + 1].clone()];
        assert_eq!(open(&pair), ["valid", "valid"], "round {round}");
        let took = started.elapsed();
        assert!(took < FAST, "round {round}: bearer copies took {took:?}");

        let started = Instant::now();
        assert_eq!(
            a.outcomes(&[pair[0].clone(), forged.clone()]),
            ["key_binding_missing", "bad_signature"],
            "round {round}"
        );
        let took = started.elapsed();
        assert!(took < FAST, "round {round}: rejections took {took:?}");
        fast_done.push(Instant::now());
        round += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let stalled: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let first_stalled_end = stalled.iter().map(|(_, end, _)| *end).min().unwrap();
    for (i, (started, ended, reply)) in stalled.iter().enumerate() {
        assert_eq!(reply.status, 200, "{}", reply.text());
        let outcomes: Vec<String> = reply.json()["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["outcome"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(outcomes, ["replay_unavailable"; 8], "batch {i}");
        let took = *ended - *started;
        // They did wait on the stopped server (the fast answers above came meanwhile), and no
        // longer than the timeout allows.
        assert!(
            took >= Duration::from_millis(LONG_TIMEOUT_MS * 3 / 4),
            "batch {i} took only {took:?}: it did not wait on Redis"
        );
        assert!(
            took < Duration::from_millis(2 * LONG_TIMEOUT_MS),
            "batch {i} took {took:?}"
        );
    }
    let during = fast_done
        .iter()
        .filter(|done| **done < first_stalled_end)
        .count();
    assert!(
        during >= 3,
        "only {during} rounds of fast answers came while key-bound batches waited on Redis"
    );
    assert!(a.metric("idgate_redis_errors_total{kind=\"timeout\"}") >= 1.0);

    server.resume();
    until_fresh_is_valid(&a, &mut scheme, Duration::from_secs(10));
    assert_eq!(outcome(&a, &before), "replayed");
}

/// 200 requests of one fresh presentation each, from four threads over about 2 s; every one
/// answered `replay_unavailable`.
fn drive_load(gateway: &TestGateway, scheme: &mut Scheme) {
    let batches: Vec<Vec<String>> = (0..4)
        .map(|_| (0..50).map(|_| fresh(scheme)).collect())
        .collect();
    let public = gateway.public;
    let start = Arc::new(Barrier::new(batches.len()));
    let threads: Vec<_> = batches
        .into_iter()
        .enumerate()
        .map(|(t, mine)| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                let began = Instant::now();
                for (i, presentation) in mine.into_iter().enumerate() {
                    let reply = http::post_json(
                        public,
                        "/v1/verify",
                        common::gateway::API_KEY,
                        &serde_json::json!({ "presentations": [presentation] }),
                    );
                    assert_eq!(reply.status, 200, "{}", reply.text());
                    assert_eq!(
                        reply.json()["results"][0]["outcome"],
                        "replay_unavailable",
                        "thread {t} request {i}"
                    );
                    // Paced: request i leaves no sooner than i × 40 ms after the start.
                    let next = Duration::from_millis(40 * (i as u64 + 1));
                    if let Some(wait) = next.checked_sub(began.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// T6: no reconnect storm against a stopped server. 200 requests over ~2 s while Redis is
/// `SIGSTOP`ped; the server itself (`total_connections_received`, which counts the connections
/// queued meanwhile once it resumes) saw at most the supervisor's backoff schedule of attempts
/// ([`redis::supervisor_attempts_within`]) plus the reconnect after `SIGCONT` and one spare (a wake-up
/// left from the fault can skip one backoff) — not one per request.
#[test]
fn a_stopped_redis_under_load_sees_only_the_supervisors_backed_off_reconnects() {
    if !redis::available() {
        return;
    }
    // A short timeout, so that the backoff, not the timeout, is what spaces the attempts out
    // (without it, ~20 attempts in 2 s; with it, at most 7).
    const SHORT_TIMEOUT_MS: u64 = 100;
    let server = RedisServer::start();
    let mut scheme = Scheme::live(1614);
    let a = gateway(&scheme, &server.url(), SHORT_TIMEOUT_MS);
    let before = fresh(&mut scheme);
    assert_eq!(outcome(&a, &before), "valid");
    let connections_before = server.connections_received();

    server.pause();
    let stopped_at = Instant::now();
    drive_load(&a, &mut scheme);
    server.resume();
    // With a margin for an attempt that began as the server resumed.
    let stopped_for = stopped_at.elapsed() + Duration::from_millis(50);
    until_fresh_is_valid(&a, &mut scheme, Duration::from_secs(10));
    wait_ready(&a);
    assert_eq!(outcome(&a, &before), "replayed");

    // Minus this `redis-cli` connection.
    let made = server.connections_received() - connections_before - 1;
    let bound =
        redis::supervisor_attempts_within(stopped_for, Duration::from_millis(SHORT_TIMEOUT_MS))
            + 1
            + 1;
    eprintln!("stopped for {stopped_for:?}: {made} connections (bound {bound})");
    assert!(
        made <= bound,
        "{made} connections while stopped for {stopped_for:?} (at most {bound})"
    );
    assert!(a.metric("idgate_replay_unavailable_total{cause=\"redis_down\"}") >= 150.0);
}

/// T6 with a server that answers but refuses every write (`OOM`): an error reply is the
/// answer of a healthy connection, so the supervisor keeps it — no reconnect at all (the
/// backoff bound of [`redis::supervisor_attempts_within`] would allow a few; we hold it to none, one
/// spare).
#[test]
fn an_out_of_memory_redis_under_load_keeps_its_connection() {
    if !redis::available() {
        return;
    }
    let server = RedisServer::start();
    let mut scheme = Scheme::live(1615);
    let a = gateway(&scheme, &server.url(), TIMEOUT_MS);
    let before = fresh(&mut scheme);
    assert_eq!(outcome(&a, &before), "valid");
    let connections_before = server.connections_received();

    server.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    let started = Instant::now();
    drive_load(&a, &mut scheme);
    let took = started.elapsed();
    server.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    assert!(a.metric("idgate_redis_errors_total{kind=\"oom\"}") >= 200.0);
    assert_eq!(outcome(&a, &fresh(&mut scheme)), "valid");
    assert_eq!(outcome(&a, &before), "replayed");

    // Minus the three `redis-cli` connections since the first count.
    let made = server.connections_received() - connections_before - 3;
    eprintln!("OOM for {took:?}: {made} connections");
    assert!(
        made <= 1,
        "{made} connections while answering OOM for {took:?}"
    );
    assert_eq!(readyz(&a), 200);
}
