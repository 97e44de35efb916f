//! A mixed run on PostgreSQL and Kafka: valid leads interleaved with every hostile case of the
//! hardening work — control characters, repeated keys, oversized leads alone and in batches,
//! plain-text framework rejections, bounded small bodies, `Expect: 100-continue`, ambiguous
//! certificates, slow and idle connections held open the whole time, and two leads stored below
//! the API as an older hub would have taken them (an event Kafka refuses, a NUL the adapter's
//! PostgreSQL cannot store) — ends with every valid lead delivered to the police, the two
//! stored ones visibly `publish_failed` and `dead_lettered`, and every hostile request answered
//! as the contract says.

use std::time::Duration;

use leadbridge::contract::lead::Agency;
use leadbridge::shared::identity::{Principal, ORGANIZATION};
use leadbridge::Roles;
use rcgen::DnType;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    app, raw_tcp_from, raw_tls_from, read_response, sample_lead, unique_case_id, Backend, TestApp,
    ATTACKER_ADDRESS,
};
use crate::permanent::{inject_nul_summary, inject_oversized_event, large_lead, SMALL_LIMIT};
use crate::police::decide;

/// Checks that `response` is problem+json with `status` and `code`; returns the document.
async fn expect_problem(what: &str, response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "{what}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], code, "{what}: {problem}");
    problem
}

