//! `replay.redis_cluster` against a real 3-primary Redis Cluster (tests/common/redis.rs:
//! three `redis-server --cluster-enabled yes` joined by `redis-cli --cluster create`): replays
//! caught across two gateways, the 64-way race, and the keys spread over every primary by slot;
//! faults: a primary killed (`SIGKILL`), a slot moved to another primary with its keys
//! (`CLUSTER SETSLOT` + `MIGRATE`), a primary stopped (`SIGSTOP`) under load without a reconnect
//! storm.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::Scheme;
use common::gateway::{Client, Options, TestGateway, eventually, readyz};
use common::http;
use common::redis::{self, RedisCluster};
use idgate::clock::unix_now;

const TIMEOUT_MS: u64 = 250;

/// A ready gateway on the cluster, knowing it by `seeds`.
fn gateway(scheme: &Scheme, seeds: &[String]) -> TestGateway {
    let gateway = TestGateway::start(
        scheme,
        &Options {
            replay_extra: redis::cluster_settings(seeds, TIMEOUT_MS),
            ..Options::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while http::request(gateway.operator, "GET", "/readyz", &[], b"")
        .unwrap()
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "the gateway never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    gateway
}

fn outcome(gateway: &impl Client, presentation: &str) -> String {
    gateway.outcomes(&[presentation.to_string()]).remove(0)
}

#[test]
fn two_gateways_on_a_three_primary_cluster_share_replays_and_spread_keys_over_every_primary() {
    if !redis::available() {
        return;
    }
    let cluster = RedisCluster::start();
    let mut scheme = Scheme::live(1621);
    // A knows every node; B only one, and learns the rest from CLUSTER SLOTS.
    let a = gateway(&scheme, &cluster.urls());
    let b = gateway(&scheme, &cluster.urls()[1..2]);
    for gateway in [&a, &b] {
        assert_eq!(gateway.metric("idgate_redis_nodes{state=\"up\"}"), 3.0);
    }

    let p = scheme.present("1012345678", "card-0001");
    assert_eq!(outcome(&a, &p), "valid");
    assert_eq!(outcome(&b, &p), "replayed");
    assert_eq!(outcome(&a, &p), "replayed");

    // One batch of 60 (one pipeline per primary): valid on B, all replayed on A.
    let batch: Vec<String> = (0..60)
        .map(|i| scheme.present(&format!("{}", 2_000_000_000 + i), &format!("card-{i}")))
        .collect();
    assert_eq!(b.outcomes(&batch), vec!["valid"; 60]);
    assert_eq!(a.outcomes(&batch), vec!["replayed"; 60]);
    // And mixed with new ones, in order.
    let new = scheme.present("3012345678", "card-0003");
    assert_eq!(
        a.outcomes(&[batch[7].clone(), new.clone(), p.clone(), new]),
        ["replayed", "valid", "replayed", "replayed"]
    );

    // Every primary holds its own epoch key and some of the 62 entries (by slot); nothing is
    // anywhere else. With 62 random keys over 3 primaries, one getting none has odds ~1e-10.
    let mut total = 0;
    for node in &cluster.nodes {
        let epochs = node
            .cli(&["KEYS", "idgate:replay:epoch*"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count() as u64;
        assert_eq!(epochs, 1, "node {}: epoch keys", node.port);
        let entries = node.dbsize() - epochs;
        assert!(entries > 0, "node {} holds no replay entry", node.port);
        total += entries;
    }
    assert_eq!(total, 62);
    for gateway in [&a, &b] {
        assert_eq!(
            gateway.metric("idgate_replay_unavailable_total{cause=\"redis_error\"}"),
            0.0
        );
        assert_eq!(
            gateway.metric("idgate_replay_unavailable_total{cause=\"redis_down\"}"),
            0.0
        );
    }
}

#[test]
fn sixty_four_concurrent_requests_over_two_gateways_on_a_cluster_yield_exactly_one_valid() {
    if !redis::available() {
        return;
    }
    let cluster = RedisCluster::start();
    let mut scheme = Scheme::live(1622);
    let gateways = Arc::new([
        gateway(&scheme, &cluster.urls()),
        gateway(&scheme, &cluster.urls()),
    ]);
    // Three rounds with three presentations (their keys in three slots, most likely not all on
    // one primary).
    for round in 0..3 {
        let presentation = scheme.present("1012345678", &format!("card-{round}"));
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
            "round {round}: {outcomes:?}"
        );
        assert_eq!(
            outcomes.iter().filter(|o| *o == "replayed").count(),
            63,
            "round {round}: {outcomes:?}"
        );
    }
}

/// A presentation whose KB-JWT `iat` is the current second.
fn fresh(scheme: &mut Scheme, jti: &str) -> String {
    // `Scheme` stamps KB-JWTs `now - 2`.
    scheme.now = unix_now() + 2;
    scheme.present("1012345678", jti)
}

/// The claims of a compact JWT.
fn claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&idgate::b64::decode(payload).unwrap()).unwrap()
}

/// The Redis key of a presentation's nonce (default `key_prefix`), as the store computes it.
fn redis_key(presentation: &str) -> Vec<u8> {
    let issuer = claims(presentation.split('~').next().unwrap());
    let kb = claims(presentation.rsplit('~').next().unwrap());
    let key = idgate::verify::replay_key(
        issuer["iss"].as_str().unwrap(),
        issuer["jti"].as_str().unwrap(),
        kb["nonce"].as_str().unwrap(),
    );
    let mut out = b"idgate:replay:".to_vec();
    out.extend_from_slice(&key.to_le_bytes());
    out
}

fn slot_of(presentation: &str) -> usize {
    idgate::replay::redis::slot(&redis_key(presentation)) as usize
}

/// One command with binary arguments on one node (`redis-cli` takes text only).
fn query<T: ::redis::FromRedisValue>(url: &str, command: &::redis::Cmd) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut connection = tokio::time::timeout(
            Duration::from_secs(5),
            ::redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection(),
        )
        .await
        .expect("connect timed out")
        .unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            command.query_async(&mut connection),
        )
        .await
        .expect("no answer in time")
        .unwrap()
    })
}

