//! The supervision views (supervision contract §5): leads, one lead, the deadline board, the
//! 以罚代刑 screening, the monthly report, spot audits and the access log.
//!
//! Every list answers `{"items", "next_cursor", "filters"}`, newest lead first, a page of at
//! most `limit` (≤ 500) leads; `district` and `unit` are applied to the page read, so a page
//! may hold fewer items than `limit` while `next_cursor` still continues. An agency head reads
//! their own agency only: asking for another agency answers 403, another agency's lead 404,
//! and both are logged refusals. Reading a lead, exporting a report and drawing a spot audit
//! are entries of the hub's log (`access.read`, `access.export`, `audit.spot_audit`).

use std::collections::{BTreeMap, HashSet};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;

use super::reports::{self, GroupBy, Handoff, Month};
use super::SuperviseState;
use crate::contract::deadlines::{self, shanghai, ClockState};
use crate::contract::lead::{Agency, LeadId};
use crate::hub::store::supervision::{LeadQuery, SupervisedLead};
use crate::on_backend;
use crate::shared::audit::log::{self, LogTables};
use crate::shared::audit::{self, AuditEntry};
use crate::shared::http::extract::{Path, Query};
use crate::shared::http::{with_content_type, ApiError, SupervisorCaller};
use crate::shared::store::{DbTime, DbUuid, Store};

/// Most leads in one page.
const MAX_LIMIT: u32 = 500;
const DEFAULT_LIMIT: u32 = 100;

/// The filters of every list (and `state` of the deadline board).
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// environment, land, safety or water.
    agency: Option<String>,
    /// The case's district (GB/T 2260).
    district: Option<String>,
    /// A police unit that holds or held the lead.
    unit: Option<String>,
    lead_type: Option<String>,
    /// transfer, penalty or clue.
    kind: Option<String>,
    status: Option<String>,
    /// Accepted at or after: RFC 3339, or a date (its start in Asia/Shanghai).
    from: Option<String>,
    /// Accepted before: RFC 3339, or a date (its start in Asia/Shanghai).
    to: Option<String>,
    /// The deadline board only: running, due_soon, overdue, missed or met.
    state: Option<String>,
    cursor: Option<String>,
    /// At most 500 (default 100).
    limit: Option<u32>,
}

fn time_filter(text: &str, name: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .and_then(|start| shanghai().from_local_datetime(&start).single())
        .map(|at| at.with_timezone(&Utc))
        .ok_or_else(|| {
            ApiError::InvalidQuery(format!(
                "{name} {text:?} is neither an RFC 3339 time nor a date (YYYY-MM-DD)"
            ))
        })
}

fn encode_cursor(lead: &SupervisedLead) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}|{}",
        lead.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        lead.lead_id
    ))
}

fn decode_cursor(text: &str) -> Result<(DateTime<Utc>, LeadId), ApiError> {
    let bad = || ApiError::InvalidQuery(format!("cursor {text:?} is not one this API gave"));
    let decoded = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (at, id) = decoded.split_once('|').ok_or_else(bad)?;
    let at = DateTime::parse_from_rfc3339(at).map_err(|_| bad())?;
    Ok((at.with_timezone(&Utc), LeadId::parse(id).ok_or_else(bad)?))
}

/// Records a refusal in the hub's log before answering it. A 403 is recorded by the edge
/// (`shared::http::audit_refusals`), which logs every 401 and 403 once; what it cannot see is
/// a 404 that stands for another party's lead.
async fn refuse(
    state: &SuperviseState,
    caller: &SupervisorCaller,
    path: &str,
    lead: Option<LeadId>,
    error: ApiError,
) -> ApiError {
    if error.status() == axum::http::StatusCode::FORBIDDEN {
        return error;
    }
    let entry = AuditEntry {
        at: Utc::now(),
        actor: format!("supervisor:{}", caller.name),
        action: "access.denied",
        lead_id: lead,
        revision: None,
        details: json!({"path": path, "status": error.status().as_u16(), "scope": caller.scope.as_str()}),
    };
    if let Err(failure) = audit::record(&state.store, entry).await {
        return ApiError::from(failure);
    }
    error
}

/// The leads query a caller may run: an agency head's is pinned to their agency.
struct Scoped {
    query: LeadQuery,
    district: Option<String>,
    unit: Option<String>,
    filters: Value,
}

