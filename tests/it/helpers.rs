//! Starts the real application for a test: a fresh PostgreSQL database and random Kafka
//! topics on the services from `deploy/local` (or SQLite and the embedded broker for the
//! embedded-mode tests), a test CA with real certificates, and HTTPS clients per principal.
//!
//! Every test app ends with the end-of-test invariant ([`TestApp::stop`]): every accepted lead
//! reached a terminal state for the roles the app runs, and no outbox row or police delivery
//! is left pending. A `TestApp` dropped without being stopped fails its test, so no test can
//! skip the check by forgetting it; a test that leaves work unfinished on purpose says so with
//! [`TestApp::stop_leaving_work_unfinished`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leadbridge::app::Settings;
use leadbridge::contract::lead::Agency;
use leadbridge::shared::config::{Secret, TlsSettings};
use leadbridge::shared::identity::Principal;
use leadbridge::shared::kafka::EmbeddedBroker;
use leadbridge::shared::pki::DevCa;
use leadbridge::shared::store::{Dialect, Store};
use leadbridge::shared::telemetry::Metrics;
use leadbridge::{Application, Roles};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::ClientConfig;
use serde_json::Value;
use sqlx::Connection;
use tokio::sync::watch;

/// Which database and broker a test app runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL and Apache Kafka started by `deploy/local/services.sh`.
    Real,
    /// SQLite and the in-process mock broker: the embedded default.
    Embedded,
}

pub fn test_kafka() -> String {
    std::env::var("LEADBRIDGE_TEST_KAFKA").expect(
        "LEADBRIDGE_TEST_KAFKA is not set: start the test services with deploy/local/test.sh (or eval \"$(deploy/local/services.sh env)\")",
    )
}

fn test_database_admin_url() -> String {
    std::env::var("LEADBRIDGE_TEST_DATABASE_URL").expect(
        "LEADBRIDGE_TEST_DATABASE_URL is not set: start the test services with deploy/local/test.sh (or eval \"$(deploy/local/services.sh env)\")",
    )
}

/// Creates an empty PostgreSQL database and returns its URL.
pub async fn fresh_postgres_database() -> String {
    let admin_url = test_database_admin_url();
    let name = format!("lb_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("the admin URL names a database");
    format!("{base}/{name}")
}

/// A bound text parameter as a value of a column that is native on PostgreSQL (`UUID`,
/// `TIMESTAMPTZ`, `JSONB`) and text on SQLite: cast there, as it is here (a cast to
/// TIMESTAMPTZ on SQLite would give the text numeric affinity).
pub fn typed_param(dialect: Dialect, param: &str, native: &str) -> String {
    match dialect {
        Dialect::Postgres => format!("CAST({param} AS {native})"),
        Dialect::Sqlite => param.to_owned(),
    }
}

pub fn fresh_sqlite_url(dir: &std::path::Path) -> String {
    format!(
        "sqlite:{}",
        dir.join(format!("{}.db", uuid::Uuid::new_v4().simple()))
            .display()
    )
}

pub fn random_topic_prefix() -> String {
    format!("t{}.leadbridge", uuid::Uuid::new_v4().simple())
}

/// A CA with files on disk and clients for every principal.
pub struct TestPki {
    pub ca: DevCa,
    pub tls: TlsSettings,
    _dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate("LeadBridge test CA").unwrap();
        let server = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
        let tls = TlsSettings {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            client_ca: dir.path().join("ca.pem"),
        };
        std::fs::write(&tls.cert, &server.cert_pem).unwrap();
        std::fs::write(&tls.key, &server.key_pem).unwrap();
        std::fs::write(&tls.client_ca, ca.cert_pem()).unwrap();
        TestPki { ca, tls, _dir: dir }
    }

    /// An HTTPS client presenting a certificate for `principal`, or none.
    pub fn client(&self, principal: Option<&Principal>) -> reqwest::Client {
        let root = reqwest::Certificate::from_pem(self.ca.cert_pem().as_bytes()).unwrap();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root)
            .timeout(Duration::from_secs(30));
        if let Some(principal) = principal {
            let issued = self.ca.issue_client(principal).unwrap();
            let identity = reqwest::Identity::from_pem(
                format!("{}{}", issued.cert_pem, issued.key_pem).as_bytes(),
            )
            .unwrap();
            builder = builder.identity(identity);
        }
        builder.build().unwrap()
    }
}

