//! `replay.redis_cluster` against a real 3-primary Redis Cluster (tests/common/redis.rs:
//! three `redis-server --cluster-enabled yes` joined by `redis-cli --cluster create`): replays
//! caught across two gateways, the 64-way race, and the keys spread over every primary by slot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::Scheme;
use common::gateway::{Client, Options, TestGateway};
use common::http;
use common::redis::{self, RedisCluster};

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