async fn scoped(
    state: &SuperviseState,
    caller: &SupervisorCaller,
    path: &str,
    query: &ListQuery,
) -> Result<Scoped, ApiError> {
    let agency = match &query.agency {
        None => None,
        Some(text) => Some(text.parse::<Agency>().map_err(|_| {
            ApiError::InvalidQuery(format!(
                "agency {text:?} is not environment, land, safety or water"
            ))
        })?),
    };
    let agency = match (caller.scope.agency(), agency) {
        (Some(head_of), Some(asked)) if head_of != asked => {
            return Err(refuse(
                state,
                caller,
                path,
                None,
                ApiError::Forbidden(format!(
                    "the head of {head_of} reads {head_of}'s leads, not {asked}'s"
                )),
            )
            .await)
        }
        (Some(head_of), _) => Some(head_of),
        (None, asked) => asked,
    };
    if let Some(kind) = &query.kind {
        if !matches!(kind.as_str(), "transfer" | "penalty" | "clue") {
            return Err(ApiError::InvalidQuery(format!(
                "kind {kind:?} is not transfer, penalty or clue"
            )));
        }
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::InvalidQuery(format!(
            "limit {limit} is not between 1 and {MAX_LIMIT}"
        )));
    }
    let from = query
        .from
        .as_deref()
        .map(|text| time_filter(text, "from"))
        .transpose()?;
    let to = query
        .to
        .as_deref()
        .map(|text| time_filter(text, "to"))
        .transpose()?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let filters = json!({
        "agency": agency,
        "district": query.district,
        "unit": query.unit,
        "lead_type": query.lead_type,
        "kind": query.kind,
        "status": query.status,
        "from": from.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        "to": to.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        "state": query.state,
        "limit": limit,
    });
    Ok(Scoped {
        query: LeadQuery {
            agency,
            lead_type: query.lead_type.clone(),
            kind: query.kind.clone(),
            status: query.status.clone(),
            from,
            to,
            after,
            limit,
        },
        district: query.district.clone(),
        unit: query.unit.clone(),
        filters,
    })
}

impl Scoped {
    fn keeps(&self, lead: &SupervisedLead) -> bool {
        self.district
            .as_deref()
            .is_none_or(|district| lead.district() == Some(district))
            && self
                .unit
                .as_deref()
                .is_none_or(|unit| lead.units().iter().any(|held| held == unit))
    }
}

/// The page a list asks for, read and recorded as read: the caller's scope, its leads and the
/// cursor after them.
async fn read_page(
    state: &SuperviseState,
    caller: &SupervisorCaller,
    path: &str,
    query: &ListQuery,
) -> Result<(Scoped, Vec<SupervisedLead>, Option<String>), ApiError> {
    let scoped = scoped(state, caller, path, query).await?;
    let (leads, next) = page(state, &scoped).await?;
    record_list_read(state, caller, path, &leads, &scoped.filters).await?;
    Ok((scoped, leads, next))
}

/// A page of leads and the cursor after it.
async fn page(
    state: &SuperviseState,
    scoped: &Scoped,
) -> Result<(Vec<SupervisedLead>, Option<String>), ApiError> {
    let leads = state.store.supervised_leads(&scoped.query).await?;
    let next = (leads.len() as u32 == scoped.query.limit)
        .then(|| leads.last().map(encode_cursor))
        .flatten();
    Ok((
        leads
            .into_iter()
            .filter(|lead| scoped.keeps(lead))
            .collect(),
        next,
    ))
}

fn list(items: Vec<Value>, next: Option<String>, filters: Value) -> Json<Value> {
    Json(json!({"items": items, "next_cursor": next, "filters": filters}))
}

/// Records a list read: who read which leads through which list, in one `access.read` entry.
async fn record_list_read(
    state: &SuperviseState,
    caller: &SupervisorCaller,
    path: &str,
    leads: &[SupervisedLead],
    filters: &Value,
) -> Result<(), ApiError> {
    audit::record(
        &state.store,
        AuditEntry {
            at: Utc::now(),
            actor: format!("supervisor:{}", caller.name),
            action: "access.read",
            lead_id: None,
            revision: None,
            details: json!({
                "path": path,
                "scope": caller.scope.as_str(),
                "filters": filters,
                "leads": leads.iter().map(|lead| lead.lead_id.to_string()).collect::<Vec<_>>(),
            }),
        },
    )
    .await?;
    Ok(())
}

