//! The Decree 310 clocks across their edges, as the law counts them in Asia/Shanghai: the last
//! minute of the last day and the first minute after, a period whose last day is a weekend or
//! a holiday (moved to the next working day, 民法典 art 203) or an adjusted working Saturday
//! (not moved), a start just after local midnight (still the previous day in UTC), working-day
//! counting, a period no holiday calendar covers, a start in the future. Every row runs through
//! the real stores — the police adapter's and the hub's — on PostgreSQL and on SQLite, with the
//! clock each step is given (`now`), so the times survive both databases exactly.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use leadbridge::contract::deadlines::{ClockName, Clocks, DeadlineSettings};
use leadbridge::contract::events::{DecisionDetails, ReceiptEvent, ReceiptStep, RECEIPT_SCHEMA};
use leadbridge::contract::lead::{Agency, LeadId};
use leadbridge::hub::ingest::lead_event;
use leadbridge::hub::store::leads::LeadToStore;
use leadbridge::hub::store::{Acceptance, AgencyStep, AgencyStepError};
use leadbridge::police::process::{Decision, ForwardTarget};
use leadbridge::police::routing::{Route, Routed};
use leadbridge::police::store::{IncomingLead, PoliceStore, MIGRATIONS};
use leadbridge::shared::store::Store;

use crate::helpers::{fresh_postgres_database, fresh_sqlite_url, sample_lead, unique_case_id};
use crate::permanent::validated;

/// A local time in Asia/Shanghai (`2026-12-04T23:59:00`).
fn local(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&format!("{text}+08:00"))
        .unwrap_or_else(|error| panic!("{text}: {error}"))
        .with_timezone(&Utc)
}

fn clocks() -> Clocks {
    Clocks::load(&DeadlineSettings::default()).unwrap()
}

fn clock<'a>(deadlines: &'a Value, name: &str) -> &'a Value {
    deadlines
        .as_array()
        .and_then(|list| list.iter().find(|clock| clock["name"] == name))
        .unwrap_or_else(|| panic!("no {name} clock in {deadlines}"))
}

/// What a row expects of a clock.
struct Expect {
    state: &'static str,
    last_day: Option<&'static str>,
    late_by_secs: Option<i64>,
}

fn check(case: &str, backend: &str, found: &Value, expect: &Expect) {
    let label = format!("{backend}: {case}: {found}");
    assert_eq!(found["state"], expect.state, "{label}");
    if let Some(day) = expect.last_day {
        assert_eq!(found["last_day"], day, "{label}");
        assert_eq!(
            found["due_at"],
            format!("{day}T23:59:59.999999+08:00"),
            "{label}: due at the last instant of the last day"
        );
    }
    assert_eq!(
        found.get("late_by_secs").and_then(Value::as_i64),
        expect.late_by_secs,
        "{label}"
    );
}

async fn police_stores(dir: &std::path::Path) -> Vec<(&'static str, PoliceStore)> {
    let mut stores = Vec::new();
    for (label, url) in [
        ("postgres", fresh_postgres_database().await),
        ("sqlite", fresh_sqlite_url(dir)),
    ] {
        let store = Store::connect(&url, 2, &MIGRATIONS).await.unwrap();
        stores.push((
            label,
            PoliceStore::new(store, "test.receipts.v1".into(), clocks()),
        ));
    }
    stores
}

fn transfer_to(division: &str) -> IncomingLead {
    let lead_id = LeadId::generate();
    IncomingLead {
        lead_id,
        revision: 1,
        agency: "environment".into(),
        lead_type: "environment.discharge_exceedance".into(),
        kind: "transfer".into(),
        case_id: format!("CASE-{lead_id}"),
        division_code: division.into(),
        summary: "废水总排口总铅浓度超标".into(),
        document: json!({"summary": "废水总排口总铅浓度超标"}),
        content_sha256: "0".repeat(64),
        assessment: json!({"priority": "medium"}),
        priority: "medium".into(),
    }
}

fn to_unit(unit: &str, forwarding_task: bool) -> Routed {
    Routed {
        routes: vec![Route {
            unit: unit.into(),
            sink: "inbox",
        }],
        forwarding_task,
    }
}

