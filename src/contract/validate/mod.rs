//! Validation of submitted leads: the JSON Schema of the lead type, then the domain checks
//! that a schema cannot express (check characters, division codes in force, time order,
//! Decree 310 transfer requirements, agency ownership).
//!
//! Promise: [`Validator::validate`] reports every problem of a lead at once, each with a JSON
//! Pointer into the submitted document and a stable `code` (documented in
//! `schemas/README.md`); and a [`ValidatedLead`] exists only when there is no problem. Domain
//! checks skip the parts that already failed the schema, so one mistake yields one problem.
//!
//! Promise: no accepted lead holds a control character (Unicode category Cc: U+0000–U+001F,
//! U+007F–U+009F) other than tab, line feed and carriage return, in any string or object key.
//! PostgreSQL cannot store U+0000 in text, and the others have no place in evidence but can
//! rewrite what a terminal or a printed record shows; SQLite would store them, so the refusal is
//! here and the same on every backend.

mod domain;
pub mod json;
mod schema;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::Value;

pub use schema::{SchemaError, SchemaRegistry};

use crate::contract::lead::{Agency, CaseId, DivisionTable, LeadKind, LeadType, ValidatedLead};

/// One thing wrong with a submitted lead. (Named apart in the OpenAPI document, where
/// `Problem` is the whole problem+json answer.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = ValidationProblem)]
pub struct Problem {
    /// JSON Pointer (RFC 6901) into the submitted document; `""` is the whole document.
    pub pointer: String,
    /// Stable identifier of the kind of problem.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl Problem {
    pub fn new(pointer: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Problem {
            pointer: pointer.into(),
            code,
            message: message.into(),
        }
    }
}

/// Why a lead was not accepted by validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The lead names another agency than the authenticated caller: not the caller's to send.
    #[error("source.agency is {claimed}, but the caller is {caller}")]
    ForeignAgency { caller: Agency, claimed: Agency },
    /// The lead has problems; every one is listed.
    #[error("{} problem(s) in the lead", .0.len())]
    Invalid(Vec<Problem>),
}

impl ValidationError {
    /// Resubmitting the same document cannot succeed.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// The validator: compiled schemas, the division table and the clock-skew allowance.
#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
}

struct Inner {
    schemas: SchemaRegistry,
    divisions: DivisionTable,
    clock_skew: Duration,
}

impl Validator {
    pub fn new(schemas: SchemaRegistry, divisions: DivisionTable, clock_skew: Duration) -> Self {
        Validator {
            inner: Arc::new(Inner {
                schemas,
                divisions,
                clock_skew,
            }),
        }
    }

    /// The built-in schemas and division table with the contract's 5-minute clock skew.
    pub fn built_in() -> anyhow::Result<Self> {
        Ok(Self::new(
            SchemaRegistry::built_in()?,
            DivisionTable::built_in()?,
            Duration::minutes(5),
        ))
    }

    pub fn schemas(&self) -> &SchemaRegistry {
        &self.inner.schemas
    }

