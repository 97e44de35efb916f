//! The outbox relay: publishes committed outbox messages to Kafka.
//!
//! Guarantee: every outbox row is eventually published at least once, and marked published
//! (with topic, partition and offset, a `published` timeline event and an audit entry) only
//! after Kafka acknowledged it (idempotent producer, `acks=all`). While Kafka is unreachable
//! the relay keeps retrying with exponential backoff and the backlog is visible in the
//! `leadbridge_outbox_backlog` metric. Several relays may run at once: a row is leased to one
//! relay at a time (see `store::outbox`), so in normal operation nothing is published twice.
//!
//! Limits: if a relay dies after Kafka acknowledged but before the row is marked, the row is
//! published again when its lease expires. Consumers deduplicate on (`lead_id`, `revision`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{watch, Notify};

use crate::config::RelaySettings;
use crate::store::{ClaimedMessage, PublishedMessage, Store};
use crate::telemetry::{events, Metrics};

/// One relay instance.
pub struct Relay {
    id: String,
    store: Store,
    producer: FutureProducer,
    settings: RelaySettings,
    wakeup: Arc<Notify>,
    metrics: Metrics,
}

impl Relay {
    pub fn new(
        store: Store,
        producer: FutureProducer,
        settings: RelaySettings,
        wakeup: Arc<Notify>,
        metrics: Metrics,
    ) -> Self {
        Relay {
            id: format!("relay-{}", uuid::Uuid::new_v4()),
            store,
            producer,
            settings,
            wakeup,
            metrics,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs until `shutdown` turns true; the round under way is finished first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(relay = %self.id, "Outbox relay started.");
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        let republish_after = chrono::Duration::seconds(self.settings.republish_after_secs as i64);
        // Look for unacknowledged leads ten times per republish period (at most once a second).
        let republish_every = Duration::from_secs((self.settings.republish_after_secs / 10).max(1));
        let mut last_republish_check = std::time::Instant::now();
        while !*shutdown.borrow() {
            if self.store.schema() == crate::store::Schema::Hub
                && last_republish_check.elapsed() >= republish_every
            {
                last_republish_check = std::time::Instant::now();
                match self
                    .store
                    .republish_unreceipted(republish_after, Utc::now())
                    .await
                {
                    Ok(0) => {}
                    Ok(count) => {
                        tracing::warn!(count, "Republished leads that have no police receipt.")
                    }
                    Err(error) => tracing::warn!(%error, "Cannot look for unacknowledged leads."),
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
    pub async fn round(&self) -> Result<usize, crate::store::StoreError> {
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
                Err(error) => {
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
            .mark_published(&self.id, &claimed, &published, Utc::now())
            .await?;
        for coordinates in &published {
            if let Some(message) = claimed.iter().find(|m| m.id == coordinates.id) {
                events::lead_published(&self.metrics, message, coordinates);
            }
        }
        Ok(marked)
    }

    async fn publish(&self, message: &ClaimedMessage) -> Result<PublishedMessage, String> {
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
        for (key, value) in &message.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let key = message.lead_id.to_string();
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
            Err((error, _)) => Err(error.to_string()),
        }
    }

    /// Exponential backoff from the configured initial delay, capped, with up to 20 % jitter so
    /// that relays do not retry in lockstep.
    fn retry_at(&self, attempts: i64) -> DateTime<Utc> {
        let exponent = attempts.clamp(0, 20) as u32;
        let base = self
            .settings
            .backoff_initial_ms
            .saturating_mul(1u64 << exponent)
            .min(self.settings.backoff_max_ms);
        let jitter = rand::random_range(0..=base / 5);
        Utc::now() + chrono::Duration::milliseconds((base + jitter) as i64)
    }

    async fn update_backlog(&self) {
        match self.store.outbox_backlog().await {
            Ok((waiting, _)) => self.metrics.outbox_backlog.set(waiting),
            Err(error) => tracing::warn!(%error, "Cannot read the outbox backlog."),
        }
    }
}
