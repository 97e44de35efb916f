//! The adapter records a backlog in batches: a burst of leads on one partition takes far fewer
//! transactions of the adapter's database than leads, and each lead is still recorded and
//! delivered exactly once. Real PostgreSQL and Kafka; the adapter starts in a second app once
//! the burst is all on the partition.

use std::sync::{Arc, Mutex};

use leadbridge::contract::lead::Agency;
use leadbridge::Roles;
use serde_json::{json, Value};

use crate::helpers::{
    app, drop_test_database, receipt_payload, received_by_police, sample_lead, unique_case_id,
    Backend, TestApp,
};
use crate::permanent::inject_nul_summary;
use crate::police::eventually;

const LEADS: usize = 200;

/// Keeps new log entries in `log_queue` for the test (the sequencer's next round is an hour
/// away; it still moves everything at shutdown): a queued row is never updated, so its
/// `xmin` is the transaction that recorded it, which is what these tests count.
fn hold_the_log_queue(settings: &mut leadbridge::app::Settings) {
    settings.transparency.sequence_interval_ms = 3_600_000;
}

/// A hub without the adapter, on one partition, so what it publishes waits there.
async fn hub_alone() -> TestApp {
    app(Backend::Real)
        .roles(Roles::HUB)
        .with_settings(|settings| {
            settings.kafka.topic_partitions = 1;
            hold_the_log_queue(settings);
        })
        .spawn()
        .await
}

/// Posts `count` leads in one batch; their ids.
async fn post_leads(hub: &TestApp, count: usize) -> Vec<String> {
    let leads: Vec<Value> = (0..count).map(|_| sample_lead(&unique_case_id())).collect();
    post_batch(hub, Agency::Environment, &leads).await
}

