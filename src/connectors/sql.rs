//! `leadbridge connect sql`: an agency's own table or view (PostgreSQL or MySQL/MariaDB), read
//! in (watermark, key) order, to the hub as leads.
//!
//! The agency's `query` is wrapped as a subquery and read a batch at a time:
//! `WHERE w <= now − lag AND (w > last_w OR (w = last_w AND k > last_k)) ORDER BY w, k
//! LIMIT batch_size`, where `now` is the database's own clock (so the connector's clock does
//! not matter), and each row is mapped and checked by the same code as `connect file`.
//!
//! Promise: the checkpoint — the last (watermark, key) answered — is stored atomically and
//! moves only after every row up to it was answered by the hub (accepted, replayed or
//! rejected) or rejected by the local checks; a run stopped at any point (the hub down, the
//! database gone, the process killed) resumes there, and a row whose answer was lost is sent
//! again and answered as a replay. A row committed late is still read as long as its
//! transaction took less than `lag_secs`: rows newer than now − lag are not read yet, and a
//! transaction open longer than that can commit a row behind the checkpoint, which is then
//! skipped — `lag_secs` must exceed the agency's longest transaction.
//!
//! Choices and limits:
//! - A rejected row is reported (`row` = its key) and the checkpoint moves past it: one bad
//!   row must not stop the stream forever. A re-run does not read it again (unlike `connect
//!   file`, whose re-run rejects it again); once the agency fixes the row, its update must
//!   give it a newer watermark to be read again.
//! - Rows whose watermark or key is NULL have no place in the order and are never sent: the
//!   first pass of each run reports them (up to 1,000) as rejected, with code `required`.
//! - An update that keeps a row's watermark is not seen; the watermark must be the time of
//!   the last change.
//! - The key's order is the database's (its collation for text); the key must be unique.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlRow};
use sqlx::postgres::{PgConnectOptions, PgPool, PgRow, PgValueFormat};
use sqlx::{Executor, Row as _, Statement as _, TypeInfo as _, ValueRef as _};
use tokio::sync::watch;

use super::batch::{lead_size, Sender, Setup};
use super::hub::{HubError, HubOptions};
use super::mapping::{BoundMapping, SqlSettings};
use super::source::{Cell, Row};
use super::state::{SqlCheckpoint, StateDir, StateError};
use super::{ConnectError, Summary};

/// At most this many rows with a NULL watermark or key are reported per run.
const NULL_ROWS_REPORTED: i64 = 1_000;

/// What `connect sql` was asked to do.
pub struct SqlOptions {
    pub mapping: PathBuf,
    pub hub: HubOptions,
    pub state: PathBuf,
    pub report: Option<PathBuf>,
    /// One pass until caught up, then return; otherwise a pass every `poll_interval_secs`
    /// until `stop` turns true.
    pub once: bool,
    /// Turns true on Ctrl-C / SIGTERM: the run stops after the current batch.
    pub stop: watch::Receiver<bool>,
}

/// The end of a run: the counts of every pass, and what stopped it.
pub struct SqlResult {
    pub summary: Summary,
    pub passes: u64,
    pub errors: Vec<ConnectError>,
}

impl SqlResult {
    /// The contract's exit status: 2 when the run could not proceed, 1 when some row was
    /// rejected, 0 otherwise.
    pub fn exit_code(&self) -> i32 {
        self.summary.exit_code(!self.errors.is_empty())
    }
}

pub async fn stream(options: SqlOptions) -> SqlResult {
    let mut result = SqlResult {
        summary: Summary::default(),
        passes: 0,
        errors: Vec::new(),
    };
    let mut setup = match Setup::open(
        &options.mapping,
        Some(&options.hub),
        &options.state,
        options.report.as_deref(),
    ) {
        Ok(setup) => setup,
        Err(error) => {
            result.errors.push(error);
            return result;
        }
    };
    if let Err(error) = run(&options, &mut setup, &mut result).await {
        result.errors.push(error);
    }
    if let Some(report) = setup.report.as_mut() {
        if let Err(error) = report.finish() {
            result.errors.push(ConnectError::Report(error));
        }
    }
    result
}

