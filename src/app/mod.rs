//! Assembles the roles into one running hub.
//!
//! [`Application::build`] does every fallible set-up step (database and migrations, schemas,
//! Kafka or the embedded broker, TLS, binding the listener) so that a hub that builds is a hub
//! that runs; [`Application::run_until_stopped`] then serves until the shutdown signal.

mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::contract::lead::DivisionTable;
use crate::contract::validate::{SchemaRegistry, Validator};
use crate::hub::api::HubApi;
use crate::hub::ingest::{GroupCommit, Ingest};
use crate::hub::receipts::ReceiptsConsumer;
use crate::hub::store::publication::HubOutbox;
use crate::police::api::PoliceApi;
use crate::police::{AdapterSettings, PoliceAdapter, PoliceStore};
use crate::shared::http::{self as api, Edge, EdgeState};
use crate::shared::kafka::{self, EmbeddedBroker, Topics};
use crate::shared::relay::Relay;
use crate::shared::store::Store;
use crate::shared::telemetry::Metrics;
pub use settings::Settings;

/// Which roles this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    /// The agency API (`/v1`) of the hub.
    pub hub_api: bool,
    /// The hub's background work: the outbox relay and the receipts consumer.
    pub hub_workers: bool,
    /// The police adapter: consumer, delivery worker, receipts, and the investigators' API.
    pub police: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        hub_api: true,
        hub_workers: true,
        police: true,
    };
    pub const HUB: Roles = Roles {
        hub_api: true,
        hub_workers: true,
        police: false,
    };
    pub const INGEST: Roles = Roles {
        hub_api: true,
        hub_workers: false,
        police: false,
    };
    pub const RELAY: Roles = Roles {
        hub_api: false,
        hub_workers: true,
        police: false,
    };
    pub const POLICE: Roles = Roles {
        hub_api: false,
        hub_workers: false,
        police: true,
    };

    fn hub(&self) -> bool {
        self.hub_api || self.hub_workers
    }

    fn serves_http(&self) -> bool {
        self.hub_api || self.police
    }
}

pub struct Application {
    settings: Settings,
    store: Option<Store>,
    police_store: Option<PoliceStore>,
    metrics: Metrics,
    topics: Topics,
    bootstrap_servers: String,
    embedded_broker: Option<Arc<EmbeddedBroker>>,
    listener: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
    router: Option<axum::Router>,
    /// The API's request guard, to wait for requests still running before closing the pools.
    request_guard: Option<Arc<api::RequestGuard>>,
    relay: Option<Relay>,
    receipts: Option<ReceiptsConsumer>,
    police: Option<PoliceAdapter>,
    /// The transparency logs this process keeps current: (store, signer) of each role's.
    sequencers: Vec<(Store, Arc<crate::shared::audit::log::LogSigner>)>,
}

