//! The JSON Schemas in force, compiled once at start-up.
//!
//! `schemas/envelope.schema.json` describes the lead envelope with `facts` left open;
//! `schemas/facts/<lead_type>.schema.json` describes the facts of one lead type. For each lead
//! type the registry composes the two into one schema (the one served at
//! `GET /v1/schemas/{lead_type}`) and compiles it. No reference is ever fetched from a network
//! or a file: the documents are self-contained or start-up fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{Draft, Validator};
use serde_json::{json, Value};

use super::Problem;
use crate::contract::lead::LeadType;

const BUILT_IN_ENVELOPE: &str = include_str!("../../../schemas/envelope.schema.json");

macro_rules! built_in_facts {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!("../../../schemas/facts/", $name, ".schema.json")))),*]
    };
}

const BUILT_IN_FACTS: [(&str, &str); 10] = built_in_facts!(
    "environment.discharge_exceedance",
    "environment.hazardous_waste",
    "environment.monitoring_tampering",
    "environment.covert_discharge",
    "land.farmland_occupation",
    "land.illegal_mining",
    "safety.major_accident",
    "safety.hazardous_operation",
    "water.illegal_sand_mining",
    "water.facility_damage",
);

/// A schema that cannot be used; start-up stops with this message.
#[derive(Debug, thiserror::Error)]
#[error("schema {origin}: {reason}")]
pub struct SchemaError {
    origin: String,
    reason: String,
}

struct CompiledSchema {
    document: Value,
    validator: Validator,
}

/// The compiled schemas: the bare envelope (used when the lead type is unknown) and one
/// composed schema per lead type.
pub struct SchemaRegistry {
    envelope: CompiledSchema,
    by_lead_type: BTreeMap<LeadType, CompiledSchema>,
}

impl SchemaRegistry {
    /// The schemas compiled into the binary from `schemas/`.
    pub fn built_in() -> Result<Self, SchemaError> {
        let facts = BUILT_IN_FACTS
            .iter()
            .map(|(name, text)| {
                (
                    name.to_string(),
                    format!("schemas/facts/{name}.schema.json"),
                    text.to_string(),
                )
            })
            .collect();
        Self::compile("schemas/envelope.schema.json", BUILT_IN_ENVELOPE, facts)
    }

    /// Loads the schemas from a directory laid out like `schemas/` (an operator's override).
    pub fn from_dir(dir: &Path) -> Result<Self, SchemaError> {
        let read = |path: PathBuf| -> Result<(String, String), SchemaError> {
            let origin = path.display().to_string();
            std::fs::read_to_string(&path)
                .map(|text| (origin.clone(), text))
                .map_err(|error| SchemaError {
                    origin,
                    reason: error.to_string(),
                })
        };
        let (envelope_origin, envelope) = read(dir.join("envelope.schema.json"))?;
        let mut facts = Vec::new();
        for lead_type in LeadType::ALL {
            let (origin, text) = read(dir.join("facts").join(format!("{lead_type}.schema.json")))?;
            facts.push((lead_type.to_string(), origin, text));
        }
        Self::compile(&envelope_origin, &envelope, facts)
    }

    fn compile(
        envelope_origin: &str,
        envelope_text: &str,
        facts: Vec<(String, String, String)>,
    ) -> Result<Self, SchemaError> {
        let envelope_document = parse_document(envelope_origin, envelope_text)?;
        let envelope = CompiledSchema {
            validator: build(envelope_origin, &envelope_document)?,
            document: envelope_document.clone(),
        };
        let mut by_lead_type = BTreeMap::new();
        for (name, origin, text) in facts {
            let lead_type: LeadType = name.parse().map_err(|_| SchemaError {
                origin: origin.clone(),
                reason: format!("{name} is not a lead type of the contract"),
            })?;
            let facts_document = parse_document(&origin, &text)?;
            // Compile the facts schema alone first so a broken one is named precisely.
            build(&origin, &facts_document)?;
            let document = compose(lead_type, &envelope_document, &facts_document);
            let validator = build(
                &format!("{origin} composed with {envelope_origin}"),
                &document,
            )?;
            by_lead_type.insert(
                lead_type,
                CompiledSchema {
                    document,
                    validator,
                },
            );
        }
        if let Some(missing) = LeadType::ALL.iter().find(|t| !by_lead_type.contains_key(t)) {
            return Err(SchemaError {
                origin: "schemas/facts".into(),
                reason: format!("no facts schema for {missing}"),
            });
        }
        Ok(SchemaRegistry {
            envelope,
            by_lead_type,
        })
    }

    /// The composed schema of a lead type, as served to agencies.
    pub fn document(&self, lead_type: LeadType) -> &Value {
        &self.by_lead_type[&lead_type].document
    }

    pub fn envelope_document(&self) -> &Value {
        &self.envelope.document
    }

    /// Every schema problem of `lead`: against the lead type's schema when the lead type is
    /// known, otherwise against the envelope alone.
    pub fn problems(&self, lead_type: Option<LeadType>, lead: &Value) -> Vec<Problem> {
        let schema = lead_type
            .and_then(|t| self.by_lead_type.get(&t))
            .unwrap_or(&self.envelope);
        let mut problems = Vec::new();
        for error in schema.validator.iter_errors(lead) {
            push_problems(&error, &mut problems);
        }
        problems
    }
}

fn parse_document(origin: &str, text: &str) -> Result<Value, SchemaError> {
    serde_json::from_str(text).map_err(|error| SchemaError {
        origin: origin.to_owned(),
        reason: format!("not JSON: {error}"),
    })
}

