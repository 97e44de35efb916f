//! Leads, their revisions and their timelines.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use sqlx::Row;

use super::outbox::{insert_message, OutboxMessage};
use super::{db_time, parse_db_time, Store, StoreError, Tx};
use crate::audit::{AuditEntry, AuditError, LedgerAppender};
use crate::lead::{Agency, LeadId, ValidatedLead};

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
    pub at: String,
    pub actor: String,
    pub revision: i64,
    /// Extra fields of the event (topic, partition, offset, unit, …).
    pub details: Map<String, Value>,
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
            broken @ AuditError::Broken { .. } => {
                StoreError::Other(sqlx::Error::Protocol(broken.to_string()))
            }
        }
    }
}

impl Store {
    /// Stores each lead in one transaction, in order, with its timeline event, outbox row and
    /// audit entry. Either every acceptance in the returned list is committed or none is.
    pub async fn accept_leads(
        &self,
        leads: &[LeadToStore<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<Acceptance>, StoreError> {
        let mut tx = self.begin().await?;
        let mut ledger = LedgerAppender::new();
        let mut outcomes = Vec::with_capacity(leads.len());
        for item in leads {
            outcomes.push(accept_one(&mut tx, &mut ledger, item, now).await?);
        }
        ledger.finish(&mut tx).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// The lead with its current revision and whole timeline, if `agency` owns it.
    pub async fn lead_for_agency(
        &self,
        lead_id: LeadId,
        agency: Agency,
    ) -> Result<Option<LeadView>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT lead_type, kind, case_id, current_revision, status FROM leads WHERE lead_id = $1 AND agency = $2",
        )
        .bind(lead_id.to_string())
        .bind(agency.as_str())
        .fetch_optional(self.pool())
        .await?
        else {
            return Ok(None);
        };
        let timeline = sqlx::query(
            "SELECT event, at, actor, revision, details FROM timeline_events WHERE lead_id = $1 ORDER BY id",
        )
        .bind(lead_id.to_string())
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .map(|event| -> Result<TimelineEvent, StoreError> {
            let details: String = event.try_get("details")?;
            Ok(TimelineEvent {
                event: event.try_get("event")?,
                at: event.try_get("at")?,
                actor: event.try_get("actor")?,
                revision: event.try_get("revision")?,
                details: serde_json::from_str(&details).unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(LeadView {
            lead_id,
            agency,
            lead_type: row.try_get("lead_type")?,
            kind: row.try_get("kind")?,
            case_id: row.try_get("case_id")?,
            revision: row.try_get("current_revision")?,
            status: row.try_get("status")?,
            timeline,
        }))
    }

    /// The stored document of one revision, exactly as accepted.
    pub async fn lead_document(
        &self,
        lead_id: LeadId,
        revision: i64,
    ) -> Result<Option<Value>, StoreError> {
        let row =
            sqlx::query("SELECT document FROM lead_revisions WHERE lead_id = $1 AND revision = $2")
                .bind(lead_id.to_string())
                .bind(revision)
                .fetch_optional(self.pool())
                .await?;
        Ok(match row {
            Some(row) => serde_json::from_str(&row.try_get::<String, _>("document")?).ok(),
            None => None,
        })
    }
}

async fn accept_one(
    tx: &mut Tx,
    ledger: &mut LedgerAppender,
    item: &LeadToStore<'_>,
    now: DateTime<Utc>,
) -> Result<Acceptance, StoreError> {
    let lead = item.lead;
    let revision = lead.revision();
    let existing = sqlx::query(
        "SELECT lead_id, current_revision FROM leads WHERE agency = $1 AND case_id = $2",
    )
    .bind(lead.agency().as_str())
    .bind(lead.case_id().as_str())
    .fetch_optional(&mut **tx)
    .await?;
    let at = db_time(now);
    let lead_id = match existing {
        None => {
            let lead_id = item.new_lead_id;
            sqlx::query(
                "INSERT INTO leads (lead_id, agency, case_id, lead_type, kind, current_revision, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'accepted', $7, $7)",
            )
            .bind(lead_id.to_string())
            .bind(lead.agency().as_str())
            .bind(lead.case_id().as_str())
            .bind(lead.lead_type().as_str())
            .bind(lead.kind().as_str())
            .bind(revision)
            .bind(&at)
            .execute(&mut **tx)
            .await?;
            lead_id
        }
        Some(row) => {
            let lead_id_text: String = row.try_get("lead_id")?;
            let lead_id = LeadId::parse(&lead_id_text).ok_or_else(|| {
                StoreError::Other(sqlx::Error::Protocol(format!(
                    "stored lead id {lead_id_text} is not a UUID"
                )))
            })?;
            let current: i64 = row.try_get("current_revision")?;
            let same_revision = sqlx::query(
                "SELECT content_sha256, received_at FROM lead_revisions WHERE lead_id = $1 AND revision = $2",
            )
            .bind(&lead_id_text)
            .bind(revision)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(previous) = same_revision {
                let hash: String = previous.try_get("content_sha256")?;
                let received_at: String = previous.try_get("received_at")?;
                return Ok(if hash == lead.content_sha256() {
                    Acceptance::Replayed {
                        lead_id,
                        revision,
                        received_at: parse_db_time(&received_at).unwrap_or(now),
                    }
                } else {
                    Acceptance::Conflict {
                        lead_id,
                        reason: ConflictReason::DifferentContent { revision },
                    }
                });
            }
            if revision < current {
                return Ok(Acceptance::Conflict {
                    lead_id,
                    reason: ConflictReason::StaleRevision { revision, current },
                });
            }
            sqlx::query("UPDATE lead_revisions SET status = 'superseded' WHERE lead_id = $1 AND revision = $2")
                .bind(&lead_id_text)
                .bind(current)
                .execute(&mut **tx)
                .await?;
            insert_timeline(
                tx,
                lead_id,
                current,
                "superseded",
                &at,
                "hub",
                json!({"superseded_by": revision}),
            )
            .await?;
            sqlx::query(
                "UPDATE leads SET current_revision = $1, status = 'accepted', lead_type = $2, kind = $3, updated_at = $4 \
                 WHERE lead_id = $5",
            )
            .bind(revision)
            .bind(lead.lead_type().as_str())
            .bind(lead.kind().as_str())
            .bind(&at)
            .bind(&lead_id_text)
            .execute(&mut **tx)
            .await?;
            lead_id
        }
    };
    sqlx::query(
        "INSERT INTO lead_revisions (lead_id, revision, content_sha256, document, received_at, status) \
         VALUES ($1, $2, $3, $4, $5, 'accepted')",
    )
    .bind(lead_id.to_string())
    .bind(revision)
    .bind(lead.content_sha256())
    .bind(std::str::from_utf8(lead.canonical_bytes()).expect("canonical JSON is UTF-8"))
    .bind(&at)
    .execute(&mut **tx)
    .await?;
    let actor = format!("agency:{}", lead.agency());
    insert_timeline(tx, lead_id, revision, "received", &at, &actor, json!({})).await?;
    let message = (item.message)(lead_id);
    insert_message(tx, &message, lead_id, revision, now).await?;
    ledger.append(AuditEntry {
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
    Ok(Acceptance::Accepted {
        lead_id,
        revision,
        received_at: now,
    })
}

pub(super) async fn insert_timeline(
    tx: &mut Tx,
    lead_id: LeadId,
    revision: i64,
    event: &str,
    at: &str,
    actor: &str,
    details: Value,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO timeline_events (lead_id, revision, event, at, actor, details) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(lead_id.to_string())
        .bind(revision)
        .bind(event)
        .bind(at)
        .bind(actor)
        .bind(details.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
