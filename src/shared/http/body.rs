//! Request bodies: the one way every route reads, bounds and parses a body.
//!
//! Promise: a body is only ever JSON (`Content-Type: application/json`, else 415), at most the
//! route's limit (else 413), parsed by the strict parser (`validate::json`: repeated keys are
//! refused) and, for the small typed bodies, free of control characters. A refused oversized
//! body still gets its 413 to the client:
//!
//! - with `Expect: 100-continue` and a declared length over the limit, the body is never polled,
//!   so hyper never sends `100 Continue` and the client reads the 413 before sending anything;
//! - otherwise the client is already sending, and closing the connection under it makes it see
//!   a reset instead of the answer; so the rest of the body is read and discarded in the
//!   background, at most [`DRAIN_MAX_BYTES`] more and for at most [`DRAIN_MAX_TIME`], while the
//!   413 is written.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ApiError;
use crate::contract::validate::{control_characters, json};

/// Most bytes of an oversized body read and discarded after its 413.
pub const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Longest time an oversized body is read and discarded after its 413.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(30);

/// Longest reason of a decision or a reconsideration request, in characters: a page of text,
/// which the written decision (不予立案通知书) itself holds; the hub carries the summary.
pub const MAX_REASON_CHARS: usize = 2_000;
/// Longest police case number (e.g. `淄公(张)立字[2026]1153号`), in characters.
pub const MAX_CASE_NO_CHARS: usize = 100;

/// A `max_length` problem when `text` has more than `max` characters.
pub fn max_chars(
    pointer: &str,
    text: Option<&str>,
    max: usize,
) -> Option<crate::contract::validate::Problem> {
    let length = text?.chars().count();
    (length > max).then(|| {
        crate::contract::validate::Problem::new(
            pointer,
            "max_length",
            format!("at most {max} characters; this one has {length}"),
        )
    })
}

/// Refuses anything but `application/json` (parameters such as `charset` allowed).
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Requires JSON, reads at most `limit` bytes and parses them strictly.
pub async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value, ApiError> {
    require_json(headers)?;
    let bytes = read_body(headers, body, limit).await?;
    Ok(json::parse(&bytes)?)
}

/// As [`read_json`], then refuses control characters (422, one problem per string) and
/// deserializes into `T` (whose unknown or mistyped members are a 400 naming them).
pub async fn read_typed<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    expected: &str,
) -> Result<T, ApiError> {
    let document = read_json(headers, body, limit).await?;
    let problems = control_characters(&document);
    if !problems.is_empty() {
        return Err(ApiError::Invalid(problems));
    }
    serde_json::from_value(document)
        .map_err(|error| ApiError::InvalidBody(format!("expected {expected}: {error}")))
}

/// Reads the body frame by frame, refusing it with 413 as soon as it is known to exceed
/// `limit` (declared or actual).
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(length) = declared.filter(|length| *length > limit as u64) {
        let expects_continue = headers
            .get(header::EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        // Polling the body is what makes hyper send `100 Continue`; a client that waits for it
        // must hear the refusal instead, so its body is not touched.
        if !expects_continue && length <= DRAIN_MAX_BYTES {
            drain_in_background(body);
        }
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let capacity = declared.map_or(0, |length| length as usize);
    let mut collected = Vec::with_capacity(capacity);
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| ApiError::UnreadableBody(error.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing a route reads
        };
        if collected.len() + data.len() > limit {
            drain_in_background(body);
            return Err(ApiError::PayloadTooLarge { limit });
        }
        collected.extend_from_slice(&data);
    }
    Ok(Bytes::from(collected))
}

/// Reads and discards what is left of a refused body, bounded, so the client can finish sending
/// and read the answer instead of a reset.
fn drain_in_background(mut body: Body) {
    tokio::spawn(async move {
        let mut drained: u64 = 0;
        let drain = async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    drained += data.len() as u64;
                    if drained > DRAIN_MAX_BYTES {
                        return false;
                    }
                }
            }
            true
        };
        match tokio::time::timeout(DRAIN_MAX_TIME, drain).await {
            Ok(true) => tracing::debug!("Discarded the rest of an oversized body."),
            // Dropping the body makes hyper close the connection: the client gets a reset,
            // which is all a client sending this much or this slowly can get.
            Ok(false) | Err(_) => {
                tracing::debug!("Stopped discarding an oversized body; closing the connection.")
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_content_types_with_parameters_are_accepted() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(require_json(&headers).is_ok());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(matches!(
            require_json(&headers),
            Err(ApiError::UnsupportedMediaType)
        ));
        assert!(matches!(
            require_json(&HeaderMap::new()),
            Err(ApiError::UnsupportedMediaType)
        ));
    }

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_even_without_a_declared_length() {
        let body = Body::from_stream(futures::stream::iter(
            (0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 10]))),
        ));
        assert!(matches!(
            read_body(&json_headers(), body, 39).await,
            Err(ApiError::PayloadTooLarge { limit: 39 })
        ));
        let body = Body::from_stream(futures::stream::iter(
            (0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 10]))),
        ));
        assert_eq!(
            read_body(&json_headers(), body, 40).await.unwrap().len(),
            40
        );
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Reason {
        reason: String,
    }

    #[tokio::test]
    async fn typed_bodies_refuse_control_characters_duplicates_and_unknown_members() {
        let headers = json_headers();
        let read = |text: &'static str| {
            read_typed::<Reason>(&headers, Body::from(text), 1024, "{\"reason\"}")
        };
        assert!(read(r#"{"reason": "ok\tfine\n"}"#).await.is_ok());
        match read(r#"{"reason": "nul\u0000"}"#).await {
            Err(ApiError::Invalid(problems)) => {
                assert_eq!(problems[0].pointer, "/reason");
                assert_eq!(problems[0].code, "control_character");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read(r#"{"reason": "a", "reason": "b"}"#).await,
            Err(ApiError::DuplicateKey { .. })
        ));
        assert!(matches!(
            read(r#"{"reason": "a", "colour": "b"}"#).await,
            Err(ApiError::InvalidBody(_))
        ));
    }
}