fn summary(lead: &SupervisedLead, deadlines: Value) -> Value {
    json!({
        "lead_id": lead.lead_id,
        "agency": lead.agency,
        "lead_type": lead.lead_type,
        "kind": lead.kind,
        "case_id": lead.case_id,
        "revision": lead.revision,
        "status": lead.status,
        "district": lead.district(),
        "units": lead.units(),
        "received_at": lead.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "assessment": lead.assessment.as_ref().map(|assessment| json!({
            "priority": assessment["priority"],
            "rules": assessment["suspected_offences"].as_array().into_iter().flatten()
                .flat_map(|offence| offence["rules"].as_array().cloned().unwrap_or_default())
                .collect::<Vec<_>>(),
        })),
        "deadlines": deadlines,
    })
}

/// Leads
#[utoipa::path(
    get,
    path = "/supervise/v1/leads",
    operation_id = "superviseLeads",
    tag = "supervision",
    params(ListQuery),
    responses(
        (status = 200, description = "`{items, next_cursor, filters}`: leads with status, assessment summary and deadlines", body = Object),
        (status = 400, description = "A malformed filter, cursor or limit"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "Not a supervisor, or an agency head asking for another agency"),
        (status = 503, description = "Database unavailable; retry"),
    )
)]
pub async fn leads(
    caller: SupervisorCaller,
    state: SuperviseState,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if query.state.is_some() {
        return Err(ApiError::InvalidQuery(
            "state filters the deadline board only".into(),
        ));
    }
    let (scoped, leads, next) = read_page(&state, &caller, "/supervise/v1/leads", &query).await?;
    let now = Utc::now();
    let items = leads
        .iter()
        .map(|lead| {
            let clocks = reports::lead_clocks(lead, &state.clocks, now)?;
            Ok(summary(lead, deadlines::to_json(&clocks)))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(list(items, next, scoped.filters))
}

/// One lead, both sides' timelines
#[utoipa::path(
    get,
    path = "/supervise/v1/leads/{lead_id}",
    operation_id = "superviseLead",
    tag = "supervision",
    params(("lead_id" = String, Path, description = "The lead's id")),
    responses(
        (status = 200, description = "The whole lead: its document, the hub's timeline, the police's (the police log copy's entries under the police's latest checkpoint), assessment and deadlines", body = Object),
        (status = 400, description = "Not a lead id"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not a supervisor"),
        (status = 404, description = "No such lead among the supervisor's"),
        (status = 503, description = "Database unavailable; retry"),
    )
)]
pub async fn lead(
    caller: SupervisorCaller,
    state: SuperviseState,
    Path(lead_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let lead_id = LeadId::parse(&lead_id)
        .ok_or_else(|| ApiError::InvalidPath(format!("{lead_id:?} is not a lead id")))?;
    let path = format!("/supervise/v1/leads/{lead_id}");
    let lead = state.store.supervised_lead(lead_id).await?;
    let lead = match (lead, caller.scope.agency()) {
        (Some(lead), Some(head_of)) if lead.agency != head_of => {
            let refusal = ApiError::NotFoundDetail(format!(
                "no lead {lead_id} among {}'s",
                caller.scope.as_str()
            ));
            return Err(refuse(&state, &caller, &path, Some(lead_id), refusal).await);
        }
        (Some(lead), _) => lead,
        (None, _) => {
            return Err(ApiError::NotFoundDetail(format!("no lead {lead_id}")));
        }
    };
    audit::record(
        &state.store,
        AuditEntry {
            at: Utc::now(),
            actor: format!("supervisor:{}", caller.name),
            action: "access.read",
            lead_id: Some(lead_id),
            revision: None,
            details: json!({"path": path, "scope": caller.scope.as_str()}),
        },
    )
    .await?;
    let police_timeline = police_entries(&state, lead_id).await?;
    let clocks = reports::lead_clocks(&lead, &state.clocks, Utc::now())?;
    let mut body = summary(&lead, deadlines::to_json(&clocks));
    body["document"] = lead.document.clone();
    body["assessment"] = lead.assessment.clone().unwrap_or(Value::Null);
    body["timeline"] = Value::Array(lead.timeline.iter().map(|event| event.to_json()).collect());
    body["police_timeline"] = Value::Array(police_entries_json(police_timeline));
    Ok(Json(body))
}

/// The police log copy's entries about a lead that the police's latest checkpoint covers:
/// what the police signed, not what merely arrived.
async fn police_entries(
    state: &SuperviseState,
    lead_id: LeadId,
) -> Result<Vec<(String, Value)>, ApiError> {
    let signed = log::latest_checkpoint(&state.store, LogTables::POLICE_COPY)
        .await?
        .map_or(0, |checkpoint| checkpoint.size);
    let entries = log::entries_about(&state.store, LogTables::POLICE_COPY, lead_id, signed).await?;
    Ok(entries
        .into_iter()
        .map(|(_, entry, leaf_hash)| (leaf_hash, entry))
        .collect())
}

fn police_entries_json(entries: Vec<(String, Value)>) -> Vec<Value> {
    entries
        .into_iter()
        .map(|(leaf_hash, entry)| json!({"entry": entry, "leaf_hash": leaf_hash}))
        .collect()
}

/// The deadline board
#[utoipa::path(
    get,
    path = "/supervise/v1/deadlines",
    operation_id = "deadlineBoard",
    tag = "supervision",
    params(ListQuery),
    responses(
        (status = 200, description = "`{items, next_cursor, filters}`: every Decree 310 clock of the page's leads, with its legal basis, due time and state", body = Object),
        (status = 400, description = "A malformed filter, state, cursor or limit"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "Not a supervisor, or an agency head asking for another agency"),
        (status = 503, description = "Database unavailable; retry"),
    )
)]
pub async fn deadline_board(
    caller: SupervisorCaller,
    state: SuperviseState,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let wanted = match query.state.as_deref() {
        None => None,
        Some("running") => Some(ClockState::Running),
        Some("due_soon") => Some(ClockState::DueSoon),
        Some("overdue") => Some(ClockState::Overdue),
        Some("missed") => Some(ClockState::Missed),
        Some("met") => Some(ClockState::Met),
        Some(other) => {
            return Err(ApiError::InvalidQuery(format!(
                "state {other:?} is not running, due_soon, overdue, missed or met"
            )))
        }
    };
    let (scoped, leads, next) =
        read_page(&state, &caller, "/supervise/v1/deadlines", &query).await?;
    Ok(list(
        board_items(&state.clocks, &leads, wanted, Utc::now())?,
        next,
        scoped.filters,
    ))
}

