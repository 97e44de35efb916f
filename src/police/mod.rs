//! The police case-management adapter: consumes leads from Kafka, assesses them against the
//! criminal thresholds (`crate::police::rules`), routes them to police units, delivers them (built-in
//! inbox or the unit's case-management system), runs the Decree 310 steps, and answers the hub
//! with receipts and decisions on `<prefix>.receipts.v1`.
//!
//! It talks to the hub only through Kafka and keeps its own database, so it can run inside the
//! police network (`leadbridge police-adapter`) or inside `leadbridge serve`.

pub mod adapter;
pub mod api;
pub mod deliver;
pub mod lag;
pub mod penalties;
pub mod process;
pub mod routing;
pub mod rules;
pub mod settings;
pub mod ship;
pub mod sink;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

pub use settings::PoliceSettings;
pub use store::PoliceStore;

use crate::police::rules::RuleBook;
use crate::police::rules::RulesSettings;
use crate::shared::config::{KafkaSettings, RelaySettings};
use crate::shared::kafka::{self, Topics};
use crate::shared::relay::Relay;
use crate::shared::store::Store;
use crate::shared::telemetry::Metrics;

/// The adapter's running parts.
pub struct PoliceAdapter {
    store: PoliceStore,
    routing: routing::Routing,
    adapter: adapter::Adapter,
    worker: deliver::DeliveryWorker,
    relay: Relay,
    lag: lag::LagMonitor,
    shipper: ship::LogShipper,
}

/// The settings the adapter reads: its own, and the shared ones it runs on.
#[derive(Clone, Copy)]
pub struct AdapterSettings<'a> {
    pub police: &'a PoliceSettings,
    pub rules: &'a RulesSettings,
    pub kafka: &'a KafkaSettings,
    pub relay: &'a RelaySettings,
    /// Where the embedded adapter keeps its database when none is configured.
    pub data_dir: &'a std::path::Path,
    /// The Decree 310 clocks (`police.deadlines` with the holiday calendar), loaded once.
    pub clocks: &'a crate::contract::deadlines::Clocks,
    /// How often the log shipper looks for new entries of the adapter's log when idle.
    pub log_ship_interval: Duration,
}

impl PoliceAdapter {
    /// Every fallible step of the adapter's start: its database, the rule tables (a missing or
    /// broken rule file stops start-up here), the unit table, the sinks and the Kafka clients.
    pub async fn build(
        settings: AdapterSettings<'_>,
        bootstrap_servers: &str,
        metrics: &Metrics,
        limits: &kafka::MessageLimits,
    ) -> anyhow::Result<PoliceAdapter> {
        let police = settings.police;
        let url = police.database_url(settings.data_dir);
        let store = Store::connect(&url, police.max_connections, &store::MIGRATIONS)
            .await
            .with_context(|| {
                format!(
                    "cannot open the police adapter's database {}",
                    crate::shared::store::redact_url(&url)
                )
            })?;
        let mut rules_settings = settings.rules.clone();
        if police.rules_file.is_some() {
            rules_settings.rules_file = police.rules_file.clone();
        }
        let rules = Arc::new(
            RuleBook::load(&rules_settings).context("cannot load the criminal-threshold rules")?,
        );
        let routing = routing::Routing::new(police)?;
        let topics = Topics::new(settings.kafka.topic_prefix.clone());
        let police_store =
            PoliceStore::new(store.clone(), topics.receipts(), settings.clocks.clone());

        let mut http_sinks: HashMap<String, Arc<dyn sink::DeliverySink>> = HashMap::new();
        for unit in &police.units {
            if let settings::SinkSettings::Http(http) = &unit.sink {
                let sink = sink::http::HttpSink::new(http)
                    .with_context(|| {
                        format!("cannot set up the case-management sink of unit {}", unit.id)
                    })?
                    .observed(metrics, &unit.id);
                http_sinks.insert(unit.id.clone(), Arc::new(sink));
            }
        }

        let consumer: StreamConsumer =
            kafka::consumer_config(settings.kafka, bootstrap_servers, &police.group_id)
                .create()
                .context("cannot create the adapter's Kafka consumer")?;
        // The agencies are a closed set, so the topics are named rather than matched by pattern:
        // a pattern that matches nothing would wait silently.
        let lead_topics: Vec<String> = crate::contract::lead::Agency::ALL
            .into_iter()
            .map(|agency| topics.leads(agency))
            .collect();
        let lead_topics: Vec<&str> = lead_topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&lead_topics)
            .context("cannot subscribe to the leads topics")?;
        let producer =
            kafka::idempotent_producer_within(settings.kafka, bootstrap_servers, limits)?;
        let delivery_wakeup = Arc::new(Notify::new());
        let adapter = adapter::Adapter {
            store: police_store.clone(),
            rules,
            routing: routing.clone(),
            settings: police.clone(),
            consumer,
            producer: producer.clone(),
            deadletter_topic: topics.deadletter(),
            limits: limits.clone(),
            delivery_wakeup: delivery_wakeup.clone(),
            metrics: metrics.clone(),
        };
        let worker = deliver::DeliveryWorker {
            id: format!("delivery-{}", uuid::Uuid::new_v4()),
            store: police_store.clone(),
            http_sinks,
            settings: police.delivery.clone(),
            wakeup: delivery_wakeup,
            producer: producer.clone(),
            deadletter_topic: topics.deadletter(),
            metrics: metrics.clone(),
            limits: limits.clone(),
        };
        let lag = lag::LagMonitor::build(
            settings.kafka,
            bootstrap_servers,
            &police.group_id,
            lead_topics.iter().map(|topic| topic.to_string()).collect(),
            Duration::from_millis(police.lag_poll_interval_ms),
            metrics.clone(),
        )
        .context("cannot create the adapter's lag monitor")?;
        let shipper = ship::LogShipper {
            store: store.clone(),
            producer: producer.clone(),
            topic: topics.receipts(),
            limits: limits.clone(),
            interval: settings.log_ship_interval,
        };
        // Receipts leave through the adapter's own outbox, published by the same relay code.
        let relay = Relay::new(
            store,
            Arc::new(store::PoliceOutbox),
            producer,
            settings.relay.clone(),
            Arc::new(Notify::new()),
            metrics.clone(),
        )
        .with_limits(limits.clone());
        Ok(PoliceAdapter {
            store: police_store,
            routing,
            adapter,
            worker,
            relay,
            lag,
            shipper,
        })
    }

    pub fn store(&self) -> PoliceStore {
        self.store.clone()
    }

    /// The unit table: who receives which lead, who sees whose.
    pub fn routing(&self) -> routing::Routing {
        self.routing.clone()
    }

    /// Starts the consumer, the delivery worker, the receipts relay, the lag monitor and the
    /// log shipper.
    pub fn spawn(self, tasks: &mut JoinSet<()>, shutdown: &watch::Receiver<bool>) {
        tasks.spawn(self.adapter.run(shutdown.clone()));
        tasks.spawn(self.worker.run(shutdown.clone()));
        tasks.spawn(self.relay.run(shutdown.clone()));
        tasks.spawn(self.lag.run(shutdown.clone()));
        tasks.spawn(self.shipper.run(shutdown.clone()));
    }
}
