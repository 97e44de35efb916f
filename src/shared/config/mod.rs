//! The settings every role shares (server, database, Kafka, relay, limits, logging), typed,
//! with defaults that run the embedded hub. The whole tree a process reads, with the roles'
//! own sections, is `app::Settings`.
//!
//! Layers, later ones winning: the defaults here, an optional TOML file (`--config` or
//! `LEADBRIDGE_CONFIG`), then `LEADBRIDGE_<SECTION>__<KEY>` environment variables (for example
//! `LEADBRIDGE_DATABASE__URL`, `LEADBRIDGE_KAFKA__BOOTSTRAP_SERVERS`). Unknown keys are errors,
//! so a misspelt setting never silently falls back to a default. Secrets are wrapped in
//! [`Secret`] and never printed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A value that must not appear in logs or error messages.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address of the HTTPS API (agency, police and supervisor paths on one address).
    pub listen: SocketAddr,
    /// Server certificate and client CA. Absent: a development CA is generated under
    /// `<data_dir>/pki` with demo agency certificates.
    pub tls: Option<TlsSettings>,
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout_secs: u64,
    /// The organisation (`O`) every client certificate's subject must name, exactly once; the
    /// development PKI's is `LeadBridge`. Set it to the `O` your CA writes.
    pub client_organization: String,
    /// How long an HTTP/1 client may take to send a complete request head (request line and
    /// headers). Against slowloris: a client trickling its headers holds a connection no longer
    /// than this. Hyper starts the clock whenever it waits for a head, so on an HTTP/1
    /// keep-alive connection it also bounds the wait for the next request.
    pub header_read_timeout_secs: u64,
    /// A connection with no request in flight (none being received, handled or answered) for
    /// this long is closed. This also bounds a connection that never makes a request at all
    /// (counted from the end of the TLS handshake), whatever bytes it trickles, and an HTTP/2
    /// connection whose client answers pings but sends nothing.
    pub idle_timeout_secs: u64,
    /// How often the server pings an HTTP/2 client whose connection is quiet, to notice a peer
    /// that vanished without closing (a cut network path, a crashed host).
    pub http2_keep_alive_interval_secs: u64,
    /// How long the server waits for the answer to such a ping before closing.
    pub http2_keep_alive_timeout_secs: u64,
    /// Most connections open at once, counted from accept (before the TLS handshake). Further
    /// connections are closed at once. Keep it well below the process's open-file limit
    /// (`ulimit -n`), which the database pool, Kafka clients and log files share: a cap the
    /// hub enforces itself fails one connection cleanly, running out of descriptors fails
    /// whatever needed one next.
    pub max_connections: usize,
    /// Most connections open at once from one IP address, so one client (or one address
    /// behind which an attacker sits) cannot take the whole of `max_connections`. An agency's
    /// workers behind one NAT address share this.
    pub max_connections_per_address: usize,
    /// Most requests handled at once; one more is answered 503 `overloaded` with
    /// `Retry-After` at once rather than queued. `/healthz` and `/metrics` are exempt.
    pub max_concurrent_requests: usize,
    /// Longest a request may take, reading its body included; past it the answer is 503
    /// `timeout` (what was committed stays committed; a retried submission is a replay).
    pub request_timeout_secs: u64,
    /// On shutdown, how long open connections get to finish the requests in progress before
    /// they are closed.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls: None,
            handshake_timeout_secs: 10,
            client_organization: crate::shared::identity::ORGANIZATION.to_owned(),
            // Generous for any real client, whose request head is one packet or a few.
            header_read_timeout_secs: 10,
            // Agencies send in bursts; a minute lets a burst reuse its connections without
            // letting an idle client hold one indefinitely.
            idle_timeout_secs: 60,
            // Below the idle timeouts of common NAT devices and load balancers (60 s and up),
            // so a live but quiet HTTP/2 connection is not dropped silently on the way.
            http2_keep_alive_interval_secs: 20,
            http2_keep_alive_timeout_secs: 20,
            // Fits under an open-file limit of 8192 with room for everything else; raise
            // both together.
            max_connections: 4096,
            // Far more than an agency's batch workers need, and 16 addresses are needed to
            // exhaust `max_connections`.
            max_connections_per_address: 256,
            // Each request holds at most one database connection at a time and validation
            // runs on the blocking pool; beyond a few hundred, requests only wait longer.
            max_concurrent_requests: 512,
            // A 16 MiB batch over a slow agency link, with room to spare.
            request_timeout_secs: 60,
            // Longer than a batch takes to store; shorter than an orchestrator's kill timeout
            // (Kubernetes: 30 s).
            shutdown_grace_secs: 20,
        }
    }
}

