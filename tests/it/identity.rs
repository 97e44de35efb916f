//! Client certificates name exactly one principal, and the embedded default keeps its secrets.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use leadbridge::contract::lead::Agency;
use leadbridge::shared::identity::ORGANIZATION;
use rcgen::DnType;
use serde_json::Value;

use crate::crash::start_hub;
use crate::helpers::{app, sample_lead, unique_case_id, Backend, TestPki};

/// rcgen keeps one value per attribute type; the same OID as a custom type repeats it.
fn repeated(oid: u64) -> DnType {
    DnType::CustomDnType(vec![2, 5, 4, oid])
}

/// A certificate subject, attribute by attribute.
type Subject = Vec<(DnType, &'static str)>;

/// A client presenting a certificate from the test CA with exactly `subject`.
fn client_with_subject(pki: &TestPki, subject: &[(DnType, &str)]) -> reqwest::Client {
    let issued = pki.ca.issue_client_with_subject(subject).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.cert_pem().as_bytes()).unwrap())
        .identity(
            reqwest::Identity::from_pem(
                format!("{}{}", issued.cert_pem, issued.key_pem).as_bytes(),
            )
            .unwrap(),
        )
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn ambiguous_subjects_are_refused_with_401_and_their_reason(backend: Backend) {
    let app = app(backend).spawn().await;
    // (case, subject, what the refusal says)
    let cases: Vec<(&str, Subject, &str)> = vec![
        (
            "two CNs, the first an agency that may send the lead",
            vec![
                (DnType::OrganizationName, ORGANIZATION),
                (DnType::OrganizationalUnitName, "agency"),
                (DnType::CommonName, "environment"),
                (repeated(3), "land"),
            ],
            "exactly one CN",
        ),
        (
            "two OUs",
            vec![
                (DnType::OrganizationName, ORGANIZATION),
                (DnType::OrganizationalUnitName, "agency"),
                (repeated(11), "supervisor"),
                (DnType::CommonName, "environment"),
            ],
            "exactly one OU",
        ),
        (
            "no organisation",
            vec![
                (DnType::OrganizationalUnitName, "agency"),
                (DnType::CommonName, "environment"),
            ],
            "exactly one O",
        ),
        (
            "another organisation",
            vec![
                (DnType::OrganizationName, "Elsewhere"),
                (DnType::OrganizationalUnitName, "agency"),
                (DnType::CommonName, "environment"),
            ],
            "organisation",
        ),
    ];
    for (case, subject, reason) in cases {
        let client = client_with_subject(&app.pki, &subject);
        let response = client
            .post(app.url("/v1/leads"))
            .json(&sample_lead(&unique_case_id()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{case}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{case}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            problem["type"], "urn:leadbridge:problem:unusable-certificate",
            "{case}"
        );
        assert!(
            problem["detail"].as_str().unwrap().contains(reason),
            "{case}: {problem}"
        );
        let response = client.get(app.url("/v1/feedback")).send().await.unwrap();
        assert_eq!(response.status(), 401, "{case}: reads are refused too");
    }
    // The same CA's well-formed certificate still works.
    let response = app
        .post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
        .await;
    assert_eq!(response.status(), 202);
    app.stop().await;
}

#[tokio::test]
async fn ambiguous_subjects_are_refused_with_401_on_postgres() {
    ambiguous_subjects_are_refused_with_401_and_their_reason(Backend::Real).await;
}

#[tokio::test]
async fn ambiguous_subjects_are_refused_with_401_on_the_embedded_default() {
    ambiguous_subjects_are_refused_with_401_and_their_reason(Backend::Embedded).await;
}

#[tokio::test]
async fn the_configured_organisation_is_the_only_one_accepted() {
    let app = app(Backend::Embedded)
        .with_settings(|settings| settings.server.client_organization = "淄博市生态环境局".into())
        .spawn()
        .await;
    let lead = sample_lead(&unique_case_id());
    let response = app.post_lead(Agency::Environment, &lead).await;
    assert_eq!(
        response.status(),
        401,
        "O=LeadBridge is not this deployment's"
    );
    let ours = client_with_subject(
        &app.pki,
        &[
            (DnType::OrganizationName, "淄博市生态环境局"),
            (DnType::OrganizationalUnitName, "agency"),
            (DnType::CommonName, "environment"),
        ],
    );
    let response = ours
        .post(app.url("/v1/leads"))
        .json(&lead)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    app.stop().await;
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn leadbridge(args: &[&str], data_dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_leadbridge"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run leadbridge")
}

#[cfg(unix)]
#[tokio::test]
async fn the_embedded_default_keeps_its_data_private_and_issues_certificates_for_newcomers() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("leadbridge-data");
    let mut hub = start_hub(&data_dir, &[]);
    let pki = data_dir.join("pki");

    // Names and ID numbers live in the databases; keys in the PKI: the owner's only.
    assert_eq!(mode(&data_dir), 0o700, "the data directory");
    assert_eq!(mode(&pki), 0o700, "the PKI directory");
    for file in ["leadbridge.db", "police.db"] {
        assert_eq!(mode(&data_dir.join(file)), 0o600, "{file}");
        // Journal files come and go with connections; where they are, they are private (the
        // test below shows they are made so).
        for journal in ["wal", "shm"] {
            let path = data_dir.join(format!("{file}-{journal}"));
            if path.exists() {
                assert_eq!(mode(&path), 0o600, "{file}-{journal}");
            }
        }
    }
    for key in [
        "ca",
        "server",
        "environment",
        "land",
        "safety",
        "water",
        "investigator",
        "supervisor",
    ] {
        assert_eq!(mode(&pki.join(format!("{key}.key"))), 0o600, "{key}.key");
    }

    // A newcomer mints a certificate for the Zhangdian unit and reads its inbox.
    let issued = leadbridge(
        &["pki", "issue", "--role", "investigator", "--unit", "370303"],
        &data_dir,
    );
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let cert = pki.join("investigator-370303.pem");
    let key = pki.join("investigator-370303.key");
    assert_eq!(mode(&key), 0o600);
    let read = |path: &Path| std::fs::read(path).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&read(&pki.join("ca.pem"))).unwrap())
        .identity(reqwest::Identity::from_pem(&[read(&cert), read(&key)].concat()).unwrap())
        .build()
        .unwrap();
    let inbox = client
        .get(format!("{}/police/v1/inbox", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(inbox.status(), 200);
    let inbox: Value = inbox.json().await.unwrap();
    assert_eq!(inbox["unit"], "370303");

    // The other roles, and the mistakes a newcomer makes.
    let land = leadbridge(
        &["pki", "issue", "--role", "agency", "--agency", "land"],
        &data_dir,
    );
    assert!(
        land.status.success(),
        "{}",
        String::from_utf8_lossy(&land.stderr)
    );
    assert!(pki.join("agency-land.pem").exists());
    let again = leadbridge(
        &["pki", "issue", "--role", "agency", "--agency", "land"],
        &data_dir,
    );
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--force"),
        "an existing certificate is not silently replaced"
    );
    let supervisor = leadbridge(
        &[
            "pki",
            "issue",
            "--role",
            "supervisor",
            "--name",
            "procuratorate",
        ],
        &data_dir,
    );
    assert!(
        supervisor.status.success(),
        "{}",
        String::from_utf8_lossy(&supervisor.stderr)
    );
    let unknown = leadbridge(
        &["pki", "issue", "--role", "investigator", "--unit", "999999"],
        &data_dir,
    );
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("no police unit \"999999\"") && stderr.contains("370303"),
        "{stderr}"
    );
    let no_unit = leadbridge(&["pki", "issue", "--role", "investigator"], &data_dir);
    assert!(
        !no_unit.status.success(),
        "--unit is required for an investigator"
    );

    hub.child.kill().unwrap();
    hub.child.wait().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let no_ca = leadbridge(
        &["pki", "issue", "--role", "agency", "--agency", "land"],
        elsewhere.path(),
    );
    assert!(!no_ca.status.success());
    assert!(String::from_utf8_lossy(&no_ca.stderr).contains("leadbridge serve"));
}

/// SQLite makes its journals with the database file's mode, so a private database has private
/// journals; shown while a store holds the database open after a write.
#[cfg(unix)]
#[tokio::test]
async fn sqlite_journals_are_as_private_as_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.db");
    let store = leadbridge::hub::store::connect(&format!("sqlite:{}", file.display()), 1)
        .await
        .unwrap();
    sqlx::query("INSERT INTO receipts_applied (event_id, applied_at) VALUES ('e', '2026-12-01T00:00:00.000000Z')")
        .execute(store.inspection_pool().await.unwrap())
        .await
        .unwrap();
    assert_eq!(mode(&file), 0o600);
    for journal in ["wal", "shm"] {
        let path = dir.path().join(format!("hub.db-{journal}"));
        assert_eq!(mode(&path), 0o600, "hub.db-{journal}");
    }
    store.close().await;
}