/// The board's items: each clock of `leads` in `wanted` state, with its lead.
pub fn board_items(
    clocks: &crate::contract::deadlines::Clocks,
    leads: &[SupervisedLead],
    wanted: Option<ClockState>,
    now: DateTime<Utc>,
) -> Result<Vec<Value>, ApiError> {
    let mut items = Vec::new();
    for lead in leads {
        for clock in reports::lead_clocks(lead, clocks, now)? {
            if wanted.is_some_and(|wanted| clock.state != wanted) {
                continue;
            }
            let mut item = serde_json::to_value(&clock).expect("clocks serialise");
            for (key, value) in [
                ("lead_id", json!(lead.lead_id)),
                ("agency", json!(lead.agency)),
                ("lead_type", json!(lead.lead_type)),
                ("kind", json!(lead.kind)),
                ("status", json!(lead.status)),
                ("district", json!(lead.district())),
                ("units", json!(lead.units())),
            ] {
                item[key] = value;
            }
            items.push(item);
        }
    }
    Ok(items)
}

/// 以罚代刑 screening
#[utoipa::path(
    get,
    path = "/supervise/v1/screening",
    operation_id = "screening",
    tag = "supervision",
    params(ListQuery),
    responses(
        (status = 200, description = "`{items, next_cursor, filters}`: penalty and clue leads that meet a criminal-threshold rule with no transfer of the same case or subject within the window; each with rule, citation, facts and how long it has waited", body = Object),
        (status = 400, description = "A malformed filter, cursor or limit"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "Not a supervisor, or an agency head asking for another agency"),
        (status = 503, description = "Database unavailable; retry"),
    )
)]
pub async fn screening(
    caller: SupervisorCaller,
    state: SuperviseState,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if query.state.is_some() {
        return Err(ApiError::InvalidQuery(
            "state filters the deadline board only".into(),
        ));
    }
    let (scoped, leads, next) =
        read_page(&state, &caller, "/supervise/v1/screening", &query).await?;
    let transfers = transfers(&state).await?;
    let items = reports::screening(
        &leads,
        &transfers,
        state.settings.screening_window_days,
        Utc::now(),
    );
    Ok(list(items, next, scoped.filters))
}

