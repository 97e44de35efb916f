//! `/v1/leads`: submission (single and batch) and status.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::HubState;
use crate::contract::lead::LeadId;
use crate::hub::ingest::{Outcome, Receipt};
use crate::shared::http::body::read_json;
use crate::shared::http::extract::Path;
use crate::shared::http::{AgencyCaller, ApiError};

/// `POST /v1/leads`
pub async fn submit(
    State(hub): HubState,
    caller: AgencyCaller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let document = read_json(&headers, body, hub.limits.max_body_bytes).await?;
    let outcome = hub.ingest.submit(caller.0, document).await?;
    Ok(receipt_response(outcome))
}

/// `POST /v1/leads/batch` with `{"leads": [...]}`: one result per lead, in order.
pub async fn submit_batch(
    State(hub): HubState,
    caller: AgencyCaller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limits = &hub.limits;
    // A repeated key anywhere refuses the whole batch: which lead it belongs to is exactly what
    // cannot be trusted. Control characters are per lead (the validator), like every problem.
    let leads = match read_json(&headers, body, limits.max_batch_body_bytes).await? {
        Value::Object(mut object) => match object.remove("leads") {
            Some(Value::Array(leads)) => leads,
            _ => {
                return Err(ApiError::Invalid(vec![
                    crate::contract::validate::Problem::new(
                        "/leads",
                        "required",
                        "leads must be an array of leads",
                    ),
                ]))
            }
        },
        _ => {
            return Err(ApiError::Invalid(vec![
                crate::contract::validate::Problem::new(
                    "",
                    "type",
                    "expected an object {\"leads\": [...]}",
                ),
            ]))
        }
    };
    if leads.len() > limits.max_batch_leads {
        return Err(ApiError::Invalid(vec![
            crate::contract::validate::Problem::new(
                "/leads",
                "max_items",
                format!(
                    "a batch holds at most {} leads; this one has {}",
                    limits.max_batch_leads,
                    leads.len()
                ),
            ),
        ]));
    }
    let results = hub.ingest.submit_batch(caller.0, leads).await?;
    let results: Vec<Value> = results
        .into_iter()
        .enumerate()
        .map(|(index, result)| match result {
            Ok(outcome) => {
                let (status, receipt) = match &outcome {
                    Outcome::Accepted(receipt) => (StatusCode::ACCEPTED, receipt),
                    Outcome::Replayed(receipt) => (StatusCode::OK, receipt),
                };
                let mut item = receipt_body(receipt);
                item["index"] = json!(index);
                item["status"] = json!(status.as_u16());
                item
            }
            Err(error) => {
                let error = ApiError::from(error);
                let mut item = json!({"index": index, "status": error.status().as_u16(), "problem": error.problem()});
                if let ApiError::Conflict { lead_id, .. } = &error {
                    item["lead_id"] = json!(lead_id);
                }
                item
            }
        })
        .collect();
    Ok((StatusCode::OK, Json(json!({ "results": results }))).into_response())
}

/// `GET /v1/leads/{lead_id}`: status and timeline; 404 for anything not the caller's.
pub async fn status(
    State(hub): HubState,
    caller: AgencyCaller,
    Path(lead_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let lead_id = LeadId::parse(&lead_id).ok_or(ApiError::NotFound)?;
    let store = &hub.store;
    let view = store
        .lead_for_agency(lead_id, caller.0)
        .await?
        .ok_or(ApiError::NotFound)?;
    let (assessment, deadlines) = store.police_view(lead_id).await?;
    let deadlines =
        deadlines.map(|d| crate::contract::deadlines::with_states(&d, chrono::Utc::now()));
    Ok(Json(json!({
        "lead_id": view.lead_id,
        "lead_type": view.lead_type,
        "kind": view.kind,
        "case_id": view.case_id,
        "revision": view.revision,
        "status": view.status,
        "timeline": view.timeline.iter().map(|event| event.to_json()).collect::<Vec<_>>(),
        "assessment": assessment,
        "deadlines": deadlines.unwrap_or_else(|| json!([])),
    })))
}

fn receipt_body(receipt: &Receipt) -> Value {
    json!({
        "lead_id": receipt.lead_id,
        "revision": receipt.revision,
        "status": "accepted",
        "received_at": receipt.received_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    })
}

fn receipt_response(outcome: Outcome) -> Response {
    let (status, receipt) = match &outcome {
        Outcome::Accepted(receipt) => (StatusCode::ACCEPTED, receipt),
        Outcome::Replayed(receipt) => (StatusCode::OK, receipt),
    };
    let mut response = (status, Json(receipt_body(receipt))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/leads/{}", receipt.lead_id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}
