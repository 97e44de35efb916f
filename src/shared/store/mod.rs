//! Durable storage through sqlx: PostgreSQL in production, SQLite for the embedded default.
//!
//! Promise: each backend stores values in its own types — on PostgreSQL `uuid`, `timestamptz`,
//! `jsonb` and `bigint`, on SQLite fixed-form text (see [`types`]) — and a stored value that
//! does not read back as what was written is [`StoreError::Corrupt`], naming its row, never a
//! default. A query is written once and runs on the backend's own typed connection: the
//! [`on_backend!`](crate::on_backend) macro expands its body once per backend, so each
//! expansion binds and decodes through that backend's types; the few places where the dialects
//! differ ask [`Dialect`]. Migrations run at connect time, one tree per dialect: first the
//! outbox and ledger every role shares (`migrations/shared/<dialect>`, versions below 100),
//! then the role's own tables (`migrations/<role>/<dialect>`, from 101).
//!
//! SQLite is opened with one connection, WAL and `synchronous=FULL`: the embedded hub is a
//! single process, and one writer avoids lock-upgrade failures while keeping a committed
//! lead durable across a crash or power loss.

pub mod types;

pub use types::{DbJson, DbTime, DbUuid};

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions};
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

/// One thing per backend: a pool, a connection, a transaction.
#[derive(Clone, Debug)]
pub enum Backend<P, S> {
    Postgres(P),
    Sqlite(S),
}

/// Runs `body` on whichever backend `target` (a [`Backend`]) holds, with `conn` bound to that
/// backend's executor: the body is compiled once per backend, so its binds and decodes use that
/// backend's types. With a transaction's `&mut` connection, write `&mut *conn` for each use.
#[macro_export]
macro_rules! on_backend {
    ($target:expr, $conn:ident => $body:expr) => {
        match $target {
            $crate::shared::store::Backend::Postgres($conn) => $body,
            $crate::shared::store::Backend::Sqlite($conn) => $body,
        }
    };
}

/// A transaction on a role's database.
pub struct Tx(
    Backend<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Transaction<'static, sqlx::Sqlite>>,
);