    /// Validates `document` as sent by `caller` at `now`.
    pub fn validate(
        &self,
        caller: Agency,
        mut document: Value,
        now: DateTime<Utc>,
    ) -> Result<ValidatedLead, ValidationError> {
        if !document.is_object() {
            return Err(ValidationError::Invalid(vec![Problem::new(
                "",
                "type",
                "expected a lead object",
            )]));
        }
        if let Some(claimed) = document
            .pointer("/source/agency")
            .and_then(Value::as_str)
            .and_then(|text| text.parse::<Agency>().ok())
        {
            if claimed != caller {
                return Err(ValidationError::ForeignAgency { caller, claimed });
            }
        }
        let lead_type = document
            .get("lead_type")
            .and_then(Value::as_str)
            .and_then(|text| text.parse::<LeadType>().ok());

        let mut problems = self.inner.schemas.problems(lead_type, &document);
        problems.extend(control_characters(&document));
        let schema_failures: Vec<String> = problems.iter().map(|p| p.pointer.clone()).collect();
        let context = domain::Context {
            divisions: &self.inner.divisions,
            now,
            clock_skew: self.inner.clock_skew,
            schema_failures: &schema_failures,
        };
        problems.extend(domain::check(&context, lead_type, &mut document));

        let kind = document
            .get("kind")
            .and_then(Value::as_str)
            .and_then(|text| text.parse::<LeadKind>().ok());
        let case_id = document
            .pointer("/source/case_id")
            .and_then(Value::as_str)
            .and_then(CaseId::parse);
        let revision = document.pointer("/source/revision").and_then(Value::as_i64);
        match (problems.is_empty(), lead_type, kind, case_id, revision) {
            (true, Some(lead_type), Some(kind), Some(case_id), Some(revision)) => Ok(
                ValidatedLead::new(lead_type, kind, case_id, revision, document),
            ),
            (true, ..) => {
                // Only reachable with an operator's schema override that is looser than the
                // contract; refuse rather than store a lead the hub cannot identify.
                Err(ValidationError::Invalid(vec![Problem::new(
                    "",
                    "schema",
                    "lead_type, kind, source.case_id and source.revision must be valid",
                )]))
            }
            (false, ..) => Err(ValidationError::Invalid(problems)),
        }
    }
}

/// One `control_character` problem per string or object key in `document` that holds a control
/// character other than tab, line feed and carriage return. A key's problem points at its member.
pub fn control_characters(document: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut pointer = String::new();
    walk_strings(document, &mut pointer, &mut problems);
    problems
}

