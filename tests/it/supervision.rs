//! The supervision views (supervision contract §5, §6) on PostgreSQL with Kafka and in the
//! embedded default, over leads that went through the real hub and adapter: a transfer decided
//! `filed`, two penalty leads meeting ENV-5 (one of a subject already transferred), a penalty
//! meeting nothing, and a refused submission. The lists page and filter; the screening flags
//! exactly the penalty with no transfer; the deadline board and the report are evaluated at
//! now and at a later time of the test's choosing; the report's CSV opens with its BOM and reads
//! back through a CSV reader; spot audits redraw the same sample; and every read, export,
//! draw and refusal is in the access log.

use std::collections::{BTreeSet, HashMap};

use chrono::{Duration, Utc};
use leadbridge::contract::deadlines::{ClockState, Clocks};
use leadbridge::contract::lead::{Agency, DivisionTable};
use leadbridge::hub::store::supervision::LeadQuery;
use leadbridge::hub::supervise::reports::{self, GroupBy, Month, SupervisionSettings};
use leadbridge::hub::supervise::views::{self, compute_report, ReportSources};
use leadbridge::shared::identity::{Principal, SupervisorScope};
use leadbridge::Roles;
use serde_json::{json, Value};

use crate::helpers::{app, sample_lead, unique_case_id, valid_fixtures, Backend, TestApp};
use crate::police::{decide, eventually};

const TRANSFERRED_COMPANY: &str = "91370303MA3C4B2D1E";

fn supervisor(app: &TestApp, name: &str, scope: SupervisorScope) -> reqwest::Client {
    app.pki.client(Some(&Principal::Supervisor {
        name: name.into(),
        scope,
    }))
}

