//! The role's transparency log in its database (supervision contract §2): every ledger entry
//! as a log entry, in an RFC 9162 tree whose checkpoints the role signs with its own key.
//!
//! What it promises:
//! - an entry is queued in the same transaction as the state change it records
//!   ([`queue`], called by `LedgerAppender::finish`), so no change is without its entry and no
//!   entry without its change; writers never wait for one another to queue;
//! - [`sequence`] moves queued entries into the log in batches, in queue order, each batch in
//!   one transaction that takes the log head: indexes are gap-free, and an entry's canonical
//!   bytes, leaf hash and the tree's new subtree hashes are written together;
//! - [`sign_checkpoint`] signs the tree as it is, once per size;
//! - [`verify`] recomputes the whole log from its stored entries and checks every stored hash
//!   and checkpoint against it, naming the first entry that does not verify when one was
//!   edited, removed, reordered or inserted, or a checkpoint that does not match.
//!
//! What it does not: the database refuses updates and deletes of entries, hashes and
//! checkpoints (triggers), but someone who controls the database can drop those; what they
//! can never do is change an entry under a checkpoint a supervisor holds without [`verify`]
//! (or the supervisor's own consistency check) seeing it.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::watch;

use super::{AuditEntry, AuditError};
use crate::contract::lead::{canonical_json, LeadId};
use crate::on_backend;
use crate::shared::store::{column, DbTime, DbUuid, Store, StoreError, Tx};
use crate::shared::tlog::checkpoint::{self, Checkpoint, LogKey, VerifierKey};
use crate::shared::tlog::entry::{jcs, leaf_hash, LogEntry};
use crate::shared::tlog::tree::{self, StoredHashes};
use crate::shared::tlog::Digest32;

/// At most this many queued entries go into one sequencing transaction.
pub const SEQUENCE_BATCH: usize = 1_000;

/// Rows per INSERT: under both databases' bind-parameter limit.
const QUEUE_ROWS: usize = crate::shared::store::MAX_BIND_PARAMS / 6;
const ENTRY_ROWS: usize = crate::shared::store::MAX_BIND_PARAMS / 8;
const HASH_ROWS: usize = crate::shared::store::MAX_BIND_PARAMS / 2;

/// The tables one log lives in: a role's own log, or the hub's copy of the police adapter's.
/// The copy has the own log's shape, so verifying, proving and serving read both alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogTables {
    pub entries: &'static str,
    pub hashes: &'static str,
    pub head: &'static str,
    pub checkpoints: &'static str,
    /// Where entries wait to be sequenced; a copy has no queue.
    pub queue: Option<&'static str>,
}

impl LogTables {
    /// The role's own log.
    pub const OWN: LogTables = LogTables {
        entries: "log_entries",
        hashes: "log_hashes",
        head: "log_head",
        checkpoints: "log_checkpoints",
        queue: Some("log_queue"),
    };
    /// The hub's copy of the police adapter's log (hub migration 0102).
    pub const POLICE_COPY: LogTables = LogTables {
        entries: "police_log_entries",
        hashes: "police_log_hashes",
        head: "police_log_head",
        checkpoints: "police_log_checkpoints",
        queue: None,
    };
}

/// Queues entries in the caller's transaction; returns the statements it took.
///
/// `details` is queued as canonical JSON text; the sequencer turns it into the entry's
/// integers-only form.
pub(crate) async fn queue(tx: &mut Tx, entries: &[AuditEntry]) -> Result<u64, AuditError> {
    let mut statements = 0;
    for chunk in entries.chunks(QUEUE_ROWS) {
        let sql = format!(
            "INSERT INTO log_queue (at, actor, action, lead_id, revision, details) VALUES {}",
            placeholders(chunk.len(), 6)
        );
        on_backend!(tx.conn(), conn => {
            let mut query = sqlx::query(&sql);
            for entry in chunk {
                query = query
                    .bind(DbTime::new(entry.at))
                    .bind(entry.actor.as_str())
                    .bind(entry.action)
                    .bind(entry.lead_id.map(DbUuid::from))
                    .bind(entry.revision)
                    .bind(String::from_utf8(canonical_json(&entry.details)).expect("JSON is UTF-8"));
            }
            query.execute(&mut *conn).await.map(|_| ())
        })?;
        statements += 1;
    }
    Ok(statements)
}

fn placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            let cells: Vec<String> = (1..=columns)
                .map(|column| format!("${}", row * columns + column))
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn hex_hash(text: &str, which: &str) -> Result<Digest32, StoreError> {
    crate::shared::tlog::evidence::parse_hash(text)
        .ok_or_else(|| StoreError::Corrupt(format!("{which}: {text:?} is not a hash")))
}

