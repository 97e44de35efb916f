//! The HTTP delivery sink against a fake case-management system, over real mutual TLS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use leadbridge::police::sink::{Delivery, DeliveryError, DeliverySink, HttpSink, HttpSinkSettings};
use leadbridge::shared::identity::Principal;
use leadbridge::shared::pki::DevCa;
use serde_json::json;
use tempfile::TempDir;

use crate::fake_cms::{Answer, FakeCms, Mode, ReceivedDelivery};

struct Setup {
    ca: DevCa,
    cms: FakeCms,
    dir: TempDir,
}

impl Setup {
    async fn new() -> Setup {
        let ca = DevCa::generate("fake CMS test CA").unwrap();
        let cms = FakeCms::start(&ca).await;
        Setup {
            ca,
            cms,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn settings(&self) -> HttpSinkSettings {
        self.cms.sink_settings(&self.ca, self.dir.path())
    }

    fn sink(&self) -> HttpSink {
        HttpSink::new(&self.settings()).unwrap()
    }
}

fn delivery(revision: i64) -> Delivery {
    let lead_id = uuid::Uuid::now_v7().to_string();
    Delivery {
        body: json!({
            "lead": {"lead_id": lead_id, "revision": revision, "lead_type": "environment.discharge_exceedance"},
            "assessment": {"priority": "high", "suspected_offences": [{"offence": "污染环境罪", "rules": ["ENV-3"]}]},
            "deadlines": [{"name": "police_decision", "due_at": "2026-03-04T08:00:00Z", "state": "running"}],
        }),
        lead_id,
        revision,
        unit: "370303".into(),
    }
}

async fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_accepted_delivery_returns_the_cms_ref_and_carries_its_idempotency_key_and_unit() {
    let setup = Setup::new().await;
    let sink = setup.sink();
    let delivery = delivery(1);

    let delivered = sink.deliver(&delivery).await.unwrap();

    assert_eq!(delivered.cms_ref, "CMS-1");
    assert_eq!(
        setup.cms.received(),
        vec![ReceivedDelivery {
            lead_id_revision: format!("{}:1", delivery.lead_id),
            unit: "370303".into(),
            body: delivery.body.clone(),
            answer: Answer::Opened("CMS-1".into()),
            connection: 1,
        }]
    );
}

#[tokio::test]
async fn a_repeated_delivery_gets_the_same_case_and_a_new_revision_a_new_one() {
    let setup = Setup::new().await;
    let sink = setup.sink();
    let first = delivery(1);
    let second = Delivery {
        revision: 2,
        ..first.clone()
    };

    let once = sink.deliver(&first).await.unwrap();
    let again = sink.deliver(&first).await.unwrap();
    let revised = sink.deliver(&second).await.unwrap();

    assert_eq!(once, again);
    assert_ne!(revised.cms_ref, once.cms_ref);
    // Three arrivals, counted raw: the repeat reached the CMS and was answered with the case it
    // already had; only the new revision opened a second one.
    let arrivals: Vec<(String, Answer)> = setup
        .cms
        .received()
        .into_iter()
        .map(|received| (received.lead_id_revision, received.answer))
        .collect();
    let key = |revision| format!("{}:{revision}", first.lead_id);
    assert_eq!(
        arrivals,
        vec![
            (key(1), Answer::Opened(once.cms_ref.clone())),
            (key(1), Answer::Repeated(once.cms_ref.clone())),
            (key(2), Answer::Opened(revised.cms_ref.clone())),
        ]
    );
}

#[tokio::test]
async fn a_500_is_a_retryable_status_error_with_an_excerpt_of_the_answer() {
    let setup = Setup::new().await;
    let sink = setup.sink();
    setup.cms.set_mode(Mode::Fail(500));

    let error = sink.deliver(&delivery(1)).await.unwrap_err();

    assert!(
        matches!(&error, DeliveryError::Status { status: 500, excerpt } if excerpt.contains("told to answer 500")),
        "{error}"
    );
    assert!(error.is_retryable());
    assert_eq!(setup.cms.received().len(), 1);
}

#[tokio::test]
async fn a_cms_that_does_not_answer_times_out_within_the_timeout() {
    let setup = Setup::new().await;
    let sink = HttpSink::new(&HttpSinkSettings {
        timeout_ms: 300,
        ..setup.settings()
    })
    .unwrap();
    setup.cms.set_mode(Mode::Hang);

    let started = Instant::now();
    let error = sink.deliver(&delivery(1)).await.unwrap_err();
    let took = started.elapsed();

    assert!(
        matches!(error, DeliveryError::Timeout(timeout) if timeout == Duration::from_millis(300)),
        "{error}"
    );
    assert!(error.is_retryable());
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1_500),
        "took {took:?}"
    );
    assert_eq!(setup.cms.received().len(), 1, "the request did arrive");
}

