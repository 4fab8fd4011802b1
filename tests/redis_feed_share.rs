//! What the shared revocation feed keeps beside its stream, against a real `redis-server`
//! (AOF on): shared snapshots written by the lock holder, the stream trimmed behind them, an
//! instance joining with an empty data directory (or coming back after the trim) through a
//! snapshot, bulk imports published with `idgate revocations import --feed` and applied by
//! every running instance at once, and an instance killed with `SIGKILL` while updates are
//! published keeping every acknowledged one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Scheme;
use common::gateway::{
    BinaryGateway, Client, Options, TestGateway, eventually, readyz, write_config,
};
use common::redis::{self, RedisServer};
use idgate::clock::unix_now;
use idgate::revocation::feed::{FeedError, FeedKeys, Publisher};
use idgate::revocation::feed_share::{self, ImportCommit, pack};
use idgate::revocation::{Entry, Kind, Status};

const STREAM: &str = "idgate:revocations";

fn feed_options(url: &str, snapshot_s: u64) -> Options {
    Options {
        revocation_extra: format!(
            "feed = \"redis\"\nredis_url = \"{url}\"\nfeed_heartbeat_ms = 200\nfeed_snapshot_s = {snapshot_s}\nmax_staleness_s = 300\n"
        ),
        request_timeout_ms: 10_000,
        ..Options::default()
    }
}

fn durable_redis() -> RedisServer {
    RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "everysec"])
}

fn ready(gateway: &impl Client, within: Duration) {
    eventually(within, "/readyz 200", || readyz(gateway) == 200);
}

/// One update line: every seventh ID suspended, every eleventh reinstated, the rest revoked.
fn line(n: u64, at: i64) -> String {
    let status = match n {
        n if n % 11 == 0 => "active",
        n if n % 7 == 0 => "suspended",
        _ => "revoked",
    };
    let reason = if status == "active" {
        ""
    } else {
        ",\"reason\":\"stolen\""
    };
    format!(
        "{{\"kind\":\"credential\",\"id\":\"card-{n}\",\"status\":\"{status}\"{reason},\"at\":{at}}}\n"
    )
}

/// Posts updates `from..to` to `gateway` in requests of `per_request` lines.
fn post_updates(gateway: &impl Client, from: u64, to: u64, per_request: u64) {
    let at = unix_now();
    let mut n = from;
    while n < to {
        let end = (n + per_request).min(to);
        let body: String = (n..end).map(|i| line(i, at)).collect();
        let reply = gateway.revoke(&body);
        assert_eq!(reply.status, 200, "{}", reply.text());
        n = end;
    }
}

/// The `results` of a status query for `ids`, in order.
fn statuses(gateway: &impl Client, ids: &[String]) -> Vec<serde_json::Value> {
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let reply = gateway.status(&[], &ids);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["results"].as_array().unwrap().clone()
}

/// The sequence number of the stream's first entry (0: the stream is empty).
fn first_entry(server: &RedisServer) -> u64 {
    // The entry's fields are binary: only its ID is asked for.
    let script = "local r = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1) if #r == 0 then return '0-0' end return r[1][1]";
    let out = server.cli(&["EVAL", script, "1", STREAM]);
    out.trim()
        .strip_suffix("-0")
        .and_then(|n| n.parse().ok())
        .expect("a stream ID")
}

/// What [`line`] made of each ID (`active` for one never posted).
fn expected_statuses(ids: &[String]) -> Vec<&'static str> {
    ids.iter()
        .map(
            |id| match id.strip_prefix("card-").and_then(|n| n.parse::<u64>().ok()) {
                Some(n) if n % 11 == 0 => "active",
                Some(n) if n % 7 == 0 => "suspended",
                Some(_) => "revoked",
                None => "active",
            },
        )
        .collect()
}

fn status_texts(gateway: &impl Client, ids: &[String]) -> Vec<String> {
    statuses(gateway, ids)
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect()
}

/// 1,000 IDs spread over `0..max`, and some that were never posted.
fn sample(max: u64) -> Vec<String> {
    (0..1000u64)
        .map(|i| {
            if i % 10 == 9 {
                format!("never-{i}")
            } else {
                format!("card-{}", (i * 7919) % max)
            }
        })
        .collect()
}

