//! Configuration: one typed tree whose defaults run the embedded hub.
//!
//! Layers, later ones winning: the defaults here, an optional TOML file (`--config` or
//! `LEADBRIDGE_CONFIG`), then `LEADBRIDGE_<SECTION>__<KEY>` environment variables (for example
//! `LEADBRIDGE_DATABASE__URL`, `LEADBRIDGE_KAFKA__BOOTSTRAP_SERVERS`). Unknown keys are errors,
//! so a misspelt setting never silently falls back to a default. Secrets are wrapped in
//! [`Secret`] and never printed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
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
pub struct Settings {
    /// Where the embedded default keeps its database and development PKI.
    pub data_dir: PathBuf,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
    pub relay: RelaySettings,
    pub limits: LimitSettings,
    /// Load schemas from this directory instead of the ones built into the binary.
    pub schema_dir: Option<PathBuf>,
    /// The police case-management adapter: its database, units, sinks and clocks.
    pub police: crate::police::PoliceSettings,
    /// Choices the law leaves open in the criminal-threshold rules (`schemas/rules/README.md`).
    pub rules: crate::rules::RulesSettings,
    pub log: LogSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("leadbridge-data"),
            server: ServerSettings::default(),
            database: DatabaseSettings::default(),
            kafka: KafkaSettings::default(),
            relay: RelaySettings::default(),
            limits: LimitSettings::default(),
            schema_dir: None,
            police: crate::police::PoliceSettings::default(),
            rules: crate::rules::RulesSettings::default(),
            log: LogSettings::default(),
        }
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
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls: None,
            handshake_timeout_secs: 10,
        }
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
    /// Largest lead, alone or in a batch, in bytes of its compact JSON as published. A larger
    /// one is refused with 422 `lead_too_large`, because Kafka could never take it. The
    /// default, 900 KiB, keeps the published event (the lead plus at most
    /// `kafka::LEAD_EVENT_OVERHEAD_BYTES` of metadata and headers) under librdkafka's default
    /// producer `message.max.bytes` (1,000,000) and Kafka's default topic `max.message.bytes`
    /// (1,048,588). The hub refuses to start when it would not fit the configured ones.
    pub max_lead_bytes: usize,
    /// How far in the future `reported_at` may be (the contract's 5 minutes).
    pub clock_skew_secs: i64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_body_bytes: 1024 * 1024,
            max_batch_body_bytes: 16 * 1024 * 1024,
            max_batch_leads: 500,
            max_lead_bytes: 900 * 1024,
            clock_skew_secs: 300,
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
pub struct ConfigError(String);

impl Settings {
    /// Defaults, then the file (if any), then `LEADBRIDGE_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError(format!(
                    "file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(
            Env::prefixed("LEADBRIDGE_")
                // Variables of the test harness and the config-file switch are not settings.
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    !key.starts_with("test_") && key != "config"
                })
                .split("__"),
        );
        let settings: Settings = figment
            .extract()
            .map_err(|error| ConfigError(error.to_string()))?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.relay.lease_secs * 1000 <= self.kafka.message_timeout_ms {
            return Err(ConfigError(format!(
                "relay.lease_secs ({} s) must exceed kafka.message_timeout_ms ({} ms), or a slow publish could be repeated by another relay",
                self.relay.lease_secs, self.kafka.message_timeout_ms
            )));
        }
        if self.limits.max_lead_bytes == 0 {
            return Err(ConfigError("limits.max_lead_bytes must be positive".into()));
        }
        if self.limits.max_batch_leads == 0 || self.relay.batch_size <= 0 {
            return Err(ConfigError(
                "limits.max_batch_leads and relay.batch_size must be positive".into(),
            ));
        }
        crate::kafka::check_passthrough(&self.kafka.client).map_err(ConfigError)?;
        Ok(())
    }

    /// The database URL in force: the configured one, or SQLite in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.expose().to_owned(),
            None => format!("sqlite:{}", self.data_dir.join("leadbridge.db").display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_describe_the_embedded_hub() {
        let settings = Settings::default();
        assert!(settings.kafka.bootstrap_servers.is_none());
        assert!(settings.server.tls.is_none());
        assert_eq!(
            settings.database_url(),
            "sqlite:leadbridge-data/leadbridge.db"
        );
        assert_eq!(settings.server.listen.to_string(), "127.0.0.1:8443");
        assert!(settings.check().is_ok());
    }

    #[test]
    fn a_file_overrides_the_defaults_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hub.toml");
        std::fs::write(
            &file,
            "[database]\nurl = \"postgres://hub:pw@db/hub\"\n[kafka]\nbootstrap_servers = \"k1:9092\"\n",
        )
        .unwrap();
        let settings = Settings::load(Some(&file)).unwrap();
        assert_eq!(settings.database_url(), "postgres://hub:pw@db/hub");
        assert_eq!(settings.kafka.bootstrap_servers.as_deref(), Some("k1:9092"));
        assert!(
            !format!("{settings:?}").contains("pw@"),
            "the password must not print"
        );

        std::fs::write(&file, "[kafka]\nbootstrap_server = \"typo:9092\"\n").unwrap();
        let error = Settings::load(Some(&file)).unwrap_err();
        assert!(error.to_string().contains("bootstrap_server"), "{error}");
    }

    #[test]
    fn librdkafka_keys_owned_by_the_hub_are_refused() {
        let mut settings = Settings::default();
        settings.kafka.client.insert("acks".into(), "1".into());
        let error = settings.check().unwrap_err();
        assert!(error.to_string().contains("acks"), "{error}");
        settings.kafka.client.clear();
        settings
            .kafka
            .client
            .insert("socket.keepalive.enable".into(), "true".into());
        assert!(settings.check().is_ok());
    }

    #[test]
    fn a_lease_shorter_than_the_publish_timeout_is_refused() {
        let mut settings = Settings::default();
        settings.relay.lease_secs = 10;
        assert!(settings.check().is_err());
    }
}
