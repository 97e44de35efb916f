//! A log entry and its canonical bytes (supervision contract §2): the RFC 8785 (JCS)
//! serialisation of the entry object, in which every number is an integer and every other
//! number is written as a decimal string first, so that any implementation canonicalises an
//! entry to the same bytes.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use crate::contract::lead::LeadId;

/// One entry of a transparency log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    /// 0-based position in the log, gap-free.
    pub index: u64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub lead_id: Option<LeadId>,
    pub revision: Option<i64>,
    pub details: Value,
}

impl LogEntry {
    /// The entry as the JSON object the contract names, numbers already normalised.
    pub fn to_value(&self) -> Value {
        let mut object = Map::new();
        object.insert("index".into(), Value::from(self.index));
        object.insert(
            "at".into(),
            Value::from(self.at.to_rfc3339_opts(SecondsFormat::Micros, true)),
        );
        object.insert("actor".into(), Value::from(self.actor.clone()));
        object.insert("action".into(), Value::from(self.action.clone()));
        object.insert(
            "lead_id".into(),
            self.lead_id
                .map_or(Value::Null, |id| Value::from(id.to_string())),
        );
        object.insert(
            "revision".into(),
            self.revision.map_or(Value::Null, Value::from),
        );
        object.insert("details".into(), integers_only(&self.details));
        Value::Object(object)
    }

    /// The entry's canonical bytes, which its leaf hash covers.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        jcs(&self.to_value())
    }

    /// SHA-256(0x00 ‖ canonical bytes) (RFC 9162 §2.1.1).
    pub fn leaf_hash(&self) -> [u8; 32] {
        leaf_hash(&self.canonical_bytes())
    }
}

/// SHA-256(0x00 ‖ bytes).
pub fn leaf_hash(bytes: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(bytes);
    hasher.finalize().into()
}

/// `value` with every number that is not an integer replaced by its decimal string, the
/// shortest that reads back as the same binary value, without an exponent (`0.0000001`).
pub fn integers_only(value: &Value) -> Value {
    match value {
        Value::Number(number) if !is_integer(number) => {
            Value::String(decimal(number.as_f64().unwrap_or_default()))
        }
        Value::Array(items) => Value::Array(items.iter().map(integers_only).collect()),
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(key, member)| (key.clone(), integers_only(member)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn is_integer(number: &Number) -> bool {
    number.is_i64() || number.is_u64()
}

/// Rust's `Display` for f64 is the shortest round-trip form and never uses an exponent.
fn decimal(value: f64) -> String {
    format!("{value}")
}

/// The RFC 8785 serialisation of a value whose numbers are all integers: object members
/// sorted by the UTF-16 code units of their names, no whitespace, strings escaped as
/// ECMAScript's `JSON.stringify` does (the short escapes, `\u00xx` in lowercase for other
/// control characters, everything else literal).
pub fn jcs(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => {
            if let Some(integer) = number.as_i64() {
                out.extend_from_slice(integer.to_string().as_bytes());
            } else if let Some(integer) = number.as_u64() {
                out.extend_from_slice(integer.to_string().as_bytes());
            } else {
                // Never reached for a normalised entry; still canonical for a stray float.
                write_string(&decimal(number.as_f64().unwrap_or_default()), out);
            }
        }
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (position, (key, member)) in sorted.into_iter().enumerate() {
                if position > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write(member, out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for character in text.chars() {
        match character {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            control if (control as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", control as u32).as_bytes())
            }
            other => {
                let mut buffer = [0u8; 4];
                out.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_sort_by_utf16_code_units_and_strings_escape_as_json_stringify_does() {
        // U+FF21 sorts after U+1F600 in UTF-8 order but before it in UTF-16 (a surrogate
        // pair starts with 0xD83D < 0xFF21).
        let value = json!({"b": 1, "a": [true, null], "\u{ff21}": 2, "\u{1f600}": 3, "c": "x\"\\\n\u{1}é/"});
        let text = String::from_utf8(jcs(&value)).unwrap();
        assert_eq!(
            text,
            "{\"a\":[true,null],\"b\":1,\"c\":\"x\\\"\\\\\\n\\u0001é/\",\"\u{1f600}\":3,\"\u{ff21}\":2}"
        );
    }

    #[test]
    fn non_integer_numbers_become_decimal_strings_and_integers_stay() {
        let value = json!({"v": 3.6, "tiny": 1e-7, "n": -4, "big": 18446744073709551615u64, "list": [0.5, 2]});
        assert_eq!(
            integers_only(&value),
            json!({"v": "3.6", "tiny": "0.0000001", "n": -4, "big": 18446744073709551615u64, "list": ["0.5", 2]})
        );
    }

    #[test]
    fn an_entry_is_canonical_whatever_the_order_it_was_built_in() {
        let entry = LogEntry {
            index: 7,
            at: DateTime::parse_from_rfc3339("2026-11-20T09:05:00.123456+08:00")
                .unwrap()
                .with_timezone(&Utc),
            actor: "agency:environment".into(),
            action: "lead.received".into(),
            lead_id: None,
            revision: Some(1),
            details: json!({"z": 1.25, "a": "甲"}),
        };
        assert_eq!(
            String::from_utf8(entry.canonical_bytes()).unwrap(),
            "{\"action\":\"lead.received\",\"actor\":\"agency:environment\",\"at\":\"2026-11-20T01:05:00.123456Z\",\"details\":{\"a\":\"甲\",\"z\":\"1.25\"},\"index\":7,\"lead_id\":null,\"revision\":1}"
        );
        let mut changed = entry.clone();
        changed.details = json!({"z": 1.26, "a": "甲"});
        assert_ne!(changed.leaf_hash(), entry.leaf_hash());
    }
}
