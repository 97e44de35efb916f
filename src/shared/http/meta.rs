//! The process's own routes: the OpenAPI document, health, readiness and metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rdkafka::producer::Producer;
use serde::Serialize;
use utoipa::ToSchema;

use super::{EdgeState, NotAProblem, ProblemDocument};

const READINESS_TIMEOUT: Duration = Duration::from_secs(3);

/// The OpenAPI document of this process's routes, serialised once when its router is built.
#[derive(Clone)]
pub struct OpenApiDocument(pub Arc<str>);

/// This document
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "process",
    security(()),
    responses((status = 200, description = "OpenAPI 3.1", body = Object, content_type = "application/json"))
)]
pub async fn openapi(Extension(OpenApiDocument(document)): Extension<OpenApiDocument>) -> Response {
    with_content_type(document.to_string().into_response(), "application/json")
}

/// The answer of `/healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness
///
/// The process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "process",
    security(()),
    responses((status = 200, description = "The process answers", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// How long a readiness verdict is reused: anonymous callers can ask as often as they like,
/// the database and Kafka are asked at most once per period.
const READINESS_REUSE: Duration = Duration::from_secs(1);

/// The last readiness verdict; its lock also makes concurrent checks wait for one check.
#[derive(Default)]
pub struct ReadinessCache(tokio::sync::Mutex<Option<(std::time::Instant, StatusCode, Readiness)>>);

/// The answer of `/readyz`: a verdict per dependency, never why (that goes to the log).
#[derive(Clone, Serialize, ToSchema)]
pub struct Readiness {
    status: ReadinessStatus,
    database: Verdict,
    kafka: Verdict,
}

#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessStatus {
    Ready,
    NotReady,
}

#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Down,
}

/// Readiness: database and Kafka reachable
///
/// Anyone may ask, so the answer says only `ok` or `down` per dependency; why one is down
/// (addresses, database errors) goes to the log. A verdict is reused for a second.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "process",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready, with the failing dependency (a readiness \
            report); or the request ran past the deadline (a problem, `timeout`)",
            content((Readiness = "application/json"), (ProblemDocument = "application/problem+json"))),
    )
)]
pub async fn readyz(State(state): State<EdgeState>) -> Response {
    let mut cached = state.0.readiness.0.lock().await;
    let (status, body) = match &*cached {
        Some((at, status, body)) if at.elapsed() < READINESS_REUSE => (*status, body.clone()),
        _ => {
            let (status, body) = check_readiness(&state).await;
            *cached = Some((std::time::Instant::now(), status, body.clone()));
            (status, body)
        }
    };
    drop(cached);
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(NotAProblem);
    response
}

async fn check_readiness(state: &EdgeState) -> (StatusCode, Readiness) {
    let mut database = Ok(());
    for store in &state.0.stores {
        let result = match tokio::time::timeout(READINESS_TIMEOUT, store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("no answer within 3 s".to_owned()),
        };
        if result.is_err() {
            database = result;
        }
    }
    let producer = state.0.kafka_probe.clone();
    let kafka = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, READINESS_TIMEOUT)
            .map(|_| ())
            .map_err(|error| error.to_string())
    })
    .await
    .unwrap_or_else(|error| Err(error.to_string()));
    if let Err(error) = &database {
        tracing::warn!(%error, "Not ready: the database does not answer.");
    }
    if let Err(error) = &kafka {
        tracing::warn!(%error, "Not ready: Kafka does not answer.");
    }
    let verdict = |result: &Result<(), String>| {
        if result.is_ok() {
            Verdict::Ok
        } else {
            Verdict::Down
        }
    };
    let body = Readiness {
        status: if database.is_ok() && kafka.is_ok() {
            ReadinessStatus::Ready
        } else {
            ReadinessStatus::NotReady
        },
        database: verdict(&database),
        kafka: verdict(&kafka),
    };
    let status = if database.is_ok() && kafka.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

/// Prometheus metrics
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "process",
    security(()),
    responses((status = 200, description = "Text exposition format", body = String, content_type = "text/plain; version=0.0.4"))
)]
pub async fn metrics(State(state): State<EdgeState>) -> Response {
    with_content_type(
        state.0.metrics.render().into_response(),
        "text/plain; version=0.0.4",
    )
}

pub fn with_content_type(mut response: Response, content_type: &'static str) -> Response {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
