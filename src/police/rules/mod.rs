//! Criminal-threshold assessment: screens a lead's `facts` against the thresholds of the
//! judicial interpretations (domain.md §2) and says which offences it points to.
//!
//! What an assessment promises:
//! - it is a flag, "suspected crime, should transfer" (涉嫌犯罪，应当移送), computed from the
//!   facts the agency declared; it is **not a legal conclusion**. Whether a case is filed is the
//!   police's decision (国务院令310 art. 8), and the facts are the agency's, unverified here;
//! - every rule of the rule file that applies to the lead type was evaluated, and every
//!   threshold is inclusive (刑法第九十九条: 以上 includes the number itself);
//! - rules the hub cannot decide (a human judgement, or an input no lead type carries yet)
//!   are never silently dropped: they are listed in `manual_checks`;
//! - the figures the rules compared (亩, exceed multiples, the forest ratio) are returned in
//!   `derived`, `rulebook_version` names the tables used and `settings` the choices they were
//!   resolved against (exceed-multiple formula, mining amounts X and Y, pollutant groups), so
//!   a reader can recompute the assessment;
//! - [`RuleBook::assess`] never panics and never fails: a fact that is missing or of the
//!   wrong type makes the rules that need it "not met".
//!
//! What it does not promise: that an unmatched lead is not a crime (the catch-all items and
//! the needs-input rules stay with humans), nor which of several related offences the police
//! will choose. Where the law leaves a choice — the exceed-multiple formula, the province's
//! mining amounts — the value is a setting ([`RulesSettings`]), not a constant.
//!
//! The rule tables are data: `schemas/rules/thresholds.v1.json` (built in) or an operator's
//! file; its predicate language is described in `schemas/rules/README.md`. [`RuleBook::load`]
//! checks the whole file at start-up, so a typo in a fact name stops the hub instead of
//! silently disabling a rule.

mod assessment;
mod condition;
mod error;
mod facts;
mod priors;
mod settings;
mod table;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

pub use assessment::{AssessedWith, Assessment, ManualCheck, Priority, SuspectedOffence};
pub use error::RulesError;
pub use facts::{mu_from_m2, M2_PER_MU};
pub use priors::{CountSource, CountedPenalty, PenaltyHistory, PenaltyRecord, PriorPenaltyCount};
pub use settings::{
    ExceedMultipleFormula, RulesSettings, MINING_RESTRICTED_RANGE_CNY, MINING_VALUE_RANGE_CNY,
};

use crate::contract::lead::{LeadKind, LeadType};
use condition::ConfigValue;
use facts::Derivation;
use table::{Offence, Rule, Status};

/// Path of the built-in rule file inside the repository.
pub const BUILT_IN_RULES_FILE: &str = "schemas/rules/thresholds.v1.json";
const BUILT_IN_RULES: &str = include_str!("../../../schemas/rules/thresholds.v1.json");

/// The loaded, checked rule tables with the settings they were resolved against.
#[derive(Clone, Debug)]
pub struct RuleBook {
    version: String,
    source: String,
    offences: Vec<Offence>,
    rules: Vec<Rule>,
    tiers: Vec<Rule>,
    derivation: Derivation,
    settings: AssessedWith,
}

