//! Named events: each logs with structured fields, then a short sentence, and counts.

use chrono::{DateTime, Utc};

use super::Metrics;
use crate::lead::{Agency, LeadId, LeadType};
use crate::store::{ClaimedMessage, PublishedMessage};
use crate::validate::Problem;

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
