//! Tests of `config.rs` (kept in their own file so the module reads as one screenful of code).
use super::*;

const KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";

fn check_text(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idgate.toml");
    std::fs::write(&path, text).unwrap();
    load(
        Some(&path),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

fn tenant() -> String {
    format!(
        "[[tenants]]\nname = \"bank-a\"\napi_key_sha256 = \"{KEY}\"\naudiences = [\"urn:idgate:any\"]\n"
    )
}

#[test]
fn the_spec_example_loads_with_its_defaults() {
    let settings = check_text(&tenant(), &[]).unwrap();
    assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(settings.max_batch_items, 10_000);
    assert!(settings.tenants[0].require_key_binding);
    assert!(!settings.tenants[0].allow_status_queries);
    assert!(settings.trust_jwks.ends_with("trust.jwks.json") && settings.trust_jwks.is_absolute());
}

#[test]
fn unknown_keys_are_refused() {
    let error = check_text(&format!("[server]\nlisten_port = 1\n{}", tenant()), &[]).unwrap_err();
    assert!(
        error.to_string().contains("unknown field `listen_port`"),
        "{error}"
    );
}

#[test]
fn every_bad_value_is_reported_at_once() {
    let text = format!(
        "[server]\nlisten = \"nowhere\"\nmax_body_bytes = 0\n[policy]\nclock_skew_s = -1\n[log]\nformat = \"xml\"\n[admin]\ntoken_sha256 = \"zz\"\n{}[[tenants]]\nname = \"Bad Name\"\napi_key_sha256 = \"short\"\naudiences = []\n",
        tenant()
    );
    let problems = check_text(&text, &[]).unwrap_err().problems;
    for expected in [
        "server.listen",
        "max_body_bytes",
        "clock_skew_s",
        "log.format",
        "admin.token_sha256",
        "name must be",
        "api_key_sha256 must be",
        "audiences must",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "missing {expected}: {problems:#?}"
        );
    }
}

#[test]
fn closed_sets_refuse_other_values_and_list_the_accepted_ones() {
    let text = format!(
        "[replay]\nbackend = \"redis-ish\"\n[revocation]\nfeed = \"kafka\"\n[log]\nlevel = \"loud\"\nformat = 7\n{}",
        tenant()
    );
    let problems = check_text(&text, &[]).unwrap_err().problems;
    for expected in [
        "replay.backend: unknown variant `redis-ish`, expected `memory` or `redis`",
        "revocation.feed: unknown variant `kafka`, expected `none` or `redis`",
        "log.level: unknown variant `loud`, expected one of `error`, `warn`, `info`, `debug`, `trace`",
        "log.format: invalid type",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "missing {expected}: {problems:#?}"
        );
    }
    let text = format!("[log]\nlevel = \"debug\"\nformat = \"text\"\n{}", tenant());
    let settings = check_text(&text, &[]).unwrap();
    assert_eq!(settings.log_level, LogLevel::Debug);
    assert!(!settings.log_json);
}

