//! Benchmark: the hub against its ceiling, on the real services of `deploy/local`.
//!
//! Run with `bash deploy/local/bench.sh`. In one run, on one broker and a PostgreSQL cluster
//! with production durability (`fsync`, `synchronous_commit`, `full_page_writes` on), it
//! measures
//!   (p) Kafka's own `ProducerPerformance` (idempotent, acks=all, records of the lead event's
//!       size, a fresh 3-partition topic): the ceiling every figure is divided by;
//!   (a) a raw rdkafka producer (idempotent, acks=all) sending the hub's own lead events;
//!   (b) the hub: batch POSTs of 100 and 500 leads with 1, 4 and 16 in flight, single POSTs
//!       with 16 in flight, each until every lead is acknowledged by Kafka, and single POSTs
//!       at a steady 500 leads/s (POST → 202), all over HTTPS with mutual TLS;
//!   (c) validation alone, on one core;
//!   (d) the police adapter: agency POST → delivered to the unit's inbox at a steady
//!       200 leads/s, and its sustained rate draining a backlog on Kafka;
//! and prints leads/s, p50/p99 latencies, the hub/ProducerPerformance ratios and the peak
//! resident memory of the process (hub and load generator).
//!
//! Sizes (environment): `BENCH_LEADS` leads per measurement (default 10000),
//! `BENCH_PERF_RECORDS` records for ProducerPerformance (default 100000), `BENCH_STEADY_LEADS`
//! for the steady 500 leads/s (default 5000), `BENCH_E2E_LEADS` for the adapter at a steady
//! 200 leads/s (default 2000); the adapter drains a backlog of `BENCH_LEADS`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use leadbridge::app::Settings;
use leadbridge::contract::lead::{Agency, LeadId};
use leadbridge::contract::validate::Validator;
use leadbridge::hub::ingest::lead_event;
use leadbridge::shared::identity::Principal;
use leadbridge::Roles;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};

mod common;
use common::{env, env_or, fresh_settings, memory_mib, Hub};

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

