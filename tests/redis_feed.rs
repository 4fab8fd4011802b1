//! The revocation feed's stream (src/revocation/feed.rs) against a real `redis-server`:
//! contiguous sequence IDs under concurrent publishers, a repeated token appending nothing, and
//! a publish whose first attempt is stuck in a stopped server (`SIGSTOP`) landing exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::redis::{self, RedisServer};
use idgate::revocation::feed::{self, EntryKind, FeedKeys, Persistence, Publisher};

async fn connect(url: &str) -> ::redis::aio::MultiplexedConnection {
    let client = ::redis::Client::open(url).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn concurrent_publishers_get_contiguous_sequence_numbers() {
    if !redis::available() {
        return;
    }
    let server = RedisServer::start();
    let url = server.url();
    runtime().block_on(async {
        let keys = FeedKeys::new("idgate:revocations");
        let publisher = Publisher::new(connect(&url).await, keys.clone(), Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut tasks = Vec::new();
        for task in 0..8u8 {
            let publisher = publisher.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..25u8 {
                    let payload = [task, i];
                    got.push((
                        publisher
                            .publish(EntryKind::Update, &payload, deadline)
                            .await
                            .unwrap(),
                        payload,
                    ));
                }
                got
            }));
        }
        let mut published = Vec::new();
        for task in tasks {
            published.extend(task.await.unwrap());
        }
        published.sort();
        let sequences: Vec<u64> = published.iter().map(|(n, _)| *n).collect();
        assert_eq!(sequences, (1..=200).collect::<Vec<u64>>());

        // A reader from 0 sees the same 200 entries, in order, with their payloads.
        let mut reader = connect(&url).await;
        let mut read = Vec::new();
        while read.len() < 200 {
            let after = read.last().map_or(0, |e: &feed::FeedEntry| e.sequence);
            let batch = feed::read_after(&mut reader, &keys, after, 64, Duration::from_millis(500))
                .await
                .unwrap();
            assert!(!batch.is_empty(), "the stream ended at {after}");
            read.extend(batch);
        }
        for (entry, (sequence, payload)) in read.iter().zip(&published) {
            assert_eq!(entry.sequence, *sequence);
            assert_eq!(entry.kind, EntryKind::Update);
            assert_eq!(entry.payload, payload);
        }
        // Nothing after the last one: the block times out empty.
        let more = feed::read_after(&mut reader, &keys, 200, 64, Duration::from_millis(100))
            .await
            .unwrap();
        assert!(more.is_empty());
    });
}

#[test]
fn a_repeated_token_appends_nothing_and_returns_the_first_number() {
    if !redis::available() {
        return;
    }
    let server = RedisServer::start();
    let url = server.url();
    runtime().block_on(async {
        let keys = FeedKeys::new("feed");
        let publisher = Publisher::new(connect(&url).await, keys, Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(5);
        let token = [7u8; 16];
        let first = publisher
            .publish_with_token(EntryKind::Update, b"one", &token, deadline)
            .await
            .unwrap();
        let other = publisher
            .publish(EntryKind::Heartbeat, b"", deadline)
            .await
            .unwrap();
        let again = publisher
            .publish_with_token(EntryKind::Update, b"one", &token, deadline)
            .await
            .unwrap();
        assert_eq!((first, other, again), (1, 2, 1));
    });
    assert_eq!(server.cli(&["XLEN", "feed"]).trim(), "2");
}

/// The first attempt reaches a stopped server and times out; the server resumes while the
/// publisher repeats the call with the same token. However the attempts interleave inside Redis,
/// exactly one entry lands, and the number returned is its number.
#[test]
fn a_publish_stuck_in_a_stopped_server_lands_exactly_once() {
    if !redis::available() {
        return;
    }
    let server = RedisServer::start();
    let url = server.url();
    let rt = runtime();
    let publisher = rt.block_on(async {
        Publisher::new(
            connect(&url).await,
            FeedKeys::new("feed"),
            Duration::from_millis(150),
        )
    });
    server.pause();
    let resumer = std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(600));
            server.resume();
        });
        let sequence = rt.block_on(publisher.publish(
            EntryKind::Update,
            b"payload",
            Instant::now() + Duration::from_secs(10),
        ));
        handle.join().unwrap();
        sequence
    });
    assert_eq!(resumer.unwrap(), 1);
    assert_eq!(server.cli(&["XLEN", "feed"]).trim(), "1");
    assert_eq!(server.cli(&["GET", "feed:seq"]).trim(), "1");
}

/// While the server stays stopped past the deadline, the publish reports an unknown outcome
/// instead of waiting on.
#[test]
fn a_publish_past_its_deadline_reports_failure_in_time() {
    if !redis::available() {
        return;
    }
    let server = RedisServer::start();
    let url = server.url();
    let rt = runtime();
    let publisher = rt.block_on(async {
        Publisher::new(
            connect(&url).await,
            FeedKeys::new("feed"),
            Duration::from_millis(100),
        )
    });
    server.pause();
    let started = Instant::now();
    let result = rt.block_on(publisher.publish(
        EntryKind::Update,
        b"payload",
        Instant::now() + Duration::from_millis(500),
    ));
    let took = started.elapsed();
    server.resume();
    assert!(result.is_err());
    assert!(took < Duration::from_millis(900), "{took:?}");
}

/// A feed Redis without an append-only file is refused unless volatility is allowed; with one,
/// its `appendfsync` is reported as the server has it.
#[test]
fn a_feed_redis_without_aof_is_refused_unless_volatile_is_allowed() {
    if !redis::available() {
        return;
    }
    let volatile = RedisServer::start();
    let durable = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    runtime().block_on(async {
        let found = Persistence::read(&mut connect(&volatile.url()).await)
            .await
            .unwrap();
        assert!(!found.appendonly);
        let refusal = found.check(false).unwrap_err();
        assert!(refusal.contains("appendonly no"), "{refusal}");
        assert!(found.check(true).is_ok());

        let found = Persistence::read(&mut connect(&durable.url()).await)
            .await
            .unwrap();
        assert_eq!(
            found,
            Persistence {
                appendonly: true,
                appendfsync: "always".into()
            }
        );
        assert!(found.check(false).is_ok());
    });
}
