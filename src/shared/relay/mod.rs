//! The outbox relay: publishes committed outbox messages to Kafka.
//!
//! Guarantee: every outbox row is eventually published at least once, and marked published
//! (with topic, partition and offset, a `published` timeline event and an audit entry) only
//! after Kafka acknowledged it (idempotent producer, `acks=all`). While Kafka is unreachable
//! the relay keeps retrying with exponential backoff and the backlog is visible in the
//! `leadbridge_outbox_backlog` metric. Several relays may run at once: a row is leased to one
//! relay at a time (see `shared::outbox`), so in normal operation nothing is published twice.
//!
//! Transient failures (broker away, timeouts, leader elections) are retried with backoff for
//! as long as it takes, and so is a record batch Kafka refuses as too large while each of its
//! records fits alone (`PublishError::from_kafka`; the producer's `batch.size` is also kept
//! under the topics' limits, see `kafka::idempotent_producer_within`). A permanent failure —
//! Kafka refuses the data itself, e.g. a message that alone is over `message.max.bytes` — can
//! never succeed, so retrying it would only hide it: the row is marked failed for good
//! (terminal, out of the backlog, no longer holding back the lead's later rows), the lead
//! becomes `publish_failed` with a timeline event and an audit entry, and
//! `leadbridge_publish_failed_total` counts it. Ingest's `limits.max_lead_bytes` exists so
//! that this does not happen to accepted leads; this is the net under it.
//!
//! The police adapter publishes its receipts with the same code over its own outbox; there a
//! permanent failure marks the receipt failed with a `receipt.publish_failed` audit entry (the
//! adapter's database has no lead timeline) and the same metric and log.
//!
//! Published rows are deleted after `relay.retention_hours`, at most
//! `PRUNE_BATCH * PRUNE_BATCHES_PER_PASS` per pass every `relay.prune_interval_secs`, so
//! pruning never holds up publishing for long; `leadbridge_outbox_pruned_total` counts them.
//! Waiting and failed rows and the copy a lead without a police receipt would be republished
//! from are never deleted (see `Store::prune_outbox`).
//!
//! Limits: if a relay dies after Kafka acknowledged but before the row is marked, the row is
//! published again when its lease expires. Consumers deduplicate on (`lead_id`, `revision`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{watch, Notify};

use crate::shared::config::RelaySettings;
use crate::shared::kafka::{record_bytes, MessageLimits};
use crate::shared::outbox::OutboxOwner;
use crate::shared::outbox::{ClaimedMessage, PublishedMessage};
use crate::shared::retry::Backoff;
use crate::shared::store::Store;
use crate::shared::telemetry::{events, Metrics};

pub use crate::shared::kafka::PublishError;

/// One relay instance.
pub struct Relay {
    id: String,
    store: Store,
    owner: Arc<dyn OutboxOwner>,
    producer: FutureProducer,
    settings: RelaySettings,
    wakeup: Arc<Notify>,
    metrics: Metrics,
    limits: MessageLimits,
}

impl Relay {
    pub fn new(
        store: Store,
        owner: Arc<dyn OutboxOwner>,
        producer: FutureProducer,
        settings: RelaySettings,
        wakeup: Arc<Notify>,
        metrics: Metrics,
    ) -> Self {
        Relay {
            id: format!("relay-{}", uuid::Uuid::new_v4()),
            store,
            owner,
            producer,
            settings,
            wakeup,
            metrics,
            limits: MessageLimits::default(),
        }
    }

