//! The scenarios: what each one is (name, connections, items per request, which phases make
//! sense), the requests it builds for a phase, and the engine ceiling it is compared with.
//!
//! Building is deterministic from the seed: the same scenario, size, seed and "now" give the
//! same requests byte for byte (the corpus generator's guarantee, kept here by never drawing
//! randomness of our own).

use anyhow::{Result, bail};
use bytes::Bytes;
use idgate::revocation::{Entry, Kind, Reason, Status};
use idgate::verify::SignatureInput;
use serde_json::json;

use crate::ceiling;
use crate::corpus::{self, Issuers, Mix};
use crate::load::Request;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Verify(usize),
    Signatures(usize),
    Status(usize),
    Mix,
    BadBatch(usize),
    ReplayFlood,
    Oversized,
    Revoke(usize),
}

/// The suite run when no scenario is named.
pub const SUITE: [&str; 9] = [
    "verify:256",
    "verify:1",
    "signatures:256",
    "status:10000",
    "mix",
    "bad-batch:256",
    "replay-flood",
    "oversized",
    "revoke:1000",
];

/// The scenarios of `--smoke` when none is named.
pub const SMOKE: [&str; 2] = ["verify:64", "status:1000"];

/// The admin route the `revoke` scenario posts to (on the operator port).
pub const ADMIN_REVOCATIONS: &str = "/admin/v1/revocations";

impl Scenario {
    pub fn parse(text: &str) -> Result<Scenario> {
        let (name, size) = text
            .split_once(':')
            .map_or((text, None), |(n, s)| (n, Some(s)));
        let size = |default: usize| -> Result<usize> {
            Ok(size.map(str::parse).transpose()?.unwrap_or(default).max(1))
        };
        Ok(match name {
            "verify" => Scenario::Verify(size(256)?),
            "signatures" => Scenario::Signatures(size(256)?),
            "status" => Scenario::Status(size(10_000)?),
            "mix" => Scenario::Mix,
            "bad-batch" => Scenario::BadBatch(size(256)?),
            "replay-flood" => Scenario::ReplayFlood,
            "oversized" => Scenario::Oversized,
            "revoke" => Scenario::Revoke(size(1000)?),
            other => bail!("unknown scenario {other:?}"),
        })
    }

    pub fn name(self) -> String {
        match self {
            Scenario::Verify(n) => format!("verify:{n}"),
            Scenario::Signatures(n) => format!("signatures:{n}"),
            Scenario::Status(n) => format!("status:{n}"),
            Scenario::Mix => "mix".into(),
            Scenario::BadBatch(n) => format!("bad-batch:{n}"),
            Scenario::ReplayFlood => "replay-flood".into(),
            Scenario::Oversized => "oversized".into(),
            Scenario::Revoke(n) => format!("revoke:{n}"),
        }
    }

    /// Connections when `--connections` is not given.
    pub fn connections(self) -> usize {
        match self {
            Scenario::Verify(1) | Scenario::ReplayFlood => 64,
            Scenario::Verify(n) | Scenario::BadBatch(n) if n < 64 => 32,
            Scenario::Status(_) => 4,
            Scenario::Revoke(_) => 16,
            Scenario::Mix => 32,
            _ => 8,
        }
    }

    /// Signatures per item (for the signatures/s column).
    pub fn signatures_per_item(self) -> Option<f64> {
        match self {
            Scenario::Verify(_) | Scenario::BadBatch(_) | Scenario::ReplayFlood => Some(2.0),
            Scenario::Signatures(_) => Some(1.0),
            _ => None,
        }
    }

    /// Open-loop phases make sense where the work per request is what it claims.
    pub fn latency_phases(self) -> bool {
        matches!(
            self,
            Scenario::Verify(_) | Scenario::Signatures(_) | Scenario::Status(_) | Scenario::Mix
        )
    }

    /// Items per request (for sizing open-loop corpora).
    pub fn items_per_request(self) -> usize {
        match self {
            Scenario::Verify(n)
            | Scenario::Signatures(n)
            | Scenario::Status(n)
            | Scenario::BadBatch(n)
            | Scenario::Revoke(n) => n,
            Scenario::Mix => 110,
            Scenario::ReplayFlood | Scenario::Oversized => 1,
        }
    }
}

/// The `route` label of a path in `idgate_requests_total`.
pub fn route_label(path: &str) -> String {
    if path == ADMIN_REVOCATIONS {
        format!("POST {path}")
    } else {
        path.to_string()
    }
}

/// Requests (and what must be set up for them) for about `items` items.
pub struct Built {
    pub requests: Vec<Request>,
    /// Entries to post to the admin API before the load (the corpus's revoked items).
    pub revocations: Vec<Entry>,
}

