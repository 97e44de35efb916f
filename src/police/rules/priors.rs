//! Earlier administrative penalties that a rule counts (MIN-3, LAND-6, LAND-8, SAND-1, ENV-6,
//! ENV-8): the count the agency declared and the count of the hub's own penalty records, side
//! by side.
//!
//! What a count promises:
//! - a rule with a `prior_penalties` block compares the fact `prior_penalties`: the larger of
//!   the count the agency declared (the block's `declared` fact) and the number of penalty
//!   cases on record for the same subject within the rule's period, and the assessment says
//!   which of the two it used and lists the records it counted;
//! - a record never lowers a declared count: the agency may know of penalties the hub never
//!   saw, so the hub's count only adds;
//! - a penalty case counts once, by its latest revision on record, however many of the lead's
//!   subjects (USCC or ID number) it names;
//! - the period: a penalty counts when its decision date, in Asia/Shanghai, lies within the
//!   rule's `within_years` before the date of the new act (`occurred_at`) and not after it.
//!   法释〔2023〕7号 art 19 runs 二年内 from the day the first penalty *took effect*; a lead
//!   carries only the decision date (`penalty.decided_at`), which is never later, so a penalty
//!   decided just before the window but effective inside it is not counted by the hub. That is
//!   why a declared count is never lowered.
//!
//! What it does not promise: that a rule whose declared input is missing is not met because the
//! hub holds too few records — such a rule stays a manual check, with the records it found.

use chrono::{DateTime, FixedOffset, Months, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::condition::Condition;
use super::facts::Derivation;
use crate::contract::lead::{LeadId, LeadType};

/// A penalty case on record (a lead of kind `penalty`, its latest revision) that names one of
/// the subjects of the lead being assessed.
#[derive(Clone, Debug, PartialEq)]
pub struct PenaltyRecord {
    pub lead_id: LeadId,
    pub revision: i64,
    pub agency: String,
    pub case_id: String,
    pub lead_type: LeadType,
    /// `penalty.decision_no`.
    pub decision_no: String,
    /// `penalty.decided_at`.
    pub decided_at: DateTime<FixedOffset>,
    /// The penalty lead's `facts`, which a rule's `where` may inspect.
    pub facts: Value,
}

/// What the hub's records hold for one lead's subjects.
#[derive(Clone, Copy, Debug)]
pub struct PenaltyHistory<'a> {
    /// The date of the new act: the lead's `occurred_at` in Asia/Shanghai.
    pub act_on: NaiveDate,
    /// Penalty cases on record naming one of the lead's subjects, the lead's own case excluded.
    pub records: &'a [PenaltyRecord],
}

/// A rule's count of earlier penalties, as the assessment reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorPenaltyCount {
    /// The rule that counts them.
    pub rule: String,
    /// The rule's period, in years before the new act.
    pub within_years: u32,
    /// The fact holding the agency's count, when the lead type carries one.
    pub declared_fact: Option<String>,
    /// The agency's count; None when the lead declares none.
    pub declared: Option<u64>,
    /// The number of penalty cases on record within the period; None when the records were not
    /// consulted (the lead's date of the act is unknown).
    pub on_record: Option<u64>,
    /// The first and last day of the period (Asia/Shanghai), when the records were consulted.
    pub since: Option<String>,
    pub until: Option<String>,
    /// The count the rule compared: the larger of `declared` and `on_record`.
    pub compared: Option<u64>,
    /// Which count `compared` is: `declared` (also when both agree) or `on_record`.
    pub used: Option<CountSource>,
    /// The penalty cases counted in `on_record`, oldest decision first.
    pub records: Vec<CountedPenalty>,
}

/// Where a compared count came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountSource {
    Declared,
    OnRecord,
}

/// One penalty case a count included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountedPenalty {
    pub lead_id: String,
    pub revision: i64,
    pub agency: String,
    pub case_id: String,
    pub lead_type: String,
    pub decision_no: String,
    pub decided_at: String,
}

/// A rule's `prior_penalties` block, checked.
#[derive(Clone, Debug)]
pub(crate) struct PriorPenalties {
    /// The fact of the rule's lead types that holds the agency's count.
    pub declared: Option<String>,
    pub within_years: u32,
    /// Which penalty leads count: any entry matching is enough.
    pub counts: Vec<Counted>,
}

