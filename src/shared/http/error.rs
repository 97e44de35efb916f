//! `ApiError`: the only place where errors become HTTP answers.
//!
//! Policy: every error body is RFC 9457 `application/problem+json` with a stable `type` URN and
//! a stable snake_case `code` (both documented in `schemas/README.md`; the code is the URN's last
//! segment with `_` for `-`). Framework rejections are mapped here too (see `extract`), and the
//! router's safety net turns any error that still escapes as something else into
//! [`ApiError::Unmapped`].
//! Caller mistakes get a specific status and message; an unavailable database gets 503 (the
//! caller may retry); anything else is logged with its cause and answered with an opaque 500,
//! so internals never leak to callers.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::contract::lead::LeadId;
use crate::contract::validate::json::JsonError;
use crate::contract::validate::Problem;
use crate::shared::store::StoreError;

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
    /// Not found, saying what is missing (an index beyond a log, a log not served).
    #[error("{0}")]
    NotFoundDetail(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("malformed JSON at byte {byte_offset}: {message}")]
    MalformedJson { message: String, byte_offset: usize },
    #[error("the key {key:?} appears twice in one object (second at byte {byte_offset})")]
    DuplicateKey { key: String, byte_offset: usize },
    /// The query string does not fit the route's parameters.
    #[error("{0}")]
    InvalidQuery(String),
    /// A path segment cannot be read (e.g. percent-encoding that is not UTF-8).
    #[error("{0}")]
    InvalidPath(String),
    /// Well-formed JSON of the wrong shape for a small request body (decision, reconsideration).
    #[error("{0}")]
    InvalidBody(String),
    /// The connection failed while the body was being read.
    #[error("the request body could not be read: {0}")]
    UnreadableBody(String),
    #[error("the lead is invalid")]
    Invalid(Vec<Problem>),
    /// A value in the request that the database can never store.
    #[error("the request holds a value the database cannot store")]
    Unstorable,
    /// Every place for a request in progress is taken (`server.max_concurrent_requests`).
    #[error("the hub is handling as many requests as it may; retry shortly")]
    Overloaded,
    /// The request ran past `server.request_timeout_secs`.
    #[error("the request took longer than {secs} s; what it committed stays committed, so retrying is safe")]
    TimedOut { secs: u64 },
    #[error("{detail}")]
    Conflict { lead_id: LeadId, detail: String },
    /// The step is not allowed in the lead's current state (Decree 310 workflow).
    #[error("{0}")]
    StateConflict(String),
    #[error("the service is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// An error answer that left the router without a problem document (an unmapped framework
    /// rejection); the safety net in the router turns it into this one.
    #[error("{}", .detail.as_deref().unwrap_or("the request was refused"))]
    Unmapped {
        status: StatusCode,
        detail: Option<String>,
    },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated | ApiError::UnusableCertificate(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::NotFoundDetail(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MalformedJson { .. }
            | ApiError::DuplicateKey { .. }
            | ApiError::InvalidQuery(_)
            | ApiError::InvalidPath(_)
            | ApiError::InvalidBody(_)
            | ApiError::UnreadableBody(_)
            | ApiError::Unstorable => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict { .. } | ApiError::StateConflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) | ApiError::Overloaded | ApiError::TimedOut { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unmapped { status, .. } => *status,
        }
    }

    /// The stable `code` member: the `type` URN's last segment in snake_case.
    pub fn code(&self) -> String {
        self.kind().0.replace('-', "_")
    }

    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::Unauthenticated => ("unauthenticated", "Client certificate required"),
            ApiError::UnusableCertificate(_) => (
                "unusable-certificate",
                "The client certificate names no principal",
            ),
            ApiError::Forbidden(_) => ("forbidden", "Not yours to do"),
            ApiError::NotFound | ApiError::NotFoundDetail(_) => ("not-found", "Not found"),
            ApiError::MethodNotAllowed => ("method-not-allowed", "Method not allowed"),
            ApiError::PayloadTooLarge { .. } => ("payload-too-large", "Request body too large"),
            ApiError::UnsupportedMediaType => {
                ("unsupported-media-type", "Unsupported content type")
            }
            ApiError::MalformedJson { .. } => ("malformed-json", "Malformed JSON"),
            ApiError::DuplicateKey { .. } => ("duplicate-key", "Repeated object key"),
            ApiError::InvalidQuery(_) => ("invalid-query", "Invalid query string"),
            ApiError::InvalidPath(_) => ("invalid-path", "Invalid path"),
            ApiError::InvalidBody(_) => ("invalid-body", "Request body of the wrong shape"),
            ApiError::UnreadableBody(_) => ("unreadable-body", "Request body unreadable"),
            ApiError::Invalid(_) => ("validation", "The lead is invalid"),
            ApiError::Conflict { .. } => ("conflict", "Conflicts with an accepted lead"),
            ApiError::StateConflict(_) => ("workflow", "Not allowed in the lead's current state"),
            ApiError::Unavailable(_) => ("unavailable", "Service temporarily unavailable"),
            ApiError::Overloaded => ("overloaded", "Too many requests in progress"),
            ApiError::Unstorable => ("unstorable", "A value that cannot be stored"),
            ApiError::TimedOut { .. } => ("timeout", "The request took too long"),
            ApiError::Internal(_) => ("internal", "Internal error"),
            ApiError::Unmapped { .. } => ("http-error", "Request refused"),
        }
    }

    /// The problem+json document of this error.
    pub fn problem(&self) -> Value {
        serde_json::to_value(self.problem_document()).expect("a problem document serialises")
    }

    /// The problem+json document of this error, typed: the one shape every error answer has,
    /// which the OpenAPI document states as `Problem`.
    pub fn problem_document(&self) -> ProblemDocument {
        let (slug, title) = self.kind();
        let detail = match self {
            ApiError::Invalid(problems) if problems.len() == 1 => "1 problem".to_owned(),
            ApiError::Invalid(problems) => format!("{} problems", problems.len()),
            // Internal details stay in the log.
            ApiError::Internal(_) => {
                "the request could not be completed; it has been logged".to_owned()
            }
            ApiError::Unmapped { status, .. } if status.is_server_error() => {
                "the request could not be completed; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let mut problem = ProblemDocument {
            kind: format!("urn:leadbridge:problem:{slug}"),
            code: self.code(),
            title,
            status: self.status().as_u16(),
            detail,
            errors: None,
            lead_id: None,
            limit_bytes: None,
            byte_offset: None,
            key: None,
        };
        match self {
            ApiError::Invalid(problems) => problem.errors = Some(problems.clone()),
            ApiError::Conflict { lead_id, .. } => problem.lead_id = Some(*lead_id),
            ApiError::PayloadTooLarge { limit } => problem.limit_bytes = Some(*limit),
            ApiError::MalformedJson { byte_offset, .. } => problem.byte_offset = Some(*byte_offset),
            ApiError::DuplicateKey { key, byte_offset } => {
                problem.key = Some(key.clone());
                problem.byte_offset = Some(*byte_offset);
            }
            _ => {}
        }
        problem
    }
}

