//! The Decree 310 steps after a lead reaches the police, as a state machine, and their clocks.
//!
//! Promise: only the transitions of Decree 310 arts. 8–9 are possible — a decision (filed with
//! a police case number, not filed with reasons, returned to the agency with reasons) on a
//! received or delivered lead; a reconsideration request on a non-filing, within its window;
//! one reconsidered decision (filed or not filed). Anything else is refused with the reason.
//! Clocks run in calendar days from the police receipt (回执) and are shown with their state.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::settings::DeadlineSettings;

/// Where a lead stands on the police side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PoliceStatus {
    Received,
    Delivered,
    Filed,
    NotFiled,
    Returned,
    ReconsiderationRequested,
    Reconsidered,
    Superseded,
}

impl PoliceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PoliceStatus::Received => "received",
            PoliceStatus::Delivered => "delivered",
            PoliceStatus::Filed => "filed",
            PoliceStatus::NotFiled => "not_filed",
            PoliceStatus::Returned => "returned",
            PoliceStatus::ReconsiderationRequested => "reconsideration_requested",
            PoliceStatus::Reconsidered => "reconsidered",
            PoliceStatus::Superseded => "superseded",
        }
    }

    pub fn parse(text: &str) -> Option<PoliceStatus> {
        serde_json::from_value(Value::String(text.to_owned())).ok()
    }
}

/// An investigator's decision as posted.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    // Read as text so that another word is answered with the decisions there are (422
    // `decision`), not as a body of the wrong shape (400).
    #[schema(value_type = DecisionKind)]
    pub decision: String,
    /// The reasons, which a non-filing and a return need (at most 2,000 characters).
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub reason: Option<String>,
    /// The police case number, which a filing needs (at most 100 characters).
    #[serde(default)]
    #[schema(max_length = 100)]
    pub police_case_no: Option<String>,
}

/// The decisions an investigator can post.
// Only documentation of `DecisionRequest::decision`; `DecisionRequest::parse` reads it.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum DecisionKind {
    Filed,
    NotFiled,
    Returned,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// 立案, with the police case number.
    Filed { police_case_no: String },
    /// 不予立案, with the reasons the agency is told.
    NotFiled { reason: String },
    /// Returned to the agency (no crime, or outside police competence), with reasons.
    Returned { reason: String },
}

