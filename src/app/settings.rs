//! The settings of a whole process: the shared parts (`shared::config`) and each role's, read
//! from defaults, then a TOML file, then `LEADBRIDGE_*` variables, and checked together.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::police::rules::RulesSettings;
use crate::police::PoliceSettings;
use crate::shared::config::{
    ConfigError, DatabaseSettings, KafkaSettings, LimitSettings, LogSettings, RelaySettings,
    ServerSettings,
};

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
    pub police: PoliceSettings,
    /// Choices the law leaves open in the criminal-threshold rules (`schemas/rules/README.md`).
    pub rules: RulesSettings,
    pub log: LogSettings,
    /// The transparency logs' keys and checkpoints (supervision contract §2).
    pub transparency: crate::shared::audit::log::TransparencySettings,
    /// The supervision views: the screening window and the monthly report's weights.
    pub supervision: crate::hub::supervise::reports::SupervisionSettings,
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
            police: PoliceSettings::default(),
            rules: RulesSettings::default(),
            log: LogSettings::default(),
            transparency: Default::default(),
            supervision: Default::default(),
        }
    }
}

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
                // Variables of the test harness (`LEADBRIDGE_TEST_*`), of the local services'
                // scripts (`LEADBRIDGE_SERVICES_DIR`) and the config-file switch are not settings.
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    !key.starts_with("test_") && key != "services_dir" && key != "config"
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
        if self.limits.group_commit_max_leads == 0 {
            return Err(ConfigError(
                "limits.group_commit_max_leads must be positive".into(),
            ));
        }
        if self.limits.max_batch_leads == 0 || self.relay.batch_size <= 0 {
            return Err(ConfigError(
                "limits.max_batch_leads and relay.batch_size must be positive".into(),
            ));
        }
        if self.relay.retention_hours == 0 || self.relay.prune_interval_secs == 0 {
            // Zero would read as "keep forever" to some and "delete at once" to others; the
            // outbox must not grow forever, so a long retention is spelt out instead.
            return Err(ConfigError(
                "relay.retention_hours and relay.prune_interval_secs must be positive".into(),
            ));
        }
        if i64::try_from(self.relay.retention_hours)
            .ok()
            .and_then(chrono::Duration::try_hours)
            .is_none()
        {
            return Err(ConfigError("relay.retention_hours is too large".into()));
        }
        self.server.check()?;
        crate::shared::kafka::check_passthrough(&self.kafka.client).map_err(ConfigError)?;
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
    fn a_zero_connection_limit_or_timeout_is_refused_by_name() {
        let zeroed: [fn(&mut ServerSettings); 10] = [
            |s| s.handshake_timeout_secs = 0,
            |s| s.header_read_timeout_secs = 0,
            |s| s.idle_timeout_secs = 0,
            |s| s.http2_keep_alive_interval_secs = 0,
            |s| s.http2_keep_alive_timeout_secs = 0,
            |s| s.max_connections = 0,
            |s| s.max_connections_per_address = 0,
            |s| s.max_concurrent_requests = 0,
            |s| s.request_timeout_secs = 0,
            |s| s.shutdown_grace_secs = 0,
        ];
        let names = [
            "handshake_timeout_secs",
            "header_read_timeout_secs",
            "idle_timeout_secs",
            "http2_keep_alive_interval_secs",
            "http2_keep_alive_timeout_secs",
            "max_connections",
            "max_connections_per_address",
            "max_concurrent_requests",
            "request_timeout_secs",
            "shutdown_grace_secs",
        ];
        for (zero, name) in zeroed.into_iter().zip(names) {
            let mut settings = Settings::default();
            zero(&mut settings.server);
            let error = settings.check().unwrap_err().to_string();
            assert!(
                error.contains(&format!("server.{name} must be positive")),
                "{error}"
            );
        }
    }

    #[test]
    fn a_zero_outbox_retention_or_prune_interval_is_refused() {
        for zero in [
            |s: &mut RelaySettings| s.retention_hours = 0,
            |s: &mut RelaySettings| s.prune_interval_secs = 0,
        ] {
            let mut settings = Settings::default();
            zero(&mut settings.relay);
            let error = settings.check().unwrap_err().to_string();
            assert!(error.contains("must be positive"), "{error}");
        }
        assert!(Settings::default().check().is_ok());
    }

    #[test]
    fn a_lease_shorter_than_the_publish_timeout_is_refused() {
        let mut settings = Settings::default();
        settings.relay.lease_secs = 10;
        assert!(settings.check().is_err());
    }
}
