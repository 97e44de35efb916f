//! `/v1/feedback` and the agency's steps after the police's answers:
//! `/v1/leads/{lead_id}/reconsideration`, `…/supervision-request` and `…/handover`.

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
use crate::contract::validate::Problem;
use crate::hub::store::{AgencyStep, AgencyStepError, ReconsiderationError};
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

/// Request reconsideration of a not_filed or returned decision (Decree 310 art. 9)
///
/// Within the window (`police.deadlines.reconsideration_request_days`, 3 days by default,
/// counted as `lead-contract.md` §6 says) from the agency's receipt of the decision in its
/// feedback.
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
        (status = 409, description = "Not after a not_filed or returned decision, or the 3-day window closed"),
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
    match hub
        .store
        .request_reconsideration(lead_id, caller.0, &reason, now, &hub.clocks, message)
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SupervisionRequestBody {
    /// The procuratorate asked for 立案监督 (at most 200 characters).
    #[schema(min_length = 1, max_length = 200)]
    procuratorate: String,
    /// Why the agency holds that the case should be filed (at most 2,000 characters).
    #[schema(min_length = 1, max_length = 2000)]
    reason: String,
    /// When the agency made the request (RFC 3339 with offset); now without it.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    requested_at: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoverBody {
    /// What was handed over: the seized items and materials, e.g. by the item list's number
    /// (at most 2,000 characters).
    #[schema(min_length = 1, max_length = 2000)]
    items: String,
    /// Who received them for the police (at most 200 characters).
    #[serde(default)]
    #[schema(max_length = 200)]
    received_by: Option<String>,
    /// When the items were handed over (RFC 3339 with offset); now without it.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    handed_over_at: Option<String>,
}

/// What a recorded agency step is answered: the lead's clocks after it.
#[derive(Serialize, ToSchema)]
pub struct AgencyStepRecorded {
    lead_id: LeadId,
    /// `supervision_requested` or `handed_over`.
    event: String,
    #[schema(value_type = Vec<Object>)]
    deadlines: Value,
}

