//! The predicate language of the rule file (described for operators in
//! `schemas/rules/README.md`): parsing with type checks against the fact catalog, and
//! three-valued evaluation.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::facts::{fact_kind, tolerance, FactKind, PRIOR_PENALTIES};
use crate::contract::lead::LeadType;

/// A parsed, type-checked condition. Configuration references are already resolved.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Compare(Comparison),
}

/// `{"fact": …, "op": …, "value": …}`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Comparison {
    pub fact: String,
    /// The fact is computed by code (`facts::derive`), never read from the lead.
    pub derived: bool,
    pub op: Op,
    pub operand: Operand,
    /// How far a numeric fact may miss the threshold and still count as on it, in the fact's
    /// (the law's) unit: `facts::tolerance`. Zero for other comparisons.
    pub tolerance: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Ge,
    Gt,
    Le,
    Lt,
    In,
    Intersects,
}

impl Op {
    const NAMES: [(&'static str, Op); 8] = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        (">=", Op::Ge),
        (">", Op::Gt),
        ("<=", Op::Le),
        ("<", Op::Lt),
        ("in", Op::In),
        ("intersects", Op::Intersects),
    ];

    fn parse(text: &str) -> Option<Op> {
        Op::NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, op)| *op)
    }

    fn is_ordering(self) -> bool {
        matches!(self, Op::Ge | Op::Gt | Op::Le | Op::Lt)
    }
}

/// The right-hand side of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Operand {
    Number(f64),
    Bool(bool),
    Text(String),
    List(Vec<String>),
}

/// A configuration value a rule may refer to by name.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ConfigValue {
    Number(f64),
    List(Vec<String>),
}

/// Why a condition could not be parsed. The caller adds the file and the rule.
#[derive(Debug, PartialEq)]
pub(crate) enum ConditionError {
    UnknownFact { fact: String, lead_type: LeadType },
    UnknownConfig { name: String },
    Invalid(String),
}

/// What parsing checks a condition against.
pub(crate) struct ParseContext<'a> {
    pub lead_types: &'a [LeadType],
    pub config: &'a BTreeMap<&'static str, ConfigValue>,
    /// Whether the rule has a `prior_penalties` block, the only place the fact
    /// `prior_penalties` means something.
    pub prior_penalties: bool,
}

