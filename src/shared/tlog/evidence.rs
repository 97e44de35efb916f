//! The evidence bundle for one lead (supervision contract §4) and its offline verification,
//! which needs nothing but the bundle and the logs' public keys (`GET /supervise/v1/keys`).
//!
//! What a verified bundle proves: every entry it holds is, byte for byte, the entry at its
//! index in its log, whose tree the log's own key signed at the bundle's checkpoint; every
//! entry is about the bundle's lead; the entries are in time order. Any change to the bundle's
//! JSON — an entry's field, a leaf hash, a proof element or size, a checkpoint line, the order
//! of the entries — makes verification fail, naming the first entry that does not verify.
//!
//! What it cannot prove on its own: that no entry about the lead was left out of the bundle.
//! A log shows that only whole: `audit verify` over the log, or the log's entries API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::checkpoint::{self, Checkpoint, CheckpointError, VerifierKey};
use super::entry::{jcs, leaf_hash};
use super::verify::{verify_inclusion, Digest32};

/// `GET /supervise/v1/keys`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    pub hub: String,
    /// Absent when the hub serving the keys does not know the police adapter's.
    #[serde(default)]
    pub police: Option<String>,
    #[serde(default)]
    pub witnesses: Vec<String>,
}

/// The bundle, as served.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub lead_id: String,
    pub entries: Vec<BundleEntry>,
    pub checkpoints: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEntry {
    pub log: String,
    pub entry: Value,
    pub leaf_hash: String,
    pub proof: InclusionProof,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    pub leaf_index: u64,
    pub tree_size: u64,
    pub path: Vec<String>,
}

/// Why a bundle does not verify.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("the keys are not usable: {0}")]
    Keys(String),
    #[error("the bundle is not an evidence bundle: {0}")]
    Shape(String),
    #[error("the {log} checkpoint does not verify: {error}")]
    Checkpoint {
        log: String,
        #[source]
        error: CheckpointError,
    },
    #[error("entry {position} ({log} log, index {index}) does not verify: {reason}")]
    Entry {
        position: usize,
        log: String,
        index: String,
        reason: String,
    },
}

/// What a verified bundle holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub lead_id: String,
    pub entries: usize,
    /// The checkpoint each log's entries were proven against.
    pub checkpoints: BTreeMap<String, Checkpoint>,
}

const LOGS: [&str; 2] = ["hub", "police"];

/// Verifies `bundle` against `keys`.
pub fn verify_bundle(bundle: &Bundle, keys: &Keys) -> Result<Verified, EvidenceError> {
    let key_of = |log: &str| -> Result<VerifierKey, EvidenceError> {
        let text = if log == "hub" {
            Some(&keys.hub)
        } else {
            keys.police.as_ref()
        };
        let text = text.ok_or_else(|| {
            EvidenceError::Keys(format!(
                "the bundle has a {log} checkpoint but the keys no {log} key"
            ))
        })?;
        VerifierKey::parse(text).map_err(|error| EvidenceError::Keys(error.to_string()))
    };
    let mut checkpoints = BTreeMap::new();
    let mut deployment: Option<String> = None;
    for (log, text) in &bundle.checkpoints {
        if !LOGS.contains(&log.as_str()) {
            return Err(EvidenceError::Shape(format!("an unknown log {log:?}")));
        }
        let origin = origin_of(text).ok_or_else(|| EvidenceError::Checkpoint {
            log: log.clone(),
            error: CheckpointError::Malformed("no origin line".into()),
        })?;
        // Both logs belong to one deployment: leadbridge/<deployment>/<log>.
        let this = origin
            .strip_prefix("leadbridge/")
            .and_then(|rest| rest.strip_suffix(&format!("/{log}")))
            .filter(|name| !name.is_empty() && !name.contains('/'))
            .ok_or_else(|| EvidenceError::Checkpoint {
                log: log.clone(),
                error: CheckpointError::Malformed(format!(
                    "origin {origin:?} is not leadbridge/<deployment>/{log}"
                )),
            })?;
        if deployment.get_or_insert_with(|| this.to_owned()) != this {
            return Err(EvidenceError::Shape(
                "the checkpoints are of two deployments".into(),
            ));
        }
        let checkpoint = checkpoint::verify(text, &key_of(log)?, origin).map_err(|error| {
            EvidenceError::Checkpoint {
                log: log.clone(),
                error,
            }
        })?;
        checkpoints.insert(log.clone(), checkpoint);
    }

    let mut previous: Option<(String, String, u64)> = None;
    for (position, item) in bundle.entries.iter().enumerate() {
        let index_text = item
            .entry
            .get("index")
            .map_or("?".to_owned(), Value::to_string);
        let fail = |reason: String| EvidenceError::Entry {
            position,
            log: item.log.clone(),
            index: index_text.clone(),
            reason,
        };
        let checkpoint = checkpoints
            .get(&item.log)
            .ok_or_else(|| fail(format!("the bundle has no {} checkpoint", item.log)))?;
        let index = item
            .entry
            .get("index")
            .and_then(Value::as_u64)
            .ok_or_else(|| fail("the entry has no integer index".into()))?;
        if item.entry.get("lead_id").and_then(Value::as_str) != Some(bundle.lead_id.as_str()) {
            return Err(fail("the entry is not about the bundle's lead".into()));
        }
        if item.entry.get("at").and_then(Value::as_str).is_none() {
            return Err(fail("the entry has no time".into()));
        }
        // Time order; within one instant, by log and index, so the order is one.
        let key = order_key(item);
        if let Some(before) = &previous {
            if *before >= key {
                return Err(fail("the entries are not in time order".into()));
            }
        }
        previous = Some(key);
        let bytes = jcs(&item.entry);
        if !integers_only(&item.entry) {
            return Err(fail(
                "the entry holds a number that is not an integer".into(),
            ));
        }
        let computed = leaf_hash(&bytes);
        if hex::encode(computed) != item.leaf_hash {
            return Err(fail("the leaf hash is not the hash of the entry".into()));
        }
        if item.proof.leaf_index != index {
            return Err(fail("the proof is for another index".into()));
        }
        if item.proof.tree_size != checkpoint.size {
            return Err(fail(format!(
                "the proof is for tree size {}, the checkpoint's is {}",
                item.proof.tree_size, checkpoint.size
            )));
        }
        let path = item
            .proof
            .path
            .iter()
            .map(|hash| parse_hash(hash))
            .collect::<Option<Vec<Digest32>>>()
            .ok_or_else(|| fail("a proof hash is not 64 lowercase hex digits".into()))?;
        verify_inclusion(index, checkpoint.size, &computed, &path, &checkpoint.root)
            .map_err(|error| fail(error.to_string()))?;
    }
    Ok(Verified {
        lead_id: bundle.lead_id.clone(),
        entries: bundle.entries.len(),
        checkpoints,
    })
}

