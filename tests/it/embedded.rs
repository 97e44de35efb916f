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
