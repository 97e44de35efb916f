//! The hub as a connector sees it: the agency API's batch call over HTTPS with mutual TLS,
//! like any agency system. A connector knows nothing of the hub's database or Kafka.
//!
//! Promise: a batch either gets one outcome per lead, in the order sent, or an error; a
//! transport failure, a 429 or a 5xx is retried with backoff up to the configured attempts
//! (re-sending is harmless: the same case and revision is a 200 replay), and anything else the
//! hub refuses as a whole stops the run with the hub's own words.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::shared::retry::Backoff;

/// How to reach the hub.
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// `https://host:port`, without a path.
    pub url: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Attempts per batch before the run stops (at least 1).
    pub attempts: u32,
    pub backoff: Backoff,
    pub timeout: Duration,
}

/// What the hub answered for one lead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 202: a new lead or revision.
    Accepted,
    /// 200: this case and revision was accepted before with the same content.
    Replayed,
    /// 403, 409, 422: every problem, as the hub said it.
    Rejected(Vec<HubProblem>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubProblem {
    pub pointer: String,
    pub code: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot set up the HTTPS client: {0}")]
    Setup(String),
    #[error("the hub at {url} could not be reached after {attempts} attempt(s): {last}")]
    Unreachable {
        url: String,
        attempts: u32,
        last: String,
    },
    #[error("the hub refused the batch with {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("the hub's answer to the batch does not read: {0}")]
    BadAnswer(String),
}

pub struct HubClient {
    client: reqwest::Client,
    url: String,
    options: HubOptions,
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<BatchResult>,
}

#[derive(Deserialize)]
struct BatchResult {
    index: usize,
    status: u16,
    problem: Option<ProblemAnswer>,
}

#[derive(Deserialize)]
struct ProblemAnswer {
    code: String,
    detail: String,
    errors: Option<Vec<ProblemItem>>,
}

#[derive(Deserialize)]
struct ProblemItem {
    pointer: String,
    code: String,
    message: String,
}

impl HubClient {
    pub fn new(options: HubOptions) -> Result<HubClient, HubError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|error| {
                HubError::Setup(format!("cannot read {}: {error}", path.display()))
            })
        };
        let mut identity = read(&options.cert)?;
        identity.push(b'\n');
        identity.extend(read(&options.key)?);
        let ca = reqwest::Certificate::from_pem(&read(&options.ca)?)
            .map_err(|error| HubError::Setup(format!("{}: {error}", options.ca.display())))?;
        let identity = reqwest::Identity::from_pem(&identity).map_err(|error| {
            HubError::Setup(format!(
                "{} / {}: {error}",
                options.cert.display(),
                options.key.display()
            ))
        })?;
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(identity)
            .https_only(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .user_agent(concat!("leadbridge-connect/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| HubError::Setup(error.to_string()))?;
        Ok(HubClient {
            client,
            url: format!("{}/v1/leads/batch", options.url.trim_end_matches('/')),
            options,
        })
    }

    /// Sends `leads` (already serialised as `{"leads": [...]}` by [`batch_body`]) and returns
    /// one outcome per lead.
    pub async fn submit(&self, body: Vec<u8>, count: usize) -> Result<Vec<Outcome>, HubError> {
        let attempts = self.options.attempts.max(1);
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                let now = chrono::Utc::now();
                let wait = (self.options.backoff.retry_at(i64::from(attempt) - 1, now) - now)
                    .to_std()
                    .unwrap_or_default();
                tracing::warn!(attempt, error = %last, "the hub did not take the batch; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            let response = self
                .client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let response = match response {
                Ok(response) => response,
                Err(error) => {
                    last = transport_error(&error);
                    continue;
                }
            };
            let status = response.status();
            let text = match response.text().await {
                Ok(text) => text,
                Err(error) => {
                    last = transport_error(&error);
                    continue;
                }
            };
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                last = format!("{status}: {}", brief(&text));
                continue;
            }
            if status != StatusCode::OK {
                return Err(HubError::Refused {
                    status: status.as_u16(),
                    body: brief(&text),
                });
            }
            return outcomes(&text, count);
        }
        Err(HubError::Unreachable {
            url: self.options.url.clone(),
            attempts,
            last,
        })
    }
}

/// The body of a batch call.
pub fn batch_body(leads: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "leads": leads })).expect("JSON values serialise")
}

fn outcomes(text: &str, count: usize) -> Result<Vec<Outcome>, HubError> {
    let answer: BatchAnswer =
        serde_json::from_str(text).map_err(|error| HubError::BadAnswer(error.to_string()))?;
    if answer.results.len() != count {
        return Err(HubError::BadAnswer(format!(
            "{} results for {count} leads",
            answer.results.len()
        )));
    }
    let mut outcomes = vec![None; count];
    for result in answer.results {
        let slot = outcomes
            .get_mut(result.index)
            .ok_or_else(|| HubError::BadAnswer(format!("a result for index {}", result.index)))?;
        *slot = Some(match (result.status, result.problem) {
            (202, _) => Outcome::Accepted,
            (200, _) => Outcome::Replayed,
            (_, Some(problem)) => Outcome::Rejected(match problem.errors {
                Some(errors) if !errors.is_empty() => errors
                    .into_iter()
                    .map(|item| HubProblem {
                        pointer: item.pointer,
                        code: item.code,
                        message: item.message,
                    })
                    .collect(),
                _ => vec![HubProblem {
                    pointer: String::new(),
                    code: problem.code,
                    message: problem.detail,
                }],
            }),
            (status, None) => {
                return Err(HubError::BadAnswer(format!(
                    "status {status} without a problem"
                )))
            }
        });
    }
    outcomes
        .into_iter()
        .enumerate()
        .map(|(index, outcome)| {
            outcome.ok_or_else(|| HubError::BadAnswer(format!("no result for index {index}")))
        })
        .collect()
}

fn transport_error(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn brief(text: &str) -> String {
    let mut short: String = text.chars().take(500).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lead_gets_its_outcome_in_the_order_sent() {
        let answer = r#"{"results": [
            {"index": 1, "status": 422, "problem": {"type": "urn:leadbridge:problem:validation", "code": "validation", "title": "t", "status": 422, "detail": "1 problem",
              "errors": [{"pointer": "/subjects/0/uscc", "code": "uscc_checksum", "message": "check character should be 'E'"}]}},
            {"index": 0, "status": 202, "lead_id": "x"},
            {"index": 2, "status": 409, "problem": {"code": "conflict", "detail": "other content", "status": 409}},
            {"index": 3, "status": 200}
        ]}"#;
        let answered = outcomes(answer, 4).unwrap();
        assert_eq!(answered[0], Outcome::Accepted);
        assert_eq!(
            answered[1],
            Outcome::Rejected(vec![HubProblem {
                pointer: "/subjects/0/uscc".into(),
                code: "uscc_checksum".into(),
                message: "check character should be 'E'".into(),
            }])
        );
        assert_eq!(
            answered[2],
            Outcome::Rejected(vec![HubProblem {
                pointer: "".into(),
                code: "conflict".into(),
                message: "other content".into(),
            }])
        );
        assert_eq!(answered[3], Outcome::Replayed);
        assert!(outcomes(answer, 5).is_err());
        assert!(outcomes(
            r#"{"results": [{"index": 0, "status": 202}, {"index": 0, "status": 202}]}"#,
            2
        )
        .is_err());
    }
}
