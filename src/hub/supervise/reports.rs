//! What supervisors are shown, computed from the leads the hub holds (supervision contract §5):
//! the 以罚代刑 screening, the monthly report (一月一排名) with its score and rank, and the
//! spot audit's sample (一月一督查). Every function takes the time it evaluates at, so the same
//! data and time give the same answer — what the tests hold it to with a clock of their own.
//!
//! The score (documented in `docs/supervision.md`, weights in `[supervision.weights]`):
//! `score = decision_on_time·w₁ + feedback·w₂ + handoff_within_target·w₃
//!        − overdue_now·w₄ − screening_flags·w₅`, where the three rates are in [0, 1] and a rate
//! with nothing to measure counts as 1 (a group is not marked down for having had no such
//! lead); rank 1 is the highest score, equal scores share a rank.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::contract::deadlines::{shanghai, Clock, ClockName, ClockState, Clocks};
use crate::contract::lead::{subject_keys, Agency};
use crate::hub::store::clocks::clock_facts;
use crate::hub::store::supervision::SupervisedLead;
use crate::shared::store::StoreError;

/// `[supervision]`: the screening window and the report's weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionSettings {
    /// A `penalty` or `clue` lead meeting a criminal threshold is flagged unless a `transfer`
    /// of the same case or a same subject was accepted within this many days either side.
    pub screening_window_days: i64,
    pub weights: ReportWeights,
}

impl Default for SupervisionSettings {
    fn default() -> Self {
        SupervisionSettings {
            screening_window_days: 90,
            weights: ReportWeights::default(),
        }
    }
}

/// The monthly report's weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportWeights {
    pub decision_on_time: f64,
    pub feedback: f64,
    pub handoff_within_target: f64,
    /// The handoff target (accepted → delivered), in seconds.
    pub handoff_target_secs: i64,
    pub overdue_now: f64,
    pub screening_flag: f64,
}

impl Default for ReportWeights {
    fn default() -> Self {
        ReportWeights {
            decision_on_time: 40.0,
            feedback: 30.0,
            handoff_within_target: 30.0,
            handoff_target_secs: 24 * 3600,
            overdue_now: 5.0,
            screening_flag: 5.0,
        }
    }
}

/// A month in Asia/Shanghai (`2026-11`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    pub fn parse(text: &str) -> Option<Month> {
        let (year, month) = text.split_once('-')?;
        if year.len() != 4 || month.len() != 2 {
            return None;
        }
        let month = Month {
            year: year.parse().ok()?,
            month: month.parse().ok()?,
        };
        NaiveDate::from_ymd_opt(month.year, month.month, 1).map(|_| month)
    }

    /// The month `at` falls in, in Asia/Shanghai.
    pub fn of(at: DateTime<Utc>) -> Month {
        let local = at.with_timezone(&shanghai());
        Month {
            year: local.year(),
            month: local.month(),
        }
    }

    /// `[start, end)` in UTC.
    pub fn bounds(self) -> (DateTime<Utc>, DateTime<Utc>) {
        let start = |year: i32, month: u32| {
            shanghai()
                .from_local_datetime(
                    &NaiveDate::from_ymd_opt(year, month, 1)
                        .expect("a valid month")
                        .and_hms_opt(0, 0, 0)
                        .expect("midnight"),
                )
                .single()
                .expect("Asia/Shanghai has no DST")
                .with_timezone(&Utc)
        };
        let (next_year, next_month) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        (start(self.year, self.month), start(next_year, next_month))
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The Chinese name of an agency, as reports print it.
pub fn agency_name(agency: Agency) -> &'static str {
    match agency {
        Agency::Environment => "生态环境部门",
        Agency::Land => "自然资源部门",
        Agency::Safety => "应急管理部门",
        Agency::Water => "水行政部门",
    }
}

/// The clocks of a lead at `now`.
pub fn lead_clocks(
    lead: &SupervisedLead,
    clocks: &Clocks,
    now: DateTime<Utc>,
) -> Result<Vec<Clock>, StoreError> {
    let facts = clock_facts(lead.lead_id, &lead.kind, lead.revision, &lead.timeline)?;
    Ok(clocks.clocks(&facts, now))
}

