//! The Decree 310 clocks of a lead, counted as the law counts them. Both sides count them
//! with this module: the adapter shows the police's clocks to investigators, the hub shows
//! every clock to the agency and enforces the agency's windows.
//!
//! Promise:
//! - "N 日" runs in calendar days of Asia/Shanghai: the day of the starting event does not
//!   count, the period ends at 24:00 of its last day, and a last day that is a statutory rest
//!   day (a weekend day not declared a working day, or a public holiday) moves to the first
//!   working day after it (民法典 arts 201–203). A clock configured for working days
//!   ([`DeadlineSettings::working_days`]) counts N working days instead. "24 小时" is 24 hours.
//!   `due_at` is the last instant that is on time (23:59:59.999999 of the last day for a
//!   period in days): an act at 23:59 of the last day is on time, one at 00:00 the next day
//!   is late.
//! - Each clock starts where the law starts it (`lead-contract.md` §6): the agency's windows
//!   run from its receipt of the police's answer (the moment the answer reached its feedback),
//!   the police's filing decision (art 8) only for a formal transfer.
//! - A clock never guesses: a period that reaches a date no holiday calendar covers is
//!   `no_calendar`, naming the date; a clock whose start lies in the future beyond the allowed
//!   skew is `invalid`, never a negative countdown.
//!
//! Asia/Shanghai has kept UTC+08:00 without daylight saving since 1991, so a fixed offset is
//! exact for every date a lead can carry.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::calendar::{CalendarError, DayCounting, HolidayCalendar, NotCovered};
use super::lead::LeadKind;

/// Asia/Shanghai (UTC+08:00, no daylight saving since 1991).
pub fn shanghai() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset")
}

/// A time as the clocks show it: RFC 3339 in +08:00 with microseconds.
pub fn local_text(at: DateTime<Utc>) -> String {
    at.with_timezone(&shanghai())
        .to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// The clocks of `lead-contract.md` §6, and the review target of leads that are not
/// transfers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockName {
    /// The agency transfers within 24 hours of the head's approval (令310 art 5 ¶2).
    Transfer,
    /// A unit not competent for the lead forwards it within 24 hours (art 7).
    Forwarding,
    /// The police decide on filing within 3 days of receiving a transfer (art 8).
    PoliceDecision,
    /// A configured review target for clues and penalty records: not a legal deadline.
    PoliceReview,
    /// The agency may ask for reconsideration of a non-filing within 3 days (art 9 ¶1).
    ReconsiderationRequest,
    /// The police answer a reconsideration within 3 days (art 9 ¶2).
    PoliceReconsideration,
    /// The agency may ask the procuratorate for 立案监督 within 3 days (art 9 ¶2).
    SupervisionRequest,
    /// After filing, the agency hands over seized items and materials within 3 days (art 12).
    Handover,
}

impl ClockName {
    pub const ALL: [ClockName; 8] = [
        ClockName::Transfer,
        ClockName::Forwarding,
        ClockName::PoliceDecision,
        ClockName::PoliceReview,
        ClockName::ReconsiderationRequest,
        ClockName::PoliceReconsideration,
        ClockName::SupervisionRequest,
        ClockName::Handover,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClockName::Transfer => "transfer",
            ClockName::Forwarding => "forwarding",
            ClockName::PoliceDecision => "police_decision",
            ClockName::PoliceReview => "police_review",
            ClockName::ReconsiderationRequest => "reconsideration_request",
            ClockName::PoliceReconsideration => "police_reconsideration",
            ClockName::SupervisionRequest => "supervision_request",
            ClockName::Handover => "handover",
        }
    }

    /// The legal source of the clock, as shown.
    pub fn basis(self) -> &'static str {
        match self {
            ClockName::Transfer => "国务院令第310号 第五条第二款",
            ClockName::Forwarding => "国务院令第310号 第七条",
            ClockName::PoliceDecision => "国务院令第310号 第八条",
            ClockName::PoliceReview => "配置的审查目标，非法定期限",
            ClockName::ReconsiderationRequest => "国务院令第310号 第九条第一款",
            ClockName::PoliceReconsideration | ClockName::SupervisionRequest => {
                "国务院令第310号 第九条第二款"
            }
            ClockName::Handover => "国务院令第310号 第十二条",
        }
    }

    /// Who must act before the clock runs out.
    pub fn party(self) -> &'static str {
        match self {
            ClockName::Transfer
            | ClockName::ReconsiderationRequest
            | ClockName::SupervisionRequest
            | ClockName::Handover => "agency",
            _ => "police",
        }
    }

    /// A window the agency may use, not a duty: once it closes unused it is `missed`, not
    /// `overdue` (nothing is owed any more).
    pub fn is_option(self) -> bool {
        matches!(
            self,
            ClockName::ReconsiderationRequest | ClockName::SupervisionRequest
        )
    }

    fn counts_hours(self) -> bool {
        matches!(self, ClockName::Transfer | ClockName::Forwarding)
    }
}

