//! `/v1/schemas`: the lead types and the composed schema in force for each.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::HubState;
use crate::contract::lead::LeadType;
use crate::shared::http::extract::Path;
use crate::shared::http::{with_content_type, ApiError};

/// `GET /v1/schemas`
pub async fn schema_index() -> Json<Value> {
    let lead_types: Vec<Value> = LeadType::ALL
        .into_iter()
        .map(|lead_type| {
            json!({
                "lead_type": lead_type.as_str(),
                "agency": lead_type.agency(),
                "schema_version": 1,
                "href": format!("/v1/schemas/{lead_type}"),
            })
        })
        .collect();
    Json(json!({ "schema_version": 1, "lead_types": lead_types }))
}

/// `GET /v1/schemas/{lead_type}`: the composed schema in force for that lead type.
pub async fn schema(
    State(api): HubState,
    Path(lead_type): Path<String>,
) -> Result<Response, ApiError> {
    let lead_type: LeadType = lead_type.parse().map_err(|_| ApiError::NotFound)?;
    let document = api.ingest.validator().schemas().document(lead_type);
    Ok(with_content_type(
        Json(document.clone()).into_response(),
        "application/schema+json",
    ))
}
