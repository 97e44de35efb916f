//! One storage suite, run against PostgreSQL and SQLite alike.

use chrono::{Duration, Utc};
use leadbridge::contract::lead::{Agency, LeadId, ValidatedLead};
use leadbridge::contract::validate::Validator;
use leadbridge::hub::ingest::lead_event;
use leadbridge::hub::store::leads::LeadToStore;
use leadbridge::hub::store::publication::HubOutbox;
use leadbridge::hub::store::{Acceptance, ConflictReason};
use leadbridge::shared::audit;
use leadbridge::shared::outbox::PublishedMessage;
use leadbridge::shared::store::{Dialect, Store};
use serde_json::{json, Value};

use crate::helpers::{
    fresh_postgres_database, fresh_sqlite_url, sample_lead, typed_param, unique_case_id,
};

async fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = leadbridge::hub::store::connect(&fresh_sqlite_url(dir.path()), 1)
        .await
        .unwrap();
    let postgres = leadbridge::hub::store::connect(&fresh_postgres_database().await, 4)
        .await
        .unwrap();
    assert_eq!(sqlite.dialect(), Dialect::Sqlite);
    assert_eq!(postgres.dialect(), Dialect::Postgres);
    vec![(postgres, None), (sqlite, Some(dir))]
}

fn validated(lead: Value) -> ValidatedLead {
    Validator::built_in()
        .unwrap()
        .validate(Agency::Environment, lead, Utc::now())
        .unwrap()
}

async fn accept(store: &Store, lead: &ValidatedLead) -> Acceptance {
    let factory = |lead_id: LeadId| lead_event(lead, lead_id, "test.leads.environment.v1");
    let item = LeadToStore {
        lead,
        new_lead_id: LeadId::generate(),
        message: &factory,
    };
    store
        .accept_leads(&[item], Utc::now())
        .await
        .unwrap()
        .pop()
        .unwrap()
}

#[tokio::test]
async fn acceptance_replay_conflict_and_revisions_behave_the_same_on_both_databases() {
    for (store, _dir) in stores().await {
        let dialect = store.dialect();
        let lead = sample_lead(&unique_case_id());
        let Acceptance::Accepted {
            lead_id,
            revision: 1,
            ..
        } = accept(&store, &validated(lead.clone())).await
        else {
            panic!("{dialect:?}: first submission not accepted")
        };
        assert!(
            matches!(accept(&store, &validated(lead.clone())).await, Acceptance::Replayed { lead_id: id, .. } if id == lead_id),
            "{dialect:?}"
        );

        let mut changed = lead.clone();
        changed["summary"] = json!("changed");
        assert_eq!(
            accept(&store, &validated(changed)).await,
            Acceptance::Conflict {
                lead_id,
                reason: ConflictReason::DifferentContent { revision: 1 }
            },
            "{dialect:?}"
        );

        let mut second = lead.clone();
        second["source"]["revision"] = json!(3);
        assert!(
            matches!(accept(&store, &validated(second)).await, Acceptance::Accepted { lead_id: id, revision: 3, .. } if id == lead_id),
            "{dialect:?}"
        );
        let mut stale = lead.clone();
        stale["source"]["revision"] = json!(2);
        assert_eq!(
            accept(&store, &validated(stale)).await,
            Acceptance::Conflict {
                lead_id,
                reason: ConflictReason::StaleRevision {
                    revision: 2,
                    current: 3
                }
            },
            "{dialect:?}"
        );

        let view = store
            .lead_for_agency(lead_id, Agency::Environment)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(view.revision, 3);
        assert_eq!(view.status, "accepted");
        assert!(
            store
                .lead_for_agency(lead_id, Agency::Land)
                .await
                .unwrap()
                .is_none(),
            "{dialect:?}"
        );
        assert_eq!(
            store.outbox_backlog().await.unwrap().0,
            2,
            "{dialect:?}: one message per accepted revision"
        );
        assert_eq!(
            audit::verify(&store).await.unwrap().entries,
            2,
            "{dialect:?}"
        );
    }
}

