//! Leads, their revisions and their timelines.
//!
//! Promise: [`Store::accept_leads`] stores a batch in one transaction with a number of
//! statements that does not grow with the batch (up to 500 leads: about ten), and answers each
//! lead exactly as if the leads had been stored one after another in batch order. Every
//! statement of that transaction is counted in [`super::IngestCounters`].

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::contract::lead::{Agency, LeadId, ValidatedLead};
use crate::on_backend;
use crate::shared::audit::{AuditEntry, AuditError, LedgerAppender};
use crate::shared::outbox::{insert_messages, OutboxMessage};
use crate::shared::store::{
    column, rows_per_statement, tuples, tuples_with, Backend, DbJson, DbTime, DbUuid, Dialect,
    IngestCounters, Store, StoreError, Tx,
};

/// What the store made of a validated lead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acceptance {
    /// A new lead or a new revision: stored with its outbox row and audit entry.
    Accepted {
        lead_id: LeadId,
        revision: i64,
        received_at: DateTime<Utc>,
    },
    /// The same case, revision and content as before: nothing changed.
    Replayed {
        lead_id: LeadId,
        revision: i64,
        received_at: DateTime<Utc>,
    },
    /// The same case and revision with other content, or a revision older than the current one.
    Conflict {
        lead_id: LeadId,
        reason: ConflictReason,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConflictReason {
    /// This revision was received before with different content.
    DifferentContent { revision: i64 },
    /// A higher revision already supersedes this one.
    StaleRevision { revision: i64, current: i64 },
}

/// A lead as one caller may see it.
#[derive(Clone, Debug)]
pub struct LeadView {
    pub lead_id: LeadId,
    pub agency: Agency,
    pub lead_type: String,
    pub kind: String,
    pub case_id: String,
    pub revision: i64,
    pub status: String,
    pub timeline: Vec<TimelineEvent>,
}

#[derive(Clone, Debug)]
pub struct TimelineEvent {
    pub event: String,
    /// `time` as stored text (RFC 3339, UTC, microseconds).
    pub at: String,
    pub time: DateTime<Utc>,
    pub actor: String,
    pub revision: i64,
    /// Extra fields of the event (topic, partition, offset, unit, …).
    pub details: Map<String, Value>,
}

const TIMELINE_OF_LEAD: &str =
    "SELECT event, at, actor, revision, details FROM timeline_events WHERE lead_id = $1 ORDER BY id";

/// A `timeline_events` row.
pub(super) fn timeline_event<R: Row>(lead_id: LeadId, row: &R) -> Result<TimelineEvent, StoreError>
where
    for<'n> &'n str: ColumnIndex<R>,
    DbTime: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    DbJson: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    let which = format!("timeline of lead {lead_id}");
    let details: DbJson = column(row, "details", &which)?;
    let Value::Object(details) = details.0 else {
        return Err(StoreError::Corrupt(format!(
            "{which}: details is not an object"
        )));
    };
    let at: DbTime = column(row, "at", &which)?;
    Ok(TimelineEvent {
        event: column(row, "event", &which)?,
        at: at.text(),
        time: at.get(),
        actor: column(row, "actor", &which)?,
        revision: column(row, "revision", &which)?,
        details,
    })
}

impl TimelineEvent {
    /// The event as the agency API shows it: its fields flattened into one object.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("event".into(), json!(self.event));
        object.insert("at".into(), json!(self.at));
        object.insert("actor".into(), json!(self.actor));
        object.insert("revision".into(), json!(self.revision));
        for (key, value) in &self.details {
            object.insert(key.clone(), value.clone());
        }
        Value::Object(object)
    }
}

/// A lead ready to be stored: validated, with the outbox message that will publish it.
pub struct LeadToStore<'a> {
    pub lead: &'a ValidatedLead,
    /// The id the lead gets if it is new; ignored for a known case.
    pub new_lead_id: LeadId,
    /// Builds the outbox message once the lead's id is known.
    pub message: &'a (dyn Fn(LeadId) -> OutboxMessage + Sync),
}

