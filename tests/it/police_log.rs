//! The police log's copy at the hub (supervision contract §2, §4), on PostgreSQL with Kafka and
//! in the embedded default: every entry and checkpoint the adapter signs reaches the hub over
//! the receipts topic, the copy holds exactly the adapter's entries and verifies against the
//! police key, shipping everything again changes nothing, and the evidence bundle of a lead
//! that went agency → police → decision → reconsideration holds both logs' entries and
//! verifies offline with only the public keys — and fails after any change to its JSON value.
//! What the copy refuses (a forged, reordered, gapped or diverging shipment; a checkpoint by
//! another key or of another tree) is tested against the copy directly.

use std::collections::BTreeSet;

use chrono::{Duration, TimeZone, Utc};
use leadbridge::contract::events::ShippedEntry;
use leadbridge::contract::lead::{Agency, LeadId};
use leadbridge::shared::audit::copy::{append_shipped, store_shipped_checkpoint, CopyError};
use leadbridge::shared::audit::log::{self, LogTables};
use leadbridge::shared::identity::{Principal, SupervisorScope};
use leadbridge::shared::store::Store;
use leadbridge::shared::tlog::checkpoint::{Checkpoint, LogKey, VerifierKey};
use leadbridge::shared::tlog::entry::LogEntry;
use leadbridge::shared::tlog::evidence::{verify_bundle, Bundle, Keys};
use leadbridge::shared::tlog::verify::root_of;
use leadbridge::Roles;
use serde_json::{json, Value};

use crate::helpers::{
    app, fresh_postgres_database, fresh_sqlite_url, sample_lead, unique_case_id, Backend, TestApp,
};
use crate::police::{decide, eventually};

fn supervisor(app: &TestApp) -> reqwest::Client {
    app.pki.client(Some(&Principal::Supervisor {
        name: "王检察官".into(),
        scope: SupervisorScope::Procuratorate,
    }))
}

async fn get_json(client: &reqwest::Client, app: &TestApp, path: &str) -> (u16, Value) {
    let response = client.get(app.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn actions_of(bundle: &Bundle, log: &str) -> BTreeSet<String> {
    bundle
        .entries
        .iter()
        .filter(|item| item.log == log)
        .map(|item| item.entry["action"].as_str().unwrap().to_owned())
        .collect()
}

/// Every leaf of a JSON value, by JSON pointer.
fn leaf_pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                leaf_pointers(
                    inner,
                    format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (index, inner) in items.iter().enumerate() {
                leaf_pointers(inner, format!("{at}/{index}"), out);
            }
        }
        _ => out.push(at),
    }
}

/// A different value of the same kind, so the change is to the value, not to its shape alone.
fn altered(value: &Value) -> Value {
    match value {
        Value::String(text) if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) => {
            let mut bytes = hex::decode(text).unwrap();
            bytes[31] ^= 1;
            Value::String(hex::encode(bytes))
        }
        Value::String(text) if text.contains('\n') => {
            // A checkpoint: change one character of its body.
            Value::String(text.replacen('\n', "\n ", 1))
        }
        Value::String(text) => Value::String(format!("{text}x")),
        Value::Number(number) => json!(number.as_i64().unwrap_or(0) + 1),
        Value::Bool(flag) => Value::Bool(!flag),
        Value::Null => json!("x"),
        other => json!([other.clone()]),
    }
}

