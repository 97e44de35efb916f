//! `/police/v1`: the investigators' inbox, lead reads and decisions.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState, InvestigatorCaller};
use crate::lead::LeadId;
use crate::police::process::DecisionRequest;
use crate::police::store::DecideError;
use crate::police::PoliceStore;

#[derive(Deserialize)]
pub struct InboxQuery {
    status: Option<String>,
    limit: Option<i64>,
}

fn police(state: &AppState) -> Result<&PoliceStore, ApiError> {
    state.0.police.as_ref().ok_or(ApiError::NotFound)
}

/// `GET /police/v1/inbox?status=…&limit=…`
pub async fn inbox(
    State(state): State<AppState>,
    caller: InvestigatorCaller,
    Query(query): Query<InboxQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 500);
    let leads = police(&state)?
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
pub async fn lead(
    State(state): State<AppState>,
    caller: InvestigatorCaller,
    Path(lead_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let lead_id = LeadId::parse(&lead_id).ok_or(ApiError::NotFound)?;
    let reader = format!("investigator:{}", caller.unit);
    police(&state)?
        .read_lead(lead_id, &caller.unit, &reader, chrono::Utc::now())
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `POST /police/v1/leads/{lead_id}/decision`
pub async fn decide(
    State(state): State<AppState>,
    caller: InvestigatorCaller,
    Path(lead_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let lead_id = LeadId::parse(&lead_id).ok_or(ApiError::NotFound)?;
    let request: DecisionRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::BadRequest(format!(
            "expected {{\"decision\", \"reason\", \"police_case_no\"}}: {error}"
        ))
    })?;
    let decision = request.parse().map_err(|error| {
        ApiError::Invalid(vec![crate::validate::Problem::new(
            "/decision",
            "decision",
            error.to_string(),
        )])
    })?;
    let actor = format!("investigator:{}", caller.unit);
    match police(&state)?
        .decide(lead_id, &caller.unit, &decision, &actor, chrono::Utc::now())
        .await
    {
        Ok(outcome) => Ok(Json(outcome)),
        Err(DecideError::NotFound(_)) => Err(ApiError::NotFound),
        Err(DecideError::Transition(error)) => Err(ApiError::StateConflict(error.to_string())),
        Err(DecideError::Store(error)) => Err(error.into()),
    }
}