impl From<AuditError> for StoreError {
    fn from(error: AuditError) -> Self {
        match error {
            AuditError::Store(error) => error,
            other => StoreError::Other(sqlx::Error::Protocol(other.to_string())),
        }
    }
}

impl Store {
    /// Stores the leads in one transaction, as if one after another in order: each with its
    /// timeline events, outbox row and audit entry. Either every acceptance in the returned
    /// list is committed or none is.
    ///
    /// The number of statements does not grow with the batch (up to the bind-parameter limit
    /// of one statement per table): the known cases and their revisions are read at once, the
    /// outcomes are resolved in memory in batch order (so a case sent twice in one batch is
    /// answered exactly as two submissions in a row), and each table gets one multi-row write.
    pub async fn accept_leads(
        &self,
        leads: &[LeadToStore<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<Acceptance>, StoreError> {
        let mut tx = CountedTx {
            tx: self.begin().await?,
            counters: self.ingest_counters(),
        };
        tx.counters.add_statements(1);
        let known = known_cases(&mut tx, self.dialect(), leads).await?;
        let plan = resolve(leads, known, now);
        write_plan(&mut tx, &plan, now).await?;
        let statements = plan.ledger.finish(&mut tx.tx).await?;
        tx.counters.add_statements(statements + 1);
        tx.tx.commit().await?;
        tx.counters.add_commit();
        Ok(plan.outcomes)
    }

    /// The lead with its current revision and whole timeline, if `agency` owns it.
    pub async fn lead_for_agency(
        &self,
        lead_id: LeadId,
        agency: Agency,
    ) -> Result<Option<LeadView>, StoreError> {
        let which = format!("lead {lead_id}");
        on_backend!(self.db(), pool => {
            let Some(row) = sqlx::query(
                "SELECT lead_type, kind, case_id, current_revision, status FROM leads WHERE lead_id = $1 AND agency = $2",
            )
            .bind(DbUuid::from(lead_id))
            .bind(agency.as_str())
            .fetch_optional(pool)
            .await?
            else {
                return Ok(None);
            };
            let timeline = sqlx::query(TIMELINE_OF_LEAD)
                .bind(DbUuid::from(lead_id))
                .fetch_all(pool)
                .await?
                .iter()
                .map(|event| timeline_event(lead_id, event))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(LeadView {
                lead_id,
                agency,
                lead_type: column(&row, "lead_type", &which)?,
                kind: column(&row, "kind", &which)?,
                case_id: column(&row, "case_id", &which)?,
                revision: column(&row, "current_revision", &which)?,
                status: column(&row, "status", &which)?,
                timeline,
            }))
        })
    }

    /// The agency that sent the lead, if the hub knows it. A stored agency that is not one is
    /// an error naming the lead.
    pub async fn lead_agency(&self, lead_id: LeadId) -> Result<Option<Agency>, StoreError> {
        let agency: Option<String> = on_backend!(self.db(), pool => sqlx::query_scalar(
            "SELECT agency FROM leads WHERE lead_id = $1",
        )
        .bind(DbUuid::from(lead_id))
        .fetch_optional(pool)
        .await)?;
        agency
            .map(|text| {
                text.parse().map_err(|_| {
                    StoreError::Corrupt(format!("lead {lead_id}: unknown agency {text:?}"))
                })
            })
            .transpose()
    }

    /// The timeline of a lead inside `tx`, oldest first.
    pub(crate) async fn timeline_in(
        tx: &mut Tx,
        lead_id: LeadId,
    ) -> Result<Vec<TimelineEvent>, StoreError> {
        on_backend!(tx.conn(), conn => sqlx::query(TIMELINE_OF_LEAD)
            .bind(DbUuid::from(lead_id))
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|event| timeline_event(lead_id, event))
            .collect::<Result<Vec<_>, _>>())
    }

