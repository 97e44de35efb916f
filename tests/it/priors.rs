//! Earlier administrative penalties from the adapter's own records (MIN-3 and its kin): penalty
//! leads an agency sent earlier raise the count a later lead of the same subject is assessed
//! with, through the real hub, Kafka and adapter, on PostgreSQL and on SQLite; the store's index
//! reads each case at its latest revision, its backfill indexes what an older adapter stored,
//! and a stored penalty that does not read back is an error naming its row.

use chrono::Utc;
use serde_json::{json, Value};

use leadbridge::contract::deadlines::{Clocks, DeadlineSettings};
use leadbridge::contract::lead::{Agency, LeadId};
use leadbridge::police::routing::{Route, Routed};
use leadbridge::police::store::{IncomingLead, PoliceStore, MIGRATIONS};
use leadbridge::shared::store::{Backend as DbBackend, Store, StoreError};
use leadbridge::Roles;

use crate::helpers::{
    app, fresh_postgres_database, fresh_sqlite_url, unique_case_id, valid_fixtures, Backend,
    TestApp,
};
use crate::police::inbox;

const COMPANY: &str = "91370302MA3F5H6T1Y";

/// The illegal-mining penalty fixture as a new case decided at `decided_at`.
pub fn mining_penalty(decided_at: &str) -> Value {
    let (_, mut lead) = valid_fixtures()
        .into_iter()
        .find(|(_, lead)| lead["lead_type"] == "land.illegal_mining" && lead["kind"] == "penalty")
        .expect("the illegal-mining penalty fixture");
    let case_id = unique_case_id();
    lead["source"]["case_id"] = json!(case_id);
    lead["penalty"]["decision_no"] = json!(format!("淄川自然资罚〔{case_id}〕"));
    lead["penalty"]["decided_at"] = json!(decided_at);
    lead["occurred_at"] = json!("2024-01-10T08:00:00+08:00");
    lead["reported_at"] = json!("2026-11-01T08:00:00+08:00");
    lead
}

/// A later illegal-mining clue of the same company, below every amount, declaring one penalty.
pub fn mining_clue() -> Value {
    let mut lead = mining_penalty("2026-01-01T00:00:00+08:00");
    lead["kind"] = json!("clue");
    lead.as_object_mut().unwrap().remove("penalty");
    lead["facts"]["prior_penalties_2y"] = json!(1);
    lead["occurred_at"] = json!("2026-11-20T08:00:00+08:00");
    lead["reported_at"] = json!("2026-11-21T08:00:00+08:00");
    lead
}

async fn submit(app: &TestApp, lead: &Value) -> String {
    let response = app.post_lead(Agency::Land, lead).await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let receipt: Value = response.json().await.unwrap();
    receipt["lead_id"].as_str().unwrap().to_owned()
}

pub fn min3(status: &Value) -> &Value {
    status["assessment"]["prior_penalties"]
        .as_array()
        .and_then(|counts| counts.iter().find(|count| count["rule"] == "MIN-3"))
        .unwrap_or_else(|| panic!("no MIN-3 count in {}", status["assessment"]))
}

fn cites(status: &Value, rule: &str) -> bool {
    status["assessment"]["suspected_offences"]
        .as_array()
        .unwrap()
        .iter()
        .any(|offence| {
            offence["rules"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == rule)
        })
}