#[test]
fn the_redis_replay_backend_needs_exactly_one_target() {
    let problems = |replay: &str| {
        check_text(&format!("[replay]\n{replay}\n{}", tenant()), &[])
            .unwrap_err()
            .problems
    };
    let neither = problems("backend = \"redis\"");
    assert!(
        neither
            .iter()
            .any(|p| p.contains("needs replay.redis_url (one server) or replay.redis_cluster")),
        "{neither:#?}"
    );
    let both = problems(
        "backend = \"redis\"\nredis_url = \"redis://127.0.0.1:7000\"\nredis_cluster = [\"redis://127.0.0.1:7001\"]",
    );
    assert!(
        both.iter().any(|p| p.contains("mutually exclusive")),
        "{both:#?}"
    );
    let bad = problems("backend = \"redis\"\nredis_url = \"http://127.0.0.1:7000\"");
    assert!(
        bad.iter()
            .any(|p| p.starts_with("replay.redis_url must be a URL like redis://")),
        "{bad:#?}"
    );
    let unused = problems("redis_url = \"redis://127.0.0.1:7000\"");
    assert!(
        unused
            .iter()
            .any(|p| p.contains("replay.backend is not \"redis\"")),
        "{unused:#?}"
    );
    for (replay, expected) in [
        (
            "backend = \"redis\"\nredis_url = \"rediss://h:1/#insecure\"",
            "#insecure (TLS without certificate checks) is refused",
        ),
        (
            "backend = \"redis\"\nredis_url = \"redis://h:1\"\nkey_prefix = \"\"",
            "replay.key_prefix must be 1 to 256 bytes",
        ),
        (
            "backend = \"redis\"\nredis_cluster = [\"redis://h:1\", \"rediss://h:2\"]",
            "mixes redis:// and rediss://",
        ),
        (
            "backend = \"redis\"\nredis_cluster = [\"redis://h:1\"]\nkey_prefix = \"{idgate}:\"",
            "must not contain { or } with replay.redis_cluster",
        ),
        (
            "backend = \"redis\"\nredis_url = \"redis://h:1\"\nredis_timeout_ms = 40000",
            "replay.redis_timeout_ms must be less than server.request_timeout_ms",
        ),
    ] {
        let found = problems(replay);
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{expected}: {found:#?}"
        );
    }
    let zero = problems("backend = \"redis\"\nredis_url = \"redis://h:1\"\nredis_timeout_ms = 0");
    assert!(
        zero.iter().any(|p| p.contains("redis_timeout_ms")),
        "{zero:#?}"
    );

    let single = check_text(
        &format!(
            "[replay]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:7000/2\"\n{}",
            tenant()
        ),
        &[],
    )
    .unwrap();
    let options = single.replay_redis.unwrap();
    assert_eq!(
        options.target,
        RedisTarget::Single("redis://127.0.0.1:7000/2".into())
    );
    assert_eq!(options.timeout, Duration::from_millis(250));
    assert_eq!(options.key_prefix, "idgate:replay:");
    let cluster = check_text(
        &tenant(),
        &[
            ("IDGATE_REPLAY_BACKEND", "redis"),
            (
                "IDGATE_REPLAY_REDIS_CLUSTER",
                "[\"redis://127.0.0.1:7001\", \"redis://127.0.0.1:7002\"]",
            ),
            ("IDGATE_REPLAY_REDIS_TIMEOUT_MS", "100"),
            ("IDGATE_REPLAY_KEY_PREFIX", "bank-a:"),
        ],
    )
    .unwrap();
    let options = cluster.replay_redis.unwrap();
    assert_eq!(
        options.target,
        RedisTarget::Cluster(vec![
            "redis://127.0.0.1:7001".into(),
            "redis://127.0.0.1:7002".into()
        ])
    );
    assert_eq!(options.timeout, Duration::from_millis(100));
    assert_eq!(options.key_prefix, "bank-a:");
    assert!(check_text(&tenant(), &[]).unwrap().replay_redis.is_none());
    let ca_without_tls =
        problems("backend = \"redis\"\nredis_url = \"redis://h:1\"\nredis_ca_file = \"ca.pem\"");
    assert!(
        ca_without_tls
            .iter()
            .any(|p| p.contains("redis_ca_file is set but the Redis URLs are not rediss://")),
        "{ca_without_tls:#?}"
    );
    let tls = check_text(
        &format!(
            "[replay]\nbackend = \"redis\"\nredis_url = \"rediss://127.0.0.1:6380\"\nredis_ca_file = \"ca.pem\"\n{}",
            tenant()
        ),
        &[],
    )
    .unwrap()
    .replay_redis
    .unwrap();
    assert_eq!(
        tls.ca_file.as_deref().and_then(Path::file_name),
        Some(std::ffi::OsStr::new("ca.pem")),
        "relative to the config file"
    );
    assert!(tls.ca_file.unwrap().is_absolute());
}

#[test]
fn environment_overrides_win_and_are_checked_too() {
    let settings = check_text(
        &tenant(),
        &[
            ("IDGATE_SERVER_LISTEN", "127.0.0.1:0"),
            ("IDGATE_SERVER_MAX_BATCH_ITEMS", "50"),
            ("IDGATE_VECTORS_DIR", "/x"),
        ],
    )
    .unwrap();
    assert_eq!(settings.listen.port(), 0);
    assert_eq!(settings.max_batch_items, 50);
    let error = check_text(&tenant(), &[("IDGATE_SERVER_LISTN", "x")]).unwrap_err();
    assert!(error.to_string().contains("listn"), "{error}");
}
