//! What the hub's outbox means for its leads: a published lead event moves the lead to
//! `published` with a timeline event saying where Kafka put it; a lead event Kafka refuses
//! for good moves it to `publish_failed`. Other events on a lead's topic (reconsideration
//! requests) are not the lead's publication and leave its status alone.

use chrono::{DateTime, Duration, Utc};
use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::leads::insert_timeline;
use crate::contract::events::LEAD_EVENT_SCHEMA_URN_PREFIX;
use crate::on_backend;
use crate::shared::outbox::{ClaimedMessage, PublishedMessage};
use crate::shared::outbox::{OutboxActions, OutboxOwner};
use crate::shared::store::{DbJson, DbTime, DbUuid, Store, StoreError, Tx};

/// The hub as the owner of its outbox.
pub struct HubOutbox {
    /// A lead with no police receipt this long after publication is published again.
    pub republish_after: Duration,
}

impl OutboxOwner for HubOutbox {
    fn name(&self) -> &'static str {
        "hub"
    }

    fn actions(&self) -> OutboxActions {
        OutboxActions {
            published: "lead.published",
            publish_failed: "lead.publish_failed",
        }
    }

    fn on_published<'a>(
        &'a self,
        tx: &'a mut Tx,
        done: &'a [(&'a ClaimedMessage, &'a PublishedMessage)],
        at: DbTime,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let lead_events: Vec<(&ClaimedMessage, &PublishedMessage)> = done
                .iter()
                .filter(|(message, _)| is_lead_event(message))
                .copied()
                .collect();
            if lead_events.is_empty() {
                return Ok(());
            }
            advance_leads_to_published(tx, &lead_events, at).await
        })
    }

    fn on_failed_permanently<'a>(
        &'a self,
        tx: &'a mut Tx,
        message: &'a ClaimedMessage,
        details: &'a Value,
        at: DbTime,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if is_lead_event(message) {
                let lead_id = DbUuid::from(message.lead_id);
                on_backend!(tx.conn(), conn => {
                    sqlx::query("UPDATE lead_revisions SET status = 'publish_failed' WHERE status = 'accepted' AND lead_id = $1 AND revision = $2")
                        .bind(lead_id)
                        .bind(message.revision)
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("UPDATE leads SET status = 'publish_failed', updated_at = $1 WHERE status = 'accepted' AND lead_id = $2 AND current_revision = $3")
                        .bind(at)
                        .bind(lead_id)
                        .bind(message.revision)
                        .execute(&mut *conn)
                        .await?;
                });
            }
            insert_timeline(
                tx,
                message.lead_id,
                message.revision,
                "publish_failed",
                at,
                "relay",
                details.clone(),
            )
            .await?;
            Ok(())
        })
    }

    fn keep_when_pruning(&self) -> &'static str {
        // The copy `republish_unreceipted` would publish again: the current revision of a lead
        // still `published`. A scalar subquery (one primary-key probe per row), not NOT EXISTS:
        // the anti join stale statistics choose reads every old row for each batch.
        "AND o.revision IS DISTINCT FROM (SELECT l.current_revision FROM leads l \
         WHERE l.lead_id = o.lead_id AND l.status = 'published')"
    }

    fn periodic<'a>(
        &'a self,
        store: &'a Store,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let count = store
                .republish_unreceipted(self.republish_after, now)
                .await?;
            Ok(count as u64)
        })
    }
}

/// Whether the message publishes a lead (rather than another event on its topic, such as a
/// reconsideration request).
fn is_lead_event(message: &ClaimedMessage) -> bool {
    message
        .headers
        .iter()
        .any(|(k, v)| k == "schema_id" && v.starts_with(LEAD_EVENT_SCHEMA_URN_PREFIX))
}

/// Moves published lead events' leads to `published`; each lead's timeline says where Kafka
/// put it.
async fn advance_leads_to_published(
    tx: &mut Tx,
    done: &[(&ClaimedMessage, &PublishedMessage)],
    at: DbTime,
) -> Result<(), StoreError> {
    let pairs = |first: usize| -> String {
        (0..done.len())
            .map(|i| format!("(${}, ${})", first + 2 * i, first + 1 + 2 * i))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut query_revisions = String::from("UPDATE lead_revisions SET status = 'published' WHERE status = 'accepted' AND (lead_id, revision) IN (VALUES ");
    query_revisions.push_str(&pairs(1));
    query_revisions.push(')');
    let mut query_leads = String::from("UPDATE leads SET status = 'published', updated_at = $1 WHERE status = 'accepted' AND (lead_id, current_revision) IN (VALUES ");
    query_leads.push_str(&pairs(2));
    query_leads.push(')');
    // The same (lead, revision) pairs for both; the leads' statement also takes the time.
    on_backend!(tx.conn(), conn => {
        for (sql, time) in [(&query_revisions, None), (&query_leads, Some(at))] {
            let mut query = sqlx::query(sql);
            if let Some(time) = time {
                query = query.bind(time);
            }
            for (message, _) in done {
                query = query
                    .bind(DbUuid::from(message.lead_id))
                    .bind(message.revision);
            }
            query.execute(&mut *conn).await?;
        }
    });

    let time = 3 * done.len() + 1;
    let rows: Vec<String> = (0..done.len())
        .map(|i| {
            let base = 1 + 3 * i;
            format!(
                "(${base}, ${}, 'published', ${time}, 'relay', ${})",
                base + 1,
                base + 2
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO timeline_events (lead_id, revision, event, at, actor, details) VALUES {}",
        rows.join(", ")
    );
    on_backend!(tx.conn(), conn => {
        let mut query = sqlx::query(&sql);
        for (message, coordinates) in done {
            let details = json!({"topic": message.topic, "partition": coordinates.partition, "offset": coordinates.offset});
            query = query
                .bind(DbUuid::from(message.lead_id))
                .bind(message.revision)
                .bind(DbJson(details));
        }
        query.bind(at).execute(&mut *conn).await.map(|done| done.rows_affected())
    })?;
    Ok(())
}
