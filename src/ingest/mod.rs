//! Ingest: turns a submitted document into an accepted lead.
//!
//! Promise: an `Accepted` outcome means the lead, its outbox message and its audit entry are
//! committed together; nothing is acknowledged before that. An exact replay (same case,
//! revision and canonical content) changes nothing and returns the first receipt. A batch is
//! validated item by item and stored in one transaction, so one bad lead never rejects the
//! others.
//!
//! A lead larger than `limits.max_lead_bytes` (its compact JSON, as published) is refused
//! with 422 `lead_too_large`, alone or as one item of a batch: Kafka could never take it, and
//! a 202 for it would be a promise the relay cannot keep.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::kafka::Topics;
use crate::lead::{Agency, LeadId, ValidatedLead};
use crate::store::leads::LeadToStore;
use crate::store::{Acceptance, ConflictReason, OutboxMessage, Store, StoreError};
use crate::telemetry::{events, Metrics};
use crate::validate::{Problem, ValidationError, Validator};

/// Version of the value published on the leads topics.
pub const LEAD_EVENT_SCHEMA: &str = "leadbridge.lead-event.v1";

/// What the hub answers for an accepted or replayed lead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub lead_id: LeadId,
    pub revision: i64,
    pub received_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// New lead or revision: 202.
    Accepted(Receipt),
    /// Exact replay: 200 with the first receipt.
    Replayed(Receipt),
}

/// Errors of the ingest boundary.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("case conflict on lead {lead_id}: {reason:?}")]
    Conflict {
        lead_id: LeadId,
        reason: ConflictReason,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IngestError {
    pub fn is_retryable(&self) -> bool {
        match self {
            IngestError::Store(error) => error.is_retryable(),
            IngestError::Validation(_) | IngestError::Conflict { .. } => false,
        }
    }
}

/// How often a transaction that lost a race on a unique key is retried.
const CONTENDED_RETRIES: usize = 3;

#[derive(Clone)]
pub struct Ingest {
    validator: Validator,
    store: Store,
    topics: Topics,
    relay_wakeup: Arc<Notify>,
    metrics: Metrics,
    max_lead_bytes: usize,
}

impl Ingest {
    pub fn new(
        validator: Validator,
        store: Store,
        topics: Topics,
        relay_wakeup: Arc<Notify>,
        metrics: Metrics,
    ) -> Self {
        Ingest {
            validator,
            store,
            topics,
            relay_wakeup,
            metrics,
            max_lead_bytes: crate::config::LimitSettings::default().max_lead_bytes,
        }
    }

    /// Refuses leads whose published JSON is larger than `bytes`.
    pub fn with_max_lead_bytes(mut self, bytes: usize) -> Self {
        self.max_lead_bytes = bytes;
        self
    }

    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// Validates and stores one lead sent by `caller`.
    pub async fn submit(&self, caller: Agency, document: Value) -> Result<Outcome, IngestError> {
        let mut results = self.submit_batch(caller, vec![document]).await?;
        results.pop().expect("one document gives one result")
    }

    /// Validates every document and stores the valid ones in one transaction. The outer error
    /// is a storage failure that rejected the whole batch (nothing of it was stored); the inner
    /// results are per document, in order.
    pub async fn submit_batch(
        &self,
        caller: Agency,
        documents: Vec<Value>,
    ) -> Result<Vec<Result<Outcome, IngestError>>, IngestError> {
        let now = Utc::now();
        let validator = self.validator.clone();
        let max_lead_bytes = self.max_lead_bytes;
        // Validation is CPU work; keep it off the threads that serve connections.
        let validated: Vec<Result<ValidatedLead, ValidationError>> =
            tokio::task::spawn_blocking(move || {
                documents
                    .into_iter()
                    .map(|document| {
                        validator
                            .validate(caller, document, now)
                            .and_then(|lead| check_size(lead, max_lead_bytes))
                    })
                    .collect()
            })
            .await
            .expect("validation does not panic");

        let mut results: Vec<Option<Result<Outcome, IngestError>>> =
            Vec::with_capacity(validated.len());
        let mut to_store = Vec::new();
        for (index, result) in validated.iter().enumerate() {
            match result {
                Ok(lead) => {
                    to_store.push((index, lead));
                    results.push(None);
                }
                Err(error) => {
                    match error {
                        ValidationError::Invalid(problems) => {
                            events::lead_invalid(&self.metrics, caller, problems)
                        }
                        ValidationError::ForeignAgency { claimed, .. } => {
                            events::lead_foreign(&self.metrics, caller, *claimed)
                        }
                    }
                    results.push(Some(Err(IngestError::Validation(error.clone()))));
                }
            }
        }

        if !to_store.is_empty() {
            let acceptances = self.store_with_retries(&to_store).await?;
            for ((index, lead), acceptance) in to_store.iter().zip(acceptances) {
                results[*index] = Some(self.outcome(lead, acceptance));
            }
            self.relay_wakeup.notify_one();
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every document has a result"))
            .collect())
    }

    async fn store_with_retries(
        &self,
        leads: &[(usize, &ValidatedLead)],
    ) -> Result<Vec<Acceptance>, IngestError> {
        let factories: Vec<_> = leads
            .iter()
            .map(|(_, lead)| self.message_factory(lead))
            .collect();
        let mut attempt = 0;
        loop {
            let items: Vec<LeadToStore<'_>> = leads
                .iter()
                .zip(&factories)
                .map(|((_, lead), factory)| LeadToStore {
                    lead,
                    new_lead_id: LeadId::generate(),
                    message: factory.as_ref(),
                })
                .collect();
            match self.store.accept_leads(&items, Utc::now()).await {
                Err(StoreError::Contended(error)) if attempt < CONTENDED_RETRIES => {
                    attempt += 1;
                    tracing::debug!(%error, attempt, "Ingest transaction contended; retrying.");
                }
                result => return Ok(result?),
            }
        }
    }

    fn outcome(
        &self,
        lead: &ValidatedLead,
        acceptance: Acceptance,
    ) -> Result<Outcome, IngestError> {
        match acceptance {
            Acceptance::Accepted {
                lead_id,
                revision,
                received_at,
            } => {
                events::lead_accepted(
                    &self.metrics,
                    lead.agency(),
                    lead.lead_type(),
                    lead_id,
                    revision,
                );
                Ok(Outcome::Accepted(Receipt {
                    lead_id,
                    revision,
                    received_at,
                }))
            }
            Acceptance::Replayed {
                lead_id,
                revision,
                received_at,
            } => {
                events::lead_replayed(&self.metrics, lead.agency(), lead_id, revision);
                Ok(Outcome::Replayed(Receipt {
                    lead_id,
                    revision,
                    received_at,
                }))
            }
            Acceptance::Conflict { lead_id, reason } => {
                events::lead_conflict(
                    &self.metrics,
                    lead.agency(),
                    lead_id,
                    &format!("{reason:?}"),
                );
                Err(IngestError::Conflict { lead_id, reason })
            }
        }
    }

    /// The message announcing `lead` on its agency's topic, built once its id is known.
    fn message_factory<'a>(
        &self,
        lead: &'a ValidatedLead,
    ) -> Box<dyn Fn(LeadId) -> OutboxMessage + Send + Sync + 'a> {
        let topic = self.topics.leads(lead.agency());
        Box::new(move |lead_id| lead_event(lead, lead_id, &topic))
    }
}