/// Posts `leads` of `agency` in one batch; their ids, in order.
async fn post_batch(hub: &TestApp, agency: Agency, leads: &[Value]) -> Vec<String> {
    let response = hub
        .client(agency)
        .post(hub.url("/v1/leads/batch"))
        .json(&json!({ "leads": leads }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let results: Value = response.json().await.unwrap();
    results["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{results}"))
        .iter()
        .map(|r| r["lead_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn count_leads(app: &TestApp, status: &str) -> i64 {
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM leads WHERE status = $1")
        .bind(status)
        .fetch_one(app.store.inspection_pool().await.unwrap())
        .await
        .unwrap();
    count
}

/// The adapter, started once everything `hub` took is on the partition. Its app runs a
/// second hub instance on the same hub database, as a scaled-out hub would (test apps need a
/// hub). Stop it with [`stop`].
async fn adapter_behind(hub: &TestApp, leads: usize) -> TestApp {
    eventually("the burst is on the partition", || async {
        count_leads(hub, "published").await == leads as i64
    })
    .await;
    let prefix = hub.settings.kafka.topic_prefix.clone();
    let hub_database = hub.settings.database.url.clone();
    let own_hub_database = Arc::new(Mutex::new(None));
    let replaced = own_hub_database.clone();
    let mut adapter = app(Backend::Real)
        .roles(Roles::ALL)
        .with_settings(move |settings| {
            settings.kafka.topic_partitions = 1;
            hold_the_log_queue(settings);
            *replaced.lock().unwrap() = std::mem::replace(&mut settings.database.url, hub_database);
            settings.police.group_id = format!("{prefix}-police");
            settings.kafka.topic_prefix = prefix;
        })
        .spawn()
        .await;
    // The hub database made for this app is never used, and the hub's is the hub's to drop:
    // stopping this app drops neither.
    let unused = own_hub_database.lock().unwrap().take();
    if let Some(url) = unused {
        drop_test_database(url.expose()).await;
    }
    adapter.keep_databases();
    adapter
}

/// Stops the adapter's app, then the hub, which drops the hub database they shared; then the
/// adapter's own database.
async fn stop(adapter: TestApp, hub: TestApp) {
    let police_database = adapter.settings.police.database_url.clone();
    adapter.stop().await;
    hub.stop().await;
    if let Some(url) = police_database {
        drop_test_database(url.expose()).await;
    }
}

#[tokio::test]
async fn a_burst_of_leads_is_recorded_in_few_transactions_and_each_exactly_once() {
    let hub = hub_alone().await;
    let mut lead_ids = post_leads(&hub, LEADS).await;
    lead_ids.sort();
    assert_eq!(lead_ids.len(), LEADS);
    let adapter = adapter_behind(&hub, LEADS).await;
    let police = adapter.police_store.clone().unwrap();
    let pool = police.store().inspection_pool().await.unwrap();
    // The hub says `delivered` at a lead's first delivery; a high-priority lead's second unit
    // may still be on its way, so wait for the adapter's books too.
    eventually("every lead is delivered to every unit", || async {
        let (pending,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM police_deliveries WHERE delivered_at IS NULL")
                .fetch_one(pool)
                .await
                .unwrap();
        count_leads(&hub, "delivered").await == LEADS as i64 && pending == 0
    })
    .await;

    // Each lead recorded, delivered, and its receipt owed once. (The books hold one row per
    // lead and per lead and unit by constraint; the receipts count what was done.)
    let mut recorded: Vec<(String, i64)> =
        sqlx::query_as("SELECT CAST(lead_id AS TEXT) AS lead_id, revision FROM police_leads")
            .fetch_all(pool)
            .await
            .unwrap();
    recorded.sort();
    assert_eq!(
        recorded,
        lead_ids
            .iter()
            .map(|id| (id.clone(), 1))
            .collect::<Vec<_>>()
    );
    let (deliveries, delivered_receipts): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM police_deliveries), \
                (SELECT COUNT(*) FROM log_trail WHERE action = 'lead.delivered')",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(deliveries >= LEADS as i64, "{deliveries} deliveries");
    assert_eq!(
        delivered_receipts, deliveries,
        "one delivered receipt per delivery"
    );
    let (receipts,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM log_trail WHERE action = 'lead.received_by_police'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(receipts, LEADS as i64);

    // A queued entry is never updated, so the transaction id of each `received_by_police`
    // entry (`xmin`) is the transaction that recorded its lead: count them.
    let (queued, transactions): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT xmin::text) FROM log_queue \
         WHERE action = 'lead.received_by_police'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        queued, LEADS as i64,
        "the entries are still queued, as counted"
    );
    println!("{LEADS} leads recorded in {transactions} transactions");
    assert!(
        transactions <= (LEADS / 10) as i64,
        "{LEADS} leads took {transactions} transactions"
    );
    leadbridge::shared::audit::verify(police.store())
        .await
        .unwrap();

    stop(adapter, hub).await;
}

#[tokio::test]
async fn a_lead_the_database_cannot_hold_is_dead_lettered_alone_out_of_its_batch() {
    let mut hub = hub_alone().await;
    let mut valid = post_leads(&hub, 10).await;
    let nul_lead = inject_nul_summary(&hub).await;
    valid.extend(post_leads(&hub, 10).await);
    hub.expect_lasting_failures(1);
    let mut adapter = adapter_behind(&hub, 21).await;
    adapter.expect_lasting_failures(1);
    eventually(
        "the valid leads are delivered, the NUL one dead-lettered",
        || async {
            count_leads(&hub, "delivered").await == 20
                && count_leads(&hub, "dead_lettered").await == 1
        },
    )
    .await;
    let status: Value = hub
        .get_lead(Agency::Environment, &nul_lead)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "dead_lettered", "{status}");
    for lead_id in &valid {
        let status: Value = hub
            .get_lead(Agency::Environment, lead_id)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(status["status"], "delivered", "{status}");
    }
    let police = adapter.police_store.clone().unwrap();
    let (recorded,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM police_leads")
        .fetch_one(police.store().inspection_pool().await.unwrap())
        .await
        .unwrap();
    assert_eq!(recorded, 20, "the valid leads, and not the NUL one");
    stop(adapter, hub).await;
}

/// The hub applies a burst of receipts in few transactions of its database, each receipt once
/// although every one arrives twice (the adapter's relay may publish a receipt again).
#[tokio::test]
async fn a_burst_of_receipts_is_applied_in_few_transactions_and_each_exactly_once() {
    let hub = hub_alone().await;
    let lead_ids = post_leads(&hub, LEADS).await;
    eventually("the burst is published", || async {
        count_leads(&hub, "published").await == LEADS as i64
    })
    .await;
    let receipts =
        leadbridge::shared::kafka::Topics::new(hub.settings.kafka.topic_prefix.clone()).receipts();
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &hub.bootstrap_servers)
        .create()
        .unwrap();
    let payloads: Vec<Vec<u8>> = lead_ids
        .iter()
        .map(|lead_id| receipt_payload(lead_id, "police-adapter", received_by_police()))
        .collect();
    let sends = lead_ids
        .iter()
        .chain(&lead_ids)
        .zip(payloads.iter().chain(&payloads))
        .map(|(lead_id, payload)| {
            producer.send(
                rdkafka::producer::FutureRecord::to(&receipts)
                    .key(lead_id)
                    .payload(payload),
                std::time::Duration::from_secs(5),
            )
        });
    for sent in futures::future::join_all(sends).await {
        sent.unwrap();
    }
    eventually("every receipt is applied", || async {
        count_leads(&hub, "received_by_police").await == LEADS as i64
    })
    .await;

    let pool = hub.store.inspection_pool().await.unwrap();
    let (applied,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM receipts_applied")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(applied, LEADS as i64);
    // As for the adapter: a queued entry's `xmin` names the applying transaction.
    let (entries, transactions): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT xmin::text) FROM log_queue \
         WHERE action = 'lead.receipt_applied'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(entries, LEADS as i64);
    println!("{LEADS} receipts applied in {transactions} transactions");
    assert!(
        transactions <= (LEADS / 10) as i64,
        "{LEADS} receipts took {transactions} transactions"
    );
    leadbridge::shared::audit::verify(&hub.store).await.unwrap();
    hub.stop().await;
}

#[tokio::test]
async fn a_batch_counts_the_penalty_leads_before_a_lead_in_the_same_batch() {
    use crate::priors::{min3, mining_clue, mining_penalty};
    let hub = hub_alone().await;
    // Two penalties and then a clue of the same company, in this order on one partition: the
    // adapter takes them in one run, so the clue's count comes from the run itself.
    let leads = [
        mining_penalty("2025-03-01T10:00:00+08:00"),
        mining_penalty("2026-06-30T09:30:00+08:00"),
        mining_clue(),
    ];
    let ids = post_batch(&hub, Agency::Land, &leads).await;
    let adapter = adapter_behind(&hub, 3).await;
    let status = hub
        .wait_for_status(Agency::Land, &ids[2], "delivered")
        .await;
    let count = min3(&status);
    assert_eq!(
        (&count["declared"], &count["on_record"], &count["used"]),
        (&json!(1), &json!(2), &json!("on_record")),
        "{count}"
    );
    // And the three were one run: their received_by_police entries, still queued, share one
    // transaction, so the clue's count came from the run itself, not from the store.
    let police = adapter.police_store.clone().unwrap();
    let (queued, transactions): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT xmin::text) FROM log_queue \
         WHERE action = 'lead.received_by_police'",
    )
    .fetch_one(police.store().inspection_pool().await.unwrap())
    .await
    .unwrap();
    assert_eq!((queued, transactions), (3, 1));
    stop(adapter, hub).await;
}
