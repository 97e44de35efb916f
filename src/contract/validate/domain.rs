//! Domain checks that run after the schema, each on parts of the lead the schema accepted.

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, Utc};
use serde_json::Value;

use super::Problem;
use crate::contract::lead::{
    DivisionCode, DivisionLevel, DivisionTable, IdNumber, IdNumberError, LeadType, Uscc, UsccError,
};

pub(super) struct Context<'a> {
    pub divisions: &'a DivisionTable,
    pub now: DateTime<Utc>,
    pub clock_skew: Duration,
    /// Pointers the schema already reported; checks skip them and their descendants.
    pub schema_failures: &'a [String],
}

impl Context<'_> {
    fn failed(&self, pointer: &str) -> bool {
        self.schema_failures.iter().any(|failure| {
            pointer == failure
                || (pointer.starts_with(failure.as_str())
                    && pointer.as_bytes().get(failure.len()) == Some(&b'/'))
        })
    }

    /// The value at `pointer` when the schema accepted it.
    fn read<'v>(&self, document: &'v Value, pointer: &str) -> Option<&'v Value> {
        if self.failed(pointer) {
            None
        } else {
            document.pointer(pointer)
        }
    }

    fn read_str<'v>(&self, document: &'v Value, pointer: &str) -> Option<&'v str> {
        self.read(document, pointer).and_then(Value::as_str)
    }

    fn read_time(&self, document: &Value, pointer: &str) -> Option<DateTime<FixedOffset>> {
        self.read_str(document, pointer)
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
    }

    /// The calendar date in China at `now`: what "today" means for a birth date.
    fn today_in_china(&self) -> NaiveDate {
        let china = FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset");
        self.now.with_timezone(&china).date_naive()
    }
}

/// The documents of Decree 310 art. 6 that a formal transfer must carry.
const TRANSFER_REQUIRED_KINDS: [(&str, &str); 3] = [
    ("transfer_letter", "涉嫌犯罪案件移送书 (transfer_letter)"),
    (
        "investigation_report",
        "涉嫌犯罪案件情况的调查报告 (investigation_report)",
    ),
    ("item_list", "涉案物品清单 (item_list)"),
];
const TRANSFER_TEST_REPORT_KINDS: [&str; 3] =
    ["inspection_report", "appraisal", "monitoring_report"];

/// The areas of a farmland-occupation lead, of which at least one must be positive.
const LAND_AREA_FIELDS: [&str; 5] = [
    "basic_farmland_m2",
    "other_cultivated_m2",
    "public_welfare_forest_m2",
    "commercial_forest_m2",
    "grassland_m2",
];

/// Runs every domain check; may normalise `document` (an ID number's `x` becomes `X`).
pub(super) fn check(
    context: &Context<'_>,
    lead_type: Option<LeadType>,
    document: &mut Value,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    check_lead_type_owner(context, lead_type, document, &mut problems);
    check_times(context, document, &mut problems);
    check_divisions(context, document, &mut problems);
    check_subjects(context, document, &mut problems);
    check_transfer_attachments(context, document, &mut problems);
    if lead_type == Some(LeadType::ALL[4]) {
        check_land_areas(context, document, &mut problems);
    }
    check_extensions_size(context, document, &mut problems);
    problems
}

fn check_lead_type_owner(
    context: &Context<'_>,
    lead_type: Option<LeadType>,
    document: &Value,
    problems: &mut Vec<Problem>,
) {
    let (Some(lead_type), Some(agency)) = (lead_type, context.read_str(document, "/source/agency"))
    else {
        return;
    };
    if lead_type.agency().as_str() != agency {
        problems.push(Problem::new(
            "/lead_type",
            "agency_mismatch",
            format!(
                "{lead_type} belongs to {}, but source.agency is {agency}",
                lead_type.agency()
            ),
        ));
    }
}

