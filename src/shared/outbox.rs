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
//!
//! A message Kafka refuses for its content (see `relay::PublishError::Permanent`) is marked
//! failed (`failed_at`), which is terminal: it is never claimed again, leaves the backlog, and
//! no longer holds back the later messages of its lead. On the hub its lead moves to
//! `publish_failed` with a timeline event and an audit entry, so the failure stays visible.
//!
//! The claim's cost is bounded by the rows it claims, not by the backlog: each candidate costs
//! one probe of `outbox_unpublished_by_lead`, and the statement's shape (see
//! [`claim_statement`]) keeps that plan even when the statistics were taken while the outbox
//! was empty. Published rows are pruned after the relay's retention
//! ([`Store::prune_outbox`]); waiting and failed rows, and the copy a lead without a police
//! receipt would be republished from, are never pruned.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::json;

use crate::contract::lead::LeadId;
use crate::on_backend;
use crate::shared::audit::{AuditEntry, LedgerAppender};
use crate::shared::store::{column, DbJson, DbTime, DbUuid, Dialect, Store, StoreError, Tx};

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

/// The ledger actions of an outbox's publications and permanent failures.
#[derive(Clone, Copy, Debug)]
pub struct OutboxActions {
    /// E.g. `lead.published`.
    pub published: &'static str,
    /// E.g. `lead.publish_failed`.
    pub publish_failed: &'static str,
}

/// The role whose outbox this is. The outbox leases, marks and prunes rows and writes the
/// ledger entries; what a publication or a permanent failure means for the role's own state
/// (a lead's status and timeline on the hub) the owner adds in the same transaction.
pub trait OutboxOwner: Send + Sync {
    /// Names the outbox in metrics (`outbox="hub"`).
    fn name(&self) -> &'static str;
    fn actions(&self) -> OutboxActions;
    /// Called with the messages this transaction marked published (at `at`).
    fn on_published<'a>(
        &'a self,
        _tx: &'a mut Tx,
        _done: &'a [(&'a ClaimedMessage, &'a PublishedMessage)],
        _at: DbTime,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    /// Called when this transaction marked `message` failed for good; `details` go to the
    /// ledger entry.
    fn on_failed_permanently<'a>(
        &'a self,
        _tx: &'a mut Tx,
        _message: &'a ClaimedMessage,
        _details: &'a serde_json::Value,
        _at: DbTime,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    /// A condition on outbox rows `o` (SQL, starting with `AND`) that published rows must
    /// meet to be pruned: rows the owner may still need are kept.
    fn keep_when_pruning(&self) -> &'static str {
        ""
    }
    /// Work the relay does now and then for the owner (the hub republishes leads without a
    /// police receipt); returns how many messages it queued.
    fn periodic<'a>(
        &'a self,
        _store: &'a Store,
        _now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }
}

/// Inserts one message (see [`insert_messages`]).
pub(crate) async fn insert_message(
    tx: &mut Tx,
    message: &OutboxMessage,
    lead_id: LeadId,
    revision: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    insert_messages(tx, &[(message.clone(), lead_id, revision)], now).await?;
    Ok(())
}

