//! The outbox under a backlog: the claim's cost is bounded by what it claims, and pruning
//! deletes only published rows nobody needs.

use chrono::{Duration, Utc};
use leadbridge::hub::store::publication::HubOutbox;
use leadbridge::police::store::PoliceOutbox;
use leadbridge::shared::config::RelaySettings;
use leadbridge::shared::outbox::claim_statement;
use leadbridge::shared::outbox::OutboxOwner;
use leadbridge::shared::relay::Relay;
use leadbridge::shared::store::{DbTime, Dialect, Migrations, Store};
use leadbridge::shared::telemetry::Metrics;
use sqlx::{Connection, Row};

use crate::helpers::{
    analyzed_plan, fresh_postgres_database, fresh_sqlite_url, rows_examined, typed_param,
};

const BACKLOG: i64 = 12_000;
const CLAIM: i64 = 500;

#[tokio::test]
async fn a_claim_examines_rows_in_proportion_to_its_size_not_to_a_backlog_with_stale_statistics() {
    let url = fresh_postgres_database().await;
    let store = leadbridge::hub::store::connect(&url, 2).await.unwrap();
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    // Statistics of an empty outbox, as after any idle period, and kept that way.
    for sql in [
        "ALTER TABLE outbox SET (autovacuum_enabled = false)",
        "ALTER TABLE leads SET (autovacuum_enabled = false)",
        "ANALYZE outbox",
        "ANALYZE leads",
    ] {
        sqlx::query(sql).execute(&mut db).await.unwrap();
    }
    let created = "2026-11-26T08:00:00.000000Z";
    sqlx::query(
        "INSERT INTO leads (lead_id, agency, case_id, lead_type, kind, current_revision, status, created_at, updated_at) \
         SELECT gen_random_uuid(), 'environment', 'backlog-' || g, 'x', 'lead', 1, 'accepted', \
         $1::timestamptz, $1::timestamptz \
         FROM generate_series(1, $2::bigint) g",
    )
    .bind(created)
    .bind(BACKLOG)
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO outbox (event_id, lead_id, revision, topic, payload, headers, created_at, next_attempt_at) \
         SELECT gen_random_uuid()::text, lead_id, 1, 'test.leads.environment.v1', '\\x7b7d'::bytea, \
         '[]'::jsonb, $1::timestamptz, $1::timestamptz FROM leads",
    )
    .bind(created)
    .execute(&mut db)
    .await
    .unwrap();

    let now = Utc::now();
    let statement = claim_statement(Dialect::Postgres)
        .replace("$1", "'explain'")
        .replace(
            "$2",
            &format!("'{}'", DbTime::new(now + Duration::minutes(2)).text()),
        )
        .replace("$3", &format!("'{}'", DbTime::new(now).text()))
        .replace("$4", &CLAIM.to_string());
    let plan = analyzed_plan(&mut db, &statement).await;
    let root = &plan;
    assert_eq!(root["Actual Rows"], CLAIM, "the claim claims a full batch");
    let examined = rows_examined(root);
    // A few rows per claimed row (candidate, probe, update); the quadratic plan examined
    // millions (every waiting row once per candidate).
    assert!(
        examined <= (10 * CLAIM) as f64,
        "the claim examined {examined} rows for {CLAIM} claimed out of {BACKLOG}: {plan:#}"
    );

    // And the store's own claim takes that batch, oldest first.
    let claimed = store
        .claim_outbox("relay-test", CLAIM, now, now + Duration::minutes(2))
        .await
        .unwrap();
    assert_eq!(claimed.len() as i64, CLAIM);
    assert!(claimed.windows(2).all(|pair| pair[0].id < pair[1].id));
}

#[tokio::test]
async fn the_sqlite_claim_finds_earlier_messages_of_a_lead_through_the_waiting_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = leadbridge::hub::store::connect(&fresh_sqlite_url(dir.path()), 1)
        .await
        .unwrap();
    let sql = format!("EXPLAIN QUERY PLAN {}", claim_statement(Dialect::Sqlite));
    let now = DbTime::new(Utc::now()).text();
    let details: Vec<String> = sqlx::query(&sql)
        .bind("explain")
        .bind(&now)
        .bind(&now)
        .bind(CLAIM)
        .fetch_all(store.inspection_pool().await.unwrap())
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String, _>("detail").unwrap())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("INDEX outbox_unpublished_by_lead (lead_id=?)")),
        "{details:#?}"
    );
}

