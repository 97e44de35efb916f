//! The transactional outbox: messages committed with the state they announce, claimed by
//! relays under a lease, and marked published with their Kafka coordinates.
//!
//! Claiming is one short statement: rows are leased to one relay (`claimed_by`,
//! `claimed_until`), under `FOR UPDATE SKIP LOCKED` on PostgreSQL so concurrent relays never
//! take the same row, and SQLite's single writer on the embedded default. No transaction is
//! held while Kafka is contacted. A row is claimable only when no earlier row of the same lead
//! is still unpublished, so the events of one lead are published in order. A relay that dies
//! leaves its lease to expire; the row is then published again (at-least-once; consumers
//! deduplicate on lead id and revision).

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::Row;

use super::leads::insert_timeline;
use super::{db_time, Dialect, Store, StoreError, Tx};
use crate::audit::{AuditEntry, LedgerAppender};
use crate::lead::LeadId;

/// A message to publish, as the ingest side prepares it.
#[derive(Clone, Debug)]
pub struct OutboxMessage {
    pub event_id: String,
    pub topic: String,
    pub payload: Vec<u8>,
    /// Kafka headers, in order.
    pub headers: Vec<(String, String)>,
}

/// A message leased to a relay.
#[derive(Clone, Debug)]
pub struct ClaimedMessage {
    pub id: i64,
    pub event_id: String,
    pub lead_id: LeadId,
    pub revision: i64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// Failed attempts so far.
    pub attempts: i64,
}

/// Where Kafka put a message.
#[derive(Clone, Debug)]
pub struct PublishedMessage {
    pub id: i64,
    pub partition: i32,
    pub offset: i64,
}

pub(super) async fn insert_message(
    tx: &mut Tx,
    message: &OutboxMessage,
    lead_id: LeadId,
    revision: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let at = db_time(now);
    let headers = serde_json::to_string(&message.headers).expect("headers serialise");
    sqlx::query(
        "INSERT INTO outbox (event_id, lead_id, revision, topic, payload, headers, created_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(&message.event_id)
    .bind(lead_id.to_string())
    .bind(revision)
    .bind(&message.topic)
    .bind(message.payload.clone())
    .bind(headers)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Leases up to `limit` due messages to `relay` until `lease_until`, oldest first.
    pub async fn claim_outbox(
        &self,
        relay: &str,
        limit: i64,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        let lock = match self.dialect() {
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET claimed_by = $1, claimed_until = $2 \
             WHERE id IN ( \
                 SELECT o.id FROM outbox o \
                 WHERE o.published_at IS NULL AND o.next_attempt_at <= $3 \
                   AND (o.claimed_until IS NULL OR o.claimed_until < $3) \
                   AND NOT EXISTS (SELECT 1 FROM outbox e \
                                   WHERE e.lead_id = o.lead_id AND e.published_at IS NULL AND e.id < o.id) \
                 ORDER BY o.id LIMIT $4 {lock}) \
             RETURNING id, event_id, lead_id, revision, topic, payload, headers, attempts"
        );
        let rows = sqlx::query(&sql)
            .bind(relay)
            .bind(db_time(lease_until))
            .bind(db_time(now))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        let mut claimed = rows
            .into_iter()
            .map(|row| -> Result<ClaimedMessage, StoreError> {
                let lead_id: String = row.try_get("lead_id")?;
                let headers: String = row.try_get("headers")?;
                Ok(ClaimedMessage {
                    id: row.try_get("id")?,
                    event_id: row.try_get("event_id")?,
                    lead_id: LeadId::parse(&lead_id).ok_or_else(|| {
                        StoreError::Other(sqlx::Error::Protocol(format!(
                            "outbox lead id {lead_id} is not a UUID"
                        )))
                    })?,
                    revision: row.try_get("revision")?,
                    topic: row.try_get("topic")?,
                    payload: row.try_get("payload")?,
                    headers: serde_json::from_str(&headers).unwrap_or_default(),
                    attempts: row.try_get("attempts")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|message| message.id);
        Ok(claimed)
    }

    /// Records where Kafka put each message, advances the leads' status, and appends the
    /// `published` timeline events and audit entries, in one transaction. A message whose
    /// lease `relay` no longer holds, or that is already marked, is left alone.
    pub async fn mark_published(
        &self,
        relay: &str,
        claimed: &[ClaimedMessage],
        published: &[PublishedMessage],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let at = db_time(now);
        let mut tx = self.begin().await?;
        let mut ledger = LedgerAppender::new();
        let mut marked = 0;
        for coordinates in published {
            let Some(message) = claimed.iter().find(|m| m.id == coordinates.id) else {
                continue;
            };
            let updated = sqlx::query(
                "UPDATE outbox SET published_at = $1, kafka_partition = $2, kafka_offset = $3, \
                        claimed_by = NULL, claimed_until = NULL, last_error = NULL \
                 WHERE id = $4 AND claimed_by = $5 AND published_at IS NULL",
            )
            .bind(&at)
            .bind(i64::from(coordinates.partition))
            .bind(coordinates.offset)
            .bind(coordinates.id)
            .bind(relay)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                continue;
            }
            marked += 1;
            let lead_id = message.lead_id.to_string();
            sqlx::query("UPDATE lead_revisions SET status = 'published' WHERE lead_id = $1 AND revision = $2 AND status = 'accepted'")
                .bind(&lead_id)
                .bind(message.revision)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE leads SET status = 'published', updated_at = $1 \
                 WHERE lead_id = $2 AND current_revision = $3 AND status = 'accepted'",
            )
            .bind(&at)
            .bind(&lead_id)
            .bind(message.revision)
            .execute(&mut *tx)
            .await?;
            let details = json!({
                "topic": message.topic,
                "partition": coordinates.partition,
                "offset": coordinates.offset,
            });
            insert_timeline(
                &mut tx,
                message.lead_id,
                message.revision,
                "published",
                &at,
                "relay",
                details.clone(),
            )
            .await?;
            let mut audit_details = details;
            audit_details["event_id"] = json!(message.event_id);
            ledger
                .append(
                    &mut tx,
                    AuditEntry {
                        at: now,
                        actor: "relay".into(),
                        action: "lead.published",
                        lead_id: Some(message.lead_id),
                        revision: Some(message.revision),
                        details: audit_details,
                    },
                )
                .await?;
        }
        ledger.finish(&mut tx).await?;
        tx.commit().await?;
        Ok(marked)
    }

    /// Records a failed attempt and when to try again, and releases the lease.
    pub async fn mark_failed(
        &self,
        relay: &str,
        message: &ClaimedMessage,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let error: String = error.chars().take(1000).collect();
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, \
                    claimed_by = NULL, claimed_until = NULL \
             WHERE id = $3 AND claimed_by = $4 AND published_at IS NULL",
        )
        .bind(error)
        .bind(db_time(retry_at))
        .bind(message.id)
        .bind(relay)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// How many messages wait to be published, and the creation time of the oldest.
    pub async fn outbox_backlog(&self) -> Result<(i64, Option<String>), StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS waiting, MIN(created_at) AS oldest FROM outbox WHERE published_at IS NULL")
            .fetch_one(self.pool())
            .await?;
        Ok((row.try_get("waiting")?, row.try_get("oldest")?))
    }
}
