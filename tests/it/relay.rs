//! The outbox relay: several at once, Kafka outages, ordering.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use leadbridge::kafka::idempotent_producer;
use leadbridge::lead::Agency;
use leadbridge::relay::Relay;
use leadbridge::telemetry::Metrics;
use leadbridge::Roles;
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

    let (stop, stopped) = watch::channel(false);
    let mut relays = Vec::new();
    for _ in 0..3 {
        let mut settings = app.settings.relay.clone();
        settings.batch_size = 20;
        let producer = idempotent_producer(&app.settings.kafka, &app.bootstrap_servers).unwrap();
        let relay = Relay::new(
            app.store.clone(),
            producer,
            settings,
            Arc::new(Notify::new()),
            Metrics::new(),
        );
        relays.push(tokio::spawn(relay.run(stopped.clone())));
    }
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

    let mut per_event: HashMap<String, usize> = HashMap::new();
    for message in &messages {
        *per_event
            .entry(payload(message)["event_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_event.len(), 150, "every message was published");
    assert!(
        per_event.values().all(|count| *count == 1),
        "no message was published twice"
    );
    let (published, relays_used): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT a.actor) FROM outbox o JOIN audit_entries a ON a.lead_id = o.lead_id AND a.action = 'lead.published' WHERE o.published_at IS NOT NULL",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(published, 150);
    assert_eq!(
        relays_used, 1,
        "every publication is recorded by the relay actor"
    );
    let ledger = leadbridge::audit::verify(&app.store).await.unwrap();
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
                .fetch_one(app.store.pool())
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
        "SELECT COUNT(*) FROM audit_entries WHERE action = 'lead.republished' AND lead_id = $1",
    )
    .bind(&lead_id)
    .fetch_one(app.store.pool())
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
    let (outbox_rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE lead_id = $1")
        .bind(&lead_id)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(outbox_rows, 1, "a received lead is not republished");
    app.stop().await;
}