fn build(origin: &str, document: &Value) -> Result<Validator, SchemaError> {
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .build(document)
        .map_err(|error| SchemaError {
            origin: origin.to_owned(),
            reason: error.to_string(),
        })
}

/// One schema for one lead type: the envelope (kept as an embedded resource with its own
/// `$id`, so its internal references still resolve) plus this type's facts and name.
fn compose(lead_type: LeadType, envelope: &Value, facts: &Value) -> Value {
    let mut facts = facts.clone();
    if let Some(object) = facts.as_object_mut() {
        // The facts schema is inlined; its own identity would only shadow the composed one.
        object.remove("$schema");
        object.remove("$id");
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("urn:leadbridge:schema:lead:{lead_type}:v1"),
        "title": format!("LeadBridge lead {lead_type} (v1)"),
        "allOf": [envelope],
        "properties": {
            "lead_type": {"const": lead_type.as_str()},
            "facts": facts,
        },
    })
}

fn escape_pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Shortens a JSON value for a message: schema values can be long enum lists.
fn brief(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 160 {
        let cut: String = text.chars().take(157).collect();
        format!("{cut}...")
    } else {
        text
    }
}

fn push_problems(error: &jsonschema::ValidationError<'_>, problems: &mut Vec<Problem>) {
    let path = error.instance_path().as_str().to_owned();
    let at = |code: &'static str, message: String| Problem::new(path.clone(), code, message);
    let problem = match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| property.to_string());
            Problem::new(
                format!("{path}/{}", escape_pointer_token(&name)),
                "required",
                format!("{name} is required"),
            )
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            for name in unexpected {
                problems.push(Problem::new(
                    format!("{path}/{}", escape_pointer_token(name)),
                    "unknown_property",
                    format!("{name} is not a property of this object in the v1 contract"),
                ));
            }
            return;
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            at("type", format!("expected {}", with_article(&expected)))
        }
        ValidationErrorKind::Enum { options } => {
            at("enum", format!("expected one of {}", brief(options)))
        }
        ValidationErrorKind::Constant { expected_value } => {
            at("const", format!("expected {}", brief(expected_value)))
        }
        ValidationErrorKind::Pattern { pattern } => {
            at("pattern", format!("does not match {pattern}"))
        }
        ValidationErrorKind::Format { format } => at("format", format_message(format)),
        ValidationErrorKind::Minimum { limit } => {
            at("minimum", format!("must be at least {limit}"))
        }
        ValidationErrorKind::Maximum { limit } => at("maximum", format!("must be at most {limit}")),
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            at("exclusive_minimum", format!("must be greater than {limit}"))
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            at("exclusive_maximum", format!("must be less than {limit}"))
        }
        ValidationErrorKind::MinLength { limit } => at(
            "min_length",
            format!("must have at least {limit} characters"),
        ),
        ValidationErrorKind::MaxLength { limit } => at(
            "max_length",
            format!("must have at most {limit} characters"),
        ),
        ValidationErrorKind::MinItems { limit } => {
            at("min_items", format!("must have at least {limit} items"))
        }
        ValidationErrorKind::MaxItems { limit } => {
            at("max_items", format!("must have at most {limit} items"))
        }
        ValidationErrorKind::UniqueItems => at("unique_items", "items must be unique".into()),
        _ => {
            let text = error.to_string();
            let message: String = text.chars().take(300).collect();
            at("schema", message)
        }
    };
    problems.push(problem);
}

fn with_article(type_name: &str) -> String {
    match type_name.chars().next() {
        Some('a' | 'i' | 'o') => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}

fn format_message(format: &str) -> String {
    match format {
        "date-time" => {
            "expected an RFC 3339 date-time with offset, e.g. 2026-11-20T16:00:00+08:00".into()
        }
        "uri" => "expected an absolute URI".into(),
        other => format!("not a valid {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_schemas_compile_and_compose_for_every_lead_type() {
        let registry = SchemaRegistry::built_in().expect("built-in schemas compile");
        for lead_type in LeadType::ALL {
            let document = registry.document(lead_type);
            assert_eq!(
                document["properties"]["lead_type"]["const"],
                lead_type.as_str()
            );
        }
    }

    #[test]
    fn a_broken_schema_directory_names_the_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("facts")).unwrap();
        std::fs::write(dir.path().join("envelope.schema.json"), BUILT_IN_ENVELOPE).unwrap();
        for (name, text) in BUILT_IN_FACTS {
            std::fs::write(
                dir.path().join("facts").join(format!("{name}.schema.json")),
                text,
            )
            .unwrap();
        }
        assert!(SchemaRegistry::from_dir(dir.path()).is_ok());

        let broken = dir.path().join("facts/land.illegal_mining.schema.json");
        std::fs::write(
            &broken,
            r#"{"type": "object", "properties": {"x": {"type": "nonsense"}}}"#,
        )
        .unwrap();
        let error = SchemaRegistry::from_dir(dir.path())
            .err()
            .expect("a broken schema is refused");
        assert!(
            error
                .to_string()
                .contains("land.illegal_mining.schema.json"),
            "{error}"
        );

        std::fs::write(&broken, "{ not json").unwrap();
        let error = SchemaRegistry::from_dir(dir.path())
            .err()
            .expect("non-JSON is refused");
        assert!(error.to_string().contains("not JSON"), "{error}");

        std::fs::remove_file(&broken).unwrap();
        let error = SchemaRegistry::from_dir(dir.path())
            .err()
            .expect("a missing schema is refused");
        assert!(error.to_string().contains("land.illegal_mining"), "{error}");
    }

    #[test]
    fn references_to_the_network_are_never_resolved() {
        let document = json!({"$ref": "https://example.invalid/schema.json"});
        assert!(build("test", &document).is_err());
    }
}
