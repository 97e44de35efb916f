//! Ingest: turns a submitted document into an accepted lead.
//!
//! Promise: an `Accepted` outcome means the lead, its outbox message and its audit entry are
//! committed together; nothing is acknowledged before that. An exact replay (same case,
//! revision and canonical content) changes nothing and returns the first receipt. A batch is
//! validated item by item and stored in one transaction, so one bad lead never rejects the
//! others. The store resolves a batch as if its leads came one after another, so a case sent
//! twice in one batch is answered as two submissions in a row would be. If the database
//! refuses one lead's data (`StoreError::Unstorable`), the batch is stored again lead by lead,
//! one transaction each, and only that lead is answered with the error.
//!
//! Single submissions are group-committed: a committer task collects the submissions that
//! arrive within `limits.group_commit_wait_ms` of the first one (at most
//! `limits.group_commit_max_leads`) and stores them as one batch, in arrival order. Each is
//! answered only after its group committed, with its own outcome; a failure of the whole group
//! (the database unreachable) answers each of them with that error. Nothing is acknowledged
//! from memory: a crash before the commit loses only submissions that were never answered.
//!
//! A lead larger than `limits.max_lead_bytes` (its compact JSON, as published) is refused
//! with 422 `lead_too_large`, alone or as one item of a batch: Kafka could never take it, and
//! a 202 for it would be a promise the relay cannot keep.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::contract::lead::{Agency, LeadId, ValidatedLead};
use crate::contract::validate::{Problem, ValidationError, Validator};
use crate::hub::store::leads::LeadToStore;
use crate::hub::store::{Acceptance, ConflictReason};
use crate::shared::audit::AuditEntry;
use crate::shared::kafka::Topics;
use crate::shared::outbox::OutboxMessage;
use crate::shared::store::{Store, StoreError};
use crate::shared::telemetry::{events, Metrics};

pub use crate::contract::events::LEAD_EVENT_SCHEMA;
use crate::contract::events::{LeadEvent, LEAD_EVENT_SCHEMA_URN_PREFIX};

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

/// Submissions waiting for the committer; beyond this, submitters wait to enqueue.
const GROUP_QUEUE: usize = 4096;

/// How single submissions share transactions.
#[derive(Clone, Copy, Debug)]
pub struct GroupCommit {
    /// How long the committer waits after the first submission of a group for more.
    pub wait: Duration,
    /// Most submissions in one group.
    pub max_leads: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        let limits = crate::shared::config::LimitSettings::default();
        GroupCommit {
            wait: Duration::from_millis(limits.group_commit_wait_ms),
            max_leads: limits.group_commit_max_leads,
        }
    }
}

/// One single submission waiting for its group's commit.
struct Submission {
    lead: ValidatedLead,
    answer: oneshot::Sender<Result<Acceptance, StoreError>>,
}

#[derive(Clone)]
pub struct Ingest {
    validator: Validator,
    storage: Storage,
    max_lead_bytes: usize,
    group: GroupCommit,
    /// Started on the first single submission (inside the runtime). The committer holds no
    /// `Ingest`, so it ends when the last `Ingest` clone (and with it the sender) is dropped.
    committer: Arc<OnceLock<mpsc::Sender<Submission>>>,
}

