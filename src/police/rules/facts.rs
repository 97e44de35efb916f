//! The facts a rule may name: each lead type's `facts` fields (lead-contract.md §2, the
//! governing names) and the figures derived from them by code.
//!
//! Derived facts exist where the law's quantity is not the one a lead carries: 亩 from m²,
//! the proportional forest combination, and the exceed multiple of each measurement with its
//! maximum per pollutant group. They are computed here once per assessment, and rules compare
//! them like any other fact.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::settings::ExceedMultipleFormula;
use crate::contract::lead::LeadType;

/// Square metres in one 亩: exactly 10000/15 (666.666… m²; 15 亩 = 1 公顷, domain.md §2.2).
/// Areas are converted the other way, `m² × 15 / 10000`, see [`mu_from_m2`].
pub const M2_PER_MU: f64 = 10_000.0 / 15.0;

/// An area in m² in 亩, computed as `m² × 15 / 10000` (domain.md §2.2) rather than by dividing
/// by the rounded [`M2_PER_MU`].
pub fn mu_from_m2(m2: f64) -> f64 {
    m2 * 15.0 / 10_000.0
}

/// How far below a threshold a figure may fall and still reach it, in the law's own unit: only
/// enough to absorb binary floating-point error, never enough to move a legal edge.
///
/// - 亩: 1e-6 亩 (domain.md §2.2). 5 亩 sent as `5 × 10000/15` m² is 5 亩; 3333.33 m²
///   (4.999995 亩) stays below it and 3333.34 m² (5.00001 亩) is above.
/// - the forest ratio `公益林/5 + 商品林/10`: 1e-7, that is 1e-6 亩 of the 10 亩 商品林 standard.
/// - exceed multiples: 1e-9 (`0.3 / 0.1` is 2.9999999999999996 in binary, and is 3 times).
/// - tonnes: 1e-9 t (a milligram), so `3000 kg / 1000` and sums of decimal tonnages that land
///   on 3 t reach it.
/// - CNY: 1e-6 CNY (a ten-thousandth of a 分), so an amount in 万元 converted `× 10000`
///   reaches its threshold.
/// - counts (persons, penalties, every integer fact): exact.
pub(crate) fn tolerance(fact: &str) -> Option<f64> {
    if fact.ends_with("_mu") {
        Some(MU_TOLERANCE)
    } else if fact == FOREST_RATIO {
        Some(MU_TOLERANCE / 10.0)
    } else if fact.starts_with(MAX_EXCEED_MULTIPLE) || fact.ends_with("_t") {
        Some(1e-9)
    } else if fact.ends_with("_cny") {
        Some(1e-6)
    } else if fact == PRIOR_PENALTIES || fact.ends_with("_m2") {
        // A count of penalties; the m² fields are compared through their 亩, but a rule may
        // still ask whether one is above zero (`grassland_m2 > 0`), which is exact. (Integer
        // facts are always compared exactly.)
        Some(0.0)
    } else {
        None
    }
}

/// The tolerance of areas in 亩 (domain.md §2.2).
pub(crate) const MU_TOLERANCE: f64 = 1e-6;

/// What kind of value a fact holds, which decides the operators a rule may use on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FactKind {
    /// A JSON integer (counts of persons or penalties).
    Integer,
    /// A JSON number.
    Number,
    Bool,
    /// A string from a closed set.
    Enum(&'static [&'static str]),
    /// A free string.
    Text,
    /// An array of HJ 212 pollutant codes.
    CodeList,
    /// The measurements of a discharge lead: only reachable through derived facts.
    Measurements,
    /// A number computed by [`derive`].
    Derived,
}

/// One fact a lead type carries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FactSpec {
    pub name: &'static str,
    pub kind: FactKind,
}

const fn fact(name: &'static str, kind: FactKind) -> FactSpec {
    FactSpec { name, kind }
}

const UNIT_TYPES: &[&str] = &["key_discharger", "permit_key", "other"];

