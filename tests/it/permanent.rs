//! Permanent failures: data that can never pass a stage is refused or set aside visibly, and
//! never blocks what comes behind it; transient failures are still waited out.

use std::time::Duration;

use chrono::Utc;
use leadbridge::contract::events::{DecisionDetails, ReceiptStep};
use leadbridge::contract::lead::{canonical_json, Agency, LeadId, ValidatedLead};
use leadbridge::contract::validate::Validator;
use leadbridge::hub::ingest::lead_event;
use leadbridge::hub::store::leads::LeadToStore;
use leadbridge::shared::kafka::{record_bytes, Interrupted, MessageLimits, Topics};
use leadbridge::shared::outbox::OutboxMessage;
use leadbridge::shared::store::Dialect;
use leadbridge::{Application, Roles};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::Connection;

use crate::helpers::{
    app, consume, header, payload, receipt_payload, received_by_police, sample_lead, test_kafka,
    test_settings, unique_case_id, Backend, TestApp, TestPki,
};
use crate::police::eventually;

/// Creates the leads topics of `topics` on the test broker, one partition each, with this
/// `max.message.bytes`.
async fn create_leads_topics(topics: &Topics, max_message_bytes: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", test_kafka())
        .create()
        .unwrap();
    let names: Vec<String> = Agency::ALL.into_iter().map(|a| topics.leads(a)).collect();
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(name, 1, TopicReplication::Fixed(1))
                .set("max.message.bytes", max_message_bytes)
        })
        .collect();
    for result in admin
        .create_topics(&new_topics, &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
}

