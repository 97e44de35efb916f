//! What supervision reads of the hub's leads (`crate::hub::supervise`): each lead with its
//! current document, the police's assessment and the whole timeline, read a page at a time.
//!
//! Promise: a page is newest first by acceptance time then lead id, and the cursor of its last
//! lead continues exactly after it, whatever is accepted meanwhile; a stored value that does
//! not parse (a document, an agency, a time) is an error naming its lead, never skipped.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::leads::{timeline_event, TimelineEvent};
use crate::contract::lead::{Agency, LeadId};
use crate::on_backend;
use crate::shared::store::{column, DbJson, DbTime, DbUuid, Store, StoreError};

/// One lead as supervision reads it.
#[derive(Clone, Debug)]
pub struct SupervisedLead {
    pub lead_id: LeadId,
    pub agency: Agency,
    pub lead_type: String,
    pub kind: String,
    pub case_id: String,
    pub revision: i64,
    pub status: String,
    /// When the hub first accepted the lead.
    pub created_at: DateTime<Utc>,
    /// The current revision's document, as accepted.
    pub document: Value,
    /// The police's assessment, once received.
    pub assessment: Option<Value>,
    pub timeline: Vec<TimelineEvent>,
}

impl SupervisedLead {
    /// The district (GB/T 2260) where the case happened: the document's location, else the
    /// sending unit's division.
    pub fn district(&self) -> Option<&str> {
        self.document
            .pointer("/location/division_code")
            .and_then(Value::as_str)
            .or_else(|| {
                self.document
                    .pointer("/source/unit_division")
                    .and_then(Value::as_str)
            })
    }

    /// The police units that hold or held the current revision.
    pub fn units(&self) -> Vec<String> {
        let mut units: Vec<String> = Vec::new();
        for event in self
            .timeline
            .iter()
            .filter(|event| event.revision == self.revision)
        {
            let named = match event.event.as_str() {
                "received_by_police" => event.details.get("units").cloned(),
                "forwarded" => event
                    .details
                    .get("to_unit")
                    .map(|unit| Value::Array(vec![unit.clone()])),
                _ => None,
            };
            for unit in named.iter().filter_map(Value::as_array).flatten() {
                if let Some(unit) = unit.as_str() {
                    if !units.iter().any(|known| known == unit) {
                        units.push(unit.to_owned());
                    }
                }
            }
        }
        units
    }

    /// The first time the timeline holds `event` for the current revision.
    pub fn first(&self, event: &str) -> Option<&TimelineEvent> {
        self.timeline
            .iter()
            .find(|item| item.revision == self.revision && item.event == event)
    }
}

/// Which leads, newest first.
#[derive(Clone, Debug, Default)]
pub struct LeadQuery {
    pub agency: Option<Agency>,
    pub lead_type: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    /// Accepted at or after.
    pub from: Option<DateTime<Utc>>,
    /// Accepted before.
    pub to: Option<DateTime<Utc>>,
    /// Only leads after this one in the order (the previous page's last).
    pub after: Option<(DateTime<Utc>, LeadId)>,
    pub limit: u32,
}

