//! Named events: each logs with structured fields, then a short sentence, and counts.

use chrono::{DateTime, Utc};

use super::Metrics;
use crate::contract::lead::{Agency, LeadId, LeadType};
use crate::contract::validate::Problem;
use crate::shared::outbox::{ClaimedMessage, PublishedMessage};

pub fn lead_accepted(
    metrics: &Metrics,
    agency: Agency,
    lead_type: LeadType,
    lead_id: LeadId,
    revision: i64,
) {
    tracing::info!(%agency, %lead_type, %lead_id, revision, "Lead accepted.");
    metrics
        .leads_accepted
        .with_label_values(&[agency.as_str(), lead_type.as_str()])
        .inc();
}

pub fn lead_replayed(metrics: &Metrics, agency: Agency, lead_id: LeadId, revision: i64) {
    tracing::info!(%agency, %lead_id, revision, "Lead replayed; nothing changed.");
    metrics
        .leads_replayed
        .with_label_values(&[agency.as_str()])
        .inc();
}

pub fn lead_invalid(metrics: &Metrics, agency: Agency, problems: &[Problem]) {
    let codes: Vec<&str> = problems.iter().map(|p| p.code).collect();
    tracing::info!(%agency, problems = problems.len(), ?codes, "Lead rejected as invalid.");
    metrics
        .leads_rejected
        .with_label_values(&[agency.as_str(), "invalid"])
        .inc();
    for code in codes {
        metrics.validation_problems.with_label_values(&[code]).inc();
    }
}

pub fn lead_conflict(metrics: &Metrics, agency: Agency, lead_id: LeadId, reason: &str) {
    tracing::info!(%agency, %lead_id, reason, "Lead rejected as conflicting.");
    metrics
        .leads_rejected
        .with_label_values(&[agency.as_str(), "conflict"])
        .inc();
}

pub fn lead_foreign(metrics: &Metrics, caller: Agency, claimed: Agency) {
    tracing::warn!(%caller, %claimed, "Lead refused: it names another agency.");
    metrics
        .leads_rejected
        .with_label_values(&[caller.as_str(), "foreign_agency"])
        .inc();
}

pub fn lead_published(metrics: &Metrics, message: &ClaimedMessage, coordinates: &PublishedMessage) {
    tracing::debug!(
        lead_id = %message.lead_id,
        revision = message.revision,
        topic = %message.topic,
        partition = coordinates.partition,
        offset = coordinates.offset,
        "Lead published."
    );
    metrics
        .leads_published
        .with_label_values(&[&message.topic])
        .inc();
}

pub fn publish_failed(
    metrics: &Metrics,
    message: &ClaimedMessage,
    error: &str,
    retry_at: DateTime<Utc>,
) {
    tracing::warn!(
        lead_id = %message.lead_id,
        revision = message.revision,
        topic = %message.topic,
        attempts = message.attempts + 1,
        %retry_at,
        error,
        "Publish failed; will retry."
    );
    metrics
        .publish_failures
        .with_label_values(&[&message.topic])
        .inc();
}

/// A message Kafka will never accept was marked failed for good (not retried).
pub fn publish_failed_permanently(
    metrics: &Metrics,
    message: &ClaimedMessage,
    class: &str,
    error: &str,
) {
    tracing::warn!(
        lead_id = %message.lead_id,
        revision = message.revision,
        topic = %message.topic,
        event_id = %message.event_id,
        class,
        error,
        "Publish failed for good; the message is marked failed and not retried."
    );
    metrics
        .publish_failed
        .with_label_values(&[&message.topic, class])
        .inc();
}

/// A consumed message was sent to the dead-letter topic instead of being processed.
pub fn message_dead_lettered(
    metrics: &Metrics,
    stage: &str,
    class: &str,
    error: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) {
    tracing::warn!(
        stage,
        class,
        error,
        topic,
        partition,
        offset,
        "Message dead-lettered."
    );
    metrics
        .dead_letters
        .with_label_values(&[stage, class])
        .inc();
}

/// Published outbox rows past their retention were deleted.
pub fn outbox_pruned(metrics: &Metrics, outbox: &'static str, count: u64) {
    tracing::info!(
        outbox,
        count,
        "Pruned published outbox rows past their retention."
    );
    metrics
        .outbox_pruned
        .with_label_values(&[outbox])
        .inc_by(count);
}

/// The police adapter received a message from a leads topic.
pub fn police_message_consumed(metrics: &Metrics, topic: &str, partition: i32, offset: i64) {
    tracing::debug!(
        topic,
        partition,
        offset,
        "Message consumed by the police adapter."
    );
    metrics.police_consumed.with_label_values(&[topic]).inc();
}

