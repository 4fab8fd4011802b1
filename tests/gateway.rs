//! The gateway over real HTTP on real sockets, in process (`127.0.0.1:0`, its own thread and
//! runtime): every outcome through `/v1/verify`, replays under concurrency, revocations, every
//! request-level error, overload, trust reload, metrics, h2c. Tests where the process itself is
//! the subject (signals, `kill -9`, the demo) are in `tests/gateway_process.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::gateway::{ADMIN_TOKEN, API_KEY, Client, Options, TELCO_KEY, TestGateway};
use common::http::{self, request};
use common::{AUDIENCE, Scheme};
use idgate::clock::unix_now;
use idgate::mint::{CredentialSpec, KeyBindingSpec};
use serde_json::{Value, json};

#[test]
fn every_outcome_is_produced_through_v1_verify() {
    let mut scheme = Scheme::live(31);
    let gateway = TestGateway::start(&scheme, &Options::default());
    assert_eq!(
        gateway
            .revoke(&common::revocations_jsonl(scheme.now))
            .status,
        200
    );
    let cases = common::outcome_cases(&mut scheme);
    let presentations: Vec<String> = cases.iter().map(|c| c.presentation.clone()).collect();
    let outcomes = gateway.outcomes(&presentations);
    let mut seen = BTreeSet::new();
    for (case, outcome) in cases.iter().zip(&outcomes) {
        assert_eq!(outcome, case.expected, "case {:?}", case.name);
        seen.insert(outcome.clone());
    }
    // replay_unavailable: a KB-JWT minted before the gateway started (its replay watermark).
    let holder = scheme.holder();
    let credential = scheme.issuer.issue(
        &mut scheme.rng,
        &CredentialSpec::id_card("5", "c-old", scheme.now - 86_400, Some(holder.public_key())),
    );
    let old = holder.present(
        &credential,
        None,
        &KeyBindingSpec {
            aud: AUDIENCE.into(),
            nonce: "before-start".into(),
            iat: unix_now() - 30,
        },
    );
    assert_eq!(gateway.outcomes(&[old]), ["replay_unavailable"]);
    seen.insert("replay_unavailable".into());
    // status_undetermined needs a revocation feed that can fall behind; this gateway's list is
    // its own durable log and is always current (README, "Revocation"). Every other outcome:
    let expected: BTreeSet<String> = idgate::verify::Outcome::ALL
        .iter()
        .map(|o| o.as_str().to_string())
        .filter(|o| o != "status_undetermined")
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn sixty_four_concurrent_requests_with_one_presentation_yield_exactly_one_valid() {
    let mut scheme = Scheme::live(32);
    let gateway = Arc::new(TestGateway::start(&scheme, &Options::default()));
    let presentation = scheme.present("1012345678", "card-1");
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let gateway = Arc::clone(&gateway);
            let presentation = presentation.clone();
            std::thread::spawn(move || gateway.outcomes(&[presentation]).remove(0))
        })
        .collect();
    let outcomes: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        outcomes.iter().filter(|o| *o == "valid").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(outcomes.iter().filter(|o| *o == "replayed").count(), 63);
}

#[test]
fn a_full_replay_store_fails_closed_and_never_forgets_a_live_nonce() {
    let mut scheme = Scheme::live(33);
    let gateway = TestGateway::start(
        &scheme,
        &Options {
            replay_capacity: 3,
            ..Options::default()
        },
    );
    let shown: Vec<String> = (0..5)
        .map(|i| scheme.present(&format!("10000000{i}"), &format!("card-{i}")))
        .collect();
    assert_eq!(
        gateway.outcomes(&shown),
        [
            "valid",
            "valid",
            "valid",
            "replay_unavailable",
            "replay_unavailable"
        ]
    );
    // The three recorded nonces are still there: their replays are caught.
    assert_eq!(
        gateway.outcomes(&shown[..3]),
        ["replayed", "replayed", "replayed"]
    );
    assert!(gateway.metrics().contains("idgate_replay_entries 3"));
    assert!(gateway.metrics().contains("idgate_replay_capacity 3"));
}

