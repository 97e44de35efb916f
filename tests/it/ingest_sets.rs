//! Set-based ingest: a batch is resolved as if its leads came one after another, with a
//! number of statements that does not grow with the batch, and concurrent single submissions
//! share transactions. On both backends.

use futures::future::join_all;
use leadbridge::contract::lead::Agency;
use leadbridge::shared::audit;
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{app, sample_lead, unique_case_id, Backend, TestApp};

const BACKENDS: [Backend; 2] = [Backend::Real, Backend::Embedded];

/// Revision `revision` of `case`; `variant` changes the content.
fn lead(case: &str, revision: i64, variant: &str) -> Value {
    let mut lead = sample_lead(case);
    lead["source"]["revision"] = json!(revision);
    lead["summary"] = json!(format!("废水总排口总铅浓度超标 {variant}"));
    lead
}

async fn post_batch(app: &TestApp, leads: &[Value]) -> Vec<Value> {
    let response = app
        .client(Agency::Environment)
        .post(app.url("/v1/leads/batch"))
        .json(&json!({ "leads": leads }))
        .send()
        .await
        .expect("the hub answers");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["results"].as_array().unwrap().clone()
}

/// A single POST's answer in the shape of a batch item: status, lead id, receipt time, problem.
async fn post_single(app: &TestApp, lead: &Value) -> Value {
    let response = app.post_lead(Agency::Environment, lead).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    if status < 300 {
        json!({"status": status, "lead_id": body["lead_id"], "revision": body["revision"], "received_at": body["received_at"]})
    } else {
        json!({"status": status, "lead_id": body["lead_id"], "problem": body})
    }
}

/// What a case's answers say, without its ids and times: status, conflict detail, and which
/// answer's receipt (same revision and time) a replay repeats.
fn shape(answers: &[Value]) -> Vec<Value> {
    answers
        .iter()
        .map(|answer| {
            let status = answer["status"].as_u64().unwrap();
            let repeats = (status == 200).then(|| {
                answers
                    .iter()
                    .position(|other| {
                        other["status"] == 202
                            && other["revision"] == answer["revision"]
                            && other["received_at"] == answer["received_at"]
                    })
                    .map_or(json!("an earlier receipt"), |index| json!(index))
            });
            json!({
                "status": status,
                "detail": answer["problem"]["detail"],
                "repeats_answer": repeats,
            })
        })
        .collect()
}

/// A lead's stored rows, without ids, hashes and times: revisions with their status, the
/// ingest's timeline events, outbox rows and audit entries, each in order.
/// Read after the relay published everything: publication changes a current revision's
/// status and appends to the ledger, which `audit::verify` must not see halfway.
async fn stored_rows(app: &TestApp, lead_id: &str) -> Value {
    app.wait_until_outbox_drained().await;
    let pool = app.store.inspection_pool().await.unwrap();
    let revisions: Vec<Value> = sqlx::query(
        "SELECT revision, status FROM lead_revisions WHERE CAST(lead_id AS TEXT) = $1 \
         ORDER BY revision",
    )
    .bind(lead_id)
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|row| {
        json!([
            row.get::<i64, _>("revision"),
            row.get::<String, _>("status")
        ])
    })
    .collect();
    let timeline: Vec<Value> = sqlx::query(
        "SELECT event, revision, actor, CAST(details AS TEXT) AS details FROM timeline_events \
         WHERE CAST(lead_id AS TEXT) = $1 AND event IN ('received', 'superseded') ORDER BY id",
    )
    .bind(lead_id)
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|row| {
        json!([
            row.get::<String, _>("event"),
            row.get::<i64, _>("revision"),
            row.get::<String, _>("actor"),
            // jsonb's text form has its own spacing and key order: compare as JSON.
            serde_json::from_str::<Value>(&row.get::<String, _>("details")).unwrap(),
        ])
    })
    .collect();
    let outbox: Vec<i64> =
        sqlx::query("SELECT revision FROM outbox WHERE CAST(lead_id AS TEXT) = $1 ORDER BY id")
            .bind(lead_id)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get("revision"))
            .collect();
    let audit: Vec<Value> = sqlx::query(
        "SELECT action, revision FROM log_trail WHERE CAST(lead_id AS TEXT) = $1 AND action = 'lead.received' ORDER BY at",
    )
    .bind(lead_id)
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|row| json!([row.get::<String, _>("action"), row.get::<i64, _>("revision")]))
    .collect();
    let lead = sqlx::query(
        "SELECT current_revision, lead_type, kind FROM leads WHERE CAST(lead_id AS TEXT) = $1",
    )
    .bind(lead_id)
    .fetch_one(pool)
    .await
    .unwrap();
    json!({
        "current_revision": lead.get::<i64, _>("current_revision"),
        "lead_type": lead.get::<String, _>("lead_type"),
        "revisions": revisions,
        "timeline": timeline,
        "outbox": outbox,
        "audit": audit,
    })
}

