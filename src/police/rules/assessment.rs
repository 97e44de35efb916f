use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::priors::PriorPenaltyCount;
use super::settings::ExceedMultipleFormula;

/// The hub's screening of one lead against the rule book: suspected offences, what a human
/// must still check, and the figures the rules compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// `version` of the rule file that produced this assessment.
    pub rulebook_version: String,
    /// The settings the rule file was resolved against: with the version and the lead's facts,
    /// everything a reader needs to recompute this assessment.
    pub settings: AssessedWith,
    pub priority: Priority,
    /// One entry per suspected offence, in the order of the rule file's offence table.
    pub suspected_offences: Vec<SuspectedOffence>,
    /// Rules of this lead type that the hub cannot decide: manual judgements, rules whose
    /// input no lead type carries yet, and confirmations a matched rule or tier still needs.
    pub manual_checks: Vec<ManualCheck>,
    /// Figures computed from the facts (亩, exceed multiples, the forest ratio), so an
    /// investigator sees why a rule did or did not match.
    pub derived: BTreeMap<String, f64>,
    /// For each rule of this lead type that counts earlier administrative penalties: the
    /// agency's count, the hub's records, and which one the rule compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prior_penalties: Vec<PriorPenaltyCount>,
}

/// The operator's choices an assessment depended on (`RulesSettings`, domain.md §2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssessedWith {
    /// How the exceed multiples of ENV-3 and ENV-4 were computed: `ratio` or `excess`.
    pub exceed_multiple: ExceedMultipleFormula,
    /// MIN-1's amount X, in CNY.
    pub mining_value_threshold_cny: u64,
    /// MIN-2's amount Y, in CNY.
    pub mining_restricted_threshold_cny: u64,
    /// The pollutant codes of ENV-3, ENV-4 and ENV-7.
    pub env3_pollutant_codes: Vec<String>,
    pub env4_pollutant_codes: Vec<String>,
    pub env7_pollutant_codes: Vec<String>,
}

/// How urgently a lead should be looked at.
///
/// - `high`: at least one active rule matched: a suspected crime that should be transferred.
/// - `medium`: no active rule matched, but a manual or needs-input check applies to the lead,
///   or the lead is a formal `transfer` (the agency itself suspects a crime).
/// - `low`: neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    Medium,
    High,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
        }
    }
}

/// An offence at least one active rule points to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspectedOffence {
    /// The offence's name, e.g. 污染环境罪.
    pub offence: String,
    /// Its article of the Criminal Law, e.g. 刑法第三百三十八条.
    pub article: String,
    /// Ids of the matched rules, in natural order (ENV-2 before ENV-10).
    pub rules: Vec<String>,
    /// `citations[i]` is the legal source of `rules[i]`.
    pub citations: Vec<String>,
    /// The escalation tier the facts reach (情节严重, 情节特别严重, 情节特别恶劣), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// A check the hub leaves to a human.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualCheck {
    /// The rule or tier id.
    pub rule: String,
    /// What to check and why the hub could not.
    pub reason: String,
}
