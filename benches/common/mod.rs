//! What the benchmarks share: the environment, production durability checked, a PKI, fresh
//! databases and a running application.

#![allow(dead_code)]

use leadbridge::app::Settings;
use leadbridge::shared::config::{Secret, TlsSettings};
use leadbridge::shared::pki::DevCa;
use leadbridge::{Application, Roles};
use sqlx::Connection;

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run deploy/local/bench.sh"))
}

pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A field of `/proc/self/status` in MiB (`VmHWM`: peak resident set; `VmRSS`: now).
pub fn memory_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

/// A connection to the benchmark's PostgreSQL cluster, after checking it runs with production
/// durability (or no figures).
pub async fn durable_admin(admin_url: &str) -> sqlx::PgConnection {
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    let mut durability = Vec::new();
    for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
        let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(value, "on", "PostgreSQL {setting} is {value}: the benchmark needs production durability (deploy/local/services.sh up-bench)");
        durability.push(format!("{setting}={value}"));
    }
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    println!(
        "PostgreSQL {version} at {}: production durability, {}",
        admin_url.rsplit('@').next().unwrap(),
        durability.join(", ")
    );

    admin
}

/// An HTTPS client builder trusting `ca` and presenting the certificate `issued` for it.
pub fn client_builder(ca: &DevCa, cert_pem: &str, key_pem: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(format!("{cert_pem}{key_pem}").as_bytes()).unwrap())
}

/// A development CA and the server's TLS files, in a directory kept as long as the first value.
pub fn bench_pki() -> (tempfile::TempDir, DevCa, TlsSettings) {
    let pki_dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("bench CA").unwrap();
    let server = ca.issue_server(&["127.0.0.1"]).unwrap();
    let tls = TlsSettings {
        cert: pki_dir.path().join("server.pem"),
        key: pki_dir.path().join("server.key"),
        client_ca: pki_dir.path().join("ca.pem"),
    };
    std::fs::write(&tls.cert, &server.cert_pem).unwrap();
    std::fs::write(&tls.key, &server.key_pem).unwrap();
    std::fs::write(&tls.client_ca, ca.cert_pem()).unwrap();
    (pki_dir, ca, tls)
}

/// Settings for a hub on fresh PostgreSQL databases (its own, and the adapter's) and fresh
/// topics.
pub async fn fresh_settings(
    template: &Settings,
    admin_url: &str,
    admin: &mut sqlx::PgConnection,
    databases: &mut Vec<String>,
) -> Settings {
    let mut settings = template.clone();
    let server = admin_url.rsplit_once('/').unwrap().0.to_owned();
    let mut names = Vec::new();
    for _ in 0..2 {
        let name = format!("lb_bench_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut *admin)
            .await
            .unwrap();
        databases.push(name.clone());
        names.push(name);
    }
    settings.database.url = Some(Secret::new(format!("{server}/{}", names[0])));
    settings.police.database_url = Some(Secret::new(format!("{server}/{}", names[1])));
    // Off the embedded default, the signing keys are configured files.
    for log in ["hub", "police"] {
        let path = settings.data_dir.join("keys").join(format!("{log}.key"));
        leadbridge::shared::tlog::LogKey::load_or_create(&path, &format!("leadbridge-bench-{log}"))
            .unwrap();
        match log {
            "hub" => settings.transparency.hub_key_file = Some(path),
            _ => settings.transparency.police_key_file = Some(path),
        }
    }
    settings.kafka.topic_prefix = format!("bench{}", uuid::Uuid::new_v4().simple());
    settings.police.group_id = format!("{}-police", settings.kafka.topic_prefix);
    settings
}

/// A running application on the given settings (the hub, the adapter, or both).
pub struct Hub {
    pub base: String,
    pub store: Option<leadbridge::shared::store::Store>,
    pub police: Option<leadbridge::shared::store::Store>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Hub {
    pub async fn start(settings: &Settings, roles: Roles) -> Hub {
        let app = Application::build(settings.clone(), roles).await.unwrap();
        let base = format!(
            "https://127.0.0.1:{}",
            app.local_addr().map(|a| a.port()).unwrap_or(0)
        );
        let store = roles.hub_api.then(|| app.store().clone());
        let police = app.police_store().map(|p| p.store().clone());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(app.run_until_stopped(stopped));
        Hub {
            base,
            store,
            police,
            stop,
            task,
        }
    }

    pub fn store(&self) -> &leadbridge::shared::store::Store {
        self.store.as_ref().unwrap()
    }

    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap().unwrap();
    }
}
