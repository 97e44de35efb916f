//! The agency API (`/v1`): lead submission and status, feedback and reconsideration, and
//! the schemas in force. One file per resource; every route is listed in [`routes`].

mod feedback;
mod leads;
mod schemas;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::contract::deadlines::DeadlineSettings;
use crate::contract::validate::ValidationError;
use crate::hub::ingest::{Ingest, IngestError};
use crate::hub::store::ConflictReason;
use crate::shared::config::LimitSettings;
use crate::shared::http::ApiError;
use crate::shared::kafka::Topics;
use crate::shared::store::Store;

/// What the agency API's handlers reach.
pub struct HubApi {
    pub ingest: Ingest,
    pub store: Store,
    pub topics: Topics,
    pub deadlines: DeadlineSettings,
    pub limits: LimitSettings,
    pub relay_wakeup: Arc<tokio::sync::Notify>,
}

type HubState = axum::extract::State<Arc<HubApi>>;

/// Every route of the agency API.
pub fn routes(api: Arc<HubApi>) -> Router {
    Router::new()
        .route("/v1/leads", post(leads::submit))
        .route("/v1/leads/batch", post(leads::submit_batch))
        .route("/v1/leads/{lead_id}", get(leads::status))
        .route(
            "/v1/leads/{lead_id}/reconsideration",
            post(feedback::reconsideration),
        )
        .route("/v1/feedback", get(feedback::feedback))
        .route("/v1/schemas", get(schemas::schema_index))
        .route("/v1/schemas/{lead_type}", get(schemas::schema))
        .with_state(api)
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::Validation(ValidationError::Invalid(problems)) => ApiError::Invalid(problems),
            IngestError::Validation(error @ ValidationError::ForeignAgency { .. }) => {
                ApiError::Forbidden(format!("{error}: an agency submits only its own leads"))
            }
            IngestError::Conflict { lead_id, reason } => ApiError::Conflict {
                lead_id,
                detail: match reason {
                    ConflictReason::DifferentContent { revision } => format!(
                        "revision {revision} of this case was accepted with different content; send a higher revision to change it"
                    ),
                    ConflictReason::StaleRevision { revision, current } => {
                        format!("revision {revision} is older than the current revision {current} of this case")
                    }
                },
            },
            IngestError::Store(error) => error.into(),
        }
    }
}
