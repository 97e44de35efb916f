//! `connect sql` against the real hub, on the real PostgreSQL and the real MariaDB of
//! `deploy/local/services.sh`: a table imports with exact counts and a re-run sends nothing
//! new; a row committed late, behind a newer one, is still sent once the lag has passed — and
//! without a lag it is skipped, which is why the lag exists; a new process resumes from the
//! checkpoint; and a bad mapping, NULL positions, a corrupt checkpoint and an invalid row are
//! refused or reported as the contract says. Each test makes its own database and drops it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use leadbridge::connectors::hub::HubOptions;
use leadbridge::connectors::sql::{stream, without_password, SqlOptions, SqlResult};
use leadbridge::contract::lead::Agency;
use leadbridge::Roles;
use sqlx::Connection;
use tokio::io::AsyncBufReadExt;

use crate::connect::{counts, hub_options};
use crate::helpers::{app, drop_test_database, fresh_postgres_database, Backend, TestApp};

/// The variable the mappings name as `password_env`; every test sets it to the test password.
const PASSWORD_ENV: &str = "LB_TEST_SQL_PASSWORD";

/// Runs a scenario as two tests, `<scenario>::on_postgres` and `<scenario>::on_mariadb`.
macro_rules! on_both {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test]
            async fn on_postgres() {
                super::$scenario(super::Dialect::Postgres).await;
            }

            #[tokio::test]
            async fn on_mariadb() {
                super::$scenario(super::Dialect::MariaDb).await;
            }
        }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    Postgres,
    MariaDb,
}

fn mariadb_admin_url() -> String {
    std::env::var("LEADBRIDGE_TEST_MARIADB_URL").expect(
        "LEADBRIDGE_TEST_MARIADB_URL is not set: start the test services with `bash deploy/local/services.sh up` and `eval \"$(bash deploy/local/services.sh env)\"`",
    )
}

/// A database of its own with the agency's table `patrol` (river-patrol records of the water
/// bureau, as in `connectors/samples/water`).
struct TestDb {
    dialect: Dialect,
    url: String,
}

enum Conn {
    Postgres(sqlx::PgConnection),
    MariaDb(sqlx::MySqlConnection),
}

impl Conn {
    async fn execute(&mut self, sql: &str) {
        let result = match self {
            Conn::Postgres(connection) => sqlx::raw_sql(sql).execute(connection).await.map(|_| ()),
            Conn::MariaDb(connection) => sqlx::raw_sql(sql).execute(connection).await.map(|_| ()),
        };
        result.unwrap_or_else(|error| panic!("{sql}: {error}"));
    }
}