/// Every transfer the hub holds, of any agency.
async fn transfers(state: &SuperviseState) -> Result<Vec<SupervisedLead>, ApiError> {
    Ok(state
        .store
        .all_supervised_leads(&LeadQuery {
            kind: Some("transfer".into()),
            limit: MAX_LIMIT,
            ..LeadQuery::default()
        })
        .await?)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// `2026-11` (Asia/Shanghai).
    month: String,
    /// agency (default) or district.
    by: Option<String>,
    /// json (default) or csv (UTF-8 with BOM).
    format: Option<String>,
}

/// What the monthly report is computed from.
pub struct ReportSources<'a> {
    pub store: &'a Store,
    pub clocks: &'a crate::contract::deadlines::Clocks,
    pub settings: &'a reports::SupervisionSettings,
    pub districts: &'a crate::contract::lead::division::DivisionTable,
}

/// Computes the monthly report at `now`, as the API and `leadbridge report monthly` give it;
/// an agency head's (`agency`) holds their agency's leads only.
pub async fn compute_report(
    state: &ReportSources<'_>,
    month: Month,
    by: GroupBy,
    agency: Option<Agency>,
    now: DateTime<Utc>,
) -> Result<reports::MonthlyReport, ApiError> {
    let (start, end) = month.bounds();
    // An agency head's row is ranked among every agency's, then shown alone; by district, the
    // districts are ranked on the head's agency's leads.
    let leads = state
        .store
        .all_supervised_leads(&LeadQuery {
            agency: agency.filter(|_| by == GroupBy::District),
            from: Some(start),
            to: Some(end),
            limit: MAX_LIMIT,
            ..LeadQuery::default()
        })
        .await?;
    let transfers = state
        .store
        .all_supervised_leads(&LeadQuery {
            kind: Some("transfer".into()),
            limit: MAX_LIMIT,
            ..LeadQuery::default()
        })
        .await?;
    let flagged: HashSet<LeadId> = reports::screening(
        &leads,
        &transfers,
        state.settings.screening_window_days,
        now,
    )
    .iter()
    .filter_map(|item| item["lead_id"].as_str().and_then(LeadId::parse))
    .collect();
    let rejected = rejections(state.store, start, end).await?;
    let mut report = reports::monthly_report(
        month,
        by,
        &leads,
        &rejected,
        &flagged,
        state.clocks,
        &state.settings.weights,
        state.districts,
        now,
    )?;
    if let Some(agency) = agency {
        report
            .rows
            .retain(|row| by != GroupBy::Agency || row.key == agency.as_str());
    }
    Ok(report)
}