/// The rules a lead's assessment found met: (rule, citation, offence, article).
fn met_rules(lead: &SupervisedLead) -> Vec<Value> {
    let Some(assessment) = &lead.assessment else {
        return Vec::new();
    };
    let mut met = Vec::new();
    for offence in assessment["suspected_offences"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let rules = offence["rules"].as_array().cloned().unwrap_or_default();
        let citations = offence["citations"].as_array().cloned().unwrap_or_default();
        for (index, rule) in rules.iter().enumerate() {
            met.push(json!({
                "rule": rule,
                "citation": citations.get(index).cloned().unwrap_or(Value::Null),
                "offence": offence["offence"],
                "article": offence["article"],
            }));
        }
    }
    met
}

/// The 以罚代刑 screening: of `candidates`, each `penalty` or `clue` lead whose assessment met
/// a criminal-threshold rule and for which no `transfer` of the same case, or naming a same
/// subject, was accepted within the window either side of it. `transfers` are every transfer
/// lead the hub holds (of any agency: a subject transferred by another agency counts).
pub fn screening(
    candidates: &[SupervisedLead],
    transfers: &[SupervisedLead],
    window_days: i64,
    now: DateTime<Utc>,
) -> Vec<Value> {
    let window = Duration::days(window_days);
    let mut flagged = Vec::new();
    for lead in candidates {
        if !matches!(lead.kind.as_str(), "penalty" | "clue") {
            continue;
        }
        let rules = met_rules(lead);
        if rules.is_empty() {
            continue;
        }
        // The same case sent as a transfer in an earlier revision.
        let same_case = lead.timeline.iter().any(|event| {
            event.event == "received" && event.details.get("kind") == Some(&json!("transfer"))
        });
        let subjects: HashSet<String> = subject_keys(&lead.document).into_iter().collect();
        let transferred = same_case
            || transfers.iter().any(|transfer| {
                transfer.lead_id != lead.lead_id
                    && (transfer.created_at - lead.created_at).abs() <= window
                    && ((transfer.agency == lead.agency && transfer.case_id == lead.case_id)
                        || subject_keys(&transfer.document)
                            .iter()
                            .any(|subject| subjects.contains(subject)))
            });
        if transferred {
            continue;
        }
        let waited = (now - lead.created_at).max(Duration::zero());
        flagged.push(json!({
            "lead_id": lead.lead_id,
            "agency": lead.agency,
            "lead_type": lead.lead_type,
            "kind": lead.kind,
            "case_id": lead.case_id,
            "status": lead.status,
            "district": lead.district(),
            "received_at": lead.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "rules": rules,
            "facts": lead.document.get("facts").cloned().unwrap_or(Value::Null),
            "subjects": subjects.into_iter().collect::<std::collections::BTreeSet<_>>(),
            "waited_secs": waited.num_seconds(),
            "waited_days": waited.num_days(),
        }));
    }
    flagged
}

/// How a report groups its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Agency,
    District,
}

/// One row of the monthly report.
#[derive(Clone, Debug, Serialize)]
pub struct ReportRow {
    /// The agency (`environment`, …) or the district code.
    pub key: String,
    /// Its Chinese name.
    pub name: String,
    pub sent: u64,
    /// Submissions refused by validation (by agency only: a refused document names no
    /// district the hub vouches for).
    pub rejected: Option<u64>,
    pub by_kind: BTreeMap<String, u64>,
    pub received_by_police: u64,
    pub filed: u64,
    pub not_filed: u64,
    pub returned: u64,
    pub reconsiderations: u64,
    /// Accepted → delivered, in seconds; null when nothing was delivered.
    pub handoff_median_secs: Option<i64>,
    pub handoff_p90_secs: Option<i64>,
    /// Police decisions made in time, of those made; null when none was made.
    pub decision_on_time_rate: Option<f64>,
    /// Clocks of the month's leads overdue at the report's time.
    pub overdue_now: u64,
    /// Leads received by the police that the agency has had an answer on.
    pub feedback_rate: Option<f64>,
    pub screening_flags: u64,
    pub score: f64,
    pub rank: u64,
}

/// The report: the month, the grouping, when it was computed, the weights, the rows by rank.
#[derive(Clone, Debug, Serialize)]
pub struct MonthlyReport {
    pub month: String,
    pub by: GroupBy,
    pub computed_at: String,
    pub weights: ReportWeights,
    pub rows: Vec<ReportRow>,
}

/// The `q`-quantile (nearest rank) of sorted values.
fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