impl Application {
    pub async fn build(settings: Settings, roles: Roles) -> anyhow::Result<Application> {
        crate::shared::private_fs::private_dir(&settings.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                settings.data_dir.display()
            )
        })?;
        let metrics = Metrics::new();
        // Both roles count the Decree 310 clocks; a holiday file that is wrong stops start-up
        // here, naming the file and line.
        let clocks = crate::contract::deadlines::Clocks::load(&settings.police.deadlines)
            .context("cannot set up the Decree 310 clocks (police.deadlines, holiday calendar)")?;
        let store = if roles.hub() {
            let database_url = settings.database_url();
            Some(
                crate::hub::store::connect(&database_url, settings.database.max_connections)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot open the database {}",
                            crate::shared::store::redact_url(&database_url)
                        )
                    })?,
            )
        } else {
            None
        };

        let topics = Topics::new(settings.kafka.topic_prefix.clone());
        let (bootstrap_servers, embedded_broker, limits) = match &settings.kafka.bootstrap_servers {
            Some(servers) => {
                if settings.kafka.create_topics {
                    create_topics(&settings, servers, &topics).await;
                }
                let limits = message_limits(&settings, Some(servers), &topics, roles.hub()).await?;
                (servers.clone(), None, limits)
            }
            None => {
                // The mock broker cannot describe its topics; the producer limit still holds.
                let limits = message_limits(&settings, None, &topics, roles.hub()).await?;
                let broker = EmbeddedBroker::start(&topics.all(), settings.kafka.topic_partitions)?;
                tracing::info!(
                    bootstrap = broker.bootstrap_servers(),
                    "Embedded Kafka-protocol broker started."
                );
                (
                    broker.bootstrap_servers().to_owned(),
                    Some(Arc::new(broker)),
                    limits,
                )
            }
        };
        let producer =
            kafka::idempotent_producer_within(&settings.kafka, &bootstrap_servers, &limits)?;
        let relay_wakeup = Arc::new(Notify::new());

        // The police adapter signs its own log; the hub checks the police log's copy against
        // the police's public key. A missing signing key stops start-up here.
        let police_signer = if roles.police {
            Some(Arc::new(
                settings
                    .transparency
                    .signer(
                        "police",
                        &settings.data_dir,
                        settings.police.database_url.is_none(),
                    )
                    .context("cannot load the police adapter's transparency-log key")?,
            ))
        } else {
            None
        };
        let police_verifier = if roles.hub() {
            settings
                .transparency
                .police_verifier(&settings.data_dir, police_signer.as_deref())
                .context("cannot read transparency.police_verifier_key")?
        } else {
            None
        };
        if police_verifier.is_none() && roles.hub_workers {
            tracing::warn!("The hub knows no police verifier key (transparency.police_verifier_key): the police log's shipped checkpoints will be dead-lettered until it is set.");
        }
        let police_log_key =
            police_verifier
                .clone()
                .map(|key| crate::hub::receipts::PoliceLogKey {
                    key,
                    origin: crate::shared::tlog::origin(
                        &settings.transparency.deployment,
                        "police",
                    ),
                });

        let (relay, receipts) = match (&store, roles.hub_workers) {
            (Some(store), true) => (
                Some(
                    Relay::new(
                        store.clone(),
                        Arc::new(HubOutbox {
                            republish_after: chrono::Duration::seconds(
                                settings.relay.republish_after_secs as i64,
                            ),
                        }),
                        producer.clone(),
                        settings.relay.clone(),
                        relay_wakeup.clone(),
                        metrics.clone(),
                    )
                    .with_limits(limits.clone()),
                ),
                Some(ReceiptsConsumer::build(
                    &settings.kafka,
                    &bootstrap_servers,
                    store.clone(),
                    metrics.clone(),
                    &limits,
                    police_log_key,
                )?),
            ),
            _ => (None, None),
        };
        let police = if roles.police {
            let adapter_settings = AdapterSettings {
                police: &settings.police,
                rules: &settings.rules,
                kafka: &settings.kafka,
                relay: &settings.relay,
                data_dir: &settings.data_dir,
                clocks: &clocks,
                log_ship_interval: Duration::from_millis(
                    settings.transparency.sequence_interval_ms.max(1),
                ),
            };
            Some(
                PoliceAdapter::build(adapter_settings, &bootstrap_servers, &metrics, &limits)
                    .await?,
            )
        } else {
            None
        };
        let police_store = police.as_ref().map(PoliceAdapter::store);
        let police_routing = police.as_ref().map(PoliceAdapter::routing);

        // Each role signs its own log's checkpoints; a missing key stops start-up here.
        let mut sequencers = Vec::new();
        // One signer for the hub's log, shared by its sequencer and the supervision API.
        let hub_signer = match &store {
            Some(_) if roles.hub_workers || roles.hub_api => Some(Arc::new(
                settings
                    .transparency
                    .signer("hub", &settings.data_dir, settings.database.url.is_none())
                    .context("cannot load the hub's transparency-log key")?,
            )),
            _ => None,
        };
        if let (Some(store), Some(signer), true) = (&store, &hub_signer, roles.hub_workers) {
            sequencers.push((store.clone(), signer.clone()));
        }
        if let (Some(police_store), Some(signer)) = (&police_store, &police_signer) {
            sequencers.push((police_store.store().clone(), signer.clone()));
        }

        let hub_api = match (&store, roles.hub_api) {
            (Some(store), true) => {
                let schemas = match &settings.schema_dir {
                    Some(dir) => SchemaRegistry::from_dir(dir)?,
                    None => SchemaRegistry::built_in()?,
                };
                let validator = Validator::new(
                    schemas,
                    DivisionTable::built_in()?,
                    chrono::Duration::seconds(settings.limits.clock_skew_secs),
                );
                Some(HubApi {
                    ingest: Ingest::new(
                        validator,
                        store.clone(),
                        topics.clone(),
                        relay_wakeup.clone(),
                        metrics.clone(),
                    )
                    .with_max_lead_bytes(settings.limits.max_lead_bytes)
                    .with_group_commit(GroupCommit {
                        wait: std::time::Duration::from_millis(
                            settings.limits.group_commit_wait_ms,
                        ),
                        max_leads: settings.limits.group_commit_max_leads,
                    }),
                    store: store.clone(),
                    topics: topics.clone(),
                    clocks: clocks.clone(),
                    limits: settings.limits.clone(),
                    relay_wakeup,
                })
            }
            _ => None,
        };

        let request_guard = Arc::new(api::RequestGuard::new(
            settings.server.max_concurrent_requests,
            Duration::from_secs(settings.server.request_timeout_secs),
            metrics.requests_refused.clone(),
        ));
        let (listener, router) = if roles.serves_http() {
            let tls_settings = match &settings.server.tls {
                Some(tls) => tls.clone(),
                None => crate::shared::pki::ensure_dev_pki(&settings.data_dir.join("pki"))?,
            };
            let tls = api::tls::server_config(&tls_settings)?;
            let listener = TcpListener::bind(settings.server.listen)
                .await
                .with_context(|| format!("cannot listen on {}", settings.server.listen))?;
            let mut roles_router = utoipa_axum::router::OpenApiRouter::new();
            let mut stores = Vec::new();
            if let Some(hub_api) = hub_api {
                stores.push(hub_api.store.clone());
                // Supervisors reach the hub's log where agencies reach the hub.
                let supervise = crate::hub::supervise::SuperviseApi {
                    store: hub_api.store.clone(),
                    hub_signer: hub_signer
                        .clone()
                        .expect("a hub API process holds the hub's signer"),
                    police_key: police_verifier.clone(),
                    hub_origin: crate::shared::tlog::origin(
                        &settings.transparency.deployment,
                        "hub",
                    ),
                    police_origin: crate::shared::tlog::origin(
                        &settings.transparency.deployment,
                        "police",
                    ),
                    witnesses: settings
                        .transparency
                        .witnesses(&settings.data_dir, settings.database.url.is_none())
                        .context("cannot read transparency.witness_keys")?,
                    clocks: clocks.clone(),
                    settings: settings.supervision.clone(),
                    districts: Arc::new(DivisionTable::built_in()?),
                    max_small_body_bytes: settings.limits.max_small_body_bytes,
                };
                roles_router = roles_router
                    .merge(crate::hub::api::routes(Arc::new(hub_api)))
                    .merge(crate::hub::supervise::routes(Arc::new(supervise)));
            }
            if let (Some(police_store), Some(routing)) = (&police_store, &police_routing) {
                stores.push(police_store.store().clone());
                roles_router =
                    roles_router.merge(crate::police::api::routes(Arc::new(PoliceApi {
                        store: police_store.clone(),
                        routing: routing.clone(),
                        limits: settings.limits.clone(),
                    })));
            }
            let edge = EdgeState(Arc::new(Edge {
                metrics: metrics.clone(),
                kafka_probe: producer,
                stores,
                guard: request_guard.clone(),
                readiness: Default::default(),
                refusals: Default::default(),
            }));
            (Some((listener, tls)), Some(api::router(edge, roles_router)))
        } else {
            (None, None)
        };
        let request_guard = router.is_some().then_some(request_guard);

        Ok(Application {
            settings,
            store,
            police_store,
            metrics,
            topics,
            bootstrap_servers,
            embedded_broker,
            listener,
            router,
            request_guard,
            relay,
            receipts,
            police,
            sequencers,
        })
    }

    /// The routes this process serves (before it runs): for the tests that hold them against
    /// its OpenAPI document.
    pub fn router(&self) -> Option<&axum::Router> {
        self.router.as_ref()
    }

    /// The bound address of the API, when this process serves it.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// The hub's store (panics in a police-only process).
    pub fn store(&self) -> &Store {
        self.store.as_ref().expect("this process runs the hub")
    }

    /// The police adapter's store, when this process runs the adapter.
    pub fn police_store(&self) -> Option<&PoliceStore> {
        self.police_store.as_ref()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `host:port` of the Kafka cluster in use (the embedded broker's when there is one).
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    pub fn embedded_broker(&self) -> Option<Arc<EmbeddedBroker>> {
        self.embedded_broker.clone()
    }

    /// Serves every role until `shutdown` turns true.
    pub async fn run_until_stopped(self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(relay) = self.relay {
            tasks.spawn(relay.run(shutdown.clone()));
        }
        if let Some(receipts) = self.receipts {
            tasks.spawn(receipts.run(shutdown.clone()));
        }
        if let Some(police) = self.police {
            police.spawn(&mut tasks, &shutdown);
        }
        let transparency = &self.settings.transparency;
        for (store, signer) in self.sequencers {
            tasks.spawn(crate::shared::audit::log::run_sequencer(
                store,
                signer,
                Duration::from_millis(transparency.sequence_interval_ms.max(1)),
                Duration::from_secs(transparency.checkpoint_interval_secs.max(1)),
                shutdown.clone(),
            ));
        }
        if let (Some((listener, tls)), Some(router)) = (self.listener, self.router) {
            tasks.spawn(api::tls::serve(
                listener,
                tls,
                router,
                self.settings.server.clone(),
                self.metrics.clone(),
                shutdown.clone(),
            ));
        }
        while let Some(result) = tasks.join_next().await {
            result.context("a role ended abnormally")?;
        }
        // HTTP/2 streams run in tasks of their own that outlive their connection's task; the
        // pools close only once every request has given its place back (or the grace ran out).
        if let Some(guard) = &self.request_guard {
            let grace = Duration::from_secs(self.settings.server.shutdown_grace_secs);
            if !guard.wait_until_idle(grace).await {
                tracing::warn!("Requests still running after the shutdown grace; closing anyway.");
            }
        }
        if let Some(store) = &self.store {
            store.close().await;
        }
        if let Some(police) = &self.police_store {
            police.store().close().await;
        }
        drop(self.embedded_broker);
        Ok(())
    }
}

/// Creates the hub's topics; a broker that is down now is not fatal (the relay retries and
/// the brokers may create topics on first use), so failure is a warning.
async fn create_topics(settings: &Settings, servers: &str, topics: &Topics) {
    let names = topics.all();
    let attempt = kafka::ensure_topics(&settings.kafka, servers, &names);
    match tokio::time::timeout(Duration::from_secs(15), attempt).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "Cannot create the Kafka topics now."),
        Err(_) => tracing::warn!(servers, "Kafka did not answer topic creation within 15 s."),
    }
}

