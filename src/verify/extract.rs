//! Single-pass, strict extraction of what verification needs from a JSON document.
//!
//! A hand-written recursive-descent parser walks the document once and returns, for every value,
//! its [`Shape`] (the scalar itself, or nothing for containers below the capture depth) and its
//! skeleton (see `skeleton.rs`). Strings borrow from the input when unescaped. Nothing else is
//! built: no `Value` tree, no per-string allocation, no second pass to look claims up.
//!
//! Why not serde_json: this parser gives in one pass what verification needs — the claims, the
//! skeleton of every `_sd` array, duplicate-key refusal — where serde_json would build a `Value`
//! tree and a second pass would walk it. Measured on 256 issuer payloads (BENCHMARKS.md,
//! "Criterion details", payload row): 0.45 ms for this extractor against 0.69 ms for
//! `serde_json::Value` alone (1.5×), before any lookup; serde's validate-only pass (`IgnoredAny`)
//! takes 0.17 ms but yields nothing. The grammar is RFC 8259's, checked against serde_json by
//! the property tests below.
//!
//! One file (about 640 lines without its tests, which are in `extract_tests.rs`): it is one
//! recursive-descent grammar whose functions call one another, and reads best in one place.
//!
//! Strictness matches `json.rs`: duplicate keys are refused (compared by the same 64-bit name
//! hashes the skeleton keeps; a false match refuses, never accepts), nesting is bounded while
//! parsing, trailing data and invalid UTF-8 are refused, lone surrogates are refused. Problems
//! that RFC 9901 §7 assigns to disclosure processing (an `_sd` that is not an array of digests,
//! a bad `{"...": d}`) do not stop the parse; the first one is reported beside the result.

use std::borrow::Cow;

use hashbrown::HashSet;

use super::json::JsonError;
use super::skeleton::{Container, Digest, SdArray, SdObject, digest_of, name_hash};

/// A value as verification sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape<'de> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'de, str>),
    /// An object within the capture depth: its entries in document order.
    Fields(Vec<(Cow<'de, str>, Shape<'de>)>),
    /// An array within the capture depth: its elements.
    Items(Vec<Shape<'de>>),
    /// A container below the capture depth (only its skeleton is kept).
    Container,
    /// `{"...": x}` with that one key: an array-element digest (valid or not).
    ///
    /// Boxed: a 43-byte array inline would give every `Shape` byte alignment for its payload,
    /// and moving such values through the parser's returns stalled on misaligned copies.
    DigestRef(Option<Box<Digest>>),
}

impl<'de> Shape<'de> {
    /// The field `name` of a captured object.
    pub fn field(&self, name: &str) -> Option<&Shape<'de>> {
        match self {
            Shape::Fields(fields) => fields.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Shape::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A NumericDate (RFC 7519): integer seconds; a fractional value is floored.
    pub fn as_date(&self) -> Option<i64> {
        match *self {
            Shape::Int(seconds) => Some(seconds),
            // The bound keeps the cast exact; anything beyond is nonsense for a date.
            Shape::Float(seconds) if seconds.abs() < 1e15 => Some(seconds.floor() as i64),
            _ => None,
        }
    }
}

/// A document: the top value's shape, its skeleton, and the first disclosure-rule problem met.
#[derive(Debug)]
pub struct Extracted<'de> {
    pub shape: Shape<'de>,
    pub container: Option<Container>,
    pub problem: Option<&'static str>,
}

/// Parses `bytes`, capturing fields and elements of the top `capture` levels.
pub fn parse(bytes: &[u8], max_depth: usize, capture: usize) -> Result<Extracted<'_>, JsonError> {
    let mut parser = Parser::new(bytes)?;
    let parsed = parser.value(max_depth, capture)?;
    parser.end()?;
    Ok(Extracted {
        shape: parsed.shape,
        container: parsed.container,
        problem: parser.problem,
    })
}

