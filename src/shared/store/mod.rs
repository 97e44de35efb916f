//! Durable storage through sqlx: PostgreSQL in production, SQLite for the embedded default.
//!
//! Every query is written once and runs on both through sqlx's `Any` driver; the few places
//! where the dialects differ ask [`Dialect`]. Migrations run at connect time, one tree per
//! dialect: first the outbox and ledger every role shares (`migrations/shared/<dialect>`,
//! versions below 100), then the role's own tables (`migrations/<role>/<dialect>`, from 101). Times are stored as fixed-width RFC 3339 UTC text (see
//! [`db_time`]), which orders the same way in both databases.
//!
//! SQLite is opened with one connection, WAL and `synchronous=FULL`: the embedded hub is a
//! single process, and one writer avoids lock-upgrade failures while keeping a committed
//! lead durable across a crash or power loss.

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection, Executor};

/// A role's own migrations, one tree per dialect under `migrations/<role>/`, numbered from
/// [`FIRST_ROLE_VERSION`]; [`Store::connect`] runs the shared ones before them.
pub struct Migrations {
    pub postgres: sqlx::migrate::Migrator,
    pub sqlite: sqlx::migrate::Migrator,
}

/// The outbox and the audit ledger, the same schema in every role's database.
static SHARED_MIGRATIONS: Migrations = Migrations {
    postgres: sqlx::migrate!("./migrations/shared/postgres"),
    sqlite: sqlx::migrate!("./migrations/shared/sqlite"),
};

/// Versions below this are the shared schema's; a role's own start here.
pub const FIRST_ROLE_VERSION: i64 = 101;

/// The shared migrations followed by the role's, as one history in the role's database.
fn with_shared(
    shared: &sqlx::migrate::Migrator,
    role: &sqlx::migrate::Migrator,
) -> sqlx::migrate::Migrator {
    assert!(
        shared.iter().all(|m| m.version < FIRST_ROLE_VERSION)
            && role.iter().all(|m| m.version >= FIRST_ROLE_VERSION),
        "shared migrations are numbered below {FIRST_ROLE_VERSION}, a role's from it"
    );
    let migrations: Vec<sqlx::migrate::Migration> =
        shared.iter().chain(role.iter()).cloned().collect();
    sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(migrations),
        ..sqlx::migrate::Migrator::DEFAULT
    }
}

/// Runs a role's migrations; a database whose history this build does not know (one made by a
/// pre-release build, before the schemas were consolidated) is refused with what to do.
async fn migrate<C>(
    shared: &sqlx::migrate::Migrator,
    role: &sqlx::migrate::Migrator,
    connection: &mut C,
) -> Result<(), StoreError>
where
    C: sqlx::migrate::Migrate,
{
    use sqlx::migrate::MigrateError;
    with_shared(shared, role)
        .run_direct(connection)
        .await
        .map_err(|error| match error {
            MigrateError::VersionMissing(version) | MigrateError::VersionMismatch(version) => {
                StoreError::UnknownSchema { version }
            }
            other => StoreError::Migration(other),
        })
}

/// A transaction on a role's database.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// Errors of the storage boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or is overloaded; retrying later can help.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A concurrent writer got there first (a unique key); retrying the whole operation helps.
    #[error("a concurrent write conflicted: {0}")]
    Contended(#[source] sqlx::Error),
    /// The database refuses the data itself and always will: PostgreSQL's data exceptions
    /// (SQLSTATE class 22, e.g. U+0000 in text, a value out of range) and program limits (54,
    /// e.g. a row or string too large), SQLite's `SQLITE_TOOBIG` and `SQLITE_MISMATCH`.
    /// Retrying the same write cannot help; the caller must set the data aside.
    #[error("the database cannot store this data: {0}")]
    Unstorable(#[source] sqlx::Error),
    /// Migrations failed at start-up.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The database holds a schema history this build does not know.
    #[error(
        "the database's schema history does not match this build's (migration {version} is \
         unknown or differs): it was made by another build of LeadBridge, such as a pre-release \
         one from before the schemas were consolidated; point this build at a new database"
    )]
    UnknownSchema { version: i64 },
    /// The URL names no supported database.
    #[error("unsupported database URL (expected postgres:// or sqlite:): {0}")]
    UnsupportedUrl(String),
    /// A stored value does not read back as what was written (a damaged row, or a write that
    /// bypassed the store): never replaced by a default, always named with its row.
    #[error("a stored value does not parse: {0}")]
    Corrupt(String),
    /// Anything else: a bug or a corrupted database.
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
}

