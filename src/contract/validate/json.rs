//! Strict JSON: the one parser of every request body and of the offline `validate` command.
//!
//! Promise: [`parse`] accepts exactly the documents `serde_json::from_slice::<Value>` accepts
//! and builds the same [`Value`], except that an object holding the same key twice is refused
//! with [`JsonError::DuplicateKey`] instead of silently keeping the last value. Evidence must
//! not depend on which of two contradicting members a parser happens to keep.
//!
//! serde_json's own protections stay in force because this is serde_json's deserializer with a
//! different visitor: nesting deeper than its recursion limit (128) is a syntax error, so hostile
//! nesting cannot exhaust the stack, and every error carries the byte position where it was
//! found.

use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body is not acceptable JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON (or nested too deeply); `byte_offset` is where parsing stopped (0-based).
    #[error("malformed JSON at byte {byte_offset}: {message}")]
    Syntax { message: String, byte_offset: usize },
    /// One object holds `key` twice; `byte_offset` is the opening quote of the second one.
    #[error("the key {key:?} appears twice in one object (second at byte {byte_offset})")]
    DuplicateKey { key: String, byte_offset: usize },
}

/// Parses one JSON document, refusing repeated object keys.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    // serde_json errors carry only a message; the repeated key travels beside the error so the
    // caller gets it verbatim rather than re-parsed out of a message.
    let duplicate = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let result = ValueSeed {
        duplicate: &duplicate,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    result.map_err(|error| {
        let byte_offset = byte_offset(bytes, error.line(), error.column());
        match duplicate.take() {
            Some(key) => JsonError::DuplicateKey {
                byte_offset: opening_quote(bytes, byte_offset),
                key,
            },
            None => JsonError::Syntax {
                message: error.to_string(),
                byte_offset,
            },
        }
    })
}

/// Builds a [`Value`] like serde_json's own visitor does, but checks each key against the keys
/// already in its object.
#[derive(Clone, Copy)]
struct ValueSeed<'a> {
    duplicate: &'a Cell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        // The parser never yields a non-finite float, so this is serde_json's own conversion.
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.is_empty() && key == NUMBER_TOKEN && arbitrary_precision() {
                // With serde_json's `arbitrary_precision` feature a number reaches the visitor
                // as a one-member map holding its digits; rebuild it as serde_json would.
                let digits: String = map.next_value()?;
                let number: Number = digits.parse().map_err(de::Error::custom)?;
                return Ok(Value::Number(number));
            }
            if object.contains_key(&key) {
                let message = format!("the key {key:?} appears twice in one object");
                self.duplicate.set(Some(key));
                return Err(de::Error::custom(message));
            }
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The key serde_json uses to pass a number's text through a visitor under
/// `arbitrary_precision`.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Whether serde_json was built with `arbitrary_precision` (a feature any crate in the build can
/// switch on). Asked of serde_json itself: only then does its own `Value` read the token map as a
/// number, and only then may this parser; otherwise such an object is an ordinary object.
fn arbitrary_precision() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        serde_json::from_str::<Value>(&format!(r#"{{"{NUMBER_TOKEN}": "1"}}"#))
            .is_ok_and(|value| value.is_number())
    })
}

/// Converts serde_json's 1-based line and column into a 0-based byte offset.
fn byte_offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let line_start: usize = bytes
        .split(|b| *b == b'\n')
        .take(line.saturating_sub(1))
        .map(|line| line.len() + 1)
        .sum();
    (line_start + column.saturating_sub(1)).min(bytes.len())
}