impl RuleBook {
    /// Validates `settings` and loads the rule file they name (the built-in one by default).
    /// Any problem — a setting out of range, an unreadable or malformed file, an unknown
    /// fact, configuration name or lead type, a duplicate id — is an error naming the file or
    /// setting; start-up should stop on it.
    pub fn load(settings: &RulesSettings) -> Result<RuleBook, RulesError> {
        settings.validate()?;
        let book = match &settings.rules_file {
            None => RuleBook::from_text(
                &format!("{BUILT_IN_RULES_FILE} (built in)"),
                BUILT_IN_RULES,
                settings,
            )?,
            Some(path) => {
                let file = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
                    file: file.clone(),
                    source,
                })?;
                RuleBook::from_text(&file, &text, settings)?
            }
        };
        tracing::info!(
            version = %book.version,
            source = %book.source,
            rules = book.rules.len(),
            tiers = book.tiers.len(),
            "Rule book loaded."
        );
        Ok(book)
    }

    fn from_text(file: &str, text: &str, settings: &RulesSettings) -> Result<RuleBook, RulesError> {
        let table = table::compile(file, text, &config_values(settings))?;
        Ok(RuleBook {
            version: table.version,
            source: file.to_owned(),
            offences: table.offences,
            rules: table.rules,
            tiers: table.tiers,
            derivation: Derivation {
                formula: settings.exceed_multiple,
                env3: settings.env3_pollutant_codes.iter().cloned().collect(),
                env4: settings.env4_pollutant_codes.iter().cloned().collect(),
            },
            settings: AssessedWith {
                exceed_multiple: settings.exceed_multiple,
                mining_value_threshold_cny: settings.mining_value_threshold_cny,
                mining_restricted_threshold_cny: settings.mining_restricted_threshold_cny,
                env3_pollutant_codes: settings.env3_pollutant_codes.clone(),
                env4_pollutant_codes: settings.env4_pollutant_codes.clone(),
                env7_pollutant_codes: settings.env7_pollutant_codes.clone(),
            },
        })
    }

    /// The rule file's `version`, repeated in every assessment.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Where the rules came from: the operator's file, or the built-in file.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Screens one lead's `facts` (already valid against its schema; anything else only makes
    /// rules "not met") without the hub's penalty records: the rules that count earlier
    /// penalties compare the agency's declared count only.
    pub fn assess(&self, lead_type: LeadType, kind: LeadKind, facts: &Value) -> Assessment {
        self.assess_with_records(lead_type, kind, facts, None)
    }

    /// Screens one lead's `facts`, counting earlier penalties also from `history`, the penalty
    /// cases on record for the lead's subjects (`priors`). None: the records were not
    /// consulted, as in [`assess`](Self::assess).
    pub fn assess_with_records(
        &self,
        lead_type: LeadType,
        kind: LeadKind,
        facts: &Value,
        history: Option<&PenaltyHistory<'_>>,
    ) -> Assessment {
        let derived = self.derivation.derive(lead_type, facts);
        let mut matched: BTreeMap<usize, Vec<&Rule>> = BTreeMap::new();
        let mut manual_checks = Vec::new();
        let mut prior_penalties = Vec::new();

        for rule in self.rules.iter().filter(|rule| rule.applies_to(lead_type)) {
            let count = rule
                .prior_penalties
                .as_ref()
                .map(|priors| priors.count(&rule.id, facts, history, &self.derivation));
            // The rule's own `prior_penalties`, beside the lead's derived figures.
            let with_count;
            let figures = match count.as_ref().and_then(|count| count.compared) {
                Some(compared) => {
                    let mut figures = derived.clone();
                    figures.insert(facts::PRIOR_PENALTIES.to_owned(), compared as f64);
                    with_count = figures;
                    &with_count
                }
                None => &derived,
            };
            // A needs_input rule with a condition is met only from the hub's records.
            let decidable = rule.status == Status::Active
                || (rule.status == Status::NeedsInput && rule.condition.is_some());
            if decidable && met(rule.condition.as_ref(), facts, figures) {
                matched.entry(rule.offence).or_default().push(rule);
                manual_checks.extend(confirmation(rule));
                manual_checks.extend(count.as_ref().and_then(|count| from_records(rule, count)));
            } else if rule.status != Status::Active && may_apply(rule, facts, figures) {
                manual_checks.push(undecided(rule, count.as_ref()));
            }
            prior_penalties.extend(count);
        }

        // Tiers only matter for a suspected offence. They are listed from lower to higher, so
        // the last one reached wins; a tier that is already reached needs no manual check.
        let suspected: BTreeSet<usize> = matched.keys().copied().collect();
        let relevant: Vec<&Rule> = self
            .tiers
            .iter()
            .filter(|tier| tier.applies_to(lead_type) && suspected.contains(&tier.offence))
            .collect();
        let mut tiers: BTreeMap<usize, &str> = BTreeMap::new();
        for tier in relevant.iter().filter(|tier| tier.status == Status::Active) {
            if met(tier.condition.as_ref(), facts, &derived) {
                if let Some(name) = &tier.tier {
                    tiers.insert(tier.offence, name);
                }
                manual_checks.extend(confirmation(tier));
            }
        }
        for tier in relevant.iter().filter(|tier| tier.status != Status::Active) {
            let reached = tiers.get(&tier.offence).copied() == tier.tier.as_deref();
            if !reached && may_apply(tier, facts, &derived) {
                manual_checks.push(undecided(tier, None));
            }
        }

        let suspected_offences: Vec<SuspectedOffence> = matched
            .into_iter()
            .map(|(offence, mut rules)| {
                rules.sort_by(|a, b| natural_key(&a.id).cmp(&natural_key(&b.id)));
                let Offence { name, article } = &self.offences[offence];
                SuspectedOffence {
                    offence: name.clone(),
                    article: article.clone(),
                    rules: rules.iter().map(|rule| rule.id.clone()).collect(),
                    citations: rules.iter().map(|rule| rule.citation.clone()).collect(),
                    tier: tiers.get(&offence).map(|tier| (*tier).to_owned()),
                }
            })
            .collect();

        let priority = if !suspected_offences.is_empty() {
            Priority::High
        } else if !manual_checks.is_empty() || kind == LeadKind::Transfer {
            Priority::Medium
        } else {
            Priority::Low
        };

        Assessment {
            rulebook_version: self.version.clone(),
            settings: self.settings.clone(),
            priority,
            suspected_offences,
            manual_checks,
            derived,
            prior_penalties,
        }
    }
}