/// Inserts a lead with one outbox row per `(revision, published_at, failed_at)`.
async fn lead_with_rows(
    store: &Store,
    schema: Role,
    status: &str,
    current_revision: i64,
    rows: &[(i64, Option<String>, Option<String>)],
) -> String {
    let lead_id = uuid::Uuid::new_v4().to_string();
    let created = DbTime::new(Utc::now() - Duration::days(30)).text();
    let dialect = store.dialect();
    let [id, time] = [("$1", "UUID"), ("$4", "TIMESTAMPTZ")]
        .map(|(param, native)| typed_param(dialect, param, native));
    if schema == Role::Hub {
        sqlx::query(&format!(
            "INSERT INTO leads (lead_id, agency, case_id, lead_type, kind, current_revision, status, created_at, updated_at) \
             VALUES ({id}, 'environment', $1, 'x', 'lead', $2, $3, {time}, {time})",
        ))
        .bind(&lead_id)
        .bind(current_revision)
        .bind(status)
        .bind(&created)
        .execute(store.inspection_pool().await.unwrap())
        .await
        .unwrap();
    }
    let [id, headers, created_at, published, failed] = [
        ("$2", "UUID"),
        ("$5", "JSONB"),
        ("$6", "TIMESTAMPTZ"),
        ("$7", "TIMESTAMPTZ"),
        ("$8", "TIMESTAMPTZ"),
    ]
    .map(|(param, native)| typed_param(dialect, param, native));
    for (revision, published_at, failed_at) in rows {
        sqlx::query(&format!(
            "INSERT INTO outbox (event_id, lead_id, revision, topic, payload, headers, created_at, next_attempt_at, published_at, failed_at) \
             VALUES ($1, {id}, $3, 'test.leads.environment.v1', $4, {headers}, {created_at}, {created_at}, {published}, {failed})",
        ))
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(&lead_id)
        .bind(revision)
        .bind(b"{}".to_vec())
        .bind(r#"[["schema_id","urn:leadbridge:schema:lead:pollution-discharge:v1"]]"#)
        .bind(&created)
        .bind(published_at.clone())
        .bind(failed_at.clone())
        .execute(store.inspection_pool().await.unwrap())
        .await
        .unwrap();
    }
    lead_id
}

async fn rows_of(store: &Store, lead_id: &str) -> Vec<i64> {
    sqlx::query("SELECT revision FROM outbox WHERE CAST(lead_id AS TEXT) = $1 ORDER BY id")
        .bind(lead_id)
        .fetch_all(store.inspection_pool().await.unwrap())
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get("revision").unwrap())
        .collect()
}

