//! The `leadbridge` binary: one subcommand per role, and `serve` for all of them.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use leadbridge::app::Settings;
use leadbridge::contract::lead::Agency;
use leadbridge::contract::validate::{ValidationError, Validator};
use leadbridge::{Application, Roles};
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "leadbridge",
    version,
    about = "Data exchange hub between administrative agencies and the police"
)]
struct Cli {
    /// TOML configuration file (also LEADBRIDGE_CONFIG).
    #[arg(long, global = true, env = "LEADBRIDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process (with no configuration: the embedded default).
    Serve(ServeArgs),
    /// Run only the hub's HTTPS agency API.
    Ingest(ServeArgs),
    /// Run only the hub's background work: the outbox relay and the receipts consumer.
    Relay(DataArgs),
    /// Run only the police case-management adapter and the investigators' API (it needs only
    /// Kafka and its own database, so it can run inside the police network).
    PoliceAdapter(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(DataArgs),
    /// Validate lead files offline as the given agency would submit them.
    Validate {
        /// The submitting agency: environment, land, safety or water.
        #[arg(long)]
        agency: Agency,
        /// Lead documents (JSON files).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Supervisors' checks of the transparency logs.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The embedded default's development PKI.
    #[command(subcommand)]
    Pki(PkiCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute a transparency log from its stored entries and check every stored tree hash
    /// and checkpoint; exits non-zero naming the first bad entry or checkpoint.
    Verify {
        /// Which log: hub or police.
        #[arg(long, default_value = "hub", value_parser = ["hub", "police"])]
        log: String,
        /// The log's database (default: the configured one, or the embedded default's).
        #[arg(long)]
        database_url: Option<String>,
        /// The log's verifier key (`<name>+<key id>+<base64>`, as `GET /supervise/v1/keys`
        /// gives it); default: the public half of the role's configured key.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Write the evidence bundle of one lead from the hub's log (supervision contract §4),
    /// signing a checkpoint for it; the same bundle `GET /supervise/v1/leads/{id}/evidence`
    /// serves.
    Evidence {
        lead_id: String,
        /// Write it here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The hub's database (default: the configured one, or the embedded default's).
        #[arg(long)]
        database_url: Option<String>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Check an evidence bundle offline (supervision contract §4): every entry's hash, its
    /// inclusion proof and the logs' signed checkpoints, with only the public keys. Exits
    /// non-zero naming the first entry that does not verify.
    VerifyEvidence {
        /// The bundle (`GET /supervise/v1/leads/{lead_id}/evidence`).
        file: PathBuf,
        /// The logs' public keys (`GET /supervise/v1/keys`).
        #[arg(long)]
        keys: PathBuf,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Issue a client certificate with the development CA under `<data-dir>/pki`, e.g.
    /// `pki issue --role investigator --unit 370303` or `pki issue --role agency --agency land`.
    Issue(IssueArgs),
}

#[derive(Args)]
struct IssueArgs {
    /// agency, investigator or supervisor.
    #[arg(long)]
    role: Role,
    /// The agency, for `--role agency`: environment, land, safety or water.
    #[arg(long, required_if_eq("role", "agency"))]
    agency: Option<Agency>,
    /// The police unit's code, for `--role investigator` (one of the configured units).
    #[arg(long, required_if_eq("role", "investigator"))]
    unit: Option<String>,
    /// The supervisor's name, for `--role supervisor`.
    #[arg(long, required_if_eq("role", "supervisor"))]
    name: Option<String>,
    /// Whom a supervisor supervises for (the certificate's O): procuratorate (the default),
    /// reform_office, or an agency for that agency's head.
    #[arg(long)]
    scope: Option<String>,
    /// Replace existing files of the same name.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Role {
    Agency,
    Investigator,
    Supervisor,
}

#[derive(Args)]
struct ServeArgs {
    /// Address of the HTTPS API [default: 127.0.0.1:8443].
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Args)]
struct DataArgs {
    /// Data directory of the embedded default [default: ./leadbridge-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn settings(cli: &Cli, data: &DataArgs, listen: Option<SocketAddr>) -> anyhow::Result<Settings> {
    let mut settings = Settings::load(cli.config.as_deref())?;
    if let Some(dir) = &data.data_dir {
        settings.data_dir = dir.clone();
    }
    if let Some(listen) = listen {
        settings.server.listen = listen;
    }
    Ok(settings)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Serve(args) => run(&cli, args, Roles::ALL).await,
        Command::Ingest(args) => run(&cli, args, Roles::INGEST).await,
        Command::PoliceAdapter(args) => run(&cli, args, Roles::POLICE).await,
        Command::Relay(data) => {
            let settings = settings(&cli, data, None)?;
            leadbridge::shared::telemetry::init_logging(&settings.log);
            let app = Application::build(settings, Roles::RELAY).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate(data) => {
            let settings = settings(&cli, data, None)?;
            leadbridge::shared::telemetry::init_logging(&settings.log);
            leadbridge::shared::private_fs::private_dir(&settings.data_dir)?;
            leadbridge::hub::store::connect(&settings.database_url(), 1).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Validate { agency, files } => validate_files(*agency, files),
        Command::Pki(PkiCommand::Issue(args)) => {
            let settings = settings(&cli, &args.data, None)?;
            issue_certificate(&settings, args)
        }
        Command::Audit(AuditCommand::Verify {
            log,
            database_url,
            key,
            data,
        }) => {
            let settings = settings(&cli, data, None)?;
            verify_log(&settings, log, database_url.clone(), key.as_deref()).await
        }
        Command::Audit(AuditCommand::VerifyEvidence { file, keys }) => verify_evidence(file, keys),
        Command::Audit(AuditCommand::Evidence {
            lead_id,
            out,
            database_url,
            data,
        }) => {
            let settings = settings(&cli, data, None)?;
            write_evidence(&settings, lead_id, out.as_deref(), database_url.clone()).await
        }
    }
}

async fn verify_log(
    settings: &Settings,
    log: &str,
    database_url: Option<String>,
    key: Option<&str>,
) -> anyhow::Result<()> {
    use leadbridge::shared::tlog::{LogKey, VerifierKey};
    let transparency = &settings.transparency;
    let key = match key {
        Some(text) => VerifierKey::parse(text)?,
        None => {
            let (path, _) = transparency.key_file(log, &settings.data_dir);
            VerifierKey::parse(&LogKey::load(&path)?.verifier_key())?
        }
    };
    let store = if log == "hub" {
        let url = database_url.unwrap_or_else(|| settings.database_url());
        leadbridge::hub::store::connect(&url, 2).await?
    } else {
        let url = database_url.unwrap_or_else(|| settings.police.database_url(&settings.data_dir));
        leadbridge::shared::store::Store::connect(&url, 2, &leadbridge::police::store::MIGRATIONS)
            .await?
    };
    let origin = leadbridge::shared::tlog::origin(&transparency.deployment, log);
    let verified = leadbridge::shared::audit::log::verify(&store, &key, &origin)
        .await
        .with_context(|| format!("the {log} log does not verify"))?;
    store.close().await;
    println!(
        "{log} log verified: {} entries, {} checkpoints (latest at size {}), {} queued",
        verified.entries, verified.checkpoints, verified.checkpointed, verified.queued
    );
    Ok(())
}

async fn write_evidence(
    settings: &Settings,
    lead_id: &str,
    out: Option<&std::path::Path>,
    database_url: Option<String>,
) -> anyhow::Result<()> {
    let lead = leadbridge::contract::lead::LeadId::parse(lead_id)
        .with_context(|| format!("{lead_id:?} is not a lead id"))?;
    let signer = settings
        .transparency
        .signer("hub", &settings.data_dir)
        .context("cannot load the hub's transparency-log key")?;
    let url = database_url.unwrap_or_else(|| settings.database_url());
    let store = leadbridge::hub::store::connect(&url, 2).await?;
    if store.lead_agency(lead).await?.is_none() {
        anyhow::bail!("the hub knows no lead {lead}");
    }
    let bundle = leadbridge::shared::audit::log::bundle(&store, &signer, "hub", lead).await?;
    store.close().await;
    let text = serde_json::to_string_pretty(&bundle)?;
    match out {
        Some(path) => {
            std::fs::write(path, format!("{text}\n"))
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "evidence of lead {lead}: {} entries, written to {}",
                bundle.entries.len(),
                path.display()
            );
        }
        None => println!("{text}"),
    }
    Ok(())
}

fn verify_evidence(file: &std::path::Path, keys: &std::path::Path) -> anyhow::Result<()> {
    use leadbridge::shared::tlog::evidence::{verify_bundle, Bundle, Keys};
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let bundle: Bundle = serde_json::from_str(&read(file)?)
        .with_context(|| format!("{} is not an evidence bundle", file.display()))?;
    let keys: Keys = serde_json::from_str(&read(keys)?)
        .with_context(|| format!("{} is not the keys document", keys.display()))?;
    let verified = verify_bundle(&bundle, &keys)
        .with_context(|| format!("{} does not verify", file.display()))?;
    let sizes: Vec<String> = verified
        .checkpoints
        .iter()
        .map(|(log, checkpoint)| format!("{log} log at size {}", checkpoint.size))
        .collect();
    println!(
        "evidence verified: lead {}, {} entries, against the {}",
        verified.lead_id,
        verified.entries,
        sizes.join(" and the ")
    );
    Ok(())
}

async fn run(cli: &Cli, args: &ServeArgs, roles: Roles) -> anyhow::Result<()> {
    let settings = settings(cli, &args.data, args.listen)?;
    leadbridge::shared::telemetry::init_logging(&settings.log);
    let embedded_pki = settings.server.tls.is_none();
    let data_dir = settings.data_dir.clone();
    let app = Application::build(settings, roles).await?;
    let first_steps = embedded_pki && roles.hub_api;
    if first_steps {
        // Before the "listening" line: whoever acts on that line finds the file in place.
        write_sample_lead(&data_dir)?;
    }
    if let Some(addr) = app.local_addr() {
        println!("LeadBridge is listening on https://{addr}");
        if first_steps {
            print_first_steps(&data_dir, addr);
        }
    }
    app.run_until_stopped(shutdown_signal()).await
}

/// `leadbridge pki issue`: a certificate for one more principal from the development CA.
fn issue_certificate(settings: &Settings, args: &IssueArgs) -> anyhow::Result<()> {
    use leadbridge::shared::identity::Principal;
    if settings.server.tls.is_some() {
        anyhow::bail!(
            "server.tls is configured: this hub trusts your own CA, so issue the certificate with it (subject O={}, OU=<role>, CN=<name>)",
            settings.server.client_organization
        );
    }
    let principal = match args.role {
        Role::Agency => Principal::Agency(args.agency.expect("clap requires --agency")),
        Role::Investigator => {
            let unit = args.unit.clone().expect("clap requires --unit");
            let units = &settings.police.units;
            if !units.iter().any(|u| u.id == unit) {
                let known: Vec<String> = units
                    .iter()
                    .map(|u| format!("{} ({})", u.id, u.name))
                    .collect();
                anyhow::bail!(
                    "no police unit {unit:?} is configured; the units are: {}",
                    known.join(", ")
                );
            }
            Principal::Investigator { unit }
        }
        Role::Supervisor => {
            let name = args.name.clone().expect("clap requires --name");
            if name.trim().is_empty() || name.chars().any(|c| c.is_control() || c == '/') {
                anyhow::bail!("--name must be a non-empty name without control characters or '/'");
            }
            let scope = args.scope.as_deref().unwrap_or("procuratorate");
            let scope =
                leadbridge::shared::identity::SupervisorScope::parse(scope).with_context(|| {
                    format!("--scope {scope:?} is not procuratorate, reform_office or an agency")
                })?;
            Principal::Supervisor { name, scope }
        }
    };
    let dir = settings.data_dir.join("pki");
    if !dir.join("ca.key").exists() {
        anyhow::bail!(
            "{} holds no development CA key: run `leadbridge serve` once with this data directory to create the development PKI",
            dir.display()
        );
    }
    let (cert, key) = leadbridge::shared::pki::issue_with_dev_ca(&dir, &principal, args.force)?;
    println!("Issued a certificate for {principal}:");
    println!("  certificate {}", cert.display());
    println!("  key         {}", key.display());
    println!(
        "Use it as: curl --cacert {} --cert {} --key {} https://…",
        dir.join("ca.pem").display(),
        cert.display(),
        key.display()
    );
    Ok(())
}

/// Writes a sample lead next to the development PKI.
fn write_sample_lead(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let sample = data_dir.join("sample-lead.json");
    std::fs::write(&sample, include_str!("../docs/examples/sample-lead.json"))
        .with_context(|| format!("cannot write {}", sample.display()))
}

/// Prints a `curl` line that submits the sample lead with the development PKI.
fn print_first_steps(data_dir: &std::path::Path, addr: SocketAddr) {
    let sample = data_dir.join("sample-lead.json");
    let pki = data_dir.join("pki");
    let host = match addr {
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        SocketAddr::V4(v4) => v4.ip().to_string(),
    };
    println!("Submit the sample lead as the environment agency:");
    println!(
        "  curl --cacert {ca} --cert {pki}/environment.pem --key {pki}/environment.key \\\n    -H 'Content-Type: application/json' --data-binary @{sample} https://{host}:{port}/v1/leads",
        ca = pki.join("ca.pem").display(),
        pki = pki.display(),
        sample = sample.display(),
        port = addr.port(),
    );
}

fn validate_files(agency: Agency, files: &[PathBuf]) -> anyhow::Result<()> {
    let validator = Validator::built_in()?;
    let mut failures = 0;
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        // The API's parser, so a file passes here exactly when its body would pass there.
        let document = match leadbridge::contract::validate::json::parse(text.as_bytes()) {
            Ok(document) => document,
            Err(error) => {
                println!("{}: {error}", file.display());
                failures += 1;
                continue;
            }
        };
        match validator.validate(agency, document, chrono::Utc::now()) {
            Ok(lead) => println!(
                "{}: valid ({}, sha256 {})",
                file.display(),
                lead.lead_type(),
                lead.content_sha256()
            ),
            Err(ValidationError::Invalid(problems)) => {
                failures += 1;
                println!("{}: {} problem(s)", file.display(), problems.len());
                for problem in problems {
                    println!(
                        "  {} [{}] {}",
                        problem.pointer, problem.code, problem.message
                    );
                }
            }
            Err(error) => {
                failures += 1;
                println!("{}: {error}", file.display());
            }
        }
    }
    if failures > 0 {
        anyhow::bail!("{failures} of {} file(s) invalid", files.len());
    }
    Ok(())
}

/// Turns true on Ctrl-C or SIGTERM.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("Shutting down.");
        let _ = sender.send(true);
    });
    receiver
}