/// A disclosure `[salt, name, value]` or `[salt, value]`: its elements as parsed, each with its
/// own skeleton (the wrapper array is not a claims array, so `{"...": d}` inside it is an
/// ordinary object value).
#[derive(Debug)]
pub struct DisclosureParts<'de> {
    pub elements: Vec<(Shape<'de>, Option<Container>)>,
    /// The first disclosure-rule problem met inside (nested `_sd` and the like).
    pub problem: Option<&'static str>,
}

/// A disclosure in its usual form, read without the general machinery.
#[derive(Debug)]
pub struct PlainDisclosure<'de> {
    /// The claim name; `None` for an array-element disclosure `[salt, value]`.
    pub name: Option<&'de str>,
    /// The value's skeleton, if it is an object or an array.
    pub value: Option<Container>,
}

/// Fast path for the usual disclosure: `["salt","name",value]` or `["salt",value]` with no
/// whitespace around salt and name and no escapes in them (the value is read by the general
/// value parser, so it may have leading whitespace, escapes and nesting). Such a disclosure
/// needs no element list and no parsed form of its salt and name, which made
/// [`parse_disclosure`] cost about twice as much.
///
/// `None` means "not in that form, or something in it is wrong": the caller then runs
/// [`parse_disclosure`], which is the reference and finds the exact error. **Invariant:** when
/// this returns `Some`, `parse_disclosure` finds a 2- or 3-element array whose first element is a
/// string, the same name and value skeleton, and no problem (tests in `presentation.rs` compare
/// the two on every disclosure over a table of elements, and on mutated ones).
pub fn parse_plain_disclosure(bytes: &[u8], max_depth: usize) -> Option<PlainDisclosure<'_>> {
    let mut parser = Parser::new(bytes).ok()?;
    // The wrapper array takes one level, as in `parse_disclosure`.
    let depth_left = max_depth.checked_sub(1)?;
    parser.expect(b'[').ok()?;
    parser.plain_string()?;
    parser.expect(b',').ok()?;
    let (name, value) = if parser.peek() == Some(b'"') {
        let second = parser.plain_string()?;
        match parser.peek()? {
            b',' => {
                parser.pos += 1;
                (Some(second), parser.value(depth_left, 0).ok()?.container)
            }
            // `["salt","value"]`: an array element whose value is a string.
            _ => (None, None),
        }
    } else {
        (None, parser.value(depth_left, 0).ok()?.container)
    };
    parser.expect(b']').ok()?;
    (parser.pos == bytes.len() && parser.problem.is_none())
        .then_some(PlainDisclosure { name, value })
}

/// Parses a decoded disclosure. `Ok(None)`: valid JSON, but not an array.
pub fn parse_disclosure(
    bytes: &[u8],
    max_depth: usize,
) -> Result<Option<DisclosureParts<'_>>, JsonError> {
    let mut parser = Parser::new(bytes)?;
    parser.skip_whitespace();
    if parser.peek() != Some(b'[') {
        parser.value(max_depth, 0)?;
        parser.end()?;
        return Ok(None);
    }
    let mut elements = Vec::with_capacity(3);
    parser.sequence(max_depth, 1, |parser, depth_left, capture| {
        let item = parser.value(depth_left, capture)?;
        elements.push((item.shape, item.container));
        Ok(())
    })?;
    parser.end()?;
    Ok(Some(DisclosureParts {
        elements,
        problem: parser.problem,
    }))
}

/// One parsed value: its shape and, for containers, its skeleton.
struct Parsed<'de> {
    shape: Shape<'de>,
    container: Option<Container>,
}