async fn the_police_log_reaches_the_hub_and_a_bundle_from_both_logs_verifies(backend: Backend) {
    let app = app(backend)
        .roles(Roles::ALL)
        .with_settings(|settings| settings.transparency.checkpoint_interval_secs = 1)
        .spawn()
        .await;
    let supervisor = supervisor(&app);
    let police = app.police_store.as_ref().unwrap().store().clone();
    let hub = app.store.clone();

    // agency → police → decision → reconsideration → answer.
    let response = app
        .post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
        .await;
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    let lead_id = receipt["lead_id"].as_str().unwrap().to_owned();
    app.wait_for_status(Agency::Environment, &lead_id, "delivered")
        .await;
    let response = decide(
        &app,
        "370303",
        &lead_id,
        json!({"decision": "not_filed", "reason": "危废数量未达追诉标准"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    app.wait_for_status(Agency::Environment, &lead_id, "not_filed")
        .await;
    let response = app
        .client(Agency::Environment)
        .post(app.url(&format!("/v1/leads/{lead_id}/reconsideration")))
        .json(&json!({"reason": "补充鉴定报告显示数量已超过3吨"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    eventually("the adapter has the reconsideration request", || async {
        decide(
            &app,
            "370303",
            &lead_id,
            json!({"decision": "filed", "police_case_no": "淄公(张)立字[2026]1201号"}),
        )
        .await
        .status()
            == 200
    })
    .await;
    app.wait_for_status(Agency::Environment, &lead_id, "reconsidered")
        .await;

    // The police's answer reaches the bundle once the police signed a checkpoint over it and
    // shipped both.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let bundle = loop {
        let response = supervisor
            .get(app.url(&format!("/supervise/v1/leads/{lead_id}/evidence")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let fetched: Bundle = response.json().await.unwrap();
        if actions_of(&fetched, "police").contains("lead.reconsideration_answered") {
            break fetched;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the bundle never held the police's answer: {:?}",
            actions_of(&fetched, "police")
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    let (status, keys) = get_json(&supervisor, &app, "/supervise/v1/keys").await;
    assert_eq!(status, 200);
    let keys: Keys = serde_json::from_value(keys).unwrap();
    assert!(keys.police.is_some(), "the hub serves the police key");

    let hub_actions = actions_of(&bundle, "hub");
    for action in [
        "access.export",
        "lead.received",
        "lead.published",
        "lead.receipt_applied",
        "lead.reconsideration_requested",
    ] {
        assert!(hub_actions.contains(action), "{action}: {hub_actions:?}");
    }
    let police_actions = actions_of(&bundle, "police");
    for action in [
        "lead.received_by_police",
        "lead.assessed",
        "lead.routed",
        "lead.delivered",
        "lead.decided",
        "lead.reconsideration_requested",
        "lead.reconsideration_answered",
    ] {
        assert!(
            police_actions.contains(action),
            "{action}: {police_actions:?}"
        );
    }
    assert!(bundle
        .entries
        .iter()
        .all(|item| item.entry["lead_id"] == lead_id));
    let verified = verify_bundle(&bundle, &keys).unwrap();
    assert_eq!(verified.entries, bundle.entries.len());

    // Offline, as the supervisor's command, with only the bundle and the keys.
    let dir = tempfile::tempdir().unwrap();
    let bundle_file = dir.path().join("bundle.json");
    let keys_file = dir.path().join("keys.json");
    std::fs::write(&bundle_file, serde_json::to_vec(&bundle).unwrap()).unwrap();
    std::fs::write(&keys_file, serde_json::to_vec(&keys).unwrap()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_leadbridge"))
        .args(["audit", "verify-evidence"])
        .arg(&bundle_file)
        .arg("--keys")
        .arg(&keys_file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Every change to the bundle's value — any entry's field, hash, proof element or
    // checkpoint — makes it fail.
    let value = serde_json::to_value(&bundle).unwrap();
    let mut pointers = Vec::new();
    leaf_pointers(&value, String::new(), &mut pointers);
    let mut tried = 0;
    for pointer in pointers
        .iter()
        .filter(|pointer| pointer.as_str() != "/lead_id")
    {
        let mut changed = value.clone();
        let leaf = changed.pointer_mut(pointer).unwrap();
        *leaf = altered(leaf);
        // A change that no longer reads as a bundle is refused by the reader; the rest by
        // the verifier.
        if let Ok(changed) = serde_json::from_value::<Bundle>(changed) {
            assert!(
                verify_bundle(&changed, &keys).is_err(),
                "a bundle with {pointer} changed still verifies"
            );
        }
        tried += 1;
    }
    assert!(tried > 100, "only {tried} changes tried");
    // The bundle's lead: every entry is then about another lead.
    let mut other = bundle.clone();
    other.lead_id = LeadId::generate().to_string();
    assert!(verify_bundle(&other, &keys).is_err());

    // The served police log: its checkpoint is the police's, proofs lead to it.
    let police_key = VerifierKey::parse(keys.police.as_ref().unwrap()).unwrap();
    let response = supervisor
        .get(app.url("/supervise/v1/logs/police/checkpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let note = response.text().await.unwrap();
    let checkpoint =
        leadbridge::shared::tlog::checkpoint::verify(&note, &police_key, "leadbridge/local/police")
            .unwrap();
    let (status, entries) = get_json(
        &supervisor,
        &app,
        &format!(
            "/supervise/v1/logs/police/entries?start=0&end={}",
            checkpoint.size
        ),
    )
    .await;
    assert_eq!(status, 200, "{entries}");
    let leaves: Vec<[u8; 32]> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let hash = leadbridge::shared::tlog::entry::leaf_hash(
                &leadbridge::shared::tlog::entry::jcs(&item["entry"]),
            );
            assert_eq!(hex::encode(hash), item["leaf_hash"]);
            hash
        })
        .collect();
    assert_eq!(
        root_of(&leaves),
        checkpoint.root,
        "the served entries make the police's root"
    );
    let response = supervisor
        .post(app.url("/supervise/v1/logs/police/checkpoints"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the hub never signs for the police");

    // The copy holds the adapter's own entries, byte for byte, and verifies with its key.
    let copied = log::size(&hub, LogTables::POLICE_COPY).await.unwrap();
    let own = log::entries(&police, LogTables::OWN, 0, copied)
        .await
        .unwrap();
    let copy = log::entries(&hub, LogTables::POLICE_COPY, 0, copied)
        .await
        .unwrap();
    assert_eq!(own, copy);
    let verified = log::verify(
        &hub,
        LogTables::POLICE_COPY,
        &police_key,
        "leadbridge/local/police",
    )
    .await
    .unwrap();
    assert!(
        verified.checkpoints >= 1 && verified.entries == copied,
        "{verified:?}"
    );

    // Shipping everything again (a shipper that lost its cursor) leaves the copy as it was,
    // each entry held once.
    let checkpoints_before: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM police_log_checkpoints")
        .fetch_one(hub.inspection_pool().await.unwrap())
        .await
        .unwrap();
    let shipped = leadbridge::police::ship::shipped(&police).await.unwrap();
    sqlx::query("UPDATE log_shipped SET entries = 0, checkpoint_size = 0")
        .execute(police.inspection_pool().await.unwrap())
        .await
        .unwrap();
    eventually("everything is shipped again", || async {
        let now = leadbridge::police::ship::shipped(&police).await.unwrap();
        now.entries >= shipped.entries && now.checkpoint_size >= shipped.checkpoint_size
    })
    .await;
    // One police entry more, after the shipments sent again: once the copy holds it, the hub
    // has taken (or refused) everything shipped before it on the same partition.
    let response = crate::police::investigator(&app, "370303")
        .get(app.url(&format!("/police/v1/leads/{lead_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    eventually(
        "the copy holds the entry after the shipments sent again",
        || async {
            log::sequence_all(&police).await.unwrap();
            let own = log::size(&police, LogTables::OWN).await.unwrap();
            own > shipped.entries && log::size(&hub, LogTables::POLICE_COPY).await.unwrap() == own
        },
    )
    .await;
    assert_eq!(
        dead_letters(&app).await,
        0,
        "every entry and checkpoint shipped again was recognised, none refused"
    );
    let verified = log::verify(
        &hub,
        LogTables::POLICE_COPY,
        &police_key,
        "leadbridge/local/police",
    )
    .await
    .unwrap();
    let checkpoints_after: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM police_log_checkpoints")
        .fetch_one(hub.inspection_pool().await.unwrap())
        .await
        .unwrap();
    assert!(checkpoints_after.0 >= checkpoints_before.0);
    assert_eq!(
        log::entries(&hub, LogTables::POLICE_COPY, 0, verified.entries)
            .await
            .unwrap(),
        log::entries(&police, LogTables::OWN, 0, verified.entries)
            .await
            .unwrap(),
        "the copy is still the adapter's log, entry for entry"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_police_log_reaches_the_hub_and_a_bundle_from_both_logs_verifies_on_postgres_and_kafka()
{
    the_police_log_reaches_the_hub_and_a_bundle_from_both_logs_verifies(Backend::Real).await;
}

#[tokio::test]
async fn the_police_log_reaches_the_hub_and_a_bundle_from_both_logs_verifies_in_the_embedded_default(
) {
    the_police_log_reaches_the_hub_and_a_bundle_from_both_logs_verifies(Backend::Embedded).await;
}

/// How many messages the dead-letter topic holds (its partitions' watermarks).
async fn dead_letters(app: &TestApp) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let bootstrap = app.bootstrap_servers.clone();
    let topic = leadbridge::shared::kafka::Topics::new(app.settings.kafka.topic_prefix.clone())
        .deadletter();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        let timeout = std::time::Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout).unwrap();
        metadata.topics()[0]
            .partitions()
            .iter()
            .map(|partition| {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, partition.id(), timeout)
                    .unwrap();
                high - low
            })
            .sum()
    })
    .await
    .unwrap()
}

/// `count` entries as the adapter's log would hold them, from `start`.
fn police_entries(start: u64, count: u64) -> Vec<ShippedEntry> {
    let lead = LeadId::generate();
    let at = Utc.with_ymd_and_hms(2026, 11, 20, 1, 0, 0).unwrap();
    (start..start + count)
        .map(|index| {
            let entry = LogEntry {
                index,
                at: at + Duration::seconds(index as i64),
                actor: "police-adapter".into(),
                action: "lead.delivered".into(),
                lead_id: Some(lead),
                revision: Some(1),
                details: json!({"unit": "370303", "sink": "inbox"}),
            };
            ShippedEntry {
                index,
                entry: entry.to_value(),
                leaf_hash: hex::encode(entry.leaf_hash()),
            }
        })
        .collect()
}

fn checkpoint_of(key: &LogKey, origin: &str, entries: &[ShippedEntry]) -> String {
    let leaves: Vec<[u8; 32]> = entries
        .iter()
        .map(|entry| hex::decode(&entry.leaf_hash).unwrap().try_into().unwrap())
        .collect();
    key.sign(&Checkpoint {
        origin: origin.into(),
        size: entries.len() as u64,
        root: root_of(&leaves),
    })
}

async fn copy_size(store: &Store) -> u64 {
    log::size(store, LogTables::POLICE_COPY).await.unwrap()
}

async fn the_copy_takes_only_what_it_can_check(store: Store) {
    let origin = "leadbridge/local/police";
    let police_key = LogKey::generate("leadbridge-local-police");
    let verifier = VerifierKey::parse(&police_key.verifier_key()).unwrap();
    let entries = police_entries(0, 5);

    let copied = append_shipped(&store, LogTables::POLICE_COPY, &entries[..3])
        .await
        .unwrap();
    assert_eq!((copied.appended, copied.duplicates), (3, 0));
    // Shipped again, with the next ones: the held ones are recognised, the new appended.
    let copied = append_shipped(&store, LogTables::POLICE_COPY, &entries[1..5])
        .await
        .unwrap();
    assert_eq!((copied.appended, copied.duplicates), (2, 2));
    assert_eq!(copy_size(&store).await, 5);

    let refused = |error: CopyError, class: &str| {
        assert_eq!(error.class(), class, "{error}");
    };
    // A gap.
    refused(
        append_shipped(&store, LogTables::POLICE_COPY, &police_entries(6, 1))
            .await
            .unwrap_err(),
        "log_gap",
    );
    // An entry the copy holds, changed: the copy never takes the other version.
    let mut diverging = entries[4].clone();
    diverging.entry["details"]["unit"] = json!("370302");
    let entry = LogEntry {
        index: 4,
        at: Utc.with_ymd_and_hms(2026, 11, 20, 1, 0, 4).unwrap(),
        actor: "police-adapter".into(),
        action: "lead.delivered".into(),
        lead_id: LeadId::parse(diverging.entry["lead_id"].as_str().unwrap()),
        revision: Some(1),
        details: json!({"unit": "370302", "sink": "inbox"}),
    };
    diverging.leaf_hash = hex::encode(entry.leaf_hash());
    refused(
        append_shipped(&store, LogTables::POLICE_COPY, &[diverging])
            .await
            .unwrap_err(),
        "log_conflict",
    );
    // Entries at the next index that are not what their hash says, or not in the log's form.
    let next = police_entries(5, 1).remove(0);
    // (why, the change, whether the leaf hash is recomputed so only the form is at fault)
    type Forge = Box<dyn Fn(&mut ShippedEntry)>;
    let forgeries: Vec<(&str, Forge, bool)> = vec![
        (
            "a changed field",
            Box::new(|e| e.entry["actor"] = json!("someone")),
            false,
        ),
        (
            "another hash",
            Box::new(|e| e.leaf_hash = "00".repeat(32)),
            false,
        ),
        (
            "an index that is not its place",
            Box::new(|e| e.entry["index"] = json!(6)),
            true,
        ),
        (
            "an extra field",
            Box::new(|e| e.entry["note"] = json!("x")),
            true,
        ),
        (
            "a fractional number",
            Box::new(|e| e.entry["details"]["ratio"] = json!(1.5)),
            true,
        ),
        (
            "a time not in UTC microseconds",
            Box::new(|e| e.entry["at"] = json!("2026-11-20T09:00:05+08:00")),
            true,
        ),
        (
            "no details",
            Box::new(|e| {
                e.entry.as_object_mut().unwrap().remove("details");
            }),
            true,
        ),
        ("not an object", Box::new(|e| e.entry = json!([1, 2])), true),
    ];
    for (why, forge, rehash) in forgeries {
        let mut forged = next.clone();
        forge(&mut forged);
        if rehash {
            let bytes = leadbridge::shared::tlog::entry::jcs(&forged.entry);
            forged.leaf_hash = hex::encode(leadbridge::shared::tlog::entry::leaf_hash(&bytes));
        }
        match append_shipped(&store, LogTables::POLICE_COPY, &[forged]).await {
            Err(error) => assert_eq!(error.class(), "bad_log_entry", "{why}: {error}"),
            Ok(copied) => panic!("{why}: the copy took it ({copied:?})"),
        }
    }
    assert_eq!(copy_size(&store).await, 5, "nothing refused was kept");

    // Checkpoints: only the police key's, only of the copy's tree, only over what it holds.
    let good = checkpoint_of(&police_key, origin, &entries);
    let other_key = LogKey::generate("leadbridge-local-police");
    let now = Utc::now();
    let store_checkpoint = |note: String| {
        let store = store.clone();
        let verifier = verifier.clone();
        async move {
            store_shipped_checkpoint(
                &store,
                LogTables::POLICE_COPY,
                &note,
                &verifier,
                origin,
                now,
            )
            .await
        }
    };
    refused(
        store_checkpoint(checkpoint_of(&other_key, origin, &entries))
            .await
            .unwrap_err(),
        "bad_checkpoint",
    );
    refused(
        store_checkpoint(checkpoint_of(&police_key, "leadbridge/local/hub", &entries))
            .await
            .unwrap_err(),
        "bad_checkpoint",
    );
    let mut split = entries.clone();
    split[2] = police_entries(2, 1).remove(0);
    refused(
        store_checkpoint(checkpoint_of(&police_key, origin, &split))
            .await
            .unwrap_err(),
        "bad_checkpoint",
    );
    refused(
        store_checkpoint(checkpoint_of(&police_key, origin, &police_entries(0, 6)))
            .await
            .unwrap_err(),
        "bad_checkpoint",
    );
    // A valid signature line under a body that was changed after signing.
    let tampered = good.replacen("\n5\n", "\n4\n", 1);
    refused(
        store_checkpoint(tampered).await.unwrap_err(),
        "bad_checkpoint",
    );
    assert!(store_checkpoint(good.clone()).await.unwrap(), "stored");
    assert!(!store_checkpoint(good.clone()).await.unwrap(), "held once");
    let smaller = checkpoint_of(&police_key, origin, &entries[..3]);
    assert!(
        store_checkpoint(smaller).await.unwrap(),
        "an earlier size is of the same tree"
    );

    let verified = log::verify(&store, LogTables::POLICE_COPY, &verifier, origin)
        .await
        .unwrap();
    assert_eq!((verified.entries, verified.checkpoints), (5, 2));
    // The copy is append-only like the log itself.
    let pool = store.inspection_pool().await.unwrap();
    for statement in [
        "UPDATE police_log_entries SET actor = 'x' WHERE idx = 0",
        "DELETE FROM police_log_entries WHERE idx = 4",
        "DELETE FROM police_log_checkpoints",
        "UPDATE police_log_hashes SET hash = 'x'",
    ] {
        assert!(
            sqlx::query(statement).execute(pool).await.is_err(),
            "{statement}"
        );
    }
    store.close().await;
}

#[tokio::test]
async fn the_copy_takes_only_what_it_can_check_on_postgres() {
    let url = fresh_postgres_database().await;
    let store = leadbridge::hub::store::connect(&url, 2).await.unwrap();
    the_copy_takes_only_what_it_can_check(store).await;
    crate::helpers::drop_test_database(&url).await;
}

#[tokio::test]
async fn the_copy_takes_only_what_it_can_check_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = leadbridge::hub::store::connect(&fresh_sqlite_url(dir.path()), 2)
        .await
        .unwrap();
    the_copy_takes_only_what_it_can_check(store).await;
}
