//! The penalty cases the adapter has received, by subject: what the rules that count earlier
//! administrative penalties read besides the agency's declared count (`rules::priors`).
//!
//! What it promises:
//! - a subject is its USCC (`uscc:…`) or its ID number (`id:…`), upper-cased, so the same
//!   organisation or person named by two agencies is one subject; a subject without either
//!   (`uscc_unknown`, `id_unknown`) is never matched;
//! - a penalty case is read at its latest revision the adapter holds: a revision that is no
//!   longer a penalty, or no longer names the subject, takes the case out of the count;
//! - within a batch, a lead sees the penalty leads before it in the batch as if they were
//!   already stored, so a batch assesses exactly as its leads would one by one;
//! - a lead's own case never counts as its own earlier penalty.
//!
//! What it does not promise: a lead is assessed once, when it is received, so a penalty
//! received after it does not change its assessment; two adapters recording at the same moment
//! may each miss the other's penalty leads of that moment.

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde_json::Value;

use super::rules::PenaltyRecord;
use crate::contract::deadlines::shanghai;
use crate::contract::lead::{LeadId, LeadKind, LeadType};

pub use crate::contract::lead::subject_keys;

/// The date of the act a lead reports: its `occurred_at` in Asia/Shanghai, when readable.
pub fn act_date(document: &Value) -> Option<NaiveDate> {
    let text = document.get("occurred_at")?.as_str()?;
    let at = DateTime::parse_from_rfc3339(text).ok()?;
    Some(at.with_timezone(&shanghai()).date_naive())
}

/// The lead as a penalty case on record: None for a lead that is not a penalty, an error
/// naming what is missing for a penalty lead whose `penalty` block cannot be read.
pub fn penalty_record(
    lead_id: LeadId,
    revision: i64,
    agency: &str,
    case_id: &str,
    lead_type: LeadType,
    kind: LeadKind,
    document: &Value,
) -> Result<Option<PenaltyRecord>, String> {
    if kind != LeadKind::Penalty {
        return Ok(None);
    }
    let penalty = document
        .get("penalty")
        .filter(|penalty| penalty.is_object())
        .ok_or("a penalty lead without a penalty block")?;
    let decision_no = penalty
        .get("decision_no")
        .and_then(Value::as_str)
        .ok_or("a penalty lead without penalty.decision_no")?;
    let decided_at = penalty
        .get("decided_at")
        .and_then(Value::as_str)
        .ok_or("a penalty lead without penalty.decided_at")?;
    let decided_at: DateTime<FixedOffset> = DateTime::parse_from_rfc3339(decided_at)
        .map_err(|error| format!("penalty.decided_at {decided_at:?} is not RFC 3339: {error}"))?;
    Ok(Some(PenaltyRecord {
        lead_id,
        revision,
        agency: agency.to_owned(),
        case_id: case_id.to_owned(),
        lead_type,
        decision_no: decision_no.to_owned(),
        decided_at,
        facts: document.get("facts").cloned().unwrap_or(Value::Null),
    }))
}

/// A penalty case with the subjects it names.
pub type NamedPenalty = (PenaltyRecord, Vec<String>);

/// The penalty cases known while a batch is assessed: those stored before it, then each lead
/// of the batch in its order.
#[derive(Debug, Default)]
pub struct PenaltiesOnRecord {
    /// Per lead, its latest revision seen and, when that revision is a penalty, the record and
    /// the subjects it names.
    latest: HashMap<LeadId, (i64, Option<NamedPenalty>)>,
}

impl PenaltiesOnRecord {
    /// Starts from the penalty cases stored before the batch (their latest revisions).
    pub fn stored(records: Vec<NamedPenalty>) -> PenaltiesOnRecord {
        let mut known = PenaltiesOnRecord::default();
        for (record, subjects) in records {
            known.note(record.lead_id, record.revision, Some((record, subjects)));
        }
        known
    }

    /// A lead of the batch, after it was assessed: a newer revision replaces what was known of
    /// its case, whether or not it is a penalty.
    pub fn note(&mut self, lead_id: LeadId, revision: i64, penalty: Option<NamedPenalty>) {
        let newer = self
            .latest
            .get(&lead_id)
            .is_none_or(|(known, _)| *known <= revision);
        if newer {
            self.latest.insert(lead_id, (revision, penalty));
        }
    }