/// Refuses a lead whose JSON, as [`lead_event`] embeds it, is larger than `max_lead_bytes`.
fn check_size(
    lead: ValidatedLead,
    max_lead_bytes: usize,
) -> Result<ValidatedLead, ValidationError> {
    let size = published_size(lead.document());
    if size > max_lead_bytes {
        return Err(ValidationError::Invalid(vec![Problem::new(
            "",
            "lead_too_large",
            format!("the lead is {size} bytes as compact JSON; at most {max_lead_bytes} bytes are accepted"),
        )]));
    }
    Ok(lead)
}

/// Bytes of `value` serialised as `serde_json::to_vec` does, without building the buffer.
fn published_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("JSON values serialise");
    count.0
}

/// The published form of a lead: hub metadata plus the lead as accepted.
pub fn lead_event(lead: &ValidatedLead, lead_id: LeadId, topic: &str) -> OutboxMessage {
    let event_id = uuid::Uuid::now_v7().to_string();
    let payload = json!({
        "event_id": event_id,
        "schema": LEAD_EVENT_SCHEMA,
        "lead_id": lead_id,
        "revision": lead.revision(),
        "agency": lead.agency(),
        "lead_type": lead.lead_type().as_str(),
        "kind": lead.kind().as_str(),
        "case_id": lead.case_id(),
        "content_sha256": lead.content_sha256(),
        "lead": lead.document(),
    });
    OutboxMessage {
        event_id: event_id.clone(),
        topic: topic.to_owned(),
        payload: serde_json::to_vec(&payload).expect("JSON values serialise"),
        headers: vec![
            ("event_id".into(), event_id),
            (
                "schema_id".into(),
                format!("urn:leadbridge:schema:lead:{}:v1", lead.lead_type()),
            ),
            ("content_sha256".into(), lead.content_sha256().to_owned()),
            ("revision".into(), lead.revision().to_string()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `LEAD_EVENT_OVERHEAD_BYTES` promises: the published event (payload, key and
    /// headers) is at most the lead's compact JSON plus that allowance, for the longest case id
    /// and lead type the contract allows.
    #[test]
    fn the_event_around_a_lead_stays_within_the_overhead_allowance() {
        let mut document: Value =
            serde_json::from_str(include_str!("../../docs/examples/sample-lead.json")).unwrap();
        document["source"]["case_id"] = json!("Z".repeat(64));
        let lead = crate::validate::Validator::built_in()
            .unwrap()
            .validate(Agency::Environment, document, Utc::now())
            .expect("the sample lead with the longest case id is valid");
        let topic = Topics::new("leadbridge".to_owned()).leads(Agency::Environment);
        let message = lead_event(&lead, LeadId::generate(), &topic);
        let headers: usize = message
            .headers
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum();
        let key = LeadId::generate().to_string().len();
        let event = message.payload.len() + key + headers;
        let lead_bytes = published_size(lead.document());
        assert!(
            event - lead_bytes <= crate::kafka::LEAD_EVENT_OVERHEAD_BYTES,
            "the event adds {} bytes to the lead",
            event - lead_bytes
        );
        // Not vacuous: the metadata really is counted (ids, hash, headers).
        assert!(event - lead_bytes > 300, "{}", event - lead_bytes);
    }

    #[test]
    fn the_published_size_is_the_compact_json() {
        let value = json!({"summary": "超标排放", "n": [1, 2.5, null], "t": "a\u{1}"});
        assert_eq!(
            published_size(&value),
            serde_json::to_vec(&value).unwrap().len()
        );
    }
}
