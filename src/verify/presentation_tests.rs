//! Tests of `presentation.rs` (kept in their own file so the module reads as one screenful of code).
use super::*;

/// Every string over a small alphabet (with a multi-byte char) up to length 6.
fn all_strings() -> Vec<String> {
    let alphabet = ['a', '~', '.', 'é'];
    let mut out = vec![String::new()];
    let mut frontier = vec![String::new()];
    for _ in 0..6 {
        frontier = frontier
            .iter()
            .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
            .collect();
        out.extend(frontier.iter().cloned());
    }
    out
}

#[test]
fn split_agrees_with_splitting_at_every_tilde() {
    let limits = Limits {
        max_disclosures: 2,
        ..Limits::default()
    };
    for text in all_strings() {
        let expected = text.rfind('~').map(|last| {
            let mut pieces = text[..last].split('~');
            let issuer = pieces.next().unwrap_or("");
            (
                issuer,
                pieces.collect::<Vec<_>>(),
                &text[..=last],
                &text[last + 1..],
            )
        });
        match (split(&text, &limits), expected) {
            (Err(_), None) => {}
            (Err(_), Some((issuer, disclosures, _, _))) => {
                assert!(issuer.is_empty() || disclosures.len() > 2, "{text:?}");
            }
            (Ok(parts), Some((issuer, disclosures, sd_hash_input, kb_jwt))) => {
                assert_eq!(parts.issuer_jwt, issuer, "{text:?}");
                assert_eq!(parts.disclosures, disclosures, "{text:?}");
                assert_eq!(parts.sd_hash_input, sd_hash_input, "{text:?}");
                assert_eq!(parts.kb_jwt, kb_jwt, "{text:?}");
            }
            (Ok(_), None) => panic!("{text:?} has no tilde but split"),
        }
    }
}

#[test]
fn jws_segments_are_exactly_three() {
    for text in all_strings() {
        let pieces: Vec<&str> = text.split('.').collect();
        let expected = (pieces.len() == 3).then(|| (pieces[0], pieces[1], pieces[2]));
        assert_eq!(jws_segments(&text), expected, "{text:?}");
    }
}

/// What a disclosure read gives, in comparable form.
fn reading(
    result: Result<Disclosure<'_>, DisclosureError>,
) -> Result<(Digest, Option<u64>, Option<Container>), String> {
    match result {
        Ok(d) => Ok((d.digest, d.name, d.value)),
        Err(DisclosureError::TooDeep) => Err("too deep".into()),
        Err(DisclosureError::Invalid(detail)) => Err(detail.into()),
    }
}

/// Pieces of disclosures: plain and escaped strings (an escaped reserved name among them),
/// reserved names, a raw control character, non-strings, nested containers with and without
/// `_sd` problems, duplicate keys, multi-byte characters.
const ELEMENTS: [&str; 20] = [
    r#""salt""#,
    r#""given_name""#,
    r#""NG""#,
    r#""_sd""#,
    r#""...""#,
    r#""\u005fsd""#,
    r#""n\u0061me""#,
    r#""a\"b""#,
    "\"a\tb\"",
    r#""""#,
    r#""é""#,
    "42",
    "-0.5e3",
    "true",
    "null",
    r#"{"_sd":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"],"a":{"b":[1,{"...":"x"}]}}"#,
    r#"{"_sd":5}"#,
    r#"[{"...":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},[[]]]"#,
    r#"{"k":1,"k":2}"#,
    r#"[[[[1]]]]"#,
];
const SEPARATORS: [&str; 4] = [",", ", ", " ,", ",\n"];
const TAILS: [&str; 3] = ["", " ", "x"];

/// `[e0 s1 e1 s2 e2 …]tail` from indexes into the tables above.
fn disclosure_text(elements: &[(usize, usize)], tail: usize) -> Vec<u8> {
    let mut text = String::from("[");
    for (i, &(element, separator)) in elements.iter().enumerate() {
        if i > 0 {
            text.push_str(SEPARATORS[separator]);
        }
        text.push_str(ELEMENTS[element]);
    }
    text.push(']');
    text.push_str(TAILS[tail]);
    text.into_bytes()
}