impl StoreError {
    /// The same error for another waiter: one failed group commit answers each of its
    /// submissions with an error of the same kind (so the same HTTP status), keeping the cause
    /// as text because `sqlx::Error` cannot be cloned.
    pub fn duplicate(&self) -> StoreError {
        let text = |error: &dyn std::fmt::Display| sqlx::Error::Protocol(error.to_string());
        match self {
            StoreError::Unavailable(error) => StoreError::Unavailable(text(error)),
            StoreError::Contended(error) => StoreError::Contended(text(error)),
            StoreError::Unstorable(error) => StoreError::Unstorable(text(error)),
            StoreError::Migration(error) => StoreError::Other(text(error)),
            StoreError::UnknownSchema { version } => StoreError::UnknownSchema { version: *version },
            StoreError::UnsupportedUrl(url) => StoreError::UnsupportedUrl(url.clone()),
            StoreError::Corrupt(detail) => StoreError::Corrupt(detail.clone()),
            StoreError::Other(error) => StoreError::Other(text(error)),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Contended(_))
    }

    /// The same write with the same data can never succeed (see [`StoreError::Unstorable`]).
    /// Neither retryable nor permanent (`Other`) means a bug or a broken database: retrying
    /// may help once it is fixed, so such errors are not treated as the data's fault.
    pub fn is_permanent(&self) -> bool {
        matches!(self, StoreError::Unstorable(_))
    }
}

/// Whether a database error code says the data itself cannot be stored. PostgreSQL codes are
/// five-character SQLSTATEs; SQLite's are decimal (extended) result codes, never five digits.
fn is_unstorable_code(code: &str) -> bool {
    let sqlstate = code.len() == 5;
    if sqlstate {
        // Data exceptions, program limits, and the integrity violations that the same data
        // meets again on every retry: NOT NULL, foreign key, CHECK. (A unique violation is a
        // race a retry can win: `Contended`.)
        code.starts_with("22")
            || code.starts_with("54")
            || matches!(code, "23502" | "23503" | "23514")
    } else {
        // SQLITE_TOOBIG (18), SQLITE_MISMATCH (20), and the extended constraint codes
        // FOREIGNKEY (787), NOTNULL (1299), CHECK (275).
        matches!(code, "18" | "20" | "787" | "1299" | "275")
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(error)
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Contended(error),
            sqlx::Error::Database(db)
                if matches!(
                    db.code().as_deref(),
                    Some("5" | "6" | "517" | "40001" | "40P01")
                ) =>
            {
                // SQLITE_BUSY / SQLITE_LOCKED / BUSY_SNAPSHOT; PostgreSQL serialization
                // failure / deadlock: the same operation can succeed when retried.
                StoreError::Contended(error)
            }
            sqlx::Error::Database(db) if db.code().as_deref().is_some_and(is_unstorable_code) => {
                StoreError::Unstorable(error)
            }
            _ => StoreError::Other(error),
        }
    }
}

/// Most bind parameters one statement may carry on both databases: SQLite's limit since 3.32
/// (the bundled library is newer), below PostgreSQL's 65,535.
pub(crate) const MAX_BIND_PARAMS: usize = 32_766;

/// What the ingest transactions sent to the database since the store was opened. Tests bound
/// these per batch and per group commit; they count every statement `accept_leads` issues,
/// `BEGIN` and `COMMIT` included.
#[derive(Debug, Default)]
pub struct IngestCounters {
    statements: AtomicU64,
    commits: AtomicU64,
}

impl IngestCounters {
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Committed ingest transactions.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    pub(crate) fn add_statements(&self, count: u64) {
        self.statements.fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn add_commit(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }
}

/// A role's database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    ingest_counters: Arc<IngestCounters>,
}

