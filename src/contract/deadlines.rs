//! The lengths of the Decree 310 clocks both sides count: the adapter shows them to
//! investigators, the hub enforces the agency's window for a reconsideration request.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadlineSettings {
    /// Police decide on filing within this many days of receipt (Decree 310 art. 8).
    pub police_decision_days: i64,
    /// The agency may request reconsideration within this many days of a non-filing (art. 9).
    pub reconsideration_request_days: i64,
    /// The police answer a reconsideration within this many days (art. 9).
    pub police_reconsideration_days: i64,
}

impl Default for DeadlineSettings {
    fn default() -> Self {
        DeadlineSettings {
            police_decision_days: 3,
            reconsideration_request_days: 3,
            police_reconsideration_days: 3,
        }
    }
}

/// The times a lead's clocks depend on.
#[derive(Clone, Debug, Default)]
pub struct ClockInputs {
    pub received_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
    pub not_filed: bool,
    pub reconsideration_requested_at: Option<DateTime<Utc>>,
    pub reconsidered_at: Option<DateTime<Utc>>,
}

/// The Decree 310 deadlines of a lead, as stored and sent: name, due time, completion time.
pub fn deadlines(inputs: &ClockInputs, settings: &DeadlineSettings) -> Value {
    let mut list = Vec::new();
    let entry = |name: &str, due: DateTime<Utc>, done: Option<DateTime<Utc>>| json!({"name": name, "due_at": due.to_rfc3339(), "completed_at": done.map(|d| d.to_rfc3339())});
    if let Some(received) = inputs.received_at {
        list.push(entry(
            "police_decision",
            received + Duration::days(settings.police_decision_days),
            inputs.decided_at,
        ));
    }
    if let (true, Some(decided)) = (inputs.not_filed, inputs.decided_at) {
        list.push(entry(
            "reconsideration_request",
            decided + Duration::days(settings.reconsideration_request_days),
            inputs.reconsideration_requested_at,
        ));
    }
    if let Some(requested) = inputs.reconsideration_requested_at {
        list.push(entry(
            "police_reconsideration",
            requested + Duration::days(settings.police_reconsideration_days),
            inputs.reconsidered_at,
        ));
    }
    Value::Array(list)
}

/// Adds each deadline's state at `now`: `running`, `overdue`, `met` or `met_late`. An open
/// agency-side window that passed unused is `expired` rather than overdue. A list that is not
/// what [`deadlines`] writes (not an array, a due time missing or not RFC 3339) is an error
/// saying what is wrong, never a `running` clock.
pub fn with_states(deadlines: &Value, now: DateTime<Utc>) -> Result<Value, String> {
    let list = deadlines
        .as_array()
        .ok_or_else(|| format!("deadlines {deadlines} are not a list"))?;
    let time = |deadline: &Value, field: &str| -> Result<Option<DateTime<Utc>>, String> {
        match &deadline[field] {
            Value::Null => Ok(None),
            Value::String(text) => DateTime::parse_from_rfc3339(text)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|error| format!("deadline {field} {text:?} is not a time: {error}")),
            other => Err(format!("deadline {field} {other} is not a time")),
        }
    };
    list.iter()
        .map(|deadline| {
            let due = time(deadline, "due_at")?
                .ok_or_else(|| format!("deadline {deadline} has no due_at"))?;
            let done = time(deadline, "completed_at")?;
            let agency_window = deadline["name"] == "reconsideration_request";
            let state = match done {
                Some(done) if done <= due => "met",
                Some(_) => "met_late",
                None if now > due && agency_window => "expired",
                None if now > due => "overdue",
                None => "running",
            };
            let mut deadline = deadline.clone();
            deadline["state"] = json!(state);
            Ok(deadline)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_that_do_not_read_back_are_an_error_never_running() {
        let now = Utc::now();
        for damaged in [
            json!({"not": "a list"}),
            json!([{"name": "police_decision", "due_at": "soon", "completed_at": null}]),
            json!([{"name": "police_decision", "completed_at": null}]),
            json!([{"name": "police_decision", "due_at": 17, "completed_at": null}]),
        ] {
            assert!(with_states(&damaged, now).is_err(), "{damaged}");
        }
        let fine = json!([{"name": "police_decision", "due_at": "2999-01-01T00:00:00+00:00", "completed_at": null}]);
        assert_eq!(with_states(&fine, now).unwrap()[0]["state"], "running");
    }
}