fn rate(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The monthly report over `leads` (those accepted in the month), with `rejected` submissions
/// by agency and the month's `flagged` screening lead ids, evaluated at `now`.
#[allow(clippy::too_many_arguments)]
pub fn monthly_report(
    month: Month,
    by: GroupBy,
    leads: &[SupervisedLead],
    rejected: &BTreeMap<Agency, u64>,
    flagged: &HashSet<crate::contract::lead::LeadId>,
    clocks: &Clocks,
    weights: &ReportWeights,
    districts: &crate::contract::lead::division::DivisionTable,
    now: DateTime<Utc>,
) -> Result<MonthlyReport, StoreError> {
    struct Tally {
        row: ReportRow,
        handoffs: Vec<i64>,
        decided: u64,
        on_time: u64,
        answered: u64,
    }
    let mut groups: BTreeMap<String, Tally> = BTreeMap::new();
    let new_row = |key: String, name: String| Tally {
        row: ReportRow {
            key,
            name,
            sent: 0,
            rejected: None,
            by_kind: ["transfer", "penalty", "clue"]
                .into_iter()
                .map(|kind| (kind.to_owned(), 0))
                .collect(),
            received_by_police: 0,
            filed: 0,
            not_filed: 0,
            returned: 0,
            reconsiderations: 0,
            handoff_median_secs: None,
            handoff_p90_secs: None,
            decision_on_time_rate: None,
            overdue_now: 0,
            feedback_rate: None,
            screening_flags: 0,
            score: 0.0,
            rank: 0,
        },
        handoffs: Vec::new(),
        decided: 0,
        on_time: 0,
        answered: 0,
    };
    let district_name = |code: &str| {
        crate::contract::lead::division::DivisionCode::parse(code)
            .and_then(|code| districts.get(code))
            .map_or_else(|| "未知区划".to_owned(), |division| division.name.clone())
    };
    if by == GroupBy::Agency {
        for agency in Agency::ALL {
            let mut tally = new_row(agency.as_str().to_owned(), agency_name(agency).to_owned());
            tally.row.rejected = Some(rejected.get(&agency).copied().unwrap_or(0));
            groups.insert(agency.as_str().to_owned(), tally);
        }
    }
    for lead in leads {
        let key = match by {
            GroupBy::Agency => lead.agency.as_str().to_owned(),
            GroupBy::District => lead.district().unwrap_or("unknown").to_owned(),
        };
        let tally = groups
            .entry(key.clone())
            .or_insert_with(|| new_row(key.clone(), district_name(&key)));
        let row = &mut tally.row;
        row.sent += 1;
        *row.by_kind.entry(lead.kind.clone()).or_insert(0) += 1;
        if lead.first("received_by_police").is_some() {
            row.received_by_police += 1;
        }
        let decision = lead
            .timeline
            .iter()
            .find(|event| {
                event.revision == lead.revision
                    && matches!(event.event.as_str(), "filed" | "not_filed" | "returned")
            })
            .map(|event| event.event.as_str());
        match decision {
            Some("filed") => row.filed += 1,
            Some("not_filed") => row.not_filed += 1,
            Some("returned") => row.returned += 1,
            _ => {}
        }
        if decision.is_some() {
            tally.answered += 1;
        }
        if lead.first("reconsideration_requested").is_some() {
            row.reconsiderations += 1;
        }
        // From the current revision's acceptance to its delivery. Hub and adapter clocks may
        // disagree by a little: a handoff is never negative.
        let accepted = lead
            .first("received")
            .map_or(lead.created_at, |event| event.time);
        if let Some(delivered) = lead.first("delivered") {
            tally
                .handoffs
                .push((delivered.time - accepted).num_seconds().max(0));
        }
        for clock in lead_clocks(lead, clocks, now)? {
            if clock.state == ClockState::Overdue {
                row.overdue_now += 1;
            }
            if matches!(
                clock.name,
                ClockName::PoliceDecision | ClockName::PoliceReview
            ) {
                match clock.state {
                    ClockState::Met => {
                        tally.decided += 1;
                        tally.on_time += 1;
                    }
                    ClockState::Missed => tally.decided += 1,
                    _ => {}
                }
            }
        }
        if flagged.contains(&lead.lead_id) {
            row.screening_flags += 1;
        }
    }
    let mut rows: Vec<ReportRow> = groups
        .into_values()
        .map(|mut tally| {
            tally.handoffs.sort_unstable();
            let row = &mut tally.row;
            row.handoff_median_secs = quantile(&tally.handoffs, 0.5);
            row.handoff_p90_secs = quantile(&tally.handoffs, 0.9);
            row.decision_on_time_rate = rate(tally.on_time, tally.decided);
            row.feedback_rate = rate(tally.answered, row.received_by_police);
            let within = tally
                .handoffs
                .iter()
                .filter(|secs| **secs <= weights.handoff_target_secs)
                .count() as u64;
            let handoff_rate = rate(within, tally.handoffs.len() as u64);
            let score = row.decision_on_time_rate.unwrap_or(1.0) * weights.decision_on_time
                + row.feedback_rate.unwrap_or(1.0) * weights.feedback
                + handoff_rate.unwrap_or(1.0) * weights.handoff_within_target
                - row.overdue_now as f64 * weights.overdue_now
                - row.screening_flags as f64 * weights.screening_flag;
            // Two decimals, so equal work gives equal scores whatever the float noise.
            row.score = (score * 100.0).round() / 100.0;
            tally.row
        })
        .collect();
    rows.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.key.cmp(&b.key))
    });
    for index in 0..rows.len() {
        rows[index].rank = if index > 0 && rows[index].score == rows[index - 1].score {
            rows[index - 1].rank
        } else {
            index as u64 + 1
        };
    }
    Ok(MonthlyReport {
        month: month.to_string(),
        by,
        computed_at: now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        weights: weights.clone(),
        rows,
    })
}

