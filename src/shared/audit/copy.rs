//! A read-only copy of another party's transparency log, kept from what that party ships
//! (supervision contract §2): the hub's copy of the police adapter's log, which supervisors
//! read through the hub and check against the police's own signatures.
//!
//! What it promises:
//! - an entry enters the copy only at the copy's next index, only in the entry form every
//!   LeadBridge log writes, and only when the leaf hash shipped with it is the hash of its
//!   canonical bytes; the copy's subtree hashes are computed here, never taken on trust;
//! - an entry shipped again with the same leaf hash is recognised and kept once;
//! - an entry that differs from the one the copy holds at its index, or that would leave a
//!   gap, is refused whole with the reason: the copy never diverges from what was first
//!   shipped, and a divergence is an alarm, not an overwrite;
//! - a checkpoint is kept only when it is signed by the shipping party's key under its origin
//!   and its root is the copy's own root at its size, so every stored checkpoint of the copy
//!   covers exactly the copy's entries.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::log::{self, LogTables};
use super::AuditError;
use crate::contract::events::ShippedEntry;
use crate::contract::lead::LeadId;
use crate::on_backend;
use crate::shared::store::{DbTime, Store, Tx};
use crate::shared::tlog::checkpoint::{self, VerifierKey};
use crate::shared::tlog::entry::LogEntry;
use crate::shared::tlog::tree;

/// Why shipped log data was not taken into the copy.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The shipped entry is not a well-formed entry of a LeadBridge log.
    #[error("shipped log entry {index}: {reason}")]
    BadEntry { index: u64, reason: String },
    /// Entries between what the copy holds and what was shipped never arrived.
    #[error("shipped log entry {index} arrived while the copy holds {held} entries: entries {held}..{index} are missing")]
    Gap { index: u64, held: u64 },
    /// The shipped entry is not the one the copy already holds at its index.
    #[error("shipped log entry {index} has leaf hash {shipped}, the copy holds {held} at that index: the log and its copy disagree")]
    Conflict {
        index: u64,
        shipped: String,
        held: String,
    },
    /// The shipped checkpoint does not verify, or is not of the copy's tree.
    #[error("shipped checkpoint: {0}")]
    BadCheckpoint(String),
}

impl CopyError {
    /// A stable snake_case class, for dead letters and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            CopyError::Audit(_) => "unstorable",
            CopyError::BadEntry { .. } => "bad_log_entry",
            CopyError::Gap { .. } => "log_gap",
            CopyError::Conflict { .. } => "log_conflict",
            CopyError::BadCheckpoint(_) => "bad_checkpoint",
        }
    }

    /// Whether the same data could be taken later (the database was away).
    pub fn is_retryable(&self) -> bool {
        matches!(self, CopyError::Audit(error) if error.is_retryable())
    }
}

/// What a shipment did to the copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// Entries new to the copy.
    pub appended: usize,
    /// Entries the copy already held, shipped again.
    pub duplicates: usize,
}

/// The entry a shipped one stands for, when it is exactly an entry as LeadBridge logs write
/// them (fields, integer numbers, microsecond UTC time) with a matching leaf hash.
fn parse_shipped(shipped: &ShippedEntry) -> Result<LogEntry, CopyError> {
    let bad = |reason: &str| CopyError::BadEntry {
        index: shipped.index,
        reason: reason.to_owned(),
    };
    let object = shipped
        .entry
        .as_object()
        .ok_or_else(|| bad("not a JSON object"))?;
    let text = |field: &str| -> Result<String, CopyError> {
        object
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| bad(&format!("`{field}` is not a string")))
    };
    if object.get("index").and_then(Value::as_u64) != Some(shipped.index) {
        return Err(bad("its `index` is not the index it was shipped at"));
    }
    let at = DateTime::parse_from_rfc3339(&text("at")?)
        .map_err(|error| bad(&format!("`at` is not an RFC 3339 time ({error})")))?
        .with_timezone(&Utc);
    let lead_id = match object.get("lead_id") {
        Some(Value::Null) => None,
        Some(Value::String(id)) => {
            Some(LeadId::parse(id).ok_or_else(|| bad("`lead_id` is not a lead id"))?)
        }
        _ => return Err(bad("`lead_id` is neither a lead id nor null")),
    };
    let revision = match object.get("revision") {
        Some(Value::Null) => None,
        Some(number) => Some(
            number
                .as_i64()
                .ok_or_else(|| bad("`revision` is not an integer"))?,
        ),
        None => return Err(bad("`revision` is missing")),
    };
    let entry = LogEntry {
        index: shipped.index,
        at,
        actor: text("actor")?,
        action: text("action")?,
        lead_id,
        revision,
        details: object
            .get("details")
            .cloned()
            .ok_or_else(|| bad("`details` is missing"))?,
    };
    if entry.to_value() != shipped.entry {
        return Err(bad(
            "it is not in the log's entry form (other fields, a non-integer number, or a time not in UTC microseconds)",
        ));
    }
    if hex::encode(entry.leaf_hash()) != shipped.leaf_hash {
        return Err(bad("its leaf hash is not the hash of its canonical bytes"));
    }
    Ok(entry)
}

