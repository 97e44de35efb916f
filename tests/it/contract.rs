//! Every answer is the contract's: control characters and repeated keys are refused with
//! specific errors, every error is problem+json with a `code`, small bodies are bounded, an
//! oversized body gets its 413 (also with `Expect: 100-continue` and when the client sends it
//! all before reading), and `/readyz` tells anonymous callers only up or down.
//!
//! Each case runs on both backends: PostgreSQL + Kafka, and the embedded SQLite + mock broker.

use leadbridge::contract::lead::Agency;
use leadbridge::shared::identity::Principal;
use leadbridge::Roles;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::helpers::{app, read_response, sample_lead, unique_case_id, Backend, TestApp};
use crate::police::{eventually, inbox, investigator};

const CITY_UNIT: &str = "370300";

/// Checks that `response` is a problem document with `status` and `code`, and returns it.
async fn problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "{}", response.url());
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{}",
        response.url()
    );
    let body: Value = response.json().await.expect("a JSON problem document");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert!(body["type"]
        .as_str()
        .unwrap()
        .starts_with("urn:leadbridge:problem:"));
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// The (pointer, code) pairs of a validation problem.
fn errors(problem: &Value) -> Vec<(String, String)> {
    problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {problem}"))
        .iter()
        .map(|e| {
            (
                e["pointer"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn control(pointer: &str) -> (String, String) {
    (pointer.to_owned(), "control_character".to_owned())
}

async fn stored_leads(app: &TestApp) -> i64 {
    let (leads,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM leads")
        .fetch_one(app.store.inspection_pool().await.unwrap())
        .await
        .unwrap();
    leads
}

// ---------------------------------------------------------------------------------------------

/// Puts a control character somewhere into a lead.
type Breakage = fn(&mut Value);

async fn control_characters_in_a_lead_are_refused_with_their_pointer(backend: Backend) {
    let app = app(backend).spawn().await;
    let cases: Vec<(&str, Breakage)> = vec![
        ("/summary", |lead| lead["summary"] = json!("排放口\u{0}")),
        ("/summary", |lead| lead["summary"] = json!("\u{1b}[2J清屏")),
        ("/subjects/0/name", |lead| {
            lead["subjects"][0]["name"] = json!("某公司\u{0}")
        }),
        ("/facts/measurements/0/unit", |lead| {
            lead["facts"]["measurements"][0]["unit"] = json!("mg/L\u{7}")
        }),
        ("/extensions/备注\u{0}", |lead| {
            lead["extensions"] = json!({"备注\u{0}": "键名含空字符"})
        }),
    ];
    for (pointer, break_it) in &cases {
        let mut lead = sample_lead(&unique_case_id());
        break_it(&mut lead);
        let body = problem(
            app.post_lead(Agency::Environment, &lead).await,
            422,
            "validation",
        )
        .await;
        assert!(
            errors(&body).contains(&control(pointer)),
            "{pointer}: {body}"
        );
    }
    // Where nothing else is wrong, it is the only problem.
    let mut lead = sample_lead(&unique_case_id());
    lead["summary"] = json!("排放口\u{0}");
    let body = problem(
        app.post_lead(Agency::Environment, &lead).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(errors(&body), vec![control("/summary")]);

    // Tab, CR and LF are text.
    let mut lead = sample_lead(&unique_case_id());
    lead["summary"] = json!("第一段\r\n\t第二段\n第三段");
    assert_eq!(
        app.post_lead(Agency::Environment, &lead).await.status(),
        202
    );

    // In a batch the bad lead is refused alone.
    let good = sample_lead(&unique_case_id());
    let mut bad = sample_lead(&unique_case_id());
    bad["subjects"][0]["name"] = json!("某公司\u{0}");
    let response = app
        .client(Agency::Environment)
        .post(app.url("/v1/leads/batch"))
        .json(&json!({"leads": [bad, good]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let results: Value = response.json().await.unwrap();
    assert_eq!(results["results"][0]["status"], 422, "{results}");
    assert_eq!(
        errors(&results["results"][0]["problem"]),
        vec![control("/subjects/0/name")]
    );
    assert_eq!(results["results"][1]["status"], 202, "{results}");
    assert_eq!(
        stored_leads(&app).await,
        2,
        "the tab lead and the good neighbour"
    );
    app.stop().await;
}

#[tokio::test]
async fn control_characters_in_a_lead_are_refused_on_postgres_and_kafka() {
    control_characters_in_a_lead_are_refused_with_their_pointer(Backend::Real).await;
}

#[tokio::test]
async fn control_characters_in_a_lead_are_refused_on_the_embedded_default() {
    control_characters_in_a_lead_are_refused_with_their_pointer(Backend::Embedded).await;
}

// ---------------------------------------------------------------------------------------------

async fn repeated_keys_are_refused_with_the_key_and_its_offset(backend: Backend) {
    let app = app(backend).spawn().await;
    let text = serde_json::to_string(&sample_lead(&unique_case_id())).unwrap();

    // Top level: a first "summary" before the lead's own.
    let top = format!("{{\"summary\":\"第一份\",{}", &text[1..]);
    let offset = top.rfind("\"summary\"").unwrap();
    let body = problem(
        app.post_raw("/v1/leads", "application/json", top).await,
        400,
        "duplicate_key",
    )
    .await;
    assert_eq!(body["type"], "urn:leadbridge:problem:duplicate-key");
    assert_eq!(body["key"], "summary");
    assert_eq!(body["byte_offset"], offset);

    // Nested: the contract's example of two agencies in one source.
    let needle = "\"agency\":\"environment\"";
    let at = text.find(needle).unwrap();
    let nested = format!("{}\"agency\":\"land\",{}", &text[..at], &text[at..]);
    let offset = at + "\"agency\":\"land\",".len();
    let body = problem(
        app.post_raw("/v1/leads", "application/json", nested.clone())
            .await,
        400,
        "duplicate_key",
    )
    .await;
    assert_eq!(body["key"], "agency");
    assert_eq!(body["byte_offset"], offset);

    // In a batch: the whole batch, since which lead the key belongs to cannot be trusted.
    let good = serde_json::to_string(&sample_lead(&unique_case_id())).unwrap();
    let batch = format!("{{\"leads\":[{good},{nested}]}}");
    let offset = "{\"leads\":[".len() + good.len() + 1 + (at + "\"agency\":\"land\",".len());
    let body = problem(
        app.post_raw("/v1/leads/batch", "application/json", batch)
            .await,
        400,
        "duplicate_key",
    )
    .await;
    assert_eq!(body["byte_offset"], offset);
    let body = problem(
        app.post_raw(
            "/v1/leads/batch",
            "application/json",
            "{\"leads\": [], \"leads\": []}".into(),
        )
        .await,
        400,
        "duplicate_key",
    )
    .await;
    assert_eq!(body["byte_offset"], 14);
    assert_eq!(stored_leads(&app).await, 0);

    // Deep nesting is still malformed JSON, not a crash.
    let deep = "[".repeat(100_000);
    problem(
        app.post_raw("/v1/leads", "application/json", deep).await,
        400,
        "malformed_json",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn repeated_keys_are_refused_on_postgres_and_kafka() {
    repeated_keys_are_refused_with_the_key_and_its_offset(Backend::Real).await;
}

#[tokio::test]
async fn repeated_keys_are_refused_on_the_embedded_default() {
    repeated_keys_are_refused_with_the_key_and_its_offset(Backend::Embedded).await;
}

// ---------------------------------------------------------------------------------------------

async fn decision_and_reconsideration_bodies_are_bounded_json(backend: Backend) {
    let app = app(backend).roles(Roles::ALL).spawn().await;
    let police = investigator(&app, CITY_UNIT);
    let agency = app.client(Agency::Environment);
    let lead = sample_lead(&unique_case_id());
    let response = app.post_lead(Agency::Environment, &lead).await;
    assert_eq!(response.status(), 202);
    let lead_id = response.json::<Value>().await.unwrap()["lead_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_status(Agency::Environment, &lead_id, "delivered")
        .await;
    eventually("the lead reaches the city unit's inbox", || async {
        inbox(&app, CITY_UNIT)
            .await
            .iter()
            .any(|item| item["lead_id"] == lead_id.as_str())
    })
    .await;
    let decision_url = app.url(&format!("/police/v1/leads/{lead_id}/decision"));
    let reconsideration_url = app.url(&format!("/v1/leads/{lead_id}/reconsideration"));
    let decide = |content_type: &'static str, body: String| {
        police
            .post(&decision_url)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let reconsider = |content_type: &'static str, body: String| {
        agency
            .post(&reconsideration_url)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let json = "application/json";

    // Decisions.
    let body = json!({"decision": "not_filed", "reason": "理由\u{0}"}).to_string();
    let refused = problem(decide(json, body).await.unwrap(), 422, "validation").await;
    assert_eq!(errors(&refused), vec![control("/reason")]);
    let body = json!({"decision": "not_filed", "reason": "理".repeat(2_001)}).to_string();
    let refused = problem(decide(json, body).await.unwrap(), 422, "validation").await;
    assert_eq!(
        errors(&refused),
        vec![("/reason".to_owned(), "max_length".to_owned())]
    );
    let body = r#"{"decision": "filed", "decision": "not_filed", "reason": "x"}"#.to_owned();
    let refused = problem(decide(json, body).await.unwrap(), 400, "duplicate_key").await;
    assert_eq!(refused["key"], "decision");
    assert_eq!(refused["byte_offset"], 22);
    let body = json!({"decision": "not_filed", "reason": "x", "colour": "red"}).to_string();
    problem(decide(json, body).await.unwrap(), 400, "invalid_body").await;
    let body = json!({"decision": "not_filed", "reason": "x"}).to_string();
    problem(
        decide("text/plain", body).await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    let body = json!({"decision": "not_filed", "reason": "理".repeat(30_000)}).to_string();
    let refused = problem(decide(json, body).await.unwrap(), 413, "payload_too_large").await;
    assert_eq!(refused["limit_bytes"], 64 * 1024);

    // None of that decided anything; a good decision still goes through.
    let body = json!({"decision": "not_filed", "reason": "危废数量未达追诉标准"}).to_string();
    assert_eq!(decide(json, body).await.unwrap().status(), 200);
    app.wait_for_status(Agency::Environment, &lead_id, "not_filed")
        .await;

    // Reconsideration requests.
    let body = json!({"reason": "补充\u{0}鉴定"}).to_string();
    let refused = problem(reconsider(json, body).await.unwrap(), 422, "validation").await;
    assert_eq!(errors(&refused), vec![control("/reason")]);
    let body = json!({"reason": "补".repeat(2_001)}).to_string();
    let refused = problem(reconsider(json, body).await.unwrap(), 422, "validation").await;
    assert_eq!(
        errors(&refused),
        vec![("/reason".to_owned(), "max_length".to_owned())]
    );
    let body = r#"{"reason": "a", "reason": "b"}"#.to_owned();
    problem(reconsider(json, body).await.unwrap(), 400, "duplicate_key").await;
    let body = json!({"reason": "x", "urgent": true}).to_string();
    problem(reconsider(json, body).await.unwrap(), 400, "invalid_body").await;
    let body = json!({"reason": "补充鉴定报告"}).to_string();
    problem(
        reconsider("text/plain", body).await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    let body = json!({"reason": "补".repeat(30_000)}).to_string();
    problem(
        reconsider(json, body).await.unwrap(),
        413,
        "payload_too_large",
    )
    .await;

    let body = json!({"reason": "补充鉴定报告显示数量已超过3吨\n\t附件见后"}).to_string();
    assert_eq!(reconsider(json, body).await.unwrap().status(), 202);
    app.wait_for_status(Agency::Environment, &lead_id, "reconsideration_requested")
        .await;
    app.stop().await;
}

#[tokio::test]
async fn decision_and_reconsideration_bodies_are_bounded_json_on_postgres_and_kafka() {
    decision_and_reconsideration_bodies_are_bounded_json(Backend::Real).await;
}

#[tokio::test]
async fn decision_and_reconsideration_bodies_are_bounded_json_on_the_embedded_default() {
    decision_and_reconsideration_bodies_are_bounded_json(Backend::Embedded).await;
}

// ---------------------------------------------------------------------------------------------

async fn framework_rejections_are_problem_json_with_a_code(backend: Backend) {
    let app = app(backend).roles(Roles::ALL).spawn().await;
    let agency = app.client(Agency::Environment);
    for (path, code) in [
        ("/v1/feedback?limit=abc", "invalid_query"),
        ("/v1/feedback?after=1&after=2", "invalid_query"),
        ("/v1/feedback?limit=99999999999999999999", "invalid_query"),
        ("/v1/feedback?after=-3", "invalid_query"),
        ("/v1/leads/%FF%FE", "invalid_path"),
        ("/v1/schemas/%FF", "invalid_path"),
        ("/no/such/route", "not_found"),
    ] {
        let response = agency.get(app.url(path)).send().await.unwrap();
        let body = problem(response, if code == "not_found" { 404 } else { 400 }, code).await;
        assert!(!body["detail"].as_str().unwrap().is_empty(), "{path}");
    }
    let response = investigator(&app, CITY_UNIT)
        .get(app.url("/police/v1/inbox?limit=x"))
        .send()
        .await
        .unwrap();
    problem(response, 400, "invalid_query").await;
    let response = investigator(&app, CITY_UNIT)
        .get(app.url("/police/v1/leads/%FF%FE"))
        .send()
        .await
        .unwrap();
    problem(response, 400, "invalid_path").await;
    let response = agency.delete(app.url("/v1/leads")).send().await.unwrap();
    problem(response, 405, "method_not_allowed").await;
    let response = app
        .pki
        .client(None)
        .get(app.url("/v1/feedback"))
        .send()
        .await
        .unwrap();
    problem(response, 401, "unauthenticated").await;
    // Good queries still work.
    let response = agency
        .get(app.url("/v1/feedback?limit=5&after=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn framework_rejections_are_problem_json_on_postgres_and_kafka() {
    framework_rejections_are_problem_json_with_a_code(Backend::Real).await;
}

#[tokio::test]
async fn framework_rejections_are_problem_json_on_the_embedded_default() {
    framework_rejections_are_problem_json_with_a_code(Backend::Embedded).await;
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 over TLS: what a client sees on the wire, which reqwest hides.

async fn raw_connection(app: &TestApp) -> crate::helpers::RawTls {
    let localhost = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let agency = Principal::Agency(Agency::Environment);
    crate::helpers::raw_tls_from(app, localhost, Some(&agency), &[b"http/1.1"])
        .await
        .expect("a TLS connection to the hub")
}

fn assert_413_problem(status_line: &str, headers: &[(String, String)], body: &[u8]) {
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    assert!(
        headers
            .iter()
            .any(|(name, value)| name == "content-type" && value == "application/problem+json"),
        "{headers:?}"
    );
    let problem: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(problem["code"], "payload_too_large", "{problem}");
}

async fn oversized_bodies_get_their_413_on_the_wire(backend: Backend) {
    let app = app(backend).spawn().await;
    let reconsideration = format!("/v1/leads/{}/reconsideration", uuid::Uuid::now_v7());

    // Expect: 100-continue with a declared length over the limit: the first status line is the
    // 413, never a 100 Continue inviting the body.
    for (path, length) in [
        ("/v1/leads", 1024 * 1024 + 1),
        ("/v1/leads/batch", 16 * 1024 * 1024 + 1),
        (reconsideration.as_str(), 64 * 1024 + 1),
    ] {
        let mut stream = raw_connection(&app).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nexpect: 100-continue\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        let (status_line, headers, body) = read_response(&mut stream).await;
        assert_413_problem(&status_line, &headers, &body);
    }

    // A client that sends all of a 3 MiB body before reading: declared, then chunked. It must
    // be able to finish sending and read the 413, and the connection then serves another request.
    let body = vec![b' '; 3 * 1024 * 1024];
    for (path, chunked) in [
        ("/v1/leads", false),
        ("/v1/leads", true),
        (reconsideration.as_str(), false),
        (reconsideration.as_str(), true),
    ] {
        let mut stream = raw_connection(&app).await;
        let framing = if chunked {
            "transfer-encoding: chunked".to_owned()
        } else {
            format!("content-length: {}", body.len())
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        if chunked {
            for chunk in body.chunks(64 * 1024) {
                stream
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await
                    .unwrap();
                stream.write_all(chunk).await.unwrap();
                stream.write_all(b"\r\n").await.unwrap();
            }
            stream.write_all(b"0\r\n\r\n").await.unwrap();
        } else {
            stream
                .write_all(&body)
                .await
                .expect("the server reads the whole body");
        }
        stream.flush().await.unwrap();
        let (status_line, headers, answer) = read_response(&mut stream).await;
        assert_413_problem(&status_line, &headers, &answer);
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let (status_line, _, _) = read_response(&mut stream).await;
        assert!(
            status_line.starts_with("HTTP/1.1 200"),
            "{path}: {status_line}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_their_413_on_the_wire_on_postgres_and_kafka() {
    oversized_bodies_get_their_413_on_the_wire(Backend::Real).await;
}

#[tokio::test]
async fn oversized_bodies_get_their_413_on_the_wire_on_the_embedded_default() {
    oversized_bodies_get_their_413_on_the_wire(Backend::Embedded).await;
}

// ---------------------------------------------------------------------------------------------

async fn readiness_tells_anonymous_callers_only_up_or_down(backend: Backend) {
    let app = app(backend)
        .with_settings(|settings| {
            // A port where nothing listens: Kafka is down (on the embedded backend too, which
            // then keeps its SQLite database but has no mock broker).
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
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body,
        json!({"status": "not_ready", "database": "ok", "kafka": "down"}),
        "nothing but up or down: {text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn readiness_shows_no_error_text_on_postgres() {
    readiness_tells_anonymous_callers_only_up_or_down(Backend::Real).await;
}

#[tokio::test]
async fn readiness_shows_no_error_text_on_the_embedded_default() {
    readiness_tells_anonymous_callers_only_up_or_down(Backend::Embedded).await;
}

// ---------------------------------------------------------------------------------------------

/// Query values are refused with their control characters, as bodies are, before any of them
/// reaches the database (where PostgreSQL would refuse a NUL with an error of its own).
async fn control_characters_in_query_values_are_refused(backend: Backend) {
    let app = app(backend).roles(Roles::ALL).spawn().await;
    let police = app.pki.client(Some(&Principal::Investigator {
        unit: CITY_UNIT.into(),
    }));
    for query in ["status=%00", "status=delivered%07", "limit=1&sta%1Btus=x"] {
        let response = police
            .get(app.url(&format!("/police/v1/inbox?{query}")))
            .send()
            .await
            .unwrap();
        let refused = problem(response, 400, "invalid_query").await;
        assert!(
            refused["detail"]
                .as_str()
                .unwrap()
                .contains("control character"),
            "{query}: {refused}"
        );
    }
    let response = app
        .client(Agency::Environment)
        .get(app.url("/v1/feedback?after=%00"))
        .send()
        .await
        .unwrap();
    problem(response, 400, "invalid_query").await;
    // Tab, CR and LF are allowed, as in bodies (and simply match nothing here).
    let response = police
        .get(app.url("/police/v1/inbox?status=a%09b"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn control_characters_in_query_values_are_refused_on_postgres() {
    control_characters_in_query_values_are_refused(Backend::Real).await;
}

#[tokio::test]
async fn control_characters_in_query_values_are_refused_on_the_embedded_default() {
    control_characters_in_query_values_are_refused(Backend::Embedded).await;
}
