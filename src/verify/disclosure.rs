//! RFC 9901 §7.1 disclosure processing: applying disclosures to the issuer payload.
//!
//! Enforced, each a `disclosure_invalid` (check 8):
//! - `_sd` is an array of digests; an array element `{"...": d}` has exactly that one key;
//! - every digest value occurs at most once in the payload and in disclosed values (decoys too);
//! - every disclosure is referenced exactly once, in the right form (3 elements in an object's
//!   `_sd`, 2 elements in an array);
//! - a disclosed name never collides with a claim already in its object.
//!
//! Disclosures nest (a disclosed value may hold `_sd` itself); the depth of the processed result
//! is bounded by the JSON depth limit, and exceeding it is a limit violation (`malformed`).
//!
//! Two walkers apply these rules: [`validate`] on skeletons (every presentation; allocates
//! almost nothing) and [`build_claims`] on full JSON trees (only when claims are requested).
//! **Invariant:** they accept exactly the same inputs; `build_claims` runs after `validate` and a
//! disagreement fails closed. `tests::walkers_agree` checks the two against each other.

use hashbrown::{HashMap, HashSet};
use serde_json::{Map, Value};

use super::json;
use super::outcome::{Outcome, Rejection};
use super::presentation::Disclosure;
use super::skeleton::{Container, Digest, SdArray, SdObject, digest_of, name_hash};
use crate::b64;

const fn invalid(detail: &'static str) -> Rejection {
    Rejection::new(Outcome::DisclosureInvalid, detail)
}

const TOO_DEEP: Rejection = Rejection::new(
    Outcome::Malformed,
    "processed claims exceed the nesting limit",
);

/// Skeleton walk state.
struct Walk<'d, 'a> {
    disclosures: &'d [Disclosure<'a>],
    /// Disclosure index by digest (small: ≤ 64 entries).
    by_digest: HashMap<&'d Digest, usize, foldhash::fast::RandomState>,
    used: Vec<bool>,
    /// Every digest met (decoys included), checked for repeats as it is met.
    seen: HashSet<&'d Digest, foldhash::fast::RandomState>,
    max_depth: usize,
}

impl<'d, 'a> Walk<'d, 'a> {
    /// Meets a digest: refuses a repeat, returns the disclosure it names (if not a decoy).
    fn meet(&mut self, digest: &'d Digest) -> Result<Option<&'d Disclosure<'a>>, Rejection> {
        if !self.seen.insert(digest) {
            return Err(invalid("a digest occurs more than once"));
        }
        let Some(&index) = self.by_digest.get(digest) else {
            return Ok(None);
        };
        // `seen` refuses a second reference, so each disclosure is marked once.
        self.used[index] = true;
        Ok(self.disclosures.get(index))
    }

    fn container(&mut self, container: &'d Container, depth: usize) -> Result<(), Rejection> {
        if depth > self.max_depth {
            return Err(TOO_DEEP);
        }
        match container {
            Container::Object(object) => self.object(object, depth),
            Container::Array(array) => self.array(array, depth),
        }
    }

    fn object(&mut self, object: &'d SdObject, depth: usize) -> Result<(), Rejection> {
        for child in &object.children {
            self.container(child, depth + 1)?;
        }
        let mut disclosed: Vec<u64> = Vec::new();
        for digest in &object.digests {
            let Some(disclosure) = self.meet(digest)? else {
                continue;
            };
            let Some(name) = disclosure.name else {
                return Err(invalid(
                    "an array-element disclosure is referenced from an object",
                ));
            };
            if object.names.contains(&name) || disclosed.contains(&name) {
                return Err(invalid(
                    "a disclosed claim name collides with an existing claim",
                ));
            }
            disclosed.push(name);
            if let Some(value) = &disclosure.value {
                self.container(value, depth + 1)?;
            }
        }
        Ok(())
    }

