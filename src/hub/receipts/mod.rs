//! The hub's receipts consumer: police receipts and decisions from `<prefix>.receipts.v1`
//! into lead status, timeline and the agency feedback feed, and the police log's entries and
//! checkpoints into the hub's copy of that log (`crate::shared::audit::copy`).
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
//!
//! A log event is applied alone, in its place among the receipts. One the copy refuses (an
//! entry that does not verify, a gap, a divergence from what the copy holds, a checkpoint not
//! signed by the police key or not of the copy's tree) is dead-lettered with its reason and
//! logged as an error: the copy is evidence, so it never takes what it cannot check.

use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::Message;
use tokio::sync::watch;

use crate::contract::events::{
    DeadLetterHeaders, DeadLetterOrigin, EventError, LogEvent, ReceiptEvent, ReceiptsTopicEvent,
};
use crate::hub::store::ReceiptOutcome;
use crate::shared::audit::copy::{self, CopyError};
use crate::shared::audit::log::LogTables;
use crate::shared::config::KafkaSettings;
use crate::shared::kafka::{self, Topics};
use crate::shared::store::Store;
use crate::shared::telemetry::{events, Metrics};
use crate::shared::tlog::checkpoint::VerifierKey;

/// Most receipts applied in one transaction.
const RECEIPTS_BATCH_MAX: usize = 500;

pub struct ReceiptsConsumer {
    store: Store,
    consumer: StreamConsumer,
    producer: FutureProducer,
    deadletter_topic: String,
    limits: kafka::MessageLimits,
    metrics: Metrics,
    police_log: Option<PoliceLogKey>,
}

/// What the police log's checkpoints are checked against: the police key and the log's origin.
#[derive(Clone, Debug)]
pub struct PoliceLogKey {
    pub key: VerifierKey,
    pub origin: String,
}

impl ReceiptsConsumer {
    pub fn build(
        kafka_settings: &KafkaSettings,
        bootstrap_servers: &str,
        store: Store,
        metrics: Metrics,
        limits: &kafka::MessageLimits,
        police_log: Option<PoliceLogKey>,
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
            police_log,
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
            match ReceiptsTopicEvent::decode(message.payload().unwrap_or_default()) {
                Ok(ReceiptsTopicEvent::Receipt(receipt)) => run.push((message, receipt)),
                Ok(ReceiptsTopicEvent::Log(event)) => {
                    if !self.apply_run(&mut run, shutdown).await
                        || !self.apply_log(message, &event, shutdown).await
                    {
                        return false;
                    }
                }
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

    /// Takes a log event into the police log's copy and stores its offset; dead-letters it
    /// when the copy refuses it. False when shutdown came first.
    async fn apply_log(
        &self,
        message: &BorrowedMessage<'_>,
        event: &LogEvent,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut backoff = Duration::from_millis(200);
        loop {
            let applied = match &event.checkpoint {
                Some(note) => match &self.police_log {
                    Some(police) => copy::store_shipped_checkpoint(
                        &self.store,
                        LogTables::POLICE_COPY,
                        note,
                        &police.key,
                        &police.origin,
                        Utc::now(),
                    )
                    .await
                    .map(|new| {
                        if !new {
                            tracing::debug!(
                                "A police checkpoint the copy holds was shipped again."
                            );
                        }
                    }),
                    None => Err(CopyError::BadCheckpoint(
                        "the hub knows no police verifier key (transparency.police_verifier_key)"
                            .into(),
                    )),
                },
                None => copy::append_shipped(&self.store, LogTables::POLICE_COPY, &event.entries)
                    .await
                    .map(|copied| {
                        if copied.duplicates > 0 {
                            tracing::debug!(
                                duplicates = copied.duplicates,
                                appended = copied.appended,
                                "Police log entries the copy holds were shipped again."
                            );
                        }
                    }),
            };
            match applied {
                Ok(()) => {
                    self.store_offset(message);
                    return true;
                }
                Err(error) if error.is_retryable() => {
                    tracing::warn!(%error, "Cannot copy the police log yet; retrying.");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return false,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(error) => {
                    tracing::error!(%error, class = error.class(), "The police log's copy refuses a shipment; dead-lettering it.");
                    if !self
                        .dead_letter(message, error.class(), &error.to_string(), shutdown)
                        .await
                    {
                        return false;
                    }
                    self.store_offset(message);
                    return true;
                }
            }
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
