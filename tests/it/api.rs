//! The agency API against real PostgreSQL and Kafka, over real mutual TLS.

use std::collections::HashSet;
use std::time::Duration;

use leadbridge::contract::lead::Agency;
use leadbridge::shared::identity::Principal;
use serde_json::{json, Value};

use crate::helpers::{
    app, consume, header, payload, sample_lead, unique_case_id, valid_fixtures, Backend,
};

#[tokio::test]
async fn a_valid_lead_is_accepted_published_to_its_agency_topic_and_traced_in_its_timeline() {
    let app = app(Backend::Real).spawn().await;
    let lead = sample_lead(&unique_case_id());

    let response = app.post_lead(Agency::Environment, &lead).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let receipt: Value = response.json().await.unwrap();
    let lead_id = receipt["lead_id"].as_str().unwrap().to_owned();
    assert_eq!(receipt["status"], "accepted");
    assert_eq!(location, format!("/v1/leads/{lead_id}"));
    assert!(uuid::Uuid::parse_str(&lead_id).unwrap().get_version_num() == 7);

    let status = app
        .wait_for_status(Agency::Environment, &lead_id, "published")
        .await;
    let timeline = status["timeline"].as_array().unwrap();
    assert_eq!(timeline[0]["event"], "received");
    assert_eq!(timeline[0]["actor"], "agency:environment");
    assert_eq!(timeline[1]["event"], "published");
    assert_eq!(timeline[1]["topic"], app.topic(Agency::Environment));

    let messages = consume(
        &app.bootstrap_servers,
        &app.topic(Agency::Environment),
        1,
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    use rdkafka::Message;
    assert_eq!(message.key(), Some(lead_id.as_bytes()));
    assert_eq!(
        i64::from(message.partition()),
        timeline[1]["partition"].as_i64().unwrap()
    );
    assert_eq!(message.offset(), timeline[1]["offset"].as_i64().unwrap());
    let event = payload(message);
    assert_eq!(event["lead_id"], lead_id);
    assert_eq!(
        event["lead"]["source"]["case_id"],
        lead["source"]["case_id"]
    );
    assert_eq!(
        header(message, "content_sha256").as_deref(),
        event["content_sha256"].as_str()
    );
    assert_eq!(
        header(message, "event_id").as_deref(),
        event["event_id"].as_str()
    );
    assert_eq!(
        header(message, "schema_id").as_deref(),
        Some("urn:leadbridge:schema:lead:environment.discharge_exceedance:v1")
    );

    let ledger = leadbridge::shared::audit::verify(&app.store).await.unwrap();
    assert_eq!(
        ledger.entries, 2,
        "one entry for receipt, one for publication"
    );
    app.stop().await;
}

#[tokio::test]
async fn every_lead_type_is_accepted_through_the_api() {
    let app = app(Backend::Real).spawn().await;
    let fixtures = valid_fixtures();
    let mut seen_types = HashSet::new();
    for (agency, mut lead) in fixtures {
        lead["source"]["case_id"] = json!(unique_case_id());
        seen_types.insert(lead["lead_type"].as_str().unwrap().to_owned());
        let response = app.post_lead(agency, &lead).await;
        let status = response.status();
        assert_eq!(
            status,
            202,
            "{}: {}",
            lead["lead_type"],
            response.text().await.unwrap()
        );
    }
    assert_eq!(seen_types.len(), 10, "the fixtures cover every lead type");
    app.stop().await;
}

#[tokio::test]
async fn a_replay_returns_the_first_receipt_and_changes_nothing() {
    let app = app(Backend::Real).spawn().await;
    let lead = sample_lead(&unique_case_id());
    let first: Value = app
        .post_lead(Agency::Environment, &lead)
        .await
        .json()
        .await
        .unwrap();

    // Same content, different member order and white space: still an exact replay.
    let reordered: Value =
        serde_json::from_str(&serde_json::to_string_pretty(&lead).unwrap()).unwrap();
    let response = app.post_lead(Agency::Environment, &reordered).await;
    assert_eq!(response.status(), 200);
    let second: Value = response.json().await.unwrap();
    assert_eq!(second, first, "the replay answers with the first receipt");

    let (outbox_rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
        .fetch_one(app.store.inspection_pool().await.unwrap())
        .await
        .unwrap();
    assert_eq!(outbox_rows, 1, "a replay publishes nothing new");
    app.stop().await;
}

#[tokio::test]
async fn the_same_revision_with_other_content_is_a_conflict() {
    let app = app(Backend::Real).spawn().await;
    let lead = sample_lead(&unique_case_id());
    let first: Value = app
        .post_lead(Agency::Environment, &lead)
        .await
        .json()
        .await
        .unwrap();

    let mut changed = lead.clone();
    changed["summary"] = json!("改过的摘要");
    let response = app.post_lead(Agency::Environment, &changed).await;
    assert_eq!(response.status(), 409);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:leadbridge:problem:conflict");
    assert_eq!(problem["lead_id"], first["lead_id"]);

    let stored = app
        .store
        .lead_document(
            leadbridge::contract::lead::LeadId::parse(first["lead_id"].as_str().unwrap()).unwrap(),
            1,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored["summary"], lead["summary"],
        "the accepted content is untouched"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_higher_revision_keeps_the_lead_id_and_supersedes_the_earlier_one() {
    let app = app(Backend::Real).spawn().await;
    let lead = sample_lead(&unique_case_id());
    let first: Value = app
        .post_lead(Agency::Environment, &lead)
        .await
        .json()
        .await
        .unwrap();
    let lead_id = first["lead_id"].as_str().unwrap().to_owned();
    app.wait_for_status(Agency::Environment, &lead_id, "published")
        .await;

    let mut revised = lead.clone();
    revised["source"]["revision"] = json!(2);
    revised["summary"] = json!("补充监测数据后的修订");
    let response = app.post_lead(Agency::Environment, &revised).await;
    assert_eq!(response.status(), 202);
    let second: Value = response.json().await.unwrap();
    assert_eq!(second["lead_id"], lead_id);
    assert_eq!(second["revision"], 2);

    let status = app
        .wait_for_status(Agency::Environment, &lead_id, "published")
        .await;
    assert_eq!(status["revision"], 2);
    let events: Vec<(String, i64)> = status["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["revision"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        events,
        vec![
            ("received".to_owned(), 1),
            ("published".to_owned(), 1),
            ("superseded".to_owned(), 1),
            ("received".to_owned(), 2),
            ("published".to_owned(), 2),
        ]
    );

    // Revision 1 again, changed: older than the current revision.
    let mut stale = lead.clone();
    stale["summary"] = json!("迟到的旧版本");
    assert_eq!(
        app.post_lead(Agency::Environment, &stale).await.status(),
        409
    );
    // Revision 1 exactly as first sent: still recognised as a replay.
    assert_eq!(
        app.post_lead(Agency::Environment, &lead).await.status(),
        200
    );

    let messages = consume(
        &app.bootstrap_servers,
        &app.topic(Agency::Environment),
        2,
        Duration::from_millis(500),
    )
    .await;
    let revisions: Vec<i64> = messages
        .iter()
        .map(|m| payload(m)["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(
        revisions,
        vec![1, 2],
        "revisions of one lead are published in order"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_lead_gets_every_problem_at_once_as_problem_json() {
    let app = app(Backend::Real).spawn().await;
    let mut lead = sample_lead(&unique_case_id());
    lead["subjects"][0]["uscc"] = json!("91370303MA3C4B2D1A");
    lead["location"]["division_code"] = json!("370399");
    lead["facts"]["measurements"][0]["value"] = json!("high");

    let response = app.post_lead(Agency::Environment, &lead).await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:leadbridge:problem:validation");
    assert_eq!(problem["status"], 422);
    assert_eq!(problem["detail"], "3 problems");
    let mut found: Vec<(String, String)> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["pointer"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("/facts/measurements/0/value".to_owned(), "type".to_owned()),
            (
                "/location/division_code".to_owned(),
                "unknown_division".to_owned()
            ),
            ("/subjects/0/uscc".to_owned(), "uscc_checksum".to_owned()),
        ]
    );
    let checksum = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["code"] == "uscc_checksum")
        .unwrap();
    assert_eq!(checksum["message"], "check character should be 'E'");

    let (leads,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM leads")
        .fetch_one(app.store.inspection_pool().await.unwrap())
        .await
        .unwrap();
    assert_eq!(leads, 0, "nothing invalid is stored");
    app.stop().await;
}

#[tokio::test]
async fn agencies_act_only_as_themselves() {
    let app = app(Backend::Real).spawn().await;
    let lead = sample_lead(&unique_case_id());

    // The land agency sends an environment lead.
    let response = app.post_lead(Agency::Land, &lead).await;
    assert_eq!(response.status(), 403);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:leadbridge:problem:forbidden");

    // No client certificate.
    let anonymous = app.pki.client(None);
    let response = anonymous
        .post(app.url("/v1/leads"))
        .json(&lead)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // An investigator's certificate is not an agency's.
    let investigator = app.pki.client(Some(&Principal::Investigator {
        unit: "370300".into(),
    }));
    let response = investigator
        .post(app.url("/v1/leads"))
        .json(&lead)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // A certificate from another CA never completes the handshake.
    let stranger = crate::helpers::TestPki::new();
    let foreign_identity = stranger
        .ca
        .issue_client(&Principal::Agency(Agency::Environment))
        .unwrap();
    let foreign = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(app.pki.ca.cert_pem().as_bytes()).unwrap(),
        )
        .identity(
            reqwest::Identity::from_pem(
                format!("{}{}", foreign_identity.cert_pem, foreign_identity.key_pem).as_bytes(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    assert!(foreign
        .post(app.url("/v1/leads"))
        .json(&lead)
        .send()
        .await
        .is_err());

    // The owner's lead is invisible to others: 404, exactly as for a lead that does not exist.
    let receipt: Value = app
        .post_lead(Agency::Environment, &lead)
        .await
        .json()
        .await
        .unwrap();
    let lead_id = receipt["lead_id"].as_str().unwrap();
    assert_eq!(
        app.get_lead(Agency::Environment, lead_id).await.status(),
        200
    );
    assert_eq!(app.get_lead(Agency::Water, lead_id).await.status(), 404);
    assert_eq!(
        app.get_lead(Agency::Water, &uuid::Uuid::now_v7().to_string())
            .await
            .status(),
        404
    );
    assert_eq!(
        app.get_lead(Agency::Environment, "not-a-lead-id")
            .await
            .status(),
        404
    );
    app.stop().await;
}

#[tokio::test]
async fn hostile_bodies_get_specific_errors_and_the_server_keeps_serving() {
    let app = app(Backend::Real).spawn().await;
    let client = app.client(Agency::Environment);

    let huge = format!("{{\"summary\": \"{}\"}}", "x".repeat(1024 * 1024 + 1));
    let response = client
        .post(app.url("/v1/leads"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<Value>().await.unwrap()["limit_bytes"],
        1024 * 1024
    );

    let response = client
        .post(app.url("/v1/leads"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    let response = client
        .post(app.url("/v1/leads"))
        .header("content-type", "application/json")
        .body("{\"lead_type\": \"environment.hazardous_waste\",, }")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:leadbridge:problem:malformed-json");
    assert_eq!(problem["byte_offset"], 44, "the second comma");

    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let response = client
        .post(app.url("/v1/leads"))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        400,
        "deep nesting is refused, not followed"
    );

    let response = client
        .post(app.url("/v1/leads"))
        .json(&json!([1, 2, 3]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);

    // After all that, a good lead still goes through.
    assert_eq!(
        app.post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
            .await
            .status(),
        202
    );
    app.stop().await;
}

#[tokio::test]
async fn a_batch_answers_each_lead_and_one_bad_lead_rejects_no_other() {
    let app = app(Backend::Real).spawn().await;
    let good = sample_lead(&unique_case_id());
    let mut invalid = sample_lead(&unique_case_id());
    invalid["location"]["division_code"] = json!("370300");
    let mut foreign = sample_lead(&unique_case_id());
    foreign["source"]["agency"] = json!("water");
    let mut conflicting = good.clone();
    conflicting["summary"] = json!("同一批次中的冲突版本");
    let second_good = sample_lead(&unique_case_id());

    let response = app
        .client(Agency::Environment)
        .post(app.url("/v1/leads/batch"))
        .json(&json!({"leads": [good, invalid, foreign, conflicting, second_good, good]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    let statuses: Vec<i64> = results
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, vec![202, 422, 403, 409, 202, 200]);
    assert_eq!(
        results[1]["problem"]["errors"][0]["code"],
        "division_not_county"
    );
    assert_eq!(results[3]["lead_id"], results[0]["lead_id"]);
    assert_eq!(results[5]["lead_id"], results[0]["lead_id"]);
    for (index, result) in results.iter().enumerate() {
        assert_eq!(result["index"], index);
    }

    let too_many: Vec<Value> = (0..501).map(|_| sample_lead(&unique_case_id())).collect();
    let response = app
        .client(Agency::Environment)
        .post(app.url("/v1/leads/batch"))
        .json(&json!({"leads": too_many}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let (leads,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM leads")
        .fetch_one(app.store.inspection_pool().await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        leads, 2,
        "only the two good leads of the first batch are stored"
    );
    app.stop().await;
}

#[tokio::test]
async fn schemas_openapi_health_readiness_and_metrics_are_served() {
    let app = app(Backend::Real).spawn().await;
    let client = app.pki.client(None);

    let index: Value = client
        .get(app.url("/v1/schemas"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(index["lead_types"].as_array().unwrap().len(), 10);
    let response = client
        .get(app.url("/v1/schemas/land.illegal_mining"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/schema+json"
    );
    let schema: Value = response.json().await.unwrap();
    assert_eq!(
        schema["properties"]["lead_type"]["const"],
        "land.illegal_mining"
    );
    assert_eq!(
        client
            .get(app.url("/v1/schemas/land.unknown"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let openapi: Value = client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/leads",
        "/v1/leads/batch",
        "/v1/leads/{lead_id}",
        "/v1/schemas",
        "/v1/schemas/{lead_type}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(
            openapi["paths"][path].is_object(),
            "openapi.json documents {path}"
        );
    }

    assert_eq!(
        client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["kafka"], "ok");

    assert_eq!(
        app.post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
            .await
            .status(),
        202
    );
    let metrics = client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("leadbridge_leads_accepted_total{agency=\"environment\",lead_type=\"environment.discharge_exceedance\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("leadbridge_outbox_backlog"), "{metrics}");
    assert!(metrics.contains("route=\"/v1/leads\""), "{metrics}");

    let response = client.get(app.url("/no/such/path")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let response = client.delete(app.url("/v1/leads")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    app.stop().await;
}

#[tokio::test]
async fn readiness_fails_while_kafka_is_unreachable() {
    let app = app(Backend::Real)
        .with_settings(|settings| {
            // A port where nothing listens.
            settings.kafka.bootstrap_servers = Some("127.0.0.1:1".into());
            settings.kafka.create_topics = false;
        })
        .spawn()
        .await;
    let response = app
        .pki
        .client(None)
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    // Why Kafka is down goes to the log, not to anonymous callers.
    assert_eq!(body["kafka"], "down", "{body}");
    app.stop().await;
}