    /// The stored document of one revision, exactly as accepted.
    pub async fn lead_document(
        &self,
        lead_id: LeadId,
        revision: i64,
    ) -> Result<Option<Value>, StoreError> {
        let document: Option<String> = on_backend!(self.db(), pool => sqlx::query_scalar(
            "SELECT document FROM lead_revisions WHERE lead_id = $1 AND revision = $2",
        )
        .bind(DbUuid::from(lead_id))
        .bind(revision)
        .fetch_optional(pool)
        .await)?;
        document
            .map(|document| {
                serde_json::from_str(&document).map_err(|error| {
                    StoreError::Corrupt(format!(
                        "stored document of lead {lead_id} revision {revision} does not parse: {error}"
                    ))
                })
            })
            .transpose()
    }
}

/// The ingest transaction; every statement it sends goes through [`CountedTx::conn`], which
/// counts it.
struct CountedTx<'s> {
    tx: Tx,
    counters: &'s IngestCounters,
}

impl CountedTx<'_> {
    fn conn(&mut self) -> Backend<&mut PgConnection, &mut SqliteConnection> {
        self.counters.add_statements(1);
        self.tx.conn()
    }
}

type CaseKey = (Agency, String);

/// A case as it stands at some point of the batch: read from the database first, then moved
/// along by the batch's own revisions.
struct CaseState {
    lead_id: LeadId,
    current: i64,
    /// Content hash and receipt time of the revisions the batch sends that exist so far.
    revisions: HashMap<i64, (String, DateTime<Utc>)>,
}

