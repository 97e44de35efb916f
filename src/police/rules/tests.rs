use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::condition::{Comparison, Condition, Op, Operand};
use super::facts::{
    contract_facts, derived_facts, fact_kind, FactKind, AREAS, FOREST_RATIO, PRIOR_PENALTIES,
};
use super::*;
use crate::contract::lead::LeadId;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn lead_type(name: &str) -> LeadType {
    name.parse().expect("a lead type of the contract")
}

fn default_book() -> RuleBook {
    RuleBook::load(&RulesSettings::default()).expect("the built-in rule file loads")
}

fn book_with(settings: &RulesSettings) -> RuleBook {
    RuleBook::load(settings).expect("the built-in rule file loads with these settings")
}

fn rule_ids(assessment: &Assessment) -> Vec<String> {
    assessment
        .suspected_offences
        .iter()
        .flat_map(|offence| offence.rules.iter().cloned())
        .collect()
}

fn matches(assessment: &Assessment, rule: &str) -> bool {
    rule_ids(assessment).iter().any(|id| id == rule)
}

fn listed(assessment: &Assessment, rule: &str) -> bool {
    assessment
        .manual_checks
        .iter()
        .any(|check| check.rule == rule)
}

fn tier_of<'a>(assessment: &'a Assessment, offence: &str) -> Option<&'a str> {
    assessment
        .suspected_offences
        .iter()
        .find(|suspected| suspected.offence == offence)
        .and_then(|suspected| suspected.tier.as_deref())
}

fn measurement(code: &str, value: f64, limit: f64) -> Value {
    json!({
        "pollutant_code": code,
        "value": value,
        "limit": limit,
        "unit": "mg/L",
        "sampled_at": "2026-11-18T22:40:00+08:00",
        "method": "manual",
    })
}

fn discharge(measurements: &[(&str, f64, f64)]) -> Value {
    json!({
        "unit_type": "key_discharger",
        "measurements": measurements
            .iter()
            .map(|(code, value, limit)| measurement(code, *value, *limit))
            .collect::<Vec<_>>(),
    })
}

fn farmland(areas_mu: [f64; 5], prior_penalties_2y: u32) -> Value {
    let mut facts = json!({
        "use_changed": true,
        "destroyed": true,
        "prior_penalties_2y": prior_penalties_2y,
    });
    for ((m2, _), area) in AREAS.iter().zip(areas_mu) {
        facts[*m2] = json!(area * M2_PER_MU);
    }
    facts
}

fn mining(value_cny: f64, in_restricted_zone: bool) -> Value {
    json!({
        "mineral": "建筑用石料",
        "value_cny": value_cny,
        "in_restricted_zone": in_restricted_zone,
        "prior_penalties_2y": 0,
    })
}

fn sand(value_cny: f64, in_prohibited_zone_or_period: bool) -> Value {
    json!({
        "value_cny": value_cny,
        "in_river_management_area": true,
        "has_permit": false,
        "in_prohibited_zone_or_period": in_prohibited_zone_or_period,
        "prior_penalties_2y": 0,
        "flood_safety_harm_report": false,
    })
}

fn accident(deaths: u32, serious_injuries: u32, direct_loss_cny: f64) -> Value {
    json!({"deaths": deaths, "serious_injuries": serious_injuries, "direct_loss_cny": direct_loss_cny})
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The JSON Schema of a lead type's facts, from `schemas/facts/`.
fn facts_schema(lead_type: LeadType) -> Value {
    let path = repo_path(&format!("schemas/facts/{lead_type}.schema.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path:?}: {error}"));
    serde_json::from_str(&text).expect("a facts schema is JSON")
}

fn assert_schema_valid(lead_type: LeadType, facts: &Value, context: &str) {
    let validator = jsonschema::validator_for(&facts_schema(lead_type)).expect("schema compiles");
    let problems: Vec<String> = validator
        .iter_errors(facts)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    assert!(
        problems.is_empty(),
        "{context}: the test built facts its schema rejects: {facts} — {problems:?}"
    );
}

/// Writes `text` to a temporary rule file and returns settings that load it.
fn with_rule_file(text: &str) -> (tempfile::TempDir, RulesSettings) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("rules.json");
    std::fs::write(&path, text).expect("the rule file is written");
    let settings = RulesSettings {
        rules_file: Some(path),
        ..RulesSettings::default()
    };
    (dir, settings)
}

/// A one-offence rule file around the given rules.
fn small_rule_file(rules: Value) -> String {
    json!({
        "format": 1,
        "version": "test-1",
        "offences": [
            {"name": "污染环境罪", "article": "刑法第三百三十八条"},
            {"name": "重大责任事故罪", "article": "刑法第一百三十四条第一款"}
        ],
        "rules": rules,
    })
    .to_string()
}

fn accident_rule(id: &str, condition: Value) -> Value {
    json!({
        "id": id,
        "offence": "重大责任事故罪",
        "lead_types": ["safety.major_accident"],
        "status": "active",
        "summary": "test",
        "condition": condition,
        "citation": "test citation",
    })
}

fn load_error(text: &str) -> RulesError {
    let (_dir, settings) = with_rule_file(text);
    RuleBook::load(&settings).expect_err("the rule file is rejected")
}

// ---------------------------------------------------------------------------------------------
// The rule-table walk: every active rule and tier at, just below and just above each of its
// thresholds, with facts built from the rule file itself.
// ---------------------------------------------------------------------------------------------

/// A schema-valid `facts` object of `lead_type` that the walk then overrides.
fn baseline(lead_type: LeadType) -> Map<String, Value> {
    let mut facts = Map::new();
    for spec in contract_facts(lead_type) {
        let value = match spec.kind {
            FactKind::Integer | FactKind::Number => json!(0),
            FactKind::Bool => json!(false),
            FactKind::Enum(values) => json!(values[0]),
            FactKind::Text => json!(match spec.name {
                "waste_code" => "HW08",
                "station_mn" => "370303A00000000000000001",
                "mineral" => "建筑用石料",
                "facility" => "堤防",
                other => panic!("the walk needs a baseline value for the text fact {other}"),
            }),
            FactKind::CodeList => json!(["w00000"]),
            FactKind::Measurements => json!([measurement("w00000", 0.0, 1.0)]),
            FactKind::Derived => unreachable!("the contract facts are not derived"),
        };
        facts.insert(spec.name.to_owned(), value);
    }
    facts
}

/// Whether a comparison holds for `value`: written independently of the engine, as the
/// walk's oracle (exact comparisons; the walk never picks values within rounding).
fn holds(comparison: &Comparison, value: &Value) -> bool {
    match (&comparison.operand, comparison.op) {
        (Operand::Number(t), op) => {
            let v = value.as_f64().expect("a number");
            match op {
                Op::Ge => v >= *t,
                Op::Gt => v > *t,
                Op::Le => v <= *t,
                Op::Lt => v < *t,
                Op::Eq => v == *t,
                Op::Ne => v != *t,
                _ => unreachable!(),
            }
        }
        (Operand::Bool(b), Op::Eq) => value.as_bool() == Some(*b),
        (Operand::Bool(b), Op::Ne) => value.as_bool() != Some(*b),
        (Operand::Text(t), Op::Eq) => value.as_str() == Some(t.as_str()),
        (Operand::Text(t), Op::Ne) => value.as_str() != Some(t.as_str()),
        (Operand::List(list), Op::In) => list
            .iter()
            .any(|item| Some(item.as_str()) == value.as_str()),
        (Operand::List(list), Op::Intersects) => value
            .as_array()
            .expect("a list")
            .iter()
            .any(|code| list.iter().any(|item| Some(item.as_str()) == code.as_str())),
        (operand, op) => panic!("the walk does not know {op:?} with {operand:?}"),
    }
}

fn is_integer(lead_type: LeadType, fact: &str) -> bool {
    // A rule's `prior_penalties` is a count, like the declared fact it stands for.
    fact == PRIOR_PENALTIES || fact_kind(lead_type, fact) == Some(FactKind::Integer)
}

/// Values worth trying for a comparison's fact: its threshold and the values next to it.
fn candidates(lead_type: LeadType, comparison: &Comparison) -> Vec<Value> {
    match &comparison.operand {
        Operand::Number(t) if is_integer(lead_type, &comparison.fact) => {
            let base = t.ceil();
            [base, base + 1.0, base - 1.0, t.floor(), 0.0]
                .into_iter()
                .filter(|v| *v >= 0.0)
                .map(|v| json!(v as i64))
                .collect()
        }
        Operand::Number(t) => {
            let step = step(*t);
            [*t, t + step, t - step, 0.0]
                .into_iter()
                .filter(|v| *v >= 0.0)
                .map(|v| json!(v))
                .collect()
        }
        Operand::Bool(b) => vec![json!(b), json!(!b)],
        Operand::Text(_) | Operand::List(_) if comparison.op != Op::Intersects => {
            let mut values: Vec<Value> = match &comparison.operand {
                Operand::Text(t) => vec![json!(t)],
                Operand::List(list) => list.iter().map(|item| json!(item)).collect(),
                _ => unreachable!(),
            };
            match fact_kind(lead_type, &comparison.fact) {
                Some(FactKind::Enum(all)) => values.extend(all.iter().map(|item| json!(item))),
                _ => values.push(json!("zz-not-listed")),
            }
            values
        }
        Operand::List(list) => {
            let outsider = ["w99999", "a99999", "w99998"]
                .into_iter()
                .find(|code| !list.iter().any(|item| item == code))
                .expect("a code outside the list");
            vec![json!([list[0]]), json!([outsider])]
        }
        Operand::Text(_) => unreachable!(),
    }
}

/// "Just below / just above" for a non-integer threshold.
fn step(threshold: f64) -> f64 {
    1e-6 * threshold.abs().max(1.0)
}

/// Finds fact values that give conditions the wanted truth, keeping what is already assigned.
struct Solver {
    lead_type: LeadType,
    assigned: BTreeMap<String, Value>,
}

impl Solver {
    fn require(&mut self, node: &Condition, want: bool) -> bool {
        let saved = self.assigned.clone();
        let ok = match node {
            Condition::All(parts) if want => parts.iter().all(|part| self.require(part, true)),
            Condition::Any(parts) if !want => parts.iter().all(|part| self.require(part, false)),
            Condition::All(parts) | Condition::Any(parts) => {
                parts.iter().any(|part| self.require(part, want))
            }
            Condition::Not(inner) => self.require(inner, !want),
            Condition::Compare(comparison) => match self.assigned.get(&comparison.fact) {
                Some(value) => holds(comparison, value) == want,
                None => match candidates(self.lead_type, comparison)
                    .into_iter()
                    .find(|value| holds(comparison, value) == want)
                {
                    Some(value) => {
                        self.assigned.insert(comparison.fact.clone(), value);
                        true
                    }
                    None => false,
                },
            },
        };
        if !ok {
            self.assigned = saved;
        }
        ok
    }
}

/// Every path from the root to a comparison.
fn leaf_paths(node: &Condition, prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
    match node {
        Condition::All(parts) | Condition::Any(parts) => {
            for (index, part) in parts.iter().enumerate() {
                prefix.push(index);
                leaf_paths(part, prefix, out);
                prefix.pop();
            }
        }
        Condition::Not(inner) => {
            prefix.push(0);
            leaf_paths(inner, prefix, out);
            prefix.pop();
        }
        Condition::Compare(_) => out.push(prefix.clone()),
    }
}

/// The comparison at `path`, the siblings that must hold (`all`) or fail (`any`) for it to
/// decide the whole condition, and whether an odd number of `not`s lies on the way.
fn decisive<'a>(
    root: &'a Condition,
    path: &[usize],
) -> (&'a Comparison, Vec<(&'a Condition, bool)>, bool) {
    let mut node = root;
    let mut siblings = Vec::new();
    let mut negated = false;
    for &index in path {
        node = match node {
            Condition::All(parts) | Condition::Any(parts) => {
                let want = matches!(node, Condition::All(_));
                for (other, part) in parts.iter().enumerate() {
                    if other != index {
                        siblings.push((part, want));
                    }
                }
                &parts[index]
            }
            Condition::Not(inner) => {
                negated = !negated;
                inner
            }
            Condition::Compare(_) => unreachable!(),
        };
    }
    match node {
        Condition::Compare(comparison) => (comparison, siblings, negated),
        _ => unreachable!(),
    }
}

