//! Kafka plumbing shared by the roles: topic names, client configuration, the idempotent
//! producer, topic creation, the message limits, dead-letter publishing, and the embedded
//! broker.
//!
//! Limits: [`MessageLimits`] holds what Kafka accepts, learnt at start-up (the producer's
//! `message.max.bytes`, each described topic's `max.message.bytes`); [`check_topic_limits`]
//! refuses a topic that cannot take what the hub sends it, and the producers keep their
//! batches under the smallest topic limit. A message Kafka refuses is at fault only if it
//! could never fit alone ([`MessageLimits::never_fits`]). A dead letter is never dropped:
//! [`publish_until_acknowledged`] retries until Kafka acknowledges or shutdown comes, and
//! sends a reduced copy (context kept, payload cut) of one Kafka can never take whole.
//!
//! The embedded broker is librdkafka's in-process mock cluster. It speaks the Kafka protocol
//! to the same client code as production, but keeps at most 5 MiB or 100,000 messages per
//! partition and drops older ones; it is for the embedded default and its own tests only.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::watch;

use crate::contract::lead::Agency;
use crate::shared::config::KafkaSettings;

/// librdkafka properties the hub sets itself, each with what to do instead. A pass-through key
/// in this list is refused at start-up (`check_passthrough`), and only the builders below set
/// them (`HubConfig::own`), so a value in `kafka.client` is never accepted and then silently
/// overwritten.
pub const OWNED_PROPERTIES: [(&str, &str); 22] = [
    ("bootstrap.servers", "use kafka.bootstrap_servers"),
    ("metadata.broker.list", "use kafka.bootstrap_servers"),
    ("security.protocol", "use kafka.security_protocol"),
    ("sasl.mechanism", "use kafka.sasl_mechanism"),
    ("sasl.mechanisms", "use kafka.sasl_mechanism"),
    ("sasl.username", "use kafka.sasl_username"),
    ("sasl.password", "use kafka.sasl_password"),
    ("ssl.ca.location", "use kafka.ssl_ca_location"),
    ("ssl.certificate.location", "use kafka.ssl_certificate_location"),
    ("ssl.key.location", "use kafka.ssl_key_location"),
    ("message.timeout.ms", "use kafka.message_timeout_ms"),
    ("delivery.timeout.ms", "use kafka.message_timeout_ms"),
    (
        "group.id",
        "use police.group_id for the adapter; the hub's receipts group is <kafka.topic_prefix>-hub-receipts",
    ),
    (
        "enable.idempotence",
        "the hub owns it: the producer is idempotent so a retried send never duplicates or reorders a message",
    ),
    (
        "acks",
        "the hub owns it: a message counts as published only when all in-sync replicas have it",
    ),
    (
        "request.required.acks",
        "the hub owns it: a message counts as published only when all in-sync replicas have it",
    ),
    (
        "max.in.flight.requests.per.connection",
        "the hub owns it: the idempotent producer keeps order only within librdkafka's own limit",
    ),
    (
        "max.in.flight",
        "the hub owns it: the idempotent producer keeps order only within librdkafka's own limit",
    ),
    (
        "enable.auto.commit",
        "the hub owns it: offsets are committed only after the message was processed",
    ),
    (
        "enable.auto.offset.store",
        "the hub owns it: an offset is stored only after the message was processed",
    ),
    (
        "auto.offset.reset",
        "the hub owns it: a new consumer group starts from the earliest message, so nothing published before it started is skipped",
    ),
    (
        "auto.commit.interval.ms",
        "the hub owns it: it bounds how much is processed again after a crash",
    ),
];

/// Prefixes of librdkafka properties that would replace a typed setting by another form (the
/// PEM text instead of the file, the key's password), with the typed setting to use.
const OWNED_PREFIXES: [(&str, &str); 3] = [
    ("ssl.ca.", "use kafka.ssl_ca_location"),
    ("ssl.certificate.", "use kafka.ssl_certificate_location"),
    ("ssl.key.", "use kafka.ssl_key_location"),
];

/// Tuning properties the hub gives a default, and the default. A value in `kafka.client` wins:
/// none of them affects what is delivered, only how fast and how compactly.
pub const TUNED_PROPERTIES: [(&str, &str); 3] = [
    // The relay publishes in bursts; a few milliseconds batch a burst into fewer requests.
    ("linger.ms", "5"),
    ("compression.type", "lz4"),
    // The adapter's consumer notices newly created lead topics within seconds rather than the
    // librdkafka default of five minutes.
    ("topic.metadata.refresh.interval.ms", "5000"),
];

/// Why `key` may not be passed through, if it may not.
fn owned_reason(key: &str) -> Option<&'static str> {
    OWNED_PROPERTIES
        .iter()
        .find(|(owned, _)| *owned == key)
        .or_else(|| {
            OWNED_PREFIXES
                .iter()
                .find(|(prefix, _)| key.starts_with(prefix))
        })
        .map(|(_, reason)| *reason)
}

/// Refuses pass-through keys that would override a typed setting or a delivery guarantee,
/// naming what to use instead.
pub fn check_passthrough(client: &BTreeMap<String, String>) -> Result<(), String> {
    for key in client.keys() {
        if let Some(reason) = owned_reason(key) {
            return Err(format!(
                "kafka.client.{key} cannot be set: {reason}; remove it from kafka.client"
            ));
        }
    }
    Ok(())
}

/// A librdkafka configuration built only by this module: the caller can create a client from
/// it but not `.set` a property, so every property the hub sets goes through
/// [`HubConfig::own`] or [`HubConfig::tune`] and the rules above.
pub struct HubConfig {
    config: ClientConfig,
    user: BTreeMap<String, String>,
}