impl Tx {
    /// The transaction's connection, for [`on_backend!`](crate::on_backend).
    pub fn conn(&mut self) -> Backend<&mut PgConnection, &mut SqliteConnection> {
        match &mut self.0 {
            Backend::Postgres(tx) => Backend::Postgres(&mut **tx),
            Backend::Sqlite(tx) => Backend::Sqlite(&mut **tx),
        }
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self.0 {
            Backend::Postgres(tx) => tx.commit().await?,
            Backend::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        match self.0 {
            Backend::Postgres(tx) => tx.rollback().await?,
            Backend::Sqlite(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

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
            StoreError::UnknownSchema { version } => {
                StoreError::UnknownSchema { version: *version }
            }
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
            // A stored value that does not read back as its type.
            sqlx::Error::ColumnDecode { .. } => StoreError::Corrupt(error.to_string()),
            _ => StoreError::Other(error),
        }
    }
}

/// Most bind parameters one statement may carry on both databases: SQLite's limit since 3.32
/// (the bundled library is newer), below PostgreSQL's 65,535.
pub(crate) const MAX_BIND_PARAMS: usize = 32_766;

/// `($2, $3<tail>), ($4, $5<tail>), …`: `rows` tuples of `columns` parameters numbered from
/// `first`, each ending with `tail` (shared values and literals).
pub(crate) fn tuples_with(rows: usize, columns: usize, first: usize, tail: &str) -> String {
    let mut out = String::new();
    for row in 0..rows {
        if row > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for column in 0..columns {
            if column > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("${}", first + row * columns + column));
        }
        out.push_str(tail);
        out.push(')');
    }
    out
}

pub(crate) fn tuples(rows: usize, columns: usize, first: usize) -> String {
    tuples_with(rows, columns, first, "")
}

/// Rows of `columns` parameters per statement, leaving room for one shared parameter.
pub(crate) fn rows_per_statement(columns: usize) -> usize {
    (MAX_BIND_PARAMS - 1) / columns
}

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
    pool: Backend<PgPool, SqlitePool>,
    /// An untyped second pool on the same database, opened on first use, for tests and tools
    /// that inspect tables with ad-hoc SQL; the roles never use it.
    inspection: Arc<tokio::sync::OnceCell<AnyPool>>,
    url: Arc<str>,
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
        let acquire_timeout = Duration::from_secs(10);
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut connection = PgConnection::connect(url).await?;
            migrate(
                &SHARED_MIGRATIONS.postgres,
                &migrations.postgres,
                &mut connection,
            )
            .await?;
            connection.close().await?;
            Backend::Postgres(
                PgPoolOptions::new()
                    .acquire_timeout(acquire_timeout)
                    .max_connections(max_connections)
                    .connect(url)
                    .await?,
            )
        } else if url.starts_with("sqlite:") {
            let options = sqlite_options(url)?.create_if_missing(true);
            // The database holds names and ID numbers: owner-only from its first byte.
            let file = options.get_filename();
            if !file.as_os_str().is_empty() && file != Path::new(":memory:") {
                crate::shared::private_fs::ensure_private_file(file)
                    .map_err(|error| StoreError::Other(sqlx::Error::Io(error)))?;
            }
            let mut connection = SqliteConnection::connect_with(&options).await?;
            migrate(
                &SHARED_MIGRATIONS.sqlite,
                &migrations.sqlite,
                &mut connection,
            )
            .await?;
            connection.close().await?;
            Backend::Sqlite(
                SqlitePoolOptions::new()
                    .acquire_timeout(acquire_timeout)
                    .max_connections(1)
                    .connect_with(options)
                    .await?,
            )
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        Ok(Store {
            pool,
            inspection: Arc::default(),
            url: url.into(),
            ingest_counters: Arc::default(),
        })
    }

    pub fn dialect(&self) -> Dialect {
        match self.pool {
            Backend::Postgres(_) => Dialect::Postgres,
            Backend::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// The typed pool, for [`on_backend!`](crate::on_backend).
    pub fn db(&self) -> Backend<&PgPool, &SqlitePool> {
        match &self.pool {
            Backend::Postgres(pool) => Backend::Postgres(pool),
            Backend::Sqlite(pool) => Backend::Sqlite(pool),
        }
    }

    /// An untyped pool on the same database for tests and tools that inspect it with ad-hoc
    /// SQL (stored times, ids and documents come back as the backend's own types, so such SQL
    /// casts them to text). The roles' code goes through [`Store::db`] and [`Store::begin`].
    pub async fn inspection_pool(&self) -> Result<&AnyPool, StoreError> {
        self.inspection
            .get_or_try_init(|| async {
                sqlx::any::install_default_drivers();
                let options = AnyConnectOptions::from_str(&self.url)?;
                let pool = AnyPoolOptions::new()
                    .max_connections(2)
                    .after_connect(|connection, _| {
                        Box::pin(async move {
                            if connection.backend_name() == "SQLite" {
                                connection.execute("PRAGMA busy_timeout = 10000;").await?;
                            }
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?;
                Ok::<_, StoreError>(pool)
            })
            .await
    }

    /// Statements and commits of the ingest transactions (see [`IngestCounters`]).
    pub fn ingest_counters(&self) -> &IngestCounters {
        &self.ingest_counters
    }

    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(Tx(match &self.pool {
            Backend::Postgres(pool) => Backend::Postgres(pool.begin().await?),
            Backend::Sqlite(pool) => Backend::Sqlite(pool.begin().await?),
        }))
    }

    /// A round trip to the database, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self.db(), pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(pool) = self.inspection.get() {
            pool.close().await;
        }
        on_backend!(self.db(), pool => pool.close().await)
    }
}

/// The embedded default's connection settings: WAL, full synchronous commits (a committed
/// lead survives a crash or power loss), foreign keys, and a wait instead of an error when the
/// database is busy.
fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
    Ok(SqliteConnectOptions::from_str(url)?
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true))
}

/// Reads a column as `T`; a value that does not decode is [`StoreError::Corrupt`] naming `row`
/// (e.g. `police_leads (0193…, 2)`) and the column.
pub fn column<'r, R, T>(
    row: &'r R,
    name: &str,
    which: &dyn std::fmt::Display,
) -> Result<T, StoreError>
where
    R: sqlx::Row,
    T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'n> &'n str: sqlx::ColumnIndex<R>,
{
    row.try_get(name).map_err(|error| match error {
        sqlx::Error::ColumnDecode { source, .. } => {
            StoreError::Corrupt(format!("{which}: {name}: {source}"))
        }
        other => StoreError::from(other),
    })
}

/// Reads a column that must not be NULL.
pub fn required<'r, R, T>(
    row: &'r R,
    name: &str,
    which: &dyn std::fmt::Display,
) -> Result<T, StoreError>
where
    R: sqlx::Row,
    T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'n> &'n str: sqlx::ColumnIndex<R>,
{
    column::<R, Option<T>>(row, name, which)?
        .ok_or_else(|| StoreError::Corrupt(format!("{which}: {name} is NULL")))
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
