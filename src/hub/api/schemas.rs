//! `/v1/schemas`: the lead types and the composed schema in force for each.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::HubState;
use crate::contract::lead::{Agency, LeadType};
use crate::shared::http::extract::Path;
use crate::shared::http::{with_content_type, ApiError};

/// The lead types and the schema of each.
#[derive(Serialize, ToSchema)]
pub struct SchemaIndex {
    schema_version: u32,
    lead_types: Vec<SchemaEntry>,
}

#[derive(Serialize, ToSchema)]
pub struct SchemaEntry {
    #[schema(example = "land.illegal_mining")]
    lead_type: &'static str,
    /// The agency that submits leads of this type.
    #[schema(value_type = String, example = "land")]
    agency: Agency,
    schema_version: u32,
    /// Where the lead type's JSON Schema is served.
    #[schema(example = "/v1/schemas/land.illegal_mining")]
    href: String,
}

/// The lead types and their schemas in force
#[utoipa::path(
    get,
    path = "/v1/schemas",
    operation_id = "listSchemas",
    tag = "agency",
    security(()),
    responses(
        (status = 200, description = "Index of schemas", body = SchemaIndex),
        (status = 503, description = "Too many requests in progress or past the request deadline; retry"),
    )
)]
pub async fn schema_index() -> Json<SchemaIndex> {
    let lead_types = LeadType::ALL
        .into_iter()
        .map(|lead_type| SchemaEntry {
            lead_type: lead_type.as_str(),
            agency: lead_type.agency(),
            schema_version: 1,
            href: format!("/v1/schemas/{lead_type}"),
        })
        .collect();
    Json(SchemaIndex {
        schema_version: 1,
        lead_types,
    })
}

/// The JSON Schema (2020-12) of one lead type
///
/// The composed schema in force: the envelope with the lead type's body.
#[utoipa::path(
    get,
    path = "/v1/schemas/{lead_type}",
    operation_id = "getSchema",
    tag = "agency",
    security(()),
    params(("lead_type" = String, Path, description = "A lead_type of /v1/schemas, e.g. land.illegal_mining")),
    responses(
        (status = 200, description = "The composed schema", body = Object, content_type = "application/schema+json"),
        (status = 400, description = "A path segment that is not UTF-8 (invalid_path)"),
        (status = 404, description = "Unknown lead type"),
        (status = 503, description = "Too many requests in progress or past the request deadline; retry"),
    )
)]
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
