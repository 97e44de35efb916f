//! The process's own routes: the OpenAPI document, health, readiness and metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rdkafka::producer::Producer;
use serde_json::{json, Value};

use super::{EdgeState, NotAProblem};

const OPENAPI: &str = include_str!("openapi.json");
const READINESS_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /openapi.json`
pub async fn openapi() -> Response {
    with_content_type(OPENAPI.into_response(), "application/json")
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database and Kafka are reachable. Anyone may ask, so the answer says only
/// `ok` or `down` per dependency; why one is down (addresses, database errors) goes to the log.
/// How long a readiness verdict is reused: anonymous callers can ask as often as they like,
/// the database and Kafka are asked at most once per period.
const READINESS_REUSE: Duration = Duration::from_secs(1);

/// The last readiness verdict; its lock also makes concurrent checks wait for one check.
#[derive(Default)]
pub struct ReadinessCache(tokio::sync::Mutex<Option<(std::time::Instant, StatusCode, Value)>>);

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

async fn check_readiness(state: &EdgeState) -> (StatusCode, Value) {
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
    let verdict = |result: &Result<(), String>| if result.is_ok() { "ok" } else { "down" };
    let body = json!({
        "status": if database.is_ok() && kafka.is_ok() { "ready" } else { "not_ready" },
        "database": verdict(&database),
        "kafka": verdict(&kafka),
    });
    let status = if database.is_ok() && kafka.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

/// `GET /metrics`: Prometheus text format.
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