/// An RFC 9457 problem details document: the body of every error answer.
///
/// The members beyond `detail` appear only on the errors they belong to.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDocument {
    /// `urn:leadbridge:problem:<kind>`
    #[serde(rename = "type")]
    pub kind: String,
    /// Stable snake_case code of the problem (schemas/README.md, "Problem codes of the HTTP
    /// API"): the `type`'s last segment with `_` for `-`.
    pub code: String,
    pub title: &'static str,
    /// The HTTP status of the answer.
    pub status: u16,
    pub detail: String,
    /// On 422: every problem of the submission, each with its JSON Pointer and code.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<Problem>)]
    pub errors: Option<Vec<Problem>>,
    /// On 409: the lead the submission conflicts with.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = LeadId)]
    pub lead_id: Option<LeadId>,
    /// On 413: the route's body limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = usize)]
    pub limit_bytes: Option<usize>,
    /// On 400 malformed JSON: where parsing failed; on 400 duplicate key: the opening quote of
    /// the repeated key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = usize)]
    pub byte_offset: Option<usize>,
    /// On 400 duplicate key: the repeated key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub key: Option<String>,
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

impl From<JsonError> for ApiError {
    fn from(error: JsonError) -> Self {
        match error {
            JsonError::Syntax {
                message,
                byte_offset,
            } => ApiError::MalformedJson {
                message,
                byte_offset,
            },
            JsonError::DuplicateKey { key, byte_offset } => {
                ApiError::DuplicateKey { key, byte_offset }
            }
        }
    }
}

