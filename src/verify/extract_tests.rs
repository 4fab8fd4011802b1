//! Tests of `extract.rs` (kept in their own file so the module reads as one screenful of code).
use super::*;
use crate::verify::json;
use proptest::prelude::*;
use serde_json::{Value, json};

/// The skeleton of a `Value`, written plainly: the reference for [`parse`].
fn reference(
    value: &Value,
    in_array: bool,
    problem: &mut Option<&'static str>,
) -> Option<Container> {
    match value {
        Value::Object(map) => {
            let mut skeleton = SdObject::default();
            for (name, value) in map {
                if name == "_sd" {
                    match value {
                        Value::Array(items) => {
                            for item in items {
                                match item.as_str().and_then(digest_of) {
                                    Some(d) => skeleton.digests.push(d),
                                    None => {
                                        problem.get_or_insert(
                                            "_sd holds something other than a SHA-256 digest",
                                        );
                                    }
                                }
                                // Elements are parsed too (their own `_sd` problems count).
                                reference(item, true, problem);
                            }
                        }
                        other => {
                            problem.get_or_insert("_sd is not an array");
                            reference(other, false, problem);
                        }
                    }
                    continue;
                }
                skeleton.names.push(name_hash(name));
                if let Some(child) = reference(value, false, problem) {
                    skeleton.children.push(child);
                }
            }
            let _ = in_array;
            Some(Container::Object(skeleton))
        }
        Value::Array(items) => {
            let mut skeleton = SdArray::default();
            for item in items {
                let digest_ref = match item {
                    Value::Object(map) if map.len() == 1 => map.get("..."),
                    _ => None,
                };
                let child = reference(item, true, problem);
                match digest_ref {
                    Some(value) => match value.as_str().and_then(digest_of) {
                        Some(d) => skeleton.digests.push(d),
                        None => {
                            problem
                                .get_or_insert("an array element digest is not a SHA-256 digest");
                        }
                    },
                    None => skeleton.children.extend(child),
                }
            }
            Some(Container::Array(skeleton))
        }
        _ => None,
    }
}

const DIGEST: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!(1)),
        Just(json!("s")),
        Just(json!(DIGEST)),
        Just(json!(null)),
        Just(json!(2.5))
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["a", "b", "_sd", "...", "c"]),
                    inner
                ),
                0..4
            )
            .prop_map(|entries| Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Acceptance matches the owned strict parser on arbitrary text.
    #[test]
    fn accepts_what_the_owned_parser_accepts(text in r#"[\[\]{}",:0-9a-c\\ .e-]{0,40}"#) {
        let owned = json::parse(text.as_bytes(), 4).map(|_| ());
        let extracted = parse(text.as_bytes(), 4, 0).map(|_| ());
        prop_assert_eq!(owned, extracted, "{}", text);
    }

    /// Skeletons and disclosure-rule problems match the plain reference on real JSON.
    #[test]
    fn agrees_with_the_value_parser(value in arb_value()) {
        let text = value.to_string();
        let extracted = parse(text.as_bytes(), 16, 0).expect("valid JSON");
        let mut problem = None;
        let expected = reference(&value, false, &mut problem);
        prop_assert_eq!(extracted.problem.is_some(), problem.is_some(), "{}", text);
        if problem.is_none() {
            prop_assert_eq!(extracted.container, expected, "{}", text);
        }
    }
}

/// A captured shape as a `Value` (for documents without `{"...": d}` objects).
fn to_value(shape: &Shape<'_>) -> Value {
    match shape {
        Shape::Null => Value::Null,
        Shape::Bool(b) => json!(b),
        Shape::Int(i) => json!(i),
        Shape::Float(f) => json!(f),
        Shape::Str(s) => json!(s),
        Shape::Fields(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), to_value(v)))
                .collect(),
        ),
        Shape::Items(items) => Value::Array(items.iter().map(to_value).collect()),
        Shape::Container | Shape::DigestRef(_) => json!("<not captured>"),
    }
}

