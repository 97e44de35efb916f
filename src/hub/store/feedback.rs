//! The hub's side of the police's answers: receipts applied to leads, the agency feedback
//! feed, reconsideration requests, and republishing leads the police never acknowledged.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::leads::insert_timeline;
use crate::contract::events::{ReceiptEvent, ReceiptStep};
use crate::contract::lead::{Agency, LeadId};
use crate::on_backend;
use crate::shared::audit::{AuditEntry, LedgerAppender};
use crate::shared::outbox::insert_message;
use crate::shared::outbox::OutboxMessage;
use crate::shared::store::{column, required, DbJson, DbTime, DbUuid, Store, StoreError, Tx};

/// The order of lead statuses; a receipt never moves a lead backwards.
///
/// `dead_lettered` (the adapter could not take the lead at all) ranks with
/// `received_by_police`: it follows publication, and a lead the police did receive through
/// another copy is not moved back by it. `publish_failed` is set by the relay, never by a
/// receipt; it ranks with `published` so that a receipt about an earlier copy still applies.
fn rank(status: &str) -> Option<u8> {
    Some(match status {
        "accepted" => 0,
        "published" | "publish_failed" => 1,
        "received_by_police" | "dead_lettered" => 2,
        // No unit could be given the lead (yet): a later delivery to another unit still moves
        // it on to `delivered`, a give-up after a delivery leaves it `delivered`.
        "delivery_given_up" => 3,
        "delivered" => 4,
        "filed" | "not_filed" | "returned" => 5,
        "reconsideration_requested" => 6,
        "reconsidered" => 7,
        _ => return None,
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiptOutcome {
    Applied,
    /// This event id was applied before.
    AlreadyApplied,
    /// The hub knows no such lead.
    UnknownLead,
}

/// Why a reconsideration request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReconsiderationError {
    #[error("no such lead")]
    NotFound,
    #[error("{0}")]
    NotAllowed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ReconsiderationError {
    fn from(error: sqlx::Error) -> Self {
        ReconsiderationError::Store(error.into())
    }
}

impl Store {
    /// Applies one receipt from the police adapter, once per event id.
    pub async fn apply_receipt(
        &self,
        receipt: &ReceiptEvent,
        now: DateTime<Utc>,
    ) -> Result<ReceiptOutcome, StoreError> {
        Ok(self
            .apply_receipts(std::slice::from_ref(receipt), now)
            .await?
            .pop()
            .expect("one outcome per receipt"))
    }

    /// Applies receipts in their order in one transaction, each once per event id, and says
    /// what became of each. A receipt about a lead the hub does not know changes nothing.
    pub async fn apply_receipts(
        &self,
        receipts: &[ReceiptEvent],
        now: DateTime<Utc>,
    ) -> Result<Vec<ReceiptOutcome>, StoreError> {
        let mut tx = self.begin().await?;
        let mut ledger = LedgerAppender::new();
        let mut outcomes = Vec::with_capacity(receipts.len());
        for receipt in receipts {
            outcomes.push(apply_one(&mut tx, &mut ledger, receipt, now).await?);
        }
        if !outcomes.contains(&ReceiptOutcome::Applied) {
            tx.rollback().await?;
            return Ok(outcomes);
        }
        ledger.finish(&mut tx).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// The caller's feedback after `cursor`, oldest first, and the cursor to continue from.
    pub async fn feedback(
        &self,
        agency: Agency,
        cursor: i64,
        limit: i64,
    ) -> Result<(Vec<Value>, i64), StoreError> {
        on_backend!(self.db(), pool => {
            let rows = sqlx::query(
                "SELECT id, body FROM feedback WHERE agency = $1 AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(agency.as_str())
            .bind(cursor)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut next = cursor;
            let mut items = Vec::with_capacity(rows.len());
            for row in &rows {
                next = column(row, "id", &"feedback row")?;
                let body: DbJson = required(row, "body", &format_args!("feedback row {next}"))?;
                items.push(body.0);
            }
            Ok((items, next))
        })
    }

    /// The assessment and deadlines the police sent for the lead, if any.
    pub async fn police_view(
        &self,
        lead_id: LeadId,
    ) -> Result<(Option<Value>, Option<Value>), StoreError> {
        let which = format!("leads row {lead_id}");
        on_backend!(self.db(), pool => {
            let row = sqlx::query("SELECT assessment, deadlines FROM leads WHERE lead_id = $1")
                .bind(DbUuid::from(lead_id))
                .fetch_one(pool)
                .await?;
            let assessment: Option<DbJson> = column(&row, "assessment", &which)?;
            let deadlines: Option<DbJson> = column(&row, "deadlines", &which)?;
            Ok((assessment.map(|json| json.0), deadlines.map(|json| json.0)))
        })
    }

    /// Records the agency's reconsideration request and sends it to the police, if the lead was
    /// not filed and the window is open. `message` builds the event for the lead's topic.
    pub async fn request_reconsideration(
        &self,
        lead_id: LeadId,
        agency: Agency,
        reason: &str,
        now: DateTime<Utc>,
        window_days: i64,
        message: impl Fn(i64) -> OutboxMessage,
    ) -> Result<i64, ReconsiderationError> {
        let mut tx = self.begin().await?;
        let mut ledger = LedgerAppender::new();
        ledger.lock(&mut tx).await.map_err(StoreError::from)?;
        let which = format!("leads row {lead_id}");
        let lead: Option<(String, i64, Option<DbTime>)> = on_backend!(tx.conn(), conn => {
            match sqlx::query("SELECT status, current_revision, decided_at FROM leads WHERE lead_id = $1 AND agency = $2")
                .bind(DbUuid::from(lead_id))
                .bind(agency.as_str())
                .fetch_optional(&mut *conn)
                .await?
            {
                Some(row) => Some((
                    column(&row, "status", &which)?,
                    column(&row, "current_revision", &which)?,
                    column(&row, "decided_at", &which)?,
                )),
                None => None,
            }
        });
        let (status, revision, decided_at) = lead.ok_or(ReconsiderationError::NotFound)?;
        if status != "not_filed" {
            return Err(ReconsiderationError::NotAllowed(format!(
                "reconsideration can be requested only after a not_filed decision; the lead is {status}"
            )));
        }
        // A not_filed lead was decided; a missing decision time is damage, not "just now".
        let decided_at = decided_at
            .ok_or_else(|| StoreError::Corrupt(format!("{which}: decided_at is NULL")))?;
        let closes = decided_at.get() + Duration::days(window_days);
        if now > closes {
            return Err(ReconsiderationError::NotAllowed(format!(
                "the {window_days}-day window for requesting reconsideration closed at {}",
                closes.to_rfc3339()
            )));
        }
        let at = DbTime::new(now);
        on_backend!(tx.conn(), conn => sqlx::query("UPDATE leads SET status = 'reconsideration_requested', updated_at = $1 WHERE lead_id = $2")
            .bind(at)
            .bind(DbUuid::from(lead_id))
            .execute(&mut *conn)
            .await.map(|done| done.rows_affected()))?;
        let actor = format!("agency:{agency}");
        insert_timeline(
            &mut tx,
            lead_id,
            revision,
            "reconsideration_requested",
            at,
            &actor,
            json!({"reason": reason}),
        )
        .await?;
        let outbox = message(revision);
        insert_message(&mut tx, &outbox, lead_id, revision, now).await?;
        ledger.append(AuditEntry {
            at: now,
            actor,
            action: "lead.reconsideration_requested",
            lead_id: Some(lead_id),
            revision: Some(revision),
            details: json!({"reason": reason, "event_id": outbox.event_id}),
        });
        ledger.finish(&mut tx).await.map_err(StoreError::from)?;
        tx.commit().await?;
        Ok(revision)
    }

    /// Publishes again every lead that has had no police receipt for longer than `after`:
    /// the police adapter is idempotent, so a repeat is harmless, and a lost message (a topic
    /// accident, or the embedded broker's retention) is recovered.
    pub async fn republish_unreceipted(
        &self,
        after: Duration,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let cutoff = DbTime::new(now - after);
        // "No message of the lead still waiting" as a scalar subquery, not NOT EXISTS: it is
        // then one probe of `outbox_unpublished_by_lead` per lead, where an anti join planned
        // from stale statistics scans the whole backlog per lead (docs/benchmarks.md).
        let stale: Vec<(LeadId, i64)> = on_backend!(self.db(), pool => {
            sqlx::query(
                "SELECT l.lead_id, l.current_revision FROM leads l \
                 WHERE l.status = 'published' AND l.updated_at < $1 \
                   AND (SELECT MIN(o.id) FROM outbox o WHERE o.lead_id = l.lead_id \
                        AND o.published_at IS NULL AND o.failed_at IS NULL) IS NULL \
                 ORDER BY l.updated_at LIMIT 100",
            )
            .bind(cutoff)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| -> Result<_, StoreError> {
                let lead_id: DbUuid = column(row, "lead_id", &"a published lead")?;
                let which = format!("leads row {}", lead_id.0);
                Ok((lead_id.into(), column(row, "current_revision", &which)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?
        });
        let mut republished = 0;
        for (lead_id, revision) in stale {
            let which = format!("outbox of lead {lead_id}");
            let mut tx = self.begin().await?;
            let last: Option<(String, Vec<u8>, DbJson)> = on_backend!(tx.conn(), conn => {
                match sqlx::query(
                    // A copy Kafka acknowledged, never one it refused for good.
                    "SELECT topic, payload, headers FROM outbox WHERE lead_id = $1 AND revision = $2 \
                     AND published_at IS NOT NULL ORDER BY id DESC LIMIT 1",
                )
                .bind(DbUuid::from(lead_id))
                .bind(revision)
                .fetch_optional(&mut *conn)
                .await?
                {
                    Some(row) => Some((
                        column(&row, "topic", &which)?,
                        column(&row, "payload", &which)?,
                        column(&row, "headers", &which)?,
                    )),
                    None => None,
                }
            });
            let Some((topic, payload, headers)) = last else {
                continue;
            };
            // Only if nothing changed since the SELECT above (another hub may have done it).
            let claimed = on_backend!(tx.conn(), conn => sqlx::query("UPDATE leads SET updated_at = $1 WHERE lead_id = $2 AND status = 'published' AND updated_at < $3")
                .bind(DbTime::new(now))
                .bind(DbUuid::from(lead_id))
                .bind(cutoff)
                .execute(&mut *conn)
                .await.map(|done| done.rows_affected()))?;
            if claimed == 0 {
                tx.rollback().await?;
                continue;
            }
            let message = OutboxMessage {
                event_id: uuid::Uuid::now_v7().to_string(),
                topic,
                payload,
                headers: serde_json::from_value(headers.0)
                    .map_err(|error| StoreError::Corrupt(format!("{which}: headers: {error}")))?,
            };
            insert_message(&mut tx, &message, lead_id, revision, now).await?;
            let mut ledger = LedgerAppender::new();
            ledger
                .append(
                    AuditEntry {
                        at: now,
                        actor: "relay".into(),
                        action: "lead.republished",
                        lead_id: Some(lead_id),
                        revision: Some(revision),
                        details: json!({"reason": "no police receipt", "after_secs": after.num_seconds(), "event_id": message.event_id}),
                    },
                );
            ledger.finish(&mut tx).await.map_err(StoreError::from)?;
            tx.commit().await?;
            republished += 1;
        }
        Ok(republished)
    }
}

/// Applies one receipt within the caller's transaction.
async fn apply_one(
    tx: &mut Tx,
    ledger: &mut LedgerAppender,
    receipt: &ReceiptEvent,
    now: DateTime<Utc>,
) -> Result<ReceiptOutcome, StoreError> {
    let event_id = receipt.event_id.to_string();
    let event = receipt.step.name();
    let lead_id = receipt.lead_id;
    let id = DbUuid::from(lead_id);
    let revision = receipt.revision;
    let at = DbTime::new(receipt.at);
    let which = format!("leads row {lead_id}");
    // The lead first: a receipt about an unknown lead must leave no trace, not even its
    // event id (the lead may still be on its way on another hub's relay).
    let lead: Option<(String, i64, String)> = on_backend!(tx.conn(), conn => {
        match sqlx::query("SELECT agency, current_revision, status FROM leads WHERE lead_id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
        {
            Some(row) => Some((
                column(&row, "agency", &which)?,
                column(&row, "current_revision", &which)?,
                column(&row, "status", &which)?,
            )),
            None => None,
        }
    });
    let Some((agency, current_revision, status)) = lead else {
        return Ok(ReceiptOutcome::UnknownLead);
    };
    let fresh = on_backend!(tx.conn(), conn => sqlx::query("INSERT INTO receipts_applied (event_id, applied_at) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING")
            .bind(&event_id)
            .bind(DbTime::new(now))
            .execute(&mut *conn)
            .await.map(|done| done.rows_affected()))?;
    if fresh == 0 {
        return Ok(ReceiptOutcome::AlreadyApplied);
    }
    let actor = receipt.actor.as_str();

    // The timeline keeps the step's own fields, not the bulky assessment and deadlines
    // (the lead's row holds the current ones).
    let step = serde_json::to_value(&receipt.step).expect("events serialise");
    let mut details = step.as_object().cloned().unwrap_or_default();
    for key in ["event", "assessment", "deadlines"] {
        details.remove(key);
    }
    details.retain(|_, value| !value.is_null());
    insert_timeline(
        tx,
        lead_id,
        revision,
        event,
        at,
        actor,
        Value::Object(details),
    )
    .await?;

    if revision == current_revision {
        let moves_forward =
            matches!((rank(event), rank(&status)), (Some(new), Some(old)) if new > old);
        if moves_forward {
            on_backend!(tx.conn(), conn => sqlx::query("UPDATE leads SET status = $1, updated_at = $2 WHERE lead_id = $3")
                .bind(event)
                .bind(DbTime::new(now))
                .bind(id)
                .execute(&mut *conn)
                .await.map(|done| done.rows_affected()))?;
        }
        if let Some(assessment) = receipt.step.assessment().filter(|a| !a.is_null()) {
            on_backend!(tx.conn(), conn => sqlx::query("UPDATE leads SET assessment = $1 WHERE lead_id = $2")
                .bind(DbJson(assessment.clone()))
                .bind(id)
                .execute(&mut *conn)
                .await.map(|done| done.rows_affected()))?;
        }
        if let Some(deadlines) = receipt.step.deadlines().filter(|d| d.is_array()) {
            on_backend!(tx.conn(), conn => sqlx::query("UPDATE leads SET deadlines = $1 WHERE lead_id = $2")
                .bind(DbJson(deadlines.clone()))
                .bind(id)
                .execute(&mut *conn)
                .await.map(|done| done.rows_affected()))?;
        }
        if matches!(
            receipt.step,
            ReceiptStep::Filed(_) | ReceiptStep::NotFiled(_) | ReceiptStep::Returned(_)
        ) {
            on_backend!(tx.conn(), conn => sqlx::query("UPDATE leads SET decided_at = $1 WHERE lead_id = $2")
                .bind(at)
                .bind(id)
                .execute(&mut *conn)
                .await.map(|done| done.rows_affected()))?;
        }
    }
    // What the agency reads at /v1/feedback: the receipt without its wire schema.
    let mut body = serde_json::to_value(receipt).expect("events serialise");
    if let Some(object) = body.as_object_mut() {
        object.remove("schema");
    }
    on_backend!(tx.conn(), conn => sqlx::query("INSERT INTO feedback (agency, lead_id, revision, event, at, body) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&agency)
            .bind(id)
            .bind(revision)
            .bind(event)
            .bind(at)
            .bind(DbJson(body))
            .execute(&mut *conn)
            .await.map(|done| done.rows_affected()))?;
    ledger.append(AuditEntry {
        at: now,
        actor: "hub".into(),
        action: "lead.receipt_applied",
        lead_id: Some(lead_id),
        revision: Some(revision),
        details: json!({"event": event, "event_id": event_id, "at": at.text(), "by": actor}),
    });
    Ok(ReceiptOutcome::Applied)
}