/// What storing needs, shared by the request path and the committer task.
#[derive(Clone)]
struct Storage {
    store: Store,
    topics: Topics,
    relay_wakeup: Arc<Notify>,
    metrics: Metrics,
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
            storage: Storage {
                store,
                topics,
                relay_wakeup,
                metrics,
            },
            max_lead_bytes: crate::shared::config::LimitSettings::default().max_lead_bytes,
            group: GroupCommit::default(),
            committer: Arc::default(),
        }
    }

    /// Refuses leads whose published JSON is larger than `bytes`.
    pub fn with_max_lead_bytes(mut self, bytes: usize) -> Self {
        self.max_lead_bytes = bytes;
        self
    }

    /// Sets how single submissions are grouped into transactions (before the first one).
    pub fn with_group_commit(mut self, group: GroupCommit) -> Self {
        self.group = GroupCommit {
            max_leads: group.max_leads.max(1),
            ..group
        };
        self
    }

    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// Validates one lead sent by `caller` and stores it with the other single submissions of
    /// its group; answers once the group committed.
    pub async fn submit(&self, caller: Agency, document: Value) -> Result<Outcome, IngestError> {
        let lead = self
            .validate(caller, vec![document])
            .await
            .pop()
            .expect("one document gives one result")?;
        let (answer, answered) = oneshot::channel();
        let committer = self.committer.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(GROUP_QUEUE);
            tokio::spawn(commit_groups(self.storage.clone(), receiver, self.group));
            sender
        });
        let stopped = || {
            IngestError::Store(StoreError::Other(sqlx::Error::Protocol(
                "the group committer stopped".into(),
            )))
        };
        committer
            .send(Submission {
                lead: lead.clone(),
                answer,
            })
            .await
            .map_err(|_| stopped())?;
        let acceptance = answered.await.map_err(|_| stopped())??;
        self.storage.outcome(&lead, acceptance)
    }

    /// Validates every document and stores the valid ones in one transaction. The outer error
    /// is a storage failure that rejected the whole batch (nothing of it was stored); the inner
    /// results are per document, in order.
    pub async fn submit_batch(
        &self,
        caller: Agency,
        documents: Vec<Value>,
    ) -> Result<Vec<Result<Outcome, IngestError>>, IngestError> {
        let validated = self.validate(caller, documents).await;
        let mut results: Vec<Option<Result<Outcome, IngestError>>> =
            Vec::with_capacity(validated.len());
        let mut to_store = Vec::new();
        for (index, result) in validated.iter().enumerate() {
            match result {
                Ok(lead) => {
                    to_store.push((index, lead));
                    results.push(None);
                }
                Err(error) => results.push(Some(Err(error.duplicate()))),
            }
        }
        if !to_store.is_empty() {
            let leads: Vec<&ValidatedLead> = to_store.iter().map(|(_, lead)| *lead).collect();
            let acceptances = self.storage.store(&leads).await?;
            for ((index, lead), acceptance) in to_store.iter().zip(acceptances) {
                results[*index] = Some(
                    acceptance
                        .map_err(IngestError::Store)
                        .and_then(|acceptance| self.storage.outcome(lead, acceptance)),
                );
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every document has a result"))
            .collect())
    }

    /// Validates the documents off the connection threads, reporting each refusal.
    async fn validate(
        &self,
        caller: Agency,
        documents: Vec<Value>,
    ) -> Vec<Result<ValidatedLead, IngestError>> {
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
        // Each refusal is a `lead.rejected` entry of the hub's log, with its problems. The
        // refusal stands whether or not it could be logged: it changed nothing.
        let rejections: Vec<AuditEntry> = validated
            .iter()
            .filter_map(|result| result.as_ref().err())
            .map(|error| AuditEntry {
                at: now,
                actor: format!("agency:{}", caller.as_str()),
                action: "lead.rejected",
                lead_id: None,
                revision: None,
                details: match error {
                    ValidationError::Invalid(problems) => json!({"problems": problems}),
                    ValidationError::ForeignAgency { claimed, .. } => {
                        json!({"problems": [{"pointer": "/source/agency", "code": "foreign_agency", "message": format!("the lead claims agency {}", claimed.as_str())}]})
                    }
                },
            })
            .collect();
        if let Err(error) = crate::shared::audit::record_all(&self.storage.store, rejections).await
        {
            tracing::warn!(%error, "Cannot log refused leads; the refusals stand.");
        }
        validated
            .into_iter()
            .map(|result| {
                result.map_err(|error| {
                    let metrics = &self.storage.metrics;
                    match &error {
                        ValidationError::Invalid(problems) => {
                            events::lead_invalid(metrics, caller, problems)
                        }
                        ValidationError::ForeignAgency { claimed, .. } => {
                            events::lead_foreign(metrics, caller, *claimed)
                        }
                    }
                    IngestError::Validation(error)
                })
            })
            .collect()
    }
}

impl IngestError {
    /// The same refusal again (validation errors are plain data).
    fn duplicate(&self) -> IngestError {
        match self {
            IngestError::Validation(error) => IngestError::Validation(error.clone()),
            IngestError::Conflict { lead_id, reason } => IngestError::Conflict {
                lead_id: *lead_id,
                reason: reason.clone(),
            },
            IngestError::Store(error) => IngestError::Store(error.duplicate()),
        }
    }
}