#[tokio::test]
async fn outbox_leases_keep_relays_apart_and_expire_for_crashed_ones() {
    for (store, _dir) in stores().await {
        let dialect = store.dialect();
        for _ in 0..4 {
            accept(&store, &validated(sample_lead(&unique_case_id()))).await;
        }
        let now = Utc::now();
        let first = store
            .claim_outbox("relay-a", 3, now, now + Duration::seconds(60))
            .await
            .unwrap();
        let second = store
            .claim_outbox("relay-b", 3, now, now + Duration::seconds(60))
            .await
            .unwrap();
        assert_eq!(first.len(), 3, "{dialect:?}");
        assert_eq!(
            second.len(),
            1,
            "{dialect:?}: only the unclaimed row is left"
        );
        assert!(
            first.iter().all(|a| second.iter().all(|b| a.id != b.id)),
            "{dialect:?}"
        );

        // relay-a "crashes"; after its lease, relay-c may take the rows.
        let later = now + Duration::seconds(61);
        let taken_over = store
            .claim_outbox("relay-c", 10, later, later + Duration::seconds(60))
            .await
            .unwrap();
        assert_eq!(
            taken_over.len(),
            4,
            "{dialect:?}: every expired lease is claimable"
        );

        // relay-a comes back and tries to mark its old claim: the lease is no longer its own.
        let stale = vec![PublishedMessage {
            id: first[0].id,
            partition: 0,
            offset: 1,
        }];
        assert_eq!(
            store
                .mark_published(&hub_outbox(), "relay-a", &first, &stale, later)
                .await
                .unwrap(),
            0,
            "{dialect:?}"
        );
        let current = vec![PublishedMessage {
            id: first[0].id,
            partition: 0,
            offset: 7,
        }];
        assert_eq!(
            store
                .mark_published(&hub_outbox(), "relay-c", &taken_over, &current, later)
                .await
                .unwrap(),
            1,
            "{dialect:?}"
        );
        assert_eq!(store.outbox_backlog().await.unwrap().0, 3, "{dialect:?}");
    }
}

#[tokio::test]
async fn later_revisions_wait_for_earlier_ones_of_the_same_lead() {
    for (store, _dir) in stores().await {
        let dialect = store.dialect();
        let lead = sample_lead(&unique_case_id());
        accept(&store, &validated(lead.clone())).await;
        let mut second = lead;
        second["source"]["revision"] = json!(2);
        accept(&store, &validated(second)).await;
        let now = Utc::now();
        let claimed = store
            .claim_outbox("relay-a", 10, now, now + Duration::seconds(60))
            .await
            .unwrap();
        assert_eq!(
            claimed.len(),
            1,
            "{dialect:?}: revision 2 waits for revision 1"
        );
        assert_eq!(claimed[0].revision, 1);
        let published = vec![PublishedMessage {
            id: claimed[0].id,
            partition: 0,
            offset: 0,
        }];
        store
            .mark_published(&hub_outbox(), "relay-a", &claimed, &published, now)
            .await
            .unwrap();
        let next = store
            .claim_outbox("relay-a", 10, now, now + Duration::seconds(60))
            .await
            .unwrap();
        assert_eq!(next.len(), 1, "{dialect:?}");
        assert_eq!(next[0].revision, 2);
    }
}

fn hub_outbox() -> HubOutbox {
    HubOutbox {
        republish_after: chrono::Duration::minutes(10),
    }
}

