//! The adapter's consumer loop: leads from `<prefix>.leads.*.v1` into the police side.
//!
//! Guarantee: at-least-once. A message's offset is stored (and later committed) only after its
//! processing committed in the adapter's database — or after it was dead-lettered, acknowledged
//! by Kafka. The loop takes what Kafka has already fetched (one wait for the first message,
//! then up to `police.consume_batch_max` without waiting) and records the consecutive lead
//! events among it in one transaction; any other message (a reconsideration request, a poison
//! message) is handled alone in its place, after the leads before it committed, so the order
//! of a partition is kept. Offsets are stored in order, only after what precedes them is done.
//! If a batch holds a lead the database can never hold, the batch is retried one message at
//! a time, so only that one is dead-lettered. Processing is idempotent on (`lead_id`, `revision`), so a redelivery after a crash
//! or a rebalance opens no second case and sends no second delivery. A message that cannot be
//! processed (undecodable, unknown schema or lead type, content that does not match its hash)
//! goes to the dead-letter topic with its error context and never blocks the partition — one
//! too large for the dead-letter topic as it is goes there reduced (payload cut, headers and
//! context kept, `payload_truncated=true`; see `kafka::publish_until_acknowledged`); while
//! the adapter's own database is unreachable, the loop waits and retries the same message
//! rather than skipping it.
//!
//! Store errors are sorted (`StoreError::is_permanent`): data the adapter's database can never
//! hold (PostgreSQL refuses U+0000 in text, a value out of range, a row too large) is
//! dead-lettered as `unstorable`, exactly like a poison message, instead of being retried
//! forever behind a blocked partition. Any other store error is waited out.
//!
//! Whenever a dead-lettered message names a lead (a lead id and revision in its JSON), the
//! adapter also owes the hub a `dead_lettered` receipt through its outbox — ids, error class
//! and message only, never lead content — so the agency sees the lead stop rather than wait.
//! The receipt's event id derives from the message's coordinates, so a redelivered message
//! owes no second receipt. If even the receipt cannot be stored, the dead-letter topic still
//! holds the message and the failure is logged.
//!
//! Each lead is assessed when it is recorded, against the rule book and the penalty cases the
//! adapter already holds for its subjects (`penalties`): one read for the whole run, the run's
//! own penalty leads added in its order, so a run assesses exactly as its leads one by one.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::Message;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};

use super::penalties::{self, PenaltiesOnRecord};
use super::routing::Routed;
use super::routing::Routing;
use super::settings::PoliceSettings;
use super::store::{DeadLetterSource, IncomingLead, PoliceStore};
use crate::contract::events::{
    DeadLetterHeaders, DeadLetterOrigin, EventError, LeadEvent, LeadsTopicEvent,
    ReconsiderationRequest,
};
use crate::contract::lead::{canonical_json, LeadId, LeadKind, LeadType};
use crate::police::rules::{PenaltyHistory, PenaltyRecord, RuleBook};
use crate::shared::store::StoreError;
use crate::shared::telemetry::{events, Metrics};

/// Stage name of this consumer in dead-letter headers and metrics.
const STAGE: &str = "police-adapter.consume";

/// Why a message cannot be processed at all (it is dead-lettered).
#[derive(Debug, thiserror::Error)]
pub enum PoisonMessage {
    #[error("undecodable: {0}")]
    Undecodable(String),
    #[error("unknown event schema {0:?}")]
    UnknownSchema(String),
    #[error("unknown lead type {0:?}")]
    UnknownLeadType(String),
    #[error("content does not match content_sha256 (expected {expected}, computed {computed})")]
    ContentMismatch { expected: String, computed: String },
    #[error("the lead does not hold what the contract requires: {0}")]
    MalformedLead(String),
}

impl From<EventError> for PoisonMessage {
    fn from(error: EventError) -> Self {
        match error {
            EventError::Undecodable(detail) => PoisonMessage::Undecodable(detail),
            EventError::UnknownSchema(schema) => PoisonMessage::UnknownSchema(schema),
        }
    }
}

