//! The HTTPS API. Every route is listed in [`router`]; one file per resource.
//!
//! Promise: every error answer is problem+json with a `code` (see `error`). Handlers get that
//! from [`ApiError`], extractors from `extract`, bodies from `body`; and [`problem_safety_net`]
//! converts whatever else slips through, logging each time it has to.

mod body;
mod error;
mod extract;
mod feedback;
mod guard;
mod leads;
mod meta;
mod police;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderName};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rdkafka::producer::FutureProducer;

pub use error::{ApiError, PROBLEM_JSON};
pub use guard::RequestGuard;
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
    /// Deadline and concurrency cap of every request.
    pub guard: Arc<RequestGuard>,
    /// `/readyz`'s last verdict, reused for a second.
    pub readiness: meta::ReadinessCache,
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
            state.0.guard.clone(),
            guard::guard_request,
        ))
        .layer(middleware::from_fn(problem_safety_net))
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

/// Marks an error answer that is deliberately not a problem document (`/readyz`'s 503 carries the
/// readiness report), so the safety net lets it through.
#[derive(Clone, Copy, Debug)]
pub struct NotAProblem;

/// Turns an error answer that is not problem+json (a framework rejection no extractor mapped)
/// into one, keeping its status and headers. Firing means a mapping is missing, so it warns.
async fn problem_safety_net(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes() == PROBLEM_JSON.as_bytes());
    if !(status.is_client_error() || status.is_server_error())
        || is_problem
        || response.extensions().get::<NotAProblem>().is_some()
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Framework rejection texts are short; more than this is not a rejection text.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .filter(|text| !text.trim().is_empty());
    tracing::warn!(
        status = status.as_u16(),
        route,
        text = text.as_deref().unwrap_or(""),
        "An error answer was not problem+json; converted it. Map this rejection."
    );
    let detail = text.filter(|_| status.is_client_error());
    let mut converted = ApiError::Unmapped { status, detail }.into_response();
    let keep = |name: &HeaderName| name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH;
    for (name, value) in parts.headers.iter().filter(|(name, _)| keep(name)) {
        converted.headers_mut().append(name.clone(), value.clone());
    }
    converted
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use tower::ServiceExt;

    fn router_with(answer: fn() -> Response) -> Router {
        Router::new()
            .route("/", get(move || async move { answer() }))
            .layer(middleware::from_fn(problem_safety_net))
    }

    async fn call(router: Router) -> Response {
        router
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_safety_net_turns_a_plain_text_rejection_into_a_problem() {
        let response = call(router_with(|| {
            (
                StatusCode::BAD_REQUEST,
                [(header::ALLOW, "GET")],
                "Failed to parse the request",
            )
                .into_response()
        }))
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[header::ALLOW], "GET");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], "http_error");
        assert_eq!(problem["status"], 400);
        assert_eq!(problem["detail"], "Failed to parse the request");
    }

    #[tokio::test]
    async fn the_safety_net_leaves_problems_successes_and_marked_answers_alone() {
        let response = call(router_with(|| ApiError::NotFound.into_response())).await;
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], "not_found");

        let response = call(router_with(|| "fine".into_response())).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_ne!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);

        let response = call(router_with(|| {
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, "report").into_response();
            response.extensions_mut().insert(NotAProblem);
            response
        }))
        .await;
        assert_ne!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }
}