/// The month's refused submissions by agency, from the hub's log (`lead.rejected`).
async fn rejections(
    store: &Store,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<BTreeMap<Agency, u64>, ApiError> {
    log::sequence_all(store).await?;
    let rows: Vec<(String, i64)> = on_backend!(store.db(), pool => sqlx::query_as(
        "SELECT actor, COUNT(*) FROM log_entries WHERE action = 'lead.rejected' AND at >= $1 AND at < $2 GROUP BY actor",
    )
    .bind(DbTime::new(start))
    .bind(DbTime::new(end))
    .fetch_all(pool)
    .await)
    .map_err(crate::shared::store::StoreError::from)?;
    Ok(rows
        .into_iter()
        .filter_map(|(actor, count)| {
            let agency = actor.strip_prefix("agency:")?.parse().ok()?;
            Some((agency, count as u64))
        })
        .collect())
}

/// The monthly report
#[utoipa::path(
    get,
    path = "/supervise/v1/reports/monthly",
    operation_id = "monthlyReport",
    tag = "supervision",
    params(ReportQuery),
    responses(
        (status = 200, description = "The month's rows by agency or district with score and rank; `format=csv` gives CSV (UTF-8 with BOM)", body = Object),
        (status = 400, description = "A malformed month, grouping or format"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not a supervisor"),
        (status = 503, description = "Database unavailable; retry"),
    )
)]
pub async fn monthly_report(
    caller: SupervisorCaller,
    state: SuperviseState,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let month = Month::parse(&query.month)
        .ok_or_else(|| ApiError::InvalidQuery(format!("month {:?} is not YYYY-MM", query.month)))?;
    let by = match query.by.as_deref() {
        None | Some("agency") => GroupBy::Agency,
        Some("district") => GroupBy::District,
        Some(other) => {
            return Err(ApiError::InvalidQuery(format!(
                "by {other:?} is not agency or district"
            )))
        }
    };
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::InvalidQuery(format!(
                "format {other:?} is not json or csv"
            )))
        }
    };
    let sources = ReportSources {
        store: &state.store,
        clocks: &state.clocks,
        settings: &state.settings,
        districts: &state.districts,
    };
    let report = compute_report(&sources, month, by, caller.scope.agency(), Utc::now()).await?;
    audit::record(
        &state.store,
        AuditEntry {
            at: Utc::now(),
            actor: format!("supervisor:{}", caller.name),
            action: "access.export",
            lead_id: None,
            revision: None,
            details: json!({"export": "monthly_report", "month": report.month, "by": by, "format": if csv { "csv" } else { "json" }, "scope": caller.scope.as_str()}),
        },
    )
    .await?;
    if csv {
        let mut response = (StatusCode::OK, reports::report_csv(&report)).into_response();
        response = with_content_type(response, "text/csv; charset=utf-8");
        if let Ok(value) = axum::http::HeaderValue::from_str(&format!(
            "attachment; filename=\"leadbridge-{}-{}.csv\"",
            report.month,
            match by {
                GroupBy::Agency => "agency",
                GroupBy::District => "district",
            }
        )) {
            response
                .headers_mut()
                .insert(axum::http::header::CONTENT_DISPOSITION, value);
        }
        return Ok(response);
    }
    Ok(Json(report).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpotAuditRequest {
    /// `2026-11`.
    month: String,
    /// 1 to 500.
    size: u32,
    /// Any text up to 200 characters; the same seed redraws the same sample.
    seed: String,
    /// For the current month: redraw a sample drawn then.
    drawn_at: Option<String>,
}

/// Draw a spot audit
#[utoipa::path(
    post,
    path = "/supervise/v1/spot-audits",
    operation_id = "spotAudit",
    tag = "supervision",
    request_body = SpotAuditRequest,
    responses(
        (status = 201, description = "`{month, size, seed, drawn_at, sample}`; the request and the sample are an `audit.spot_audit` entry of the hub's log", body = Object),
        (status = 400, description = "A malformed body, month, size, seed or drawn_at"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "Not the procuratorate or the reform office"),
        (status = 503, description = "Database unavailable; retry"),
    )
)]
pub async fn spot_audit(
    caller: SupervisorCaller,
    state: SuperviseState,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: SpotAuditRequest = crate::shared::http::body::read_typed(
        &headers,
        body,
        state.max_small_body_bytes,
        "{\"month\", \"size\", \"seed\", \"drawn_at\"}",
    )
    .await?;
    if let Some(agency) = caller.scope.agency() {
        return Err(refuse(
            &state,
            &caller,
            "/supervise/v1/spot-audits",
            None,
            ApiError::Forbidden(format!(
                "spot audits draw from every agency's handoffs: the procuratorate's and the reform office's, not the head of {agency}'s"
            )),
        )
        .await);
    }
    let now = Utc::now();
    let drawn = draw_spot_audit(
        &state.store,
        &request.month,
        request.size,
        &request.seed,
        request.drawn_at.as_deref(),
        now,
    )
    .await?;
    audit::record(
        &state.store,
        AuditEntry {
            at: now,
            actor: format!("supervisor:{}", caller.name),
            action: "audit.spot_audit",
            lead_id: None,
            revision: None,
            details: drawn.clone(),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(drawn)))
}

