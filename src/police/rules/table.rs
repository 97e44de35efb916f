//! The rule file: its JSON shape, and compilation into checked rules.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use super::condition::{Condition, ConditionError, ConfigValue, ParseContext};
use super::facts::{fact_kind, FactKind, PRIOR_PENALTIES};
use super::priors::{Counted, PriorPenalties};
use super::RulesError;
use crate::contract::lead::LeadType;

/// The only rule-file format this code understands (the top-level `"format"`).
pub(crate) const FORMAT: u64 = 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    format: u64,
    version: String,
    /// Free text for readers of the file.
    #[serde(default, rename = "description")]
    _description: Option<String>,
    offences: Vec<OffenceEntry>,
    rules: Vec<RuleEntry>,
    #[serde(default)]
    tiers: Vec<RuleEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OffenceEntry {
    name: String,
    article: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    id: String,
    offence: String,
    #[serde(default)]
    tier: Option<String>,
    lead_types: Vec<String>,
    status: Status,
    summary: String,
    #[serde(default)]
    condition: Option<Value>,
    #[serde(default)]
    applies_when: Option<Value>,
    #[serde(default)]
    missing_input: Vec<String>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    confirm: Option<String>,
    #[serde(default)]
    prior_penalties: Option<PriorPenaltiesEntry>,
    citation: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriorPenaltiesEntry {
    #[serde(default)]
    declared: Option<String>,
    within_years: u32,
    counts: Vec<CountedEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountedEntry {
    lead_types: Vec<String>,
    #[serde(default, rename = "where")]
    only_if: Option<Value>,
}

/// Whether the hub can decide a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// Decided from the lead's facts by `condition`.
    Active,
    /// Its input is carried by no lead type yet; listed as a manual check.
    NeedsInput,
    /// Needs a human or an expert report; listed as a manual check.
    Manual,
}

/// An offence of the offence table.
#[derive(Clone, Debug)]
pub(crate) struct Offence {
    pub name: String,
    pub article: String,
}

/// A checked rule (or tier: `tier` is then the tier's name).
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub id: String,
    /// Index into the offence table.
    pub offence: usize,
    pub tier: Option<String>,
    pub lead_types: Vec<LeadType>,
    pub status: Status,
    /// The legal condition in the interpretation's terms; opens a manual check's reason.
    pub summary: String,
    pub condition: Option<Condition>,
    pub applies_when: Option<Condition>,
    pub missing_input: Vec<String>,
    pub note: Option<String>,
    pub confirm: Option<String>,
    /// Earlier penalties the rule counts; its condition then names `prior_penalties`.
    pub prior_penalties: Option<PriorPenalties>,
    pub citation: String,
}

impl Rule {
    pub(crate) fn applies_to(&self, lead_type: LeadType) -> bool {
        self.lead_types.contains(&lead_type)
    }
}

/// The compiled rule file.
#[derive(Clone, Debug)]
pub(crate) struct Table {
    pub version: String,
    pub offences: Vec<Offence>,
    pub rules: Vec<Rule>,
    pub tiers: Vec<Rule>,
}

