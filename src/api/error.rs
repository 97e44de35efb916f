//! `ApiError`: the only place where errors become HTTP answers.
//!
//! Policy: every error body is RFC 9457 `application/problem+json` with a stable `type` URN.
//! Caller mistakes get a specific status and message; an unavailable database gets 503 (the
//! caller may retry); anything else is logged with its cause and answered with an opaque 500,
//! so internals never leak to callers.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::ingest::IngestError;
use crate::lead::LeadId;
use crate::store::{ConflictReason, StoreError};
use crate::validate::{Problem, ValidationError};

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a client certificate issued by the hub's CA is required")]
    Unauthenticated,
    /// A certificate the CA issued, whose subject names no principal unambiguously.
    #[error("the client certificate names no principal: {0}")]
    UnusableCertificate(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("malformed JSON at byte {byte_offset}: {message}")]
    MalformedJson { message: String, byte_offset: usize },
    #[error("{0}")]
    BadRequest(String),
    #[error("the lead is invalid")]
    Invalid(Vec<Problem>),
    #[error("{detail}")]
    Conflict { lead_id: LeadId, detail: String },
    /// The step is not allowed in the lead's current state (Decree 310 workflow).
    #[error("{0}")]
    StateConflict(String),
    #[error("the service is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated | ApiError::UnusableCertificate(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MalformedJson { .. } | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict { .. } | ApiError::StateConflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::Unauthenticated => ("unauthenticated", "Client certificate required"),
            ApiError::UnusableCertificate(_) => (
                "unusable-certificate",
                "The client certificate names no principal",
            ),
            ApiError::Forbidden(_) => ("forbidden", "Not yours to do"),
            ApiError::NotFound => ("not-found", "Not found"),
            ApiError::MethodNotAllowed => ("method-not-allowed", "Method not allowed"),
            ApiError::PayloadTooLarge { .. } => ("payload-too-large", "Request body too large"),
            ApiError::UnsupportedMediaType => {
                ("unsupported-media-type", "Unsupported content type")
            }
            ApiError::MalformedJson { .. } => ("malformed-json", "Malformed JSON"),
            ApiError::BadRequest(_) => ("bad-request", "Bad request"),
            ApiError::Invalid(_) => ("validation", "The lead is invalid"),
            ApiError::Conflict { .. } => ("conflict", "Conflicts with an accepted lead"),
            ApiError::StateConflict(_) => ("workflow", "Not allowed in the lead's current state"),
            ApiError::Unavailable(_) => ("unavailable", "Service temporarily unavailable"),
            ApiError::Internal(_) => ("internal", "Internal error"),
        }
    }

    /// The problem+json document of this error.
    pub fn problem(&self) -> Value {
        let (slug, title) = self.kind();
        let status = self.status().as_u16();
        let detail = match self {
            ApiError::Invalid(problems) if problems.len() == 1 => "1 problem".to_owned(),
            ApiError::Invalid(problems) => format!("{} problems", problems.len()),
            // Internal details stay in the log.
            ApiError::Internal(_) => {
                "the request could not be completed; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let mut problem = json!({
            "type": format!("urn:leadbridge:problem:{slug}"),
            "title": title,
            "status": status,
            "detail": detail,
        });
        match self {
            ApiError::Invalid(problems) => problem["errors"] = json!(problems),
            ApiError::Conflict { lead_id, .. } => problem["lead_id"] = json!(lead_id),
            ApiError::PayloadTooLarge { limit } => problem["limit_bytes"] = json!(limit),
            ApiError::MalformedJson { byte_offset, .. } => {
                problem["byte_offset"] = json!(byte_offset)
            }
            _ => {}
        }
        problem
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "Request failed.");
        }
        let mut response = (self.status(), self.problem().to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_retryable() {
            ApiError::Unavailable("the database is busy or unreachable; retry later".into())
        } else {
            ApiError::Internal(error.to_string())
        }
    }
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
