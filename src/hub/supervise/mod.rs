//! The supervision API (`/supervise/v1`, supervision contract §1–§3): what the procuratorate,
//! the reform office and agency heads reach, with a supervisor's certificate only.
//!
//! Served so far: the hub's transparency log — its keys, checkpoints (latest, earlier ones,
//! one signed on demand), entries, and inclusion and consistency proofs — and the evidence
//! bundle of a lead from it. The police log's copy, the deadline board, screening, reports,
//! spot audits, witness cosignatures and the access log are not served yet. Supervisors change nothing, except
//! asking for a fresh checkpoint.

mod evidence;
mod logs;

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::shared::audit::log::LogSigner;
use crate::shared::store::Store;

/// What the supervision API's handlers reach.
pub struct SuperviseApi {
    /// The hub's database, which holds the hub's log.
    pub store: Store,
    /// The hub log's signer, for checkpoints asked for on demand.
    pub hub_signer: Arc<LogSigner>,
    /// The police log's verifier key, when this process knows it.
    pub police_key: Option<String>,
}

type SuperviseState = axum::extract::State<Arc<SuperviseApi>>;

/// Every route of the supervision API, with its documentation.
pub fn routes(api: Arc<SuperviseApi>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(logs::keys))
        .routes(routes!(logs::checkpoint))
        .routes(routes!(logs::checkpoints, logs::sign_checkpoint))
        .routes(routes!(logs::entries))
        .routes(routes!(logs::inclusion))
        .routes(routes!(logs::consistency))
        .routes(routes!(evidence::evidence))
        .with_state(api)
}
