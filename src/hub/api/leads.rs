//! `/v1/leads`: submission (single and batch) and status.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::HubState;
use crate::contract::lead::LeadId;
use crate::hub::ingest::{Outcome, Receipt};
use crate::shared::http::body::read_json;
use crate::shared::http::extract::Path;
use crate::shared::http::{AgencyCaller, ApiError, ProblemDocument};

/// A lead as an agency submits it. The handlers read it as raw JSON (the strict parser refuses
/// repeated keys) and validate it against the JSON Schema of its lead type, so the document
/// points at those schemas rather than repeating them.
#[derive(ToSchema)]
#[schema(
    value_type = Object,
    description = "A lead envelope; the full JSON Schema (2020-12) per lead type is served at \
        /v1/schemas/{lead_type} (the files under schemas/ in the repository). A lead that does \
        not fit it is answered 422 with every problem, each with its JSON Pointer and code."
)]
pub struct Lead(#[allow(dead_code)] Value);

/// What an accepted submission (or its exact replay) is answered.
#[derive(Serialize, ToSchema)]
#[schema(as = Receipt)]
pub struct ReceiptBody {
    /// UUIDv7 assigned by the hub for (source.agency, source.case_id); the same across
    /// revisions.
    lead_id: LeadId,
    revision: i64,
    status: Accepted,
    #[schema(value_type = String, format = DateTime)]
    received_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Accepted {
    Accepted,
}

/// The body of a batch.
// Only documentation: the handler reads the body as raw JSON, like a single lead, so that one
// bad lead cannot refuse the others.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchRequest {
    /// At most `limits.max_batch_leads` leads (500 by default).
    #[schema(max_items = 500)]
    leads: Vec<Lead>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResponse {
    /// One result per lead, in the order of the request.
    results: Vec<BatchResult>,
}

/// What became of one lead of a batch: its receipt, or its problem.
#[derive(Serialize, ToSchema)]
pub struct BatchResult {
    /// The lead's place in the request, from 0.
    index: usize,
    /// The HTTP status the single call would have answered: 202, 200, 403, 409 or 422.
    status: u16,
    /// On 202 and 200: the lead; on 409: the lead the submission conflicts with.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = LeadId)]
    lead_id: Option<LeadId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = i64)]
    revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, format = DateTime)]
    received_at: Option<String>,
    /// On every status but 202 and 200.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = ProblemDocument)]
    problem: Option<ProblemDocument>,
}

/// Submit one lead or a new revision
#[utoipa::path(
    post,
    path = "/v1/leads",
    operation_id = "submitLead",
    tag = "agency",
    request_body(content = Lead, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: stored durably with its outbox message and audit entry", body = ReceiptBody,
            headers(("Location" = String, description = "/v1/leads/{lead_id}"))),
        (status = 200, description = "Exact replay of an accepted lead: nothing changed", body = ReceiptBody,
            headers(("Location" = String, description = "/v1/leads/{lead_id}"))),
        (status = 400, description = "Malformed JSON, with the byte offset (malformed_json); a repeated key (duplicate_key)"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The lead names another agency, or the caller is not an agency"),
        (status = 409, description = "Same case and revision with different content, or an older revision"),
        (status = 413, description = "Body over 1 MiB (limits.max_body_bytes)"),
        (status = 415, description = "Content-Type is not application/json"),
        (status = 422, description = "Invalid: every problem with its JSON Pointer and code"),
        (status = 503, description = "Database unavailable, too many requests in progress or past the request deadline; retry"),
    )
)]
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

/// Submit up to 500 leads; one bad lead never rejects the others
#[utoipa::path(
    post,
    path = "/v1/leads/batch",
    operation_id = "submitBatch",
    tag = "agency",
    request_body(content = BatchRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One result per lead, in order", body = BatchResponse),
        (status = 400, description = "Malformed JSON (malformed_json), or a repeated key anywhere in the batch (duplicate_key)"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not an agency"),
        (status = 413, description = "Body over the batch limit (16 MiB by default, limits.max_batch_body_bytes)"),
        (status = 415, description = "Content-Type is not application/json"),
        (status = 422, description = "Not a {\"leads\": [...]} object, or over 500 leads"),
        (status = 503, description = "Database unavailable, too many requests in progress or past the request deadline; retry"),
    )
)]
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
    let results = results
        .into_iter()
        .enumerate()
        .map(|(index, result)| match result {
            Ok(outcome) => {
                let (status, receipt) = match &outcome {
                    Outcome::Accepted(receipt) => (StatusCode::ACCEPTED, receipt),
                    Outcome::Replayed(receipt) => (StatusCode::OK, receipt),
                };
                let receipt = receipt_body(receipt);
                BatchResult {
                    index,
                    status: status.as_u16(),
                    lead_id: Some(receipt.lead_id),
                    revision: Some(receipt.revision),
                    received_at: Some(receipt.received_at),
                    problem: None,
                }
            }
            Err(error) => {
                let error = ApiError::from(error);
                let lead_id = match &error {
                    ApiError::Conflict { lead_id, .. } => Some(*lead_id),
                    _ => None,
                };
                BatchResult {
                    index,
                    status: error.status().as_u16(),
                    lead_id,
                    revision: None,
                    received_at: None,
                    problem: Some(error.problem_document()),
                }
            }
        })
        .collect();
    Ok((StatusCode::OK, Json(BatchResponse { results })).into_response())
}