/// A running hub.
pub struct TestApp {
    pub addr: SocketAddr,
    pub store: Store,
    /// The police adapter's store, when the app runs the adapter.
    pub police_store: Option<leadbridge::police::PoliceStore>,
    pub metrics: Metrics,
    pub settings: Settings,
    pub bootstrap_servers: String,
    pub embedded_broker: Option<Arc<EmbeddedBroker>>,
    pub pki: Arc<TestPki>,
    clients: HashMap<Agency, reqwest::Client>,
    roles: Roles,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Set by the stop methods; [`Drop`] fails the test when it is not.
    stopped: bool,
    /// How many leads the test means to end `publish_failed` or `dead_lettered`.
    lasting_failures: usize,
    /// Leave the PostgreSQL databases in place at stop (the test reads them afterwards).
    keep_databases: bool,
    _data_dir: Arc<tempfile::TempDir>,
}

/// A test's change to the settings, applied before the hub is built.
type SettingsHook = Box<dyn FnOnce(&mut Settings)>;

pub struct TestAppBuilder {
    backend: Backend,
    roles: Roles,
    settings_hook: Option<SettingsHook>,
}

pub fn app(backend: Backend) -> TestAppBuilder {
    TestAppBuilder {
        backend,
        roles: Roles::HUB,
        settings_hook: None,
    }
}

/// Settings of a test hub: port 0, test PKI, fresh database, random topics.
pub async fn test_settings(
    backend: Backend,
    data_dir: &std::path::Path,
    pki: &TestPki,
) -> Settings {
    let mut settings = Settings {
        data_dir: data_dir.to_owned(),
        ..Settings::default()
    };
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.server.tls = Some(pki.tls.clone());
    settings.kafka.topic_prefix = random_topic_prefix();
    // Each test hub is its own adapter deployment: sharing one consumer group across tests
    // would make every test's start and stop a rebalance of all the others.
    settings.police.group_id = format!("{}-police", settings.kafka.topic_prefix);
    settings.relay.poll_interval_ms = 50;
    settings.relay.backoff_initial_ms = 200;
    settings.relay.backoff_max_ms = 1_000;
    // A database of its own means no embedded default: the signing keys are configured, as
    // in production (the files are where the embedded default would keep them).
    for log in ["hub", "police"] {
        let path = data_dir.join("keys").join(format!("{log}.key"));
        leadbridge::shared::tlog::LogKey::load_or_create(&path, &format!("leadbridge-local-{log}"))
            .unwrap();
        match log {
            "hub" => settings.transparency.hub_key_file = Some(path),
            _ => settings.transparency.police_key_file = Some(path),
        }
    }
    match backend {
        Backend::Real => {
            settings.database.url = Some(Secret::new(fresh_postgres_database().await));
            settings.database.max_connections = 8;
            settings.police.database_url = Some(Secret::new(fresh_postgres_database().await));
            settings.police.max_connections = 4;
            settings.kafka.bootstrap_servers = Some(test_kafka());
        }
        Backend::Embedded => {
            settings.database.url = Some(Secret::new(fresh_sqlite_url(data_dir)));
            settings.police.database_url = Some(Secret::new(fresh_sqlite_url(data_dir)));
        }
    }
    settings
}

impl TestAppBuilder {
    pub fn roles(mut self, roles: Roles) -> Self {
        self.roles = roles;
        self
    }