impl HubConfig {
    /// Sets a property the hub owns (one of [`OWNED_PROPERTIES`], which `check_passthrough`
    /// refuses in `kafka.client`).
    fn own(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        debug_assert!(
            owned_reason(key).is_some(),
            "{key} is set by the hub but not listed in OWNED_PROPERTIES"
        );
        self.config.set(key, value);
        self
    }

    /// Sets the hub's default for a tuning property (one of [`TUNED_PROPERTIES`]) unless the
    /// user passed a value through.
    fn tune(&mut self, key: &str) -> &mut Self {
        let default = TUNED_PROPERTIES
            .iter()
            .find(|(tuned, _)| *tuned == key)
            .map(|(_, value)| *value);
        debug_assert!(default.is_some(), "{key} is not in TUNED_PROPERTIES");
        if let (None, Some(default)) = (self.user.get(key), default) {
            self.config.set(key, default);
        }
        self
    }

    /// Sets `value` unless the user passed `key` through: a default the hub computes (from the
    /// topics' limits) rather than a fixed one.
    fn default_unless_passed(&mut self, key: &str, value: String) -> &mut Self {
        if !self.user.contains_key(key) {
            self.config.set(key, value);
        }
        self
    }

    /// Creates a client.
    pub fn create<T: rdkafka::config::FromClientConfig>(&self) -> rdkafka::error::KafkaResult<T> {
        self.config.create()
    }

    /// Every property and its value, for tests and diagnostics (secrets included: do not log).
    pub fn properties(&self) -> BTreeMap<&str, &str> {
        self.config.config_map()
    }
}

/// The hub's topic names under one prefix.
#[derive(Clone, Debug)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Topics {
            prefix: prefix.into(),
        }
    }

    /// `<prefix>.leads.<agency>.v1`
    pub fn leads(&self, agency: Agency) -> String {
        format!("{}.leads.{}.v1", self.prefix, agency)
    }

    /// `<prefix>.receipts.v1`
    pub fn receipts(&self) -> String {
        format!("{}.receipts.v1", self.prefix)
    }

    /// `<prefix>.deadletter.v1`
    pub fn deadletter(&self) -> String {
        format!("{}.deadletter.v1", self.prefix)
    }

    /// Every topic the hub uses.
    pub fn all(&self) -> Vec<String> {
        let mut topics: Vec<String> = Agency::ALL
            .into_iter()
            .map(|agency| self.leads(agency))
            .collect();
        topics.push(self.receipts());
        topics.push(self.deadletter());
        topics
    }
}

/// Errors of the Kafka boundary outside of publishing one message.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("cannot create a Kafka client: {0}")]
    Client(#[source] rdkafka::error::KafkaError),
    #[error("cannot create topic {topic}: {source}")]
    Topic {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("the embedded broker failed to start: {0}")]
    Embedded(String),
    /// A configured Kafka limit does not parse.
    #[error("{0}")]
    BadSetting(String),
    /// The largest accepted lead could not be published.
    #[error("{0}")]
    LeadCannotFit(String),
    /// A topic cannot take what the hub sends it.
    #[error("{0}")]
    TopicTooSmall(String),
    /// The brokers' configuration could not be read.
    #[error("cannot read the topic configuration: {0}")]
    DescribeConfigs(String),
}

impl KafkaSetupError {
    /// Whether trying again later can help (the brokers were unreachable), as opposed to a
    /// setting that must change.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            KafkaSetupError::Client(_)
                | KafkaSetupError::Topic { .. }
                | KafkaSetupError::DescribeConfigs(_)
        )
    }
}

/// librdkafka's default producer `message.max.bytes`.
pub const LIBRDKAFKA_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// An upper bound of what a lead event adds to the serialized lead: the hub's metadata around
/// it (`ingest::lead_event`: ids, hashes, a case id of at most 64 characters; under 600 bytes),
/// the headers and key (under 400 bytes) and Kafka's record framing (under 100 bytes), with a
/// wide margin so that a new metadata field does not break the limit arithmetic.
pub const LEAD_EVENT_OVERHEAD_BYTES: usize = 16 * 1024;

/// The producer's `message.max.bytes`: the pass-through value if set, else librdkafka's default.
pub fn producer_message_max_bytes(settings: &KafkaSettings) -> Result<usize, KafkaSetupError> {
    match settings.client.get("message.max.bytes") {
        None => Ok(LIBRDKAFKA_MESSAGE_MAX_BYTES),
        Some(text) => text.trim().parse().map_err(|_| {
            KafkaSetupError::BadSetting(format!(
                "kafka.client.message.max.bytes = {text:?} is not a number of bytes"
            ))
        }),
    }
}

/// Checks that a lead of `max_lead_bytes` plus the event overhead fits under `limit`.
pub fn check_lead_fits(
    max_lead_bytes: usize,
    limit: usize,
    what: &str,
) -> Result<(), KafkaSetupError> {
    let largest_event = max_lead_bytes.saturating_add(LEAD_EVENT_OVERHEAD_BYTES);
    if largest_event > limit {
        return Err(KafkaSetupError::LeadCannotFit(format!(
            "limits.max_lead_bytes ({max_lead_bytes}) plus up to {LEAD_EVENT_OVERHEAD_BYTES} bytes of event metadata \
             ({largest_event}) exceeds {what} ({limit}): accepted leads could never be published. \
             Lower limits.max_lead_bytes to at most {} or raise {what}",
            limit.saturating_sub(LEAD_EVENT_OVERHEAD_BYTES)
        )));
    }
    Ok(())
}

