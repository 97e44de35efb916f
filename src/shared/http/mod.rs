//! The HTTPS edge every role serves through: TLS and connection limits (`tls`), the request
//! guard, body and parameter readers, the caller's identity, and the routes of the process
//! itself (health, readiness, metrics, the OpenAPI document). Roles contribute their routes as
//! routers with their own state, each route with its OpenAPI operation (`openapi`); [`router`]
//! puts them behind the same layers and serves the document they make together.
//!
//! Promise: every error answer is problem+json with a `code` (see `error`). Handlers get that
//! from [`ApiError`], extractors from `extract`, bodies from `body`; and [`problem_safety_net`]
//! converts whatever else slips through, logging each time it has to.

pub mod body;
mod error;
pub mod extract;
mod guard;
mod meta;
mod openapi;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderName};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use rdkafka::producer::FutureProducer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, ProblemDocument, PROBLEM_JSON};
pub use guard::RequestGuard;
pub use meta::{with_content_type, ReadinessCache};
pub use tls::ClientIdentity;

use crate::contract::lead::Agency;
use crate::shared::identity::Principal;
use crate::shared::store::Store;
use crate::shared::telemetry::Metrics;

/// What the process's own routes and the layers around every route need.
pub struct Edge {
    pub metrics: Metrics,
    /// A Kafka client for readiness checks.
    pub kafka_probe: FutureProducer,
    /// The databases readiness checks, one per role this process runs.
    pub stores: Vec<Store>,
    /// Deadline and concurrency cap of every request.
    pub guard: Arc<RequestGuard>,
    /// `/readyz`'s last verdict, reused for a second.
    pub readiness: ReadinessCache,
    /// How many refusals each caller had logged in the current minute.
    pub refusals: RefusalWindows,
}

/// Refusals logged one by one per caller and minute; past the first [`REFUSALS_PER_MINUTE`]
/// they are counted, and the count is logged as one entry when the caller's next minute
/// begins, so a flood of refused requests cannot grow the log without bound yet none goes
/// unrecorded.
#[derive(Default)]
pub struct RefusalWindows(std::sync::Mutex<std::collections::HashMap<String, RefusalWindow>>);

struct RefusalWindow {
    started: chrono::DateTime<chrono::Utc>,
    logged: u32,
    suppressed: u64,
}

/// Refusals of one caller logged one by one in a minute.
pub const REFUSALS_PER_MINUTE: u32 = 20;

/// What to log for a refusal of `actor` at `now`: the summary of its previous minute's
/// uncounted refusals (if it had any), and whether this one is logged itself.
fn refusal_budget(
    windows: &RefusalWindows,
    actor: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> (Option<(chrono::DateTime<chrono::Utc>, u64)>, bool) {
    let mut windows = windows
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let window = windows.entry(actor.to_owned()).or_insert(RefusalWindow {
        started: now,
        logged: 0,
        suppressed: 0,
    });
    let mut summary = None;
    if now - window.started >= chrono::Duration::minutes(1) {
        if window.suppressed > 0 {
            summary = Some((window.started, window.suppressed));
        }
        *window = RefusalWindow {
            started: now,
            logged: 0,
            suppressed: 0,
        };
    }
    if window.logged < REFUSALS_PER_MINUTE {
        window.logged += 1;
        (summary, true)
    } else {
        window.suppressed += 1;
        (summary, false)
    }
}

#[derive(Clone)]
pub struct EdgeState(pub Arc<Edge>);

#[cfg(test)]
mod refusal_tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn a_flood_of_refusals_is_itemised_up_to_the_budget_then_counted() {
        let windows = RefusalWindows::default();
        let start = Utc.with_ymd_and_hms(2026, 12, 2, 8, 0, 0).unwrap();
        let logged = (0..100)
            .filter(|n| refusal_budget(&windows, "anonymous", start + Duration::milliseconds(*n)).1)
            .count();
        assert_eq!(logged, REFUSALS_PER_MINUTE as usize);
        // Another caller has a budget of its own.
        assert_eq!(refusal_budget(&windows, "agency:land", start), (None, true));
        // The next minute: the 80 not itemised are counted, and this one is itemised again.
        let next = refusal_budget(&windows, "anonymous", start + Duration::seconds(61));
        assert_eq!(next, (Some((start, 80)), true));
        // A minute without suppressed refusals leaves no summary.
        let quiet = refusal_budget(&windows, "anonymous", start + Duration::seconds(130));
        assert_eq!(quiet, (None, true));
    }
}

