//! Logs and metrics. Things that happen to leads are named events (see [`events`]): each one
//! logs with structured fields and updates a Prometheus metric, so operators and tests can
//! observe the same facts.

pub mod events;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tracing_subscriber::EnvFilter;

use crate::shared::config::LogSettings;

/// Installs the global log subscriber (once; later calls are ignored).
pub fn init_logging(settings: &LogSettings) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    // Logs go to stderr: stdout carries what a user reads (the URL, the curl line) and what
    // scripts parse.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = if settings.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The hub's Prometheus metrics. Cheap to clone; clones share the series.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub leads_accepted: IntCounterVec,
    pub leads_replayed: IntCounterVec,
    pub leads_rejected: IntCounterVec,
    pub validation_problems: IntCounterVec,
    pub leads_published: IntCounterVec,
    pub publish_failures: IntCounterVec,
    pub publish_failed: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub outbox_backlog: IntGauge,
    pub outbox_pruned: IntCounterVec,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub connections_open: IntGauge,
    pub connections_rejected: IntCounterVec,
    pub connections_closed: IntCounterVec,
    pub connection_accept_errors: IntCounter,
    pub requests_refused: IntCounterVec,
    pub police_consumed: IntCounterVec,
    pub police_assessed: IntCounterVec,
    pub police_suspected_offences: IntCounterVec,
    pub police_routed: IntCounterVec,
    pub police_delivered: IntCounterVec,
    pub police_delivery_failures: IntCounterVec,
    pub police_breaker_state: IntGaugeVec,
    pub police_breaker_transitions: IntCounterVec,
    pub police_consumer_lag: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("leadbridge".into()), None).expect("a valid metrics prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry
                .register(Box::new(counter.clone()))
                .expect("unique counter");
            counter
        };
        let leads_accepted = counter(
            "leads_accepted_total",
            "Leads and revisions accepted (202).",
            &["agency", "lead_type"],
        );
        let leads_replayed = counter(
            "leads_replayed_total",
            "Exact replays of an accepted lead (200).",
            &["agency"],
        );
        let leads_rejected = counter(
            "leads_rejected_total",
            "Leads refused, by reason (invalid, conflict, foreign_agency).",
            &["agency", "reason"],
        );
        let validation_problems = counter(
            "validation_problems_total",
            "Validation problems reported, by code.",
            &["code"],
        );
        let leads_published = counter(
            "leads_published_total",
            "Outbox messages acknowledged by Kafka.",
            &["topic"],
        );
        let publish_failures = counter(
            "publish_failures_total",
            "Failed publish attempts (retried).",
            &["topic"],
        );
        let publish_failed = counter(
            "publish_failed_total",
            "Outbox messages Kafka refused for good (terminal; the lead is publish_failed).",
            &["topic", "class"],
        );
        let dead_letters = counter(
            "dead_letters_total",
            "Messages sent to the dead-letter topic, by stage and error class.",
            &["stage", "class"],
        );
        let requests_refused = counter(
            "requests_refused_total",
            "Requests the request guard answered itself: overloaded, timeout, panic.",
            &["reason"],
        );
        let http_requests = counter(
            "http_requests_total",
            "HTTP requests by route and status.",
            &["method", "route", "status"],
        );
        let outbox_pruned = counter(
            "outbox_pruned_total",
            "Published outbox rows deleted after relay.retention_hours, by outbox (hub, police).",
            &["outbox"],
        );
        let outbox_backlog = IntGauge::new(
            "outbox_backlog",
            "Outbox messages not yet acknowledged by Kafka.",
        )
        .expect("valid gauge");
        registry
            .register(Box::new(outbox_backlog.clone()))
            .expect("unique gauge");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route"],
        )
        .expect("valid histogram");
        registry
            .register(Box::new(http_duration.clone()))
            .expect("unique histogram");
        let connections_open = IntGauge::new(
            "connections_open",
            "HTTPS connections accepted and not yet closed (from accept, before the handshake).",
        )
        .expect("valid gauge");
        registry
            .register(Box::new(connections_open.clone()))
            .expect("unique gauge");
        let connections_rejected = counter(
            "connections_rejected_total",
            "HTTPS connections closed at accept, by the cap they exceeded (max_connections, max_connections_per_address).",
            &["reason"],
        );
        let connections_closed = counter(
            "connections_closed_total",
            "HTTPS connections the server closed on a client's slowness or silence (handshake_timeout, handshake_failed, header_timeout, idle).",
            &["reason"],
        );
        let connection_accept_errors = IntCounter::new(
            "connection_accept_errors_total",
            "Failed accepts of HTTPS connections (e.g. out of file descriptors).",
        )
        .expect("valid counter");
        registry
            .register(Box::new(connection_accept_errors.clone()))
            .expect("unique counter");
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let gauge = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
            registry
                .register(Box::new(gauge.clone()))
                .expect("unique gauge");
            gauge
        };
        let police_consumed = counter(
            "police_messages_consumed_total",
            "Messages the police adapter received from the leads topics (redeliveries included).",
            &["topic"],
        );
        let police_assessed = counter(
            "police_leads_assessed_total",
            "Lead revisions the police adapter assessed and recorded, by priority (once per revision).",
            &["priority"],
        );
        let police_suspected_offences = counter(
            "police_suspected_offences_total",
            "Suspected offences found by the assessment, by offence (a lead can suspect several).",
            &["offence"],
        );
        let police_routed = counter(
            "police_leads_routed_total",
            "Lead revisions routed to a police unit (a high-priority lead also goes to the city unit).",
            &["unit"],
        );
        let police_delivered = counter(
            "police_deliveries_total",
            "Lead revisions delivered to a unit, by unit and sink (inbox, http).",
            &["unit", "sink"],
        );
        let police_delivery_failures = counter(
            "police_delivery_failures_total",
            "Failed delivery attempts, by unit and whether another attempt can help.",
            &["unit", "retryable"],
        );
        let police_breaker_state = gauge(
            "police_breaker_state",
            "1 for the state the circuit to a unit's case-management system is in (closed, open, half_open), 0 for the others.",
            &["unit", "state"],
        );
        let police_breaker_transitions = counter(
            "police_breaker_transitions_total",
            "Times the circuit to a unit's case-management system entered a state.",
            &["unit", "state"],
        );
        let police_consumer_lag = gauge(
            "police_consumer_lag",
            "Messages on a leads partition after the adapter group's committed offset (high watermark minus committed).",
            &["topic", "partition"],
        );
        Metrics {
            registry,
            leads_accepted,
            leads_replayed,
            leads_rejected,
            validation_problems,
            leads_published,
            publish_failures,
            publish_failed,
            dead_letters,
            outbox_backlog,
            outbox_pruned,
            http_requests,
            http_duration,
            connections_open,
            connections_rejected,
            connections_closed,
            connection_accept_errors,
            requests_refused,
            police_consumed,
            police_assessed,
            police_suspected_offences,
            police_routed,
            police_delivered,
            police_delivery_failures,
            police_breaker_state,
            police_breaker_transitions,
            police_consumer_lag,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding metrics into memory cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
