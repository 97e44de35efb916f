//! `/v1/feedback` and `/v1/leads/{lead_id}/reconsideration`: the agency side of the police's
//! answers.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::HubState;
use crate::contract::events::{ReconsiderationRequest, RECONSIDERATION_SCHEMA};
use crate::contract::lead::LeadId;
use crate::hub::store::ReconsiderationError;
use crate::shared::http::body::{max_chars, read_typed, MAX_REASON_CHARS};
use crate::shared::http::extract::{Path, Query};
use crate::shared::http::{AgencyCaller, ApiError};
use crate::shared::outbox::OutboxMessage;

#[derive(Deserialize)]
pub struct FeedbackQuery {
    after: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/feedback?after=<cursor>&limit=<n>`: receipts and decisions on the caller's leads,
/// oldest first. `next` is the cursor to pass as `after` for what follows.
pub async fn feedback(
    State(hub): HubState,
    caller: AgencyCaller,
    Query(query): Query<FeedbackQuery>,
) -> Result<Json<Value>, ApiError> {
    let cursor = match query.after.as_deref() {
        None | Some("") => 0,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|c| *c >= 0)
            .ok_or_else(|| {
                ApiError::InvalidQuery(format!("after={text} is not a cursor this API gave"))
            })?,
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let (items, next) = hub.store.feedback(caller.0, cursor, limit).await?;
    Ok(Json(json!({ "items": items, "next": next.to_string() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconsiderationBody {
    reason: String,
}

/// `POST /v1/leads/{lead_id}/reconsideration`: 202 within the window after a non-filing,
/// 409 otherwise.
pub async fn reconsideration(
    State(hub): HubState,
    caller: AgencyCaller,
    Path(lead_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: ReconsiderationBody = read_typed(
        &headers,
        body,
        hub.limits.max_small_body_bytes,
        "{\"reason\": \"…\"}",
    )
    .await?;
    if let Some(problem) = max_chars("/reason", Some(&request.reason), MAX_REASON_CHARS) {
        return Err(ApiError::Invalid(vec![problem]));
    }
    let lead_id = LeadId::parse(&lead_id).ok_or(ApiError::NotFound)?;
    let reason = request.reason.trim().to_owned();
    if reason.is_empty() {
        return Err(ApiError::Invalid(vec![
            crate::contract::validate::Problem::new(
                "/reason",
                "min_length",
                "a reconsideration request needs its reasons",
            ),
        ]));
    }
    let now = Utc::now();
    let topic = hub.topics.leads(caller.0);
    let message = |revision: i64| {
        let event = ReconsiderationRequest {
            event_id: uuid::Uuid::now_v7(),
            schema: RECONSIDERATION_SCHEMA.to_owned(),
            lead_id,
            revision,
            agency: caller.0,
            reason: reason.clone(),
            requested_at: now,
        };
        let event_id = event.event_id.to_string();
        OutboxMessage {
            event_id: event_id.clone(),
            topic: topic.clone(),
            payload: serde_json::to_vec(&event).expect("events serialise"),
            headers: vec![
                ("event_id".into(), event_id),
                ("schema_id".into(), RECONSIDERATION_SCHEMA.into()),
            ],
        }
    };
    let window = hub.deadlines.reconsideration_request_days;
    match hub
        .store
        .request_reconsideration(lead_id, caller.0, &reason, now, window, message)
        .await
    {
        Ok(revision) => {
            hub.relay_wakeup.notify_one();
            Ok((StatusCode::ACCEPTED, Json(json!({"lead_id": lead_id, "revision": revision, "status": "reconsideration_requested"}))).into_response())
        }
        Err(ReconsiderationError::NotFound) => Err(ApiError::NotFound),
        Err(ReconsiderationError::NotAllowed(detail)) => Err(ApiError::StateConflict(detail)),
        Err(ReconsiderationError::Store(error)) => Err(error.into()),
    }
}