/// One scenario: leads of one case as (revision, variant), sent before the batch one by one
/// (`before`) and then in the batch (`batch`), with the statuses the batch must get.
struct Scenario {
    name: &'static str,
    before: &'static [(i64, &'static str)],
    batch: &'static [(i64, &'static str)],
    statuses: &'static [u64],
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "revision 1 then revision 2",
        before: &[],
        batch: &[(1, "a"), (2, "b")],
        statuses: &[202, 202],
    },
    Scenario {
        name: "the same content twice",
        before: &[],
        batch: &[(1, "a"), (1, "a")],
        statuses: &[202, 200],
    },
    Scenario {
        name: "conflicting content twice",
        before: &[],
        batch: &[(1, "a"), (1, "b")],
        statuses: &[202, 409],
    },
    Scenario {
        name: "stale, replayed and superseded revisions",
        before: &[],
        batch: &[(2, "a"), (1, "a"), (2, "a"), (3, "c"), (2, "b"), (3, "c")],
        statuses: &[202, 409, 200, 202, 409, 200],
    },
    Scenario {
        name: "a case stored before the batch",
        before: &[(1, "a")],
        batch: &[(1, "a"), (2, "b"), (1, "a"), (1, "z"), (3, "c")],
        statuses: &[200, 202, 200, 409, 202],
    },
];

#[tokio::test]
async fn a_batch_with_a_case_twice_answers_and_stores_as_sequential_submissions_would() {
    for backend in BACKENDS {
        let app = app(backend).spawn().await;
        for scenario in SCENARIOS {
            let context = format!("{backend:?}, {}", scenario.name);
            let (batch_case, single_case) = (unique_case_id(), unique_case_id());

            // Arrange: the same history for two cases.
            let mut batch_before = Vec::new();
            let mut single_answers = Vec::new();
            for (revision, variant) in scenario.before {
                batch_before.push(post_single(&app, &lead(&batch_case, *revision, variant)).await);
                single_answers
                    .push(post_single(&app, &lead(&single_case, *revision, variant)).await);
            }

            // Act: one case in one batch, the other one lead after another.
            let batch: Vec<Value> = scenario
                .batch
                .iter()
                .map(|(revision, variant)| lead(&batch_case, *revision, variant))
                .collect();
            let batch_answers = post_batch(&app, &batch).await;
            for (revision, variant) in scenario.batch {
                single_answers
                    .push(post_single(&app, &lead(&single_case, *revision, variant)).await);
            }

            // Assert: the same answers...
            let statuses: Vec<u64> = batch_answers
                .iter()
                .map(|answer| answer["status"].as_u64().unwrap())
                .collect();
            assert_eq!(statuses, scenario.statuses, "{context}: {batch_answers:?}");
            let batch_all: Vec<Value> =
                batch_before.iter().chain(&batch_answers).cloned().collect();
            assert_eq!(shape(&batch_all), shape(&single_answers), "{context}");
            let lead_ids: Vec<&Value> = batch_all.iter().map(|answer| &answer["lead_id"]).collect();
            assert!(
                lead_ids
                    .iter()
                    .all(|id| id.is_string() && *id == lead_ids[0]),
                "{context}: one lead id for the case: {lead_ids:?}"
            );
            // ...a replay repeats the first receipt, including one from before the batch...
            for answer in batch_answers.iter().filter(|a| a["status"] == 200) {
                assert!(
                    batch_all.iter().any(|first| first["status"] == 202
                        && first["received_at"] == answer["received_at"]),
                    "{context}: replay {answer} repeats no receipt"
                );
            }
            // ...and the same rows.
            let single_id = single_answers[0]["lead_id"].as_str().unwrap();
            let batch_id = lead_ids[0].as_str().unwrap();
            assert_eq!(
                stored_rows(&app, batch_id).await,
                stored_rows(&app, single_id).await,
                "{context}"
            );
        }
        received_entries(&app).await;
        app.stop().await;
    }
}

