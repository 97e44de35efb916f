//! The request guard: every request runs with a deadline, under a cap on requests in progress,
//! with its panics contained.
//!
//! Promise: a request that cannot get a place among `server.max_concurrent_requests` is answered
//! at once with 503 `overloaded` and `Retry-After`, never queued without bound; a request that
//! runs longer than `server.request_timeout_secs` is answered 503 `timeout` (what it had
//! committed stays committed: a retried submission is an exact replay, answered 200 with the
//! first receipt); a handler that panics is answered 500 `internal` with the panic logged, and
//! the connection and every other request carry on. Liveness, readiness and metrics
//! (`/healthz`, `/readyz`, `/metrics`) bypass the cap, so an overloaded hub is not restarted
//! for being busy and anonymous probes cannot take agencies' places.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use prometheus::IntCounterVec;
use tokio::sync::Semaphore;

use super::ApiError;

/// The guard's limits, shared by every request of one server.
pub struct RequestGuard {
    permits: Arc<Semaphore>,
    max_concurrent: u32,
    timeout: Duration,
    /// `leadbridge_requests_refused_total{reason}`.
    refused: IntCounterVec,
}

impl RequestGuard {
    pub fn new(max_concurrent_requests: usize, timeout: Duration, refused: IntCounterVec) -> Self {
        RequestGuard {
            permits: Arc::new(Semaphore::new(max_concurrent_requests)),
            max_concurrent: u32::try_from(max_concurrent_requests).unwrap_or(u32::MAX),
            timeout,
            refused,
        }
    }
}

impl RequestGuard {
    /// Waits until no guarded request is in progress, at most `within`; false if some still
    /// were. New requests cannot start meanwhile only because the listener is closed by then.
    pub async fn wait_until_idle(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.permits.acquire_many(self.max_concurrent))
            .await
            .is_ok_and(|acquired| acquired.is_ok())
    }
}

/// Paths that must answer even when the hub is saturated. `/readyz` is among them because it
/// reuses its verdict for a second, so a flood of probes costs the dependencies nothing.
fn bypasses_the_cap(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

pub async fn guard_request(
    State(guard): State<Arc<RequestGuard>>,
    request: Request,
    next: Next,
) -> Response {
    let _permit = if bypasses_the_cap(request.uri().path()) {
        None
    } else {
        match guard.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                guard.refused.with_label_values(&["overloaded"]).inc();
                let mut response = ApiError::Overloaded.into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
        }
    };
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let handled = AssertUnwindSafe(next.run(request)).catch_unwind();
    match tokio::time::timeout(guard.timeout, handled).await {
        Ok(Ok(response)) => response,
        Ok(Err(panic)) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|text| text.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            guard.refused.with_label_values(&["panic"]).inc();
            ApiError::Internal(format!("{method} {path} panicked: {message}")).into_response()
        }
        Err(_) => {
            guard.refused.with_label_values(&["timeout"]).inc();
            tracing::warn!(%method, path, timeout_secs = guard.timeout.as_secs(), "Request timed out.");
            let mut response = ApiError::TimedOut {
                secs: guard.timeout.as_secs(),
            }
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;
    use prometheus::Opts;
    use tower::ServiceExt;

    use super::*;

    fn guarded(router: Router) -> (Router, IntCounterVec) {
        let refused =
            IntCounterVec::new(Opts::new("refused", "test"), &["reason"]).expect("a counter");
        let guard = Arc::new(RequestGuard::new(
            4,
            Duration::from_secs(5),
            refused.clone(),
        ));
        let router = router.layer(axum::middleware::from_fn_with_state(guard, guard_request));
        (router, refused)
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_and_the_next_request_is_served() {
        let (router, refused) = guarded(
            Router::new()
                .route(
                    "/boom",
                    get(|| async {
                        if true {
                            panic!("the handler broke");
                        }
                        "unreachable"
                    }),
                )
                .route("/fine", get(|| async { "fine" })),
        );
        let request = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request("/boom")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()["content-type"],
            super::super::PROBLEM_JSON
        );
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], "internal");
        assert!(
            !problem["detail"].as_str().unwrap().contains("broke"),
            "the panic message stays in the log: {problem}"
        );
        assert_eq!(refused.with_label_values(&["panic"]).get(), 1);

        let response = router.oneshot(request("/fine")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