/// Runs Kafka's `ProducerPerformance` with its default producer settings except
/// `acks=all` and `enable.idempotence=true`, and returns its final records/sec.
fn producer_performance(kafka: &str, topic: &str, records: usize, record_size: usize) -> f64 {
    let libs = env("LEADBRIDGE_TEST_KAFKA_LIBS");
    let mut command = std::process::Command::new("java");
    if let Ok(log4j) = std::env::var("LEADBRIDGE_TEST_KAFKA_TOOLS_LOG4J") {
        command.arg(format!("-Dlog4j2.configurationFile={log4j}"));
    }
    let output = command
        .arg("-Xmx512m")
        .arg("-cp")
        .arg(format!("{libs}/*"))
        .arg("org.apache.kafka.tools.ProducerPerformance")
        .args(["--bootstrap-server", kafka, "--topic", topic])
        .args(["--num-records", &records.to_string()])
        .args(["--record-size", &record_size.to_string()])
        .args(["--throughput", "-1"])
        .args(["--command-property", "acks=all", "enable.idempotence=true"])
        .output()
        .expect("java runs ProducerPerformance (deploy/local/services.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ProducerPerformance failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Final summary: "N records sent, R records/sec (M MB/sec), A ms avg latency, ...".
    let last = stdout
        .lines()
        .rfind(|line| line.contains(" records sent, ") && line.contains("th."))
        .unwrap_or_else(|| panic!("no summary line in ProducerPerformance's output: {stdout}"));
    println!("    ProducerPerformance: {last}");
    last.split(", ")
        .nth(1)
        .and_then(|field| {
            field
                .strip_suffix(" records/sec")
                .unwrap_or(field)
                .split(' ')
                .next()
        })
        .and_then(|rate| rate.parse().ok())
        .unwrap_or_else(|| panic!("cannot read records/sec in {last:?}"))
}

/// Posts `leads` as batches of `size` with `in_flight` requests at a time, then waits until
/// every lead is acknowledged by Kafka. Returns the rate and the batch POST latencies.
async fn batch_point(
    client: &reqwest::Client,
    hub: &Hub,
    label: &str,
    leads: usize,
    size: usize,
    in_flight: usize,
) -> f64 {
    let batches: Vec<Value> = (0..leads)
        .map(|i| sample(&format!("BENCH-{label}-{i}")))
        .collect::<Vec<_>>()
        .chunks(size)
        .map(|chunk| json!({ "leads": chunk }))
        .collect();
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let posts = batches.iter().map(|batch| {
        let client = client.clone();
        let url = format!("{}/v1/leads/batch", hub.base);
        let gate = gate.clone();
        async move {
            let _permit = gate.acquire().await.unwrap();
            let one = Instant::now();
            let response = client.post(url).json(batch).send().await.unwrap();
            assert_eq!(response.status(), 200);
            one.elapsed().as_secs_f64() * 1000.0
        }
    });
    let latencies = futures::future::join_all(posts).await;
    wait_until_published(hub.store()).await;
    summary(
        &format!("(b) batch {size} × {in_flight} in flight → Kafka ack; per POST"),
        leads,
        started.elapsed(),
        latencies,
    )
}

#[tokio::main]
async fn main() {
    let total = env_or("BENCH_LEADS", 10_000);
    let perf_records = env_or("BENCH_PERF_RECORDS", 100_000);
    let steady_leads = env_or("BENCH_STEADY_LEADS", 5_000);
    let e2e_leads = env_or("BENCH_E2E_LEADS", 2_000);
    let kafka = env("LEADBRIDGE_TEST_KAFKA");
    let admin_url = env("LEADBRIDGE_TEST_BENCH_DATABASE_URL");
    let now = Utc::now();
    let validator = Validator::built_in().unwrap();
    println!(
        "LeadBridge benchmark: {total} leads per measurement; {} cores",
        std::thread::available_parallelism().unwrap()
    );

    let mut admin = common::durable_admin(&admin_url).await;

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

    // The hub's lead events: their size sets ProducerPerformance's record size.
    let mut settings = Settings::default();
    settings.kafka.bootstrap_servers = Some(kafka.clone());
    let topic = format!("bench{}.raw", uuid::Uuid::new_v4().simple());
    let events: Vec<(String, Vec<u8>)> = documents
        .iter()
        .map(|document| {
            let lead = validator
                .validate(Agency::Environment, document.clone(), now)
                .unwrap();
            let id = LeadId::generate();
            (id.to_string(), lead_event(&lead, id, &topic).payload)
        })
        .collect();
    let record_size = events
        .iter()
        .map(|(_, payload)| payload.len())
        .sum::<usize>()
        / total;
    println!(
        "lead event: {record_size} bytes of payload (the sample lead; key {} bytes)",
        events[0].0.len()
    );

    // (p) Kafka's ProducerPerformance on a fresh 3-partition topic of the same broker.
    let perf_topic = format!("bench{}.perf", uuid::Uuid::new_v4().simple());
    leadbridge::shared::kafka::ensure_topics(
        &settings.kafka,
        &kafka,
        &[topic.clone(), perf_topic.clone()],
    )
    .await
    .unwrap();
    let perf = tokio::task::spawn_blocking({
        let (kafka, perf_topic) = (kafka.clone(), perf_topic.clone());
        move || producer_performance(&kafka, &perf_topic, perf_records, record_size)
    })
    .await
    .unwrap();
    println!(
        "{:<52} {perf_records:>7} recs  {perf:>10.0} records/s (acks=all, idempotent, {record_size} B, 3 partitions)",
        "(p) Kafka ProducerPerformance: the ceiling"
    );

    // (a) Raw rdkafka producer: the same canonical lead events the relay publishes.
    let producer = leadbridge::shared::kafka::idempotent_producer(&settings.kafka, &kafka).unwrap();
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
        "(a) raw rdkafka producer, idempotent acks=all",
        total,
        started.elapsed(),
        latencies,
    );
    drop(producer);
    drop(documents);
    drop(events);

    // (b) The hub on PostgreSQL and the same broker.
    let (_pki_dir, ca, tls) = common::bench_pki();
    let agency = ca
        .issue_client(&Principal::Agency(Agency::Environment))
        .unwrap();
    let client = common::client_builder(&ca, &agency.cert_pem, &agency.key_pem)
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();

    let data_dir = tempfile::tempdir().unwrap();
    settings.data_dir = data_dir.path().to_owned();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.server.tls = Some(tls);
    settings.relay.poll_interval_ms = 20;
    settings.police.delivery.poll_interval_ms = 20;
    let mut databases = Vec::new();
    let rss_before_hub = memory_mib("VmRSS");
    // The hub alone: the adapter's work is measured separately in (d).
    let hub_settings = fresh_settings(&settings, &admin_url, &mut admin, &mut databases).await;
    let hub = Hub::start(&hub_settings, Roles::HUB).await;

    // Warm-up, not measured: the hub's first connections, the relay's producer id.
    batch_point(&client, &hub, "WARM", 100, 100, 1).await;
    println!("    (the line above is the warm-up, not a measurement)");
    let mut rows: Vec<(String, f64)> = Vec::new();
    for (size, in_flight) in [(100, 1), (100, 4), (100, 16), (500, 1), (500, 4), (500, 16)] {
        let label = format!("B{size}x{in_flight}");
        let rate = batch_point(&client, &hub, &label, total, size, in_flight).await;
        rows.push((format!("batch {size} × {in_flight} in flight"), rate));
    }

    // Single POSTs, 16 in flight, until every lead is acknowledged by Kafka.
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        let url = format!("{}/v1/leads", hub.base);
        let lead = sample(&format!("BENCH-S16-{i}"));
        tasks.spawn(async move {
            let one = Instant::now();
            let response = client.post(url).json(&lead).send().await.unwrap();
            assert_eq!(response.status(), 202);
            drop(permit);
            one.elapsed().as_secs_f64() * 1000.0
        });
    }
    let mut latencies = Vec::with_capacity(total);
    while let Some(latency) = tasks.join_next().await {
        latencies.push(latency.unwrap());
    }
    wait_until_published(hub.store()).await;
    let rate = summary(
        "(b) single POSTs, 16 in flight → Kafka ack; POST → 202",
        total,
        started.elapsed(),
        latencies,
    );
    rows.push(("single POSTs, 16 in flight".into(), rate));

    // Single leads at a steady 500 leads/s.
    let rate = 500u64;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..steady_leads {
        ticker.tick().await;
        let client = client.clone();
        let url = format!("{}/v1/leads", hub.base);
        let lead = sample(&format!("BENCH-S-{i}"));
        tasks.spawn(async move {
            let one = Instant::now();
            let response = client.post(url).json(&lead).send().await.unwrap();
            assert_eq!(response.status(), 202);
            one.elapsed().as_secs_f64() * 1000.0
        });
    }
    let mut single_latencies = Vec::with_capacity(steady_leads);
    while let Some(latency) = tasks.join_next().await {
        single_latencies.push(latency.unwrap());
    }
    wait_until_published(hub.store()).await;
    summary(
        "(b) single POSTs at a steady 500/s: POST → 202",
        steady_leads,
        started.elapsed(),
        single_latencies,
    );
    // The benchmark runs on PostgreSQL, whose times are `timestamptz`: the database does the
    // arithmetic, in milliseconds.
    let publish_latencies: Vec<f64> = sqlx::query_scalar(
        "SELECT CAST(EXTRACT(EPOCH FROM (published_at - created_at)) * 1000 AS DOUBLE PRECISION) \
         FROM outbox WHERE published_at IS NOT NULL",
    )
    .fetch_all(hub.store().inspection_pool().await.unwrap())
    .await
    .unwrap();
    let all = publish_latencies.len();
    let mut sorted = publish_latencies;
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{:<52} {all:>7} leads {:>16}   p50 {:>8.2} ms   p99 {:>8.2} ms",
        "(b) commit → Kafka ack recorded, all hub leads",
        "",
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.99)
    );
    hub.stop().await;

    // (d) End to end through the police adapter at a steady 200 leads/s.
    let e2e_settings = fresh_settings(&settings, &admin_url, &mut admin, &mut databases).await;
    let e2e = Hub::start(&e2e_settings, Roles::ALL).await;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / 200));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..e2e_leads {
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
    wait_until_delivered(&police, e2e_leads).await;
    let elapsed = started.elapsed();
    // Two databases (the hub's and the adapter's): each gives its times as epoch milliseconds.
    let accepted: std::collections::HashMap<String, f64> = sqlx::query_as(
        "SELECT CAST(lead_id AS TEXT), CAST(EXTRACT(EPOCH FROM received_at) * 1000 AS DOUBLE PRECISION) \
         FROM lead_revisions",
    )
    .fetch_all(e2e.store().inspection_pool().await.unwrap())
    .await
    .unwrap()
    .into_iter()
    .collect();
    let delivered: Vec<(String, f64)> = sqlx::query_as(
        "SELECT CAST(lead_id AS TEXT), CAST(EXTRACT(EPOCH FROM MIN(delivered_at)) * 1000 AS DOUBLE PRECISION) \
         FROM police_deliveries GROUP BY lead_id",
    )
    .fetch_all(police.inspection_pool().await.unwrap())
    .await
    .unwrap();
    let end_to_end: Vec<f64> = delivered
        .iter()
        .filter_map(|(lead_id, delivered)| Some(delivered - accepted.get(lead_id)?))
        .collect();
    summary(
        "(d) end to end at 200/s: accepted → in the inbox",
        end_to_end.len(),
        elapsed,
        end_to_end,
    );
    // Where that time goes, lead by lead: the hub's relay (accepted → Kafka's acknowledgement
    // recorded), Kafka to the adapter's recording, the adapter's recording to the delivery.
    let published: std::collections::HashMap<String, f64> = sqlx::query_as(
        "SELECT CAST(lead_id AS TEXT), CAST(EXTRACT(EPOCH FROM MIN(published_at)) * 1000 AS DOUBLE PRECISION) \
         FROM outbox WHERE published_at IS NOT NULL GROUP BY lead_id",
    )
    .fetch_all(e2e.store().inspection_pool().await.unwrap())
    .await
    .unwrap()
    .into_iter()
    .collect();
    let recorded: std::collections::HashMap<String, f64> = sqlx::query_as(
        "SELECT CAST(lead_id AS TEXT), CAST(EXTRACT(EPOCH FROM MIN(received_at)) * 1000 AS DOUBLE PRECISION) \
         FROM police_leads GROUP BY lead_id",
    )
    .fetch_all(police.inspection_pool().await.unwrap())
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut stages: [Vec<f64>; 3] = Default::default();
    for (lead_id, delivered) in &delivered {
        let (Some(accepted), Some(published), Some(recorded)) = (
            accepted.get(lead_id),
            published.get(lead_id),
            recorded.get(lead_id),
        ) else {
            continue;
        };
        stages[0].push(published - accepted);
        stages[1].push(recorded - published);
        stages[2].push(delivered - recorded);
    }
    for (name, mut latencies) in [
        "    of which accepted → acknowledged by Kafka (relay)",
        "    of which acknowledged → recorded by the adapter",
        "    of which recorded → in the inbox (delivery)",
    ]
    .into_iter()
    .zip(stages)
    {
        latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{name:<52} {:>7} leads {:>16}   p50 {:>8.2} ms   p99 {:>8.2} ms",
            latencies.len(),
            "",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99)
        );
    }
    e2e.stop().await;

    // (d) The adapter's sustained rate: the hub alone puts a backlog on Kafka, then the
    // adapter alone (same topics, its own database) drains it into the inbox.
    let drain_settings = fresh_settings(&settings, &admin_url, &mut admin, &mut databases).await;
    let hub = Hub::start(&drain_settings, Roles::HUB).await;
    // A backlog the size of the other measurements, so that the rate is sustained rather than
    // the consumer group's start-up.
    let backlog = total;
    let clues: Vec<Value> = (0..backlog)
        .map(|i| {
            let mut lead = sample(&format!("BENCH-D-{i}"));
            lead["kind"] = json!("clue");
            lead
        })
        .collect();
    for chunk in clues.chunks(500) {
        let response = client
            .post(format!("{}/v1/leads/batch", hub.base))
            .json(&json!({ "leads": chunk }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    wait_until_published(hub.store()).await;
    hub.stop().await;
    let adapter = Hub::start(&drain_settings, Roles::POLICE).await;
    let started = Instant::now();
    let police = adapter.police.clone().unwrap();
    wait_until_delivered(&police, backlog).await;
    let from_start_up = backlog as f64 / started.elapsed().as_secs_f64();
    println!(
        "{:<52} {backlog:>7} leads {from_start_up:>10.0} leads/s   (from start-up, backlog on Kafka)",
        "(d) adapter alone draining a backlog → in the inbox",
    );
    // Without the start-up (joining the consumer group, whose first rebalance the broker
    // delays): from the first lead recorded to the last delivered, by the adapter's own times.
    let busy_ms: f64 = sqlx::query_scalar(
        "SELECT CAST(EXTRACT(EPOCH FROM ((SELECT MAX(delivered_at) FROM police_deliveries) \
                                        - (SELECT MIN(received_at) FROM police_leads))) * 1000 \
                     AS DOUBLE PRECISION)",
    )
    .fetch_one(police.inspection_pool().await.unwrap())
    .await
    .unwrap();
    let adapter_rate = backlog as f64 / (busy_ms / 1000.0);
    println!(
        "{:<52} {backlog:>7} leads {adapter_rate:>10.0} leads/s   (first recorded → last delivered, {busy_ms:.0} ms)",
        "(d) adapter alone draining a backlog → in the inbox",
    );
    adapter.stop().await;
    let peak = memory_mib("VmHWM");

    println!();
    println!("ratios to (p) ProducerPerformance, {perf:.0} records/s:");
    for (name, rate) in &rows {
        println!(
            "  {name:<32} {rate:>8.0} leads/s   {:>6.3} of (p)",
            rate / perf
        );
    }
    println!(
        "  {:<32} {adapter_rate:>8.0} leads/s   {:>6.3} of (p)",
        "adapter draining a backlog",
        adapter_rate / perf
    );
    println!(
        "  {:<32} {raw_rate:>8.0} leads/s   {:>6.3} of (p)",
        "(a) raw rdkafka producer",
        raw_rate / perf
    );
    println!("validation per core: {validation_rate:.0} leads/s");
    println!(
        "peak resident memory (VmHWM) of the bench process, hub + load generator: {peak:.0} MiB \
         (VmRSS {rss_before_hub:.0} MiB before the hub started)"
    );
    for database in databases {
        sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

async fn wait_until_delivered(police: &leadbridge::shared::store::Store, count: usize) {
    loop {
        let (waiting, delivered): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE delivered_at IS NULL), COUNT(*) FILTER (WHERE delivered_at IS NOT NULL) FROM police_deliveries",
        )
        .fetch_one(police.inspection_pool().await.unwrap())
        .await
        .unwrap();
        if waiting == 0 && delivered as usize >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_until_published(store: &leadbridge::shared::store::Store) {
    loop {
        if store.outbox_backlog().await.unwrap().0 == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
