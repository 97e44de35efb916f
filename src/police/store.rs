//! The adapter's database operations. Each state change commits together with its audit entry
//! and the receipt it owes the hub (an outbox row), so the hub learns of every step exactly as
//! it happened, however the adapter stops. The one step without a receipt is an agency's
//! reconsideration request: it came from the hub, which moved the lead itself.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::penalties;
use super::process::{self, Decision, ForwardTarget, PoliceStatus, TransitionError};
pub use super::routing::Route;
use super::routing::Routed;
use super::rules::PenaltyRecord;
use crate::contract::deadlines::{self, Answer, ClockFacts, Clocks, Outcome};
use crate::contract::lead::{LeadId, LeadKind, LeadType};
use crate::on_backend;
use crate::shared::audit::{AuditEntry, LedgerAppender};
use crate::shared::outbox::{
    insert_message, insert_messages, OutboxActions, OutboxMessage, OutboxOwner,
};
use crate::shared::store::{
    column, required, rows_per_statement, tuples, tuples_with, Backend, DbJson, DbTime, DbUuid,
    Migrations, Store, StoreError, Tx,
};

pub use crate::contract::events::RECEIPT_SCHEMA;
use crate::contract::events::{
    DecisionDetails, ForwardDetails, ReceiptEvent, ReceiptStep, ReconsiderationRequest,
};

/// The adapter's tables, with its own outbox and audit ledger.
pub static MIGRATIONS: Migrations = Migrations {
    postgres: sqlx::migrate!("./migrations/police/postgres"),
    sqlite: sqlx::migrate!("./migrations/police/sqlite"),
};

/// The adapter as the owner of its outbox (receipts and decisions for the hub). It has no
/// state a publication changes and never republishes, so it keeps nothing from pruning.
pub struct PoliceOutbox;

impl OutboxOwner for PoliceOutbox {
    fn name(&self) -> &'static str {
        "police"
    }

    fn actions(&self) -> OutboxActions {
        OutboxActions {
            published: "receipt.published",
            publish_failed: "receipt.publish_failed",
        }
    }
}

/// At most this many claimed deliveries are read back in one statement: far below the bind
/// parameter limits of PostgreSQL (65,535) and SQLite (32,766).
const CLAIM_READ_CHUNK: usize = 1_000;

/// A lead as the adapter takes it from Kafka, assessed.
#[derive(Clone, Debug)]
pub struct IncomingLead {
    pub lead_id: LeadId,
    pub revision: i64,
    pub agency: String,
    pub lead_type: String,
    pub kind: String,
    pub case_id: String,
    pub division_code: String,
    pub summary: String,
    pub document: Value,
    pub content_sha256: String,
    pub assessment: Value,
    pub priority: String,
}

/// A delivery leased to a worker, with what the sink needs.
#[derive(Clone, Debug)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub lead_id: LeadId,
    pub revision: i64,
    pub unit: String,
    pub sink: String,
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    pub document: Value,
    pub assessment: Value,
    pub deadlines: Value,
}

/// Why a decision or a forward was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no lead {0} was delivered to this unit")]
    NotFound(LeadId),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::shared::audit::AuditError> for DecideError {
    fn from(error: crate::shared::audit::AuditError) -> Self {
        DecideError::Store(error.into())
    }
}

impl From<sqlx::Error> for DecideError {
    fn from(error: sqlx::Error) -> Self {
        DecideError::Store(error.into())
    }
}

/// One step of a lead on the police side, as a receipt reports it.
#[derive(Clone, Copy)]
struct Step<'a> {
    lead_id: LeadId,
    revision: i64,
    at: DateTime<Utc>,
    actor: &'a str,
}

/// The adapter's store: a [`Store`] on the police-adapter schema.
#[derive(Clone)]
pub struct PoliceStore {
    store: Store,
    receipts_topic: String,
    clocks: Clocks,
}