/// Reads the batch's cases that already exist, with their stored revisions among those the
/// batch sends. On PostgreSQL the lead rows are locked (in id order, so two batches cannot
/// deadlock on them), so a concurrent revision of the same case waits instead of both reading
/// the same current revision.
async fn known_cases(
    tx: &mut CountedTx<'_>,
    dialect: Dialect,
    leads: &[LeadToStore<'_>],
) -> Result<HashMap<CaseKey, CaseState>, StoreError> {
    let mut cases: Vec<CaseKey> = Vec::new();
    let mut seen = HashSet::new();
    for item in leads {
        let key = (item.lead.agency(), item.lead.case_id().as_str().to_owned());
        if seen.insert(key.clone()) {
            cases.push(key);
        }
    }
    let lock = match dialect {
        Dialect::Postgres => " ORDER BY lead_id FOR UPDATE",
        Dialect::Sqlite => "",
    };
    let mut known = HashMap::new();
    for chunk in cases.chunks(rows_per_statement(2)) {
        let sql = format!(
            "SELECT lead_id, agency, case_id, current_revision FROM leads WHERE (agency, case_id) IN ({}){lock}",
            tuples(chunk.len(), 2, 1)
        );
        let rows: Vec<(LeadId, String, String, i64)> = on_backend!(tx.conn(), conn => {
            let mut query = sqlx::query(&sql);
            for (agency, case_id) in chunk {
                query = query.bind(agency.as_str()).bind(case_id.as_str());
            }
            query
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| -> Result<_, StoreError> {
                    let lead_id: DbUuid = column(row, "lead_id", &"a lead")?;
                    let which = format!("lead {}", lead_id.0);
                    Ok((
                        lead_id.into(),
                        column(row, "agency", &which)?,
                        column(row, "case_id", &which)?,
                        column(row, "current_revision", &which)?,
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })?;
        for (lead_id, agency_text, case_id, current) in rows {
            let agency: Agency = agency_text.parse().map_err(|_| {
                StoreError::Corrupt(format!(
                    "lead {lead_id}: agency {agency_text:?} is not an agency"
                ))
            })?;
            known.insert(
                (agency, case_id),
                CaseState {
                    lead_id,
                    current,
                    revisions: HashMap::new(),
                },
            );
        }
    }
    let mut wanted: Vec<(LeadId, i64)> = Vec::new();
    let mut seen = HashSet::new();
    for item in leads {
        let key = (item.lead.agency(), item.lead.case_id().as_str().to_owned());
        if let Some(case) = known.get(&key) {
            let pair = (case.lead_id, item.lead.revision());
            if seen.insert(pair) {
                wanted.push(pair);
            }
        }
    }
    let by_id: HashMap<LeadId, CaseKey> = known
        .iter()
        .map(|(key, case)| (case.lead_id, key.clone()))
        .collect();
    for chunk in wanted.chunks(rows_per_statement(2)) {
        let sql = format!(
            "SELECT lead_id, revision, content_sha256, received_at FROM lead_revisions WHERE (lead_id, revision) IN ({})",
            tuples(chunk.len(), 2, 1)
        );
        let rows: Vec<(LeadId, i64, String, DbTime)> = on_backend!(tx.conn(), conn => {
            let mut query = sqlx::query(&sql);
            for (lead_id, revision) in chunk {
                query = query.bind(DbUuid::from(*lead_id)).bind(*revision);
            }
            query
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| -> Result<_, StoreError> {
                    let lead_id: DbUuid = column(row, "lead_id", &"a lead revision")?;
                    let which = format!("lead_revisions of lead {}", lead_id.0);
                    Ok((
                        lead_id.into(),
                        column(row, "revision", &which)?,
                        column(row, "content_sha256", &which)?,
                        column(row, "received_at", &which)?,
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })?;
        for (lead_id, revision, content_sha256, received_at) in rows {
            let case = by_id
                .get(&lead_id)
                .and_then(|key| known.get_mut(key))
                .expect("revisions are read only for known leads");
            case.revisions
                .insert(revision, (content_sha256, received_at.get()));
        }
    }
    Ok(known)
}

/// The final state of a lead row the batch writes.
struct LeadRow<'a> {
    lead_id: LeadId,
    lead: &'a ValidatedLead,
}

struct RevisionRow<'a> {
    lead_id: LeadId,
    lead: &'a ValidatedLead,
    superseded: bool,
}

struct TimelineRow {
    lead_id: LeadId,
    revision: i64,
    event: &'static str,
    actor: String,
    details: Value,
}

/// Everything the batch writes, in the order the one-by-one version would have written it.
struct Plan<'a> {
    outcomes: Vec<Acceptance>,
    /// New leads and known leads with a new current revision, each once, in final state.
    leads: Vec<LeadRow<'a>>,
    /// Revisions stored before the batch that a revision of the batch supersedes.
    superseded: Vec<(LeadId, i64)>,
    revisions: Vec<RevisionRow<'a>>,
    timeline: Vec<TimelineRow>,
    outbox: Vec<(OutboxMessage, LeadId, i64)>,
    ledger: LedgerAppender,
}

/// Decides every lead of the batch in order: new, revision, exact replay, conflict or stale.
fn resolve<'a>(
    leads: &[LeadToStore<'a>],
    mut cases: HashMap<CaseKey, CaseState>,
    now: DateTime<Utc>,
) -> Plan<'a> {
    let mut plan = Plan {
        outcomes: Vec::with_capacity(leads.len()),
        leads: Vec::new(),
        superseded: Vec::new(),
        revisions: Vec::new(),
        timeline: Vec::new(),
        outbox: Vec::new(),
        ledger: LedgerAppender::new(),
    };
    // Positions in the plan of lead rows and revision rows written by this batch, so a later
    // item can update them in place rather than write twice.
    let mut lead_rows: HashMap<LeadId, usize> = HashMap::new();
    let mut revision_rows: HashMap<(LeadId, i64), usize> = HashMap::new();
    for item in leads {
        let lead = item.lead;
        let revision = lead.revision();
        let key = (lead.agency(), lead.case_id().as_str().to_owned());
        let lead_id = match cases.get_mut(&key) {
            None => {
                let lead_id = item.new_lead_id;
                cases.insert(
                    key,
                    CaseState {
                        lead_id,
                        current: revision,
                        revisions: HashMap::from([(
                            revision,
                            (lead.content_sha256().to_owned(), now),
                        )]),
                    },
                );
                lead_id
            }
            Some(case) => {
                let lead_id = case.lead_id;
                if let Some((hash, received_at)) = case.revisions.get(&revision) {
                    plan.outcomes.push(if hash == lead.content_sha256() {
                        Acceptance::Replayed {
                            lead_id,
                            revision,
                            received_at: *received_at,
                        }
                    } else {
                        Acceptance::Conflict {
                            lead_id,
                            reason: ConflictReason::DifferentContent { revision },
                        }
                    });
                    continue;
                }
                if revision < case.current {
                    plan.outcomes.push(Acceptance::Conflict {
                        lead_id,
                        reason: ConflictReason::StaleRevision {
                            revision,
                            current: case.current,
                        },
                    });
                    continue;
                }
                let previous = case.current;
                match revision_rows.get(&(lead_id, previous)) {
                    Some(&row) => plan.revisions[row].superseded = true,
                    None => plan.superseded.push((lead_id, previous)),
                }
                plan.timeline.push(TimelineRow {
                    lead_id,
                    revision: previous,
                    event: "superseded",
                    actor: "hub".into(),
                    details: json!({"superseded_by": revision}),
                });
                case.current = revision;
                case.revisions
                    .insert(revision, (lead.content_sha256().to_owned(), now));
                lead_id
            }
        };
        match lead_rows.get(&lead_id) {
            Some(&row) => plan.leads[row].lead = lead,
            None => {
                lead_rows.insert(lead_id, plan.leads.len());
                plan.leads.push(LeadRow { lead_id, lead });
            }
        }
        revision_rows.insert((lead_id, revision), plan.revisions.len());
        plan.revisions.push(RevisionRow {
            lead_id,
            lead,
            superseded: false,
        });
        let actor = format!("agency:{}", lead.agency());
        // The kind and approval time start the transfer clock (Decree 310 art 5: 24 hours from
        // the approval to this acceptance).
        let mut received = json!({"kind": lead.kind().as_str()});
        if let Some(approved) = lead.document().pointer("/source/approved_at") {
            received["approved_at"] = approved.clone();
        }
        plan.timeline.push(TimelineRow {
            lead_id,
            revision,
            event: "received",
            actor: actor.clone(),
            details: received,
        });
        let message = (item.message)(lead_id);
        plan.ledger.append(AuditEntry {
            at: now,
            actor,
            action: "lead.received",
            lead_id: Some(lead_id),
            revision: Some(revision),
            details: json!({
                "agency": lead.agency(),
                "case_id": lead.case_id(),
                "lead_type": lead.lead_type().as_str(),
                "kind": lead.kind().as_str(),
                "content_sha256": lead.content_sha256(),
                "event_id": message.event_id,
            }),
        });
        plan.outbox.push((message, lead_id, revision));
        plan.outcomes.push(Acceptance::Accepted {
            lead_id,
            revision,
            received_at: now,
        });
    }
    plan
}

/// Writes the plan: one multi-row statement per table (per chunk under the parameter limit),
/// parents before children. `$1` is the batch's one timestamp, shared by every row.
async fn write_plan(
    tx: &mut CountedTx<'_>,
    plan: &Plan<'_>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let at = DbTime::new(now);
    // A known lead keeps its `created_at` (and everything the police side wrote); the rest
    // takes the batch's final revision, as the one-by-one UPDATE did.
    for chunk in plan.leads.chunks(rows_per_statement(6)) {
        let sql = format!(
            "INSERT INTO leads (lead_id, agency, case_id, lead_type, kind, current_revision, status, created_at, updated_at) \
             VALUES {} \
             ON CONFLICT (lead_id) DO UPDATE SET current_revision = excluded.current_revision, status = excluded.status, \
             lead_type = excluded.lead_type, kind = excluded.kind, updated_at = excluded.updated_at",
            tuples_with(chunk.len(), 6, 2, ", 'accepted', $1, $1")
        );
        on_backend!(tx.conn(), conn => {
            let mut query = sqlx::query(&sql).bind(at);
            for row in chunk {
                query = query
                    .bind(DbUuid::from(row.lead_id))
                    .bind(row.lead.agency().as_str())
                    .bind(row.lead.case_id().as_str())
                    .bind(row.lead.lead_type().as_str())
                    .bind(row.lead.kind().as_str())
                    .bind(row.lead.revision());
            }
            query.execute(&mut *conn).await.map(|done| done.rows_affected())
        })?;
    }
    for chunk in plan.superseded.chunks(rows_per_statement(2)) {
        let sql = format!(
            "UPDATE lead_revisions SET status = 'superseded' WHERE (lead_id, revision) IN ({})",
            tuples(chunk.len(), 2, 1)
        );
        on_backend!(tx.conn(), conn => {
            let mut query = sqlx::query(&sql);
            for (lead_id, revision) in chunk {
                query = query.bind(DbUuid::from(*lead_id)).bind(*revision);
            }
            query.execute(&mut *conn).await.map(|done| done.rows_affected())
        })?;
    }
    for chunk in plan.revisions.chunks(rows_per_statement(5)) {
        let sql = format!(
            "INSERT INTO lead_revisions (lead_id, revision, content_sha256, document, status, received_at) \
             VALUES {}",
            tuples_with(chunk.len(), 5, 2, ", $1")
        );
        on_backend!(tx.conn(), conn => {
            let mut query = sqlx::query(&sql).bind(at);
            for row in chunk {
                query = query
                    .bind(DbUuid::from(row.lead_id))
                    .bind(row.lead.revision())
                    .bind(row.lead.content_sha256())
                    .bind(
                        std::str::from_utf8(row.lead.canonical_bytes())
                            .expect("canonical JSON is UTF-8"),
                    )
                    .bind(if row.superseded {
                        "superseded"
                    } else {
                        "accepted"
                    });
            }
            query.execute(&mut *conn).await.map(|done| done.rows_affected())
        })?;
    }
    // Rows keep the plan's order, so timeline ids (and outbox ids below) ascend as the events
    // happened: readers order timelines by id and the relay publishes a lead's rows by id.
    for chunk in plan.timeline.chunks(rows_per_statement(6)) {
        let sql = format!(
            "INSERT INTO timeline_events (lead_id, revision, event, actor, details, at) \
             SELECT column1, column2, column3, column4, column5, $1 FROM (VALUES {}) AS v ORDER BY column6",
            tuples(chunk.len(), 6, 2)
        );
        on_backend!(tx.conn(), conn => {
            let mut query = sqlx::query(&sql).bind(at);
            for (ordinal, row) in chunk.iter().enumerate() {
                query = query
                    .bind(DbUuid::from(row.lead_id))
                    .bind(row.revision)
                    .bind(row.event)
                    .bind(row.actor.as_str())
                    .bind(DbJson(row.details.clone()))
                    .bind(ordinal as i64);
            }
            query.execute(&mut *conn).await.map(|done| done.rows_affected())
        })?;
    }
    let statements = insert_messages(&mut tx.tx, &plan.outbox, now).await?;
    tx.counters.add_statements(statements as u64);
    Ok(())
}

pub(super) async fn insert_timeline(
    tx: &mut Tx,
    lead_id: LeadId,
    revision: i64,
    event: &str,
    at: DbTime,
    actor: &str,
    details: Value,
) -> Result<(), StoreError> {
    on_backend!(tx.conn(), conn => sqlx::query("INSERT INTO timeline_events (lead_id, revision, event, at, actor, details) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(DbUuid::from(lead_id))
        .bind(revision)
        .bind(event)
        .bind(at)
        .bind(actor)
        .bind(DbJson(details))
        .execute(&mut *conn)
        .await.map(|done| done.rows_affected()))?;
    Ok(())
}