impl Condition {
    /// Parses `value` found at `at` (a path such as `condition.all[1]`, for messages).
    pub(crate) fn parse(
        value: &Value,
        at: &str,
        cx: &ParseContext<'_>,
    ) -> Result<Condition, ConditionError> {
        let Some(object) = value.as_object() else {
            return Err(invalid(at, "is not an object"));
        };
        if let Some((key, inner)) = single_entry(object) {
            match key {
                "all" | "any" => {
                    let Some(items) = inner.as_array().filter(|items| !items.is_empty()) else {
                        return Err(invalid(at, &format!("\"{key}\" needs a non-empty array")));
                    };
                    let parsed = items
                        .iter()
                        .enumerate()
                        .map(|(index, item)| {
                            Condition::parse(item, &format!("{at}.{key}[{index}]"), cx)
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    return Ok(if key == "all" {
                        Condition::All(parsed)
                    } else {
                        Condition::Any(parsed)
                    });
                }
                "not" => {
                    let inner = Condition::parse(inner, &format!("{at}.not"), cx)?;
                    return Ok(Condition::Not(Box::new(inner)));
                }
                _ => {}
            }
        }
        Comparison::parse(object, at, cx).map(Condition::Compare)
    }

    /// Three-valued evaluation: `Some(true)` met, `Some(false)` not met, `None` undecidable
    /// because a fact is missing or of the wrong type. `all` is false as soon as one part is
    /// false, `any` true as soon as one part is true, `not` keeps `None`.
    pub(crate) fn eval(&self, facts: &Value, derived: &BTreeMap<String, f64>) -> Option<bool> {
        match self {
            Condition::All(parts) => {
                let mut result = Some(true);
                for part in parts {
                    match part.eval(facts, derived) {
                        Some(false) => return Some(false),
                        None => result = None,
                        Some(true) => {}
                    }
                }
                result
            }
            Condition::Any(parts) => {
                let mut result = Some(false);
                for part in parts {
                    match part.eval(facts, derived) {
                        Some(true) => return Some(true),
                        None => result = None,
                        Some(false) => {}
                    }
                }
                result
            }
            Condition::Not(inner) => inner.eval(facts, derived).map(|met| !met),
            Condition::Compare(comparison) => comparison.eval(facts, derived),
        }
    }

    /// Calls `visit` on every comparison, depth first.
    pub(crate) fn for_each_comparison<'a>(&'a self, visit: &mut impl FnMut(&'a Comparison)) {
        match self {
            Condition::All(parts) | Condition::Any(parts) => {
                for part in parts {
                    part.for_each_comparison(visit);
                }
            }
            Condition::Not(inner) => inner.for_each_comparison(visit),
            Condition::Compare(comparison) => visit(comparison),
        }
    }
}

fn single_entry(object: &Map<String, Value>) -> Option<(&str, &Value)> {
    let mut entries = object.iter();
    match (entries.next(), entries.next()) {
        (Some((key, value)), None) => Some((key.as_str(), value)),
        _ => None,
    }
}

fn invalid(at: &str, problem: &str) -> ConditionError {
    ConditionError::Invalid(format!("{at} {problem}"))
}

impl Comparison {
    fn parse(
        object: &Map<String, Value>,
        at: &str,
        cx: &ParseContext<'_>,
    ) -> Result<Comparison, ConditionError> {
        let shape = "must be {\"all\": […]}, {\"any\": […]}, {\"not\": {…}} or {\"fact\", \"op\", \"value\"}";
        if object.len() != 3 {
            return Err(invalid(at, shape));
        }
        let (Some(fact), Some(op), Some(value)) =
            (object.get("fact"), object.get("op"), object.get("value"))
        else {
            return Err(invalid(at, shape));
        };
        let Some(fact) = fact.as_str() else {
            return Err(invalid(at, "has a \"fact\" that is not a string"));
        };
        let Some(op) = op.as_str().and_then(Op::parse) else {
            let names: Vec<&str> = Op::NAMES.iter().map(|(name, _)| *name).collect();
            return Err(invalid(
                at,
                &format!("has an unknown \"op\" {op}; use one of {}", names.join(" ")),
            ));
        };
        let operand = parse_operand(value, at, cx)?;
        let mut comparison = Comparison {
            fact: fact.to_owned(),
            derived: false,
            op,
            operand,
            tolerance: 0.0,
        };
        if fact == PRIOR_PENALTIES {
            if !cx.prior_penalties {
                return Err(invalid(
                    at,
                    &format!("names {PRIOR_PENALTIES}, which only a rule with a \"prior_penalties\" block has"),
                ));
            }
            // The rule's own count (`priors`), compared exactly as the integer it is.
            comparison.derived = true;
            comparison
                .check(FactKind::Derived)
                .map_err(|problem| invalid(at, &format!("{problem} (fact {fact})")))?;
            return Ok(comparison);
        }
        let mut integer = true;
        for (index, &lead_type) in cx.lead_types.iter().enumerate() {
            let Some(kind) = fact_kind(lead_type, fact) else {
                return Err(ConditionError::UnknownFact {
                    fact: fact.to_owned(),
                    lead_type,
                });
            };
            let derived = kind == FactKind::Derived;
            if index > 0 && derived != comparison.derived {
                return Err(invalid(
                    at,
                    &format!(
                        "names {fact}, derived for some of its lead types and carried by others"
                    ),
                ));
            }
            comparison.derived = derived;
            integer &= kind == FactKind::Integer;
            comparison.check(kind).map_err(|problem| {
                invalid(at, &format!("{problem} (fact {fact} of {lead_type})"))
            })?;
        }
        if matches!(comparison.operand, Operand::Number(_)) && !integer {
            comparison.tolerance = tolerance(fact).ok_or_else(|| {
                invalid(
                    at,
                    &format!("compares {fact}, whose unit has no tolerance in facts::tolerance"),
                )
            })?;
        }
        Ok(comparison)
    }

    /// Whether the operator and operand suit a fact of this kind.
    fn check(&self, kind: FactKind) -> Result<(), String> {
        let op = self.op;
        match (kind, &self.operand) {
            (FactKind::Integer | FactKind::Number | FactKind::Derived, Operand::Number(_))
                if op.is_ordering() || matches!(op, Op::Eq | Op::Ne) =>
            {
                Ok(())
            }
            (FactKind::Bool, Operand::Bool(_)) if matches!(op, Op::Eq | Op::Ne) => Ok(()),
            (FactKind::Enum(values), Operand::Text(text)) if matches!(op, Op::Eq | Op::Ne) => {
                member(values, text)
            }
            (FactKind::Enum(values), Operand::List(list)) if op == Op::In && !list.is_empty() => {
                list.iter().try_for_each(|text| member(values, text))
            }
            (FactKind::Text, Operand::Text(_)) if matches!(op, Op::Eq | Op::Ne) => Ok(()),
            (FactKind::Text, Operand::List(list)) if op == Op::In && !list.is_empty() => Ok(()),
            (FactKind::CodeList, Operand::List(list))
                if op == Op::Intersects && !list.is_empty() =>
            {
                Ok(())
            }
            (FactKind::Measurements, _) => {
                Err("compares the measurements directly; name a derived fact instead".to_owned())
            }
            _ => Err(format!(
                "cannot use op {:?} with value {} on a {} fact",
                op_name(op),
                operand_description(&self.operand),
                kind_name(kind)
            )),
        }
    }

    fn eval(&self, facts: &Value, derived: &BTreeMap<String, f64>) -> Option<bool> {
        let derived_value;
        let fact = if self.derived {
            derived_value = Value::from(*derived.get(&self.fact)?);
            &derived_value
        } else {
            facts.get(&self.fact)?
        };
        match &self.operand {
            Operand::Number(threshold) => {
                compare(fact.as_f64()?, self.op, *threshold, self.tolerance)
            }
            Operand::Bool(expected) => {
                let actual = fact.as_bool()?;
                match self.op {
                    Op::Eq => Some(actual == *expected),
                    Op::Ne => Some(actual != *expected),
                    _ => None,
                }
            }
            Operand::Text(expected) => {
                let actual = fact.as_str()?;
                match self.op {
                    Op::Eq => Some(actual == expected),
                    Op::Ne => Some(actual != expected),
                    _ => None,
                }
            }
            Operand::List(list) => match self.op {
                Op::In => {
                    let actual = fact.as_str()?;
                    Some(list.iter().any(|item| item == actual))
                }
                Op::Intersects => Some(
                    fact.as_array()?
                        .iter()
                        .filter_map(Value::as_str)
                        .any(|code| list.iter().any(|item| item == code)),
                ),
                _ => None,
            },
        }
    }
}

/// Compares in the fact's own unit with its absolute `slack` (`facts::tolerance`), so that a
/// figure that lands on a threshold up to binary rounding (5 × 10000/15 m² → 5 亩) reaches it.
/// Thresholds are inclusive (刑法第九十九条), so rounding must never push a boundary case below;
/// the slack is far too small to pull a case that is really below (3333.33 m²) over it.
fn compare(actual: f64, op: Op, threshold: f64, slack: f64) -> Option<bool> {
    let result = match op {
        Op::Ge => actual >= threshold - slack,
        Op::Gt => actual > threshold + slack,
        Op::Le => actual <= threshold + slack,
        Op::Lt => actual < threshold - slack,
        Op::Eq => (actual - threshold).abs() <= slack,
        Op::Ne => (actual - threshold).abs() > slack,
        Op::In | Op::Intersects => return None,
    };
    Some(result)
}

fn member(values: &[&str], text: &str) -> Result<(), String> {
    if values.contains(&text) {
        Ok(())
    } else {
        Err(format!(
            "compares with {text:?}, which is not one of {}",
            values.join(", ")
        ))
    }
}

fn op_name(op: Op) -> &'static str {
    Op::NAMES
        .iter()
        .find(|(_, candidate)| *candidate == op)
        .map_or("?", |(name, _)| name)
}

fn operand_description(operand: &Operand) -> &'static str {
    match operand {
        Operand::Number(_) => "a number",
        Operand::Bool(_) => "a boolean",
        Operand::Text(_) => "a string",
        Operand::List(list) if list.is_empty() => "an empty list",
        Operand::List(_) => "a list",
    }
}

