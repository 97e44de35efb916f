//! `/v1/feedback` and `/v1/leads/{lead_id}/reconsideration`: the agency side of the police's
//! answers.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::HubState;
use crate::contract::events::{ReceiptEvent, ReconsiderationRequest, RECONSIDERATION_SCHEMA};
use crate::contract::lead::LeadId;
use crate::hub::store::ReconsiderationError;
use crate::shared::http::body::{max_chars, read_typed, MAX_REASON_CHARS};
use crate::shared::http::extract::{Path, Query};
use crate::shared::http::{AgencyCaller, ApiError};
use crate::shared::outbox::OutboxMessage;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedbackQuery {
    /// The `next` cursor of the previous page; from the start without it.
    after: Option<String>,
    /// How many items at most (100 without it; a value out of range is brought into it).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// A page of feedback.
#[derive(Serialize, ToSchema)]
pub struct FeedbackPage {
    /// Police receipts and decisions as the agency sees them: the police adapter's receipt
    /// events (`schemas/events/receipt.v1.schema.json`) without their `schema` member.
    #[schema(value_type = Vec<ReceiptEvent>)]
    items: Vec<Value>,
    /// The cursor to pass as `after` for what follows (the same cursor when nothing followed).
    next: String,
}

/// Police receipts and decisions on the caller's leads, oldest first
#[utoipa::path(
    get,
    path = "/v1/feedback",
    operation_id = "feedback",
    tag = "agency",
    params(FeedbackQuery),
    responses(
        (status = 200, description = "A page of feedback", body = FeedbackPage),
        (status = 400, description = "A query parameter that does not parse or is repeated, or an unknown cursor (invalid_query)"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not an agency"),
        (status = 503, description = "Database unavailable, too many requests in progress or past the request deadline; retry"),
    )
)]
pub async fn feedback(
    State(hub): HubState,
    caller: AgencyCaller,
    Query(query): Query<FeedbackQuery>,
) -> Result<Json<FeedbackPage>, ApiError> {
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
    Ok(Json(FeedbackPage {
        items,
        next: next.to_string(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconsiderationBody {
    /// Why the agency disagrees with the non-filing (at most 2,000 characters).
    #[schema(min_length = 1, max_length = 2000)]
    reason: String,
}

/// What a reconsideration request sent to the police is answered.
#[derive(Serialize, ToSchema)]
pub struct ReconsiderationAccepted {
    lead_id: LeadId,
    /// The revision the request concerns: the one the police decided on.
    revision: i64,
    status: ReconsiderationRequested,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReconsiderationRequested {
    ReconsiderationRequested,
}

/// Request reconsideration of a not_filed decision (Decree 310 art. 9)
///
/// Within the window (`police.deadlines.reconsideration_request_days`, 3 days by default)
/// after a non-filing.
#[utoipa::path(
    post,
    path = "/v1/leads/{lead_id}/reconsideration",
    operation_id = "requestReconsideration",
    tag = "agency",
    params(("lead_id" = String, Path, description = "The lead_id of the submission's receipt")),
    request_body(content = ReconsiderationBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Sent to the police", body = ReconsiderationAccepted),
        (status = 400, description = "Malformed JSON (malformed_json), a repeated key (duplicate_key) or a body of the wrong shape, e.g. an unknown member (invalid_body)"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not an agency"),
        (status = 404, description = "No such lead among the caller's"),
        (status = 409, description = "Not after a not_filed decision, or the 3-day window closed"),
        (status = 413, description = "Body over 64 KiB (limits.max_small_body_bytes)"),
        (status = 415, description = "Content-Type is not application/json"),
        (status = 422, description = "No reason given; a reason over 2,000 characters (max_length), a control character (control_character)"),
        (status = 503, description = "Database unavailable, too many requests in progress or past the request deadline; retry"),
    )
)]
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
            let accepted = ReconsiderationAccepted {
                lead_id,
                revision,
                status: ReconsiderationRequested::ReconsiderationRequested,
            };
            Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
        }
        Err(ReconsiderationError::NotFound) => Err(ApiError::NotFound),
        Err(ReconsiderationError::NotAllowed(detail)) => Err(ApiError::StateConflict(detail)),
        Err(ReconsiderationError::Store(error)) => Err(error.into()),
    }
}