/// Learns what Kafka accepts ([`kafka::MessageLimits`]) and refuses to start a process that
/// would send a topic what it can never take (`kafka::check_topic_limits`): in the hub's
/// roles, the largest lead (`limits.max_lead_bytes`) with its event metadata must fit the
/// producer's `message.max.bytes` and, on real Kafka, every leads topic's
/// `max.message.bytes`; in every role the receipts and dead-letter topics must take a receipt
/// and a reduced dead letter. When the brokers cannot tell (down, no permission to describe
/// configs), that is a warning only: the relay's permanent-failure handling still keeps such a
/// lead visible, and the limits known are the producer's alone.
async fn message_limits(
    settings: &Settings,
    servers: Option<&str>,
    topics: &Topics,
    hub: bool,
) -> Result<kafka::MessageLimits, kafka::KafkaSetupError> {
    let max_lead_bytes = settings.limits.max_lead_bytes;
    let producer = kafka::producer_message_max_bytes(&settings.kafka)?;
    if hub {
        kafka::check_lead_fits(max_lead_bytes, producer, "the producer's message.max.bytes")?;
    }
    let mut limits = kafka::MessageLimits {
        producer,
        topics: Default::default(),
    };
    let Some(servers) = servers else {
        return Ok(limits);
    };
    let names = topics.all();
    let described = kafka::topic_message_max_bytes(&settings.kafka, servers, &names);
    match tokio::time::timeout(Duration::from_secs(15), described).await {
        Ok(Ok(described)) => {
            limits.topics = described.into_iter().collect();
            for warning in kafka::check_topic_limits(max_lead_bytes, &limits, topics, hub)? {
                tracing::warn!("{warning}");
            }
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "Cannot check the topics' max.message.bytes; starting anyway.");
        }
        Err(_) => {
            tracing::warn!(
                servers,
                "Kafka did not describe the topics within 15 s; starting anyway."
            );
        }
    }
    Ok(limits)
}