/// serde_json reports a visitor's error at the last byte it read, here the key's closing quote;
/// walks back to the key's opening quote. A quote inside the key is escaped, that is preceded by
/// an odd number of backslashes, so the first quote preceded by an even number is the opening
/// one. Anything unexpected leaves the reported offset as it is.
fn opening_quote(bytes: &[u8], closing: usize) -> usize {
    if bytes.get(closing) != Some(&b'"') {
        return closing;
    }
    let mut index = closing;
    while index > 0 {
        index -= 1;
        if bytes[index] == b'"' {
            let backslashes = bytes[..index]
                .iter()
                .rev()
                .take_while(|b| **b == b'\\')
                .count();
            if backslashes % 2 == 0 {
                return index;
            }
        }
    }
    closing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicate(text: &str) -> (String, usize) {
        match parse(text.as_bytes()) {
            Err(JsonError::DuplicateKey { key, byte_offset }) => (key, byte_offset),
            other => panic!("expected a duplicate key in {text}, got {other:?}"),
        }
    }

    #[test]
    fn a_repeated_top_level_key_is_refused_with_the_offset_of_its_second_occurrence() {
        let text = r#"{"agency": "land", "agency": "environment"}"#;
        assert_eq!(duplicate(text), ("agency".to_owned(), 19));
        assert_eq!(&text[19..27], "\"agency\"");
    }

    #[test]
    fn a_repeated_nested_key_is_refused_inside_arrays_and_objects() {
        let text = "{\"subjects\": [{\"name\": \"a\"}, {\"name\": \"b\",\n \"name\": \"c\"}]}";
        let (key, offset) = duplicate(text);
        assert_eq!(key, "name");
        assert_eq!(&text[offset..offset + 6], "\"name\"");
        assert_eq!(offset, text.rfind("\"name\"").unwrap());
    }

    #[test]
    fn escaped_spellings_of_the_same_key_are_the_same_key() {
        // "a\u0022b" and "a\"b" are one key; the offset walks back over the escaped quote.
        let text = r#"{"a\u0022b": 1, "a\"b": 2}"#;
        let (key, offset) = duplicate(text);
        assert_eq!(key, "a\"b");
        assert_eq!(offset, 16);
        let text = r#"{"x\\": 1, "x\\": 2}"#;
        assert_eq!(duplicate(text), ("x\\".to_owned(), 11));
    }

    #[test]
    fn the_same_key_in_sibling_objects_is_not_a_duplicate() {
        let text = r#"{"a": {"k": 1}, "b": {"k": 2}, "c": [{"k": 3}, {"k": 4}]}"#;
        assert_eq!(
            parse(text.as_bytes()).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
    }

    #[test]
    fn documents_parse_exactly_as_serde_json_parses_them() {
        for text in [
            "null",
            " true ",
            "[]",
            "{}",
            r#"{"a": [1, -1, 1.5, 1e3, -0.0, 18446744073709551615, -9223372036854775808]}"#,
            "123456789012345678901234567890",
            "0.1000000000000000000000000000001",
            r#""中文 \u00e9 \ud83d\ude00 \t""#,
            r#"{"$serde_json::private::Number": "1"}"#,
            r#"{"a": {"b": {"c": null}}}"#,
        ] {
            let ours = parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
            let theirs: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours, theirs, "{text}");
            assert_eq!(ours.to_string(), theirs.to_string(), "{text}");
        }
    }

    #[test]
    fn what_serde_json_refuses_is_refused_with_its_offset() {
        for (text, offset) in [
            ("{\n  \"a\": 1,\n  \"b\": tru\n}", 19..=23),
            (
                r#"{"lead_type": "environment.hazardous_waste",, }"#,
                44..=44,
            ),
            ("[1, 2] 3", 7..=7),
            ("1e400", 0..=5),
            (r#""\ud800""#, 0..=8),
            ("", 0..=0),
        ] {
            match parse(text.as_bytes()) {
                Err(JsonError::Syntax { byte_offset, .. }) => {
                    assert!(
                        offset.contains(&byte_offset),
                        "{text}: offset {byte_offset}"
                    )
                }
                other => panic!("{text}: expected a syntax error, got {other:?}"),
            }
        }
    }

    #[test]
    fn hostile_nesting_is_a_syntax_error_not_a_crash() {
        for deep in [
            "[".repeat(100_000),
            "{\"a\":".repeat(100_000),
            format!("{}{}", "[".repeat(200), "]".repeat(200)),
        ] {
            assert!(
                matches!(parse(deep.as_bytes()), Err(JsonError::Syntax { .. })),
                "depth {}",
                deep.len()
            );
        }
        // Within the limit, nesting is fine.
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(ok.as_bytes()).is_ok());
    }
}
