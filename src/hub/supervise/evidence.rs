//! `GET /supervise/v1/leads/{lead_id}/evidence` (supervision contract §4): every entry about
//! one lead from both logs, each with its inclusion proof against its log's checkpoint — the
//! hub's signed for the bundle, the police's the latest the police shipped — verifiable offline
//! with `leadbridge audit verify-evidence`. An agency head gets only their agency's leads;
//! another agency's lead answers 404, as a lead the hub does not know. Each export is an
//! `access.export` entry of the hub's log, and each such refusal an `access.denied` one.
//!
//! The police entries are those under the police's latest checkpoint: what the police logged
//! after it joins the bundle with the next checkpoint they sign.

use axum::Json;
use chrono::Utc;
use serde_json::json;

use super::SuperviseState;
use crate::contract::lead::LeadId;
use crate::shared::audit::{self, log, AuditEntry};
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
    let principal = format!("supervisor:{}", caller.name);
    let access = |action: &'static str, details: serde_json::Value| AuditEntry {
        at: Utc::now(),
        actor: principal.clone(),
        action,
        lead_id: Some(lead),
        revision: None,
        details,
    };
    if !in_scope {
        // Another party's lead is refused as if unknown, and recorded as the refusal it is.
        if agency.is_some() {
            let denied = access(
                "access.denied",
                json!({"path": format!("/supervise/v1/leads/{lead}/evidence"), "status": 404, "scope": caller.scope.as_str()}),
            );
            audit::record(&state.store, denied).await?;
        }
        return Err(ApiError::NotFoundDetail(format!(
            "no lead {lead} among {}'s",
            caller.scope.as_str()
        )));
    }
    // The export is recorded before the bundle is made, so a checkpoint signed for the
    // bundle already covers it.
    let export = access(
        "access.export",
        json!({"export": "evidence", "scope": caller.scope.as_str()}),
    );
    audit::record(&state.store, export).await?;
    let mut bundle = log::bundle(&state.store, &state.hub_signer, "hub", lead).await?;
    log::add_copy_to_bundle(
        &state.store,
        log::LogTables::POLICE_COPY,
        "police",
        &mut bundle,
    )
    .await?;
    Ok(Json(bundle))
}
