//! The police side is observable: `/metrics` of the process running the adapter counts what
//! was consumed, assessed, routed and delivered, the failed deliveries and dead letters, shows
//! each unit's circuit breaker and the adapter group's consumer lag.

use std::collections::BTreeMap;

use leadbridge::contract::lead::Agency;
use leadbridge::police::settings::SinkSettings;
use leadbridge::Roles;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::fake_cms::{FakeCms, Mode};
use crate::helpers::{app, sample_lead, unique_case_id, Backend, TestApp, TestPki};
use crate::police::eventually;

/// The samples of one metric: labels → value.
type Samples = BTreeMap<BTreeMap<String, String>, i64>;

/// Reads `/metrics` as an anonymous scraper does.
async fn scrape(app: &TestApp) -> String {
    let response = app
        .pki
        .client(None)
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("the hub answers /metrics");
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Every sample of `leadbridge_<name>` in a Prometheus text exposition.
fn samples(text: &str, name: &str) -> Samples {
    let full = format!("leadbridge_{name}");
    let mut found = Samples::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, labels) = match series.split_once('{') {
            Some((metric, labels)) => (metric, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != full {
            continue;
        }
        let labels = labels
            .split("\",")
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').expect("label=value");
                (key.to_owned(), value.trim_matches('"').to_owned())
            })
            .collect();
        found.insert(labels, value.parse::<f64>().expect("a number") as i64);
    }
    found
}

/// `samples` as (label values in the order of `keys`) → value, for readable comparisons.
fn by(text: &str, name: &str, keys: &[&str]) -> BTreeMap<Vec<String>, i64> {
    samples(text, name)
        .into_iter()
        .map(|(labels, value)| (keys.iter().map(|k| labels[*k].clone()).collect(), value))
        .collect()
}

fn expect(pairs: &[(&[&str], i64)]) -> BTreeMap<Vec<String>, i64> {
    pairs
        .iter()
        .map(|(labels, value)| (labels.iter().map(|l| l.to_string()).collect(), *value))
        .collect()
}

fn clue_in(division: &str) -> Value {
    // A clue with no threshold crossed: it goes to the district's unit only.
    let mut lead = sample_lead(&unique_case_id());
    lead["kind"] = json!("clue");
    lead["location"]["division_code"] = json!(division);
    lead["facts"]["measurements"][0]["value"] = json!(1.2);
    lead
}

