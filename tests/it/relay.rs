//! The outbox relay: several at once, Kafka outages, ordering.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use leadbridge::contract::lead::Agency;
use leadbridge::shared::kafka::idempotent_producer;
use leadbridge::shared::relay::Relay;
use leadbridge::shared::telemetry::Metrics;
use leadbridge::Roles;
use rdkafka::Message;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use crate::helpers::{app, consume, payload, sample_lead, unique_case_id, Backend};

#[tokio::test]
async fn three_relays_at_once_publish_every_message_exactly_once() {
    // The hub only ingests; the relays run beside it, as separate instances would.
    let app = app(Backend::Real)
        .roles(Roles {
            hub_api: true,
            hub_workers: false,
            police: false,
        })
        .spawn()
        .await;
    let leads: Vec<Value> = (0..150).map(|_| sample_lead(&unique_case_id())).collect();
    for chunk in leads.chunks(50) {
        let response = app
            .client(Agency::Environment)
            .post(app.url("/v1/leads/batch"))
            .json(&json!({"leads": chunk}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(app.store.outbox_backlog().await.unwrap().0, 150);

    // What was accepted: one outbox row per lead, by event id.
    let accepted: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, CAST(lead_id AS TEXT) AS lead_id FROM outbox ORDER BY id")
            .fetch_all(app.store.inspection_pool().await.unwrap())
            .await
            .unwrap();
    assert_eq!(accepted.len(), 150);

    // Three relays on one outbox, started together, each with its own metrics so that each
    // one's publications can be counted.
    let (stop, stopped) = watch::channel(false);
    let mut relays = Vec::new();
    let mut relay_metrics = Vec::new();
    for _ in 0..3 {
        let mut settings = app.settings.relay.clone();
        settings.batch_size = 20;
        let producer = idempotent_producer(&app.settings.kafka, &app.bootstrap_servers).unwrap();
        let metrics = Metrics::new();
        relay_metrics.push(metrics.clone());
        relays.push(Relay::new(
            app.store.clone(),
            std::sync::Arc::new(leadbridge::hub::store::publication::HubOutbox {
                republish_after: chrono::Duration::minutes(10),
            }),
            producer,
            settings,
            Arc::new(Notify::new()),
            metrics,
        ));
    }
    let relays: Vec<_> = relays
        .into_iter()
        .map(|relay| tokio::spawn(relay.run(stopped.clone())))
        .collect();
    let messages = consume(
        &app.bootstrap_servers,
        &app.topic(Agency::Environment),
        150,
        Duration::from_secs(2),
    )
    .await;
    stop.send(true).unwrap();
    for relay in relays {
        relay.await.unwrap();
    }

    // Per event: what reached Kafka against what was accepted, and where the row says it is.
    let mut per_event: HashMap<String, Vec<(i32, i64)>> = HashMap::new();
    for message in &messages {
        per_event
            .entry(payload(message)["event_id"].as_str().unwrap().to_owned())
            .or_default()
            .push((message.partition(), message.offset()));
    }
    let marked: HashMap<String, (Option<i64>, Option<i64>)> = sqlx::query_as::<
        _,
        (String, Option<i64>, Option<i64>),
    >(
        "SELECT event_id, kafka_partition, kafka_offset FROM outbox WHERE published_at IS NOT NULL",
    )
    .fetch_all(app.store.inspection_pool().await.unwrap())
    .await
    .unwrap()
    .into_iter()
    .map(|(event_id, partition, offset)| (event_id, (partition, offset)))
    .collect();
    assert_eq!(
        per_event.len(),
        150,
        "as many events reached Kafka as were accepted"
    );
    for (event_id, _) in &accepted {
        let copies = per_event
            .get(event_id)
            .unwrap_or_else(|| panic!("accepted event {event_id} never reached Kafka"));
        assert_eq!(
            copies.len(),
            1,
            "{event_id} was published {} times",
            copies.len()
        );
        let (partition, offset) = copies[0];
        assert_eq!(
            marked.get(event_id),
            Some(&(Some(partition as i64), Some(offset))),
            "{event_id}: the row records where Kafka put its one copy"
        );
    }

    // The relays raced: each publication was made by one of them, together exactly one per
    // accepted event, and more than one relay took part.
    let topic = app.topic(Agency::Environment);
    let per_relay: Vec<u64> = relay_metrics
        .iter()
        .map(|metrics| metrics.leads_published.with_label_values(&[&topic]).get())
        .collect();
    assert_eq!(
        per_relay.iter().sum::<u64>(),
        150,
        "Kafka acknowledged one publication per event across the relays: {per_relay:?}"
    );
    assert!(
        per_relay.iter().filter(|count| **count > 0).count() >= 2,
        "more than one relay published: {per_relay:?}"
    );
    eprintln!("publications per relay: {per_relay:?}");

    let published_entries: Vec<(String, i64)> = sqlx::query_as(
        "SELECT CAST(lead_id AS TEXT) AS lead_id, COUNT(*) FROM log_trail \
         WHERE action = 'lead.published' GROUP BY lead_id",
    )
    .fetch_all(app.store.inspection_pool().await.unwrap())
    .await
    .unwrap();
    assert_eq!(
        published_entries.len(),
        150,
        "every lead's publication is on the ledger"
    );
    assert!(
        published_entries.iter().all(|(_, count)| *count == 1),
        "each publication is on the ledger once: {published_entries:?}"
    );
    let ledger = leadbridge::shared::audit::verify(&app.store).await.unwrap();
    assert_eq!(ledger.entries, 300);
    app.stop().await;
}

#[tokio::test]
async fn leads_accepted_while_kafka_is_down_are_published_when_it_returns() {
    // A short publish timeout, so the outage shows within the test.
    let app = app(Backend::Embedded)
        .with_settings(|settings| {
            settings.kafka.message_timeout_ms = 1_000;
            settings.relay.lease_secs = 5;
        })
        .spawn()
        .await;
    let broker = app
        .embedded_broker
        .clone()
        .expect("the embedded broker runs");
    broker.take_down();

    let lead = sample_lead(&unique_case_id());
    let response = app.post_lead(Agency::Environment, &lead).await;
    assert_eq!(
        response.status(),
        202,
        "acceptance does not depend on Kafka"
    );
    let receipt: Value = response.json().await.unwrap();
    let lead_id = receipt["lead_id"].as_str().unwrap().to_owned();

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (attempts, last_error): (i64, Option<String>) =
            sqlx::query_as("SELECT attempts, last_error FROM outbox")
                .fetch_one(app.store.inspection_pool().await.unwrap())
                .await
                .unwrap();
        if attempts >= 2 {
            assert!(last_error.is_some(), "a failed attempt records its error");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay never retried through the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        app.metrics.outbox_backlog.get(),
        1,
        "the backlog is visible"
    );
    let status: Value = app
        .get_lead(Agency::Environment, &lead_id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "accepted");

    broker.bring_up();
    app.wait_for_status(Agency::Environment, &lead_id, "published")
        .await;
    let messages = consume(
        &app.bootstrap_servers,
        &app.topic(Agency::Environment),
        1,
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(messages.len(), 1);
    assert_eq!(payload(&messages[0])["lead_id"], lead_id);
    app.stop().await;
}

#[tokio::test]
async fn a_lead_with_no_police_receipt_is_published_again() {
    // No adapter runs, so no receipt ever comes back.
    let app = app(Backend::Real)
        .with_settings(|settings| settings.relay.republish_after_secs = 1)
        .spawn()
        .await;
    let receipt: Value = app
        .post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
        .await
        .json()
        .await
        .unwrap();
    let lead_id = receipt["lead_id"].as_str().unwrap().to_owned();
    app.wait_for_status(Agency::Environment, &lead_id, "published")
        .await;

    let messages = consume(
        &app.bootstrap_servers,
        &app.topic(Agency::Environment),
        2,
        Duration::from_millis(200),
    )
    .await;
    let copies: Vec<&rdkafka::message::OwnedMessage> = messages
        .iter()
        .filter(|m| payload(m)["lead_id"] == lead_id)
        .collect();
    assert!(
        copies.len() >= 2,
        "the lead was published again: {} copies",
        copies.len()
    );
    assert_eq!(
        payload(copies[0])["content_sha256"],
        payload(copies[1])["content_sha256"],
        "the same lead, unchanged"
    );
    let (republished,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM log_trail WHERE action = 'lead.republished' AND CAST(lead_id AS TEXT) = $1",
    )
    .bind(&lead_id)
    .fetch_one(app.store.inspection_pool().await.unwrap())
    .await
    .unwrap();
    assert!(
        republished >= 1,
        "each republication is on the audit ledger"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_lead_the_police_acknowledged_is_not_published_again() {
    let app = app(Backend::Real)
        .roles(Roles::ALL)
        .with_settings(|settings| settings.relay.republish_after_secs = 1)
        .spawn()
        .await;
    let receipt: Value = app
        .post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
        .await
        .json()
        .await
        .unwrap();
    let lead_id = receipt["lead_id"].as_str().unwrap().to_owned();
    app.wait_for_status(Agency::Environment, &lead_id, "delivered")
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (outbox_rows,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE CAST(lead_id AS TEXT) = $1")
            .bind(&lead_id)
            .fetch_one(app.store.inspection_pool().await.unwrap())
            .await
            .unwrap();
    assert_eq!(outbox_rows, 1, "a received lead is not republished");
    app.stop().await;
}
