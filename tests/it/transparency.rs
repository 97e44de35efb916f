//! The transparency log in each role's database, on PostgreSQL and SQLite: every ledger entry
//! reaches the log, checkpoints are signed, the database refuses edits, and `audit verify`
//! (the function and the command) names the first entry that was edited, removed, reordered
//! or inserted, and a checkpoint that was altered. A running hub keeps both logs current.

use std::process::Command;

use chrono::Utc;
use serde_json::json;

use leadbridge::contract::lead::{Agency, LeadId};
use leadbridge::shared::audit::log::{self, LogSigner, LogTables};
use leadbridge::shared::audit::{AuditEntry, AuditError, LedgerAppender};
use leadbridge::shared::store::{Dialect, Store};
use leadbridge::shared::tlog::{LogKey, VerifierKey};
use leadbridge::Roles;

use crate::helpers::{app, fresh_postgres_database, sample_lead, unique_case_id, Backend};

fn signer() -> LogSigner {
    LogSigner {
        key: LogKey::generate("leadbridge-test-hub"),
        origin: "leadbridge/test/hub".into(),
    }
}

fn verifier(signer: &LogSigner) -> VerifierKey {
    VerifierKey::parse(&signer.key.verifier_key()).unwrap()
}

/// Appends `count` entries in one transaction, as a state change would.
async fn append(store: &Store, count: usize) {
    let mut tx = store.begin().await.unwrap();
    let mut ledger = LedgerAppender::new();
    for n in 0..count {
        ledger.append(AuditEntry {
            at: Utc::now(),
            actor: "agency:environment".into(),
            action: "lead.received",
            lead_id: Some(LeadId::generate()),
            revision: Some(1),
            details: json!({"n": n, "exceed_multiple": 3.6, "note": "超标"}),
        });
    }
    ledger.finish(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
}

async fn run(store: &Store, sql: &str) {
    sqlx::query(sql)
        .execute(store.inspection_pool().await.unwrap())
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

async fn expect_broken(store: &Store, signer: &LogSigner, index: u64, what: &str) {
    match log::verify(store, LogTables::OWN, &verifier(signer), &signer.origin).await {
        Err(AuditError::Log { index: found, .. }) if found == index => {}
        other => panic!("{:?}: {what} went unnoticed: {other:?}", store.dialect()),
    }
}

async fn expect_sound(store: &Store, signer: &LogSigner, what: &str) {
    if let Err(error) = log::verify(store, LogTables::OWN, &verifier(signer), &signer.origin).await
    {
        panic!("{:?}: {what}: {error}", store.dialect());
    }
}

async fn stores(dir: &std::path::Path) -> Vec<Store> {
    vec![
        leadbridge::hub::store::connect(&fresh_postgres_database().await, 4)
            .await
            .unwrap(),
        leadbridge::hub::store::connect(&format!("sqlite:{}", dir.join("hub.db").display()), 1)
            .await
            .unwrap(),
    ]
}

#[tokio::test]
async fn the_log_holds_every_entry_and_verify_names_the_first_tampered_one_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    for store in stores(dir.path()).await {
        let dialect = store.dialect();
        let signer = signer();
        append(&store, 3).await;
        append(&store, 4).await;
        assert_eq!(log::sequence_all(&store).await.unwrap(), 7, "{dialect:?}");
        let first = log::sign_checkpoint(&store, &signer, Utc::now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.size, 7);
        append(&store, 2).await;
        assert_eq!(log::sequence_all(&store).await.unwrap(), 2);
        let second = log::sign_checkpoint(&store, &signer, Utc::now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.size, 9);
        // Nothing new: no second checkpoint of the same size.
        let again = log::sign_checkpoint(&store, &signer, Utc::now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, second);
        let verified = log::verify(&store, LogTables::OWN, &verifier(&signer), &signer.origin)
            .await
            .unwrap();
        assert_eq!(
            (verified.entries, verified.checkpoints, verified.queued),
            (9, 2, 0)
        );
        // Non-integers were written as decimal strings.
        let entry: (String,) = sqlx::query_as("SELECT entry FROM log_entries WHERE idx = 0")
            .fetch_one(store.inspection_pool().await.unwrap())
            .await
            .unwrap();
        assert!(
            entry.0.contains("\"exceed_multiple\":\"3.6\""),
            "{}",
            entry.0
        );

        let mut refused = vec![
            "UPDATE log_entries SET actor = 'someone-else' WHERE idx = 2",
            "DELETE FROM log_entries WHERE idx = 2",
            "DELETE FROM log_entries",
            "UPDATE log_checkpoints SET note = 'x' WHERE size = 7",
            "DELETE FROM log_hashes WHERE idx = 0",
        ];
        if dialect == Dialect::Postgres {
            // Not even the owner may, without first granting itself the privilege; and the
            // row triggers do not see TRUNCATE, so a statement trigger refuses it.
            refused.extend([
                "TRUNCATE log_entries",
                "TRUNCATE log_hashes",
                "TRUNCATE log_checkpoints",
            ]);
            // The test's role is a superuser, which privileges do not bind, so read the
            // table's access list: its owner (the role that ran the migrations) holds no
            // UPDATE, DELETE or TRUNCATE.
            for table in ["log_entries", "log_hashes", "log_checkpoints"] {
                let held: Vec<(String,)> = sqlx::query_as(&format!(
                    "SELECT a.privilege_type FROM pg_class c, aclexplode(c.relacl) a \
                     WHERE c.relname = '{table}' AND a.grantee = c.relowner"
                ))
                .fetch_all(store.inspection_pool().await.unwrap())
                .await
                .unwrap();
                let held: Vec<&str> = held.iter().map(|(p,)| p.as_str()).collect();
                assert!(
                    held.contains(&"INSERT") && held.contains(&"SELECT"),
                    "{table}: {held:?}"
                );
                for forbidden in ["UPDATE", "DELETE", "TRUNCATE"] {
                    assert!(
                        !held.contains(&forbidden),
                        "{table}'s owner holds {forbidden}: {held:?}"
                    );
                }
            }
            run(&store, "GRANT TRUNCATE ON log_entries TO CURRENT_USER").await;
            assert!(
                sqlx::query("TRUNCATE log_entries")
                    .execute(store.inspection_pool().await.unwrap())
                    .await
                    .is_err(),
                "with the privilege granted back, the trigger still refuses TRUNCATE"
            );
        }
        for statement in refused {
            assert!(
                sqlx::query(statement)
                    .execute(store.inspection_pool().await.unwrap())
                    .await
                    .is_err(),
                "{dialect:?}: the database allowed {statement}"
            );
        }

        // Someone with full control of the database removes the guards.
        let guards: &[&str] = match dialect {
            Dialect::Postgres => &[
                "GRANT UPDATE, DELETE ON log_entries, log_checkpoints TO CURRENT_USER",
                "ALTER TABLE log_entries DISABLE TRIGGER log_entries_append_only",
                "ALTER TABLE log_checkpoints DISABLE TRIGGER log_checkpoints_append_only",
            ],
            Dialect::Sqlite => &[
                "DROP TRIGGER log_entries_no_update",
                "DROP TRIGGER log_entries_no_delete",
                "DROP TRIGGER log_checkpoints_no_update",
            ],
        };
        for statement in guards {
            run(&store, statement).await;
        }

        // An edited column, then an edited entry with its column to match.
        run(
            &store,
            "UPDATE log_entries SET actor = 'agency:water' WHERE idx = 3",
        )
        .await;
        expect_broken(&store, &signer, 3, "an edited column").await;
        run(
            &store,
            "UPDATE log_entries SET actor = 'agency:environment' WHERE idx = 3",
        )
        .await;
        expect_sound(&store, &signer, "the restored column").await;
        run(
            &store,
            "UPDATE log_entries SET actor = 'agency:water', entry = REPLACE(entry, 'agency:environment', 'agency:water') WHERE idx = 3",
        )
        .await;
        expect_broken(&store, &signer, 3, "an edited entry").await;
        run(
            &store,
            "UPDATE log_entries SET actor = 'agency:environment', entry = REPLACE(entry, 'agency:water', 'agency:environment') WHERE idx = 3",
        )
        .await;
        expect_sound(&store, &signer, "the restored entry").await;

        // A leaf hash column that no longer is the entry's hash.
        run(
            &store,
            &format!(
                "UPDATE log_entries SET leaf_hash = '{}' WHERE idx = 2",
                "0".repeat(64)
            ),
        )
        .await;
        expect_broken(&store, &signer, 2, "an edited leaf hash").await;
        let (entry,): (String,) = sqlx::query_as("SELECT entry FROM log_entries WHERE idx = 2")
            .fetch_one(store.inspection_pool().await.unwrap())
            .await
            .unwrap();
        let hash = leadbridge::shared::tlog::entry::leaf_hash(entry.as_bytes());
        run(
            &store,
            &format!(
                "UPDATE log_entries SET leaf_hash = '{}' WHERE idx = 2",
                hex::encode(hash)
            ),
        )
        .await;
        expect_sound(&store, &signer, "the restored leaf hash").await;

        // The tree's own rows: a stored hash changed, one too many, the head moved on.
        let hash_guards: &[&str] = match dialect {
            Dialect::Postgres => &[
                "GRANT UPDATE, DELETE ON log_hashes, log_head TO CURRENT_USER",
                "ALTER TABLE log_hashes DISABLE TRIGGER log_hashes_append_only",
            ],
            Dialect::Sqlite => &[
                "DROP TRIGGER log_hashes_no_update",
                "DROP TRIGGER log_hashes_no_delete",
            ],
        };
        for statement in hash_guards {
            run(&store, statement).await;
        }
        let (stored,): (String,) = sqlx::query_as("SELECT hash FROM log_hashes WHERE idx = 4")
            .fetch_one(store.inspection_pool().await.unwrap())
            .await
            .unwrap();
        run(
            &store,
            &format!(
                "UPDATE log_hashes SET hash = '{}' WHERE idx = 4",
                "0".repeat(64)
            ),
        )
        .await;
        // Stored hash 4 is the node over entries 2 and 3, written with entry 3.
        expect_broken(&store, &signer, 3, "an edited tree hash").await;
        run(
            &store,
            &format!("UPDATE log_hashes SET hash = '{stored}' WHERE idx = 4"),
        )
        .await;
        expect_sound(&store, &signer, "the restored tree hash").await;
        run(
            &store,
            &format!("INSERT INTO log_hashes (idx, hash) VALUES (100000, '{stored}')"),
        )
        .await;
        expect_broken(&store, &signer, 9, "an extra tree hash").await;
        run(&store, "DELETE FROM log_hashes WHERE idx = 100000").await;
        run(&store, "UPDATE log_head SET size = 10 WHERE id = 1").await;
        expect_broken(&store, &signer, 9, "a head past the entries").await;
        run(&store, "UPDATE log_head SET size = 9 WHERE id = 1").await;
        expect_sound(&store, &signer, "the restored head").await;

        // Reordered: entries 4 and 5 swap places.
        run(&store, "UPDATE log_entries SET idx = -1 WHERE idx = 4").await;
        run(&store, "UPDATE log_entries SET idx = 4 WHERE idx = 5").await;
        run(&store, "UPDATE log_entries SET idx = 5 WHERE idx = -1").await;
        expect_broken(&store, &signer, 4, "a reordering").await;
        run(&store, "UPDATE log_entries SET idx = -1 WHERE idx = 4").await;
        run(&store, "UPDATE log_entries SET idx = 4 WHERE idx = 5").await;
        run(&store, "UPDATE log_entries SET idx = 5 WHERE idx = -1").await;
        expect_sound(&store, &signer, "the restored order").await;

        // Removed: entry 6 is moved out of the way (and back).
        run(&store, "UPDATE log_entries SET idx = 1000 WHERE idx = 6").await;
        expect_broken(&store, &signer, 6, "a removal").await;
        run(&store, "UPDATE log_entries SET idx = 6 WHERE idx = 1000").await;
        expect_sound(&store, &signer, "the restored entry 6").await;

        // Inserted: a copy of entry 8 as entry 9, past what the tree holds.
        run(
            &store,
            "INSERT INTO log_entries (idx, at, actor, action, lead_id, revision, entry, leaf_hash) \
             SELECT 9, at, actor, action, lead_id, revision, entry, leaf_hash FROM log_entries WHERE idx = 8",
        )
        .await;
        expect_broken(&store, &signer, 9, "an insertion").await;
        run(&store, "DELETE FROM log_entries WHERE idx = 9").await;
        expect_sound(&store, &signer, "the removed insertion").await;

        // A checkpoint re-signed by another key, then one over another root.
        let forged = LogKey::generate("leadbridge-test-hub").sign(
            &leadbridge::shared::tlog::Checkpoint::parse_body(
                first
                    .note
                    .split("\n\n")
                    .next()
                    .map(|body| format!("{body}\n"))
                    .as_deref()
                    .unwrap(),
            )
            .unwrap(),
        );
        let original = first.note.replace('\'', "''");
        run(
            &store,
            &format!(
                "UPDATE log_checkpoints SET note = '{}' WHERE size = 7",
                forged.replace('\'', "''")
            ),
        )
        .await;
        match log::verify(&store, LogTables::OWN, &verifier(&signer), &signer.origin).await {
            Err(AuditError::Checkpoint { size: 7, .. }) => {}
            other => panic!("{dialect:?}: a forged checkpoint went unnoticed: {other:?}"),
        }
        run(
            &store,
            &format!("UPDATE log_checkpoints SET note = '{original}' WHERE size = 7"),
        )
        .await;
        expect_sound(&store, &signer, "the restored checkpoint").await;
        run(
            &store,
            &format!(
                "UPDATE log_checkpoints SET root = '{}' WHERE size = 9",
                "0".repeat(64)
            ),
        )
        .await;
        match log::verify(&store, LogTables::OWN, &verifier(&signer), &signer.origin).await {
            Err(AuditError::Checkpoint { size: 9, .. }) => {}
            other => panic!("{dialect:?}: an altered checkpoint root went unnoticed: {other:?}"),
        }
        store.close().await;
    }
}

#[tokio::test]
async fn a_running_hub_keeps_both_logs_and_the_command_verifies_them_and_names_a_bad_entry() {
    let mut app = app(Backend::Embedded)
        .roles(Roles::ALL)
        .with_settings(|settings| settings.transparency.checkpoint_interval_secs = 1)
        .spawn()
        .await;
    let response = app
        .post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
        .await;
    assert_eq!(response.status(), 202);
    let receipt: serde_json::Value = response.json().await.unwrap();
    let lead_id = receipt["lead_id"].as_str().unwrap().to_owned();
    app.wait_for_status(Agency::Environment, &lead_id, "delivered")
        .await;
    let data_dir = app.keep_data_dir();
    app.keep_databases();
    let hub_url = app.settings.database_url();
    let police_url = app.settings.police.database_url(&app.settings.data_dir);
    app.stop().await;

    let verify = |log: &str| {
        let url = if log == "hub" { &hub_url } else { &police_url };
        Command::new(env!("CARGO_BIN_EXE_leadbridge"))
            .args([
                "audit",
                "verify",
                "--log",
                log,
                "--database-url",
                url,
                "--data-dir",
            ])
            .arg(data_dir.path())
            .output()
            .expect("the binary runs")
    };
    for log in ["hub", "police"] {
        let output = verify(log);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{log}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains(&format!("{log} log verified")), "{stdout}");
        // Every entry of the lead's steps is in the tree and under the last checkpoint.
        let entries: u64 = stdout
            .split(" entries")
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(entries >= 2, "{log}: {stdout}");
        assert!(
            stdout.contains(&format!("(latest at size {entries})")),
            "{log}: the last checkpoint covers the whole log: {stdout}"
        );
        assert!(
            stdout.contains(", 0 queued"),
            "{log}: stopping sequenced everything: {stdout}"
        );
    }

    // The lead's evidence, written by the command and checked offline by the other.
    let bundle_file = data_dir.path().join("evidence.json");
    let written = Command::new(env!("CARGO_BIN_EXE_leadbridge"))
        .args([
            "audit",
            "evidence",
            &lead_id,
            "--database-url",
            &hub_url,
            "--out",
        ])
        .arg(&bundle_file)
        .arg("--data-dir")
        .arg(data_dir.path())
        // Off the embedded default the hub's key is configured, here as a variable.
        .env(
            "LEADBRIDGE_TRANSPARENCY__HUB_KEY_FILE",
            data_dir.path().join("keys/hub.key"),
        )
        .output()
        .unwrap();
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let key_of = |log: &str| {
        LogKey::load(&data_dir.path().join("keys").join(format!("{log}.key")))
            .unwrap()
            .verifier_key()
    };
    let keys_file = data_dir.path().join("KEYS.json");
    std::fs::write(
        &keys_file,
        json!({"hub": key_of("hub"), "police": key_of("police"), "witnesses": []}).to_string(),
    )
    .unwrap();
    let checked = Command::new(env!("CARGO_BIN_EXE_leadbridge"))
        .args(["audit", "verify-evidence"])
        .arg(&bundle_file)
        .arg("--keys")
        .arg(&keys_file)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains(&format!("lead {lead_id}")),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );

    // The hub's lead.received entry, edited behind the guard's back.
    let store = leadbridge::hub::store::connect(&hub_url, 1).await.unwrap();
    run(&store, "DROP TRIGGER log_entries_no_update").await;
    run(
        &store,
        "UPDATE log_entries SET actor = 'agency:land' WHERE idx = 0",
    )
    .await;
    store.close().await;
    let output = verify("hub");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken at entry 0"), "{stderr}");
}