async fn run(
    options: &SqlOptions,
    setup: &mut Setup,
    result: &mut SqlResult,
) -> Result<(), ConnectError> {
    let mapping = &setup.mapping;
    let Some(settings) = mapping.sql.clone() else {
        return Err(ConnectError::Setup(format!(
            "mapping {} has no [sql] table; connect sql needs one",
            mapping.path
        )));
    };
    let source = Source::open(&settings, &mapping.path, mapping.time_zone()).await?;
    let header: Vec<String> = source.columns.iter().map(|c| c.name.clone()).collect();
    let bound = mapping.bind(&header, "")?;
    let used = source.check_types(&mapping.columns(), &mapping.path)?;
    let state = setup.state.as_ref().expect("a run with a hub keeps state");
    let id = hex::encode(Sha256::digest(
        format!("{}\n{}", mapping.sha256, source.url).as_bytes(),
    ));
    let checkpoint = state.load_sql(&id, &source.url, &mapping.sha256)?;
    source.check_position(&checkpoint, &state.sql_path(&id))?;
    let sender = Sender::new(
        source.url.clone(),
        mapping,
        &setup.validator,
        setup.hub.as_ref(),
        setup.report.as_mut(),
    );
    let mut run = Run {
        source,
        used,
        bound,
        state,
        rejected_before: checkpoint.rejected,
        unplaced: 0,
        checkpoint,
        batch_size: settings.batch_size.clamp(1, 500) as usize,
        answered: Summary::default(),
        sender,
        stop: options.stop.clone(),
    };
    let outcome = run.passes(options, &settings, result).await;
    result.summary = run.sender.summary;
    outcome
}

/// One run: passes over the source until caught up (`--once`) or stopped.
struct Run<'a> {
    source: Source,
    /// Per column of the query: whether the mapping reads it (the others are not converted).
    used: Vec<bool>,
    bound: BoundMapping<'a>,
    state: &'a StateDir,
    checkpoint: SqlCheckpoint,
    /// The checkpoint's count of rejected rows when the run started.
    rejected_before: u64,
    /// Rows of this run rejected for a NULL watermark or key: not behind the position.
    unplaced: u64,
    batch_size: usize,
    /// The counts as of the last checkpoint: every row in them is answered.
    answered: Summary,
    sender: Sender<'a, String>,
    stop: watch::Receiver<bool>,
}

impl Run<'_> {
    async fn passes(
        &mut self,
        options: &SqlOptions,
        settings: &SqlSettings,
        result: &mut SqlResult,
    ) -> Result<(), ConnectError> {
        self.report_null_rows().await?;
        self.unplaced = self.sender.summary.rejected;
        self.answered = self.sender.summary;
        loop {
            let before = self.sender.summary;
            let outcome = match self.pass().await {
                // A long-running connector outlives a database restart or a hub outage: the
                // checkpoint is where the last answered batch left it, so the next pass
                // carries on from there, and the rows read after it count then.
                Err(
                    error @ (ConnectError::Database { .. }
                    | ConnectError::Hub(HubError::Unreachable { .. })),
                ) if !options.once => {
                    self.sender.summary = self.answered;
                    eprintln!(
                        "error: {error}; trying again in {}s",
                        settings.poll_interval_secs
                    );
                    Ok(())
                }
                outcome => outcome,
            };
            result.passes += 1;
            let pass = since(&self.sender.summary, &before);
            if !options.once && pass.rows > 0 {
                println!("{}: pass: {pass}", Utc::now().to_rfc3339());
            }
            self.sender.flush_report()?;
            outcome?;
            if options.once || self.stopped() {
                return Ok(());
            }
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(settings.poll_interval_secs)) => {}
                _ = stopping(&mut stop) => {}
            }
            if self.stopped() {
                return Ok(());
            }
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Reads batches until fewer rows than a batch come back (caught up) or a stop is asked.
    async fn pass(&mut self) -> Result<(), ConnectError> {
        loop {
            if self.stopped() {
                return Ok(());
            }
            let position = self
                .checkpoint
                .watermark
                .clone()
                .zip(self.checkpoint.key.clone());
            let rows = self.source.fetch(position, self.batch_size as i64).await?;
            let count = rows.len();
            // The position of the last row handed on: every row up to it is answered once the
            // batch before it is.
            let mut last: Option<(String, String)> = None;
            for row in &rows {
                self.sender.summary.rows += 1;
                let at = self.source.position(row)?;
                match self.source.row(row, &self.used) {
                    Err((column, message)) => {
                        let line =
                            self.sender
                                .line(&at.1, Some(column), String::new(), "type", message);
                        self.sender.reject_unread(line)?;
                    }
                    Ok(cells) => {
                        let row = Row {
                            number: 0,
                            cells,
                            byte_offset: 0,
                        };
                        if let Some(lead) = self.sender.check(&self.bound, &row, &at.1)? {
                            let size = lead_size(&lead);
                            if self.sender.is_full_for(size) {
                                self.send(last.clone()).await?;
                            }
                            self.sender.push(at.1.clone(), lead, size);
                        }
                    }
                }
                last = Some(at);
            }
            self.send(last).await?;
            if count < self.batch_size {
                return Ok(());
            }
        }
    }

    /// Sends the batch, then moves the checkpoint to `through` (every row up to it is now
    /// answered). When the hub cannot be reached, the checkpoint stays, and the rows after it
    /// are read again next time.
    async fn send(&mut self, through: Option<(String, String)>) -> Result<(), ConnectError> {
        // Rejected rows are behind the position too: the stream moves past them.
        self.sender.flush().await?;
        let Some((watermark, key)) = through else {
            return Ok(());
        };
        self.checkpoint.watermark = Some(watermark);
        self.checkpoint.key = Some(key);
        self.checkpoint.rejected =
            self.rejected_before + self.sender.summary.rejected - self.unplaced;
        self.checkpoint.updated_at = Utc::now().to_rfc3339();
        self.state.save_sql(&self.checkpoint)?;
        self.answered = self.sender.summary;
        Ok(())
    }

    /// Counts and reports the rows that can never be read because their watermark or key is
    /// NULL (once per run).
    async fn report_null_rows(&mut self) -> Result<(), ConnectError> {
        let rows = self.source.null_rows().await?;
        let (watermark, key) = (
            self.source.columns[self.source.watermark].name.clone(),
            self.source.columns[self.source.key].name.clone(),
        );
        for row in &rows {
            self.sender.summary.rows += 1;
            let key_text = self
                .source
                .text(row, self.source.key)
                .ok()
                .flatten()
                .unwrap_or_default();
            let (column, what) = if key_text.is_empty() {
                (key.clone(), "key")
            } else {
                (watermark.clone(), "watermark")
            };
            let line = self.sender.line(
                &key_text,
                Some(column.clone()),
                String::new(),
                "required",
                format!(
                    "the {what} column {column} is NULL: the row has no place in the ({watermark}, {key}) order and is never sent"
                ),
            );
            self.sender.reject_unread(line)?;
        }
        Ok(())
    }
}