/// The committer: takes the first waiting submission, gathers what arrives within the wait,
/// stores the group as one batch and answers each submission.
async fn commit_groups(
    storage: Storage,
    mut receiver: mpsc::Receiver<Submission>,
    group: GroupCommit,
) {
    while let Some(first) = receiver.recv().await {
        let deadline = tokio::time::Instant::now() + group.wait;
        let mut submissions = vec![first];
        // A zero wait still takes whatever is already queued: `timeout_at` polls once first.
        while submissions.len() < group.max_leads {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(submission)) => submissions.push(submission),
                Ok(None) | Err(_) => break,
            }
        }
        let leads: Vec<&ValidatedLead> = submissions.iter().map(|s| &s.lead).collect();
        match storage.store(&leads).await {
            Ok(results) => {
                for (submission, result) in submissions.into_iter().zip(results) {
                    // A submitter that went away (client disconnected) needs no answer.
                    let _ = submission.answer.send(result);
                }
            }
            Err(error) => {
                tracing::warn!(%error, leads = leads.len(), "Group commit failed; every submission of the group gets the error.");
                for submission in submissions {
                    let _ = submission.answer.send(Err(error.duplicate()));
                }
            }
        }
    }
}

impl Storage {
    /// Stores `leads` in one transaction, in order. The outer error rejected all of them
    /// (nothing stored). If the database refuses the data of some lead, each lead is stored
    /// again in its own transaction, in order, so only that one gets the error.
    async fn store(
        &self,
        leads: &[&ValidatedLead],
    ) -> Result<Vec<Result<Acceptance, StoreError>>, StoreError> {
        let stored = match self.store_with_retries(leads).await {
            Ok(acceptances) => acceptances.into_iter().map(Ok).collect(),
            Err(error) if error.is_permanent() && leads.len() > 1 => {
                tracing::warn!(%error, leads = leads.len(), "The database refused a lead of the batch; storing the batch lead by lead.");
                let mut results = Vec::with_capacity(leads.len());
                for lead in leads {
                    results.push(match self.store_with_retries(&[lead]).await {
                        Ok(mut acceptance) => Ok(acceptance.pop().expect("one lead, one answer")),
                        Err(error) if error.is_permanent() => Err(error),
                        // The database failing now is no fault of this lead's data.
                        Err(error) => return Err(error),
                    });
                }
                results
            }
            Err(error) => return Err(error),
        };
        self.relay_wakeup.notify_one();
        Ok(stored)
    }

    async fn store_with_retries(
        &self,
        leads: &[&ValidatedLead],
    ) -> Result<Vec<Acceptance>, StoreError> {
        let factories: Vec<_> = leads
            .iter()
            .map(|lead| self.message_factory(lead))
            .collect();
        let mut attempt = 0;
        loop {
            let items: Vec<LeadToStore<'_>> = leads
                .iter()
                .zip(&factories)
                .map(|(lead, factory)| LeadToStore {
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
                result => return result,
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
    let event = LeadEvent {
        event_id: uuid::Uuid::now_v7(),
        schema: LEAD_EVENT_SCHEMA.to_owned(),
        lead_id,
        revision: lead.revision(),
        agency: lead.agency(),
        lead_type: lead.lead_type().as_str().to_owned(),
        kind: lead.kind(),
        case_id: lead.case_id().to_string(),
        content_sha256: lead.content_sha256().to_owned(),
        lead: lead
            .document()
            .as_object()
            .cloned()
            .expect("a validated lead is an object"),
    };
    let event_id = event.event_id.to_string();
    let payload = serde_json::to_vec(&event).expect("events serialise");
    OutboxMessage {
        event_id: event_id.clone(),
        topic: topic.to_owned(),
        payload,
        headers: vec![
            ("event_id".into(), event_id),
            (
                "schema_id".into(),
                format!("{LEAD_EVENT_SCHEMA_URN_PREFIX}{}:v1", lead.lead_type()),
            ),
            ("content_sha256".into(), lead.content_sha256().to_owned()),
            ("revision".into(), lead.revision().to_string()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What `LEAD_EVENT_OVERHEAD_BYTES` promises: the published event (payload, key and
    /// headers) is at most the lead's compact JSON plus that allowance, for the longest case id
    /// and lead type the contract allows.
    #[test]
    fn the_event_around_a_lead_stays_within_the_overhead_allowance() {
        let mut document: Value =
            serde_json::from_str(include_str!("../../../docs/examples/sample-lead.json")).unwrap();
        document["source"]["case_id"] = json!("Z".repeat(64));
        let lead = crate::contract::validate::Validator::built_in()
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
            event - lead_bytes <= crate::shared::kafka::LEAD_EVENT_OVERHEAD_BYTES,
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