/// Turns assigned derived facts back into contract facts.
fn apply_derived(
    lead_type: LeadType,
    facts: &mut Map<String, Value>,
    name: &str,
    value: f64,
    settings: &RulesSettings,
    touched: &mut Vec<String>,
) {
    let mut set = |facts: &mut Map<String, Value>, field: &str, field_value: Value| {
        assert!(
            !touched.iter().any(|done| done == field),
            "the walk set {field} twice for {lead_type}; teach it to combine derived facts"
        );
        touched.push(field.to_owned());
        facts.insert(field.to_owned(), field_value);
    };
    if let Some((m2, _)) = AREAS.iter().find(|(_, mu)| *mu == name) {
        set(facts, m2, json!(value * M2_PER_MU));
        return;
    }
    let group = match name {
        FOREST_RATIO => {
            set(
                facts,
                "public_welfare_forest_m2",
                json!(value * 5.0 * M2_PER_MU),
            );
            set(facts, "commercial_forest_m2", json!(0.0));
            return;
        }
        "max_exceed_multiple_env3" => &settings.env3_pollutant_codes,
        "max_exceed_multiple_env4" => &settings.env4_pollutant_codes,
        other => panic!("the walk cannot produce the derived fact {other} of {lead_type}"),
    };
    let measured = match settings.exceed_multiple {
        ExceedMultipleFormula::Ratio => value,
        ExceedMultipleFormula::Excess => value + 1.0,
    };
    let list = facts
        .get_mut("measurements")
        .and_then(Value::as_array_mut)
        .expect("a discharge lead has measurements");
    list.push(measurement(&group[0], measured, 1.0));
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    /// An active rule: is it among the suspected offences' rules?
    Rule,
    /// An active tier: does its offence carry this tier?
    Tier,
    /// A manual or needs-input rule's `applies_when`: is it listed as a manual check?
    Listed,
}

/// Walks every comparison of `condition` for one lead type; returns how many cases ran.
fn walk_condition(
    book: &RuleBook,
    settings: &RulesSettings,
    rule: &table::Rule,
    condition: &Condition,
    lead_type: LeadType,
    target: Target,
) -> usize {
    let mut paths = Vec::new();
    leaf_paths(condition, &mut Vec::new(), &mut paths);
    let offence = &book.offences[rule.offence].name;
    let mut cases = 0;
    for path in paths {
        let (comparison, siblings, negated) = decisive(condition, &path);
        let variants: Vec<(&str, Value)> = match (&comparison.operand, comparison.op) {
            (Operand::Number(t), Op::Ge | Op::Gt | Op::Le | Op::Lt) => {
                let (below, at, above) = if is_integer(lead_type, &comparison.fact) {
                    (
                        json!(t.ceil() as i64 - 1),
                        json!(t.ceil() as i64),
                        json!(t.ceil() as i64 + 1),
                    )
                } else {
                    (json!(t - step(*t)), json!(t), json!(t + step(*t)))
                };
                vec![("just below", below), ("at", at), ("just above", above)]
            }
            _ => {
                let all = candidates(lead_type, comparison);
                let yes = all.iter().find(|value| holds(comparison, value)).cloned();
                let no = all.iter().find(|value| !holds(comparison, value)).cloned();
                yes.map(|value| ("meeting", value))
                    .into_iter()
                    .chain(no.map(|value| ("failing", value)))
                    .collect()
            }
        };
        for (label, value) in variants {
            let context = format!(
                "{} ({target:?}) for {lead_type}, fact {} {:?} {:?}, {label} = {value}, settings {:?}/{}/{}",
                rule.id,
                comparison.fact,
                comparison.op,
                comparison.operand,
                settings.exceed_multiple,
                settings.mining_value_threshold_cny,
                settings.mining_restricted_threshold_cny,
            );
            let mut solver = Solver {
                lead_type,
                assigned: BTreeMap::from([(comparison.fact.clone(), value.clone())]),
            };
            for (sibling, want) in &siblings {
                assert!(
                    solver.require(sibling, *want),
                    "{context}: cannot make a sibling condition {want}; teach the walk"
                );
            }
            let leaf_true = holds(comparison, &value);
            let expected = leaf_true != negated;
            if comparison.op == Op::Ge && !negated {
                let by_label = label != "just below";
                assert_eq!(
                    expected, by_label,
                    "{context}: >= must hold at and above only"
                );
            }

            let mut facts = baseline(lead_type);
            let mut derived_assigned = BTreeMap::new();
            let mut touched = Vec::new();
            for (fact, assigned) in &solver.assigned {
                if fact == PRIOR_PENALTIES {
                    // Without the hub's records, the rule's count is the agency's declared one.
                    let declared = rule
                        .prior_penalties
                        .as_ref()
                        .and_then(|priors| priors.declared.clone())
                        .expect("an active rule comparing prior_penalties declares its fact");
                    facts.insert(declared, assigned.clone());
                } else if fact_kind(lead_type, fact) == Some(FactKind::Derived) {
                    let number = assigned.as_f64().expect("a derived fact is a number");
                    derived_assigned.insert(fact.clone(), number);
                    apply_derived(lead_type, &mut facts, fact, number, settings, &mut touched);
                } else {
                    facts.insert(fact.clone(), assigned.clone());
                }
            }
            let facts = Value::Object(facts);
            assert_schema_valid(lead_type, &facts, &context);

            let assessment = book.assess(lead_type, LeadKind::Clue, &facts);
            for (fact, number) in &derived_assigned {
                let got = assessment.derived.get(fact).copied();
                assert!(
                    got.is_some_and(|got| (got - number).abs() <= 1e-9 * number.abs().max(1.0)),
                    "{context}: derived {fact} should be {number}, is {got:?}"
                );
            }
            let actual =
                match target {
                    Target::Rule => matches(&assessment, &rule.id),
                    Target::Listed => listed(&assessment, &rule.id),
                    Target::Tier => {
                        let tier = rule.tier.as_deref().expect("a tier has a name");
                        if expected {
                            assert!(
                            assessment.suspected_offences.iter().any(|s| &s.offence == offence),
                            "{context}: the tier's condition holds but {offence} is not suspected"
                        );
                        }
                        tier_of(&assessment, offence) == Some(tier)
                    }
                };
            assert_eq!(
                actual,
                expected,
                "{context}: expected {}, got {assessment:#?}",
                if expected { "a match" } else { "no match" }
            );
            cases += 1;
        }
    }
    cases
}

fn walk_every_rule(settings: &RulesSettings) -> usize {
    let book = book_with(settings);
    let mut cases = 0;
    let mut walked = Vec::new();
    for (rule, is_tier) in book
        .rules
        .iter()
        .map(|rule| (rule, false))
        .chain(book.tiers.iter().map(|tier| (tier, true)))
    {
        let (condition, target) = match (rule.status, is_tier) {
            (table::Status::Active, false) => (rule.condition.as_ref(), Target::Rule),
            (table::Status::Active, true) => (rule.condition.as_ref(), Target::Tier),
            (_, _) => (rule.applies_when.as_ref(), Target::Listed),
        };
        let Some(condition) = condition else {
            assert_ne!(
                rule.status,
                table::Status::Active,
                "{} has no condition",
                rule.id
            );
            continue;
        };
        for &lead_type in &rule.lead_types {
            let ran = walk_condition(&book, settings, rule, condition, lead_type, target);
            assert!(ran >= 2, "{} for {lead_type}: only {ran} cases", rule.id);
            cases += ran;
        }
        walked.push(rule.id.clone());
    }
    let active: Vec<&str> = book
        .rules
        .iter()
        .chain(&book.tiers)
        .filter(|rule| rule.status == table::Status::Active)
        .map(|rule| rule.id.as_str())
        .collect();
    for id in active {
        assert!(walked.iter().any(|done| done == id), "{id} was not walked");
    }
    cases
}

#[test]
fn every_active_rule_matches_at_and_above_its_threshold_and_not_below() {
    let cases = walk_every_rule(&RulesSettings::default());
    assert!(cases > 100, "only {cases} cases ran");
}

#[test]
fn the_walk_also_holds_with_the_excess_formula_and_the_highest_mining_amounts() {
    let settings = RulesSettings {
        exceed_multiple: ExceedMultipleFormula::Excess,
        mining_value_threshold_cny: 300_000,
        mining_restricted_threshold_cny: 150_000,
        ..RulesSettings::default()
    };
    walk_every_rule(&settings);
}

#[test]
fn the_built_in_file_has_every_rule_of_the_domain_tables() {
    let book = default_book();
    let mut expected: Vec<String> = Vec::new();
    for (prefix, count) in [
        ("ENV", 11),
        ("LAND", 8),
        ("MIN", 5),
        ("SAND", 2),
        ("SAF", 4),
        ("DANGER", 3),
        ("WATER", 1),
    ] {
        expected.extend((1..=count).map(|n| format!("{prefix}-{n}")));
    }
    let ids: Vec<&str> = book.rules.iter().map(|rule| rule.id.as_str()).collect();
    assert_eq!(ids, expected);

    let status = |id: &str| book.rules.iter().find(|rule| rule.id == id).unwrap().status;
    for id in ["ENV-1", "ENV-6", "ENV-8", "ENV-9", "ENV-10", "LAND-8"] {
        assert_eq!(status(id), table::Status::NeedsInput, "{id}");
    }
    for id in ["ENV-11", "MIN-4", "MIN-5", "SAF-4", "WATER-1"] {
        assert_eq!(status(id), table::Status::Manual, "{id}");
    }
    let citation = |id: &str| {
        book.rules
            .iter()
            .find(|rule| rule.id == id)
            .unwrap()
            .citation
            .as_str()
    };
    for (id, cited) in [
        ("MIN-5", "法释〔2016〕25号 第三条第（五）项"),
        ("SAF-4", "法释〔2015〕22号 第六条第一款第（三）项"),
        ("LAND-3", "法释〔2023〕8号 第一条第二款第（一）项"),
        ("LAND-4", "法释〔2023〕8号 第一条第二款第（二）项"),
        ("LAND-5", "法释〔2023〕8号 第一条第二款第（三）项"),
        ("LAND-6", "法释〔2023〕8号 第一条第二款第（四）项"),
        ("SAF-1", "法释〔2015〕22号 第六条第一款第（一）项"),
    ] {
        assert_eq!(citation(id), cited, "{id}");
    }
    assert!(citation("WATER-1").contains("刑法第二百七十五条"));
    let lead_types = |id: &str| -> Vec<String> {
        let rule = book.rules.iter().find(|rule| rule.id == id).unwrap();
        rule.lead_types.iter().map(|t| t.to_string()).collect()
    };
    assert_eq!(lead_types("WATER-1"), ["water.facility_damage"]);
    assert_eq!(lead_types("SAF-4"), ["safety.major_accident"]);
    assert_eq!(
        lead_types("MIN-5"),
        ["land.illegal_mining", "water.illegal_sand_mining"]
    );
    let offence = |id: &str| {
        let rule = book.rules.iter().find(|rule| rule.id == id).unwrap();
        book.offences[rule.offence].name.as_str()
    };
    assert_eq!(offence("ENV-3"), "污染环境罪");
    assert_eq!(offence("LAND-5"), "非法占用农用地罪");
    assert_eq!(offence("SAND-1"), "非法采矿罪");
    assert_eq!(offence("SAF-2"), "重大责任事故罪");
    assert_eq!(offence("DANGER-3"), "危险作业罪");
    assert_eq!(offence("WATER-1"), "故意毁坏财物罪");
    assert_eq!(book.version(), "1.2.0");
}