async fn stopping(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            // Nobody can ask for a stop any more.
            std::future::pending::<()>().await;
        }
    }
}

fn since(now: &Summary, before: &Summary) -> Summary {
    Summary {
        rows: now.rows - before.rows,
        accepted: now.accepted - before.accepted,
        replayed: now.replayed - before.replayed,
        rejected: now.rejected - before.rejected,
        skipped: now.skipped - before.skipped,
    }
}

/// What connect sql makes of a column's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    UInt,
    Float,
    Decimal,
    Bool,
    Date,
    /// Without time zone: in the mapping's `time_zone` (the session's, see [`Source::open`]).
    Timestamp,
    TimestampTz,
    Uuid,
    /// Anything else: a setup error if the mapping reads it.
    Other,
}

#[derive(Clone, Debug)]
struct Column {
    name: String,
    /// The database's name of the type (`TIMESTAMPTZ`, `BIGINT UNSIGNED`, …).
    type_name: String,
    kind: Kind,
}

enum Pool {
    Postgres(PgPool),
    MySql(MySqlPool),
}

enum SqlRow {
    Postgres(PgRow),
    MySql(MySqlRow),
}

/// A decoded value, before it becomes a cell or a position.
enum Datum {
    Null,
    Text(String),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Date(NaiveDate),
    Naive(NaiveDateTime),
    Utc(DateTime<Utc>),
}

/// Text of a timestamp without time zone in a position: both databases cast it back exactly.
const NAIVE_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

/// The agency's database and its query, described.
struct Source {
    pool: Pool,
    /// The URL without its password: what the report and messages name.
    url: String,
    columns: Vec<Column>,
    watermark: usize,
    key: usize,
    /// The query from the start, and after a position.
    first: String,
    next: String,
    nulls: String,
    lag_secs: u64,
    time_zone: FixedOffset,
}

