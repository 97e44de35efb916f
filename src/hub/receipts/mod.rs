//! The hub's receipts consumer: police receipts and decisions from `<prefix>.receipts.v1`
//! into lead status, timeline and the agency feedback feed.
//!
//! Guarantee: at-least-once with idempotent application (receipts are applied once per event
//! id). Receipts are applied in their order, in runs: what a poll returns (up to 500), split
//! at each message that does not decode, one transaction per run; a run the database refuses
//! for a data reason is applied one receipt at a time. An offset is stored only after its
//! receipt's transaction committed, or after an unusable receipt was dead-lettered with its
//! context (reduced if Kafka can never take it whole, see
//! `kafka::publish_until_acknowledged`). A receipt the hub's database can never store
//! (`StoreError::is_permanent`) is dead-lettered as `unstorable` rather than retried forever;
//! any other store error is waited out on the same run. A shutdown interrupts either wait
//! without storing the offset, so the receipt is consumed again after a restart.

use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::Message;
use tokio::sync::watch;

use crate::contract::events::{DeadLetterHeaders, DeadLetterOrigin, EventError, ReceiptEvent};
use crate::hub::store::ReceiptOutcome;
use crate::shared::config::KafkaSettings;
use crate::shared::kafka::{self, Topics};
use crate::shared::store::Store;
use crate::shared::telemetry::{events, Metrics};

/// Most receipts applied in one transaction.
const RECEIPTS_BATCH_MAX: usize = 500;

pub struct ReceiptsConsumer {
    store: Store,
    consumer: StreamConsumer,
    producer: FutureProducer,
    deadletter_topic: String,
    limits: kafka::MessageLimits,
    metrics: Metrics,
}

impl ReceiptsConsumer {
    pub fn build(
        kafka_settings: &KafkaSettings,
        bootstrap_servers: &str,
        store: Store,
        metrics: Metrics,
        limits: &kafka::MessageLimits,
    ) -> anyhow::Result<ReceiptsConsumer> {
        let topics = Topics::new(kafka_settings.topic_prefix.clone());
        let group_id = format!("{}-hub-receipts", kafka_settings.topic_prefix);
        let consumer: StreamConsumer =
            kafka::consumer_config(kafka_settings, bootstrap_servers, &group_id).create()?;
        consumer.subscribe(&[&topics.receipts()])?;
        Ok(ReceiptsConsumer {
            store,
            consumer,
            producer: kafka::idempotent_producer_within(kafka_settings, bootstrap_servers, limits)?,
            deadletter_topic: topics.deadletter(),
            limits: limits.clone(),
            metrics,
        })
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            let Some(batch) = kafka::next_batch(
                &self.consumer,
                RECEIPTS_BATCH_MAX,
                "hub.receipts",
                &mut shutdown,
            )
            .await
            else {
                break;
            };
            if !self.handle_batch(&batch, &mut shutdown).await {
                return;
            }
        }
    }

    /// Handles a batch in its order: runs of receipts applied in one transaction each, an
    /// undecodable message dead-lettered in its place. Returns false when shutdown came
    /// first (what was not handled keeps its offset unstored).
    async fn handle_batch(
        &self,
        batch: &[BorrowedMessage<'_>],
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut run: Vec<(&BorrowedMessage<'_>, ReceiptEvent)> = Vec::new();
        for message in batch {
            match ReceiptEvent::decode(message.payload().unwrap_or_default()) {
                Ok(receipt) => run.push((message, receipt)),
                Err(error) => {
                    if !self.apply_run(&mut run, shutdown).await {
                        return false;
                    }
                    let class = match &error {
                        EventError::Undecodable(_) => "undecodable",
                        EventError::UnknownSchema(_) => "unknown_schema",
                    };
                    if !self
                        .dead_letter(message, class, &error.to_string(), shutdown)
                        .await
                    {
                        return false;
                    }
                    self.store_offset(message);
                }
            }
        }
        self.apply_run(&mut run, shutdown).await
    }

    /// Applies a run of receipts in one transaction, then stores their offsets in order.
    /// Waits out an unavailable database; if the run cannot be stored for a data reason,
    /// applies it one receipt at a time so only the unstorable one is dead-lettered.
    async fn apply_run(
        &self,
        run: &mut Vec<(&BorrowedMessage<'_>, ReceiptEvent)>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        if run.is_empty() {
            return true;
        }
        let receipts: Vec<ReceiptEvent> = run.iter().map(|(_, receipt)| receipt.clone()).collect();
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.store.apply_receipts(&receipts, Utc::now()).await {
                Ok(outcomes) => {
                    for ((message, _), outcome) in run.iter().zip(outcomes) {
                        if outcome == ReceiptOutcome::UnknownLead
                            && !self
                                .dead_letter(
                                    message,
                                    "unknown_lead",
                                    "the hub knows no such lead",
                                    shutdown,
                                )
                                .await
                        {
                            return false;
                        }
                        self.store_offset(message);
                    }
                    break;
                }
                Err(error) if error.is_permanent() => {
                    tracing::warn!(%error, receipts = run.len(), "A receipt of the batch cannot be stored; applying them one at a time.");
                    for (message, receipt) in run.iter() {
                        if !self.apply_alone(message, receipt, shutdown).await {
                            return false;
                        }
                    }
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "Cannot apply receipts; retrying.");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return false,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        run.clear();
        true
    }

    /// Applies one receipt and stores its offset; dead-letters it if the hub knows no such
    /// lead or cannot store it.
    async fn apply_alone(
        &self,
        message: &BorrowedMessage<'_>,
        receipt: &ReceiptEvent,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut backoff = Duration::from_millis(200);
        loop {
            let set_aside = match self.store.apply_receipt(receipt, Utc::now()).await {
                Ok(ReceiptOutcome::Applied | ReceiptOutcome::AlreadyApplied) => None,
                Ok(ReceiptOutcome::UnknownLead) => {
                    Some(("unknown_lead", "the hub knows no such lead".to_owned()))
                }
                Err(error) if error.is_permanent() => Some(("unstorable", error.to_string())),
                Err(error) => {
                    tracing::warn!(%error, "Cannot apply a receipt; retrying.");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return false,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            if let Some((class, detail)) = set_aside {
                if !self.dead_letter(message, class, &detail, shutdown).await {
                    return false;
                }
            }
            self.store_offset(message);
            return true;
        }
    }

    fn store_offset(&self, message: &BorrowedMessage<'_>) {
        if let Err(error) = self.consumer.store_offset_from_message(message) {
            tracing::warn!(%error, "Cannot store the receipts offset; the receipt may be applied again (harmless).");
        }
    }

    /// Dead-letters the receipt (reduced if Kafka can never take it whole, see
    /// `kafka::publish_until_acknowledged`); false if shutdown came first, when the offset
    /// must not be stored.
    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        class: &str,
        detail: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        events::message_dead_lettered(
            &self.metrics,
            "hub.receipts",
            class,
            detail,
            message.topic(),
            message.partition(),
            message.offset(),
        );
        let why = DeadLetterHeaders {
            error_class: class.to_owned(),
            error_message: detail.to_owned(),
            stage: "hub.receipts".to_owned(),
            origin: DeadLetterOrigin::Consumed {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
            },
        };
        kafka::dead_letter_consumed(
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