/// The requests of `scenario` for about `items` items.
pub fn build(
    scenario: Scenario,
    items: usize,
    issuers: &Issuers,
    mix: &Mix,
    seed: u64,
    now: i64,
) -> Built {
    match scenario {
        Scenario::Verify(n) => verify(n, items, issuers, mix, seed, now),
        Scenario::BadBatch(n) => bad_batch(n, items, issuers, mix, seed, now),
        Scenario::ReplayFlood => replay_flood(issuers, seed, now),
        Scenario::Signatures(n) => signatures(n, items, mix, seed),
        Scenario::Status(n) => status(n, items, seed, now),
        Scenario::Revoke(n) => revoke(n, items, seed, now),
        Scenario::Mix => mixed(items, issuers, mix, seed, now),
        Scenario::Oversized => oversized(),
    }
}

/// A `/v1/verify` request carrying `items`.
fn verify_request(items: &[String]) -> Request {
    Request {
        path: "/v1/verify",
        body: Bytes::from(json!({ "presentations": items }).to_string()),
        items: items.len() as u32,
    }
}

fn verify(n: usize, items: usize, issuers: &Issuers, mix: &Mix, seed: u64, now: i64) -> Built {
    let corpus = corpus::presentations(issuers, items.max(n), mix, seed, now);
    Built {
        requests: corpus.items.chunks(n).map(verify_request).collect(),
        revocations: corpus.revocations,
    }
}

/// Exactly one broken issuer signature in every request: each engine batch falls back to
/// verifying its members one by one.
fn bad_batch(n: usize, items: usize, issuers: &Issuers, mix: &Mix, seed: u64, now: i64) -> Built {
    let mut corpus = corpus::presentations(issuers, items.max(n), mix, seed, now);
    break_one_per_batch(&mut corpus.items, n, issuers, seed, now);
    Built {
        requests: corpus.items.chunks(n).map(verify_request).collect(),
        revocations: corpus.revocations,
    }
}

/// Replaces the middle item of every batch of `n` in `items` with a presentation whose issuer
/// signature is broken (drawn with `seed ^ 0xbad`).
fn break_one_per_batch(items: &mut [String], n: usize, issuers: &Issuers, seed: u64, now: i64) {
    let broken = corpus::presentations(
        issuers,
        items.len() / n + 1,
        &Mix {
            bad_signature: 1.0,
            ..Mix::default()
        },
        seed ^ 0xbad,
        now,
    );
    for (batch, bad) in items.chunks_mut(n).zip(broken.items) {
        let middle = batch.len() / 2;
        batch[middle] = bad;
    }
}

/// One presentation shown over and over: the replay check's own cost.
fn replay_flood(issuers: &Issuers, seed: u64, now: i64) -> Built {
    let corpus = corpus::presentations(issuers, 1, &Mix::default(), seed, now);
    Built {
        requests: vec![verify_request(&corpus.items)],
        revocations: Vec::new(),
    }
}

fn signatures(n: usize, items: usize, mix: &Mix, seed: u64) -> Built {
    let items = corpus::signature_items(items.max(n), mix.bad_signature, seed);
    let requests = items
        .chunks(n)
        .map(|chunk| Request {
            path: "/v1/signatures/verify",
            body: Bytes::from(json!({ "items": chunk }).to_string()),
            items: chunk.len() as u32,
        })
        .collect();
    Built {
        requests,
        revocations: Vec::new(),
    }
}

fn status(n: usize, items: usize, seed: u64, now: i64) -> Built {
    let ids = corpus::status_ids(items.max(n), 0.01, seed, now);
    let requests = ids
        .ids
        .chunks(n)
        .map(|chunk| Request {
            path: "/v1/status",
            body: Bytes::from(json!({ "subjects": chunk }).to_string()),
            items: chunk.len() as u32,
        })
        .collect();
    Built {
        requests,
        revocations: ids.revocations,
    }
}

/// New entries, `n` per request, every fourth a subject revoked before `now`.
fn revoke(n: usize, items: usize, seed: u64, now: i64) -> Built {
    let requests = (0..items.max(n).div_ceil(n))
        .map(|r| {
            let body: String = (0..n)
                .map(|i| {
                    let entry = Entry {
                        kind: if i % 4 == 0 {
                            Kind::Subject
                        } else {
                            Kind::Credential
                        },
                        id: format!("lt{seed}-q{r}-{i}"),
                        status: Status::Revoked,
                        reason: Some(Reason::Lost),
                        before: (i % 4 == 0).then_some(now),
                        at: now,
                    };
                    serde_json::to_string(&entry).unwrap_or_default() + "\n"
                })
                .collect();
            Request {
                path: ADMIN_REVOCATIONS,
                body: Bytes::from(body),
                items: n as u32,
            }
        })
        .collect();
    Built {
        requests,
        revocations: Vec::new(),
    }
}

