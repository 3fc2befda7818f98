//! The rules a projection's writes must follow, defined once for both sides:
//! the host checks every `read-model.put` and `read-model.delete` with these
//! functions, and so does the test harness, so a write the harness accepts
//! is a write the host accepts, with the same [`WriteError`] when it is not.
//!
//! The rules are:
//! - a collection name is 1 to [`MAX_COLLECTION_BYTES`] bytes and a key 1 to
//!   [`MAX_KEY_BYTES`] bytes of UTF-8; any character is allowed;
//! - a document is at most [`MAX_DOCUMENT_BYTES`] bytes (the host's default
//!   limit) and is JSON that `serde_json::Value` can hold: numbers fit an
//!   `f64`, arrays and objects nest at most 128 deep, `\u` escapes pair
//!   their surrogates;
//! - `delete` has no way to report an error: with a name `put` would refuse,
//!   it removes nothing (nothing can be stored under such a name) and writes
//!   nothing.
//!
//! This module does not know about batches, their write budget or memory:
//! those limits are the host's alone.

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::model::WriteError;

/// The largest document the host stores by default, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// The longest collection name, in bytes.
pub const MAX_COLLECTION_BYTES: usize = 256;

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Checks a collection name and key: each non-empty and within its limit.
///
/// Refuses with [`WriteError::InvalidName`], the same message for every
/// refusal: `collection must be 1-256 bytes and key 1-1024 bytes`.
pub fn check_name(collection: &str, key: &str) -> Result<(), WriteError> {
    let fits = |name: &str, max: usize| (1..=max).contains(&name.len());
    if fits(collection, MAX_COLLECTION_BYTES) && fits(key, MAX_KEY_BYTES) {
        Ok(())
    } else {
        Err(WriteError::InvalidName(format!(
            "collection must be 1-{MAX_COLLECTION_BYTES} bytes and key 1-{MAX_KEY_BYTES} bytes"
        )))
    }
}

/// Checks a document: at most `max_bytes` bytes ([`WriteError::TooLarge`],
/// giving the limit), then JSON that a `serde_json::Value` can hold
/// ([`WriteError::InvalidJson`], giving the parser's message).
///
/// The JSON is parsed without building a value, so the check costs about
/// what skipping over the text does.
pub fn check_document(document: &str, max_bytes: usize) -> Result<(), WriteError> {
    if document.len() > max_bytes {
        return Err(WriteError::TooLarge(max_bytes as u64));
    }
    serde_json::from_str::<AnyJson>(document).map(drop).map_err(|e| WriteError::InvalidJson(e.to_string()))
}

/// Checks a whole `put`, in the host's order: the name, then the document.
pub fn check_put(collection: &str, key: &str, document: &str, max_document_bytes: usize) -> Result<(), WriteError> {
    check_name(collection, key)?;
    check_document(document, max_document_bytes)
}

/// Any JSON value, parsed as `serde_json::Value` parses it (every number
/// converted, so one outside `f64` is refused) but kept as nothing.
///
/// `IgnoredAny` alone would skip numbers unparsed and accept `1e400`, which
/// `Value` refuses: the host would store what the harness cannot.
struct AnyJson;

impl<'de> Deserialize<'de> for AnyJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyJson)
    }
}

impl<'de> Visitor<'de> for AnyJson {
    type Value = AnyJson;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_i64<E>(self, _: i64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_u64<E>(self, _: u64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_f64<E>(self, _: f64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_str<E>(self, _: &str) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_unit<E>(self) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<AnyJson, A::Error> {
        while items.next_element::<AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<AnyJson, A::Error> {
        while entries.next_entry::<IgnoredAny, AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME_MESSAGE: &str = "collection must be 1-256 bytes and key 1-1024 bytes";

    #[test]
    fn names_within_the_limits_pass() {
        assert_eq!(check_name("c", "k"), Ok(()));
        assert_eq!(check_name(&"c".repeat(MAX_COLLECTION_BYTES), &"k".repeat(MAX_KEY_BYTES)), Ok(()));
        assert_eq!(check_name("é", "ключ"), Ok(()), "any character is allowed");
    }

    #[test]
    fn names_that_are_empty_or_too_long_are_refused_with_one_message() {
        let refused = Err(WriteError::InvalidName(NAME_MESSAGE.into()));
        assert_eq!(check_name("", "k"), refused);
        assert_eq!(check_name("c", ""), refused);
        assert_eq!(check_name(&"c".repeat(MAX_COLLECTION_BYTES + 1), "k"), refused);
        assert_eq!(check_name("c", &"k".repeat(MAX_KEY_BYTES + 1)), refused);
        assert_eq!(check_name("c", &"é".repeat(513)), refused, "limits count bytes, not characters");
    }

    #[test]
    fn documents_are_checked_for_size_then_json() {
        assert_eq!(check_document(r#"{"a":[1,-2,3.5,"x\n",null,true,{}]}"#, 100), Ok(()));
        assert_eq!(check_document("[1,2,3]", 6), Err(WriteError::TooLarge(6)));
        assert_eq!(check_document("{oops!!", 6), Err(WriteError::TooLarge(6)), "size is checked first");
        assert!(matches!(check_document("{oops", 100), Err(WriteError::InvalidJson(_))));
        assert!(matches!(check_document("1 2", 100), Err(WriteError::InvalidJson(_))));
    }

    #[test]
    fn documents_are_accepted_exactly_when_a_json_value_can_hold_them() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let cases = [
            r#"{"a":[1,2.5e300,"\u00e9"]}"#,
            "null",
            "1e400",
            "[1e400]",
            r#"{"a":-1e999}"#,
            r#""\ud800""#,
            deep.as_str(),
            "",
            "nul",
            "[1,]",
            r#"{"a":1,}"#,
        ];
        for text in cases {
            let value = serde_json::from_str::<serde_json::Value>(text).map_err(|e| e.to_string());
            let checked = check_document(text, MAX_DOCUMENT_BYTES).map_err(|e| match e {
                WriteError::InvalidJson(message) => message,
                other => panic!("{text}: {other}"),
            });
            assert_eq!(checked, value.map(drop), "{text}");
        }
    }

    #[test]
    fn put_checks_the_name_before_the_document() {
        assert!(matches!(check_put("", "k", "{oops", 1), Err(WriteError::InvalidName(_))));
        assert_eq!(check_put("c", "k", "{}", MAX_DOCUMENT_BYTES), Ok(()));
    }
}