/// The (pointer, code) pairs of a validation problem.
fn errors(problem: &Value) -> Vec<(String, String)> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    (
                        e["pointer"].as_str().unwrap().into(),
                        e["code"].as_str().unwrap().into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Submits one valid lead and remembers its id.
async fn submit_valid(app: &TestApp, valid: &mut Vec<String>) {
    let response = app
        .post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
        .await;
    assert_eq!(response.status(), 202, "a valid lead is accepted");
    let receipt: Value = response.json().await.unwrap();
    valid.push(receipt["lead_id"].as_str().unwrap().to_owned());
}

async fn client_post_json(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    let response = app
        .client(Agency::Environment)
        .post(app.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response
}

#[tokio::test]
async fn valid_leads_interleaved_with_every_hostile_case_are_all_delivered_on_postgres() {
    let mut app = app(Backend::Real)
        .roles(Roles::ALL)
        .with_settings(|settings| {
            settings.server.header_read_timeout_secs = 2;
            // Longer than the header timeout and the attackers' patience below, so that only the
            // header timeout can close a trickled head in time.
            settings.server.idle_timeout_secs = 60;
            settings.server.max_connections_per_address = 16;
            settings.limits.max_lead_bytes = SMALL_LIMIT;
        })
        .spawn()
        .await;
    // The two leads stored below the API end publish_failed and dead_lettered.
    app.expect_lasting_failures(2);
    let mut valid = Vec::new();

    // Slow and idle connections from another address, held while everything else happens.
    let mut attackers = Vec::new();
    for _ in 0..8 {
        let mut stream = raw_tls_from(&app, ATTACKER_ADDRESS, None, &[b"http/1.1"])
            .await
            .unwrap();
        stream
            .write_all(b"POST /v1/leads HTTP/1.1\r\nHost: x")
            .await
            .unwrap();
        attackers.push(tokio::spawn(async move {
            let mut buffer = [0u8; 256];
            // The server closes a trickled head after the header timeout: EOF or an error.
            let closed = tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            closed.is_ok()
        }));
    }
    let mut idle_tcp = Vec::new();
    for _ in 0..12 {
        idle_tcp.push(raw_tcp_from(ATTACKER_ADDRESS, app.addr).await);
    }

    // 1. Control characters, in a lead and beside a good lead in a batch.
    submit_valid(&app, &mut valid).await;
    let mut lead = sample_lead(&unique_case_id());
    lead["summary"] = json!("夜间偷排\u{0}");
    let refused = expect_problem(
        "NUL in a summary",
        app.post_lead(Agency::Environment, &lead).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(
        errors(&refused),
        vec![("/summary".to_owned(), "control_character".to_owned())]
    );
    submit_valid(&app, &mut valid).await;
    let mut bell = sample_lead(&unique_case_id());
    bell["subjects"][0]["name"] = json!("淄博某化工\u{7}有限公司");
    let good = sample_lead(&unique_case_id());
    let response = app
        .client(Agency::Environment)
        .post(app.url("/v1/leads/batch"))
        .json(&json!({"leads": [bell, good]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let results: Value = response.json().await.unwrap();
    assert_eq!(results["results"][0]["status"], 422, "{results}");
    assert_eq!(
        errors(&results["results"][0]["problem"]),
        vec![(
            "/subjects/0/name".to_owned(),
            "control_character".to_owned()
        )]
    );
    assert_eq!(results["results"][1]["status"], 202, "{results}");
    valid.push(
        results["results"][1]["lead_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    );

    // 2. Leads Kafka could never take: refused alone and inside a batch; and, stored below
    // the API as an older hub would have, an event Kafka refuses and one the adapter's
    // PostgreSQL cannot store — both end visibly, neither blocks the leads behind it.
    submit_valid(&app, &mut valid).await;
    let refused = expect_problem(
        "a lead over max_lead_bytes",
        app.post_lead(Agency::Environment, &large_lead()).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(
        errors(&refused),
        vec![(String::new(), "lead_too_large".to_owned())]
    );
    let batch = json!({"leads": [sample_lead(&unique_case_id()), large_lead(), sample_lead(&unique_case_id())]});
    let response = client_post_json(&app, "/v1/leads/batch", &batch).await;
    let results: Value = response.json().await.unwrap();
    let statuses: Vec<u64> = (0..3)
        .map(|i| results["results"][i]["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![202, 422, 202], "{results}");
    valid.push(
        results["results"][0]["lead_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    valid.push(
        results["results"][2]["lead_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let never_published = inject_oversized_event(&app).await;
    submit_valid(&app, &mut valid).await;
    let unstorable = inject_nul_summary(&app).await;
    submit_valid(&app, &mut valid).await;

    // 3. A repeated key.
    submit_valid(&app, &mut valid).await;
    let text = sample_lead(&unique_case_id()).to_string();
    let duplicated = text.replacen('{', "{\"lead_type\": \"land.illegal_mining\", ", 1);
    expect_problem(
        "a repeated key",
        app.post_raw("/v1/leads", "application/json", duplicated)
            .await,
        400,
        "duplicate_key",
    )
    .await;

    // 4. Framework rejections, every one problem+json.
    submit_valid(&app, &mut valid).await;
    let client = app.client(Agency::Environment);
    for (query, code) in [
        ("/v1/feedback?limit=abc", "invalid_query"),
        ("/v1/feedback?after=1&after=2", "invalid_query"),
        ("/v1/feedback?limit=99999999999999999999", "invalid_query"),
    ] {
        let response = client.get(app.url(query)).send().await.unwrap();
        expect_problem(query, response, 400, code).await;
    }
    let response = client
        .get(app.url("/v1/leads/%FF%FE"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    // 5. Small bodies: decision and reconsideration are JSON, bounded, free of controls.
    submit_valid(&app, &mut valid).await;
    let target = valid[0].clone();
    app.wait_for_status(Agency::Environment, &target, "delivered")
        .await;
    let police = app.pki.client(Some(&Principal::Investigator {
        unit: "370300".into(),
    }));
    let decision_url = app.url(&format!("/police/v1/leads/{target}/decision"));
    let response = police
        .post(&decision_url)
        .header("content-type", "text/plain")
        .body("not_filed")
        .send()
        .await
        .unwrap();
    expect_problem(
        "a text/plain decision",
        response,
        415,
        "unsupported_media_type",
    )
    .await;
    let response = decide(
        &app,
        "370300",
        &target,
        json!({"decision": "not_filed", "reason": "理由\u{0}"}),
    )
    .await;
    let refused = expect_problem("NUL in a decision reason", response, 422, "validation").await;
    assert_eq!(
        errors(&refused),
        vec![("/reason".to_owned(), "control_character".to_owned())]
    );
    let huge = json!({"decision": "not_filed", "reason": "理".repeat(30_000)}).to_string();
    let response = police
        .post(&decision_url)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    expect_problem("a 90 KB decision", response, 413, "payload_too_large").await;
    let reconsideration = format!("/v1/leads/{target}/reconsideration");
    let body = json!({"reason": "补充\u{1b}[2J鉴定"}).to_string();
    let refused = expect_problem(
        "an escape sequence in a reason",
        app.post_raw(&reconsideration, "application/json", body)
            .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(
        errors(&refused),
        vec![("/reason".to_owned(), "control_character".to_owned())]
    );

    // 6. Oversized bodies on the wire: with Expect: 100-continue, and sent whole before reading.
    submit_valid(&app, &mut valid).await;
    let localhost = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let agency = Principal::Agency(Agency::Environment);
    let mut wire = raw_tls_from(&app, localhost, Some(&agency), &[b"http/1.1"])
        .await
        .unwrap();
    wire.write_all(b"POST /v1/leads HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 20000000\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let (status_line, _, body) = read_response(&mut wire).await;
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["code"],
        "payload_too_large"
    );
    let mut wire = raw_tls_from(&app, localhost, Some(&agency), &[b"http/1.1"])
        .await
        .unwrap();
    let oversized = vec![b' '; 3 * 1024 * 1024];
    wire.write_all(format!("POST /v1/leads HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", oversized.len()).as_bytes())
        .await
        .unwrap();
    wire.write_all(&oversized)
        .await
        .expect("the hub reads what it refuses");
    let (status_line, _, _) = read_response(&mut wire).await;
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");

    // 7. An ambiguous certificate.
    submit_valid(&app, &mut valid).await;
    let issued = app
        .pki
        .ca
        .issue_client_with_subject(&[
            (DnType::OrganizationName, ORGANIZATION),
            (DnType::OrganizationalUnitName, "agency"),
            (DnType::CommonName, "land"),
            (DnType::CustomDnType(vec![2, 5, 4, 3]), "environment"),
        ])
        .unwrap();
    let two_names = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(app.pki.ca.cert_pem().as_bytes()).unwrap(),
        )
        .identity(
            reqwest::Identity::from_pem(
                format!("{}{}", issued.cert_pem, issued.key_pem).as_bytes(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let response = two_names
        .post(app.url("/v1/leads"))
        .json(&sample_lead(&unique_case_id()))
        .send()
        .await
        .unwrap();
    expect_problem(
        "CN=land,CN=environment",
        response,
        401,
        "unusable_certificate",
    )
    .await;

    submit_valid(&app, &mut valid).await;

    // Every valid lead reaches the police; the two stored below the API end visibly; nothing
    // hostile was stored.
    for lead_id in &valid {
        app.wait_for_status_within(
            Agency::Environment,
            lead_id,
            "delivered",
            Duration::from_secs(90),
        )
        .await;
    }
    app.wait_for_status(Agency::Environment, &never_published, "publish_failed")
        .await;
    app.wait_for_status_within(
        Agency::Environment,
        &unstorable,
        "dead_lettered",
        Duration::from_secs(90),
    )
    .await;
    let (stored,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM leads")
        .fetch_one(app.store.inspection_pool().await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        stored as usize,
        valid.len() + 2,
        "only the valid leads, and the two stored below the API, were stored"
    );
    for attacker in attackers {
        assert!(
            attacker.await.unwrap(),
            "a trickled request head is closed by the server"
        );
    }
    // Connections that never start the TLS handshake are closed at the handshake timeout.
    for stream in &mut idle_tcp {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "an idle connection is closed by the server: {read:?}"
        );
    }
    app.stop().await;
}