/// 70% single presentations (scanners), 20% batches of 64 (back offices), 10% status queries
/// of 1,000 IDs (a telecom's sweep), interleaved.
fn mixed(items: usize, issuers: &Issuers, mix: &Mix, seed: u64, now: i64) -> Built {
    let singles = verify(1, items * 7 / 10, issuers, mix, seed, now);
    let batches = verify(64, items * 2 / 10, issuers, mix, seed ^ 0x64, now);
    let status = status(1000, items / 10, seed ^ 0x5a, now);
    let mut requests = Vec::new();
    let (mut a, mut b, mut c) = (
        singles.requests.into_iter(),
        batches.requests.into_iter(),
        status.requests.into_iter(),
    );
    loop {
        let before = requests.len();
        for _ in 0..70 {
            requests.extend(a.next());
        }
        requests.extend(b.next());
        if requests.len() % 10 == 0 {
            requests.extend(c.next());
        }
        if requests.len() == before {
            break;
        }
    }
    let mut revocations = singles.revocations;
    revocations.extend(batches.revocations);
    revocations.extend(status.revocations);
    Built {
        requests,
        revocations,
    }
}

/// One item more than the gateway's default max_batch_items: 413 without any work.
fn oversized() -> Built {
    let tiny: Vec<&str> = vec!["x"; 10_001];
    Built {
        requests: vec![Request {
            path: "/v1/verify",
            body: Bytes::from(json!({ "presentations": tiny }).to_string()),
            items: 0,
        }],
        revocations: Vec::new(),
    }
}

/// The in-process ceiling for a scenario: items per second, and the batch size it was
/// measured at. `None` for scenarios without one.
pub fn ceiling(
    scenario: Scenario,
    issuers: &Issuers,
    threads: usize,
    connections: usize,
    seed: u64,
    now: i64,
) -> Result<Option<(f64, usize)>> {
    Ok(match scenario {
        Scenario::Verify(n) | Scenario::BadBatch(n) => {
            let mut corpus =
                corpus::presentations(issuers, 8192.max(n), &Mix::default(), seed ^ 0xce11, now);
            if let Scenario::BadBatch(_) = scenario {
                // The same shape as the load: one broken issuer signature in every batch.
                break_one_per_batch(&mut corpus.items, n, issuers, seed, now);
            }
            // Single presentations are verified in batches of concurrent requests (coalescing).
            let batch = if n == 1 { connections } else { n };
            Some((
                ceiling::presentations(&issuers.jwks(), &corpus.items, batch, threads, now)?,
                batch,
            ))
        }
        Scenario::Signatures(n) => {
            let items = corpus::signature_items(16_384.max(n), 0.0, seed ^ 0xce11);
            let inputs: Vec<SignatureInput> = items
                .iter()
                .map(|v| SignatureInput {
                    public_key: idgate::b64::decode(v["public_key"].as_str().unwrap_or(""))
                        .unwrap_or_default(),
                    message: idgate::b64::decode(v["message"].as_str().unwrap_or(""))
                        .unwrap_or_default(),
                    signature: idgate::b64::decode(v["signature"].as_str().unwrap_or(""))
                        .unwrap_or_default(),
                })
                .collect();
            Some((ceiling::signatures(&inputs, n, threads)?, n))
        }
        Scenario::Status(n) => {
            let ids = corpus::status_ids(100_000.max(n), 0.01, seed ^ 0xce11, now);
            Some((ceiling::status(&ids.ids, &ids.revocations, threads)?, n))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_round_trip_and_sizes_default() {
        for text in SUITE.iter().chain(&SMOKE) {
            assert_eq!(Scenario::parse(text).unwrap().name(), *text);
        }
        assert_eq!(Scenario::parse("verify").unwrap(), Scenario::Verify(256));
        assert_eq!(Scenario::parse("status:0").unwrap(), Scenario::Status(1));
        assert!(Scenario::parse("nothing").is_err());
        assert!(Scenario::parse("verify:x").is_err());
    }

    #[test]
    fn every_bad_batch_request_holds_exactly_one_broken_presentation() {
        let issuers = Issuers::new(1);
        let now = idgate::clock::unix_now();
        let good = build(Scenario::Verify(8), 30, &issuers, &Mix::default(), 5, now);
        let bad = build(Scenario::BadBatch(8), 30, &issuers, &Mix::default(), 5, now);
        assert_eq!(good.requests.len(), 4);
        assert_eq!(bad.requests.len(), 4);
        for (good, bad) in good.requests.iter().zip(&bad.requests) {
            let items = |r: &Request| -> Vec<String> {
                let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                serde_json::from_value(body["presentations"].clone()).unwrap()
            };
            let (good, bad) = (items(good), items(bad));
            assert_eq!(good.len(), bad.len());
            let differ: Vec<usize> = (0..good.len()).filter(|&i| good[i] != bad[i]).collect();
            assert_eq!(differ, [good.len() / 2]);
        }
    }
}