async fn held_leaf_hash(tx: &mut Tx, tables: LogTables, index: u64) -> Result<String, AuditError> {
    let sql = format!("SELECT leaf_hash FROM {} WHERE idx = $1", tables.entries);
    let hash: String = on_backend!(tx.conn(), conn => sqlx::query_scalar(&sql)
        .bind(index as i64)
        .fetch_one(&mut *conn)
        .await)?;
    Ok(hash)
}

/// Takes shipped entries (consecutive indexes) into the copy in `tables`, in one transaction:
/// all of them or, on any refusal, none.
pub async fn append_shipped(
    store: &Store,
    tables: LogTables,
    shipped: &[ShippedEntry],
) -> Result<Copied, CopyError> {
    let mut tx = store.begin().await.map_err(AuditError::from)?;
    let head = format!(
        "UPDATE {} SET size = size WHERE id = 1 RETURNING size",
        tables.head
    );
    let held: i64 = on_backend!(tx.conn(), conn => sqlx::query_scalar(&head)
        .fetch_one(&mut *conn)
        .await)
    .map_err(AuditError::from)?;
    let held = held as u64;
    let mut copied = Copied::default();
    let mut new = Vec::new();
    for entry in shipped {
        let next = held + new.len() as u64;
        if entry.index < held {
            let stored = held_leaf_hash(&mut tx, tables, entry.index).await?;
            if stored != entry.leaf_hash {
                return Err(CopyError::Conflict {
                    index: entry.index,
                    shipped: entry.leaf_hash.clone(),
                    held: stored,
                });
            }
            copied.duplicates += 1;
        } else if entry.index == next {
            new.push(parse_shipped(entry)?);
        } else {
            return Err(CopyError::Gap {
                index: entry.index,
                held: next,
            });
        }
    }
    if new.is_empty() {
        tx.rollback().await.map_err(AuditError::from)?;
        return Ok(copied);
    }
    log::append_entries(&mut tx, tables, held, &new).await?;
    tx.commit().await.map_err(AuditError::from)?;
    copied.appended = new.len();
    Ok(copied)
}

/// Keeps a shipped checkpoint in the copy in `tables` when `key` signed it under `origin` and
/// its root is the copy's at its size. Returns whether it was new (false: already held).
pub async fn store_shipped_checkpoint(
    store: &Store,
    tables: LogTables,
    note: &str,
    key: &VerifierKey,
    origin: &str,
    now: DateTime<Utc>,
) -> Result<bool, CopyError> {
    let signed = checkpoint::verify(note, key, origin)
        .map_err(|error| CopyError::BadCheckpoint(error.to_string()))?;
    let mut tx = store.begin().await.map_err(AuditError::from)?;
    let head = format!("SELECT size FROM {} WHERE id = 1", tables.head);
    let held: i64 = on_backend!(tx.conn(), conn => sqlx::query_scalar(&head)
        .fetch_one(&mut *conn)
        .await)
    .map_err(AuditError::from)?;
    if signed.size > held as u64 {
        return Err(CopyError::BadCheckpoint(format!(
            "it signs {} entries, the copy holds {held}: entries are missing",
            signed.size
        )));
    }
    let needed = tree::needed_for(|reader| tree::root(signed.size, reader));
    let hashes = log::stored_hashes(&mut tx, tables, &needed).await?;
    let root =
        tree::root(signed.size, &hashes).map_err(|error| AuditError::Tree(error.to_string()))?;
    if root != signed.root {
        return Err(CopyError::BadCheckpoint(format!(
            "its root at size {} is not the copy's root: the log and its copy disagree (a split view)",
            signed.size
        )));
    }
    let insert = format!(
        "INSERT INTO {} (size, root, note, signed_at) VALUES ($1, $2, $3, $4) ON CONFLICT (size) DO NOTHING",
        tables.checkpoints
    );
    let inserted = on_backend!(tx.conn(), conn => sqlx::query(&insert)
        .bind(signed.size as i64)
        .bind(hex::encode(root))
        .bind(note)
        .bind(DbTime::new(now))
        .execute(&mut *conn)
        .await
        .map(|done| done.rows_affected()))
    .map_err(AuditError::from)?;
    tx.commit().await.map_err(AuditError::from)?;
    Ok(inserted == 1)
}