impl Source {
    /// Connects (every session in the mapping's time zone and read-only), describes the query
    /// and checks its watermark and key columns.
    async fn open(
        settings: &SqlSettings,
        mapping_path: &str,
        time_zone: FixedOffset,
    ) -> Result<Source, ConnectError> {
        let url = without_password(settings.url.trim());
        let invalid =
            |message: String| ConnectError::Setup(format!("mapping {mapping_path}: {message}"));
        let database = |error: sqlx::Error| ConnectError::Database {
            url: url.clone(),
            message: error.to_string(),
        };
        let password = match &settings.password_env {
            None => None,
            Some(name) => Some(std::env::var(name).map_err(|_| {
                invalid(format!(
                    "the environment variable {name} (sql.password_env) is not set; it holds the database password"
                ))
            })?),
        };
        let raw_url = settings.url.trim();
        let query = settings
            .query
            .trim()
            .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
        let offset = time_zone.to_string();
        let (pool, quote): (Pool, fn(&str) -> String) =
            if raw_url.starts_with("postgres://") || raw_url.starts_with("postgresql://") {
                let mut connect = PgConnectOptions::from_str(raw_url)
                    .map_err(|error| invalid(format!("sql.url {url}: {error}")))?;
                if let Some(password) = &password {
                    connect = connect.password(password);
                }
                let session = [
                    format!("SET TIME ZONE INTERVAL '{offset}' HOUR TO MINUTE"),
                    "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY".to_owned(),
                ];
                let pool = pool(connect, session).await.map_err(database)?;
                (Pool::Postgres(pool), quote_postgres)
            } else if raw_url.starts_with("mysql://") || raw_url.starts_with("mariadb://") {
                let normalised = raw_url.replacen("mariadb://", "mysql://", 1);
                let mut connect = MySqlConnectOptions::from_str(&normalised)
                    .map_err(|error| invalid(format!("sql.url {url}: {error}")))?;
                if let Some(password) = &password {
                    connect = connect.password(password);
                }
                // sqlx would make `||` mean concatenation; in the agency's query it is OR.
                connect = connect.pipes_as_concat(false);
                let session = [
                    format!("SET time_zone = '{offset}'"),
                    "SET SESSION TRANSACTION READ ONLY".to_owned(),
                ];
                let pool = pool(connect, session).await.map_err(database)?;
                (Pool::MySql(pool), quote_mysql)
            } else {
                return Err(invalid(format!(
                    "sql.url {url} is neither postgres:// nor mysql:// (or mariadb://)"
                )));
            };
        // On lines of its own, so a trailing `-- comment` in the query cannot swallow the rest.
        let wrapped = format!("SELECT * FROM (\n{query}\n) AS lb_source");
        let columns = describe(&pool, &wrapped).await.map_err(database)?;
        let find = |name: &str, role: &str| {
            columns
                .iter()
                .position(|column| column.name == name)
                .ok_or_else(|| {
                    invalid(format!(
                        "sql.{role} {name:?} is not a column of the query; its columns are {}",
                        columns
                            .iter()
                            .map(|c| format!("{:?}", c.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
        };
        let watermark = find(&settings.watermark, "watermark")?;
        let key = find(&settings.key, "key")?;
        let (w, k) = (&columns[watermark], &columns[key]);
        // A DATE is no watermark: rows stamped today keep arriving after today's first pass
        // has moved the checkpoint to (today, last key), and the lag cannot cover them.
        if !matches!(w.kind, Kind::Timestamp | Kind::TimestampTz) {
            return Err(invalid(format!(
                "sql.watermark {:?} is of type {}; it must be a timestamp column (a date cannot order the rows of one day; cast a date and time column to a timestamp in the query)",
                w.name, w.type_name
            )));
        }
        if !matches!(k.kind, Kind::Text | Kind::Int | Kind::UInt | Kind::Uuid) {
            return Err(invalid(format!(
                "sql.key {:?} is of type {}; it must be a text, integer or UUID column",
                k.name, k.type_name
            )));
        }
        let (wq, kq) = (quote(&w.name), quote(&k.name));
        let (first, next) = match &pool {
            Pool::Postgres(_) => {
                let head = format!(
                    "{wrapped} WHERE {wq} IS NOT NULL AND {kq} IS NOT NULL AND {wq} <= now() - make_interval(secs => $1)"
                );
                (
                    format!("{head} ORDER BY {wq}, {kq} LIMIT $2"),
                    format!(
                        "{head} AND ({wq} > CAST($2 AS {wt}) OR ({wq} = CAST($2 AS {wt}) AND {kq} > CAST($3 AS {kt}))) ORDER BY {wq}, {kq} LIMIT $4",
                        wt = postgres_cast(&w.type_name),
                        kt = postgres_cast(&k.type_name)
                    ),
                )
            }
            Pool::MySql(_) => {
                let head = format!(
                    "{wrapped} WHERE {wq} IS NOT NULL AND {kq} IS NOT NULL AND {wq} <= NOW(6) - INTERVAL ? SECOND"
                );
                let key_param = match k.kind {
                    Kind::Int => "CAST(? AS SIGNED)",
                    Kind::UInt => "CAST(? AS UNSIGNED)",
                    _ => "?",
                };
                (
                    format!("{head} ORDER BY {wq}, {kq} LIMIT ?"),
                    format!(
                        "{head} AND ({wq} > CAST(? AS DATETIME(6)) OR ({wq} = CAST(? AS DATETIME(6)) AND {kq} > {key_param})) ORDER BY {wq}, {kq} LIMIT ?"
                    ),
                )
            }
        };
        let nulls =
            format!("{wrapped} WHERE {wq} IS NULL OR {kq} IS NULL LIMIT {NULL_ROWS_REPORTED}");
        Ok(Source {
            pool,
            url,
            columns,
            watermark,
            key,
            first,
            next,
            nulls,
            lag_secs: settings.lag_secs,
            time_zone,
        })
    }

    /// Refuses a mapping that reads a column of a type there is no conversion for; returns,
    /// per column, whether the mapping reads it.
    fn check_types(&self, read: &[String], mapping_path: &str) -> Result<Vec<bool>, ConnectError> {
        let mut used = vec![false; self.columns.len()];
        for (at, column) in self.columns.iter().enumerate() {
            if !read.contains(&column.name) {
                continue;
            }
            if column.kind == Kind::Other {
                return Err(ConnectError::Setup(format!(
                    "mapping {mapping_path}: column {:?} is of type {}, which connect sql does not convert; cast it in the query (to text, a number or a timestamp)",
                    column.name, column.type_name
                )));
            }
            used[at] = true;
        }
        Ok(used)
    }

    /// Refuses a stored position the database could not compare with: a watermark or key
    /// that is not a value of the column's type.
    fn check_position(
        &self,
        checkpoint: &SqlCheckpoint,
        path: &std::path::Path,
    ) -> Result<(), ConnectError> {
        let (Some(watermark), Some(key)) = (&checkpoint.watermark, &checkpoint.key) else {
            return Ok(());
        };
        let w = &self.columns[self.watermark];
        let watermark_parses = match w.kind {
            Kind::TimestampTz => DateTime::parse_from_rfc3339(watermark).is_ok(),
            Kind::Date => NaiveDate::parse_from_str(watermark, "%Y-%m-%d").is_ok(),
            _ => NaiveDateTime::parse_from_str(watermark, NAIVE_FORMAT).is_ok(),
        };
        let k = &self.columns[self.key];
        let key_parses = match k.kind {
            Kind::Int => key.parse::<i64>().is_ok(),
            Kind::UInt => key.parse::<u64>().is_ok(),
            Kind::Uuid => uuid::Uuid::parse_str(key).is_ok(),
            _ => true,
        };
        let bad = if !watermark_parses {
            Some(format!(
                "holds the watermark {watermark:?}, which is not a {} value of {:?}",
                w.type_name, w.name
            ))
        } else if !key_parses {
            Some(format!(
                "holds the key {key:?}, which is not a {} value of {:?}",
                k.type_name, k.name
            ))
        } else {
            None
        };
        match bad {
            Some(message) => Err(StateError::new(
                path,
                format!("{message}; move it away only if the table is to be sent again"),
            )
            .into()),
            None => Ok(()),
        }
    }

    fn failed(&self, error: sqlx::Error) -> ConnectError {
        ConnectError::Database {
            url: self.url.clone(),
            message: error.to_string(),
        }
    }

    /// The next rows after `position` (from the start without one), at most `limit`.
    async fn fetch(
        &self,
        position: Option<(String, String)>,
        limit: i64,
    ) -> Result<Vec<SqlRow>, ConnectError> {
        let rows = match (&self.pool, position) {
            (Pool::Postgres(pool), None) => sqlx::query(&self.first)
                .bind(self.lag_secs as f64)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map(|rows| rows.into_iter().map(SqlRow::Postgres).collect()),
            (Pool::Postgres(pool), Some((watermark, key))) => sqlx::query(&self.next)
                .bind(self.lag_secs as f64)
                .bind(watermark)
                .bind(key)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map(|rows| rows.into_iter().map(SqlRow::Postgres).collect()),
            (Pool::MySql(pool), None) => sqlx::query(&self.first)
                .bind(self.lag_secs)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map(|rows| rows.into_iter().map(SqlRow::MySql).collect()),
            (Pool::MySql(pool), Some((watermark, key))) => sqlx::query(&self.next)
                .bind(self.lag_secs)
                .bind(watermark.clone())
                .bind(watermark)
                .bind(key)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map(|rows| rows.into_iter().map(SqlRow::MySql).collect()),
        };
        rows.map_err(|error| self.failed(error))
    }

    async fn null_rows(&self) -> Result<Vec<SqlRow>, ConnectError> {
        let rows = match &self.pool {
            Pool::Postgres(pool) => sqlx::query(&self.nulls)
                .fetch_all(pool)
                .await
                .map(|rows| rows.into_iter().map(SqlRow::Postgres).collect()),
            Pool::MySql(pool) => sqlx::query(&self.nulls)
                .fetch_all(pool)
                .await
                .map(|rows| rows.into_iter().map(SqlRow::MySql).collect()),
        };
        rows.map_err(|error| self.failed(error))
    }

    fn datum(&self, row: &SqlRow, at: usize) -> Result<Datum, String> {
        let column = &self.columns[at];
        match row {
            SqlRow::Postgres(row) => postgres_datum(row, at, column),
            SqlRow::MySql(row) => mysql_datum(row, at, column),
        }
    }

    /// A value as the text a position holds (`None` for NULL).
    fn text(&self, row: &SqlRow, at: usize) -> Result<Option<String>, String> {
        Ok(match self.datum(row, at)? {
            Datum::Null => None,
            Datum::Text(text) => Some(text),
            Datum::Int(number) => Some(number.to_string()),
            Datum::UInt(number) => Some(number.to_string()),
            Datum::Date(date) => Some(date.format("%Y-%m-%d").to_string()),
            Datum::Naive(at) => Some(at.format(NAIVE_FORMAT).to_string()),
            Datum::Utc(at) => Some(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            Datum::Float(_) | Datum::Bool(_) => {
                return Err(format!(
                    "column {:?} cannot hold a position",
                    self.columns[at].name
                ))
            }
        })
    }

    /// The row's (watermark, key) position; the query excludes NULL ones.
    fn position(&self, row: &SqlRow) -> Result<(String, String), ConnectError> {
        let text = |at: usize| match self.text(row, at) {
            Ok(Some(text)) => Ok(text),
            Ok(None) => Err(format!("column {:?} is NULL", self.columns[at].name)),
            Err(message) => Err(message),
        };
        text(self.watermark)
            .and_then(|watermark| Ok((watermark, text(self.key)?)))
            .map_err(|message| ConnectError::Database {
                url: self.url.clone(),
                message,
            })
    }

    /// The row's cells (those the mapping does not read are left empty), or the column that
    /// does not convert and why.
    fn row(&self, row: &SqlRow, used: &[bool]) -> Result<Vec<Cell>, (String, String)> {
        let mut cells = Vec::with_capacity(self.columns.len());
        for (at, column) in self.columns.iter().enumerate() {
            if !used[at] {
                cells.push(Cell::Empty);
                continue;
            }
            let cell = self
                .datum(row, at)
                .and_then(|datum| cell_of(datum, self.time_zone))
                .map_err(|message| (column.name.clone(), message))?;
            cells.push(cell);
        }
        Ok(cells)
    }
}

/// The largest integer a cell's number holds exactly; larger ones stay text.
const EXACT_IN_F64: i64 = 1 << 53;

fn cell_of(datum: Datum, time_zone: FixedOffset) -> Result<Cell, String> {
    Ok(match datum {
        Datum::Null => Cell::Empty,
        Datum::Text(text) => Cell::Text(text),
        Datum::Int(number) if number.abs() <= EXACT_IN_F64 => Cell::Number(number as f64),
        Datum::Int(number) => Cell::Text(number.to_string()),
        Datum::UInt(number) if number <= EXACT_IN_F64 as u64 => Cell::Number(number as f64),
        Datum::UInt(number) => Cell::Text(number.to_string()),
        Datum::Float(number) if number.is_finite() => Cell::Number(number),
        Datum::Float(number) => return Err(format!("{number} is not a finite number")),
        Datum::Bool(value) => Cell::Bool(value),
        Datum::Date(date) => Cell::DateTime(date.and_hms_opt(0, 0, 0).expect("midnight exists")),
        Datum::Naive(at) => Cell::DateTime(at),
        Datum::Utc(at) => Cell::DateTime(at.with_timezone(&time_zone).naive_local()),
    })
}

/// A small pool whose every session first runs `session` (its time zone, read-only).
async fn pool<DB: sqlx::Database>(
    connect: <DB::Connection as sqlx::Connection>::Options,
    session: [String; 2],
) -> Result<sqlx::Pool<DB>, sqlx::Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(move |connection, _| {
            let session = session.clone();
            Box::pin(async move {
                for statement in &session {
                    connection.execute(statement.as_str()).await?;
                }
                Ok(())
            })
        })
        .connect_with(connect)
        .await
}

async fn describe(pool: &Pool, query: &str) -> Result<Vec<Column>, sqlx::Error> {
    Ok(match pool {
        Pool::Postgres(pool) => columns_of(pool.prepare(query).await?.columns(), postgres_kind),
        Pool::MySql(pool) => columns_of(pool.prepare(query).await?.columns(), mysql_kind),
    })
}

fn columns_of<C: sqlx::Column>(columns: &[C], kind: fn(&str) -> Kind) -> Vec<Column> {
    columns
        .iter()
        .map(|column| {
            let type_name = column.type_info().name().to_owned();
            Column {
                name: column.name().to_owned(),
                kind: kind(&type_name),
                type_name,
            }
        })
        .collect()
}

fn postgres_kind(type_name: &str) -> Kind {
    match type_name {
        // sqlx names blank-padded character(n) CHAR (and the one-byte "char" "\"CHAR\"").
        "TEXT" | "VARCHAR" | "CHAR" | "BPCHAR" | "NAME" | "CITEXT" => Kind::Text,
        "INT2" | "INT4" | "INT8" => Kind::Int,
        "FLOAT4" | "FLOAT8" => Kind::Float,
        "NUMERIC" => Kind::Decimal,
        "BOOL" => Kind::Bool,
        "DATE" => Kind::Date,
        "TIMESTAMP" => Kind::Timestamp,
        "TIMESTAMPTZ" => Kind::TimestampTz,
        "UUID" => Kind::Uuid,
        _ => Kind::Other,
    }
}

/// The type a position's text is cast to: the column's, but without a length (`CHAR` alone
/// would be character(1) and cut the key).
fn postgres_cast(type_name: &str) -> &str {
    match type_name {
        "CHAR" => "BPCHAR",
        other => other,
    }
}

fn mysql_kind(type_name: &str) -> Kind {
    match type_name {
        "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET"
        | "JSON" => Kind::Text,
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => Kind::Int,
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" => Kind::UInt,
        "FLOAT" | "DOUBLE" => Kind::Float,
        "DECIMAL" => Kind::Decimal,
        "BOOLEAN" => Kind::Bool,
        "DATE" => Kind::Date,
        "DATETIME" | "TIMESTAMP" => Kind::Timestamp,
        _ => Kind::Other,
    }
}

fn postgres_datum(row: &PgRow, at: usize, column: &Column) -> Result<Datum, String> {
    let raw = row.try_get_raw(at).map_err(|error| error.to_string())?;
    if raw.is_null() {
        return Ok(Datum::Null);
    }
    let failed = |error: sqlx::Error| error.to_string();
    Ok(match column.type_name.as_str() {
        "INT2" => Datum::Int(row.try_get::<i16, _>(at).map_err(failed)?.into()),
        "INT4" => Datum::Int(row.try_get::<i32, _>(at).map_err(failed)?.into()),
        "INT8" => Datum::Int(row.try_get::<i64, _>(at).map_err(failed)?),
        "FLOAT4" => Datum::Float(shortest(row.try_get::<f32, _>(at).map_err(failed)?)),
        "FLOAT8" => Datum::Float(row.try_get::<f64, _>(at).map_err(failed)?),
        "NUMERIC" => {
            let text = match raw.format() {
                PgValueFormat::Binary => {
                    postgres_numeric(raw.as_bytes().map_err(|error| error.to_string())?)?
                }
                PgValueFormat::Text => raw.as_str().map_err(|error| error.to_string())?.into(),
            };
            Datum::Float(
                text.parse()
                    .map_err(|_| format!("{text} is not a finite number"))?,
            )
        }
        "BOOL" => Datum::Bool(row.try_get(at).map_err(failed)?),
        "DATE" => Datum::Date(row.try_get(at).map_err(failed)?),
        "TIMESTAMP" => Datum::Naive(row.try_get(at).map_err(failed)?),
        "TIMESTAMPTZ" => Datum::Utc(row.try_get(at).map_err(failed)?),
        "UUID" => Datum::Text(
            row.try_get::<uuid::Uuid, _>(at)
                .map_err(failed)?
                .to_string(),
        ),
        _ if column.kind == Kind::Text => Datum::Text(row.try_get(at).map_err(failed)?),
        other => return Err(format!("type {other} is not converted")),
    })
}

fn mysql_datum(row: &MySqlRow, at: usize, column: &Column) -> Result<Datum, String> {
    let raw = row.try_get_raw(at).map_err(|error| error.to_string())?;
    if raw.is_null() {
        return Ok(Datum::Null);
    }
    // The kind was read from the column's own type: decode without sqlx's narrower checks.
    let failed = |error: sqlx::Error| error.to_string();
    Ok(match column.kind {
        Kind::Text => Datum::Text(row.try_get_unchecked(at).map_err(failed)?),
        Kind::Int => Datum::Int(row.try_get_unchecked(at).map_err(failed)?),
        Kind::UInt => Datum::UInt(row.try_get_unchecked(at).map_err(failed)?),
        Kind::Float if column.type_name == "FLOAT" => {
            Datum::Float(shortest(row.try_get_unchecked(at).map_err(failed)?))
        }
        Kind::Float => Datum::Float(row.try_get_unchecked(at).map_err(failed)?),
        Kind::Decimal => {
            let text: String = row.try_get_unchecked(at).map_err(failed)?;
            Datum::Float(
                text.parse()
                    .map_err(|_| format!("{text} is not a finite number"))?,
            )
        }
        Kind::Bool => Datum::Bool(row.try_get_unchecked(at).map_err(failed)?),
        Kind::Date => Datum::Date(row.try_get_unchecked(at).map_err(failed)?),
        Kind::Timestamp | Kind::TimestampTz => {
            Datum::Naive(row.try_get_unchecked(at).map_err(failed)?)
        }
        Kind::Uuid | Kind::Other => {
            return Err(format!("type {} is not converted", column.type_name))
        }
    })
}

/// A single-precision number as the decimal it was written as (0.1, not 0.100000001…).
fn shortest(number: f32) -> f64 {
    number.to_string().parse().unwrap_or(f64::from(number))
}

/// PostgreSQL's binary NUMERIC as decimal text: digit count, weight (of the first base-10000
/// digit), sign, display scale, then the base-10000 digits.
fn postgres_numeric(bytes: &[u8]) -> Result<String, String> {
    let word = |at: usize| -> Result<u16, String> {
        bytes
            .get(at..at + 2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
            .ok_or_else(|| "a truncated NUMERIC".to_owned())
    };
    let count = word(0)? as usize;
    let weight = word(2)? as i16 as i64;
    let sign = word(4)?;
    let digits: Vec<u16> = (0..count)
        .map(|at| word(8 + 2 * at))
        .collect::<Result<_, _>>()?;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("NaN is not a number".into()),
        _ => return Err("an infinite NUMERIC is not a number".into()),
    }
    let digit = |at: i64| -> u16 {
        usize::try_from(at)
            .ok()
            .and_then(|at| digits.get(at).copied())
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        text.push_str(&digit(0).to_string());
        for at in 1..=weight {
            text.push_str(&format!("{:04}", digit(at)));
        }
    }
    let fraction_from = weight + 1;
    if (count as i64) > fraction_from {
        text.push('.');
        for at in fraction_from..count as i64 {
            text.push_str(&format!("{:04}", digit(at)));
        }
    }
    Ok(text)
}

fn quote_postgres(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_mysql(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The URL as messages, reports and the checkpoint name it: without its password.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            format!("{scheme}://{user}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_named_without_its_password() {
        assert_eq!(
            without_password("postgres://land:s3cr@t@db.example:5432/cases?sslmode=require"),
            "postgres://land@db.example:5432/cases?sslmode=require"
        );
        assert_eq!(
            without_password("mysql://land@127.0.0.1/cases"),
            "mysql://land@127.0.0.1/cases"
        );
        assert_eq!(
            without_password("mysql://127.0.0.1:3306/cases"),
            "mysql://127.0.0.1:3306/cases"
        );
    }

    fn numeric(weight: i16, sign: u16, digits: &[u16]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [digits.len() as u16, weight as u16, sign, 0] {
            bytes.extend(word.to_be_bytes());
        }
        for digit in digits {
            bytes.extend(digit.to_be_bytes());
        }
        bytes
    }

    #[test]
    fn a_binary_numeric_reads_as_its_decimal() {
        // 12345.678 = 1 2345 . 6780
        assert_eq!(
            postgres_numeric(&numeric(1, 0, &[1, 2345, 6780])).unwrap(),
            "12345.6780"
        );
        // 0.0005 = . 0005
        assert_eq!(postgres_numeric(&numeric(-1, 0, &[5])).unwrap(), "0.0005");
        // 0.00000005 = . 0000 0005
        assert_eq!(
            postgres_numeric(&numeric(-2, 0, &[5])).unwrap(),
            "0.00000005"
        );
        // -70000 = 7 (weight 1), trailing zero digits left out
        assert_eq!(
            postgres_numeric(&numeric(1, 0x4000, &[7])).unwrap(),
            "-70000"
        );
        assert_eq!(postgres_numeric(&numeric(0, 0, &[])).unwrap(), "0");
        assert!(postgres_numeric(&numeric(0, 0xC000, &[])).is_err());
        assert!(postgres_numeric(&[0, 1]).is_err());
    }

    #[test]
    fn cells_keep_integers_exact_and_times_in_the_mapping_zone() {
        let zone = FixedOffset::east_opt(8 * 3600).unwrap();
        assert_eq!(cell_of(Datum::Int(42), zone).unwrap(), Cell::Number(42.0));
        assert_eq!(
            cell_of(Datum::Int(9_007_199_254_740_993), zone).unwrap(),
            Cell::Text("9007199254740993".into())
        );
        let utc = DateTime::parse_from_rfc3339("2026-12-01T01:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            cell_of(Datum::Utc(utc), zone).unwrap(),
            Cell::DateTime(
                NaiveDateTime::parse_from_str("2026-12-01 09:30:00", "%Y-%m-%d %H:%M:%S").unwrap()
            )
        );
        assert!(cell_of(Datum::Float(f64::NAN), zone).is_err());
        assert_eq!(shortest(0.1), 0.1);
    }
}