#[test]
fn a_posted_revocation_changes_the_next_verification_and_status_query() {
    let mut scheme = Scheme::live(34);
    let gateway = TestGateway::start(&scheme, &Options::default());
    assert_eq!(
        gateway.outcomes(&[scheme.present("2000000001", "card-a")]),
        ["valid"]
    );
    let status = gateway.status(&["2000000001"], &["card-a"]).json();
    assert_eq!(status["results"][0]["status"], "active");
    assert_eq!(status["results"][1]["status"], "active");
    assert!(status["as_of"].as_i64().unwrap() >= scheme.now - 10);

    let at = unix_now();
    let entry = json!({"kind": "credential", "id": "card-a", "status": "revoked", "reason": "stolen", "at": at});
    let reply = gateway.revoke(&format!("{entry}\n"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["applied"], 1);

    let reply = gateway
        .verify(&[scheme.present("2000000001", "card-a")])
        .json();
    assert_eq!(
        reply["results"][0],
        json!({"outcome": "revoked", "reason": "stolen", "since": at})
    );
    assert_eq!(reply["counts"], json!({"revoked": 1}));
    let status = gateway.status(&["2000000001"], &["card-a"]).json();
    assert_eq!(
        status["results"][0]["status"], "active",
        "the subject is still in good standing"
    );
    assert_eq!(
        status["results"][1],
        json!({"kind": "credential", "id": "card-a", "status": "revoked", "reason": "stolen", "since": at})
    );
    assert_eq!(
        gateway.revocation("credential", "card-a").json()["status"],
        "revoked"
    );

    // A subject revoked `before` a time: old cards revoked, the subject otherwise active.
    let subject = json!({"kind": "subject", "id": "2000000001", "status": "revoked", "reason": "lost", "before": at, "at": at + 1});
    assert_eq!(gateway.revoke(&format!("{subject}\n")).status, 200);
    let status = gateway.status(&["2000000001"], &[]).json();
    assert_eq!(
        status["results"][0],
        json!({"kind": "subject", "id": "2000000001", "status": "active", "reason": "lost", "since": at + 1, "revoked_before": at})
    );

    // Reinstatement: newest `at` wins.
    let active = json!({"kind": "credential", "id": "card-a", "status": "active", "at": at + 2});
    assert_eq!(gateway.revoke(&format!("{active}\n")).status, 200);
    assert_eq!(
        gateway.status(&[], &["card-a"]).json()["results"][0]["status"],
        "active"
    );
    assert_eq!(
        gateway.revocation("credential", "card-a").json()["status"],
        "active"
    );
    assert_eq!(gateway.revocation("credential", "never-seen").status, 404);
}

#[test]
fn a_bad_revocation_line_is_reported_and_nothing_is_applied() {
    let scheme = Scheme::live(35);
    let gateway = TestGateway::start(&scheme, &Options::default());
    let good = json!({"kind": "credential", "id": "card-x", "status": "revoked", "reason": "lost", "at": 1});
    let reply = gateway.revoke(&format!("{good}\n{{\"kind\":\"credential\",\"id\":\"bad id\",\"status\":\"revoked\",\"reason\":\"lost\",\"at\":1}}\n"));
    assert_eq!(reply.status, 400);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 2"),
        "{}",
        reply.text()
    );
    assert_eq!(gateway.revocation("credential", "card-x").status, 404);
    let unauthorized = request(
        gateway.operator,
        "POST",
        "/admin/v1/revocations",
        &[("Authorization", "Bearer nope")],
        b"",
    )
    .unwrap();
    assert_eq!(unauthorized.status, 401);
}

#[test]
fn request_level_errors_get_their_status_codes() {
    let mut scheme = Scheme::live(38);
    let gateway = TestGateway::start(
        &scheme,
        &Options {
            max_body_bytes: 64 * 1024,
            max_batch_items: 5,
            ..Options::default()
        },
    );
    let verify = |token: &str, body: &[u8]| {
        let auth = format!("Bearer {token}");
        request(
            gateway.public,
            "POST",
            "/v1/verify",
            &[("Authorization", &auth)],
            body,
        )
        .unwrap()
    };
    let presentation = scheme.present("1", "c1");
    let good = json!({"presentations": [presentation]}).to_string();
    assert_eq!(verify("wrong-key", good.as_bytes()).status, 401);
    assert_eq!(
        request(gateway.public, "POST", "/v1/verify", &[], good.as_bytes())
            .unwrap()
            .status,
        401
    );
    let too_big = verify(API_KEY, &vec![b' '; 70 * 1024]);
    assert_eq!(too_big.status, 413);
    assert_eq!(too_big.json()["error"]["code"], "too_large");
    let six = json!({"presentations": vec![presentation.clone(); 6]}).to_string();
    assert_eq!(verify(API_KEY, six.as_bytes()).status, 413);
    for malformed in [
        &b"{not json"[..],
        b"{\"presentations\": 5}",
        b"{\"presentation\": []}",
        b"",
    ] {
        let reply = verify(API_KEY, malformed);
        assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(malformed));
        assert_eq!(reply.json()["error"]["code"], "bad_request");
    }
    assert_eq!(
        request(gateway.public, "GET", "/v1/verify", &[], b"")
            .unwrap()
            .status,
        405
    );
    assert_eq!(
        request(gateway.public, "POST", "/v2/nothing", &[], b"")
            .unwrap()
            .status,
        404
    );
    // Status queries need the tenant's permission.
    let forbidden = http::post_json(
        gateway.public,
        "/v1/status",
        API_KEY,
        &json!({"subjects": ["1"]}),
    );
    assert_eq!(forbidden.status, 403);
    let bad_id = http::post_json(
        gateway.public,
        "/v1/status",
        TELCO_KEY,
        &json!({"subjects": ["not an id"]}),
    );
    assert_eq!(bad_id.status, 400);
    // The request still works after all that.
    assert_eq!(gateway.outcomes(&[presentation]), ["valid"]);
    assert!(gateway.metric("idgate_shed_total{reason=\"too_large\"}") >= 2.0);
}

