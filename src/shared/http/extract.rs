//! The routes' query and path extractors: axum's, with their rejections (plain text in axum)
//! answered as problem+json through [`ApiError`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

/// Like `axum::extract::Query`; a query that does not fit (`limit=abc`, a repeated parameter, a
/// number out of range) or whose decoded names or values hold a control character (as bodies
/// may not: `validate::control_characters`) is a 400 `invalid_query` naming the parameter.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).map_err(|error| {
            ApiError::InvalidQuery(format!("the query cannot be decoded: {error}"))
        })?;
        for (name, value) in &pairs {
            let refused = |c: &char| c.is_control() && !matches!(c, '\t' | '\n' | '\r');
            if let Some(character) = name.chars().chain(value.chars()).find(refused) {
                return Err(ApiError::InvalidQuery(format!(
                    "the query parameter {name:?} holds the control character U+{:04X}",
                    u32::from(character)
                )));
            }
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(query)| Query(query))
            .map_err(|rejection| ApiError::InvalidQuery(rejection.body_text()))
    }
}

/// Like `axum::extract::Path`; a segment that cannot be decoded (percent-encoding that is not
/// UTF-8) is a 400 `invalid_path`.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(path)| Path(path))
            .map_err(|rejection| {
                if rejection.status().is_server_error() {
                    // A route declared with other parameters than its handler reads: our bug.
                    ApiError::Internal(rejection.body_text())
                } else {
                    ApiError::InvalidPath(rejection.body_text())
                }
            })
    }
}
