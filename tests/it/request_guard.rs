//! The request guard and shutdown: a cap on requests in progress, a deadline per request, and a
//! shutdown that lets the requests in progress finish. Both backends, except the deadline inside
//! the database, which needs PostgreSQL's table lock (a SQLite writer that finds the database
//! locked fails fast as contended instead of waiting).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use leadbridge::contract::lead::Agency;
use leadbridge::shared::identity::Principal;
use serde_json::Value;
use sqlx::Connection;
use tokio::io::AsyncWriteExt;

use crate::helpers::{
    app, raw_tls_from, read_response, sample_lead, unique_case_id, Backend, RawTls, TestApp,
};

/// A lead submission whose head and first half of the body are sent; `finish` sends the rest.
struct HalfSent {
    stream: RawTls,
    rest: Vec<u8>,
}

impl HalfSent {
    async fn start(app: &TestApp) -> HalfSent {
        let agency = Principal::Agency(Agency::Environment);
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut stream = raw_tls_from(app, localhost, Some(&agency), &[b"http/1.1"])
            .await
            .unwrap();
        let body = sample_lead(&unique_case_id()).to_string().into_bytes();
        let head = format!(
            "POST /v1/leads HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (first, rest) = body.split_at(body.len() / 2);
        stream.write_all(first).await.unwrap();
        stream.flush().await.unwrap();
        HalfSent {
            stream,
            rest: rest.to_vec(),
        }
    }

    /// Sends the rest and returns the status line.
    async fn finish(mut self) -> String {
        self.stream.write_all(&self.rest).await.unwrap();
        self.stream.flush().await.unwrap();
        read_response(&mut self.stream).await.0
    }
}

async fn problem_code(response: reqwest::Response) -> (u16, Option<String>, String) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    (
        status,
        retry_after,
        problem["code"].as_str().unwrap().to_owned(),
    )
}

async fn the_cap_refuses_one_request_too_many_at_once(backend: Backend) {
    let app = app(backend)
        .with_settings(|settings| settings.server.max_concurrent_requests = 2)
        .spawn()
        .await;
    let first = HalfSent::start(&app).await;
    let second = HalfSent::start(&app).await;
    // The two places are taken once their handlers run; wait until a third is refused.
    let mut refused = None;
    for _ in 0..50 {
        let response = app
            .post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
            .await;
        if response.status() == 503 {
            refused = Some(problem_code(response).await);
            break;
        }
        assert_eq!(response.status(), 202, "a request under the cap is served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        refused,
        Some((503, Some("1".to_owned()), "overloaded".to_owned())),
        "a third request while two are in progress"
    );
    let anonymous = app.pki.client(None);
    for probe in ["/healthz", "/readyz"] {
        let answer = anonymous.get(app.url(probe)).send().await.unwrap();
        assert_eq!(
            answer.status(),
            200,
            "{probe} answers when the hub is saturated"
        );
    }
    let metrics = app
        .pki
        .client(None)
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("leadbridge_requests_refused_total{reason=\"overloaded\"}"),
        "{metrics}"
    );

    assert!(first.finish().await.starts_with("HTTP/1.1 202"));
    assert!(second.finish().await.starts_with("HTTP/1.1 202"));
    let response = app
        .post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
        .await;
    assert_eq!(response.status(), 202, "the places are given back");
    app.stop().await;
}

#[tokio::test]
async fn the_cap_refuses_one_request_too_many_on_postgres() {
    the_cap_refuses_one_request_too_many_at_once(Backend::Real).await;
}

#[tokio::test]
async fn the_cap_refuses_one_request_too_many_on_the_embedded_default() {
    the_cap_refuses_one_request_too_many_at_once(Backend::Embedded).await;
}