#[tokio::test]
async fn a_2xx_without_a_cms_ref_is_a_retryable_garbage_error() {
    let setup = Setup::new().await;
    let sink = setup.sink();
    setup.cms.set_mode(Mode::Garbage);

    let error = sink.deliver(&delivery(1)).await.unwrap_err();

    assert!(
        matches!(&error, DeliveryError::Garbage { status: 200, excerpt } if excerpt.starts_with("<html>")),
        "{error}"
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_422_is_a_final_rejection_and_rejections_do_not_open_the_circuit() {
    let setup = Setup::new().await;
    let sink = HttpSink::new(&HttpSinkSettings {
        breaker_failures: 2,
        ..setup.settings()
    })
    .unwrap();
    setup.cms.set_mode(Mode::Fail(422));

    for _ in 0..4 {
        let error = sink.deliver(&delivery(1)).await.unwrap_err();
        assert!(
            matches!(error, DeliveryError::Rejected { status: 422, .. }),
            "{error}"
        );
        assert!(!error.is_retryable());
    }
    assert_eq!(
        setup.cms.received().len(),
        4,
        "every attempt reached the CMS"
    );
}

#[tokio::test]
async fn the_circuit_opens_after_n_failures_refuses_without_contacting_the_cms_then_lets_one_trial_through(
) {
    let setup = Setup::new().await;
    let sink = Arc::new(
        HttpSink::new(&HttpSinkSettings {
            timeout_ms: 1_000,
            breaker_failures: 3,
            breaker_open_ms: 500,
            ..setup.settings()
        })
        .unwrap(),
    );
    setup.cms.set_mode(Mode::Fail(503));

    // Closed: three failures reach the CMS; the third opens the circuit.
    for _ in 0..3 {
        let error = sink.deliver(&delivery(1)).await.unwrap_err();
        assert!(
            matches!(error, DeliveryError::Status { status: 503, .. }),
            "{error}"
        );
    }
    // Open: refused at once, and the CMS hears nothing.
    for _ in 0..5 {
        let started = Instant::now();
        let error = sink.deliver(&delivery(1)).await.unwrap_err();
        let DeliveryError::CircuitOpen { until } = error else {
            panic!("expected an open circuit: {error}");
        };
        assert!(error.is_retryable());
        assert!(started.elapsed() < Duration::from_millis(200));
        let ahead = until - Utc::now();
        assert!(ahead > chrono::TimeDelta::zero() && ahead <= chrono::TimeDelta::milliseconds(500));
    }
    assert_eq!(setup.cms.received().len(), 3);

    // Half-open: one trial reaches the CMS (which hangs); meanwhile others are refused.
    tokio::time::sleep(Duration::from_millis(550)).await;
    setup.cms.set_mode(Mode::Hang);
    let trial = {
        let sink = sink.clone();
        tokio::spawn(async move { sink.deliver(&delivery(1)).await })
    };
    wait_until(|| setup.cms.received().len() == 4).await;
    let error = sink.deliver(&delivery(1)).await.unwrap_err();
    assert!(
        matches!(error, DeliveryError::CircuitOpen { .. }),
        "{error}"
    );
    assert_eq!(setup.cms.received().len(), 4);

    // The trial fails: open again.
    let error = trial.await.unwrap().unwrap_err();
    assert!(matches!(error, DeliveryError::Timeout(_)), "{error}");
    let error = sink.deliver(&delivery(1)).await.unwrap_err();
    assert!(
        matches!(error, DeliveryError::CircuitOpen { .. }),
        "{error}"
    );
    assert_eq!(setup.cms.received().len(), 4);

    // The next trial succeeds: closed, and every delivery passes again.
    setup.cms.set_mode(Mode::Accept);
    tokio::time::sleep(Duration::from_millis(550)).await;
    sink.deliver(&delivery(1)).await.unwrap();
    let (one, two) = (delivery(1), delivery(1));
    let (a, b) = tokio::join!(sink.deliver(&one), sink.deliver(&two));
    a.unwrap();
    b.unwrap();
    let answers: Vec<Answer> = setup
        .cms
        .received()
        .into_iter()
        .map(|received| received.answer)
        .collect();
    assert_eq!(answers.len(), 7, "{answers:?}");
    assert_eq!(
        answers[4..],
        [
            Answer::Opened("CMS-1".into()),
            Answer::Opened("CMS-2".into()),
            Answer::Opened("CMS-3".into())
        ],
        "each delivery after the circuit closed reached the CMS"
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_by_the_cms() {
    let setup = Setup::new().await;
    let other_ca = DevCa::generate("another CA").unwrap();
    let impostor = other_ca
        .issue_client(&Principal::Investigator {
            unit: "370300".into(),
        })
        .unwrap();
    let settings = setup.settings();
    std::fs::write(&settings.client_cert, &impostor.cert_pem).unwrap();
    std::fs::write(&settings.client_key, &impostor.key_pem).unwrap();
    let sink = HttpSink::new(&settings).unwrap();

    let error = sink.deliver(&delivery(1)).await.unwrap_err();

    assert!(matches!(error, DeliveryError::Connect(_)), "{error}");
    assert!(error.is_retryable());
    assert!(setup.cms.received().is_empty());
    let refusals = setup.cms.handshake_errors();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(refusals[0].contains("UnknownIssuer"), "{refusals:?}");
}

#[tokio::test]
async fn a_cms_certificate_from_a_ca_other_than_the_configured_one_is_refused_by_the_sink() {
    let setup = Setup::new().await;
    let other_ca = DevCa::generate("another CA").unwrap();
    let settings = setup.settings();
    std::fs::write(&settings.ca, other_ca.cert_pem()).unwrap();
    let sink = HttpSink::new(&settings).unwrap();

    let error = sink.deliver(&delivery(1)).await.unwrap_err();

    assert!(
        matches!(&error, DeliveryError::Connect(reason) if reason.contains("UnknownIssuer")),
        "{error}"
    );
    assert!(setup.cms.received().is_empty());
}

#[tokio::test]
async fn deliveries_fail_while_the_cms_is_down_and_succeed_after_it_restarts_on_the_same_url() {
    let setup = Setup::new().await;
    let sink = setup.sink();
    let url = setup.cms.url();
    sink.deliver(&delivery(1)).await.unwrap();

    setup.cms.stop().await;
    for _ in 0..2 {
        let error = sink.deliver(&delivery(1)).await.unwrap_err();
        assert!(matches!(error, DeliveryError::Connect(_)), "{error}");
        assert!(error.is_retryable());
    }

    setup.cms.restart().await;
    let delivered = sink.deliver(&delivery(1)).await.unwrap();

    assert_eq!(setup.cms.url(), url);
    assert_eq!(delivered.cms_ref, "CMS-2");
    assert_eq!(setup.cms.received().len(), 2);
}