/// Lengths of the clocks and how they count. The defaults are the regulation's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadlineSettings {
    /// Hours to transfer after the head's approval (art 5 ¶2).
    pub transfer_hours: u32,
    /// Hours for a unit not competent for a lead to forward it (art 7).
    pub forwarding_hours: u32,
    /// Days for the police to decide on filing a transfer (art 8).
    pub police_decision_days: u32,
    /// Days for the agency to request reconsideration of a non-filing (art 9 ¶1).
    pub reconsideration_request_days: u32,
    /// Days for the police to answer a reconsideration (art 9 ¶2).
    pub police_reconsideration_days: u32,
    /// Days for the agency to ask the procuratorate for 立案监督 (art 9 ¶2).
    pub supervision_request_days: u32,
    /// Days for the agency to hand over seized items and materials after filing (art 12).
    pub handover_days: u32,
    /// A review target for clues (线索), in days; shown as `police_review`, marked as not a
    /// legal deadline (Decree 310 sets none for clues). None: no target.
    pub clue_review_days: Option<u32>,
    /// The same for penalty records, which supervisors screen for 以罚代刑. None by default.
    pub penalty_review_days: Option<u32>,
    /// The day clocks that count working days instead of calendar days, e.g.
    /// `["reconsideration_request"]` where environment cases are argued to follow
    /// 环环监〔2017〕17号 ("3 个工作日"). Empty by default: Decree 310's "日" are calendar days.
    pub working_days: Vec<ClockName>,
    /// A running day clock is `due_soon` within this many hours of its end.
    pub due_soon_hours: u32,
    /// A running 24-hour clock is `due_soon` within this many hours of its end.
    pub due_soon_hours_short: u32,
    /// A directory of holiday files (`*.txt`, the format of `data/holidays/`) added to the
    /// built-in years, e.g. the next year's schedule once the State Council publishes it.
    pub holidays_dir: Option<PathBuf>,
    /// A clock may start up to this many seconds in the future (clocks of two hosts differ);
    /// beyond that it is `invalid`.
    pub start_skew_secs: u32,
}

impl Default for DeadlineSettings {
    fn default() -> Self {
        DeadlineSettings {
            transfer_hours: 24,
            forwarding_hours: 24,
            police_decision_days: 3,
            reconsideration_request_days: 3,
            police_reconsideration_days: 3,
            supervision_request_days: 3,
            handover_days: 3,
            clue_review_days: Some(7),
            penalty_review_days: None,
            working_days: Vec::new(),
            due_soon_hours: 24,
            due_soon_hours_short: 6,
            holidays_dir: None,
            start_skew_secs: 300,
        }
    }
}

/// Why the clocks cannot be set up: a setting out of range or a holiday file that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ClockSetupError {
    #[error("deadlines.{setting}: {problem}")]
    Setting {
        setting: &'static str,
        problem: String,
    },
    #[error("holiday calendar: {0}")]
    Calendar(#[from] CalendarError),
}