/// Where a lead stands, as its agency sees it.
#[derive(Serialize, ToSchema)]
pub struct LeadStatus {
    lead_id: LeadId,
    lead_type: String,
    kind: String,
    case_id: String,
    revision: i64,
    #[schema(value_type = LeadState)]
    status: String,
    /// Every handoff, oldest first.
    #[schema(value_type = Vec<TimelineEntry>)]
    timeline: Vec<Value>,
    /// The police's assessment against the criminal thresholds, once the police received the
    /// lead.
    #[schema(value_type = Option<Object>)]
    assessment: Option<Value>,
    /// The Decree 310 clocks that apply to the lead (`lead-contract.md` §6), each with its
    /// basis, start, end (`due_at`, the last instant on time, Asia/Shanghai), completion and
    /// state (running, due_soon, overdue, met, missed; no_calendar when no holiday calendar
    /// covers its end; invalid when it starts in the future).
    #[schema(value_type = Vec<Object>)]
    deadlines: Value,
}

/// The statuses a lead passes through: accepted, then published (or publish_failed), then the
/// police's steps, each status named after the receipt event that moves the lead to it
/// (`ReceiptEvent.event`), and reconsideration_requested, which the agency's request sets.
// Only documentation: the store keeps the status as text (`leads.status`).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum LeadState {
    Accepted,
    Published,
    PublishFailed,
    ReceivedByPolice,
    DeadLettered,
    DeliveryGivenUp,
    Delivered,
    Filed,
    NotFiled,
    Returned,
    ReconsiderationRequested,
    Reconsidered,
    Forwarded,
    SupervisionRequested,
}

/// One handoff of a lead's timeline, with the details of its event.
// Only documentation: the store keeps each event's details as JSON and the handler flattens
// them into the entry.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TimelineEntry {
    event: String,
    #[schema(format = DateTime)]
    at: String,
    actor: String,
    revision: i64,
    /// On `published`: where the lead is on Kafka.
    topic: Option<String>,
    partition: Option<i32>,
    offset: Option<i64>,
}

/// Status and handoff timeline of one of the caller's leads
#[utoipa::path(
    get,
    path = "/v1/leads/{lead_id}",
    operation_id = "getLead",
    tag = "agency",
    params(("lead_id" = String, Path, description = "The lead_id of the submission's receipt")),
    responses(
        (status = 200, description = "The lead", body = LeadStatus),
        (status = 400, description = "A path segment that is not UTF-8 (invalid_path)"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not an agency"),
        (status = 404, description = "No such lead among the caller's"),
        (status = 503, description = "Database unavailable, too many requests in progress or past the request deadline; retry"),
    )
)]
pub async fn status(
    State(hub): HubState,
    caller: AgencyCaller,
    Path(lead_id): Path<String>,
) -> Result<Json<LeadStatus>, ApiError> {
    let lead_id = LeadId::parse(&lead_id).ok_or(ApiError::NotFound)?;
    let store = &hub.store;
    let view = store
        .lead_for_agency(lead_id, caller.0)
        .await?
        .ok_or(ApiError::NotFound)?;
    let (assessment, _) = store.police_view(lead_id).await?;
    let facts =
        crate::hub::store::clocks::clock_facts(lead_id, &view.kind, view.revision, &view.timeline)?;
    let deadlines =
        crate::contract::deadlines::to_json(&hub.clocks.clocks(&facts, chrono::Utc::now()));
    Ok(Json(LeadStatus {
        lead_id: view.lead_id,
        lead_type: view.lead_type,
        kind: view.kind,
        case_id: view.case_id,
        revision: view.revision,
        status: view.status,
        timeline: view.timeline.iter().map(|event| event.to_json()).collect(),
        assessment,
        deadlines,
    }))
}

fn receipt_body(receipt: &Receipt) -> ReceiptBody {
    ReceiptBody {
        lead_id: receipt.lead_id,
        revision: receipt.revision,
        status: Accepted::Accepted,
        received_at: receipt
            .received_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    }
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