/// Off the embedded default, each role's signing key is a configured file: a hub on its own
/// database with none configured stops start-up naming the setting, rather than signing with a
/// key of its own that another instance of it would not share; a configured file that is
/// missing stops it naming the path.
#[tokio::test]
async fn a_hub_off_the_embedded_default_needs_its_signing_key_configured() {
    use crate::helpers::{test_settings, TestPki};
    let data_dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let settings = test_settings(Backend::Embedded, data_dir.path(), &pki).await;

    let mut unset = settings.clone();
    unset.transparency.hub_key_file = None;
    let error = leadbridge::Application::build(unset, Roles::HUB)
        .await
        .err()
        .expect("start-up must fail");
    let message = format!("{error:#}");
    assert!(
        message.contains("transparency.hub_key_file is not set"),
        "{message}"
    );

    let mut missing = settings.clone();
    let path = data_dir.path().join("keys/elsewhere.key");
    missing.transparency.hub_key_file = Some(path.clone());
    let error = leadbridge::Application::build(missing, Roles::HUB)
        .await
        .err()
        .expect("start-up must fail");
    let message = format!("{error:#}");
    assert!(message.contains(&path.display().to_string()), "{message}");

    // A key made with `audit keygen` is what it then signs with.
    let made = data_dir.path().join("keys/made.key");
    let output = Command::new(env!("CARGO_BIN_EXE_leadbridge"))
        .args(["audit", "keygen", "--name", "leadbridge-local-hub", "--out"])
        .arg(&made)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        printed.trim(),
        LogKey::load(&made).unwrap().verifier_key(),
        "it prints the verifier key of the key it wrote"
    );
    let again = Command::new(env!("CARGO_BIN_EXE_leadbridge"))
        .args(["audit", "keygen", "--name", "leadbridge-local-hub", "--out"])
        .arg(&made)
        .output()
        .unwrap();
    assert!(!again.status.success(), "a key is never overwritten");
    let mut configured = settings;
    configured.transparency.hub_key_file = Some(made);
    let application = leadbridge::Application::build(configured, Roles::HUB).await;
    assert!(application.is_ok(), "{:#}", application.err().unwrap());
}
