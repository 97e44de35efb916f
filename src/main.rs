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
    /// Supervisors' reports.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Agency connectors: push an agency's own data to the hub as leads.
    #[command(subcommand)]
    Connect(ConnectCommand),
}

#[derive(Subcommand)]
enum ConnectCommand {
    /// Import CSV, XLSX or JSON Lines files through a mapping (connector contract §2). Exit 0
    /// when no row was rejected, 1 when some were, 2 when the run could not proceed.
    File(ConnectFileArgs),
    /// Stream an agency's table or view (PostgreSQL, MySQL/MariaDB) in (watermark, key)
    /// order through a mapping with an [sql] table (connector contract §2).
    Sql(ConnectSqlArgs),
    /// Listen for HJ 212-2017 monitoring stations (connector contract §4): store their
    /// packets, answer them, and push the exceedance and tampering clues they make to the hub.
    /// Here `--config` names the listener's HJ212.toml (the contract's command line).
    Hj212(ConnectHj212Args),
}

#[derive(Args)]
struct ConnectHj212Args {
    /// The hub; the certificate defaults to the environment bureau's demo certificate.
    #[command(flatten)]
    hub: HubArgs,
    /// Created if missing; the default store (sqlite://leadbridge-connect/hj212.db) lives here.
    #[arg(long, default_value = "leadbridge-connect")]
    state: PathBuf,
    #[command(flatten)]
    data: DataArgs,
}

/// How a connector reaches the hub (the same for every connector).
#[derive(Args)]
struct HubArgs {
    /// The hub's agency API.
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    hub: String,
    /// Client certificate [default: the embedded default's demo certificate of the mapping's
    /// agency, <data-dir>/pki/<agency>.pem].
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Its private key [default: <data-dir>/pki/<agency>.key].
    #[arg(long)]
    key: Option<PathBuf>,
    /// The CA the hub's server certificate is checked against [default: <data-dir>/pki/ca.pem].
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Attempts per batch before the run stops with exit 2.
    #[arg(long, default_value_t = 6)]
    attempts: u32,
}

impl HubArgs {
    /// The hub options for a mapping; the mapping's agency names the default certificate (a
    /// mapping that does not load is reported by the connector itself).
    fn options(
        &self,
        settings: &Settings,
        mapping: &std::path::Path,
    ) -> anyhow::Result<leadbridge::connectors::hub::HubOptions> {
        use leadbridge::connectors::mapping::Mapping;
        use leadbridge::contract::validate::SchemaRegistry;
        let agency = Mapping::load(mapping, &SchemaRegistry::built_in()?)
            .map(|mapping| mapping.agency.as_str().to_owned())
            .unwrap_or_default();
        Ok(self.options_for(settings, &agency))
    }

