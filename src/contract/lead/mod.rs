//! The canonical lead and the identifiers it carries.
//!
//! Every identifier is a newtype with a private field and one `parse`, so code that holds a
//! `LeadId`, `Agency`, `CaseId`, `Uscc`, `IdNumber` or `DivisionCode` holds a valid one.
//! A [`ValidatedLead`] can only be made by the validator (`crate::contract::validate`), and only a
//! `ValidatedLead` can be stored or published.

mod canonical;
pub mod division;
pub mod identifiers;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

pub use canonical::canonical_json;
pub use division::{Division, DivisionCode, DivisionLevel, DivisionTable};
pub use identifiers::{IdNumber, IdNumberError, Uscc, UsccError};

/// The hub's identifier of a lead: one per (`source.agency`, `source.case_id`), the same across
/// revisions. A UUIDv7, so identifiers sort by creation time.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = String, format = Uuid)]
pub struct LeadId(Uuid);

impl LeadId {
    pub fn generate() -> Self {
        LeadId(Uuid::now_v7())
    }

    pub fn parse(text: &str) -> Option<Self> {
        Uuid::parse_str(text).ok().map(LeadId)
    }

    pub fn from_uuid(uuid: Uuid) -> Self {
        LeadId(uuid)
    }

    pub fn as_uuid(self) -> Uuid {
        self.0
    }
}

impl fmt::Display for LeadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The administrative agencies that may push leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Agency {
    Environment,
    Land,
    Safety,
    Water,
}

impl Agency {
    pub const ALL: [Agency; 4] = [
        Agency::Environment,
        Agency::Land,
        Agency::Safety,
        Agency::Water,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Agency::Environment => "environment",
            Agency::Land => "land",
            Agency::Safety => "safety",
            Agency::Water => "water",
        }
    }
}

impl FromStr for Agency {
    type Err = UnknownName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Agency::ALL
            .into_iter()
            .find(|agency| agency.as_str() == text)
            .ok_or_else(|| UnknownName(text.to_owned()))
    }
}

impl fmt::Display for Agency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of a closed set (agency, lead type, kind).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown name {0:?}")]
pub struct UnknownName(pub String);

/// The lead types of the agency contract (v1), each owned by one agency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeadType(&'static str);

impl LeadType {
    /// Every lead type of `lead-contract.md` §2, in contract order.
    pub const ALL: [LeadType; 10] = [
        LeadType("environment.discharge_exceedance"),
        LeadType("environment.hazardous_waste"),
        LeadType("environment.monitoring_tampering"),
        LeadType("environment.covert_discharge"),
        LeadType("land.farmland_occupation"),
        LeadType("land.illegal_mining"),
        LeadType("safety.major_accident"),
        LeadType("safety.hazardous_operation"),
        LeadType("water.illegal_sand_mining"),
        LeadType("water.facility_damage"),
    ];

    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// The agency that owns this lead type: the part of its name before the dot.
    pub fn agency(self) -> Agency {
        let prefix = self.0.split('.').next().unwrap_or_default();
        prefix
            .parse()
            .expect("every lead type in LeadType::ALL starts with an agency name")
    }
}

impl FromStr for LeadType {
    type Err = UnknownName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        LeadType::ALL
            .into_iter()
            .find(|lead_type| lead_type.0 == text)
            .ok_or_else(|| UnknownName(text.to_owned()))
    }
}

impl fmt::Display for LeadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// What the agency is sending: a clue (线索通报), a formal transfer (移送) or an
/// administrative-penalty case sent for 以罚代刑 screening.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeadKind {
    Clue,
    Transfer,
    Penalty,
}

impl LeadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LeadKind::Clue => "clue",
            LeadKind::Transfer => "transfer",
            LeadKind::Penalty => "penalty",
        }
    }
}

impl FromStr for LeadKind {
    type Err = UnknownName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "clue" => Ok(LeadKind::Clue),
            "transfer" => Ok(LeadKind::Transfer),
            "penalty" => Ok(LeadKind::Penalty),
            other => Err(UnknownName(other.to_owned())),
        }
    }
}