/// A receipt event at its largest: a reason of 2,000 characters (at most 8,000 bytes of
/// UTF-8), ids, actor, an error detail for `dead_lettered`, and headers, with room to spare.
pub const RECEIPT_EVENT_MAX_BYTES: usize = 16 * 1024;

/// What a dead letter adds to the message it sets aside: the error context headers and the
/// `original.*` copies of the message's own headers (a lead event's are under 1 KiB).
pub const DEAD_LETTER_OVERHEAD_BYTES: usize = 8 * 1024;

/// Checks the described topics' `max.message.bytes` against what the hub sends them, and
/// returns warnings to log:
/// - a leads topic must take the largest accepted lead (`check_lead_fits`), when `leads`
///   (the hub's roles; the adapter does not publish leads), or accepted leads fail for good;
/// - the receipts topic must take `RECEIPT_EVENT_MAX_BYTES`: a receipt is small, so a topic
///   that cannot take one is a mistake, and each receipt refused would stay unheard;
/// - the dead-letter topic must take a reduced dead letter (`REDUCED_PAYLOAD_BYTES` plus
///   headers), or dead-lettering would block its source partition; below the largest lead's
///   dead letter it is only a warning, because a dead letter too large is stored reduced
///   (payload cut, context kept: `publish_until_acknowledged`).
pub fn check_topic_limits(
    max_lead_bytes: usize,
    limits: &MessageLimits,
    topics: &Topics,
    leads: bool,
) -> Result<Vec<String>, KafkaSetupError> {
    let mut warnings = Vec::new();
    for (topic, &limit) in &limits.topics {
        let what = format!("max.message.bytes of topic {topic}");
        if *topic == topics.receipts() {
            if limit < RECEIPT_EVENT_MAX_BYTES {
                return Err(KafkaSetupError::TopicTooSmall(format!(
                    "{what} ({limit}) is under the {RECEIPT_EVENT_MAX_BYTES} bytes a receipt may take: \
                     raise it"
                )));
            }
        } else if *topic == topics.deadletter() {
            let reduced = REDUCED_PAYLOAD_BYTES + DEAD_LETTER_OVERHEAD_BYTES;
            let largest = max_lead_bytes + LEAD_EVENT_OVERHEAD_BYTES + DEAD_LETTER_OVERHEAD_BYTES;
            if limit < reduced {
                return Err(KafkaSetupError::TopicTooSmall(format!(
                    "{what} ({limit}) is under the {reduced} bytes a reduced dead letter may take: \
                     dead-lettering would block the partitions; raise it"
                )));
            }
            if limit < largest {
                warnings.push(format!(
                    "{what} ({limit}) is under the {largest} bytes the dead letter of the largest \
                     lead may take: such dead letters are stored with their payload cut"
                ));
            }
        } else if leads {
            check_lead_fits(max_lead_bytes, limit, &what)?;
        }
    }
    Ok(warnings)
}

/// Each topic's `max.message.bytes` as the brokers report it (the topic's own value or the
/// broker default it inherits). Fails if the brokers cannot be asked; a topic the brokers do
/// not describe (absent, not authorised) is left out of the answer.
pub async fn topic_message_max_bytes(
    settings: &KafkaSettings,
    bootstrap_servers: &str,
    topics: &[String],
) -> Result<Vec<(String, usize)>, KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = client_config(settings, bootstrap_servers)
        .create()
        .map_err(KafkaSetupError::Client)?;
    let specifiers: Vec<ResourceSpecifier<'_>> = topics
        .iter()
        .map(|topic| ResourceSpecifier::Topic(topic))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .describe_configs(&specifiers, &options)
        .await
        .map_err(|error| KafkaSetupError::DescribeConfigs(error.to_string()))?;
    let mut limits = Vec::new();
    for (topic, result) in topics.iter().zip(results) {
        match result {
            Ok(resource) => {
                let entries = resource.entry_map();
                let Some(value) = entries
                    .get("max.message.bytes")
                    .and_then(|e| e.value.as_deref())
                else {
                    tracing::warn!(
                        topic,
                        "The brokers report no max.message.bytes for the topic."
                    );
                    continue;
                };
                let bytes = value.trim().parse().map_err(|_| {
                    KafkaSetupError::DescribeConfigs(format!(
                        "topic {topic} has max.message.bytes = {value:?}, not a number"
                    ))
                })?;
                limits.push((topic.clone(), bytes));
            }
            Err(code) => {
                tracing::warn!(topic, error = %code, "Cannot read the topic's configuration.");
            }
        }
    }
    Ok(limits)
}

/// Common client properties: the pass-through map, then the servers and the security
/// settings (which `check_passthrough` keeps out of the map, so neither overwrites the other).
pub fn client_config(settings: &KafkaSettings, bootstrap_servers: &str) -> HubConfig {
    let mut config = ClientConfig::new();
    for (key, value) in &settings.client {
        config.set(key, value);
    }
    let mut config = HubConfig {
        config,
        user: settings.client.clone(),
    };
    config.own("bootstrap.servers", bootstrap_servers);
    if let Some(protocol) = &settings.security_protocol {
        config.own("security.protocol", protocol);
    }
    if let Some(mechanism) = &settings.sasl_mechanism {
        config.own("sasl.mechanism", mechanism);
    }
    if let Some(username) = &settings.sasl_username {
        config.own("sasl.username", username);
    }
    if let Some(password) = &settings.sasl_password {
        config.own("sasl.password", password.expose());
    }
    let paths = [
        ("ssl.ca.location", &settings.ssl_ca_location),
        (
            "ssl.certificate.location",
            &settings.ssl_certificate_location,
        ),
        ("ssl.key.location", &settings.ssl_key_location),
    ];
    for (key, path) in paths {
        if let Some(path) = path {
            config.own(key, path.display().to_string());
        }
    }
    config
}