/// Parses and checks a rule file. `file` names it in errors.
pub(crate) fn compile(
    file: &str,
    text: &str,
    config: &BTreeMap<&'static str, ConfigValue>,
) -> Result<Table, RulesError> {
    let parsed: RuleFile = serde_json::from_str(text).map_err(|source| RulesError::Malformed {
        file: file.to_owned(),
        source,
    })?;
    let top = |part: &str, problem: String| RulesError::InvalidRule {
        file: file.to_owned(),
        rule: part.to_owned(),
        problem,
    };
    if parsed.format != FORMAT {
        return Err(top(
            "format",
            format!(
                "only format {FORMAT} is understood, the file has {}",
                parsed.format
            ),
        ));
    }
    if parsed.version.trim().is_empty() {
        return Err(top("version", "must not be empty".to_owned()));
    }
    let mut offences = Vec::new();
    for entry in parsed.offences {
        if entry.name.trim().is_empty() || entry.article.trim().is_empty() {
            return Err(top(
                "offences",
                "an offence needs a name and an article".to_owned(),
            ));
        }
        if offences
            .iter()
            .any(|known: &Offence| known.name == entry.name)
        {
            return Err(top("offences", format!("{} is listed twice", entry.name)));
        }
        offences.push(Offence {
            name: entry.name,
            article: entry.article,
        });
    }
    let mut ids = BTreeSet::new();
    let mut compile_all = |entries: Vec<RuleEntry>, tiers: bool| {
        entries
            .into_iter()
            .map(|entry| {
                if !ids.insert(entry.id.clone()) {
                    return Err(RulesError::DuplicateRule {
                        file: file.to_owned(),
                        rule: entry.id,
                    });
                }
                compile_rule(file, entry, tiers, &offences, config)
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let rules = compile_all(parsed.rules, false)?;
    let tiers = compile_all(parsed.tiers, true)?;
    Ok(Table {
        version: parsed.version,
        offences,
        rules,
        tiers,
    })
}

fn compile_rule(
    file: &str,
    entry: RuleEntry,
    is_tier: bool,
    offences: &[Offence],
    config: &BTreeMap<&'static str, ConfigValue>,
) -> Result<Rule, RulesError> {
    let id = entry.id;
    let problem = |problem: String| RulesError::InvalidRule {
        file: file.to_owned(),
        rule: id.clone(),
        problem,
    };
    let id_ok = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
    if !id_ok {
        return Err(problem(
            "an id is made of upper-case letters, digits and '-'".to_owned(),
        ));
    }
    let offence = offences
        .iter()
        .position(|offence| offence.name == entry.offence)
        .ok_or_else(|| {
            problem(format!(
                "names the offence {:?}, which is not in the offence table",
                entry.offence
            ))
        })?;
    match (&entry.tier, is_tier) {
        (Some(tier), true) if !tier.trim().is_empty() => {}
        (_, true) => return Err(problem("a tier needs a \"tier\" name".to_owned())),
        (Some(_), false) => {
            return Err(problem(
                "a rule has no \"tier\"; escalation tiers go under \"tiers\"".to_owned(),
            ))
        }
        (None, false) => {}
    }
    if entry.citation.trim().is_empty() {
        return Err(problem("needs a citation".to_owned()));
    }
    if entry.summary.trim().is_empty() {
        return Err(problem("needs a summary of its legal condition".to_owned()));
    }
    if entry.lead_types.is_empty() {
        return Err(problem("applies to no lead type".to_owned()));
    }
    let mut lead_types = Vec::new();
    for name in &entry.lead_types {
        let lead_type: LeadType = name.parse().map_err(|_| RulesError::UnknownLeadType {
            file: file.to_owned(),
            rule: id.clone(),
            lead_type: name.clone(),
        })?;
        if lead_types.contains(&lead_type) {
            return Err(problem(format!("lists the lead type {lead_type} twice")));
        }
        lead_types.push(lead_type);
    }

    let has_note = entry
        .note
        .as_deref()
        .is_some_and(|note| !note.trim().is_empty());
    match entry.status {
        Status::Active => {
            if entry.condition.is_none() {
                return Err(problem("is active but has no condition".to_owned()));
            }
            if entry.applies_when.is_some() || !entry.missing_input.is_empty() {
                return Err(problem(
                    "is active; \"applies_when\" and \"missing_input\" belong to needs_input and manual rules".to_owned(),
                ));
            }
        }
        Status::NeedsInput | Status::Manual => {
            // A needs_input rule whose missing input is a count of earlier penalties may still
            // be met from the hub's own records: that is its condition.
            let counted_by_records =
                entry.status == Status::NeedsInput && entry.prior_penalties.is_some();
            if entry.condition.is_some() && !counted_by_records {
                return Err(problem(
                    "only an active rule has a condition; put what the facts can already decide in \"applies_when\"".to_owned(),
                ));
            }
            if entry.confirm.is_some() {
                return Err(problem("only an active rule has \"confirm\"".to_owned()));
            }
            if !has_note {
                return Err(problem(
                    "needs a note saying what a human must check".to_owned(),
                ));
            }
        }
    }
    if entry.status == Status::NeedsInput {
        if entry.missing_input.is_empty() {
            return Err(problem(
                "is needs_input but names no missing_input".to_owned(),
            ));
        }
        for input in &entry.missing_input {
            if let Some(&lead_type) = lead_types
                .iter()
                .find(|&&lead_type| fact_kind(lead_type, input).is_some())
            {
                return Err(problem(format!(
                    "lists {input} as missing, but lead type {lead_type} carries it; make the rule active"
                )));
            }
        }
    } else if !entry.missing_input.is_empty() {
        return Err(problem(
            "only a needs_input rule has missing_input".to_owned(),
        ));
    }

    let cx = ParseContext {
        lead_types: &lead_types,
        config,
        prior_penalties: entry.prior_penalties.is_some(),
    };
    let parse_in = |cx: &ParseContext<'_>,
                    value: &Option<Value>,
                    at: &str|
     -> Result<Option<Condition>, RulesError> {
        value
            .as_ref()
            .map(|value| {
                Condition::parse(value, at, cx).map_err(|error| match error {
                    ConditionError::UnknownFact { fact, lead_type } => RulesError::UnknownFact {
                        file: file.to_owned(),
                        rule: id.clone(),
                        fact,
                        lead_type: lead_type.to_string(),
                    },
                    ConditionError::UnknownConfig { name } => RulesError::UnknownConfig {
                        file: file.to_owned(),
                        rule: id.clone(),
                        name,
                    },
                    ConditionError::Invalid(text) => problem(text),
                })
            })
            .transpose()
    };
    let parse = |value: &Option<Value>, at: &str| parse_in(&cx, value, at);
    let condition = parse(&entry.condition, "condition")?;
    let applies_when = parse(&entry.applies_when, "applies_when")?;
    let prior_penalties = match entry.prior_penalties {
        None => None,
        Some(block) => {
            let mut names = Vec::new();
            if let Some(condition) = &condition {
                condition
                    .for_each_comparison(&mut |comparison| names.push(comparison.fact.clone()));
            }
            let checked =
                compile_prior_penalties(file, &id, block, &lead_types, config, &parse_in)?;
            check_prior_penalties(&checked, is_tier, entry.status, &names).map_err(problem)?;
            Some(checked)
        }
    };

    Ok(Rule {
        offence,
        tier: entry.tier,
        lead_types,
        status: entry.status,
        summary: entry.summary,
        condition,
        applies_when,
        missing_input: entry.missing_input,
        note: entry.note,
        confirm: entry.confirm,
        prior_penalties,
        citation: entry.citation,
        id,
    })
}

/// Parses an optional condition in a context, with the rule's error mapping.
type ParseCondition<'a> =
    dyn Fn(&ParseContext<'_>, &Option<Value>, &str) -> Result<Option<Condition>, RulesError> + 'a;

/// Checks a `prior_penalties` block's own parts: its lead types, `where` conditions, period and
/// declared fact.
fn compile_prior_penalties(
    file: &str,
    rule: &str,
    block: PriorPenaltiesEntry,
    rule_lead_types: &[LeadType],
    config: &BTreeMap<&'static str, ConfigValue>,
    parse: &ParseCondition<'_>,
) -> Result<PriorPenalties, RulesError> {
    let invalid = |problem: String| RulesError::InvalidRule {
        file: file.to_owned(),
        rule: rule.to_owned(),
        problem,
    };
    if !(1..=10).contains(&block.within_years) {
        return Err(invalid(format!(
            "prior_penalties.within_years must be 1 to 10 years, not {}",
            block.within_years
        )));
    }
    if let Some(fact) = &block.declared {
        for &lead_type in rule_lead_types {
            if fact_kind(lead_type, fact) != Some(FactKind::Integer) {
                return Err(invalid(format!(
                    "prior_penalties.declared names {fact}, which is not an integer fact of {lead_type}"
                )));
            }
        }
    }
    if block.counts.is_empty() {
        return Err(invalid(
            "prior_penalties.counts must say which penalty leads count".to_owned(),
        ));
    }
    let mut counts = Vec::new();
    for (index, entry) in block.counts.into_iter().enumerate() {
        if entry.lead_types.is_empty() {
            return Err(invalid(format!(
                "prior_penalties.counts[{index}] names no lead type"
            )));
        }
        let lead_types = entry
            .lead_types
            .iter()
            .map(|name| {
                name.parse().map_err(|_| RulesError::UnknownLeadType {
                    file: file.to_owned(),
                    rule: rule.to_owned(),
                    lead_type: name.clone(),
                })
            })
            .collect::<Result<Vec<LeadType>, _>>()?;
        let cx = ParseContext {
            lead_types: &lead_types,
            config,
            prior_penalties: false,
        };
        let only_if = parse(
            &cx,
            &entry.only_if,
            &format!("prior_penalties.counts[{index}].where"),
        )?;
        counts.push(Counted {
            lead_types,
            only_if,
        });
    }
    Ok(PriorPenalties {
        declared: block.declared,
        within_years: block.within_years,
        counts,
    })
}

/// How a `prior_penalties` block must sit in its rule: an active rule compares the larger of
/// its declared count and the records', so it names the declared fact and compares only
/// `prior_penalties`; a needs_input rule has no declared count and may be met from the records.
fn check_prior_penalties(
    block: &PriorPenalties,
    is_tier: bool,
    status: Status,
    condition_facts: &[String],
) -> Result<(), String> {
    if is_tier {
        return Err("a tier does not count earlier penalties; only rules do".to_owned());
    }
    let names_count = condition_facts.iter().any(|fact| fact == PRIOR_PENALTIES);
    match status {
        Status::Manual => {
            Err("a manual rule has no prior_penalties; make it needs_input".to_owned())
        }
        Status::Active => {
            let Some(declared) = &block.declared else {
                return Err("an active rule counting earlier penalties needs prior_penalties.declared, the agency's count".to_owned());
            };
            if condition_facts.iter().any(|fact| fact == declared) {
                return Err(format!(
                    "compares {declared} itself; compare {PRIOR_PENALTIES}, the larger of it and the hub's records"
                ));
            }
            if !names_count {
                return Err(format!(
                    "has prior_penalties but its condition never compares {PRIOR_PENALTIES}"
                ));
            }
            Ok(())
        }
        Status::NeedsInput => {
            if block.declared.is_some() {
                return Err("a needs_input rule's count is missing from its lead types; prior_penalties.declared belongs to active rules".to_owned());
            }
            if !condition_facts.is_empty() && !names_count {
                return Err(format!(
                    "its condition is met only from the hub's records, so it must compare {PRIOR_PENALTIES}"
                ));
            }
            Ok(())
        }
    }
}