const DISCHARGE_EXCEEDANCE: &[FactSpec] = &[
    fact("unit_type", FactKind::Enum(UNIT_TYPES)),
    fact("measurements", FactKind::Measurements),
];
const HAZARDOUS_WASTE: &[FactSpec] = &[
    fact("waste_code", FactKind::Text),
    fact("quantity_t", FactKind::Number),
    fact(
        "disposal",
        FactKind::Enum(&["discharge", "dump", "dispose"]),
    ),
];
const MONITORING_TAMPERING: &[FactSpec] = &[
    fact("unit_type", FactKind::Enum(UNIT_TYPES)),
    fact("station_mn", FactKind::Text),
    fact(
        "method",
        FactKind::Enum(&[
            "data_altered",
            "data_forged",
            "equipment_interfered",
            "sampling_interfered",
        ]),
    ),
    fact("pollutant_codes", FactKind::CodeList),
];
const COVERT_DISCHARGE: &[FactSpec] = &[
    fact(
        "method",
        FactKind::Enum(&[
            "hidden_pipe",
            "seepage_well",
            "seepage_pit",
            "crack",
            "cave",
            "injection",
            "emergency_bypass",
        ]),
    ),
    fact(
        "substance_class",
        FactKind::Enum(&["radioactive", "pathogen", "toxic", "other"]),
    ),
];
const FARMLAND_OCCUPATION: &[FactSpec] = &[
    fact("basic_farmland_m2", FactKind::Number),
    fact("other_cultivated_m2", FactKind::Number),
    fact("public_welfare_forest_m2", FactKind::Number),
    fact("commercial_forest_m2", FactKind::Number),
    fact("grassland_m2", FactKind::Number),
    fact("use_changed", FactKind::Bool),
    fact("destroyed", FactKind::Bool),
    fact("prior_penalties_2y", FactKind::Integer),
];
const ILLEGAL_MINING: &[FactSpec] = &[
    fact("mineral", FactKind::Text),
    fact("value_cny", FactKind::Number),
    fact("in_restricted_zone", FactKind::Bool),
    fact("prior_penalties_2y", FactKind::Integer),
];
const MAJOR_ACCIDENT: &[FactSpec] = &[
    fact("deaths", FactKind::Integer),
    fact("serious_injuries", FactKind::Integer),
    fact("direct_loss_cny", FactKind::Number),
];
const HAZARDOUS_OPERATION: &[FactSpec] = &[fact(
    "trigger",
    FactKind::Enum(&[
        "monitoring_disabled",
        "rectification_refused",
        "unapproved_high_risk",
    ]),
)];
const ILLEGAL_SAND_MINING: &[FactSpec] = &[
    fact("value_cny", FactKind::Number),
    fact("in_river_management_area", FactKind::Bool),
    fact("has_permit", FactKind::Bool),
    fact("in_prohibited_zone_or_period", FactKind::Bool),
    fact("prior_penalties_2y", FactKind::Integer),
    fact("flood_safety_harm_report", FactKind::Bool),
];
const FACILITY_DAMAGE: &[FactSpec] = &[
    fact("facility", FactKind::Text),
    fact("direct_loss_cny", FactKind::Number),
];

/// The `facts` fields of a lead type, as in lead-contract.md §2.
pub(crate) fn contract_facts(lead_type: LeadType) -> &'static [FactSpec] {
    match lead_type.as_str() {
        "environment.discharge_exceedance" => DISCHARGE_EXCEEDANCE,
        "environment.hazardous_waste" => HAZARDOUS_WASTE,
        "environment.monitoring_tampering" => MONITORING_TAMPERING,
        "environment.covert_discharge" => COVERT_DISCHARGE,
        "land.farmland_occupation" => FARMLAND_OCCUPATION,
        "land.illegal_mining" => ILLEGAL_MINING,
        "safety.major_accident" => MAJOR_ACCIDENT,
        "safety.hazardous_operation" => HAZARDOUS_OPERATION,
        "water.illegal_sand_mining" => ILLEGAL_SAND_MINING,
        "water.facility_damage" => FACILITY_DAMAGE,
        _ => &[],
    }
}

/// Largest exceed multiple over every measurement.
pub(crate) const MAX_EXCEED_MULTIPLE: &str = "max_exceed_multiple";
/// Largest exceed multiple over the ENV-3 pollutant group.
pub(crate) const MAX_EXCEED_MULTIPLE_ENV3: &str = "max_exceed_multiple_env3";
/// Largest exceed multiple over the ENV-4 pollutant group.
pub(crate) const MAX_EXCEED_MULTIPLE_ENV4: &str = "max_exceed_multiple_env4";
/// Prefix of the informational per-pollutant maxima (`exceed_multiple.w20120`).
pub(crate) const EXCEED_MULTIPLE_PREFIX: &str = "exceed_multiple.";
/// `public_welfare_forest_mu / 5 + commercial_forest_mu / 10` (法释〔2023〕8号 第一条第二款第（三）项).
pub(crate) const FOREST_RATIO: &str = "forest_ratio";
/// The earlier administrative penalties a rule counts: the larger of the count the agency
/// declared and the hub's own count (see `priors`). Only a rule with a `prior_penalties` block
/// may name it, and its value is that rule's own.
pub(crate) const PRIOR_PENALTIES: &str = "prior_penalties";

