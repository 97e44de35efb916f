//! The police half end to end: agency POST → Kafka → adapter (assess, route, deliver) →
//! investigator inbox → decision → receipts → the agency's feedback and the lead's timeline.
//! Real PostgreSQL (one database for the hub, one for the adapter), real Kafka, real mTLS.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use leadbridge::contract::lead::Agency;
use leadbridge::shared::identity::Principal;
use leadbridge::Roles;
use serde_json::{json, Value};

use crate::helpers::{app, sample_lead, unique_case_id, Backend, TestApp};

/// A lead of `lead_type` located in `division`, with facts that cross the named rule.
pub fn lead_of_type(lead_type: &str, division: &str, facts: Value) -> (Agency, Value) {
    let agency: Agency = lead_type.split('.').next().unwrap().parse().unwrap();
    let mut lead = sample_lead(&unique_case_id());
    lead["lead_type"] = json!(lead_type);
    lead["source"]["agency"] = json!(agency);
    lead["location"]["division_code"] = json!(division);
    lead["facts"] = facts;
    (agency, lead)
}

/// (lead type, division, facts, a rule the assessment must cite, or none).
fn one_lead_per_type() -> Vec<(&'static str, &'static str, Value, Option<&'static str>)> {
    vec![
        (
            "environment.discharge_exceedance",
            "370302",
            json!({"unit_type": "key_discharger", "measurements": [{"pollutant_code": "w20120", "value": 3.6, "limit": 1.0, "unit": "mg/L", "sampled_at": "2026-11-18T22:40:00+08:00", "method": "manual"}]}),
            Some("ENV-3"),
        ),
        (
            "environment.hazardous_waste",
            "370303",
            json!({"waste_code": "HW08", "quantity_t": 5.0, "disposal": "dump"}),
            Some("ENV-2"),
        ),
        (
            "environment.monitoring_tampering",
            "370304",
            json!({"unit_type": "key_discharger", "station_mn": "370304A0000000000000001", "method": "data_altered", "pollutant_codes": ["w01018"]}),
            Some("ENV-7"),
        ),
        (
            "environment.covert_discharge",
            "370305",
            json!({"method": "hidden_pipe", "substance_class": "toxic"}),
            Some("ENV-5"),
        ),
        (
            "land.farmland_occupation",
            "370306",
            json!({"basic_farmland_m2": 4000.0, "other_cultivated_m2": 0, "public_welfare_forest_m2": 0, "commercial_forest_m2": 0, "grassland_m2": 0, "use_changed": true, "destroyed": true, "prior_penalties_2y": 0}),
            Some("LAND-1"),
        ),
        (
            "land.illegal_mining",
            "370321",
            json!({"mineral": "石灰岩", "value_cny": 150000, "in_restricted_zone": false, "prior_penalties_2y": 0}),
            Some("MIN-1"),
        ),
        (
            "safety.major_accident",
            "370322",
            json!({"deaths": 1, "serious_injuries": 0, "direct_loss_cny": 200000}),
            Some("SAF-1"),
        ),
        (
            "safety.hazardous_operation",
            "370323",
            json!({"trigger": "monitoring_disabled"}),
            Some("DANGER-1"),
        ),
        (
            "water.illegal_sand_mining",
            "370303",
            json!({"value_cny": 120000, "in_river_management_area": true, "has_permit": false, "in_prohibited_zone_or_period": false, "prior_penalties_2y": 0, "flood_safety_harm_report": false}),
            Some("SAND-1"),
        ),
        (
            "water.facility_damage",
            "370305",
            json!({"facility": "堤防", "direct_loss_cny": 50000}),
            None,
        ),
    ]
}

pub fn investigator(app: &TestApp, unit: &str) -> reqwest::Client {
    app.pki.client(Some(&Principal::Investigator {
        unit: unit.to_owned(),
    }))
}