#[test]
fn an_instance_joining_after_100000_updates_and_a_trim_answers_like_the_others() {
    if !redis::available() {
        return;
    }
    let server = durable_redis();
    let scheme = Scheme::live(181);
    let options = feed_options(&server.url(), 1);
    let a = TestGateway::start(&scheme, &options);
    ready(&a, Duration::from_secs(15));
    let b = TestGateway::start(&scheme, &options);
    ready(&b, Duration::from_secs(15));
    post_updates(&a, 0, 10_000, 1000);
    eventually(Duration::from_secs(5), "B applied the first 10,000", || {
        statuses(&b, &["card-9998".into()])[0]["status"] == "revoked"
    });
    // B goes away; A takes 90,000 more, and the stream is trimmed past where B stopped.
    let b_position = b.metric("idgate_revocation_feed_applied_sequence") as u64;
    assert!(b_position >= 10);
    let b_dir = b.stop();
    post_updates(&a, 10_000, 100_000, 1000);
    eventually(
        Duration::from_secs(20),
        "the stream trimmed past where B stopped",
        || first_entry(&server) > b_position + 1,
    );
    assert!(a.metric("idgate_revocation_feed_lock_holder") == 1.0);
    assert!(
        a.metric("idgate_revocation_feed_snapshot_timestamp_seconds") >= (unix_now() - 30) as f64
    );

    // D: an empty data directory. B: its old one, behind the trim.
    let d = TestGateway::start(&scheme, &options);
    ready(&d, Duration::from_secs(30));
    let config = b_dir.path().join("idgate.toml");
    let b = TestGateway::start_with(b_dir, &config);
    ready(&b, Duration::from_secs(30));
    let ids = sample(100_000);
    let expected = statuses(&a, &ids);
    let revoked = expected.iter().filter(|r| r["status"] == "revoked").count();
    let suspended = expected
        .iter()
        .filter(|r| r["status"] == "suspended")
        .count();
    assert!(revoked > 500 && suspended > 50, "{revoked} {suspended}");
    for gateway in [&d, &b] {
        assert_eq!(statuses(gateway, &ids), expected);
        assert!(gateway.metric("idgate_revocation_feed_gaps_repaired_total") >= 1.0);
        assert_eq!(
            gateway.metric("idgate_revocation_entries"),
            a.metric("idgate_revocation_entries")
        );
    }
    // And they follow the feed from there.
    post_updates(&a, 100_000, 100_010, 10);
    for gateway in [&d, &b] {
        eventually(Duration::from_secs(2), "a later update", || {
            statuses(gateway, &["card-100008".into()])[0]["status"] == "revoked"
        });
    }
}

