//! The delivery worker: hands each (lead, revision, unit) to the unit's sink.
//!
//! Guarantee: every delivery is attempted until it succeeds, the unit refuses it for good (an
//! error that cannot be retried) or its give-up time passes; then it is dead-lettered on Kafka
//! (acknowledged) and reported to the hub (`delivery_given_up`), so it stays visible.
//! A unit receives a lead's revisions in order (see `PoliceStore::claim_deliveries`). Retries
//! back off exponentially; a case-management outage is waited out by the HTTP sink's circuit
//! breaker and the backoff, and everything is delivered when the system returns. The HTTP sink
//! sends an `Idempotency-Key` of lead and revision, so a retry after an unrecorded success
//! opens no second case in the case-management system.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::producer::FutureProducer;
use serde_json::json;
use tokio::sync::{watch, Notify};

use super::settings::DeliverySettings;
use super::sink::{Delivery, DeliveryError, DeliverySink};
use super::store::{ClaimedDelivery, PoliceStore};
use crate::contract::events::{DeadLetterHeaders, DeadLetterOrigin, GivenUpDelivery};
use crate::shared::retry::Backoff;
use crate::shared::telemetry::{events, Metrics};

pub struct DeliveryWorker {
    pub(super) id: String,
    pub(super) store: PoliceStore,
    /// The HTTP sinks by unit; a unit without one uses the built-in inbox.
    pub(super) http_sinks: HashMap<String, Arc<dyn DeliverySink>>,
    pub(super) settings: DeliverySettings,
    pub(super) wakeup: Arc<Notify>,
    pub(super) producer: FutureProducer,
    pub(super) deadletter_topic: String,
    pub(super) metrics: Metrics,
    pub(super) limits: crate::shared::kafka::MessageLimits,
}

/// Stage name of the delivery worker in dead-letter headers and metrics.
const STAGE: &str = "police-adapter.deliver";
/// Error class of a delivery given up, in dead-letter headers and metrics.
const GIVEN_UP: &str = "delivery_failed";