/// Reads the stored hashes at `indexes`.
pub(super) async fn stored_hashes(
    store_tx: &mut Tx,
    tables: LogTables,
    indexes: &[u64],
) -> Result<StoredHashes, AuditError> {
    let mut hashes = StoredHashes::new();
    for chunk in indexes.chunks(HASH_ROWS) {
        let list: Vec<String> = chunk.iter().map(u64::to_string).collect();
        let sql = format!(
            "SELECT idx, hash FROM {} WHERE idx IN ({})",
            tables.hashes,
            list.join(", ")
        );
        let rows: Vec<(i64, String)> = on_backend!(store_tx.conn(), conn => sqlx::query_as(&sql)
            .fetch_all(&mut *conn)
            .await)?;
        for (index, hash) in rows {
            hashes.insert(
                index as u64,
                hex_hash(&hash, &format!("{} {index}", tables.hashes))?,
            );
        }
    }
    Ok(hashes)
}

/// Moves up to `max` queued entries into the log; returns how many it moved.
pub async fn sequence(store: &Store, max: usize) -> Result<usize, AuditError> {
    let mut tx = store.begin().await?;
    let size: i64 = on_backend!(tx.conn(), conn => sqlx::query_scalar(
        "UPDATE log_head SET size = size WHERE id = 1 RETURNING size",
    )
    .fetch_one(&mut *conn)
    .await)?;
    let size = size as u64;
    let sql = format!(
        "SELECT id, at, actor, action, lead_id, revision, details FROM log_queue ORDER BY id LIMIT {max}"
    );
    let queued: Vec<(i64, LogEntry)> = on_backend!(tx.conn(), conn => {
        let rows = sqlx::query(&sql).fetch_all(&mut *conn).await.map_err(StoreError::from)?;
        rows.iter()
            .enumerate()
            .map(|(offset, row)| -> Result<(i64, LogEntry), StoreError> {
                let id: i64 = column(row, "id", &"log queue row")?;
                let which = format!("log queue row {id}");
                let details: String = column(row, "details", &which)?;
                let details: Value = serde_json::from_str(&details).map_err(|error| {
                    StoreError::Corrupt(format!("{which}: details are not JSON ({error})"))
                })?;
                Ok((id, LogEntry {
                    index: size + offset as u64,
                    at: column::<_, DbTime>(row, "at", &which)?.get(),
                    actor: column(row, "actor", &which)?,
                    action: column(row, "action", &which)?,
                    lead_id: column::<_, Option<DbUuid>>(row, "lead_id", &which)?.map(LeadId::from),
                    revision: column(row, "revision", &which)?,
                    details,
                }))
            })
            .collect::<Result<Vec<_>, StoreError>>()
    })?;
    if queued.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let entries: Vec<LogEntry> = queued.iter().map(|(_, entry)| entry.clone()).collect();
    append_entries(&mut tx, LogTables::OWN, size, &entries).await?;
    let ids: Vec<String> = queued.iter().map(|(id, _)| id.to_string()).collect();
    let delete = format!("DELETE FROM log_queue WHERE id IN ({})", ids.join(", "));
    on_backend!(tx.conn(), conn => sqlx::query(&delete).execute(&mut *conn).await.map(|_| ()))?;
    tx.commit().await?;
    Ok(queued.len())
}

