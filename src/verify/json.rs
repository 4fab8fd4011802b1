//! Strict JSON for signed documents: duplicate object keys are refused and nesting is bounded.
//!
//! serde_json's own `Value` keeps the last of duplicate keys, which invites parser-differential
//! attacks (two verifiers reading different claims from one signed payload). Bounding depth while
//! parsing also means a hostile document never builds a deep tree we would then walk recursively.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a document was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonError {
    /// Nesting deeper than the limit: a limit violation (`malformed`).
    TooDeep,
    /// Anything else: bad syntax, duplicate key, trailing data.
    Invalid,
}

/// Parses `bytes` as one JSON value with at most `max_depth` nested arrays/objects.
pub fn parse(bytes: &[u8], max_depth: usize) -> Result<Value, JsonError> {
    let too_deep = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Strict {
        depth_left: max_depth,
        too_deep: &too_deep,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match value {
        Ok(value) => Ok(value),
        Err(_) if too_deep.get() => Err(JsonError::TooDeep),
        Err(_) => Err(JsonError::Invalid),
    }
}

/// Parses a JSON object (JWT headers and payloads must be objects).
pub fn parse_object(bytes: &[u8], max_depth: usize) -> Result<Map<String, Value>, JsonError> {
    match parse(bytes, max_depth)? {
        Value::Object(map) => Ok(map),
        _ => Err(JsonError::Invalid),
    }
}

/// Depth of a value: scalars 0, containers 1 + deepest child.
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[derive(Clone, Copy)]
struct Strict<'a> {
    depth_left: usize,
    too_deep: &'a Cell<bool>,
}

impl Strict<'_> {
    fn nested<E: serde::de::Error>(self) -> Result<Self, E> {
        if self.depth_left == 0 {
            self.too_deep.set(true);
            return Err(E::custom("json nesting exceeds the limit"));
        }
        Ok(Strict {
            depth_left: self.depth_left - 1,
            too_deep: self.too_deep,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = access.next_value_seed(inner)?;
            if map.insert(key, value).is_some() {
                return Err(A::Error::custom("duplicate object key"));
            }
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert_eq!(parse(br#"{"a":1,"a":2}"#, 16), Err(JsonError::Invalid));
        assert_eq!(
            parse(br#"{"x":{"a":1,"a":2}}"#, 16),
            Err(JsonError::Invalid)
        );
        assert!(parse(br#"{"a":1,"b":{"a":2}}"#, 16).is_ok());
    }

    #[test]
    fn nesting_is_bounded_and_reported_as_such() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse(deep(16).as_bytes(), 16).is_ok());
        assert_eq!(depth(&parse(deep(16).as_bytes(), 16).unwrap()), 16);
        assert_eq!(parse(deep(17).as_bytes(), 16), Err(JsonError::TooDeep));
        assert_eq!(parse(deep(100_000).as_bytes(), 16), Err(JsonError::TooDeep));
    }

    #[test]
    fn trailing_data_and_bad_syntax_are_invalid() {
        assert_eq!(parse(b"{} {}", 16), Err(JsonError::Invalid));
        assert_eq!(parse(b"{", 16), Err(JsonError::Invalid));
        assert_eq!(parse_object(b"[1]", 16), Err(JsonError::Invalid));
        assert_eq!(parse(b"1e999", 16), Err(JsonError::Invalid));
    }
}
