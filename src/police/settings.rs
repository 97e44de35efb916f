//! Settings of the police case-management adapter.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::sink::http::HttpSinkSettings;
pub use crate::contract::deadlines::DeadlineSettings;
use crate::shared::config::Secret;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoliceSettings {
    /// The adapter's own database (`postgres://…` or `sqlite:…`). Absent: `police.db` in the
    /// data directory. It is separate from the hub's so the adapter can run in the police
    /// network and talk to the hub only through Kafka.
    pub database_url: Option<Secret>,
    pub max_connections: u32,
    /// Kafka consumer group of the adapter instances.
    pub group_id: String,
    /// The city-level environmental crime unit: it also receives every high-priority lead.
    pub city_unit: String,
    /// Where a lead goes when no unit covers its division, so no lead is unroutable: as a
    /// forwarding task (Decree 310 art 7), with its 24-hour clock, not as the unit's own case.
    pub fallback_unit: String,
    /// The police units and how each receives its leads.
    pub units: Vec<UnitSettings>,
    pub delivery: DeliverySettings,
    /// Decree 310 clocks: lengths, working-day counting per clock, the holiday calendar
    /// (`crate::contract::deadlines`). The hub reads the same settings for the agency's clocks.
    pub deadlines: DeadlineSettings,
    /// Rule tables of the assessment; see `schemas/rules/README.md`.
    pub rules_file: Option<PathBuf>,
    /// How often the consumer lag of the leads partitions is measured (`police_consumer_lag`):
    /// each measurement asks the brokers for the group's committed offsets and one watermark
    /// pair per partition.
    pub lag_poll_interval_ms: u64,
    /// At most this many messages already fetched from Kafka are recorded in one transaction
    /// of the adapter's database (1: one transaction per message).
    pub consume_batch_max: usize,
}

impl PoliceSettings {
    /// The adapter's database: the configured URL, or `police.db` in the data directory.
    pub fn database_url(&self, data_dir: &std::path::Path) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_owned(),
            None => format!("sqlite:{}", data_dir.join("police.db").display()),
        }
    }
}

impl Default for PoliceSettings {
    fn default() -> Self {
        PoliceSettings {
            database_url: None,
            max_connections: 8,
            group_id: "leadbridge-police-adapter".into(),
            city_unit: "370300".into(),
            fallback_unit: "370300".into(),
            units: zibo_units(),
            delivery: DeliverySettings::default(),
            deadlines: DeadlineSettings::default(),
            rules_file: None,
            // Prometheus scrapes every 15 s or so by default; measuring more often buys nothing.
            lag_poll_interval_ms: 10_000,
            consume_batch_max: 500,
        }
    }
}

/// One police unit.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitSettings {
    /// The unit's identifier; investigators' certificates name it (`OU=investigator, CN=<id>`).
    pub id: String,
    pub name: String,
    /// GB/T 2260 codes the unit covers; the most specific prefix match routes a lead.
    pub divisions: Vec<String>,
    /// The unit above this one (a district's city-level unit): it sees and may act on every
    /// lead of this unit, besides its own.
    #[serde(default)]
    pub parent: Option<String>,
    /// How the unit receives leads.
    #[serde(default)]
    pub sink: SinkSettings,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase", tag = "type")]
pub enum SinkSettings {
    /// The built-in investigator inbox (`/police/v1/inbox`).
    #[default]
    Inbox,
    /// The unit's case-management system over HTTPS with a client certificate.
    Http(HttpSinkSettings),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    pub batch_size: i64,
    pub poll_interval_ms: u64,
    /// How long a delivery attempt is leased to one worker.
    pub lease_secs: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// After this long without success a delivery is dead-lettered (and stays visible).
    pub give_up_after_secs: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            batch_size: 100,
            poll_interval_ms: 200,
            lease_secs: 120,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
            give_up_after_secs: 24 * 3600,
        }
    }
}

/// The eight county-level units of Zibo and the city-level environmental crime unit.
fn zibo_units() -> Vec<UnitSettings> {
    let unit = |id: &str, name: &str| UnitSettings {
        id: id.into(),
        name: name.into(),
        divisions: vec![id.into()],
        parent: Some("370300".into()),
        sink: SinkSettings::Inbox,
    };
    vec![
        unit("370302", "淄博市公安局淄川分局"),
        unit("370303", "淄博市公安局张店分局"),
        unit("370304", "淄博市公安局博山分局"),
        unit("370305", "淄博市公安局临淄分局"),
        unit("370306", "淄博市公安局周村分局"),
        unit("370321", "桓台县公安局"),
        unit("370322", "高青县公安局"),
        unit("370323", "沂源县公安局"),
        UnitSettings {
            id: "370300".into(),
            name: "淄博市公安局环境犯罪侦查支队".into(),
            divisions: vec!["3703".into()],
            parent: None,
            sink: SinkSettings::Inbox,
        },
    ]
}