#[test]
fn the_thresholds_are_those_of_the_domain_tables_and_all_inclusive() {
    let book = default_book();
    let expected: BTreeMap<&str, Vec<(&str, f64)>> = BTreeMap::from([
        ("ENV-2", vec![("quantity_t", 3.0)]),
        ("ENV-3", vec![("max_exceed_multiple_env3", 3.0)]),
        ("ENV-4", vec![("max_exceed_multiple_env4", 10.0)]),
        ("LAND-1", vec![("basic_farmland_mu", 5.0)]),
        ("LAND-2", vec![("other_cultivated_mu", 10.0)]),
        ("LAND-3", vec![("public_welfare_forest_mu", 5.0)]),
        ("LAND-4", vec![("commercial_forest_mu", 10.0)]),
        ("LAND-5", vec![("forest_ratio", 1.0)]),
        (
            "LAND-6",
            vec![("prior_penalties", 2.0), ("forest_ratio", 0.5)],
        ),
        ("LAND-7", vec![("grassland_mu", 20.0)]),
        (
            "LAND-8",
            vec![
                ("grassland_mu", 10.0),
                ("prior_penalties", 1.0),
                ("grassland_mu", 10.0),
            ],
        ),
        ("MIN-1", vec![("value_cny", 100_000.0)]),
        ("MIN-2", vec![("value_cny", 50_000.0)]),
        ("MIN-3", vec![("prior_penalties", 2.0)]),
        (
            "SAND-1",
            vec![
                ("value_cny", 100_000.0),
                ("value_cny", 50_000.0),
                ("prior_penalties", 2.0),
            ],
        ),
        ("SAF-1", vec![("deaths", 1.0)]),
        ("SAF-2", vec![("serious_injuries", 3.0)]),
        ("SAF-3", vec![("direct_loss_cny", 1_000_000.0)]),
        ("ENV-T1", vec![("quantity_t", 100.0)]),
        (
            "MIN-T1",
            vec![("value_cny", 500_000.0), ("value_cny", 250_000.0)],
        ),
        (
            "MIN-T2",
            vec![("value_cny", 500_000.0), ("value_cny", 250_000.0)],
        ),
        (
            "SAF-T1",
            vec![
                ("deaths", 3.0),
                ("serious_injuries", 10.0),
                ("direct_loss_cny", 5_000_000.0),
            ],
        ),
    ]);
    for rule in book.rules.iter().chain(&book.tiers) {
        let mut thresholds = Vec::new();
        for condition in rule.condition.iter().chain(&rule.applies_when) {
            condition.for_each_comparison(&mut |comparison| {
                if let Operand::Number(value) = comparison.operand {
                    // 刑法第九十九条: every "以上" threshold includes the number itself.
                    assert_eq!(comparison.op, Op::Ge, "{}: {}", rule.id, comparison.fact);
                    thresholds.push((comparison.fact.as_str(), value));
                }
            });
        }
        let want = expected.get(rule.id.as_str()).cloned().unwrap_or_default();
        assert_eq!(thresholds, want, "{}", rule.id);
    }
}

// ---------------------------------------------------------------------------------------------
// Specific rules
// ---------------------------------------------------------------------------------------------

#[test]
fn three_times_the_lead_limit_is_env3_as_a_ratio_but_not_as_an_excess() {
    let ratio = default_book();
    let excess = book_with(&RulesSettings {
        exceed_multiple: ExceedMultipleFormula::Excess,
        ..RulesSettings::default()
    });
    let three = discharge(&[("w20120", 3.0, 1.0)]);
    let four = discharge(&[("w20120", 4.0, 1.0)]);
    let lead = lead_type("environment.discharge_exceedance");

    let with_ratio = ratio.assess(lead, LeadKind::Clue, &three);
    assert!(matches(&with_ratio, "ENV-3"));
    assert_eq!(with_ratio.derived["max_exceed_multiple_env3"], 3.0);
    let with_excess = excess.assess(lead, LeadKind::Clue, &three);
    assert!(!matches(&with_excess, "ENV-3"));
    assert_eq!(with_excess.derived["max_exceed_multiple_env3"], 2.0);

    assert!(matches(&ratio.assess(lead, LeadKind::Clue, &four), "ENV-3"));
    assert!(matches(
        &excess.assess(lead, LeadKind::Clue, &four),
        "ENV-3"
    ));
}

#[test]
fn the_exceed_multiple_is_the_maximum_over_each_pollutant_group() {
    let book = default_book();
    let facts = discharge(&[
        ("w20111", 1.5, 1.0),
        ("w20119", 2.0, 0.5),
        ("w20122", 9.0, 1.0),
        ("w01018", 500.0, 100.0),
    ]);
    let assessment = book.assess(
        lead_type("environment.discharge_exceedance"),
        LeadKind::Clue,
        &facts,
    );
    assert_eq!(assessment.derived["max_exceed_multiple_env3"], 4.0);
    assert_eq!(assessment.derived["max_exceed_multiple_env4"], 9.0);
    assert_eq!(assessment.derived["max_exceed_multiple"], 9.0);
    assert_eq!(assessment.derived["exceed_multiple.w01018"], 5.0);
    // COD five times its limit is not a heavy metal: only ENV-3 matches.
    assert_eq!(rule_ids(&assessment), ["ENV-3"]);
}

#[test]
fn ten_times_a_copper_limit_is_env4_and_codes_outside_the_groups_are_not() {
    let book = default_book();
    let lead = lead_type("environment.discharge_exceedance");
    assert!(matches(
        &book.assess(lead, LeadKind::Clue, &discharge(&[("w20122", 10.0, 1.0)])),
        "ENV-4"
    ));
    assert!(!matches(
        &book.assess(lead, LeadKind::Clue, &discharge(&[("w20122", 9.99, 1.0)])),
        "ENV-4"
    ));
    let unlisted = book.assess(lead, LeadKind::Clue, &discharge(&[("w20999", 50.0, 1.0)]));
    assert!(unlisted.suspected_offences.is_empty());
}

#[test]
fn thallium_antimony_and_the_variant_codes_are_env3_and_silver_vanadium_manganese_cobalt_env4() {
    let book = default_book();
    let lead = lead_type("environment.discharge_exceedance");
    // Tl, Sb, 六价铬 and the variant codes of As/Hg/Cd/Pb: three times is ENV-3.
    for code in [
        "w20089", "w20004", "w20117", "w20141", "w20142", "w20143", "w20144",
    ] {
        let three = book.assess(lead, LeadKind::Clue, &discharge(&[(code, 3.0, 1.0)]));
        assert_eq!(rule_ids(&three), ["ENV-3"], "{code}");
        let under = book.assess(lead, LeadKind::Clue, &discharge(&[(code, 2.99, 1.0)]));
        assert!(under.suspected_offences.is_empty(), "{code}");
    }
    // Ag, V, Mn, Co and the variant codes of Cu/Zn: ten times is ENV-4, three times is nothing.
    for code in ["w20126", "w20101", "w20124", "w20038", "w20138", "w20139"] {
        let ten = book.assess(lead, LeadKind::Clue, &discharge(&[(code, 10.0, 1.0)]));
        assert_eq!(rule_ids(&ten), ["ENV-4"], "{code}");
        let three = book.assess(lead, LeadKind::Clue, &discharge(&[(code, 9.99, 1.0)]));
        assert!(three.suspected_offences.is_empty(), "{code}");
    }
}