impl<'de> Parsed<'de> {
    fn scalar(shape: Shape<'de>) -> Parsed<'de> {
        Parsed {
            shape,
            container: None,
        }
    }
}

/// Refuses a repeated claim name, given the hashes of the names seen so far in an object.
/// Linear for the usual handful of keys; past 32 keys a hash set takes over, so a hostile object
/// of thousands of keys stays O(n).
#[derive(Default)]
struct Repeats {
    index: Option<HashSet<u64, foldhash::fast::RandomState>>,
    /// `_sd` is not among the names (it is not a claim), so it is tracked apart.
    saw_sd: bool,
}

impl Repeats {
    /// True if `hash` is new; `seen` is the object's name list before this name.
    fn is_new(&mut self, seen: &[u64], hash: u64) -> bool {
        if let Some(index) = &mut self.index {
            return index.insert(hash);
        }
        if seen.contains(&hash) {
            return false;
        }
        if seen.len() >= 32 {
            let mut index: HashSet<u64, foldhash::fast::RandomState> =
                seen.iter().copied().collect();
            index.insert(hash);
            self.index = Some(index);
        }
        true
    }
}

/// Bytes that end the fast scan of a string: `"`, `\\` and control characters.
const STRING_STOP: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = true;
        i += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    problem: Option<&'static str>,
}

type Step<T> = Result<T, JsonError>;

impl<'a> Parser<'a> {
    /// Checks UTF-8 once for the whole document; every slice taken later is at an ASCII
    /// delimiter, hence on a character boundary.
    fn new(bytes: &'a [u8]) -> Step<Parser<'a>> {
        let text = std::str::from_utf8(bytes).map_err(|_| JsonError::Invalid)?;
        Ok(Parser {
            text,
            bytes,
            pos: 0,
            problem: None,
        })
    }

    fn note(&mut self, detail: &'static str) {
        self.problem.get_or_insert(detail);
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Step<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(JsonError::Invalid)
        }
    }

