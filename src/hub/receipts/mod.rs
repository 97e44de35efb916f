//! The hub's receipts consumer: police receipts and decisions from `<prefix>.receipts.v1`
//! into lead status, timeline and the agency feedback feed.
//!
//! Guarantee: at-least-once with idempotent application (receipts are applied once per event
//! id); an offset is stored only after the receipt's transaction committed, or after an
//! unusable receipt was dead-lettered with its context (reduced if Kafka can never take it
//! whole, see `kafka::publish_until_acknowledged`). A receipt the hub's database can never
//! store (`StoreError::is_permanent`) is dead-lettered as `unstorable` rather than retried
//! forever; any other store error is waited out on the same receipt. A shutdown interrupts
//! either wait without storing the offset, so the receipt is consumed again after a restart.

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
        loop {
            let message = tokio::select! {
                message = self.consumer.recv() => message,
                _ = shutdown.changed() => break,
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "Receipts consumer error; continuing.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let mut backoff = Duration::from_millis(200);
            loop {
                let receipt = match ReceiptEvent::decode(message.payload().unwrap_or_default()) {
                    Ok(receipt) => receipt,
                    Err(error) => {
                        let class = match &error {
                            EventError::Undecodable(_) => "undecodable",
                            EventError::UnknownSchema(_) => "unknown_schema",
                        };
                        if !self
                            .dead_letter(&message, class, &error.to_string(), &mut shutdown)
                            .await
                        {
                            return;
                        }
                        break;
                    }
                };
                match self.store.apply_receipt(&receipt, Utc::now()).await {
                    Ok(ReceiptOutcome::Applied | ReceiptOutcome::AlreadyApplied) => break,
                    Ok(ReceiptOutcome::UnknownLead) => {
                        if !self
                            .dead_letter(
                                &message,
                                "unknown_lead",
                                "the hub knows no such lead",
                                &mut shutdown,
                            )
                            .await
                        {
                            return;
                        }
                        break;
                    }
                    Err(error) if error.is_permanent() => {
                        if !self
                            .dead_letter(&message, "unstorable", &error.to_string(), &mut shutdown)
                            .await
                        {
                            return;
                        }
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Cannot apply a receipt; retrying.");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.changed() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
            if let Err(error) = self.consumer.store_offset_from_message(&message) {
                tracing::warn!(%error, "Cannot store the receipts offset; the receipt may be applied again (harmless).");
            }
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