impl ServerSettings {
    /// Zero would not mean "no limit" but "refuse everything" (a zero timeout closes every
    /// connection at once), which is never what an operator meant.
    pub fn check(&self) -> Result<(), ConfigError> {
        let values = [
            (
                "handshake_timeout_secs",
                self.handshake_timeout_secs as u128,
            ),
            (
                "header_read_timeout_secs",
                self.header_read_timeout_secs as u128,
            ),
            ("idle_timeout_secs", self.idle_timeout_secs as u128),
            (
                "http2_keep_alive_interval_secs",
                self.http2_keep_alive_interval_secs as u128,
            ),
            (
                "http2_keep_alive_timeout_secs",
                self.http2_keep_alive_timeout_secs as u128,
            ),
            ("max_connections", self.max_connections as u128),
            (
                "max_connections_per_address",
                self.max_connections_per_address as u128,
            ),
            (
                "max_concurrent_requests",
                self.max_concurrent_requests as u128,
            ),
            ("request_timeout_secs", self.request_timeout_secs as u128),
            ("shutdown_grace_secs", self.shutdown_grace_secs as u128),
        ];
        for (name, value) in values {
            if value == 0 {
                return Err(ConfigError(format!(
                    "server.{name} must be positive (it is 0)"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain of the server.
    pub cert: PathBuf,
    /// PEM private key of the server.
    pub key: PathBuf,
    /// PEM CA certificate(s) that issue client certificates (agencies, investigators,
    /// supervisors).
    pub client_ca: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host/db` or `sqlite:path`. Absent: SQLite in the data dir.
    pub url: Option<Secret>,
    /// Pool size for PostgreSQL (SQLite always uses one connection).
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: None,
            max_connections: 16,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `host:port,…` of the Kafka cluster. Absent: an in-process Kafka-protocol broker
    /// (librdkafka's mock cluster) is started.
    pub bootstrap_servers: Option<String>,
    /// First part of every topic name: `<prefix>.leads.<agency>.v1`.
    pub topic_prefix: String,
    /// Create the hub's topics at start-up if they do not exist.
    pub create_topics: bool,
    pub topic_partitions: i32,
    pub topic_replication_factor: i32,
    /// How long the producer keeps trying one message before reporting failure.
    pub message_timeout_ms: u64,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: Option<String>,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    /// CA file for the brokers' certificates.
    pub ssl_ca_location: Option<PathBuf>,
    /// Client certificate and key for mutual TLS with the brokers.
    pub ssl_certificate_location: Option<PathBuf>,
    pub ssl_key_location: Option<PathBuf>,
    /// Further librdkafka properties, passed through. Keys the typed settings above or the
    /// hub's delivery guarantees own are refused.
    pub client: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            bootstrap_servers: None,
            topic_prefix: "leadbridge".into(),
            create_topics: true,
            topic_partitions: 3,
            topic_replication_factor: 1,
            message_timeout_ms: 30_000,
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            client: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySettings {
    /// Messages claimed per round.
    pub batch_size: i64,
    /// How often an idle relay looks for work (it is also woken by new leads in-process).
    pub poll_interval_ms: u64,
    /// How long a claim lasts; must exceed `kafka.message_timeout_ms`.
    pub lease_secs: u64,
    /// Backoff after a failed publish: doubles from `backoff_initial_ms` up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// A lead with no police receipt this long after publication is published again.
    pub republish_after_secs: u64,
    /// Published outbox rows older than this are deleted by the relay, in batches. Must be
    /// positive: the outbox is a queue, not the record, and nothing is kept forever (what was
    /// published where stays in the audit ledger). Rows still waiting, failed for good, or
    /// needed to republish a lead without a police receipt are kept whatever their age.
    pub retention_hours: u64,
    /// How often the relay looks for published rows past `retention_hours`.
    pub prune_interval_secs: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            batch_size: 500,
            poll_interval_ms: 200,
            lease_secs: 120,
            backoff_initial_ms: 500,
            backoff_max_ms: 60_000,
            republish_after_secs: 600,
            retention_hours: 7 * 24,
            prune_interval_secs: 300,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Largest body of `POST /v1/leads` (the contract's 1 MiB).
    pub max_body_bytes: usize,
    /// Largest body of `POST /v1/leads/batch`.
    pub max_batch_body_bytes: usize,
    /// Most leads in one batch (the contract's 500).
    pub max_batch_leads: usize,
    /// Largest body of the small JSON requests: a police decision and a reconsideration request
    /// (64 KiB: far above the longest reason allowed, far below what a lead may take).
    pub max_small_body_bytes: usize,
    /// Largest lead, alone or in a batch, in bytes of its compact JSON as published. A larger
    /// one is refused with 422 `lead_too_large`, because Kafka could never take it. The
    /// default, 900 KiB, keeps the published event (the lead plus at most
    /// `kafka::LEAD_EVENT_OVERHEAD_BYTES` of metadata and headers) under librdkafka's default
    /// producer `message.max.bytes` (1,000,000) and Kafka's default topic `max.message.bytes`
    /// (1,048,588). The hub refuses to start when it would not fit the configured ones.
    pub max_lead_bytes: usize,
    /// How far in the future `reported_at` may be (the contract's 5 minutes).
    pub clock_skew_secs: i64,
    /// Single `POST /v1/leads` submissions share one transaction: the committer waits this
    /// long after the first submission of a group for others (0: only those already waiting).
    /// It bounds the latency added at low load; under load, groups fill while the previous
    /// group commits.
    pub group_commit_wait_ms: u64,
    /// Most single submissions in one group commit.
    pub group_commit_max_leads: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_body_bytes: 1024 * 1024,
            max_batch_body_bytes: 16 * 1024 * 1024,
            max_batch_leads: 500,
            max_small_body_bytes: 64 * 1024,
            max_lead_bytes: 900 * 1024,
            clock_skew_secs: 300,
            group_commit_wait_ms: 2,
            group_commit_max_leads: 256,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info,leadbridge=debug`. `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: "text".into(),
            filter: "info".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);
