//! The hub's reading of a lead's Decree 310 clocks from its timeline, and the agency's own
//! steps after the police's answer: the 立案监督 request to the procuratorate (art 9 ¶2) and
//! the hand-over of seized items and materials after filing (art 12).
//!
//! Promise: the hub shows every clock of `lead-contract.md` §6 from what it recorded itself —
//! its acceptance of a transfer, each police receipt as it reached the agency's feedback
//! (`notified_at`), the agency's requests — so the agency's windows run from its receipt of
//! the police's answer, not from the police's decision. A timeline value that does not parse
//! is an error naming the lead, never a clock that starts "now".

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::leads::{insert_timeline, TimelineEvent};
use crate::contract::deadlines::{self, Answer, ClockFacts, Clocks, Outcome};
use crate::contract::lead::{Agency, LeadId, LeadKind};
use crate::contract::validate::Problem;
use crate::on_backend;
use crate::shared::audit::{AuditEntry, LedgerAppender};
use crate::shared::store::{column, DbTime, DbUuid, Store, StoreError};

/// The clock facts of a lead from its timeline: `kind` is the current revision's, `revision`
/// the current revision (the police's steps on it count; a new revision starts them anew).
pub fn clock_facts(
    lead_id: LeadId,
    kind: &str,
    revision: i64,
    timeline: &[TimelineEvent],
) -> Result<ClockFacts, StoreError> {
    let which = format!("timeline of lead {lead_id}");
    let kind: LeadKind = kind
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("leads row {lead_id}: unknown kind {kind:?}")))?;
    let time = |event: &TimelineEvent, field: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        match event.details.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => DateTime::parse_from_rfc3339(text)
                .map(|at| Some(at.with_timezone(&Utc)))
                .map_err(|error| {
                    StoreError::Corrupt(format!(
                        "{which}: {} {field} {text:?} is not a time: {error}",
                        event.event
                    ))
                }),
            Some(other) => Err(StoreError::Corrupt(format!(
                "{which}: {} {field} {other} is not a time",
                event.event
            ))),
        }
    };
    // When the answer reached the agency's feedback; receipts applied before the hub recorded
    // it count from the receipt's own time, the nearest record there is.
    let answer = |event: &TimelineEvent, outcome: Outcome| -> Result<Answer, StoreError> {
        Ok(Answer {
            outcome,
            at: event.time,
            notified_at: Some(time(event, "notified_at")?.unwrap_or(event.time)),
        })
    };
    let outcome = |event: &TimelineEvent| -> Result<Outcome, StoreError> {
        match event.details.get("decision").and_then(Value::as_str) {
            Some("filed") => Ok(Outcome::Filed),
            Some("not_filed" | "returned") => Ok(Outcome::NotFiled),
            other => Err(StoreError::Corrupt(format!(
                "{which}: {} has decision {other:?}",
                event.event
            ))),
        }
    };

    let mut facts = ClockFacts {
        kind: Some(kind),
        ..ClockFacts::default()
    };
    // The transfer: the first revision accepted as a transfer, with its approval time.
    if let Some(received) = timeline.iter().find(|event| {
        event.event == "received" && event.details.get("kind") == Some(&json!("transfer"))
    }) {
        facts.approved_at = time(received, "approved_at")?;
        facts.accepted_at = Some(received.time);
    }
    let mut holder_since = None;
    for event in timeline.iter().filter(|event| event.revision == revision) {
        match event.event.as_str() {
            "received_by_police" if holder_since.is_none() => {
                facts.police_received_at = Some(event.time);
                holder_since = Some(event.time);
                if event.details.get("forwarding_task").is_some() {
                    facts.forwarding_since = Some(event.time);
                }
            }
            "forwarded" => {
                facts.forwarding_since = holder_since.or(Some(event.time));
                facts.forwarded_at = Some(event.time);
                if event.details.contains_key("to_unit") {
                    facts.police_received_at = Some(event.time);
                    holder_since = Some(event.time);
                } else {
                    facts.police_received_at = None;
                }
            }
            "filed" | "not_filed" | "returned" if facts.decision.is_none() => {
                facts.decision = Some(answer(event, outcome(event)?)?);
                // A fallback unit that decided the lead itself took it on.
                if facts.forwarding_since.is_some() && facts.forwarded_at.is_none() {
                    facts.forwarded_at = Some(event.time);
                }
            }
            "reconsideration_requested" => facts.reconsideration_requested_at = Some(event.time),
            "reconsidered" if facts.reconsidered.is_none() => {
                facts.reconsidered = Some(answer(event, outcome(event)?)?);
            }
            "supervision_requested" => facts.supervision_requested_at = Some(event.time),
            "handed_over" => facts.handed_over_at = Some(event.time),
            _ => {}
        }
    }
    Ok(facts)
}

/// An agency step after the police's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgencyStep {
    /// 立案监督 asked of the procuratorate (art 9 ¶2), after a non-filing, whether or not
    /// the police reconsidered it.
    SupervisionRequest,
    /// Seized items and materials handed over to the police after filing (art 12).
    Handover,
}