/// Stored values are read back as what was written or refused with the row named: a damaged
/// feedback body, assessment or decision time is an error, never `null` or "now".
#[tokio::test]
async fn a_stored_value_that_does_not_parse_is_an_error_naming_its_row() {
    for (store, _dir) in stores().await {
        let label = format!("{:?}", store.dialect());
        let Acceptance::Accepted { lead_id, .. } =
            accept(&store, &validated(sample_lead(&unique_case_id()))).await
        else {
            panic!("{label}: the lead is accepted");
        };
        let pool = store.inspection_pool().await.unwrap();
        // Valid JSON of the wrong shape fits a native JSONB column too; the store still
        // refuses to read it as a timeline event, and names the lead.
        sqlx::query(&format!(
            "UPDATE timeline_events SET details = {} WHERE CAST(lead_id AS TEXT) = $2",
            typed_param(store.dialect(), "$1", "JSONB")
        ))
        .bind("[\"not\", \"an object\"]")
        .bind(lead_id.to_string())
        .execute(pool)
        .await
        .unwrap();
        let error = store
            .lead_for_agency(lead_id, Agency::Environment)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&lead_id.to_string()) && error.contains("details"),
            "{label}: {error}"
        );
        let damage_assessment = sqlx::query(
            "UPDATE leads SET assessment = 'not json' WHERE CAST(lead_id AS TEXT) = $1",
        )
        .bind(lead_id.to_string())
        .execute(pool)
        .await;
        match store.dialect() {
            // A native JSONB column: the database itself refuses what is not JSON.
            Dialect::Postgres => {
                let error =
                    damage_assessment.expect_err("PostgreSQL refuses a non-JSON assessment");
                assert!(error.to_string().contains("json"), "{label}: {error}");
                assert_eq!(
                    store.police_view(lead_id).await.unwrap().0,
                    None,
                    "{label}: the refused write left the assessment as it was"
                );
            }
            // Text: the damage is stored, and reading it back is an error naming the row.
            Dialect::Sqlite => {
                assert_eq!(damage_assessment.unwrap().rows_affected(), 1, "{label}");
                let error = store.police_view(lead_id).await.unwrap_err().to_string();
                assert!(
                    error.contains(&lead_id.to_string()) && error.contains("assessment"),
                    "{label}: {error}"
                );
            }
        }
        let marked =
            sqlx::query("UPDATE leads SET status = 'not_filed' WHERE CAST(lead_id AS TEXT) = $1")
                .bind(lead_id.to_string())
                .execute(pool)
                .await
                .unwrap();
        assert_eq!(marked.rows_affected(), 1, "{label}");

        // A not_filed lead without its decision on the timeline (repaired to read again): the
        // reconsideration window cannot be computed, and is not silently opened from now.
        sqlx::query(&format!(
            "UPDATE timeline_events SET details = {} WHERE CAST(lead_id AS TEXT) = $2",
            typed_param(store.dialect(), "$1", "JSONB")
        ))
        .bind("{}")
        .bind(lead_id.to_string())
        .execute(pool)
        .await
        .unwrap();
        let clocks = leadbridge::contract::deadlines::Clocks::load(&Default::default()).unwrap();
        let refused = store
            .request_reconsideration(
                lead_id,
                Agency::Environment,
                "理由",
                Utc::now(),
                &clocks,
                |_| panic!("nothing is sent"),
            )
            .await;
        match refused {
            Err(leadbridge::hub::store::ReconsiderationError::Store(error)) => {
                let error = error.to_string();
                assert!(
                    error.contains("its timeline holds no decision"),
                    "{label}: {error}"
                )
            }
            other => panic!("{label}: expected a store error, got {other:?}"),
        }

        let damage_feedback = sqlx::query(&format!(
            "INSERT INTO feedback (agency, lead_id, revision, event, at, body) \
             VALUES ('environment', {}, 1, 'delivered', '2026-12-01T00:00:00.000000Z', '{{broken')",
            typed_param(store.dialect(), "$1", "UUID")
        ))
        .bind(lead_id.to_string())
        .execute(pool)
        .await;
        match store.dialect() {
            Dialect::Postgres => {
                let error = damage_feedback.expect_err("PostgreSQL refuses a non-JSON body");
                assert!(error.to_string().contains("json"), "{label}: {error}");
                let (items, _) = store.feedback(Agency::Environment, 0, 10).await.unwrap();
                assert!(items.is_empty(), "{label}: nothing was stored: {items:?}");
            }
            Dialect::Sqlite => {
                damage_feedback.unwrap();
                let error = store
                    .feedback(Agency::Environment, 0, 10)
                    .await
                    .unwrap_err()
                    .to_string();
                assert!(error.contains("feedback row"), "{label}: {error}");
            }
        }
    }
}