/// Record the agency's request to the procuratorate for 立案监督 (Decree 310 art. 9 ¶2)
///
/// After a non-filing or a return — directly, or once the police upheld it on reconsideration,
/// which starts the agency's 3 days (`supervision_request` clock). Once per lead.
#[utoipa::path(
    post,
    path = "/v1/leads/{lead_id}/supervision-request",
    operation_id = "recordSupervisionRequest",
    tag = "agency",
    params(("lead_id" = String, Path, description = "The lead_id of the submission's receipt")),
    request_body(content = SupervisionRequestBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Recorded on the lead's timeline; the lead is supervision_requested", body = AgencyStepRecorded),
        (status = 400, description = "Malformed JSON (malformed_json), a repeated key (duplicate_key) or a body of the wrong shape, e.g. an unknown member (invalid_body)"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not an agency"),
        (status = 404, description = "No such lead among the caller's"),
        (status = 409, description = "Not after a non-filing or return, filed on reconsideration, or recorded already"),
        (status = 413, description = "Body over 64 KiB (limits.max_small_body_bytes)"),
        (status = 415, description = "Content-Type is not application/json"),
        (status = 422, description = "A member missing or too long (min_length, max_length), a time that is not RFC 3339 (format), in the future (future_time) or before the police's answer (time_order)"),
        (status = 503, description = "Database unavailable, too many requests in progress or past the request deadline; retry"),
    )
)]
pub async fn supervision_request(
    State(hub): HubState,
    caller: AgencyCaller,
    Path(lead_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: SupervisionRequestBody = read_typed(
        &headers,
        body,
        hub.limits.max_small_body_bytes,
        "{\"procuratorate\", \"reason\", \"requested_at\"}",
    )
    .await?;
    let mut problems = Vec::new();
    let procuratorate = required_text(
        &mut problems,
        "/procuratorate",
        &request.procuratorate,
        MAX_NAME_CHARS,
    );
    let reason = required_text(&mut problems, "/reason", &request.reason, MAX_REASON_CHARS);
    let details = serde_json::json!({"procuratorate": procuratorate, "reason": reason});
    record_step(
        &hub,
        caller,
        &lead_id,
        AgencyStep::SupervisionRequest,
        request.requested_at.as_deref(),
        details,
        problems,
    )
    .await
}

/// Record the hand-over of seized items and materials to the police after filing (Decree 310 art. 12)
///
/// Closes the agency's 3 days (`handover` clock) that run from its receipt of the filing
/// decision. Once per lead.
#[utoipa::path(
    post,
    path = "/v1/leads/{lead_id}/handover",
    operation_id = "recordHandover",
    tag = "agency",
    params(("lead_id" = String, Path, description = "The lead_id of the submission's receipt")),
    request_body(content = HandoverBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Recorded on the lead's timeline", body = AgencyStepRecorded),
        (status = 400, description = "Malformed JSON (malformed_json), a repeated key (duplicate_key) or a body of the wrong shape, e.g. an unknown member (invalid_body)"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not an agency"),
        (status = 404, description = "No such lead among the caller's"),
        (status = 409, description = "The police have not filed the case, or the hand-over was recorded already"),
        (status = 413, description = "Body over 64 KiB (limits.max_small_body_bytes)"),
        (status = 415, description = "Content-Type is not application/json"),
        (status = 422, description = "A member missing or too long (min_length, max_length), a time that is not RFC 3339 (format), in the future (future_time) or before the filing (time_order)"),
        (status = 503, description = "Database unavailable, too many requests in progress or past the request deadline; retry"),
    )
)]
pub async fn handover(
    State(hub): HubState,
    caller: AgencyCaller,
    Path(lead_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: HandoverBody = read_typed(
        &headers,
        body,
        hub.limits.max_small_body_bytes,
        "{\"items\", \"received_by\", \"handed_over_at\"}",
    )
    .await?;
    let mut problems = Vec::new();
    let items = required_text(&mut problems, "/items", &request.items, MAX_REASON_CHARS);
    let mut details = serde_json::json!({"items": items});
    if let Some(received_by) = &request.received_by {
        problems.extend(max_chars("/received_by", Some(received_by), MAX_NAME_CHARS));
        details["received_by"] = serde_json::json!(received_by.trim());
    }
    record_step(
        &hub,
        caller,
        &lead_id,
        AgencyStep::Handover,
        request.handed_over_at.as_deref(),
        details,
        problems,
    )
    .await
}

/// The longest name (of a procuratorate, of a receiving officer) an agency step accepts.
const MAX_NAME_CHARS: usize = 200;

/// A required text member, trimmed; a problem when it is empty or too long.
fn required_text(problems: &mut Vec<Problem>, pointer: &str, text: &str, most: usize) -> String {
    problems.extend(max_chars(pointer, Some(text), most));
    let text = text.trim();
    if text.is_empty() {
        problems.push(Problem::new(
            pointer,
            "min_length",
            format!("{} must not be empty", &pointer[1..]),
        ));
    }
    text.to_owned()
}

/// Checks the time the agency gives and records the step.
async fn record_step(
    hub: &super::HubApi,
    caller: AgencyCaller,
    lead_id: &str,
    step: AgencyStep,
    done_at: Option<&str>,
    details: Value,
    mut problems: Vec<Problem>,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let done_at = match done_at {
        None => now,
        Some(text) => match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(at) => at.with_timezone(&Utc),
            Err(error) => {
                problems.push(Problem::new(
                    format!("/{}", step.time_field()),
                    "format",
                    format!("{text:?} is not an RFC 3339 time with offset: {error}"),
                ));
                now
            }
        },
    };
    if !problems.is_empty() {
        return Err(ApiError::Invalid(problems));
    }
    let lead_id = LeadId::parse(lead_id).ok_or(ApiError::NotFound)?;
    match hub
        .store
        .record_agency_step(lead_id, caller.0, step, done_at, details, now, &hub.clocks)
        .await
    {
        Ok(deadlines) => {
            let recorded = AgencyStepRecorded {
                lead_id,
                event: step.event().to_owned(),
                deadlines,
            };
            Ok((StatusCode::CREATED, Json(recorded)).into_response())
        }
        Err(AgencyStepError::NotFound) => Err(ApiError::NotFound),
        Err(AgencyStepError::NotAllowed(detail)) => Err(ApiError::StateConflict(detail)),
        Err(AgencyStepError::Invalid(problems)) => Err(ApiError::Invalid(problems)),
        Err(AgencyStepError::Store(error)) => Err(error.into()),
    }
}