#[test]
fn the_rule_file_names_every_default_pollutant_code_with_its_certainty() {
    let text = std::fs::read_to_string(repo_path(BUILT_IN_RULES_FILE)).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    let note = |id: &str| -> String {
        file["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|rule| rule["id"] == id)
            .and_then(|rule| rule["note"].as_str())
            .unwrap_or_else(|| panic!("{id} has a note"))
            .to_owned()
    };
    let defaults = RulesSettings::default();
    for (id, codes) in [
        ("ENV-3", &defaults.env3_pollutant_codes),
        ("ENV-4", &defaults.env4_pollutant_codes),
    ] {
        let note = note(id);
        for code in codes {
            assert!(
                note.contains(code.as_str()),
                "{id}'s note does not name {code}"
            );
        }
        assert!(note.contains("NOT confirmed"), "{id}: {note}");
    }
}

#[test]
fn an_operator_can_add_a_pollutant_code_to_the_env3_group() {
    let settings = RulesSettings {
        env3_pollutant_codes: vec!["w20120".into(), "w20999".into()],
        ..RulesSettings::default()
    };
    let assessment = book_with(&settings).assess(
        lead_type("environment.discharge_exceedance"),
        LeadKind::Clue,
        &discharge(&[("w20999", 3.0, 1.0)]),
    );
    assert!(matches(&assessment, "ENV-3"));
}

#[test]
fn five_mu_of_basic_farmland_is_exactly_five_times_ten_thousand_fifteenths_of_a_square_metre() {
    let book = default_book();
    let lead = lead_type("land.farmland_occupation");
    let with_area = |m2: f64| {
        let mut facts = farmland([0.0; 5], 0);
        facts["basic_farmland_m2"] = json!(m2);
        book.assess(lead, LeadKind::Clue, &facts)
    };
    assert_eq!(M2_PER_MU, 10_000.0 / 15.0);
    // 5 亩 as a connector converts it (5 × 10000/15 m², which is not exact in binary) is 5 亩.
    let exact = with_area(5.0 * (10_000.0 / 15.0));
    assert!(matches(&exact, "LAND-1"), "{exact:?}");
    assert!((exact.derived["basic_farmland_mu"] - 5.0).abs() < 1e-12);
    assert!(matches(&with_area(5.0 * 10_000.0 / 15.0), "LAND-1"));
    // The legal edge stays where it is: 3333.33 m² is 4.999995 亩, 3333.34 m² 5.00001 亩.
    let below = with_area(3333.33);
    assert!(!matches(&below, "LAND-1"), "{below:?}");
    assert!((below.derived["basic_farmland_mu"] - 4.999_995).abs() < 1e-9);
    assert!(matches(&with_area(3333.34), "LAND-1"));
    assert!(matches(&with_area(3333.35), "LAND-1"));
    // Within 1e-6 亩 (0.000667 m²) of the edge counts as on it, farther below does not:
    // 3333.3328 m² is 8e-7 亩 short, 3333.3323 m² 1.55e-6 亩.
    assert!(matches(&with_area(3333.3328), "LAND-1"));
    assert!(!matches(&with_area(3333.3323), "LAND-1"));
}

/// One numeric edge of the rule tables, written in the field's own unit.
struct Edge {
    rule: &'static str,
    lead_type: &'static str,
    /// What the values are, for messages.
    what: &'static str,
    /// The lead's facts with the value under test.
    facts: Box<dyn Fn(f64) -> Value>,
    below: f64,
    at: f64,
    above: f64,
}

fn edge(
    rule: &'static str,
    lead_type: &'static str,
    what: &'static str,
    (below, at, above): (f64, f64, f64),
    facts: impl Fn(f64) -> Value + 'static,
) -> Edge {
    Edge {
        rule,
        lead_type,
        what,
        facts: Box::new(facts),
        below,
        at,
        above,
    }
}

fn farmland_with(field: &'static str, prior_penalties_2y: u32) -> impl Fn(f64) -> Value {
    move |m2| {
        let mut facts = farmland([0.0; 5], prior_penalties_2y);
        facts[field] = json!(m2);
        facts
    }
}

fn with_fact(base: Value, field: &'static str) -> impl Fn(f64) -> Value {
    move |value| {
        let mut facts = base.clone();
        facts[field] = if field.ends_with("_2y") || field == "deaths" || field == "serious_injuries"
        {
            json!(value as i64)
        } else {
            json!(value)
        };
        facts
    }
}

/// Every numeric rule and tier at its threshold, just below and just above, with the values an
/// agency would send: areas to the 0.01 m² (3333.33 m² against 3333.34 m²), tonnages to the
/// kilogram, amounts to the 分, readings to four decimals, persons and penalties by one.
fn edges() -> Vec<Edge> {
    const MU: f64 = 10_000.0 / 15.0;
    let waste = json!({"waste_code": "HW08", "quantity_t": 0, "disposal": "dump"});
    let reading =
        |code: &'static str, limit: f64| move |value: f64| discharge(&[(code, value, limit)]);
    vec![
        edge(
            "ENV-2",
            "environment.hazardous_waste",
            "quantity_t",
            (2.999, 3.0, 3.001),
            with_fact(waste.clone(), "quantity_t"),
        ),
        edge(
            "ENV-2",
            "environment.hazardous_waste",
            "kg / 1000",
            (2_999.0 / 1000.0, 3_000.0 / 1000.0, 3_001.0 / 1000.0),
            with_fact(waste.clone(), "quantity_t"),
        ),
        edge(
            "ENV-T1",
            "environment.hazardous_waste",
            "quantity_t",
            (99.999, 100.0, 100.001),
            with_fact(waste, "quantity_t"),
        ),
        // 0.3 / 0.1 is 2.9999999999999996 in binary: three times the limit all the same.
        edge(
            "ENV-3",
            "environment.discharge_exceedance",
            "w20120 mg/L, limit 0.1",
            (0.2999, 0.3, 0.3001),
            reading("w20120", 0.1),
        ),
        edge(
            "ENV-3",
            "environment.discharge_exceedance",
            "w20117 mg/L, limit 0.5",
            (1.4999, 1.5, 1.5001),
            reading("w20117", 0.5),
        ),
        edge(
            "ENV-4",
            "environment.discharge_exceedance",
            "w20122 mg/L, limit 0.5",
            (4.9999, 5.0, 5.0001),
            reading("w20122", 0.5),
        ),
        edge(
            "ENV-4",
            "environment.discharge_exceedance",
            "w20123 mg/L, limit 0.7",
            (6.9999, 7.0, 7.0001),
            reading("w20123", 0.7),
        ),
        edge(
            "LAND-1",
            "land.farmland_occupation",
            "basic_farmland_m2",
            (3333.33, 5.0 * MU, 3333.34),
            farmland_with("basic_farmland_m2", 0),
        ),
        edge(
            "LAND-2",
            "land.farmland_occupation",
            "other_cultivated_m2",
            (6666.66, 10.0 * MU, 6666.67),
            farmland_with("other_cultivated_m2", 0),
        ),
        edge(
            "LAND-3",
            "land.farmland_occupation",
            "public_welfare_forest_m2",
            (3333.33, 5.0 * MU, 3333.34),
            farmland_with("public_welfare_forest_m2", 0),
        ),
        edge(
            "LAND-4",
            "land.farmland_occupation",
            "commercial_forest_m2",
            (6666.66, 10.0 * MU, 6666.67),
            farmland_with("commercial_forest_m2", 0),
        ),
        // 3 亩 of public-welfare forest (0.6) and 4 亩 of commercial forest (0.4).
        edge(
            "LAND-5",
            "land.farmland_occupation",
            "commercial_forest_m2 beside 2000 m² 公益林",
            (2666.66, 4.0 * MU, 2666.67),
            move |m2| {
                let mut facts = farmland([0.0; 5], 0);
                facts["public_welfare_forest_m2"] = json!(2000.0);
                facts["commercial_forest_m2"] = json!(m2);
                facts
            },
        ),
        // Half the standard after two penalties: 2.5 亩 of public-welfare forest.
        edge(
            "LAND-6",
            "land.farmland_occupation",
            "public_welfare_forest_m2, 2 penalties",
            (1666.66, 2.5 * MU, 1666.67),
            farmland_with("public_welfare_forest_m2", 2),
        ),
        edge(
            "LAND-6",
            "land.farmland_occupation",
            "prior_penalties_2y, 2 亩 公益林 + 1 亩 商品林",
            (1.0, 2.0, 3.0),
            |count| {
                let mut facts = farmland([0.0, 0.0, 2.0, 1.0, 0.0], count as u32);
                facts["prior_penalties_2y"] = json!(count as i64);
                facts
            },
        ),
        edge(
            "LAND-7",
            "land.farmland_occupation",
            "grassland_m2",
            (13333.33, 20.0 * MU, 13333.34),
            farmland_with("grassland_m2", 0),
        ),
        edge(
            "MIN-1",
            "land.illegal_mining",
            "value_cny",
            (99_999.99, 100_000.0, 100_000.01),
            |value| mining(value, false),
        ),
        edge(
            "MIN-1",
            "land.illegal_mining",
            "万元 × 10000",
            (9.999_999 * 10_000.0, 10.0 * 10_000.0, 10.000_001 * 10_000.0),
            |value| mining(value, false),
        ),
        edge(
            "MIN-2",
            "land.illegal_mining",
            "value_cny in a restricted zone",
            (49_999.99, 50_000.0, 50_000.01),
            |value| mining(value, true),
        ),
        edge(
            "MIN-3",
            "land.illegal_mining",
            "prior_penalties_2y",
            (1.0, 2.0, 3.0),
            with_fact(mining(1_000.0, false), "prior_penalties_2y"),
        ),
        edge(
            "MIN-T1",
            "land.illegal_mining",
            "value_cny",
            (499_999.99, 500_000.0, 500_000.01),
            |value| mining(value, false),
        ),
        edge(
            "MIN-T1",
            "land.illegal_mining",
            "value_cny in a restricted zone",
            (249_999.99, 250_000.0, 250_000.01),
            |value| mining(value, true),
        ),
        edge(
            "SAND-1",
            "water.illegal_sand_mining",
            "value_cny",
            (99_999.99, 100_000.0, 100_000.01),
            |value| sand(value, false),
        ),
        edge(
            "SAND-1",
            "water.illegal_sand_mining",
            "value_cny in a prohibited zone or period",
            (49_999.99, 50_000.0, 50_000.01),
            |value| sand(value, true),
        ),
        edge(
            "SAND-1",
            "water.illegal_sand_mining",
            "prior_penalties_2y",
            (1.0, 2.0, 3.0),
            with_fact(sand(1_000.0, false), "prior_penalties_2y"),
        ),
        edge(
            "MIN-T2",
            "water.illegal_sand_mining",
            "value_cny",
            (499_999.99, 500_000.0, 500_000.01),
            |value| sand(value, false),
        ),
        edge(
            "SAF-1",
            "safety.major_accident",
            "deaths",
            (0.0, 1.0, 2.0),
            with_fact(accident(0, 0, 0.0), "deaths"),
        ),
        edge(
            "SAF-2",
            "safety.major_accident",
            "serious_injuries",
            (2.0, 3.0, 4.0),
            with_fact(accident(0, 0, 0.0), "serious_injuries"),
        ),
        edge(
            "SAF-3",
            "safety.major_accident",
            "direct_loss_cny",
            (999_999.99, 1_000_000.0, 1_000_000.01),
            with_fact(accident(0, 0, 0.0), "direct_loss_cny"),
        ),
        edge(
            "SAF-3",
            "safety.major_accident",
            "万元 × 10000",
            (
                99.999_999 * 10_000.0,
                100.0 * 10_000.0,
                100.000_001 * 10_000.0,
            ),
            with_fact(accident(0, 0, 0.0), "direct_loss_cny"),
        ),
        edge(
            "SAF-T1",
            "safety.major_accident",
            "deaths",
            (2.0, 3.0, 4.0),
            with_fact(accident(0, 0, 0.0), "deaths"),
        ),
        edge(
            "SAF-T1",
            "safety.major_accident",
            "serious_injuries",
            (9.0, 10.0, 11.0),
            with_fact(accident(0, 0, 0.0), "serious_injuries"),
        ),
        edge(
            "SAF-T1",
            "safety.major_accident",
            "direct_loss_cny",
            (4_999_999.99, 5_000_000.0, 5_000_000.01),
            with_fact(accident(0, 0, 0.0), "direct_loss_cny"),
        ),
    ]
}

/// Whether `rule` (a rule or a tier) is reached in `assessment`.
fn reached(book: &RuleBook, assessment: &Assessment, rule: &str) -> bool {
    match book.tiers.iter().find(|tier| tier.id == rule) {
        Some(tier) => {
            let offence = &book.offences[tier.offence].name;
            tier_of(assessment, offence) == tier.tier.as_deref()
        }
        None => matches(assessment, rule),
    }
}

#[test]
fn every_numeric_edge_is_met_at_and_above_and_not_just_below() {
    let book = default_book();
    let edges = edges();
    for edge in &edges {
        let lead = lead_type(edge.lead_type);
        for (label, value, expected) in [
            ("just below", edge.below, false),
            ("at", edge.at, true),
            ("just above", edge.above, true),
        ] {
            let facts = (edge.facts)(value);
            let context = format!(
                "{} {} ({}) {label}: {value}",
                edge.rule, edge.lead_type, edge.what
            );
            assert_schema_valid(lead, &facts, &context);
            let assessment = book.assess(lead, LeadKind::Clue, &facts);
            assert_eq!(
                reached(&book, &assessment, edge.rule),
                expected,
                "{context}: {assessment:#?}"
            );
        }
    }
    // Every rule and tier with a numeric threshold has an edge here.
    for rule in book.rules.iter().chain(&book.tiers) {
        let mut numeric = false;
        for condition in rule.condition.iter() {
            condition.for_each_comparison(&mut |comparison| {
                numeric |= matches!(comparison.operand, Operand::Number(_));
            });
        }
        if numeric && rule.status == table::Status::Active {
            assert!(
                edges.iter().any(|edge| edge.rule == rule.id),
                "{} has a numeric threshold and no edge test",
                rule.id
            );
        }
    }
}

#[test]
fn land_rules_need_a_changed_use_and_destruction() {
    let book = default_book();
    let lead = lead_type("land.farmland_occupation");
    let mut facts = farmland([6.0, 0.0, 0.0, 0.0, 0.0], 0);
    assert!(matches(
        &book.assess(lead, LeadKind::Clue, &facts),
        "LAND-1"
    ));
    facts["destroyed"] = json!(false);
    assert!(book
        .assess(lead, LeadKind::Clue, &facts)
        .suspected_offences
        .is_empty());
    facts["destroyed"] = json!(true);
    facts["use_changed"] = json!(false);
    assert!(book
        .assess(lead, LeadKind::Clue, &facts)
        .suspected_offences
        .is_empty());
}

#[test]
fn public_welfare_and_commercial_forest_combine_proportionally() {
    let book = default_book();
    let lead = lead_type("land.farmland_occupation");
    // 3 亩 public-welfare (3/5 = 0.6) and 4 亩 commercial (4/10 = 0.4): neither alone, but 1.0.
    let combined = book.assess(
        lead,
        LeadKind::Clue,
        &farmland([0.0, 0.0, 3.0, 4.0, 0.0], 0),
    );
    assert_eq!(rule_ids(&combined), ["LAND-5"]);
    assert!((combined.derived["forest_ratio"] - 1.0).abs() < 1e-12);

    let short = book.assess(
        lead,
        LeadKind::Clue,
        &farmland([0.0, 0.0, 3.0, 3.9, 0.0], 0),
    );
    assert!(short.suspected_offences.is_empty(), "{short:?}");

    // Half the standard after two penalties within two years (art. 1(4)).
    let repeat = book.assess(
        lead,
        LeadKind::Clue,
        &farmland([0.0, 0.0, 1.5, 2.0, 0.0], 2),
    );
    assert_eq!(rule_ids(&repeat), ["LAND-6"]);
    let once = book.assess(
        lead,
        LeadKind::Clue,
        &farmland([0.0, 0.0, 1.5, 2.0, 0.0], 1),
    );
    assert!(once.suspected_offences.is_empty());
}

#[test]
fn land_8_is_listed_only_when_the_grassland_reaches_ten_mu() {
    let book = default_book();
    let lead = lead_type("land.farmland_occupation");
    let none = book.assess(
        lead,
        LeadKind::Clue,
        &farmland([0.0, 0.0, 0.0, 0.0, 0.0], 0),
    );
    assert!(none.manual_checks.is_empty());
    assert_eq!(none.priority, Priority::Low);
    let ten = book.assess(
        lead,
        LeadKind::Clue,
        &farmland([0.0, 0.0, 0.0, 0.0, 10.0], 0),
    );
    assert!(listed(&ten, "LAND-8"));
    assert_eq!(ten.priority, Priority::Medium);
    assert!(ten.manual_checks[0]
        .reason
        .contains("prior_grassland_penalty_3y"));
    let twenty = book.assess(
        lead,
        LeadKind::Clue,
        &farmland([0.0, 0.0, 0.0, 0.0, 20.0], 0),
    );
    assert!(matches(&twenty, "LAND-7"));
}

#[test]
fn the_mining_amounts_come_from_the_settings() {
    let lead = lead_type("land.illegal_mining");
    let floor = default_book();
    let ceiling = book_with(&RulesSettings {
        mining_value_threshold_cny: 300_000,
        mining_restricted_threshold_cny: 150_000,
        ..RulesSettings::default()
    });

    let ordinary = mining(200_000.0, false);
    assert!(matches(
        &floor.assess(lead, LeadKind::Clue, &ordinary),
        "MIN-1"
    ));
    assert!(!matches(
        &ceiling.assess(lead, LeadKind::Clue, &ordinary),
        "MIN-1"
    ));
    assert!(matches(
        &ceiling.assess(lead, LeadKind::Clue, &mining(300_000.0, false)),
        "MIN-1"
    ));

    let restricted = mining(60_000.0, true);
    assert_eq!(
        rule_ids(&floor.assess(lead, LeadKind::Clue, &restricted)),
        ["MIN-2"]
    );
    assert!(ceiling
        .assess(lead, LeadKind::Clue, &restricted)
        .suspected_offences
        .is_empty());
    // Outside a restricted zone the lower amount does not count.
    assert!(floor
        .assess(lead, LeadKind::Clue, &mining(60_000.0, false))
        .suspected_offences
        .is_empty());

    let sand_lead = lead_type("water.illegal_sand_mining");
    assert!(matches(
        &floor.assess(sand_lead, LeadKind::Clue, &sand(60_000.0, true)),
        "SAND-1"
    ));
    assert!(!matches(
        &ceiling.assess(sand_lead, LeadKind::Clue, &sand(60_000.0, true)),
        "SAND-1"
    ));
}

#[test]
fn sand_mining_with_a_permit_or_outside_the_river_area_is_not_sand_1() {
    let book = default_book();
    let lead = lead_type("water.illegal_sand_mining");
    let mut facts = sand(500_000.0, false);
    assert_eq!(
        rule_ids(&book.assess(lead, LeadKind::Clue, &facts)),
        ["SAND-1"]
    );
    facts["has_permit"] = json!(true);
    assert!(book
        .assess(lead, LeadKind::Clue, &facts)
        .suspected_offences
        .is_empty());
    facts["has_permit"] = json!(false);
    facts["in_river_management_area"] = json!(false);
    assert!(book
        .assess(lead, LeadKind::Clue, &facts)
        .suspected_offences
        .is_empty());

    let mut report = sand(1_000.0, false);
    report["flood_safety_harm_report"] = json!(true);
    assert_eq!(
        rule_ids(&book.assess(lead, LeadKind::Clue, &report)),
        ["SAND-2"]
    );
}

#[test]
fn monitoring_tampering_needs_a_key_unit_and_a_listed_pollutant() {
    let book = default_book();
    let lead = lead_type("environment.monitoring_tampering");
    let mut facts = json!({
        "unit_type": "key_discharger",
        "station_mn": "370303A00000000000000001",
        "method": "sampling_interfered",
        "pollutant_codes": ["w00000", "w21003"],
    });
    assert_eq!(
        rule_ids(&book.assess(lead, LeadKind::Clue, &facts)),
        ["ENV-7"]
    );
    facts["pollutant_codes"] = json!(["w00000"]);
    assert!(book
        .assess(lead, LeadKind::Clue, &facts)
        .suspected_offences
        .is_empty());
    facts["pollutant_codes"] = json!(["a21002"]);
    facts["unit_type"] = json!("other");
    assert!(book
        .assess(lead, LeadKind::Clue, &facts)
        .suspected_offences
        .is_empty());
}

#[test]
fn a_dangerous_operation_is_flagged_with_a_check_for_real_danger() {
    let book = default_book();
    let assessment = book.assess(
        lead_type("safety.hazardous_operation"),
        LeadKind::Clue,
        &json!({"trigger": "rectification_refused"}),
    );
    assert_eq!(rule_ids(&assessment), ["DANGER-2"]);
    assert_eq!(assessment.suspected_offences[0].offence, "危险作业罪");
    assert_eq!(
        assessment.suspected_offences[0].article,
        "刑法第一百三十四条之一"
    );
    assert!(listed(&assessment, "DANGER-2"));
    assert!(assessment.manual_checks[0].reason.contains("现实危险"));
}

#[test]
fn rules_of_one_offence_are_sorted_naturally_with_their_citations() {
    let book = default_book();
    let assessment = book.assess(
        lead_type("safety.major_accident"),
        LeadKind::Clue,
        &accident(1, 3, 1_000_000.0),
    );
    let offence = &assessment.suspected_offences[0];
    assert_eq!(offence.rules, ["SAF-1", "SAF-2", "SAF-3"]);
    assert_eq!(offence.citations.len(), 3);
    assert_eq!(
        offence.citations[2],
        "法释〔2015〕22号 第六条第一款第（二）项"
    );

    let mut ids = vec!["ENV-10", "ENV-2", "DANGER-1", "ENV-T1"];
    ids.sort_by_key(|id| natural_key(id));
    assert_eq!(ids, ["DANGER-1", "ENV-2", "ENV-10", "ENV-T1"]);
}

// ---------------------------------------------------------------------------------------------
// Tiers and priority
// ---------------------------------------------------------------------------------------------

#[test]
fn a_hundred_tonnes_of_hazardous_waste_is_the_serious_tier() {
    let book = default_book();
    let lead = lead_type("environment.hazardous_waste");
    let facts = |t: f64| json!({"waste_code": "HW08", "quantity_t": t, "disposal": "dump"});
    let hundred = book.assess(lead, LeadKind::Clue, &facts(100.0));
    assert_eq!(tier_of(&hundred, "污染环境罪"), Some("情节严重"));
    assert!(
        !listed(&hundred, "ENV-T2"),
        "a tier already reached needs no check"
    );
    let below = book.assess(lead, LeadKind::Clue, &facts(99.99));
    assert!(matches(&below, "ENV-2"));
    assert_eq!(tier_of(&below, "污染环境罪"), None);
    // The other art. 2 items need inputs no lead carries: a check once the offence is suspected.
    assert!(listed(&below, "ENV-T2"));
    let small = book.assess(lead, LeadKind::Clue, &facts(1.0));
    assert!(!listed(&small, "ENV-T2"));
}

#[test]
fn five_times_the_mining_amount_is_the_especially_serious_tier() {
    let book = default_book();
    let lead = lead_type("land.illegal_mining");
    let at = book.assess(lead, LeadKind::Clue, &mining(500_000.0, false));
    assert_eq!(tier_of(&at, "非法采矿罪"), Some("情节特别严重"));
    assert!(!listed(&at, "MIN-T3"), "the tier is already reached");
    let below = book.assess(lead, LeadKind::Clue, &mining(499_999.0, false));
    assert_eq!(tier_of(&below, "非法采矿罪"), None);
    assert!(
        listed(&below, "MIN-T3"),
        "the ecological-damage route is a manual check"
    );
    let restricted = book.assess(lead, LeadKind::Clue, &mining(250_000.0, true));
    assert_eq!(tier_of(&restricted, "非法采矿罪"), Some("情节特别严重"));

    let ceiling = book_with(&RulesSettings {
        mining_value_threshold_cny: 300_000,
        ..RulesSettings::default()
    });
    assert_eq!(
        tier_of(
            &ceiling.assess(lead, LeadKind::Clue, &mining(500_000.0, false)),
            "非法采矿罪"
        ),
        None
    );
    assert_eq!(
        tier_of(
            &ceiling.assess(lead, LeadKind::Clue, &mining(1_500_000.0, false)),
            "非法采矿罪"
        ),
        Some("情节特别严重")
    );

    let sand_tier = book.assess(
        lead_type("water.illegal_sand_mining"),
        LeadKind::Clue,
        &sand(250_000.0, true),
    );
    assert_eq!(tier_of(&sand_tier, "非法采矿罪"), Some("情节特别严重"));
}

#[test]
fn the_aggravated_accident_tier_asks_who_bears_main_responsibility() {
    let book = default_book();
    let lead = lead_type("safety.major_accident");
    for facts in [
        accident(3, 0, 0.0),
        accident(0, 10, 0.0),
        accident(0, 0, 5_000_000.0),
    ] {
        let assessment = book.assess(lead, LeadKind::Clue, &facts);
        assert_eq!(
            tier_of(&assessment, "重大责任事故罪"),
            Some("情节特别恶劣"),
            "{facts}"
        );
        let check = assessment
            .manual_checks
            .iter()
            .find(|check| check.rule == "SAF-T1");
        assert!(check.is_some_and(|check| check.reason.contains("主要责任")));
    }
    let below = book.assess(lead, LeadKind::Clue, &accident(2, 9, 4_999_999.0));
    assert_eq!(rule_ids(&below), ["SAF-1", "SAF-2", "SAF-3"]);
    assert_eq!(tier_of(&below, "重大责任事故罪"), None);
    // Only the catch-all item (三), which is always a human's to judge.
    let checks: Vec<&str> = below
        .manual_checks
        .iter()
        .map(|c| c.rule.as_str())
        .collect();
    assert_eq!(checks, ["SAF-4"]);
}

#[test]
fn priority_is_high_for_a_match_medium_for_checks_or_a_transfer_and_low_otherwise() {
    let book = default_book();
    let accident_lead = lead_type("safety.major_accident");

    let matched = book.assess(accident_lead, LeadKind::Penalty, &accident(1, 0, 0.0));
    assert_eq!(matched.priority, Priority::High);

    // SAF-4 (其他造成严重后果) is a manual check for every accident below the thresholds.
    let below_thresholds = book.assess(accident_lead, LeadKind::Clue, &accident(0, 2, 999_999.0));
    assert_eq!(below_thresholds.priority, Priority::Medium);
    assert!(below_thresholds.suspected_offences.is_empty());
    assert!(listed(&below_thresholds, "SAF-4"));

    let land = lead_type("land.farmland_occupation");
    let small = farmland([1.0, 1.0, 1.0, 1.0, 1.0], 0);
    let nothing = book.assess(land, LeadKind::Clue, &small);
    assert_eq!(nothing.priority, Priority::Low);
    assert!(nothing.suspected_offences.is_empty() && nothing.manual_checks.is_empty());
    let transfer = book.assess(land, LeadKind::Transfer, &small);
    assert_eq!(transfer.priority, Priority::Medium);

    // ENV-11 (the catch-all) and the needs-input rules apply to every discharge lead.
    let below = book.assess(
        lead_type("environment.discharge_exceedance"),
        LeadKind::Clue,
        &discharge(&[("w20120", 1.2, 1.0)]),
    );
    assert_eq!(below.priority, Priority::Medium);
    let checks: Vec<&str> = below
        .manual_checks
        .iter()
        .map(|check| check.rule.as_str())
        .collect();
    assert_eq!(
        checks,
        ["ENV-1", "ENV-6", "ENV-8", "ENV-9", "ENV-10", "ENV-11"]
    );

    // Damage to a water facility is always an investigator's call (WATER-1).
    let damage = book.assess(
        lead_type("water.facility_damage"),
        LeadKind::Clue,
        &json!({"facility": "堤防", "direct_loss_cny": 62000}),
    );
    assert_eq!(damage.priority, Priority::Medium);
    assert!(damage.suspected_offences.is_empty());
    assert_eq!(damage.manual_checks.len(), 1);
    assert_eq!(damage.manual_checks[0].rule, "WATER-1");
    assert!(damage.manual_checks[0].reason.contains("决水罪"));
    assert!(Priority::High > Priority::Medium && Priority::Medium > Priority::Low);
}

#[test]
fn an_assessment_serialises_in_the_contract_shape_and_back() {
    let book = default_book();
    let assessment = book.assess(
        lead_type("environment.discharge_exceedance"),
        LeadKind::Transfer,
        &discharge(&[("w20120", 3.2, 1.0)]),
    );
    let value = serde_json::to_value(&assessment).unwrap();
    assert_eq!(value["priority"], "high");
    assert_eq!(value["rulebook_version"], "1.2.0");
    assert_eq!(
        value["suspected_offences"][0],
        json!({
            "offence": "污染环境罪",
            "article": "刑法第三百三十八条",
            "rules": ["ENV-3"],
            "citations": ["法释〔2023〕7号 第一条第（三）项"],
        })
    );
    assert_eq!(value["derived"]["max_exceed_multiple_env3"], 3.2);
    assert_eq!(value["settings"]["exceed_multiple"], "ratio");
    assert_eq!(value["settings"]["mining_value_threshold_cny"], 100_000);
    assert_eq!(value["settings"]["mining_restricted_threshold_cny"], 50_000);
    assert_eq!(value["settings"]["env3_pollutant_codes"][0], "w20120");
    let back: Assessment = serde_json::from_value(value).unwrap();
    assert_eq!(back, assessment);
}

#[test]
fn an_assessment_records_the_settings_it_was_made_with() {
    let settings = RulesSettings {
        exceed_multiple: ExceedMultipleFormula::Excess,
        mining_value_threshold_cny: 300_000,
        mining_restricted_threshold_cny: 120_000,
        env7_pollutant_codes: vec!["w01018".into()],
        ..RulesSettings::default()
    };
    let assessment = book_with(&settings).assess(
        lead_type("land.illegal_mining"),
        LeadKind::Clue,
        &mining(200_000.0, false),
    );
    assert_eq!(
        assessment.settings,
        AssessedWith {
            exceed_multiple: ExceedMultipleFormula::Excess,
            mining_value_threshold_cny: 300_000,
            mining_restricted_threshold_cny: 120_000,
            env3_pollutant_codes: settings.env3_pollutant_codes.clone(),
            env4_pollutant_codes: settings.env4_pollutant_codes.clone(),
            env7_pollutant_codes: vec!["w01018".into()],
        }
    );
    assert_eq!(assessment.rulebook_version, "1.2.0");
    assert!(
        assessment.suspected_offences.is_empty(),
        "200000 < X = 300000"
    );
}

// ---------------------------------------------------------------------------------------------
// Robustness: fixtures, odd JSON, the fact catalog
// ---------------------------------------------------------------------------------------------

#[test]
fn every_valid_fixture_lead_assesses() {
    let book = default_book();
    let expected: BTreeMap<&str, (&[&str], Priority)> = BTreeMap::from([
        (
            "environment.covert_discharge.penalty.json",
            (&[][..], Priority::Medium),
        ),
        (
            "environment.discharge_exceedance.clue-minimal.json",
            (&[][..], Priority::Medium),
        ),
        (
            "environment.discharge_exceedance.transfer.json",
            (&["ENV-3"][..], Priority::High),
        ),
        (
            "environment.hazardous_waste.transfer.json",
            (&["ENV-2"][..], Priority::High),
        ),
        (
            "environment.monitoring_tampering.clue.json",
            (&["ENV-7"][..], Priority::High),
        ),
        (
            "land.farmland_occupation.clue-forest-only.json",
            (&[][..], Priority::Low),
        ),
        (
            "land.farmland_occupation.transfer.json",
            (&["LAND-1"][..], Priority::High),
        ),
        (
            "land.illegal_mining.penalty.json",
            (&[][..], Priority::Medium),
        ),
        (
            "safety.hazardous_operation.clue.json",
            (&["DANGER-1"][..], Priority::High),
        ),
        (
            "safety.major_accident.penalty.json",
            (&[][..], Priority::Medium),
        ),
        (
            "safety.major_accident.transfer.json",
            (&["SAF-1", "SAF-3"][..], Priority::High),
        ),
        (
            "water.facility_damage.clue.json",
            (&[][..], Priority::Medium),
        ),
        (
            "water.illegal_sand_mining.transfer.json",
            (&["SAND-1"][..], Priority::High),
        ),
    ]);
    let dir = repo_path("schemas/fixtures/valid");
    let mut seen = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("the valid fixtures")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap();
        let fixture: Value = serde_json::from_str(&text).unwrap();
        let lead = &fixture["lead"];
        let lead_type: LeadType = lead["lead_type"].as_str().unwrap().parse().unwrap();
        let kind: LeadKind = lead["kind"].as_str().unwrap().parse().unwrap();
        let assessment = book.assess(lead_type, kind, &lead["facts"]);
        assert!(serde_json::to_string(&assessment).is_ok());
        let name = path.file_name().unwrap().to_str().unwrap();
        if let Some((rules, priority)) = expected.get(name) {
            assert_eq!(rule_ids(&assessment), *rules, "{name}");
            assert_eq!(assessment.priority, *priority, "{name}");
        }
        seen += 1;
    }
    assert!(
        seen >= expected.len(),
        "only {seen} fixtures found in {dir:?}"
    );
}

