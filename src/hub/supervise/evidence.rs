//! `GET /supervise/v1/leads/{lead_id}/evidence` (supervision contract §4): every entry about
//! one lead with its inclusion proof against a checkpoint signed for it, verifiable offline
//! with `leadbridge audit verify-evidence`. An agency head gets only their agency's leads;
//! another agency's lead answers 404, as a lead the hub does not know.
//!
//! So far the bundle holds the hub's log only: the police log's entries join it once its
//! copy reaches the hub.

use axum::Json;

use super::SuperviseState;
use crate::contract::lead::LeadId;
use crate::shared::audit::{log, AuditError};
use crate::shared::http::extract::Path;
use crate::shared::http::{ApiError, SupervisorCaller};
use crate::shared::tlog::evidence::Bundle;

/// The evidence bundle of a lead
#[utoipa::path(
    get,
    path = "/supervise/v1/leads/{lead_id}/evidence",
    operation_id = "leadEvidence",
    tag = "supervision",
    params(("lead_id" = String, Path, description = "The lead's id")),
    responses(
        (status = 200, description = "Every entry about the lead, each with its inclusion proof against the bundle's checkpoint", body = Object),
        (status = 400, description = "A path segment that is not a lead id"),
        (status = 401, description = "No client certificate"),
        (status = 403, description = "The caller is not a supervisor"),
        (status = 404, description = "No such lead among the supervisor's"),
        (status = 503, description = "Database unavailable; retry"),
    )
)]
pub async fn evidence(
    caller: SupervisorCaller,
    state: SuperviseState,
    Path(lead_id): Path<String>,
) -> Result<Json<Bundle>, ApiError> {
    let lead = LeadId::parse(&lead_id)
        .ok_or_else(|| ApiError::InvalidPath(format!("{lead_id:?} is not a lead id")))?;
    let agency = state.store.lead_agency(lead).await?;
    let in_scope = match (agency, caller.scope.agency()) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(agency), Some(head_of)) => agency == head_of,
    };
    if !in_scope {
        return Err(ApiError::NotFoundDetail(format!(
            "no lead {lead} among {}'s",
            caller.scope.as_str()
        )));
    }
    let bundle = log::bundle(&state.store, &state.hub_signer, "hub", lead)
        .await
        .map_err(|error| match error {
            AuditError::Store(error) => ApiError::from(error),
            other => ApiError::Internal(other.to_string()),
        })?;
    Ok(Json(bundle))
}
