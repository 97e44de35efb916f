//! The embedded default: `leadbridge serve` with no configuration on a machine with no services.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::crash::start_hub;

#[tokio::test]
async fn serve_without_configuration_runs_the_whole_hub_with_its_own_pki() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut hub = start_hub(data_dir.path(), &[]);
    let pki = data_dir.path().join("pki");
    for name in [
        "ca",
        "environment",
        "land",
        "safety",
        "water",
        "investigator",
        "supervisor",
    ] {
        assert!(
            pki.join(format!("{name}.pem")).exists(),
            "{name}.pem is written"
        );
    }
    assert!(
        data_dir.path().join("leadbridge.db").exists(),
        "SQLite lives in the data directory"
    );

    // Exactly what the printed curl line does: the generated CA and the environment agency's files.
    let read = |name: &str| std::fs::read(pki.join(name)).unwrap();
    let identity = [read("environment.pem"), read("environment.key")].concat();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.pem")).unwrap())
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .build()
        .unwrap();
    let sample = std::fs::read(data_dir.path().join("sample-lead.json"))
        .expect("the sample lead is written");
    let response = client
        .post(format!(
            "{}/v1/leads",
            hub.url.replace("127.0.0.1", "localhost")
        ))
        .header("content-type", "application/json")
        .body(sample)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    let lead_id = receipt["lead_id"].as_str().unwrap();

    // Published to the in-process broker.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: Value = client
            .get(format!("{}/v1/leads/{lead_id}", hub.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["status"] == "published" {
            assert_eq!(
                status["timeline"][1]["topic"],
                "leadbridge.leads.environment.v1"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never published: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = client
        .get(format!("{}/readyz", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    hub.child.kill().unwrap();
    hub.child.wait().unwrap();
    // A second start reuses the PKI, so the user's curl line keeps working.
    let ca_before = read("ca.pem");
    let mut again = start_hub(data_dir.path(), &[]);
    assert_eq!(read("ca.pem"), ca_before);
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}

/// An HTTPS client of the embedded hub with `<name>.pem`/`.key` of its data directory.
fn embedded_client(pki: &std::path::Path, name: &str) -> reqwest::Client {
    let read = |file: String| std::fs::read(pki.join(file)).unwrap();
    let identity = [read(format!("{name}.pem")), read(format!("{name}.key"))].concat();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.pem".into())).unwrap())
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .build()
        .unwrap()
}

/// As a newcomer tries it: the demo investigator is the city-level unit and sees a district's
/// low-priority lead (which is delivered to the district only), a certificate minted for that
/// district sees it too, and one minted for another district does not.
#[tokio::test]
async fn the_city_investigator_sees_a_districts_low_priority_lead_and_another_district_does_not() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut hub = start_hub(data_dir.path(), &[]);
    let pki = data_dir.path().join("pki");
    for unit in ["370304", "370303"] {
        let issued = std::process::Command::new(env!("CARGO_BIN_EXE_leadbridge"))
            .args([
                "pki",
                "issue",
                "--role",
                "investigator",
                "--unit",
                unit,
                "--data-dir",
            ])
            .arg(data_dir.path())
            .output()
            .unwrap();
        assert!(issued.status.success(), "{issued:?}");
    }
    // A clue of 博山区 (370304) below every threshold: low priority.
    let fixture: Value = serde_json::from_str(include_str!(
        "../../schemas/fixtures/valid/land.farmland_occupation.clue-forest-only.json"
    ))
    .unwrap();
    let land = embedded_client(&pki, "land");
    let response = land
        .post(format!("{}/v1/leads", hub.url))
        .json(&fixture["lead"])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    let lead_id = receipt["lead_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status: Value = land
            .get(format!("{}/v1/leads/{lead_id}", hub.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["status"] == "delivered" {
            break status;
        }
        assert!(Instant::now() < deadline, "never delivered: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["assessment"]["priority"], "low", "{status}");
    let delivered_to: Vec<&Value> = status["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["event"] == "delivered")
        .map(|event| &event["unit"])
        .collect();
    assert_eq!(
        delivered_to,
        ["370304"],
        "delivered to the district only: {status}"
    );

    let inbox_of = |name: &'static str| {
        let client = embedded_client(&pki, name);
        let url = hub.url.clone();
        async move {
            let inbox: Value = client
                .get(format!("{url}/police/v1/inbox"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            inbox
        }
    };
    let holds = |inbox: &Value| {
        inbox["leads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|lead| lead["lead_id"] == lead_id.as_str())
    };
    let city = inbox_of("investigator").await;
    assert_eq!(city["unit"], "370300", "{city}");
    assert!(
        holds(&city),
        "the city unit sees its district's lead: {city}"
    );
    let bochan = inbox_of("investigator-370304").await;
    assert!(holds(&bochan), "{bochan}");
    let zhangdian = inbox_of("investigator-370303").await;
    assert!(!holds(&zhangdian), "another district does not: {zhangdian}");
    let read = |name: &'static str| {
        let client = embedded_client(&pki, name);
        let url = format!("{}/police/v1/leads/{lead_id}", hub.url);
        async move { client.get(url).send().await.unwrap().status() }
    };
    assert_eq!(read("investigator").await, 200);
    assert_eq!(read("investigator-370303").await, 404);
    hub.child.kill().unwrap();
    hub.child.wait().unwrap();
}

/// A holiday file that is malformed, or covers a year a shipped file covers, stops start-up
/// with the file and line: the clocks never run on a calendar that is wrong.
#[tokio::test]
async fn a_wrong_holiday_file_stops_start_up_naming_its_file_and_line() {
    for (name, text, expected) in [
        (
            "2027.txt",
            "year 2027\nsource test\nholiday 2027-02-30 共1天 春节\n",
            "2027.txt:3",
        ),
        (
            "2026-again.txt",
            "year 2026\nsource test\nholiday 2026-05-01..2026-05-05 共5天 劳动节\n",
            "2026",
        ),
    ] {
        let data_dir = tempfile::tempdir().unwrap();
        let holidays = data_dir.path().join("holidays");
        std::fs::create_dir(&holidays).unwrap();
        std::fs::write(holidays.join(name), text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_leadbridge"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
            .env("LEADBRIDGE_POLICE__DEADLINES__HOLIDAYS_DIR", &holidays)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}: started: {stderr}");
        assert!(
            stderr.contains(expected) && stderr.contains(name),
            "{name}: {stderr}"
        );
    }
}
