//! The revocation feed's stream (src/revocation/feed.rs) against a real `redis-server`:
//! contiguous sequence IDs under concurrent publishers, a repeated token appending nothing, and
//! a publish whose first attempt is stuck in a stopped server (`SIGSTOP`) landing exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::redis::{self, RedisServer};
use idgate::clock::unix_now;
use idgate::id::Id;
use idgate::revocation::feed::{
    self, Applier, EntryKind, FeedKeys, Persistence, Position, Publisher, Step,
};
use idgate::revocation::log::RecordBuilder;
use idgate::revocation::store::{RevocationStore, revocation_dir};
use idgate::revocation::{Entry, Kind, Reason, Status};

async fn connect(url: &str) -> ::redis::aio::MultiplexedConnection {
    let client = ::redis::Client::open(url).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// A publisher on stream `feed` of `server`, each attempt bounded by `attempt`.
fn publisher_on(
    rt: &tokio::runtime::Runtime,
    server: &RedisServer,
    attempt: Duration,
) -> Publisher {
    let url = server.url();
    rt.block_on(async { Publisher::new(connect(&url).await, FeedKeys::new("feed"), attempt) })
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
            .publish(EntryKind::Heartbeat, &heartbeat(), deadline)
            .await
            .unwrap();
        let again = publisher
            .publish_with_token(EntryKind::Update, b"one", &token, deadline)
            .await
            .unwrap();
        assert_eq!((first, other, again), (1, 2, 1));
    });
    assert_eq!(server.cli(&["XLEN", "feed"]).trim(), "2");
    // A write's token is remembered for a day; a heartbeat's for a minute (they come every
    // second).
    let mut ttls: Vec<i64> = server
        .cli(&["KEYS", "feed:req:*"])
        .lines()
        .map(|key| server.cli(&["TTL", key.trim()]).trim().parse().unwrap())
        .collect();
    ttls.sort_unstable();
    assert_eq!(ttls.len(), 2, "{ttls:?}");
    assert!((1..=60).contains(&ttls[0]), "{ttls:?}");
    assert!(ttls[1] > 86_000, "{ttls:?}");
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
    let rt = runtime();
    let publisher = publisher_on(&rt, &server, Duration::from_millis(150));
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
    let rt = runtime();
    let publisher = publisher_on(&rt, &server, Duration::from_millis(100));
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
/// its `appendfsync` is reported as the server has it. One that may evict is refused always.
#[test]
fn a_feed_redis_without_aof_is_refused_unless_volatile_is_allowed() {
    if !redis::available() {
        return;
    }
    let volatile = RedisServer::start();
    let durable = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let evicting =
        RedisServer::start_with(&["--appendonly", "yes", "--maxmemory-policy", "allkeys-lru"]);
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
                appendfsync: "always".into(),
                eviction: "noeviction".into(),
            }
        );
        assert!(found.check(false).is_ok());

        // A policy that evicts is refused, volatile allowed or not.
        let evicting = Persistence::read(&mut connect(&evicting.url()).await)
            .await
            .unwrap();
        assert_eq!(evicting.eviction, "allkeys-lru");
        for allow_volatile in [false, true] {
            let refusal = evicting.check(allow_volatile).unwrap_err();
            assert!(
                refusal.contains("maxmemory-policy allkeys-lru"),
                "{refusal}"
            );
        }
    });
}

/// One admin request's payload: credential `card-<n>` revoked.
fn update(n: usize) -> Vec<u8> {
    let mut builder = RecordBuilder::default();
    builder.push(&Entry {
        kind: Kind::Credential,
        id: format!("card-{n}"),
        status: Status::Revoked,
        reason: Some(Reason::Stolen),
        before: None,
        at: 1_700_000_000 + n as i64,
    });
    builder.payload()
}

fn revoked(store: &RevocationStore, n: usize) -> bool {
    let id = format!("card-{n}");
    store
        .list()
        .lookup(Kind::Credential, Id::parse(&id).unwrap())
        .is_some_and(|r| r.status == Status::Revoked)
}

/// Steps until the applier reaches `to` (or fails the test after 5 s).
async fn catch_up(
    applier: &mut Applier,
    connection: &mut ::redis::aio::MultiplexedConnection,
    store: &RevocationStore,
    to: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while applier.position().sequence < to {
        assert!(
            Instant::now() < deadline,
            "stuck at {:?}",
            applier.position()
        );
        let step = applier
            .step(connection, store, Duration::from_millis(100))
            .await
            .unwrap();
        assert!(matches!(step, Step::Applied { .. }), "{step:?}");
    }
}