/// A small deterministic generator, so the odd-JSON test needs no extra crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn value(&mut self, depth: u32) -> Value {
        match self.below(if depth == 0 { 6 } else { 8 }) {
            0 => Value::Null,
            1 => json!(self.below(2) == 0),
            2 => json!([0.0, -1.0, 3.0, 1e308, -1e308, 5e-324, 2.5, 1e15][self.below(8) as usize]),
            3 => json!(self.next() as i64 - (1 << 30)),
            4 => json!(
                [
                    "",
                    "w20120",
                    "other",
                    "dump",
                    "key_discharger",
                    "monitoring_disabled"
                ][self.below(6) as usize]
            ),
            5 => json!(u64::MAX - self.below(3)),
            6 => Value::Array((0..self.below(4)).map(|_| self.value(depth - 1)).collect()),
            _ => {
                let keys = [
                    "pollutant_code",
                    "value",
                    "limit",
                    "measurements",
                    "quantity_t",
                    "x",
                ];
                Value::Object(
                    (0..self.below(4))
                        .map(|_| {
                            (
                                keys[self.below(6) as usize].to_owned(),
                                self.value(depth - 1),
                            )
                        })
                        .collect(),
                )
            }
        }
    }
}

#[test]
fn odd_facts_never_panic_and_match_nothing_they_should_not() {
    let books = [
        default_book(),
        book_with(&RulesSettings {
            exceed_multiple: ExceedMultipleFormula::Excess,
            ..RulesSettings::default()
        }),
    ];
    let mut random = Lcg(7);
    let kinds = [LeadKind::Clue, LeadKind::Transfer, LeadKind::Penalty];
    for book in &books {
        for lead_type in LeadType::ALL {
            let names: Vec<&str> = contract_facts(lead_type)
                .iter()
                .map(|spec| spec.name)
                .chain(derived_facts(lead_type).iter().copied())
                .collect();
            for round in 0..300 {
                let facts = if round % 10 == 0 {
                    random.value(3)
                } else {
                    let mut object = Map::new();
                    for name in &names {
                        if random.below(4) != 0 {
                            let value = if *name == "measurements" && random.below(2) == 0 {
                                Value::Array(
                                    (0..random.below(4))
                                        .map(|_| {
                                            json!({
                                                "pollutant_code": random.value(0),
                                                "value": random.value(0),
                                                "limit": random.value(0),
                                            })
                                        })
                                        .collect(),
                                )
                            } else {
                                random.value(2)
                            };
                            object.insert((*name).to_owned(), value);
                        }
                    }
                    Value::Object(object)
                };
                let kind = kinds[random.below(3) as usize];
                let assessment = book.assess(lead_type, kind, &facts);
                let text = serde_json::to_string(&assessment).expect("an assessment serialises");
                let back: Assessment = serde_json::from_str(&text).expect("and reads back");
                assert_eq!(back, assessment);
                assert!(assessment.derived.values().all(|value| value.is_finite()));
            }
        }
    }
}

