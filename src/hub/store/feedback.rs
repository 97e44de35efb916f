//! The hub's side of the police's answers: receipts applied to leads, the agency feedback
//! feed, reconsideration requests, and republishing leads the police never acknowledged.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};

use crate::contract::deadlines::{ClockName, ClockState, Clocks};
use serde_json::{json, Value};

use super::leads::insert_timeline;
use crate::contract::events::{ReceiptEvent, ReceiptStep};
use crate::contract::lead::{Agency, LeadId};
use crate::on_backend;
use crate::shared::audit::{AuditEntry, LedgerAppender};
use crate::shared::outbox::insert_message;
use crate::shared::outbox::OutboxMessage;
use crate::shared::store::{
    column, required, rows_per_statement, tuples, tuples_with, DbJson, DbTime, DbUuid, Store,
    StoreError, Tx,
};

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
        // A delivery to the unit it was forwarded to does not hide the forward.
        "forwarded" => 5,
        "filed" | "not_filed" | "returned" => 6,
        "reconsideration_requested" => 7,
        "reconsidered" => 8,
        // Set by the agency's own report, never by a receipt.
        "supervision_requested" => 9,
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
    ///
    /// The number of statements does not grow with the receipts (up to the bind-parameter
    /// limit of one statement per table): the leads are read at once, the event ids claimed in
    /// one insert, each lead's status, assessment, deadlines and decision time moved along in
    /// memory in receipt order exactly as one receipt after another would, and each table gets
    /// one multi-row write.
    pub async fn apply_receipts(
        &self,
        receipts: &[ReceiptEvent],
        now: DateTime<Utc>,
    ) -> Result<Vec<ReceiptOutcome>, StoreError> {
        let at_now = DbTime::new(now);
        let mut tx = self.begin().await?;
        let mut ids: Vec<LeadId> = receipts.iter().map(|receipt| receipt.lead_id).collect();
        ids.sort();
        ids.dedup();
        let mut leads = receipt_leads(&mut tx, &ids).await?;

        // The lead first: a receipt about an unknown lead must leave no trace, not even its
        // event id (the lead may still be on its way on another hub's relay). Of the others,
        // each event id once: the first time it comes, if it was never applied before.
        let mut outcomes = vec![ReceiptOutcome::AlreadyApplied; receipts.len()];
        let mut candidates: Vec<usize> = Vec::new();
        let mut seen = HashSet::new();
        for (index, receipt) in receipts.iter().enumerate() {
            if !leads.contains_key(&receipt.lead_id) {
                outcomes[index] = ReceiptOutcome::UnknownLead;
            } else if seen.insert(receipt.event_id) {
                candidates.push(index);
            }
        }
        let mut fresh = HashSet::new();
        for chunk in candidates.chunks(rows_per_statement(1)) {
            let sql = format!(
                "INSERT INTO receipts_applied (event_id, applied_at) VALUES {} \
                 ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                tuples_with(chunk.len(), 1, 2, ", $1")
            );
            let applied: Vec<String> = on_backend!(tx.conn(), conn => {
                let mut query = sqlx::query_scalar(&sql).bind(at_now);
                for &index in chunk {
                    query = query.bind(receipts[index].event_id.to_string());
                }
                query.fetch_all(&mut *conn).await?
            });
            fresh.extend(applied);
        }
        let applied: Vec<usize> = candidates
            .into_iter()
            .filter(|&index| fresh.contains(&receipts[index].event_id.to_string()))
            .collect();
        if applied.is_empty() {
            tx.rollback().await?;
            return Ok(outcomes);
        }

        let mut ledger = LedgerAppender::new();
        let mut timeline = Vec::with_capacity(applied.len());
        let mut feedback = Vec::with_capacity(applied.len());
        for &index in &applied {
            outcomes[index] = ReceiptOutcome::Applied;
            let receipt = &receipts[index];
            let lead = leads.get_mut(&receipt.lead_id).expect("known leads only");
            let event = receipt.step.name();
            let at = DbTime::new(receipt.at);
            // The timeline keeps the step's own fields, not the bulky assessment and deadlines
            // (the lead's row holds the current ones).
            let step = serde_json::to_value(&receipt.step).expect("events serialise");
            let mut details = step.as_object().cloned().unwrap_or_default();
            for key in ["event", "assessment", "deadlines"] {
                details.remove(key);
            }
            details.retain(|_, value| !value.is_null());
            // The agency's windows (Decree 310 art 9) run from its receipt of the answer: the
            // moment it reached the agency's feedback, now.
            details.insert("notified_at".into(), json!(at_now.text()));
            timeline.push((receipt, event, at, Value::Object(details)));
            if receipt.revision == lead.current_revision {
                lead.apply(receipt);
            }
            // What the agency reads at /v1/feedback: the receipt without its wire schema.
            let mut body = serde_json::to_value(receipt).expect("events serialise");
            if let Some(object) = body.as_object_mut() {
                object.remove("schema");
            }
            feedback.push((lead.agency.clone(), receipt, event, at, body));
            ledger.append(AuditEntry {
                at: now,
                actor: "hub".into(),
                action: "lead.receipt_applied",
                lead_id: Some(receipt.lead_id),
                revision: Some(receipt.revision),
                details: json!({
                    "event": event,
                    "event_id": receipt.event_id.to_string(),
                    "at": at.text(),
                    "by": receipt.actor,
                }),
            });
        }

        // Rows keep the receipts' order, so timeline and feedback ids ascend as they came.
        for chunk in timeline.chunks(rows_per_statement(7)) {
            let sql = format!(
                "INSERT INTO timeline_events (lead_id, revision, event, at, actor, details) \
                 SELECT column1, column2, column3, column4, column5, column6 FROM (VALUES {}) AS v ORDER BY column7",
                tuples(chunk.len(), 7, 1)
            );
            on_backend!(tx.conn(), conn => {
                let mut query = sqlx::query(&sql);
                for (ordinal, (receipt, event, at, details)) in chunk.iter().enumerate() {
                    query = query
                        .bind(DbUuid::from(receipt.lead_id))
                        .bind(receipt.revision)
                        .bind(*event)
                        .bind(*at)
                        .bind(receipt.actor.as_str())
                        .bind(DbJson(details.clone()))
                        .bind(ordinal as i64);
                }
                query.execute(&mut *conn).await?;
            });
        }
        for chunk in feedback.chunks(rows_per_statement(7)) {
            let sql = format!(
                "INSERT INTO feedback (agency, lead_id, revision, event, at, body) \
                 SELECT column1, column2, column3, column4, column5, column6 FROM (VALUES {}) AS v ORDER BY column7",
                tuples(chunk.len(), 7, 1)
            );
            on_backend!(tx.conn(), conn => {
                let mut query = sqlx::query(&sql);
                for (ordinal, (agency, receipt, event, at, body)) in chunk.iter().enumerate() {
                    query = query
                        .bind(agency.as_str())
                        .bind(DbUuid::from(receipt.lead_id))
                        .bind(receipt.revision)
                        .bind(*event)
                        .bind(*at)
                        .bind(DbJson(body.clone()))
                        .bind(ordinal as i64);
                }
                query.execute(&mut *conn).await?;
            });
        }

        // Each lead a receipt moved, once, in its final state — and only if its current
        // revision is still the one those receipts were about (a revision accepted meanwhile
        // is not overwritten by receipts about the one it replaced).
        let moved: Vec<(&LeadId, &ReceiptLead)> =
            leads.iter().filter(|(_, lead)| lead.moved()).collect();
        for chunk in moved.chunks(rows_per_statement(7)) {
            let sql = format!(
                "UPDATE leads SET status = COALESCE(v.column2, leads.status), \
                        updated_at = COALESCE(v.column3, leads.updated_at), \
                        assessment = COALESCE(v.column4, leads.assessment), \
                        deadlines = COALESCE(v.column5, leads.deadlines), \
                        decided_at = COALESCE(v.column6, leads.decided_at) \
                 FROM (VALUES {}) AS v \
                 WHERE leads.lead_id = v.column1 AND leads.current_revision = v.column7",
                tuples(chunk.len(), 7, 1)
            );
            on_backend!(tx.conn(), conn => {
                let mut query = sqlx::query(&sql);
                for (lead_id, lead) in chunk {
                    query = query
                        .bind(DbUuid::from(**lead_id))
                        .bind(lead.new_status.as_deref())
                        .bind(lead.new_status.as_ref().map(|_| at_now))
                        .bind(lead.assessment.clone().map(DbJson))
                        .bind(lead.deadlines.clone().map(DbJson))
                        .bind(lead.decided_at)
                        .bind(lead.current_revision);
                }
                query.execute(&mut *conn).await?;
            });
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
    /// not filed (or was returned, which art 9 treats alike) and the window — counted by
    /// `clocks` from the agency's receipt of the answer — is open. `message` builds the event
    /// for the lead's topic.
    pub async fn request_reconsideration(
        &self,
        lead_id: LeadId,
        agency: Agency,
        reason: &str,
        now: DateTime<Utc>,
        clocks: &Clocks,
        message: impl Fn(i64) -> OutboxMessage,
    ) -> Result<i64, ReconsiderationError> {
        let mut tx = self.begin().await?;
        let mut ledger = LedgerAppender::new();
        ledger.lock(&mut tx).await.map_err(StoreError::from)?;
        let which = format!("leads row {lead_id}");
        let lead: Option<(String, i64, String)> = on_backend!(tx.conn(), conn => {
            match sqlx::query("SELECT status, current_revision, kind FROM leads WHERE lead_id = $1 AND agency = $2")
                .bind(DbUuid::from(lead_id))
                .bind(agency.as_str())
                .fetch_optional(&mut *conn)
                .await?
            {
                Some(row) => Some((
                    column(&row, "status", &which)?,
                    column(&row, "current_revision", &which)?,
                    column(&row, "kind", &which)?,
                )),
                None => None,
            }
        });
        let (status, revision, kind) = lead.ok_or(ReconsiderationError::NotFound)?;
        if status != "not_filed" && status != "returned" {
            return Err(ReconsiderationError::NotAllowed(format!(
                "reconsideration can be requested only after a not_filed or returned decision; the lead is {status}"
            )));
        }
        let timeline = Store::timeline_in(&mut tx, lead_id).await?;
        let facts = super::clocks::clock_facts(lead_id, &kind, revision, &timeline)?;
        let window = clocks
            .clock_named(&facts, ClockName::ReconsiderationRequest, now)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "lead {lead_id} is {status} but its timeline holds no decision"
                ))
            })?;
        // A window whose end no holiday calendar covers is not known to be closed: the
        // request is taken (its clock shows `no_calendar`).
        if window.state == ClockState::Missed {
            return Err(ReconsiderationError::NotAllowed(format!(
                "the {} window for requesting reconsideration closed at {} (the agency received the decision at {})",
                window.length,
                window.due_at.as_deref().unwrap_or("?"),
                window.starts_at
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

/// A lead as the receipts of one transaction move it: what was stored, and what changes.
struct ReceiptLead {
    agency: String,
    current_revision: i64,
    status: String,
    new_status: Option<String>,
    assessment: Option<Value>,
    deadlines: Option<Value>,
    decided_at: Option<DbTime>,
}

impl ReceiptLead {
    /// A receipt about the lead's current revision: the status only moves forward; the
    /// assessment and deadlines are the police's latest; a decision sets the decision time.
    fn apply(&mut self, receipt: &ReceiptEvent) {
        let event = receipt.step.name();
        let moves_forward =
            matches!((rank(event), rank(&self.status)), (Some(new), Some(old)) if new > old);
        if moves_forward {
            self.status = event.to_owned();
            self.new_status = Some(event.to_owned());
        }
        if let Some(assessment) = receipt.step.assessment().filter(|a| !a.is_null()) {
            self.assessment = Some(assessment.clone());
        }
        if let Some(deadlines) = receipt.step.deadlines().filter(|d| d.is_array()) {
            self.deadlines = Some(deadlines.clone());
        }
        if matches!(
            receipt.step,
            ReceiptStep::Filed(_) | ReceiptStep::NotFiled(_) | ReceiptStep::Returned(_)
        ) {
            self.decided_at = Some(DbTime::new(receipt.at));
        }
    }

    fn moved(&self) -> bool {
        self.new_status.is_some()
            || self.assessment.is_some()
            || self.deadlines.is_some()
            || self.decided_at.is_some()
    }
}

/// The leads receipts are about, as stored, read in one statement per chunk.
async fn receipt_leads(
    tx: &mut Tx,
    ids: &[LeadId],
) -> Result<HashMap<LeadId, ReceiptLead>, StoreError> {
    let mut leads = HashMap::new();
    for chunk in ids.chunks(rows_per_statement(1)) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT lead_id, agency, current_revision, status FROM leads WHERE lead_id IN ({})",
            placeholders.join(", ")
        );
        let rows: Vec<(LeadId, ReceiptLead)> = on_backend!(tx.conn(), conn => {
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(DbUuid::from(*id));
            }
            query
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| -> Result<_, StoreError> {
                    let lead_id: DbUuid = column(row, "lead_id", &"a lead")?;
                    let which = format!("leads row {}", lead_id.0);
                    Ok((
                        lead_id.into(),
                        ReceiptLead {
                            agency: column(row, "agency", &which)?,
                            current_revision: column(row, "current_revision", &which)?,
                            status: column(row, "status", &which)?,
                            new_status: None,
                            assessment: None,
                            deadlines: None,
                            decided_at: None,
                        },
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()?
        });
        leads.extend(rows);
    }
    Ok(leads)
}
