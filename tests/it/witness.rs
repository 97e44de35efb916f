//! Witness cosigning (supervision contract §2), run as the procuratorate would: the
//! `leadbridge audit witness` binary against the running hub on PostgreSQL with Kafka and in
//! the embedded default (the hub alone, so only the test grows its log). It cosigns the first
//! checkpoint, the same one again, and a later one only once the consistency proof verifies;
//! the hub serves the checkpoint with the witness's
//! signature; a rollback, a split view or a forged kept checkpoint stops the witness with a
//! non-zero exit, cosigning nothing; and the hub refuses cosignatures that are not a
//! witness's, not over its own checkpoint, or not consistent with the witness's previous one.

use std::path::{Path, PathBuf};
use std::process::Output;

use tokio::process::Command;

use leadbridge::contract::lead::Agency;
use leadbridge::shared::identity::{Principal, SupervisorScope};
use leadbridge::shared::tlog::checkpoint::{self, Checkpoint, LogKey, SignedNote, VerifierKey};
use leadbridge::Roles;
use serde_json::Value;

use crate::helpers::{app, sample_lead, unique_case_id, Backend, TestApp};

struct Witness {
    dir: tempfile::TempDir,
    app_url: String,
    data_dir: PathBuf,
}

impl Witness {
    /// The procuratorate's witness key, made before the hub starts so the hub can be told it.
    fn key(dir: &tempfile::TempDir) -> LogKey {
        LogKey::load_or_create(
            &dir.path().join("witness.key"),
            "zibo-procuratorate-witness",
        )
        .unwrap()
    }