#[test]
fn missing_facts_are_not_met_even_under_not() {
    let rules = json!([accident_rule(
        "T-1",
        json!({"not": {"fact": "deaths", "op": ">=", "value": 1}})
    )]);
    let (_dir, settings) = with_rule_file(&small_rule_file(rules));
    let book = RuleBook::load(&settings).unwrap();
    let lead = lead_type("safety.major_accident");
    assert!(matches(
        &book.assess(lead, LeadKind::Clue, &accident(0, 0, 0.0)),
        "T-1"
    ));
    assert!(!matches(
        &book.assess(lead, LeadKind::Clue, &accident(1, 0, 0.0)),
        "T-1"
    ));
    for odd in [
        json!({}),
        json!({"deaths": "many"}),
        json!(null),
        json!([1, 2]),
    ] {
        let assessment = book.assess(lead, LeadKind::Clue, &odd);
        assert!(assessment.suspected_offences.is_empty(), "{odd}");
    }
}

#[test]
fn a_derived_fact_is_never_read_from_the_lead() {
    let book = default_book();
    let facts = json!({
        "unit_type": "key_discharger",
        "measurements": [],
        "max_exceed_multiple_env3": 50,
    });
    let assessment = book.assess(
        lead_type("environment.discharge_exceedance"),
        LeadKind::Clue,
        &facts,
    );
    assert!(assessment.suspected_offences.is_empty());
    assert!(assessment.derived.is_empty());
}

#[test]
fn the_fact_catalog_agrees_with_the_facts_schemas() {
    for lead_type in LeadType::ALL {
        let schema = facts_schema(lead_type);
        let properties = schema["properties"].as_object().expect("properties");
        let catalog = contract_facts(lead_type);
        let mut names: Vec<&str> = catalog.iter().map(|spec| spec.name).collect();
        let mut schema_names: Vec<&str> = properties.keys().map(String::as_str).collect();
        names.sort_unstable();
        schema_names.sort_unstable();
        assert_eq!(names, schema_names, "{lead_type}");
        for spec in catalog {
            let property = &properties[spec.name];
            let type_name = property["type"].as_str().unwrap_or_default();
            match spec.kind {
                FactKind::Integer => assert_eq!(type_name, "integer", "{lead_type}.{}", spec.name),
                FactKind::Number => assert_eq!(type_name, "number", "{lead_type}.{}", spec.name),
                FactKind::Bool => assert_eq!(type_name, "boolean", "{lead_type}.{}", spec.name),
                FactKind::Text => assert_eq!(type_name, "string", "{lead_type}.{}", spec.name),
                FactKind::Enum(values) => {
                    let listed: Vec<&str> = property["enum"]
                        .as_array()
                        .unwrap_or_else(|| panic!("{lead_type}.{} has no enum", spec.name))
                        .iter()
                        .map(|value| value.as_str().unwrap())
                        .collect();
                    assert_eq!(listed, values, "{lead_type}.{}", spec.name);
                }
                FactKind::CodeList | FactKind::Measurements => {
                    assert_eq!(type_name, "array", "{lead_type}.{}", spec.name)
                }
                FactKind::Derived => panic!("{lead_type}.{} is derived", spec.name),
            }
        }
        for derived in derived_facts(lead_type) {
            for other in LeadType::ALL {
                assert!(
                    contract_facts(other)
                        .iter()
                        .all(|spec| spec.name != *derived),
                    "the derived fact {derived} shadows a fact of {other}"
                );
            }
        }
    }
}