    /// The limits that tell a record refused for its size from a batch refused whole
    /// (`PublishError::from_kafka`); without them only the producer's default is known.
    pub fn with_limits(mut self, limits: MessageLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs until `shutdown` turns true; the round under way is finished first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(relay = %self.id, "Outbox relay started.");
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        // Look for unacknowledged leads ten times per republish period (at most once a second).
        let republish_every = Duration::from_secs((self.settings.republish_after_secs / 10).max(1));
        let mut last_republish_check = std::time::Instant::now();
        let prune_every = Duration::from_secs(self.settings.prune_interval_secs);
        // None: prune in the first round, so a relay restarted often still prunes.
        let mut last_prune: Option<std::time::Instant> = None;
        while !*shutdown.borrow() {
            if last_prune.is_none_or(|at| at.elapsed() >= prune_every) {
                last_prune = Some(std::time::Instant::now());
                self.prune(Utc::now()).await;
            }
            if last_republish_check.elapsed() >= republish_every {
                last_republish_check = std::time::Instant::now();
                match self.owner.periodic(&self.store, Utc::now()).await {
                    Ok(0) => {}
                    Ok(count) => tracing::warn!(
                        count,
                        outbox = self.owner.name(),
                        "Republished messages that have no answer."
                    ),
                    Err(error) => tracing::warn!(%error, "Cannot look for unanswered messages."),
                }
            }
            let published = match self.round().await {
                Ok(count) => count,
                Err(error) => {
                    tracing::warn!(relay = %self.id, %error, "Outbox round failed; retrying.");
                    0
                }
            };
            self.update_backlog().await;
            if published == 0 {
                tokio::select! {
                    _ = self.wakeup.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        tracing::info!(relay = %self.id, "Outbox relay stopped.");
    }

    /// Claims one batch, publishes it and records the outcome. Returns how many were published.
    pub async fn round(&self) -> Result<usize, crate::shared::store::StoreError> {
        let now = Utc::now();
        let lease_until = now + chrono::Duration::seconds(self.settings.lease_secs as i64);
        let claimed = self
            .store
            .claim_outbox(&self.id, self.settings.batch_size, now, lease_until)
            .await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let sends = claimed.iter().map(|message| self.publish(message));
        let results = futures::future::join_all(sends).await;
        let mut published = Vec::new();
        for (message, result) in claimed.iter().zip(results) {
            match result {
                Ok(coordinates) => published.push(coordinates),
                Err(PublishError::Permanent {
                    class,
                    message: error,
                }) => {
                    let marked = self
                        .store
                        .mark_failed_permanently(
                            self.owner.as_ref(),
                            &self.id,
                            message,
                            class,
                            &error,
                            Utc::now(),
                        )
                        .await?;
                    if marked {
                        events::publish_failed_permanently(&self.metrics, message, class, &error);
                    }
                }
                Err(PublishError::Transient(error)) => {
                    let retry_at = self.retry_at(message.attempts);
                    events::publish_failed(&self.metrics, message, &error, retry_at);
                    self.store
                        .mark_failed(&self.id, message, &error, retry_at)
                        .await?;
                }
            }
        }
        let marked = self
            .store
            .mark_published(
                self.owner.as_ref(),
                &self.id,
                &claimed,
                &published,
                Utc::now(),
            )
            .await?;
        for coordinates in &published {
            if let Some(message) = claimed.iter().find(|m| m.id == coordinates.id) {
                events::lead_published(&self.metrics, message, coordinates);
            }
        }
        Ok(marked)
    }

    async fn publish(&self, message: &ClaimedMessage) -> Result<PublishedMessage, PublishError> {
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
        for (key, value) in &message.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let key = message.lead_id.to_string();
        let size = record_bytes(
            Some(key.as_bytes()),
            &message.payload,
            message
                .headers
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_bytes())),
        );
        let record = FutureRecord::to(&message.topic)
            .key(&key)
            .payload(&message.payload)
            .headers(headers);
        match self.producer.send(record, Duration::from_secs(5)).await {
            Ok(delivery) => Ok(PublishedMessage {
                id: message.id,
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Err((error, _)) => Err(PublishError::from_kafka(
                &error,
                self.limits.never_fits(&message.topic, size),
            )),
        }
    }

    fn retry_at(&self, attempts: i64) -> DateTime<Utc> {
        Backoff {
            initial_ms: self.settings.backoff_initial_ms,
            max_ms: self.settings.backoff_max_ms,
        }
        .retry_at(attempts, Utc::now())
    }

    /// Deletes published rows past the retention, in bounded batches; returns how many.
    pub async fn prune(&self, now: DateTime<Utc>) -> u64 {
        // The configuration check guarantees the retention fits a chrono duration.
        let retention = chrono::Duration::hours(self.settings.retention_hours as i64);
        let cutoff = now - retention;
        let mut pruned = 0;
        for _ in 0..PRUNE_BATCHES_PER_PASS {
            match self
                .store
                .prune_outbox(self.owner.as_ref(), cutoff, PRUNE_BATCH)
                .await
            {
                Ok(count) => {
                    pruned += count;
                    if count < PRUNE_BATCH as u64 {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(relay = %self.id, %error, "Cannot prune the outbox; trying again later.");
                    break;
                }
            }
        }
        if pruned > 0 {
            events::outbox_pruned(&self.metrics, self.owner.name(), pruned);
        }
        pruned
    }

    async fn update_backlog(&self) {
        match self.store.outbox_backlog().await {
            Ok((waiting, _)) => self.metrics.outbox_backlog.set(waiting),
            Err(error) => tracing::warn!(%error, "Cannot read the outbox backlog."),
        }
    }
}

/// Rows deleted per pruning statement: short transactions, each a small share of a round.
const PRUNE_BATCH: i64 = 1000;
/// Statements per pruning pass; a larger excess is left to the next pass.
const PRUNE_BATCHES_PER_PASS: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn refused_data_is_permanent_and_an_absent_broker_is_not() {
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        let error = PublishError::from_kafka(&too_large, true);
        assert!(
            matches!(
                error,
                PublishError::Permanent {
                    class: "message_too_large",
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(!error.is_retryable());
        for code in [
            RDKafkaErrorCode::MessageBatchTooLarge,
            RDKafkaErrorCode::InvalidMessageSize,
            RDKafkaErrorCode::InvalidRecord,
        ] {
            let error = PublishError::from_kafka(&KafkaError::MessageProduction(code), true);
            assert!(!error.is_retryable(), "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::QueueFull,
            // CORRUPT_MESSAGE: a CRC failure in transit, retriable by Kafka's own account.
            RDKafkaErrorCode::InvalidMessage,
        ] {
            let error = PublishError::from_kafka(&KafkaError::MessageProduction(code), true);
            assert!(error.is_retryable(), "{code:?}");
        }
    }

    #[test]
    fn a_size_refusal_of_a_record_that_fits_alone_is_a_batch_refusal_and_retried() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::MessageBatchTooLarge,
        ] {
            let error = PublishError::from_kafka(&KafkaError::MessageProduction(code), false);
            assert!(error.is_retryable(), "{code:?}");
        }
        // The record's own fit decides, against the producer's and the topic's limit.
        let limits = MessageLimits {
            producer: 1_000_000,
            topics: [("leads".to_string(), 60_000)].into(),
        };
        let thirty_kb = record_bytes(Some(b"lead-id"), &[b'x'; 30_000], [("schema", &b"v1"[..])]);
        assert!(!limits.never_fits("leads", thirty_kb));
        assert!(limits.never_fits("leads", 60_000));
        assert!(
            !limits.never_fits("receipts", 60_000),
            "no topic limit known"
        );
        assert!(limits.never_fits("receipts", 1_000_001));
    }
}