/// librdkafka's default producer `batch.size`.
pub const LIBRDKAFKA_BATCH_SIZE: usize = 1_000_000;

/// The producer's properties: idempotent, acknowledged by all in-sync replicas, so a retried
/// send never duplicates or reorders within a partition; and `batch.size` under the smallest
/// described topic limit (`MessageLimits::batch_size_bound`), so that a batch of records that
/// each fit is never refused whole. With Kafka's defaults (`max.message.bytes` 1,048,588,
/// `batch.size` 1,000,000) the bound changes nothing. A `batch.size` passed through that
/// exceeds the bound is refused rather than lowered behind the operator's back.
pub fn producer_config(
    settings: &KafkaSettings,
    bootstrap_servers: &str,
    limits: &MessageLimits,
) -> Result<HubConfig, KafkaSetupError> {
    let mut config = client_config(settings, bootstrap_servers);
    config
        .own("enable.idempotence", "true")
        .own("acks", "all")
        .own(
            "message.timeout.ms",
            settings.message_timeout_ms.to_string(),
        )
        .tune("linger.ms")
        .tune("compression.type");
    if let Some(bound) = limits.batch_size_bound() {
        match settings.client.get("batch.size") {
            Some(value) => {
                let configured: usize = value.trim().parse().map_err(|_| {
                    KafkaSetupError::BadSetting(format!(
                        "kafka.client batch.size {value:?} is not a number of bytes"
                    ))
                })?;
                if configured > bound {
                    return Err(KafkaSetupError::BadSetting(format!(
                        "kafka.client batch.size ({configured}) is larger than {bound}, the largest batch the smallest topic max.message.bytes takes: a batch of records that each fit would be refused whole"
                    )));
                }
            }
            None if bound < LIBRDKAFKA_BATCH_SIZE => {
                tracing::info!(
                    batch_size = bound,
                    "Producer batch.size lowered to fit the smallest topic max.message.bytes."
                );
                config.default_unless_passed("batch.size", bound.to_string());
            }
            None => {}
        }
    }
    Ok(config)
}

/// The relay's producer (see [`producer_config`]), knowing no topic limits; the application's
/// producers are made by [`idempotent_producer_within`].
pub fn idempotent_producer(
    settings: &KafkaSettings,
    bootstrap_servers: &str,
) -> Result<FutureProducer, KafkaSetupError> {
    idempotent_producer_within(settings, bootstrap_servers, &MessageLimits::default())
}

/// As [`idempotent_producer`], within the topic limits learnt at start-up.
pub fn idempotent_producer_within(
    settings: &KafkaSettings,
    bootstrap_servers: &str,
    limits: &MessageLimits,
) -> Result<FutureProducer, KafkaSetupError> {
    producer_config(settings, bootstrap_servers, limits)?
        .create()
        .map_err(KafkaSetupError::Client)
}

/// The properties of an at-least-once consumer in `group_id`: offsets are stored by the code
/// only after a message was processed, and committed from the stored ones every second; a new
/// group starts from the earliest message.
pub fn consumer_config(
    settings: &KafkaSettings,
    bootstrap_servers: &str,
    group_id: &str,
) -> HubConfig {
    let mut config = client_config(settings, bootstrap_servers);
    config
        .own("group.id", group_id)
        .own("enable.auto.commit", "true")
        .own("enable.auto.offset.store", "false")
        .own("auto.commit.interval.ms", "1000")
        .own("auto.offset.reset", "earliest")
        .tune("topic.metadata.refresh.interval.ms");
    config
}

/// The properties of a client that only reads `group_id`'s committed offsets and the
/// partitions' watermarks (the adapter's lag monitor). It never joins the group and never
/// commits, so it cannot disturb the group's members.
pub fn observer_config(
    settings: &KafkaSettings,
    bootstrap_servers: &str,
    group_id: &str,
) -> HubConfig {
    let mut config = client_config(settings, bootstrap_servers);
    config
        .own("group.id", group_id)
        .own("enable.auto.commit", "false")
        .own("enable.auto.offset.store", "false");
    config
}

/// Creates the topics that do not exist yet.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    bootstrap_servers: &str,
    topics: &[String],
) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = client_config(settings, bootstrap_servers)
        .create()
        .map_err(KafkaSetupError::Client)?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|topic| {
            NewTopic::new(
                topic,
                settings.topic_partitions,
                TopicReplication::Fixed(settings.topic_replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(KafkaSetupError::Client)?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaSetupError::Topic {
                    topic,
                    source: rdkafka::error::KafkaError::AdminOp(code),
                })
            }
        }
    }
    Ok(())
}

enum BrokerCommand {
    Down,
    Up,
}