impl Decision {
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Filed { .. } => "filed",
            Decision::NotFiled { .. } => "not_filed",
            Decision::Returned { .. } => "returned",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Decision::Filed { .. } => None,
            Decision::NotFiled { reason } | Decision::Returned { reason } => Some(reason),
        }
    }

    pub fn police_case_no(&self) -> Option<&str> {
        match self {
            Decision::Filed { police_case_no } => Some(police_case_no),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("decision must be one of filed, not_filed, returned")]
    UnknownDecision,
    #[error("a {0} decision needs a reason")]
    ReasonRequired(&'static str),
    #[error("a filed decision needs the police case number (police_case_no)")]
    CaseNumberRequired,
    #[error("the lead is {0} already; a decision on it is final")]
    AlreadyDecided(&'static str),
    #[error("a reconsideration ends in filed or not_filed, not {0}")]
    NotAReconsiderationOutcome(&'static str),
    #[error("the lead was superseded by a later revision")]
    Superseded,
    #[error("reconsideration can be requested only after a not_filed decision; the lead is {0}")]
    NotReconsiderable(String),
    #[error("the {days}-day window for requesting reconsideration closed at {closed_at}")]
    ReconsiderationWindowClosed { days: i64, closed_at: String },
}

impl DecisionRequest {
    /// Parses the request into a decision, checking the fields each decision needs.
    pub fn parse(self) -> Result<Decision, TransitionError> {
        let text =
            |value: Option<String>| value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        match self.decision.as_str() {
            "filed" => Ok(Decision::Filed {
                police_case_no: text(self.police_case_no)
                    .ok_or(TransitionError::CaseNumberRequired)?,
            }),
            "not_filed" => Ok(Decision::NotFiled {
                reason: text(self.reason).ok_or(TransitionError::ReasonRequired("not_filed"))?,
            }),
            "returned" => Ok(Decision::Returned {
                reason: text(self.reason).ok_or(TransitionError::ReasonRequired("returned"))?,
            }),
            _ => Err(TransitionError::UnknownDecision),
        }
    }
}

/// The status a decision leads to from `current`, or why it may not be taken.
pub fn decide(current: PoliceStatus, decision: &Decision) -> Result<PoliceStatus, TransitionError> {
    match current {
        PoliceStatus::Received | PoliceStatus::Delivered => Ok(match decision {
            Decision::Filed { .. } => PoliceStatus::Filed,
            Decision::NotFiled { .. } => PoliceStatus::NotFiled,
            Decision::Returned { .. } => PoliceStatus::Returned,
        }),
        PoliceStatus::ReconsiderationRequested => match decision {
            Decision::Returned { .. } => {
                Err(TransitionError::NotAReconsiderationOutcome("returned"))
            }
            _ => Ok(PoliceStatus::Reconsidered),
        },
        PoliceStatus::Superseded => Err(TransitionError::Superseded),
        decided => Err(TransitionError::AlreadyDecided(decided.as_str())),
    }
}

/// Whether the agency may still request reconsideration of a non-filing decided at `decided_at`.
pub fn check_reconsideration(
    current: PoliceStatus,
    decided_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    settings: &DeadlineSettings,
) -> Result<(), TransitionError> {
    if current != PoliceStatus::NotFiled {
        return Err(TransitionError::NotReconsiderable(
            current.as_str().to_owned(),
        ));
    }
    let closes = decided_at.unwrap_or(now) + Duration::days(settings.reconsideration_request_days);
    if now > closes {
        return Err(TransitionError::ReconsiderationWindowClosed {
            days: settings.reconsideration_request_days,
            closed_at: closes.to_rfc3339(),
        });
    }
    Ok(())
}

pub use crate::contract::deadlines::{deadlines, with_states, ClockInputs};

#[cfg(test)]
mod tests {
    use super::*;

    fn request(decision: &str, reason: Option<&str>, case_no: Option<&str>) -> DecisionRequest {
        DecisionRequest {
            decision: decision.into(),
            reason: reason.map(Into::into),
            police_case_no: case_no.map(Into::into),
        }
    }

    #[test]
    fn decisions_need_their_fields() {
        assert_eq!(
            request("filed", None, None).parse(),
            Err(TransitionError::CaseNumberRequired)
        );
        assert_eq!(
            request("not_filed", Some("  "), None).parse(),
            Err(TransitionError::ReasonRequired("not_filed"))
        );
        assert_eq!(
            request("returned", None, None).parse(),
            Err(TransitionError::ReasonRequired("returned"))
        );
        assert_eq!(
            request("maybe", None, None).parse(),
            Err(TransitionError::UnknownDecision)
        );
        assert_eq!(
            request("filed", None, Some("ZB-2026-1")).parse(),
            Ok(Decision::Filed {
                police_case_no: "ZB-2026-1".into()
            })
        );
    }

    #[test]
    fn only_decree_310_transitions_are_allowed() {
        let filed = Decision::Filed {
            police_case_no: "1".into(),
        };
        let not_filed = Decision::NotFiled { reason: "r".into() };
        let returned = Decision::Returned { reason: "r".into() };
        assert_eq!(
            decide(PoliceStatus::Delivered, &filed),
            Ok(PoliceStatus::Filed)
        );
        assert_eq!(
            decide(PoliceStatus::Received, &not_filed),
            Ok(PoliceStatus::NotFiled)
        );
        assert_eq!(
            decide(PoliceStatus::Delivered, &returned),
            Ok(PoliceStatus::Returned)
        );
        assert_eq!(
            decide(PoliceStatus::Filed, &not_filed),
            Err(TransitionError::AlreadyDecided("filed"))
        );
        assert_eq!(
            decide(PoliceStatus::NotFiled, &filed),
            Err(TransitionError::AlreadyDecided("not_filed"))
        );
        assert_eq!(
            decide(PoliceStatus::ReconsiderationRequested, &filed),
            Ok(PoliceStatus::Reconsidered)
        );
        assert_eq!(
            decide(PoliceStatus::ReconsiderationRequested, &returned),
            Err(TransitionError::NotAReconsiderationOutcome("returned"))
        );
        assert_eq!(
            decide(PoliceStatus::Reconsidered, &filed),
            Err(TransitionError::AlreadyDecided("reconsidered"))
        );
        assert_eq!(
            decide(PoliceStatus::Superseded, &filed),
            Err(TransitionError::Superseded)
        );
    }

    #[test]
    fn reconsideration_is_open_for_three_days_after_a_non_filing() {
        let settings = DeadlineSettings::default();
        let decided = Utc::now() - Duration::days(2);
        assert!(check_reconsideration(
            PoliceStatus::NotFiled,
            Some(decided),
            Utc::now(),
            &settings
        )
        .is_ok());
        let decided = Utc::now() - Duration::days(3) - Duration::minutes(1);
        assert!(matches!(
            check_reconsideration(PoliceStatus::NotFiled, Some(decided), Utc::now(), &settings),
            Err(TransitionError::ReconsiderationWindowClosed { days: 3, .. })
        ));
        assert_eq!(
            check_reconsideration(PoliceStatus::Filed, Some(decided), Utc::now(), &settings),
            Err(TransitionError::NotReconsiderable("filed".into()))
        );
    }

    #[test]
    fn clocks_show_running_overdue_and_met() {
        let settings = DeadlineSettings::default();
        let now = Utc::now();
        let received = now - Duration::days(5);
        let running = deadlines(
            &ClockInputs {
                received_at: Some(now),
                ..Default::default()
            },
            &settings,
        );
        assert_eq!(with_states(&running, now).unwrap()[0]["state"], "running");
        let overdue = deadlines(
            &ClockInputs {
                received_at: Some(received),
                ..Default::default()
            },
            &settings,
        );
        assert_eq!(with_states(&overdue, now).unwrap()[0]["state"], "overdue");
        let met = deadlines(
            &ClockInputs {
                received_at: Some(received),
                // Decided four days ago: the agency's three days have passed.
                decided_at: Some(now - Duration::days(4)),
                not_filed: true,
                ..Default::default()
            },
            &settings,
        );
        let states = with_states(&met, now).unwrap();
        assert_eq!(states[0]["state"], "met");
        assert_eq!(states[1]["name"], "reconsideration_request");
        assert_eq!(
            states[1]["state"], "expired",
            "the agency's window passed unused"
        );
    }
}