/// Inserts messages in their order in as few statements as the parameter limit allows, and
/// says how many it sent; the rows' ids ascend in the given order, so the relay publishes
/// each lead's messages in it.
pub(crate) async fn insert_messages(
    tx: &mut Tx,
    messages: &[(OutboxMessage, LeadId, i64)],
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut statements = 0;
    const COLUMNS: usize = 7;
    let at = DbTime::new(now);
    for chunk in messages.chunks((crate::shared::store::MAX_BIND_PARAMS - 1) / COLUMNS) {
        let tuples: Vec<String> = (0..chunk.len())
            .map(|row| {
                let first = 2 + row * COLUMNS;
                let params: Vec<String> =
                    (first..first + COLUMNS).map(|n| format!("${n}")).collect();
                format!("({})", params.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO outbox (event_id, lead_id, revision, topic, payload, headers, created_at, next_attempt_at) \
             SELECT column1, column2, column3, column4, column5, column6, $1, $1 FROM (VALUES {}) AS v ORDER BY column7",
            tuples.join(", ")
        );
        on_backend!(tx.conn(), conn => {
            let mut query = sqlx::query(&sql).bind(at);
            for (ordinal, (message, lead_id, revision)) in chunk.iter().enumerate() {
                query = query
                    .bind(message.event_id.as_str())
                    .bind(DbUuid::from(*lead_id))
                    .bind(*revision)
                    .bind(message.topic.as_str())
                    .bind(message.payload.as_slice())
                    .bind(DbJson(json!(message.headers)))
                    .bind(ordinal as i64);
            }
            query.execute(&mut *conn).await.map(|done| done.rows_affected())
        })?;
        statements += 1;
    }
    Ok(statements)
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
        let sql = claim_statement(self.dialect());
        let mut claimed = on_backend!(self.db(), pool => {
            let rows = sqlx::query(&sql)
                .bind(relay)
                .bind(DbTime::new(lease_until))
                .bind(DbTime::new(now))
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| -> Result<ClaimedMessage, StoreError> {
                    let id: i64 = column(row, "id", &"outbox row")?;
                    let which = format!("outbox row {id}");
                    let headers: DbJson = column(row, "headers", &which)?;
                    Ok(ClaimedMessage {
                        id,
                        event_id: column(row, "event_id", &which)?,
                        lead_id: column::<_, DbUuid>(row, "lead_id", &which)?.into(),
                        revision: column(row, "revision", &which)?,
                        topic: column(row, "topic", &which)?,
                        payload: column(row, "payload", &which)?,
                        headers: serde_json::from_value(headers.0).map_err(|error| {
                            StoreError::Corrupt(format!("{which}: headers: {error}"))
                        })?,
                        attempts: column(row, "attempts", &which)?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        claimed.sort_by_key(|message| message.id);
        Ok(claimed)
    }

    /// Records where Kafka put each message, advances the leads' status, and appends the
    /// `published` timeline events and audit entries, in one transaction of a few set-based
    /// statements per hundred messages. A message whose lease `relay` no longer holds, or that
    /// is already marked, is left alone.
    pub async fn mark_published(
        &self,
        owner: &dyn OutboxOwner,
        relay: &str,
        claimed: &[ClaimedMessage],
        published: &[PublishedMessage],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let at = DbTime::new(now);
        let mut tx = self.begin().await?;
        let mut ledger = LedgerAppender::new();
        let mut marked = 0;
        for chunk in published.chunks(MARK_CHUNK) {
            // 1. The outbox rows, each with its own coordinates; RETURNING says which were ours.
            let mut sql = String::from("UPDATE outbox SET published_at = $1, claimed_by = NULL, claimed_until = NULL, last_error = NULL, kafka_partition = CASE id");
            let mut params = 2;
            for _ in chunk {
                sql.push_str(&format!(" WHEN ${} THEN ${}", params, params + 1));
                params += 2;
            }
            sql.push_str(" END, kafka_offset = CASE id");
            for _ in chunk {
                sql.push_str(&format!(" WHEN ${} THEN ${}", params, params + 1));
                params += 2;
            }
            sql.push_str(&format!(
                " END WHERE claimed_by = ${} AND published_at IS NULL AND id IN (",
                params
            ));
            params += 1;
            let ids: Vec<String> = chunk
                .iter()
                .enumerate()
                .map(|(i, _)| format!("${}", params + i))
                .collect();
            sql.push_str(&ids.join(", "));
            sql.push_str(") RETURNING id");
            let ours: std::collections::HashSet<i64> = on_backend!(tx.conn(), conn => {
                let mut query = sqlx::query_scalar(&sql).bind(at);
                for coordinates in chunk {
                    query = query
                        .bind(coordinates.id)
                        .bind(i64::from(coordinates.partition));
                }
                for coordinates in chunk {
                    query = query.bind(coordinates.id).bind(coordinates.offset);
                }
                query = query.bind(relay);
                for coordinates in chunk {
                    query = query.bind(coordinates.id);
                }
                query.fetch_all(&mut *conn).await
            })?
            .into_iter()
            .collect();
            let done: Vec<(&ClaimedMessage, &PublishedMessage)> = chunk
                .iter()
                .filter(|c| ours.contains(&c.id))
                .filter_map(|c| claimed.iter().find(|m| m.id == c.id).map(|m| (m, c)))
                .collect();
            marked += done.len();
            if done.is_empty() {
                continue;
            }
            owner.on_published(&mut tx, &done, at).await?;
            for (message, coordinates) in done {
                ledger.append(AuditEntry {
                    at: now,
                    actor: "relay".into(),
                    action: owner.actions().published,
                    lead_id: Some(message.lead_id),
                    revision: Some(message.revision),
                    details: json!({
                        "topic": message.topic,
                        "partition": coordinates.partition,
                        "offset": coordinates.offset,
                        "event_id": message.event_id,
                        // Which relay instance published it, for whoever traces a message
                        // across scaled-out hubs.
                        "relay": relay,
                    }),
                });
            }
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
        on_backend!(self.db(), pool => sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, \
                    claimed_by = NULL, claimed_until = NULL \
             WHERE id = $3 AND claimed_by = $4 AND published_at IS NULL",
        )
        .bind(&error)
        .bind(DbTime::new(retry_at))
        .bind(message.id)
        .bind(relay)
        .execute(pool)
        .await.map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Marks a message that Kafka can never accept as failed for good, in one transaction with
    /// what makes the failure visible: on the hub, the lead's `publish_failed` status (for a
    /// lead event of its current revision still `accepted`) and timeline event; on both, an
    /// audit entry. Returns false, changing nothing, when `relay` no longer holds the lease.
    pub async fn mark_failed_permanently(
        &self,
        owner: &dyn OutboxOwner,
        relay: &str,
        message: &ClaimedMessage,
        class: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let at = DbTime::new(now);
        let error: String = error.chars().take(1000).collect();
        let mut tx = self.begin().await?;
        let updated = on_backend!(tx.conn(), conn => sqlx::query(
            "UPDATE outbox SET failed_at = $1, attempts = attempts + 1, last_error = $2, \
                    claimed_by = NULL, claimed_until = NULL \
             WHERE id = $3 AND claimed_by = $4 AND published_at IS NULL AND failed_at IS NULL",
        )
        .bind(at)
        .bind(&error)
        .bind(message.id)
        .bind(relay)
        .execute(&mut *conn)
        .await
        .map(|done| done.rows_affected()))?;
        if updated == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let details = json!({
            "error_class": class,
            "error": error,
            "topic": message.topic,
            "event_id": message.event_id,
        });
        owner
            .on_failed_permanently(&mut tx, message, &details, at)
            .await?;
        let mut ledger = LedgerAppender::new();
        ledger.append(AuditEntry {
            at: now,
            actor: "relay".into(),
            action: owner.actions().publish_failed,
            lead_id: Some(message.lead_id),
            revision: Some(message.revision),
            details,
        });
        ledger.finish(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes up to `limit` messages published before `cutoff`, oldest first, and says how
    /// many it deleted. Never a message still waiting or failed for good, and on the hub never
    /// the copy `republish_unreceipted` would publish again: a message of a lead still
    /// `published` (no police receipt yet) at its current revision. What a deleted row held
    /// stays in the audit ledger (`lead.published`: topic, partition, offset, event id) and
    /// the lead itself in `lead_revisions`.
    pub async fn prune_outbox(
        &self,
        owner: &dyn OutboxOwner,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64, StoreError> {
        let needed = owner.keep_when_pruning();
        let candidates = format!(
            "SELECT o.id FROM outbox o \
             WHERE o.published_at IS NOT NULL AND o.published_at < $1 AND o.failed_at IS NULL {needed} \
             ORDER BY o.published_at LIMIT $2"
        );
        // As in the claim: primary-key deletes of ids found through `outbox_published`.
        let sql = match self.dialect() {
            Dialect::Postgres => format!("DELETE FROM outbox WHERE id = ANY(ARRAY({candidates}))"),
            Dialect::Sqlite => format!("DELETE FROM outbox WHERE id IN ({candidates})"),
        };
        let deleted = on_backend!(self.db(), pool => sqlx::query(&sql)
            .bind(DbTime::new(cutoff))
            .bind(limit)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(deleted)
    }

    /// How many messages wait to be published, and the creation time of the oldest. Messages
    /// that failed for good are not waiting.
    pub async fn outbox_backlog(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        on_backend!(self.db(), pool => {
            let row = sqlx::query("SELECT COUNT(*) AS waiting, MIN(created_at) AS oldest FROM outbox WHERE published_at IS NULL AND failed_at IS NULL")
                .fetch_one(pool)
                .await?;
            let oldest: Option<DbTime> = column(&row, "oldest", &"the outbox backlog")?;
            Ok((column(&row, "waiting", &"the outbox backlog")?, oldest.map(DbTime::get)))
        })
    }
}

/// Messages marked per round of statements.
const MARK_CHUNK: usize = 100;

/// The claim's statement (`$1` relay, `$2` lease end, `$3` now, `$4` limit); public so that
/// tests and benchmarks can EXPLAIN exactly what the relay runs.
pub fn claim_statement(dialect: Dialect) -> String {
    // The row is its lead's oldest waiting message: a scalar subquery, which PostgreSQL runs
    // once per candidate as a probe of `outbox_unpublished_by_lead`, whatever the statistics
    // say. The equivalent NOT EXISTS is planned as an anti join, and with the statistics of an
    // empty outbox (as after any idle period) that join scans every waiting row per candidate.
    // `= ANY(ARRAY(..))` likewise fixes the UPDATE to primary-key lookups of the claimed ids
    // instead of a join the planner might cost from stale figures.
    let candidates = "SELECT o.id FROM outbox o \
         WHERE o.published_at IS NULL AND o.failed_at IS NULL AND o.next_attempt_at <= $3 \
           AND (o.claimed_until IS NULL OR o.claimed_until < $3) \
           AND o.id = (SELECT MIN(e.id) FROM outbox e \
                       WHERE e.lead_id = o.lead_id AND e.published_at IS NULL \
                         AND e.failed_at IS NULL) \
         ORDER BY o.id LIMIT $4";
    let ids = match dialect {
        Dialect::Postgres => format!("= ANY(ARRAY({candidates} FOR UPDATE SKIP LOCKED))"),
        Dialect::Sqlite => format!("IN ({candidates})"),
    };
    format!(
        "UPDATE outbox SET claimed_by = $1, claimed_until = $2 WHERE id {ids} \
         RETURNING id, event_id, lead_id, revision, topic, payload, headers, attempts"
    )
}