async fn get(client: &reqwest::Client, app: &TestApp, path: &str) -> (u16, Value) {
    let response = client.get(app.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn submit(app: &TestApp, agency: Agency, lead: &Value) -> String {
    let response = app.post_lead(agency, lead).await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let receipt: Value = response.json().await.unwrap();
    receipt["lead_id"].as_str().unwrap().to_owned()
}

/// The covert-discharge penalty fixture as a new case, of a toxic substance (ENV-5) or not.
fn covert_penalty(toxic: bool, uscc: Option<&str>) -> Value {
    let (_, mut lead) = valid_fixtures()
        .into_iter()
        .find(|(_, lead)| lead["lead_type"] == "environment.covert_discharge")
        .expect("the covert-discharge penalty fixture");
    let case_id = unique_case_id();
    lead["source"]["case_id"] = json!(case_id);
    lead["penalty"]["decision_no"] = json!(format!("淄环罚字〔{case_id}〕"));
    lead["facts"]["substance_class"] = json!(if toxic { "toxic" } else { "other" });
    if let Some(uscc) = uscc {
        lead["subjects"][0]["uscc"] = json!(uscc);
    }
    lead
}

fn ids(items: &Value) -> Vec<String> {
    items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["lead_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn the_supervision_views(backend: Backend) {
    let app = app(backend)
        .roles(Roles::ALL)
        .with_settings(|settings| settings.transparency.checkpoint_interval_secs = 1)
        .spawn()
        .await;
    let procuratorate = supervisor(&app, "孙检察官", SupervisorScope::Procuratorate);
    let land_head = supervisor(&app, "周局长", SupervisorScope::Agency(Agency::Land));
    let environment_head = supervisor(&app, "吴局长", SupervisorScope::Agency(Agency::Environment));

    let transfer = submit(&app, Agency::Environment, &sample_lead(&unique_case_id())).await;
    let flagged = submit(&app, Agency::Environment, &covert_penalty(true, None)).await;
    let covered = submit(
        &app,
        Agency::Environment,
        &covert_penalty(true, Some(TRANSFERRED_COMPANY)),
    )
    .await;
    let harmless = submit(&app, Agency::Environment, &covert_penalty(false, None)).await;
    let mut refused = sample_lead(&unique_case_id());
    refused["kind"] = json!("verdict");
    assert_eq!(
        app.post_lead(Agency::Environment, &refused).await.status(),
        422
    );
    for lead in [&transfer, &flagged, &covered, &harmless] {
        app.wait_for_status(Agency::Environment, lead, "delivered")
            .await;
    }
    let response = decide(
        &app,
        "370303",
        &transfer,
        json!({"decision": "filed", "police_case_no": "淄公(张)立字[2026]1301号"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    app.wait_for_status(Agency::Environment, &transfer, "filed")
        .await;
    let all: BTreeSet<String> = [&transfer, &flagged, &covered, &harmless]
        .into_iter()
        .cloned()
        .collect();

    // Leads: newest first, paged by cursor, filtered.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/supervise/v1/leads?limit=3&cursor={cursor}"),
            None => "/supervise/v1/leads?limit=3".into(),
        };
        let (status, page) = get(&procuratorate, &app, &path).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), all);
    assert_eq!(seen[0], harmless, "newest first");
    let (_, page) = get(&procuratorate, &app, "/supervise/v1/leads?district=370306").await;
    assert_eq!(
        ids(&page).into_iter().collect::<BTreeSet<_>>(),
        [&flagged, &covered, &harmless]
            .into_iter()
            .cloned()
            .collect()
    );
    assert_eq!(page["filters"]["district"], "370306");
    let (_, page) = get(&procuratorate, &app, "/supervise/v1/leads?kind=transfer").await;
    assert_eq!(ids(&page), vec![transfer.clone()]);
    assert_eq!(page["items"][0]["assessment"]["priority"], "high");
    let (_, page) = get(&procuratorate, &app, "/supervise/v1/leads?unit=370303").await;
    assert!(ids(&page).contains(&transfer));
    for (query, why) in [
        ("cursor=bm90LWEtY3Vyc29y", "a cursor the API never gave"),
        ("limit=501", "a page too large"),
        ("kind=verdict", "an unknown kind"),
        ("from=yesterday", "an unreadable time"),
        ("colour=red", "an unknown filter"),
        ("state=overdue", "state outside the deadline board"),
    ] {
        let (status, body) = get(
            &procuratorate,
            &app,
            &format!("/supervise/v1/leads?{query}"),
        )
        .await;
        assert_eq!(status, 400, "{why}: {body}");
    }
    let (_, page) = get(&land_head, &app, "/supervise/v1/leads").await;
    assert!(
        ids(&page).is_empty(),
        "the head of land sees no environment lead"
    );
    let (_, page) = get(&environment_head, &app, "/supervise/v1/leads").await;
    assert_eq!(
        ids(&page).into_iter().collect::<BTreeSet<_>>(),
        all,
        "the head of environment sees theirs"
    );
    let (status, _) = get(&land_head, &app, "/supervise/v1/leads?agency=environment").await;
    assert_eq!(status, 403);

    // One lead, both sides' timelines; read by another agency's head: 404, logged.
    eventually(
        "the police log's copy has the transfer's entries",
        || async {
            let (_, lead) = get(
                &procuratorate,
                &app,
                &format!("/supervise/v1/leads/{transfer}"),
            )
            .await;
            lead["police_timeline"].as_array().is_some_and(|entries| {
                entries
                    .iter()
                    .any(|e| e["entry"]["action"] == "lead.decided")
            })
        },
    )
    .await;
    let (status, lead) = get(
        &procuratorate,
        &app,
        &format!("/supervise/v1/leads/{transfer}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(lead["document"]["source"]["unit_division"], "370303");
    assert!(lead["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "filed"));
    assert!(lead["deadlines"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["name"] == "handover"));
    let (status, _) = get(&land_head, &app, &format!("/supervise/v1/leads/{transfer}")).await;
    assert_eq!(status, 404);

    // Screening: only the penalty meeting ENV-5 with no transfer of its subject.
    let (status, screening) = get(&procuratorate, &app, "/supervise/v1/screening").await;
    assert_eq!(status, 200, "{screening}");
    assert_eq!(ids(&screening), vec![flagged.clone()]);
    let item = &screening["items"][0];
    assert_eq!(item["rules"][0]["rule"], "ENV-5");
    assert_eq!(
        item["rules"][0]["citation"],
        "法释〔2023〕7号 第一条第（五）项"
    );
    assert_eq!(item["facts"]["substance_class"], "toxic");
    assert!(item["waited_secs"].as_i64().unwrap() < 3600, "{item}");
    let (_, screening) = get(&land_head, &app, "/supervise/v1/screening").await;
    assert!(ids(&screening).is_empty());
    let (_, screening) = get(&environment_head, &app, "/supervise/v1/screening").await;
    assert_eq!(ids(&screening), vec![flagged.clone()]);

    // The same, at a time and window of the test's choosing.
    let store = &app.store;
    let leads = store
        .all_supervised_leads(&LeadQuery {
            limit: 2,
            ..LeadQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(leads.len(), 4, "read across pages of two");
    let transfers: Vec<_> = leads
        .iter()
        .filter(|l| l.kind == "transfer")
        .cloned()
        .collect();
    let later = Utc::now() + Duration::days(100);
    let screened = reports::screening(&leads, &transfers, 90, later);
    assert_eq!(screened.len(), 1);
    assert!(screened[0]["waited_days"].as_i64().unwrap() >= 100);
    // A window of nothing: the transfer of the same subject, seconds earlier, is outside it.
    let screened = reports::screening(&leads, &transfers, 0, later);
    assert_eq!(screened.len(), 2, "{screened:?}");

    // The deadline board, now and thirty days on.
    let (status, board) = get(&procuratorate, &app, "/supervise/v1/deadlines?state=met").await;
    assert_eq!(status, 200, "{board}");
    assert!(
        board["items"].as_array().unwrap().iter().any(|clock| {
            clock["lead_id"] == transfer.as_str() && clock["name"] == "police_decision"
        }),
        "{board}"
    );
    let (_, board) = get(
        &procuratorate,
        &app,
        "/supervise/v1/deadlines?state=running",
    )
    .await;
    let running: Vec<(String, String)> = board["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["lead_id"].as_str().unwrap().to_owned(),
                c["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        running.contains(&(transfer.clone(), "handover".into())),
        "{running:?}"
    );
    assert!(board["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["state"] == "running"));
    let (status, _) = get(&procuratorate, &app, "/supervise/v1/deadlines?state=late").await;
    assert_eq!(status, 400);
    let clocks = Clocks::load(&app.settings.police.deadlines).unwrap();
    let month_later = Utc::now() + Duration::days(30);
    let overdue =
        views::board_items(&clocks, &leads, Some(ClockState::Overdue), month_later).unwrap();
    assert!(
        overdue
            .iter()
            .any(|c| c["lead_id"] == transfer.as_str() && c["name"] == "handover"),
        "{overdue:?}"
    );
    assert!(overdue
        .iter()
        .all(|c| c["state"] == "overdue" && c["late_by_secs"].as_i64().unwrap() > 0));

    // The monthly report.
    let month = Month::of(Utc::now());
    let (status, report) = get(
        &procuratorate,
        &app,
        &format!("/supervise/v1/reports/monthly?month={month}"),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    let rows: HashMap<String, &Value> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row["key"].as_str().unwrap().to_owned(), row))
        .collect();
    let environment = rows["environment"];
    assert_eq!(environment["name"], "生态环境部门");
    assert_eq!(environment["sent"], 4);
    assert_eq!(environment["rejected"], 1);
    assert_eq!(
        environment["by_kind"],
        json!({"transfer": 1, "penalty": 3, "clue": 0})
    );
    assert_eq!(environment["received_by_police"], 4);
    assert_eq!(environment["filed"], 1);
    assert_eq!(environment["screening_flags"], 1);
    assert_eq!(environment["decision_on_time_rate"], 1.0);
    assert_eq!(environment["feedback_rate"], 0.25);
    assert!(environment["handoff_median_secs"].as_i64().unwrap() < 600);
    // 40·1 + 30·0.25 + 30·1 − 5·1 flag; the other agencies had nothing to fall short on.
    assert_eq!(environment["score"], 72.5);
    assert_eq!(environment["rank"], 4);
    for agency in ["land", "safety", "water"] {
        assert_eq!(
            (rows[agency]["score"].clone(), rows[agency]["rank"].clone()),
            (json!(100.0), json!(1)),
            "{agency}"
        );
    }
    // The head of environment sees their row only, ranked among every agency's.
    let (_, own) = get(
        &environment_head,
        &app,
        &format!("/supervise/v1/reports/monthly?month={month}"),
    )
    .await;
    assert_eq!(own["rows"].as_array().unwrap().len(), 1, "{own}");
    assert_eq!(
        (
            own["rows"][0]["key"].clone(),
            own["rows"][0]["rank"].clone()
        ),
        (json!("environment"), json!(4))
    );
    let (_, by_district) = get(
        &procuratorate,
        &app,
        &format!("/supervise/v1/reports/monthly?month={month}&by=district"),
    )
    .await;
    let names: BTreeSet<(String, String)> = by_district["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["key"].as_str().unwrap().to_owned(),
                row["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [("370303", "张店区"), ("370306", "周村区")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect()
    );
    // Thirty days on, the handover not reported is overdue and costs its weight.
    let districts = DivisionTable::built_in().unwrap();
    let settings = SupervisionSettings::default();
    let sources = ReportSources {
        store,
        clocks: &clocks,
        settings: &settings,
        districts: &districts,
    };
    let later_report = compute_report(&sources, month, GroupBy::Agency, None, month_later)
        .await
        .unwrap();
    let later_environment = later_report
        .rows
        .iter()
        .find(|row| row.key == "environment")
        .unwrap();
    assert!(later_environment.overdue_now >= 1);
    assert_eq!(
        later_environment.score,
        72.5 - 5.0 * later_environment.overdue_now as f64,
        "{later_environment:?}"
    );
    for (query, why) in [
        ("month=2026-13", "no such month"),
        ("month=2026-11&by=unit", "an unknown grouping"),
        ("month=2026-11&format=xlsx", "an unknown format"),
    ] {
        let (status, _) = get(
            &procuratorate,
            &app,
            &format!("/supervise/v1/reports/monthly?{query}"),
        )
        .await;
        assert_eq!(status, 400, "{why}");
    }

    // CSV: a BOM, Chinese that reads back, the same figures.
    let response = procuratorate
        .get(app.url(&format!(
            "/supervise/v1/reports/monthly?month={month}&format=csv"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let bytes = response.bytes().await.unwrap();
    assert_eq!(&bytes[..3], b"\xEF\xBB\xBF", "UTF-8 byte-order mark");
    let mut reader = csv::Reader::from_reader(&bytes[3..]);
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header[0], "排名");
    assert_eq!(header[2], "部门");
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 4);
    let environment_record = records.iter().find(|r| &r[1] == "environment").unwrap();
    assert_eq!(&environment_record[0], "4");
    assert_eq!(&environment_record[2], "生态环境部门");
    assert_eq!(&environment_record[3], "4");
    assert_eq!(&environment_record[4], "1");
    assert_eq!(&environment_record[17], "25.0");
    assert_eq!(&environment_record[19], "72.50");
    assert!(records.iter().all(|record| record.len() == header.len()));

    // The same report from the command line, from the hub's database.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadbridge"))
        .args([
            "report",
            "monthly",
            &month.to_string(),
            "--format",
            "csv",
            "--database-url",
        ])
        .arg(app.settings.database_url())
        .env_remove("LEADBRIDGE_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout.starts_with(b"\xEF\xBB\xBF"));
    assert!(String::from_utf8(output.stdout)
        .unwrap()
        .contains("生态环境部门"));

    // Spot audits: a reproducible sample; the request and the sample are in the log.
    let draw = |body: Value| {
        let client = procuratorate.clone();
        let url = app.url("/supervise/v1/spot-audits");
        async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, first) =
        draw(json!({"month": month.to_string(), "size": 5, "seed": "淄博市检察院-督查"})).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["sample"].as_array().unwrap().len(), 5);
    assert!(first["population"].as_u64().unwrap() > 5);
    let drawn_at = first["drawn_at"].as_str().unwrap().to_owned();
    // More handoffs after it: the same request with its drawn_at gives the same sample.
    let later_lead = submit(&app, Agency::Environment, &sample_lead(&unique_case_id())).await;
    app.wait_for_status(Agency::Environment, &later_lead, "delivered")
        .await;
    let (_, again) = draw(json!({"month": month.to_string(), "size": 5, "seed": "淄博市检察院-督查", "drawn_at": drawn_at})).await;
    assert_eq!(again["sample"], first["sample"]);
    assert_eq!(again["population"], first["population"]);
    assert_eq!(again["logs"], first["logs"]);
    let (_, fresh) =
        draw(json!({"month": month.to_string(), "size": 5, "seed": "淄博市检察院-督查"})).await;
    assert!(
        fresh["logs"]["hub"].as_u64() > first["logs"]["hub"].as_u64()
            && fresh["population"].as_u64() > first["population"].as_u64(),
        "a new draw reads the logs as they are now: {fresh}"
    );
    let (_, other_seed) =
        draw(json!({"month": month.to_string(), "size": 5, "seed": "另一个种子"})).await;
    assert_ne!(other_seed["sample"], first["sample"]);
    // An ended month is drawn whole, the same every time.
    let previous = Month::of(month.bounds().0 - Duration::days(1));
    let (status, ended) =
        draw(json!({"month": previous.to_string(), "size": 3, "seed": "s"})).await;
    assert_eq!(status, 201);
    assert_eq!(
        ended["drawn_at"].as_str().unwrap(),
        previous
            .bounds()
            .1
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    let redrawn = views::draw_spot_audit(
        store,
        &previous.to_string(),
        3,
        "s",
        None,
        Utc::now() + Duration::days(40),
    )
    .await
    .unwrap();
    assert_eq!(redrawn["sample"], ended["sample"]);
    // This month seen from forty days on, ended: drawn whole, the same on every draw.
    let month_text = month.to_string();
    let whole = |seed: &'static str| {
        views::draw_spot_audit(
            store,
            &month_text,
            4,
            seed,
            None,
            Utc::now() + Duration::days(40),
        )
    };
    let whole_first = whole("s").await.unwrap();
    assert!(
        whole_first["population"].as_u64().unwrap() > 4,
        "{whole_first}"
    );
    assert_eq!(whole_first["sample"].as_array().unwrap().len(), 4);
    assert_eq!(whole("s").await.unwrap()["sample"], whole_first["sample"]);
    for (body, why) in [
        (
            json!({"month": month.to_string(), "size": 0, "seed": "s"}),
            "size 0",
        ),
        (
            json!({"month": month.to_string(), "size": 501, "seed": "s"}),
            "size 501",
        ),
        (
            json!({"month": month.to_string(), "size": 5, "seed": " "}),
            "a blank seed",
        ),
        (
            json!({"month": "2026-13", "size": 5, "seed": "s"}),
            "no such month",
        ),
        (
            json!({"month": "2099-01", "size": 5, "seed": "s"}),
            "a month to come",
        ),
        (
            json!({"month": month.to_string(), "size": 5, "seed": "s", "drawn_at": "2099-01-01T00:00:00Z"}),
            "drawn in the future",
        ),
        (
            json!({"month": month.to_string(), "size": 5, "seed": "s", "colour": "red"}),
            "an unknown member",
        ),
    ] {
        let (status, body) = draw(body).await;
        assert_eq!(status, 400, "{why}: {body}");
    }
    let response = land_head
        .post(app.url("/supervise/v1/spot-audits"))
        .json(&json!({"month": month.to_string(), "size": 5, "seed": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // The access log: reads, exports, draws and refusals, with who and what.
    let (status, access) = get(&procuratorate, &app, "/supervise/v1/access?limit=500").await;
    assert_eq!(status, 200, "{access}");
    let items = access["items"].as_array().unwrap();
    let has = |action: &str, principal: &str, check: &dyn Fn(&Value) -> bool| {
        items
            .iter()
            .any(|item| item["action"] == action && item["principal"] == principal && check(item))
    };
    assert!(has("access.read", "supervisor:孙检察官", &|item| item
        ["lead_id"]
        == transfer.as_str()));
    assert!(has(
        "access.export",
        "supervisor:孙检察官",
        &|item| item["details"]["format"] == "csv"
    ));
    assert!(has(
        "audit.spot_audit",
        "supervisor:孙检察官",
        &|item| item["details"]["sample"] == first["sample"]
    ));
    assert!(has("access.denied", "supervisor:周局长", &|item| {
        item["lead_id"] == transfer.as_str() && item["details"]["status"] == 404
    }));
    assert!(has("access.denied", "supervisor:周局长", &|item| item
        ["details"]["status"]
        == 403));
    // One refusal, one entry.
    let refused_lists = items
        .iter()
        .filter(|item| {
            item["action"] == "access.denied"
                && item["principal"] == "supervisor:周局长"
                && item["details"]["path"] == "/supervise/v1/leads"
        })
        .count();
    assert_eq!(refused_lists, 1, "{items:?}");
    let (_, exports) = get(
        &procuratorate,
        &app,
        "/supervise/v1/access?action=access.export",
    )
    .await;
    let exports = exports["items"].as_array().unwrap();
    assert!(exports.len() >= 2, "{exports:?}");
    assert!(exports.iter().all(|item| item["action"] == "access.export"));
    assert!(
        has("access.read", "supervisor:孙检察官", &|item| item
            ["details"]["path"]
            == "/supervise/v1/screening"),
        "list reads are logged"
    );
    let (_, mine) = get(
        &procuratorate,
        &app,
        "/supervise/v1/access?principal=supervisor:周局长",
    )
    .await;
    let mine = mine["items"].as_array().unwrap();
    assert!(
        !mine.is_empty()
            && mine
                .iter()
                .all(|item| item["principal"] == "supervisor:周局长")
    );
    // Investigators' accesses are the police log's, read through its copy.
    let response = crate::police::investigator(&app, "370323")
        .get(app.url(&format!("/police/v1/leads/{transfer}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    eventually(
        "the investigator's refused read reaches the access log",
        || async {
            let (_, police) = get(&procuratorate, &app, "/supervise/v1/access?log=police").await;
            police["items"].as_array().unwrap().iter().any(|item| {
                item["action"] == "access.denied" && item["principal"] == "investigator:370323"
            })
        },
    )
    .await;
    let (status, _) = get(&land_head, &app, "/supervise/v1/access").await;
    assert_eq!(status, 403);
    let (status, _) = get(
        &procuratorate,
        &app,
        "/supervise/v1/access?action=lead.received",
    )
    .await;
    assert_eq!(status, 400);
    app.stop().await;
}

#[tokio::test]
async fn the_supervision_views_on_postgres_and_kafka() {
    the_supervision_views(Backend::Real).await;
}

#[tokio::test]
async fn the_supervision_views_in_the_embedded_default() {
    the_supervision_views(Backend::Embedded).await;
}