impl From<crate::shared::audit::AuditError> for ApiError {
    fn from(error: crate::shared::audit::AuditError) -> Self {
        match error {
            crate::shared::audit::AuditError::Store(error) => error.into(),
            // A log that does not verify or a tree that cannot be computed is the hub's fault.
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_retryable() {
            ApiError::Unavailable("the database is busy or unreachable; retry later".into())
        } else if error.is_permanent() {
            // The request carried a value the database can never store (validation should
            // have caught it; log it as the gap it is), so resending it cannot help: a 400.
            tracing::warn!(%error, "A request carried a value the database cannot store.");
            ApiError::Unstorable
        } else {
            ApiError::Internal(error.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_has_its_documented_code() {
        // The code each variant must carry, written out (not derived from `kind`), with no
        // wildcard so that a new variant cannot be added without its code.
        fn expected(error: &ApiError) -> &'static str {
            match error {
                ApiError::Unauthenticated => "unauthenticated",
                ApiError::UnusableCertificate(_) => "unusable_certificate",
                ApiError::Forbidden(_) => "forbidden",
                ApiError::NotFound | ApiError::NotFoundDetail(_) => "not_found",
                ApiError::MethodNotAllowed => "method_not_allowed",
                ApiError::PayloadTooLarge { .. } => "payload_too_large",
                ApiError::UnsupportedMediaType => "unsupported_media_type",
                ApiError::MalformedJson { .. } => "malformed_json",
                ApiError::DuplicateKey { .. } => "duplicate_key",
                ApiError::InvalidQuery(_) => "invalid_query",
                ApiError::InvalidPath(_) => "invalid_path",
                ApiError::InvalidBody(_) => "invalid_body",
                ApiError::UnreadableBody(_) => "unreadable_body",
                ApiError::Invalid(_) => "validation",
                ApiError::Unstorable => "unstorable",
                ApiError::Overloaded => "overloaded",
                ApiError::TimedOut { .. } => "timeout",
                ApiError::Conflict { .. } => "conflict",
                ApiError::StateConflict(_) => "workflow",
                ApiError::Unavailable(_) => "unavailable",
                ApiError::Internal(_) => "internal",
                ApiError::Unmapped { .. } => "http_error",
            }
        }
        let documented = include_str!("../../../schemas/README.md");
        let errors = [
            ApiError::Unauthenticated,
            ApiError::UnusableCertificate("two CNs".into()),
            ApiError::Forbidden("no".into()),
            ApiError::NotFound,
            ApiError::NotFoundDetail("no entry 9".into()),
            ApiError::MethodNotAllowed,
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::UnsupportedMediaType,
            ApiError::MalformedJson {
                message: "eof".into(),
                byte_offset: 3,
            },
            ApiError::DuplicateKey {
                key: "agency".into(),
                byte_offset: 19,
            },
            ApiError::InvalidQuery("limit".into()),
            ApiError::InvalidPath("%FF".into()),
            ApiError::InvalidBody("shape".into()),
            ApiError::UnreadableBody("reset".into()),
            ApiError::Invalid(vec![]),
            ApiError::Unstorable,
            ApiError::Overloaded,
            ApiError::TimedOut { secs: 60 },
            ApiError::Conflict {
                lead_id: LeadId::generate(),
                detail: "other content".into(),
            },
            ApiError::StateConflict("decided".into()),
            ApiError::Unavailable("db".into()),
            ApiError::Internal("bug".into()),
            ApiError::Unmapped {
                status: StatusCode::URI_TOO_LONG,
                detail: None,
            },
        ];
        for error in errors {
            let problem = error.problem();
            let code = expected(&error);
            assert_eq!(problem["code"], code, "{error:?}");
            assert_eq!(
                problem["type"],
                format!("urn:leadbridge:problem:{}", code.replace('_', "-"))
            );
            assert_eq!(problem["status"], error.status().as_u16());
            assert!(
                documented.contains(&format!("| `{code}` |")),
                "schemas/README.md documents the code {code}"
            );
        }
    }

    #[test]
    fn a_duplicate_key_names_the_key_and_its_offset() {
        let problem = ApiError::from(JsonError::DuplicateKey {
            key: "agency".into(),
            byte_offset: 19,
        })
        .problem();
        assert_eq!(problem["type"], "urn:leadbridge:problem:duplicate-key");
        assert_eq!(problem["code"], "duplicate_key");
        assert_eq!(problem["key"], "agency");
        assert_eq!(problem["byte_offset"], 19);
        assert_eq!(problem["status"], 400);
    }

    #[test]
    fn an_unmapped_server_error_does_not_leak_its_text() {
        let problem = ApiError::Unmapped {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            detail: Some("secret".into()),
        }
        .problem();
        assert!(!problem.to_string().contains("secret"), "{problem}");
    }

    #[test]
    fn a_value_the_database_cannot_store_is_the_callers_400_not_a_500() {
        let error: ApiError =
            StoreError::Unstorable(sqlx::Error::Protocol("invalid byte sequence".into())).into();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error.code(), "unstorable");
        assert!(!error.problem().to_string().contains("byte sequence"));
    }
}