impl AgencyStep {
    /// The timeline event (and, for a supervision request, the lead status).
    pub fn event(self) -> &'static str {
        match self {
            AgencyStep::SupervisionRequest => "supervision_requested",
            AgencyStep::Handover => "handed_over",
        }
    }

    /// The body member carrying when the agency did it.
    pub fn time_field(self) -> &'static str {
        match self {
            AgencyStep::SupervisionRequest => "requested_at",
            AgencyStep::Handover => "handed_over_at",
        }
    }
}

/// Why an agency step was refused.
#[derive(Debug, thiserror::Error)]
pub enum AgencyStepError {
    #[error("no such lead")]
    NotFound,
    #[error("{0}")]
    NotAllowed(String),
    #[error("invalid")]
    Invalid(Vec<Problem>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AgencyStepError {
    fn from(error: sqlx::Error) -> Self {
        AgencyStepError::Store(error.into())
    }
}

impl Store {
    /// Records an agency step on one of its leads, once, when the lead's answer allows it:
    /// `done_at` is when the agency did it (not before the answer it follows, not in the
    /// future beyond the skew), `details` what it reported. Returns the lead's clocks after.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_agency_step(
        &self,
        lead_id: LeadId,
        agency: Agency,
        step: AgencyStep,
        done_at: DateTime<Utc>,
        details: Value,
        now: DateTime<Utc>,
        clocks: &Clocks,
    ) -> Result<Value, AgencyStepError> {
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
        let (status, revision, kind) = lead.ok_or(AgencyStepError::NotFound)?;
        let timeline = Store::timeline_in(&mut tx, lead_id).await?;
        let facts = clock_facts(lead_id, &kind, revision, &timeline)?;
        let follows = match step {
            AgencyStep::SupervisionRequest => {
                if let Some(at) = facts.supervision_requested_at {
                    return Err(AgencyStepError::NotAllowed(format!(
                        "立案监督 was requested already, at {}",
                        deadlines::local_text(at)
                    )));
                }
                match (facts.decision, facts.reconsidered) {
                    (_, Some(answer)) if answer.outcome == Outcome::Filed => {
                        return Err(AgencyStepError::NotAllowed(
                            "the police filed the case on reconsideration; there is no non-filing to supervise".into(),
                        ))
                    }
                    (Some(first), reconsidered) if first.outcome == Outcome::NotFiled => {
                        reconsidered.unwrap_or(first)
                    }
                    _ => {
                        return Err(AgencyStepError::NotAllowed(format!(
                            "立案监督 can be requested after a non-filing or a return; the lead is {status}"
                        )))
                    }
                }
            }
            AgencyStep::Handover => {
                if let Some(at) = facts.handed_over_at {
                    return Err(AgencyStepError::NotAllowed(format!(
                        "the hand-over was reported already, at {}",
                        deadlines::local_text(at)
                    )));
                }
                match [facts.decision, facts.reconsidered]
                    .into_iter()
                    .flatten()
                    .find(|answer| answer.outcome == Outcome::Filed)
                {
                    Some(filed) => filed,
                    None => {
                        return Err(AgencyStepError::NotAllowed(format!(
                            "a hand-over follows the police's filing decision; the lead is {status}"
                        )))
                    }
                }
            }
        };
        let pointer = format!("/{}", step.time_field());
        let skew = Duration::seconds(i64::from(clocks.settings().start_skew_secs));
        if done_at > now + skew {
            return Err(AgencyStepError::Invalid(vec![Problem::new(
                pointer,
                "future_time",
                format!(
                    "{} is later than now ({}) plus the allowed clock skew",
                    deadlines::local_text(done_at),
                    deadlines::local_text(now)
                ),
            )]));
        }
        if done_at < follows.at {
            return Err(AgencyStepError::Invalid(vec![Problem::new(
                pointer,
                "time_order",
                format!(
                    "{} is before the police's answer it follows ({})",
                    deadlines::local_text(done_at),
                    deadlines::local_text(follows.at)
                ),
            )]));
        }
        let actor = format!("agency:{agency}");
        let mut recorded = details.clone();
        recorded["reported_at"] = json!(DbTime::new(now).text());
        insert_timeline(
            &mut tx,
            lead_id,
            revision,
            step.event(),
            DbTime::new(done_at),
            &actor,
            recorded.clone(),
        )
        .await?;
        if step == AgencyStep::SupervisionRequest {
            on_backend!(tx.conn(), conn => sqlx::query(
                "UPDATE leads SET status = 'supervision_requested', updated_at = $1 WHERE lead_id = $2",
            )
            .bind(DbTime::new(now))
            .bind(DbUuid::from(lead_id))
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected()))?;
        }
        ledger.append(AuditEntry {
            at: now,
            actor,
            action: match step {
                AgencyStep::SupervisionRequest => "lead.supervision_requested",
                AgencyStep::Handover => "lead.handover_reported",
            },
            lead_id: Some(lead_id),
            revision: Some(revision),
            details: json!({"done_at": DbTime::new(done_at).text(), "reported": recorded}),
        });
        ledger.finish(&mut tx).await.map_err(StoreError::from)?;
        let timeline = Store::timeline_in(&mut tx, lead_id).await?;
        tx.commit().await?;
        let facts = clock_facts(lead_id, &kind, revision, &timeline)?;
        Ok(deadlines::to_json(&clocks.clocks(&facts, now)))
    }
}