/// The agency's own case number. ASCII, 1–64 characters, so it can be part of keys and URLs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CaseId(String);

impl CaseId {
    pub fn parse(text: &str) -> Option<Self> {
        let mut chars = text.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok =
            chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'));
        (first_ok && rest_ok && text.len() <= 64).then(|| CaseId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lead that passed the JSON Schema and every domain check for its caller.
///
/// It keeps the document exactly as submitted (apart from normalisations the validator made,
/// such as upper-casing an ID number's check character) and its canonical bytes, whose SHA-256
/// identifies the content for replay detection and travels with every publication.
#[derive(Clone, Debug)]
pub struct ValidatedLead {
    lead_type: LeadType,
    kind: LeadKind,
    agency: Agency,
    case_id: CaseId,
    revision: i64,
    document: Value,
    canonical: Vec<u8>,
    content_sha256: String,
}

impl ValidatedLead {
    /// Only the validator builds these, after every check passed.
    pub(crate) fn new(
        lead_type: LeadType,
        kind: LeadKind,
        case_id: CaseId,
        revision: i64,
        document: Value,
    ) -> Self {
        let canonical = canonical_json(&document);
        let content_sha256 = hex::encode(Sha256::digest(&canonical));
        ValidatedLead {
            lead_type,
            kind,
            agency: lead_type.agency(),
            case_id,
            revision,
            document,
            canonical,
            content_sha256,
        }
    }

    pub fn lead_type(&self) -> LeadType {
        self.lead_type
    }
    pub fn kind(&self) -> LeadKind {
        self.kind
    }
    pub fn agency(&self) -> Agency {
        self.agency
    }
    pub fn case_id(&self) -> &CaseId {
        &self.case_id
    }
    pub fn revision(&self) -> i64 {
        self.revision
    }
    pub fn document(&self) -> &Value {
        &self.document
    }
    /// The lead as canonical JSON (object keys sorted, no insignificant white space).
    pub fn canonical_bytes(&self) -> &[u8] {
        &self.canonical
    }
    /// Lowercase hex SHA-256 of [`Self::canonical_bytes`].
    pub fn content_sha256(&self) -> &str {
        &self.content_sha256
    }
}

/// The subjects a lead document names, as matching keys without duplicates: `uscc:` or `id:`
/// and the trimmed, upper-cased USCC or ID number, so the same organisation or person named by
/// two agencies is one subject. A subject with neither is never matched.
pub fn subject_keys(document: &Value) -> Vec<String> {
    let mut keys: Vec<String> = document
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|subject| {
            let key = |field: &str, prefix: &str| {
                subject
                    .get(field)
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|value| !value.is_empty())
                    .map(|value| format!("{prefix}:{}", value.to_uppercase()))
            };
            [key("uscc", "uscc"), key("id_number", "id")]
        })
        .flatten()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lead_type_belongs_to_the_agency_named_by_its_prefix() {
        for lead_type in LeadType::ALL {
            assert!(lead_type.as_str().starts_with(lead_type.agency().as_str()));
            assert_eq!(lead_type.as_str().parse::<LeadType>().unwrap(), lead_type);
        }
        assert!("environment.unknown".parse::<LeadType>().is_err());
    }

    #[test]
    fn case_ids_are_ascii_and_bounded() {
        assert!(CaseId::parse("ZBHJ-2026-0153").is_some());
        assert!(CaseId::parse("a/b_c.d").is_some());
        assert!(CaseId::parse("").is_none());
        assert!(CaseId::parse("-leading").is_none());
        assert!(CaseId::parse("案件1").is_none());
        assert!(CaseId::parse(&"x".repeat(65)).is_none());
    }

    #[test]
    fn lead_ids_round_trip_and_sort_by_creation() {
        let first = LeadId::generate();
        let second = LeadId::generate();
        assert!(first < second);
        assert_eq!(LeadId::parse(&first.to_string()), Some(first));
        assert_eq!(LeadId::parse("not-a-uuid"), None);
    }
}