/// Appends `entries` (indexes `size`, `size + 1`, …) to the tree of `size` entries in `tables`,
/// inside the caller's transaction, which holds the log's head: their canonical bytes and leaf
/// hashes, the tree's new subtree hashes, and the head's new size.
pub(super) async fn append_entries(
    tx: &mut Tx,
    tables: LogTables,
    size: u64,
    entries: &[LogEntry],
) -> Result<(), AuditError> {
    let leaves: Vec<(Vec<u8>, Digest32)> = entries
        .iter()
        .map(|entry| {
            let bytes = entry.canonical_bytes();
            let hash = leaf_hash(&bytes);
            (bytes, hash)
        })
        .collect();
    let leaf_hashes: Vec<Digest32> = leaves.iter().map(|(_, hash)| *hash).collect();
    // Which earlier subtree hashes the new ones combine with depends only on the sizes.
    let needed = tree::needed_for(|reader| tree::append_over(size, &leaf_hashes, reader));
    let earlier = stored_hashes(tx, tables, &needed).await?;
    let new_hashes = tree::append_over(size, &leaf_hashes, &earlier)
        .map_err(|error| AuditError::Tree(error.to_string()))?;

    for chunk in entries
        .iter()
        .zip(&leaves)
        .collect::<Vec<_>>()
        .chunks(ENTRY_ROWS)
    {
        let sql = format!(
            "INSERT INTO {} (idx, at, actor, action, lead_id, revision, entry, leaf_hash) VALUES {}",
            tables.entries,
            placeholders(chunk.len(), 8)
        );
        on_backend!(tx.conn(), conn => {
            let mut query = sqlx::query(&sql);
            for (entry, (bytes, hash)) in chunk {
                query = query
                    .bind(entry.index as i64)
                    .bind(DbTime::new(entry.at))
                    .bind(entry.actor.as_str())
                    .bind(entry.action.as_str())
                    .bind(entry.lead_id.map(DbUuid::from))
                    .bind(entry.revision)
                    .bind(String::from_utf8(bytes.clone()).expect("canonical JSON is UTF-8"))
                    .bind(hex::encode(hash));
            }
            query.execute(&mut *conn).await.map(|_| ())
        })?;
    }
    for chunk in new_hashes.chunks(HASH_ROWS) {
        let sql = format!(
            "INSERT INTO {} (idx, hash) VALUES {}",
            tables.hashes,
            placeholders(chunk.len(), 2)
        );
        on_backend!(tx.conn(), conn => {
            let mut query = sqlx::query(&sql);
            for (index, hash) in chunk {
                query = query.bind(*index as i64).bind(hex::encode(hash));
            }
            query.execute(&mut *conn).await.map(|_| ())
        })?;
    }
    let head = format!("UPDATE {} SET size = $1 WHERE id = 1", tables.head);
    let new_size = (size + entries.len() as u64) as i64;
    on_backend!(tx.conn(), conn => sqlx::query(&head)
        .bind(new_size)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Moves every queued entry into the log.
pub async fn sequence_all(store: &Store) -> Result<usize, AuditError> {
    let mut moved = 0;
    loop {
        let batch = sequence(store, SEQUENCE_BATCH).await?;
        if batch == 0 {
            return Ok(moved);
        }
        moved += batch;
    }
}

/// A role's signing identity: its key and its checkpoints' origin line.
#[derive(Debug)]
pub struct LogSigner {
    pub key: LogKey,
    pub origin: String,
}

/// A stored checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: Digest32,
    pub note: String,
    pub signed_at: DateTime<Utc>,
}

/// Signs and stores a checkpoint of the log as it is, unless one of this size exists.
/// Returns the latest checkpoint (None for an empty log never signed).
pub async fn sign_checkpoint(
    store: &Store,
    signer: &LogSigner,
    now: DateTime<Utc>,
) -> Result<Option<StoredCheckpoint>, AuditError> {
    let mut tx = store.begin().await?;
    let size: i64 = on_backend!(tx.conn(), conn => sqlx::query_scalar("SELECT size FROM log_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await)?;
    let latest = latest_checkpoint_in(&mut tx, LogTables::OWN).await?;
    if latest
        .as_ref()
        .is_some_and(|latest| latest.size >= size as u64)
        || size == 0
    {
        tx.rollback().await?;
        return Ok(latest);
    }
    let size = size as u64;
    let needed = tree::needed_for(|reader| tree::root(size, reader));
    let hashes = stored_hashes(&mut tx, LogTables::OWN, &needed).await?;
    let root = tree::root(size, &hashes).map_err(|error| AuditError::Tree(error.to_string()))?;
    let checkpoint = Checkpoint {
        origin: signer.origin.clone(),
        size,
        root,
    };
    let note = signer.key.sign(&checkpoint);
    let signed_at = DbTime::new(now);
    // Another signer (a second instance, an evidence request) may have signed this size in
    // the meantime: its checkpoint stands, and is the answer.
    let inserted = on_backend!(tx.conn(), conn => sqlx::query(
        "INSERT INTO log_checkpoints (size, root, note, signed_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (size) DO NOTHING",
    )
    .bind(size as i64)
    .bind(hex::encode(root))
    .bind(&note)
    .bind(signed_at)
    .execute(&mut *conn)
    .await
    .map(|done| done.rows_affected()))?;
    if inserted == 0 {
        let latest = latest_checkpoint_in(&mut tx, LogTables::OWN).await?;
        tx.rollback().await?;
        return Ok(latest);
    }
    tx.commit().await?;
    Ok(Some(StoredCheckpoint {
        size,
        root,
        note,
        signed_at: signed_at.get(),
    }))
}

pub(super) async fn latest_checkpoint_in(
    tx: &mut Tx,
    tables: LogTables,
) -> Result<Option<StoredCheckpoint>, AuditError> {
    let sql = format!(
        "SELECT size, root, note, signed_at FROM {} ORDER BY size DESC LIMIT 1",
        tables.checkpoints
    );
    let row: Option<(i64, String, String, DbTime)> = on_backend!(tx.conn(), conn => sqlx::query_as(&sql)
    .fetch_optional(&mut *conn)
    .await)?;
    row.map(|(size, root, note, signed_at)| {
        Ok(StoredCheckpoint {
            size: size as u64,
            root: hex_hash(&root, &format!("{} {size}", tables.checkpoints))?,
            note,
            signed_at: signed_at.get(),
        })
    })
    .transpose()
}

/// Keeps the log current until `shutdown`: sequences what is queued every `tick`, signs a
/// checkpoint every `interval` while the log grows, and does both once more on the way out.
pub async fn run_sequencer(
    store: Store,
    signer: std::sync::Arc<LogSigner>,
    tick: Duration,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_signed = std::time::Instant::now() - interval;
    loop {
        let stopping = *shutdown.borrow();
        if let Err(error) = sequence_all(&store).await {
            tracing::warn!(%error, "Cannot sequence the transparency log yet; retrying.");
        }
        if stopping || last_signed.elapsed() >= interval {
            match sign_checkpoint(&store, &signer, Utc::now()).await {
                Ok(_) => last_signed = std::time::Instant::now(),
                Err(error) => {
                    tracing::warn!(%error, "Cannot sign a checkpoint yet; retrying.")
                }
            }
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedLog {
    pub entries: u64,
    pub checkpoints: usize,
    /// The latest checkpoint's size (0 when none).
    pub checkpointed: u64,
    /// Entries queued, not yet in the tree.
    pub queued: u64,
}

/// A stored `log_entries` row: idx, at, actor, action, lead_id, revision, entry, leaf_hash.
type EntryRow = (
    i64,
    DbTime,
    String,
    String,
    Option<DbUuid>,
    Option<i64>,
    String,
    String,
);

/// Everything of a log as stored, for [`verify`].
struct StoredLog {
    rows: Vec<EntryRow>,
    hashes: Vec<(i64, String)>,
    head: i64,
    /// (size, root, note)
    checkpoints: Vec<(i64, String, String)>,
    queued: i64,
}

/// Reads the log in one transaction, so a sequencer or signer committing meanwhile cannot make
/// the entries, hashes, head and checkpoints disagree (PostgreSQL: one REPEATABLE READ
/// snapshot; SQLite: one read transaction).
async fn read_stored_log(store: &Store, tables: LogTables) -> Result<StoredLog, StoreError> {
    let entries = format!(
        "SELECT idx, at, actor, action, lead_id, revision, entry, leaf_hash FROM {} ORDER BY idx",
        tables.entries
    );
    let hashes = format!("SELECT idx, hash FROM {} ORDER BY idx", tables.hashes);
    let head = format!("SELECT size FROM {} WHERE id = 1", tables.head);
    let checkpoints = format!(
        "SELECT size, root, note FROM {} ORDER BY size",
        tables.checkpoints
    );
    let queue = tables
        .queue
        .map(|queue| format!("SELECT COUNT(*) FROM {queue}"));
    let mut tx = store.begin().await?;
    let read = on_backend!(tx.conn(), conn => {
        if store.dialect() == crate::shared::store::Dialect::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *conn)
                .await?;
        }
        let rows = sqlx::query_as(&entries).fetch_all(&mut *conn).await?;
        let hashes = sqlx::query_as(&hashes).fetch_all(&mut *conn).await?;
        let head = sqlx::query_scalar(&head).fetch_one(&mut *conn).await?;
        let checkpoints = sqlx::query_as(&checkpoints).fetch_all(&mut *conn).await?;
        let queued = match &queue {
            Some(sql) => sqlx::query_scalar(sql).fetch_one(&mut *conn).await?,
            None => 0,
        };
        Ok::<_, StoreError>(StoredLog { rows, hashes, head, checkpoints, queued })
    })?;
    tx.rollback().await?;
    Ok(read)
}

/// Recomputes the whole log from its stored entries and checks every stored hash, the head
/// and every checkpoint (its root, and its signature by `key` under `origin`).
pub async fn verify(
    store: &Store,
    tables: LogTables,
    key: &VerifierKey,
    origin: &str,
) -> Result<VerifiedLog, AuditError> {
    verify_tree(store, tables, Some((key, origin))).await
}

/// [`verify`], checking the checkpoints' signatures only when given the key and origin.
pub async fn verify_tree(
    store: &Store,
    tables: LogTables,
    signed_by: Option<(&VerifierKey, &str)>,
) -> Result<VerifiedLog, AuditError> {
    let StoredLog {
        rows,
        hashes: stored,
        head,
        checkpoints,
        queued,
    } = read_stored_log(store, tables).await?;

    let mut hashes = StoredHashes::new();
    let mut entries = 0u64;
    let mut roots: HashMap<u64, Digest32> = HashMap::new();
    let wanted: std::collections::HashSet<u64> = checkpoints
        .iter()
        .map(|(size, _, _)| *size as u64)
        .collect();
    let stored: HashMap<u64, String> = stored
        .into_iter()
        .map(|(index, hash)| (index as u64, hash))
        .collect();
    for (position, (idx, at, actor, action, lead_id, revision, text, leaf)) in
        rows.into_iter().enumerate()
    {
        let position = position as u64;
        let broken = |reason: String| AuditError::Log {
            index: position,
            reason,
        };
        if idx != position as i64 {
            return Err(broken(format!(
                "the next stored entry has index {idx}: entries are missing, reordered or inserted"
            )));
        }
        let parsed: Value = serde_json::from_str(&text)
            .map_err(|error| broken(format!("the entry is not JSON ({error})")))?;
        if jcs(&parsed) != text.as_bytes() {
            return Err(broken("the entry is not in canonical form".into()));
        }
        let expected = LogEntry {
            index: position,
            at: at.get(),
            actor,
            action,
            lead_id: lead_id.map(LeadId::from),
            revision,
            details: parsed.get("details").cloned().unwrap_or(Value::Null),
        };
        if expected.to_value() != parsed {
            return Err(broken(
                "the entry's fields differ from its columns, or its index from its position".into(),
            ));
        }
        let computed = leaf_hash(text.as_bytes());
        if hex::encode(computed) != leaf {
            return Err(broken("the leaf hash is not the hash of the entry".into()));
        }
        let start = tree::stored_count(position);
        let new = tree::hashes_for_leaf(position, computed, &hashes)
            .map_err(|error| broken(error.to_string()))?;
        for (offset, hash) in new.into_iter().enumerate() {
            let index = start + offset as u64;
            if stored.get(&index) != Some(&hex::encode(hash)) {
                return Err(broken(format!(
                    "stored tree hash {index} is missing or does not match the entries"
                )));
            }
            hashes.insert(index, hash);
        }
        let size = position + 1;
        entries = size;
        if wanted.contains(&size) {
            roots.insert(
                size,
                tree::root(size, &hashes).map_err(|error| broken(error.to_string()))?,
            );
        }
    }
    if stored.len() as u64 != tree::stored_count(entries) {
        return Err(AuditError::Log {
            index: entries,
            reason: format!(
                "the store holds {} tree hashes, {entries} entries make {}",
                stored.len(),
                tree::stored_count(entries)
            ),
        });
    }
    if head as u64 != entries {
        return Err(AuditError::Log {
            index: entries.min(head as u64),
            reason: format!("the log head says {head} entries, the log holds {entries}"),
        });
    }
    for (size, root, note) in &checkpoints {
        let size = *size as u64;
        let bad = |reason: String| AuditError::Checkpoint { size, reason };
        let recomputed = roots
            .get(&size)
            .ok_or_else(|| bad(format!("it is beyond the log's {entries} entries")))?;
        if hex::encode(recomputed) != *root {
            return Err(bad("its root is not the root of the entries".into()));
        }
        let signed = match signed_by {
            Some((key, origin)) => {
                checkpoint::verify(note, key, origin).map_err(|error| bad(error.to_string()))?
            }
            None => checkpoint::SignedNote::parse(note)
                .and_then(|note| Checkpoint::parse_body(&note.body))
                .map_err(|error| bad(error.to_string()))?,
        };
        if signed.size != size || signed.root != *recomputed {
            return Err(bad("its signed note is of another tree".into()));
        }
    }
    Ok(VerifiedLog {
        entries,
        checkpoints: checkpoints.len(),
        checkpointed: checkpoints.last().map_or(0, |(size, _, _)| *size as u64),
        queued: queued as u64,
    })
}

/// Where each role's signing key lives and how often the log is checkpointed
/// (`[transparency]`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransparencySettings {
    /// The deployment's name in checkpoint origins (`leadbridge/<deployment>/<log>`) and key
    /// names (`leadbridge-<deployment>-<log>`).
    pub deployment: String,
    /// The hub's Ed25519 key (signed-note private key form). Unset: the embedded default's
    /// `<data-dir>/keys/hub.key`, created on first start.
    pub hub_key_file: Option<std::path::PathBuf>,
    /// The police adapter's key; unset: `<data-dir>/keys/police.key`, created on first start.
    pub police_key_file: Option<std::path::PathBuf>,
    /// The police adapter's public key (`<name>+<key id>+<base64>`), which the hub checks the
    /// police log's shipped checkpoints against and serves at `/supervise/v1/keys`. Unset: the
    /// public half of the police key this process signs with, or of the police key file when
    /// it exists (the embedded default's layout).
    pub police_verifier_key: Option<String>,
    /// The witnesses whose cosignatures the hub accepts (verifier keys). Unset: the embedded
    /// default's demo witness, the procuratorate's key `<data-dir>/keys/witness.key`, created on
    /// first start for `leadbridge audit witness`.
    pub witness_keys: Option<Vec<String>>,
    /// A checkpoint is signed at least this often while the log grows.
    pub checkpoint_interval_secs: u64,
    /// How often queued entries are moved into the log.
    pub sequence_interval_ms: u64,
}

impl Default for TransparencySettings {
    fn default() -> Self {
        TransparencySettings {
            deployment: "local".to_owned(),
            hub_key_file: None,
            police_key_file: None,
            police_verifier_key: None,
            witness_keys: None,
            checkpoint_interval_secs: 60,
            sequence_interval_ms: 200,
        }
    }
}

impl TransparencySettings {
    /// Where `log`'s key lives, and whether that is a configured file (which must exist)
    /// rather than the embedded default's `<data-dir>/keys/<log>.key`.
    pub fn key_file(&self, log: &str, data_dir: &std::path::Path) -> (std::path::PathBuf, bool) {
        let configured = match log {
            "hub" => &self.hub_key_file,
            _ => &self.police_key_file,
        };
        match configured {
            Some(path) => (path.clone(), true),
            None => (data_dir.join("keys").join(format!("{log}.key")), false),
        }
    }

    /// The signer of `log` (`hub` or `police`): the configured key file, which must exist, or
    /// — for the `embedded` default only (its database under the data directory) — the key
    /// under `<data-dir>/keys/`, created when missing. Outside the embedded default an unset key
    /// file is an error: instances sharing a database must sign with one key, and a key each
    /// process made up for itself would split the log's checkpoints between keys. A missing or
    /// unreadable key is an error naming its path.
    pub fn signer(
        &self,
        log: &str,
        data_dir: &std::path::Path,
        embedded: bool,
    ) -> Result<LogSigner, checkpoint::CheckpointError> {
        let deployment = &self.deployment;
        if deployment.is_empty()
            || deployment
                .chars()
                .any(|c| c == '/' || c == '+' || c.is_whitespace())
        {
            return Err(checkpoint::CheckpointError::Malformed(format!(
                "transparency.deployment {deployment:?} must be a name without '/', '+' or spaces"
            )));
        }
        let (path, configured) = self.key_file(log, data_dir);
        let key = if configured {
            LogKey::load(&path)?
        } else if !embedded {
            return Err(checkpoint::CheckpointError::Key {
                path,
                problem: format!(
                    "transparency.{log}_key_file is not set, and this {log} does not run on the embedded default's database: set it to a key every instance shares (`leadbridge audit keygen`)"
                ),
            });
        } else {
            LogKey::load_or_create(&path, &format!("leadbridge-{deployment}-{log}"))?
        };
        Ok(LogSigner {
            key,
            origin: crate::shared::tlog::origin(deployment, log),
        })
    }
}

impl TransparencySettings {
    /// The police log's verifier key as the hub knows it: configured, or the public half of
    /// `police_signer` (the adapter in this process), or of the police key file when it exists.
    /// None when the hub cannot know it; a configured key that does not parse is an error.
    pub fn police_verifier(
        &self,
        data_dir: &std::path::Path,
        police_signer: Option<&LogSigner>,
    ) -> Result<Option<VerifierKey>, checkpoint::CheckpointError> {
        let text = match (&self.police_verifier_key, police_signer) {
            (Some(text), _) => text.clone(),
            (None, Some(signer)) => signer.key.verifier_key(),
            (None, None) => {
                let (path, _) = self.key_file("police", data_dir);
                if !path.exists() {
                    return Ok(None);
                }
                LogKey::load(&path)?.verifier_key()
            }
        };
        VerifierKey::parse(&text).map(Some)
    }
}

/// The embedded default's demo witness key, which `leadbridge audit witness` signs with.
pub const DEMO_WITNESS_KEY: &str = "keys/witness.key";
/// The demo witness key's name.
pub const DEMO_WITNESS_NAME: &str = "procuratorate-witness";

impl TransparencySettings {
    /// The witnesses' keys: configured, or — for the `embedded` default only — its demo
    /// witness (its key created when missing, for `leadbridge audit witness` on the same
    /// machine). Elsewhere an unset list is no witness at all: a hub that held its witnesses'
    /// private keys could forge their cosignatures. A configured key that does not parse is an
    /// error naming it.
    pub fn witnesses(
        &self,
        data_dir: &std::path::Path,
        embedded: bool,
    ) -> Result<Vec<VerifierKey>, checkpoint::CheckpointError> {
        match &self.witness_keys {
            Some(keys) => keys.iter().map(|text| VerifierKey::parse(text)).collect(),
            None if !embedded => Ok(Vec::new()),
            None => {
                let key =
                    LogKey::load_or_create(&data_dir.join(DEMO_WITNESS_KEY), DEMO_WITNESS_NAME)?;
                Ok(vec![VerifierKey::parse(&key.verifier_key())?])
            }
        }
    }
}

/// The number of entries in the tree.
pub async fn size(store: &Store, tables: LogTables) -> Result<u64, AuditError> {
    let sql = format!("SELECT size FROM {} WHERE id = 1", tables.head);
    let size: i64 = on_backend!(store.db(), pool => sqlx::query_scalar(&sql)
        .fetch_one(pool)
        .await)?;
    Ok(size as u64)
}

/// The latest signed checkpoint, if any.
pub async fn latest_checkpoint(
    store: &Store,
    tables: LogTables,
) -> Result<Option<StoredCheckpoint>, AuditError> {
    let mut tx = store.begin().await?;
    let latest = latest_checkpoint_in(&mut tx, tables).await?;
    tx.rollback().await?;
    Ok(latest)
}

/// The stored checkpoint of `size` (its root hex and note), if the log has one.
pub async fn checkpoints_at(
    store: &Store,
    tables: LogTables,
    size: u64,
) -> Result<Option<(String, String)>, AuditError> {
    let sql = format!(
        "SELECT root, note FROM {} WHERE size = $1",
        tables.checkpoints
    );
    let row: Option<(String, String)> = on_backend!(store.db(), pool => sqlx::query_as(&sql)
        .bind(size as i64)
        .fetch_optional(pool)
        .await)?;
    Ok(row)
}

/// The signed notes of the checkpoints larger than `after`, oldest first, at most `limit`.
pub async fn checkpoints_after(
    store: &Store,
    tables: LogTables,
    after: u64,
    limit: u32,
) -> Result<Vec<String>, AuditError> {
    let sql = format!(
        "SELECT note FROM {} WHERE size > $1 ORDER BY size LIMIT $2",
        tables.checkpoints
    );
    let notes: Vec<String> = on_backend!(store.db(), pool => sqlx::query_scalar(&sql)
    .bind(after as i64)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await)?;
    Ok(notes)
}

/// The entries `[start, end)` as stored: each entry's JSON and its leaf hash (hex). An entry
/// whose stored text is not JSON is an error naming it.
pub async fn entries(
    store: &Store,
    tables: LogTables,
    start: u64,
    end: u64,
) -> Result<Vec<(Value, String)>, AuditError> {
    let sql = format!(
        "SELECT idx, entry, leaf_hash FROM {} WHERE idx >= $1 AND idx < $2 ORDER BY idx",
        tables.entries
    );
    let rows: Vec<(i64, String, String)> = on_backend!(store.db(), pool => sqlx::query_as(&sql)
    .bind(start as i64)
    .bind(end as i64)
    .fetch_all(pool)
    .await)?;
    rows.into_iter()
        .map(|(index, text, leaf)| Ok((stored_entry(index, &text)?, leaf)))
        .collect()
}

/// A stored entry's JSON; text that is not JSON is an error naming the entry.
fn stored_entry(index: i64, text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("log entry {index}: not JSON ({error})")))
}

/// Runs a tree computation over the stored hashes it needs, read in one statement.
async fn over_stored<T>(
    store: &Store,
    tables: LogTables,
    compute: impl Fn(&dyn tlog_tiles::HashReader) -> Result<T, tree::TreeError>,
) -> Result<T, AuditError> {
    let needed = tree::needed_for(|reader| compute(reader));
    let mut tx = store.begin().await?;
    let hashes = stored_hashes(&mut tx, tables, &needed).await?;
    tx.rollback().await?;
    compute(&hashes).map_err(|error| AuditError::Tree(error.to_string()))
}

/// The inclusion proof of entry `index` in the tree of `size` entries.
pub async fn inclusion_proof(
    store: &Store,
    tables: LogTables,
    index: u64,
    size: u64,
) -> Result<Vec<Digest32>, AuditError> {
    over_stored(store, tables, |reader| {
        tree::inclusion_proof(index, size, reader)
    })
    .await
}

/// The consistency proof from the tree of `first` entries to the tree of `second`.
pub async fn consistency_proof(
    store: &Store,
    tables: LogTables,
    first: u64,
    second: u64,
) -> Result<Vec<Digest32>, AuditError> {
    over_stored(store, tables, |reader| {
        tree::consistency_proof(first, second, reader)
    })
    .await
}

/// The leaf hash of entry `index`, as stored.
pub async fn leaf_hash_at(
    store: &Store,
    tables: LogTables,
    index: u64,
) -> Result<Option<String>, AuditError> {
    let sql = format!("SELECT leaf_hash FROM {} WHERE idx = $1", tables.entries);
    let hash: Option<String> = on_backend!(store.db(), pool => sqlx::query_scalar(&sql)
    .bind(index as i64)
    .fetch_optional(pool)
    .await)?;
    Ok(hash)
}

/// The root of the tree of the first `size` entries, from the stored hashes.
pub async fn root_at(store: &Store, tables: LogTables, size: u64) -> Result<Digest32, AuditError> {
    over_stored(store, tables, |reader| tree::root(size, reader)).await
}

/// The log's entries about `lead` in the tree of the first `size` entries, each with its
/// inclusion proof against that tree: the log's part of an evidence bundle.
pub async fn evidence_for(
    store: &Store,
    tables: LogTables,
    log_name: &str,
    lead: LeadId,
    size: u64,
) -> Result<Vec<crate::shared::tlog::evidence::BundleEntry>, AuditError> {
    use crate::shared::tlog::evidence::{BundleEntry, InclusionProof};
    let rows = entries_about(store, tables, lead, size).await?;
    let mut items = Vec::with_capacity(rows.len());
    for (index, entry, leaf_hash) in rows {
        let path = inclusion_proof(store, tables, index, size).await?;
        items.push(BundleEntry {
            log: log_name.to_owned(),
            entry,
            leaf_hash,
            proof: InclusionProof {
                leaf_index: index,
                tree_size: size,
                path: path.iter().map(hex::encode).collect(),
            },
        });
    }
    Ok(items)
}

/// The entries about `lead` among the first `size` of the log: (index, entry, leaf hash hex).
/// An entry whose stored text is not JSON is an error naming it.
pub async fn entries_about(
    store: &Store,
    tables: LogTables,
    lead: LeadId,
    size: u64,
) -> Result<Vec<(u64, Value, String)>, AuditError> {
    let sql = format!(
        "SELECT idx, entry, leaf_hash FROM {} WHERE lead_id = $1 AND idx < $2 ORDER BY idx",
        tables.entries
    );
    let rows: Vec<(i64, String, String)> = on_backend!(store.db(), pool => sqlx::query_as(&sql)
    .bind(DbUuid::from(lead))
    .bind(size as i64)
    .fetch_all(pool)
    .await)?;
    rows.into_iter()
        .map(|(index, text, leaf_hash)| Ok((index as u64, stored_entry(index, &text)?, leaf_hash)))
        .collect()
}

/// The evidence bundle of `lead` from this store's log (supervision contract §4): every entry
/// about the lead with its proof against a checkpoint signed now, so the entries still queued
/// are in it too.
pub async fn bundle(
    store: &Store,
    signer: &LogSigner,
    log_name: &str,
    lead: LeadId,
) -> Result<crate::shared::tlog::evidence::Bundle, AuditError> {
    sequence_all(store).await?;
    let checkpoint = sign_checkpoint(store, signer, Utc::now()).await?;
    let mut entries = Vec::new();
    let mut checkpoints = std::collections::BTreeMap::new();
    if let Some(checkpoint) = checkpoint {
        entries = evidence_for(store, LogTables::OWN, log_name, lead, checkpoint.size).await?;
        checkpoints.insert(log_name.to_owned(), checkpoint.note);
    }
    crate::shared::tlog::evidence::sort_in_time_order(&mut entries);
    Ok(crate::shared::tlog::evidence::Bundle {
        lead_id: lead.to_string(),
        entries,
        checkpoints,
    })
}

/// Adds a copied log's part to `bundle`: the copy's entries about the bundle's lead, each with
/// its proof against the copy's latest checkpoint (signed by the copied party), which joins
/// the bundle when there is such an entry. Entries after that checkpoint wait for the next.
pub async fn add_copy_to_bundle(
    store: &Store,
    tables: LogTables,
    log_name: &str,
    bundle: &mut crate::shared::tlog::evidence::Bundle,
) -> Result<(), AuditError> {
    let lead = LeadId::parse(&bundle.lead_id)
        .ok_or_else(|| AuditError::Tree(format!("{:?} is not a lead id", bundle.lead_id)))?;
    let Some(checkpoint) = latest_checkpoint(store, tables).await? else {
        return Ok(());
    };
    let mut entries = evidence_for(store, tables, log_name, lead, checkpoint.size).await?;
    if entries.is_empty() {
        return Ok(());
    }
    bundle.entries.append(&mut entries);
    bundle
        .checkpoints
        .insert(log_name.to_owned(), checkpoint.note);
    crate::shared::tlog::evidence::sort_in_time_order(&mut bundle.entries);
    Ok(())
}
