//! Every route that reads a body answers a malformed one with 400 and an error that describes
//! the body's shape without quoting any of it (errors never echo request values: an ID number
//! sent where a list belongs must not come back in the error).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Scheme;
use common::gateway::{ADMIN_TOKEN, API_KEY, Options, TELCO_KEY, TestGateway};
use common::http::request;

/// A value no error may contain: an ID number, a presentation-like token, a key.
const SECRET: &str = "1012345678";

#[test]
fn malformed_bodies_are_refused_without_echoing_any_value() {
    let scheme = Scheme::new(61);
    let gateway = TestGateway::start(&scheme, &Options::default());
    let bearer = |key: &str| format!("Bearer {key}");
    let routes = [
        (gateway.public, "/v1/verify", bearer(API_KEY)),
        (gateway.public, "/v1/signatures/verify", bearer(API_KEY)),
        (gateway.public, "/v1/status", bearer(TELCO_KEY)),
        (
            gateway.operator,
            "/admin/v1/revocations",
            bearer(ADMIN_TOKEN),
        ),
    ];
    // Wrong types for every field a route has, an unknown field named by the value, a bad enum
    // value, and broken JSON, each carrying the secret.
    let bodies = [
        format!(r#"{{"presentations":"{SECRET}"}}"#),
        format!(r#"{{"presentations":[{SECRET}]}}"#),
        format!(r#"{{"items":"{SECRET}"}}"#),
        format!(r#"{{"items":[{{"public_key":{SECRET},"message":"","signature":""}}]}}"#),
        format!(r#"{{"subjects":"{SECRET}"}}"#),
        format!(r#"{{"credentials":[{SECRET}]}}"#),
        format!(r#"{{"{SECRET}":[]}}"#),
        format!(r#"{{"kind":"{SECRET}","id":"a","status":"revoked","reason":"lost","at":1}}"#),
        format!(r#"{{"kind":"subject","id":{SECRET},"status":"revoked","reason":"lost","at":1}}"#),
        format!(r#"{{"kind":"subject","id":"a","status":"{SECRET}","reason":"lost","at":1}}"#),
        format!(r#"["{SECRET}""#),
        format!(r#""{SECRET}""#),
    ];
    let mut refused = 0;
    for (address, path, authorization) in &routes {
        for body in &bodies {
            let reply = request(
                *address,
                "POST",
                path,
                &[
                    ("Authorization", authorization),
                    ("Content-Type", "application/json"),
                ],
                body.as_bytes(),
            )
            .unwrap();
            let text = reply.text();
            assert!(
                !text.contains(SECRET),
                "{path} echoed a request value for {body}: {text}"
            );
            if reply.status == 400 {
                refused += 1;
                assert!(text.contains("\"error\""), "{path} {body}: {text}");
            }
        }
        // The same route does answer 400 to the plainest wrong type.
        let body = match *path {
            "/v1/verify" => format!(r#"{{"presentations":"{SECRET}"}}"#),
            "/v1/signatures/verify" => format!(r#"{{"items":"{SECRET}"}}"#),
            "/v1/status" => format!(r#"{{"subjects":"{SECRET}"}}"#),
            _ => format!(
                r#"{{"kind":"subject","id":{SECRET},"status":"revoked","reason":"lost","at":1}}"#
            ),
        };
        let reply = request(
            *address,
            "POST",
            path,
            &[("Authorization", authorization)],
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(reply.status, 400, "{path}: {}", reply.text());
        assert!(!reply.text().contains(SECRET), "{path}: {}", reply.text());
    }
    // Every body is malformed for every route, except that a route may find a well-formed
    // body of *another* route's shape merely unknown — still 400.
    assert_eq!(refused, routes.len() * bodies.len());
    // Nothing was applied by the refused revocation uploads.
    let metrics = common::http::get(gateway.operator, "/metrics", None).text();
    assert!(metrics.contains("idgate_revocation_entries 0"), "{metrics}");
}
