//! The one way a JSON input's parse error is described back to its sender (request bodies,
//! revocation entries).
//!
//! serde_json's messages quote the offending input: `invalid type: string "1012345678",
//! expected a sequence`, ``unknown field `1012345678` ``, `` unknown variant `x` ``. Any of
//! those can be an ID number or a presentation, and errors must never echo request values. So
//! the description keeps only what comes from *our* schema — the error class, the field names
//! serde expected (`missing field `at``, `expected one of ...`), and the column — and drops
//! everything the sender wrote.
//!
//! A leaf module: it knows serde_json and nothing of the crate.

use serde_json::error::Category;

/// `error` without any of the input's text: class, what was expected, and the column.
pub fn describe(error: &serde_json::Error) -> String {
    let text = error.to_string();
    // serde_json appends " at line L column C" to every message.
    let message = text.split(" at line ").next().unwrap_or_default();
    // What serde expected comes from the schema (type names, field and variant names).
    let expected = message
        .split_once(", expected ")
        .map(|(_, expected)| format!(" (expected {expected})"))
        .unwrap_or_default();
    let class = match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => "invalid JSON".to_string(),
        Category::Data => {
            if let Some(field) = message.strip_prefix("missing field ") {
                // The name of one of our fields, in backquotes.
                format!("missing field {field}")
            } else if message.starts_with("unknown field") {
                format!("unknown field{expected}")
            } else if message.starts_with("unknown variant") {
                format!("a field has a value outside its allowed set{expected}")
            } else if message.starts_with("invalid type")
                || message.starts_with("invalid value")
                || message.starts_with("invalid length")
            {
                format!("a field has the wrong type or value{expected}")
            } else {
                // A custom message (from a `Deserialize` impl of ours) may carry input: say
                // only that a value was refused.
                "a field has a value that is not allowed".to_string()
            }
        }
    };
    format!("{class} (column {})", error.column())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Shape {
        subjects: Vec<String>,
        kind: Option<Kind>,
        count: Option<u8>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Subject,
        Credential,
    }

    fn describe_text(input: &str) -> String {
        describe(&serde_json::from_str::<Shape>(input).unwrap_err())
    }

    #[test]
    fn descriptions_never_quote_the_input() {
        for input in [
            r#"{"subjects":"1012345678"}"#,
            r#"{"subjects":[1012345678]}"#,
            r#"{"1012345678":[]}"#,
            r#"{"subjects":[],"kind":"1012345678"}"#,
            r#"{"subjects":[],"count":1012345678}"#,
            r#"{"subjects":["a"],"1012345678"#,
            r#"["1012345678"]"#,
            r#"1012345678"#,
        ] {
            let description = describe_text(input);
            assert!(
                !description.contains("1012345678"),
                "{input} -> {description}"
            );
        }
    }

    #[test]
    fn descriptions_keep_what_the_schema_says() {
        assert_eq!(
            describe_text(r#"{"subjects":"1012345678"}"#),
            "a field has the wrong type or value (expected a sequence) (column 24)"
        );
        assert!(describe_text(r#"{}"#).starts_with("missing field `subjects`"));
        assert!(
            describe_text(r#"{"subjects":[],"x":1}"#)
                .starts_with("unknown field (expected one of `subjects`, `kind`, `count`)")
        );
        assert!(
            describe_text(r#"{"subjects":[],"kind":"other"}"#).starts_with(
                "a field has a value outside its allowed set (expected `subject` or `credential`)"
            )
        );
        assert!(describe_text(r#"{"subjects":[]"#).starts_with("invalid JSON"));
    }
}
