//! Mapping files (connector contract §2): how the rows of an agency's export become leads.
//!
//! Promise: a [`Mapping`] exists only when its agency, lead type and time zone parse, every
//! pointer names a place the lead type's schema admits, every rule is exactly one of `column`,
//! `value` or `template` with options that fit it, and every unit is known with the unit it
//! converts to. [`Mapping::bind`] then refuses a mapping that names a column the input lacks,
//! before any row is read. Applying a bound mapping to a row never panics and reports every
//! problem of the row at once, each with its pointer and the native column it came from.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::contract::lead::{Agency, LeadType};
use crate::contract::validate::SchemaRegistry;

use super::source::{column_label, Cell, Row};
pub use super::source::{Encoding, InputFormat, InputSettings};

/// Why a mapping file cannot be used; the message names the file and the rule.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("cannot read the mapping {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("mapping {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The `[sql]` table of a SQL mapping.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSettings {
    pub url: String,
    pub password_env: Option<String>,
    pub query: String,
    pub watermark: String,
    pub key: String,
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    #[serde(default = "default_poll_interval")]
    pub poll_interval_secs: u64,
    #[serde(default = "default_lag")]
    pub lag_secs: u64,
}

fn default_batch_size() -> u32 {
    500
}

fn default_poll_interval() -> u64 {
    60
}

fn default_lag() -> u64 {
    300
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    agency: String,
    lead_type: String,
    kind: RawKind,
    time_zone: Option<String>,
    attachments: Option<toml::Value>,
    input: Option<InputSettings>,
    sql: Option<SqlSettings>,
    #[serde(default)]
    fields: BTreeMap<String, RawRule>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawKind {
    Constant(String),
    Rule(Box<RawRule>),
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    column: Option<String>,
    value: Option<toml::Value>,
    template: Option<String>,
    #[serde(rename = "type")]
    target: Option<String>,
    map: Option<BTreeMap<String, toml::Value>>,
    unit: Option<String>,
    to: Option<String>,
    date_format: Option<String>,
    default: Option<toml::Value>,
    optional: Option<bool>,
    map_empty: Option<bool>,
}

/// What JSON a rule must produce, from its `type` or from the schema at its pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    String,
    DateTime,
    Number,
    Integer,
    Boolean,
    /// The schema does not say (or allows several types): the cell's text.
    Text,
}

/// A unit conversion: the native unit, its factor into the contract's unit.
#[derive(Clone, Copy, Debug)]
struct Unit {
    factor_numerator: f64,
    factor_denominator: f64,
}

/// The contract's units: native unit → (unit of the lead, numerator, denominator). 1 亩 is
/// 10000/15 m², kept as a fraction so the conversion is one multiplication and one division.
const UNITS: &[(&str, &str, f64, f64)] = &[
    ("mu", "m2", 10_000.0, 15.0),
    ("hectare", "m2", 10_000.0, 1.0),
    ("m2", "m2", 1.0, 1.0),
    ("wan_yuan", "cny", 10_000.0, 1.0),
    ("kg", "t", 1.0, 1_000.0),
];

#[derive(Clone, Debug)]
enum Source {
    Column(String),
    Value(Value),
    Template(Vec<Piece>),
}

#[derive(Clone, Debug)]
enum Piece {
    Text(String),
    Column(String),
}

#[derive(Clone, Debug)]
struct Rule {
    pointer: String,
    source: Source,
    target: Target,
    map: Option<BTreeMap<String, Value>>,
    unit: Option<Unit>,
    date_format: Option<String>,
    default: Option<Value>,
    optional: bool,
    map_empty: bool,
}

/// A parsed mapping file.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub path: String,
    pub agency: Agency,
    pub lead_type: LeadType,
    pub input: Option<InputSettings>,
    pub sql: Option<SqlSettings>,
    /// SHA-256 of the mapping file's bytes: checkpoints are kept per input and mapping.
    pub sha256: String,
    time_zone: FixedOffset,
    rules: Vec<Rule>,
}

/// A problem with one row, before the hub's own checks: what the report prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CellProblem {
    pub column: Option<String>,
    pub pointer: String,
    pub code: &'static str,
    pub message: String,
}