/// A spot audit's sample (`reports::draw`) of the month's handoffs in both logs, up to
/// `drawn_at` for the current month.
pub async fn draw_spot_audit(
    store: &Store,
    month: &str,
    size: u32,
    seed: &str,
    drawn_at: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let month = Month::parse(month)
        .ok_or_else(|| ApiError::InvalidBody(format!("month {month:?} is not YYYY-MM")))?;
    if size == 0 || size > MAX_LIMIT {
        return Err(ApiError::InvalidBody(format!(
            "size {size} is not between 1 and {MAX_LIMIT}"
        )));
    }
    if seed.trim().is_empty() || seed.chars().count() > 200 || seed.chars().any(char::is_control) {
        return Err(ApiError::InvalidBody(
            "seed must be 1 to 200 characters without control characters".into(),
        ));
    }
    let (start, end) = month.bounds();
    if start > now {
        return Err(ApiError::InvalidBody(format!(
            "month {month} has not begun"
        )));
    }
    let drawn_at = match drawn_at {
        Some(text) => {
            let at = DateTime::parse_from_rfc3339(text)
                .map_err(|_| {
                    ApiError::InvalidBody(format!("drawn_at {text:?} is not an RFC 3339 time"))
                })?
                .with_timezone(&Utc);
            if at > now {
                return Err(ApiError::InvalidBody("drawn_at is in the future".into()));
            }
            at
        }
        None => now,
    };
    // An ended month is drawn whole, whenever asked; the current one up to drawn_at.
    let until = if end <= drawn_at {
        end
    } else {
        drawn_at + chrono::Duration::microseconds(1)
    };
    let drawn_at = if end <= drawn_at { end } else { drawn_at };
    let drawn_text = drawn_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    log::sequence_all(store).await?;
    // The population is read up to fixed log sizes: the hub log's size and the police's latest
    // checkpoint, or — redrawing a sample drawn at `drawn_at` — the sizes that draw recorded,
    // so entries that reach a log later (a police shipment, a late commit) never change it.
    let sizes = match earlier_draw_sizes(store, &drawn_text).await? {
        Some(sizes) => sizes,
        None => (
            log::size(store, LogTables::OWN).await?,
            log::latest_checkpoint(store, LogTables::POLICE_COPY)
                .await?
                .map_or(0, |checkpoint| checkpoint.size),
        ),
    };
    let mut handoffs = Vec::new();
    for (name, tables, below) in [
        ("hub", LogTables::OWN, sizes.0),
        ("police", LogTables::POLICE_COPY, sizes.1),
    ] {
        let sql = format!(
            "SELECT idx, action, lead_id FROM {} WHERE at >= $1 AND at < $2 AND idx < $3 \
             AND (action LIKE 'lead.%' OR action = 'feedback.read') ORDER BY idx",
            tables.entries
        );
        let rows: Vec<(i64, String, Option<DbUuid>)> =
            on_backend!(store.db(), pool => sqlx::query_as(&sql)
            .bind(DbTime::new(start))
            .bind(DbTime::new(until))
            .bind(below as i64)
            .fetch_all(pool)
            .await)
            .map_err(crate::shared::store::StoreError::from)?;
        handoffs.extend(rows.into_iter().filter_map(|(index, action, lead)| {
            lead.map(|lead| Handoff {
                lead_id: LeadId::from(lead).to_string(),
                action,
                log: name.to_owned(),
                index: index as u64,
            })
        }));
    }
    let sample = reports::draw(seed, month, &handoffs, size as usize);
    Ok(json!({
        "month": month.to_string(),
        "size": size,
        "seed": seed,
        "drawn_at": drawn_text,
        "logs": {"hub": sizes.0, "police": sizes.1},
        "population": handoffs.len(),
        "sample": sample,
    }))
}

