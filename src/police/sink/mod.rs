//! Delivery of a routed lead to its police unit, through the sink the unit is configured with:
//! the built-in inbox, or the unit's case-management system (CMS) over HTTPS with mutual TLS
//! ([`http::HttpSink`]).
//!
//! Guarantee and limits: a sink makes exactly one attempt per call and never retries by
//! itself. The delivery worker owns the retry schedule and the give-up time; it asks
//! [`DeliveryError::is_retryable`] whether another attempt can help. Attempts can repeat (a
//! retry after a timeout whose answer was lost, a lead republished by the hub), so every sink
//! is idempotent on (lead_id, revision): a repeat returns the first case, never a second one.
//! The HTTP sink relies on the CMS for that and sends the pair as the `Idempotency-Key`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub mod breaker;
pub mod http;

pub use breaker::{BreakerState, CircuitBreaker};
pub use http::{HttpSink, HttpSinkSettings, SinkSetupError};

/// A boxed future that may move between threads, so [`DeliverySink`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One lead revision to hand to one police unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub lead_id: String,
    pub revision: i64,
    /// Code of the police unit the lead was routed to.
    pub unit: String,
    /// What the unit receives: the lead, its assessment and its deadlines, built by the caller.
    pub body: serde_json::Value,
}

impl Delivery {
    /// `<lead_id>:<revision>`: the same for every attempt at this delivery, different for the
    /// next revision.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.lead_id, self.revision)
    }
}

/// The unit has the lead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The receiving system's reference for the case it opened (or had already opened for this
    /// lead revision).
    pub cms_ref: String,
}

/// Why one delivery attempt failed. Only [`DeliveryError::Rejected`] and
/// [`DeliveryError::Unsendable`] are final; for the others a later attempt can succeed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Recent attempts failed one after another, so the sink refuses at once, without contacting
    /// the CMS, until `until`.
    #[error("the circuit to the case-management system is open until {until}")]
    CircuitOpen { until: DateTime<Utc> },
    /// No answer because of the connection: refused, a failed TLS handshake (either side
    /// refusing the other's certificate), or a connection broken before the answer.
    #[error("cannot reach the case-management system: {0}")]
    Connect(String),
    /// No complete answer within the sink's timeout. The CMS may have opened the case anyway;
    /// a retry with the same idempotency key finds it.
    #[error("the case-management system did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// An error status that can pass: 5xx, 408, 429, or a status the sink does not expect
    /// (1xx, 3xx: redirects are not followed).
    #[error("the case-management system answered {status}: {excerpt}")]
    Status { status: u16, excerpt: String },
    /// A 2xx answer without a JSON object carrying a non-empty string `cms_ref`.
    #[error("the case-management system answered {status} without a usable cms_ref: {excerpt}")]
    Garbage { status: u16, excerpt: String },
    /// A 4xx other than 408 and 429: the CMS refuses this lead, and sending it again will not
    /// change that.
    #[error("the case-management system rejected the lead with {status}: {excerpt}")]
    Rejected { status: u16, excerpt: String },
    /// The delivery cannot be put into a request (a lead id or unit that is not a valid header
    /// value); nothing was sent.
    #[error("the delivery cannot be sent: {0}")]
    Unsendable(String),
}

impl DeliveryError {
    /// Whether another attempt at the same delivery can succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            DeliveryError::Rejected { .. } | DeliveryError::Unsendable(_)
        )
    }
}

/// Where a unit's leads go. One call is one attempt (see the module header).
pub trait DeliverySink: Send + Sync {
    fn deliver<'a>(
        &'a self,
        delivery: &'a Delivery,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_permanent_rejection_or_an_unsendable_delivery_is_final() {
        let excerpt = || String::from("…");
        let retryable = [
            DeliveryError::CircuitOpen { until: Utc::now() },
            DeliveryError::Connect("refused".into()),
            DeliveryError::Timeout(Duration::from_secs(1)),
            DeliveryError::Status {
                status: 503,
                excerpt: excerpt(),
            },
            DeliveryError::Garbage {
                status: 200,
                excerpt: excerpt(),
            },
        ];
        for error in retryable {
            assert!(error.is_retryable(), "{error}");
        }
        let last = [
            DeliveryError::Rejected {
                status: 422,
                excerpt: excerpt(),
            },
            DeliveryError::Unsendable("bad header".into()),
        ];
        for error in last {
            assert!(!error.is_retryable(), "{error}");
        }
    }

    #[test]
    fn the_idempotency_key_names_the_lead_and_its_revision() {
        let delivery = Delivery {
            lead_id: "0193a".into(),
            revision: 2,
            unit: "370303".into(),
            body: serde_json::json!({}),
        };
        assert_eq!(delivery.idempotency_key(), "0193a:2");
    }

    #[tokio::test]
    async fn a_sink_can_be_used_as_a_trait_object() {
        struct Always;
        impl DeliverySink for Always {
            fn deliver<'a>(
                &'a self,
                delivery: &'a Delivery,
            ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
                Box::pin(async move {
                    Ok(Delivered {
                        cms_ref: delivery.idempotency_key(),
                    })
                })
            }
        }
        let sink: Box<dyn DeliverySink> = Box::new(Always);
        let delivery = Delivery {
            lead_id: "l".into(),
            revision: 1,
            unit: "u".into(),
            body: serde_json::Value::Null,
        };
        let delivered = sink.deliver(&delivery).await.unwrap();
        assert_eq!(delivered.cms_ref, "l:1");
    }
}