    pub fn with_settings(mut self, hook: impl FnOnce(&mut Settings) + 'static) -> Self {
        self.settings_hook = Some(Box::new(hook));
        self
    }

    pub async fn spawn(self) -> TestApp {
        // Logs appear with RUST_LOG set (e.g. RUST_LOG=leadbridge=debug) and --nocapture.
        if std::env::var_os("RUST_LOG").is_some() {
            leadbridge::shared::telemetry::init_logging(&Default::default());
        }
        let data_dir = Arc::new(tempfile::tempdir().unwrap());
        let pki = Arc::new(TestPki::new());
        let mut settings = test_settings(self.backend, data_dir.path(), &pki).await;
        if let Some(hook) = self.settings_hook {
            hook(&mut settings);
        }
        let application = Application::build(settings.clone(), self.roles)
            .await
            .expect("the hub builds");
        let addr = application.local_addr().expect("the API is bound");
        let store = application.store().clone();
        let police_store = application.police_store().cloned();
        let metrics = application.metrics().clone();
        let bootstrap_servers = application.bootstrap_servers().to_owned();
        let embedded_broker = application.embedded_broker();
        let (shutdown, receiver) = watch::channel(false);
        let task = tokio::spawn(application.run_until_stopped(receiver));
        let clients = Agency::ALL
            .into_iter()
            .map(|agency| (agency, pki.client(Some(&Principal::Agency(agency)))))
            .collect();
        TestApp {
            addr,
            store,
            police_store,
            metrics,
            settings,
            bootstrap_servers,
            embedded_broker,
            pki,
            clients,
            roles: self.roles,
            shutdown,
            task: Some(task),
            stopped: false,
            lasting_failures: 0,
            keep_databases: false,
            _data_dir: data_dir,
        }
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// Waits until the hub's relay has published (or failed) every outbox row. A liveness
    /// bound generous for a loaded 2-core machine; on expiry it says which rows still wait
    /// and why, so a stalled relay can be told from a slow one.
    pub async fn wait_until_outbox_drained(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.store.outbox_backlog().await.unwrap().0 > 0 {
            if Instant::now() >= deadline {
                let waiting: Vec<String> = sqlx::query(
                    "SELECT id, CAST(lead_id AS TEXT) AS lead_id, revision, topic, attempts, \
                     last_error, claimed_by, CAST(claimed_until AS TEXT) AS claimed_until, \
                     CAST(next_attempt_at AS TEXT) AS next_attempt_at FROM outbox \
                     WHERE published_at IS NULL AND failed_at IS NULL ORDER BY id LIMIT 20",
                )
                .fetch_all(self.store.inspection_pool().await.unwrap())
                .await
                .unwrap()
                .iter()
                .map(|row| {
                    use sqlx::Row;
                    format!(
                        "#{} lead {} r{} on {}: {} attempts, last error {:?}, claimed by {:?} \
                         until {:?}, next attempt {:?}",
                        row.get::<i64, _>("id"),
                        row.get::<String, _>("lead_id"),
                        row.get::<i64, _>("revision"),
                        row.get::<String, _>("topic"),
                        row.get::<i64, _>("attempts"),
                        row.get::<Option<String>, _>("last_error"),
                        row.get::<Option<String>, _>("claimed_by"),
                        row.get::<Option<String>, _>("claimed_until"),
                        row.get::<Option<String>, _>("next_attempt_at"),
                    )
                })
                .collect();
                panic!(
                    "the outbox did not drain in 120 s; still waiting:\n{}",
                    waiting.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn client(&self, agency: Agency) -> &reqwest::Client {
        &self.clients[&agency]
    }

    pub fn topic(&self, agency: Agency) -> String {
        leadbridge::shared::kafka::Topics::new(self.settings.kafka.topic_prefix.clone())
            .leads(agency)
    }

    pub async fn post_lead(&self, agency: Agency, lead: &Value) -> reqwest::Response {
        self.client(agency)
            .post(self.url("/v1/leads"))
            .json(lead)
            .send()
            .await
            .expect("the hub answers")
    }

    /// Posts `body` as the environment agency with any content type: for the tests of what
    /// the hub does with bodies that are not (or not only) JSON.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: String,
    ) -> reqwest::Response {
        self.client(Agency::Environment)
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the hub answers")
    }

    pub async fn get_lead(&self, agency: Agency, lead_id: &str) -> reqwest::Response {
        self.client(agency)
            .get(self.url(&format!("/v1/leads/{lead_id}")))
            .send()
            .await
            .expect("the hub answers")
    }

    /// Polls the lead until its status is `status`, returning the status document.
    pub async fn wait_for_status(&self, agency: Agency, lead_id: &str, status: &str) -> Value {
        self.wait_for_status_within(agency, lead_id, status, Duration::from_secs(30))
            .await
    }

    /// As [`Self::wait_for_status`], with a longer patience for recoveries (a broker restart).
    pub async fn wait_for_status_within(
        &self,
        agency: Agency,
        lead_id: &str,
        status: &str,
        patience: Duration,
    ) -> Value {
        let deadline = Instant::now() + patience;
        loop {
            let body: Value = self.get_lead(agency, lead_id).await.json().await.unwrap();
            if body["status"] == status {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "lead {lead_id} never reached {status}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Checks the end-of-test invariant, then stops the app. The app keeps running while the
    /// check waits (at most 30 s), so work in flight (a publication, a receipt on its way back)
    /// can finish; what is still unfinished then fails the test, listed.
    pub async fn stop(mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let unfinished = self.unfinished_work().await;
            if unfinished.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                // Stop first, so the panic does not leave the app running behind the test.
                self.shut_down().await;
                panic!(
                    "the app stopped with work unfinished (roles {:?}):\n{}",
                    self.roles,
                    unfinished.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.shut_down().await;
    }

    /// Stops the app without the end-of-test invariant, for a test that leaves leads or
    /// messages unfinished on purpose (a fault it never heals). `why` names the reason at the
    /// call site; the call itself is the explicit opt-out.
    pub async fn stop_leaving_work_unfinished(mut self, why: &str) {
        tracing::debug!(why, "Stopping a test app without the end-of-test checks.");
        self.shut_down().await;
    }

    async fn shut_down(&mut self) {
        self.stopped = true;
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        if self.embedded_broker.is_none() {
            delete_test_topics(&self.bootstrap_servers, &self.settings.kafka.topic_prefix).await;
        }
        if !self.keep_databases {
            let databases = [
                &self.settings.database.url,
                &self.settings.police.database_url,
            ];
            for url in databases.into_iter().flatten() {
                drop_test_database(url.expose()).await;
            }
        }
    }

    /// Keeps the app's PostgreSQL databases after it stopped; the test drops them with
    /// [`drop_test_database`] once it has read them.
    pub fn keep_databases(&mut self) {
        self.keep_databases = true;
    }

    /// Keeps the app's data directory (and an embedded database in it) after the app is
    /// stopped, for tests that inspect what a stopped hub left behind.
    pub fn keep_data_dir(&self) -> Arc<tempfile::TempDir> {
        self._data_dir.clone()
    }

    /// Declares that `count` leads of this test end `publish_failed` or `dead_lettered` on
    /// purpose. Any other number fails the end-of-test check: a transient error wrongly taken
    /// for a permanent one ends a lead just as visibly, and must not pass unnoticed.
    pub fn expect_lasting_failures(&mut self, count: usize) {
        self.lasting_failures = count;
    }

    /// What breaks the end-of-test invariant now, one line per item; empty when it holds.
    async fn unfinished_work(&self) -> Vec<String> {
        let mut unfinished = Vec::new();
        // The statuses a lead can stop at, for the roles this app runs: with the adapter, a lead
        // ends delivered (or a later step of the police's work) unless its publication or its
        // intake failed for good; without it, publication is as far as the hub takes a lead.
        let terminal: &[&str] = if self.roles.police {
            &[
                "delivered",
                "filed",
                "not_filed",
                "returned",
                "reconsideration_requested",
                "reconsidered",
                "publish_failed",
                "dead_lettered",
                "delivery_given_up",
            ]
        } else {
            &[
                "published",
                "publish_failed",
                "received_by_police",
                "dead_lettered",
                "delivery_given_up",
                "delivered",
                "filed",
                "not_filed",
                "returned",
                "reconsideration_requested",
                "reconsidered",
            ]
        };
        let leads: Vec<(String, String)> =
            sqlx::query_as("SELECT CAST(lead_id AS TEXT) AS lead_id, status FROM leads")
                .fetch_all(self.store.inspection_pool().await.unwrap())
                .await
                .expect("read the hub's leads");
        let mut failed = Vec::new();
        for (lead_id, status) in leads {
            if !terminal.contains(&status.as_str()) {
                unfinished.push(format!("lead {lead_id} is {status}"));
            }
            if matches!(
                status.as_str(),
                "publish_failed" | "dead_lettered" | "delivery_given_up"
            ) {
                failed.push(format!("{lead_id} {status}"));
            }
        }
        if failed.len() != self.lasting_failures {
            unfinished.push(format!(
                "{} leads ended publish_failed, dead_lettered or delivery_given_up ({}), the test expected {}",
                failed.len(),
                failed.join(", "),
                self.lasting_failures
            ));
        }
        let mut stores = vec![("hub", &self.store)];
        if let Some(police) = &self.police_store {
            stores.push(("police adapter", police.store()));
        }
        for (side, store) in stores {
            let pending: Vec<(String, i64, String)> = sqlx::query_as(
                "SELECT event_id, attempts, COALESCE(last_error, '') FROM outbox \
                 WHERE published_at IS NULL AND failed_at IS NULL",
            )
            .fetch_all(store.inspection_pool().await.unwrap())
            .await
            .expect("read the outbox");
            for (event_id, attempts, last_error) in pending {
                unfinished.push(format!(
                    "{side} outbox message {event_id} unpublished after {attempts} attempts {last_error}"
                ));
            }
        }
        if let Some(police) = &self.police_store {
            let pending: Vec<(String, i64, String, i64)> = sqlx::query_as(
                "SELECT CAST(lead_id AS TEXT) AS lead_id, revision, unit, attempts \
                 FROM police_deliveries WHERE delivered_at IS NULL AND dead_lettered_at IS NULL",
            )
            .fetch_all(police.store().inspection_pool().await.unwrap())
            .await
            .expect("read the police deliveries");
            for (lead_id, revision, unit, attempts) in pending {
                unfinished.push(format!(
                    "delivery of {lead_id}:{revision} to unit {unit} pending after {attempts} attempts"
                ));
            }
        }
        unfinished
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if !self.stopped && !std::thread::panicking() {
            panic!(
                "a test app was dropped without being stopped: end the test with `app.stop().await` \
                 (which checks the end-of-test invariant) or, for work left unfinished on purpose, \
                 `app.stop_leaving_work_unfinished(why).await`"
            );
        }
    }
}

/// Drops a database `fresh_postgres_database` made, best effort (thousands of leftovers fill
/// the disk; a killed run's are purged by `deploy/local/test.sh`). Other URLs are left alone.
pub async fn drop_test_database(url: &str) {
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    if !url.starts_with("postgres") || !name.starts_with("lb_test_") {
        return;
    }
    let Ok(mut admin) = sqlx::PgConnection::connect(&test_database_admin_url()).await else {
        return;
    };
    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    if let Err(error) = sqlx::query(&drop).execute(&mut admin).await {
        tracing::debug!(%error, name, "Could not drop a test database.");
    }
    let _ = admin.close().await;
}

/// Deletes the topics of a test's prefix from the shared broker, best effort: thousands of
/// leftover partitions make the broker slow to restart (a killed run's are purged by
/// `deploy/local/test.sh`).
pub async fn delete_test_topics(bootstrap_servers: &str, prefix: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let Ok(admin) = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .create::<AdminClient<rdkafka::client::DefaultClientContext>>()
    else {
        return;
    };
    let names = leadbridge::shared::kafka::Topics::new(prefix.to_owned()).all();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    if let Err(error) = admin.delete_topics(&names, &options).await {
        tracing::debug!(%error, prefix, "Could not delete a test's topics.");
    }
}

/// A lead of the sample shape with its own case number.
pub fn sample_lead(case_id: &str) -> Value {
    let mut lead: Value =
        serde_json::from_str(include_str!("../../docs/examples/sample-lead.json")).unwrap();
    lead["source"]["case_id"] = Value::String(case_id.to_owned());
    lead
}

pub fn unique_case_id() -> String {
    format!("ZBHJ-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Every valid fixture, as (caller, lead).
pub fn valid_fixtures() -> Vec<(Agency, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/fixtures/valid");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let fixture: Value =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            (
                fixture["caller"].as_str().unwrap().parse().unwrap(),
                fixture["lead"].clone(),
            )
        })
        .collect()
}

/// Reads `topic` from the beginning until `expected` messages arrived, then keeps reading for
/// `linger` to catch duplicates; gives up after 60 s.
pub async fn consume(
    bootstrap_servers: &str,
    topic: &str,
    expected: usize,
    linger: Duration,
) -> Vec<OwnedMessage> {
    consume_where(bootstrap_servers, topic, expected, linger, |_| true).await
}

/// The receipts on the receipts topic, without the police log's shipments that share it
/// (`leadbridge.log.v1` under the key `log:police`).
pub async fn consume_receipts(
    bootstrap_servers: &str,
    topic: &str,
    expected: usize,
    linger: Duration,
) -> Vec<OwnedMessage> {
    consume_where(bootstrap_servers, topic, expected, linger, |message| {
        message.key() != Some(leadbridge::contract::events::LOG_EVENT_KEY.as_bytes())
    })
    .await
}

/// [`consume`], keeping (and counting towards `expected`) only the messages `keep` takes.
pub async fn consume_where(
    bootstrap_servers: &str,
    topic: &str,
    expected: usize,
    linger: Duration,
    keep: impl Fn(&OwnedMessage) -> bool,
) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut linger_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let until = linger_until.unwrap_or(deadline).min(deadline);
        if now >= until {
            break;
        }
        match tokio::time::timeout(until - now, consumer.recv()).await {
            Ok(Ok(message)) => {
                let message = message.detach();
                if keep(&message) {
                    messages.push(message);
                }
                if messages.len() >= expected && linger_until.is_none() {
                    linger_until = Some(Instant::now() + linger);
                }
            }
            Ok(Err(error)) => {
                // Unknown topic while it is being created, and the like: keep waiting.
                tracing::debug!(%error, "consume");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => break,
        }
    }
    messages
}

pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

pub fn payload(message: &OwnedMessage) -> Value {
    serde_json::from_slice(message.payload().expect("a payload")).expect("a JSON payload")
}

/// A loopback source address other than the agencies' 127.0.0.1, for clients that misbehave:
/// the server counts its per-address cap against them, not against the agencies.
pub const ATTACKER_ADDRESS: std::net::IpAddr =
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// A bare TCP connection to the hub from `from`.
pub async fn raw_tcp_from(from: std::net::IpAddr, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.expect("the hub accepts TCP")
}

/// The client half of a TLS connection, for tests that speak HTTP byte by byte.
pub type RawTls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to the hub from `from`, trusting the test CA, with a client certificate
/// for `principal` if given; `alpn` as the client offers it (empty: no ALPN).
pub async fn raw_tls_from(
    app: &TestApp,
    from: std::net::IpAddr,
    principal: Option<&Principal>,
    alpn: &[&[u8]],
) -> std::io::Result<RawTls> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pemfile::certs(&mut app.pki.ca.cert_pem().as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match principal {
        Some(principal) => {
            let issued = app.pki.ca.issue_client(principal).unwrap();
            let chain: Vec<CertificateDer<'static>> =
                rustls_pemfile::certs(&mut issued.cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap();
            let key: PrivateKeyDer<'static> =
                rustls_pemfile::private_key(&mut issued.key_pem.as_bytes())
                    .unwrap()
                    .expect("a private key");
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    let tcp = raw_tcp_from(from, app.addr).await;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// Reads one response: its head (status line and headers, lower-cased names) and body.
pub async fn read_response(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
) -> (String, Vec<(String, String)>, Vec<u8>) {
    let mut buffer = Vec::new();
    let mut byte = [0u8; 1];
    while !buffer.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::AsyncReadExt::read(stream, &mut byte),
        )
        .await
        .expect("an answer within 30 s")
        .expect("the connection stays up until the answer");
        assert!(
            read == 1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&buffer)
        );
        buffer.push(byte[0]);
    }
    let head = String::from_utf8(buffer).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map_or(0, |(_, value)| value.parse().unwrap());
    let mut body = vec![0u8; length];
    tokio::io::AsyncReadExt::read_exact(stream, &mut body)
        .await
        .unwrap();
    (status_line, headers, body)
}

/// A receipt about revision 1 of `lead_id` as the adapter would send it, built with the
/// contract's types.
pub fn receipt_payload(
    lead_id: &str,
    actor: &str,
    step: leadbridge::contract::events::ReceiptStep,
) -> Vec<u8> {
    use leadbridge::contract::events::{ReceiptEvent, RECEIPT_SCHEMA};
    serde_json::to_vec(&ReceiptEvent {
        event_id: uuid::Uuid::now_v7(),
        schema: RECEIPT_SCHEMA.into(),
        lead_id: leadbridge::contract::lead::LeadId::parse(lead_id).expect("a lead id"),
        revision: 1,
        at: chrono::Utc::now(),
        actor: actor.into(),
        step,
    })
    .unwrap()
}

/// A `received_by_police` step routing the lead to the Zichuan district unit.
pub fn received_by_police() -> leadbridge::contract::events::ReceiptStep {
    leadbridge::contract::events::ReceiptStep::ReceivedByPolice {
        units: vec!["370302".into()],
        assessment: serde_json::json!({"priority": "low", "suspected_offences": []}),
        deadlines: serde_json::json!([]),
        forwarding_task: None,
    }
}

/// Rows every node of a plan produced or threw away, times its loops: what the executor
/// examined.
pub fn rows_examined(node: &serde_json::Value) -> f64 {
    let number = |key: &str| {
        node.get(key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    let here = (number("Actual Rows")
        + number("Rows Removed by Filter")
        + number("Rows Removed by Join Filter")
        + number("Rows Removed by Index Recheck"))
        * number("Actual Loops");
    let below: f64 = node
        .get("Plans")
        .and_then(serde_json::Value::as_array)
        .map(|plans| plans.iter().map(rows_examined).sum())
        .unwrap_or(0.0);
    here + below
}

/// The root node of PostgreSQL's EXPLAIN ANALYZE of `statement`, run in a transaction that is
/// rolled back, so a claim or update explained this way changes nothing.
pub async fn analyzed_plan(db: &mut sqlx::PgConnection, statement: &str) -> serde_json::Value {
    use sqlx::Connection;
    let mut tx = db.begin().await.unwrap();
    let plan: sqlx::types::Json<serde_json::Value> =
        sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {statement}"))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.rollback().await.unwrap();
    plan.0[0]["Plan"].clone()
}