    /// After the top value: only whitespace may follow.
    fn end(&mut self) -> Step<()> {
        self.skip_whitespace();
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(JsonError::Invalid)
        }
    }

    fn value(&mut self, depth_left: usize, capture: usize) -> Step<Parsed<'a>> {
        self.skip_whitespace();
        match self.peek().ok_or(JsonError::Invalid)? {
            b'{' => self.object(depth_left, capture),
            b'[' => self.array(depth_left, capture),
            b'"' => Ok(Parsed::scalar(Shape::Str(self.string()?))),
            b't' => self.literal(b"true", Shape::Bool(true)),
            b'f' => self.literal(b"false", Shape::Bool(false)),
            b'n' => self.literal(b"null", Shape::Null),
            b'-' | b'0'..=b'9' => Ok(Parsed::scalar(self.number()?)),
            _ => Err(JsonError::Invalid),
        }
    }

    fn literal(&mut self, word: &[u8], shape: Shape<'a>) -> Step<Parsed<'a>> {
        if self.bytes.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(Parsed::scalar(shape))
        } else {
            Err(JsonError::Invalid)
        }
    }

    /// RFC 8259 numbers: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Step<Shape<'a>> {
        let start = self.pos;
        let digits = |parser: &mut Parser<'a>| {
            let from = parser.pos;
            while let Some(b'0'..=b'9') = parser.peek() {
                parser.pos += 1;
            }
            parser.pos - from
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(JsonError::Invalid),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            integer = false;
            if digits(self) == 0 {
                return Err(JsonError::Invalid);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(JsonError::Invalid);
            }
        }
        let text = self.text.get(start..self.pos).ok_or(JsonError::Invalid)?;
        if integer && let Ok(value) = text.parse::<i64>() {
            return Ok(Shape::Int(value));
        }
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(Shape::Float(value)),
            _ => Err(JsonError::Invalid),
        }
    }

    /// Advances to the next `"`, `\\` or control character inside a string (or the end).
    ///
    /// memchr finds the quote or backslash with SIMD; the span before it is then checked for
    /// control characters branch-free. Strings here are mostly base64, where a per-byte branch
    /// loop was the parser's hottest spot.
    fn scan_string_body(&mut self) {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let end = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
        let span = rest.get(..end).unwrap_or_default();
        if span
            .iter()
            .fold(false, |seen, &b| seen | STRING_STOP[b as usize])
        {
            // A control character: stop at the first one (the caller refuses it).
            let first = span
                .iter()
                .position(|&b| STRING_STOP[b as usize])
                .unwrap_or(end);
            self.pos += first;
        } else {
            self.pos += end;
        }
    }

    /// A string without escapes, starting at the opening quote; `None` (position unspecified)
    /// for anything else.
    fn plain_string(&mut self) -> Option<&'a str> {
        match self.string() {
            Ok(Cow::Borrowed(text)) => Some(text),
            _ => None,
        }
    }

    /// A string starting at the opening quote; borrowed unless it holds escapes.
    fn string(&mut self) -> Step<Cow<'a, str>> {
        self.expect(b'"')?;
        let start = self.pos;
        self.scan_string_body();
        match self.peek() {
            Some(b'"') => {
                let text = self.text.get(start..self.pos).ok_or(JsonError::Invalid)?;
                self.pos += 1;
                Ok(Cow::Borrowed(text))
            }
            Some(b'\\') => {
                let mut owned =
                    String::from(self.text.get(start..self.pos).ok_or(JsonError::Invalid)?);
                self.escaped(&mut owned)?;
                Ok(Cow::Owned(owned))
            }
            // A raw control character, or the end of input.
            _ => Err(JsonError::Invalid),
        }
    }

    /// The rest of a string that holds escapes, appended to `out`; ends after the closing quote.
    fn escaped(&mut self, out: &mut String) -> Step<()> {
        loop {
            let start = self.pos;
            self.scan_string_body();
            out.push_str(self.text.get(start..self.pos).ok_or(JsonError::Invalid)?);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escape = self.peek().ok_or(JsonError::Invalid)?;
                    self.pos += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => return Err(JsonError::Invalid),
                    }
                }
                _ => return Err(JsonError::Invalid),
            }
        }
    }

    fn hex4(&mut self) -> Step<u32> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or(JsonError::Invalid)?;
        let mut value = 0u32;
        for &digit in digits {
            value = value * 16 + char::from(digit).to_digit(16).ok_or(JsonError::Invalid)?;
        }
        self.pos += 4;
        Ok(value)
    }

    /// `\uXXXX`, with UTF-16 surrogate pairs; a lone surrogate is refused (as serde_json does).
    fn unicode_escape(&mut self) -> Step<char> {
        let first = self.hex4()?;
        let code = match first {
            0xd800..=0xdbff => {
                if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return Err(JsonError::Invalid);
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&second) {
                    return Err(JsonError::Invalid);
                }
                0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
            }
            0xdc00..=0xdfff => return Err(JsonError::Invalid),
            other => other,
        };
        char::from_u32(code).ok_or(JsonError::Invalid)
    }

    /// Elements of an array starting at `[`, each handed to `element`.
    fn sequence(
        &mut self,
        depth_left: usize,
        capture: usize,
        mut element: impl FnMut(&mut Parser<'a>, usize, usize) -> Step<()>,
    ) -> Step<()> {
        let depth_left = depth_left.checked_sub(1).ok_or(JsonError::TooDeep)?;
        let capture = capture.saturating_sub(1);
        self.expect(b'[')?;
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            element(self, depth_left, capture)?;
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(JsonError::Invalid),
            }
        }
    }

    fn array(&mut self, depth_left: usize, capture: usize) -> Step<Parsed<'a>> {
        let mut skeleton = SdArray::default();
        let mut items = (capture > 0).then(Vec::new);
        self.sequence(depth_left, capture, |parser, depth_left, capture| {
            let item = parser.value(depth_left, capture)?;
            match &item.shape {
                Shape::DigestRef(Some(digest)) => skeleton.digests.push(**digest),
                Shape::DigestRef(None) => {
                    parser.note("an array element digest is not a SHA-256 digest")
                }
                _ => skeleton.children.extend(item.container),
            }
            if let Some(items) = items.as_mut() {
                items.push(item.shape);
            }
            Ok(())
        })?;
        let shape = items.map_or(Shape::Container, Shape::Items);
        Ok(Parsed {
            shape,
            container: Some(Container::Array(skeleton)),
        })
    }

    /// Fast path for the usual `_sd` element: `"` + 43 base64url characters + `"`, taken whole.
    /// Such a string has no escapes or control characters (base64url has neither), so this is
    /// exactly what [`Parser::string`] followed by [`digest_of`] would give; anything else
    /// (`None`, nothing consumed) goes the general way.
    fn quoted_digest(&mut self) -> Option<Digest> {
        let quoted = self.bytes.get(self.pos..self.pos + 45)?;
        if quoted.first() != Some(&b'"') || quoted.last() != Some(&b'"') {
            return None;
        }
        let digest = digest_of(self.text.get(self.pos + 1..self.pos + 44)?)?;
        self.pos += 45;
        Some(digest)
    }

    /// The value of an `_sd` key: an array of SHA-256 digests. Anything else is parsed just as
    /// strictly, and noted as a disclosure-rule problem.
    fn digest_list(&mut self, depth_left: usize) -> Step<Vec<Digest>> {
        if self.peek() != Some(b'[') {
            self.value(depth_left, 0)?;
            self.note("_sd is not an array");
            return Ok(Vec::new());
        }
        let mut digests = Vec::with_capacity(8);
        self.sequence(depth_left, 0, |parser, depth_left, _| {
            if let Some(digest) = parser.quoted_digest() {
                digests.push(digest);
                return Ok(());
            }
            let item = parser.value(depth_left, 0)?;
            match item.shape.as_str().and_then(digest_of) {
                Some(digest) => digests.push(digest),
                None => parser.note("_sd holds something other than a SHA-256 digest"),
            }
            Ok(())
        })?;
        Ok(digests)
    }

    fn object(&mut self, depth_left: usize, capture: usize) -> Step<Parsed<'a>> {
        let depth_left = depth_left.checked_sub(1).ok_or(JsonError::TooDeep)?;
        // This object keeps its fields if it is within the capture depth; its children then
        // get one level less.
        let mut fields = (capture > 0).then(|| Vec::with_capacity(12));
        let capture = capture.saturating_sub(1);
        let mut skeleton = SdObject {
            names: Vec::with_capacity(8),
            ..SdObject::default()
        };
        let mut repeats = Repeats::default();
        let mut keys = 0usize;
        let mut dots: Option<Option<Digest>> = None;
        self.expect(b'{')?;
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                self.skip_whitespace();
                let key = self.string()?;
                self.skip_whitespace();
                self.expect(b':')?;
                self.skip_whitespace();
                keys += 1;
                if key == "_sd" {
                    if std::mem::replace(&mut repeats.saw_sd, true) {
                        return Err(JsonError::Invalid);
                    }
                    skeleton.digests = self.digest_list(depth_left)?;
                } else {
                    let hash = name_hash(&key);
                    if !repeats.is_new(&skeleton.names, hash) {
                        return Err(JsonError::Invalid);
                    }
                    let value = self.value(depth_left, capture)?;
                    skeleton.names.push(hash);
                    if key == "..." {
                        dots = Some(value.shape.as_str().and_then(digest_of));
                    }
                    skeleton.children.extend(value.container);
                    if let Some(fields) = fields.as_mut() {
                        fields.push((key, value.shape));
                    }
                }
                self.skip_whitespace();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(JsonError::Invalid),
                }
            }
        }
        let shape = match (keys, dots) {
            (1, Some(digest)) => Shape::DigestRef(digest.map(Box::new)),
            _ => fields.map_or(Shape::Container, Shape::Fields),
        };
        Ok(Parsed {
            shape,
            container: Some(Container::Object(skeleton)),
        })
    }
}

#[cfg(test)]
#[path = "extract_tests.rs"]
mod tests;