/// A stamp for `updated_at`.
#[derive(Clone, Copy)]
enum Stamp {
    /// A wall-clock time in +08:00, `2026-06-01 10:00:00`.
    At(&'static str),
    /// The database's clock minus so many seconds.
    SecondsAgo(u32),
    Null,
}

/// One record of the table.
#[derive(Clone, Copy)]
struct Record {
    id: Option<i64>,
    updated_at: Stamp,
    id_number: &'static str,
}

const GOOD_ID_NUMBER: &str = "370323197806030142";
/// The same with a wrong check digit: the hub's domain checks refuse it.
const BAD_ID_NUMBER: &str = "370323197806030143";

fn record(id: i64, updated_at: Stamp) -> Record {
    Record {
        id: Some(id),
        updated_at,
        id_number: GOOD_ID_NUMBER,
    }
}

/// The agency's table: each column with its PostgreSQL and its MariaDB type.
const PATROL_COLUMNS: &[(&str, &str, &str)] = &[
    ("id", "BIGINT UNIQUE", "BIGINT UNIQUE"),
    ("record_no", "TEXT UNIQUE", "VARCHAR(40) UNIQUE"),
    ("updated_at", "TIMESTAMPTZ", "DATETIME(6) NULL"),
    ("found_at", "TIMESTAMP NOT NULL", "DATETIME NOT NULL"),
    ("reported_at", "TIMESTAMPTZ NOT NULL", "TIMESTAMP NULL"),
    ("division_code", "INTEGER NOT NULL", "INT NOT NULL"),
    ("river", "TEXT NOT NULL", "VARCHAR(100) NOT NULL"),
    ("place", "VARCHAR(200) NOT NULL", "VARCHAR(200) NOT NULL"),
    ("lon", "NUMERIC(9, 4)", "DECIMAL(9, 4)"),
    ("lat", "NUMERIC(9, 4)", "DECIMAL(9, 4)"),
    ("unit_name", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("uscc", "VARCHAR(18)", "VARCHAR(18)"),
    ("person", "TEXT NOT NULL", "VARCHAR(100) NOT NULL"),
    ("id_number", "CHAR(18)", "CHAR(18)"),
    ("method", "TEXT NOT NULL", "VARCHAR(100) NOT NULL"),
    ("tonnage", "DOUBLE PRECISION NOT NULL", "DOUBLE NOT NULL"),
    (
        "value_wan",
        "NUMERIC(10, 2) NOT NULL",
        "DECIMAL(10, 2) NOT NULL",
    ),
    ("in_area", "BOOLEAN NOT NULL", "BOOLEAN NOT NULL"),
    ("has_permit", "BOOLEAN NOT NULL", "BOOLEAN NOT NULL"),
    ("prohibited", "BOOLEAN NOT NULL", "BOOLEAN NOT NULL"),
    ("prior_penalties", "SMALLINT NOT NULL", "SMALLINT NOT NULL"),
    ("flood_harm", "BOOLEAN NOT NULL", "BOOLEAN NOT NULL"),
    ("handling", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("photo", "BYTEA", "BLOB"),
];

impl TestDb {
    async fn create(dialect: Dialect) -> TestDb {
        let url = match dialect {
            Dialect::Postgres => fresh_postgres_database().await,
            Dialect::MariaDb => {
                let admin = mariadb_admin_url();
                let name = format!("lb_test_{}", uuid::Uuid::new_v4().simple());
                let mut connection = sqlx::MySqlConnection::connect(&admin)
                    .await
                    .expect("connect to the test MariaDB");
                sqlx::raw_sql(&format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
                    .execute(&mut connection)
                    .await
                    .unwrap();
                connection.close().await.unwrap();
                format!("{}/{name}", admin.trim_end_matches('/'))
            }
        };
        let db = TestDb { dialect, url };
        let columns: Vec<String> = PATROL_COLUMNS
            .iter()
            .map(|(name, postgres, mariadb)| match dialect {
                Dialect::Postgres => format!("{name} {postgres}"),
                Dialect::MariaDb => format!("{name} {mariadb}"),
            })
            .collect();
        let options = match dialect {
            Dialect::Postgres => "",
            Dialect::MariaDb => " CHARACTER SET utf8mb4",
        };
        let table = format!("CREATE TABLE patrol ({}){options}", columns.join(", "));
        db.connect().await.execute(&table).await;
        db
    }

    /// A connection as the agency's own application has one: its session in +08:00.
    async fn connect(&self) -> Conn {
        match self.dialect {
            Dialect::Postgres => {
                Conn::Postgres(sqlx::PgConnection::connect(&self.url).await.unwrap())
            }
            Dialect::MariaDb => {
                let mut connection =
                    Conn::MariaDb(sqlx::MySqlConnection::connect(&self.url).await.unwrap());
                connection.execute("SET time_zone = '+08:00'").await;
                connection
            }
        }
    }

    /// The column `connect sql` reads as the key: text on PostgreSQL, an integer on MariaDB,
    /// so both kinds of key are covered.
    fn key(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => "record_no",
            Dialect::MariaDb => "id",
        }
    }

    /// The key value of record `id`, as the report shows it.
    fn key_of(&self, id: i64) -> String {
        match self.dialect {
            Dialect::Postgres => record_no(id),
            Dialect::MariaDb => id.to_string(),
        }
    }

    fn insert(&self, record: Record) -> String {
        let stamp = match (self.dialect, record.updated_at) {
            (_, Stamp::Null) => "NULL".to_owned(),
            (Dialect::Postgres, Stamp::At(at)) => format!("TIMESTAMPTZ '{at}+08'"),
            (Dialect::MariaDb, Stamp::At(at)) => format!("'{at}'"),
            (Dialect::Postgres, Stamp::SecondsAgo(s)) => {
                format!("clock_timestamp() - make_interval(secs => {s})")
            }
            (Dialect::MariaDb, Stamp::SecondsAgo(s)) => format!("NOW(6) - INTERVAL {s} SECOND"),
        };
        let reported = match self.dialect {
            Dialect::Postgres => "TIMESTAMPTZ '2026-05-12 11:10:00+08'",
            Dialect::MariaDb => "'2026-05-12 11:10:00'",
        };
        let (id, record_no) = match record.id {
            Some(id) => (id.to_string(), format!("'{}'", record_no(id))),
            None => ("NULL".to_owned(), "NULL".to_owned()),
        };
        format!(
            "INSERT INTO patrol (id, record_no, updated_at, found_at, reported_at, division_code, river, place, lon, lat, unit_name, uscc, person, id_number, method, tonnage, value_wan, in_area, has_permit, prohibited, prior_penalties, flood_harm, handling)
             VALUES ({id}, {record_no}, {stamp}, '2026-05-12 05:30:00', {reported}, 370323, '沂河', '沂源县东里镇某某村段沂河河道', 118.2364, 36.1519, '某某村采砂点（无证经营）', NULL, '王某亮', '{}', '挖掘机', 1500, 4.2, TRUE, FALSE, FALSE, 0, FALSE, '责令停止违法行为')",
            record.id_number
        )
    }

    async fn insert_all(&self, records: &[Record]) {
        let mut connection = self.connect().await;
        for record in records {
            connection.execute(&self.insert(*record)).await;
        }
    }

    async fn drop(self) {
        match self.dialect {
            Dialect::Postgres => drop_test_database(&self.url).await,
            Dialect::MariaDb => {
                let (_, name) = self.url.rsplit_once('/').unwrap();
                let mut connection = sqlx::MySqlConnection::connect(&mariadb_admin_url())
                    .await
                    .unwrap();
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name}"))
                    .execute(&mut connection)
                    .await
                    .unwrap();
            }
        }
    }
}

fn record_no(id: i64) -> String {
    format!("ZBSL-SQL-{id:04}")
}

/// What a mapping may change from the usual one.
struct MappingFile<'a> {
    key: &'a str,
    batch_size: u32,
    /// `None`: the default (300 s).
    lag_secs: Option<u64>,
    query: &'a str,
    /// An extra `[fields]` line.
    extra_field: &'a str,
    password_env: &'a str,
}

impl MappingFile<'_> {
    fn usual(key: &str) -> MappingFile<'_> {
        MappingFile {
            key,
            batch_size: 2,
            lag_secs: None,
            query: "SELECT * FROM patrol",
            extra_field: "",
            password_env: PASSWORD_ENV,
        }
    }

    /// Writes the mapping for `db` into `dir`; the URL goes without its password, which
    /// comes from `password_env`.
    fn write(&self, db: &TestDb, dir: &Path, name: &str) -> PathBuf {
        // Once: setting the environment while other test threads read it is a data race.
        static PASSWORD: std::sync::Once = std::sync::Once::new();
        PASSWORD.call_once(|| std::env::set_var(PASSWORD_ENV, "leadbridge"));
        let lag = self
            .lag_secs
            .map(|lag| format!("lag_secs = {lag}\n"))
            .unwrap_or_default();
        let text = format!(
            r#"agency = "water"
lead_type = "water.illegal_sand_mining"
kind = "clue"
time_zone = "+08:00"
attachments = []

[sql]
url = "{url}"
password_env = "{password_env}"
query = "{query}"
watermark = "updated_at"
key = "{key}"
batch_size = {batch_size}
poll_interval_secs = 1
{lag}
[fields]
"/source/case_id"            = {{ column = "record_no" }}
"/source/revision"           = {{ value = 1 }}
"/source/unit"               = {{ value = "淄博市水利局" }}
"/source/unit_division"      = {{ value = "370300" }}
"/occurred_at"               = {{ column = "found_at" }}
"/reported_at"               = {{ column = "reported_at" }}
"/location/division_code"    = {{ column = "division_code" }}
"/location/address"          = {{ template = "{{river}}：{{place}}" }}
"/location/lon"              = {{ column = "lon", optional = true }}
"/location/lat"              = {{ column = "lat", optional = true }}
"/subjects/0/type"           = {{ value = "organization" }}
"/subjects/0/name"           = {{ column = "unit_name" }}
"/subjects/0/uscc"           = {{ column = "uscc", optional = true }}
"/subjects/0/uscc_unknown"   = {{ column = "uscc", map_empty = true }}
"/subjects/1/type"           = {{ value = "person" }}
"/subjects/1/name"           = {{ column = "person" }}
"/subjects/1/id_number"      = {{ column = "id_number", optional = true }}
"/subjects/1/id_unknown"     = {{ column = "id_number", map_empty = true }}
"/subjects/1/role"           = {{ value = "operator" }}
"/summary"                   = {{ template = "{{river}}{{place}}发现{{method}}采砂约{{tonnage}}吨，涉案价值约{{value_wan}}万元；{{handling}}" }}
"/facts/value_cny"           = {{ column = "value_wan", unit = "wan_yuan", to = "cny" }}
"/facts/in_river_management_area"     = {{ column = "in_area" }}
"/facts/has_permit"                   = {{ column = "has_permit" }}
"/facts/in_prohibited_zone_or_period" = {{ column = "prohibited" }}
"/facts/prior_penalties_2y"           = {{ column = "prior_penalties", type = "integer", default = 0 }}
"/facts/flood_safety_harm_report"     = {{ column = "flood_harm" }}
{extra_field}
"#,
            url = without_password(&db.url),
            password_env = self.password_env,
            query = self.query,
            key = self.key,
            batch_size = self.batch_size,
            extra_field = self.extra_field,
        );
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

async fn pass(
    hub: &HubOptions,
    mapping: &Path,
    state: &Path,
    report: Option<PathBuf>,
) -> SqlResult {
    // The sender is dropped: nobody asks this run to stop.
    let (_, stop) = tokio::sync::watch::channel(false);
    stream(SqlOptions {
        mapping: mapping.to_owned(),
        hub: hub.clone(),
        state: state.to_owned(),
        report,
        once: true,
        stop,
    })
    .await
}

fn errors(result: &SqlResult) -> String {
    result
        .errors
        .iter()
        .map(|error| error.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn checkpoint_file(state: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(state.join("sql"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

struct Hub {
    app: TestApp,
    options: HubOptions,
    dir: tempfile::TempDir,
}

impl Hub {
    /// Drops the test's database and stops the hub.
    async fn finish(self, db: TestDb) {
        db.drop().await;
        self.app.stop().await;
    }
}

async fn hub() -> Hub {
    let app = app(Backend::Real).roles(Roles::HUB).spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let options = hub_options(&app, Agency::Water, dir.path());
    Hub { app, options, dir }
}

/// A hub, and a database of the test's own holding `records`.
async fn setup(dialect: Dialect, records: &[Record]) -> (Hub, TestDb) {
    let hub = hub().await;
    let db = TestDb::create(dialect).await;
    db.insert_all(records).await;
    (hub, db)
}

// ------------------------------------------------------------------------------ import ---

async fn a_table_imports_with_exact_counts_and_a_rerun_sends_nothing_new(dialect: Dialect) {
    // Ties in the watermark across batch boundaries (batch_size 2): the key orders them. The
    // insertion order is not the key order.
    let records = [
        record(3, Stamp::At("2026-06-01 10:00:00")),
        record(1, Stamp::At("2026-06-01 10:00:00")),
        record(2, Stamp::At("2026-06-01 10:00:00")),
        record(5, Stamp::At("2026-06-01 10:00:01.5")),
        record(4, Stamp::At("2026-06-01 10:00:01.5")),
        record(7, Stamp::At("2026-06-02 08:00:00")),
        record(6, Stamp::At("2026-06-01 23:59:59.999999")),
    ];
    let (hub, db) = setup(dialect, &records).await;
    let mapping = MappingFile::usual(db.key()).write(&db, hub.dir.path(), "patrol.toml");
    let state = hub.dir.path().join("state");

    let first = pass(&hub.options, &mapping, &state, None).await;
    assert!(first.errors.is_empty(), "{}", errors(&first));
    assert_eq!(first.summary, counts(7, 7, 0, 0, 0));
    assert_eq!(first.exit_code(), 0);

    let again = pass(&hub.options, &mapping, &state, None).await;
    assert!(again.errors.is_empty(), "{}", errors(&again));
    assert_eq!(
        again.summary,
        counts(0, 0, 0, 0, 0),
        "the checkpoint is past every row"
    );

    // Without the checkpoint the hub itself recognises every lead: replays, not new leads.
    let fresh = pass(&hub.options, &mapping, &hub.dir.path().join("fresh"), None).await;
    assert_eq!(fresh.summary, counts(7, 0, 7, 0, 0), "{}", errors(&fresh));

    // The lead carries the converted columns — integer → string, NUMERIC → number, 万元 → 元,
    // BOOLEAN → boolean, a timestamp without zone and one with a zone both in +08:00: the hub
    // answers the lead written by hand as a replay (200), not as other content (409).
    let expected = serde_json::json!({
        "lead_type": "water.illegal_sand_mining",
        "schema_version": 1,
        "kind": "clue",
        "source": {
            "agency": "water",
            "unit": "淄博市水利局",
            "unit_division": "370300",
            "case_id": record_no(4),
            "revision": 1
        },
        "occurred_at": "2026-05-12T05:30:00+08:00",
        "reported_at": "2026-05-12T11:10:00+08:00",
        "location": {
            "division_code": "370323",
            "address": "沂河：沂源县东里镇某某村段沂河河道",
            "lon": 118.2364,
            "lat": 36.1519
        },
        "subjects": [
            {"type": "organization", "name": "某某村采砂点（无证经营）", "uscc_unknown": true},
            {"type": "person", "name": "王某亮", "id_number": GOOD_ID_NUMBER, "role": "operator"}
        ],
        "summary": "沂河沂源县东里镇某某村段沂河河道发现挖掘机采砂约1500吨，涉案价值约4.2万元；责令停止违法行为",
        "facts": {
            "value_cny": 42000,
            "in_river_management_area": true,
            "has_permit": false,
            "in_prohibited_zone_or_period": false,
            "prior_penalties_2y": 0,
            "flood_safety_harm_report": false
        },
        "attachments": []
    });
    let response = hub.app.post_lead(Agency::Water, &expected).await;
    let status = response.status();
    assert_eq!(status, 200, "{}", response.text().await.unwrap());
    hub.finish(db).await;
}

on_both!(a_table_imports_with_exact_counts_and_a_rerun_sends_nothing_new);

// -------------------------------------------------------------------------- late commit ---

/// Transaction A stamps its row t1 and stays open; transaction B stamps t2 > t1 and commits;
/// a pass runs; A commits; another pass runs. Returns the summaries of the passes before and
/// after A's commit, and of a pass with a fresh checkpoint at the end.
async fn a_late_commit(
    dialect: Dialect,
    lag_secs: u64,
    wait_after_commit: Duration,
) -> [leadbridge::connectors::Summary; 3] {
    let (hub, db) = setup(dialect, &[record(1, Stamp::SecondsAgo(3600))]).await;
    let mut late = db.connect().await;
    late.execute("BEGIN").await;
    late.execute(&db.insert(record(2, Stamp::SecondsAgo(2))))
        .await;
    db.insert_all(&[record(3, Stamp::SecondsAgo(1))]).await;
    let mapping = MappingFile {
        lag_secs: Some(lag_secs),
        ..MappingFile::usual(db.key())
    }
    .write(&db, hub.dir.path(), "patrol.toml");
    let state = hub.dir.path().join("state");

    let before = pass(&hub.options, &mapping, &state, None).await;
    assert!(before.errors.is_empty(), "{}", errors(&before));
    late.execute("COMMIT").await;
    tokio::time::sleep(wait_after_commit).await;
    let after = pass(&hub.options, &mapping, &state, None).await;
    assert!(after.errors.is_empty(), "{}", errors(&after));
    let caught_up = pass(&hub.options, &mapping, &state, None).await;
    assert_eq!(caught_up.summary, counts(0, 0, 0, 0, 0));
    let fresh = pass(&hub.options, &mapping, &hub.dir.path().join("fresh"), None).await;
    assert!(fresh.errors.is_empty(), "{}", errors(&fresh));
    hub.finish(db).await;
    [before.summary, after.summary, fresh.summary]
}

/// With a lag longer than A's transaction, the first pass reads neither A's nor B's row
/// (both are newer than now − lag); once the lag has passed, the next pass reads both, and
/// the hub gets each exactly once.
async fn a_row_committed_late_within_the_lag_is_sent_exactly_once(dialect: Dialect) {
    // A's and B's rows are stamped 2 s and 1 s ago: the first pass must run within 19 s of
    // them, generous on a loaded machine.
    let [before, after, fresh] = a_late_commit(dialect, 20, Duration::from_millis(20_500)).await;
    assert_eq!(
        before,
        counts(1, 1, 0, 0, 0),
        "only the hour-old row is older than the lag"
    );
    assert_eq!(after, counts(2, 2, 0, 0, 0), "A's and B's rows, once each");
    assert_eq!(
        fresh,
        counts(3, 0, 3, 0, 0),
        "the hub had every row, none twice"
    );
}

on_both!(a_row_committed_late_within_the_lag_is_sent_exactly_once);

/// Why the lag exists: without one, the first pass reads B's row (A's is not committed yet)
/// and the checkpoint moves to t2; A's row, committed later with t1 < t2, is behind the
/// checkpoint and never read. Only a fresh checkpoint finds it.
async fn without_a_lag_a_row_committed_late_behind_a_newer_one_is_skipped(dialect: Dialect) {
    let [before, after, fresh] = a_late_commit(dialect, 0, Duration::ZERO).await;
    assert_eq!(before, counts(2, 2, 0, 0, 0), "the old row and B's");
    assert_eq!(
        after,
        counts(0, 0, 0, 0, 0),
        "A's row is behind the checkpoint: skipped"
    );
    assert_eq!(
        fresh,
        counts(3, 1, 2, 0, 0),
        "A's row reached the hub only now (accepted), the others are replays"
    );
}

on_both!(without_a_lag_a_row_committed_late_behind_a_newer_one_is_skipped);

// ----------------------------------------------------------------------------- restart ---

fn command(hub: &Hub, mapping: &Path, state: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadbridge"));
    command
        .current_dir(hub.dir.path())
        .arg("connect")
        .arg("sql")
        .arg("--mapping")
        .arg(mapping)
        .arg("--hub")
        .arg(&hub.options.url)
        .arg("--cert")
        .arg(&hub.options.cert)
        .arg("--key")
        .arg(&hub.options.key)
        .arg("--ca")
        .arg(&hub.options.ca)
        .arg("--attempts")
        .arg("2")
        .arg("--state")
        .arg(state)
        .env(PASSWORD_ENV, "leadbridge")
        .kill_on_drop(true);
    command
}

async fn a_new_process_resumes_from_the_checkpoint_and_resends_nothing(dialect: Dialect) {
    let (hub, db) = setup(
        dialect,
        &[
            record(1, Stamp::At("2026-06-01 10:00:00")),
            record(2, Stamp::At("2026-06-01 10:00:00")),
            record(3, Stamp::At("2026-06-01 11:00:00")),
        ],
    )
    .await;
    let mapping = MappingFile::usual(db.key()).write(&db, hub.dir.path(), "patrol.toml");
    let state = hub.dir.path().join("state");
    let run = |command: &mut tokio::process::Command| {
        let output = command.arg("--once").output();
        async move {
            let output = output.await.unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            (output.status.code(), stdout, stderr)
        }
    };
    let (code, stdout, stderr) = run(&mut command(&hub, &mapping, &state)).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        "rows 3, accepted 3, replayed 0, rejected 0, skipped 0"
    );
    // New rows, one tied with the last row read: the next process reads only these.
    db.insert_all(&[
        record(4, Stamp::At("2026-06-01 11:00:00")),
        record(5, Stamp::At("2026-06-02 09:00:00")),
    ])
    .await;
    let (code, stdout, stderr) = run(&mut command(&hub, &mapping, &state)).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        "rows 2, accepted 2, replayed 0, rejected 0, skipped 0"
    );
    let (_, stdout, _) = run(&mut command(&hub, &mapping, &state)).await;
    assert_eq!(
        stdout.trim(),
        "rows 0, accepted 0, replayed 0, rejected 0, skipped 0"
    );
    hub.finish(db).await;
}

on_both!(a_new_process_resumes_from_the_checkpoint_and_resends_nothing);

/// Without `--once` it polls, prints a line per pass that read rows, outlives its table going
/// away for a while (an error per pass, then it carries on where it was), and stops cleanly on
/// SIGTERM with the run's summary line.
#[tokio::test]
async fn without_once_it_polls_and_stops_cleanly_on_sigterm() {
    let (hub, db) = setup(
        Dialect::MariaDb,
        &[
            record(1, Stamp::SecondsAgo(60)),
            record(2, Stamp::SecondsAgo(60)),
        ],
    )
    .await;
    let mapping = MappingFile {
        lag_secs: Some(0),
        ..MappingFile::usual(db.key())
    }
    .write(&db, hub.dir.path(), "patrol.toml");
    let state = hub.dir.path().join("state");
    let mut child = command(&hub, &mapping, &state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("a line within 30 s")
            .unwrap()
            .expect("the connector is still running")
    };
    let mut error_lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut next_error = async || {
        tokio::time::timeout(Duration::from_secs(30), error_lines.next_line())
            .await
            .expect("an error line within 30 s")
            .unwrap()
            .expect("the connector is still running")
    };
    let line = next_line().await;
    assert!(
        line.ends_with("pass: rows 2, accepted 2, replayed 0, rejected 0, skipped 0"),
        "{line}"
    );
    db.insert_all(&[record(3, Stamp::SecondsAgo(1))]).await;
    let line = next_line().await;
    assert!(
        line.ends_with("pass: rows 1, accepted 1, replayed 0, rejected 0, skipped 0"),
        "{line}"
    );
    let mut agency = db.connect().await;
    agency.execute("RENAME TABLE patrol TO patrol_away").await;
    let error = next_error().await;
    assert!(
        error.contains("error: database") && error.contains("trying again in 1s"),
        "{error}"
    );
    agency
        .execute(
            &db.insert(record(4, Stamp::SecondsAgo(1)))
                .replace("INTO patrol ", "INTO patrol_away "),
        )
        .await;
    agency.execute("RENAME TABLE patrol_away TO patrol").await;
    let line = next_line().await;
    assert!(
        line.ends_with("pass: rows 1, accepted 1, replayed 0, rejected 0, skipped 0"),
        "{line}"
    );
    let pid = child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("it stops within 20 s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let last = next_line().await;
    assert_eq!(
        last,
        "rows 4, accepted 4, replayed 0, rejected 0, skipped 0"
    );
    hub.finish(db).await;
}

// ----------------------------------------------------------------------------- hostile ---

async fn a_bad_setup_stops_before_any_row_is_sent(dialect: Dialect) {
    let (hub, db) = setup(
        dialect,
        &[
            record(1, Stamp::SecondsAgo(3600)),
            record(2, Stamp::SecondsAgo(3600)),
        ],
    )
    .await;
    let state = hub.dir.path().join("state");
    let dir = hub.dir.path();
    let key = db.key();
    let cases: [(&str, MappingFile, &[&str]); 6] = [
        (
            "a mapping naming a column the query lacks",
            MappingFile {
                extra_field: r#""/source/officers/0/name" = { column = "法定代表人" }"#,
                ..MappingFile::usual(key)
            },
            &["no column \"法定代表人\"", "\"record_no\""],
        ),
        (
            "a query without the watermark column",
            MappingFile {
                query: "SELECT id, record_no FROM patrol",
                ..MappingFile::usual(key)
            },
            &["sql.watermark \"updated_at\" is not a column of the query"],
        ),
        (
            "a mapped column of a type there is no conversion for",
            MappingFile {
                extra_field: r#""/source/officers/0/badge" = { column = "photo" }"#,
                ..MappingFile::usual(key)
            },
            &["column \"photo\" is of type", "cast it in the query"],
        ),
        (
            "a watermark that is no timestamp",
            MappingFile {
                query: "SELECT id AS updated_at, record_no, found_at FROM patrol",
                ..MappingFile::usual("record_no")
            },
            &["sql.watermark \"updated_at\" is of type"],
        ),
        (
            "a date as the watermark (it cannot order one day's rows)",
            MappingFile {
                query:
                    "SELECT CAST(updated_at AS DATE) AS updated_at, record_no, found_at FROM patrol",
                ..MappingFile::usual("record_no")
            },
            &["must be a timestamp column", "a date cannot order"],
        ),
        (
            "the password's variable is not set",
            MappingFile {
                password_env: "LB_TEST_SQL_NO_SUCH_PASSWORD",
                ..MappingFile::usual(key)
            },
            &["LB_TEST_SQL_NO_SUCH_PASSWORD", "is not set"],
        ),
    ];
    for (case, mapping, expected) in cases {
        let mapping = mapping.write(&db, dir, "refused.toml");
        let result = pass(&hub.options, &mapping, &state, None).await;
        assert_eq!(result.exit_code(), 2, "{case}: {}", errors(&result));
        assert_eq!(result.summary, counts(0, 0, 0, 0, 0), "{case}");
        let message = errors(&result);
        for part in expected {
            assert!(message.contains(part), "{case}: {part:?} not in {message}");
        }
    }
    // Nothing was sent: the good mapping now finds both rows new to the hub.
    let mapping = MappingFile::usual(key).write(&db, dir, "patrol.toml");
    let result = pass(&hub.options, &mapping, &state, None).await;
    assert_eq!(result.summary, counts(2, 2, 0, 0, 0), "{}", errors(&result));

    // A corrupt checkpoint is an error naming its file, never a fresh start.
    let file = checkpoint_file(&state);
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, &good[..good.len() / 2]).unwrap();
    let result = pass(&hub.options, &mapping, &state, None).await;
    assert_eq!(result.exit_code(), 2);
    assert_eq!(result.summary, counts(0, 0, 0, 0, 0));
    let message = errors(&result);
    assert!(
        message.contains(&file.display().to_string()) && message.contains("does not parse"),
        "{message}"
    );
    // One that parses but holds no value of the watermark's type is refused as well.
    let mut checkpoint: serde_json::Value = serde_json::from_str(&good).unwrap();
    checkpoint["watermark"] = "yesterday".into();
    std::fs::write(&file, checkpoint.to_string()).unwrap();
    let result = pass(&hub.options, &mapping, &state, None).await;
    assert_eq!(result.exit_code(), 2);
    let message = errors(&result);
    assert!(
        message.contains(&file.display().to_string()) && message.contains("\"yesterday\""),
        "{message}"
    );
    hub.finish(db).await;
}

on_both!(a_bad_setup_stops_before_any_row_is_sent);

async fn bad_rows_are_reported_by_key_and_the_others_are_sent(dialect: Dialect) {
    let (hub, db) = setup(
        dialect,
        &[
            record(1, Stamp::At("2026-06-01 10:00:00")),
            Record {
                id_number: BAD_ID_NUMBER,
                ..record(2, Stamp::At("2026-06-01 10:00:00"))
            },
            record(3, Stamp::Null),
            Record {
                id: None,
                ..record(0, Stamp::At("2026-06-01 10:00:00"))
            },
            record(4, Stamp::At("2026-06-01 12:00:00")),
        ],
    )
    .await;
    let mapping = MappingFile::usual(db.key()).write(&db, hub.dir.path(), "patrol.toml");
    let state = hub.dir.path().join("state");
    let report = hub.dir.path().join("report.csv");
    let result = pass(&hub.options, &mapping, &state, Some(report.clone())).await;
    assert!(result.errors.is_empty(), "{}", errors(&result));
    assert_eq!(result.summary, counts(5, 2, 0, 3, 0));
    assert_eq!(result.exit_code(), 1);

    let text = std::fs::read_to_string(&report).unwrap();
    let mut reader = csv::Reader::from_reader(text.trim_start_matches('\u{FEFF}').as_bytes());
    let lines: Vec<Vec<String>> = reader
        .records()
        .map(|line| line.unwrap().iter().map(str::to_owned).collect())
        .collect();
    let brief: Vec<(&str, &str, &str, &str)> = lines
        .iter()
        .map(|line| {
            (
                line[1].as_str(),
                line[2].as_str(),
                line[3].as_str(),
                line[4].as_str(),
            )
        })
        .collect();
    let invalid_key = db.key_of(2);
    let null_key_column = db.key();
    let null_watermark_key = db.key_of(3);
    let expected_null_rows = [
        (null_watermark_key.as_str(), "updated_at", "", "required"),
        ("", null_key_column, "", "required"),
    ];
    for expected in expected_null_rows {
        assert!(brief.contains(&expected), "{expected:?} not in {text}");
    }
    let invalid: Vec<_> = brief.iter().filter(|line| line.0 == invalid_key).collect();
    assert_eq!(invalid.len(), 1, "{text}");
    assert_eq!(
        (invalid[0].1, invalid[0].2),
        ("id_number", "/subjects/1/id_number")
    );
    assert!(
        lines
            .iter()
            .all(|line| line[0] == without_password(&db.url)),
        "{text}"
    );

    // The invalid row is behind the checkpoint: not read (nor rejected) again. Rows without a
    // place in the order are reported again by every run.
    let again = pass(&hub.options, &mapping, &state, None).await;
    assert_eq!(again.summary, counts(2, 0, 0, 2, 0), "{}", errors(&again));
    hub.finish(db).await;
}

on_both!(bad_rows_are_reported_by_key_and_the_others_are_sent);
