//! Killing the hub after it acknowledged a lead loses nothing.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use leadbridge::identity::Principal;
use leadbridge::lead::Agency;
use rdkafka::Message;
use serde_json::Value;

use crate::helpers::{
    consume, fresh_postgres_database, payload, random_topic_prefix, sample_lead, test_kafka,
    unique_case_id, TestPki,
};

/// The `leadbridge serve` process, with the URL it printed.
pub struct HubProcess {
    pub child: Child,
    pub url: String,
}

/// Starts `leadbridge serve` with `env` and waits for its "listening on" line.
pub fn start_hub(data_dir: &Path, env: &[(&str, String)]) -> HubProcess {
    start_role("serve", data_dir, env)
}

/// Starts `leadbridge <role>` with `env` and waits for its "listening on" line.
pub fn start_role(role: &str, data_dir: &Path, env: &[(&str, String)]) -> HubProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_leadbridge"));
    command
        .args([role, "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start leadbridge");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("leadbridge exited before listening")
            .unwrap();
        if let Some(url) = line.strip_prefix("LeadBridge is listening on ") {
            break url.trim().to_owned();
        }
    };
    // Keep draining stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    HubProcess { child, url }
}

impl Drop for HubProcess {
    /// A failing test must not leave a hub running behind it.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sigkill(process: &mut HubProcess) {
    process.child.kill().expect("SIGKILL");
    process.child.wait().unwrap();
}

#[tokio::test]
async fn a_lead_acknowledged_before_sigkill_reaches_kafka_exactly_once_after_restart() {
    let database_url = fresh_postgres_database().await;
    let prefix = random_topic_prefix();
    let data_dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let tls_env = |kafka: String, create_topics: &str| {
        vec![
            ("LEADBRIDGE_DATABASE__URL", database_url.clone()),
            ("LEADBRIDGE_KAFKA__BOOTSTRAP_SERVERS", kafka),
            ("LEADBRIDGE_KAFKA__TOPIC_PREFIX", prefix.clone()),
            ("LEADBRIDGE_KAFKA__CREATE_TOPICS", create_topics.to_owned()),
            ("LEADBRIDGE_KAFKA__MESSAGE_TIMEOUT_MS", "3000".to_owned()),
            ("LEADBRIDGE_RELAY__LEASE_SECS", "4".to_owned()),
            (
                "LEADBRIDGE_SERVER__TLS__CERT",
                pki.tls.cert.display().to_string(),
            ),
            (
                "LEADBRIDGE_SERVER__TLS__KEY",
                pki.tls.key.display().to_string(),
            ),
            (
                "LEADBRIDGE_SERVER__TLS__CLIENT_CA",
                pki.tls.client_ca.display().to_string(),
            ),
        ]
    };
    let client = pki.client(Some(&Principal::Agency(Agency::Environment)));

    // 1. Kafka unreachable: the hub acknowledges leads it cannot yet publish; then it dies.
    let mut first = start_hub(data_dir.path(), &tls_env("127.0.0.1:1".into(), "false"));
    let lead = sample_lead(&unique_case_id());
    let response = client
        .post(format!("{}/v1/leads", first.url))
        .json(&lead)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let unpublished: Value = response.json().await.unwrap();
    sigkill(&mut first);

    // 2. Kafka reachable: the hub acknowledges a lead and is killed at once, mid-publication.
    let mut second = start_hub(data_dir.path(), &tls_env(test_kafka(), "true"));
    let lead = sample_lead(&unique_case_id());
    let response = client
        .post(format!("{}/v1/leads", second.url))
        .json(&lead)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let in_flight: Value = response.json().await.unwrap();
    sigkill(&mut second);

    // 3. Restarted, the hub publishes what it had acknowledged.
    let mut third = start_hub(data_dir.path(), &tls_env(test_kafka(), "true"));
    let topic = format!("{prefix}.leads.environment.v1");
    let messages = consume(&test_kafka(), &topic, 2, Duration::from_secs(6)).await;
    sigkill(&mut third);

    let mut per_lead: HashMap<(String, i64), usize> = HashMap::new();
    for message in &messages {
        let event = payload(message);
        assert_eq!(message.key(), event["lead_id"].as_str().map(str::as_bytes));
        *per_lead
            .entry((
                event["lead_id"].as_str().unwrap().to_owned(),
                event["revision"].as_i64().unwrap(),
            ))
            .or_default() += 1;
    }
    for receipt in [&unpublished, &in_flight] {
        let key = (receipt["lead_id"].as_str().unwrap().to_owned(), 1);
        assert!(
            per_lead.contains_key(&key),
            "acknowledged lead {} never reached Kafka",
            key.0
        );
    }
    // A consumer that deduplicates on (lead_id, revision) sees each lead exactly once; the
    // relay's lease keeps even raw duplicates to the one case of a kill between Kafka's
    // acknowledgement and the database update.
    assert_eq!(per_lead.len(), 2, "{per_lead:?}");
    let store = leadbridge::store::Store::connect(&database_url, 2)
        .await
        .unwrap();
    assert_eq!(
        store.outbox_backlog().await.unwrap().0,
        0,
        "every outbox row is marked published"
    );
    leadbridge::audit::verify(&store).await.unwrap();
}
