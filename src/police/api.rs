//! `/police/v1`: the investigators' inbox, lead reads and decisions.

use axum::body::Body;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Json;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::contract::lead::LeadId;
use crate::police::process::DecisionRequest;
use crate::police::store::DecideError;
use crate::police::PoliceStore;
use crate::shared::config::LimitSettings;
use crate::shared::http::body::{max_chars, read_typed, MAX_CASE_NO_CHARS, MAX_REASON_CHARS};
use crate::shared::http::extract::{Path, Query};
use crate::shared::http::{ApiError, InvestigatorCaller};

#[derive(Deserialize)]
pub struct InboxQuery {
    status: Option<String>,
    limit: Option<i64>,
}

/// What the investigators' API's handlers reach.
pub struct PoliceApi {
    pub store: PoliceStore,
    pub limits: LimitSettings,
}

type PoliceState = State<Arc<PoliceApi>>;

/// Every route of the investigators' API.
pub fn routes(api: Arc<PoliceApi>) -> Router {
    Router::new()
        .route("/police/v1/inbox", get(inbox))
        .route("/police/v1/leads/{lead_id}", get(lead))
        .route("/police/v1/leads/{lead_id}/decision", post(decide))
        .with_state(api)
}

/// `GET /police/v1/inbox?status=…&limit=…`
async fn inbox(
    State(api): PoliceState,
    caller: InvestigatorCaller,
    Query(query): Query<InboxQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 500);
    let leads = api
        .store
        .inbox(
            &caller.unit,
            query.status.as_deref(),
            limit,
            chrono::Utc::now(),
        )
        .await?;
    Ok(Json(json!({ "unit": caller.unit, "leads": leads })))
}

/// `GET /police/v1/leads/{lead_id}`: the whole lead; the read is recorded in the audit ledger.
async fn lead(
    State(api): PoliceState,
    caller: InvestigatorCaller,
    Path(lead_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let lead_id = LeadId::parse(&lead_id).ok_or(ApiError::NotFound)?;
    let reader = format!("investigator:{}", caller.unit);
    api.store
        .read_lead(lead_id, &caller.unit, &reader, chrono::Utc::now())
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `POST /police/v1/leads/{lead_id}/decision`
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
    match api
        .store
        .decide(lead_id, &caller.unit, &decision, &actor, chrono::Utc::now())
        .await
    {
        Ok(outcome) => Ok(Json(outcome)),
        Err(DecideError::NotFound(_)) => Err(ApiError::NotFound),
        Err(DecideError::Transition(error)) => Err(ApiError::StateConflict(error.to_string())),
        Err(DecideError::Store(error)) => Err(error.into()),
    }
}