    fn array(&mut self, array: &'d SdArray, depth: usize) -> Result<(), Rejection> {
        for child in &array.children {
            self.container(child, depth + 1)?;
        }
        for digest in &array.digests {
            let Some(disclosure) = self.meet(digest)? else {
                continue;
            };
            if disclosure.name.is_some() {
                return Err(invalid(
                    "an object-property disclosure is referenced from an array",
                ));
            }
            if let Some(value) = &disclosure.value {
                self.container(value, depth + 1)?;
            }
        }
        Ok(())
    }
}

/// Validates the disclosures against the payload skeleton (checks 8, and 1 for depth).
pub fn validate(
    payload: &SdObject,
    disclosures: &[Disclosure<'_>],
    max_depth: usize,
) -> Result<(), Rejection> {
    let mut by_digest = HashMap::with_capacity_and_hasher(
        disclosures.len(),
        foldhash::fast::RandomState::default(),
    );
    for (index, disclosure) in disclosures.iter().enumerate() {
        if by_digest.insert(&disclosure.digest, index).is_some() {
            return Err(invalid("the same disclosure is presented twice"));
        }
    }
    let mut walk = Walk {
        disclosures,
        by_digest,
        used: vec![false; disclosures.len()],
        seen: HashSet::with_capacity_and_hasher(
            payload.digests.len() + disclosures.len(),
            foldhash::fast::RandomState::default(),
        ),
        max_depth,
    };
    walk.object(payload, 1)?;
    if walk.used.iter().any(|used| !used) {
        return Err(invalid("a disclosure is not referenced by the payload"));
    }
    Ok(())
}

// ---- the claims builder (return_claims) -------------------------------------------------------

/// One disclosure as a full tree.
struct Full {
    digest: Digest,
    name: Option<String>,
    value: Value,
}

struct Build<'d> {
    table: HashMap<&'d [u8], (usize, bool), foldhash::fast::RandomState>,
    disclosures: &'d [Full],
    seen: HashSet<&'d str, foldhash::fast::RandomState>,
    max_depth: usize,
}

impl<'d> Build<'d> {
    fn take(&mut self, digest: &'d str) -> Result<Option<&'d Full>, Rejection> {
        if digest_of(digest).is_none() {
            return Err(invalid("_sd holds something other than a SHA-256 digest"));
        }
        if !self.seen.insert(digest) {
            return Err(invalid("a digest occurs more than once"));
        }
        match self.table.get_mut(digest.as_bytes()) {
            None => Ok(None),
            Some((index, used)) => {
                *used = true;
                Ok(self.disclosures.get(*index))
            }
        }
    }

    fn value(&mut self, value: &'d Value, depth: usize) -> Result<Value, Rejection> {
        match value {
            Value::Object(map) if depth <= self.max_depth => {
                Ok(Value::Object(self.object(map, depth)?))
            }
            Value::Array(items) if depth <= self.max_depth => {
                Ok(Value::Array(self.array(items, depth)?))
            }
            Value::Object(_) | Value::Array(_) => Err(TOO_DEEP),
            scalar => Ok(scalar.clone()),
        }
    }

    fn object(
        &mut self,
        map: &'d Map<String, Value>,
        depth: usize,
    ) -> Result<Map<String, Value>, Rejection> {
        let mut out = Map::new();
        for (name, value) in map {
            if name != "_sd" {
                out.insert(name.clone(), self.value(value, depth + 1)?);
            }
        }
        let Some(sd) = map.get("_sd") else {
            return Ok(out);
        };
        let Value::Array(digests) = sd else {
            return Err(invalid("_sd is not an array"));
        };
        let mut disclosed: Vec<&str> = Vec::new();
        for digest in digests {
            let Value::String(digest) = digest else {
                return Err(invalid("_sd holds a non-string digest"));
            };
            let Some(disclosure) = self.take(digest)? else {
                continue;
            };
            let Some(name) = disclosure.name.as_deref() else {
                return Err(invalid(
                    "an array-element disclosure is referenced from an object",
                ));
            };
            if map.contains_key(name) || disclosed.contains(&name) {
                return Err(invalid(
                    "a disclosed claim name collides with an existing claim",
                ));
            }
            disclosed.push(name);
            out.insert(name.to_owned(), self.value(&disclosure.value, depth + 1)?);
        }
        Ok(out)
    }

    fn array(&mut self, items: &'d [Value], depth: usize) -> Result<Vec<Value>, Rejection> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let digest = match item {
                Value::Object(map) if map.len() == 1 => map.get("..."),
                _ => None,
            };
            match digest {
                None => out.push(self.value(item, depth + 1)?),
                Some(Value::String(digest)) => match self.take(digest)? {
                    // A decoy element disappears.
                    None => {}
                    Some(disclosure) if disclosure.name.is_some() => {
                        return Err(invalid(
                            "an object-property disclosure is referenced from an array",
                        ));
                    }
                    Some(disclosure) => out.push(self.value(&disclosure.value, depth + 1)?),
                },
                Some(_) => return Err(invalid("an array element digest is not a string")),
            }
        }
        Ok(out)
    }
}