impl PoliceStore {
    pub fn new(store: Store, receipts_topic: String, clocks: Clocks) -> Self {
        PoliceStore {
            store,
            receipts_topic,
            clocks,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn clocks(&self) -> &Clocks {
        &self.clocks
    }

    /// The police's clocks of a lead as JSON, with their states at `now`.
    fn clocks_json(&self, facts: &ClockFacts, now: DateTime<Utc>) -> Value {
        deadlines::to_json(&self.clocks.clocks(facts, now))
    }

    /// The outbox message of a receipt.
    fn receipt(&self, event_id: uuid::Uuid, step: Step<'_>, details: ReceiptStep) -> OutboxMessage {
        let event = ReceiptEvent {
            event_id,
            schema: RECEIPT_SCHEMA.to_owned(),
            lead_id: step.lead_id,
            revision: step.revision,
            at: step.at,
            actor: step.actor.to_owned(),
            step: details,
        };
        let event_id = event_id.to_string();
        OutboxMessage {
            event_id: event_id.clone(),
            topic: self.receipts_topic.clone(),
            payload: serde_json::to_vec(&event).expect("events serialise"),
            headers: vec![
                ("event_id".into(), event_id),
                ("schema_id".into(), RECEIPT_SCHEMA.into()),
            ],
        }
    }

    async fn send_receipt(
        &self,
        tx: &mut Tx,
        ledger: &mut LedgerAppender,
        step: Step<'_>,
        details: ReceiptStep,
    ) -> Result<(), StoreError> {
        let Step {
            lead_id,
            revision,
            at,
            ..
        } = step;
        let (message, entries) = self.receipt_with_entry(step, details);
        insert_message(tx, &message, lead_id, revision, at).await?;
        for entry in entries {
            ledger.append(entry);
        }
        Ok(())
    }

    /// A receipt's outbox message and the ledger entries recording its step, under the
    /// supervision contract's action names (§2). Receiving a lead is three handoff events:
    /// its arrival, its assessment against the thresholds, and its routing to units.
    fn receipt_with_entry(
        &self,
        step: Step<'_>,
        details: ReceiptStep,
    ) -> (OutboxMessage, Vec<AuditEntry>) {
        let action = match &details {
            ReceiptStep::ReceivedByPolice { .. } => "lead.received_by_police",
            ReceiptStep::Delivered { .. } => "lead.delivered",
            ReceiptStep::DeliveryGivenUp { .. } => "lead.delivery_failed",
            ReceiptStep::DeadLettered { .. } => "lead.dead_lettered",
            ReceiptStep::Forwarded(_) => "lead.forwarded",
            ReceiptStep::Reconsidered(_) => "lead.reconsideration_answered",
            ReceiptStep::Filed(_) | ReceiptStep::NotFiled(_) | ReceiptStep::Returned(_) => {
                "lead.decided"
            }
        };
        let mut fields = serde_json::to_value(&details).expect("events serialise");
        let message = self.receipt(uuid::Uuid::now_v7(), step, details);
        let entry = |action: &'static str, details: Value| AuditEntry {
            at: step.at,
            actor: step.actor.to_owned(),
            action,
            lead_id: Some(step.lead_id),
            revision: Some(step.revision),
            details,
        };
        let mut entries = Vec::new();
        if let Some(object) = fields.as_object_mut() {
            object.remove("event");
            object.insert("event_id".into(), json!(message.event_id));
            if let Some(assessment) = object.remove("assessment") {
                // The ledger records the assessment's outcome — priority and the rules met —
                // not a bulky copy of it.
                let rules: Vec<Value> = assessment["suspected_offences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|offence| offence["rules"].as_array().cloned().unwrap_or_default())
                    .collect();
                let routed = json!({
                    "event_id": message.event_id,
                    "units": object.remove("units").unwrap_or(Value::Null),
                    "forwarding_task": object.remove("forwarding_task").unwrap_or(Value::Null),
                });
                entries.push(entry(action, fields.clone()));
                entries.push(entry(
                    "lead.assessed",
                    json!({
                        "event_id": message.event_id,
                        "priority": assessment["priority"],
                        "rules": rules,
                    }),
                ));
                entries.push(entry("lead.routed", routed));
                return (message, entries);
            }
        }
        entries.push(entry(action, fields));
        (message, entries)
    }

    /// Records a lead taken from Kafka, its deliveries and its `received_by_police` receipt.
    /// Returns false, changing nothing, when this (lead, revision) was recorded before.
    pub async fn record_lead(
        &self,
        lead: &IncomingLead,
        routed: &Routed,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let recorded = self
            .record_leads(&[(lead.clone(), routed.clone())], now)
            .await?;
        Ok(recorded[0])
    }

    /// Records a batch of leads taken from Kafka, in their order, in one transaction: each
    /// lead with its deliveries and its `received_by_police` receipt, exactly as
    /// [`record_lead`](Self::record_lead) would one by one. Returns, per lead, whether it was
    /// recorded now (false: this (lead, revision) was recorded before, or earlier in the
    /// batch). Either the whole batch commits or nothing does.
    ///
    /// The number of statements does not grow with the batch (up to the bind-parameter limit
    /// of one statement per table): the batch's (lead, revision) pairs already stored are read
    /// at once, what each lead's revisions supersede is resolved in memory in batch order, and
    /// each table gets one multi-row write.
    pub async fn record_leads(
        &self,
        leads: &[(IncomingLead, Routed)],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, StoreError> {
        let at = DbTime::new(now);
        let mut tx = self.store.begin().await?;
        let mut pairs: Vec<(LeadId, i64)> = leads
            .iter()
            .map(|(lead, _)| (lead.lead_id, lead.revision))
            .collect();
        pairs.sort();
        pairs.dedup();
        let stored = stored_revisions(&mut tx, &pairs).await?;

        // The first occurrence of each pair not stored yet is new, in batch order.
        let mut recorded = vec![false; leads.len()];
        let mut seen = HashSet::new();
        for (index, (lead, _)) in leads.iter().enumerate() {
            let pair = (lead.lead_id, lead.revision);
            recorded[index] = !stored.contains(&pair) && seen.insert(pair);
        }
        let new: Vec<usize> = (0..leads.len()).filter(|&i| recorded[i]).collect();
        if new.is_empty() {
            tx.rollback().await?;
            return Ok(recorded);
        }

        // One by one, each new revision supersedes the undecided older ones stored before it:
        // a new row is stored superseded when a later new row of its lead is newer, and the
        // rows stored before the batch are superseded by their lead's newest new revision.
        let mut newest_later: HashMap<LeadId, i64> = HashMap::new();
        let mut superseded = vec![false; leads.len()];
        for &index in new.iter().rev() {
            let lead = &leads[index].0;
            let newest = newest_later.entry(lead.lead_id).or_insert(lead.revision);
            superseded[index] = *newest > lead.revision;
            *newest = (*newest).max(lead.revision);
        }
        let newest: Vec<(LeadId, i64)> = newest_later.into_iter().collect();
        for chunk in newest.chunks(rows_per_statement(2)) {
            let sql = format!(
                "UPDATE police_leads SET status = 'superseded' \
                 WHERE status IN ('received', 'delivered') AND EXISTS (SELECT 1 FROM (VALUES {}) AS v \
                       WHERE v.column1 = police_leads.lead_id AND police_leads.revision < v.column2)",
                tuples(chunk.len(), 2, 1)
            );
            on_backend!(tx.conn(), conn => {
                let mut query = sqlx::query(&sql);
                for (lead_id, revision) in chunk {
                    query = query.bind(DbUuid::from(*lead_id)).bind(*revision);
                }
                query.execute(&mut *conn).await?;
            });
        }

        // The leads; RETURNING says which this transaction stored (a concurrent adapter may
        // have stored one since the read above: it is then not ours to deliver or announce).
        let mut inserted = HashSet::new();
        // Each lead's holder is routing's first unit, since now; a lead no unit covers is the
        // fallback unit's forwarding task from now (Decree 310 art 7).
        for chunk in new.chunks(rows_per_statement(15)) {
            let sql = format!(
                "INSERT INTO police_leads (lead_id, revision, agency, lead_type, kind, case_id, division_code, summary, \
                     document, content_sha256, assessment, priority, status, assigned_unit, forwarding_since, \
                     received_at, assigned_at) \
                 VALUES {} ON CONFLICT (lead_id, revision) DO NOTHING RETURNING lead_id, revision",
                tuples_with(chunk.len(), 15, 2, ", $1, $1")
            );
            let rows: Vec<(LeadId, i64)> = on_backend!(tx.conn(), conn => {
                let mut query = sqlx::query(&sql).bind(at);
                for &index in chunk {
                    let (lead, routed) = &leads[index];
                    query = query
                        .bind(DbUuid::from(lead.lead_id))
                        .bind(lead.revision)
                        .bind(&lead.agency)
                        .bind(&lead.lead_type)
                        .bind(&lead.kind)
                        .bind(&lead.case_id)
                        .bind(&lead.division_code)
                        .bind(&lead.summary)
                        .bind(lead.document.to_string())
                        .bind(&lead.content_sha256)
                        .bind(DbJson(lead.assessment.clone()))
                        .bind(&lead.priority)
                        .bind(if superseded[index] { "superseded" } else { "received" })
                        .bind(routed.holder())
                        .bind(routed.forwarding_task.then_some(at));
                }
                query
                    .fetch_all(&mut *conn)
                    .await?
                    .iter()
                    .map(lead_and_revision)
                    .collect::<Result<Vec<_>, StoreError>>()?
            });
            inserted.extend(rows);
        }
        let mut ours = Vec::with_capacity(new.len());
        for index in new {
            let lead = &leads[index].0;
            if inserted.contains(&(lead.lead_id, lead.revision)) {
                ours.push(index);
            } else {
                recorded[index] = false;
            }
        }
        if ours.is_empty() {
            tx.rollback().await?;
            return Ok(recorded);
        }

        // Their deliveries, in batch order: ids ascend as one by one, so a unit is handed a
        // lead's revisions in order.
        let deliveries: Vec<(LeadId, i64, &str, &str)> = ours
            .iter()
            .flat_map(|&index| {
                let (lead, routed) = &leads[index];
                routed
                    .routes
                    .iter()
                    .map(|route| (lead.lead_id, lead.revision, route.unit.as_str(), route.sink))
            })
            .collect();
        for chunk in deliveries.chunks(rows_per_statement(5)) {
            let sql = format!(
                "INSERT INTO police_deliveries (lead_id, revision, unit, sink, created_at, next_attempt_at) \
                 SELECT column1, column2, column3, column4, $1, $1 FROM (VALUES {}) AS v ORDER BY column5",
                tuples(chunk.len(), 5, 2)
            );
            on_backend!(tx.conn(), conn => {
                let mut query = sqlx::query(&sql).bind(at);
                for (ordinal, (lead_id, revision, unit, sink)) in chunk.iter().enumerate() {
                    query = query
                        .bind(DbUuid::from(*lead_id))
                        .bind(*revision)
                        .bind(*unit)
                        .bind(*sink)
                        .bind(ordinal as i64);
                }
                query.execute(&mut *conn).await?;
            });
        }

        // One `received_by_police` receipt each, in batch order, and their ledger entries.
        let mut ledger = LedgerAppender::new();
        let mut messages = Vec::with_capacity(ours.len());
        for &index in &ours {
            let (lead, routed) = &leads[index];
            let facts = ClockFacts {
                kind: lead.kind.parse().ok(),
                police_received_at: Some(now),
                forwarding_since: routed.forwarding_task.then_some(now),
                ..Default::default()
            };
            let (message, entries) = self.receipt_with_entry(
                Step {
                    lead_id: lead.lead_id,
                    revision: lead.revision,
                    at: now,
                    actor: "police-adapter",
                },
                ReceiptStep::ReceivedByPolice {
                    units: routed
                        .routes
                        .iter()
                        .map(|route| route.unit.clone())
                        .collect(),
                    assessment: lead.assessment.clone(),
                    deadlines: self.clocks_json(&facts, now),
                    forwarding_task: routed.forwarding_task.then(|| routed.holder().to_owned()),
                },
            );
            messages.push((message, lead.lead_id, lead.revision));
            for entry in entries {
                ledger.append(entry);
            }
        }
        insert_messages(&mut tx, &messages, now).await?;
        ledger.finish(&mut tx).await?;
        index_penalty_subjects(&mut tx, ours.iter().map(|&index| &leads[index].0)).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// The penalty cases on record, at their latest revision, that name one of `subjects`
    /// (`penalties::subject_keys`), each with the subjects of that list it names. A stored
    /// penalty lead whose document or penalty block does not read back is an error naming its
    /// row, never skipped.
    pub async fn penalties_naming(
        &self,
        subjects: &[String],
    ) -> Result<Vec<penalties::NamedPenalty>, StoreError> {
        let mut found: HashMap<(LeadId, i64), penalties::NamedPenalty> = HashMap::new();
        for chunk in subjects.chunks(rows_per_statement(1)) {
            let sql = format!(
                "SELECT p.subject, l.lead_id, l.revision, l.agency, l.case_id, l.lead_type, l.kind, l.document \
                 FROM police_penalty_subjects p \
                 JOIN police_leads l ON l.lead_id = p.lead_id AND l.revision = p.revision \
                 WHERE p.subject IN ({}) \
                   AND l.revision = (SELECT MAX(m.revision) FROM police_leads m WHERE m.lead_id = l.lead_id)",
                (1..=chunk.len()).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
            );
            on_backend!(self.store.db(), pool => {
                let mut query = sqlx::query(&sql);
                for subject in chunk {
                    query = query.bind(subject);
                }
                for row in query.fetch_all(pool).await? {
                    let which = LeadRow::of(&row);
                    let subject: String = required(&row, "subject", &which)?;
                    let (lead_id, revision) = lead_and_revision(&row)?;
                    if let Some((_, named)) = found.get_mut(&(lead_id, revision)) {
                        named.push(subject);
                        continue;
                    }
                    let record = penalty_row(&row, &which, lead_id, revision)?;
                    found.insert((lead_id, revision), (record, vec![subject]));
                }
            });
        }
        let mut records: Vec<penalties::NamedPenalty> = found.into_values().collect();
        records.sort_by_key(|(record, _)| (record.decided_at, record.lead_id));
        Ok(records)
    }

    /// Owes the hub a `dead_lettered` receipt for a consumed message that was dead-lettered
    /// (it could not be processed or stored): ids, error class and message only, nothing of
    /// the lead. The receipt's event id derives from the message's coordinates, so a
    /// redelivered message records nothing more; returns false then.
    pub async fn record_dead_letter(
        &self,
        lead_id: LeadId,
        revision: i64,
        class: &str,
        error: &str,
        source: &DeadLetterSource<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let event_id = dead_letter_event_id(source);
        let mut tx = self.store.begin().await?;
        let known: Option<i64> = on_backend!(tx.conn(), conn => sqlx::query_scalar("SELECT id FROM outbox WHERE event_id = $1")
            .bind(event_id.to_string())
            .fetch_optional(&mut *conn)
            .await)?;
        if known.is_some() {
            tx.rollback().await?;
            return Ok(false);
        }
        // An error message may quote what it refused; keep it short and printable.
        let error: String = error
            .chars()
            .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
            .take(500)
            .collect();
        let actor = "police-adapter";
        let step = ReceiptStep::DeadLettered {
            error_class: class.to_owned(),
            error,
            source_topic: source.topic.to_owned(),
            source_partition: source.partition,
            source_offset: source.offset,
        };
        let mut fields = serde_json::to_value(&step).expect("events serialise");
        if let Some(object) = fields.as_object_mut() {
            object.remove("event");
        }
        let message = self.receipt(
            event_id,
            Step {
                lead_id,
                revision,
                at: now,
                actor,
            },
            step,
        );
        insert_message(&mut tx, &message, lead_id, revision, now).await?;
        let mut details = fields;
        details["event_id"] = json!(message.event_id);
        let mut ledger = LedgerAppender::new();
        ledger.append(AuditEntry {
            at: now,
            actor: actor.to_owned(),
            action: "lead.dead_lettered",
            lead_id: Some(lead_id),
            revision: Some(revision),
            details,
        });
        ledger.finish(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records the agency's reconsideration request of a non-filing or a return (Decree 310
    /// art 9 treats a return as a non-filing). Returns false when the lead is not (or no
    /// longer) awaiting it, e.g. on a repeated event.
    pub async fn record_reconsideration_request(
        &self,
        request: &ReconsiderationRequest,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.store.begin().await?;
        let updated = on_backend!(tx.conn(), conn => sqlx::query(
            "UPDATE police_leads SET status = 'reconsideration_requested', reconsideration_reason = $1, \
                    reconsideration_requested_at = $2 \
             WHERE lead_id = $3 AND revision = $4 AND status IN ('not_filed', 'returned')",
        )
        .bind(&request.reason)
        .bind(DbTime::new(request.requested_at))
        .bind(DbUuid::from(request.lead_id))
        .bind(request.revision)
        .execute(&mut *conn)
        .await
        .map(|done| done.rows_affected()))?;
        if updated == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        // The police reconsideration clock starts here (Decree 310 art. 9): the request's
        // arrival is on the adapter's ledger like every other step of the lead.
        let mut ledger = LedgerAppender::new();
        ledger.append(AuditEntry {
            at: now,
            actor: format!("agency:{}", request.agency.as_str()),
            action: "lead.reconsideration_requested",
            lead_id: Some(request.lead_id),
            revision: Some(request.revision),
            details: json!({
                "event_id": request.event_id,
                "requested_at": request.requested_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "reason": request.reason,
            }),
        });
        ledger.finish(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Leases up to `limit` due deliveries. A delivery waits while an earlier one of the same
    /// lead to the same unit is undelivered, so a unit receives a lead's revisions in order.
    pub async fn claim_deliveries(
        &self,
        worker: &str,
        limit: i64,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let sql = delivery_claim_statement(self.store.dialect());
        let ids: Vec<i64> = on_backend!(self.store.db(), pool => sqlx::query_scalar(&sql)
            .bind(worker)
            .bind(DbTime::new(lease_until))
            .bind(DbTime::new(now))
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        // What the sinks need of every claimed delivery, read in one statement per chunk of
        // ids rather than one per delivery; a chunk keeps within both databases' limits on
        // bind parameters, whatever the batch size.
        let mut claimed = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CLAIM_READ_CHUNK) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT d.id, d.lead_id, d.revision, d.unit, d.sink, d.attempts, d.created_at, \
                        l.document, l.assessment, {CLOCK_COLUMNS} \
                 FROM police_deliveries d JOIN police_leads l ON l.lead_id = d.lead_id AND l.revision = d.revision \
                 WHERE d.id IN ({})",
                placeholders.join(", ")
            );
            let read: Vec<(i64, Result<ClaimedDelivery, StoreError>)> = on_backend!(self.store.db(), pool => {
                let mut query = sqlx::query(&sql);
                for id in chunk {
                    query = query.bind(*id);
                }
                query
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|row| -> Result<_, StoreError> {
                        let id: i64 = column(row, "id", &"a claimed delivery")?;
                        Ok((id, self.claimed_delivery(id, row)))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?
            });
            for (id, delivery) in read {
                match delivery {
                    Ok(delivery) => claimed.push(delivery),
                    // A damaged row would come first in every claim and fail every round:
                    // it is set aside, visibly, and the others go on.
                    Err(StoreError::Corrupt(detail)) => {
                        self.set_aside_corrupt_delivery(id, &detail, now).await?
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        claimed.sort_by_key(|d| d.id);
        Ok(claimed)
    }

    /// A claimed delivery from its row joined to its lead.
    fn claimed_delivery<R: Row>(&self, id: i64, row: &R) -> Result<ClaimedDelivery, StoreError>
    where
        for<'n> &'n str: ColumnIndex<R>,
        DbUuid: for<'r> Decode<'r, R::Database> + Type<R::Database>,
        DbTime: for<'r> Decode<'r, R::Database> + Type<R::Database>,
        DbJson: for<'r> Decode<'r, R::Database> + Type<R::Database>,
        i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
        String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    {
        let which = LeadRow::of(row);
        let created_at: DbTime = required(row, "created_at", &which)?;
        let assessment: DbJson = required(row, "assessment", &which)?;
        Ok(ClaimedDelivery {
            id,
            lead_id: column::<R, DbUuid>(row, "lead_id", &which)?.into(),
            revision: column(row, "revision", &which)?,
            unit: column(row, "unit", &which)?,
            sink: column(row, "sink", &which)?,
            attempts: column(row, "attempts", &which)?,
            created_at: created_at.get(),
            document: document_column(row, &which)?,
            assessment: assessment.0,
            deadlines: self.clocks_json(&clock_facts(row)?, Utc::now()),
        })
    }

    /// Takes a delivery whose stored lead does not read back out of the claims: marked dead
    /// with the reason in `last_error`, logged as an error for an operator to repair. No
    /// receipt can be built from a row that does not parse.
    async fn set_aside_corrupt_delivery(
        &self,
        id: i64,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        tracing::error!(
            delivery = id,
            detail,
            "A delivery's stored lead does not parse; set aside, not delivered."
        );
        on_backend!(self.store.db(), pool => sqlx::query(
            "UPDATE police_deliveries SET dead_lettered_at = $1, last_error = $2, claimed_by = NULL, claimed_until = NULL \
             WHERE id = $3",
        )
        .bind(DbTime::new(now))
        .bind(format!("stored lead does not parse: {detail}"))
        .bind(id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Marks a delivery done and owes the hub a `delivered` receipt.
    pub async fn mark_delivered(
        &self,
        worker: &str,
        delivery: &ClaimedDelivery,
        cms_ref: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self
            .mark_delivered_all(worker, &[(delivery, cms_ref)], now)
            .await?
            .pop()
            .unwrap_or(false))
    }

    /// Marks deliveries done, each owing the hub a `delivered` receipt, in one transaction of a
    /// few set-based statements per thousand deliveries. Says per delivery whether it was
    /// marked: not when `worker` no longer holds its lease or it was marked before.
    pub async fn mark_delivered_all(
        &self,
        worker: &str,
        done: &[(&ClaimedDelivery, &str)],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, StoreError> {
        let at = DbTime::new(now);
        let mut tx = self.store.begin().await?;
        let mut marked_ids = std::collections::HashSet::new();
        for chunk in done.chunks(MARK_DELIVERED_CHUNK) {
            // 1. The deliveries, each with its own reference; RETURNING says which were ours.
            let mut sql = String::from(
                "UPDATE police_deliveries SET delivered_at = $1, claimed_by = NULL, claimed_until = NULL, \
                 last_error = NULL, cms_ref = CASE id",
            );
            let mut param = 3;
            for _ in chunk {
                sql.push_str(&format!(" WHEN ${} THEN ${}", param, param + 1));
                param += 2;
            }
            let ids: Vec<String> = (0..chunk.len())
                .map(|i| format!("${}", param + i))
                .collect();
            sql.push_str(&format!(
                " END WHERE claimed_by = $2 AND delivered_at IS NULL AND id IN ({}) RETURNING id",
                ids.join(", ")
            ));
            let ours: Vec<i64> = on_backend!(tx.conn(), conn => {
                let mut query = sqlx::query_scalar(&sql).bind(at).bind(worker);
                for (delivery, cms_ref) in chunk {
                    query = query.bind(delivery.id).bind(*cms_ref);
                }
                for (delivery, _) in chunk {
                    query = query.bind(delivery.id);
                }
                query.fetch_all(&mut *conn).await
            })?;
            marked_ids.extend(ours);
        }
        let marked: Vec<bool> = done
            .iter()
            .map(|(delivery, _)| marked_ids.contains(&delivery.id))
            .collect();
        if marked_ids.is_empty() {
            tx.rollback().await?;
            return Ok(marked);
        }
        let delivered: Vec<&(&ClaimedDelivery, &str)> = done
            .iter()
            .zip(&marked)
            .filter_map(|(item, marked)| marked.then_some(item))
            .collect();
        // 2. Their leads, once each: `received` becomes `delivered` at the first delivery.
        let mut leads: Vec<(LeadId, i64)> = delivered
            .iter()
            .map(|(delivery, _)| (delivery.lead_id, delivery.revision))
            .collect();
        leads.sort();
        leads.dedup();
        for chunk in leads.chunks(MARK_DELIVERED_CHUNK) {
            let pairs: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${})", 2 + 2 * i, 3 + 2 * i))
                .collect();
            let sql = format!(
                "UPDATE police_leads SET status = 'delivered', delivered_at = $1 \
                 WHERE status = 'received' AND (lead_id, revision) IN (VALUES {})",
                pairs.join(", ")
            );
            on_backend!(tx.conn(), conn => {
                let mut query = sqlx::query(&sql).bind(at);
                for (lead_id, revision) in chunk {
                    query = query.bind(DbUuid::from(*lead_id)).bind(*revision);
                }
                query.execute(&mut *conn).await.map(|done| done.rows_affected())
            })?;
        }
        // 3. One `delivered` receipt each, in the order given, and their ledger entries.
        let mut ledger = LedgerAppender::new();
        let mut messages = Vec::with_capacity(delivered.len());
        for (delivery, cms_ref) in delivered {
            let (message, entries) = self.receipt_with_entry(
                Step {
                    lead_id: delivery.lead_id,
                    revision: delivery.revision,
                    at: now,
                    actor: "police-adapter",
                },
                ReceiptStep::Delivered {
                    unit: delivery.unit.clone(),
                    sink: delivery.sink.clone(),
                    cms_ref: (*cms_ref).to_owned(),
                },
            );
            messages.push((message, delivery.lead_id, delivery.revision));
            for entry in entries {
                ledger.append(entry);
            }
        }
        insert_messages(&mut tx, &messages, now).await?;
        ledger.finish(&mut tx).await?;
        tx.commit().await?;
        Ok(marked)
    }

    /// Records a failed attempt and when to try again.
    pub async fn delivery_failed(
        &self,
        worker: &str,
        delivery: &ClaimedDelivery,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let error: String = error.chars().take(1000).collect();
        on_backend!(self.store.db(), pool => sqlx::query(
            "UPDATE police_deliveries SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, \
                    claimed_by = NULL, claimed_until = NULL \
             WHERE id = $3 AND claimed_by = $4",
        )
        .bind(&error)
        .bind(DbTime::new(retry_at))
        .bind(delivery.id)
        .bind(worker)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Gives a delivery up (after it was dead-lettered on Kafka); the hub learns of it.
    pub async fn mark_dead_lettered(
        &self,
        worker: &str,
        delivery: &ClaimedDelivery,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // A sink's error may quote what a case-management system answered: printable only,
        // as every text the hub stores must be (PostgreSQL refuses U+0000 in JSON).
        let error: String = error
            .chars()
            .map(|c| {
                if c.is_control() && c != '\n' {
                    '\u{FFFD}'
                } else {
                    c
                }
            })
            .take(1000)
            .collect();
        let error = error.as_str();
        let mut tx = self.store.begin().await?;
        let updated = on_backend!(tx.conn(), conn => sqlx::query(
            "UPDATE police_deliveries SET dead_lettered_at = $1, last_error = $2, claimed_by = NULL, claimed_until = NULL \
             WHERE id = $3 AND claimed_by = $4 AND delivered_at IS NULL",
        )
        .bind(DbTime::new(now))
        .bind(error.chars().take(1000).collect::<String>())
        .bind(delivery.id)
        .bind(worker)
        .execute(&mut *conn)
        .await
        .map(|done| done.rows_affected()))?;
        if updated == 0 {
            tx.rollback().await?;
            return Ok(());
        }
        let mut ledger = LedgerAppender::new();
        self.send_receipt(
            &mut tx,
            &mut ledger,
            Step {
                lead_id: delivery.lead_id,
                revision: delivery.revision,
                at: now,
                actor: "police-adapter",
            },
            ReceiptStep::DeliveryGivenUp {
                unit: delivery.unit.clone(),
                sink: delivery.sink.clone(),
                error: error.to_owned(),
                attempts: Some(delivery.attempts + 1),
            },
        )
        .await?;
        ledger.finish(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Leads `unit` sees, newest delivery first: those delivered to its own inbox and every
    /// lead delivered to a unit below it (`visible`: the unit and the units below it, as
    /// [`Routing::visible_units`](super::routing::Routing::visible_units) says). Each lead
    /// revision appears once however many of those units received it.
    pub async fn inbox(
        &self,
        unit: &str,
        visible: &[String],
        status: Option<&str>,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Value>, StoreError> {
        let below: Vec<&String> = visible.iter().filter(|v| v.as_str() != unit).collect();
        let below_condition = if below.is_empty() {
            String::new()
        } else {
            let placeholders: Vec<String> =
                (0..below.len()).map(|i| format!("${}", 4 + i)).collect();
            format!(" OR d.unit IN ({})", placeholders.join(", "))
        };
        let sql = format!(
            "SELECT l.lead_id, l.revision, l.agency, l.lead_type, l.case_id, l.division_code, l.summary, \
                    l.assessment, l.priority, l.received_at, l.decision, l.assigned_unit, \
                    l.forwarded_from, l.forward_reason, {CLOCK_COLUMNS}, x.delivered_at \
             FROM (SELECT d.lead_id, d.revision, MAX(d.delivered_at) AS delivered_at, MAX(d.id) AS last_id \
                   FROM police_deliveries d \
                   WHERE d.delivered_at IS NOT NULL AND ((d.unit = $1 AND d.sink = 'inbox'){below_condition}) \
                   GROUP BY d.lead_id, d.revision) x \
             JOIN police_leads l ON l.lead_id = x.lead_id AND l.revision = x.revision \
             WHERE ($2 = '' OR l.status = $2) \
             ORDER BY x.delivered_at DESC, x.last_id DESC LIMIT $3"
        );
        on_backend!(self.store.db(), pool => {
            let mut query = sqlx::query(&sql)
                .bind(unit)
                .bind(status.unwrap_or(""))
                .bind(limit);
            for unit in &below {
                query = query.bind(unit.as_str());
            }
            let rows = query.fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    let which = LeadRow::of(row);
                    let lead_id: DbUuid = column(row, "lead_id", &which)?;
                    let received_at: DbTime = required(row, "received_at", &which)?;
                    let delivered_at: Option<DbTime> = column(row, "delivered_at", &which)?;
                    let assessment: DbJson = required(row, "assessment", &which)?;
                    let holding = Holding::of(row, &which)?;
                    Ok(json!({
                        "lead_id": LeadId::from(lead_id),
                        "revision": column::<_, i64>(row, "revision", &which)?,
                        "agency": column::<_, String>(row, "agency", &which)?,
                        "lead_type": column::<_, String>(row, "lead_type", &which)?,
                        "kind": column::<_, String>(row, "kind", &which)?,
                        "case_id": column::<_, String>(row, "case_id", &which)?,
                        "division_code": column::<_, String>(row, "division_code", &which)?,
                        "summary": column::<_, String>(row, "summary", &which)?,
                        "status": column::<_, String>(row, "status", &which)?,
                        "priority": column::<_, String>(row, "priority", &which)?,
                        "received_at": received_at.text(),
                        "delivered_at": delivered_at.map(DbTime::text),
                        "decision": column::<_, Option<String>>(row, "decision", &which)?,
                        "holder": holding.json(),
                        "assessment": assessment.0,
                        "deadlines": self.clocks_json(&clock_facts(row)?, now),
                    }))
                })
                .collect()
        })
    }

    /// The whole lead as delivered to one of the `visible` units (latest revision), recording
    /// the read in the ledger (`access.read`), or the refusal when no visible unit holds it
    /// (`access.denied`).
    pub async fn read_lead(
        &self,
        lead_id: LeadId,
        visible: &[String],
        reader: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Value>, StoreError> {
        let mut tx = self.store.begin().await?;
        let Some(lead) = current_lead(tx.conn(), lead_id, visible).await? else {
            // Another unit's lead (or none) is answered 404, and recorded as the refusal it is.
            let mut ledger = LedgerAppender::new();
            ledger.append(AuditEntry {
                at: now,
                actor: reader.to_owned(),
                action: "access.denied",
                lead_id: Some(lead_id),
                revision: None,
                details: json!({"path": format!("/police/v1/leads/{lead_id}"), "status": 404}),
            });
            ledger.finish(&mut tx).await?;
            tx.commit().await?;
            return Ok(None);
        };
        let view = json!({
            "lead_id": lead_id,
            "revision": lead.revision,
            "status": lead.status,
            "priority": lead.priority,
            "received_at": lead.received_at.text(),
            "holder": lead.holding.json(),
            "decision": lead.decision,
            "decision_reason": lead.decision_reason,
            "police_case_no": lead.police_case_no,
            "reconsideration_reason": lead.reconsideration_reason,
            "assessment": lead.assessment,
            "deadlines": self.clocks_json(&lead.clocks, now),
            "lead": lead.document,
        });
        let mut ledger = LedgerAppender::new();
        ledger.append(AuditEntry {
            at: now,
            actor: reader.to_owned(),
            action: "access.read",
            lead_id: Some(lead_id),
            revision: Some(lead.revision),
            details: json!({
                "path": format!("/police/v1/leads/{lead_id}"),
                "unit": reader.strip_prefix("investigator:").unwrap_or(reader),
            }),
        });
        ledger.finish(&mut tx).await?;
        tx.commit().await?;
        Ok(Some(view))
    }

    /// Applies a decision of `unit` (an investigator of it, `actor`) to the latest revision
    /// delivered to one of the `visible` units, if that unit — or one below it — holds it.
    pub async fn decide(
        &self,
        lead_id: LeadId,
        unit: &str,
        visible: &[String],
        decision: &Decision,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Value, DecideError> {
        let mut tx = self.store.begin().await?;
        // Take the audit head first: it serialises deciders, so two decisions on one lead cannot
        // both read the undecided status.
        let mut ledger = LedgerAppender::new();
        ledger.lock(&mut tx).await.map_err(StoreError::from)?;
        let lead = current_lead(tx.conn(), lead_id, visible)
            .await?
            .ok_or(DecideError::NotFound(lead_id))?;
        let revision = lead.revision;
        let current = lead.police_status(lead_id)?;
        lead.holding.check_held_within(current, visible)?;
        let next = process::decide(current, decision)?;
        let at = DbTime::new(now);
        let id = DbUuid::from(lead_id);
        if next == PoliceStatus::Reconsidered {
            on_backend!(tx.conn(), conn => sqlx::query(
                "UPDATE police_leads SET status = 'reconsidered', decision = $1, decision_reason = $2, police_case_no = $3, \
                        reconsidered_at = $4, decided_by = $5 WHERE lead_id = $6 AND revision = $7",
            )
            .bind(decision.name())
            .bind(decision.reason())
            .bind(decision.police_case_no())
            .bind(at)
            .bind(actor)
            .bind(id)
            .bind(revision)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected()))?;
        } else {
            on_backend!(tx.conn(), conn => sqlx::query(
                "UPDATE police_leads SET status = $1, decision = $2, decision_reason = $3, police_case_no = $4, \
                        decided_at = $5, decided_by = $6 WHERE lead_id = $7 AND revision = $8",
            )
            .bind(next.as_str())
            .bind(decision.name())
            .bind(decision.reason())
            .bind(decision.police_case_no())
            .bind(at)
            .bind(actor)
            .bind(id)
            .bind(revision)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected()))?;
        }
        let clocks = self.stored_clock_facts(&mut tx, lead_id, revision).await?;
        let deadlines = self.clocks_json(&clocks, now);
        let details = DecisionDetails {
            unit: unit.to_owned(),
            decision: decision.name().to_owned(),
            reason: decision.reason().map(str::to_owned),
            police_case_no: decision.police_case_no().map(str::to_owned),
            deadlines: deadlines.clone(),
        };
        let step = if next == PoliceStatus::Reconsidered {
            ReceiptStep::Reconsidered(details)
        } else {
            match decision {
                Decision::Filed { .. } => ReceiptStep::Filed(details),
                Decision::NotFiled { .. } => ReceiptStep::NotFiled(details),
                Decision::Returned { .. } => ReceiptStep::Returned(details),
            }
        };
        self.send_receipt(
            &mut tx,
            &mut ledger,
            Step {
                lead_id,
                revision,
                at: now,
                actor,
            },
            step,
        )
        .await?;
        ledger.finish(&mut tx).await?;
        tx.commit().await?;
        Ok(json!({
            "lead_id": lead_id,
            "revision": revision,
            "status": next.as_str(),
            "decision": decision.name(),
            "deadlines": deadlines,
        }))
    }

    /// Forwards an undecided lead that `unit` (or a unit below it) holds to the competent
    /// unit or organ (Decree 310 art 7), owing the hub a `forwarded` receipt, which the agency
    /// reads in its feedback as the notice art 7 requires. A unit of this system (`to` with its
    /// route) then holds the lead and receives it; an organ outside the system ends the
    /// police side here. `to` is a configured unit: the caller checks.
    #[allow(clippy::too_many_arguments)]
    pub async fn forward(
        &self,
        lead_id: LeadId,
        visible: &[String],
        to: &ForwardTarget,
        route: Option<&Route>,
        reason: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Value, DecideError> {
        let mut tx = self.store.begin().await?;
        let mut ledger = LedgerAppender::new();
        ledger.lock(&mut tx).await.map_err(StoreError::from)?;
        let lead = current_lead(tx.conn(), lead_id, visible)
            .await?
            .ok_or(DecideError::NotFound(lead_id))?;
        let revision = lead.revision;
        let current = lead.police_status(lead_id)?;
        lead.holding.check_held_within(current, visible)?;
        process::forwardable(current)?;
        let from = lead
            .holding
            .unit
            .clone()
            .unwrap_or_else(|| actor.trim_start_matches("investigator:").to_owned());
        let at = DbTime::new(now);
        let id = DbUuid::from(lead_id);
        // The unit forwarding it held it since its receipt (or the forward that brought it):
        // that is when its 24 hours began.
        let (to_unit, to_organ, status) = match to {
            ForwardTarget::Unit(unit) => {
                if *unit == from {
                    return Err(TransitionError::ForwardToHolder(from).into());
                }
                (Some(unit.as_str()), None, current.as_str())
            }
            ForwardTarget::Organ(organ) => {
                (None, Some(organ.as_str()), PoliceStatus::Forwarded.as_str())
            }
        };
        on_backend!(tx.conn(), conn => sqlx::query(
            "UPDATE police_leads SET forwarding_since = COALESCE(assigned_at, received_at), forwarded_at = $1, \
                    forwarded_from = $2, forward_reason = $3, forwarded_to_organ = $4, status = $5, \
                    assigned_unit = COALESCE($6, assigned_unit), assigned_at = CASE WHEN $6 IS NULL THEN assigned_at ELSE $1 END \
             WHERE lead_id = $7 AND revision = $8",
        )
        .bind(at)
        .bind(&from)
        .bind(reason)
        .bind(to_organ)
        .bind(status)
        .bind(to_unit)
        .bind(id)
        .bind(revision)
        .execute(&mut *conn)
        .await
        .map(|done| done.rows_affected()))?;
        if let Some(route) = route {
            // A unit that has the lead already (the city unit's copy of a high-priority lead)
            // keeps its delivery.
            on_backend!(tx.conn(), conn => sqlx::query(
                "INSERT INTO police_deliveries (lead_id, revision, unit, sink, created_at, next_attempt_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (lead_id, revision, unit) DO NOTHING",
            )
            .bind(id)
            .bind(revision)
            .bind(&route.unit)
            .bind(route.sink)
            .bind(at)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected()))?;
        }
        let clocks = self.stored_clock_facts(&mut tx, lead_id, revision).await?;
        let deadlines = self.clocks_json(&clocks, now);
        self.send_receipt(
            &mut tx,
            &mut ledger,
            Step {
                lead_id,
                revision,
                at: now,
                actor,
            },
            ReceiptStep::Forwarded(ForwardDetails {
                from_unit: from.clone(),
                to_unit: to_unit.map(str::to_owned),
                to_organ: to_organ.map(str::to_owned),
                reason: reason.to_owned(),
                deadlines: deadlines.clone(),
            }),
        )
        .await?;
        ledger.finish(&mut tx).await?;
        tx.commit().await?;
        Ok(json!({
            "lead_id": lead_id,
            "revision": revision,
            "status": status,
            "from_unit": from,
            "to_unit": to_unit,
            "to_organ": to_organ,
            "deadlines": deadlines,
        }))
    }

    /// The clock facts of a stored lead revision, read inside `tx` (after a change to it).
    async fn stored_clock_facts(
        &self,
        tx: &mut Tx,
        lead_id: LeadId,
        revision: i64,
    ) -> Result<ClockFacts, StoreError> {
        let sql = format!(
            "SELECT l.lead_id, l.revision, {CLOCK_COLUMNS} FROM police_leads l WHERE l.lead_id = $1 AND l.revision = $2"
        );
        on_backend!(tx.conn(), conn => {
            let row = sqlx::query(&sql)
                .bind(DbUuid::from(lead_id))
                .bind(revision)
                .fetch_one(&mut *conn)
                .await?;
            clock_facts(&row)
        })
    }
}

/// Where a dead-lettered message came from.
pub struct DeadLetterSource<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// A UUID (version 8, RFC 9562) from the SHA-256 of a consumed message's coordinates: the
/// same message always owes the same receipt.
fn dead_letter_event_id(source: &DeadLetterSource<'_>) -> uuid::Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!(
        "dead_lettered\n{}\n{}\n{}",
        source.topic, source.partition, source.offset
    ));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Deliveries marked per round of statements: three parameters each, well inside both
/// databases' limits.
const MARK_DELIVERED_CHUNK: usize = 1_000;

/// The delivery claim (`$1` worker, `$2` lease end, `$3` now, `$4` limit); public so that tests
/// can EXPLAIN exactly what the worker runs.
///
/// As in the outbox's claim, a delivery is due only as the oldest undelivered one of its lead
/// to its unit, asked as a scalar subquery — one probe of `police_deliveries_waiting_by_lead`
/// per candidate — not as NOT EXISTS: with the statistics of a table that was small when they
/// were taken (as after any quiet period), PostgreSQL plans the anti join as a scan of every
/// waiting delivery per candidate, and a backlog of 10,000 deliveries was claimed at 300 a
/// second until autoanalyze ran (docs/benchmarks.md).
pub fn delivery_claim_statement(dialect: crate::shared::store::Dialect) -> String {
    let candidates = "SELECT d.id FROM police_deliveries d \
         WHERE d.delivered_at IS NULL AND d.dead_lettered_at IS NULL AND d.next_attempt_at <= $3 \
           AND (d.claimed_until IS NULL OR d.claimed_until < $3) \
           AND d.id = (SELECT MIN(e.id) FROM police_deliveries e \
                       WHERE e.lead_id = d.lead_id AND e.unit = d.unit \
                         AND e.delivered_at IS NULL AND e.dead_lettered_at IS NULL) \
         ORDER BY d.id LIMIT $4";
    let ids = match dialect {
        crate::shared::store::Dialect::Postgres => {
            format!("= ANY(ARRAY({candidates} FOR UPDATE SKIP LOCKED))")
        }
        crate::shared::store::Dialect::Sqlite => format!("IN ({candidates})"),
    };
    format!(
        "UPDATE police_deliveries SET claimed_by = $1, claimed_until = $2 WHERE id {ids} RETURNING id"
    )
}

/// Which of `pairs` (lead, revision) are stored, read in one statement per chunk.
async fn stored_revisions(
    tx: &mut Tx,
    pairs: &[(LeadId, i64)],
) -> Result<HashSet<(LeadId, i64)>, StoreError> {
    let mut stored = HashSet::new();
    for chunk in pairs.chunks(rows_per_statement(2)) {
        let sql = format!(
            "SELECT lead_id, revision FROM police_leads WHERE (lead_id, revision) IN (VALUES {})",
            tuples(chunk.len(), 2, 1)
        );
        let rows: Vec<(LeadId, i64)> = on_backend!(tx.conn(), conn => {
            let mut query = sqlx::query(&sql);
            for (lead_id, revision) in chunk {
                query = query.bind(DbUuid::from(*lead_id)).bind(*revision);
            }
            query
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(lead_and_revision)
                .collect::<Result<Vec<_>, StoreError>>()?
        });
        stored.extend(rows);
    }
    Ok(stored)
}

/// The (lead, revision) key of a `police_leads` row.
fn lead_and_revision<R: Row>(row: &R) -> Result<(LeadId, i64), StoreError>
where
    for<'n> &'n str: ColumnIndex<R>,
    DbUuid: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    let which = LeadRow::of(row);
    Ok((
        column::<R, DbUuid>(row, "lead_id", &which)?.into(),
        column(row, "revision", &which)?,
    ))
}

/// Names a `police_leads` row (or a row joined to one) in errors about its stored values.
struct LeadRow {
    lead_id: String,
    revision: String,
}

impl LeadRow {
    /// Reads the row's key as plainly as it can: a key that itself does not decode is shown
    /// as `?`, so that the error about the value still names what it can.
    fn of<R: Row>(row: &R) -> LeadRow
    where
        for<'n> &'n str: ColumnIndex<R>,
        DbUuid: for<'r> Decode<'r, R::Database> + Type<R::Database>,
        i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    {
        LeadRow {
            lead_id: row
                .try_get::<DbUuid, _>("lead_id")
                .map_or("?".to_owned(), |id| id.0.to_string()),
            revision: row
                .try_get::<i64, _>("revision")
                .map_or("?".to_owned(), |revision| revision.to_string()),
        }
    }
}

impl std::fmt::Display for LeadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "police_leads row ({}, revision {})",
            self.lead_id, self.revision
        )
    }
}

/// The `police_leads` columns (as `l`) [`clock_facts`] reads, besides `lead_id` and `revision`,
/// which name the row in errors.
const CLOCK_COLUMNS: &str = "l.kind, l.status, l.decision, l.received_at, l.assigned_at, l.forwarding_since, \
     l.forwarded_at, l.forwarded_to_organ, l.decided_at, l.reconsideration_requested_at, l.reconsidered_at";

/// The Decree 310 clock facts of a `police_leads` row (or a row joined to one), as far as the
/// adapter knows them: not the hub's acceptance or the agency's receipt of an answer, so the
/// transfer clock and the agency's windows are the hub's to show.
fn clock_facts<R: Row>(row: &R) -> Result<ClockFacts, StoreError>
where
    for<'n> &'n str: ColumnIndex<R>,
    DbUuid: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    DbTime: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    let which = LeadRow::of(row);
    let time = |name: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(column::<R, Option<DbTime>>(row, name, &which)?.map(DbTime::get))
    };
    let kind_text: String = column(row, "kind", &which)?;
    let kind: LeadKind = kind_text
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("{which}: unknown kind {kind_text:?}")))?;
    let status: String = column(row, "status", &which)?;
    let decision: Option<String> = column(row, "decision", &which)?;
    let outcome = |text: &str| match text {
        "filed" => Ok(Outcome::Filed),
        "not_filed" | "returned" => Ok(Outcome::NotFiled),
        other => Err(StoreError::Corrupt(format!(
            "{which}: unknown decision {other:?}"
        ))),
    };
    let decided_at = time("decided_at")?;
    let requested = time("reconsideration_requested_at")?;
    let reconsidered_at = time("reconsidered_at")?;
    let answer = |outcome, at| Answer {
        outcome,
        at,
        notified_at: None,
    };
    // After a reconsideration the decision columns hold its answer; the first decision was a
    // non-filing (only one can be reconsidered).
    let (first, second) = match (decided_at, reconsidered_at) {
        (Some(decided), Some(reconsidered)) => {
            let again = decision.as_deref().ok_or_else(|| {
                StoreError::Corrupt(format!("{which}: reconsidered without a decision"))
            })?;
            (
                Some(answer(Outcome::NotFiled, decided)),
                Some(answer(outcome(again)?, reconsidered)),
            )
        }
        (Some(decided), None) if requested.is_some() => {
            (Some(answer(Outcome::NotFiled, decided)), None)
        }
        (Some(decided), None) => {
            let first = decision.as_deref().ok_or_else(|| {
                StoreError::Corrupt(format!("{which}: decided_at without a decision"))
            })?;
            (Some(answer(outcome(first)?, decided)), None)
        }
        (None, _) => (None, None),
    };
    let forwarded_out = column::<R, Option<String>>(row, "forwarded_to_organ", &which)?.is_some()
        || status == "forwarded";
    let forwarding_since = time("forwarding_since")?;
    // A unit that held a lead as a forwarding task and decided it itself took it on: its
    // decision ends the task.
    let forwarded_at = time("forwarded_at")?.or(first
        .map(|answer| answer.at)
        .filter(|_| forwarding_since.is_some()));
    Ok(ClockFacts {
        kind: Some(kind),
        forwarding_since,
        forwarded_at,
        police_received_at: if forwarded_out {
            None
        } else {
            time("assigned_at")?.or(time("received_at")?)
        },
        decision: first,
        reconsideration_requested_at: requested,
        reconsidered: second,
        ..Default::default()
    })
}

/// Indexes the subjects of the penalty leads among `leads` (just stored in this transaction).
async fn index_penalty_subjects<'a>(
    tx: &mut Tx,
    leads: impl Iterator<Item = &'a IncomingLead>,
) -> Result<(), StoreError> {
    let rows: Vec<(String, LeadId, i64)> = leads
        .filter(|lead| lead.kind == LeadKind::Penalty.as_str())
        .flat_map(|lead| {
            penalties::subject_keys(&lead.document)
                .into_iter()
                .map(|subject| (subject, lead.lead_id, lead.revision))
        })
        .collect();
    for chunk in rows.chunks(rows_per_statement(3)) {
        let sql = format!(
            "INSERT INTO police_penalty_subjects (subject, lead_id, revision) VALUES {}",
            tuples(chunk.len(), 3, 1)
        );
        on_backend!(tx.conn(), conn => {
            let mut query = sqlx::query(&sql);
            for (subject, lead_id, revision) in chunk {
                query = query.bind(subject).bind(DbUuid::from(*lead_id)).bind(*revision);
            }
            query.execute(&mut *conn).await?;
        });
    }
    Ok(())
}

/// A stored penalty lead as a penalty case on record.
fn penalty_row<R: Row>(
    row: &R,
    which: &LeadRow,
    lead_id: LeadId,
    revision: i64,
) -> Result<PenaltyRecord, StoreError>
where
    for<'n> &'n str: ColumnIndex<R>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    let text = |name: &str| -> Result<String, StoreError> { required(row, name, which) };
    let (agency, case_id) = (text("agency")?, text("case_id")?);
    let lead_type_text = text("lead_type")?;
    let lead_type: LeadType = lead_type_text.parse().map_err(|_| {
        StoreError::Corrupt(format!("{which}: unknown lead type {lead_type_text:?}"))
    })?;
    let kind_text = text("kind")?;
    let kind: LeadKind = kind_text
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("{which}: unknown kind {kind_text:?}")))?;
    let document = document_column(row, which)?;
    penalties::penalty_record(
        lead_id, revision, &agency, &case_id, lead_type, kind, &document,
    )
    .map_err(|problem| StoreError::Corrupt(format!("{which}: {problem}")))?
    .ok_or_else(|| {
        StoreError::Corrupt(format!(
            "{which}: indexed as a penalty but its kind is {kind_text:?}"
        ))
    })
}

/// A lead's stored document: the lead exactly as received, kept as text.
fn document_column<R: Row>(row: &R, which: &LeadRow) -> Result<Value, StoreError>
where
    for<'n> &'n str: ColumnIndex<R>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    let text: String = required(row, "document", which)?;
    serde_json::from_str(&text)
        .map_err(|error| StoreError::Corrupt(format!("{which}: document is not JSON ({error})")))
}

/// Which unit holds a lead and how it got there.
#[derive(Clone, Debug)]
struct Holding {
    /// None for a row recorded before units held leads: every unit it was delivered to acts.
    unit: Option<String>,
    forwarded_at: Option<DbTime>,
    forwarded_from: Option<String>,
    forwarded_to_organ: Option<String>,
    forward_reason: Option<String>,
    /// The unit holds it only to forward it (no unit covers its division).
    forwarding_task: bool,
}

impl Holding {
    fn of<R: Row>(row: &R, which: &LeadRow) -> Result<Holding, StoreError>
    where
        for<'n> &'n str: ColumnIndex<R>,
        DbTime: for<'r> Decode<'r, R::Database> + Type<R::Database>,
        String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    {
        let forwarding_since: Option<DbTime> = column(row, "forwarding_since", which)?;
        let forwarded_at: Option<DbTime> = column(row, "forwarded_at", which)?;
        Ok(Holding {
            unit: column(row, "assigned_unit", which)?,
            forwarding_task: forwarding_since.is_some() && forwarded_at.is_none(),
            forwarded_at,
            forwarded_from: column(row, "forwarded_from", which)?,
            forwarded_to_organ: column(row, "forwarded_to_organ", which)?,
            forward_reason: column(row, "forward_reason", which)?,
        })
    }

    fn json(&self) -> Value {
        json!({
            "unit": self.unit,
            "forwarding_task": self.forwarding_task,
            "forwarded_at": self.forwarded_at.map(DbTime::text),
            "forwarded_from": self.forwarded_from,
            "forwarded_to_organ": self.forwarded_to_organ,
            "forward_reason": self.forward_reason,
        })
    }

    /// A lead forwarded away from the caller's units is no longer theirs to act on: the error
    /// names where it went.
    fn check_held_within(
        &self,
        status: PoliceStatus,
        visible: &[String],
    ) -> Result<(), TransitionError> {
        let at = self.forwarded_at.map_or_else(
            || "an unknown time".to_owned(),
            |at| deadlines::local_text(at.get()),
        );
        if let (PoliceStatus::Forwarded, Some(organ)) = (status, &self.forwarded_to_organ) {
            return Err(TransitionError::ForwardedAway {
                to: organ.clone(),
                at,
            });
        }
        match &self.unit {
            Some(unit) if !visible.contains(unit) => Err(TransitionError::ForwardedAway {
                to: format!("unit {unit}"),
                at,
            }),
            _ => Ok(()),
        }
    }
}

/// The latest revision of a lead as delivered to a unit.
struct CurrentLead {
    revision: i64,
    status: String,
    priority: String,
    received_at: DbTime,
    decision: Option<String>,
    decision_reason: Option<String>,
    police_case_no: Option<String>,
    reconsideration_reason: Option<String>,
    assessment: Value,
    document: Value,
    holding: Holding,
    clocks: ClockFacts,
}

impl CurrentLead {
    fn police_status(&self, lead_id: LeadId) -> Result<PoliceStatus, StoreError> {
        PoliceStatus::parse(&self.status).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "police_leads row ({lead_id}, revision {}): unknown police status {:?}",
                self.revision, self.status
            ))
        })
    }
}