    /// The penalty cases naming one of `subjects`, other than `own` (the lead's case).
    pub fn naming(&self, subjects: &[String], own: LeadId) -> Vec<PenaltyRecord> {
        let mut records: Vec<PenaltyRecord> = self
            .latest
            .iter()
            .filter(|(lead_id, _)| **lead_id != own)
            .filter_map(|(_, (_, penalty))| penalty.as_ref())
            .filter(|(_, named)| named.iter().any(|subject| subjects.contains(subject)))
            .map(|(record, _)| record.clone())
            .collect();
        records.sort_by_key(|record| (record.decided_at, record.lead_id));
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(lead_id: LeadId, revision: i64, decided_at: &str) -> PenaltyRecord {
        PenaltyRecord {
            lead_id,
            revision,
            agency: "land".to_owned(),
            case_id: format!("C-{lead_id}"),
            lead_type: "land.illegal_mining".parse().unwrap(),
            decision_no: format!("罚-{revision}"),
            decided_at: DateTime::parse_from_rfc3339(decided_at).unwrap(),
            facts: json!({}),
        }
    }

    #[test]
    fn subjects_are_keyed_by_uscc_or_id_number_upper_cased_and_once() {
        let document = json!({"subjects": [
            {"type": "organization", "name": "甲", "uscc": "91370303MA3C4B2D1E"},
            {"type": "person", "name": "乙", "id_number": "37030319900307001x"},
            {"type": "person", "name": "丙", "id_unknown": true},
            {"type": "organization", "name": "甲", "uscc": "91370303ma3c4b2d1e"}
        ]});
        assert_eq!(
            subject_keys(&document),
            ["id:37030319900307001X", "uscc:91370303MA3C4B2D1E"]
        );
        assert!(subject_keys(&json!({})).is_empty());
    }

    #[test]
    fn the_act_date_is_the_local_day_of_occurred_at() {
        // 16:30 UTC is 00:30 the next day in Shanghai.
        let document = json!({"occurred_at": "2026-03-01T16:30:00Z"});
        assert_eq!(act_date(&document), NaiveDate::from_ymd_opt(2026, 3, 2));
        assert_eq!(act_date(&json!({"occurred_at": "yesterday"})), None);
    }

    #[test]
    fn a_penalty_lead_without_a_readable_penalty_block_is_an_error_naming_the_field() {
        let id = LeadId::generate();
        let lead_type: LeadType = "land.illegal_mining".parse().unwrap();
        let read = |kind, document: Value| {
            penalty_record(id, 1, "land", "C-1", lead_type, kind, &document)
        };
        assert_eq!(read(LeadKind::Clue, json!({})), Ok(None));
        assert_eq!(
            read(LeadKind::Penalty, json!({"penalty": null})),
            Err("a penalty lead without a penalty block".to_owned())
        );
        let error = read(
            LeadKind::Penalty,
            json!({"penalty": {"decision_no": "罚1", "decided_at": "2026-13-01"}}),
        )
        .unwrap_err();
        assert!(error.contains("penalty.decided_at"), "{error}");
        let found = read(
            LeadKind::Penalty,
            json!({"penalty": {"decision_no": "罚1", "decided_at": "2026-01-05T10:00:00+08:00"}, "facts": {"value_cny": 5}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(found.decision_no, "罚1");
        assert_eq!(found.facts, json!({"value_cny": 5}));
    }

    #[test]
    fn the_latest_revision_decides_and_a_lead_never_counts_its_own_case() {
        let (first, second, own) = (LeadId::generate(), LeadId::generate(), LeadId::generate());
        let subject = vec!["uscc:X".to_owned()];
        let mut known = PenaltiesOnRecord::stored(vec![
            (
                record(first, 1, "2025-01-01T00:00:00+08:00"),
                subject.clone(),
            ),
            (
                record(second, 2, "2025-02-01T00:00:00+08:00"),
                subject.clone(),
            ),
            (record(own, 1, "2025-03-01T00:00:00+08:00"), subject.clone()),
        ]);
        let ids = |records: Vec<PenaltyRecord>| -> Vec<LeadId> {
            records.iter().map(|record| record.lead_id).collect()
        };
        assert_eq!(ids(known.naming(&subject, own)), [first, second]);
        assert!(known.naming(&["id:Y".to_owned()], own).is_empty());

        // A newer revision of `first` that is no longer a penalty takes it out; an older
        // revision of `second` arriving late changes nothing.
        known.note(first, 2, None);
        known.note(second, 1, None);
        assert_eq!(ids(known.naming(&subject, own)), [second]);
        // A newer revision naming another subject no longer matches this one.
        known.note(
            second,
            3,
            Some((
                record(second, 3, "2025-02-01T00:00:00+08:00"),
                vec!["id:Y".to_owned()],
            )),
        );
        assert!(known.naming(&subject, own).is_empty());
    }
}
