//! Ships the adapter's transparency log to the hub (supervision contract §2): every entry, with
//! its index and leaf hash, and every checkpoint the adapter signs, as `leadbridge.log.v1`
//! events on the receipts topic under one key, so they arrive in their order.
//!
//! Guarantee: at-least-once, in index order. The cursor (`log_shipped`, police migration 0104)
//! moves only after Kafka acknowledged what it covers, so after a crash the last shipment is
//! sent again and the hub recognises what it already holds. A checkpoint is shipped only after
//! every entry it covers. A shipment is kept well under the topic's message limit, because a
//! log event is never reduced: a cut entry would be refused by the hub as not verifying.

use std::time::Duration;

use rdkafka::producer::FutureProducer;
use tokio::sync::watch;

use crate::contract::events::{LogEvent, ShippedEntry, LOG_EVENT_KEY, LOG_SCHEMA};
use crate::on_backend;
use crate::shared::audit::log::{self, LogTables};
use crate::shared::audit::AuditError;
use crate::shared::kafka::{self, MessageLimits};
use crate::shared::store::Store;
use crate::shared::tlog::checkpoint::{Checkpoint, SignedNote};

/// Most entries in one shipment.
const SHIP_ENTRIES: u64 = 500;
/// A shipment stops growing past this many payload bytes (a quarter of Kafka's default
/// 1 MiB message limit), or a quarter of the known limit when that is smaller.
const SHIP_BYTES: usize = 256 * 1024;

pub struct LogShipper {
    pub store: Store,
    pub producer: FutureProducer,
    pub topic: String,
    pub limits: MessageLimits,
    pub interval: Duration,
}

/// How far the log has been shipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shipped {
    pub entries: u64,
    pub checkpoint_size: u64,
}

/// The shipping cursor.
pub async fn shipped(store: &Store) -> Result<Shipped, AuditError> {
    let (entries, checkpoint_size): (i64, i64) = on_backend!(store.db(), pool => sqlx::query_as(
        "SELECT entries, checkpoint_size FROM log_shipped WHERE id = 1",
    )
    .fetch_one(pool)
    .await)?;
    Ok(Shipped {
        entries: entries as u64,
        checkpoint_size: checkpoint_size as u64,
    })
}

async fn advance(store: &Store, to: Shipped) -> Result<(), AuditError> {
    on_backend!(store.db(), pool => sqlx::query(
        "UPDATE log_shipped SET entries = $1, checkpoint_size = $2 WHERE id = 1",
    )
    .bind(to.entries as i64)
    .bind(to.checkpoint_size as i64)
    .execute(pool)
    .await
    .map(|_| ()))?;
    Ok(())
}

enum Step {
    /// Something was shipped; look again at once.
    Shipped,
    /// Nothing to ship.
    Idle,
    /// Shutdown came while a shipment was unacknowledged.
    Interrupted,
}

impl LogShipper {
    fn byte_budget(&self) -> usize {
        let limit = self
            .limits
            .topics
            .get(&self.topic)
            .copied()
            .unwrap_or(self.limits.producer)
            .min(self.limits.producer);
        SHIP_BYTES.min(limit / 4)
    }

    /// Ships until `shutdown`, looking for new entries every `interval` when idle.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let pause = match self.step(&mut shutdown).await {
                Ok(Step::Shipped) => continue,
                Ok(Step::Interrupted) => return,
                Ok(Step::Idle) => self.interval,
                Err(error) => {
                    tracing::warn!(%error, "Cannot ship the police log yet; retrying.");
                    self.interval.max(Duration::from_secs(1))
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn step(&self, shutdown: &mut watch::Receiver<bool>) -> Result<Step, AuditError> {
        let cursor = shipped(&self.store).await?;
        let size = log::size(&self.store, LogTables::OWN).await?;
        if cursor.entries < size {
            let end = size.min(cursor.entries + SHIP_ENTRIES);
            let stored = log::entries(&self.store, LogTables::OWN, cursor.entries, end).await?;
            let budget = self.byte_budget();
            let mut entries = Vec::new();
            let mut bytes = 0;
            for (offset, (entry, leaf_hash)) in stored.into_iter().enumerate() {
                let weight = entry.to_string().len() + leaf_hash.len() + 32;
                if !entries.is_empty() && bytes + weight > budget {
                    break;
                }
                bytes += weight;
                entries.push(ShippedEntry {
                    index: cursor.entries + offset as u64,
                    entry,
                    leaf_hash,
                });
            }
            let shipped_to = cursor.entries + entries.len() as u64;
            let event = LogEvent {
                schema: LOG_SCHEMA.to_owned(),
                log: "police".to_owned(),
                entries,
                checkpoint: None,
            };
            if !self.publish(&event, shutdown).await {
                return Ok(Step::Interrupted);
            }
            advance(
                &self.store,
                Shipped {
                    entries: shipped_to,
                    ..cursor
                },
            )
            .await?;
            return Ok(Step::Shipped);
        }
        let notes =
            log::checkpoints_after(&self.store, LogTables::OWN, cursor.checkpoint_size, 1).await?;
        let Some(note) = notes.into_iter().next() else {
            return Ok(Step::Idle);
        };
        let size = SignedNote::parse(&note)
            .and_then(|signed| Checkpoint::parse_body(&signed.body))
            .map_err(|error| AuditError::Checkpoint {
                size: cursor.checkpoint_size,
                reason: format!("the checkpoint after it does not read: {error}"),
            })?
            .size;
        if size > cursor.entries {
            // Its entries are shipped first, on the next step.
            return Ok(Step::Idle);
        }
        let event = LogEvent {
            schema: LOG_SCHEMA.to_owned(),
            log: "police".to_owned(),
            entries: Vec::new(),
            checkpoint: Some(note),
        };
        if !self.publish(&event, shutdown).await {
            return Ok(Step::Interrupted);
        }
        advance(
            &self.store,
            Shipped {
                checkpoint_size: size,
                ..cursor
            },
        )
        .await?;
        Ok(Step::Shipped)
    }

    async fn publish(&self, event: &LogEvent, shutdown: &mut watch::Receiver<bool>) -> bool {
        let payload = serde_json::to_vec(event).expect("a log event serialises");
        kafka::publish_until_acknowledged(
            &self.producer,
            &self.limits,
            &self.topic,
            Some(LOG_EVENT_KEY.as_bytes()),
            &payload,
            &[("schema", LOG_SCHEMA.as_bytes())],
            shutdown,
        )
        .await
        .is_ok()
    }
}