/// The routes of the roles this process runs (paths of a role it does not run answer 404),
/// with the process's own routes, behind the guard, the safety net and the request metrics;
/// `/openapi.json` documents exactly these routes.
pub fn router(edge: EdgeState, roles: OpenApiRouter) -> Router {
    let own = OpenApiRouter::new()
        .routes(routes!(meta::openapi))
        .routes(routes!(meta::healthz))
        .routes(routes!(meta::readyz))
        .routes(routes!(meta::metrics))
        .with_state(edge.clone());
    let (routes, document) = OpenApiRouter::with_openapi(openapi::base())
        .merge(roles)
        .merge(own)
        .split_for_parts();
    routes
        .layer(Extension(meta::OpenApiDocument(openapi::finish(document))))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(edge.clone(), audit_refusals))
        .layer(middleware::from_fn_with_state(
            edge.0.guard.clone(),
            guard::guard_request,
        ))
        .layer(middleware::from_fn(problem_safety_net))
        .layer(middleware::from_fn_with_state(edge, record_request))
}

/// Records every refused authorisation (401, 403) in the transparency log of the process's
/// first role (the hub's when it runs): who, when, what and the outcome (supervision contract
/// §6), one by one up to [`REFUSALS_PER_MINUTE`] per caller and minute, then as a count
/// ([`RefusalWindows`]). A refusal that cannot be recorded is still answered, and logged as an
/// error.
async fn audit_refusals(State(edge): State<EdgeState>, request: Request, next: Next) -> Response {
    let actor = match request.extensions().get::<ClientIdentity>() {
        Some(ClientIdentity::Principal(principal)) => principal.to_string(),
        Some(ClientIdentity::Refused(_)) => "unusable-certificate".to_owned(),
        Some(ClientIdentity::Anonymous) | None => "anonymous".to_owned(),
    };
    let method = request.method().as_str().to_owned();
    // A path is the caller's text: an entry keeps at most 512 bytes of it.
    let mut path = request.uri().path().to_owned();
    if path.len() > 512 {
        let mut end = 512;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        path.truncate(end);
    }
    let response = next.run(request).await;
    let status = response.status();
    if status == axum::http::StatusCode::UNAUTHORIZED || status == axum::http::StatusCode::FORBIDDEN
    {
        if let Some(store) = edge.0.stores.first() {
            let now = chrono::Utc::now();
            let (summary, this_one) = refusal_budget(&edge.0.refusals, &actor, now);
            let mut entries = Vec::new();
            if let Some((since, count)) = summary {
                entries.push(crate::shared::audit::AuditEntry {
                    at: now,
                    actor: actor.clone(),
                    action: "access.denied",
                    lead_id: None,
                    revision: None,
                    details: serde_json::json!({
                        "refusals_not_itemised": count,
                        "since": since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    }),
                });
            }
            if this_one {
                entries.push(crate::shared::audit::AuditEntry {
                    at: now,
                    actor,
                    action: "access.denied",
                    lead_id: None,
                    revision: None,
                    details: serde_json::json!({
                        "method": method,
                        "path": path,
                        "status": status.as_u16(),
                    }),
                });
            }
            if let Err(error) = crate::shared::audit::record_all(store, entries).await {
                tracing::error!(%error, %path, "Cannot record a refused request in the log.");
            }
        }
    }
    response
}

/// Counts every request and its latency by matched route (never by raw path, which would let
/// callers create unbounded series).
async fn record_request(State(edge): State<EdgeState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let metrics = &edge.0.metrics;
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

/// An authenticated supervisor and whom they supervise for (supervision contract §1).
pub struct SupervisorCaller {
    pub name: String,
    pub scope: crate::shared::identity::SupervisorScope,
}

impl<S: Send + Sync> FromRequestParts<S> for SupervisorCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match principal(parts)? {
            Principal::Supervisor { name, scope } => Ok(SupervisorCaller {
                name: name.clone(),
                scope: *scope,
            }),
            other => Err(ApiError::Forbidden(format!(
                "{other} may not use the supervision API"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
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