/// A lead revision was assessed against the criminal thresholds and recorded (once per
/// revision: a redelivery is not assessed again).
pub fn police_lead_assessed(
    metrics: &Metrics,
    lead_id: LeadId,
    revision: i64,
    priority: &str,
    offences: &[&str],
) {
    tracing::info!(%lead_id, revision, priority, ?offences, "Lead assessed.");
    metrics.police_assessed.with_label_values(&[priority]).inc();
    for offence in offences {
        metrics
            .police_suspected_offences
            .with_label_values(&[offence])
            .inc();
    }
}

/// A recorded lead revision was routed to these units (once per revision).
pub fn police_lead_routed(metrics: &Metrics, lead_id: LeadId, revision: i64, units: &[&str]) {
    tracing::info!(%lead_id, revision, ?units, "Lead received by the police and routed.");
    for unit in units {
        metrics.police_routed.with_label_values(&[unit]).inc();
    }
}

/// A unit has the lead revision (counted once, when the delivery is recorded).
pub fn police_lead_delivered(
    metrics: &Metrics,
    lead_id: LeadId,
    revision: i64,
    unit: &str,
    sink: &str,
    cms_ref: &str,
) {
    tracing::info!(%lead_id, revision, unit, sink, cms_ref, "Lead delivered.");
    metrics
        .police_delivered
        .with_label_values(&[unit, sink])
        .inc();
}

/// One delivery attempt failed. `retry_at` is when the next attempt is due, or `None` when the
/// delivery is given up (dead-lettered next).
pub fn police_delivery_failed(
    metrics: &Metrics,
    lead_id: LeadId,
    unit: &str,
    attempts: i64,
    retryable: bool,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) {
    match retry_at {
        Some(retry_at) => {
            tracing::warn!(%lead_id, unit, attempts, retryable, %retry_at, error, "Delivery failed; will retry.")
        }
        None => {
            tracing::error!(%lead_id, unit, attempts, retryable, error, "Delivery failed; given up.")
        }
    }
    let retryable = if retryable { "true" } else { "false" };
    metrics
        .police_delivery_failures
        .with_label_values(&[unit, retryable])
        .inc();
}

/// A delivery was given up and sent to the dead-letter topic; it counts in the same
/// `dead_letters_total{stage,class}` as the consumers' dead letters.
pub fn police_delivery_dead_lettered(
    metrics: &Metrics,
    stage: &str,
    class: &str,
    lead_id: LeadId,
    revision: i64,
    unit: &str,
) {
    tracing::warn!(stage, class, %lead_id, revision, unit, "Delivery dead-lettered.");
    metrics
        .dead_letters
        .with_label_values(&[stage, class])
        .inc();
}

/// The states of a circuit breaker as `police_breaker_state` labels them.
pub const BREAKER_STATES: [&str; 3] = ["closed", "open", "half_open"];

/// The circuit to a unit's case-management system entered `state` (one of
/// [`BREAKER_STATES`]). The gauge shows 1 for that state and 0 for the others.
pub fn police_breaker_state(
    metrics: &Metrics,
    unit: &str,
    url: &str,
    state: &str,
    error: Option<&str>,
) {
    match (state, error) {
        ("open", Some(error)) => tracing::warn!(
            unit,
            url,
            state,
            error,
            "Circuit to the case-management system opened."
        ),
        ("closed", _) => tracing::info!(
            unit,
            url,
            state,
            "Circuit to the case-management system closed."
        ),
        _ => tracing::info!(
            unit,
            url,
            state,
            "Circuit to the case-management system changed state."
        ),
    }
    breaker_gauge(metrics, unit, state);
    metrics
        .police_breaker_transitions
        .with_label_values(&[unit, state])
        .inc();
}

/// A unit's circuit is watched from now on; it starts closed (not counted as a transition).
pub fn police_breaker_watched(metrics: &Metrics, unit: &str, url: &str) {
    tracing::debug!(
        unit,
        url,
        "Circuit to the case-management system watched; it is closed."
    );
    breaker_gauge(metrics, unit, "closed");
}

fn breaker_gauge(metrics: &Metrics, unit: &str, state: &str) {
    for other in BREAKER_STATES {
        metrics
            .police_breaker_state
            .with_label_values(&[unit, other])
            .set(i64::from(other == state));
    }
}

/// How many messages of a leads partition the adapter's group has not committed yet.
pub fn police_consumer_lag(metrics: &Metrics, topic: &str, partition: i32, lag: i64) {
    tracing::trace!(topic, partition, lag, "Consumer lag measured.");
    metrics
        .police_consumer_lag
        .with_label_values(&[topic, &partition.to_string()])
        .set(lag);
}