impl DeadlineSettings {
    /// The length of a clock: hours for the 24-hour clocks, days otherwise.
    fn length(&self, name: ClockName, kind: Option<LeadKind>) -> Option<u32> {
        Some(match name {
            ClockName::Transfer => self.transfer_hours,
            ClockName::Forwarding => self.forwarding_hours,
            ClockName::PoliceDecision => self.police_decision_days,
            ClockName::PoliceReview => match kind? {
                LeadKind::Clue => self.clue_review_days?,
                LeadKind::Penalty => self.penalty_review_days?,
                LeadKind::Transfer => return None,
            },
            ClockName::ReconsiderationRequest => self.reconsideration_request_days,
            ClockName::PoliceReconsideration => self.police_reconsideration_days,
            ClockName::SupervisionRequest => self.supervision_request_days,
            ClockName::Handover => self.handover_days,
        })
    }

    fn counting(&self, name: ClockName) -> DayCounting {
        if self.working_days.contains(&name) {
            DayCounting::WorkingDays
        } else {
            DayCounting::CalendarDays
        }
    }

    /// Checks every setting; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ClockSetupError> {
        let lengths: [(&'static str, Option<u32>, u32); 9] = [
            ("transfer_hours", Some(self.transfer_hours), 24 * 30),
            ("forwarding_hours", Some(self.forwarding_hours), 24 * 30),
            ("police_decision_days", Some(self.police_decision_days), 366),
            (
                "reconsideration_request_days",
                Some(self.reconsideration_request_days),
                366,
            ),
            (
                "police_reconsideration_days",
                Some(self.police_reconsideration_days),
                366,
            ),
            (
                "supervision_request_days",
                Some(self.supervision_request_days),
                366,
            ),
            ("handover_days", Some(self.handover_days), 366),
            ("clue_review_days", self.clue_review_days, 366),
            ("penalty_review_days", self.penalty_review_days, 366),
        ];
        for (setting, value, most) in lengths {
            if let Some(value) = value {
                if value == 0 || value > most {
                    return Err(ClockSetupError::Setting {
                        setting,
                        problem: format!("{value} is outside 1–{most}"),
                    });
                }
            }
        }
        if let Some(name) = self.working_days.iter().find(|name| name.counts_hours()) {
            return Err(ClockSetupError::Setting {
                setting: "working_days",
                problem: format!(
                    "{} counts hours, not days; only a day clock can count working days",
                    name.as_str()
                ),
            });
        }
        Ok(())
    }
}

/// The clock settings and the holiday calendar, ready to count.
#[derive(Clone, Debug)]
pub struct Clocks {
    settings: DeadlineSettings,
    calendar: Arc<HolidayCalendar>,
}

/// What became of a police decision, as far as the clocks care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Filed,
    /// 不予立案, or a case handed back (`returned`, art 13), which art 9 treats alike.
    NotFiled,
}

/// A police answer and when the agency received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub outcome: Outcome,
    /// When the police decided.
    pub at: DateTime<Utc>,
    /// When it reached the agency's feedback; only the hub knows.
    pub notified_at: Option<DateTime<Utc>>,
}

/// The times a lead's clocks depend on. Each side fills in what it knows; a clock whose start
/// is unknown to that side is not listed by it.
#[derive(Clone, Debug, Default)]
pub struct ClockFacts {
    pub kind: Option<LeadKind>,
    /// `source.approved_at` of a transfer.
    pub approved_at: Option<DateTime<Utc>>,
    /// The hub's acceptance of the transfer.
    pub accepted_at: Option<DateTime<Utc>>,
    /// Since when a unit not competent for the lead holds it (a lead no unit covers went to
    /// the fallback unit; or a unit forwarded it), and when it forwarded it.
    pub forwarding_since: Option<DateTime<Utc>>,
    pub forwarded_at: Option<DateTime<Utc>>,
    /// When the competent police unit received the lead (the police receipt, or the forward
    /// that brought it there); None once it left for an organ outside this system.
    pub police_received_at: Option<DateTime<Utc>>,
    /// The first decision (filed, not filed or returned).
    pub decision: Option<Answer>,
    pub reconsideration_requested_at: Option<DateTime<Utc>>,
    /// The answer to the reconsideration.
    pub reconsidered: Option<Answer>,
    pub supervision_requested_at: Option<DateTime<Utc>>,
    pub handed_over_at: Option<DateTime<Utc>>,
}

