//! The check after every restart (see `tests/crash.rs`' module docs, (a)-(d)): every request
//! sent so far against what the gateway holds, through bulk `POST /v1/status`, `/metrics` and
//! spot checks of `GET /admin/v1/revocations/{kind}/{id}`.

use rand::RngExt;
use rand::rngs::StdRng;
use serde::Deserialize;
use serde_json::json;

use super::super::gateway::{ADMIN_TOKEN, BinaryGateway, TELCO_KEY};
use super::super::http;
use super::STATUS_CHUNK;
use super::requests::{Fate, Request, Sent};

#[derive(Deserialize)]
struct StatusReply<'a> {
    #[serde(borrow)]
    results: Vec<StatusResult<'a>>,
}

/// One `/v1/status` result (IDs are `[A-Za-z0-9._-]`: no escapes, so borrowed).
#[derive(Debug, Deserialize)]
struct StatusResult<'a> {
    kind: &'a str,
    id: &'a str,
    status: &'a str,
    reason: Option<&'a str>,
    since: Option<i64>,
    revoked_before: Option<i64>,
}

/// `POST /v1/status` for `(kind is subject, id)` pairs; calls `each(i, result)` with the result
/// for `ids[i]`, for every `i`.
fn status_of(
    gateway: &BinaryGateway,
    ids: &[(bool, &str)],
    context: &str,
    mut each: impl FnMut(usize, &StatusResult<'_>),
) {
    // Results come subjects first, then credentials, each in input order.
    let order: Vec<usize> = (0..ids.len())
        .filter(|&i| ids[i].0)
        .chain((0..ids.len()).filter(|&i| !ids[i].0))
        .collect();
    let list = |subject: bool| {
        let quoted: Vec<String> = ids
            .iter()
            .filter(|(s, _)| *s == subject)
            .map(|(_, id)| format!("\"{id}\""))
            .collect();
        quoted.join(",")
    };
    let body = format!(
        "{{\"subjects\":[{}],\"credentials\":[{}]}}",
        list(true),
        list(false)
    );
    let auth = format!("Bearer {TELCO_KEY}");
    let reply = http::request(
        gateway.public,
        "POST",
        "/v1/status",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{context}: POST /v1/status failed: {e}"));
    assert_eq!(
        reply.status,
        200,
        "{context}: POST /v1/status: {}",
        reply.text()
    );
    let parsed: StatusReply<'_> = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("{context}: POST /v1/status answer: {e}"));
    assert_eq!(
        parsed.results.len(),
        ids.len(),
        "{context}: POST /v1/status answered a different number of results"
    );
    for (&i, result) in order.iter().zip(&parsed.results) {
        let (subject, id) = ids[i];
        let kind = if subject { "subject" } else { "credential" };
        assert!(
            result.id == id && result.kind == kind,
            "{context}: POST /v1/status answered {result:?} in the place of {kind} {id}"
        );
        each(i, result);
    }
}

/// Whether a status result says "no entry": `Ok(false)`, the exact sent entry: `Ok(true)`, or
/// anything else: `Err`.
fn observe(result: &StatusResult<'_>, sent: &Sent) -> Result<bool, String> {
    if result.reason.is_none() && result.since.is_none() && result.revoked_before.is_none() {
        return if result.status == "active" {
            Ok(false)
        } else {
            Err(format!(
                "status {:?} without reason or since",
                result.status
            ))
        };
    }
    // A subject revoked with `before` is in good standing; only older credentials are not.
    let status = if sent.before.is_some() {
        "active"
    } else {
        sent.status
    };
    if result.status == status
        && result.reason == Some(sent.reason)
        && result.since == Some(sent.at)
        && result.revoked_before == sent.before
    {
        Ok(true)
    } else {
        Err(format!(
            "sent {sent:?} (status query should say {status}), /v1/status says {result:?}"
        ))
    }
}

fn is_absent(result: &StatusResult<'_>) -> bool {
    result.status == "active"
        && result.reason.is_none()
        && result.since.is_none()
        && result.revoked_before.is_none()
}

/// One series of the Prometheus text (its name and labels as written), if present.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    testkit::metrics::parse(text).get(name).copied()
}

/// What one check found.
#[derive(Debug, Default)]
pub struct Checked {
    pub entries_present: usize,
    pub unacked_whole: usize,
    pub unacked_absent: usize,
}

/// Checks every request sent so far against the gateway of start number `start` (see the
/// module docs), updating the fates of unacknowledged requests. Panics with every problem found
/// (up to 15 shown), each naming the request number, the round that sent it and its answer.
pub fn check(
    gateway: &BinaryGateway,
    requests: &mut [Request],
    start: usize,
    rng: &mut StdRng,
    context: &str,
) -> Checked {
    let mut problems: Vec<String> = Vec::new();

    // (a), (b), (d): every entry ever sent, through bulk status queries.
    let flat: Vec<(usize, usize)> = requests
        .iter()
        .enumerate()
        .flat_map(|(r, request)| (0..request.entries.len()).map(move |e| (r, e)))
        .collect();
    let mut present = vec![0usize; requests.len()];
    let mut missing: Vec<Vec<String>> = vec![Vec::new(); requests.len()];
    for chunk in flat.chunks(STATUS_CHUNK) {
        let ids: Vec<(bool, &str)> = chunk
            .iter()
            .map(|&(r, e)| {
                let sent = &requests[r].entries[e];
                (sent.subject, sent.id.as_str())
            })
            .collect();
        status_of(gateway, &ids, context, |i, result| {
            let (r, e) = chunk[i];
            let sent = &requests[r].entries[e];
            match observe(result, sent) {
                Ok(true) => present[r] += 1,
                Ok(false) => {
                    if missing[r].len() < 3 {
                        missing[r].push(sent.id.clone());
                    }
                }
                Err(why) => problems.push(format!(
                    "{}: {} {} is present with other values than sent: {why}",
                    requests[r].describe(),
                    sent.kind(),
                    sent.id
                )),
            }
        });
    }
    let round = start;
    let mut checked = Checked::default();
    for (r, request) in requests.iter_mut().enumerate() {
        let (found, n) = (present[r], request.entries.len());
        let whole = found == n;
        let none = found == 0;
        let problem = match request.fate {
            Fate::Acked if !whole => Some(format!(
                "acknowledged, but only {found} of {n} entries present (missing e.g. {:?})",
                missing[r]
            )),
            Fate::Refused if !none => Some(format!(
                "refused with an error, but {found} of {n} entries present"
            )),
            Fate::FoundWhole(seen) if !whole => Some(format!(
                "was whole after the restart of round {seen}, now {found} of {n} entries present"
            )),
            Fate::FoundAbsent(seen) if !none => Some(format!(
                "was absent after the restart of round {seen}, now {found} of {n} entries present"
            )),
            Fate::Unknown if !whole && !none => Some(format!(
                "unacknowledged and half applied: {found} of {n} entries present (missing e.g. {:?})",
                missing[r]
            )),
            Fate::Unknown if whole => {
                request.fate = Fate::FoundWhole(round);
                None
            }
            Fate::Unknown => {
                request.fate = Fate::FoundAbsent(round);
                None
            }
            _ => None,
        };
        if let Some(problem) = problem {
            problems.push(format!("{}: {problem}", request.describe()));
        }
        match request.fate {
            Fate::FoundWhole(_) => checked.unacked_whole += 1,
            Fate::FoundAbsent(_) => checked.unacked_absent += 1,
            _ => {}
        }
        checked.entries_present += found;
    }

    // (c) Nothing else: the gateway's own counts, IDs next to the sent ones, and sent IDs under
    // the other kind.
    let metrics = http::get(gateway.operator, "/metrics", None).text();
    for name in ["idgate_revocation_entries", "idgate_revocation_records"] {
        let value = metric(&metrics, name);
        if value != Some(checked.entries_present as f64) {
            problems.push(format!(
                "{name} is {value:?}, but {} entries were found (the list holds entries nobody sent, or the metric is wrong)",
                checked.entries_present
            ));
        }
    }
    let mut strangers: Vec<(bool, String)> = Vec::new();
    let next = requests.iter().map(|r| r.number + 1).max().unwrap_or(0);
    for k in 0..50u64 {
        strangers.push((k % 2 == 0, format!("r{round}-q{}-{k}", next + 1000 + k)));
        strangers.push((k % 2 == 1, format!("never-{k}")));
    }
    if !requests.is_empty() {
        for _ in 0..100 {
            let request = &requests[rng.random_range(0..requests.len())];
            let Some(sent) = request.entries.first() else {
                continue;
            };
            // One past the last entry: never sent.
            strangers.push((
                sent.subject,
                format!(
                    "r{}-q{}-{}",
                    request.round,
                    request.number,
                    request.entries.len()
                ),
            ));
            // A sent ID under the other kind.
            let sent = &request.entries[rng.random_range(0..request.entries.len())];
            strangers.push((!sent.subject, sent.id.clone()));
        }
    }
    let ids: Vec<(bool, &str)> = strangers.iter().map(|(s, id)| (*s, id.as_str())).collect();
    status_of(gateway, &ids, context, |i, result| {
        if !is_absent(result) {
            let (subject, id) = ids[i];
            let kind = if subject { "subject" } else { "credential" };
            problems.push(format!(
                "{kind} {id} was never sent, but /v1/status says {result:?}"
            ));
        }
    });

    // (d) Spot checks of the fields only the admin API shows (`status` of subjects with
    // `before`, `before` itself), for entries that must be present and entries that must not.
    let whole: Vec<usize> = (0..requests.len())
        .filter(|&r| present[r] == requests[r].entries.len() && present[r] > 0)
        .collect();
    let absent: Vec<usize> = (0..requests.len()).filter(|&r| present[r] == 0).collect();
    let mut spots: Vec<(&Sent, bool)> = Vec::new();
    for (pool, samples, expected) in [(&whole, 30, true), (&absent, 5, false)] {
        if pool.is_empty() {
            continue;
        }
        for _ in 0..samples {
            let request = &requests[pool[rng.random_range(0..pool.len())]];
            let sent = &request.entries[rng.random_range(0..request.entries.len())];
            spots.push((sent, expected));
        }
    }
    for (sent, expected) in spots {
        let path = format!("/admin/v1/revocations/{}/{}", sent.kind(), sent.id);
        let reply = http::get(gateway.operator, &path, Some(ADMIN_TOKEN));
        if !expected {
            if reply.status != 404 {
                problems.push(format!(
                    "GET {path}: {} {} (expected 404: the request was not applied)",
                    reply.status,
                    reply.text()
                ));
            }
            continue;
        }
        let want = json!({
            "kind": sent.kind(), "id": sent.id, "status": sent.status, "reason": sent.reason,
            "before": sent.before, "at": sent.at,
        });
        let got = (reply.status == 200).then(|| reply.json());
        if got.as_ref() != Some(&want) {
            problems.push(format!(
                "GET {path}: {} {} (expected 200 {want})",
                reply.status,
                reply.text()
            ));
        }
    }
    // The other kind of a present entry is not on record either.
    if let Some(&r) = whole.first() {
        let sent = &requests[r].entries[0];
        let path = format!("/admin/v1/revocations/{}/{}", sent.other_kind(), sent.id);
        let reply = http::get(gateway.operator, &path, Some(ADMIN_TOKEN));
        if reply.status != 404 {
            problems.push(format!(
                "GET {path}: {} {} (expected 404: only the other kind was sent)",
                reply.status,
                reply.text()
            ));
        }
    }

    if !problems.is_empty() {
        let shown = problems.len().min(15);
        panic!(
            "{context}: {} problem(s) after the restart; the first {shown}:\n  {}",
            problems.len(),
            problems[..shown].join("\n  ")
        );
    }
    checked
}
