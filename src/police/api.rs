//! `/police/v1`: the investigators' inbox, lead reads, forwards and decisions. An investigator
//! acts for their unit (their certificate's), which sees its own leads and those of every unit
//! below it (`police::routing`).

use axum::body::Body;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::contract::lead::LeadId;
use crate::police::process::{
    DecisionRequest, ForwardRequest, ForwardTarget, PoliceStatus, TransitionError,
};
use crate::police::routing::Routing;
use crate::police::store::DecideError;
use crate::police::PoliceStore;
use crate::shared::config::LimitSettings;
use crate::shared::http::body::{max_chars, read_typed, MAX_CASE_NO_CHARS, MAX_REASON_CHARS};

/// The longest name of an outside organ a forward accepts.
const MAX_ORGAN_CHARS: usize = 200;
use crate::shared::http::extract::{Path, Query};
use crate::shared::http::{ApiError, InvestigatorCaller};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboxQuery {
    /// Only the leads in this status (any other word matches none).
    #[param(value_type = Option<PoliceStatus>, inline)]
    status: Option<String>,
    /// How many leads at most (100 without it; a value out of range is brought into it).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// The caller's inbox.
#[derive(Serialize, ToSchema)]
pub struct Inbox {
    /// The caller's police unit, from its certificate.
    unit: String,
    /// Each lead with its summary, status, priority, holder (the unit that decides it, and
    /// whether it holds it only to forward it), assessment and Decree 310 clocks.
    #[schema(value_type = Vec<Object>)]
    leads: Vec<Value>,
}

/// What the investigators' API's handlers reach.
pub struct PoliceApi {
    pub store: PoliceStore,
    pub routing: Routing,
    pub limits: LimitSettings,
}

type PoliceState = State<Arc<PoliceApi>>;

/// Every route of the investigators' API, with its documentation: `routes!` takes each
/// route's method and path from the handler's `#[utoipa::path]`.
pub fn routes(api: Arc<PoliceApi>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(inbox))
        .routes(routes!(lead))
        .routes(routes!(decide))
        .routes(routes!(forward))
        .with_state(api)
}

/// Leads of the caller's unit and of the units below it, newest first, with assessment and deadlines
#[utoipa::path(
    get,
    path = "/police/v1/inbox",
    operation_id = "inbox",
    tag = "investigators",
    params(InboxQuery),
    responses(
        (status = 200, description = "The inbox", body = Inbox),
        (status = 400, description = "A query parameter that does not parse or is repeated (invalid_query)"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "Not an investigator"),
        (status = 503, description = "Database unavailable, too many requests in progress or past the request deadline; retry"),
    )
)]
async fn inbox(
    State(api): PoliceState,
    caller: InvestigatorCaller,
    Query(query): Query<InboxQuery>,
) -> Result<Json<Inbox>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 500);
    let visible = api.routing.visible_units(&caller.unit);
    let leads = api
        .store
        .inbox(
            &caller.unit,
            &visible,
            query.status.as_deref(),
            limit,
            chrono::Utc::now(),
        )
        .await?;
    Ok(Json(Inbox {
        unit: caller.unit,
        leads,
    }))
}

