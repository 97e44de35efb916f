//! The supervision API (`/supervise/v1`, supervision contract §1–§3): what the procuratorate,
//! the reform office and agency heads reach, with a supervisor's certificate only.
//!
//! Served so far: the hub's transparency log and the hub's copy of the police log — their
//! keys, checkpoints (latest, earlier ones, one of the hub's signed on demand), entries, and
//! inclusion and consistency proofs — and the evidence bundle of a lead from both. The
//! witnesses' cosignatures (kept when consistent with the witness's previous one, served with
//! the checkpoint); leads and one lead with both sides' timelines, the deadline board, the
//! 以罚代刑 screening, the monthly report, spot audits and the access log (`views`).
//! Supervisors change nothing, except asking for a fresh checkpoint, cosigning one and
//! drawing a spot audit.

mod evidence;
mod logs;
pub mod reports;
pub mod views;

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
    /// The police log's verifier key, when the hub knows it.
    pub police_key: Option<crate::shared::tlog::checkpoint::VerifierKey>,
    /// The checkpoints' origins (`leadbridge/<deployment>/<log>`).
    pub hub_origin: String,
    pub police_origin: String,
    /// The witnesses whose cosignatures the hub keeps.
    pub witnesses: Vec<crate::shared::tlog::checkpoint::VerifierKey>,
    /// The Decree 310 clocks the deadline board and the report evaluate.
    pub clocks: crate::contract::deadlines::Clocks,
    /// The screening window and the report's weights (`[supervision]`).
    pub settings: reports::SupervisionSettings,
    /// District names for the report.
    pub districts: Arc<crate::contract::lead::division::DivisionTable>,
    /// The largest small JSON body (a spot-audit request) it reads.
    pub max_small_body_bytes: usize,
}

type SuperviseState = axum::extract::State<Arc<SuperviseApi>>;

/// Every route of the supervision API, with its documentation.
pub fn routes(api: Arc<SuperviseApi>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(logs::keys))
        .routes(routes!(logs::checkpoint))
        .routes(routes!(logs::checkpoints, logs::sign_checkpoint))
        .routes(routes!(logs::cosign))
        .routes(routes!(logs::entries))
        .routes(routes!(logs::inclusion))
        .routes(routes!(logs::consistency))
        .routes(routes!(evidence::evidence))
        .routes(routes!(views::leads))
        .routes(routes!(views::lead))
        .routes(routes!(views::deadline_board))
        .routes(routes!(views::screening))
        .routes(routes!(views::monthly_report))
        .routes(routes!(views::spot_audit))
        .routes(routes!(views::access_log))
        .with_state(api)
}
