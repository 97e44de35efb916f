//! Scaled out: two hubs on one database and two adapters in one consumer group (sharing the
//! adapter's database), run together, take leads through both APIs and deliver every lead
//! once, publishing every outbox row once. Real PostgreSQL and Kafka.

use std::collections::HashMap;
use std::time::Duration;

use leadbridge::contract::lead::Agency;
use leadbridge::Roles;
use rdkafka::Message;
use serde_json::Value;

use crate::helpers::{
    app, consume, consume_receipts, drop_test_database, header, sample_lead, unique_case_id,
    Backend, TestApp,
};
use crate::police::eventually;

const LEADS: usize = 60;

/// A second hub-and-adapter process on `first`'s databases, topics and consumer groups.
async fn second_instance(first: &TestApp) -> TestApp {
    let prefix = first.settings.kafka.topic_prefix.clone();
    let hub_database = first.settings.database.url.clone();
    let police_database = first.settings.police.database_url.clone();
    let group = first.settings.police.group_id.clone();
    let own = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let replaced = own.clone();
    let mut second = app(Backend::Real)
        .roles(Roles::ALL)
        .with_settings(move |settings| {
            let mut own = replaced.lock().unwrap();
            own.push(std::mem::replace(&mut settings.database.url, hub_database));
            own.push(std::mem::replace(
                &mut settings.police.database_url,
                police_database,
            ));
            settings.kafka.topic_prefix = prefix;
            settings.police.group_id = group;
        })
        .spawn()
        .await;
    // The databases made for the second instance are never used; the shared ones are the
    // first instance's to drop.
    let unused: Vec<_> = own.lock().unwrap().drain(..).flatten().collect();
    for url in unused {
        drop_test_database(url.expose()).await;
    }
    second.keep_databases();
    second
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let (count,): (i64,) = sqlx::query_as(sql)
        .fetch_one(app.store.inspection_pool().await.unwrap())
        .await
        .unwrap();
    count
}

#[tokio::test]
async fn two_hubs_and_two_adapters_deliver_every_lead_once_and_publish_every_row_once() {
    let first = app(Backend::Real).roles(Roles::ALL).spawn().await;
    let second = second_instance(&first).await;
    let mut lead_ids = Vec::new();
    for index in 0..LEADS {
        let instance = if index % 2 == 0 { &first } else { &second };
        let response = instance
            .post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
            .await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        lead_ids.push(body["lead_id"].as_str().unwrap().to_owned());
    }
    let police = first.police_store.clone().unwrap();
    let pool = police.store().inspection_pool().await.unwrap();
    // The hub says `delivered` at a lead's first delivery; a high-priority lead's second unit
    // may still be on its way, so wait for the adapters' books too.
    eventually("every lead is delivered to every unit", || async {
        let (pending,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM police_deliveries WHERE delivered_at IS NULL")
                .fetch_one(pool)
                .await
                .unwrap();
        count(
            &first,
            "SELECT COUNT(*) FROM leads WHERE status = 'delivered'",
        )
        .await
            == LEADS as i64
            && pending == 0
    })
    .await;

    // The hub's outbox: one publication per row, whichever relay took it.
    assert_eq!(
        count(
            &first,
            "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &first,
            "SELECT COUNT(*) FROM log_trail WHERE action = 'lead.published'"
        )
        .await,
        LEADS as i64,
        "one publication per lead on the ledger"
    );
    let published = consume(
        &first.bootstrap_servers,
        &first.topic(Agency::Environment),
        LEADS,
        Duration::from_secs(2),
    )
    .await;
    let mut copies: HashMap<String, usize> = HashMap::new();
    for message in &published {
        let key = String::from_utf8_lossy(message.key().unwrap()).into_owned();
        *copies.entry(key).or_default() += 1;
    }
    let mut keys: Vec<&String> = copies.keys().collect();
    keys.sort();
    let mut expected: Vec<&String> = lead_ids.iter().collect();
    expected.sort();
    assert_eq!(keys, expected, "every lead is on its topic");
    let repeated: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "published more than once: {repeated:?}"
    );
    // Both hubs' relays took part (each is woken by its own hub's ingest).
    let relays: std::collections::BTreeSet<String> = sqlx::query_as::<_, (String,)>(
        "SELECT details FROM log_trail WHERE action = 'lead.published'",
    )
    .fetch_all(first.store.inspection_pool().await.unwrap())
    .await
    .unwrap()
    .into_iter()
    .map(|(details,)| {
        let details: Value = serde_json::from_str(&details).unwrap();
        details["relay"].as_str().unwrap().to_owned()
    })
    .collect();
    assert_eq!(relays.len(), 2, "both relays published: {relays:?}");

    // The adapters: their books hold one row per lead and per (lead, unit) by constraint, so
    // counting rows shows nothing; what the two adapters sent the hub shows whether a lead was
    // recorded or delivered twice: one `received_by_police` per lead and one `delivered` per
    // (lead, unit) on the receipts topic, below.
    let (recorded,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM police_leads")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(recorded, LEADS as i64);
    let (receipt_rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
        .fetch_one(pool)
        .await
        .unwrap();
    let receipts = consume_receipts(
        &first.bootstrap_servers,
        &leadbridge::shared::kafka::Topics::new(first.settings.kafka.topic_prefix.clone())
            .receipts(),
        receipt_rows as usize,
        Duration::from_secs(2),
    )
    .await;
    let mut event_ids: Vec<String> = receipts
        .iter()
        .map(|message| header(message, "event_id").unwrap())
        .collect();
    let sent = event_ids.len();
    event_ids.sort();
    event_ids.dedup();
    assert_eq!(
        (sent, event_ids.len()),
        (receipt_rows as usize, receipt_rows as usize),
        "every receipt row published once"
    );
    let mut steps: HashMap<(String, String, String), usize> = HashMap::new();
    for message in &receipts {
        let receipt =
            leadbridge::contract::events::ReceiptEvent::decode(message.payload().unwrap()).unwrap();
        let unit = match &receipt.step {
            leadbridge::contract::events::ReceiptStep::Delivered { unit, .. } => unit.clone(),
            _ => String::new(),
        };
        *steps
            .entry((
                receipt.lead_id.to_string(),
                receipt.step.name().to_owned(),
                unit,
            ))
            .or_default() += 1;
    }
    let twice: Vec<_> = steps.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "recorded or delivered twice: {twice:?}");
    let received = steps
        .keys()
        .filter(|(_, step, _)| step == "received_by_police")
        .count();
    assert_eq!(received, LEADS, "every lead received by the police once");
    leadbridge::shared::audit::verify(&first.store)
        .await
        .unwrap();
    leadbridge::shared::audit::verify(police.store())
        .await
        .unwrap();
    second.stop().await;
    first.stop().await;
}