/// Records a lead at `received` and delivers it to its inbox at once.
async fn received(store: &PoliceStore, lead: &IncomingLead, routed: &Routed, at: DateTime<Utc>) {
    assert!(store.record_lead(lead, routed, at).await.unwrap());
    let claimed = store
        .claim_deliveries("clock-test", 100, at, at + chrono::Duration::minutes(5))
        .await
        .unwrap();
    for delivery in claimed.iter().filter(|d| d.lead_id == lead.lead_id) {
        assert!(store
            .mark_delivered("clock-test", delivery, "inbox:1", at)
            .await
            .unwrap());
    }
}

/// The police's filing decision (art 8): 3 days from the receipt of a transfer.
#[tokio::test]
async fn the_police_decision_clock_walks_its_edges_in_asia_shanghai_on_both_backends() {
    // (case, receipt, decision, expected)
    let decided: Vec<(&str, &str, &str, Expect)> = vec![
        (
            "decided in the last minute of the last day",
            "2026-12-01T10:00:00",
            "2026-12-04T23:59:00",
            Expect {
                state: "met",
                last_day: Some("2026-12-04"),
                late_by_secs: None,
            },
        ),
        (
            "decided in the first minute after it",
            "2026-12-01T10:00:00",
            "2026-12-05T00:00:00",
            Expect {
                state: "missed",
                last_day: Some("2026-12-04"),
                late_by_secs: Some(1),
            },
        ),
        (
            "received at 23:59 local: the day of receipt does not count",
            "2026-12-01T23:59:00",
            "2026-12-04T23:59:59",
            Expect {
                state: "met",
                last_day: Some("2026-12-04"),
                late_by_secs: None,
            },
        ),
        (
            "received at 00:00:30 local, still the previous day in UTC: the third day is a \
             Saturday, so the period ends on Monday",
            "2026-12-02T00:00:30",
            "2026-12-07T23:59:00",
            Expect {
                state: "met",
                last_day: Some("2026-12-07"),
                late_by_secs: None,
            },
        ),
        (
            "the third day falls in the National Day holiday: the first working day after it",
            "2026-09-29T12:00:00",
            "2026-10-08T23:59:00",
            Expect {
                state: "met",
                last_day: Some("2026-10-08"),
                late_by_secs: None,
            },
        ),
        (
            "the third day falls in the Spring Festival holiday",
            "2026-02-12T08:00:00",
            "2026-02-25T00:00:00",
            Expect {
                state: "missed",
                last_day: Some("2026-02-24"),
                late_by_secs: Some(1),
            },
        ),
        (
            "the third day is an adjusted working Saturday: it stays the last day",
            "2026-02-25T12:00:00",
            "2026-03-01T00:00:00",
            Expect {
                state: "missed",
                last_day: Some("2026-02-28"),
                late_by_secs: Some(1),
            },
        ),
        (
            "a Friday end is not moved by the weekend after it",
            "2026-12-08T09:00:00",
            "2026-12-12T00:00:00",
            Expect {
                state: "missed",
                last_day: Some("2026-12-11"),
                late_by_secs: Some(1),
            },
        ),
    ];
    // (case, receipt, now, expected) for clocks still open.
    let open: Vec<(&str, &str, &str, Expect)> = vec![
        (
            "more than a day before the end",
            "2026-12-01T10:00:00",
            "2026-12-03T23:59:00",
            Expect {
                state: "running",
                last_day: Some("2026-12-04"),
                late_by_secs: None,
            },
        ),
        (
            "within the last day",
            "2026-12-01T10:00:00",
            "2026-12-04T00:00:00",
            Expect {
                state: "due_soon",
                last_day: Some("2026-12-04"),
                late_by_secs: None,
            },
        ),
        (
            "a minute past the end",
            "2026-12-01T10:00:00",
            "2026-12-05T00:01:00",
            Expect {
                state: "overdue",
                last_day: Some("2026-12-04"),
                late_by_secs: Some(60),
            },
        ),
        (
            "a period reaching 2027, which no shipped calendar covers",
            "2026-12-29T10:00:00",
            "2026-12-29T11:00:00",
            Expect {
                state: "no_calendar",
                last_day: None,
                late_by_secs: None,
            },
        ),
        (
            "a receipt dated a day ahead of the adapter's clock",
            "2026-12-02T10:00:00",
            "2026-12-01T10:00:00",
            Expect {
                state: "invalid",
                last_day: None,
                late_by_secs: None,
            },
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (backend, store) in police_stores(dir.path()).await {
        for (case, receipt, decision, expect) in &decided {
            let lead = transfer_to("370303");
            received(&store, &lead, &to_unit("370303", false), local(receipt)).await;
            let visible = vec!["370303".to_owned()];
            let outcome = store
                .decide(
                    lead.lead_id,
                    "370303",
                    &visible,
                    &Decision::Filed {
                        police_case_no: "A370303".into(),
                    },
                    "investigator:370303",
                    local(decision),
                )
                .await
                .unwrap();
            check(
                case,
                backend,
                clock(&outcome["deadlines"], "police_decision"),
                expect,
            );
        }
        for (case, receipt, now, expect) in &open {
            let lead = transfer_to("370303");
            received(&store, &lead, &to_unit("370303", false), local(receipt)).await;
            let visible = vec!["370303".to_owned()];
            let inbox = store
                .inbox("370303", &visible, None, 500, local(now))
                .await
                .unwrap();
            let item = inbox
                .iter()
                .find(|item| item["lead_id"] == json!(lead.lead_id))
                .unwrap_or_else(|| panic!("{backend}: {case}: not in the inbox"));
            let found = clock(&item["deadlines"], "police_decision");
            check(case, backend, found, expect);
            if expect.state == "no_calendar" {
                assert!(found["due_at"].is_null(), "{backend}: {found}");
                assert!(
                    found["note"].as_str().unwrap().contains("2027-01-01"),
                    "{backend}: the note names the date: {found}"
                );
            }
        }
    }
}

/// Forwarding (art 7): 24 hours, not days, from the receipt by a unit not competent.
#[tokio::test]
async fn the_forwarding_clock_counts_24_hours_and_restarts_the_decision_at_the_competent_unit() {
    let rows: Vec<(&str, &str, Expect)> = vec![
        (
            "forwarded at the 24th hour",
            "2026-12-02T10:00:00",
            Expect {
                state: "met",
                last_day: None,
                late_by_secs: None,
            },
        ),
        (
            "forwarded a second later",
            "2026-12-02T10:00:01",
            Expect {
                state: "missed",
                last_day: None,
                late_by_secs: Some(1),
            },
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (backend, store) in police_stores(dir.path()).await {
        for (case, forwarded, expect) in &rows {
            // A lead no unit covers: the fallback unit holds it only to forward it.
            let lead = transfer_to("110105");
            received(
                &store,
                &lead,
                &to_unit("370300", true),
                local("2026-12-01T10:00:00"),
            )
            .await;
            let city = vec!["370300".to_owned()];
            let before = store
                .inbox("370300", &city, None, 500, local("2026-12-01T11:00:00"))
                .await
                .unwrap();
            let item = before
                .iter()
                .find(|item| item["lead_id"] == json!(lead.lead_id))
                .unwrap();
            assert_eq!(item["holder"]["forwarding_task"], true, "{backend}: {item}");
            assert_eq!(clock(&item["deadlines"], "forwarding")["state"], "running");

            let outcome = store
                .forward(
                    lead.lead_id,
                    &city,
                    &ForwardTarget::Unit("370303".into()),
                    Some(&Route {
                        unit: "370303".into(),
                        sink: "inbox",
                    }),
                    "案发地在张店区",
                    "investigator:370300",
                    local(forwarded),
                )
                .await
                .unwrap();
            let found = clock(&outcome["deadlines"], "forwarding");
            check(case, backend, found, expect);
            assert_eq!(
                found["due_at"], "2026-12-02T10:00:00.000000+08:00",
                "{backend}: {found}"
            );
            // The competent unit's 3 days run from the forward.
            let decision = clock(&outcome["deadlines"], "police_decision");
            assert_eq!(decision["last_day"], "2026-12-07", "{backend}: {decision}");
        }

        // A district forwards its lead to another district: it may no longer decide it, and the
        // answer names where it went; the competent district decides.
        let lead = transfer_to("370303");
        received(
            &store,
            &lead,
            &to_unit("370303", false),
            local("2026-12-01T10:00:00"),
        )
        .await;
        let zhangdian = vec!["370303".to_owned()];
        store
            .forward(
                lead.lead_id,
                &zhangdian,
                &ForwardTarget::Unit("370305".into()),
                Some(&Route {
                    unit: "370305".into(),
                    sink: "inbox",
                }),
                "案发地在临淄区",
                "investigator:370303",
                local("2026-12-01T12:00:00"),
            )
            .await
            .unwrap();
        let refused = store
            .decide(
                lead.lead_id,
                "370303",
                &zhangdian,
                &Decision::NotFiled { reason: "r".into() },
                "investigator:370303",
                local("2026-12-01T13:00:00"),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("forwarded to unit 370305"),
            "{backend}: {refused}"
        );
        let delivered = store
            .claim_deliveries(
                "clock-test",
                100,
                local("2026-12-01T12:00:01"),
                local("2026-12-01T12:05:00"),
            )
            .await
            .unwrap();
        let to_linzi = delivered
            .iter()
            .find(|d| d.lead_id == lead.lead_id && d.unit == "370305")
            .unwrap_or_else(|| panic!("{backend}: a delivery to the competent unit"));
        store
            .mark_delivered(
                "clock-test",
                to_linzi,
                "inbox:2",
                local("2026-12-01T12:00:01"),
            )
            .await
            .unwrap();
        let decided = store
            .decide(
                lead.lead_id,
                "370305",
                &["370305".to_owned()],
                &Decision::Filed {
                    police_case_no: "A370305".into(),
                },
                "investigator:370305",
                local("2026-12-01T13:00:00"),
            )
            .await
            .unwrap();
        assert_eq!(decided["status"], "filed", "{backend}: {decided}");

        // Forwarded to an organ outside the system: the police side ends here, and no clock
        // of the police's is left running.
        let lead = transfer_to("370303");
        received(
            &store,
            &lead,
            &to_unit("370303", false),
            local("2026-12-01T10:00:00"),
        )
        .await;
        let outcome = store
            .forward(
                lead.lead_id,
                &zhangdian,
                &ForwardTarget::Organ("北京市公安局东城分局".into()),
                None,
                "案发地在北京市东城区",
                "investigator:370303",
                local("2026-12-01T11:00:00"),
            )
            .await
            .unwrap();
        assert_eq!(outcome["status"], "forwarded", "{backend}: {outcome}");
        assert_eq!(clock(&outcome["deadlines"], "forwarding")["state"], "met");
        assert!(
            !outcome["deadlines"].to_string().contains("police_decision"),
            "{backend}: {outcome}"
        );
        let refused = store
            .decide(
                lead.lead_id,
                "370303",
                &zhangdian,
                &Decision::NotFiled { reason: "r".into() },
                "investigator:370303",
                local("2026-12-01T12:00:00"),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("北京市公安局东城分局"),
            "{backend}: {refused}"
        );
    }
}

async fn hub_stores(dir: &std::path::Path) -> Vec<(&'static str, Store)> {
    vec![
        (
            "postgres",
            leadbridge::hub::store::connect(&fresh_postgres_database().await, 4)
                .await
                .unwrap(),
        ),
        (
            "sqlite",
            leadbridge::hub::store::connect(&fresh_sqlite_url(dir), 1)
                .await
                .unwrap(),
        ),
    ]
}

/// The sample transfer (approved 2026-11-20 16:00 +08:00), accepted by the hub at `at`.
async fn accepted(store: &Store, at: DateTime<Utc>) -> LeadId {
    let lead = validated(sample_lead(&unique_case_id()));
    let factory = |lead_id: LeadId| lead_event(&lead, lead_id, "test.leads.environment.v1");
    let item = LeadToStore {
        lead: &lead,
        new_lead_id: LeadId::generate(),
        message: &factory,
    };
    match store
        .accept_leads(&[item], at)
        .await
        .unwrap()
        .pop()
        .unwrap()
    {
        Acceptance::Accepted { lead_id, .. } => lead_id,
        other => panic!("{other:?}"),
    }
}

fn receipt(lead_id: LeadId, at: DateTime<Utc>, step: ReceiptStep) -> ReceiptEvent {
    ReceiptEvent {
        event_id: uuid::Uuid::now_v7(),
        schema: RECEIPT_SCHEMA.into(),
        lead_id,
        revision: 1,
        at,
        actor: "investigator:370303".into(),
        step,
    }
}

fn decision(name: &str) -> DecisionDetails {
    DecisionDetails {
        unit: "370303".into(),
        decision: name.into(),
        reason: (name != "filed").then(|| "不构成犯罪".to_owned()),
        police_case_no: (name == "filed").then(|| "A3703032026".to_owned()),
        deadlines: json!([]),
    }
}

/// The hub's clocks of a lead at `now`, as its status shows them.
async fn hub_clocks(store: &Store, clocks: &Clocks, lead_id: LeadId, now: DateTime<Utc>) -> Value {
    let view = store
        .lead_for_agency(lead_id, Agency::Environment)
        .await
        .unwrap()
        .unwrap();
    let facts = leadbridge::hub::store::clocks::clock_facts(
        lead_id,
        &view.kind,
        view.revision,
        &view.timeline,
    )
    .unwrap();
    leadbridge::contract::deadlines::to_json(&clocks.clocks(&facts, now))
}

/// The transfer (art 5): 24 hours from the head's approval to the hub's acceptance.
#[tokio::test]
async fn a_transfer_accepted_late_shows_as_late_with_how_late_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let clocks = clocks();
    for (backend, store) in hub_stores(dir.path()).await {
        for (case, accepted_at, expect) in [
            (
                "accepted at the 24th hour",
                "2026-11-21T16:00:00",
                Expect {
                    state: "met",
                    last_day: None,
                    late_by_secs: None,
                },
            ),
            (
                "accepted 90 minutes late",
                "2026-11-21T17:30:00",
                Expect {
                    state: "missed",
                    last_day: None,
                    late_by_secs: Some(5400),
                },
            ),
        ] {
            let lead_id = accepted(&store, local(accepted_at)).await;
            let deadlines =
                hub_clocks(&store, &clocks, lead_id, local("2026-11-22T00:00:00")).await;
            let found = clock(&deadlines, "transfer");
            check(case, backend, found, &expect);
            assert_eq!(
                found["starts_at"], "2026-11-20T16:00:00.000000+08:00",
                "{found}"
            );
        }
    }
}

/// The agency's reconsideration window (art 9 ¶1) runs from its receipt of the non-filing —
/// the moment it reached the feedback — not from the police's decision; a return counts as a
/// non-filing; a deployment may count working days instead.
#[tokio::test]
async fn the_reconsideration_window_runs_from_the_agencys_receipt_on_both_backends() {
    let calendar_days = clocks();
    let working_days = Clocks::load(&DeadlineSettings {
        working_days: vec![ClockName::ReconsiderationRequest],
        ..DeadlineSettings::default()
    })
    .unwrap();
    // (case, clocks, decision, decided, notified, request, allowed)
    let rows = [
        (
            "asked in the last minute, four days after the police decided",
            &calendar_days,
            "not_filed",
            "2026-11-27T09:00:00",
            "2026-12-01T20:00:00",
            "2026-12-04T23:59:00",
            true,
        ),
        (
            "asked in the first minute after",
            &calendar_days,
            "not_filed",
            "2026-11-27T09:00:00",
            "2026-12-01T20:00:00",
            "2026-12-05T00:00:00",
            false,
        ),
        (
            "a return is a non-filing for art 9",
            &calendar_days,
            "returned",
            "2026-12-01T09:00:00",
            "2026-12-01T09:00:05",
            "2026-12-04T23:59:59",
            true,
        ),
        (
            "three working days from a Friday end on Wednesday",
            &working_days,
            "not_filed",
            "2026-12-04T10:00:00",
            "2026-12-04T10:00:01",
            "2026-12-09T23:59:00",
            true,
        ),
        (
            "and not on Thursday",
            &working_days,
            "not_filed",
            "2026-12-04T10:00:00",
            "2026-12-04T10:00:01",
            "2026-12-10T00:00:00",
            false,
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (backend, store) in hub_stores(dir.path()).await {
        for (case, clocks, name, decided, notified, request, allowed) in rows {
            let lead_id = accepted(&store, local("2026-11-20T17:00:00")).await;
            let step = match name {
                "returned" => ReceiptStep::Returned(decision(name)),
                _ => ReceiptStep::NotFiled(decision(name)),
            };
            store
                .apply_receipt(&receipt(lead_id, local(decided), step), local(notified))
                .await
                .unwrap();
            let window = hub_clocks(&store, clocks, lead_id, local(notified)).await;
            let window = clock(&window, "reconsideration_request");
            assert_eq!(
                window["starts_at"],
                format!("{notified}.000000+08:00"),
                "{backend}: {case}: {window}"
            );
            let outcome = store
                .request_reconsideration(
                    lead_id,
                    Agency::Environment,
                    "证据足以证明涉嫌犯罪",
                    local(request),
                    clocks,
                    |revision| leadbridge::shared::outbox::OutboxMessage {
                        event_id: uuid::Uuid::now_v7().to_string(),
                        topic: "test.leads.environment.v1".into(),
                        payload: format!("{{\"revision\": {revision}}}").into_bytes(),
                        headers: vec![],
                    },
                )
                .await;
            match (allowed, outcome) {
                (true, Ok(_)) => {
                    let after = hub_clocks(&store, clocks, lead_id, local(request)).await;
                    assert_eq!(
                        clock(&after, "reconsideration_request")["state"],
                        "met",
                        "{backend}: {case}: {after}"
                    );
                    assert_eq!(
                        clock(&after, "police_reconsideration")["state"],
                        "running",
                        "{backend}: {case}"
                    );
                }
                (false, Err(leadbridge::hub::store::ReconsiderationError::NotAllowed(why))) => {
                    assert!(why.contains("closed at"), "{backend}: {case}: {why}")
                }
                (allowed, other) => {
                    panic!("{backend}: {case}: allowed {allowed}, got {other:?}")
                }
            }
        }
    }
}

/// The agency's hand-over after filing (art 12) and its 立案监督 request after an upheld
/// non-filing (art 9 ¶2): 3 days each from its receipt of the answer, recorded by the agency.
#[tokio::test]
async fn handover_and_supervision_request_clocks_walk_their_edges_on_both_backends() {
    let clocks = clocks();
    let dir = tempfile::tempdir().unwrap();
    for (backend, store) in hub_stores(dir.path()).await {
        // Filing notified on 2026-09-29: the third day is in the National Day holiday.
        for (case, done, expect) in [
            (
                "handed over in the last minute of the moved last day",
                "2026-10-08T23:59:00",
                Expect {
                    state: "met",
                    last_day: Some("2026-10-08"),
                    late_by_secs: None,
                },
            ),
            (
                "handed over in the first minute after",
                "2026-10-09T00:00:00",
                Expect {
                    state: "missed",
                    last_day: Some("2026-10-08"),
                    late_by_secs: Some(1),
                },
            ),
        ] {
            let lead_id = accepted(&store, local("2026-09-28T09:00:00")).await;
            let filed = receipt(
                lead_id,
                local("2026-09-29T11:00:00"),
                ReceiptStep::Filed(decision("filed")),
            );
            store
                .apply_receipt(&filed, local("2026-09-29T12:00:00"))
                .await
                .unwrap();
            let deadlines = store
                .record_agency_step(
                    lead_id,
                    Agency::Environment,
                    AgencyStep::Handover,
                    local(done),
                    json!({"items": "涉案物品清单第1-3项"}),
                    local("2026-10-10T09:00:00"),
                    &clocks,
                )
                .await
                .unwrap();
            let found = clock(&deadlines, "handover");
            check(case, backend, found, &expect);
            assert!(
                found["note"].as_str().unwrap().contains("2026-10-02"),
                "{backend}: the note says the end moved: {found}"
            );
            // Once only.
            let again = store
                .record_agency_step(
                    lead_id,
                    Agency::Environment,
                    AgencyStep::Handover,
                    local(done),
                    json!({"items": "again"}),
                    local("2026-10-10T09:00:00"),
                    &clocks,
                )
                .await;
            assert!(
                matches!(again, Err(AgencyStepError::NotAllowed(_))),
                "{backend}: {again:?}"
            );
        }

        // Reconsideration upheld, notified on Wednesday 2026-02-25: the third day is an
        // adjusted working Saturday, 2026-02-28.
        for (case, done, expect) in [
            (
                "asked on the adjusted working Saturday",
                "2026-02-28T23:59:00",
                Expect {
                    state: "met",
                    last_day: Some("2026-02-28"),
                    late_by_secs: None,
                },
            ),
            (
                "asked on the Sunday after",
                "2026-03-01T00:00:00",
                Expect {
                    state: "missed",
                    last_day: Some("2026-02-28"),
                    late_by_secs: Some(1),
                },
            ),
        ] {
            let lead_id = accepted(&store, local("2026-02-16T09:00:00")).await;
            let not_filed = receipt(
                lead_id,
                local("2026-02-17T09:00:00"),
                ReceiptStep::NotFiled(decision("not_filed")),
            );
            store
                .apply_receipt(&not_filed, local("2026-02-17T09:00:01"))
                .await
                .unwrap();
            store
                .request_reconsideration(
                    lead_id,
                    Agency::Environment,
                    "理由",
                    local("2026-02-23T09:00:00"),
                    &clocks,
                    |_| leadbridge::shared::outbox::OutboxMessage {
                        event_id: uuid::Uuid::now_v7().to_string(),
                        topic: "test.leads.environment.v1".into(),
                        payload: b"{}".to_vec(),
                        headers: vec![],
                    },
                )
                .await
                .unwrap();
            let upheld = receipt(
                lead_id,
                local("2026-02-25T11:00:00"),
                ReceiptStep::Reconsidered(decision("not_filed")),
            );
            store
                .apply_receipt(&upheld, local("2026-02-25T12:00:00"))
                .await
                .unwrap();
            let deadlines = store
                .record_agency_step(
                    lead_id,
                    Agency::Environment,
                    AgencyStep::SupervisionRequest,
                    local(done),
                    json!({"procuratorate": "淄博市张店区人民检察院", "reason": "理由"}),
                    local("2026-03-02T09:00:00"),
                    &clocks,
                )
                .await
                .unwrap();
            check(
                case,
                backend,
                clock(&deadlines, "supervision_request"),
                &expect,
            );
            assert_eq!(
                clock(&deadlines, "police_reconsideration")["state"],
                "met",
                "{backend}: answered within 3 days of 2026-02-23: {deadlines}"
            );
        }

        // A step the lead's answer does not allow, and a time that cannot be right.
        let lead_id = accepted(&store, local("2026-12-01T09:00:00")).await;
        let refused = store
            .record_agency_step(
                lead_id,
                Agency::Environment,
                AgencyStep::Handover,
                local("2026-12-01T10:00:00"),
                json!({"items": "x"}),
                local("2026-12-01T10:00:00"),
                &clocks,
            )
            .await;
        assert!(
            matches!(&refused, Err(AgencyStepError::NotAllowed(why)) if why.contains("filing")),
            "{backend}: {refused:?}"
        );
        let filed = receipt(
            lead_id,
            local("2026-12-02T09:00:00"),
            ReceiptStep::Filed(decision("filed")),
        );
        store
            .apply_receipt(&filed, local("2026-12-02T09:00:01"))
            .await
            .unwrap();
        for (done, code) in [
            ("2026-12-01T10:00:00", "time_order"),
            ("2026-12-03T10:00:00", "future_time"),
        ] {
            let refused = store
                .record_agency_step(
                    lead_id,
                    Agency::Environment,
                    AgencyStep::Handover,
                    local(done),
                    json!({"items": "x"}),
                    local("2026-12-02T10:00:00"),
                    &clocks,
                )
                .await;
            match refused {
                Err(AgencyStepError::Invalid(problems)) => {
                    assert_eq!(problems[0].code, code, "{backend}: {done}")
                }
                other => panic!("{backend}: {done}: {other:?}"),
            }
        }
    }
}
