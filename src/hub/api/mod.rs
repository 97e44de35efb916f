//! The agency API (`/v1`): lead submission and status, feedback, the agency's steps after the
//! police's answer (reconsideration, 立案监督 request, hand-over), and
//! the schemas in force. One file per resource, each handler with its OpenAPI operation;
//! every route is listed in [`routes`].

mod feedback;
mod leads;
mod schemas;

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::contract::deadlines::Clocks;
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
    /// The Decree 310 clocks the agency's leads show and its windows follow.
    pub clocks: Clocks,
    pub limits: LimitSettings,
    pub relay_wakeup: Arc<tokio::sync::Notify>,
}

type HubState = axum::extract::State<Arc<HubApi>>;

/// Every route of the agency API, with its documentation: `routes!` takes each route's
/// method and path from the handler's `#[utoipa::path]`.
pub fn routes(api: Arc<HubApi>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(leads::submit))
        .routes(routes!(leads::submit_batch))
        .routes(routes!(leads::status))
        .routes(routes!(feedback::reconsideration))
        .routes(routes!(feedback::supervision_request))
        .routes(routes!(feedback::handover))
        .routes(routes!(feedback::feedback))
        .routes(routes!(schemas::schema_index))
        .routes(routes!(schemas::schema))
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