async fn counts_penalties_from_records(backend: Backend) {
    let app = app(backend).roles(Roles::ALL).spawn().await;
    // Two penalties within two years of the clue's act (2026-11-20), one before the window.
    let recent = [
        submit(&app, &mining_penalty("2025-03-01T10:00:00+08:00")).await,
        submit(&app, &mining_penalty("2026-06-30T09:30:00+08:00")).await,
    ];
    let old = submit(&app, &mining_penalty("2024-11-19T23:00:00+08:00")).await;
    for lead_id in recent.iter().chain([&old]) {
        app.wait_for_status(Agency::Land, lead_id, "delivered")
            .await;
    }

    // The agency declares one earlier penalty; the adapter holds two within the period.
    let clue = submit(&app, &mining_clue()).await;
    let status = app.wait_for_status(Agency::Land, &clue, "delivered").await;
    let count = min3(&status);
    assert_eq!(count["declared"], 1, "{count}");
    assert_eq!(count["on_record"], 2, "{count}");
    assert_eq!(count["used"], "on_record", "{count}");
    assert_eq!(count["since"], "2024-11-20", "{count}");
    let counted: Vec<&str> = count["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["lead_id"].as_str().unwrap())
        .collect();
    assert_eq!(counted, [recent[0].as_str(), recent[1].as_str()]);
    assert!(cites(&status, "MIN-3"), "{}", status["assessment"]);
    assert_eq!(status["assessment"]["priority"], "high");
    // High priority: the city unit has it too, with the same assessment.
    let city = inbox(&app, "370300").await;
    let item = city
        .iter()
        .find(|item| item["lead_id"] == clue.as_str())
        .expect("the high-priority clue reaches the city unit");
    assert_eq!(item["assessment"], status["assessment"]);

    // A later revision of one penalty that is no longer a penalty takes it out of the count.
    let mut withdrawn = mining_penalty("2025-03-01T10:00:00+08:00");
    let first = app.get_lead(Agency::Land, &recent[0]).await;
    let first: Value = first.json().await.unwrap();
    withdrawn["source"]["case_id"] = first["case_id"].clone();
    withdrawn["source"]["revision"] = json!(2);
    withdrawn["kind"] = json!("clue");
    withdrawn.as_object_mut().unwrap().remove("penalty");
    let again = submit(&app, &withdrawn).await;
    assert_eq!(again, recent[0], "the revision is of the same lead");
    eventually_revision(&app, &again, 2).await;

    let second_clue = submit(&app, &mining_clue()).await;
    let status = app
        .wait_for_status(Agency::Land, &second_clue, "delivered")
        .await;
    let count = min3(&status);
    assert_eq!(
        (&count["on_record"], &count["used"]),
        (&json!(1), &json!("declared")),
        "{count}"
    );
    assert!(!cites(&status, "MIN-3"), "{}", status["assessment"]);
    app.stop().await;
}

/// Waits until the adapter received revision `revision` of the lead.
async fn eventually_revision(app: &TestApp, lead_id: &str, revision: i64) {
    crate::police::eventually("the adapter received the new revision", || async {
        let status: Value = app
            .get_lead(Agency::Land, lead_id)
            .await
            .json()
            .await
            .unwrap();
        status["timeline"].as_array().is_some_and(|timeline| {
            timeline.iter().any(|entry| {
                entry["event"] == "received_by_police" && entry["revision"] == revision
            })
        })
    })
    .await;
}

#[tokio::test]
async fn earlier_penalty_leads_raise_a_later_leads_count_on_postgres_and_kafka() {
    counts_penalties_from_records(Backend::Real).await;
}

#[tokio::test]
async fn earlier_penalty_leads_raise_a_later_leads_count_in_the_embedded_default() {
    counts_penalties_from_records(Backend::Embedded).await;
}

// ---------------------------------------------------------------------------------------------
// The store's index
// ---------------------------------------------------------------------------------------------

fn penalty_lead(lead_id: LeadId, revision: i64, kind: &str, uscc: &str) -> IncomingLead {
    let document = json!({
        "kind": kind,
        "subjects": [
            {"type": "organization", "name": "某石料厂", "uscc": uscc},
            {"type": "person", "name": "刘某", "id_number": "37030319900307001x"}
        ],
        "facts": {"mineral": "建筑用石料", "value_cny": 1000, "in_restricted_zone": false, "prior_penalties_2y": 0},
        "penalty": {"decision_no": format!("罚{revision}"), "decided_at": "2026-06-30T09:30:00+08:00", "fine_cny": 1}
    });
    IncomingLead {
        lead_id,
        revision,
        agency: "land".into(),
        lead_type: "land.illegal_mining".into(),
        kind: kind.into(),
        case_id: format!("CASE-{lead_id}"),
        division_code: "370302".into(),
        summary: "非法采矿".into(),
        document,
        content_sha256: format!("{revision:064}"),
        assessment: json!({"priority": "low"}),
        priority: "low".into(),
    }
}

fn to_district() -> Routed {
    Routed {
        routes: vec![Route {
            unit: "370302".into(),
            sink: "inbox",
        }],
        forwarding_task: false,
    }
}

async fn execute(store: &Store, sql: &str) {
    match store.db() {
        DbBackend::Postgres(pool) => {
            sqlx::raw_sql(sql).execute(pool).await.unwrap();
        }
        DbBackend::Sqlite(pool) => {
            sqlx::raw_sql(sql).execute(pool).await.unwrap();
        }
    }
}

/// The backfill statement of migration 0103 for `dialect`, as the migration runs it.
fn backfill_sql(dialect: &str) -> String {
    let path = format!(
        "{}/migrations/police/{dialect}/0103_penalty_subjects.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find("INSERT INTO police_penalty_subjects")
        .expect("the migration backfills");
    text[start..].to_owned()
}

#[tokio::test]
async fn the_index_reads_each_case_at_its_latest_revision_and_refuses_an_unreadable_one() {
    let dir = tempfile::tempdir().unwrap();
    for (dialect, url) in [
        ("postgres", fresh_postgres_database().await),
        ("sqlite", fresh_sqlite_url(dir.path())),
    ] {
        let store = Store::connect(&url, 2, &MIGRATIONS).await.unwrap();
        let police = PoliceStore::new(
            store.clone(),
            "test.receipts.v1".into(),
            Clocks::load(&DeadlineSettings::default()).unwrap(),
        );
        let (kept, withdrawn, other) = (LeadId::generate(), LeadId::generate(), LeadId::generate());
        let batch = vec![
            (penalty_lead(kept, 1, "penalty", COMPANY), to_district()),
            (
                penalty_lead(withdrawn, 1, "penalty", COMPANY),
                to_district(),
            ),
            (
                penalty_lead(other, 1, "penalty", "91370303MA3C4B2D1E"),
                to_district(),
            ),
        ];
        police.record_leads(&batch, Utc::now()).await.unwrap();
        let company = vec![format!("uscc:{COMPANY}")];
        let found = |records: Vec<leadbridge::police::penalties::NamedPenalty>| {
            let mut ids: Vec<LeadId> = records.iter().map(|(record, _)| record.lead_id).collect();
            ids.sort();
            ids
        };
        let mut both = vec![kept, withdrawn];
        both.sort();
        assert_eq!(
            found(police.penalties_naming(&company).await.unwrap()),
            both,
            "{dialect}"
        );
        // The person is named by all three, upper-cased.
        let person = vec!["id:37030319900307001X".to_owned()];
        assert_eq!(
            police.penalties_naming(&person).await.unwrap().len(),
            3,
            "{dialect}"
        );

        // Revision 2 of `withdrawn` is a clue: the case no longer counts.
        police
            .record_lead(
                &penalty_lead(withdrawn, 2, "clue", COMPANY),
                &to_district(),
                Utc::now(),
            )
            .await
            .unwrap();
        assert_eq!(
            found(police.penalties_naming(&company).await.unwrap()),
            [kept],
            "{dialect}"
        );

        // The migration's backfill rebuilds the index from the stored documents.
        execute(&store, "DELETE FROM police_penalty_subjects").await;
        assert!(police.penalties_naming(&company).await.unwrap().is_empty());
        execute(&store, &backfill_sql(dialect)).await;
        assert_eq!(
            found(police.penalties_naming(&company).await.unwrap()),
            [kept],
            "{dialect}: the backfill"
        );
        assert_eq!(
            police.penalties_naming(&person).await.unwrap().len(),
            2,
            "{dialect}: the backfill upper-cases ID numbers"
        );

        // A stored penalty whose penalty block was lost is an error naming its row.
        execute(
            &store,
            &format!(
                "UPDATE police_leads SET document = '{{\"subjects\": [], \"penalty\": null}}' WHERE lead_id = '{kept}'"
            ),
        )
        .await;
        let error = police.penalties_naming(&company).await.unwrap_err();
        assert!(
            matches!(error, StoreError::Corrupt(_)),
            "{dialect}: {error}"
        );
        let text = error.to_string();
        assert!(
            text.contains(&kept.to_string()) && text.contains("penalty block"),
            "{dialect}: {text}"
        );
        store.close().await;
    }
}