#[test]
fn past_the_pending_bound_requests_get_503_with_retry_after() {
    let mut scheme = Scheme::live(39);
    let options = Options {
        max_pending_items: 10,
        max_batch_items: 10,
        coalesce_max_items: 0,
        verify_threads: 1,
        ..Options::default()
    };
    let gateway = Arc::new(TestGateway::start(&scheme, &options));
    let batches: Vec<String> = (0..24)
        .map(|b| json!({"presentations": (0..10).map(|i| scheme.present(&format!("{:010}", b * 10 + i), &format!("c{b}-{i}"))).collect::<Vec<_>>()}).to_string())
        .collect();
    let threads: Vec<_> = batches
        .into_iter()
        .map(|body| {
            let gateway = Arc::clone(&gateway);
            std::thread::spawn(move || {
                let auth = format!("Bearer {API_KEY}");
                request(
                    gateway.public,
                    "POST",
                    "/v1/verify",
                    &[("Authorization", &auth)],
                    body.as_bytes(),
                )
                .unwrap()
            })
        })
        .collect();
    let replies: Vec<http::Reply> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let shed: Vec<&http::Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(
        !shed.is_empty(),
        "24 concurrent 10-item requests against a bound of 10 must shed some"
    );
    assert!(replies.iter().all(|r| r.status == 200 || r.status == 503));
    for reply in shed {
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(reply.json()["error"]["code"], "overloaded");
    }
    assert!(gateway.metric("idgate_shed_total{reason=\"pending_limit\"}") >= 1.0);
    assert_eq!(
        gateway.metric("idgate_verify_pending_items"),
        0.0,
        "every reservation is released"
    );
}

#[test]
fn a_tenant_over_its_item_rate_gets_429_with_retry_after() {
    let mut scheme = Scheme::live(40);
    let gateway = TestGateway::start(
        &scheme,
        &Options {
            rate_limit_items_per_s: 10,
            ..Options::default()
        },
    );
    let batch = |scheme: &mut Scheme, tag: &str| -> Vec<String> {
        (0..10)
            .map(|i| scheme.present(&format!("{i}"), &format!("{tag}-{i}")))
            .collect()
    };
    assert_eq!(gateway.verify(&batch(&mut scheme, "a")).status, 200);
    assert_eq!(
        gateway.verify(&batch(&mut scheme, "b")).status,
        200,
        "the bucket may go into debt once"
    );
    let limited = gateway.verify(&batch(&mut scheme, "c"));
    assert_eq!(limited.status, 429);
    assert!(
        limited
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
}

#[test]
fn a_bad_trust_reload_keeps_the_old_keys() {
    let mut scheme = Scheme::live(41);
    let gateway = TestGateway::start(&scheme, &Options::default());
    let reload = || {
        request(
            gateway.operator,
            "POST",
            "/admin/v1/trust/reload",
            &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            b"",
        )
        .unwrap()
    };
    let jwks = gateway.dir.path().join("trust.jwks.json");
    std::fs::write(&jwks, "{\"keys\": [{\"kty\": \"OKP\"}]}").unwrap();
    let refused = reload();
    assert_eq!(refused.status, 400);
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("previous keys stay in force")
    );
    assert_eq!(gateway.outcomes(&[scheme.present("1", "c1")]), ["valid"]);
    assert_eq!(
        gateway.metric("idgate_trust_reloads_total{result=\"error\"}"),
        1.0
    );
    assert_eq!(gateway.metric("idgate_trust_keys"), 4.0);
    // A good file is swapped in: here one that no longer trusts the issuer.
    std::fs::write(&jwks, json!({"keys": [scheme.other.jwk()]}).to_string()).unwrap();
    assert_eq!(reload().json(), json!({"keys": 1}));
    assert_eq!(
        gateway.outcomes(&[scheme.present("1", "c2")]),
        ["unknown_key"]
    );
    assert_eq!(
        gateway.metric("idgate_trust_reloads_total{result=\"ok\"}"),
        1.0
    );
}