/// The configuration values a rule file may refer to with `{"config": "<name>"}`.
fn config_values(settings: &RulesSettings) -> BTreeMap<&'static str, ConfigValue> {
    // u64 → f64 is exact for every amount inside the validated ranges.
    BTreeMap::from([
        (
            "mining_value_threshold_cny",
            ConfigValue::Number(settings.mining_value_threshold_cny as f64),
        ),
        (
            "mining_restricted_threshold_cny",
            ConfigValue::Number(settings.mining_restricted_threshold_cny as f64),
        ),
        (
            "env3_pollutant_codes",
            ConfigValue::List(settings.env3_pollutant_codes.clone()),
        ),
        (
            "env4_pollutant_codes",
            ConfigValue::List(settings.env4_pollutant_codes.clone()),
        ),
        (
            "env7_pollutant_codes",
            ConfigValue::List(settings.env7_pollutant_codes.clone()),
        ),
    ])
}

fn met(
    condition: Option<&condition::Condition>,
    facts: &Value,
    derived: &BTreeMap<String, f64>,
) -> bool {
    condition.is_some_and(|condition| condition.eval(facts, derived) == Some(true))
}

/// A manual or needs-input rule is listed unless its `applies_when` is definitely false.
fn may_apply(rule: &Rule, facts: &Value, derived: &BTreeMap<String, f64>) -> bool {
    rule.applies_when
        .as_ref()
        .is_none_or(|condition| condition.eval(facts, derived) != Some(false))
}

fn confirmation(rule: &Rule) -> Option<ManualCheck> {
    rule.confirm.as_ref().map(|confirm| ManualCheck {
        rule: rule.id.clone(),
        reason: format!("Confirm: {confirm}"),
    })
}

/// A matched rule whose count of earlier penalties came from the hub's records rather than the
/// agency: the records should be checked against the penalty decisions themselves.
fn from_records(rule: &Rule, count: &PriorPenaltyCount) -> Option<ManualCheck> {
    (count.used == Some(CountSource::OnRecord)).then(|| ManualCheck {
        rule: rule.id.clone(),
        reason: format!(
            "Confirm: the count of earlier penalties ({}) is the hub's, above the agency's ({}); {} Check that each is an effective penalty for the same kind of act.",
            count.compared.unwrap_or_default(),
            count
                .declared
                .map_or("none declared".to_owned(), |declared| declared.to_string()),
            count.sentence()
        ),
    })
}

fn undecided(rule: &Rule, count: Option<&PriorPenaltyCount>) -> ManualCheck {
    let note = rule.note.as_deref().unwrap_or_default();
    let records = count.map_or(String::new(), |count| format!(" {}", count.sentence()));
    let reason = match rule.status {
        Status::NeedsInput => format!(
            "{} — needs input no lead type carries ({}): {note}{records}",
            rule.summary,
            rule.missing_input.join(", ")
        ),
        Status::Manual | Status::Active => {
            format!("{} — manual judgement: {note}{records}", rule.summary)
        }
    };
    ManualCheck {
        rule: rule.id.clone(),
        reason,
    }
}

/// Sorts `ENV-2` before `ENV-10`: the text before the last `-`, then the number after it.
fn natural_key(id: &str) -> (&str, u64, &str) {
    match id.rsplit_once('-') {
        Some((prefix, number)) => (prefix, number.parse().unwrap_or(u64::MAX), id),
        None => (id, 0, id),
    }
}
