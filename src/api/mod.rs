//! The HTTPS API. Every route is listed in [`router`]; one file per resource.

mod error;
mod feedback;
mod leads;
mod meta;
mod police;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use rdkafka::producer::FutureProducer;

pub use error::{ApiError, PROBLEM_JSON};
pub use tls::ClientIdentity;

use crate::config::LimitSettings;
use crate::identity::Principal;
use crate::ingest::Ingest;
use crate::kafka::Topics;
use crate::lead::Agency;
use crate::police::settings::DeadlineSettings;
use crate::police::PoliceStore;
use crate::store::Store;
use crate::telemetry::Metrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

pub struct App {
    /// The agency side, when this process runs the hub.
    pub hub: Option<HubApi>,
    /// The investigators' side, when this process runs the police adapter.
    pub police: Option<PoliceStore>,
    pub metrics: Metrics,
    pub limits: LimitSettings,
    /// A Kafka client for readiness checks.
    pub kafka_probe: FutureProducer,
}

pub struct HubApi {
    pub ingest: Ingest,
    pub store: Store,
    pub topics: Topics,
    pub deadlines: DeadlineSettings,
    pub relay_wakeup: Arc<tokio::sync::Notify>,
}

impl AppState {
    fn hub(&self) -> Result<&HubApi, ApiError> {
        self.0.hub.as_ref().ok_or(ApiError::NotFound)
    }
}

/// Every route of the hub. Routes of a side this process does not run answer 404.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    if state.0.hub.is_some() {
        router = router
            .route("/v1/leads", post(leads::submit))
            .route("/v1/leads/batch", post(leads::submit_batch))
            .route("/v1/leads/{lead_id}", get(leads::status))
            .route(
                "/v1/leads/{lead_id}/reconsideration",
                post(feedback::reconsideration),
            )
            .route("/v1/feedback", get(feedback::feedback))
            .route("/v1/schemas", get(meta::schema_index))
            .route("/v1/schemas/{lead_type}", get(meta::schema));
    }
    if state.0.police.is_some() {
        router = router
            .route("/police/v1/inbox", get(police::inbox))
            .route("/police/v1/leads/{lead_id}", get(police::lead))
            .route("/police/v1/leads/{lead_id}/decision", post(police::decide));
    }
    router
        .route("/openapi.json", get(meta::openapi))
        .route("/healthz", get(meta::healthz))
        .route("/readyz", get(meta::readyz))
        .route("/metrics", get(meta::metrics))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .with_state(state)
}

/// Counts every request and its latency by matched route (never by raw path, which would let
/// callers create unbounded series).
async fn record_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let metrics = &state.0.metrics;
    metrics
        .http_requests
        .with_label_values(&[&method, &route, response.status().as_str()])
        .inc();
    metrics
        .http_duration
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The principal of the request's connection; 401 without one, with the reason when the
/// certificate was verified but names no principal unambiguously.
fn principal(parts: &Parts) -> Result<&Principal, ApiError> {
    match parts.extensions.get::<ClientIdentity>() {
        Some(ClientIdentity::Principal(principal)) => Ok(principal),
        Some(ClientIdentity::Refused(error)) => {
            Err(ApiError::UnusableCertificate(error.to_string()))
        }
        Some(ClientIdentity::Anonymous) | None => Err(ApiError::Unauthenticated),
    }
}

/// An authenticated agency: the caller of the agency API.
pub struct AgencyCaller(pub Agency);

impl<S: Send + Sync> FromRequestParts<S> for AgencyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match principal(parts)? {
            Principal::Agency(agency) => Ok(AgencyCaller(*agency)),
            other => Err(ApiError::Forbidden(format!(
                "{other} may not use the agency API"
            ))),
        }
    }
}

/// An authenticated investigator and the police unit their certificate names.
pub struct InvestigatorCaller {
    pub unit: String,
}

impl<S: Send + Sync> FromRequestParts<S> for InvestigatorCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match principal(parts)? {
            Principal::Investigator { unit } => Ok(InvestigatorCaller { unit: unit.clone() }),
            other => Err(ApiError::Forbidden(format!(
                "{other} may not use the investigators' API"
            ))),
        }
    }
}