/// The m² facts of a farmland lead and the 亩 fact derived from each.
pub(crate) const AREAS: [(&str, &str); 5] = [
    ("basic_farmland_m2", "basic_farmland_mu"),
    ("other_cultivated_m2", "other_cultivated_mu"),
    ("public_welfare_forest_m2", "public_welfare_forest_mu"),
    ("commercial_forest_m2", "commercial_forest_mu"),
    ("grassland_m2", "grassland_mu"),
];

/// The derived facts rules may name, per lead type.
pub(crate) fn derived_facts(lead_type: LeadType) -> &'static [&'static str] {
    match lead_type.as_str() {
        "environment.discharge_exceedance" => &[
            MAX_EXCEED_MULTIPLE,
            MAX_EXCEED_MULTIPLE_ENV3,
            MAX_EXCEED_MULTIPLE_ENV4,
        ],
        "land.farmland_occupation" => &[
            "basic_farmland_mu",
            "other_cultivated_mu",
            "public_welfare_forest_mu",
            "commercial_forest_mu",
            "grassland_mu",
            FOREST_RATIO,
        ],
        _ => &[],
    }
}

/// The kind of the fact `name` of `lead_type`, contract or derived; `None` if it has no such
/// fact.
pub(crate) fn fact_kind(lead_type: LeadType, name: &str) -> Option<FactKind> {
    contract_facts(lead_type)
        .iter()
        .find(|spec| spec.name == name)
        .map(|spec| spec.kind)
        .or_else(|| {
            derived_facts(lead_type)
                .contains(&name)
                .then_some(FactKind::Derived)
        })
}

/// What derivation needs from the settings.
#[derive(Clone, Debug)]
pub(crate) struct Derivation {
    pub formula: ExceedMultipleFormula,
    pub env3: BTreeSet<String>,
    pub env4: BTreeSet<String>,
}

impl Derivation {
    /// The derived facts of one lead. A fact whose inputs are missing or not numbers is left
    /// out, so a rule naming it is "not met"; every value present is finite.
    pub(crate) fn derive(&self, lead_type: LeadType, facts: &Value) -> BTreeMap<String, f64> {
        let mut derived = BTreeMap::new();
        match lead_type.as_str() {
            "environment.discharge_exceedance" => self.exceed_multiples(facts, &mut derived),
            "land.farmland_occupation" => areas_in_mu(facts, &mut derived),
            _ => {}
        }
        derived
    }

    fn exceed_multiples(&self, facts: &Value, derived: &mut BTreeMap<String, f64>) {
        let Some(measurements) = facts.get("measurements").and_then(Value::as_array) else {
            return;
        };
        for measurement in measurements {
            let (Some(code), Some(value), Some(limit)) = (
                measurement.get("pollutant_code").and_then(Value::as_str),
                measurement.get("value").and_then(Value::as_f64),
                measurement.get("limit").and_then(Value::as_f64),
            ) else {
                continue;
            };
            let Some(multiple) = self.formula.multiple(value, limit) else {
                continue;
            };
            raise(
                derived,
                &format!("{EXCEED_MULTIPLE_PREFIX}{code}"),
                multiple,
            );
            raise(derived, MAX_EXCEED_MULTIPLE, multiple);
            if self.env3.contains(code) {
                raise(derived, MAX_EXCEED_MULTIPLE_ENV3, multiple);
            }
            if self.env4.contains(code) {
                raise(derived, MAX_EXCEED_MULTIPLE_ENV4, multiple);
            }
        }
    }
}

fn raise(derived: &mut BTreeMap<String, f64>, name: &str, value: f64) {
    derived
        .entry(name.to_owned())
        .and_modify(|current| *current = current.max(value))
        .or_insert(value);
}

fn areas_in_mu(facts: &Value, derived: &mut BTreeMap<String, f64>) {
    for (m2, mu) in AREAS {
        if let Some(area) = facts.get(m2).and_then(Value::as_f64) {
            let area_mu = mu_from_m2(area);
            if area_mu.is_finite() {
                derived.insert(mu.to_owned(), area_mu);
            }
        }
    }
    if let (Some(public_welfare), Some(commercial)) = (
        derived.get("public_welfare_forest_mu"),
        derived.get("commercial_forest_mu"),
    ) {
        let ratio = public_welfare / 5.0 + commercial / 10.0;
        if ratio.is_finite() {
            derived.insert(FOREST_RATIO.to_owned(), ratio);
        }
    }
}