/// The in-process Kafka-protocol broker of the embedded default. It lives on its own thread
/// (librdkafka's mock handle cannot move between threads) until this value is dropped.
pub struct EmbeddedBroker {
    bootstrap_servers: String,
    commands: Option<mpsc::Sender<BrokerCommand>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a one-broker mock cluster with `topics` created (`partitions` each).
    pub fn start(topics: &[String], partitions: i32) -> Result<Self, KafkaSetupError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (command_tx, command_rx) = mpsc::channel::<BrokerCommand>();
        let topics = topics.to_vec();
        let thread = thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(cluster) => cluster,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error.to_string()));
                        return;
                    }
                };
                for topic in &topics {
                    if let Err(error) = cluster.create_topic(topic, partitions, 1) {
                        let _ = ready_tx.send(Err(format!("topic {topic}: {error}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Runs until every sender is dropped, i.e. until the EmbeddedBroker is.
                for command in command_rx {
                    let result = match command {
                        BrokerCommand::Down => cluster.broker_down(1),
                        BrokerCommand::Up => cluster.broker_up(1),
                    };
                    if let Err(error) = result {
                        tracing::warn!(%error, "Embedded broker command failed.");
                    }
                }
            })
            .map_err(|error| KafkaSetupError::Embedded(error.to_string()))?;
        let bootstrap_servers = ready_rx
            .recv()
            .map_err(|_| KafkaSetupError::Embedded("the broker thread ended".into()))?
            .map_err(KafkaSetupError::Embedded)?;
        Ok(EmbeddedBroker {
            bootstrap_servers,
            commands: Some(command_tx),
            thread: Some(thread),
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Takes the broker offline (for fault tests of the embedded mode).
    pub fn take_down(&self) {
        self.send(BrokerCommand::Down);
    }

    /// Brings the broker back.
    pub fn bring_up(&self) {
        self.send(BrokerCommand::Up);
    }

    fn send(&self, command: BrokerCommand) {
        if let Some(commands) = &self.commands {
            let _ = commands.send(command);
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// librdkafka's own upper bound of a record's framing (`RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`:
/// length, attributes, timestamp and offset deltas, key and value lengths, header count).
const RECORD_MAX_OVERHEAD_BYTES: usize = 36;

/// A record's size as librdkafka measures it against `message.max.bytes`: key, payload and
/// headers with their framing at its largest (two 5-byte varints per header).
pub fn record_bytes<'a>(
    key: Option<&[u8]>,
    payload: &[u8],
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> usize {
    let headers: usize = headers
        .into_iter()
        .map(|(key, value)| key.len() + value.len() + 10)
        .sum();
    RECORD_MAX_OVERHEAD_BYTES + key.map_or(0, <[u8]>::len) + payload.len() + headers
}

/// A record batch's header (61 bytes) and an LZ4 frame's header and end mark (at most 19),
/// rounded up.
const BATCH_FRAMING_BYTES: usize = 128;

/// The largest a batch holding only a record of `record_bytes` can be on the wire: LZ4 (the
/// producer's compression) expands incompressible data by at most 1/255.
fn alone_batch_bytes(record_bytes: usize) -> usize {
    record_bytes + record_bytes / 255 + BATCH_FRAMING_BYTES
}

/// What Kafka accepts, as known at start-up: the producer's `message.max.bytes` and the
/// `max.message.bytes` of the topics the brokers described (none on the embedded broker,
/// which cannot describe topics and does not enforce them).
#[derive(Clone, Debug)]
pub struct MessageLimits {
    pub producer: usize,
    pub topics: BTreeMap<String, usize>,
}

impl Default for MessageLimits {
    fn default() -> Self {
        MessageLimits {
            producer: LIBRDKAFKA_MESSAGE_MAX_BYTES,
            topics: BTreeMap::new(),
        }
    }
}

impl MessageLimits {
    /// Whether a record of `record_bytes` for `topic` is refused even when sent alone: over
    /// the producer's limit (librdkafka refuses it before sending), or possibly over the
    /// topic's once framed in a batch of its own. A size refusal of a record that fits alone
    /// was a refusal of the batch it shared with others, which is no fault of the record.
    ///
    /// Limit: a record over the topic's limit uncompressed but compressible under it is
    /// counted as never fitting, though alone it would. Accepted leads are far below that
    /// line (`check_lead_fits` leaves `LEAD_EVENT_OVERHEAD_BYTES` of room).
    pub fn never_fits(&self, topic: &str, record_bytes: usize) -> bool {
        record_bytes > self.producer
            || self
                .topics
                .get(topic)
                .is_some_and(|&limit| alone_batch_bytes(record_bytes) > limit)
    }

    /// The largest `batch.size` whose batches fit every described topic even when LZ4 expands
    /// them, or None when no topic was described. librdkafka packs records of one partition
    /// into a batch up to `batch.size` (default 1,000,000); a batch over the topic's
    /// `max.message.bytes` is refused whole, though each record alone fits.
    pub fn batch_size_bound(&self) -> Option<usize> {
        let smallest = *self.topics.values().min()?;
        // Solves alone_batch_bytes(bound) <= smallest with room to spare.
        Some(
            smallest
                .saturating_sub(smallest / 128 + 2 * BATCH_FRAMING_BYTES)
                .max(1),
        )
    }
}

/// Why a message could not be published as it is.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Kafka acknowledged the message as given.
    Whole,
    /// Kafka refused the message for good; a reduced copy (payload cut, the headers and the
    /// refusal kept) was acknowledged instead.
    Reduced,
}

/// Shutdown came while the message was not yet acknowledged; the caller must not treat it as
/// published (a consumer does not store the source offset, so it is redelivered later).
#[derive(Debug, PartialEq, Eq)]
pub struct Interrupted;

/// How much of a refused payload a reduced dead letter keeps: enough to identify the message
/// (a lead event starts with its ids), small next to any sensible topic limit.
pub const REDUCED_PAYLOAD_BYTES: usize = 16 * 1024;

/// How much of each header value the smallest reduced copy keeps.
const REDUCED_HEADER_VALUE_BYTES: usize = 1024;

/// Waits for the next message, then takes what the consumer has already fetched, up to `max`
/// in all; nothing more is waited for. A `recv` that is not ready takes nothing from the
/// queue, so dropping it loses nothing. `None` when `shutdown` came first. A consumer error
/// is logged (`who` names the consumer) and answered with an empty batch after a short pause.
pub async fn next_batch<'a>(
    consumer: &'a rdkafka::consumer::StreamConsumer,
    max: usize,
    who: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Vec<rdkafka::message::BorrowedMessage<'a>>> {
    let first = tokio::select! {
        message = consumer.recv() => message,
        _ = shutdown.changed() => return None,
    };
    let mut batch = match first {
        Ok(message) => vec![message],
        Err(error) => {
            tracing::warn!(%error, consumer = who, "Kafka consumer error; continuing.");
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Some(Vec::new());
        }
    };
    while batch.len() < max.max(1) {
        match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
            Ok(Ok(message)) => batch.push(message),
            Ok(Err(error)) => {
                tracing::warn!(%error, consumer = who, "Kafka consumer error; continuing.");
                break;
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Sets a consumed message aside on the dead-letter topic as it came (its key and payload,
/// its own headers as `original.<key>`) with `why` in the headers, retrying until Kafka
/// acknowledges, as [`publish_until_acknowledged`] does.
pub async fn dead_letter_consumed(
    producer: &FutureProducer,
    limits: &MessageLimits,
    topic: &str,
    message: &rdkafka::message::BorrowedMessage<'_>,
    why: &crate::contract::events::DeadLetterHeaders,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<PublishOutcome, Interrupted> {
    use rdkafka::message::{Headers, Message};
    let original: Vec<(String, Vec<u8>)> = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    (
                        format!("original.{}", h.key),
                        h.value.unwrap_or_default().to_vec(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let why = why.to_kafka();
    let headers: Vec<(&str, &[u8])> = why
        .iter()
        .map(|(key, value)| (*key, value.as_bytes()))
        .chain(
            original
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_slice())),
        )
        .collect();
    publish_until_acknowledged(
        producer,
        limits,
        topic,
        message.key(),
        message.payload().unwrap_or_default(),
        &headers,
        shutdown,
    )
    .await
}

/// Publishes one message until Kafka acknowledges it. For messages that must not be dropped
/// and have no outbox behind them: dead letters, whose source offset is stored only after this
/// returns `Ok`.
///
/// Transient errors (broker away, a batch refused as a whole) are retried every second until
/// `shutdown`, which returns `Interrupted`. When Kafka refuses the message itself for good
/// (`PublishError::from_kafka`: too large alone, an invalid record), retrying could only
/// block the caller's partition forever, so a reduced copy is sent instead: the same headers
/// plus `payload_truncated=true`, `original_payload_bytes` and `truncation_reason`, with the
/// payload cut to `REDUCED_PAYLOAD_BYTES`; if even that is refused, with no payload and header
/// values cut to 1 KiB. If the smallest copy is refused too (a topic that takes almost
/// nothing), that is logged as an error and retried like a transient error: the message stays
/// in its source topic rather than be lost, until the topic is fixed.
pub async fn publish_until_acknowledged(
    producer: &FutureProducer,
    limits: &MessageLimits,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: &[(&str, &[u8])],
    shutdown: &mut watch::Receiver<bool>,
) -> Result<PublishOutcome, Interrupted> {
    let original_bytes = payload.len().to_string();
    let mut refusal = String::new();
    // 0: as given; 1: payload cut; 2: no payload, header values cut.
    let mut reduction = 0;
    loop {
        if *shutdown.borrow() {
            return Err(Interrupted);
        }
        let mut copy: Vec<(&str, &[u8])> = headers.to_vec();
        let sent_payload: &[u8] = match reduction {
            0 => payload,
            1 => &payload[..payload.len().min(REDUCED_PAYLOAD_BYTES)],
            _ => {
                for (_, value) in &mut copy {
                    *value = &value[..value.len().min(REDUCED_HEADER_VALUE_BYTES)];
                }
                &[]
            }
        };
        if reduction > 0 {
            copy.push(("payload_truncated", b"true"));
            copy.push(("original_payload_bytes", original_bytes.as_bytes()));
            copy.push((
                "truncation_reason",
                &refusal.as_bytes()[..refusal.len().min(REDUCED_HEADER_VALUE_BYTES)],
            ));
        }
        let size = record_bytes(key, sent_payload, copy.iter().copied());
        let mut owned = rdkafka::message::OwnedHeaders::new_with_capacity(copy.len());
        for (key, value) in &copy {
            owned = owned.insert(rdkafka::message::Header {
                key,
                value: Some(*value),
            });
        }
        let mut record = rdkafka::producer::FutureRecord::to(topic)
            .payload(sent_payload)
            .headers(owned);
        if let Some(key) = key {
            record = record.key(key);
        }
        let sent = tokio::select! {
            sent = producer.send(record, Duration::from_secs(5)) => sent,
            // Not acknowledged yet: whether it lands or not, the source is redelivered later.
            _ = shutdown.changed() => return Err(Interrupted),
        };
        let error = match sent {
            Ok(_) if reduction == 0 => return Ok(PublishOutcome::Whole),
            Ok(_) => {
                tracing::warn!(
                    topic,
                    original_bytes,
                    "Published a reduced copy of a message Kafka refuses."
                );
                return Ok(PublishOutcome::Reduced);
            }
            Err((error, _)) => error,
        };
        match PublishError::from_kafka(&error, limits.never_fits(topic, size)) {
            PublishError::Permanent { class, message } if reduction < 2 => {
                tracing::warn!(topic, class, error = %message, size, "Kafka refuses the message; sending a reduced copy.");
                refusal = format!("{class}: {message}");
                reduction += 1;
                continue;
            }
            PublishError::Permanent { class, message } => {
                tracing::error!(topic, class, error = %message, size, "Kafka refuses even the reduced copy; retrying until the topic takes it.");
            }
            PublishError::Transient(message) => {
                tracing::warn!(error = %message, topic, "Cannot publish yet; retrying.");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return Err(Interrupted),
        }
    }
}

/// Why one message was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Kafka refuses this message's data (too large, malformed record): the same message can
    /// never be published, whatever the broker's state.
    #[error("Kafka refuses the message ({class}): {message}")]
    Permanent {
        class: &'static str,
        message: String,
    },
    /// The broker is away, slow or electing a leader: the same message can succeed later.
    #[error("cannot publish now: {0}")]
    Transient(String),
}

impl PublishError {
    /// Sorts a producer error about a record that `never_fits` alone or not
    /// (`MessageLimits::never_fits`). Only errors about the record itself are permanent;
    /// anything unknown is retried, because wrongly giving up loses a lead's publication while
    /// wrongly retrying only delays it.
    ///
    /// A size refusal is permanent only for a record that never fits: librdkafka packs several
    /// records into one batch and the broker refuses the batch whole, so a record that fits
    /// alone was refused for its neighbours and is retried. `InvalidMessage` (Kafka's
    /// CORRUPT_MESSAGE, a CRC failure in transit) is retriable by Kafka's own account.
    pub fn from_kafka(error: &rdkafka::error::KafkaError, never_fits: bool) -> PublishError {
        let class = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::MessageSizeTooLarge) if never_fits => Some("message_too_large"),
            Some(RDKafkaErrorCode::MessageBatchTooLarge) if never_fits => {
                Some("record_list_too_large")
            }
            Some(RDKafkaErrorCode::InvalidMessageSize) => Some("invalid_message_size"),
            Some(RDKafkaErrorCode::InvalidRecord) => Some("invalid_record"),
            _ => None,
        };
        match class {
            Some(class) => PublishError::Permanent {
                class,
                message: error.to_string(),
            },
            None => PublishError::Transient(error.to_string()),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, PublishError::Transient(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_the_contract() {
        let topics = Topics::new("leadbridge");
        assert_eq!(
            topics.leads(Agency::Environment),
            "leadbridge.leads.environment.v1"
        );
        assert_eq!(topics.receipts(), "leadbridge.receipts.v1");
        assert_eq!(topics.deadletter(), "leadbridge.deadletter.v1");
        assert_eq!(topics.all().len(), 6);
    }

    #[test]
    fn the_default_largest_lead_fits_kafkas_default_limits() {
        let max_lead_bytes = crate::shared::config::LimitSettings::default().max_lead_bytes;
        let settings = KafkaSettings::default();
        let producer = producer_message_max_bytes(&settings).unwrap();
        assert_eq!(producer, 1_000_000);
        assert!(check_lead_fits(max_lead_bytes, producer, "producer").is_ok());
        assert!(check_lead_fits(max_lead_bytes, 1_048_588, "topic").is_ok());
        let error = check_lead_fits(max_lead_bytes, 200_000, "topic x").unwrap_err();
        assert!(
            error.to_string().contains("limits.max_lead_bytes (921600)"),
            "{error}"
        );
        assert!(!error.is_retryable());
    }

    #[test]
    fn a_producer_limit_that_does_not_parse_is_an_error() {
        let mut settings = KafkaSettings::default();
        settings
            .client
            .insert("message.max.bytes".into(), "2000000".into());
        assert_eq!(producer_message_max_bytes(&settings).unwrap(), 2_000_000);
        settings
            .client
            .insert("message.max.bytes".into(), "1MB".into());
        assert!(producer_message_max_bytes(&settings).is_err());
    }

    #[test]
    fn a_batch_size_passed_through_that_cannot_fit_is_refused_not_lowered() {
        let limits = MessageLimits {
            topics: [("small".to_string(), 60_000)].into(),
            ..MessageLimits::default()
        };
        let bound = limits.batch_size_bound().unwrap();
        let lowered = producer_config(&KafkaSettings::default(), "k:9092", &limits).unwrap();
        assert_eq!(
            lowered.properties().get("batch.size"),
            Some(&bound.to_string().as_str()),
            "without a passed value the hub's bound applies"
        );
        let mut settings = KafkaSettings::default();
        settings
            .client
            .insert("batch.size".into(), (bound + 1).to_string());
        let error = producer_config(&settings, "k:9092", &limits).err().unwrap();
        assert!(error.to_string().contains("batch.size"), "{error}");
        settings
            .client
            .insert("batch.size".into(), (bound / 2).to_string());
        let kept = producer_config(&settings, "k:9092", &limits).unwrap();
        assert_eq!(
            kept.properties().get("batch.size"),
            Some(&(bound / 2).to_string().as_str()),
            "a value that fits is the operator's"
        );
    }

    #[test]
    fn batches_are_kept_under_the_smallest_topic_limit() {
        let mut limits = MessageLimits::default();
        assert_eq!(limits.batch_size_bound(), None, "nothing described");
        limits.topics = [("a".to_string(), 1_048_588), ("b".to_string(), 60_000)].into();
        let bound = limits.batch_size_bound().unwrap();
        assert!(bound < 60_000, "{bound}");
        // A batch of `bound` bytes, LZ4 at its worst, still fits the smallest topic.
        assert!(alone_batch_bytes(bound) <= 60_000, "{bound}");
        assert!(!limits.never_fits("b", bound));
        // With Kafka's defaults, the bound is above librdkafka's batch.size: nothing changes.
        limits.topics = [("a".to_string(), 1_048_588)].into();
        assert!(limits.batch_size_bound().unwrap() > LIBRDKAFKA_BATCH_SIZE);
    }

    #[test]
    fn receipts_and_dead_letter_topics_are_checked_too() {
        let topics = Topics::new("p");
        let lead = 100_000;
        let limits = |receipts: usize, deadletter: usize| MessageLimits {
            producer: LIBRDKAFKA_MESSAGE_MAX_BYTES,
            topics: [
                (topics.leads(Agency::Environment), 1_048_588),
                (topics.receipts(), receipts),
                (topics.deadletter(), deadletter),
            ]
            .into(),
        };
        let fine = check_topic_limits(lead, &limits(1_048_588, 1_048_588), &topics, true);
        assert!(fine.unwrap().is_empty());
        let error = check_topic_limits(lead, &limits(8_000, 1_048_588), &topics, true).unwrap_err();
        assert!(error.to_string().contains(&topics.receipts()), "{error}");
        assert!(!error.is_retryable());
        let error =
            check_topic_limits(lead, &limits(1_048_588, 20_000), &topics, false).unwrap_err();
        assert!(error.to_string().contains("reduced dead letter"), "{error}");
        // Under the largest lead's dead letter: stored reduced, so a warning.
        let warnings = check_topic_limits(lead, &limits(1_048_588, 60_000), &topics, true).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("payload cut"), "{warnings:?}");
        // A leads topic too small for the largest lead fails the hub, not the adapter.
        let mut small = limits(1_048_588, 1_048_588);
        small
            .topics
            .insert(topics.leads(Agency::Environment), 50_000);
        assert!(check_topic_limits(lead, &small, &topics, true).is_err());
        assert!(check_topic_limits(lead, &small, &topics, false).is_ok());
    }

    /// Settings with every typed Kafka setting given, and `client` as the pass-through map.
    fn typed_settings(client: BTreeMap<String, String>) -> KafkaSettings {
        KafkaSettings {
            security_protocol: Some("sasl_ssl".into()),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some("hub".into()),
            sasl_password: Some(crate::shared::config::Secret::new("pw")),
            ssl_ca_location: Some("/ca.pem".into()),
            ssl_certificate_location: Some("/client.pem".into()),
            ssl_key_location: Some("/client.key".into()),
            client,
            ..KafkaSettings::default()
        }
    }

    /// Every configuration the hub builds a client from.
    fn every_builder(settings: &KafkaSettings) -> Vec<(&'static str, HubConfig)> {
        vec![
            ("client", client_config(settings, "k:9092")),
            (
                "producer",
                producer_config(settings, "k:9092", &MessageLimits::default()).unwrap(),
            ),
            ("consumer", consumer_config(settings, "k:9092", "g")),
            ("observer", observer_config(settings, "k:9092", "g")),
        ]
    }

    #[test]
    fn every_property_the_hub_sets_is_refused_in_passthrough_or_left_to_the_user() {
        let tuned: BTreeMap<String, String> = TUNED_PROPERTIES
            .iter()
            .map(|(key, _)| (key.to_string(), format!("user-{key}")))
            .chain([("client.id".to_string(), "hub-1".to_string())])
            .collect();
        assert!(check_passthrough(&tuned).is_ok());
        for client in [BTreeMap::new(), tuned] {
            let settings = typed_settings(client.clone());
            for (builder, config) in every_builder(&settings) {
                for (key, value) in config.properties() {
                    match client.get(key) {
                        Some(passed) => assert_eq!(
                            value, passed,
                            "{builder}: {key} was passed through and then overwritten"
                        ),
                        None => {
                            let alone = BTreeMap::from([(key.to_string(), "x".to_string())]);
                            let tuning = TUNED_PROPERTIES.iter().any(|(tuned, _)| *tuned == key);
                            assert!(
                                tuning || check_passthrough(&alone).is_err(),
                                "{builder} sets {key}, which kafka.client would accept and this builder overwrite"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_tuning_property_passed_through_wins_over_the_hubs_default() {
        let producer = producer_config(
            &KafkaSettings::default(),
            "k:9092",
            &MessageLimits::default(),
        )
        .unwrap();
        assert_eq!(producer.properties().get("linger.ms"), Some(&"5"));
        let settings = typed_settings(BTreeMap::from([("linger.ms".into(), "50".into())]));
        let producer = producer_config(&settings, "k:9092", &MessageLimits::default()).unwrap();
        assert_eq!(producer.properties().get("linger.ms"), Some(&"50"));
    }

    #[test]
    fn a_refused_passthrough_key_names_what_to_use_instead() {
        let cases = [
            ("bootstrap.servers", "use kafka.bootstrap_servers"),
            ("message.timeout.ms", "use kafka.message_timeout_ms"),
            ("sasl.password", "use kafka.sasl_password"),
            ("ssl.key.pem", "use kafka.ssl_key_location"),
            ("group.id", "use police.group_id"),
            ("enable.idempotence", "the hub owns it"),
            (
                "auto.offset.reset",
                "nothing published before it started is skipped",
            ),
            (
                "enable.auto.offset.store",
                "only after the message was processed",
            ),
        ];
        for (key, replacement) in cases {
            let client = BTreeMap::from([(key.to_string(), "x".to_string())]);
            let error = check_passthrough(&client).unwrap_err();
            assert!(
                error.starts_with(&format!("kafka.client.{key} ")),
                "{error}"
            );
            assert!(error.contains(replacement), "{key}: {error}");
        }
        for (key, reason) in OWNED_PROPERTIES {
            let client = BTreeMap::from([(key.to_string(), "x".to_string())]);
            assert!(check_passthrough(&client).unwrap_err().contains(reason));
            assert!(
                reason.starts_with("use ") || reason.starts_with("the hub owns it"),
                "{key}: every refusal says what to use or why the hub keeps it"
            );
        }
        let client = BTreeMap::from([("socket.keepalive.enable".into(), "true".into())]);
        assert!(check_passthrough(&client).is_ok());
    }
}