#[test]
fn metrics_count_the_requests_made() {
    let mut scheme = Scheme::live(43);
    let gateway = TestGateway::start(&scheme, &Options::default());
    let mut presentations: Vec<String> = (0..7)
        .map(|i| scheme.present(&format!("{i}"), &format!("card-{i}")))
        .collect();
    presentations.push("garbage".into());
    for chunk in presentations.chunks(3) {
        assert_eq!(gateway.verify(chunk).status, 200);
    }
    let _ = request(
        gateway.public,
        "POST",
        "/v1/verify",
        &[("Authorization", "Bearer nope")],
        b"{}",
    )
    .unwrap();
    let metrics = gateway.metrics();
    let value = |series: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    assert_eq!(
        value("idgate_requests_total{route=\"/v1/verify\",code=\"200\"}"),
        "3"
    );
    assert_eq!(
        value("idgate_requests_total{route=\"/v1/verify\",code=\"401\"}"),
        "1"
    );
    assert_eq!(
        value("idgate_verifications_total{tenant=\"bank\",outcome=\"valid\"}"),
        "7"
    );
    assert_eq!(
        value("idgate_verifications_total{tenant=\"bank\",outcome=\"malformed\"}"),
        "1"
    );
    assert_eq!(value("idgate_batch_items_count{route=\"/v1/verify\"}"), "3");
    assert_eq!(
        value("idgate_request_duration_seconds_count{route=\"/v1/verify\"}"),
        "4"
    );
    assert_eq!(value("idgate_replay_entries"), "7");
    assert!(metrics.contains("idgate_build_info{version=\""));
    assert_eq!(http::get(gateway.operator, "/readyz", None).status, 200);
    assert_eq!(http::get(gateway.operator, "/livez", None).status, 200);
}

#[test]
fn signatures_route_uses_the_same_rule() {
    let scheme = Scheme::live(44);
    let gateway = TestGateway::start(&scheme, &Options::default());
    let key = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]);
    let signature = ed25519_dalek::Signer::sign(&key, b"payload").to_bytes();
    let item = |message: &[u8]| json!({"public_key": idgate::b64::encode(key.verifying_key().to_bytes()), "message": idgate::b64::encode(message), "signature": idgate::b64::encode(signature)});
    let small_order = {
        let mut bytes = [0u8; 32];
        bytes[0] = 1;
        json!({"public_key": idgate::b64::encode(bytes), "message": "", "signature": idgate::b64::encode(signature)})
    };
    let body = json!({"items": [item(b"payload"), item(b"other"), small_order, {"public_key": "!", "message": "", "signature": ""}]});
    let reply = http::post_json(gateway.public, "/v1/signatures/verify", API_KEY, &body);
    assert_eq!(
        reply.json(),
        json!({"results": [{"valid": true}, {"valid": false, "error": "bad_signature"}, {"valid": false, "error": "weak_key"}, {"valid": false, "error": "malformed"}]})
    );
}

#[test]
fn http2_with_prior_knowledge_is_served() {
    use http_body_util::{BodyExt, Full};
    let mut scheme = Scheme::live(46);
    let gateway = TestGateway::start(&scheme, &Options::default());
    let body = json!({"presentations": [scheme.present("1", "c1")]}).to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, reply) = runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(gateway.public)
            .await
            .unwrap();
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::post(format!("http://{}/v1/verify", gateway.public))
            .header("authorization", format!("Bearer {API_KEY}"))
            .body(Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    });
    assert_eq!(status, 200);
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["results"][0]["outcome"], "valid");
}

#[test]
fn slow_headers_are_cut_off() {
    use std::io::{Read, Write};
    let scheme = Scheme::live(45);
    let gateway = TestGateway::start(&scheme, &Options::default());
    let mut stream = std::net::TcpStream::connect(gateway.public).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"POST /v1/verify HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    // header_read_timeout is 5 s by default.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the connection must be closed, took {:?}",
        started.elapsed()
    );
}