async fn post(app: &TestApp, lead: &Value) -> String {
    let response = app.post_lead(Agency::Environment, lead).await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["lead_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The lag of every partition of the environment leads topic.
fn environment_lag(app: &TestApp, text: &str) -> BTreeMap<String, i64> {
    let topic = app.topic(Agency::Environment);
    samples(text, "police_consumer_lag")
        .into_iter()
        .filter(|(labels, _)| labels["topic"] == topic)
        .map(|(labels, lag)| (labels["partition"].clone(), lag))
        .collect()
}

async fn leads_are_counted_at_every_police_step(backend: Backend) {
    let app = app(backend)
        .roles(Roles::ALL)
        .with_settings(|settings| settings.police.lag_poll_interval_ms = 200)
        .spawn()
        .await;
    // Two transfers over the threshold in 张店 (high: the district and the city unit) and
    // three clues under it in 临淄 (the district unit only).
    let mut lead_ids = Vec::new();
    for _ in 0..2 {
        lead_ids.push(post(&app, &sample_lead(&unique_case_id())).await);
    }
    for _ in 0..3 {
        lead_ids.push(post(&app, &clue_in("370305")).await);
    }
    for lead_id in &lead_ids {
        app.wait_for_status(Agency::Environment, lead_id, "delivered")
            .await;
    }
    // The high leads' second delivery may be recorded after the status first read delivered.
    eventually("every delivery is counted", || async {
        by(&scrape(&app).await, "police_deliveries_total", &["unit"])
            .values()
            .sum::<i64>()
            == 7
    })
    .await;

    let text = scrape(&app).await;
    let topic = app.topic(Agency::Environment);
    assert_eq!(
        by(&text, "police_messages_consumed_total", &["topic"]),
        expect(&[(&[topic.as_str()], 5)]),
        "{text}"
    );
    assert_eq!(
        by(&text, "police_leads_assessed_total", &["priority"]),
        expect(&[(&["high"], 2), (&["medium"], 3)]),
        "{text}"
    );
    assert_eq!(
        by(&text, "police_suspected_offences_total", &["offence"]),
        expect(&[(&["污染环境罪"], 2)]),
        "{text}"
    );
    assert_eq!(
        by(&text, "police_leads_routed_total", &["unit"]),
        expect(&[(&["370300"], 2), (&["370303"], 2), (&["370305"], 3)]),
        "{text}"
    );
    assert_eq!(
        by(&text, "police_deliveries_total", &["unit", "sink"]),
        expect(&[
            (&["370300", "inbox"], 2),
            (&["370303", "inbox"], 2),
            (&["370305", "inbox"], 3),
        ]),
        "{text}"
    );
    assert!(
        samples(&text, "police_delivery_failures_total").is_empty(),
        "{text}"
    );

    // Caught up: once the group committed past the five leads, nothing is left on any
    // partition. Offsets are committed every second after processing.
    eventually("the adapter's lag is 0 on every partition", || async {
        let lag = environment_lag(&app, &scrape(&app).await);
        lag.len() == app.settings.kafka.topic_partitions as usize && lag.values().all(|l| *l == 0)
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn leads_are_counted_at_every_police_step_on_postgres_and_kafka() {
    leads_are_counted_at_every_police_step(Backend::Real).await;
}

#[tokio::test]
async fn leads_are_counted_at_every_police_step_on_the_embedded_default() {
    leads_are_counted_at_every_police_step(Backend::Embedded).await;
}

#[tokio::test]
async fn the_lag_counts_the_leads_a_stuck_adapter_has_not_processed_and_returns_to_zero() {
    let app = app(Backend::Real)
        .roles(Roles::ALL)
        .with_settings(|settings| settings.police.lag_poll_interval_ms = 200)
        .spawn()
        .await;
    // The adapter cannot record a lead while the test holds its table: it waits on the first
    // message and stores no offset, so everything published stays behind.
    let police_url = app.settings.police.database_url.as_ref().unwrap().expose();
    let mut blocker = sqlx::PgConnection::connect(police_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE police_leads IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let mut lead_ids = Vec::new();
    for _ in 0..4 {
        lead_ids.push(post(&app, &clue_in("370305")).await);
    }
    eventually("the four leads are published", || async {
        app.store.outbox_backlog().await.unwrap().0 == 0
    })
    .await;
    eventually("the lag shows the four leads", || async {
        environment_lag(&app, &scrape(&app).await)
            .values()
            .sum::<i64>()
            == 4
    })
    .await;
    let text = scrape(&app).await;
    assert!(
        samples(&text, "police_leads_assessed_total").is_empty(),
        "nothing was recorded while the table was held: {text}"
    );

    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    for lead_id in &lead_ids {
        app.wait_for_status(Agency::Environment, lead_id, "delivered")
            .await;
    }
    eventually("the lag returns to 0", || async {
        let lag = environment_lag(&app, &scrape(&app).await);
        lag.len() == app.settings.kafka.topic_partitions as usize && lag.values().all(|l| *l == 0)
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_case_management_outage_counts_failures_and_the_breaker_opens_then_closes() {
    let pki_for_cms = TestPki::new();
    let cms = FakeCms::start(&pki_for_cms.ca).await;
    let files = tempfile::tempdir().unwrap();
    let mut sink = cms.sink_settings(&pki_for_cms.ca, files.path());
    sink.timeout_ms = 500;
    sink.breaker_failures = 3;
    sink.breaker_open_ms = 500;
    let app = app(Backend::Real)
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
            settings.police.delivery.backoff_max_ms = 200;
            settings.police.delivery.poll_interval_ms = 50;
        })
        .spawn()
        .await;
    let breaker = |text: &str| by(text, "police_breaker_state", &["unit", "state"]);
    let closed = expect(&[
        (&["370303", "closed"], 1),
        (&["370303", "half_open"], 0),
        (&["370303", "open"], 0),
    ]);
    assert_eq!(breaker(&scrape(&app).await), closed, "closed at start");

    cms.stop().await;
    let lead_id = post(&app, &clue_in("370303")).await;
    eventually("the circuit opens", || async {
        breaker(&scrape(&app).await)[&vec!["370303".to_owned(), "open".to_owned()]] == 1
    })
    .await;
    let text = scrape(&app).await;
    let failures = by(
        &text,
        "police_delivery_failures_total",
        &["unit", "retryable"],
    );
    assert!(
        failures[&vec!["370303".to_owned(), "true".to_owned()]] >= 3,
        "three failures open the circuit: {text}"
    );
    assert!(!failures.contains_key(&vec!["370303".to_owned(), "false".to_owned()]));

    cms.restart().await;
    app.wait_for_status(Agency::Environment, &lead_id, "delivered")
        .await;
    let text = scrape(&app).await;
    assert_eq!(breaker(&text), closed, "closed again: {text}");
    let transitions = by(
        &text,
        "police_breaker_transitions_total",
        &["unit", "state"],
    );
    assert!(transitions[&vec!["370303".to_owned(), "open".to_owned()]] >= 1);
    assert!(transitions[&vec!["370303".to_owned(), "half_open".to_owned()]] >= 1);
    assert_eq!(
        transitions[&vec!["370303".to_owned(), "closed".to_owned()]],
        1,
        "one outage, one recovery: {text}"
    );
    assert_eq!(
        by(&text, "police_deliveries_total", &["unit", "sink"]),
        expect(&[(&["370303", "http"], 1)]),
        "{text}"
    );

    // A refusal is final: one failure that retrying cannot help, and a dead letter of the
    // delivery stage in the same series as the consumers' dead letters.
    cms.set_mode(Mode::Fail(422));
    post(&app, &clue_in("370303")).await;
    eventually("the refused delivery is dead-lettered", || async {
        !samples(&scrape(&app).await, "dead_letters_total").is_empty()
    })
    .await;
    let text = scrape(&app).await;
    assert_eq!(
        by(&text, "dead_letters_total", &["stage", "class"]),
        expect(&[(&["police-adapter.deliver", "delivery_failed"], 1)]),
        "{text}"
    );
    let failures = by(
        &text,
        "police_delivery_failures_total",
        &["unit", "retryable"],
    );
    assert_eq!(
        failures[&vec!["370303".to_owned(), "false".to_owned()]],
        1,
        "{text}"
    );
    assert_eq!(
        breaker(&text),
        closed,
        "a refusal shows a working CMS: {text}"
    );
    app.stop_leaving_work_unfinished(
        "the refused delivery is given up: its lead stays received_by_police, by design",
    )
    .await;
}
