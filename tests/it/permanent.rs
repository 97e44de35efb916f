//! Permanent failures: data that can never pass a stage is refused or set aside visibly, and
//! never blocks what comes behind it; transient failures are still waited out.

use chrono::Utc;
use leadbridge::ingest::lead_event;
use leadbridge::kafka::Topics;
use leadbridge::lead::{Agency, LeadId, ValidatedLead};
use leadbridge::store::leads::LeadToStore;
use leadbridge::store::OutboxMessage;
use leadbridge::validate::Validator;
use leadbridge::Roles;
use serde_json::{json, Value};

use crate::helpers::{app, sample_lead, unique_case_id, Backend, TestApp};

/// A lead that passed the validator, for injecting events below the API.
fn validated(lead: Value) -> ValidatedLead {
    Validator::built_in()
        .unwrap()
        .validate(Agency::Environment, lead, Utc::now())
        .expect("the sample lead is valid")
}

/// Stores `lead` as the API would, but with the outbox message `event` makes of the normal
/// one, and returns the lead's id.
async fn inject(
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
        leadbridge::store::Acceptance::Accepted { lead_id, .. } => lead_id.to_string(),
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
        "SELECT COUNT(*) FROM audit_entries WHERE action = 'lead.publish_failed' AND lead_id = $1",
    )
    .bind(&oversized)
    .fetch_one(app.store.pool())
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
        "SELECT COUNT(*), MAX(attempts) FROM outbox WHERE failed_at IS NOT NULL AND lead_id = $1",
    )
    .bind(&oversized)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        (failed_rows, attempts),
        (1, 1),
        "tried once, never claimed again"
    );
    assert_eq!(app.store.outbox_backlog().await.unwrap().0, 0);
    app.stop_expecting_empty_outbox().await;
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
    store: &leadbridge::store::Store,
    lead_id: &str,
    topic: &str,
    payload: Vec<u8>,
) {
    let now = leadbridge::store::db_time(Utc::now());
    sqlx::query(
        "INSERT INTO outbox (event_id, lead_id, revision, topic, payload, headers, created_at, next_attempt_at) \
         VALUES ($1, $2, 1, $3, $4, '[]', $5, $5)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(lead_id)
    .bind(topic)
    .bind(payload)
    .bind(now)
    .execute(store.pool())
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
    let returned = json!({
        "event_id": uuid::Uuid::now_v7().to_string(), "schema": "leadbridge.receipt.v1",
        "lead_id": lead_id, "revision": 1, "event": "returned",
        "at": Utc::now().to_rfc3339(), "actor": "investigator:370303", "reason": "补充材料",
    });
    insert_receipt_row(
        &police,
        &lead_id,
        &receipts,
        serde_json::to_vec(&returned).unwrap(),
    )
    .await;

    app.wait_for_status(Agency::Environment, &lead_id, "returned")
        .await;
    let (failed,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE failed_at IS NOT NULL")
            .fetch_one(police.pool())
            .await
            .unwrap();
    assert_eq!(failed, 1);
    let (audited,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM audit_entries WHERE action = 'receipt.publish_failed' AND lead_id = $1",
    )
    .bind(&lead_id)
    .fetch_one(police.pool())
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
    app.stop_expecting_empty_outbox().await;
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
