//! ID numbers and credential serials (SPEC §1): 1–64 characters of `[A-Za-z0-9._-]`.
//!
//! A leaf module. Parse, don't validate: [`Id::parse`] is the only way to make an [`Id`], so a
//! function that takes one (a revocation lookup, a status answer) cannot be handed an
//! unchecked string, and the characters are known to need no escaping in JSON or logs.
//!
//! **Invariant:** an ID is personal data. `Id`'s `Debug` prints its length, never its text, so
//! no `{:?}` in a log or an error can leak one.

/// A string known to be an ID: 1–64 characters of `[A-Za-z0-9._-]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id<'a>(&'a str);

/// The most characters an ID may have.
pub const MAX_LEN: usize = 64;

/// The rule, as error messages state it.
pub const RULE: &str = "1-64 characters of [A-Za-z0-9._-]";

impl<'a> Id<'a> {
    /// `text` as an ID, if it is one.
    pub fn parse(text: &'a str) -> Option<Id<'a>> {
        // Branch-free per byte: IDs arrive by the million in status queries.
        let ok = (1..=MAX_LEN).contains(&text.len())
            && text.bytes().fold(true, |ok, b| {
                ok & (b.is_ascii_alphanumeric() | (b == b'-') | (b == b'_') | (b == b'.'))
            });
        ok.then_some(Id(text))
    }

    pub fn as_str(self) -> &'a str {
        self.0
    }
}

impl std::fmt::Debug for Id<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Id({} characters)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_1_to_64_characters_of_the_id_alphabet() {
        for good in ["1", "1012345678", "a.b-c_D", &"9".repeat(64)] {
            assert_eq!(Id::parse(good).map(Id::as_str), Some(good));
        }
        for bad in [
            "",
            &"9".repeat(65),
            "a b",
            "a/b",
            "é",
            "a\"b",
            "a\nb",
            "+1",
            "a=b",
        ] {
            assert!(Id::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn debug_never_prints_the_id() {
        let id = Id::parse("1012345678").unwrap();
        let shown = format!("{id:?}");
        assert!(!shown.contains("1012345678"), "{shown}");
    }
}