/// The report as CSV: UTF-8 with a byte-order mark (so Excel and WPS read the Chinese text),
/// a Chinese header row, CRLF line ends, fields quoted when they need it (RFC 4180).
pub fn report_csv(report: &MonthlyReport) -> String {
    fn field(text: &str) -> String {
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_owned()
        }
    }
    let optional = |value: Option<i64>| value.map_or(String::new(), |value| value.to_string());
    let percent =
        |value: Option<f64>| value.map_or(String::new(), |value| format!("{:.1}", value * 100.0));
    let group = match report.by {
        GroupBy::Agency => "部门",
        GroupBy::District => "区划",
    };
    let header = [
        "排名",
        "代码",
        group,
        "移送线索数",
        "退回(校验未通过)",
        "移送案件",
        "行政处罚",
        "线索",
        "公安接收",
        "立案",
        "不予立案",
        "退回补充",
        "复议",
        "移交用时中位数(秒)",
        "移交用时P90(秒)",
        "按期决定率(%)",
        "当前超期",
        "反馈率(%)",
        "以罚代刑筛查",
        "得分",
    ];
    let mut text = String::from("\u{feff}");
    text.push_str(&header.map(field).join(","));
    text.push_str("\r\n");
    for row in &report.rows {
        let kind = |name: &str| row.by_kind.get(name).copied().unwrap_or(0).to_string();
        let cells = [
            row.rank.to_string(),
            row.key.clone(),
            row.name.clone(),
            row.sent.to_string(),
            row.rejected
                .map_or(String::new(), |value| value.to_string()),
            kind("transfer"),
            kind("penalty"),
            kind("clue"),
            row.received_by_police.to_string(),
            row.filed.to_string(),
            row.not_filed.to_string(),
            row.returned.to_string(),
            row.reconsiderations.to_string(),
            optional(row.handoff_median_secs),
            optional(row.handoff_p90_secs),
            percent(row.decision_on_time_rate),
            row.overdue_now.to_string(),
            percent(row.feedback_rate),
            row.screening_flags.to_string(),
            format!("{:.2}", row.score),
        ];
        text.push_str(
            &cells
                .iter()
                .map(|cell| field(cell))
                .collect::<Vec<_>>()
                .join(","),
        );
        text.push_str("\r\n");
    }
    text
}

/// A handoff a spot audit can draw: an entry of one of the logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    pub lead_id: String,
    pub action: String,
    pub log: String,
    pub index: u64,
}