/// Audit entries of accepted leads (the relay adds its own as it publishes).
async fn received_entries(app: &TestApp) -> i64 {
    app.wait_until_outbox_drained().await;
    audit::verify(&app.store).await.unwrap();
    sqlx::query("SELECT COUNT(*) AS n FROM log_trail WHERE action = 'lead.received'")
        .fetch_one(app.store.inspection_pool().await.unwrap())
        .await
        .unwrap()
        .get("n")
}

/// Statements the ingest transactions sent while `act` ran.
async fn statements_during<F: std::future::Future<Output = Vec<Value>>>(
    app: &TestApp,
    act: F,
) -> (u64, Vec<Value>) {
    let before = app.store.ingest_counters().statements();
    let answers = act.await;
    (app.store.ingest_counters().statements() - before, answers)
}

#[tokio::test]
async fn a_batch_of_500_takes_a_bounded_number_of_statements() {
    for backend in BACKENDS {
        let app = app(backend).spawn().await;
        let cases: Vec<String> = (0..500).map(|_| unique_case_id()).collect();
        let new: Vec<Value> = cases.iter().map(|case| lead(case, 1, "a")).collect();
        let revisions: Vec<Value> = cases.iter().map(|case| lead(case, 2, "b")).collect();

        let (new_statements, answers) = statements_during(&app, post_batch(&app, &new)).await;
        assert!(answers.iter().all(|a| a["status"] == 202), "{backend:?}");
        let (revision_statements, answers) =
            statements_during(&app, post_batch(&app, &revisions)).await;
        assert!(answers.iter().all(|a| a["status"] == 202), "{backend:?}");

        // BEGIN, two reads, one write per table, three for the ledger, COMMIT: a handful,
        // where one lead after another took 5 per new lead and 8 per revision.
        for (what, statements) in [("new", new_statements), ("revisions", revision_statements)] {
            assert!(
                (4..=16).contains(&statements),
                "{backend:?}: 500 {what} leads took {statements} statements"
            );
        }
        let superseded: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM lead_revisions WHERE status = 'superseded' AND revision = 1",
        )
        .fetch_one(app.store.inspection_pool().await.unwrap())
        .await
        .unwrap()
        .get("n");
        assert_eq!(superseded, 500, "{backend:?}");
        assert_eq!(received_entries(&app).await, 1000, "{backend:?}");
        app.stop().await;
    }
}

