//! The Prometheus text exposition format (version 0.0.4), read into `series → value`, for
//! checks against a gateway's `/metrics`.
//!
//! The key is the series exactly as written: the metric name and its label block, if any,
//! byte for byte (`idgate_requests_total{route="/v1/verify",code="200"}`), so a caller looks a
//! sample up by the text it expects on the page. Comments (`# HELP`, `# TYPE`), blank lines and
//! lines that are not samples are skipped; a sample's optional timestamp is ignored. Should a
//! series appear twice (idgate never writes one twice), the first sample counts.

use std::collections::BTreeMap;

/// Every sample of `text`, by series.
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for (series, value) in text.lines().filter_map(sample) {
        samples.entry(series.to_string()).or_insert(value);
    }
    samples
}

/// `(series, value)` of one sample line, `None` for anything else.
fn sample(line: &str) -> Option<(&str, f64)> {
    let line = line.trim_end_matches('\r');
    if line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .unwrap_or(line.len());
    let (name, after_name) = line.split_at(name_end);
    if !is_metric_name(name) {
        return None;
    }
    let series_end = if after_name.starts_with('{') {
        name_end + label_block_length(after_name)?
    } else {
        name_end
    };
    let (series, rest) = line.split_at(series_end);
    // The value is separated from the series by whitespace; a timestamp may follow it.
    if !rest.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = parse_value(fields.next()?)?;
    match (fields.next(), fields.next()) {
        (None, _) => Some((series, value)),
        (Some(timestamp), None) if timestamp.parse::<i64>().is_ok() => Some((series, value)),
        _ => None,
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The length of the label block at the start of `text` (`{…}`, through the closing brace),
/// reading label values as quoted strings with backslash escapes, so that a `}` or a space
/// inside a value does not end the block. `None` if it is never closed.
fn label_block_length(text: &str) -> Option<usize> {
    let mut in_value = false;
    let mut escaped = false;
    for (at, c) in text.char_indices().skip(1) {
        match (in_value, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_value = false,
            (true, false, _) => {}
            (false, _, '"') => in_value = true,
            (false, _, '}') => return Some(at + 1),
            (false, _, _) => {}
        }
    }
    None
}

/// A sample value: a float, or `+Inf`, `-Inf`, `NaN`.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# HELP idgate_requests_total Requests answered.\n\
# TYPE idgate_requests_total counter\n\
idgate_requests_total{route=\"/v1/verify\",code=\"200\"} 3\n\
idgate_requests_total{route=\"POST /admin/v1/revocations\",code=\"401\"} 1\n\
\n\
idgate_replay_entries 7\n\
idgate_build_info{version=\"0.1.0 (a b)\"} 1\n\
idgate_request_duration_seconds_bucket{route=\"/v1/verify\",le=\"+Inf\"} 4\n\
idgate_request_duration_seconds_sum{route=\"/v1/verify\"} 0.0125\n\
idgate_trust_keys 4 1700000000000\r\n";

    #[test]
    fn samples_are_keyed_by_their_series_as_written() {
        let samples = parse(PAGE);
        assert_eq!(
            samples.get("idgate_requests_total{route=\"/v1/verify\",code=\"200\"}"),
            Some(&3.0)
        );
        assert_eq!(
            samples.get("idgate_requests_total{route=\"POST /admin/v1/revocations\",code=\"401\"}"),
            Some(&1.0)
        );
        assert_eq!(samples.get("idgate_replay_entries"), Some(&7.0));
        assert_eq!(
            samples.get("idgate_build_info{version=\"0.1.0 (a b)\"}"),
            Some(&1.0)
        );
        assert_eq!(
            samples.get("idgate_request_duration_seconds_bucket{route=\"/v1/verify\",le=\"+Inf\"}"),
            Some(&4.0)
        );
        assert_eq!(
            samples.get("idgate_request_duration_seconds_sum{route=\"/v1/verify\"}"),
            Some(&0.0125)
        );
        // A timestamp is not the value; a carriage return is not part of the line.
        assert_eq!(samples.get("idgate_trust_keys"), Some(&4.0));
        assert_eq!(samples.len(), 7, "{samples:?}");
        // Comments are not samples, and a name alone does not match a labelled series.
        assert!(!samples.keys().any(|k| k.starts_with('#')));
        assert_eq!(samples.get("idgate_requests_total"), None);
    }

    #[test]
    fn quoted_braces_spaces_and_escapes_stay_inside_the_label_block() {
        let samples = parse("m{a=\"x} 9\",b=\"q\\\"} 8\\\\\"} 5\nn{a=\"\\n\"} 6\n");
        assert_eq!(samples.get("m{a=\"x} 9\",b=\"q\\\"} 8\\\\\"}"), Some(&5.0));
        assert_eq!(samples.get("n{a=\"\\n\"}"), Some(&6.0));
        assert_eq!(samples.len(), 2, "{samples:?}");
    }

    #[test]
    fn special_values_are_read() {
        let samples = parse("a +Inf\nb -Inf\nc NaN\nd -1.5e3\ne 0\n");
        assert_eq!(samples["a"], f64::INFINITY);
        assert_eq!(samples["b"], f64::NEG_INFINITY);
        assert!(samples["c"].is_nan());
        assert_eq!(samples["d"], -1500.0);
        assert_eq!(samples["e"], 0.0);
    }

    #[test]
    fn lines_that_are_not_samples_are_skipped() {
        let samples = parse(
            "no_value\nbad value\nunclosed{a=\"b\" 1\nglued{a=\"b\"}1\n9starts_with_digit 1\n\
             two_timestamps 1 2 3\nnot_a_timestamp 1 x\n{a=\"b\"} 1\n  # indented comment 1\nok 2\n",
        );
        assert_eq!(
            samples.into_iter().collect::<Vec<_>>(),
            [("ok".to_string(), 2.0)]
        );
    }

    #[test]
    fn the_first_sample_of_a_repeated_series_counts() {
        let samples = parse("x 1\nx 2\n");
        assert_eq!(samples["x"], 1.0);
    }

    #[test]
    fn a_longer_name_is_another_series() {
        let samples = parse("idgate_revocation_entries_total 5\nidgate_revocation_entries 3\n");
        assert_eq!(samples["idgate_revocation_entries"], 3.0);
        assert_eq!(samples["idgate_revocation_entries_total"], 5.0);
    }
}