/// Penalty leads of these types count, when `only_if` (if any) holds on their facts.
#[derive(Clone, Debug)]
pub(crate) struct Counted {
    pub lead_types: Vec<LeadType>,
    pub only_if: Option<Condition>,
}

impl PriorPenalties {
    /// The rule's count for a lead with these `facts`; `history` is None when the records were
    /// not consulted.
    pub(crate) fn count(
        &self,
        rule: &str,
        facts: &Value,
        history: Option<&PenaltyHistory<'_>>,
        derivation: &Derivation,
    ) -> PriorPenaltyCount {
        let declared = self
            .declared
            .as_ref()
            .and_then(|fact| facts.get(fact))
            // JSON Schema's integer admits 2.0: a whole, non-negative number is a count.
            .and_then(Value::as_f64)
            .filter(|count| *count >= 0.0 && count.fract() == 0.0 && *count <= u32::MAX as f64)
            .map(|count| count as u64);
        let mut counted: Vec<&PenaltyRecord> = Vec::new();
        let mut period = None;
        if let Some(history) = history {
            let until = history.act_on;
            // 民法典-style anniversaries: 29 February less a year is 28 February.
            let since = until
                .checked_sub_months(Months::new(12 * self.within_years))
                .unwrap_or(NaiveDate::MIN);
            period = Some((since, until));
            for record in history.records {
                let decided_on = record
                    .decided_at
                    .with_timezone(&crate::contract::deadlines::shanghai())
                    .date_naive();
                let in_period = since <= decided_on && decided_on <= until;
                let same_case = counted
                    .iter()
                    .any(|seen| seen.agency == record.agency && seen.case_id == record.case_id);
                if in_period && !same_case && self.counts_record(record, derivation) {
                    counted.push(record);
                }
            }
            counted.sort_by_key(|record| (record.decided_at, record.case_id.clone()));
        }
        let on_record = history.map(|_| counted.len() as u64);
        let (compared, used) = match (declared, on_record) {
            (Some(declared), Some(found)) if found > declared => {
                (Some(found), Some(CountSource::OnRecord))
            }
            (Some(declared), _) => (Some(declared), Some(CountSource::Declared)),
            (None, Some(found)) => (Some(found), Some(CountSource::OnRecord)),
            (None, None) => (None, None),
        };
        PriorPenaltyCount {
            rule: rule.to_owned(),
            within_years: self.within_years,
            declared_fact: self.declared.clone(),
            declared,
            on_record,
            since: period.map(|(since, _)| since.to_string()),
            until: period.map(|(_, until)| until.to_string()),
            compared,
            used,
            records: counted
                .into_iter()
                .map(|record| CountedPenalty {
                    lead_id: record.lead_id.to_string(),
                    revision: record.revision,
                    agency: record.agency.clone(),
                    case_id: record.case_id.clone(),
                    lead_type: record.lead_type.as_str().to_owned(),
                    decision_no: record.decision_no.clone(),
                    decided_at: record.decided_at.to_rfc3339(),
                })
                .collect(),
        }
    }

    fn counts_record(&self, record: &PenaltyRecord, derivation: &Derivation) -> bool {
        self.counts.iter().any(|counted| {
            counted.lead_types.contains(&record.lead_type)
                && counted.only_if.as_ref().is_none_or(|condition| {
                    let derived = derivation.derive(record.lead_type, &record.facts);
                    condition.eval(&record.facts, &derived) == Some(true)
                })
        })
    }
}

impl PriorPenaltyCount {
    /// One sentence for a manual check's reason: what the hub's records hold.
    pub(crate) fn sentence(&self) -> String {
        match (self.on_record, &self.since, &self.until) {
            (Some(found), Some(since), Some(until)) => {
                let numbers: Vec<&str> = self
                    .records
                    .iter()
                    .map(|record| record.decision_no.as_str())
                    .collect();
                if numbers.is_empty() {
                    format!("The hub holds no penalty of this kind for these subjects decided {since} to {until}.")
                } else {
                    format!(
                        "The hub holds {found} penalty case(s) of this kind for these subjects decided {since} to {until}: {}.",
                        numbers.join(", ")
                    )
                }
            }
            _ => "The hub's penalty records were not consulted.".to_owned(),
        }
    }
}