#[test]
fn every_rule_lists_a_lead_type_whose_facts_it_names() {
    let book = default_book();
    for rule in book.rules.iter().chain(&book.tiers) {
        for condition in rule.condition.iter().chain(&rule.applies_when) {
            condition.for_each_comparison(&mut |comparison| {
                if comparison.fact == PRIOR_PENALTIES {
                    assert!(rule.prior_penalties.is_some(), "{}", rule.id);
                    return;
                }
                for lead_type in &rule.lead_types {
                    assert!(
                        fact_kind(*lead_type, &comparison.fact).is_some(),
                        "{}",
                        rule.id
                    );
                }
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading and its errors
// ---------------------------------------------------------------------------------------------

#[test]
fn an_operator_rule_file_replaces_the_built_in_one() {
    let text = std::fs::read_to_string(repo_path(BUILT_IN_RULES_FILE)).unwrap();
    let text = text.replace("\"version\": \"1.2.0\"", "\"version\": \"zibo-2027.1\"");
    let (dir, settings) = with_rule_file(&text);
    let book = RuleBook::load(&settings).unwrap();
    assert_eq!(book.version(), "zibo-2027.1");
    assert_eq!(
        book.source(),
        dir.path().join("rules.json").display().to_string()
    );
    let assessment = book.assess(
        lead_type("safety.major_accident"),
        LeadKind::Clue,
        &accident(1, 0, 0.0),
    );
    assert_eq!(assessment.rulebook_version, "zibo-2027.1");
}

#[test]
fn a_missing_rule_file_is_an_error_naming_it() {
    let settings = RulesSettings {
        rules_file: Some(PathBuf::from("/nonexistent/leadbridge/rules.json")),
        ..RulesSettings::default()
    };
    let error = RuleBook::load(&settings).unwrap_err();
    assert!(matches!(error, RulesError::Read { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("/nonexistent/leadbridge/rules.json"),
        "{error}"
    );
    assert!(!error.is_retryable());
}

#[test]
fn a_malformed_rule_file_is_an_error_naming_it_and_the_position() {
    let (dir, settings) = with_rule_file("{\"format\": 1, \"version\": ");
    let error = RuleBook::load(&settings).unwrap_err();
    assert!(matches!(error, RulesError::Malformed { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&dir.path().join("rules.json").display().to_string()),
        "{message}"
    );
    assert!(message.contains("line 1"), "{message}");

    let misspelt = small_rule_file(json!([{
        "id": "T-1", "offence": "重大责任事故罪", "lead_types": ["safety.major_accident"],
        "status": "active", "summary": "s", "conditon": {}, "citation": "c"
    }]));
    let error = load_error(&misspelt);
    assert!(matches!(error, RulesError::Malformed { .. }), "{error:?}");
    assert!(error.to_string().contains("conditon"), "{error}");
}

#[test]
fn an_unknown_fact_is_an_error_naming_the_rule_the_fact_and_the_lead_type() {
    let rules = json!([accident_rule(
        "T-1",
        json!({"fact": "death_count", "op": ">=", "value": 1})
    )]);
    let error = load_error(&small_rule_file(rules));
    assert!(matches!(error, RulesError::UnknownFact { .. }), "{error:?}");
    let message = error.to_string();
    for part in ["T-1", "death_count", "safety.major_accident", "rules.json"] {
        assert!(message.contains(part), "{message}");
    }
}

#[test]
fn an_unknown_configuration_name_is_an_error() {
    let rules = json!([accident_rule(
        "T-1",
        json!({"fact": "direct_loss_cny", "op": ">=", "value": {"config": "accident_loss_cny"}})
    )]);
    let error = load_error(&small_rule_file(rules));
    assert!(
        matches!(error, RulesError::UnknownConfig { ref name, .. } if name == "accident_loss_cny"),
        "{error:?}"
    );
}

#[test]
fn an_unknown_lead_type_is_an_error() {
    let mut rule = accident_rule("T-1", json!({"fact": "deaths", "op": ">=", "value": 1}));
    rule["lead_types"] = json!(["safety.major_acident"]);
    let error = load_error(&small_rule_file(json!([rule])));
    assert!(
        matches!(error, RulesError::UnknownLeadType { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("safety.major_acident"));
}

#[test]
fn a_duplicate_rule_id_is_an_error() {
    let rule = accident_rule("T-1", json!({"fact": "deaths", "op": ">=", "value": 1}));
    let error = load_error(&small_rule_file(json!([rule.clone(), rule])));
    assert!(
        matches!(error, RulesError::DuplicateRule { ref rule, .. } if rule == "T-1"),
        "{error:?}"
    );
}

#[test]
fn ill_typed_or_incomplete_rules_are_errors() {
    let cases = [
        // A value outside the fact's enumeration.
        (
            accident_rule(
                "T-1",
                json!({"fact": "deaths", "op": "in", "value": ["one"]}),
            ),
            "cannot use op",
        ),
        (
            json!({
                "id": "T-1", "offence": "污染环境罪", "lead_types": ["environment.hazardous_waste"],
                "status": "active", "summary": "s", "citation": "c",
                "condition": {"fact": "disposal", "op": "in", "value": ["dumped"]}
            }),
            "\"dumped\"",
        ),
        (
            accident_rule("T-1", json!({"fact": "deaths", "op": "=>", "value": 1})),
            "unknown \"op\"",
        ),
        (accident_rule("T-1", json!({"all": []})), "non-empty array"),
        (
            accident_rule(
                "T-1",
                json!({"fact": "deaths", "op": ">=", "value": {"config": "env7_pollutant_codes"}}),
            ),
            "cannot use op",
        ),
        (
            json!({
                "id": "T-1", "offence": "重大责任事故罪", "lead_types": ["safety.major_accident"],
                "status": "needs_input", "summary": "s", "citation": "c", "note": "n",
                "missing_input": ["deaths"]
            }),
            "carries it",
        ),
        (
            json!({
                "id": "T-1", "offence": "重大责任事故罪", "lead_types": ["safety.major_accident"],
                "status": "active", "summary": "s", "citation": "c"
            }),
            "no condition",
        ),
        (
            json!({
                "id": "T-1", "offence": "重大责任事故罪", "lead_types": ["safety.major_accident"],
                "status": "manual", "summary": "s", "citation": "c"
            }),
            "needs a note",
        ),
        (
            json!({
                "id": "T-1", "offence": "危险作业罪", "lead_types": ["safety.major_accident"],
                "status": "manual", "summary": "s", "citation": "c", "note": "n"
            }),
            "offence table",
        ),
    ];
    for (rule, expected) in cases {
        let error = load_error(&small_rule_file(json!([rule])));
        assert!(
            error.to_string().contains(expected),
            "{expected:?} not in {error}"
        );
    }
    let error =
        load_error(&json!({"format": 2, "version": "x", "offences": [], "rules": []}).to_string());
    assert!(error.to_string().contains("format"), "{error}");
}

#[test]
fn out_of_range_settings_are_errors_naming_the_setting() {
    let cases = [
        (
            RulesSettings {
                mining_value_threshold_cny: 99_999,
                ..RulesSettings::default()
            },
            "mining_value_threshold_cny",
        ),
        (
            RulesSettings {
                mining_value_threshold_cny: 300_001,
                ..RulesSettings::default()
            },
            "mining_value_threshold_cny",
        ),
        (
            RulesSettings {
                mining_restricted_threshold_cny: 150_001,
                ..RulesSettings::default()
            },
            "mining_restricted_threshold_cny",
        ),
        (
            RulesSettings {
                env3_pollutant_codes: vec!["Pb".into()],
                ..RulesSettings::default()
            },
            "env3_pollutant_codes",
        ),
        (
            RulesSettings {
                env4_pollutant_codes: vec!["w20120".into()],
                ..RulesSettings::default()
            },
            "env4_pollutant_codes",
        ),
        (
            RulesSettings {
                env7_pollutant_codes: vec![],
                ..RulesSettings::default()
            },
            "env7_pollutant_codes",
        ),
    ];
    for (settings, setting) in cases {
        let error = RuleBook::load(&settings).unwrap_err();
        assert!(matches!(error, RulesError::Setting { .. }), "{error:?}");
        assert!(error.to_string().contains(setting), "{error}");
    }
    for (x, y) in [(100_000, 50_000), (300_000, 150_000)] {
        let settings = RulesSettings {
            mining_value_threshold_cny: x,
            mining_restricted_threshold_cny: y,
            ..RulesSettings::default()
        };
        assert!(
            RuleBook::load(&settings).is_ok(),
            "{x}/{y} are inside the ranges"
        );
    }
}

#[test]
fn settings_deserialise_with_defaults_and_reject_unknown_keys() {
    let settings: RulesSettings = serde_json::from_value(
        json!({"exceed_multiple": "excess", "mining_value_threshold_cny": 200000}),
    )
    .unwrap();
    assert_eq!(settings.exceed_multiple, ExceedMultipleFormula::Excess);
    assert_eq!(settings.mining_value_threshold_cny, 200_000);
    assert_eq!(settings.mining_restricted_threshold_cny, 50_000);
    assert_eq!(
        settings.env7_pollutant_codes,
        ["w01018", "w21003", "a21026", "a21002"]
    );
    assert!(serde_json::from_value::<RulesSettings>(json!({"mining_threshold": 1})).is_err());
    assert!(
        serde_json::from_value::<RulesSettings>(json!({"exceed_multiple": "difference"})).is_err()
    );
}

// ---------------------------------------------------------------------------------------------
// Earlier penalties from the hub's own records
// ---------------------------------------------------------------------------------------------

fn penalty(lead_type_name: &str, case: &str, decided_at: &str, facts: Value) -> PenaltyRecord {
    PenaltyRecord {
        lead_id: LeadId::generate(),
        revision: 1,
        agency: lead_type_name.split('.').next().unwrap().to_owned(),
        case_id: case.to_owned(),
        lead_type: lead_type(lead_type_name),
        decision_no: format!("罚字〔{case}〕"),
        decided_at: chrono::DateTime::parse_from_rfc3339(decided_at).unwrap(),
        facts,
    }
}

fn on(date: &str) -> chrono::NaiveDate {
    date.parse().unwrap()
}

fn count_of<'a>(assessment: &'a Assessment, rule: &str) -> &'a PriorPenaltyCount {
    assessment
        .prior_penalties
        .iter()
        .find(|count| count.rule == rule)
        .unwrap_or_else(|| panic!("no count for {rule}: {:?}", assessment.prior_penalties))
}

fn with_declared(mut facts: Value, count: u64) -> Value {
    facts["prior_penalties_2y"] = json!(count);
    facts
}

#[test]
fn the_larger_of_the_declared_and_the_recorded_count_decides_and_says_which() {
    let book = default_book();
    let mining_lead = lead_type("land.illegal_mining");
    let records = [
        penalty(
            "land.illegal_mining",
            "A-1",
            "2025-05-01T10:00:00+08:00",
            json!({}),
        ),
        penalty(
            "land.illegal_mining",
            "A-2",
            "2026-01-10T10:00:00+08:00",
            json!({}),
        ),
    ];
    let history = PenaltyHistory {
        act_on: on("2026-11-18"),
        records: &records,
    };
    // The agency declares one; the hub holds two: MIN-3 is met from the records, and says so.
    let facts = with_declared(mining(1_000.0, false), 1);
    let assessed =
        book.assess_with_records(mining_lead, LeadKind::Transfer, &facts, Some(&history));
    assert!(matches(&assessed, "MIN-3"), "{assessed:?}");
    let count = count_of(&assessed, "MIN-3");
    assert_eq!(
        (count.declared, count.on_record, count.compared, count.used),
        (Some(1), Some(2), Some(2), Some(CountSource::OnRecord))
    );
    assert_eq!(
        (count.since.as_deref(), count.until.as_deref()),
        (Some("2024-11-18"), Some("2026-11-18"))
    );
    let numbers: Vec<&str> = count
        .records
        .iter()
        .map(|r| r.decision_no.as_str())
        .collect();
    assert_eq!(numbers, ["罚字〔A-1〕", "罚字〔A-2〕"]);
    let confirm = assessed
        .manual_checks
        .iter()
        .find(|check| check.rule == "MIN-3")
        .expect("a match from the records asks for them to be checked");
    assert!(confirm.reason.contains("罚字〔A-2〕"), "{}", confirm.reason);

    // Without the records, the same lead is not MIN-3: the count came from them.
    let alone = book.assess(mining_lead, LeadKind::Transfer, &facts);
    assert!(!matches(&alone, "MIN-3"));
    assert_eq!(count_of(&alone, "MIN-3").on_record, None);

    // A declared count written 2.0 (JSON Schema's integer admits it) is the count 2.
    let whole = json!({"mineral": "石料", "value_cny": 1000.0, "in_restricted_zone": false, "prior_penalties_2y": 2.0});
    let assessed = book.assess(mining_lead, LeadKind::Clue, &whole);
    assert!(matches(&assessed, "MIN-3"), "{assessed:?}");
    assert_eq!(count_of(&assessed, "MIN-3").declared, Some(2));

    // A declared count above the records' is never lowered by them.
    let declared = with_declared(mining(1_000.0, false), 3);
    let none = PenaltyHistory {
        act_on: on("2026-11-18"),
        records: &[],
    };
    let assessed =
        book.assess_with_records(mining_lead, LeadKind::Transfer, &declared, Some(&none));
    assert!(matches(&assessed, "MIN-3"));
    let count = count_of(&assessed, "MIN-3");
    assert_eq!(
        (count.compared, count.used, count.on_record),
        (Some(3), Some(CountSource::Declared), Some(0))
    );
    assert!(!assessed
        .manual_checks
        .iter()
        .any(|check| check.rule == "MIN-3"));
}

#[test]
fn a_penalty_counts_from_the_same_day_years_before_the_act_to_the_act_in_shanghai_time() {
    let book = default_book();
    let mining_lead = lead_type("land.illegal_mining");
    let assess = |act_on: &str, decided: &[&str]| {
        let records: Vec<PenaltyRecord> = decided
            .iter()
            .enumerate()
            .map(|(n, at)| penalty("land.illegal_mining", &format!("W-{n}"), at, json!({})))
            .collect();
        let history = PenaltyHistory {
            act_on: on(act_on),
            records: &records,
        };
        let facts = with_declared(mining(1_000.0, false), 0);
        let assessed =
            book.assess_with_records(mining_lead, LeadKind::Clue, &facts, Some(&history));
        (
            count_of(&assessed, "MIN-3").on_record,
            matches(&assessed, "MIN-3"),
        )
    };
    let inside = "2025-06-01T09:00:00+08:00";
    // 2024-11-18 00:00 local is the first instant of the window; 23:59 the day before is out.
    assert_eq!(
        assess("2026-11-18", &[inside, "2024-11-18T00:00:00+08:00"]),
        (Some(2), true)
    );
    assert_eq!(
        assess("2026-11-18", &[inside, "2024-11-17T23:59:00+08:00"]),
        (Some(1), false)
    );
    // 16:30 UTC on the 17th is 00:30 on the 18th in Shanghai: inside.
    assert_eq!(
        assess("2026-11-18", &[inside, "2024-11-17T16:30:00Z"]),
        (Some(2), true)
    );
    // A penalty decided after the act is not an earlier one; one on the act's day is.
    assert_eq!(
        assess("2026-11-18", &[inside, "2026-11-19T08:00:00+08:00"]),
        (Some(1), false)
    );
    assert_eq!(
        assess("2026-11-18", &[inside, "2026-11-18T08:00:00+08:00"]),
        (Some(2), true)
    );
    // Two years before 29 February is 28 February.
    let inside = "2027-06-01T09:00:00+08:00";
    assert_eq!(
        assess("2028-02-29", &[inside, "2026-02-28T00:00:00+08:00"]),
        (Some(2), true)
    );
    assert_eq!(
        assess("2028-02-29", &[inside, "2026-02-27T23:59:00+08:00"]),
        (Some(1), false)
    );
}

#[test]
fn only_the_penalties_of_the_kind_a_rule_names_count() {
    let book = default_book();
    let act_on = on("2026-11-18");
    // MIN-3 counts illegal-mining penalties, not sand-mining or farmland ones; SAND-1 counts
    // both kinds of mining.
    let records = [
        penalty(
            "water.illegal_sand_mining",
            "S-1",
            "2026-01-01T10:00:00+08:00",
            json!({}),
        ),
        penalty(
            "land.illegal_mining",
            "M-1",
            "2026-02-01T10:00:00+08:00",
            json!({}),
        ),
        penalty(
            "land.farmland_occupation",
            "F-1",
            "2026-03-01T10:00:00+08:00",
            json!({}),
        ),
    ];
    let history = PenaltyHistory {
        act_on,
        records: &records,
    };
    let mining_assessed = book.assess_with_records(
        lead_type("land.illegal_mining"),
        LeadKind::Clue,
        &mining(1_000.0, false),
        Some(&history),
    );
    assert_eq!(count_of(&mining_assessed, "MIN-3").on_record, Some(1));
    assert!(!matches(&mining_assessed, "MIN-3"));
    let sand_assessed = book.assess_with_records(
        lead_type("water.illegal_sand_mining"),
        LeadKind::Clue,
        &sand(1_000.0, false),
        Some(&history),
    );
    assert_eq!(count_of(&sand_assessed, "SAND-1").on_record, Some(2));
    assert!(matches(&sand_assessed, "SAND-1"), "{sand_assessed:?}");

    // ENV-8 counts hazardous-waste penalties and covert discharges of toxic, radioactive or
    // pathogenic substances, and stays a manual check that names them.
    let records = [
        penalty(
            "environment.covert_discharge",
            "E-1",
            "2026-01-01T10:00:00+08:00",
            json!({"method": "hidden_pipe", "substance_class": "toxic"}),
        ),
        penalty(
            "environment.covert_discharge",
            "E-2",
            "2026-02-01T10:00:00+08:00",
            json!({"method": "hidden_pipe", "substance_class": "other"}),
        ),
        penalty(
            "environment.hazardous_waste",
            "E-3",
            "2026-03-01T10:00:00+08:00",
            json!({"waste_code": "HW08", "quantity_t": 1.0, "disposal": "dump"}),
        ),
    ];
    let history = PenaltyHistory {
        act_on,
        records: &records,
    };
    let assessed = book.assess_with_records(
        lead_type("environment.covert_discharge"),
        LeadKind::Clue,
        &json!({"method": "hidden_pipe", "substance_class": "toxic"}),
        Some(&history),
    );
    let count = count_of(&assessed, "ENV-8");
    let cases: Vec<&str> = count.records.iter().map(|r| r.case_id.as_str()).collect();
    assert_eq!(cases, ["E-1", "E-3"]);
    let check = assessed
        .manual_checks
        .iter()
        .find(|check| check.rule == "ENV-8")
        .expect("ENV-8 stays a manual check");
    assert!(
        check.reason.contains("罚字〔E-1〕") && check.reason.contains("罚字〔E-3〕"),
        "{}",
        check.reason
    );
    assert!(!check.reason.contains("罚字〔E-2〕"), "{}", check.reason);
}

#[test]
fn an_earlier_grassland_penalty_on_record_meets_land_8_and_none_leaves_it_a_manual_check() {
    let book = default_book();
    let farmland_lead = lead_type("land.farmland_occupation");
    let grass = farmland([0.0, 0.0, 0.0, 0.0, 10.0], 0);
    let assess = |records: &[PenaltyRecord]| {
        let history = PenaltyHistory {
            act_on: on("2026-11-18"),
            records,
        };
        book.assess_with_records(farmland_lead, LeadKind::Clue, &grass, Some(&history))
    };
    let grassland = farmland([0.0, 0.0, 0.0, 0.0, 0.5], 0);
    let cultivated = farmland([0.0, 1.0, 0.0, 0.0, 0.0], 0);
    // Within three years, not two: LAND-8's own period.
    let met = assess(&[penalty(
        "land.farmland_occupation",
        "G-1",
        "2024-01-05T10:00:00+08:00",
        grassland,
    )]);
    assert!(matches(&met, "LAND-8"), "{met:?}");
    assert_eq!(count_of(&met, "LAND-8").within_years, 3);
    assert_eq!(count_of(&met, "LAND-8").used, Some(CountSource::OnRecord));

    let not_grass = assess(&[penalty(
        "land.farmland_occupation",
        "G-2",
        "2025-01-05T10:00:00+08:00",
        cultivated,
    )]);
    assert!(!matches(&not_grass, "LAND-8"));
    let check = not_grass
        .manual_checks
        .iter()
        .find(|check| check.rule == "LAND-8")
        .expect("without a grassland penalty on record LAND-8 is still checked by hand");
    assert!(
        check.reason.contains("holds no penalty"),
        "{}",
        check.reason
    );

    // Below 10 亩 of grassland the rule does not apply, records or not.
    let small = farmland([0.0, 0.0, 0.0, 0.0, 9.0], 0);
    let grassland = farmland([0.0, 0.0, 0.0, 0.0, 0.5], 0);
    let records = [penalty(
        "land.farmland_occupation",
        "G-3",
        "2025-01-05T10:00:00+08:00",
        grassland,
    )];
    let history = PenaltyHistory {
        act_on: on("2026-11-18"),
        records: &records,
    };
    let assessed = book.assess_with_records(farmland_lead, LeadKind::Clue, &small, Some(&history));
    assert!(!matches(&assessed, "LAND-8") && !listed(&assessed, "LAND-8"));
}

#[test]
fn a_rule_file_that_misuses_prior_penalties_is_rejected_naming_the_rule() {
    let mining_rule = |extra: Value| {
        let mut rule = json!({
            "id": "MIN-X",
            "offence": "非法采矿罪",
            "lead_types": ["land.illegal_mining"],
            "status": "active",
            "summary": "test",
            "condition": {"fact": "prior_penalties", "op": ">=", "value": 2},
            "prior_penalties": {"declared": "prior_penalties_2y", "within_years": 2, "counts": [{"lead_types": ["land.illegal_mining"]}]},
            "citation": "test citation",
        });
        for (key, value) in extra.as_object().unwrap() {
            if value.is_null() {
                rule.as_object_mut().unwrap().remove(key);
            } else {
                rule[key] = value.clone();
            }
        }
        json!({
            "format": 1,
            "version": "test-1",
            "offences": [{"name": "非法采矿罪", "article": "刑法第三百四十三条"}],
            "rules": [rule],
        })
        .to_string()
    };
    let (_dir, settings) = with_rule_file(&mining_rule(json!({})));
    RuleBook::load(&settings).expect("the well-formed rule loads");

    let cases = [
        (
            json!({"prior_penalties": null}),
            "only a rule with a \"prior_penalties\" block",
        ),
        (
            json!({"condition": {"all": [{"fact": "prior_penalties", "op": ">=", "value": 2}, {"fact": "prior_penalties_2y", "op": ">=", "value": 2}]}}),
            "compares prior_penalties_2y itself",
        ),
        (
            json!({"condition": {"fact": "value_cny", "op": ">=", "value": 1}}),
            "never compares prior_penalties",
        ),
        (
            json!({"prior_penalties": {"within_years": 2, "counts": [{"lead_types": ["land.illegal_mining"]}]}}),
            "needs prior_penalties.declared",
        ),
        (
            json!({"prior_penalties": {"declared": "value_cny", "within_years": 2, "counts": [{"lead_types": ["land.illegal_mining"]}]}}),
            "not an integer fact",
        ),
        (
            json!({"prior_penalties": {"declared": "prior_penalties_2y", "within_years": 0, "counts": [{"lead_types": ["land.illegal_mining"]}]}}),
            "1 to 10 years",
        ),
        (
            json!({"prior_penalties": {"declared": "prior_penalties_2y", "within_years": 2, "counts": []}}),
            "must say which penalty leads count",
        ),
        (
            json!({"prior_penalties": {"declared": "prior_penalties_2y", "within_years": 2, "counts": [{"lead_types": ["land.illegal_mining"], "where": {"fact": "grassland_m2", "op": ">", "value": 0}}]}}),
            "grassland_m2",
        ),
        (
            json!({"prior_penalties": {"declared": "prior_penalties_2y", "within_years": 2, "counts": [{"lead_types": ["land.mining"]}]}}),
            "land.mining",
        ),
        (
            json!({"status": "manual", "condition": null, "note": "n"}),
            "a manual rule has no prior_penalties",
        ),
    ];
    for (change, expected) in cases {
        let error = load_error(&mining_rule(change.clone())).to_string();
        assert!(
            error.contains("MIN-X") && error.contains(expected),
            "{change}: {error}"
        );
    }
}