impl Mapping {
    pub fn load(path: &Path, schemas: &SchemaRegistry) -> Result<Mapping, MappingError> {
        let bytes = std::fs::read(path).map_err(|source| MappingError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Mapping::parse(&path.display().to_string(), &bytes, schemas)
    }

    pub fn parse(
        path: &str,
        bytes: &[u8],
        schemas: &SchemaRegistry,
    ) -> Result<Mapping, MappingError> {
        let invalid = |message: String| MappingError::Invalid {
            path: path.to_owned(),
            message,
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|error| invalid(format!("not UTF-8 (byte {})", error.valid_up_to())))?;
        let raw: RawMapping = toml::from_str(text).map_err(|error| invalid(error.to_string()))?;
        let agency: Agency = raw.agency.parse().map_err(|_| {
            invalid(format!(
                "agency {:?} is not one of the contract's",
                raw.agency
            ))
        })?;
        let lead_type: LeadType = raw.lead_type.parse().map_err(|_| {
            invalid(format!(
                "lead_type {:?} is not one of the contract's",
                raw.lead_type
            ))
        })?;
        if lead_type.agency() != agency {
            return Err(invalid(format!(
                "lead_type {lead_type} is not the {agency} agency's"
            )));
        }
        let time_zone = match &raw.time_zone {
            None => FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset"),
            Some(text) => parse_offset(text).ok_or_else(|| {
                invalid(format!(
                    "time_zone {text:?} is not an offset like \"+08:00\""
                ))
            })?,
        };
        match (&raw.input, &raw.sql) {
            (Some(_), Some(_)) => {
                return Err(invalid("give either [input] or [sql], not both".into()))
            }
            (Some(input), None) => {
                if input.header_row == 0 {
                    return Err(invalid("input.header_row counts from 1".into()));
                }
                if input.delimiter.len() != 1 {
                    return Err(invalid(format!(
                        "input.delimiter {:?} must be one ASCII character",
                        input.delimiter
                    )));
                }
            }
            _ => {}
        }
        let schema = schemas.document(lead_type);
        let mut rules = Vec::new();
        let kind_rule = match raw.kind {
            RawKind::Constant(text) => RawRule {
                value: Some(toml::Value::String(text)),
                ..RawRule::default()
            },
            RawKind::Rule(rule) => *rule,
        };
        rules.push(rule("/kind", kind_rule, schema).map_err(invalid)?);
        if let Some(value) = raw.attachments {
            let value = json_of(&value);
            rules.push(Rule {
                pointer: "/attachments".into(),
                source: Source::Value(value),
                target: Target::Text,
                map: None,
                unit: None,
                date_format: None,
                default: None,
                optional: false,
                map_empty: false,
            });
        }
        for (pointer, raw_rule) in raw.fields {
            if matches!(
                pointer.as_str(),
                "/kind" | "/lead_type" | "/schema_version" | "/source/agency"
            ) {
                return Err(invalid(format!(
                    "{pointer} comes from the mapping's header (agency, lead_type, kind), not [fields]"
                )));
            }
            rules.push(rule(&pointer, raw_rule, schema).map_err(invalid)?);
        }
        Ok(Mapping {
            path: path.to_owned(),
            agency,
            lead_type,
            input: raw.input,
            sql: raw.sql,
            sha256: hex::encode(Sha256::digest(bytes)),
            time_zone,
            rules,
        })
    }

    /// The offset of date/time values without one (`time_zone`, default +08:00).
    pub fn time_zone(&self) -> FixedOffset {
        self.time_zone
    }

    /// Every column a rule reads, once, in the order of the rules.
    pub fn columns(&self) -> Vec<String> {
        let mut columns: Vec<String> = Vec::new();
        for rule in &self.rules {
            let named: Vec<&String> = match &rule.source {
                Source::Column(column) => vec![column],
                Source::Template(pieces) => pieces
                    .iter()
                    .filter_map(|piece| match piece {
                        Piece::Column(column) => Some(column),
                        Piece::Text(_) => None,
                    })
                    .collect(),
                Source::Value(_) => vec![],
            };
            for column in named {
                if !columns.contains(column) {
                    columns.push(column.clone());
                }
            }
        }
        columns
    }

    /// Checks the input's columns against the mapping and fixes where each column is.
    /// `header` are the input's column names in order; `hint` is added to the message (for a
    /// spreadsheet: the merged cells of the header row).
    pub fn bind(&self, header: &[String], hint: &str) -> Result<BoundMapping<'_>, MappingError> {
        let mut index = BTreeMap::new();
        let mut missing = Vec::new();
        for column in self.columns() {
            let positions: Vec<usize> = header
                .iter()
                .enumerate()
                .filter(|(_, name)| name.trim() == column)
                .map(|(at, _)| at)
                .collect();
            match positions.as_slice() {
                [] => missing.push(column),
                [at] => {
                    index.insert(column, *at);
                }
                several => {
                    return Err(MappingError::Invalid {
                        path: self.path.clone(),
                        message: format!(
                            "column {column:?} appears {} times in the header (columns {}); rename one",
                            several.len(),
                            several
                                .iter()
                                .map(|at| column_label(*at))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
        }
        if !missing.is_empty() {
            return Err(MappingError::Invalid {
                path: self.path.clone(),
                message: format!(
                    "the input has no column {}; its header is {}{hint}",
                    missing
                        .iter()
                        .map(|c| format!("{c:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    header
                        .iter()
                        .map(|c| format!("{c:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Ok(BoundMapping {
            mapping: self,
            index,
        })
    }

    /// The native column a problem at `pointer` came from: the rule of that pointer, or of the
    /// closest enclosing one.
    pub fn column_of(&self, pointer: &str) -> Option<String> {
        self.rules
            .iter()
            .filter(|rule| {
                pointer == rule.pointer
                    || pointer
                        .strip_prefix(rule.pointer.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|rule| rule.pointer.len())
            .and_then(|rule| match &rule.source {
                Source::Column(column) => Some(column.clone()),
                _ => None,
            })
    }
}

/// A mapping whose columns were found in an input.
pub struct BoundMapping<'a> {
    mapping: &'a Mapping,
    index: BTreeMap<String, usize>,
}

impl BoundMapping<'_> {
    pub fn mapping(&self) -> &Mapping {
        self.mapping
    }

    /// The lead a row makes, not yet checked by the hub's rules, or every problem of the row.
    pub fn lead(&self, row: &Row) -> Result<Value, Vec<CellProblem>> {
        let mapping = self.mapping;
        let mut lead = Value::Object(Map::new());
        let mut problems = Vec::new();
        for rule in &mapping.rules {
            match self.value_of(rule, row) {
                Ok(Some(value)) => set_pointer(&mut lead, &rule.pointer, value),
                Ok(None) => {}
                Err(problem) => problems.push(problem),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let object = lead.as_object_mut().expect("the lead is an object");
        object.insert("lead_type".into(), mapping.lead_type.as_str().into());
        object.insert("schema_version".into(), 1.into());
        object
            .entry("attachments")
            .or_insert_with(|| Value::Array(vec![]));
        set_pointer(&mut lead, "/source/agency", mapping.agency.as_str().into());
        Ok(lead)
    }

    fn cell<'r>(&self, row: &'r Row, column: &str) -> &'r Cell {
        self.index
            .get(column)
            .and_then(|at| row.cells.get(*at))
            .unwrap_or(&Cell::Empty)
    }

    fn value_of(&self, rule: &Rule, row: &Row) -> Result<Option<Value>, CellProblem> {
        let column = match &rule.source {
            Source::Value(value) => return Ok(Some(value.clone())),
            Source::Template(pieces) => {
                let mut text = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Text(literal) => text.push_str(literal),
                        Piece::Column(column) => {
                            text.push_str(&render(self.cell(row, column), self.mapping.time_zone))
                        }
                    }
                }
                return Ok(Some(Value::String(text.trim().to_owned())));
            }
            Source::Column(column) => column,
        };
        let cell = self.cell(row, column);
        let problem = |code: &'static str, message: String| CellProblem {
            column: Some(column.clone()),
            pointer: rule.pointer.clone(),
            code,
            message,
        };
        if cell.is_empty() {
            if rule.map_empty {
                return Ok(Some(Value::Bool(true)));
            }
            if rule.optional {
                return Ok(None);
            }
            if let Some(default) = &rule.default {
                return Ok(Some(default.clone()));
            }
            return Err(problem(
                "required",
                format!("column {column} is empty and the mapping gives no default"),
            ));
        }
        if rule.map_empty {
            return Ok(None);
        }
        if let Some(map) = &rule.map {
            let key = render(cell, self.mapping.time_zone);
            return match map.get(&key) {
                Some(value) => Ok(Some(value.clone())),
                None => Err(problem(
                    "enum",
                    format!(
                        "{key:?} is not one of the mapped values {}",
                        map.keys()
                            .map(|k| format!("{k:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            };
        }
        convert(cell, rule, self.mapping.time_zone)
            .map(Some)
            .map_err(|(code, message)| problem(code, message))
    }
}

/// A cell as text: trimmed text, a whole number without its decimal part, a date-time in
/// RFC 3339 in the mapping's time zone.
fn render(cell: &Cell, time_zone: FixedOffset) -> String {
    match cell {
        Cell::Empty => String::new(),
        Cell::Text(text) => text.trim().to_owned(),
        Cell::Number(number) => number_text(*number),
        Cell::Bool(value) => value.to_string(),
        Cell::DateTime(local) => rfc3339(*local, time_zone),
    }
}

fn number_text(number: f64) -> String {
    if number.fract() == 0.0 && number.abs() < 1e15 {
        format!("{number:.0}")
    } else {
        number.to_string()
    }
}

fn rfc3339(local: NaiveDateTime, time_zone: FixedOffset) -> String {
    match time_zone.from_local_datetime(&local).single() {
        Some(at) => at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => local.to_string(),
    }
}

type Conversion = Result<Value, (&'static str, String)>;

fn convert(cell: &Cell, rule: &Rule, time_zone: FixedOffset) -> Conversion {
    let text = render(cell, time_zone);
    match rule.target {
        Target::String | Target::Text => Ok(Value::String(text)),
        Target::DateTime => date_time(cell, rule.date_format.as_deref(), time_zone),
        Target::Boolean => match cell {
            Cell::Bool(value) => Ok(Value::Bool(*value)),
            _ => match text.to_ascii_lowercase().as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err((
                    "type",
                    format!("{text:?} is not true or false; give the rule a map"),
                )),
            },
        },
        Target::Number | Target::Integer => {
            let number = match cell {
                Cell::Number(number) => *number,
                Cell::Text(_) => text
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| ("type", format!("{text:?} is not a number")))?,
                _ => return Err(("type", format!("{text:?} is not a number"))),
            };
            let number = match rule.unit {
                Some(unit) => number * unit.factor_numerator / unit.factor_denominator,
                None => number,
            };
            json_number(number, rule.target == Target::Integer)
                .ok_or_else(|| ("type", format!("{text:?} is not a whole number")))
        }
    }
}

/// A number as JSON: whole numbers (within 2⁵³) as integers, so 30000 is not written 30000.0.
fn json_number(number: f64, integer: bool) -> Option<Value> {
    let whole = number.fract() == 0.0 && number.abs() <= 9_007_199_254_740_992.0;
    if whole {
        return Some(Value::from(number as i64));
    }
    if integer {
        return None;
    }
    serde_json::Number::from_f64(number).map(Value::Number)
}

fn date_time(cell: &Cell, format: Option<&str>, time_zone: FixedOffset) -> Conversion {
    let text = match cell {
        Cell::DateTime(local) => return Ok(Value::String(rfc3339(*local, time_zone))),
        Cell::Text(text) => text.trim(),
        other => {
            return Err((
                "format",
                format!(
                    "{} is not a date; the column needs date cells or text",
                    render(other, time_zone)
                ),
            ))
        }
    };
    let Some(format) = format else {
        return DateTime::parse_from_rfc3339(text)
            .map(|at| Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
            .map_err(|_| {
                (
                    "format",
                    format!("{text:?} is not RFC 3339; give the rule a date_format"),
                )
            });
    };
    if let Ok(at) = DateTime::parse_from_str(text, format) {
        return Ok(Value::String(
            at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        ));
    }
    let local = NaiveDateTime::parse_from_str(text, format).or_else(|_| {
        NaiveDate::parse_from_str(text, format)
            .map(|date| date.and_hms_opt(0, 0, 0).expect("midnight exists"))
    });
    match local {
        Ok(local) => Ok(Value::String(rfc3339(local, time_zone))),
        Err(_) => Err((
            "format",
            format!("{text:?} does not match the date_format {format:?}"),
        )),
    }
}

fn parse_offset(text: &str) -> Option<FixedOffset> {
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (hours, minutes) = text[1..].split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let seconds = hours.parse::<i32>().ok()? * 3600 + minutes.parse::<i32>().ok()? * 60;
    FixedOffset::east_opt(sign * seconds)
}

fn rule(pointer: &str, raw: RawRule, schema: &Value) -> Result<Rule, String> {
    let at = |message: String| format!("[fields] {pointer:?}: {message}");
    let node = schema_at(schema, pointer).ok_or_else(|| {
        at("the lead has no such place (the pointer is outside the lead type's schema)".into())
    })?;
    let sources = [
        raw.column.is_some(),
        raw.value.is_some(),
        raw.template.is_some(),
    ];
    if sources.iter().filter(|given| **given).count() != 1 {
        return Err(at("give exactly one of column, value or template".into()));
    }
    let column_only = [
        ("type", raw.target.is_some()),
        ("map", raw.map.is_some()),
        ("unit", raw.unit.is_some()),
        ("to", raw.to.is_some()),
        ("date_format", raw.date_format.is_some()),
        ("default", raw.default.is_some()),
        ("optional", raw.optional.is_some()),
        ("map_empty", raw.map_empty.is_some()),
    ];
    if raw.column.is_none() {
        if let Some((option, _)) = column_only.iter().find(|(_, given)| *given) {
            return Err(at(format!("{option} applies only to a column rule")));
        }
    }
    let target = match raw.target.as_deref() {
        None => target_of(node),
        Some("string") => Target::String,
        Some("number") => Target::Number,
        Some("integer") => Target::Integer,
        Some("boolean") => Target::Boolean,
        Some(other) => {
            return Err(at(format!(
                "type {other:?} is not string, number, integer or boolean"
            )))
        }
    };
    let unit = match (&raw.unit, &raw.to) {
        (None, None) => None,
        (Some(unit), Some(to)) => {
            let Some((_, target_unit, numerator, denominator)) =
                UNITS.iter().find(|(name, ..)| name == unit)
            else {
                return Err(at(format!(
                    "unknown unit {unit:?}; the units are {}",
                    UNITS
                        .iter()
                        .map(|(name, to, ..)| format!("{name} → {to}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            if target_unit != to {
                return Err(at(format!(
                    "unit {unit:?} converts to {target_unit:?}, not {to:?}"
                )));
            }
            if !matches!(target, Target::Number | Target::Integer) {
                return Err(at("a unit needs a number field".into()));
            }
            Some(Unit {
                factor_numerator: *numerator,
                factor_denominator: *denominator,
            })
        }
        _ => return Err(at("unit and to go together".into())),
    };
    if raw.map_empty == Some(true) && (raw.optional.is_some() || raw.default.is_some()) {
        return Err(at("map_empty excludes optional and default".into()));
    }
    let source = if let Some(column) = raw.column {
        if column.trim().is_empty() {
            return Err(at("the column name is empty".into()));
        }
        Source::Column(column.trim().to_owned())
    } else if let Some(value) = raw.value {
        Source::Value(json_of(&value))
    } else {
        Source::Template(template(&raw.template.unwrap_or_default()).map_err(at)?)
    };
    Ok(Rule {
        pointer: pointer.to_owned(),
        source,
        target,
        map: raw.map.map(|map| {
            map.into_iter()
                .map(|(key, value)| (key.trim().to_owned(), json_of(&value)))
                .collect()
        }),
        unit,
        date_format: raw.date_format,
        default: raw.default.as_ref().map(json_of),
        optional: raw.optional.unwrap_or(false),
        map_empty: raw.map_empty.unwrap_or(false),
    })
}

/// `{column}` placeholders; `{{` and `}}` stand for braces.
fn template(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let mut column = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => column.push(c),
                        None => return Err(format!("template {text:?} has an unclosed {{")),
                    }
                }
                if column.trim().is_empty() {
                    return Err(format!("template {text:?} has an empty {{}}"));
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Column(column.trim().to_owned()));
            }
            '}' => return Err(format!("template {text:?} has a }} without {{")),
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

/// A TOML value as JSON (a TOML date-time becomes its RFC 3339 text).
fn json_of(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(text) => Value::String(text.clone()),
        toml::Value::Integer(number) => Value::from(*number),
        toml::Value::Float(number) => serde_json::Number::from_f64(*number)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        toml::Value::Boolean(value) => Value::Bool(*value),
        toml::Value::Datetime(at) => Value::String(at.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(json_of).collect()),
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(key, value)| (key.clone(), json_of(value)))
                .collect(),
        ),
    }
}

/// The schema node a pointer lands on, following `properties`, `items`, `allOf` and
/// `then`; `None` when the schema admits nothing there.
fn schema_at<'s>(schema: &'s Value, pointer: &str) -> Option<&'s Value> {
    if pointer.is_empty() {
        return Some(schema);
    }
    let rest = pointer.strip_prefix('/')?;
    let (token, tail) = match rest.split_once('/') {
        Some((token, tail)) => (token, Some(tail)),
        None => (rest, None),
    };
    let token = token.replace("~1", "/").replace("~0", "~");
    let mut candidates: Vec<&Value> = Vec::new();
    collect_children(schema, &token, &mut candidates);
    candidates.into_iter().find_map(|child| match tail {
        None => Some(child),
        Some(tail) => schema_at(child, &format!("/{tail}")),
    })
}

fn collect_children<'s>(schema: &'s Value, token: &str, out: &mut Vec<&'s Value>) {
    if let Some(child) = schema.get("properties").and_then(|p| p.get(token)) {
        out.push(child);
    }
    if let (Some(items), Ok(_)) = (schema.get("items"), token.parse::<usize>()) {
        out.push(items);
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            for branch in branches {
                collect_children(branch, token, out);
            }
        }
    }
    for key in ["then", "else"] {
        if let Some(branch) = schema.get(key) {
            collect_children(branch, token, out);
        }
    }
}

fn target_of(node: &Value) -> Target {
    let types: Vec<&str> = match node.get("type") {
        Some(Value::String(name)) => vec![name.as_str()],
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(Value::as_str)
            .filter(|name| *name != "null")
            .collect(),
        _ => vec![],
    };
    match types.as_slice() {
        ["string"] if node.get("format").and_then(Value::as_str) == Some("date-time") => {
            Target::DateTime
        }
        ["string"] => Target::String,
        ["integer"] => Target::Integer,
        ["number"] => Target::Number,
        ["boolean"] => Target::Boolean,
        _ => Target::Text,
    }
}

/// Sets `pointer` in `document`, making the objects and arrays on the way (an array where
/// the next token is an index; missing earlier items are `null` until a rule fills them).
fn set_pointer(document: &mut Value, pointer: &str, value: Value) {
    let tokens: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut here = document;
    for (at, token) in tokens.iter().enumerate() {
        let last = at + 1 == tokens.len();
        let next_is_index = tokens
            .get(at + 1)
            .is_some_and(|next| next.parse::<usize>().is_ok());
        let fresh = || {
            if next_is_index {
                Value::Array(vec![])
            } else {
                Value::Object(Map::new())
            }
        };
        if here.is_null() {
            *here = if token.parse::<usize>().is_ok() {
                Value::Array(vec![])
            } else {
                Value::Object(Map::new())
            };
        }
        here = match here {
            Value::Array(items) => {
                let Ok(index) = token.parse::<usize>() else {
                    return;
                };
                if items.len() <= index {
                    items.resize(index + 1, Value::Null);
                }
                let slot = &mut items[index];
                if last {
                    *slot = value;
                    return;
                }
                if slot.is_null() {
                    *slot = fresh();
                }
                slot
            }
            Value::Object(members) => {
                if last {
                    members.insert(token.clone(), value);
                    return;
                }
                members.entry(token.clone()).or_insert_with(fresh)
            }
            // A constant already sits where a rule wants to descend: the schema reports it.
            _ => return,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schemas() -> SchemaRegistry {
        SchemaRegistry::built_in().unwrap()
    }

    const LAND: &str = r#"
agency = "land"
lead_type = "land.farmland_occupation"
kind = "clue"
time_zone = "+08:00"
[input]
format = "csv"
[fields]
"/source/case_id"            = { column = "图斑编号" }
"/source/revision"           = { value = 1 }
"/source/unit"               = { value = "淄博市自然资源和规划局" }
"/source/unit_division"      = { value = "370300" }
"/occurred_at"               = { column = "发现日期", date_format = "%Y/%m/%d" }
"/reported_at"               = { column = "上报时间", date_format = "%Y-%m-%d %H:%M" }
"/location/division_code"    = { column = "行政区划代码" }
"/location/address"          = { column = "坐落" }
"/subjects/0/type"           = { value = "organization" }
"/subjects/0/name"           = { column = "用地单位" }
"/subjects/0/uscc"           = { column = "统一社会信用代码", optional = true }
"/subjects/0/uscc_unknown"   = { column = "统一社会信用代码", map_empty = true }
"/summary"                   = { template = "图斑 {图斑编号}：{地类}" }
"/facts/basic_farmland_m2"   = { column = "永久基本农田（亩）", unit = "mu", to = "m2", default = 0 }
"/facts/other_cultivated_m2" = { value = 0 }
"/facts/public_welfare_forest_m2" = { value = 0 }
"/facts/commercial_forest_m2"     = { value = 0 }
"/facts/grassland_m2"             = { value = 0 }
"/facts/use_changed"         = { column = "是否改变用途", map = { "是" = true, "否" = false } }
"/facts/destroyed"           = { value = true }
"/facts/prior_penalties_2y"  = { column = "两年内处罚次数", type = "integer", default = 0 }
"#;

    const HEADER: [&str; 10] = [
        "图斑编号",
        "发现日期",
        "上报时间",
        "行政区划代码",
        "坐落",
        "用地单位",
        "统一社会信用代码",
        "地类",
        "永久基本农田（亩）",
        "是否改变用途",
    ];

    fn header() -> Vec<String> {
        let mut header: Vec<String> = HEADER.iter().map(|s| s.to_string()).collect();
        header.push("两年内处罚次数".into());
        header
    }

    fn row(cells: Vec<Cell>) -> Row {
        Row {
            number: 2,
            cells,
            byte_offset: 0,
        }
    }

    fn text(s: &str) -> Cell {
        Cell::Text(s.into())
    }

    #[test]
    fn a_row_becomes_the_lead_the_contract_describes() {
        let mapping = Mapping::parse("land.toml", LAND.as_bytes(), &schemas()).unwrap();
        let bound = mapping.bind(&header(), "").unwrap();
        let lead = bound
            .lead(&row(vec![
                text("TB-001"),
                Cell::DateTime(
                    NaiveDate::from_ymd_opt(2026, 11, 3)
                        .unwrap()
                        .and_hms_opt(0, 0, 0)
                        .unwrap(),
                ),
                text("2026-11-05 09:30"),
                Cell::Number(370303.0),
                text(" 张店区某村 "),
                text("淄博某某建材有限公司"),
                Cell::Empty,
                text("水浇地"),
                Cell::Number(7.5),
                text("是"),
                Cell::Empty,
            ]))
            .unwrap();
        assert_eq!(lead["kind"], "clue");
        assert_eq!(lead["lead_type"], "land.farmland_occupation");
        assert_eq!(lead["schema_version"], 1);
        assert_eq!(lead["source"]["agency"], "land");
        assert_eq!(lead["occurred_at"], "2026-11-03T00:00:00+08:00");
        assert_eq!(lead["reported_at"], "2026-11-05T09:30:00+08:00");
        assert_eq!(lead["location"]["division_code"], "370303");
        assert_eq!(lead["location"]["address"], "张店区某村");
        assert_eq!(lead["subjects"][0]["uscc_unknown"], true);
        assert!(lead["subjects"][0].get("uscc").is_none());
        assert_eq!(lead["summary"], "图斑 TB-001：水浇地");
        assert_eq!(lead["facts"]["basic_farmland_m2"], 5000);
        assert_eq!(lead["facts"]["use_changed"], true);
        assert_eq!(lead["facts"]["prior_penalties_2y"], 0);
        assert_eq!(lead["attachments"], serde_json::json!([]));
        let validator = crate::contract::validate::Validator::built_in().unwrap();
        validator
            .validate(Agency::Land, lead, chrono::Utc::now())
            .unwrap();
    }

    #[test]
    fn mu_converts_without_rounding() {
        let mapping = Mapping::parse("land.toml", LAND.as_bytes(), &schemas()).unwrap();
        let bound = mapping.bind(&header(), "").unwrap();
        let mut cells: Vec<Cell> = header().iter().map(|_| text("x")).collect();
        cells[1] = text("2026/11/03");
        cells[2] = text("2026-11-05 09:30");
        cells[8] = text("4.1");
        cells[9] = text("否");
        cells[10] = text("2");
        let lead = bound.lead(&row(cells)).unwrap();
        assert_eq!(lead["facts"]["basic_farmland_m2"], 4.1 * 10_000.0 / 15.0);
        assert_eq!(lead["facts"]["prior_penalties_2y"], 2);
    }

    #[test]
    fn every_bad_cell_of_a_row_is_reported_with_its_column() {
        let mapping = Mapping::parse("land.toml", LAND.as_bytes(), &schemas()).unwrap();
        let bound = mapping.bind(&header(), "").unwrap();
        let mut cells: Vec<Cell> = header().iter().map(|_| text("x")).collect();
        cells[1] = text("03.11.2026");
        cells[2] = Cell::Empty;
        cells[8] = text("七亩");
        cells[9] = text("可能");
        cells[10] = text("1.5");
        let problems = bound.lead(&row(cells)).unwrap_err();
        let found: Vec<(&str, &str, &str)> = problems
            .iter()
            .map(|p| (p.column.as_deref().unwrap(), p.pointer.as_str(), p.code))
            .collect();
        assert_eq!(
            found,
            [
                ("永久基本农田（亩）", "/facts/basic_farmland_m2", "type"),
                ("两年内处罚次数", "/facts/prior_penalties_2y", "type"),
                ("是否改变用途", "/facts/use_changed", "enum"),
                ("发现日期", "/occurred_at", "format"),
                ("上报时间", "/reported_at", "required"),
            ]
        );
    }

    fn refused(text: &str) -> String {
        Mapping::parse("m.toml", text.as_bytes(), &schemas())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_bad_mapping_is_refused_with_its_rule_named() {
        let base = "agency = \"land\"\nlead_type = \"land.farmland_occupation\"\nkind = \"clue\"\n[fields]\n";
        let message = refused(&format!("{base}\"/facts/colour\" = {{ value = 1 }}\n"));
        assert!(
            message.contains("\"/facts/colour\"") && message.contains("outside"),
            "{message}"
        );
        let message = refused(&format!(
            "{base}\"/facts/grassland_m2\" = {{ column = \"草地\", unit = \"acre\", to = \"m2\" }}\n"
        ));
        assert!(message.contains("unknown unit \"acre\""), "{message}");
        let message = refused(&format!(
            "{base}\"/facts/grassland_m2\" = {{ column = \"草地\", unit = \"kg\", to = \"m2\" }}\n"
        ));
        assert!(message.contains("converts to \"t\""), "{message}");
        let message = refused(&format!(
            "{base}\"/summary\" = {{ column = \"a\", value = \"b\" }}\n"
        ));
        assert!(message.contains("exactly one of"), "{message}");
        let message = refused(&format!("{base}\"/summary\" = {{ template = \"{{a\" }}\n"));
        assert!(message.contains("unclosed"), "{message}");
        let message = refused(&format!("{base}\"/summary\" = {{ colum = \"a\" }}\n"));
        assert!(message.contains("unknown field `colum`"), "{message}");
        let message = refused(
            "agency = \"water\"\nlead_type = \"land.farmland_occupation\"\nkind = \"clue\"\n",
        );
        assert!(message.contains("not the water agency's"), "{message}");
        let message = refused(&format!(
            "{base}\"/source/agency\" = {{ value = \"land\" }}\n"
        ));
        assert!(message.contains("mapping's header"), "{message}");
    }

    #[test]
    fn a_column_the_input_lacks_is_refused_before_any_row() {
        let mapping = Mapping::parse("land.toml", LAND.as_bytes(), &schemas()).unwrap();
        let mut header = header();
        header.retain(|name| name != "坐落");
        let message = match mapping.bind(&header, "; merged cells: E2:F2") {
            Err(error) => error.to_string(),
            Ok(_) => panic!("a missing column was bound"),
        };
        assert!(message.contains("no column \"坐落\""), "{message}");
        assert!(message.contains("merged cells: E2:F2"), "{message}");
        let mut twice = self::header();
        twice.push("坐落".into());
        let message = match mapping.bind(&twice, "") {
            Err(error) => error.to_string(),
            Ok(_) => panic!("an ambiguous column was bound"),
        };
        assert!(message.contains("appears 2 times"), "{message}");
    }

    #[test]
    fn problems_are_traced_to_their_column() {
        let mapping = Mapping::parse("land.toml", LAND.as_bytes(), &schemas()).unwrap();
        assert_eq!(
            mapping.column_of("/subjects/0/name").as_deref(),
            Some("用地单位")
        );
        assert_eq!(mapping.column_of("/source/unit"), None);
        assert_eq!(mapping.column_of("/facts"), None);
    }

    #[test]
    fn pointers_are_set_through_arrays_in_any_order() {
        let mut document = Value::Null;
        set_pointer(&mut document, "/subjects/1/name", "b".into());
        set_pointer(&mut document, "/subjects/0/name", "a".into());
        assert_eq!(
            document,
            serde_json::json!({"subjects": [{"name": "a"}, {"name": "b"}]})
        );
        assert_eq!(column_label(0), "A");
        assert_eq!(column_label(27), "AB");
        assert_eq!(number_text(370303.0), "370303");
        assert_eq!(number_text(0.1), "0.1");
    }
}
