//! Benchmark: the hub against its ceiling, on the real services of `deploy/local`.
//!
//! Run with `bash deploy/local/bench.sh`. In one run, on one broker, it measures
//!   (a) a raw rdkafka producer (idempotent, acks=all) sending the hub's own lead events;
//!   (b) the hub: batch POSTs and a steady stream of single POSTs over HTTPS with mutual TLS,
//!       through validation, the durable commit and the relay, until Kafka acknowledged;
//!   (c) validation alone, on one core;
//!   (d) end to end with the police adapter: agency POST → delivered to the unit's inbox, at a
//!       steady 200 leads/s.
//! and prints leads/s, p50/p99 latencies and the hub/raw ratio. Sizes can be changed with
//! `BENCH_LEADS` (default 20000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use leadbridge::config::{Secret, Settings, TlsSettings};
use leadbridge::identity::Principal;
use leadbridge::ingest::lead_event;
use leadbridge::lead::{Agency, LeadId};
use leadbridge::pki::DevCa;
use leadbridge::validate::Validator;
use leadbridge::{Application, Roles};
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use sqlx::{Connection, Row};

fn sample(case: &str) -> Value {
    let mut lead: Value =
        serde_json::from_str(include_str!("../docs/examples/sample-lead.json")).unwrap();
    lead["source"]["case_id"] = json!(case);
    lead
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn summary(name: &str, leads: usize, elapsed: Duration, mut latencies_ms: Vec<f64>) -> f64 {
    latencies_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rate = leads as f64 / elapsed.as_secs_f64();
    println!(
        "{name:<52} {leads:>7} leads {rate:>10.0} leads/s   p50 {:>8.2} ms   p99 {:>8.2} ms",
        percentile(&latencies_ms, 0.50),
        percentile(&latencies_ms, 0.99)
    );
    rate
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run deploy/local/bench.sh"))
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("BENCH_LEADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let kafka = env("LEADBRIDGE_TEST_KAFKA");
    let admin_url = env("LEADBRIDGE_TEST_DATABASE_URL");
    let now = Utc::now();
    let validator = Validator::built_in().unwrap();
    println!(
        "LeadBridge benchmark: {total} leads per measurement; {} cores",
        std::thread::available_parallelism().unwrap()
    );

    // (c) Validation alone, one core.
    let documents: Vec<Value> = (0..total)
        .map(|i| sample(&format!("BENCH-V-{i}")))
        .collect();
    let mut latencies = Vec::with_capacity(total);
    let started = Instant::now();
    for document in documents.iter().cloned() {
        let one = Instant::now();
        validator
            .validate(Agency::Environment, document, now)
            .unwrap();
        latencies.push(one.elapsed().as_secs_f64() * 1000.0);
    }
    let validation_rate = summary(
        "(c) validation alone (1 core)",
        total,
        started.elapsed(),
        latencies,
    );

    // (a) Raw producer: the same canonical lead events the relay publishes.
    let mut settings = Settings::default();
    settings.kafka.bootstrap_servers = Some(kafka.clone());
    let topic = format!("bench{}.raw", uuid::Uuid::new_v4().simple());
    leadbridge::kafka::ensure_topics(&settings.kafka, &kafka, std::slice::from_ref(&topic))
        .await
        .unwrap();
    let producer = leadbridge::kafka::idempotent_producer(&settings.kafka, &kafka).unwrap();
    let events: Vec<(String, Vec<u8>)> = documents
        .iter()
        .take(total)
        .map(|document| {
            let lead = validator
                .validate(Agency::Environment, document.clone(), now)
                .unwrap();
            let id = LeadId::generate();
            (id.to_string(), lead_event(&lead, id, &topic).payload)
        })
        .collect();
    let started = Instant::now();
    let sends = events.iter().map(|(key, payload)| {
        let producer = &producer;
        let topic = &topic;
        async move {
            let one = Instant::now();
            producer
                .send(
                    FutureRecord::to(topic).key(key).payload(payload),
                    Duration::from_secs(5),
                )
                .await
                .map_err(|(error, _)| error)
                .unwrap();
            one.elapsed().as_secs_f64() * 1000.0
        }
    });
    let latencies = futures::future::join_all(sends).await;
    let raw_rate = summary(
        "(a) raw producer, idempotent acks=all",
        total,
        started.elapsed(),
        latencies,
    );

    // (b) The hub on PostgreSQL and the same broker.
    let pki_dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("bench CA").unwrap();
    let server = ca.issue_server(&["127.0.0.1"]).unwrap();
    let tls = TlsSettings {
        cert: pki_dir.path().join("server.pem"),
        key: pki_dir.path().join("server.key"),
        client_ca: pki_dir.path().join("ca.pem"),
    };
    std::fs::write(&tls.cert, &server.cert_pem).unwrap();
    std::fs::write(&tls.key, &server.key_pem).unwrap();
    std::fs::write(&tls.client_ca, ca.cert_pem()).unwrap();
    let agency = ca
        .issue_client(&Principal::Agency(Agency::Environment))
        .unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap())
        .identity(
            reqwest::Identity::from_pem(
                format!("{}{}", agency.cert_pem, agency.key_pem).as_bytes(),
            )
            .unwrap(),
        )
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();

    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    settings.data_dir = data_dir.path().to_owned();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.server.tls = Some(tls);
    settings.relay.poll_interval_ms = 20;
    let mut databases = Vec::new();
    // The hub alone: the adapter's work is measured separately in (d).
    let hub = Hub::start(
        &settings,
        &admin_url,
        &mut admin,
        &mut databases,
        Roles::HUB,
    )
    .await;
    let (base, store) = (hub.base.clone(), hub.store.clone());

    // (b1) Batches of 500, two in flight, until every lead is acknowledged by Kafka.
    let batches: Vec<Value> = (0..total)
        .map(|i| sample(&format!("BENCH-B-{i}")))
        .collect::<Vec<_>>()
        .chunks(500)
        .map(|chunk| json!({ "leads": chunk }))
        .collect();
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(2));
    let posts = batches.iter().map(|batch| {
        let client = client.clone();
        let url = format!("{base}/v1/leads/batch");
        let gate = gate.clone();
        async move {
            let _permit = gate.acquire().await.unwrap();
            let one = Instant::now();
            let response = client.post(url).json(batch).send().await.unwrap();
            assert_eq!(response.status(), 200);
            one.elapsed().as_secs_f64() * 1000.0
        }
    });
    let batch_latencies = futures::future::join_all(posts).await;
    wait_until_published(&store).await;
    let batch_elapsed = started.elapsed();
    let hub_rate = summary(
        "(b1) hub batch POST 500 → Kafka ack (rate); batch latency",
        total,
        batch_elapsed,
        batch_latencies,
    );

    // (b2) Single leads at a steady 500 leads/s.
    let rate = 500u64;
    let count = (total / 4).max(1000);
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..count {
        ticker.tick().await;
        let client = client.clone();
        let url = format!("{base}/v1/leads");
        let lead = sample(&format!("BENCH-S-{i}"));
        tasks.spawn(async move {
            let one = Instant::now();
            let response = client.post(url).json(&lead).send().await.unwrap();
            assert_eq!(response.status(), 202);
            one.elapsed().as_secs_f64() * 1000.0
        });
    }
    let mut single_latencies = Vec::with_capacity(count);
    while let Some(latency) = tasks.join_next().await {
        single_latencies.push(latency.unwrap());
    }
    wait_until_published(&store).await;
    summary(
        "(b2) hub single POST at 500/s: POST → 202",
        count,
        started.elapsed(),
        single_latencies,
    );
    let rows =
        sqlx::query("SELECT created_at, published_at FROM outbox WHERE published_at IS NOT NULL")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let publish_latencies: Vec<f64> = rows
        .iter()
        .map(|row| {
            let created =
                leadbridge::store::parse_db_time(&row.get::<String, _>("created_at")).unwrap();
            let published =
                leadbridge::store::parse_db_time(&row.get::<String, _>("published_at")).unwrap();
            (published - created).num_microseconds().unwrap() as f64 / 1000.0
        })
        .collect();
    summary(
        "(b) commit → Kafka ack recorded, all hub leads",
        publish_latencies.len(),
        batch_elapsed,
        publish_latencies,
    );

    hub.stop().await;

    // (d) End to end through the police adapter at a steady 200 leads/s.
    settings.police.delivery.poll_interval_ms = 20;
    let e2e = Hub::start(
        &settings,
        &admin_url,
        &mut admin,
        &mut databases,
        Roles::ALL,
    )
    .await;
    let count = (total / 10).max(1000);
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / 200));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..count {
        ticker.tick().await;
        let client = client.clone();
        let url = format!("{}/v1/leads", e2e.base);
        let mut lead = sample(&format!("BENCH-E-{i}"));
        lead["kind"] = json!("clue");
        tasks.spawn(async move {
            let response = client.post(url).json(&lead).send().await.unwrap();
            assert_eq!(response.status(), 202);
        });
    }
    while tasks.join_next().await.is_some() {}
    let police = e2e.police.clone().unwrap();
    loop {
        let (waiting, delivered): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE delivered_at IS NULL), COUNT(*) FILTER (WHERE delivered_at IS NOT NULL) FROM police_deliveries",
        )
        .fetch_one(police.pool())
        .await
        .unwrap();
        if waiting == 0 && delivered as usize >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let accepted: std::collections::HashMap<String, String> =
        sqlx::query("SELECT lead_id, received_at FROM lead_revisions")
            .fetch_all(e2e.store.pool())
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get("lead_id"), row.get("received_at")))
            .collect();
    let end_to_end: Vec<f64> = sqlx::query(
        "SELECT lead_id, MIN(delivered_at) AS delivered_at FROM police_deliveries GROUP BY lead_id",
    )
    .fetch_all(police.pool())
    .await
    .unwrap()
    .iter()
    .filter_map(|row| {
        let accepted =
            leadbridge::store::parse_db_time(accepted.get(&row.get::<String, _>("lead_id"))?)?;
        let delivered = leadbridge::store::parse_db_time(&row.get::<String, _>("delivered_at"))?;
        Some((delivered - accepted).num_microseconds()? as f64 / 1000.0)
    })
    .collect();
    summary(
        "(d) end to end at 200/s: accepted → in the inbox",
        end_to_end.len(),
        elapsed,
        end_to_end,
    );
    e2e.stop().await;

    println!();
    println!(
        "hub batch / raw producer = {:.1} %",
        100.0 * hub_rate / raw_rate
    );
    println!("validation per core      = {validation_rate:.0} leads/s");
    for database in databases {
        sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

/// A hub on fresh PostgreSQL databases (its own, and the adapter's when it runs one).
struct Hub {
    base: String,
    store: leadbridge::store::Store,
    police: Option<leadbridge::store::Store>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Hub {
    async fn start(
        template: &Settings,
        admin_url: &str,
        admin: &mut sqlx::PgConnection,
        databases: &mut Vec<String>,
        roles: Roles,
    ) -> Hub {
        let mut settings = template.clone();
        let server = admin_url.rsplit_once('/').unwrap().0.to_owned();
        let mut names = Vec::new();
        for _ in 0..2 {
            let name = format!("lb_bench_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut *admin)
                .await
                .unwrap();
            databases.push(name.clone());
            names.push(name);
        }
        settings.database.url = Some(Secret::new(format!("{server}/{}", names[0])));
        settings.police.database_url = Some(Secret::new(format!("{server}/{}", names[1])));
        settings.kafka.topic_prefix = format!("bench{}", uuid::Uuid::new_v4().simple());
        settings.police.group_id = format!("{}-police", settings.kafka.topic_prefix);
        let app = Application::build(settings, roles).await.unwrap();
        let base = format!("https://127.0.0.1:{}", app.local_addr().unwrap().port());
        let store = app.store().clone();
        let police = app.police_store().map(|p| p.store().clone());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(app.run_until_stopped(stopped));
        Hub {
            base,
            store,
            police,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

async fn wait_until_published(store: &leadbridge::store::Store) {
    loop {
        if store.outbox_backlog().await.unwrap().0 == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