/// A handler held up inside the database: the table the ingest writes is locked.
#[tokio::test]
async fn a_request_past_its_deadline_is_answered_and_a_retry_is_safe() {
    let app = app(Backend::Real)
        .with_settings(|settings| settings.server.request_timeout_secs = 1)
        .spawn()
        .await;
    let lead = sample_lead(&unique_case_id());
    let url = app
        .settings
        .database
        .url
        .as_ref()
        .unwrap()
        .expose()
        .to_owned();
    let mut lock = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE leads IN ACCESS EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    let response = app.post_lead(Agency::Environment, &lead).await;
    assert_eq!(
        problem_code(response).await,
        (503, Some("1".to_owned()), "timeout".to_owned())
    );
    sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
    lock.close().await.unwrap();

    // The submission was handed to the group committer, which finishes it once the lock is
    // gone (or it never started): either way a retry is safe and answers with one lead.
    let first = app.post_lead(Agency::Environment, &lead).await;
    assert!(
        matches!(first.status().as_u16(), 200 | 202),
        "the retry is answered: {}",
        first.status()
    );
    let first: Value = first.json().await.unwrap();
    let again = app.post_lead(Agency::Environment, &lead).await;
    assert_eq!(again.status(), 200, "a second retry is the replay");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["lead_id"], first["lead_id"], "one lead, one receipt");
    app.stop().await;
}

/// The deadline covers reading the body: a client that stops halfway is answered, not waited
/// for until its connection's idle timeout.
async fn a_body_still_unsent_at_the_deadline_is_answered(backend: Backend) {
    let app = app(backend)
        .with_settings(|settings| settings.server.request_timeout_secs = 1)
        .spawn()
        .await;
    let mut stalled = HalfSent::start(&app).await;
    let (status_line, _, body) = read_response(&mut stalled.stream).await;
    assert!(status_line.starts_with("HTTP/1.1 503"), "{status_line}");
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "timeout");
    let response = app
        .post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
        .await;
    assert_eq!(response.status(), 202, "the hub carries on");
    app.stop().await;
}

#[tokio::test]
async fn a_body_still_unsent_at_the_deadline_is_answered_on_postgres() {
    a_body_still_unsent_at_the_deadline_is_answered(Backend::Real).await;
}

#[tokio::test]
async fn a_body_still_unsent_at_the_deadline_is_answered_on_the_embedded_default() {
    a_body_still_unsent_at_the_deadline_is_answered(Backend::Embedded).await;
}

async fn shutdown_lets_the_requests_in_progress_finish(backend: Backend) {
    let mut app = app(backend).spawn().await;
    app.keep_databases();
    let in_progress = HalfSent::start(&app).await;
    // Let the handler start reading the body before the shutdown begins.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr = app.addr;
    let url = app
        .settings
        .database
        .url
        .as_ref()
        .unwrap()
        .expose()
        .to_owned();
    // The test app's data directory (and a SQLite file in it) would go with the app.
    let _data_dir = app.keep_data_dir();
    // The relay stops with the API, so the lead accepted during shutdown may stay unpublished
    // (the next start publishes it); what this test checks is that it was answered and stored.
    let (status_line, ()) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            in_progress.finish().await
        },
        app.stop_leaving_work_unfinished(
            "the lead accepted during shutdown is published by the next start"
        ),
    );
    assert!(
        status_line.starts_with("HTTP/1.1 202"),
        "the request in progress at shutdown is answered: {status_line}"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no connection is accepted after shutdown"
    );
    // And it was committed, not cut: the stored lead is there.
    sqlx::any::install_default_drivers();
    let mut connection = sqlx::AnyConnection::connect(&url).await.unwrap();
    let (leads,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM leads")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(leads, 1);
    drop(connection);
    crate::helpers::drop_test_database(&url).await;
}

#[tokio::test]
async fn shutdown_lets_the_requests_in_progress_finish_on_postgres() {
    shutdown_lets_the_requests_in_progress_finish(Backend::Real).await;
}

#[tokio::test]
async fn shutdown_lets_the_requests_in_progress_finish_on_the_embedded_default() {
    shutdown_lets_the_requests_in_progress_finish(Backend::Embedded).await;
}