impl DeliveryWorker {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        while !*shutdown.borrow() {
            let done = match self.round(&mut shutdown).await {
                Ok(done) => done,
                Err(error) => {
                    tracing::warn!(%error, "Delivery round failed; retrying.");
                    0
                }
            };
            if done == 0 {
                tokio::select! {
                    _ = self.wakeup.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    /// Claims and attempts one batch; returns how many were delivered. `shutdown` interrupts
    /// a dead letter Kafka does not take yet (the delivery is left leased and comes again).
    pub async fn round(
        &self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<usize, crate::shared::store::StoreError> {
        let now = Utc::now();
        let lease_until = now + chrono::Duration::seconds(self.settings.lease_secs as i64);
        let claimed = self
            .store
            .claim_deliveries(&self.id, self.settings.batch_size, now, lease_until)
            .await?;
        // Outcomes are recorded as they come back, those ready together in one transaction:
        // the inbox's at once, each case-management system's as it answers. A success the
        // adapter has not recorded is sent again after a crash (the idempotency key keeps that
        // harmless), so the shorter that window the better. The attempts run on their own,
        // beside the recording: an answer must not wait unread (and time out) while a
        // transaction or a dead letter is under way, and no request is dropped mid-way.
        let (outcomes, mut arrived) = tokio::sync::mpsc::unbounded_channel();
        let claimed = &claimed;
        let attempts = async move {
            let sends = claimed.iter().map(|delivery| {
                let outcomes = outcomes.clone();
                async move {
                    let outcome = self.attempt(delivery).await;
                    // The recording side stops only on an error; the lease then brings the
                    // delivery back, so an outcome it no longer reads is not lost.
                    let _ = outcomes.send((delivery, outcome));
                }
            });
            futures::future::join_all(sends).await;
        };
        let record = async {
            let mut delivered = 0;
            while let Some(first) = arrived.recv().await {
                let mut ready = vec![first];
                while let Ok(more) = arrived.try_recv() {
                    ready.push(more);
                }
                let mut successes = Vec::new();
                let mut failures = Vec::new();
                for (delivery, outcome) in ready {
                    match outcome {
                        Ok(cms_ref) => successes.push((delivery, cms_ref)),
                        Err(error) => failures.push((delivery, error)),
                    }
                }
                if !successes.is_empty() {
                    let done: Vec<(&ClaimedDelivery, &str)> = successes
                        .iter()
                        .map(|(delivery, cms_ref)| (*delivery, cms_ref.as_str()))
                        .collect();
                    let marked = self
                        .store
                        .mark_delivered_all(&self.id, &done, Utc::now())
                        .await?;
                    for ((delivery, cms_ref), marked) in done.iter().zip(marked) {
                        if marked {
                            delivered += 1;
                            events::police_lead_delivered(
                                &self.metrics,
                                delivery.lead_id,
                                delivery.revision,
                                &delivery.unit,
                                &delivery.sink,
                                cms_ref,
                            );
                        }
                    }
                }
                for (delivery, error) in failures {
                    self.failed(delivery, &error, shutdown).await?;
                }
            }
            Ok::<usize, crate::shared::store::StoreError>(delivered)
        };
        let ((), delivered) = tokio::join!(attempts, record);
        delivered
    }

    async fn attempt(&self, delivery: &ClaimedDelivery) -> Result<String, DeliveryError> {
        match self.http_sinks.get(&delivery.unit) {
            None => Ok(format!("inbox:{}:{}", delivery.unit, delivery.id)),
            Some(sink) => {
                let request = Delivery {
                    lead_id: delivery.lead_id.to_string(),
                    revision: delivery.revision,
                    unit: delivery.unit.clone(),
                    body: json!({
                        "lead_id": delivery.lead_id,
                        "revision": delivery.revision,
                        "unit": delivery.unit,
                        "lead": delivery.document,
                        "assessment": delivery.assessment,
                        "deadlines": delivery.deadlines,
                    }),
                };
                sink.deliver(&request)
                    .await
                    .map(|delivered| delivered.cms_ref)
            }
        }
    }

    async fn failed(
        &self,
        delivery: &ClaimedDelivery,
        error: &DeliveryError,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), crate::shared::store::StoreError> {
        let now = Utc::now();
        let give_up_at = delivery.created_at
            + chrono::Duration::seconds(self.settings.give_up_after_secs as i64);
        let error_text = error.to_string();
        if !error.is_retryable() || now >= give_up_at {
            events::police_delivery_failed(
                &self.metrics,
                delivery.lead_id,
                &delivery.unit,
                delivery.attempts + 1,
                error.is_retryable(),
                &error_text,
                None,
            );
            if self.dead_letter(delivery, error, shutdown).await.is_err() {
                // Not dead-lettered: unmarked, the delivery is claimed again after a restart.
                return Ok(());
            }
            events::police_delivery_dead_lettered(
                &self.metrics,
                STAGE,
                GIVEN_UP,
                delivery.lead_id,
                delivery.revision,
                &delivery.unit,
            );
            return self
                .store
                .mark_dead_lettered(&self.id, delivery, &error_text, now)
                .await;
        }
        let retry_at = self.retry_at(delivery.attempts, now);
        events::police_delivery_failed(
            &self.metrics,
            delivery.lead_id,
            &delivery.unit,
            delivery.attempts + 1,
            true,
            &error_text,
            Some(retry_at),
        );
        self.store
            .delivery_failed(&self.id, delivery, &error_text, retry_at)
            .await
    }

    fn retry_at(&self, attempts: i64, now: DateTime<Utc>) -> DateTime<Utc> {
        Backoff {
            initial_ms: self.settings.backoff_initial_ms,
            max_ms: self.settings.backoff_max_ms,
        }
        .retry_at(attempts, now)
    }

    async fn dead_letter(
        &self,
        delivery: &ClaimedDelivery,
        error: &DeliveryError,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<crate::shared::kafka::PublishOutcome, crate::shared::kafka::Interrupted> {
        let payload = serde_json::to_vec(&GivenUpDelivery {
            lead_id: delivery.lead_id,
            revision: delivery.revision,
            unit: delivery.unit.clone(),
            lead: delivery.document.clone(),
            assessment: delivery.assessment.clone(),
        })
        .expect("events serialise");
        let key = delivery.lead_id.to_string();
        let why = DeadLetterHeaders {
            error_class: GIVEN_UP.to_owned(),
            error_message: error.to_string(),
            stage: STAGE.to_owned(),
            origin: DeadLetterOrigin::Delivery {
                unit: delivery.unit.clone(),
                attempts: delivery.attempts + 1,
            },
        }
        .to_kafka();
        let headers: Vec<(&str, &[u8])> = why
            .iter()
            .map(|(key, value)| (*key, value.as_bytes()))
            .collect();
        crate::shared::kafka::publish_until_acknowledged(
            &self.producer,
            &self.limits,
            &self.deadletter_topic,
            Some(key.as_bytes()),
            &payload,
            &headers,
            shutdown,
        )
        .await
    }
}
