//! Faults on the police side, against real Kafka and PostgreSQL and a fake case-management
//! system the test controls: none loses or duplicates a delivery.

use std::collections::HashSet;
use std::time::Duration;

use leadbridge::contract::lead::Agency;
use leadbridge::police::settings::SinkSettings;
use leadbridge::police::sink::http::HttpSinkSettings;
use leadbridge::shared::identity::Principal;
use leadbridge::{Application, Roles};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

use crate::fake_cms::{Answer, FakeCms, Mode};
use crate::helpers::{
    app, consume, drop_test_database, fresh_postgres_database, header, sample_lead, test_settings,
    unique_case_id, Backend, TestApp, TestPki,
};
use crate::police::eventually;

/// Client certificate files for the adapter's case-management sink, and the sink settings.
fn cms_sink(pki: &TestPki, cms: &FakeCms, dir: &std::path::Path) -> HttpSinkSettings {
    let identity = pki
        .ca
        .issue_client(&Principal::Investigator {
            unit: "adapter".into(),
        })
        .unwrap();
    let cert = dir.join("adapter-client.pem");
    let key = dir.join("adapter-client.key");
    std::fs::write(&cert, identity.cert_pem).unwrap();
    std::fs::write(&key, identity.key_pem).unwrap();
    let ca = dir.join("cms-ca.pem");
    std::fs::write(&ca, pki.ca.cert_pem()).unwrap();
    HttpSinkSettings {
        url: cms.url(),
        ca,
        client_cert: cert,
        client_key: key,
        timeout_ms: 500,
        breaker_failures: 3,
        breaker_open_ms: 500,
    }
}

/// The hub and adapter in one process, with unit 370303 receiving through `sink`.
async fn app_with_cms(sink: HttpSinkSettings, give_up_after_secs: u64) -> TestApp {
    app(Backend::Real)
        .roles(Roles::ALL)
        .with_settings(move |settings| {
            let unit = settings
                .police
                .units
                .iter_mut()
                .find(|u| u.id == "370303")
                .unwrap();
            unit.sink = SinkSettings::Http(sink);
            settings.police.delivery.backoff_initial_ms = 100;
            settings.police.delivery.backoff_max_ms = 400;
            settings.police.delivery.poll_interval_ms = 50;
            settings.police.delivery.give_up_after_secs = give_up_after_secs;
        })
        .spawn()
        .await
}