fn full_disclosure(disclosure: &Disclosure<'_>, max_depth: usize) -> Result<Full, Rejection> {
    let failed = invalid("disclosure could not be decoded again");
    let bytes = b64::decode(disclosure.text).map_err(|_| failed)?;
    let Value::Array(mut items) = json::parse(&bytes, max_depth).map_err(|_| failed)? else {
        return Err(failed);
    };
    let value = items.pop().ok_or(failed)?;
    let name = match items.len() {
        2 => Some(
            items
                .pop()
                .and_then(|n| n.as_str().map(str::to_owned))
                .ok_or(failed)?,
        ),
        1 => None,
        _ => return Err(failed),
    };
    Ok(Full {
        digest: disclosure.digest,
        name,
        value,
    })
}

/// The processed payload: disclosed claims in place, `_sd` and `_sd_alg` removed. Call only after
/// [`validate`] passed; any failure here is treated as a failed check (fail closed).
pub fn build_claims(
    payload_json: &[u8],
    disclosures: &[Disclosure<'_>],
    max_depth: usize,
) -> Result<Map<String, Value>, Rejection> {
    let Value::Object(payload) = json::parse(payload_json, max_depth)
        .map_err(|_| invalid("payload could not be decoded again"))?
    else {
        return Err(invalid("payload is not an object"));
    };
    let full: Vec<Full> = disclosures
        .iter()
        .map(|d| full_disclosure(d, max_depth))
        .collect::<Result<_, _>>()?;
    let mut table =
        HashMap::with_capacity_and_hasher(full.len(), foldhash::fast::RandomState::default());
    for (index, disclosure) in full.iter().enumerate() {
        if table
            .insert(disclosure.digest.as_slice(), (index, false))
            .is_some()
        {
            return Err(invalid("the same disclosure is presented twice"));
        }
    }
    let mut build = Build {
        table,
        disclosures: &full,
        seen: HashSet::default(),
        max_depth,
    };
    let mut claims = build.object(&payload, 1)?;
    if build.table.values().any(|(_, used)| !used) {
        return Err(invalid("a disclosure is not referenced by the payload"));
    }
    claims.remove("_sd_alg");
    Ok(claims)
}

/// Hash of a claim name (re-exported for tests).
pub fn claim_name_hash(name: &str) -> u64 {
    name_hash(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::extract;
    use crate::verify::presentation::{Limits, decode_disclosures};
    use crate::verify::skeleton::Container;
    use proptest::prelude::*;
    use serde_json::json;
    use sha2::{Digest as _, Sha256};

    fn disclosure_text(parts: &Value) -> String {
        b64::encode(parts.to_string())
    }

    fn digest(text: &str) -> String {
        b64::encode(Sha256::digest(text.as_bytes()))
    }

    /// Both walkers on one payload and a set of disclosure texts.
    fn both(payload: &Value, texts: &[String]) -> (Result<(), Outcome>, Result<(), Outcome>) {
        let limits = Limits {
            max_json_depth: 6,
            ..Limits::default()
        };
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let bytes = payload.to_string().into_bytes();
        let decoded = match decode_disclosures(&refs, &limits) {
            Err(r) => return (Err(r.outcome), Err(r.outcome)),
            Ok(Err(_)) => {
                return (
                    Err(Outcome::DisclosureInvalid),
                    Err(Outcome::DisclosureInvalid),
                );
            }
            Ok(Ok(d)) => d,
        };
        let skeleton = match extract::parse(&bytes, 6, 0) {
            Ok(extract::Extracted {
                problem: Some(_), ..
            }) => Err(Outcome::DisclosureInvalid),
            Ok(extract::Extracted {
                container: Some(Container::Object(object)),
                ..
            }) => Ok(object),
            _ => return (Err(Outcome::Malformed), Err(Outcome::Malformed)),
        };
        let validated = skeleton.and_then(|s| validate(&s, &decoded, 6).map_err(|r| r.outcome));
        let built = build_claims(&bytes, &decoded, 6)
            .map(|_| ())
            .map_err(|r| r.outcome);
        (validated, built)
    }

    #[test]
    fn a_disclosure_that_names_itself_is_refused_not_looped() {
        // A value cannot contain its own digest (it would be a hash fixpoint), but a chain A→B→A
        // through two disclosures is caught by the repeat check all the same.
        let b_text = disclosure_text(&json!(["s2", "b", {"x": 1}]));
        let a_text = disclosure_text(&json!(["s1", "a", {"_sd": [digest(&b_text)]}]));
        let payload = json!({"_sd": [digest(&a_text), digest(&b_text)]});
        let (validated, built) = both(&payload, &[a_text, b_text]);
        assert_eq!(validated, Err(Outcome::DisclosureInvalid));
        assert_eq!(built, validated);
    }

    fn arb_claims() -> impl Strategy<Value = (Value, Vec<String>)> {
        // Random payloads over a small name space, with disclosures some of which are referenced
        // (once, twice, from the wrong place) and some not.
        let leaf = prop_oneof![Just(json!(1)), Just(json!("s")), Just(json!(null))];
        let names = prop::sample::select(vec!["a", "b", "c", "_sd", "..."]);
        (
            prop::collection::vec((names.clone(), leaf.clone()), 0..4),
            prop::collection::vec((prop::option::of(names), leaf, 0u8..6), 0..5),
            any::<bool>(),
        )
            .prop_map(|(plain, discs, nested)| {
                let mut payload = serde_json::Map::new();
                for (name, value) in plain {
                    if name != "_sd" {
                        payload.insert(name.to_string(), value);
                    }
                }
                let mut texts = Vec::new();
                let mut top = Vec::new();
                let mut list = Vec::new();
                let mut inner = Vec::new();
                for (i, (name, value, placement)) in discs.into_iter().enumerate() {
                    let text = match name {
                        Some(name) => disclosure_text(&json!([format!("salt{i}"), name, value])),
                        None => disclosure_text(&json!([format!("salt{i}"), value])),
                    };
                    let d = digest(&text);
                    match placement {
                        0 => top.push(json!(d)),
                        1 => list.push(json!({"...": d})),
                        2 => inner.push(json!(d)),
                        3 => {
                            top.push(json!(d));
                            inner.push(json!(d));
                        }
                        4 => top.push(json!("not a digest")),
                        _ => {}
                    }
                    texts.push(text);
                }
                if !top.is_empty() {
                    payload.insert("_sd".into(), Value::Array(top));
                }
                if !list.is_empty() {
                    list.push(json!("plain"));
                    payload.insert("list".into(), Value::Array(list));
                }
                if nested || !inner.is_empty() {
                    payload.insert("obj".into(), json!({"_sd": inner, "z": {"deep": [1, [2]]}}));
                }
                (Value::Object(payload), texts)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn walkers_agree((payload, texts) in arb_claims()) {
            let (validated, built) = both(&payload, &texts);
            prop_assert_eq!(validated, built, "payload {}", payload);
        }
    }
}