#[test]
fn a_bulk_import_through_the_feed_reaches_every_running_instance_all_at_once() {
    if !redis::available() {
        return;
    }
    let server = durable_redis();
    let scheme = Scheme::live(182);
    let options = feed_options(&server.url(), 300);
    let a = TestGateway::start(&scheme, &options);
    let b = TestGateway::start(&scheme, &options);
    ready(&a, Duration::from_secs(15));
    ready(&b, Duration::from_secs(15));
    let files = tempfile::tempdir().unwrap();
    let at = unix_now();
    let count = 400_000u64;
    let text: String = (0..count).map(|n| line(n, at)).collect();
    let good = files.path().join("good.jsonl");
    std::fs::write(&good, &text).unwrap();
    // A bad line anywhere: nothing is published.
    let mut broken = text.clone();
    broken.push_str("{\"kind\":\"credential\"}\n");
    let bad = files.path().join("bad.jsonl");
    std::fs::write(&bad, broken).unwrap();
    let out = Command::new(common::idgate_bin())
        .args([
            "revocations",
            "import",
            bad.to_str().unwrap(),
            "--feed",
            &server.url(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 400001"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        server.cli(&["KEYS", "idgate:revocations:import:*"]).trim(),
        ""
    );
    assert_eq!(
        server.cli(&["EXISTS", "idgate:revocations:imports"]).trim(),
        "0"
    );
    assert_eq!(
        a.metric("idgate_revocation_feed_imports_applied_total"),
        0.0
    );

    let started = Instant::now();
    let out = Command::new(common::idgate_bin())
        .args([
            "revocations",
            "import",
            good.to_str().unwrap(),
            "--feed",
            &server.url(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = sample(count);
    let expected = expected_statuses(&ids);
    for gateway in [&a, &b] {
        eventually(Duration::from_secs(20), "the import applied", || {
            gateway.metric("idgate_revocation_feed_imports_applied_total") == 1.0
        });
        assert_eq!(status_texts(gateway, &ids), expected);
    }
    eprintln!(
        "400,000 entries imported through the feed to two instances in {:?}",
        started.elapsed()
    );
}

#[test]
fn an_import_commit_is_refused_when_a_chunk_is_gone_and_snapshots_fall_back_when_damaged() {
    if !redis::available() {
        return;
    }
    let server = durable_redis();
    let url = server.url();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = ::redis::Client::open(url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let keys = FeedKeys::new(STREAM);
        let publisher = Publisher::new(connection.clone(), keys.clone(), Duration::from_secs(2));
        let slots: Vec<_> = (0..1000)
            .map(|n| {
                Entry {
                    kind: Kind::Credential,
                    id: format!("c{n}"),
                    status: Status::Revoked,
                    reason: None,
                    before: None,
                    at: 1000 + n,
                }
                .slot()
            })
            .collect();
        let (chunks, chunked) = pack(&slots);
        let id = [5u8; 16];
        let deadline = Instant::now() + Duration::from_secs(5);
        for (i, chunk) in chunks.iter().enumerate() {
            publisher
                .put_chunk(&keys.import_chunk(&id, i as u32), chunk, deadline)
                .await
                .unwrap();
        }
        let missing = ImportCommit {
            id,
            chunked: feed_share::Chunked {
                chunks: chunked.chunks + 1,
                ..chunked
            },
        };
        match publisher.commit_import(&missing, deadline).await {
            Err(FeedError::Refused(_)) => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
        let n = publisher
            .commit_import(&ImportCommit { id, chunked }, deadline)
            .await
            .unwrap();
        assert_eq!(n, 1);

        // Three snapshots: two kept, the stream trimmed behind the older one kept.
        for position in [1u64, 2, 3] {
            let published = feed_share::publish_snapshot(
                &mut connection,
                &keys,
                position,
                &slots[..position as usize * 100],
                7,
            )
            .await
            .unwrap();
            assert_eq!(
                published.trimmed_to,
                (position >= 2).then_some(position - 1)
            );
        }
        let (manifest, loaded) = feed_share::load_snapshot(&mut connection, &keys, 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((manifest.position, loaded.len()), (3, 300));
        assert_eq!(loaded, slots[..300].to_vec());
        // Snapshot 1 is gone, and the import (committed at 1, covered by snapshot 2) too.
        assert!(
            feed_share::load_snapshot(&mut connection, &keys, 0)
                .await
                .unwrap()
                .is_some()
        );
        let _: () = ::redis::cmd("SETRANGE")
            .arg(format!("{STREAM}:snap:3:0"))
            .arg(5)
            .arg("x")
            .query_async(&mut connection)
            .await
            .unwrap();
        let (manifest, loaded) = feed_share::load_snapshot(&mut connection, &keys, 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((manifest.position, loaded.len()), (2, 200));
        assert!(
            feed_share::load_snapshot(&mut connection, &keys, 3)
                .await
                .unwrap()
                .is_none()
        );
    });
    assert_eq!(
        server.cli(&["EXISTS", &format!("{STREAM}:snap:1")]).trim(),
        "0"
    );
    assert_eq!(
        server.cli(&["KEYS", "idgate:revocations:import:*"]).trim(),
        ""
    );
}

#[test]
fn an_instance_killed_while_updates_are_published_keeps_every_acknowledged_one() {
    if !redis::available() {
        return;
    }
    let server = durable_redis();
    let scheme = Scheme::live(183);
    let options = feed_options(&server.url(), 300);
    let a = TestGateway::start(&scheme, &options);
    ready(&a, Duration::from_secs(15));
    let b_dir = tempfile::tempdir().unwrap();
    let config = write_config(b_dir.path(), &scheme, &options);
    let b = BinaryGateway::start(&config);
    // 10,000 updates in 100 requests; B is killed a third of the way through.
    let publisher = {
        let (public, operator) = (a.public, a.operator);
        std::thread::spawn(move || {
            let client = common::gateway::Addresses { public, operator };
            post_updates(&client, 0, 10_000, 100);
        })
    };
    eventually(Duration::from_secs(20), "B applying", || {
        b.metric("idgate_revocation_feed_applied_sequence") >= 30.0
    });
    b.signal("KILL");
    let _ = b.wait(Duration::from_secs(5));
    publisher.join().unwrap();
    let b = BinaryGateway::start(&config);
    // Every update was acknowledged (post_updates asserts each 200): A and B hold them all.
    let ids: Vec<String> = (0..10_000)
        .step_by(7)
        .map(|n| format!("card-{n}"))
        .collect();
    let expected = expected_statuses(&ids);
    assert_eq!(status_texts(&a, &ids), expected);
    eventually(Duration::from_secs(10), "B caught up", || {
        status_texts(&b, &ids) == expected
    });
    assert_eq!(b.metric("idgate_revocation_records"), 10_000.0);
    assert_eq!(a.metric("idgate_revocation_records"), 10_000.0);
}