fn clue_in(division: &str) -> Value {
    // A clue with no threshold crossed: it goes to the district's unit only.
    let mut lead = sample_lead(&unique_case_id());
    lead["kind"] = json!("clue");
    lead["location"]["division_code"] = json!(division);
    lead["facts"]["measurements"][0]["value"] = json!(1.2);
    lead
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_with_context_and_block_nothing() {
    let app = app(Backend::Real).roles(Roles::ALL).spawn().await;
    let topic = app.topic(Agency::Environment);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &app.bootstrap_servers)
        .create()
        .unwrap();
    let good_event = |lead_type: &str| {
        let lead = sample_lead(&unique_case_id());
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            leadbridge::contract::lead::canonical_json(&lead),
        ));
        json!({"schema": "leadbridge.lead-event.v1", "event_id": uuid::Uuid::now_v7(), "lead_id": uuid::Uuid::now_v7(), "revision": 1,
               "agency": "environment", "lead_type": lead_type, "kind": "transfer", "case_id": "X-1",
               "content_sha256": hash, "lead": lead})
    };
    let mut tampered = good_event("environment.discharge_exceedance");
    tampered["lead"]["summary"] = json!("changed after hashing");
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("undecodable", b"\x00\xffnot json at all".to_vec()),
        (
            "unknown_schema",
            serde_json::to_vec(&json!({"schema": "leadbridge.something-else.v9"})).unwrap(),
        ),
        (
            "unknown_lead_type",
            serde_json::to_vec(&good_event("environment.unknown_kind")).unwrap(),
        ),
        ("content_mismatch", serde_json::to_vec(&tampered).unwrap()),
    ];
    for (index, (_, payload)) in poison.iter().enumerate() {
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&format!("poison-{index}"))
                    .payload(payload),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }

    let response = app
        .post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
        .await;
    let lead_id = response.json::<Value>().await.unwrap()["lead_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_status(Agency::Environment, &lead_id, "delivered")
        .await;

    let deadletter =
        leadbridge::shared::kafka::Topics::new(app.settings.kafka.topic_prefix.clone())
            .deadletter();
    // The adapter's dead letters; the hub adds its own (stage hub.receipts) for the
    // dead_lettered receipts about the forged lead ids, which it does not know.
    let (letters, hub_letters): (Vec<_>, Vec<_>) = consume(
        &app.bootstrap_servers,
        &deadletter,
        6,
        Duration::from_secs(1),
    )
    .await
    .into_iter()
    .partition(|m| header(m, "stage").as_deref() == Some("police-adapter.consume"));
    let hub_classes: Vec<Option<String>> = hub_letters
        .iter()
        .map(|m| header(m, "error_class"))
        .collect();
    assert_eq!(
        hub_classes,
        vec![Some("unknown_lead".to_owned()); 2],
        "the receipts for the two poison messages that name a lead"
    );
    let classes: HashSet<String> = letters
        .iter()
        .filter_map(|m| header(m, "error_class"))
        .collect();
    let expected: HashSet<String> = poison.iter().map(|(class, _)| class.to_string()).collect();
    assert_eq!(classes, expected);
    assert_eq!(
        letters.len(),
        4,
        "each poison message is dead-lettered once"
    );
    for letter in &letters {
        assert_eq!(
            header(letter, "source_topic").as_deref(),
            Some(topic.as_str())
        );
        assert!(header(letter, "source_offset")
            .unwrap()
            .parse::<i64>()
            .is_ok());
        assert_eq!(
            header(letter, "stage").as_deref(),
            Some("police-adapter.consume")
        );
        assert!(!header(letter, "error_message").unwrap().is_empty());
    }
    let undecodable = letters
        .iter()
        .find(|m| header(m, "error_class").as_deref() == Some("undecodable"))
        .unwrap();
    use rdkafka::Message;
    assert_eq!(
        undecodable.payload(),
        Some(&b"\x00\xffnot json at all"[..]),
        "the original bytes are kept"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_missing_rule_file_stops_start_up_with_a_clear_message() {
    let data_dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let mut settings = test_settings(Backend::Real, data_dir.path(), &pki).await;
    settings.police.rules_file = Some("/nonexistent/thresholds.json".into());
    let error = Application::build(settings, Roles::ALL)
        .await
        .err()
        .expect("start-up must fail");
    let message = format!("{error:#}");
    assert!(
        message.contains("/nonexistent/thresholds.json"),
        "{message}"
    );
    assert!(message.contains("rules"), "{message}");
}

#[tokio::test]
async fn case_management_errors_timeouts_and_garbage_are_retried_until_delivered_once() {
    let pki_for_cms = TestPki::new();
    let cms = FakeCms::start(&pki_for_cms.ca).await;
    let files = tempfile::tempdir().unwrap();
    let app = app_with_cms(cms_sink(&pki_for_cms, &cms, files.path()), 3600).await;

    let mut lead_ids = Vec::new();
    for (mode, fault, name) in [
        (Mode::Fail(500), Answer::Failed(500), "500"),
        (Mode::Hang, Answer::Hung, "timeout"),
        (Mode::Garbage, Answer::Garbage, "garbage"),
    ] {
        cms.set_mode(mode);
        let before = cms.received().len();
        let response = app.post_lead(Agency::Environment, &clue_in("370303")).await;
        let lead_id = response.json::<Value>().await.unwrap()["lead_id"]
            .as_str()
            .unwrap()
            .to_owned();
        eventually(&format!("the adapter tried through the {name}"), || async {
            cms.received().len() >= before + 2
        })
        .await;
        // The police's receipt travels back through Kafka and may reach the hub after the
        // CMS saw both attempts; statuses never move backwards, so reaching
        // `received_by_police` while the CMS still fails shows the lead was not delivered.
        let status = app
            .wait_for_status(Agency::Environment, &lead_id, "received_by_police")
            .await;
        assert!(
            status["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .all(|event| event["event"] != "delivered"),
            "{name}: not delivered while the CMS fails: {status}"
        );
        cms.set_mode(Mode::Accept);
        let status = app
            .wait_for_status(Agency::Environment, &lead_id, "delivered")
            .await;
        let delivered = status["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event"] == "delivered")
            .unwrap();
        assert!(
            delivered["cms_ref"].as_str().unwrap().starts_with("CMS-"),
            "{name}: {delivered}"
        );
        assert_eq!(delivered["unit"], "370303");
        lead_ids.push((lead_id, fault));
    }
    // Counted from the raw record: each lead's key was accepted once, by its last arrival, and
    // every earlier arrival was a retry after an answer of the fault the test caused (at
    // least the two attempts it waited for).
    let per_key = cms.assert_each_key_accepted_once_after_failures("370303");
    assert_eq!(per_key.len(), 3, "{per_key:?}");
    for ((lead_id, fault), name) in lead_ids.iter().zip(["500", "timeout", "garbage"]) {
        let answers = &per_key[&format!("{lead_id}:1")];
        let (_, retried) = answers.split_last().unwrap();
        assert!(
            retried.len() >= 2 && retried.iter().all(|answer| answer == fault),
            "{name}: every attempt before the success met the fault: {answers:?}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_case_management_outage_loses_nothing_and_delivers_revisions_in_order() {
    let pki_for_cms = TestPki::new();
    let cms = FakeCms::start(&pki_for_cms.ca).await;
    let files = tempfile::tempdir().unwrap();
    let app = app_with_cms(cms_sink(&pki_for_cms, &cms, files.path()), 3600).await;
    cms.stop().await;

    let mut leads = Vec::new();
    for _ in 0..10 {
        let lead = clue_in("370303");
        let receipt: Value = app
            .post_lead(Agency::Environment, &lead)
            .await
            .json()
            .await
            .unwrap();
        leads.push((lead, receipt["lead_id"].as_str().unwrap().to_owned()));
    }
    // A second revision of the first lead while the system is still down.
    let mut revised = leads[0].0.clone();
    revised["source"]["revision"] = json!(2);
    revised["summary"] = json!("修订：补充监测数据");
    assert_eq!(
        app.post_lead(Agency::Environment, &revised).await.status(),
        202
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (_, lead_id) in &leads {
        let status: Value = app
            .get_lead(Agency::Environment, lead_id)
            .await
            .json()
            .await
            .unwrap();
        assert_ne!(status["status"], "delivered");
    }

    cms.restart().await;
    for (_, lead_id) in &leads {
        app.wait_for_status(Agency::Environment, lead_id, "delivered")
            .await;
    }
    // The CMS was down (connections refused, so nothing arrived) and then accepting: each key
    // arrived exactly once, and that arrival opened its case.
    let received = cms.received();
    let per_key = cms.assert_each_key_accepted_once_after_failures("370303");
    assert_eq!(per_key.len(), 11, "ten leads and one revision: {per_key:?}");
    assert!(
        per_key.values().all(|answers| answers.len() == 1),
        "no key was sent twice: {per_key:?}"
    );
    let first = &leads[0].1;
    let order: Vec<&String> = received
        .iter()
        .map(|r| &r.lead_id_revision)
        .filter(|k| k.starts_with(first.as_str()))
        .collect();
    assert_eq!(
        order,
        vec![&format!("{first}:1"), &format!("{first}:2")],
        "revisions arrive in order"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_delivery_that_never_succeeds_is_dead_lettered_and_stays_visible() {
    let pki_for_cms = TestPki::new();
    let cms = FakeCms::start(&pki_for_cms.ca).await;
    cms.set_mode(Mode::Fail(503));
    let files = tempfile::tempdir().unwrap();
    let mut app = app_with_cms(cms_sink(&pki_for_cms, &cms, files.path()), 2).await;
    app.expect_lasting_failures(1);
    let response = app.post_lead(Agency::Environment, &clue_in("370303")).await;
    let lead_id = response.json::<Value>().await.unwrap()["lead_id"]
        .as_str()
        .unwrap()
        .to_owned();

    eventually("the hub hears the delivery was given up", || async {
        let status: Value = app
            .get_lead(Agency::Environment, &lead_id)
            .await
            .json()
            .await
            .unwrap();
        status["status"] == "delivery_given_up"
    })
    .await;
    let status: Value = app
        .get_lead(Agency::Environment, &lead_id)
        .await
        .json()
        .await
        .unwrap();
    let given_up = status["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "delivery_given_up")
        .unwrap();
    assert_eq!(given_up["unit"], "370303", "{given_up}");
    assert!(given_up["attempts"].as_i64().unwrap() >= 1, "{given_up}");
    let deadletter =
        leadbridge::shared::kafka::Topics::new(app.settings.kafka.topic_prefix.clone())
            .deadletter();
    let letters = consume(
        &app.bootstrap_servers,
        &deadletter,
        1,
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        header(&letters[0], "error_class").as_deref(),
        Some("delivery_failed")
    );
    assert_eq!(header(&letters[0], "unit").as_deref(), Some("370303"));
    let per_key = crate::fake_cms::answers_per_key(&cms.received(), "370303");
    let answers = &per_key[&format!("{lead_id}:1")];
    assert!(
        per_key.len() == 1 && answers.iter().all(|answer| *answer == Answer::Failed(503)),
        "only the failing attempts reached the CMS, no case was opened: {per_key:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_adapter_killed_mid_batch_delivers_everything_exactly_once_after_restart() {
    // The hub in this process; the adapter as its own process, as in the police network.
    let app = app(Backend::Real).spawn().await;
    let cms_pki = TestPki::new();
    let cms = FakeCms::start(&cms_pki.ca).await;
    let files = tempfile::tempdir().unwrap();
    let sink = cms_sink(&cms_pki, &cms, files.path());
    let police_db = fresh_postgres_database().await;
    let config = files.path().join("adapter.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server.tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"
[kafka]
bootstrap_servers = "{kafka}"
topic_prefix = "{prefix}"
message_timeout_ms = 3000
# A killed member keeps its partitions until the broker's session timeout evicts it.
client = {{ "session.timeout.ms" = "6000" }}
[relay]
lease_secs = 4
[police]
database_url = "{police_db}"
group_id = "{prefix}-police"
[police.delivery]
backoff_initial_ms = 100
backoff_max_ms = 400
poll_interval_ms = 20
lease_secs = 3
[[police.units]]
id = "370303"
name = "张店分局"
divisions = ["370303"]
sink = {{ type = "http", url = "{url}", ca = "{cms_ca}", client_cert = "{client_cert}", client_key = "{client_key}", timeout_ms = 2000 }}
[[police.units]]
id = "370300"
name = "环境犯罪侦查支队"
divisions = ["3703"]
"#,
            cert = app.pki.tls.cert.display(),
            key = app.pki.tls.key.display(),
            ca = app.pki.tls.client_ca.display(),
            kafka = app.bootstrap_servers,
            prefix = app.settings.kafka.topic_prefix,
            police_db = police_db,
            url = sink.url,
            cms_ca = sink.ca.display(),
            client_cert = sink.client_cert.display(),
            client_key = sink.client_key.display(),
        ),
    )
    .unwrap();
    let adapter_dir = tempfile::tempdir().unwrap();
    let env = [("LEADBRIDGE_CONFIG", config.display().to_string())];
    let mut adapter = start_hub_role(adapter_dir.path(), &env);

    let leads: Vec<Value> = (0..40).map(|_| clue_in("370303")).collect();
    let response = app
        .client(Agency::Environment)
        .post(app.url("/v1/leads/batch"))
        .json(&json!({"leads": leads}))
        .send()
        .await
        .unwrap();
    let results: Value = response.json().await.unwrap();
    let lead_ids: Vec<String> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["lead_id"].as_str().unwrap().to_owned())
        .collect();
    eventually("the adapter has delivered some", || async {
        cms.opened() >= 5
    })
    .await;
    adapter.child.kill().unwrap();
    adapter.child.wait().unwrap();
    // The requests the killed adapter had written are still read and answered after it died
    // (one round sends a whole batch's deliveries at once), so its arrivals are told by the
    // connection they came on, not by when they arrived.
    let killed_connections = cms.connections_accepted();
    let arrivals_at_kill = cms.received().len();
    let store = leadbridge::shared::store::Store::connect(
        &police_db,
        2,
        &leadbridge::police::store::MIGRATIONS,
    )
    .await
    .unwrap();
    // What the killed adapter recorded as delivered; its commits are over once it is dead.
    let recorded_at_kill: HashSet<String> = sqlx::query_as::<_, (String, i64)>(
        "SELECT CAST(lead_id AS TEXT) AS lead_id, revision FROM police_deliveries \
         WHERE delivered_at IS NOT NULL",
    )
    .fetch_all(store.inspection_pool().await.unwrap())
    .await
    .unwrap()
    .into_iter()
    .map(|(lead_id, revision)| format!("{lead_id}:{revision}"))
    .collect();

    let mut adapter = start_hub_role(adapter_dir.path(), &env);
    for lead_id in &lead_ids {
        app.wait_for_status(Agency::Environment, lead_id, "delivered")
            .await;
    }
    adapter.child.kill().unwrap();
    adapter.child.wait().unwrap();

    // At least once towards the CMS, deduplicated by the key: each key was opened exactly
    // once, and a key arrived again only in the one window the design allows, a kill after the
    // CMS accepted but before the adapter recorded it. Such a key was accepted by the killed
    // adapter, not recorded by it, and resent once by the restarted one, which the CMS answered
    // with the same case.
    let received = cms.received();
    let per_key = crate::fake_cms::answers_per_key(&received, "370303");
    let killed_arrivals = received
        .iter()
        .filter(|arrival| arrival.connection <= killed_connections)
        .count();
    assert_eq!(
        per_key.len(),
        40,
        "every lead reached the case-management system (the killed adapter's arrivals: {killed_arrivals})"
    );
    let mut resent_after_kill = 0;
    for (key, answers) in &per_key {
        let senders: Vec<&str> = received
            .iter()
            .filter(|arrival| arrival.lead_id_revision == *key)
            .map(|arrival| {
                if arrival.connection <= killed_connections {
                    "killed"
                } else {
                    "restarted"
                }
            })
            .collect();
        let recorded = recorded_at_kill.contains(key);
        match (answers.as_slice(), senders.as_slice()) {
            ([Answer::Opened(_)], _) => {}
            (
                [Answer::Opened(opened), Answer::Repeated(repeated)],
                ["killed", "restarted"],
            ) if opened == repeated && !recorded => {
                resent_after_kill += 1;
            }
            _ => panic!("{key}: not one acceptance, nor an acceptance the kill left unrecorded and its one resend: {answers:?} from {senders:?} (recorded as delivered at the kill: {recorded})"),
        }
    }
    eprintln!(
        "{resent_after_kill} keys resent after the kill, accepted before it; the killed adapter's \
         arrivals: {killed_arrivals}, {} of them after it died",
        killed_arrivals.saturating_sub(arrivals_at_kill)
    );
    // The adapter's books hold one row per (lead, revision, unit) by constraint, so counting
    // them shows nothing; what can differ is the case each row records, which must be the one
    // the CMS opened for its key.
    let books: Vec<(String, i64, Option<String>)> = sqlx::query_as(
        "SELECT CAST(lead_id AS TEXT) AS lead_id, revision, cms_ref FROM police_deliveries \
         WHERE delivered_at IS NOT NULL",
    )
    .fetch_all(store.inspection_pool().await.unwrap())
    .await
    .unwrap();
    assert_eq!(books.len(), 40, "every delivery is recorded as delivered");
    for (lead_id, revision, cms_ref) in books {
        let key = format!("{lead_id}:{revision}");
        assert_eq!(
            per_key[&key].first(),
            cms_ref.map(Answer::Opened).as_ref(),
            "{key}: the adapter recorded the case the CMS opened"
        );
    }
    app.stop().await;
    // The adapter process's database is the test's own, not the app's.
    store.close().await;
    drop_test_database(&police_db).await;
}

/// `leadbridge police-adapter` as a process.
fn start_hub_role(data_dir: &std::path::Path, env: &[(&str, String)]) -> crate::crash::HubProcess {
    crate::crash::start_role("police-adapter", data_dir, env)
}
