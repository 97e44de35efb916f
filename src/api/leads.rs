//! `/v1/leads`: submission (single and batch) and status.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};

use super::{AgencyCaller, ApiError, AppState};
use crate::ingest::{Outcome, Receipt};
use crate::lead::LeadId;

/// `POST /v1/leads`
pub async fn submit(
    State(state): State<AppState>,
    caller: AgencyCaller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let bytes = read_body(&headers, body, state.0.limits.max_body_bytes).await?;
    let document = parse_json(&bytes)?;
    let outcome = state.hub()?.ingest.submit(caller.0, document).await?;
    Ok(receipt_response(outcome))
}

/// `POST /v1/leads/batch` with `{"leads": [...]}`: one result per lead, in order.
pub async fn submit_batch(
    State(state): State<AppState>,
    caller: AgencyCaller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let limits = &state.0.limits;
    let bytes = read_body(&headers, body, limits.max_batch_body_bytes).await?;
    let leads = match parse_json(&bytes)? {
        Value::Object(mut object) => match object.remove("leads") {
            Some(Value::Array(leads)) => leads,
            _ => {
                return Err(ApiError::Invalid(vec![crate::validate::Problem::new(
                    "/leads",
                    "required",
                    "leads must be an array of leads",
                )]))
            }
        },
        _ => {
            return Err(ApiError::Invalid(vec![crate::validate::Problem::new(
                "",
                "type",
                "expected an object {\"leads\": [...]}",
            )]))
        }
    };
    if leads.len() > limits.max_batch_leads {
        return Err(ApiError::Invalid(vec![crate::validate::Problem::new(
            "/leads",
            "max_items",
            format!(
                "a batch holds at most {} leads; this one has {}",
                limits.max_batch_leads,
                leads.len()
            ),
        )]));
    }
    let results = state.hub()?.ingest.submit_batch(caller.0, leads).await?;
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
    State(state): State<AppState>,
    caller: AgencyCaller,
    Path(lead_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let lead_id = LeadId::parse(&lead_id).ok_or(ApiError::NotFound)?;
    let store = &state.hub()?.store;
    let view = store
        .lead_for_agency(lead_id, caller.0)
        .await?
        .ok_or(ApiError::NotFound)?;
    let (assessment, deadlines) = store.police_view(lead_id).await?;
    let deadlines = deadlines.map(|d| crate::police::process::with_states(&d, chrono::Utc::now()));
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

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Reads at most `limit` bytes; a declared or actual larger body is refused with 413 without
/// reading it whole.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(error) => Err(ApiError::BadRequest(format!(
            "the request body could not be read: {error}"
        ))),
    }
}

/// Parses JSON, reporting the byte position of a syntax error. Nesting deeper than serde_json's
/// recursion limit (128) is a syntax error too, so hostile nesting cannot exhaust the stack.
fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| ApiError::MalformedJson {
        byte_offset: byte_offset(bytes, error.line(), error.column()),
        message: error.to_string(),
    })
}

/// Converts serde_json's 1-based line and column into a 0-based byte offset.
fn byte_offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let line_start: usize = bytes
        .split(|b| *b == b'\n')
        .take(line.saturating_sub(1))
        .map(|line| line.len() + 1)
        .sum();
    (line_start + column.saturating_sub(1)).min(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_report_their_byte_offset() {
        let text = b"{\n  \"a\": 1,\n  \"b\": tru\n}";
        let Err(ApiError::MalformedJson { byte_offset, .. }) = parse_json(text) else {
            panic!("expected a syntax error")
        };
        // The error is reported where "tru" stops being a valid literal, on the third line.
        assert!((19..=23).contains(&byte_offset), "offset {byte_offset}");
    }

    #[test]
    fn hostile_nesting_is_a_syntax_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(matches!(
            parse_json(deep.as_bytes()),
            Err(ApiError::MalformedJson { .. })
        ));
    }

    #[test]
    fn json_content_types_with_parameters_are_accepted() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(require_json(&headers).is_ok());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(matches!(
            require_json(&headers),
            Err(ApiError::UnsupportedMediaType)
        ));
        assert!(matches!(
            require_json(&HeaderMap::new()),
            Err(ApiError::UnsupportedMediaType)
        ));
    }
}