/// The log sizes an earlier spot audit drawn at `drawn_at` read up to, from its log entry.
async fn earlier_draw_sizes(store: &Store, drawn_at: &str) -> Result<Option<(u64, u64)>, ApiError> {
    // The entry is stored in canonical JSON, so the member reads exactly so.
    let pattern = format!("%\"drawn_at\":\"{drawn_at}\"%");
    let text: Option<String> = on_backend!(store.db(), pool => sqlx::query_scalar(
        "SELECT entry FROM log_entries WHERE action = 'audit.spot_audit' AND entry LIKE $1 ORDER BY idx LIMIT 1",
    )
    .bind(pattern)
    .fetch_optional(pool)
    .await)
    .map_err(crate::shared::store::StoreError::from)?;
    let Some(text) = text else {
        return Ok(None);
    };
    let entry: Value = serde_json::from_str(&text)
        .map_err(|error| ApiError::Internal(format!("a spot audit entry is not JSON: {error}")))?;
    let logs = &entry["details"]["logs"];
    match (logs["hub"].as_u64(), logs["police"].as_u64()) {
        (Some(hub), Some(police)) => Ok(Some((hub, police))),
        _ => Err(ApiError::Internal(
            "a spot audit entry of that drawn_at records no log sizes".into(),
        )),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AccessQuery {
    /// hub (default: supervisors' and agencies' accesses) or police (investigators', from the
    /// police log's copy).
    log: Option<String>,
    /// Who: `supervisor:<name>`, `investigator:<unit>`, `agency:<agency>`, …
    principal: Option<String>,
    /// access.read, access.export, access.denied or audit.spot_audit.
    action: Option<String>,
    /// Entries before this log index (the previous page's `next_cursor`).
    cursor: Option<String>,
    limit: Option<u32>,
}

/// The access log
#[utoipa::path(
    get,
    path = "/supervise/v1/access",
    operation_id = "accessLog",
    tag = "supervision",
    params(AccessQuery),
    responses(
        (status = 200, description = "`{items, next_cursor, filters}`: reads, exports, refusals and spot audits, newest first, from the hub's log", body = Object),
        (status = 400, description = "A malformed filter, cursor or limit"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "Not the procuratorate or the reform office"),
        (status = 503, description = "Database unavailable; retry"),
    )
)]
pub async fn access_log(
    caller: SupervisorCaller,
    state: SuperviseState,
    Query(query): Query<AccessQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(agency) = caller.scope.agency() {
        return Err(refuse(
            &state,
            &caller,
            "/supervise/v1/access",
            None,
            ApiError::Forbidden(format!(
                "the access log is the procuratorate's and the reform office's to read, not the head of {agency}'s"
            )),
        )
        .await);
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::InvalidQuery(format!(
            "limit {limit} is not between 1 and {MAX_LIMIT}"
        )));
    }
    let before: i64 = match &query.cursor {
        Some(text) => text.parse().map_err(|_| {
            ApiError::InvalidQuery(format!("cursor {text:?} is not one this API gave"))
        })?,
        None => i64::MAX,
    };
    if let Some(action) = &query.action {
        if !matches!(
            action.as_str(),
            "access.read" | "access.export" | "access.denied" | "audit.spot_audit"
        ) {
            return Err(ApiError::InvalidQuery(format!(
                "action {action:?} is not access.read, access.export, access.denied or audit.spot_audit"
            )));
        }
    }
    let tables = match query.log.as_deref() {
        None | Some("hub") => LogTables::OWN,
        Some("police") => LogTables::POLICE_COPY,
        Some(other) => {
            return Err(ApiError::InvalidQuery(format!(
                "log {other:?} is not hub or police"
            )))
        }
    };
    log::sequence_all(&state.store).await?;
    let mut sql = format!(
        "SELECT idx, entry FROM {} WHERE idx < $1 AND (action LIKE 'access.%' OR action = 'audit.spot_audit')",
        tables.entries
    );
    if query.principal.is_some() {
        sql.push_str(" AND actor = $2");
    }
    if query.action.is_some() {
        sql.push_str(if query.principal.is_some() {
            " AND action = $3"
        } else {
            " AND action = $2"
        });
    }
    sql.push_str(&format!(" ORDER BY idx DESC LIMIT {limit}"));
    let rows: Vec<(i64, String)> = on_backend!(state.store.db(), pool => {
        let mut statement = sqlx::query_as(&sql).bind(before);
        if let Some(principal) = &query.principal {
            statement = statement.bind(principal);
        }
        if let Some(action) = &query.action {
            statement = statement.bind(action);
        }
        statement.fetch_all(pool).await
    })
    .map_err(crate::shared::store::StoreError::from)?;
    let next = (rows.len() as u32 == limit)
        .then(|| rows.last().map(|(index, _)| index.to_string()))
        .flatten();
    let items = rows
        .into_iter()
        .map(|(index, text)| {
            let entry: Value = serde_json::from_str(&text).map_err(|error| {
                ApiError::Internal(format!("log entry {index} is not JSON: {error}"))
            })?;
            Ok(json!({
                "index": index,
                "at": entry["at"],
                "principal": entry["actor"],
                "action": entry["action"],
                "lead_id": entry["lead_id"],
                "details": entry["details"],
            }))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(json!({
        "items": items,
        "next_cursor": next,
        "filters": {"log": query.log.as_deref().unwrap_or("hub"), "principal": query.principal, "action": query.action, "limit": limit},
    })))
}