    fn new(app: &TestApp, dir: tempfile::TempDir) -> Witness {
        let issued = app
            .pki
            .ca
            .issue_client(&Principal::Supervisor {
                name: "李检察官".into(),
                scope: SupervisorScope::Procuratorate,
            })
            .unwrap();
        std::fs::write(dir.path().join("supervisor.pem"), &issued.cert_pem).unwrap();
        std::fs::write(dir.path().join("supervisor.key"), &issued.key_pem).unwrap();
        std::fs::write(dir.path().join("ca.pem"), app.pki.ca.cert_pem()).unwrap();
        Witness {
            dir,
            app_url: app.url(""),
            data_dir: app.settings.data_dir.clone(),
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("hub.checkpoint")
    }

    /// Runs the witness as its own process, without blocking the runtime the hub serves on.
    async fn run(&self) -> Output {
        let file = |name: &str| self.dir.path().join(name);
        Command::new(env!("CARGO_BIN_EXE_leadbridge"))
            .args([
                "audit",
                "witness",
                "--hub",
                self.app_url.trim_end_matches('/'),
            ])
            .arg("--cert")
            .arg(file("supervisor.pem"))
            .arg("--cert-key")
            .arg(file("supervisor.key"))
            .arg("--ca")
            .arg(file("ca.pem"))
            .arg("--state")
            .arg(self.state())
            .arg("--witness-key")
            .arg(file("witness.key"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env_remove("LEADBRIDGE_CONFIG")
            .output()
            .await
            .unwrap()
    }
}

fn out(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn supervisor(app: &TestApp) -> reqwest::Client {
    app.pki.client(Some(&Principal::Supervisor {
        name: "李检察官".into(),
        scope: SupervisorScope::Procuratorate,
    }))
}

async fn grow_and_sign(app: &TestApp) -> String {
    let response = app
        .post_lead(Agency::Environment, &sample_lead(&unique_case_id()))
        .await;
    assert_eq!(response.status(), 202);
    // Published: its `lead.published` entry is in the log before the checkpoint.
    app.wait_until_outbox_drained().await;
    let response = supervisor(app)
        .post(app.url("/supervise/v1/logs/hub/checkpoints"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    response.text().await.unwrap()
}

async fn post_cosignature(app: &TestApp, text: String) -> (u16, String) {
    let response = supervisor(app)
        .post(app.url("/supervise/v1/logs/hub/cosignatures"))
        .header("content-type", "text/plain")
        .body(text)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn hub_key(data_dir: &Path) -> LogKey {
    LogKey::load(&data_dir.join("keys/hub.key")).unwrap()
}

/// A checkpoint of `size` with a made-up root, signed by the hub's own key: what a hub
/// showing a split view (or a forged state file) would present.
fn forged(data_dir: &Path, size: u64) -> String {
    hub_key(data_dir).sign(&Checkpoint {
        origin: "leadbridge/local/hub".into(),
        size,
        root: [7; 32],
    })
}

async fn a_witness_cosigns_only_what_extends_what_it_cosigned(backend: Backend) {
    let witness_dir = tempfile::tempdir().unwrap();
    let configured = Witness::key(&witness_dir).verifier_key();
    let app = app(backend)
        // The hub alone: nothing but the test's own steps grows its log, so "nothing new" is.
        .roles(Roles::HUB)
        .with_settings(move |settings| settings.transparency.witness_keys = Some(vec![configured]))
        .spawn()
        .await;
    let witness = Witness::new(&app, witness_dir);
    let (status, keys) = {
        let response = supervisor(&app)
            .get(app.url("/supervise/v1/keys"))
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200);
    let witness_key = VerifierKey::parse(keys["witnesses"][0].as_str().unwrap()).unwrap();
    let log_key = VerifierKey::parse(keys["hub"].as_str().unwrap()).unwrap();

    let first = grow_and_sign(&app).await;
    let output = witness.run().await;
    assert!(output.status.success(), "{}", out(&output));
    assert!(
        out(&output).contains("the first this witness cosigns"),
        "{}",
        out(&output)
    );
    let served = supervisor(&app)
        .get(app.url("/supervise/v1/logs/hub/checkpoint"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let note = SignedNote::parse(&served).unwrap();
    assert!(
        note.signed_by(&log_key) && note.signed_by(&witness_key),
        "{served}"
    );
    assert!(
        served.starts_with(&first),
        "the log's note, then the cosignature"
    );
    let kept_first = std::fs::read_to_string(witness.state()).unwrap();
    assert_eq!(kept_first, first);

    // Nothing new: the same checkpoint, cosigned again harmlessly.
    let output = witness.run().await;
    assert!(output.status.success(), "{}", out(&output));
    assert!(
        out(&output).contains("the one it cosigned before"),
        "{}",
        out(&output)
    );

    // The log grows: cosigned after the consistency proof.
    let second = grow_and_sign(&app).await;
    let first_size = checkpoint::verify(&first, &log_key, "leadbridge/local/hub")
        .unwrap()
        .size;
    let second_size = checkpoint::verify(&second, &log_key, "leadbridge/local/hub")
        .unwrap()
        .size;
    let output = witness.run().await;
    assert!(output.status.success(), "{}", out(&output));
    assert!(
        out(&output).contains(&format!("consistent with size {first_size}")),
        "{}",
        out(&output)
    );

    // The hub refuses what is not a witness's consistent cosignature of its own checkpoint.
    let data_dir = &app.settings.data_dir;
    let demo_witness = Witness::key(&witness.dir);
    assert!(
        !data_dir.join("keys/witness.key").exists(),
        "off the embedded default the hub never holds a witness's key"
    );
    let cosign = |text: &str, key: &LogKey| {
        let body = SignedNote::parse(text).unwrap().body;
        format!("{text}{}", key.signature_line(&body))
    };
    let (status, body) = post_cosignature(&app, cosign(&first, &demo_witness)).await;
    assert_eq!(status, 409, "an earlier tree after a later one: {body}");
    let (status, body) =
        post_cosignature(&app, cosign(&forged(data_dir, second_size), &demo_witness)).await;
    assert_eq!(status, 409, "not the hub's checkpoint of that size: {body}");
    let stranger = LogKey::generate("someone-else");
    let (status, body) = post_cosignature(&app, cosign(&second, &stranger)).await;
    assert_eq!(status, 403, "not a configured witness: {body}");
    let (status, body) = post_cosignature(&app, "leadbridge/local/hub\n1\n".into()).await;
    assert_eq!(status, 400, "{body}");
    let other_log = LogKey::generate("leadbridge-local-hub");
    let (status, body) = post_cosignature(
        &app,
        cosign(
            &other_log
                .sign(&checkpoint::verify(&second, &log_key, "leadbridge/local/hub").unwrap()),
            &demo_witness,
        ),
    )
    .await;
    assert_eq!(status, 400, "not signed by the hub's key: {body}");
    // What the witness kept is what it cosigned last: posting it again changes nothing.
    let kept = std::fs::read_to_string(witness.state()).unwrap();
    let (status, _) = post_cosignature(&app, cosign(&kept, &demo_witness)).await;
    assert_eq!(status, 200, "cosigned already");
    let (status, body) = supervisor(&app)
        .put(app.url("/supervise/v1/logs/hub/cosignatures"))
        .send()
        .await
        .map(|response| (response.status().as_u16(), response))
        .unwrap();
    assert_eq!(status, 405, "{:?}", body.text().await);

    // A witness whose kept checkpoint the hub's log does not extend stops, cosigning nothing.
    // (The refusals above were logged: sign the tree as it is now.)
    let response = supervisor(&app)
        .post(app.url("/supervise/v1/logs/hub/checkpoints"))
        .send()
        .await
        .unwrap();
    let current = response.text().await.unwrap();
    let second_size = checkpoint::verify(&current, &log_key, "leadbridge/local/hub")
        .unwrap()
        .size;
    for (why, kept, says) in [
        ("rollback", forged(data_dir, second_size + 100), "rollback"),
        ("split view", forged(data_dir, second_size), "split view"),
        (
            "another history",
            forged(data_dir, first_size),
            "does not extend",
        ),
    ] {
        std::fs::write(witness.state(), &kept).unwrap();
        let cosignatures: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM log_cosignatures")
            .fetch_one(app.store.inspection_pool().await.unwrap())
            .await
            .unwrap();
        let output = witness.run().await;
        assert!(!output.status.success(), "{why}: {}", out(&output));
        assert!(out(&output).contains(says), "{why}: {}", out(&output));
        assert_eq!(
            std::fs::read_to_string(witness.state()).unwrap(),
            kept,
            "{why}"
        );
        let after: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM log_cosignatures")
            .fetch_one(app.store.inspection_pool().await.unwrap())
            .await
            .unwrap();
        assert_eq!(after, cosignatures, "{why}: nothing cosigned");
    }
    // A kept file altered by hand does not verify under the log's key.
    std::fs::write(witness.state(), second.replacen("\n", "\n1", 1)).unwrap();
    let output = witness.run().await;
    assert!(!output.status.success());
    assert!(out(&output).contains("does not verify"), "{}", out(&output));
    app.stop().await;
}

#[tokio::test]
async fn a_witness_cosigns_only_what_extends_what_it_cosigned_on_postgres_and_kafka() {
    a_witness_cosigns_only_what_extends_what_it_cosigned(Backend::Real).await;
}

#[tokio::test]
async fn a_witness_cosigns_only_what_extends_what_it_cosigned_in_the_embedded_default() {
    a_witness_cosigns_only_what_extends_what_it_cosigned(Backend::Embedded).await;
}