fn walk_strings(value: &Value, pointer: &mut String, problems: &mut Vec<Problem>) {
    match value {
        Value::String(text) => check_text(text, pointer, "string", problems),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let length = pointer.len();
                pointer.push('/');
                pointer.push_str(&index.to_string());
                walk_strings(item, pointer, problems);
                pointer.truncate(length);
            }
        }
        Value::Object(members) => {
            for (key, member) in members {
                let length = pointer.len();
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                check_text(key, pointer, "key", problems);
                walk_strings(member, pointer, problems);
                pointer.truncate(length);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn check_text(text: &str, pointer: &str, what: &str, problems: &mut Vec<Problem>) {
    let found = text
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'));
    if let Some((position, character)) = found {
        problems.push(Problem::new(
            pointer,
            "control_character",
            format!(
                "this {what} holds the control character U+{:04X} at character {position}; only tab, line feed and carriage return are allowed",
                u32::from(character)
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// The fixtures were written for this instant; fixing it keeps them valid in later years.
    fn fixture_now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn fixtures(kind: &str) -> Vec<(PathBuf, Value)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("schemas/fixtures")
            .join(kind);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).unwrap();
                let value = json::parse(text.as_bytes())
                    .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                (path, value)
            })
            .collect()
    }

    fn caller(fixture: &Value) -> Agency {
        fixture["caller"].as_str().unwrap().parse().unwrap()
    }

    #[test]
    fn every_valid_fixture_is_accepted() {
        let validator = Validator::built_in().unwrap();
        let fixtures = fixtures("valid");
        assert!(
            fixtures.len() >= 10,
            "only {} valid fixtures",
            fixtures.len()
        );
        for (path, fixture) in fixtures {
            let result =
                validator.validate(caller(&fixture), fixture["lead"].clone(), fixture_now());
            assert!(result.is_ok(), "{}: {:?}", path.display(), result.err());
        }
    }

    #[test]
    fn every_invalid_fixture_reports_exactly_its_expected_problems() {
        let validator = Validator::built_in().unwrap();
        let fixtures = fixtures("invalid");
        assert!(
            fixtures.len() >= 25,
            "only {} invalid fixtures",
            fixtures.len()
        );
        for (path, fixture) in fixtures {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let mut expected: Vec<(String, String)> = fixture["expect"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: no expect list"))
                .iter()
                .map(|e| {
                    (
                        e["pointer"].as_str().unwrap().to_owned(),
                        e["code"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            expected.sort();
            let status = fixture["status"].as_u64().unwrap_or(422);
            let result =
                validator.validate(caller(&fixture), fixture["lead"].clone(), fixture_now());
            let mut actual: Vec<(String, String)> = match result {
                Ok(_) => panic!("{name}: accepted, expected {expected:?}"),
                Err(ValidationError::Invalid(problems)) => {
                    assert_eq!(status, 422, "{name}: got 422 problems {problems:?}");
                    for problem in &problems {
                        assert!(
                            !problem.message.is_empty(),
                            "{name}: empty message for {problem:?}"
                        );
                    }
                    problems
                        .into_iter()
                        .map(|p| (p.pointer, p.code.to_owned()))
                        .collect()
                }
                Err(ValidationError::ForeignAgency { .. }) => {
                    assert_eq!(status, 403, "{name}: refused as another agency's lead");
                    vec![("/source/agency".to_owned(), "not_callers_agency".to_owned())]
                }
            };
            actual.sort();
            assert_eq!(actual, expected, "{name}");
        }
    }

    #[test]
    fn a_lowercase_id_check_character_is_stored_upper_case() {
        let validator = Validator::built_in().unwrap();
        let mut lead: Value =
            serde_json::from_str(include_str!("../../../docs/examples/sample-lead.json")).unwrap();
        lead["subjects"][1]["id_number"] = Value::String("37032119950520108x".into());
        let validated = validator
            .validate(Agency::Environment, lead, fixture_now())
            .unwrap();
        assert_eq!(
            validated.document()["subjects"][1]["id_number"],
            "37032119950520108X"
        );
    }

    #[test]
    fn control_characters_are_found_in_strings_and_keys_with_escaped_pointers() {
        let document = serde_json::json!({
            "summary": "ok\ttab\r\nnewlines",
            "facts": {"a/b~c\u{0}": "x", "list": ["fine", "bell\u{7}", "del\u{7f}", "c1\u{85}"]},
            "subjects": [{"name": "\u{0}"}],
            "chinese": "中文，没有控制字符",
        });
        let mut found: Vec<(String, &str)> = control_characters(&document)
            .into_iter()
            .map(|p| (p.pointer, p.code))
            .collect();
        found.sort();
        assert_eq!(
            found,
            vec![
                ("/facts/a~1b~0c\u{0}".to_owned(), "control_character"),
                ("/facts/list/1".to_owned(), "control_character"),
                ("/facts/list/2".to_owned(), "control_character"),
                ("/facts/list/3".to_owned(), "control_character"),
                ("/subjects/0/name".to_owned(), "control_character"),
            ]
        );
    }

    #[test]
    fn a_lead_with_a_nul_is_refused_and_one_with_tabs_and_newlines_accepted() {
        let validator = Validator::built_in().unwrap();
        let mut lead: Value =
            serde_json::from_str(include_str!("../../../docs/examples/sample-lead.json")).unwrap();
        lead["summary"] = Value::String("第一行\r\n\t第二行".into());
        assert!(validator
            .validate(Agency::Environment, lead.clone(), fixture_now())
            .is_ok());
        lead["summary"] = Value::String("证据\u{0}".into());
        let Err(ValidationError::Invalid(problems)) =
            validator.validate(Agency::Environment, lead, fixture_now())
        else {
            panic!("a NUL in the summary was accepted")
        };
        assert_eq!(
            problems,
            vec![Problem::new(
                "/summary",
                "control_character",
                problems[0].message.clone()
            )]
        );
    }

    #[test]
    fn member_order_does_not_change_the_content_hash() {
        let validator = Validator::built_in().unwrap();
        let lead: Value =
            serde_json::from_str(include_str!("../../../docs/examples/sample-lead.json")).unwrap();
        let reordered: Value = serde_json::from_str(&{
            let mut object = lead.as_object().unwrap().clone();
            let summary = object.remove("summary").unwrap();
            let mut text = serde_json::to_string(&object).unwrap();
            text.insert_str(1, &format!("\"summary\":{summary},"));
            text
        })
        .unwrap();
        let first = validator
            .validate(Agency::Environment, lead, fixture_now())
            .unwrap();
        let second = validator
            .validate(Agency::Environment, reordered, fixture_now())
            .unwrap();
        assert_eq!(first.content_sha256(), second.content_sha256());
    }
}