/// Where a clock stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockState {
    Running,
    DueSoon,
    /// Past its end with the duty not done.
    Overdue,
    /// Done in time.
    Met,
    /// Done late, or an agency's window that closed unused.
    Missed,
    /// The period reaches a date no holiday calendar covers: the end is not known.
    NoCalendar,
    /// The start is in the future beyond the allowed skew.
    Invalid,
}

/// One clock as shown: `lead-contract.md` §6 fields and what explains them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Clock {
    pub name: ClockName,
    pub basis: String,
    /// False for a configured target that is not a legal deadline.
    pub legal: bool,
    /// `agency` or `police`: who must act.
    pub party: String,
    pub starts_at: String,
    /// `24 hours`, `3 calendar days` or `3 working days`.
    pub length: String,
    /// The last instant that is on time; null when no calendar covers the period's end.
    pub due_at: Option<String>,
    /// The period's last day (Asia/Shanghai), for a clock in days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_day: Option<NaiveDate>,
    pub completed_at: Option<String>,
    pub state: ClockState,
    /// How late, in seconds: the act's delay past `due_at` (missed), or the time since it
    /// (overdue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_by_secs: Option<i64>,
    /// Why the end moved (a holiday), or what is wrong (no calendar, a future start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Clocks {
    /// Checks the settings and loads the holiday calendar: the built-in years and any in
    /// `holidays_dir`. A malformed or overlapping holiday file is an error naming file and line.
    pub fn load(settings: &DeadlineSettings) -> Result<Clocks, ClockSetupError> {
        settings.validate()?;
        let calendar = match &settings.holidays_dir {
            Some(dir) => HolidayCalendar::with_dir(dir)?,
            None => HolidayCalendar::built_in()?,
        };
        Ok(Clocks::new(settings.clone(), calendar))
    }

    pub fn new(settings: DeadlineSettings, calendar: HolidayCalendar) -> Clocks {
        Clocks {
            settings,
            calendar: Arc::new(calendar),
        }
    }

    pub fn settings(&self) -> &DeadlineSettings {
        &self.settings
    }

    pub fn calendar(&self) -> &HolidayCalendar {
        &self.calendar
    }

    /// Every clock that applies to the lead as `facts` describe it, with its state at `now`.
    pub fn clocks(&self, facts: &ClockFacts, now: DateTime<Utc>) -> Vec<Clock> {
        let mut clocks = Vec::new();
        let transfer = facts.kind == Some(LeadKind::Transfer);
        if let (true, Some(approved)) = (transfer, facts.approved_at) {
            clocks.push(self.clock(ClockName::Transfer, facts, approved, facts.accepted_at, now));
        }
        if let Some(since) = facts.forwarding_since {
            clocks.push(self.clock(ClockName::Forwarding, facts, since, facts.forwarded_at, now));
        }
        if let Some(received) = facts.police_received_at {
            let name = if transfer {
                ClockName::PoliceDecision
            } else {
                ClockName::PoliceReview
            };
            if self.settings.length(name, facts.kind).is_some() {
                let decided = facts.decision.map(|answer| answer.at);
                clocks.push(self.clock(name, facts, received, decided, now));
            }
        }
        if let Some(Answer {
            outcome: Outcome::NotFiled,
            notified_at: Some(notified),
            ..
        }) = facts.decision
        {
            clocks.push(self.clock(
                ClockName::ReconsiderationRequest,
                facts,
                notified,
                facts.reconsideration_requested_at,
                now,
            ));
        }
        if let Some(requested) = facts.reconsideration_requested_at {
            let answered = facts.reconsidered.map(|answer| answer.at);
            clocks.push(self.clock(
                ClockName::PoliceReconsideration,
                facts,
                requested,
                answered,
                now,
            ));
        }
        if let Some(Answer {
            outcome: Outcome::NotFiled,
            notified_at: Some(notified),
            ..
        }) = facts.reconsidered
        {
            clocks.push(self.clock(
                ClockName::SupervisionRequest,
                facts,
                notified,
                facts.supervision_requested_at,
                now,
            ));
        }
        let filed = [facts.decision, facts.reconsidered]
            .into_iter()
            .flatten()
            .find(|answer| answer.outcome == Outcome::Filed);
        if let Some(Answer {
            notified_at: Some(notified),
            ..
        }) = filed
        {
            clocks.push(self.clock(
                ClockName::Handover,
                facts,
                notified,
                facts.handed_over_at,
                now,
            ));
        }
        clocks
    }

    /// One clock from its start and completion.
    fn clock(
        &self,
        name: ClockName,
        facts: &ClockFacts,
        start: DateTime<Utc>,
        completed: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Clock {
        let length = self
            .settings
            .length(name, facts.kind)
            .expect("only clocks with a length are listed");
        let mut clock = Clock {
            name,
            basis: name.basis().to_owned(),
            legal: name != ClockName::PoliceReview,
            party: name.party().to_owned(),
            starts_at: local_text(start),
            length: String::new(),
            due_at: None,
            last_day: None,
            completed_at: completed.map(local_text),
            state: ClockState::Running,
            late_by_secs: None,
            note: None,
        };
        let due = if name.counts_hours() {
            clock.length = format!("{length} hours");
            Ok(start + Duration::hours(i64::from(length)))
        } else {
            let counting = self.settings.counting(name);
            clock.length = match counting {
                DayCounting::CalendarDays => format!("{length} calendar days"),
                DayCounting::WorkingDays => format!("{length} working days"),
            };
            self.end_of_period(start, length, counting)
                .map(|(last, moved)| {
                    clock.last_day = Some(last);
                    clock.note = moved;
                    end_of_day(last)
                })
        };
        let skew = Duration::seconds(i64::from(self.settings.start_skew_secs));
        if start > now + skew {
            clock.state = ClockState::Invalid;
            clock.note = Some(format!(
                "starts at {}, later than now ({}) by more than the allowed {} s of clock skew",
                local_text(start),
                local_text(now),
                self.settings.start_skew_secs
            ));
            return clock;
        }
        let due = match due {
            Ok(due) => due,
            Err(NotCovered { date }) => {
                clock.state = ClockState::NoCalendar;
                clock.note = Some(format!(
                    "no holiday calendar covers {date}: the end of the period is not known \
                     (add the year's schedule, see data/README.md)"
                ));
                return clock;
            }
        };
        clock.due_at = Some(local_text(due));
        let soon = Duration::hours(i64::from(if name.counts_hours() {
            self.settings.due_soon_hours_short
        } else {
            self.settings.due_soon_hours
        }));
        clock.state = match completed {
            Some(done) if done <= due => ClockState::Met,
            Some(done) => {
                clock.late_by_secs = Some((done - due).num_seconds().max(1));
                ClockState::Missed
            }
            None if now > due && name.is_option() => ClockState::Missed,
            None if now > due => {
                clock.late_by_secs = Some((now - due).num_seconds().max(1));
                ClockState::Overdue
            }
            None if now >= due - soon => ClockState::DueSoon,
            None => ClockState::Running,
        };
        clock
    }

    /// The last day of a period in days that starts with an event at `start`, and a note when
    /// a rest day moved it.
    fn end_of_period(
        &self,
        start: DateTime<Utc>,
        days: u32,
        counting: DayCounting,
    ) -> Result<(NaiveDate, Option<String>), NotCovered> {
        let start_day = start.with_timezone(&shanghai()).date_naive();
        let last = self.calendar.last_day(start_day, days, counting)?;
        let nominal = start_day + Duration::days(i64::from(days));
        let moved = (counting == DayCounting::CalendarDays && last != nominal).then(|| {
            let why = self
                .calendar
                .holiday_name(nominal)
                .map_or("a rest day".to_owned(), |name| format!("{name} (a holiday)"));
            format!(
                "day {days} of the period, {nominal}, is {why}; the period ends on the first working day after it, {last} (民法典 第二百零三条)"
            )
        });
        Ok((last, moved))
    }

    /// The reconsideration-request window of a lead, if it has one: closes at the clock's
    /// `due_at`. Used by the hub to refuse a late request.
    pub fn clock_named(
        &self,
        facts: &ClockFacts,
        name: ClockName,
        now: DateTime<Utc>,
    ) -> Option<Clock> {
        self.clocks(facts, now)
            .into_iter()
            .find(|clock| clock.name == name)
    }
}