    /// The hub options for `agency`'s demo certificate by default.
    fn options_for(
        &self,
        settings: &Settings,
        agency: &str,
    ) -> leadbridge::connectors::hub::HubOptions {
        let pki = settings.data_dir.join("pki");
        leadbridge::connectors::hub::HubOptions {
            url: self.hub.clone(),
            cert: self
                .cert
                .clone()
                .unwrap_or_else(|| pki.join(format!("{agency}.pem"))),
            key: self
                .key
                .clone()
                .unwrap_or_else(|| pki.join(format!("{agency}.key"))),
            ca: self.ca.clone().unwrap_or_else(|| pki.join("ca.pem")),
            attempts: self.attempts,
            backoff: leadbridge::shared::retry::Backoff {
                initial_ms: 500,
                max_ms: 30_000,
            },
            timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// What every connector is given: its mapping, the hub, its state and its report.
#[derive(Args)]
struct ConnectArgs {
    /// The mapping file (TOML): [input] for files, [sql] for a database.
    #[arg(long)]
    mapping: PathBuf,
    #[command(flatten)]
    hub: HubArgs,
    /// Checkpoints: a re-run resumes and re-sends nothing already accepted.
    #[arg(long, default_value = "leadbridge-connect")]
    state: PathBuf,
    /// The rejection report: CSV (UTF-8 with BOM), or JSON Lines for a .jsonl name; `row` is
    /// the file's row, or the key value for SQL.
    #[arg(long)]
    report: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Args)]
struct ConnectFileArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Map and check locally, write the report, send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Leads per batch call (at most 500).
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// The files to import.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

#[derive(Args)]
struct ConnectSqlArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// One pass until caught up, then exit (0, 1 or 2 as for files); without it, a pass every
    /// poll_interval_secs until Ctrl-C or SIGTERM.
    #[arg(long)]
    once: bool,
}

#[derive(Subcommand)]
enum ReportCommand {
    /// The monthly report (一月一排名, supervision contract §5) from the hub's database, as
    /// `GET /supervise/v1/reports/monthly` gives it, computed now.
    Monthly {
        /// The month, `2026-11` (Asia/Shanghai).
        month: String,
        /// Rows by agency (default) or district.
        #[arg(long, default_value = "agency", value_parser = ["agency", "district"])]
        by: String,
        /// json (default) or csv (UTF-8 with BOM).
        #[arg(long, default_value = "json", value_parser = ["json", "csv"])]
        format: String,
        /// Write it here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The hub's database (default: the configured one, or the embedded default's).
        #[arg(long)]
        database_url: Option<String>,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute a transparency log from its stored entries and check every stored tree hash
    /// and checkpoint; exits non-zero naming the first bad entry or checkpoint.
    Verify {
        /// Which log: hub or police.
        #[arg(long, default_value = "hub", value_parser = ["hub", "police"])]
        log: String,
        /// With `--log police`: the hub's copy of the police log, in the hub's database,
        /// rather than the adapter's own.
        #[arg(long)]
        hub_copy: bool,
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
    /// Write the evidence bundle of one lead from both logs (supervision contract §4), signing
    /// a checkpoint of the hub's log for it; the same bundle `GET /supervise/v1/leads/{id}/evidence`
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
    /// Create a log's Ed25519 signing key (signed-note private key form) for
    /// `transparency.hub_key_file` or `police_key_file`, and print its verifier key.
    Keygen {
        /// The key's name, e.g. `leadbridge-zibo-hub` (no spaces or '+').
        #[arg(long)]
        name: String,
        /// Where to write it (refused if the file exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Witness a log for a supervisor (supervision contract §2): fetch its checkpoint from the
    /// hub, check it extends the last one this witness cosigned (kept in `--state`), cosign it
    /// and post the cosignature. Exits non-zero, cosigning nothing, on a rollback, a split view
    /// or a consistency proof that does not verify.
    Witness(WitnessArgs),
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

#[derive(Args)]
struct WitnessArgs {
    /// The hub's HTTPS address.
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    hub: String,
    /// Which log: hub or police.
    #[arg(long, default_value = "hub", value_parser = ["hub", "police"])]
    log: String,
    /// The supervisor's client certificate and key (default: the embedded default's
    /// `<data-dir>/pki/supervisor.pem` and `.key`) and the CA of the hub's server certificate
    /// (default `<data-dir>/pki/ca.pem`).
    #[arg(long)]
    cert: Option<PathBuf>,
    #[arg(long)]
    cert_key: Option<PathBuf>,
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The witness's Ed25519 key (signed-note private key form; default: the embedded
    /// default's demo witness `<data-dir>/keys/witness.key`).
    #[arg(long)]
    witness_key: Option<PathBuf>,
    /// Where the last cosigned checkpoint is kept (default `<data-dir>/witness/<log>.checkpoint`).
    #[arg(long)]
    state: Option<PathBuf>,
    /// The log's verifier key; default: the one the hub serves at `/supervise/v1/keys` on
    /// first use, after which the kept checkpoint must verify under it.
    #[arg(long)]
    log_key: Option<String>,
    #[command(flatten)]
    data: DataArgs,
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
        Command::Connect(ConnectCommand::File(args)) => {
            let settings = settings(&cli, &args.connect.data, None)?;
            // Retries and the like go to stderr; stdout keeps the summary line.
            leadbridge::shared::telemetry::init_logging(&settings.log);
            let code = connect_file(&settings, args).await?;
            std::process::exit(code);
        }
        Command::Connect(ConnectCommand::Hj212(args)) => {
            // `--config` is the listener's file here, not the hub's settings.
            let listener_config = cli
                .config
                .clone()
                .context("connect hj212 needs --config HJ212.toml")?;
            let mut settings = Settings::load(None)?;
            if let Some(dir) = &args.data.data_dir {
                settings.data_dir = dir.clone();
            }
            leadbridge::shared::telemetry::init_logging(&settings.log);
            connect_hj212(&settings, &listener_config, args).await
        }
        Command::Connect(ConnectCommand::Sql(args)) => {
            let settings = settings(&cli, &args.connect.data, None)?;
            leadbridge::shared::telemetry::init_logging(&settings.log);
            let code = connect_sql(&settings, args).await?;
            std::process::exit(code);
        }
        Command::Pki(PkiCommand::Issue(args)) => {
            let settings = settings(&cli, &args.data, None)?;
            issue_certificate(&settings, args)
        }
        Command::Audit(AuditCommand::Verify {
            log,
            hub_copy,
            database_url,
            key,
            data,
        }) => {
            let settings = settings(&cli, data, None)?;
            if *hub_copy && log != "police" {
                anyhow::bail!(
                    "--hub-copy is the hub's copy of the police log: use it with --log police"
                );
            }
            verify_log(
                &settings,
                log,
                *hub_copy,
                database_url.clone(),
                key.as_deref(),
            )
            .await
        }
        Command::Audit(AuditCommand::VerifyEvidence { file, keys }) => verify_evidence(file, keys),
        Command::Report(ReportCommand::Monthly {
            month,
            by,
            format,
            out,
            database_url,
            data,
        }) => {
            let settings = settings(&cli, data, None)?;
            monthly_report(
                &settings,
                month,
                by,
                format,
                out.as_deref(),
                database_url.clone(),
            )
            .await
        }
        Command::Audit(AuditCommand::Keygen { name, out }) => {
            use leadbridge::shared::tlog::LogKey;
            if out.exists() {
                anyhow::bail!(
                    "{} exists: a signing key is never overwritten",
                    out.display()
                );
            }
            if name.is_empty() || name.contains([' ', '+', '\n']) {
                anyhow::bail!("key name {name:?} must be non-empty, without spaces or '+'");
            }
            let key = LogKey::load_or_create(out, name)?;
            println!("{}", key.verifier_key());
            Ok(())
        }
        Command::Audit(AuditCommand::Witness(args)) => {
            let settings = settings(&cli, &args.data, None)?;
            witness(&settings, args).await
        }
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
    hub_copy: bool,
    database_url: Option<String>,
    key: Option<&str>,
) -> anyhow::Result<()> {
    use leadbridge::shared::audit::log::LogTables;
    use leadbridge::shared::tlog::{LogKey, VerifierKey};
    let transparency = &settings.transparency;
    let key = match key {
        Some(text) => VerifierKey::parse(text)?,
        None if log == "police" => transparency
            .police_verifier(&settings.data_dir, None)?
            .with_context(|| {
                format!(
                    "no police key: pass --key, set transparency.police_verifier_key, or keep the police key at {}",
                    transparency.key_file("police", &settings.data_dir).0.display()
                )
            })?,
        None => {
            let (path, _) = transparency.key_file(log, &settings.data_dir);
            VerifierKey::parse(&LogKey::load(&path)?.verifier_key())?
        }
    };
    let tables = if hub_copy {
        LogTables::POLICE_COPY
    } else {
        LogTables::OWN
    };
    let store = if log == "hub" || hub_copy {
        let url = database_url.unwrap_or_else(|| settings.database_url());
        leadbridge::hub::store::connect(&url, 2).await?
    } else {
        let url = database_url.unwrap_or_else(|| settings.police.database_url(&settings.data_dir));
        leadbridge::shared::store::Store::connect(&url, 2, &leadbridge::police::store::MIGRATIONS)
            .await?
    };
    let origin = leadbridge::shared::tlog::origin(&transparency.deployment, log);
    let what = if hub_copy {
        "the hub's copy of the police log".to_owned()
    } else {
        format!("the {log} log")
    };
    let verified = leadbridge::shared::audit::log::verify(&store, tables, &key, &origin)
        .await
        .with_context(|| format!("{what} does not verify"))?;
    store.close().await;
    println!(
        "{log} log{} verified: {} entries, {} checkpoints (latest at size {}), {} queued",
        if hub_copy { " (the hub's copy)" } else { "" },
        verified.entries,
        verified.checkpoints,
        verified.checkpointed,
        verified.queued
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
        .signer(
            "hub",
            &settings.data_dir,
            database_url.is_none() && settings.database.url.is_none(),
        )
        .context("cannot load the hub's transparency-log key")?;
    let url = database_url.unwrap_or_else(|| settings.database_url());
    let store = leadbridge::hub::store::connect(&url, 2).await?;
    if store.lead_agency(lead).await?.is_none() {
        anyhow::bail!("the hub knows no lead {lead}");
    }
    let mut bundle = leadbridge::shared::audit::log::bundle(&store, &signer, "hub", lead).await?;
    leadbridge::shared::audit::log::add_copy_to_bundle(
        &store,
        leadbridge::shared::audit::log::LogTables::POLICE_COPY,
        "police",
        &mut bundle,
    )
    .await?;
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

/// `leadbridge report monthly`.
async fn monthly_report(
    settings: &Settings,
    month: &str,
    by: &str,
    format: &str,
    out: Option<&std::path::Path>,
    database_url: Option<String>,
) -> anyhow::Result<()> {
    use leadbridge::hub::supervise::reports::{report_csv, GroupBy, Month};
    use leadbridge::hub::supervise::views::{compute_report, ReportSources};
    let month =
        Month::parse(month).with_context(|| format!("{month:?} is not a month (YYYY-MM)"))?;
    let by = if by == "district" {
        GroupBy::District
    } else {
        GroupBy::Agency
    };
    let clocks = leadbridge::contract::deadlines::Clocks::load(&settings.police.deadlines)?;
    let districts = leadbridge::contract::lead::DivisionTable::built_in()?;
    let url = database_url.unwrap_or_else(|| settings.database_url());
    let store = leadbridge::hub::store::connect(&url, 2).await?;
    let sources = ReportSources {
        store: &store,
        clocks: &clocks,
        settings: &settings.supervision,
        districts: &districts,
    };
    let report = compute_report(&sources, month, by, None, chrono::Utc::now())
        .await
        .map_err(|error| anyhow::anyhow!("cannot compute the report: {error}"))?;
    store.close().await;
    let text = if format == "csv" {
        report_csv(&report)
    } else {
        format!("{}\n", serde_json::to_string_pretty(&report)?)
    };
    match out {
        Some(path) => {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "monthly report {} by {}: {} rows, written to {}",
                report.month,
                if by == GroupBy::District {
                    "district"
                } else {
                    "agency"
                },
                report.rows.len(),
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// `leadbridge connect file`: the import, its summary line, and the contract's exit status.
async fn connect_file(settings: &Settings, args: &ConnectFileArgs) -> anyhow::Result<i32> {
    use leadbridge::connectors::file::{import, FileOptions};
    let hub = if args.dry_run {
        None
    } else {
        Some(args.connect.hub.options(settings, &args.connect.mapping)?)
    };
    let result = import(FileOptions {
        mapping: args.connect.mapping.clone(),
        inputs: args.inputs.clone(),
        hub,
        state: args.connect.state.clone(),
        report: args.connect.report.clone(),
        batch_size: args.batch_size,
    })
    .await;
    if result.per_input.len() > 1 {
        for (input, summary) in &result.per_input {
            println!("{input}: {summary}");
        }
    }
    println!("{}", result.summary);
    if args.dry_run {
        println!(
            "dry run: {} lead(s) passed the checks, nothing was sent",
            result.valid_in_dry_run
        );
    }
    for error in &result.errors {
        eprintln!("error: {error}");
    }
    Ok(result.summary.exit_code(!result.errors.is_empty()))
}

/// `leadbridge connect sql`: passes over the agency's table, a summary line per pass that read
/// rows (without `--once`), the run's summary line, and the contract's exit status.
async fn connect_sql(settings: &Settings, args: &ConnectSqlArgs) -> anyhow::Result<i32> {
    use leadbridge::connectors::sql::{stream, SqlOptions};
    let connect = &args.connect;
    let result = stream(SqlOptions {
        mapping: connect.mapping.clone(),
        hub: connect.hub.options(settings, &connect.mapping)?,
        state: connect.state.clone(),
        report: connect.report.clone(),
        once: args.once,
        stop: shutdown_signal(),
    })
    .await;
    println!("{}", result.summary);
    for error in &result.errors {
        eprintln!("error: {error}");
    }
    Ok(result.exit_code())
}

/// `leadbridge connect hj212`: the listener, until Ctrl-C or SIGTERM.
async fn connect_hj212(
    settings: &Settings,
    listener_config: &std::path::Path,
    args: &ConnectHj212Args,
) -> anyhow::Result<()> {
    use leadbridge::connectors::hj212::config::ListenerConfig;
    use leadbridge::connectors::hj212::server::{Counters, Listener};
    use leadbridge::connectors::hj212::store::ListenerStore;
    use leadbridge::connectors::hub::{HubClient, HubOptions};
    let config = ListenerConfig::load(listener_config)?;
    leadbridge::shared::private_fs::private_dir(&args.state)?;
    if let Some(path) = config.store.strip_prefix("sqlite://") {
        let path = std::path::Path::new(path.split('?').next().unwrap_or(path));
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            leadbridge::shared::private_fs::private_dir(parent)?;
        }
    }
    // The pusher retries on its own, without end; a round is a few attempts.
    let hub = HubClient::new(HubOptions {
        attempts: args.hub.attempts.min(3),
        ..args.hub.options_for(settings, "environment")
    })?;
    let store = ListenerStore::open(
        &config.store,
        leadbridge::contract::validate::Validator::built_in()?,
    )
    .await?;
    let stations = config.stations.len();
    let listener = Listener::start(config, store, Some(hub)).await?;
    println!(
        "HJ 212 listener on {} for {stations} station(s); leads go to {}",
        listener.address, args.hub.hub
    );
    let mut stop = shutdown_signal();
    let _ = stop.changed().await;
    let counters = listener.counters.clone();
    listener.stop().await;
    let c = &counters;
    println!(
        "packets stored {}, duplicates {}, bad frames {}, bad packets {}, unknown MN {}, wrong PW {}, lead revisions {}, pushed {}",
        Counters::get(&c.stored),
        Counters::get(&c.duplicates),
        Counters::get(&c.bad_frames),
        Counters::get(&c.bad_packets),
        Counters::get(&c.unknown_mn),
        Counters::get(&c.wrong_password),
        Counters::get(&c.revisions),
        Counters::get(&c.pushed),
    );
    Ok(())
}

/// `leadbridge audit witness`: one round of a witness (see `shared::tlog::witness`).
async fn witness(settings: &Settings, args: &WitnessArgs) -> anyhow::Result<()> {
    use leadbridge::shared::tlog::witness::{self, Needed, Observed};
    use leadbridge::shared::tlog::{LogKey, VerifierKey};
    let dir = &settings.data_dir;
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let cert = args
        .cert
        .clone()
        .unwrap_or_else(|| dir.join("pki/supervisor.pem"));
    let cert_key = args
        .cert_key
        .clone()
        .unwrap_or_else(|| dir.join("pki/supervisor.key"));
    let ca = args.ca.clone().unwrap_or_else(|| dir.join("pki/ca.pem"));
    let witness_key_file = args
        .witness_key
        .clone()
        .unwrap_or_else(|| dir.join(leadbridge::shared::audit::log::DEMO_WITNESS_KEY));
    let state_file = args
        .state
        .clone()
        .unwrap_or_else(|| dir.join("witness").join(format!("{}.checkpoint", args.log)));
    let witness_key = LogKey::load(&witness_key_file)?;
    let mut identity = read(&cert)?;
    identity.extend(read(&cert_key)?);
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&read(&ca)?)?)
        .identity(reqwest::Identity::from_pem(&identity)?)
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let base = args.hub.trim_end_matches('/');
    let fetch = |path: String| {
        let client = client.clone();
        async move {
            let response = client
                .get(format!("{base}{path}"))
                .send()
                .await
                .with_context(|| format!("cannot reach the hub for {path}"))?;
            let status = response.status();
            let body = response.text().await?;
            if !status.is_success() {
                anyhow::bail!("{path}: the hub answered {status}: {body}");
            }
            Ok::<_, anyhow::Error>(body)
        }
    };

    let origin = leadbridge::shared::tlog::origin(&settings.transparency.deployment, &args.log);
    let key_text = match &args.log_key {
        Some(text) => text.clone(),
        None => {
            let keys: serde_json::Value =
                serde_json::from_str(&fetch("/supervise/v1/keys".into()).await?)?;
            keys[args.log.as_str()]
                .as_str()
                .with_context(|| format!("the hub serves no key of the {} log", args.log))?
                .to_owned()
        }
    };
    let key = VerifierKey::parse(&key_text)?;
    let kept: Option<Observed> = match std::fs::read_to_string(&state_file) {
        Ok(text) => Some(witness::observe(&text, &key, &origin).with_context(|| {
            format!(
                "the checkpoint kept in {} does not verify under the {} log's key {key_text}: the key changed or the file was altered",
                state_file.display(),
                args.log
            )
        })?),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", state_file.display()))
        }
    };
    // The hub's log: a checkpoint of the log as it is now (a supervisor may ask for one), so a
    // witness never waits for the next interval. The police log: its latest, the police's own.
    let served = if args.log == "hub" {
        let response = client
            .post(format!("{base}/supervise/v1/logs/hub/checkpoints"))
            .send()
            .await
            .context("cannot reach the hub for a fresh checkpoint")?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() {
            anyhow::bail!("/supervise/v1/logs/hub/checkpoints: the hub answered {status}: {body}");
        }
        body
    } else {
        fetch("/supervise/v1/logs/police/checkpoint".to_owned()).await?
    };
    let new = witness::observe(&served, &key, &origin)?;
    let step = witness::needed(kept.as_ref().map(|kept| &kept.checkpoint), &new.checkpoint)?;
    if let (Needed::Consistency { first, second }, Some(kept)) = (step, &kept) {
        let proof: serde_json::Value = serde_json::from_str(
            &fetch(format!(
                "/supervise/v1/logs/{}/proof/consistency?first={first}&second={second}",
                args.log
            ))
            .await?,
        )?;
        let path = proof["path"]
            .as_array()
            .context("the consistency proof has no path")?
            .iter()
            .map(|hash| {
                hash.as_str()
                    .and_then(leadbridge::shared::tlog::evidence::parse_hash)
                    .context("a proof hash is not 64 hex digits")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        witness::check_consistency(&kept.checkpoint, &new.checkpoint, &path)?;
    }
    let response = client
        .post(format!(
            "{base}/supervise/v1/logs/{}/cosignatures",
            args.log
        ))
        .header("content-type", "text/plain; charset=utf-8")
        .body(witness::cosigned(&new, &witness_key))
        .send()
        .await
        .context("cannot reach the hub to post the cosignature")?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        anyhow::bail!("the hub refused the cosignature ({status}): {body}");
    }
    if let Some(parent) = state_file.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let temporary = state_file.with_extension("partial");
    std::fs::write(&temporary, &new.note)
        .and_then(|()| std::fs::rename(&temporary, &state_file))
        .with_context(|| format!("cannot keep the checkpoint in {}", state_file.display()))?;
    let since = match step {
        Needed::Nothing => "the first this witness cosigns".to_owned(),
        Needed::Same => "the one it cosigned before".to_owned(),
        Needed::Consistency { first, .. } => format!("consistent with size {first}"),
    };
    println!(
        "cosigned the {} log at size {} as {} ({since})",
        args.log,
        new.checkpoint.size,
        witness_key.name()
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