/// Reads `bytes` both ways at several depth limits; true if the fast path answered.
fn compare_paths(bytes: &[u8]) -> Result<bool, String> {
    let mut fast = false;
    for max_json_depth in [0, 1, 2, 3, Limits::default().max_json_depth] {
        let limits = Limits {
            max_json_depth,
            ..Limits::default()
        };
        let general = reading(read_disclosure_in_general("text", bytes, &limits));
        let either = reading(read_disclosure("text", bytes, &limits));
        if either != general {
            return Err(format!(
                "{:?} at depth {max_json_depth}: {either:?} vs {general:?}",
                String::from_utf8_lossy(bytes)
            ));
        }
        fast |= extract::parse_plain_disclosure(bytes, max_json_depth).is_some();
    }
    Ok(fast)
}

/// Every 2- and 3-element disclosure over the tables (with 1- and 4-element ones for the
/// plain separator), read both ways: the same digest, name, value skeleton or error.
#[test]
fn plain_disclosures_read_as_the_general_parser_reads_them() {
    let n = ELEMENTS.len();
    let mut texts = Vec::new();
    for a in 0..n {
        texts.push(disclosure_text(&[(a, 0)], 0));
        for b in 0..n {
            for tail in 0..TAILS.len() {
                for sep in 0..SEPARATORS.len() {
                    texts.push(disclosure_text(&[(a, 0), (b, sep)], tail));
                }
            }
            for c in 0..n {
                for sep in 0..SEPARATORS.len() {
                    texts.push(disclosure_text(&[(a, 0), (b, sep), (c, sep)], 0));
                }
                texts.push(disclosure_text(&[(a, 0), (b, 0), (c, 0)], 1));
                texts.push(disclosure_text(&[(a, 0), (b, 0), (c, 0), (0, 0)], 0));
            }
        }
    }
    let mut fast = 0;
    for text in &texts {
        match compare_paths(text) {
            Ok(hit) => fast += usize::from(hit),
            Err(difference) => panic!("{difference}"),
        }
    }
    // The fast path must really be exercised, and must not take everything.
    assert!(
        fast > 1_000,
        "fast path taken {fast} times of {}",
        texts.len()
    );
    assert!(
        fast < texts.len() / 2,
        "fast path taken {fast} times of {}",
        texts.len()
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

    /// Mostly-plain disclosures with one byte replaced anywhere: still read alike.
    #[test]
    fn mutated_disclosures_read_as_the_general_parser_reads_them(
        elements in proptest::collection::vec((0..ELEMENTS.len(), 0..2usize), 1..5),
        at in proptest::prelude::any::<proptest::sample::Index>(),
        byte in proptest::prelude::any::<u8>(),
    ) {
        let mut bytes = disclosure_text(&elements, 0);
        let at = at.index(bytes.len());
        bytes[at] = byte;
        if let Err(difference) = compare_paths(&bytes) {
            proptest::prop_assert!(false, "{}", difference);
        }
    }
}

#[test]
fn usual_disclosures_take_the_fast_path() {
    let depth = Limits::default().max_json_depth;
    for (text, name) in [
        (
            r#"["hkp8hUNbGP9rf1HF5vlhUA","given_name","Amina"]"#,
            Some("given_name"),
        ),
        (r#"["s","age",42]"#, Some("age")),
        (r#"["s","address",{"_sd":[]}]"#, Some("address")),
        (r#"["s","_sd","x"]"#, Some("_sd")),
        (r#"["s","NG"]"#, None),
        (r#"["s",{"a":[1]}]"#, None),
        // The value is read by the general value parser, leading whitespace included.
        (r#"["s","n", 1]"#, Some("n")),
    ] {
        let plain = extract::parse_plain_disclosure(text.as_bytes(), depth);
        assert_eq!(plain.map(|p| p.name), Some(name), "{text}");
    }
    // Anything else goes the general way.
    for text in [
        r#"[ "s","n","v"]"#,
        r#"["s", "n","v"]"#,
        r#"["s\u0041","n","v"]"#,
        r#"["s","\u005fsd","v"]"#,
        r#"["s","n","v","w"]"#,
        r#"["s","n",{"_sd":5}]"#,
        r#"["s","n","v"] "#,
        r#"["s"]"#,
    ] {
        assert!(
            extract::parse_plain_disclosure(text.as_bytes(), depth).is_none(),
            "{text}"
        );
    }
    assert!(extract::parse_plain_disclosure(br#"["s","n","v"]"#, 0).is_none());
}