/// The spot audit's sample: the `size` handoffs with the smallest SHA-256(seed ‖ 0x00 ‖ month
/// ‖ 0x00 ‖ log ‖ 0x00 ‖ index), in that order. The draw depends only on the seed, the month and
/// which handoffs there are — never on the order they were read in — so anyone holding the
/// logs can redraw it.
pub fn draw(seed: &str, month: Month, handoffs: &[Handoff], size: usize) -> Vec<Handoff> {
    let mut keyed: Vec<([u8; 32], &Handoff)> = handoffs
        .iter()
        .map(|handoff| {
            let mut hasher = Sha256::new();
            hasher.update(seed.as_bytes());
            hasher.update([0]);
            hasher.update(month.to_string().as_bytes());
            hasher.update([0]);
            hasher.update(handoff.log.as_bytes());
            hasher.update([0]);
            hasher.update(handoff.index.to_string().as_bytes());
            (hasher.finalize().into(), handoff)
        })
        .collect();
    keyed.sort_by_key(|(key, _)| *key);
    keyed
        .into_iter()
        .take(size)
        .map(|(_, handoff)| handoff.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_asia_shanghai_months() {
        let month = Month::parse("2026-11").unwrap();
        let (start, end) = month.bounds();
        assert_eq!(start.to_rfc3339(), "2026-10-31T16:00:00+00:00");
        assert_eq!(end.to_rfc3339(), "2026-11-30T16:00:00+00:00");
        assert_eq!(Month::of(end - Duration::microseconds(1)), month);
        assert_eq!(Month::of(end).to_string(), "2026-12");
        assert_eq!(
            Month::parse("2026-12").unwrap().bounds().1.to_rfc3339(),
            "2026-12-31T16:00:00+00:00"
        );
        for bad in ["2026-13", "2026-1", "26-11", "2026/11", "", "2026-00"] {
            assert_eq!(Month::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_draw_depends_on_the_seed_and_the_handoffs_not_their_order() {
        let handoffs: Vec<Handoff> = (0..50)
            .map(|index| Handoff {
                lead_id: format!("lead-{index}"),
                action: "lead.delivered".into(),
                log: if index % 2 == 0 { "hub" } else { "police" }.into(),
                index,
            })
            .collect();
        let month = Month::parse("2026-11").unwrap();
        let first = draw("检察院-2026-11", month, &handoffs, 5);
        let mut reversed = handoffs.clone();
        reversed.reverse();
        assert_eq!(draw("检察院-2026-11", month, &reversed, 5), first);
        assert_ne!(draw("another seed", month, &handoffs, 5), first);
        assert_eq!(first.len(), 5);
        assert_eq!(draw("s", month, &handoffs, 500).len(), 50);
        assert_eq!(
            &draw("检察院-2026-11", month, &handoffs, 6)[..5],
            &first[..]
        );
    }

    fn lead_delivered_after(secs: i64, district: &str) -> SupervisedLead {
        use crate::hub::store::TimelineEvent;
        let created_at = Utc.with_ymd_and_hms(2026, 11, 10, 2, 0, 0).unwrap();
        let event = |name: &str, at: DateTime<Utc>| TimelineEvent {
            event: name.to_owned(),
            at: at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            time: at,
            actor: "police-adapter".into(),
            revision: 1,
            details: serde_json::Map::new(),
        };
        SupervisedLead {
            lead_id: crate::contract::lead::LeadId::generate(),
            agency: Agency::Environment,
            lead_type: "environment.discharge_exceedance".into(),
            kind: "clue".into(),
            case_id: "C-1".into(),
            revision: 1,
            status: "delivered".into(),
            created_at,
            document: json!({"location": {"division_code": district}}),
            assessment: None,
            timeline: vec![
                event("received", created_at),
                event("received_by_police", created_at + Duration::seconds(secs)),
                event("delivered", created_at + Duration::seconds(secs)),
            ],
        }
    }

    #[test]
    fn a_police_clock_behind_the_hubs_never_makes_a_negative_handoff() {
        let clocks = Clocks::load(&Default::default()).unwrap();
        let districts = crate::contract::lead::division::DivisionTable::built_in().unwrap();
        // The adapter's clock 40 s behind: its delivery is stamped before the hub's acceptance.
        let leads = vec![
            lead_delivered_after(-40, "370303"),
            lead_delivered_after(100, "370303"),
        ];
        let report = monthly_report(
            Month::parse("2026-11").unwrap(),
            GroupBy::District,
            &leads,
            &BTreeMap::new(),
            &HashSet::new(),
            &clocks,
            &ReportWeights::default(),
            &districts,
            Utc.with_ymd_and_hms(2026, 11, 12, 0, 0, 0).unwrap(),
        )
        .unwrap();
        let row = &report.rows[0];
        assert_eq!((row.key.as_str(), row.name.as_str()), ("370303", "张店区"));
        assert_eq!(row.handoff_median_secs, Some(0));
        assert_eq!(row.handoff_p90_secs, Some(100));
        assert_eq!(row.rejected, None, "no district count of refusals");
        assert_eq!(row.sent, 2);
    }

    #[test]
    fn quantiles_take_the_nearest_rank() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7], 0.9), Some(7));
        let values: Vec<i64> = (1..=10).collect();
        assert_eq!(quantile(&values, 0.5), Some(5));
        assert_eq!(quantile(&values, 0.9), Some(9));
    }
}