fn check_times(context: &Context<'_>, document: &Value, problems: &mut Vec<Problem>) {
    let occurred = context.read_time(document, "/occurred_at");
    let reported = context.read_time(document, "/reported_at");
    let approved = context.read_time(document, "/source/approved_at");
    let latest_allowed = context.now + context.clock_skew;
    if let Some(reported) = reported {
        if reported.with_timezone(&Utc) > latest_allowed {
            problems.push(Problem::new(
                "/reported_at",
                "future_time",
                format!(
                    "{reported} is later than now ({}) plus the allowed clock skew",
                    context.now.to_rfc3339()
                ),
            ));
        }
    }
    if let (Some(occurred), Some(reported)) = (occurred, reported) {
        if occurred > reported {
            problems.push(Problem::new(
                "/occurred_at",
                "time_order",
                format!("occurred_at {occurred} is after reported_at {reported}"),
            ));
        }
    }
    if let (Some(approved), Some(reported)) = (approved, reported) {
        if approved > reported {
            problems.push(Problem::new(
                "/source/approved_at",
                "time_order",
                format!("approved_at {approved} is after reported_at {reported}: a transfer follows its approval"),
            ));
        }
    }
}

fn check_divisions(context: &Context<'_>, document: &Value, problems: &mut Vec<Problem>) {
    if let Some(text) = context.read_str(document, "/location/division_code") {
        match lookup(context, text) {
            None => problems.push(unknown_division("/location/division_code", text)),
            Some(division) if !division.in_force() => problems.push(Problem::new(
                "/location/division_code",
                "division_retired",
                format!(
                    "{text} ({}) went out of use in {}; use the code in force today",
                    division.name,
                    division.valid_until_year.unwrap_or_default()
                ),
            )),
            Some(division) if division.level != DivisionLevel::County => {
                problems.push(Problem::new(
                    "/location/division_code",
                    "division_not_county",
                    format!(
                        "{text} ({}) is not a county-level code; give the district or county",
                        division.name
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(text) = context.read_str(document, "/source/unit_division") {
        match lookup(context, text) {
            None => problems.push(unknown_division("/source/unit_division", text)),
            Some(division) if !division.in_force() => problems.push(Problem::new(
                "/source/unit_division",
                "division_retired",
                format!(
                    "{text} ({}) went out of use in {}",
                    division.name,
                    division.valid_until_year.unwrap_or_default()
                ),
            )),
            Some(division) if division.level == DivisionLevel::Aggregate => {
                problems.push(Problem::new(
                    "/source/unit_division",
                    "division_aggregate",
                    format!(
                        "{text} ({}) is a historical roll-up code, not an office's division",
                        division.name
                    ),
                ))
            }
            Some(_) => {}
        }
    }
}

fn lookup<'t>(context: &Context<'t>, text: &str) -> Option<&'t crate::contract::lead::Division> {
    DivisionCode::parse(text).and_then(|code| context.divisions.get(code))
}

fn unknown_division(pointer: &str, text: &str) -> Problem {
    Problem::new(
        pointer,
        "unknown_division",
        format!("{text} is not a GB/T 2260 code"),
    )
}

fn check_subjects(context: &Context<'_>, document: &mut Value, problems: &mut Vec<Problem>) {
    let count = context
        .read(document, "/subjects")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    for index in 0..count {
        let base = format!("/subjects/{index}");
        match context.read_str(document, &format!("{base}/type")) {
            Some("organization") => check_organization(context, document, &base, problems),
            Some("person") => check_person(context, document, &base, problems),
            _ => {}
        }
    }
}

fn check_organization(
    context: &Context<'_>,
    document: &Value,
    base: &str,
    problems: &mut Vec<Problem>,
) {
    let pointer = format!("{base}/uscc");
    if context.failed(&pointer) {
        return;
    }
    match document.pointer(&pointer).and_then(Value::as_str) {
        Some(text) => match Uscc::parse(text) {
            Ok(_) => {}
            Err(error @ UsccError::Checksum { .. }) => {
                problems.push(Problem::new(pointer, "uscc_checksum", error.to_string()))
            }
            Err(error @ UsccError::Format) => {
                problems.push(Problem::new(pointer, "pattern", error.to_string()))
            }
        },
        None if declared_unknown(document, base, "uscc_unknown") => {}
        None => problems.push(Problem::new(
            pointer,
            "identifier_required",
            "an organization needs its uscc, or uscc_unknown: true when it is not known",
        )),
    }
}

fn check_person(
    context: &Context<'_>,
    document: &mut Value,
    base: &str,
    problems: &mut Vec<Problem>,
) {
    let pointer = format!("{base}/id_number");
    if context.failed(&pointer) {
        return;
    }
    let text = document
        .pointer(&pointer)
        .and_then(Value::as_str)
        .map(str::to_owned);
    match text {
        Some(text) => match IdNumber::parse(&text, context.today_in_china()) {
            Ok(id) => {
                if id.as_str() != text {
                    if let Some(slot) = document.pointer_mut(&pointer) {
                        *slot = Value::String(id.as_str().to_owned());
                    }
                }
            }
            Err(error @ (IdNumberError::Date(_) | IdNumberError::FutureDate(_))) => {
                problems.push(Problem::new(pointer, "id_number_date", error.to_string()))
            }
            Err(error @ IdNumberError::Checksum { .. }) => problems.push(Problem::new(
                pointer,
                "id_number_checksum",
                error.to_string(),
            )),
            Err(error @ IdNumberError::Format) => {
                problems.push(Problem::new(pointer, "pattern", error.to_string()))
            }
        },
        None if declared_unknown(document, base, "id_unknown") => {}
        None => problems.push(Problem::new(
            pointer,
            "identifier_required",
            "a person needs an id_number, or id_unknown: true when it is not known",
        )),
    }
}

fn declared_unknown(document: &Value, base: &str, flag: &str) -> bool {
    document.pointer(&format!("{base}/{flag}")) == Some(&Value::Bool(true))
}

fn check_transfer_attachments(
    context: &Context<'_>,
    document: &Value,
    problems: &mut Vec<Problem>,
) {
    if context.read_str(document, "/kind") != Some("transfer") {
        return;
    }
    let Some(attachments) = context
        .read(document, "/attachments")
        .and_then(Value::as_array)
    else {
        return;
    };
    let kinds: Vec<&str> = attachments
        .iter()
        .filter_map(|attachment| attachment.get("kind").and_then(Value::as_str))
        .collect();
    for (kind, description) in TRANSFER_REQUIRED_KINDS {
        if !kinds.contains(&kind) {
            problems.push(Problem::new(
                "/attachments",
                "transfer_attachments",
                format!("a transfer must attach {description} (Decree 310 art. 6)"),
            ));
        }
    }
    if !kinds
        .iter()
        .any(|kind| TRANSFER_TEST_REPORT_KINDS.contains(kind))
    {
        problems.push(Problem::new(
            "/attachments",
            "transfer_attachments",
            "a transfer must attach a test report or appraisal: one of inspection_report, appraisal, monitoring_report (Decree 310 art. 6)",
        ));
    }
}

/// Largest `extensions` object, as compact JSON. The hub does not interpret extensions, so
/// they must not crowd out the lead under `limits.max_lead_bytes`.
pub const MAX_EXTENSIONS_BYTES: usize = 64 * 1024;

fn check_extensions_size(context: &Context<'_>, document: &Value, problems: &mut Vec<Problem>) {
    let Some(extensions) = context.read(document, "/extensions") else {
        return;
    };
    let size = serde_json::to_vec(extensions)
        .expect("JSON values serialise")
        .len();
    if size > MAX_EXTENSIONS_BYTES {
        problems.push(Problem::new(
            "/extensions",
            "max_size",
            format!("extensions are {size} bytes as compact JSON; at most {MAX_EXTENSIONS_BYTES} are allowed"),
        ));
    }
}

fn check_land_areas(context: &Context<'_>, document: &Value, problems: &mut Vec<Problem>) {
    let mut areas = Vec::new();
    for field in LAND_AREA_FIELDS {
        match context
            .read(document, &format!("/facts/{field}"))
            .and_then(Value::as_f64)
        {
            Some(area) => areas.push(area),
            None => return,
        }
    }
    if areas.iter().all(|area| *area <= 0.0) {
        problems.push(Problem::new(
            "/facts",
            "area_required",
            "at least one of basic_farmland_m2, other_cultivated_m2, public_welfare_forest_m2, commercial_forest_m2, grassland_m2 must be greater than 0",
        ));
    }
}
