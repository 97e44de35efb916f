//! Tests that disturb the shared test services, in their own binary so that they never run
//! beside the main suite (cargo runs test binaries one after another).

#[path = "../it/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use leadbridge::contract::lead::Agency;
use leadbridge::Roles;
use serde_json::Value;

use helpers::{
    app, consume, consume_receipts, header, payload, sample_lead, unique_case_id, Backend,
};

fn services(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/services.sh");
    // A clean environment: the test harness's variables (cargo's LD_LIBRARY_PATH among them)
    // are not the broker's.
    let mut services = Command::new("bash");
    services.arg(script).arg(command).env_clear();
    for name in ["PATH", "HOME", "LEADBRIDGE_SERVICES_DIR", "JAVA_HOME"] {
        if let Some(value) = std::env::var_os(name) {
            services.env(name, value);
        }
    }
    let status = services.status().expect("run services.sh");
    assert!(status.success(), "services.sh {command} failed");
}

/// Stops the Kafka broker (SIGTERM, as an operator's restart would) and waits until it is gone.
fn stop_kafka() {
    let state = std::env::var("LEADBRIDGE_SERVICES_DIR")
        .unwrap_or_else(|_| "/var/lib/leadbridge-services".into());
    let pid =
        std::fs::read_to_string(format!("{state}/kafka/kafka.pid")).expect("the broker's pid file");
    let pid = pid.trim();
    Command::new("kill").arg(pid).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "the broker did not stop");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn a_kafka_broker_restart_loses_and_duplicates_nothing() {
    let app = app(Backend::Real).roles(Roles::ALL).spawn().await;
    let mut lead_ids = Vec::new();
    for _ in 0..5 {
        let receipt: Value = app
            .post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
            .await
            .json()
            .await
            .unwrap();
        lead_ids.push(receipt["lead_id"].as_str().unwrap().to_owned());
    }
    for lead_id in &lead_ids {
        app.wait_for_status(Agency::Environment, lead_id, "delivered")
            .await;
    }

    stop_kafka();
    // The hub keeps accepting while Kafka is gone: acceptance needs only the database.
    for _ in 0..5 {
        let response = app
            .post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
            .await;
        assert_eq!(response.status(), 202);
        let receipt: Value = response.json().await.unwrap();
        lead_ids.push(receipt["lead_id"].as_str().unwrap().to_owned());
    }
    services("up");

    // After a restart the consumers rejoin their groups and the coordinator reloads offsets;
    // that can take longer than the usual wait. What is checked is loss and duplication.
    for lead_id in &lead_ids {
        app.wait_for_status_within(
            Agency::Environment,
            lead_id,
            "delivered",
            Duration::from_secs(120),
        )
        .await;
    }
    let police = app.police_store.clone().unwrap();
    // What reached Kafka, counted per event: the adapter and the hub deduplicate what they
    // receive, so their tables alone would hide a duplicate publication.
    let leads_topic = consume(
        &app.bootstrap_servers,
        &app.topic(Agency::Environment),
        10,
        Duration::from_secs(2),
    )
    .await;
    let mut copies: HashMap<String, usize> = HashMap::new();
    for message in &leads_topic {
        *copies
            .entry(header(message, "event_id").expect("an event id"))
            .or_default() += 1;
    }
    assert!(
        copies.values().all(|count| *count == 1),
        "every lead event was published once: {copies:?}"
    );
    let published: HashSet<String> = leads_topic
        .iter()
        .map(|message| payload(message)["lead_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        published,
        lead_ids.iter().cloned().collect::<HashSet<_>>(),
        "exactly the accepted leads were published"
    );
    let receipts_topic =
        leadbridge::shared::kafka::Topics::new(app.settings.kafka.topic_prefix.clone()).receipts();
    let receipts = consume_receipts(
        &app.bootstrap_servers,
        &receipts_topic,
        20,
        Duration::from_secs(2),
    )
    .await;
    let mut receipt_copies: HashMap<String, usize> = HashMap::new();
    for message in &receipts {
        *receipt_copies
            .entry(payload(message)["event_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(
        receipt_copies.values().all(|count| *count == 1),
        "every police receipt was published once: {receipt_copies:?}"
    );
    let (received_receipts,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM feedback WHERE event = 'received_by_police'")
            .fetch_one(app.store.inspection_pool().await.unwrap())
            .await
            .unwrap();
    assert_eq!(
        received_receipts, 10,
        "one receipt per lead reached the agency"
    );
    leadbridge::shared::audit::verify(&app.store).await.unwrap();
    leadbridge::shared::audit::verify(police.store())
        .await
        .unwrap();
    app.stop().await;
}