fn kind_name(kind: FactKind) -> &'static str {
    match kind {
        FactKind::Integer => "integer",
        FactKind::Number => "number",
        FactKind::Bool => "boolean",
        FactKind::Enum(_) => "enumerated",
        FactKind::Text => "string",
        FactKind::CodeList => "pollutant-code list",
        FactKind::Measurements => "measurements",
        FactKind::Derived => "derived number",
    }
}

fn parse_operand(
    value: &Value,
    at: &str,
    cx: &ParseContext<'_>,
) -> Result<Operand, ConditionError> {
    match value {
        Value::Number(number) => number
            .as_f64()
            .filter(|number| number.is_finite())
            .map(Operand::Number)
            .ok_or_else(|| invalid(at, "has a value that is not a finite number")),
        Value::Bool(flag) => Ok(Operand::Bool(*flag)),
        Value::String(text) => Ok(Operand::Text(text.clone())),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Operand::List)
            .ok_or_else(|| invalid(at, "has a value list with an item that is not a string")),
        Value::Object(reference) => parse_config_reference(reference, at, cx),
        Value::Null => Err(invalid(at, "has a null value")),
    }
}

/// `{"config": "<name>"}` or `{"config": "<name>", "times": <number>}`.
fn parse_config_reference(
    reference: &Map<String, Value>,
    at: &str,
    cx: &ParseContext<'_>,
) -> Result<Operand, ConditionError> {
    let shape = "has an object value that is not {\"config\": <name>} or {\"config\": <name>, \"times\": <number>}";
    let Some(name) = reference.get("config").and_then(Value::as_str) else {
        return Err(invalid(at, shape));
    };
    if reference
        .keys()
        .any(|key| key != "config" && key != "times")
    {
        return Err(invalid(at, shape));
    }
    let times = match reference.get("times") {
        None => None,
        Some(times) => Some(
            times
                .as_f64()
                .filter(|times| times.is_finite() && *times > 0.0)
                .ok_or_else(|| invalid(at, "has \"times\" that is not a positive number"))?,
        ),
    };
    let config = cx
        .config
        .get(name)
        .ok_or_else(|| ConditionError::UnknownConfig {
            name: name.to_owned(),
        })?;
    match (config, times) {
        (ConfigValue::Number(number), times) => Ok(Operand::Number(number * times.unwrap_or(1.0))),
        (ConfigValue::List(list), None) => Ok(Operand::List(list.clone())),
        (ConfigValue::List(_), Some(_)) => Err(invalid(
            at,
            &format!("multiplies the list configuration value {name} with \"times\""),
        )),
    }
}
