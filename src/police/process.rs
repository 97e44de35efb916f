//! The Decree 310 steps after a lead reaches the police, as a state machine, and their clocks.
//!
//! Promise: only the transitions of Decree 310 arts. 7–9 and 13 are possible — a forward of an
//! undecided lead to the competent unit or organ (art 7); a decision (filed with a police case
//! number, not filed with reasons, returned to the agency with reasons) on a received or
//! delivered lead that its unit still holds; a reconsideration request on a non-filing or a
//! return (art 9 treats a return as a non-filing); one reconsidered decision (filed or not
//! filed). Anything else is refused with the reason. The clocks are
//! `crate::contract::deadlines`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// Forwarded to an organ outside this system (art 7); nothing is left to decide here.
    Forwarded,
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
            PoliceStatus::Forwarded => "forwarded",
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
    #[error("the lead was forwarded to {to} on {at}; it is theirs to decide")]
    ForwardedAway { to: String, at: String },
    #[error("the lead is {0}; only an undecided lead can be forwarded")]
    NotForwardable(&'static str),
    #[error(
        "forward to to_unit (a unit of this system) or to_organ (an organ outside it), not both"
    )]
    ForwardTarget,
    #[error("{0} is not a police unit of this system; name an outside organ with to_organ")]
    UnknownUnit(String),
    #[error("the lead is held by {0} already")]
    ForwardToHolder(String),
    #[error("a forward needs its reason (the competent organ's jurisdiction)")]
    ForwardReasonRequired,
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

/// Whether an undecided lead in `current` may be forwarded.
pub fn forwardable(current: PoliceStatus) -> Result<(), TransitionError> {
    match current {
        PoliceStatus::Received | PoliceStatus::Delivered => Ok(()),
        PoliceStatus::Superseded => Err(TransitionError::Superseded),
        other => Err(TransitionError::NotForwardable(other.as_str())),
    }
}

/// A forward as posted: to a unit of this system or to an organ outside it, with reasons.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardRequest {
    /// The competent unit of this system (a configured unit id, e.g. `370305`).
    #[serde(default)]
    pub to_unit: Option<String>,
    /// The competent organ outside this system, by name (at most 200 characters).
    #[serde(default)]
    #[schema(max_length = 200)]
    pub to_organ: Option<String>,
    /// Why the lead is outside the caller's jurisdiction (at most 2,000 characters).
    #[schema(max_length = 2000)]
    pub reason: String,
}

/// Where a forward goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardTarget {
    Unit(String),
    Organ(String),
}

impl ForwardRequest {
    pub fn parse(self) -> Result<(ForwardTarget, String), TransitionError> {
        let text =
            |value: Option<String>| value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let reason = text(Some(self.reason)).ok_or(TransitionError::ForwardReasonRequired)?;
        let target = match (text(self.to_unit), text(self.to_organ)) {
            (Some(unit), None) => ForwardTarget::Unit(unit),
            (None, Some(organ)) => ForwardTarget::Organ(organ),
            _ => return Err(TransitionError::ForwardTarget),
        };
        Ok((target, reason))
    }
}

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
    fn only_undecided_leads_are_forwarded_and_a_forward_names_one_target() {
        assert_eq!(forwardable(PoliceStatus::Delivered), Ok(()));
        assert_eq!(forwardable(PoliceStatus::Received), Ok(()));
        assert_eq!(
            forwardable(PoliceStatus::Filed),
            Err(TransitionError::NotForwardable("filed"))
        );
        assert_eq!(
            forwardable(PoliceStatus::Superseded),
            Err(TransitionError::Superseded)
        );
        let request = |unit: Option<&str>, organ: Option<&str>, reason: &str| ForwardRequest {
            to_unit: unit.map(Into::into),
            to_organ: organ.map(Into::into),
            reason: reason.into(),
        };
        assert_eq!(
            request(Some("370305"), None, "案发地在临淄区").parse(),
            Ok((
                ForwardTarget::Unit("370305".into()),
                "案发地在临淄区".into()
            ))
        );
        assert_eq!(
            request(None, Some(" 北京市公安局东城分局 "), "r").parse(),
            Ok((
                ForwardTarget::Organ("北京市公安局东城分局".into()),
                "r".into()
            ))
        );
        for (unit, organ) in [(Some("370305"), Some("x")), (None, None), (Some(" "), None)] {
            assert_eq!(
                request(unit, organ, "r").parse(),
                Err(TransitionError::ForwardTarget)
            );
        }
        assert_eq!(
            request(Some("370305"), None, "  ").parse(),
            Err(TransitionError::ForwardReasonRequired)
        );
    }
}
