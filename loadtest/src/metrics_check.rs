//! The `/metrics` cross-check: the gateway's own counter deltas over a phase must equal what
//! the generator counted (requests by route and status, verdicts by outcome), or the run is
//! flagged (exit code 5). The page is read with `testkit::metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::SETUP;
use crate::load::Stats;
use crate::report::MetricsCheck;
use crate::scenario::route_label;

/// `series → value` of the gateway's `/metrics`, or `None` if it did not answer 200.
pub fn scrape(operator: SocketAddr) -> Option<BTreeMap<String, f64>> {
    let reply = SETUP.get(operator, "/metrics").ok()?;
    (reply.status == 200).then(|| testkit::metrics::parse(&reply.text()))
}

/// Compares the gateway's counter deltas from `before` to `after` with the generator's own
/// counts in `stats`; `paths` are the routes the phase sent to.
pub fn compare(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    stats: &Stats,
    paths: &[&str],
) -> MetricsCheck {
    let delta = |key: &str| {
        after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
    };
    let mut mismatches = Vec::new();
    for ((path, status), count) in &stats.all_statuses {
        let key = format!(
            "idgate_requests_total{{route=\"{}\",code=\"{status}\"}}",
            route_label(path)
        );
        let server = delta(&key);
        if (server - *count as f64).abs() > 0.5 {
            mismatches.push(format!("{key}: gateway {server}, generator {count}"));
        }
    }
    // Requests the gateway answered that the generator never saw answered (e.g. timeouts).
    for path in paths {
        let generator: u64 = stats
            .all_statuses
            .iter()
            .filter(|((p, _), _)| p == path)
            .map(|(_, n)| n)
            .sum();
        let prefix = format!("idgate_requests_total{{route=\"{}\",", route_label(path));
        let server: f64 = after
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .map(|k| delta(k))
            .sum();
        if (server - generator as f64).abs() > 0.5 {
            mismatches.push(format!(
                "{path}: gateway answered {server}, generator received {generator}"
            ));
        }
    }
    for (outcome, count) in &stats.all_outcomes {
        let server: f64 = after
            .keys()
            .filter(|k| {
                k.starts_with("idgate_verifications_total{")
                    && k.ends_with(&format!("outcome=\"{outcome}\"}}"))
            })
            .map(|k| delta(k))
            .sum();
        if (server - *count as f64).abs() > 0.5 {
            mismatches.push(format!(
                "verifications {outcome}: gateway {server}, generator {count}"
            ));
        }
    }
    MetricsCheck {
        compared: true,
        matched: mismatches.is_empty(),
        mismatches,
    }
}

/// The change of one series from `before` to `after` (absent: 0).
pub fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, key: &str) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

/// Verdicts of every outcome counted so far, over every tenant.
pub fn verdicts(metrics: &BTreeMap<String, f64>) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| k.starts_with("idgate_verifications_total{"))
        .map(|(_, v)| v)
        .sum()
}

/// `valid` verdicts counted so far, over every tenant.
pub fn valid_verdicts(metrics: &BTreeMap<String, f64>) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| {
            k.starts_with("idgate_verifications_total{") && k.contains("outcome=\"valid\"")
        })
        .map(|(_, v)| v)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ADMIN_REVOCATIONS;

    fn page(verify_200: u32, verify_429: u32, admin_200: u32, valid: u32) -> BTreeMap<String, f64> {
        testkit::metrics::parse(&format!(
            "# TYPE idgate_requests_total counter\n\
             idgate_requests_total{{route=\"/v1/verify\",code=\"200\"}} {verify_200}\n\
             idgate_requests_total{{route=\"/v1/verify\",code=\"429\"}} {verify_429}\n\
             idgate_requests_total{{route=\"POST /admin/v1/revocations\",code=\"200\"}} {admin_200}\n\
             idgate_verifications_total{{tenant=\"a\",outcome=\"valid\"}} {valid}\n\
             idgate_verifications_total{{tenant=\"b\",outcome=\"valid\"}} 1\n\
             idgate_verifications_total{{tenant=\"a\",outcome=\"expired\"}} 4\n"
        ))
    }

    fn stats(verify_200: u64, admin_200: u64, valid: u64) -> Stats {
        let mut stats = Stats::default();
        stats.all_statuses.insert(("/v1/verify", 200), verify_200);
        stats
            .all_statuses
            .insert((ADMIN_REVOCATIONS, 200), admin_200);
        stats.all_outcomes.insert("valid".into(), valid);
        stats
    }

    #[test]
    fn matching_deltas_pass_and_every_kind_of_difference_is_reported() {
        let before = page(10, 0, 2, 100);
        let paths = ["/v1/verify", ADMIN_REVOCATIONS];
        let same = compare(&before, &page(15, 0, 5, 130), &stats(5, 3, 30), &paths);
        assert!(same.compared && same.matched, "{:?}", same.mismatches);

        // A status the generator never received, an admin count off by one, verdicts missing.
        let other = compare(&before, &page(15, 2, 6, 129), &stats(5, 3, 30), &paths);
        assert!(!other.matched);
        let text = other.mismatches.join("\n");
        assert!(
            text.contains("/v1/verify: gateway answered 7, generator received 5"),
            "{text}"
        );
        assert!(
            text.contains(
                "route=\"POST /admin/v1/revocations\",code=\"200\"}: gateway 4, generator 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("verifications valid: gateway 29, generator 30"),
            "{text}"
        );
        assert_eq!(other.mismatches.len(), 4, "{text}");
    }

    #[test]
    fn valid_verdicts_add_up_over_tenants() {
        assert_eq!(valid_verdicts(&page(0, 0, 0, 41)), 42.0);
    }
}