/// Two instances apply the same stream into their own durable stores. One restarts and resumes
/// from its recorded position; a newcomer after a trim sees a gap instead of skipping it; an
/// entry that does not decode stops the applier before it, never past it.
#[test]
fn instances_apply_the_feed_in_order_resume_after_a_restart_and_never_skip() {
    if !redis::available() {
        return;
    }
    let server = RedisServer::start();
    let url = server.url();
    let (a_dir, b_dir, c_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let keys = FeedKeys::new("idgate:revocations");
    runtime().block_on(async {
        let mut connection = connect(&url).await;
        let epoch = feed::feed_epoch(&mut connection, &keys).await.unwrap();
        assert_eq!(
            feed::feed_epoch(&mut connection, &keys).await.unwrap(),
            epoch
        );
        let publisher = Publisher::new(connection, keys.clone(), Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in 0..50 {
            publisher
                .publish(EntryKind::Update, &update(n), deadline)
                .await
                .unwrap();
        }
        publisher
            .publish(EntryKind::Heartbeat, &heartbeat(), deadline)
            .await
            .unwrap();

        let start = Position { epoch, sequence: 0 };
        let (a, _) = RevocationStore::open(a_dir.path(), 1 << 20).unwrap();
        let mut a_feed = Applier::new(keys.clone(), revocation_dir(a_dir.path()), start);
        let mut a_conn = connect(&url).await;
        catch_up(&mut a_feed, &mut a_conn, &a, 51).await;
        {
            let (b, _) = RevocationStore::open(b_dir.path(), 1 << 20).unwrap();
            let mut b_feed = Applier::new(keys.clone(), revocation_dir(b_dir.path()), start);
            let mut b_conn = connect(&url).await;
            catch_up(&mut b_feed, &mut b_conn, &b, 51).await;
            assert!((0..50).all(|n| revoked(&a, n) && revoked(&b, n)));
            assert_eq!((a.list().len(), b.list().len()), (50, 50));
        }
        // B is down while 10 more arrive; it resumes from its recorded position.
        for n in 50..60 {
            publisher
                .publish(EntryKind::Update, &update(n), deadline)
                .await
                .unwrap();
        }
        let recorded = Position::load(&revocation_dir(b_dir.path()))
            .unwrap()
            .unwrap();
        assert_eq!(
            recorded,
            Position {
                epoch,
                sequence: 51
            }
        );
        let (b, _) = RevocationStore::open(b_dir.path(), 1 << 20).unwrap();
        assert_eq!(b.list().len(), 50, "B's own log kept what it applied");
        let mut b_feed = Applier::new(keys.clone(), revocation_dir(b_dir.path()), recorded);
        let mut b_conn = connect(&url).await;
        catch_up(&mut b_feed, &mut b_conn, &b, 61).await;
        assert!((0..60).all(|n| revoked(&b, n)));
        assert_eq!(b.list().len(), 60);

        // Entries 1..=30 trimmed away: a newcomer from 0 finds a gap and applies nothing.
        server.cli(&["XTRIM", "idgate:revocations", "MINID", "31-0"]);
        let (c, _) = RevocationStore::open(c_dir.path(), 1 << 20).unwrap();
        let mut c_feed = Applier::new(keys.clone(), revocation_dir(c_dir.path()), start);
        let mut c_conn = connect(&url).await;
        let step = c_feed
            .step(&mut c_conn, &c, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(step, Step::Gap { at: 0, next: 31 });
        assert_eq!((c.list().len(), c_feed.position().sequence), (0, 0));
        assert_eq!(Position::load(&revocation_dir(c_dir.path())).unwrap(), None);

        // A good entry, then one that does not decode: the first is applied, the applier stops
        // before the second, and stays there.
        publisher
            .publish(EntryKind::Update, &update(60), deadline)
            .await
            .unwrap();
        server.cli(&["INCR", "idgate:revocations:seq"]);
        server.cli(&[
            "XADD",
            "idgate:revocations",
            "63-0",
            "k",
            "u",
            "r",
            "garbage",
        ]);
        for _ in 0..2 {
            let error = a_feed
                .step(&mut a_conn, &a, Duration::from_millis(100))
                .await
                .unwrap_err();
            assert!(error.to_string().contains("update payload"), "{error}");
            assert_eq!(a_feed.position().sequence, 62);
        }
        assert!(revoked(&a, 60));
        assert_eq!(
            Position::load(&revocation_dir(a_dir.path()))
                .unwrap()
                .unwrap()
                .sequence,
            62
        );

        // The feed's Redis comes back empty, and two updates are published before B reads
        // again: their sequence numbers (1, 2) lie below B's position (61). B notices the new
        // epoch, reads the new feed from its start, and applies both instead of skipping them.
        server.cli(&["FLUSHALL"]);
        for n in [100, 101] {
            publisher
                .publish(EntryKind::Update, &update(n), deadline)
                .await
                .unwrap();
        }
        let step = b_feed
            .step(&mut b_conn, &b, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(step, Step::NewEpoch);
        let renewed = Position::load(&revocation_dir(b_dir.path()))
            .unwrap()
            .unwrap();
        assert_ne!(renewed.epoch, epoch);
        assert_eq!(renewed.sequence, 0);
        catch_up(&mut b_feed, &mut b_conn, &b, 2).await;
        assert!(revoked(&b, 100) && revoked(&b, 101));
        assert_eq!(b.list().len(), 62, "what B held before the loss stays");
    });
}

/// A heartbeat's payload: the holder's clock, unix milliseconds (little-endian).
fn heartbeat() -> [u8; 8] {
    (unix_now() * 1000).to_le_bytes()
}