/// The latest revision of `lead_id` delivered to one of the `visible` units, if any.
async fn current_lead(
    conn: Backend<&mut PgConnection, &mut SqliteConnection>,
    lead_id: LeadId,
    visible: &[String],
) -> Result<Option<CurrentLead>, StoreError> {
    if visible.is_empty() {
        return Ok(None);
    }
    let placeholders: Vec<String> = (0..visible.len()).map(|i| format!("${}", 2 + i)).collect();
    let sql = format!(
        "SELECT l.* FROM police_leads l \
         WHERE l.lead_id = $1 AND EXISTS (SELECT 1 FROM police_deliveries d WHERE d.lead_id = l.lead_id \
               AND d.revision = l.revision AND d.unit IN ({}) AND d.delivered_at IS NOT NULL) \
         ORDER BY l.revision DESC LIMIT 1",
        placeholders.join(", ")
    );
    on_backend!(conn, conn => {
        let mut query = sqlx::query(&sql).bind(DbUuid::from(lead_id));
        for unit in visible {
            query = query.bind(unit.as_str());
        }
        let Some(row) = query.fetch_optional(&mut *conn).await? else {
            return Ok(None);
        };
        let which = LeadRow::of(&row);
        let assessment: DbJson = required(&row, "assessment", &which)?;
        Ok(Some(CurrentLead {
            revision: column(&row, "revision", &which)?,
            status: column(&row, "status", &which)?,
            priority: column(&row, "priority", &which)?,
            received_at: required(&row, "received_at", &which)?,
            decision: column(&row, "decision", &which)?,
            decision_reason: column(&row, "decision_reason", &which)?,
            police_case_no: column(&row, "police_case_no", &which)?,
            reconsideration_reason: column(&row, "reconsideration_reason", &which)?,
            assessment: assessment.0,
            document: document_column(&row, &which)?,
            holding: Holding::of(&row, &which)?,
            clocks: clock_facts(&row)?,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_receipt_id_depends_only_on_the_message_coordinates() {
        let source = |offset| DeadLetterSource {
            topic: "lb.leads.environment.v1",
            partition: 0,
            offset,
        };
        let id = dead_letter_event_id(&source(41));
        assert_eq!(id, dead_letter_event_id(&source(41)));
        assert_ne!(id, dead_letter_event_id(&source(42)));
        assert_eq!(id.get_version_num(), 8, "{id}");
    }
}