#[tokio::test]
async fn concurrent_single_posts_share_transactions_and_are_each_answered() {
    for backend in BACKENDS {
        let app = app(backend)
            .with_settings(|settings| settings.limits.group_commit_wait_ms = 50)
            .spawn()
            .await;
        // 60 distinct cases, one case sent twice with the same content and one sent twice
        // with different content: 64 submissions at once.
        let (replayed, conflicting) = (unique_case_id(), unique_case_id());
        let mut leads: Vec<Value> = (0..60).map(|_| lead(&unique_case_id(), 1, "a")).collect();
        leads.push(lead(&replayed, 1, "a"));
        leads.push(lead(&replayed, 1, "a"));
        leads.push(lead(&conflicting, 1, "a"));
        leads.push(lead(&conflicting, 1, "b"));

        let commits_before = app.store.ingest_counters().commits();
        let answers = join_all(leads.iter().map(|lead| post_single(&app, lead))).await;
        let commits = app.store.ingest_counters().commits() - commits_before;

        let statuses: Vec<u64> = answers
            .iter()
            .map(|answer| answer["status"].as_u64().unwrap())
            .collect();
        assert!(
            statuses[..60].iter().all(|s| *s == 202),
            "{backend:?}: {statuses:?}"
        );
        let mut distinct: Vec<&Value> = answers[..60].iter().map(|a| &a["lead_id"]).collect();
        distinct.sort_by_key(|id| id.to_string());
        distinct.dedup();
        assert_eq!(distinct.len(), 60, "{backend:?}: one lead per case");
        // Whichever of two submissions of one case arrived first is the accepted one.
        let mut pair = [statuses[60], statuses[61]];
        pair.sort();
        assert_eq!(pair, [200, 202], "{backend:?}: the same content twice");
        assert_eq!(answers[60]["received_at"], answers[61]["received_at"]);
        assert_eq!(answers[60]["lead_id"], answers[61]["lead_id"]);
        let mut pair = [statuses[62], statuses[63]];
        pair.sort();
        assert_eq!(pair, [202, 409], "{backend:?}: different content twice");
        assert_eq!(answers[62]["lead_id"], answers[63]["lead_id"]);

        assert!(
            commits < 64 / 2,
            "{backend:?}: 64 submissions took {commits} transactions"
        );
        assert_eq!(received_entries(&app).await, 62, "{backend:?}");
        app.stop().await;
    }
}

/// Makes the test database refuse (SQLSTATE 22023, a data exception) any revision whose
/// document contains `POISON`, as PostgreSQL refuses data it cannot store.
async fn refuse_poison(app: &TestApp) {
    sqlx::query(
        "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN \
         IF NEW.document LIKE '%POISON%' THEN RAISE EXCEPTION 'poisoned' USING ERRCODE = '22023'; END IF; \
         RETURN NEW; END; $$ LANGUAGE plpgsql",
    )
    .execute(app.store.inspection_pool().await.unwrap())
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON lead_revisions \
         FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    )
    .execute(app.store.inspection_pool().await.unwrap())
    .await
    .unwrap();
}

#[tokio::test]
async fn a_lead_the_database_refuses_fails_alone_in_a_batch_and_in_a_group() {
    // PostgreSQL only: SQLite has no way to raise a data exception from a trigger.
    let app = app(Backend::Real)
        .with_settings(|settings| settings.limits.group_commit_wait_ms = 50)
        .spawn()
        .await;
    refuse_poison(&app).await;
    let leads = [
        lead(&unique_case_id(), 1, "a"),
        lead(&unique_case_id(), 1, "POISON"),
        lead(&unique_case_id(), 1, "a"),
    ];

    let batch = post_batch(&app, &leads).await;
    let statuses: Vec<&Value> = batch.iter().map(|answer| &answer["status"]).collect();
    assert_eq!(
        statuses,
        [&json!(202), &json!(400), &json!(202)],
        "{batch:?}"
    );

    let fresh: Vec<Value> = [1, 0, 2]
        .into_iter()
        .map(|i| {
            let mut lead = leads[i].clone();
            lead["source"]["case_id"] = json!(unique_case_id());
            lead
        })
        .collect();
    let commits_before = app.store.ingest_counters().commits();
    let singles = join_all(fresh.iter().map(|lead| post_single(&app, lead))).await;
    let statuses: Vec<&Value> = singles.iter().map(|answer| &answer["status"]).collect();
    assert_eq!(
        statuses,
        [&json!(400), &json!(202), &json!(202)],
        "{singles:?}"
    );
    assert!(app.store.ingest_counters().commits() > commits_before);

    for answer in batch.iter().chain(&singles).filter(|a| a["status"] == 202) {
        let lead_id = answer["lead_id"].as_str().unwrap();
        assert_eq!(stored_rows(&app, lead_id).await["outbox"], json!([1]));
    }
    let poisoned: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM lead_revisions WHERE document LIKE '%POISON%'")
            .fetch_one(app.store.inspection_pool().await.unwrap())
            .await
            .unwrap()
            .get("n");
    assert_eq!(poisoned, 0);
    assert_eq!(received_entries(&app).await, 4);
    app.stop().await;
}