/// Sorts bundle entries as a bundle holds them: by time, then log, then index.
pub fn sort_in_time_order(entries: &mut [BundleEntry]) {
    entries.sort_by_key(order_key);
}

fn order_key(item: &BundleEntry) -> (String, String, u64) {
    (
        item.entry
            .get("at")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        item.log.clone(),
        item.proof.leaf_index,
    )
}

fn origin_of(text: &str) -> Option<&str> {
    text.split('\n').next().filter(|line| !line.is_empty())
}

/// 64 lowercase hex digits.
pub fn parse_hash(text: &str) -> Option<Digest32> {
    if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode(text).ok()?.try_into().ok()
}

fn integers_only(value: &Value) -> bool {
    match value {
        Value::Number(number) => number.is_i64() || number.is_u64(),
        Value::Array(items) => items.iter().all(integers_only),
        Value::Object(members) => members.values().all(integers_only),
        _ => true,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::contract::lead::LeadId;
    use crate::shared::tlog::memory::{self, MemoryLog};
    use chrono::{Duration, TimeZone, Utc};
    use serde_json::json;

    /// A hub and a police log in which a lead went agency → police → decision →
    /// reconsideration, another lead's entries between each of its own; its bundle and keys.
    pub(crate) fn bundle_and_keys() -> (Value, Value) {
        let lead = LeadId::generate();
        let other = LeadId::generate();
        let start = Utc.with_ymd_and_hms(2026, 11, 20, 1, 0, 0).unwrap();
        let mut hub = MemoryLog::new("zibo", "hub");
        let mut police = MemoryLog::new("zibo", "police");
        for (log, actions, offset) in [
            (
                &mut hub,
                vec![
                    "lead.received",
                    "lead.published",
                    "lead.reconsideration_requested",
                ],
                0,
            ),
            (
                &mut police,
                vec![
                    "lead.received_by_police",
                    "lead.delivered",
                    "lead.decided",
                    "lead.reconsideration_answered",
                ],
                7,
            ),
        ] {
            for (n, action) in actions.iter().enumerate() {
                for (id, action) in [(other, "lead.received"), (lead, *action)] {
                    let at = start
                        + Duration::minutes((n * 20 + offset) as i64)
                        + Duration::seconds(log.size() as i64);
                    log.append(
                        at,
                        &log.log.clone(),
                        action,
                        Some(id),
                        Some(1),
                        json!({"n": n, "value": 3.6}),
                    )
                    .unwrap();
                }
            }
        }
        let bundle = memory::bundle(lead, &[&hub, &police]).unwrap();
        let keys = json!({"hub": hub.key.verifier_key(), "police": police.key.verifier_key(), "witnesses": []});
        (serde_json::to_value(bundle).unwrap(), keys)
    }

    fn check(bundle: &Value, keys: &Value) -> Result<Verified, String> {
        let bundle: Bundle = serde_json::from_value(bundle.clone()).map_err(|e| e.to_string())?;
        let keys: Keys = serde_json::from_value(keys.clone()).map_err(|e| e.to_string())?;
        verify_bundle(&bundle, &keys).map_err(|e| e.to_string())
    }

    /// Every leaf of `value` (scalars), by JSON pointer.
    fn leaves(value: &Value, pointer: String, out: &mut Vec<String>) {
        match value {
            Value::Object(members) => {
                for (key, member) in members {
                    leaves(
                        member,
                        format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1")),
                        out,
                    );
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    leaves(item, format!("{pointer}/{index}"), out);
                }
            }
            _ => out.push(pointer),
        }
    }

    fn altered(value: &Value) -> Vec<Value> {
        match value {
            Value::String(text) => {
                let mut changed = vec![Value::String(format!("{text}x"))];
                if let Some(last) = text.chars().last() {
                    let swap = if last == '0' { '1' } else { '0' };
                    let mut replaced: String =
                        text.chars().take(text.chars().count() - 1).collect();
                    replaced.push(swap);
                    changed.push(Value::String(replaced));
                }
                changed
            }
            Value::Number(number) => vec![json!(number.as_i64().unwrap_or(0) + 1), json!(0.5)],
            Value::Bool(flag) => vec![json!(!flag)],
            Value::Null => vec![json!(0), json!("")],
            _ => vec![],
        }
    }

    #[test]
    fn a_bundle_verifies_with_only_the_public_keys() {
        let (bundle, keys) = bundle_and_keys();
        let verified = check(&bundle, &keys).unwrap();
        assert_eq!(verified.entries, 7);
        assert_eq!(verified.checkpoints["hub"].size, 6);
        assert_eq!(verified.checkpoints["police"].size, 8);
    }

    #[test]
    fn every_change_to_the_bundles_json_makes_it_fail() {
        let (bundle, keys) = bundle_and_keys();
        let mut pointers = Vec::new();
        leaves(&bundle, String::new(), &mut pointers);
        assert!(pointers.len() > 100, "{}", pointers.len());
        let mut tried = 0;
        for pointer in &pointers {
            for replacement in altered(bundle.pointer(pointer).unwrap()) {
                let mut changed = bundle.clone();
                *changed.pointer_mut(pointer).unwrap() = replacement.clone();
                tried += 1;
                assert!(
                    check(&changed, &keys).is_err(),
                    "{pointer} = {replacement} still verifies"
                );
            }
        }
        assert!(tried > 200);
        // Entries reordered, removed from a proof, a field added, a checkpoint line changed,
        // a checkpoint of the other log, the other log's key.
        let mut swapped = bundle.clone();
        swapped["entries"].as_array_mut().unwrap().swap(0, 1);
        assert!(check(&swapped, &keys).is_err());
        let mut shorter = bundle.clone();
        shorter["entries"][2]["proof"]["path"]
            .as_array_mut()
            .unwrap()
            .pop();
        assert!(check(&shorter, &keys).is_err());
        let mut extra = bundle.clone();
        extra["entries"][0]["entry"]["note"] = json!("added");
        assert!(check(&extra, &keys).is_err());
        let mut unknown = bundle.clone();
        unknown["entries"][0]["extra"] = json!(1);
        assert!(check(&unknown, &keys).is_err());
        let hub = bundle["checkpoints"]["hub"].as_str().unwrap();
        let mut lines: Vec<&str> = hub.split('\n').collect();
        lines[1] = "7";
        let mut resized = bundle.clone();
        resized["checkpoints"]["hub"] = json!(lines.join("\n"));
        assert!(check(&resized, &keys).is_err());
        let mut crossed = bundle.clone();
        crossed["checkpoints"]["hub"] = bundle["checkpoints"]["police"].clone();
        assert!(check(&crossed, &keys).is_err());
        let mut wrong_keys = keys.clone();
        wrong_keys["hub"] = keys["police"].clone();
        assert!(check(&bundle, &wrong_keys).is_err());
    }

    #[test]
    fn the_first_entry_that_does_not_verify_is_named() {
        let (mut bundle, keys) = bundle_and_keys();
        bundle["entries"][3]["entry"]["actor"] = json!("someone else");
        let error = check(&bundle, &keys).unwrap_err();
        assert!(error.starts_with("entry 3 ("), "{error}");
        assert!(error.contains("leaf hash"), "{error}");
    }
}