fn arb_text_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<String>().prop_map(Value::String),
        "[\\\"/\u{0}-\u{1f}a\u{e9}\u{20ac}\u{1f600}]{0,6}".prop_map(Value::String),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z\u{e9}\"\\\\]{0,4}", inner), 0..4).prop_map(|entries| {
                Value::Object(
                    entries
                        .into_iter()
                        .filter(|(k, _)| k != "_sd" && k != "...")
                        .collect(),
                )
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Acceptance matches serde_json on text over JSON's whole alphabet of trouble.
    #[test]
    fn accepts_what_serde_accepts_on_wide_text(text in "[\\[\\]{}\",:0-9.eE+\\-tfrulsan\\\\/bu\u{0}\t\n\r \u{7f}\u{e9}\u{1f600}]{0,30}") {
        let owned = json::parse(text.as_bytes(), 8).map(|_| ());
        let extracted = parse(text.as_bytes(), 8, 0).map(|_| ());
        prop_assert_eq!(owned, extracted, "{:?}", text);
    }

    /// One changed byte in a real document: both parsers agree on acceptance.
    #[test]
    fn agrees_on_mutated_documents(value in arb_text_value(), position in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = value.to_string().into_bytes();
        let at = position % bytes.len();
        bytes[at] = byte;
        let owned = json::parse(&bytes, 8).map(|_| ());
        let extracted = parse(&bytes, 8, 0).map(|_| ());
        prop_assert_eq!(owned, extracted, "{:?}", String::from_utf8_lossy(&bytes));
    }

    /// With everything captured, the values read equal the document's. (Compared with the
    /// generated value, not serde_json's re-parse: serde_json's default float parsing can
    /// be one ulp off, while `str::parse::<f64>` rounds exactly.)
    #[test]
    fn captured_values_equal_the_document(value in arb_text_value()) {
        let text = value.to_string();
        let extracted = parse(text.as_bytes(), 8, 8).expect("valid JSON");
        prop_assert_eq!(to_value(&extracted.shape), value, "{}", text);
    }
}

/// The `_sd` element fast path ([`Parser::quoted_digest`]) against the general path, on
/// digests and every near miss: wrong length, a non-base64url character, an escape, a
/// control character, a missing closing quote, a document that ends inside the element.
#[test]
fn sd_digest_fast_path_agrees_with_the_general_path() {
    let base = DIGEST.to_string();
    let mut elements: Vec<String> = vec![
        format!("\"{base}\""),
        format!("\"{}\"", &base[..42]),
        format!("\"{base}A\""),
        format!("\"{}=\"", &base[..42]),
        format!("\"{}+\"", &base[..42]),
        format!("\"{}\\\"\"", &base[..41]),
        format!("\"{}\\u0041\"", &base[..37]),
        format!("\"{}\u{1}\"", &base[..42]),
        format!("\"{}é\"", &base[..41]),
        format!("\"{base}"),
        format!("\"{base}\" "),
        format!(" \"{base}\""),
        format!("\"{base}\",\"{base}\""),
        "1".to_string(),
    ];
    for position in 0..43 {
        let mut bytes = base.clone().into_bytes();
        bytes[position] = b'.';
        elements.push(format!("\"{}\"", String::from_utf8(bytes).unwrap()));
    }
    for element in elements {
        for text in [
            format!("{{\"_sd\":[{element}]}}"),
            format!("{{\"_sd\":[{element}"),
        ] {
            let extracted = parse(text.as_bytes(), 16, 0);
            match serde_json::from_str::<Value>(&text) {
                Err(_) => assert!(extracted.is_err(), "{text}"),
                Ok(value) => {
                    let extracted = extracted.expect(&text);
                    let mut problem = None;
                    let expected = reference(&value, false, &mut problem);
                    assert_eq!(extracted.problem, problem, "{text}");
                    assert_eq!(extracted.container, expected, "{text}");
                }
            }
        }
    }
}

#[test]
fn escapes_numbers_and_surrogates_follow_rfc_8259() {
    let text = |s: &str| parse(s.as_bytes(), 4, 1).map(|e| to_value(&e.shape));
    assert_eq!(
        text(r#""a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#),
        Ok(json!("a\"\\/\u{8}\u{c}\n\r\té😀"))
    );
    assert_eq!(
        text(r#""\ud83d""#),
        Err(JsonError::Invalid),
        "lone high surrogate"
    );
    assert_eq!(
        text(r#""\ude00""#),
        Err(JsonError::Invalid),
        "lone low surrogate"
    );
    assert_eq!(
        text("\"\u{1}\""),
        Err(JsonError::Invalid),
        "raw control character"
    );
    assert_eq!(
        text("[-0, 0.5e1, 1E-2, 9223372036854775807, 9223372036854775808]"),
        Ok(json!([0, 5.0, 0.01, i64::MAX, 9223372036854775808.0]))
    );
    for bad in [
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "+1",
        "0x1",
        "1e999",
        "[1,]",
        "{\"a\":1,}",
        "tru",
        "nul",
        "\"\\x\"",
        "[1] x",
        "",
    ] {
        assert_eq!(text(bad), Err(JsonError::Invalid), "{bad}");
    }
    assert!(parse(b"\xff", 4, 0).is_err(), "invalid UTF-8");
}

#[test]
fn duplicate_keys_are_refused_even_in_big_objects() {
    assert!(parse(br#"{"a":1,"a":2}"#, 16, 0).is_err());
    let many: String = (0..100).map(|i| format!("\"k{i}\":1,")).collect::<String>() + "\"k77\":2";
    assert_eq!(
        parse(format!("{{{many}}}").as_bytes(), 16, 0).map(|_| ()),
        Err(JsonError::Invalid)
    );
    assert_eq!(
        parse(br#"{"_sd":[],"_sd":[]}"#, 16, 0).map(|_| ()),
        Err(JsonError::Invalid)
    );
}