/// Reads the test's dead-letter topic, which must hold exactly one letter (read on for half a
/// second after it, to catch a second), and returns it.
async fn the_one_dead_letter(app: &TestApp) -> rdkafka::message::OwnedMessage {
    let mut letters = consume(
        &app.bootstrap_servers,
        &Topics::new(app.settings.kafka.topic_prefix.clone()).deadletter(),
        1,
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(letters.len(), 1, "exactly one dead letter");
    letters.remove(0)
}

/// A lead that passed the validator, for injecting events below the API.
pub fn validated(lead: Value) -> ValidatedLead {
    Validator::built_in()
        .unwrap()
        .validate(Agency::Environment, lead, Utc::now())
        .expect("the sample lead is valid")
}

/// Stores `lead` as the API would, but with the outbox message `event` makes of the normal
/// one, and returns the lead's id.
pub async fn inject(
    app: &TestApp,
    lead: &ValidatedLead,
    event: impl Fn(OutboxMessage) -> OutboxMessage + Sync,
) -> String {
    let topic = app.topic(Agency::Environment);
    let factory = |lead_id: LeadId| event(lead_event(lead, lead_id, &topic));
    let acceptance = app
        .store
        .accept_leads(
            &[LeadToStore {
                lead,
                new_lead_id: LeadId::generate(),
                message: &factory,
            }],
            Utc::now(),
        )
        .await
        .unwrap();
    match &acceptance[0] {
        leadbridge::hub::store::Acceptance::Accepted { lead_id, .. } => lead_id.to_string(),
        other => panic!("not accepted: {other:?}"),
    }
}

async fn post(app: &TestApp, lead: &Value) -> String {
    let response = app.post_lead(Agency::Environment, lead).await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["lead_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn timeline_event<'a>(status: &'a Value, event: &str) -> Option<&'a Value> {
    status["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == event)
}

async fn a_message_kafka_refuses_fails_for_good_and_blocks_nothing_behind_it(backend: Backend) {
    let app = app(backend).roles(Roles::ALL).spawn().await;
    let topic = app.topic(Agency::Environment);
    // Above librdkafka's default message.max.bytes (1,000,000): refused on every attempt.
    let first = sample_lead(&unique_case_id());
    let oversized = inject(&app, &validated(first.clone()), |mut message| {
        let mut event: Value = serde_json::from_slice(&message.payload).unwrap();
        event["padding"] = json!("x".repeat(1_500_000));
        message.payload = serde_json::to_vec(&event).unwrap();
        message
    })
    .await;

    let status = app
        .wait_for_status(Agency::Environment, &oversized, "publish_failed")
        .await;
    let failed = timeline_event(&status, "publish_failed").expect("a publish_failed event");
    assert_eq!(failed["error_class"], "message_too_large", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("too large"),
        "{failed}"
    );
    assert_eq!(
        app.metrics
            .publish_failed
            .with_label_values(&[&topic, "message_too_large"])
            .get(),
        1
    );
    let (audited,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM log_trail WHERE action = 'lead.publish_failed' AND CAST(lead_id AS TEXT) = $1",
    )
    .bind(&oversized)
    .fetch_one(app.store.inspection_pool().await.unwrap())
    .await
    .unwrap();
    assert_eq!(audited, 1, "the failure is on the audit ledger");

    // Behind it: other leads, and a new revision of the same lead.
    let others = [
        post(&app, &sample_lead(&unique_case_id())).await,
        post(&app, &sample_lead(&unique_case_id())).await,
    ];
    let mut revised = first;
    revised["source"]["revision"] = json!(2);
    assert_eq!(post(&app, &revised).await, oversized, "the same lead");
    for lead_id in others.iter().chain([&oversized]) {
        app.wait_for_status(Agency::Environment, lead_id, "delivered")
            .await;
    }
    let (failed_rows, attempts): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), MAX(attempts) FROM outbox WHERE failed_at IS NOT NULL AND CAST(lead_id AS TEXT) = $1",
    )
    .bind(&oversized)
    .fetch_one(app.store.inspection_pool().await.unwrap())
    .await
    .unwrap();
    assert_eq!(
        (failed_rows, attempts),
        (1, 1),
        "tried once, never claimed again"
    );
    assert_eq!(app.store.outbox_backlog().await.unwrap().0, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_message_kafka_refuses_fails_for_good_and_blocks_nothing_behind_it_on_real_services() {
    a_message_kafka_refuses_fails_for_good_and_blocks_nothing_behind_it(Backend::Real).await;
}

#[tokio::test]
async fn a_message_kafka_refuses_fails_for_good_and_blocks_nothing_behind_it_embedded() {
    a_message_kafka_refuses_fails_for_good_and_blocks_nothing_behind_it(Backend::Embedded).await;
}

/// Writes a receipt row into the adapter's outbox as its store would.
async fn insert_receipt_row(
    store: &leadbridge::shared::store::Store,
    lead_id: &str,
    topic: &str,
    payload: Vec<u8>,
) {
    let now = leadbridge::shared::store::DbTime::new(Utc::now()).text();
    let sql = match store.dialect() {
        Dialect::Postgres => {
            "INSERT INTO outbox (event_id, lead_id, revision, topic, payload, headers, created_at, next_attempt_at) \
             VALUES ($1, CAST($2 AS UUID), 1, $3, $4, CAST('[]' AS JSONB), CAST($5 AS TIMESTAMPTZ), CAST($5 AS TIMESTAMPTZ))"
        }
        Dialect::Sqlite => {
            "INSERT INTO outbox (event_id, lead_id, revision, topic, payload, headers, created_at, next_attempt_at) \
             VALUES ($1, $2, 1, $3, $4, '[]', $5, $5)"
        }
    };
    sqlx::query(sql)
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(lead_id)
        .bind(topic)
        .bind(payload)
        .bind(now)
        .execute(store.inspection_pool().await.unwrap())
        .await
        .unwrap();
}

async fn a_receipt_kafka_refuses_fails_for_good_in_the_adapter_and_blocks_nothing(
    backend: Backend,
) {
    let app = app(backend).roles(Roles::ALL).spawn().await;
    let lead_id = post(&app, &sample_lead(&unique_case_id())).await;
    app.wait_for_status(Agency::Environment, &lead_id, "delivered")
        .await;
    let police = app.police_store.as_ref().unwrap().store().clone();
    let receipts = Topics::new(app.settings.kafka.topic_prefix.clone()).receipts();
    insert_receipt_row(&police, &lead_id, &receipts, vec![b'x'; 1_500_000]).await;
    let returned = receipt_payload(
        &lead_id,
        "investigator:370303",
        ReceiptStep::Returned(DecisionDetails {
            unit: "370303".into(),
            decision: "returned".into(),
            reason: Some("补充材料".into()),
            police_case_no: None,
            deadlines: json!([]),
        }),
    );
    insert_receipt_row(&police, &lead_id, &receipts, returned).await;

    app.wait_for_status(Agency::Environment, &lead_id, "returned")
        .await;
    let (failed,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE failed_at IS NOT NULL")
            .fetch_one(police.inspection_pool().await.unwrap())
            .await
            .unwrap();
    assert_eq!(failed, 1);
    let (audited,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM log_trail WHERE action = 'receipt.publish_failed' AND CAST(lead_id AS TEXT) = $1",
    )
    .bind(&lead_id)
    .fetch_one(police.inspection_pool().await.unwrap())
    .await
    .unwrap();
    assert_eq!(audited, 1, "the failure is on the adapter's audit ledger");
    assert_eq!(
        app.metrics
            .publish_failed
            .with_label_values(&[&receipts, "message_too_large"])
            .get(),
        1
    );
    assert_eq!(police.outbox_backlog().await.unwrap().0, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_receipt_kafka_refuses_fails_for_good_in_the_adapter_and_blocks_nothing_on_real_services()
{
    a_receipt_kafka_refuses_fails_for_good_in_the_adapter_and_blocks_nothing(Backend::Real).await;
}

#[tokio::test]
async fn a_receipt_kafka_refuses_fails_for_good_in_the_adapter_and_blocks_nothing_embedded() {
    a_receipt_kafka_refuses_fails_for_good_in_the_adapter_and_blocks_nothing(Backend::Embedded)
        .await;
}

/// PostgreSQL only: SQLite stores U+0000 in text, so the adapter's SQLite database takes this
/// lead and there is no failure to handle. The NUL lead is injected below the API (ingest may
/// refuse such leads), with a correct `content_sha256`, so only the adapter's store refuses it.
/// Stores a lead as a hub that did not refuse U+0000 would have: its published event carries
/// a NUL in the summary, with a matching content hash. Returns the lead's id.
pub async fn inject_nul_summary(app: &TestApp) -> String {
    inject(
        app,
        &validated(sample_lead(&unique_case_id())),
        |mut message| {
            let mut event: Value = serde_json::from_slice(&message.payload).unwrap();
            event["lead"]["summary"] = json!("废水\u{0}超标");
            let hash = hex::encode(Sha256::digest(canonical_json(&event["lead"])));
            event["content_sha256"] = json!(hash);
            for (key, value) in &mut message.headers {
                if key == "content_sha256" {
                    *value = hash.clone();
                }
            }
            message.payload = serde_json::to_vec(&event).unwrap();
            message
        },
    )
    .await
}

/// Stores a lead whose published event is padded past librdkafka's default message limit.
pub async fn inject_oversized_event(app: &TestApp) -> String {
    inject(
        app,
        &validated(sample_lead(&unique_case_id())),
        |mut message| {
            let mut event: Value = serde_json::from_slice(&message.payload).unwrap();
            event["padding"] = json!("x".repeat(1_500_000));
            message.payload = serde_json::to_vec(&event).unwrap();
            message
        },
    )
    .await
}

#[tokio::test]
async fn a_lead_the_adapter_cannot_store_is_dead_lettered_reported_and_blocks_nothing() {
    // One partition: the valid lead is behind the NUL one.
    let mut app = app(Backend::Real)
        .roles(Roles::ALL)
        .with_settings(|settings| settings.kafka.topic_partitions = 1)
        .spawn()
        .await;
    // The NUL lead ends dead_lettered; nothing else may.
    app.expect_lasting_failures(1);
    let nul_lead = inject_nul_summary(&app).await;
    // Published, and perhaps already dead-lettered: either way it is on the partition.
    eventually("the NUL lead is published", || async {
        let status: Value = app
            .get_lead(Agency::Environment, &nul_lead)
            .await
            .json()
            .await
            .unwrap();
        status["status"] == "published" || status["status"] == "dead_lettered"
    })
    .await;
    let valid = post(&app, &sample_lead(&unique_case_id())).await;

    let status = app
        .wait_for_status(Agency::Environment, &nul_lead, "dead_lettered")
        .await;
    let event = timeline_event(&status, "dead_lettered").expect("a dead_lettered event");
    assert_eq!(event["error_class"], "unstorable", "{event}");
    assert!(event["error"].as_str().unwrap().contains("0x00"), "{event}");
    assert_eq!(event["actor"], "police-adapter");
    app.wait_for_status(Agency::Environment, &valid, "delivered")
        .await;

    let feedback: Value = app
        .client(Agency::Environment)
        .get(app.url("/v1/feedback"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let item = feedback["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["lead_id"] == nul_lead.as_str() && i["event"] == "dead_lettered")
        .unwrap_or_else(|| panic!("no dead_lettered feedback: {feedback}"));
    assert_eq!(item["error_class"], "unstorable");
    assert!(item.get("lead").is_none(), "no lead content in the receipt");

    let letter = the_one_dead_letter(&app).await;
    assert_eq!(
        header(&letter, "error_class").as_deref(),
        Some("unstorable")
    );
    assert_eq!(
        header(&letter, "stage").as_deref(),
        Some("police-adapter.consume")
    );
    assert_eq!(payload(&letter)["lead_id"], nul_lead.as_str());
    assert_eq!(
        app.metrics
            .dead_letters
            .with_label_values(&["police-adapter.consume", "unstorable"])
            .get(),
        1
    );
    app.stop().await;
}

/// While the adapter's database refuses connections, a lead waits in Kafka and is recorded
/// once the database is back: an unavailable database is not the data's fault.
#[tokio::test]
async fn a_lead_arriving_while_the_adapters_database_is_away_is_retried_not_dead_lettered() {
    let app = app(Backend::Real).roles(Roles::ALL).spawn().await;
    let police_url = app
        .settings
        .police
        .database_url
        .as_ref()
        .unwrap()
        .expose()
        .to_owned();
    let database = police_url.rsplit('/').next().unwrap().to_owned();
    let admin_url = std::env::var("LEADBRIDGE_TEST_DATABASE_URL").unwrap();
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS false"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .execute(&mut admin)
        .await
        .unwrap();

    let lead_id = post(&app, &sample_lead(&unique_case_id())).await;
    app.wait_for_status(Agency::Environment, &lead_id, "published")
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status: Value = app
        .get_lead(Agency::Environment, &lead_id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "published", "{status}");

    sqlx::query(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
    let status = app
        .wait_for_status_within(
            Agency::Environment,
            &lead_id,
            "delivered",
            Duration::from_secs(60),
        )
        .await;
    assert!(
        timeline_event(&status, "dead_lettered").is_none(),
        "{status}"
    );
    assert_eq!(
        app.metrics
            .dead_letters
            .with_label_values(&["police-adapter.consume", "unstorable"])
            .get(),
        0
    );
    app.stop().await;
}

async fn a_poison_message_about_a_known_lead_is_reported_to_the_hub(backend: Backend) {
    let mut app = app(backend).roles(Roles::ALL).spawn().await;
    // The lead whose event fails its hash ends dead_lettered; nothing else may.
    app.expect_lasting_failures(1);
    // Changed after hashing: the adapter refuses it as content_mismatch.
    let tampered = inject(
        &app,
        &validated(sample_lead(&unique_case_id())),
        |mut message| {
            let mut event: Value = serde_json::from_slice(&message.payload).unwrap();
            event["lead"]["summary"] = json!("changed after hashing");
            message.payload = serde_json::to_vec(&event).unwrap();
            message
        },
    )
    .await;
    let status = app
        .wait_for_status(Agency::Environment, &tampered, "dead_lettered")
        .await;
    let event = timeline_event(&status, "dead_lettered").expect("a dead_lettered event");
    assert_eq!(event["error_class"], "content_mismatch", "{event}");
    assert_eq!(
        app.metrics
            .dead_letters
            .with_label_values(&["police-adapter.consume", "content_mismatch"])
            .get(),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn a_poison_message_about_a_known_lead_is_reported_to_the_hub_on_real_services() {
    a_poison_message_about_a_known_lead_is_reported_to_the_hub(Backend::Real).await;
}

#[tokio::test]
async fn a_poison_message_about_a_known_lead_is_reported_to_the_hub_embedded() {
    a_poison_message_about_a_known_lead_is_reported_to_the_hub(Backend::Embedded).await;
}

/// PostgreSQL only (SQLite stores U+0000): a receipt the hub's database refuses is
/// dead-lettered, and the receipts behind it are applied.
#[tokio::test]
async fn a_receipt_the_hub_cannot_store_is_dead_lettered_and_blocks_nothing() {
    let app = app(Backend::Real).spawn().await;
    let lead_id = post(&app, &sample_lead(&unique_case_id())).await;
    app.wait_for_status(Agency::Environment, &lead_id, "published")
        .await;
    let receipts = Topics::new(app.settings.kafka.topic_prefix.clone()).receipts();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &app.bootstrap_servers)
        .create()
        .unwrap();
    for body in [
        receipt_payload(&lead_id, "police-adapter\u{0}", received_by_police()),
        receipt_payload(&lead_id, "police-adapter", received_by_police()),
    ] {
        producer
            .send(
                FutureRecord::to(&receipts).key(&lead_id).payload(&body),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    app.wait_for_status(Agency::Environment, &lead_id, "received_by_police")
        .await;
    let letter = the_one_dead_letter(&app).await;
    assert_eq!(
        header(&letter, "error_class").as_deref(),
        Some("unstorable")
    );
    assert_eq!(header(&letter, "stage").as_deref(), Some("hub.receipts"));
    app.stop().await;
}

/// Before the wire contract, a receipt without `revision` was applied to revision 0 and one
/// without `at` at the time of receipt. Now it does not read as a receipt at all: it is
/// dead-lettered as undecodable, naming the missing field, and the complete receipt behind
/// it is applied.
#[tokio::test]
async fn a_receipt_missing_a_field_is_dead_lettered_never_applied_with_defaults() {
    let app = app(Backend::Real).spawn().await;
    let lead_id = post(&app, &sample_lead(&unique_case_id())).await;
    app.wait_for_status(Agency::Environment, &lead_id, "published")
        .await;
    let receipts = Topics::new(app.settings.kafka.topic_prefix.clone()).receipts();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &app.bootstrap_servers)
        .create()
        .unwrap();
    let complete = receipt_payload(&lead_id, "police-adapter", received_by_police());
    let mut incomplete: Value = serde_json::from_slice(&complete).unwrap();
    incomplete.as_object_mut().unwrap().remove("revision");
    incomplete["event_id"] = json!(uuid::Uuid::now_v7());
    for body in [serde_json::to_vec(&incomplete).unwrap(), complete] {
        producer
            .send(
                FutureRecord::to(&receipts).key(&lead_id).payload(&body),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    app.wait_for_status(Agency::Environment, &lead_id, "received_by_police")
        .await;
    let letter = the_one_dead_letter(&app).await;
    assert_eq!(
        header(&letter, "error_class").as_deref(),
        Some("undecodable")
    );
    let message = header(&letter, "error_message").unwrap();
    assert!(message.contains("revision"), "{message}");
    let (applied,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM receipts_applied")
        .fetch_one(app.store.inspection_pool().await.unwrap())
        .await
        .unwrap();
    assert_eq!(applied, 1, "only the complete receipt was applied");
    app.stop().await;
}

/// A valid lead whose `extensions` make it about 40 KB, and a limit below that.
pub fn large_lead() -> Value {
    let mut lead = sample_lead(&unique_case_id());
    lead["extensions"] = json!({"environment.raw_log": "x".repeat(40_000)});
    lead
}
pub const SMALL_LIMIT: usize = 32 * 1024;

async fn a_lead_over_max_lead_bytes_is_refused_alone_and_in_a_batch(backend: Backend) {
    let app = app(backend)
        .roles(Roles::ALL)
        .with_settings(|settings| settings.limits.max_lead_bytes = SMALL_LIMIT)
        .spawn()
        .await;
    let big = large_lead();
    let size = serde_json::to_vec(&big).unwrap().len();
    assert!(size > SMALL_LIMIT && size < 1024 * 1024, "{size}");

    let response = app.post_lead(Agency::Environment, &big).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    let errors = problem["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{problem}");
    assert_eq!(errors[0]["pointer"], "");
    assert_eq!(errors[0]["code"], "lead_too_large");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains(&size.to_string()) && message.contains(&SMALL_LIMIT.to_string()),
        "both sizes: {message}"
    );

    let leads = [
        sample_lead(&unique_case_id()),
        large_lead(),
        sample_lead(&unique_case_id()),
    ];
    let response = app
        .client(Agency::Environment)
        .post(app.url("/v1/leads/batch"))
        .json(&json!({"leads": leads}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let results: Value = response.json().await.unwrap();
    let results = results["results"].as_array().unwrap();
    assert_eq!(results[1]["status"], 422, "{results:?}");
    assert_eq!(
        results[1]["problem"]["errors"][0]["code"], "lead_too_large",
        "{results:?}"
    );
    for index in [0, 2] {
        assert_eq!(results[index]["status"], 202, "{results:?}");
        let lead_id = results[index]["lead_id"].as_str().unwrap();
        app.wait_for_status(Agency::Environment, lead_id, "delivered")
            .await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_lead_over_max_lead_bytes_is_refused_alone_and_in_a_batch_on_real_services() {
    a_lead_over_max_lead_bytes_is_refused_alone_and_in_a_batch(Backend::Real).await;
}

#[tokio::test]
async fn a_lead_over_max_lead_bytes_is_refused_alone_and_in_a_batch_embedded() {
    a_lead_over_max_lead_bytes_is_refused_alone_and_in_a_batch(Backend::Embedded).await;
}

/// Real Kafka only: the embedded broker cannot describe topic configurations.
#[tokio::test]
async fn the_hub_refuses_to_start_when_the_largest_lead_cannot_fit_a_leads_topic() {
    let data_dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let settings = test_settings(Backend::Real, data_dir.path(), &pki).await;
    let topics = Topics::new(settings.kafka.topic_prefix.clone());
    // 200,000 bytes: the default 900 KiB lead cannot fit.
    create_leads_topics(&topics, "200000").await;

    let error = Application::build(settings.clone(), Roles::HUB)
        .await
        .err()
        .expect("start-up must fail");
    let message = format!("{error:#}");
    assert!(message.contains("limits.max_lead_bytes"), "{message}");
    assert!(message.contains("max.message.bytes of topic"), "{message}");
    assert!(message.contains("200000"), "{message}");

    // The same topics take a lead limit that fits.
    let mut fitting = settings;
    fitting.limits.max_lead_bytes = 150_000;
    let application = Application::build(fitting, Roles::HUB).await;
    assert!(application.is_ok(), "{:#}", application.err().unwrap());
}

/// Pads a lead event so that its record, as librdkafka measures it (`record_bytes`), is
/// `record` bytes.
fn pad_event_to(message: &mut OutboxMessage, event: &mut Value, record: usize) {
    let key = LeadId::generate().to_string();
    let headers = message
        .headers
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_bytes()));
    event["padding"] = json!("");
    let unpadded = record_bytes(
        Some(key.as_bytes()),
        &serde_json::to_vec(&*event).unwrap(),
        headers,
    );
    event["padding"] = json!("x".repeat(record - unpadded));
    message.payload = serde_json::to_vec(&*event).unwrap();
}

async fn a_poison_message_too_large_to_dead_letter_whole_is_dead_lettered_reduced(
    backend: Backend,
) {
    // One partition: the valid lead is behind the poison one.
    let mut app = app(backend)
        .roles(Roles::ALL)
        .with_settings(|settings| settings.kafka.topic_partitions = 1)
        .spawn()
        .await;
    // The poison lead ends dead_lettered (reduced); nothing else may.
    app.expect_lasting_failures(1);
    // Just under the producer's 1,000,000 bytes, so Kafka takes it on the leads topic; its
    // dead letter adds the error context and the original.* headers and cannot fit whole.
    let poison = inject(
        &app,
        &validated(sample_lead(&unique_case_id())),
        |mut message| {
            let mut event: Value = serde_json::from_slice(&message.payload).unwrap();
            event["lead"]["summary"] = json!("changed after hashing");
            pad_event_to(&mut message, &mut event, 999_850);
            message
        },
    )
    .await;
    // On the partition before the valid lead: published, and perhaps already dead-lettered
    // (the adapter is quick), so the timeline is what says it, not the status.
    eventually("the poison lead is published", || async {
        let status: Value = app
            .get_lead(Agency::Environment, &poison)
            .await
            .json()
            .await
            .unwrap();
        timeline_event(&status, "published").is_some()
    })
    .await;
    let valid = post(&app, &sample_lead(&unique_case_id())).await;

    let status = app
        .wait_for_status(Agency::Environment, &poison, "dead_lettered")
        .await;
    let event = timeline_event(&status, "dead_lettered").expect("a dead_lettered event");
    assert_eq!(event["error_class"], "content_mismatch", "{event}");
    app.wait_for_status(Agency::Environment, &valid, "delivered")
        .await;

    let letter = &the_one_dead_letter(&app).await;
    assert_eq!(header(letter, "payload_truncated").as_deref(), Some("true"));
    let original: usize = header(letter, "original_payload_bytes")
        .unwrap()
        .parse()
        .unwrap();
    assert!(original > 990_000, "{original}");
    assert!(
        header(letter, "truncation_reason")
            .unwrap()
            .starts_with("message_too_large"),
        "{:?}",
        header(letter, "truncation_reason")
    );
    // The context is all there: the error, the source and the lead's own headers.
    assert_eq!(
        header(letter, "error_class").as_deref(),
        Some("content_mismatch")
    );
    assert_eq!(
        header(letter, "stage").as_deref(),
        Some("police-adapter.consume")
    );
    assert_eq!(
        header(letter, "source_topic"),
        Some(app.topic(Agency::Environment))
    );
    assert_eq!(header(letter, "original.revision").as_deref(), Some("1"));
    assert!(header(letter, "original.content_sha256").is_some());
    let kept = rdkafka::Message::payload(letter).unwrap_or_default();
    assert_eq!(kept.len(), leadbridge::shared::kafka::REDUCED_PAYLOAD_BYTES);
    assert!(
        String::from_utf8_lossy(kept).contains(&poison),
        "the kept prefix names the lead"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_poison_message_too_large_to_dead_letter_whole_is_dead_lettered_reduced_on_real_services()
{
    a_poison_message_too_large_to_dead_letter_whole_is_dead_lettered_reduced(Backend::Real).await;
}

/// The embedded broker enforces no topic limit, but the producer's message.max.bytes holds
/// there too, and that is the limit the whole dead letter is over.
#[tokio::test]
async fn a_poison_message_too_large_to_dead_letter_whole_is_dead_lettered_reduced_embedded() {
    a_poison_message_too_large_to_dead_letter_whole_is_dead_lettered_reduced(Backend::Embedded)
        .await;
}

async fn a_receipt_too_large_to_dead_letter_whole_is_dead_lettered_reduced(backend: Backend) {
    // One partition: the valid receipt is behind the undecodable one.
    let app = app(backend)
        .with_settings(|settings| settings.kafka.topic_partitions = 1)
        .spawn()
        .await;
    let lead_id = post(&app, &sample_lead(&unique_case_id())).await;
    app.wait_for_status(Agency::Environment, &lead_id, "published")
        .await;
    let receipts = Topics::new(app.settings.kafka.topic_prefix.clone()).receipts();
    // Another producer with librdkafka's defaults: it takes a record of up to 1,000,000 bytes.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &app.bootstrap_servers)
        .create()
        .unwrap();
    let undecodable = vec![b'x'; 999_800];
    let valid = receipt_payload(&lead_id, "police-adapter", received_by_police());
    for body in [&undecodable, &valid] {
        producer
            .send(
                FutureRecord::to(&receipts).key(&lead_id).payload(body),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    app.wait_for_status(Agency::Environment, &lead_id, "received_by_police")
        .await;
    let letter = &the_one_dead_letter(&app).await;
    assert_eq!(header(letter, "payload_truncated").as_deref(), Some("true"));
    assert_eq!(
        header(letter, "original_payload_bytes").as_deref(),
        Some("999800")
    );
    assert_eq!(
        header(letter, "error_class").as_deref(),
        Some("undecodable")
    );
    assert_eq!(header(letter, "stage").as_deref(), Some("hub.receipts"));
    assert_eq!(
        rdkafka::Message::payload(letter).unwrap_or_default().len(),
        leadbridge::shared::kafka::REDUCED_PAYLOAD_BYTES
    );
    app.stop().await;
}

#[tokio::test]
async fn a_receipt_too_large_to_dead_letter_whole_is_dead_lettered_reduced_on_real_services() {
    a_receipt_too_large_to_dead_letter_whole_is_dead_lettered_reduced(Backend::Real).await;
}

#[tokio::test]
async fn a_receipt_too_large_to_dead_letter_whole_is_dead_lettered_reduced_embedded() {
    a_receipt_too_large_to_dead_letter_whole_is_dead_lettered_reduced(Backend::Embedded).await;
}

/// A dead letter that cannot reach Kafka yet is retried, but a shutdown ends the wait, so a
/// stopping adapter does not hang on it (its caller then leaves the offset unstored).
#[tokio::test]
async fn a_shutdown_interrupts_a_dead_letter_waiting_for_kafka() {
    // Nothing listens on port 1: every attempt fails transiently.
    let settings = leadbridge::shared::config::KafkaSettings::default();
    let producer =
        leadbridge::shared::kafka::idempotent_producer(&settings, "127.0.0.1:1").unwrap();
    let (stop, mut shutdown) = tokio::sync::watch::channel(false);
    let waiting = tokio::spawn(async move {
        leadbridge::shared::kafka::publish_until_acknowledged(
            &producer,
            &MessageLimits::default(),
            "t.deadletter.v1",
            None,
            b"{}",
            &[("error_class", b"undecodable")],
            &mut shutdown,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!waiting.is_finished(), "no broker, no acknowledgement");
    stop.send(true).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .expect("the shutdown ends the wait")
        .unwrap();
    assert_eq!(outcome, Err(Interrupted));
}

/// Random alphanumerics: LZ4 cannot shrink them, so a batch of several is over the topic's
/// limit on the wire as well.
fn incompressible(bytes: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), bytes)
}

/// Real Kafka only (the embedded broker enforces no topic limit): leads that each fit the
/// topic are all published, though together they are several times its limit.
#[tokio::test]
async fn leads_that_fit_alone_are_published_though_together_they_exceed_the_topic_limit() {
    let prefix = format!("t{}.leadbridge", uuid::Uuid::new_v4().simple());
    let topics = Topics::new(prefix.clone());
    // One partition, so that the leads share batches; 60,000 bytes, over the largest lead
    // (40,000 + the event overhead) so start-up passes, under two leads of 30 KB.
    create_leads_topics(&topics, "60000").await;
    let app = app(Backend::Real)
        .roles(Roles::ALL)
        .with_settings(move |settings| {
            settings.kafka.topic_prefix = prefix.clone();
            settings.police.group_id = format!("{prefix}-police");
            settings.limits.max_lead_bytes = 40_000;
        })
        .spawn()
        .await;

    const LEADS: usize = 4;
    let leads: Vec<ValidatedLead> = (0..LEADS)
        .map(|_| {
            let mut lead = sample_lead(&unique_case_id());
            lead["extensions"] = json!({"environment.raw_log": incompressible(30_000)});
            validated(lead)
        })
        .collect();
    let topic = app.topic(Agency::Environment);
    let factory = |lead: &ValidatedLead, lead_id: LeadId| lead_event(lead, lead_id, &topic);
    let factories: Vec<_> = leads
        .iter()
        .map(|lead| move |lead_id: LeadId| factory(lead, lead_id))
        .collect();
    // One transaction: the relay claims them together and sends them at once.
    let acceptance = app
        .store
        .accept_leads(
            &leads
                .iter()
                .zip(&factories)
                .map(|(lead, message)| LeadToStore {
                    lead,
                    new_lead_id: LeadId::generate(),
                    message,
                })
                .collect::<Vec<_>>(),
            Utc::now(),
        )
        .await
        .unwrap();
    let lead_ids: Vec<String> = acceptance
        .iter()
        .map(|accepted| match accepted {
            leadbridge::hub::store::Acceptance::Accepted { lead_id, .. } => lead_id.to_string(),
            other => panic!("not accepted: {other:?}"),
        })
        .collect();
    for lead_id in &lead_ids {
        let status = app
            .wait_for_status(Agency::Environment, lead_id, "delivered")
            .await;
        assert!(
            timeline_event(&status, "publish_failed").is_none(),
            "{status}"
        );
    }
    // `attempts` counts failed attempts: the producer's batches fit, none was refused.
    let (failed_attempts,): (i64,) = sqlx::query_as("SELECT MAX(attempts) FROM outbox")
        .fetch_one(app.store.inspection_pool().await.unwrap())
        .await
        .unwrap();
    assert_eq!(failed_attempts, 0, "each published at its first attempt");
    assert_eq!(
        app.metrics
            .publish_failed
            .with_label_values(&[&topic, "message_too_large"])
            .get(),
        0
    );
    app.stop().await;
}