/// The whole lead; every read is recorded in the audit ledger
#[utoipa::path(
    get,
    path = "/police/v1/leads/{lead_id}",
    operation_id = "policeLead",
    tag = "investigators",
    params(("lead_id" = String, Path, description = "A lead_id of the caller's inbox")),
    responses(
        (status = 200, description = "The lead, its assessment, deadlines and decision: lead_id, \
            revision, status, priority, received_at, decision, decision_reason, police_case_no, \
            reconsideration_reason, assessment, deadlines and the submitted lead", body = Object),
        (status = 400, description = "A path segment that is not UTF-8 (invalid_path)"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "Not an investigator"),
        (status = 404, description = "Not delivered to the caller's unit"),
        (status = 503, description = "Database unavailable, too many requests in progress or past the request deadline; retry"),
    )
)]
async fn lead(
    State(api): PoliceState,
    caller: InvestigatorCaller,
    Path(lead_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let lead_id = LeadId::parse(&lead_id).ok_or(ApiError::NotFound)?;
    let reader = format!("investigator:{}", caller.unit);
    let visible = api.routing.visible_units(&caller.unit);
    api.store
        .read_lead(lead_id, &visible, &reader, chrono::Utc::now())
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// Decide: filed (with police_case_no), not_filed or returned (with reason)
#[utoipa::path(
    post,
    path = "/police/v1/leads/{lead_id}/decision",
    operation_id = "decide",
    tag = "investigators",
    params(("lead_id" = String, Path, description = "A lead_id of the caller's inbox")),
    request_body(content = DecisionRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Recorded; the agency is told through its feedback", body = Object),
        (status = 400, description = "Malformed JSON (malformed_json), a repeated key (duplicate_key) or a body of the wrong shape, e.g. an unknown member (invalid_body)"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "Not an investigator"),
        (status = 404, description = "Not delivered to the caller's unit or a unit below it"),
        (status = 409, description = "Not allowed in the lead's state (already decided, superseded, forwarded to another unit or organ, which the answer names)"),
        (status = 413, description = "Body over 64 KiB (limits.max_small_body_bytes)"),
        (status = 415, description = "Content-Type is not application/json"),
        (status = 422, description = "A field the decision needs is missing; a reason over 2,000 characters (max_length), a control character (control_character)"),
        (status = 503, description = "Database unavailable, too many requests in progress or past the request deadline; retry"),
    )
)]
async fn decide(
    State(api): PoliceState,
    caller: InvestigatorCaller,
    Path(lead_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: DecisionRequest = read_typed(
        &headers,
        body,
        api.limits.max_small_body_bytes,
        "{\"decision\", \"reason\", \"police_case_no\"}",
    )
    .await?;
    let problems: Vec<_> = [
        max_chars("/reason", request.reason.as_deref(), MAX_REASON_CHARS),
        max_chars(
            "/police_case_no",
            request.police_case_no.as_deref(),
            MAX_CASE_NO_CHARS,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !problems.is_empty() {
        return Err(ApiError::Invalid(problems));
    }
    let lead_id = LeadId::parse(&lead_id).ok_or(ApiError::NotFound)?;
    let decision = request.parse().map_err(|error| {
        ApiError::Invalid(vec![crate::contract::validate::Problem::new(
            "/decision",
            "decision",
            error.to_string(),
        )])
    })?;
    let actor = format!("investigator:{}", caller.unit);
    let visible = api.routing.visible_units(&caller.unit);
    let outcome = api
        .store
        .decide(
            lead_id,
            &caller.unit,
            &visible,
            &decision,
            &actor,
            chrono::Utc::now(),
        )
        .await;
    answer(outcome)
}

fn answer(outcome: Result<Value, DecideError>) -> Result<Json<Value>, ApiError> {
    match outcome {
        Ok(outcome) => Ok(Json(outcome)),
        Err(DecideError::NotFound(_)) => Err(ApiError::NotFound),
        Err(DecideError::Transition(error)) => Err(ApiError::StateConflict(error.to_string())),
        Err(DecideError::Store(error)) => Err(error.into()),
    }
}

/// Forward a lead outside the caller's jurisdiction to the competent unit or organ (Decree 310 art 7)
///
/// Within 24 hours of receiving it (the `forwarding` clock); the agency is told through its
/// feedback. A lead no unit covers reaches the fallback unit as such a forwarding task. To a
/// unit of this system (`to_unit`), which then holds the lead, receives it and decides (its
/// `police_decision` clock starts); or to an organ outside it (`to_organ`), which ends the
/// police side here (status `forwarded`).
#[utoipa::path(
    post,
    path = "/police/v1/leads/{lead_id}/forward",
    operation_id = "forward",
    tag = "investigators",
    params(("lead_id" = String, Path, description = "A lead_id of the caller's inbox")),
    request_body(content = ForwardRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Forwarded; the agency is told through its feedback", body = Object),
        (status = 400, description = "Malformed JSON (malformed_json), a repeated key (duplicate_key) or a body of the wrong shape, e.g. an unknown member (invalid_body)"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "Not an investigator"),
        (status = 404, description = "Not delivered to the caller's unit or a unit below it"),
        (status = 409, description = "The lead is decided, superseded, or already forwarded away (the answer names where)"),
        (status = 413, description = "Body over 64 KiB (limits.max_small_body_bytes)"),
        (status = 415, description = "Content-Type is not application/json"),
        (status = 422, description = "Neither or both of to_unit and to_organ (forward_target), an unknown unit or the unit holding it (to_unit), no reason (reason), text too long (max_length)"),
        (status = 503, description = "Database unavailable, too many requests in progress or past the request deadline; retry"),
    )
)]
async fn forward(
    State(api): PoliceState,
    caller: InvestigatorCaller,
    Path(lead_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: ForwardRequest = read_typed(
        &headers,
        body,
        api.limits.max_small_body_bytes,
        "{\"to_unit\" or \"to_organ\", \"reason\"}",
    )
    .await?;
    let problems: Vec<_> = [
        max_chars("/reason", Some(&request.reason), MAX_REASON_CHARS),
        max_chars("/to_organ", request.to_organ.as_deref(), MAX_ORGAN_CHARS),
        max_chars("/to_unit", request.to_unit.as_deref(), MAX_CASE_NO_CHARS),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !problems.is_empty() {
        return Err(ApiError::Invalid(problems));
    }
    let lead_id = LeadId::parse(&lead_id).ok_or(ApiError::NotFound)?;
    let invalid = |pointer: &'static str, code: &'static str, error: TransitionError| {
        ApiError::Invalid(vec![crate::contract::validate::Problem::new(
            pointer,
            code,
            error.to_string(),
        )])
    };
    let (target, reason) = request.parse().map_err(|error| match error {
        TransitionError::ForwardReasonRequired => invalid("/reason", "reason", error),
        error => invalid("", "forward_target", error),
    })?;
    let route = match &target {
        ForwardTarget::Unit(unit) if !api.routing.is_unit(unit) => {
            return Err(invalid(
                "/to_unit",
                "to_unit",
                TransitionError::UnknownUnit(unit.clone()),
            ))
        }
        ForwardTarget::Unit(unit) => Some(api.routing.route_to(unit.clone())),
        ForwardTarget::Organ(_) => None,
    };
    let actor = format!("investigator:{}", caller.unit);
    let visible = api.routing.visible_units(&caller.unit);
    let outcome = api
        .store
        .forward(
            lead_id,
            &visible,
            &target,
            route.as_ref(),
            &reason,
            &actor,
            chrono::Utc::now(),
        )
        .await;
    match outcome {
        Err(DecideError::Transition(error @ TransitionError::ForwardToHolder(_))) => {
            Err(invalid("/to_unit", "to_unit", error))
        }
        outcome => answer(outcome),
    }
}