/// 24:00 of `day` in Asia/Shanghai, as the last instant that is still on time.
fn end_of_day(day: NaiveDate) -> DateTime<Utc> {
    let next = day
        .succ_opt()
        .expect("dates a lead can carry have a next day");
    let midnight = shanghai()
        .from_local_datetime(&next.and_hms_opt(0, 0, 0).expect("midnight exists"))
        .single()
        .expect("a fixed offset maps every local time once");
    midnight.with_timezone(&Utc) - Duration::microseconds(1)
}

/// The clocks as JSON, for receipts and API answers.
pub fn to_json(clocks: &[Clock]) -> serde_json::Value {
    serde_json::to_value(clocks).expect("clocks serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_out_of_range_are_refused_naming_the_setting() {
        for (settings, named) in [
            (
                DeadlineSettings {
                    police_decision_days: 0,
                    ..DeadlineSettings::default()
                },
                "police_decision_days",
            ),
            (
                DeadlineSettings {
                    clue_review_days: Some(400),
                    ..DeadlineSettings::default()
                },
                "clue_review_days",
            ),
            (
                DeadlineSettings {
                    working_days: vec![ClockName::Forwarding],
                    ..DeadlineSettings::default()
                },
                "working_days",
            ),
        ] {
            let error = Clocks::load(&settings).unwrap_err().to_string();
            assert!(error.contains(named), "{error}");
        }
        assert!(Clocks::load(&DeadlineSettings::default()).is_ok());
    }

    #[test]
    fn the_clocks_a_lead_shows_follow_its_kind_and_its_answers() {
        let clocks = Clocks::load(&DeadlineSettings::default()).unwrap();
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc)
        };
        let names = |facts: &ClockFacts| -> Vec<ClockName> {
            clocks
                .clocks(facts, at("2026-12-01T12:00:00+08:00"))
                .iter()
                .map(|clock| clock.name)
                .collect()
        };
        let received = Some(at("2026-12-01T10:00:00+08:00"));
        let clue = ClockFacts {
            kind: Some(LeadKind::Clue),
            police_received_at: received,
            ..ClockFacts::default()
        };
        assert_eq!(names(&clue), [ClockName::PoliceReview]);
        let penalty = ClockFacts {
            kind: Some(LeadKind::Penalty),
            ..clue.clone()
        };
        assert!(
            names(&penalty).is_empty(),
            "no target for penalty records by default"
        );
        // The police's answer without the agency's receipt (the adapter's view) starts none of
        // the agency's windows; with it, the one art 9 or art 12 gives.
        let answered = |outcome, notified| ClockFacts {
            kind: Some(LeadKind::Transfer),
            police_received_at: received,
            decision: Some(Answer {
                outcome,
                at: at("2026-12-01T11:00:00+08:00"),
                notified_at: notified,
            }),
            ..ClockFacts::default()
        };
        assert_eq!(
            names(&answered(Outcome::NotFiled, None)),
            [ClockName::PoliceDecision]
        );
        let notified = Some(at("2026-12-01T11:00:01+08:00"));
        assert_eq!(
            names(&answered(Outcome::NotFiled, notified)),
            [ClockName::PoliceDecision, ClockName::ReconsiderationRequest]
        );
        assert_eq!(
            names(&answered(Outcome::Filed, notified)),
            [ClockName::PoliceDecision, ClockName::Handover]
        );
    }
}