pub async fn inbox(app: &TestApp, unit: &str) -> Vec<Value> {
    let body: Value = investigator(app, unit)
        .get(app.url("/police/v1/inbox"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["leads"].as_array().cloned().unwrap_or_default()
}

/// Waits until `check` holds, polling.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn decide(app: &TestApp, unit: &str, lead_id: &str, body: Value) -> reqwest::Response {
    investigator(app, unit)
        .post(app.url(&format!("/police/v1/leads/{lead_id}/decision")))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn all_feedback(app: &TestApp, agency: Agency) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = app
            .client(agency)
            .get(app.url(&format!("/v1/feedback?after={cursor}&limit=3")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let batch = page["items"].as_array().unwrap().clone();
        if batch.is_empty() {
            return items;
        }
        cursor = page["next"].as_str().unwrap().to_owned();
        items.extend(batch);
    }
}

#[tokio::test]
async fn every_lead_type_reaches_the_right_inbox_with_its_assessment_and_decisions_flow_back() {
    let app = app(Backend::Real).roles(Roles::ALL).spawn().await;
    let mut submitted = Vec::new();
    for (lead_type, division, facts, rule) in one_lead_per_type() {
        let (agency, lead) = lead_of_type(lead_type, division, facts);
        let response = app.post_lead(agency, &lead).await;
        assert_eq!(
            response.status(),
            202,
            "{lead_type}: {}",
            response.text().await.unwrap()
        );
        let receipt: Value = response.json().await.unwrap();
        submitted.push((
            lead_type,
            division,
            rule,
            agency,
            receipt["lead_id"].as_str().unwrap().to_owned(),
        ));
    }

    for (lead_type, division, rule, agency, lead_id) in &submitted {
        let status = app.wait_for_status(*agency, lead_id, "delivered").await;
        let events: Vec<&str> = status["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert!(
            events.starts_with(&["received", "published", "received_by_police"]),
            "{lead_type}: {events:?}"
        );
        let priority = status["assessment"]["priority"]
            .as_str()
            .unwrap()
            .to_owned();

        let unit_inbox = inbox(&app, division).await;
        let item = unit_inbox
            .iter()
            .find(|item| item["lead_id"] == *lead_id)
            .unwrap_or_else(|| panic!("{lead_type} is not in unit {division}'s inbox"));
        assert_eq!(
            item["assessment"], status["assessment"],
            "{lead_type}: the agency sees the police's assessment"
        );
        let cited: Vec<&str> = item["assessment"]["suspected_offences"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|offence| {
                offence["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap())
            })
            .collect();
        match rule {
            Some(rule) => {
                assert!(
                    cited.contains(rule),
                    "{lead_type}: expected {rule}, got {cited:?}"
                );
                assert_eq!(priority, "high", "{lead_type}");
                let city = inbox(&app, "370300").await;
                assert!(
                    city.iter().any(|i| i["lead_id"] == *lead_id),
                    "{lead_type}: high priority also reaches the city unit"
                );
            }
            None => {
                assert!(
                    cited.is_empty(),
                    "{lead_type}: no threshold rule applies, got {cited:?}"
                );
                assert_ne!(priority, "high");
            }
        }
        assert_eq!(item["deadlines"][0]["name"], "police_decision");
        assert_eq!(item["deadlines"][0]["state"], "running");
        // Another county unit never sees it.
        let other = if *division == "370323" {
            "370302"
        } else {
            "370323"
        };
        assert!(
            inbox(&app, other)
                .await
                .iter()
                .all(|i| i["lead_id"] != *lead_id),
            "{lead_type} leaked to {other}"
        );
    }

    // Decisions, in the unit that received each lead.
    let (_, discharge_division, _, _, filed_id) = &submitted[0];
    let (_, waste_division, _, _, not_filed_id) = &submitted[1];
    let (_, tampering_division, _, _, returned_id) = &submitted[2];

    let response = decide(
        &app,
        discharge_division,
        filed_id,
        json!({"decision": "filed"}),
    )
    .await;
    assert_eq!(response.status(), 422, "filed needs the police case number");
    let response = decide(
        &app,
        discharge_division,
        filed_id,
        json!({"decision": "filed", "police_case_no": "淄公(张)立字[2026]1153号"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let response = decide(
        &app,
        discharge_division,
        filed_id,
        json!({"decision": "not_filed", "reason": "改主意"}),
    )
    .await;
    assert_eq!(response.status(), 409, "a decision is final");
    assert_eq!(
        decide(
            &app,
            "370323",
            filed_id,
            json!({"decision": "filed", "police_case_no": "x"})
        )
        .await
        .status(),
        404,
        "a unit decides only on leads delivered to it"
    );

    assert_eq!(
        decide(
            &app,
            waste_division,
            not_filed_id,
            json!({"decision": "not_filed"})
        )
        .await
        .status(),
        422
    );
    let response = decide(
        &app,
        waste_division,
        not_filed_id,
        json!({"decision": "not_filed", "reason": "危废数量未达追诉标准"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let response = decide(
        &app,
        tampering_division,
        returned_id,
        json!({"decision": "returned", "reason": "属行政违法，退回环保部门处理"}),
    )
    .await;
    assert_eq!(response.status(), 200);

    app.wait_for_status(Agency::Environment, filed_id, "filed")
        .await;
    app.wait_for_status(Agency::Environment, not_filed_id, "not_filed")
        .await;
    app.wait_for_status(Agency::Environment, returned_id, "returned")
        .await;

    // Reconsideration: only after a non-filing, then the police answer once more.
    let reconsider = |lead_id: &str| {
        app.client(Agency::Environment)
            .post(app.url(&format!("/v1/leads/{lead_id}/reconsideration")))
            .json(&json!({"reason": "补充鉴定报告显示数量已超过3吨"}))
            .send()
    };
    assert_eq!(reconsider(filed_id).await.unwrap().status(), 409);
    assert_eq!(reconsider(not_filed_id).await.unwrap().status(), 202);
    assert_eq!(
        reconsider(not_filed_id).await.unwrap().status(),
        409,
        "one request per non-filing"
    );
    eventually(
        "the adapter receives the reconsideration request",
        || async {
            inbox(&app, waste_division).await.iter().any(|i| {
                i["lead_id"] == *not_filed_id && i["status"] == "reconsideration_requested"
            })
        },
    )
    .await;
    let response = decide(
        &app,
        waste_division,
        not_filed_id,
        json!({"decision": "returned", "reason": "x"}),
    )
    .await;
    assert_eq!(
        response.status(),
        409,
        "a reconsideration ends in filed or not_filed"
    );
    let response = decide(
        &app,
        waste_division,
        not_filed_id,
        json!({"decision": "filed", "police_case_no": "淄公(张)立字[2026]1201号"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let status = app
        .wait_for_status(Agency::Environment, not_filed_id, "reconsidered")
        .await;
    let events: Vec<&str> = status["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        events.ends_with(&["not_filed", "reconsideration_requested", "reconsidered"]),
        "{events:?}"
    );
    let deadlines: HashMap<&str, &str> = status["deadlines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].as_str().unwrap(), d["state"].as_str().unwrap()))
        .collect();
    assert_eq!(deadlines["police_decision"], "met");
    assert_eq!(deadlines["reconsideration_request"], "met");
    assert_eq!(deadlines["police_reconsideration"], "met");
    // The request's arrival is on the adapter's ledger, where its clock starts.
    let police = app.police_store.as_ref().unwrap().store();
    let (requested,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM log_trail WHERE action = 'lead.reconsideration_requested' \
         AND CAST(lead_id AS TEXT) = $1 AND actor = 'agency:environment'",
    )
    .bind(not_filed_id)
    .fetch_one(police.inspection_pool().await.unwrap())
    .await
    .unwrap();
    assert_eq!(requested, 1, "the adapter's ledger has the request once");
    leadbridge::shared::audit::verify(police).await.unwrap();

    // The agency's steps after an answer, over the wire: a hand-over once the police filed
    // (here on reconsideration), a 立案监督 request after a return, once each; a return can be
    // reconsidered too (art 9).
    let agency_step = |lead_id: &str, step: &str, body: Value| {
        app.client(Agency::Environment)
            .post(app.url(&format!("/v1/leads/{lead_id}/{step}")))
            .json(&body)
            .send()
    };
    let handover = json!({"items": "涉案物品清单第1-4项", "received_by": "张警官"});
    let response = agency_step(not_filed_id, "handover", handover.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let recorded: Value = response.json().await.unwrap();
    let handover_clock = recorded["deadlines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "handover")
        .unwrap();
    assert_eq!(handover_clock["state"], "met", "{recorded}");
    assert_eq!(
        agency_step(not_filed_id, "handover", handover)
            .await
            .unwrap()
            .status(),
        409
    );
    let supervision =
        json!({"procuratorate": "淄博市博山区人民检察院", "reason": "不予立案理由不成立"});
    assert_eq!(
        agency_step(not_filed_id, "supervision-request", supervision.clone())
            .await
            .unwrap()
            .status(),
        409,
        "filed on reconsideration: nothing to supervise"
    );
    let future =
        json!({"procuratorate": "x", "reason": "y", "requested_at": "2099-01-01T00:00:00+08:00"});
    let response = agency_step(returned_id, "supervision-request", future)
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["code"], "future_time", "{problem}");
    assert_eq!(
        agency_step(returned_id, "handover", json!({"items": "x"}))
            .await
            .unwrap()
            .status(),
        409,
        "no hand-over without a filing"
    );
    assert_eq!(
        reconsider(returned_id).await.unwrap().status(),
        202,
        "a return is reconsidered like a non-filing"
    );

    // A unit forwards a lead outside its jurisdiction (art 7): the competent unit receives it
    // and decides; the unit that forwarded it is told where it went.
    let (_, covert_division, _, _, forwarded_id) = &submitted[3];
    let forward = |unit: &str, body: Value| {
        investigator(&app, unit)
            .post(app.url(&format!("/police/v1/leads/{forwarded_id}/forward")))
            .json(&body)
            .send()
    };
    let response = forward(covert_division, json!({"to_unit": "379999", "reason": "r"}))
        .await
        .unwrap();
    assert_eq!(response.status(), 422, "an unknown unit");
    let response = forward(
        covert_division,
        json!({"to_unit": "370321", "to_organ": "x", "reason": "r"}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 422, "one target");
    let response = forward(
        covert_division,
        json!({"to_unit": "370321", "reason": "暗管位于桓台县境内"}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let response = decide(
        &app,
        covert_division,
        forwarded_id,
        json!({"decision": "not_filed", "reason": "r"}),
    )
    .await;
    assert_eq!(response.status(), 409);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("370321"),
        "{problem}"
    );
    let status = app
        .wait_for_status(Agency::Environment, forwarded_id, "forwarded")
        .await;
    eventually("the competent unit receives the forwarded lead", || async {
        inbox(&app, "370321")
            .await
            .iter()
            .any(|i| i["lead_id"] == *forwarded_id)
    })
    .await;
    let forwarding = status["deadlines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "forwarding")
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(forwarding["state"], "met", "{status}");
    let response = decide(
        &app,
        "370321",
        forwarded_id,
        json!({"decision": "filed", "police_case_no": "桓公立字[2026]88号"}),
    )
    .await;
    assert_eq!(response.status(), 200);

    // The agency's feedback: every receipt and decision on its own leads, oldest first.
    let feedback = all_feedback(&app, Agency::Environment).await;
    let about = |lead_id: &str| -> Vec<String> {
        feedback
            .iter()
            .filter(|item| item["lead_id"] == lead_id)
            .map(|item| item["event"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        about(filed_id).first().map(String::as_str),
        Some("received_by_police")
    );
    assert!(about(filed_id).contains(&"filed".to_owned()));
    let filed = feedback
        .iter()
        .find(|i| i["lead_id"] == *filed_id && i["event"] == "filed")
        .unwrap();
    assert_eq!(filed["police_case_no"], "淄公(张)立字[2026]1153号");
    let not_filed = feedback
        .iter()
        .find(|i| i["lead_id"] == *not_filed_id && i["event"] == "not_filed")
        .unwrap();
    assert_eq!(not_filed["reason"], "危废数量未达追诉标准");
    assert!(about(not_filed_id).contains(&"reconsidered".to_owned()));
    assert!(about(returned_id).contains(&"returned".to_owned()));
    assert!(
        about(forwarded_id).contains(&"forwarded".to_owned()),
        "the agency is notified of the forward"
    );
    assert!(
        feedback.iter().all(
            |item| submitted
                .iter()
                .any(|(lead_type, _, _, agency, id)| item["lead_id"] == *id
                    && *agency == Agency::Environment
                    && lead_type.starts_with("environment"))
        ),
        "an agency sees only its own leads' feedback"
    );
    let water = all_feedback(&app, Agency::Water).await;
    assert!(water.iter().all(|i| submitted
        .iter()
        .any(|(_, _, _, agency, id)| i["lead_id"] == *id && *agency == Agency::Water)));
    assert!(!water.is_empty());

    // The investigator's read of the whole lead is on the adapter's audit ledger.
    let full: Value = investigator(&app, discharge_division)
        .get(app.url(&format!("/police/v1/leads/{filed_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        full["lead"]["lead_type"],
        "environment.discharge_exceedance"
    );
    assert_eq!(full["status"], "filed");
    let police_store = app.police_store.clone().unwrap();
    let (reads,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM log_trail WHERE action = 'access.read' AND CAST(lead_id AS TEXT) = $1",
    )
    .bind(filed_id)
    .fetch_one(police_store.store().inspection_pool().await.unwrap())
    .await
    .unwrap();
    assert_eq!(reads, 1);
    // Another county's investigator asking for it: 404, and the refusal is on the ledger.
    let other = if *discharge_division == "370323" {
        "370302"
    } else {
        "370323"
    };
    let response = investigator(&app, other)
        .get(app.url(&format!("/police/v1/leads/{filed_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let (denied,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM log_trail WHERE action = 'access.denied' AND CAST(lead_id AS TEXT) = $1 AND actor = $2",
    )
    .bind(filed_id)
    .bind(format!("investigator:{other}"))
    .fetch_one(police_store.store().inspection_pool().await.unwrap())
    .await
    .unwrap();
    assert_eq!(denied, 1);
    leadbridge::shared::audit::verify(police_store.store())
        .await
        .unwrap();
    leadbridge::shared::audit::verify(&app.store).await.unwrap();

    // An agency is not an investigator, and an investigator is not an agency.
    assert_eq!(
        app.client(Agency::Environment)
            .get(app.url("/police/v1/inbox"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        investigator(&app, "370303")
            .get(app.url("/v1/feedback"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    app.stop().await;
}