impl Store {
    /// Connects to a role's database at `url` (`postgres://…` or `sqlite:…`), runs the role's
    /// migrations and opens a pool.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        migrations: &'static Migrations,
    ) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        match dialect {
            Dialect::Postgres => {
                let mut connection = sqlx::PgConnection::connect(url).await?;
                migrate(
                    &SHARED_MIGRATIONS.postgres,
                    &migrations.postgres,
                    &mut connection,
                )
                .await?;
                connection.close().await?;
            }
            Dialect::Sqlite => {
                let options =
                    sqlx::sqlite::SqliteConnectOptions::from_str(url)?.create_if_missing(true);
                // The database holds names and ID numbers: owner-only from its first byte.
                let file = options.get_filename();
                if !file.as_os_str().is_empty() && file != Path::new(":memory:") {
                    crate::shared::private_fs::ensure_private_file(file)
                        .map_err(|error| StoreError::Other(sqlx::Error::Io(error)))?;
                }
                let mut connection = sqlx::SqliteConnection::connect_with(&options).await?;
                migrate(&SHARED_MIGRATIONS.sqlite, &migrations.sqlite, &mut connection).await?;
                connection.close().await?;
            }
        }
        let options = AnyConnectOptions::from_str(url)?;
        let pool_options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let pool = match dialect {
            Dialect::Postgres => pool_options.max_connections(max_connections),
            Dialect::Sqlite => pool_options
                .max_connections(1)
                .after_connect(|connection, _| {
                    Box::pin(async move {
                        connection
                            .execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                            )
                            .await?;
                        Ok(())
                    })
                }),
        }
        .connect_with(options)
        .await?;
        Ok(Store {
            pool,
            dialect,
            ingest_counters: Arc::default(),
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Statements and commits of the ingest transactions (see [`IngestCounters`]).
    pub fn ingest_counters(&self) -> &IngestCounters {
        &self.ingest_counters
    }

    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// A round trip to the database, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The stored form of a time: RFC 3339 UTC with exactly six fractional digits.
pub fn db_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses a time written by [`db_time`].
pub fn parse_db_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

/// Reads a stored time (as [`db_time`] wrote it); NULL is `None`. `row` names the row for
/// the error, e.g. `police_leads (0193…, 2)`.
pub fn stored_time(
    row: &sqlx::any::AnyRow,
    column: &str,
    which: &dyn std::fmt::Display,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    use sqlx::Row;
    let text: Option<String> = row.try_get(column)?;
    text.map(|text| {
        parse_db_time(&text)
            .ok_or_else(|| StoreError::Corrupt(format!("{which}: {column} {text:?} is not a time")))
    })
    .transpose()
}

/// Reads a stored time that must be there.
pub fn required_time(
    row: &sqlx::any::AnyRow,
    column: &str,
    which: &dyn std::fmt::Display,
) -> Result<DateTime<Utc>, StoreError> {
    stored_time(row, column, which)?
        .ok_or_else(|| StoreError::Corrupt(format!("{which}: {column} is NULL")))
}

/// Reads a stored JSON document; NULL is `None`.
pub fn stored_json(
    row: &sqlx::any::AnyRow,
    column: &str,
    which: &dyn std::fmt::Display,
) -> Result<Option<serde_json::Value>, StoreError> {
    use sqlx::Row;
    let text: Option<String> = row.try_get(column)?;
    text.map(|text| {
        serde_json::from_str(&text).map_err(|error| {
            StoreError::Corrupt(format!("{which}: {column} is not JSON ({error})"))
        })
    })
    .transpose()
}

/// Reads a stored JSON document that must be there.
pub fn required_json(
    row: &sqlx::any::AnyRow,
    column: &str,
    which: &dyn std::fmt::Display,
) -> Result<serde_json::Value, StoreError> {
    stored_json(row, column, which)?
        .ok_or_else(|| StoreError::Corrupt(format!("{which}: {column} is NULL")))
}

/// Reads a stored lead id.
pub fn stored_lead_id(
    row: &sqlx::any::AnyRow,
    column: &str,
    which: &dyn std::fmt::Display,
) -> Result<crate::contract::lead::LeadId, StoreError> {
    use sqlx::Row;
    let text: String = row.try_get(column)?;
    crate::contract::lead::LeadId::parse(&text)
        .ok_or_else(|| StoreError::Corrupt(format!("{which}: {column} {text:?} is not a UUID")))
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_sort_as_they_read() {
        let early = DateTime::parse_from_rfc3339("2026-11-26T08:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let late = DateTime::parse_from_rfc3339("2026-11-26T08:00:01Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(db_time(early), "2026-11-26T08:00:00.500000Z");
        assert!(db_time(early) < db_time(late));
        assert_eq!(parse_db_time(&db_time(early)), Some(early));
    }

    #[test]
    fn only_data_errors_are_unstorable() {
        // PostgreSQL: 22021 invalid byte sequence (U+0000), 22001 string too long, 54000
        // program limit exceeded.
        for code in [
            "22021", "22001", "22P02", "54000", "54001", "23502", "23503", "23514", "18", "20",
            "787", "1299", "275",
        ] {
            assert!(is_unstorable_code(code), "{code}");
        }
        // Unique violation, serialization failure, SQLite BUSY/LOCKED/CONSTRAINT, undefined
        // table, connection failure: not the data's fault.
        for code in [
            "23505", "40001", "5", "6", "19", "2067", "42P01", "08006", "22",
        ] {
            assert!(!is_unstorable_code(code), "{code}");
        }
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://leadbridge:s3cret@db:5432/hub"),
            "postgres://leadbridge:***@db:5432/hub"
        );
        assert_eq!(redact_url("sqlite:./x.db"), "sqlite:./x.db");
    }
}