impl Store {
    /// One page of leads, newest first.
    pub async fn supervised_leads(
        &self,
        query: &LeadQuery,
    ) -> Result<Vec<SupervisedLead>, StoreError> {
        let mut conditions: Vec<String> = Vec::new();
        let mut next = 0;
        let mut placeholder = || {
            next += 1;
            format!("${next}")
        };
        if query.agency.is_some() {
            conditions.push(format!("l.agency = {}", placeholder()));
        }
        if query.lead_type.is_some() {
            conditions.push(format!("l.lead_type = {}", placeholder()));
        }
        if query.kind.is_some() {
            conditions.push(format!("l.kind = {}", placeholder()));
        }
        if query.status.is_some() {
            conditions.push(format!("l.status = {}", placeholder()));
        }
        if query.from.is_some() {
            conditions.push(format!("l.created_at >= {}", placeholder()));
        }
        if query.to.is_some() {
            conditions.push(format!("l.created_at < {}", placeholder()));
        }
        if query.after.is_some() {
            let (at, again, id) = (placeholder(), placeholder(), placeholder());
            conditions.push(format!(
                "(l.created_at < {at} OR (l.created_at = {again} AND l.lead_id < {id}))"
            ));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT l.lead_id, l.agency, l.lead_type, l.kind, l.case_id, l.current_revision, l.status, \
             l.created_at, l.assessment, r.document \
             FROM leads l JOIN lead_revisions r ON r.lead_id = l.lead_id AND r.revision = l.current_revision \
             {filter} ORDER BY l.created_at DESC, l.lead_id DESC LIMIT {}",
            query.limit
        );
        let mut leads = on_backend!(self.db(), pool => {
            let mut statement = sqlx::query(&sql);
            if let Some(agency) = query.agency {
                statement = statement.bind(agency.as_str());
            }
            for text in [&query.lead_type, &query.kind, &query.status].into_iter().flatten() {
                statement = statement.bind(text.as_str());
            }
            if let Some(from) = query.from {
                statement = statement.bind(DbTime::new(from));
            }
            if let Some(to) = query.to {
                statement = statement.bind(DbTime::new(to));
            }
            if let Some((at, id)) = query.after {
                statement = statement
                    .bind(DbTime::new(at))
                    .bind(DbTime::new(at))
                    .bind(DbUuid::from(id));
            }
            let rows = statement.fetch_all(pool).await?;
            rows.iter()
                .map(|row| -> Result<SupervisedLead, StoreError> {
                    let lead_id: LeadId = column::<_, DbUuid>(row, "lead_id", &"a leads row")?.into();
                    let which = format!("lead {lead_id}");
                    let agency: String = column(row, "agency", &which)?;
                    let document: String = column(row, "document", &which)?;
                    Ok(SupervisedLead {
                        lead_id,
                        agency: agency.parse().map_err(|_| {
                            StoreError::Corrupt(format!("{which}: unknown agency {agency:?}"))
                        })?,
                        lead_type: column(row, "lead_type", &which)?,
                        kind: column(row, "kind", &which)?,
                        case_id: column(row, "case_id", &which)?,
                        revision: column(row, "current_revision", &which)?,
                        status: column(row, "status", &which)?,
                        created_at: column::<_, DbTime>(row, "created_at", &which)?.get(),
                        document: serde_json::from_str(&document).map_err(|error| {
                            StoreError::Corrupt(format!("{which}: its document does not parse: {error}"))
                        })?,
                        assessment: column::<_, Option<DbJson>>(row, "assessment", &which)?
                            .map(|json| json.0),
                        timeline: Vec::new(),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })?;
        if leads.is_empty() {
            return Ok(leads);
        }
        let ids: Vec<String> = (1..=leads.len()).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT lead_id, event, at, actor, revision, details FROM timeline_events \
             WHERE lead_id IN ({}) ORDER BY id",
            ids.join(", ")
        );
        let events: Vec<(LeadId, TimelineEvent)> = on_backend!(self.db(), pool => {
            let mut statement = sqlx::query(&sql);
            for lead in &leads {
                statement = statement.bind(DbUuid::from(lead.lead_id));
            }
            let rows = statement.fetch_all(pool).await?;
            rows.iter()
                .map(|row| -> Result<(LeadId, TimelineEvent), StoreError> {
                    let lead_id: LeadId =
                        column::<_, DbUuid>(row, "lead_id", &"a timeline row")?.into();
                    Ok((lead_id, timeline_event(lead_id, row)?))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })?;
        for (lead_id, event) in events {
            if let Some(lead) = leads.iter_mut().find(|lead| lead.lead_id == lead_id) {
                lead.timeline.push(event);
            }
        }
        Ok(leads)
    }

    /// Every lead `query` selects (its `limit` is the page size it reads with), newest first.
    pub async fn all_supervised_leads(
        &self,
        query: &LeadQuery,
    ) -> Result<Vec<SupervisedLead>, StoreError> {
        let mut page = query.clone();
        page.limit = page.limit.clamp(1, 500);
        let mut all = Vec::new();
        loop {
            let leads = self.supervised_leads(&page).await?;
            let Some(last) = leads.last() else {
                return Ok(all);
            };
            page.after = Some((last.created_at, last.lead_id));
            let full = leads.len() as u32 == page.limit;
            all.extend(leads);
            if !full {
                return Ok(all);
            }
        }
    }

    /// One lead, whatever its agency.
    pub async fn supervised_lead(
        &self,
        lead_id: LeadId,
    ) -> Result<Option<SupervisedLead>, StoreError> {
        let Some(created_at) = on_backend!(self.db(), pool => sqlx::query_scalar::<_, DbTime>(
            "SELECT created_at FROM leads WHERE lead_id = $1",
        )
        .bind(DbUuid::from(lead_id))
        .fetch_optional(pool)
        .await)?
        else {
            return Ok(None);
        };
        // The lead is the first after (its own time, the next id up): read as a page of one.
        let leads = self
            .supervised_leads(&LeadQuery {
                from: Some(created_at.get()),
                to: Some(created_at.get() + chrono::Duration::microseconds(1)),
                limit: 500,
                ..LeadQuery::default()
            })
            .await?;
        Ok(leads.into_iter().find(|lead| lead.lead_id == lead_id))
    }
}
