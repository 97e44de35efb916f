//! The hub's log as a supervisor reaches it (`/supervise/v1`, supervision contract §3), on
//! PostgreSQL with Kafka and in the embedded default: a checkpoint signed on demand verifies
//! with the served key, every served entry hashes to its leaf and its inclusion proof leads to
//! the checkpoint's root, a later checkpoint is consistent with the earlier one — each checked
//! with the independent verifier only — and what is asked beyond the signed tree, or by
//! anyone but a supervisor, is refused with a problem.

use leadbridge::contract::lead::Agency;
use leadbridge::shared::identity::{Principal, SupervisorScope};
use leadbridge::shared::tlog::entry::{jcs, leaf_hash};
use leadbridge::shared::tlog::evidence::{parse_hash, verify_bundle, Bundle, Keys};
use leadbridge::shared::tlog::{checkpoint, verify_consistency, verify_inclusion, VerifierKey};
use leadbridge::Roles;
use serde_json::Value;

use crate::helpers::{app, sample_lead, unique_case_id, Backend, TestApp};

fn supervisor(app: &TestApp) -> reqwest::Client {
    app.pki.client(Some(&Principal::Supervisor {
        name: "张检察官".into(),
        scope: SupervisorScope::Procuratorate,
    }))
}

async fn get(client: &reqwest::Client, app: &TestApp, path: &str) -> (u16, String) {
    let response = client.get(app.url(path)).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn submit_and_deliver(app: &TestApp) {
    let response = app
        .post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
        .await;
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    app.wait_for_status(
        Agency::Environment,
        receipt["lead_id"].as_str().unwrap(),
        "delivered",
    )
    .await;
}

async fn sign_now(client: &reqwest::Client, app: &TestApp) -> (u16, String) {
    let response = client
        .post(app.url("/supervise/v1/logs/hub/checkpoints"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn hashes(list: &Value) -> Vec<[u8; 32]> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|hash| parse_hash(hash.as_str().unwrap()).unwrap())
        .collect()
}

async fn the_hub_log_is_provable_with_its_key_alone(backend: Backend) {
    let app = app(backend).roles(Roles::ALL).spawn().await;
    let client = supervisor(&app);
    submit_and_deliver(&app).await;

    let (status, keys) = get(&client, &app, "/supervise/v1/keys").await;
    assert_eq!(status, 200, "{keys}");
    let keys: Value = serde_json::from_str(&keys).unwrap();
    let key = VerifierKey::parse(keys["hub"].as_str().unwrap()).unwrap();
    assert!(keys["police"].is_string(), "{keys}");
    let origin = "leadbridge/local/hub";

    let (status, first_note) = sign_now(&client, &app).await;
    assert_eq!(status, 201, "{first_note}");
    let first = checkpoint::verify(&first_note, &key, origin).unwrap();
    assert!(first.size >= 1);
    // Nothing new: the same checkpoint, 200.
    let (status, again) = sign_now(&client, &app).await;
    assert_eq!((status, &again), (200, &first_note));
    let (status, latest) = get(&client, &app, "/supervise/v1/logs/hub/checkpoint").await;
    assert_eq!((status, &latest), (200, &first_note));

    let (status, body) = get(
        &client,
        &app,
        &format!("/supervise/v1/logs/hub/entries?start=0&end={}", first.size),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let entries = body["entries"].as_array().unwrap();
    assert_eq!(entries.len() as u64, first.size);
    assert_eq!(entries[0]["entry"]["action"], "lead.received");
    for (index, item) in entries.iter().enumerate() {
        let computed = leaf_hash(&jcs(&item["entry"]));
        assert_eq!(hex::encode(computed), item["leaf_hash"], "entry {index}");
        assert_eq!(item["entry"]["index"], index as u64);
        let (status, proof) = get(
            &client,
            &app,
            &format!(
                "/supervise/v1/logs/hub/proof/inclusion?index={index}&tree_size={}",
                first.size
            ),
        )
        .await;
        assert_eq!(status, 200, "{proof}");
        let proof: Value = serde_json::from_str(&proof).unwrap();
        assert_eq!(proof["leaf_hash"], item["leaf_hash"]);
        verify_inclusion(
            index as u64,
            first.size,
            &computed,
            &hashes(&proof["path"]),
            &first.root,
        )
        .unwrap_or_else(|error| panic!("entry {index}: {error}"));
    }

    // The log grows; the new checkpoint extends the first.
    submit_and_deliver(&app).await;
    let (status, second_note) = sign_now(&client, &app).await;
    assert_eq!(status, 201, "{second_note}");
    let second = checkpoint::verify(&second_note, &key, origin).unwrap();
    assert!(second.size > first.size);
    let (status, proof) = get(
        &client,
        &app,
        &format!(
            "/supervise/v1/logs/hub/proof/consistency?first={}&second={}",
            first.size, second.size
        ),
    )
    .await;
    assert_eq!(status, 200, "{proof}");
    let proof: Value = serde_json::from_str(&proof).unwrap();
    verify_consistency(
        first.size,
        second.size,
        &first.root,
        &second.root,
        &hashes(&proof["path"]),
    )
    .unwrap();
    let (status, listed) = get(&client, &app, "/supervise/v1/logs/hub/checkpoints?after=0").await;
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        listed["checkpoints"].as_array().unwrap().last().unwrap(),
        &Value::String(second_note.clone())
    );

    // What lies beyond the signed tree, or is malformed, or is not a supervisor's to ask.
    let beyond = second.size + 1;
    for (path, expected) in [
        (
            format!("/supervise/v1/logs/hub/proof/inclusion?index=0&tree_size={beyond}"),
            400,
        ),
        (
            format!(
                "/supervise/v1/logs/hub/proof/inclusion?index={}&tree_size={}",
                second.size, second.size
            ),
            404,
        ),
        (
            format!(
                "/supervise/v1/logs/hub/proof/consistency?first={beyond}&second={}",
                second.size
            ),
            400,
        ),
        (
            format!("/supervise/v1/logs/hub/proof/consistency?first=1&second={beyond}"),
            400,
        ),
        (
            "/supervise/v1/logs/hub/proof/consistency?first=0&second=1".to_owned(),
            400,
        ),
        (
            format!("/supervise/v1/logs/hub/entries?start=0&end={beyond}"),
            404,
        ),
        (
            "/supervise/v1/logs/hub/entries?start=0&end=1001".to_owned(),
            400,
        ),
        (
            "/supervise/v1/logs/hub/entries?start=3&end=3".to_owned(),
            400,
        ),
        (
            "/supervise/v1/logs/hub/proof/inclusion?index=x&tree_size=1".to_owned(),
            400,
        ),
        ("/supervise/v1/logs/elsewhere/checkpoint".to_owned(), 404),
        ("/supervise/v1/logs/police/checkpoint".to_owned(), 404),
    ] {
        let response = client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    // The evidence of the first lead: every hub entry about it, proven against a checkpoint
    // signed for it, verifiable with the served keys alone; any change breaks it.
    let lead_id = entries[0]["entry"]["lead_id"].as_str().unwrap().to_owned();
    let (status, bundle) = get(
        &client,
        &app,
        &format!("/supervise/v1/leads/{lead_id}/evidence"),
    )
    .await;
    assert_eq!(status, 200, "{bundle}");
    let bundle: Value = serde_json::from_str(&bundle).unwrap();
    let check = |bundle: &Value| {
        let bundle: Bundle = serde_json::from_value(bundle.clone()).unwrap();
        let keys: Keys = serde_json::from_value(keys.clone()).unwrap();
        verify_bundle(&bundle, &keys)
    };
    let verified = check(&bundle).unwrap();
    let actions: Vec<&str> = bundle["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["entry"]["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.starts_with(&["lead.received", "lead.published"]) && verified.entries >= 3,
        "{actions:?}"
    );
    let mut altered = bundle.clone();
    altered["entries"][1]["entry"]["actor"] = Value::String("someone else".into());
    assert!(check(&altered).is_err());
    let head = |scope| {
        app.pki.client(Some(&Principal::Supervisor {
            name: "局长".into(),
            scope,
        }))
    };
    let path = format!("/supervise/v1/leads/{lead_id}/evidence");
    assert_eq!(
        get(
            &head(SupervisorScope::Agency(Agency::Environment)),
            &app,
            &path
        )
        .await
        .0,
        200
    );
    let (status, refused) = get(&head(SupervisorScope::Agency(Agency::Land)), &app, &path).await;
    assert_eq!(
        status, 404,
        "another agency's lead is not the land head's: {refused}"
    );
    // The whole log names every agency's leads: not an agency head's to read.
    for whole in [
        "/supervise/v1/logs/hub/entries?start=0&end=1".to_owned(),
        format!(
            "/supervise/v1/logs/hub/proof/inclusion?index=0&tree_size={}",
            first.size
        ),
    ] {
        let (status, body) = get(&head(SupervisorScope::Agency(Agency::Land)), &app, &whole).await;
        assert_eq!(status, 403, "{whole}: {body}");
    }
    let unknown = format!(
        "/supervise/v1/leads/{}/evidence",
        leadbridge::contract::lead::LeadId::generate()
    );
    assert_eq!(get(&client, &app, &unknown).await.0, 404);
    assert_eq!(
        get(&client, &app, "/supervise/v1/leads/not-a-lead/evidence")
            .await
            .0,
        400
    );

    let agency = app.client(Agency::Environment);
    let response = agency
        .get(app.url("/supervise/v1/logs/hub/checkpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = agency
        .post(app.url("/supervise/v1/logs/hub/checkpoints"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let anonymous = app.pki.client(None);
    let response = anonymous
        .get(app.url("/supervise/v1/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Every refusal and export is on the hub's log: who, what, the outcome.
    let trail: Vec<(String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT actor, action, CAST(lead_id AS TEXT), details FROM log_trail \
         WHERE action IN ('access.denied', 'access.export')",
    )
    .fetch_all(app.store.inspection_pool().await.unwrap())
    .await
    .unwrap();
    // `details` is JSON text, spaced differently once sequenced (PostgreSQL's jsonb): compare
    // values, not text.
    let has = |actor: &str, action: &str, lead: Option<&str>, key: &str, value: Value| {
        trail.iter().any(|(a, b, l, d)| {
            let details: Value = serde_json::from_str(d).unwrap();
            a == actor && b == action && l.as_deref() == lead && details[key] == value
        })
    };
    let refused_path = Value::from("/supervise/v1/logs/hub/checkpoint");
    assert!(
        has(
            "agency:environment",
            "access.denied",
            None,
            "path",
            refused_path
        ),
        "{trail:?}"
    );
    assert!(
        has(
            "agency:environment",
            "access.denied",
            None,
            "status",
            Value::from(403)
        ),
        "{trail:?}"
    );
    assert!(
        has(
            "anonymous",
            "access.denied",
            None,
            "status",
            Value::from(401)
        ),
        "{trail:?}"
    );
    assert!(
        has(
            "supervisor:张检察官",
            "access.export",
            Some(&lead_id),
            "export",
            Value::from("evidence")
        ),
        "{trail:?}"
    );
    assert!(
        has(
            "supervisor:局长",
            "access.denied",
            Some(&lead_id),
            "scope",
            Value::from("land")
        ),
        "{trail:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_hub_log_is_provable_with_its_key_alone_on_postgres_and_kafka() {
    the_hub_log_is_provable_with_its_key_alone(Backend::Real).await;
}

#[tokio::test]
async fn the_hub_log_is_provable_with_its_key_alone_in_the_embedded_default() {
    the_hub_log_is_provable_with_its_key_alone(Backend::Embedded).await;
}