/// Both roles' databases hold the one outbox and ledger schema, with their own tables after
/// it; a database whose schema history this build does not know (such as one a pre-release
/// build made, before the schemas were consolidated) is refused at start-up with what to do,
/// never migrated over.
#[tokio::test]
async fn a_database_with_an_unknown_schema_history_is_refused_not_migrated_over() {
    let dir = tempfile::tempdir().unwrap();
    let targets = [
        ("postgres", fresh_postgres_database().await),
        ("sqlite", fresh_sqlite_url(dir.path())),
    ];
    for (label, url) in targets {
        let hub = leadbridge::hub::store::connect(&url, 2).await.unwrap();
        let versions: Vec<(i64,)> =
            sqlx::query_as("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(hub.inspection_pool().await.unwrap())
                .await
                .unwrap();
        assert_eq!(
            versions,
            vec![(1,), (2,), (3,), (4,), (101,), (102,)],
            "{label}"
        );
        for table in [
            "outbox",
            "audit_head",
            "log_queue",
            "log_entries",
            "log_head",
            "leads",
            "feedback",
        ] {
            let (rows,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(hub.inspection_pool().await.unwrap())
                .await
                .unwrap_or_else(|error| panic!("{label}: {table}: {error}"));
            assert!(rows <= 1, "{label}: {table}");
        }

        // A migration that differs from this build's: refused, naming the version.
        sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 101")
            .bind(vec![0u8; 48])
            .execute(hub.inspection_pool().await.unwrap())
            .await
            .unwrap();
        hub.close().await;
        let error = leadbridge::hub::store::connect(&url, 2)
            .await
            .err()
            .expect("a changed migration is refused");
        assert!(
            matches!(
                error,
                leadbridge::shared::store::StoreError::UnknownSchema { version: 101 }
            ),
            "{label}: {error}"
        );
        assert!(
            error.to_string().contains("new database"),
            "{label}: {error}"
        );

        // A migration this build does not have at all (an old history's version 4).
        let police_url = match label {
            "postgres" => fresh_postgres_database().await,
            _ => fresh_sqlite_url(dir.path()),
        };
        let police = Store::connect(&police_url, 2, &leadbridge::police::store::MIGRATIONS)
            .await
            .unwrap();
        let versions: Vec<(i64,)> =
            sqlx::query_as("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(police.inspection_pool().await.unwrap())
                .await
                .unwrap();
        assert_eq!(
            versions,
            vec![(1,), (2,), (3,), (4,), (101,), (102,), (103,), (104,)],
            "{label}"
        );
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99, 'a migration of a future build', TRUE, $1, 1)",
        )
        .bind(vec![0u8; 48])
        .execute(police.inspection_pool().await.unwrap())
        .await
        .unwrap();
        police.close().await;
        let error = Store::connect(&police_url, 2, &leadbridge::police::store::MIGRATIONS)
            .await
            .err()
            .expect("an unknown migration is refused");
        assert!(
            matches!(
                error,
                leadbridge::shared::store::StoreError::UnknownSchema { version: 99 }
            ),
            "{label}: {error}"
        );
    }
}

/// The leads row, timeline and feedback a store holds of `lead_id`, times aside except the
/// decision time.
async fn receipt_state(store: &Store, lead_id: LeadId) -> (Value, Vec<String>, Vec<Value>) {
    let lead = store
        .lead_for_agency(lead_id, Agency::Environment)
        .await
        .unwrap()
        .expect("the lead");
    let (assessment, deadlines) = store.police_view(lead_id).await.unwrap();
    let (feedback, _) = store.feedback(Agency::Environment, 0, 100).await.unwrap();
    let decided: (Option<String>,) = sqlx::query_as(
        "SELECT CAST(decided_at AS TEXT) FROM leads WHERE CAST(lead_id AS TEXT) = $1",
    )
    .bind(lead_id.to_string())
    .fetch_one(store.inspection_pool().await.unwrap())
    .await
    .unwrap();
    (
        json!({
            "status": lead.status,
            "assessment": assessment,
            "deadlines": deadlines,
            "decided": decided.0.is_some(),
        }),
        lead.timeline
            .iter()
            .map(|event| {
                format!(
                    "{} r{} {}",
                    event.event,
                    event.revision,
                    Value::Object(event.details.clone())
                )
            })
            .collect(),
        feedback
            .into_iter()
            .filter(|item| item["lead_id"] == json!(lead_id))
            .collect(),
    )
}

/// A poll's receipts applied together leave exactly what applying them one after another
/// would — a step that does not move the status forward, a receipt about an older revision,
/// an event id sent twice, a receipt about an unknown lead — on both databases.
#[tokio::test]
async fn receipts_applied_together_leave_what_one_by_one_would() {
    use leadbridge::contract::events::{DecisionDetails, ReceiptEvent, ReceiptStep};
    use leadbridge::hub::store::ReceiptOutcome;
    for ((together, _a), (one_by_one, _b)) in stores().await.into_iter().zip(stores().await) {
        let label = format!("{:?}", together.dialect());
        let case_id = unique_case_id();
        let mut revised = sample_lead(&case_id);
        let mut lead_ids = Vec::new();
        for store in [&together, &one_by_one] {
            let Acceptance::Accepted { lead_id, .. } =
                accept(store, &validated(sample_lead(&case_id))).await
            else {
                panic!("{label}: accepted");
            };
            revised["source"]["revision"] = json!(2);
            accept(store, &validated(revised.clone())).await;
            lead_ids.push(lead_id);
        }
        let receipt = |lead_id: LeadId, revision: i64, step: ReceiptStep| ReceiptEvent {
            event_id: uuid::Uuid::now_v7(),
            schema: leadbridge::contract::events::RECEIPT_SCHEMA.into(),
            lead_id,
            revision,
            at: Utc::now(),
            actor: "police-adapter".into(),
            step,
        };
        let decision = |name: &str| DecisionDetails {
            unit: "370303".into(),
            decision: name.into(),
            reason: Some("理由".into()),
            police_case_no: None,
            deadlines: json!([{"name": "reconsideration_request", "due": "2026-12-09T00:00:00Z"}]),
        };
        // One time for both, so that the hub's `notified_at` agrees too.
        let now = Utc::now();
        for (store, lead_id) in [(&together, lead_ids[0]), (&one_by_one, lead_ids[1])] {
            let received = receipt(
                lead_id,
                2,
                ReceiptStep::ReceivedByPolice {
                    units: vec!["370303".into()],
                    assessment: json!({"criminal": true}),
                    deadlines: json!([{"name": "police_decision"}]),
                    forwarding_task: None,
                },
            );
            let receipts = vec![
                receipt(
                    lead_id,
                    1,
                    ReceiptStep::Delivered {
                        unit: "370303".into(),
                        sink: "inbox".into(),
                        cms_ref: "OLD".into(),
                    },
                ),
                received.clone(),
                receipt(
                    lead_id,
                    2,
                    ReceiptStep::Delivered {
                        unit: "370303".into(),
                        sink: "inbox".into(),
                        cms_ref: "CMS-1".into(),
                    },
                ),
                received,
                receipt(LeadId::generate(), 1, ReceiptStep::Filed(decision("filed"))),
                receipt(lead_id, 2, ReceiptStep::NotFiled(decision("not_filed"))),
                // Behind `not_filed`: recorded, but the status stays.
                receipt(
                    lead_id,
                    2,
                    ReceiptStep::Delivered {
                        unit: "370300".into(),
                        sink: "inbox".into(),
                        cms_ref: "CMS-2".into(),
                    },
                ),
            ];
            let outcomes = if std::ptr::eq(store, &together) {
                store.apply_receipts(&receipts, now).await.unwrap()
            } else {
                let mut outcomes = Vec::new();
                for receipt in &receipts {
                    outcomes.push(store.apply_receipt(receipt, now).await.unwrap());
                }
                outcomes
            };
            use ReceiptOutcome::*;
            assert_eq!(
                outcomes,
                [
                    Applied,
                    Applied,
                    Applied,
                    AlreadyApplied,
                    UnknownLead,
                    Applied,
                    Applied
                ],
                "{label}"
            );
        }
        let (state, timeline, feedback) = receipt_state(&together, lead_ids[0]).await;
        let (state_b, timeline_b, feedback_b) = receipt_state(&one_by_one, lead_ids[1]).await;
        assert_eq!(state, state_b, "{label}");
        assert_eq!(state["status"], "not_filed", "{label}");
        assert_eq!(state["decided"], true, "{label}");
        // Every field of every timeline event, details included.
        assert_eq!(timeline, timeline_b, "{label}");
        // And, independently of apply_receipt (which shares apply_receipts' code), what the
        // receipts were: the hub's own events, then one per applied receipt in order.
        let events: Vec<String> = timeline
            .iter()
            .map(|event| event.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            events[events.len() - 5..],
            [
                "delivered r1",
                "received_by_police r2",
                "delivered r2",
                "not_filed r2",
                "delivered r2"
            ],
            "{label}: {timeline:?}"
        );
        assert!(
            timeline.iter().any(|event| event.contains("CMS-2")),
            "{label}"
        );
        let events = |items: &[Value]| -> Vec<(Value, Value)> {
            items
                .iter()
                .map(|item| (item["event"].clone(), item["revision"].clone()))
                .collect()
        };
        assert_eq!(events(&feedback), events(&feedback_b), "{label}");
        assert_eq!(feedback.len(), 5, "{label}");
        audit::verify(&together).await.unwrap();
    }
}