fn exists(url: &str, key: &[u8]) -> bool {
    let n: i64 = query(url, ::redis::cmd("EXISTS").arg(key));
    n == 1
}

/// T4 (a): one primary of three killed (`SIGKILL`, no replica to take over). Items whose keys
/// map to its slots are `replay_unavailable`, never `valid`, already accepted or not; items on
/// the live primaries work as before (fresh ones `valid` once, accepted ones `replayed`);
/// `/readyz` is 503 (readiness needs every primary). Checked right after the kill and again
/// once the live primaries marked the dead one `fail` (node timeout 5 s). The cluster runs with
/// `cluster-require-full-coverage no`, so that the live primaries keep serving their slots once
/// the failure is agreed (with the default `yes` they answer `CLUSTERDOWN`, also
/// `replay_unavailable`).
#[test]
fn a_killed_primary_fails_its_slots_closed_and_the_other_primaries_keep_working() {
    if !redis::available() {
        return;
    }
    const DEAD: usize = 1;
    let mut cluster = RedisCluster::start_with(&["--cluster-require-full-coverage", "no"]);
    let mut scheme = Scheme::live(1623);
    let a = gateway(&scheme, &cluster.urls());
    let owners = cluster.slot_owners();
    let node_of = |p: &str| owners[slot_of(p)].unwrap();
    let accepted: Vec<String> = (0..24)
        .map(|i| fresh(&mut scheme, &format!("card-{i}")))
        .collect();
    assert_eq!(a.outcomes(&accepted), vec!["valid"; 24]);
    // The keys are where this test computes them (so it knows which items the dead one held).
    for p in &accepted {
        assert!(exists(&cluster.nodes[node_of(p)].url(), &redis_key(p)));
    }
    let on_dead = accepted.iter().filter(|p| node_of(p) == DEAD).count();
    assert!(
        on_dead > 0 && on_dead < accepted.len(),
        "{on_dead} of {} on one primary",
        accepted.len()
    );
    // Every answer of the test, by presentation: none may be `valid` twice.
    let mut answers: HashMap<String, Vec<String>> = accepted
        .iter()
        .map(|p| (p.clone(), vec!["valid".to_string()]))
        .collect();

    cluster.nodes[DEAD].kill();
    let killed = Instant::now();
    let live = cluster.nodes[(DEAD + 1) % 3].port;
    let dead_id_line = |line: &str| line.contains(&format!(":{}@", cluster.nodes[DEAD].port));
    let mut agreed_at = None;
    let mut round = 0;
    let mut fresh_on_dead = 0;
    loop {
        let new: Vec<String> = (0..12)
            .map(|i| fresh(&mut scheme, &format!("card-r{round}-{i}")))
            .collect();
        let mut batch = new.clone();
        batch.extend(accepted.iter().cloned());
        let outcomes = a.outcomes(&batch);
        for (p, answer) in batch.iter().zip(&outcomes) {
            let expected = if node_of(p) == DEAD {
                "replay_unavailable"
            } else if new.contains(p) {
                "valid"
            } else {
                "replayed"
            };
            assert_eq!(answer, expected, "round {round}, slot {}", slot_of(p));
            answers.entry(p.clone()).or_default().push(answer.clone());
        }
        fresh_on_dead += new.iter().filter(|p| node_of(p) == DEAD).count();
        // The fresh ones again, on their own: accepted once.
        for (p, answer) in new.iter().zip(a.outcomes(&new)) {
            let expected = if node_of(p) == DEAD {
                "replay_unavailable"
            } else {
                "replayed"
            };
            assert_eq!(answer, expected, "round {round} again");
            answers.entry(p.clone()).or_default().push(answer);
        }
        assert_eq!(readyz(&a), 503, "round {round}");
        round += 1;
        if let Some(at) = agreed_at {
            if Instant::now() > at + Duration::from_secs(1) {
                break;
            }
        } else if redis::cli(live, &["CLUSTER", "NODES"])
            .lines()
            .any(|l| dead_id_line(l) && l.contains("fail") && !l.contains("fail?"))
        {
            agreed_at = Some(Instant::now());
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the live primaries never marked the dead one failed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(fresh_on_dead > 0);
    for (presentation, outcomes) in &answers {
        let valid = outcomes.iter().filter(|o| *o == "valid").count();
        assert!(
            valid <= 1,
            "{presentation}: accepted {valid} times: {outcomes:?}"
        );
    }
    assert_eq!(a.metric("idgate_redis_nodes{state=\"up\"}"), 2.0);
    assert_eq!(a.metric("idgate_redis_nodes{state=\"down\"}"), 1.0);
    assert!(
        a.metric("idgate_replay_unavailable_total{cause=\"redis_down\"}")
            + a.metric("idgate_replay_unavailable_total{cause=\"redis_timeout\"}")
            + a.metric("idgate_replay_unavailable_total{cause=\"redis_error\"}")
            >= 1.0
    );
    // No slot changed owner: no watermark was raised.
    assert_eq!(
        a.metric("idgate_replay_unavailable_total{cause=\"watermark\"}"),
        0.0
    );
}

/// T4 (b): one slot holding an accepted presentation's nonce moved from its primary X to
/// another primary Y, keys included (`CLUSTER SETSLOT … IMPORTING/MIGRATING`, `MIGRATE`,
/// `CLUSTER SETSLOT … NODE` on every node), under a running gateway. The gateway's next item
/// there is answered `MOVED` by X, it re-reads the topology, and since a slot changed owner it
/// raises the lost-data watermark (`idgate_redis_epoch_changes_total` rises): the presentation
/// accepted before the move is never `valid` again (`replayed` while the old map is used, then
/// `replay_unavailable` under the watermark), the gateway is ready again, and fresh
/// presentations are `valid` once the watermark (16 s) has passed.
#[test]
fn a_slot_moved_to_another_primary_raises_the_watermark_and_never_accepts_an_old_presentation() {
    if !redis::available() {
        return;
    }
    let cluster = RedisCluster::start();
    let mut scheme = Scheme::live(1624);
    let a = gateway(&scheme, &cluster.urls());
    let p = fresh(&mut scheme, "card-moved");
    let q = fresh(&mut scheme, "card-stays");
    assert_eq!(a.outcomes(&[p.clone(), q.clone()]), ["valid", "valid"]);
    let slot = slot_of(&p);
    let from = cluster.slot_owners()[slot].unwrap();
    let to = (from + 1) % 3;
    let other = (from + 2) % 3;
    let key = redis_key(&p);
    assert!(exists(&cluster.nodes[from].url(), &key));
    let changes = a.metric("idgate_redis_epoch_changes_total");

    let (from_id, to_id) = (cluster.node_id(from), cluster.node_id(to));
    let slot_arg = slot.to_string();
    cluster.nodes[to].cli(&["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &from_id]);
    cluster.nodes[from].cli(&["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &to_id]);
    let keys: Vec<Vec<u8>> = query(
        &cluster.nodes[from].url(),
        ::redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(1000),
    );
    assert!(keys.contains(&key), "slot {slot} does not hold the key");
    let _: ::redis::Value = query(
        &cluster.nodes[from].url(),
        ::redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(cluster.nodes[to].port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys),
    );
    for node in [to, from, other] {
        cluster.nodes[node].cli(&["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id]);
    }
    assert!(exists(&cluster.nodes[to].url(), &key), "the key moved");
    assert_eq!(cluster.slot_owners()[slot], Some(to));

    // Until the gateway has seen the move: never valid.
    let moved = Instant::now();
    loop {
        let answers = a.outcomes(&[p.clone(), q.clone()]);
        for answer in &answers {
            assert!(
                answer == "replayed" || answer == "replay_unavailable",
                "after the move: {answer}"
            );
        }
        if a.metric("idgate_redis_epoch_changes_total") > changes {
            break;
        }
        assert!(
            moved.elapsed() < Duration::from_secs(10),
            "the gateway did not see the slot move"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Under the watermark: both presentations accepted before the move.
    assert_eq!(
        a.outcomes(&[p.clone(), q.clone()]),
        ["replay_unavailable", "replay_unavailable"]
    );
    eventually(
        Duration::from_secs(10),
        "ready again after the move",
        || readyz(&a) == 200,
    );
    assert_eq!(a.metric("idgate_redis_nodes{state=\"up\"}"), 3.0);
    // Fresh presentations are valid again once past the watermark (each answer meanwhile
    // `replay_unavailable`), and once only.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    let new = loop {
        let new = fresh(&mut scheme, &format!("card-new-{i}"));
        match outcome(&a, &new).as_str() {
            "valid" => break new,
            "replay_unavailable" => {}
            other => panic!("a fresh presentation got {other}"),
        }
        assert!(Instant::now() < deadline, "no fresh presentation valid");
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(outcome(&a, &new), "replayed");
    assert_eq!(
        a.outcomes(&[p.clone(), q.clone()]),
        ["replay_unavailable", "replay_unavailable"]
    );
    assert!(a.metric("idgate_replay_unavailable_total{cause=\"watermark\"}") >= 2.0);
}

/// T6 on a cluster: one primary of three stopped (`SIGSTOP`) under 200 requests over ~2 s
/// (three presentations each, spread over the slots). Items on the stopped primary are
/// `replay_unavailable`, the others `valid`; and, counted by the servers
/// (`total_connections_received`), the stopped primary saw at most its supervisor's backoff
/// schedule ([`redis::supervisor_attempts_within`]) + the reconnect after `SIGCONT` + one
/// spare + the topology reads (at most one per 500 ms, [`redis::topology_reads_within`]); each
/// live primary at most the topology reads + one spare.
#[test]
fn a_stopped_primary_under_load_sees_only_backed_off_reconnects_and_throttled_topology_reads() {
    if !redis::available() {
        return;
    }
    const STOPPED: usize = 0;
    let cluster = RedisCluster::start();
    let mut scheme = Scheme::live(1625);
    let a = gateway(&scheme, &cluster.urls());
    let owners = Arc::new(cluster.slot_owners());
    let batches: Vec<Vec<[String; 3]>> = (0..4)
        .map(|t| {
            (0..50)
                .map(|i| [0, 1, 2].map(|j| fresh(&mut scheme, &format!("card-{t}-{i}-{j}"))))
                .collect()
        })
        .collect();
    let before: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|n| n.connections_received())
        .collect();

    cluster.nodes[STOPPED].pause();
    let stopped_at = Instant::now();
    let public = a.public;
    let start = Arc::new(Barrier::new(batches.len()));
    let threads: Vec<_> = batches
        .into_iter()
        .enumerate()
        .map(|(t, mine)| {
            let start = Arc::clone(&start);
            let owners = Arc::clone(&owners);
            std::thread::spawn(move || {
                start.wait();
                let began = Instant::now();
                for (i, presentations) in mine.into_iter().enumerate() {
                    let reply = http::post_json(
                        public,
                        "/v1/verify",
                        common::gateway::API_KEY,
                        &serde_json::json!({ "presentations": presentations }),
                    );
                    assert_eq!(reply.status, 200, "{}", reply.text());
                    for (j, p) in presentations.iter().enumerate() {
                        let expected = if owners[slot_of(p)] == Some(STOPPED) {
                            "replay_unavailable"
                        } else {
                            "valid"
                        };
                        assert_eq!(
                            reply.json()["results"][j]["outcome"],
                            expected,
                            "thread {t} request {i} item {j}"
                        );
                    }
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
    cluster.nodes[STOPPED].resume();
    // With a margin for an attempt that began as the server resumed.
    let stopped_for = stopped_at.elapsed() + Duration::from_millis(50);
    eventually(Duration::from_secs(10), "every primary up again", || {
        a.metric("idgate_redis_nodes{state=\"up\"}") == 3.0
    });
    assert_eq!(readyz(&a), 200);
    let all_along = stopped_at.elapsed() + Duration::from_millis(50);

    let timeout = Duration::from_millis(TIMEOUT_MS);
    let reads = redis::topology_reads_within(all_along);
    for (i, node) in cluster.nodes.iter().enumerate() {
        // Minus this `redis-cli` connection.
        let made = node.connections_received() - before[i] - 1;
        let bound = if i == STOPPED {
            redis::supervisor_attempts_within(stopped_for, timeout) + 1 + 1 + reads
        } else {
            reads + 1
        };
        eprintln!(
            "node {i}: {made} connections (bound {bound}; stopped for {stopped_for:?}, {all_along:?} in all)"
        );
        assert!(
            made <= bound,
            "node {i}: {made} connections (at most {bound}; stopped for {stopped_for:?}, {all_along:?} in all)"
        );
    }
}