#[tokio::test]
async fn the_relay_prunes_old_published_rows_and_keeps_young_waiting_failed_and_needed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut stores = Vec::new();
    for schema in [Role::Hub, Role::Police] {
        let migrations = schema.migrations();
        stores.push((
            schema,
            Store::connect(&fresh_postgres_database().await, 2, migrations)
                .await
                .unwrap(),
        ));
        stores.push((
            schema,
            Store::connect(&fresh_sqlite_url(dir.path()), 1, migrations)
                .await
                .unwrap(),
        ));
    }
    for (schema, store) in stores {
        let label = format!("{:?} {schema:?}", store.dialect());
        let now = Utc::now();
        let old = Some(DbTime::new(now - Duration::days(8)).text());
        let young = Some(DbTime::new(now - Duration::days(6)).text());
        let receipted = "received_by_police";
        let gone = lead_with_rows(&store, schema, receipted, 1, &[(1, old.clone(), None)]).await;
        let kept_young =
            lead_with_rows(&store, schema, receipted, 1, &[(1, young.clone(), None)]).await;
        let waiting = lead_with_rows(&store, schema, "accepted", 1, &[(1, None, None)]).await;
        let failed = lead_with_rows(
            &store,
            schema,
            "publish_failed",
            1,
            &[(1, None, old.clone())],
        )
        .await;
        // No receipt yet for revision 2: its copy is what a republish sends; revision 1's is not.
        let unreceipted = lead_with_rows(
            &store,
            schema,
            "published",
            2,
            &[(1, old.clone(), None), (2, old.clone(), None)],
        )
        .await;

        let metrics = Metrics::new();
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .create()
            .unwrap();
        let relay = Relay::new(
            store.clone(),
            schema.owner(),
            producer,
            RelaySettings::default(),
            std::sync::Arc::new(tokio::sync::Notify::new()),
            metrics.clone(),
        );
        let pruned = relay.prune(now).await;

        let (expected, label_value) = match schema {
            Role::Hub => (2, "hub"),
            // The adapter has no leads to republish: both old published rows go.
            Role::Police => (3, "police"),
        };
        assert_eq!(pruned, expected, "{label}");
        assert_eq!(
            metrics
                .outbox_pruned
                .with_label_values(&[label_value])
                .get(),
            expected,
            "{label}"
        );
        assert!(rows_of(&store, &gone).await.is_empty(), "{label}");
        assert_eq!(rows_of(&store, &kept_young).await, [1], "{label}");
        assert_eq!(rows_of(&store, &waiting).await, [1], "{label}");
        assert_eq!(rows_of(&store, &failed).await, [1], "{label}");
        match schema {
            Role::Hub => {
                assert_eq!(rows_of(&store, &unreceipted).await, [2], "{label}");
                // The kept copy is enough to republish the lead.
                let republished = store
                    .republish_unreceipted(Duration::seconds(1), now)
                    .await
                    .unwrap();
                assert_eq!(republished, 1, "{label}");
            }
            Role::Police => {
                assert!(rows_of(&store, &unreceipted).await.is_empty(), "{label}")
            }
        }
        // A second pass finds nothing more.
        assert_eq!(relay.prune(now).await, 0, "{label}");
    }
}

/// Whose outbox a test store holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Hub,
    Police,
}

impl Role {
    fn migrations(self) -> &'static Migrations {
        match self {
            Role::Hub => &leadbridge::hub::store::MIGRATIONS,
            Role::Police => &leadbridge::police::store::MIGRATIONS,
        }
    }

    fn owner(self) -> std::sync::Arc<dyn OutboxOwner> {
        match self {
            Role::Hub => std::sync::Arc::new(HubOutbox {
                republish_after: Duration::minutes(10),
            }),
            Role::Police => std::sync::Arc::new(PoliceOutbox),
        }
    }
}

/// Relays never wait for each other nor take each other's rows: a row another relay's
/// transaction holds is skipped. Shown without relying on two claims meeting by chance: an
/// open transaction holds one lead's row, and a claim made meanwhile returns the other lead's
/// row and comes back (a claim that waited for the held row would never return while it is
/// held; the timeout only turns that wait into a failure).
#[tokio::test]
async fn a_claim_skips_rows_another_transaction_holds_instead_of_waiting_for_them() {
    let url = fresh_postgres_database().await;
    let store = leadbridge::hub::store::connect(&url, 4).await.unwrap();
    let held = lead_with_rows(&store, Role::Hub, "accepted", 1, &[(1, None, None)]).await;
    let free = lead_with_rows(&store, Role::Hub, "accepted", 1, &[(1, None, None)]).await;
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    let locked = sqlx::query("SELECT id FROM outbox WHERE CAST(lead_id AS TEXT) = $1 FOR UPDATE")
        .bind(&held)
        .fetch_all(&mut holder)
        .await
        .unwrap();
    assert_eq!(locked.len(), 1);

    let lease_until = Utc::now() + Duration::seconds(60);
    let claimed = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        store.claim_outbox("relay-b", 10, Utc::now(), lease_until),
    )
    .await
    .expect("the claim waited for a row another transaction holds")
    .unwrap();
    let leads: Vec<String> = claimed.iter().map(|m| m.lead_id.to_string()).collect();
    assert_eq!(leads, vec![free.clone()], "only the row nobody holds");

    // Released, the row is claimed by the next claim, and the other stays with relay-b.
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    let claimed = store
        .claim_outbox("relay-c", 10, Utc::now(), lease_until)
        .await
        .unwrap();
    let leads: Vec<String> = claimed.iter().map(|m| m.lead_id.to_string()).collect();
    assert_eq!(leads, vec![held], "the released row, once");
    store.close().await;
}