impl PoisonMessage {
    pub fn class(&self) -> &'static str {
        match self {
            PoisonMessage::Undecodable(_) => "undecodable",
            PoisonMessage::UnknownSchema(_) => "unknown_schema",
            PoisonMessage::UnknownLeadType(_) => "unknown_lead_type",
            PoisonMessage::ContentMismatch { .. } => "content_mismatch",
            PoisonMessage::MalformedLead(_) => "malformed_lead",
        }
    }
}

enum Failure {
    Poison(PoisonMessage),
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Store(error)
    }
}

pub struct Adapter {
    pub(super) store: PoliceStore,
    pub(super) rules: Arc<RuleBook>,
    pub(super) routing: Routing,
    pub(super) settings: PoliceSettings,
    pub(super) consumer: StreamConsumer,
    pub(super) producer: FutureProducer,
    pub(super) deadletter_topic: String,
    pub(super) limits: crate::shared::kafka::MessageLimits,
    pub(super) delivery_wakeup: Arc<Notify>,
    pub(super) metrics: Metrics,
}

impl Adapter {
    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!("Police adapter consuming leads.");
        let batch_max = self.settings.consume_batch_max.max(1);
        // Checked each turn: `handle` may have seen the change already while waiting.
        while !*shutdown.borrow() {
            let Some(batch) = crate::shared::kafka::next_batch(
                &self.consumer,
                batch_max,
                "police-adapter",
                &mut shutdown,
            )
            .await
            else {
                break;
            };
            for message in &batch {
                events::police_message_consumed(
                    &self.metrics,
                    message.topic(),
                    message.partition(),
                    message.offset(),
                );
            }
            self.handle_batch(&batch, &mut shutdown).await;
        }
        tracing::info!("Police adapter stopped.");
    }

    /// Processes a batch in its order: runs of lead events in one transaction each, any other
    /// message alone. Stops at shutdown, leaving the rest of the batch (offsets not stored).
    async fn handle_batch(
        &self,
        batch: &[BorrowedMessage<'_>],
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let mut run = Run::default();
        for message in batch {
            if let Some(lead) = self.decode_lead_message(message) {
                run.messages.push(message);
                run.leads.push(lead);
                continue;
            }
            // Not a valid lead event: the leads before it first, then it alone.
            if !self.record_run(&mut run, shutdown).await || !self.handle(message, shutdown).await {
                return;
            }
        }
        self.record_run(&mut run, shutdown).await;
    }

    /// The message as a valid lead event, or None for anything else.
    fn decode_lead_message(&self, message: &BorrowedMessage<'_>) -> Option<CheckedLead> {
        let LeadsTopicEvent::Lead(event) =
            LeadsTopicEvent::decode(message.payload().unwrap_or_default()).ok()?
        else {
            return None;
        };
        check_lead_event(&event).ok()
    }

    /// Assesses `leads` in their order — each against the penalty cases on record for its
    /// subjects, those of the run before it included — routes them, and records them in one
    /// transaction. Returns each with its routes and whether it was recorded now.
    async fn assess_and_record(
        &self,
        leads: &[CheckedLead],
    ) -> Result<Vec<(IncomingLead, Routed, bool)>, StoreError> {
        let mut subjects: Vec<String> = leads
            .iter()
            .flat_map(|lead| lead.subjects.iter().cloned())
            .collect();
        subjects.sort();
        subjects.dedup();
        let stored = if subjects.is_empty() {
            Vec::new()
        } else {
            self.store.penalties_naming(&subjects).await?
        };
        let mut known = PenaltiesOnRecord::stored(stored);
        let assessed: Vec<(IncomingLead, Routed)> = leads
            .iter()
            .map(|lead| {
                let records = known.naming(&lead.subjects, lead.lead_id);
                let history = lead.act_on.map(|act_on| PenaltyHistory {
                    act_on,
                    records: &records,
                });
                let incoming = lead.assess(&self.rules, history.as_ref());
                known.note(
                    lead.lead_id,
                    lead.revision,
                    lead.penalty
                        .clone()
                        .map(|record| (record, lead.subjects.clone())),
                );
                let routed = self.routes(&incoming);
                (incoming, routed)
            })
            .collect();
        let recorded = self.store.record_leads(&assessed, Utc::now()).await?;
        Ok(assessed
            .into_iter()
            .zip(recorded)
            .map(|((incoming, routed), new)| (incoming, routed, new))
            .collect())
    }

    /// Records a run of lead events in one transaction, then stores their offsets. Waits out
    /// an unavailable database; on a permanent failure, handles the run one message at a time.
    /// Returns false when shutdown came first (the run's offsets are then not stored).
    async fn record_run(
        &self,
        run: &mut Run<'_, '_>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        if run.messages.is_empty() {
            return true;
        }
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.assess_and_record(&run.leads).await {
                Ok(recorded) => {
                    for (incoming, routes, new) in &recorded {
                        self.recorded(incoming, routes, *new);
                    }
                    // In order, so each partition's stored offset is its highest processed.
                    for message in &run.messages {
                        self.store_offset(message);
                    }
                    break;
                }
                Err(error) if error.is_permanent() => {
                    tracing::warn!(%error, leads = run.messages.len(), "A lead of the batch cannot be stored; recording them one at a time.");
                    for message in &run.messages {
                        if !self.handle(message, shutdown).await {
                            return false;
                        }
                    }
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, leads = run.messages.len(), "Cannot record the leads; retrying.");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        // Stop without storing the offsets: the messages are redelivered later.
                        _ = shutdown.changed() => return false,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        run.messages.clear();
        run.leads.clear();
        true
    }

    fn store_offset(&self, message: &BorrowedMessage<'_>) {
        if let Err(error) = self.consumer.store_offset_from_message(message) {
            tracing::warn!(%error, "Cannot store the consumer offset; the message may be redelivered.");
        }
    }

    /// Processes one message and stores its offset. Returns false, storing nothing, when
    /// shutdown came first.
    async fn handle(
        &self,
        message: &BorrowedMessage<'_>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut backoff = Duration::from_millis(200);
        loop {
            let (class, detail) = match self.process(message).await {
                Ok(()) => break,
                Err(Failure::Poison(poison)) => (poison.class(), poison.to_string()),
                Err(Failure::Store(error)) if error.is_permanent() => {
                    ("unstorable", error.to_string())
                }
                Err(Failure::Store(error)) => {
                    tracing::warn!(%error, topic = message.topic(), offset = message.offset(), "Cannot record the lead; retrying.");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        // Stop without storing the offset: the message is redelivered later.
                        _ = shutdown.changed() => return false,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            // Interrupted by shutdown: the offset is not stored, the message comes again.
            if !self.dead_letter(message, class, &detail, shutdown).await {
                return false;
            }
            if !self.tell_the_hub(message, class, &detail, shutdown).await {
                return false;
            }
            break;
        }
        self.store_offset(message);
        true
    }

    /// Records the `dead_lettered` receipt owed to the hub, if the message names a lead.
    /// Waits out an unavailable database; returns false only when shutdown came first (the
    /// offset is then not stored, and the redelivered message is dead-lettered again, while
    /// the receipt's derived event id keeps the hub from hearing of it twice).
    async fn tell_the_hub(
        &self,
        message: &BorrowedMessage<'_>,
        class: &str,
        detail: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let Some((lead_id, revision)) = named_lead(message.payload().unwrap_or_default()) else {
            return true;
        };
        let source = DeadLetterSource {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let mut backoff = Duration::from_millis(200);
        loop {
            match self
                .store
                .record_dead_letter(lead_id, revision, class, detail, &source, Utc::now())
                .await
            {
                Ok(_) => return true,
                // As for the lead itself, only data the database can never hold is given up
                // on; anything else (unreachable, refusing connections) is waited out.
                Err(error) if !error.is_permanent() => {
                    tracing::warn!(%error, %lead_id, revision, "Cannot record the dead_lettered receipt yet; retrying.");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return false,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(error) => {
                    // The dead-letter topic holds the message with its context; the hub will
                    // not hear of it, which operators see in this log.
                    tracing::error!(%error, %lead_id, revision, "Cannot record the dead_lettered receipt; the dead letter remains.");
                    return true;
                }
            }
        }
    }

    async fn process(&self, message: &BorrowedMessage<'_>) -> Result<(), Failure> {
        let payload = message.payload().unwrap_or_default();
        match LeadsTopicEvent::decode(payload).map_err(|e| Failure::Poison(e.into()))? {
            LeadsTopicEvent::Lead(event) => self.process_lead(&event).await,
            LeadsTopicEvent::Reconsideration(request) => {
                self.process_reconsideration(&request).await
            }
        }
    }

    async fn process_lead(&self, event: &LeadEvent) -> Result<(), Failure> {
        let checked = check_lead_event(event).map_err(Failure::Poison)?;
        for (incoming, routed, new) in self.assess_and_record(&[checked]).await? {
            self.recorded(&incoming, &routed, new);
        }
        Ok(())
    }

    /// Where a lead goes: its units and how each receives it, the holder first.
    fn routes(&self, incoming: &IncomingLead) -> Routed {
        self.routing
            .route(&incoming.division_code, incoming.priority == "high")
    }

    /// After a lead's transaction committed: counts it and wakes the delivery workers when it
    /// was recorded now (`new`), so a redelivery is not counted twice.
    fn recorded(&self, incoming: &IncomingLead, routed: &Routed, new: bool) {
        if !new {
            tracing::debug!(lead_id = %incoming.lead_id, revision = incoming.revision, "Lead already received; redelivery ignored.");
            return;
        }
        let offences: Vec<&str> = incoming
            .assessment
            .get("suspected_offences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|offence| offence.get("offence").and_then(Value::as_str))
            .collect();
        events::police_lead_assessed(
            &self.metrics,
            incoming.lead_id,
            incoming.revision,
            &incoming.priority,
            &offences,
        );
        let units: Vec<&str> = routed
            .routes
            .iter()
            .map(|route| route.unit.as_str())
            .collect();
        events::police_lead_routed(&self.metrics, incoming.lead_id, incoming.revision, &units);
        self.delivery_wakeup.notify_one();
    }

    async fn process_reconsideration(
        &self,
        request: &ReconsiderationRequest,
    ) -> Result<(), Failure> {
        let (lead_id, revision) = (request.lead_id, request.revision);
        let applied = self
            .store
            .record_reconsideration_request(request, Utc::now())
            .await?;
        tracing::info!(%lead_id, revision, applied, "Reconsideration requested by the agency.");
        Ok(())
    }

    /// Publishes the message to the dead-letter topic with its context, retrying until Kafka
    /// acknowledges, so a message set aside is never silently dropped; one Kafka can never take
    /// is stored reduced (`kafka::publish_until_acknowledged`). Returns false if shutdown came
    /// first.
    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        class: &str,
        detail: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        events::message_dead_lettered(
            &self.metrics,
            STAGE,
            class,
            detail,
            message.topic(),
            message.partition(),
            message.offset(),
        );
        let why = DeadLetterHeaders {
            error_class: class.to_owned(),
            error_message: detail.to_owned(),
            stage: STAGE.to_owned(),
            origin: DeadLetterOrigin::Consumed {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
            },
        };
        crate::shared::kafka::dead_letter_consumed(
            &self.producer,
            &self.limits,
            &self.deadletter_topic,
            message,
            &why,
            shutdown,
        )
        .await
        .is_ok()
    }
}

/// Consecutive lead events of a batch, not yet recorded.
#[derive(Default)]
struct Run<'b, 'm> {
    messages: Vec<&'b BorrowedMessage<'m>>,
    leads: Vec<CheckedLead>,
}

/// The lead a message is about, when its JSON names one (`lead_id` and a positive
/// `revision`), whatever else is wrong with it.
fn named_lead(payload: &[u8]) -> Option<(LeadId, i64)> {
    let event: Value = serde_json::from_slice(payload).ok()?;
    let lead_id = event.get("lead_id")?.as_str().and_then(LeadId::parse)?;
    let revision = event.get("revision")?.as_i64().filter(|r| *r >= 1)?;
    Some((lead_id, revision))
}

/// A lead event whose content matches its hash, read for assessment.
#[derive(Clone, Debug)]
pub struct CheckedLead {
    pub lead_id: LeadId,
    pub revision: i64,
    pub agency: String,
    pub lead_type: LeadType,
    pub kind: LeadKind,
    pub case_id: String,
    pub document: Value,
    pub content_sha256: String,
    /// The lead's subjects as matching keys (`penalties::subject_keys`).
    pub subjects: Vec<String>,
    /// The local date of the act (`occurred_at`), from which earlier penalties are counted.
    pub act_on: Option<chrono::NaiveDate>,
    /// The lead as a penalty case, when it is one.
    pub penalty: Option<PenaltyRecord>,
}

/// Checks a lead event: a known lead type, content matching its hash, and a readable
/// `penalty` block when it is a penalty.
pub fn check_lead_event(event: &LeadEvent) -> Result<CheckedLead, PoisonMessage> {
    let lead_type: LeadType = event
        .lead_type
        .parse()
        .map_err(|_| PoisonMessage::UnknownLeadType(event.lead_type.clone()))?;
    let lead = Value::Object(event.lead.clone());
    let expected = event.content_sha256.clone();
    let computed = hex::encode(Sha256::digest(canonical_json(&lead)));
    if computed != expected {
        return Err(PoisonMessage::ContentMismatch { expected, computed });
    }
    let penalty = penalties::penalty_record(
        event.lead_id,
        event.revision,
        event.agency.as_str(),
        &event.case_id,
        lead_type,
        event.kind,
        &lead,
    )
    .map_err(PoisonMessage::MalformedLead)?;
    Ok(CheckedLead {
        lead_id: event.lead_id,
        revision: event.revision,
        agency: event.agency.as_str().to_owned(),
        lead_type,
        kind: event.kind,
        case_id: event.case_id.clone(),
        subjects: penalties::subject_keys(&lead),
        act_on: penalties::act_date(&lead),
        document: lead,
        content_sha256: expected,
        penalty,
    })
}

impl CheckedLead {
    /// Assesses the lead, counting earlier penalties also from `history` (None: the records
    /// were not consulted).
    pub fn assess(&self, rules: &RuleBook, history: Option<&PenaltyHistory<'_>>) -> IncomingLead {
        let facts = self.document.get("facts").unwrap_or(&Value::Null);
        let assessment = rules.assess_with_records(self.lead_type, self.kind, facts, history);
        let priority = assessment.priority.as_str().to_owned();
        let assessment = serde_json::to_value(&assessment).expect("assessments serialise");
        let lead_text = |pointer: &str| {
            self.document
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        IncomingLead {
            lead_id: self.lead_id,
            revision: self.revision,
            agency: self.agency.clone(),
            lead_type: self.lead_type.as_str().to_owned(),
            kind: self.kind.as_str().to_owned(),
            case_id: self.case_id.clone(),
            division_code: lead_text("/location/division_code"),
            summary: lead_text("/summary"),
            document: self.document.clone(),
            content_sha256: self.content_sha256.clone(),
            assessment,
            priority,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_a_lead_only_with_an_id_and_a_positive_revision() {
        let lead_id = LeadId::generate();
        let named = |value: Value| named_lead(&serde_json::to_vec(&value).unwrap());
        assert_eq!(
            named(serde_json::json!({"lead_id": lead_id.to_string(), "revision": 2, "lead": 1})),
            Some((lead_id, 2))
        );
        assert_eq!(
            named(serde_json::json!({"lead_id": lead_id.to_string(), "revision": 0})),
            None
        );
        assert_eq!(
            named(serde_json::json!({"lead_id": "x", "revision": 1})),
            None
        );
        assert_eq!(named_lead(b"\x00\xffnot json"), None);
    }
}
