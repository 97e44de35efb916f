//! The audit ledger: an append-only, hash-chained record of every handoff.
//!
//! Promise: entries are appended inside the same database transaction as the state change
//! they record, so a committed change always has its entry and a rolled-back one never does.
//! Each entry's hash covers its sequence number, content and the previous entry's hash, so
//! [`verify`] detects any edited, removed, inserted or reordered entry. The database refuses
//! updates and deletes of entries (triggers), and appenders serialise on the single
//! `audit_head` row, so sequence numbers follow commit order without gaps.
//!
//! Every entry is also queued, in the same transaction, for the role's transparency log
//! ([`log`]): the RFC 9162 tree with signed checkpoints that supervisors check. The chain
//! stays while the readers of `audit_entries` move to the log; it is the older of the two.
//!
//! Limits: a hash chain alone cannot show that the newest entries were not truncated together
//! with the head row by someone who controls the database; the log's signed checkpoints close
//! that gap.

pub mod log;

use crate::contract::lead::{canonical_json, LeadId};
use crate::on_backend;
use crate::shared::store::{column, DbTime, DbUuid, Store, StoreError, Tx};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The hash that precedes the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ledger does not verify: the first broken entry and why.
    #[error("audit ledger broken at entry {seq}: {reason}")]
    Broken { seq: i64, reason: String },
    /// The transparency log does not verify: its first bad entry and why.
    #[error("transparency log broken at entry {index}: {reason}")]
    Log { index: u64, reason: String },
    /// A stored checkpoint does not match the log or its key.
    #[error("transparency log checkpoint at size {size} does not verify: {reason}")]
    Checkpoint { size: u64, reason: String },
    #[error("transparency log tree: {0}")]
    Tree(String),
}

impl AuditError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, AuditError::Store(error) if error.is_retryable())
    }
}

impl From<sqlx::Error> for AuditError {
    fn from(error: sqlx::Error) -> Self {
        AuditError::Store(error.into())
    }
}

/// What happened, by whom, about which lead.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// `agency:environment`, `relay`, `police-adapter`, …
    pub actor: String,
    /// `lead.received`, `lead.published`, …
    pub action: &'static str,
    pub lead_id: Option<LeadId>,
    pub revision: Option<i64>,
    pub details: Value,
}

/// Appends entries within one transaction. Entries are buffered and chained at
/// [`LedgerAppender::finish`], which must run before commit: it takes the ledger head, so the
/// head is held only for the few statements that write the entries, not for the whole
/// transaction. [`LedgerAppender::lock`] takes the head early where a transaction must also
/// serialise its reads (decisions on one lead).
#[derive(Debug, Default)]
pub struct LedgerAppender {
    head: Option<(i64, String)>,
    pending: Vec<AuditEntry>,
}

/// Rows per INSERT statement: 9 parameters each, under both databases' limit, so a batch of
/// 500 leads takes one statement.
const ENTRIES_PER_STATEMENT: usize = crate::shared::store::MAX_BIND_PARAMS / 9;

impl LedgerAppender {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the ledger head now: until the transaction ends, other writers wait at their own
    /// `finish` or `lock`.
    pub async fn lock(&mut self, tx: &mut Tx) -> Result<(), AuditError> {
        if self.head.is_none() {
            // A no-op write takes the row lock (PostgreSQL) or the write lock (SQLite)
            // before the head is read, so no other appender can read the same head.
            let head: (i64, String) = on_backend!(tx.conn(), conn => sqlx::query_as(
                "UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, head_hash",
            )
            .fetch_one(&mut *conn)
            .await)?;
            self.head = Some(head);
        }
        Ok(())
    }

    /// Buffers an entry; it is written, in order, by [`Self::finish`].
    pub fn append(&mut self, entry: AuditEntry) {
        self.pending.push(entry);
    }

    /// Chains and writes the buffered entries and moves the ledger head to the last one.
    /// Returns how many statements that took, for callers that account for their statements.
    pub async fn finish(mut self, tx: &mut Tx) -> Result<u64, AuditError> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        // The transparency log's copy, queued in the same transaction (`log`).
        let mut statements = log::queue(tx, &self.pending).await?;
        if self.head.is_none() {
            statements += 1;
        }
        self.lock(tx).await?;
        let (mut seq, mut prev_hash) = self.head.take().expect("lock() sets the head");
        let mut rows = Vec::with_capacity(self.pending.len());
        for entry in self.pending {
            seq += 1;
            let at = DbTime::new(entry.at);
            let lead_id = entry.lead_id;
            let details =
                String::from_utf8(canonical_json(&entry.details)).expect("canonical JSON is UTF-8");
            let hash = entry_hash(
                seq,
                at,
                &entry.actor,
                entry.action,
                lead_id,
                entry.revision,
                &details,
                &prev_hash,
            );
            rows.push((
                seq,
                at,
                entry.actor,
                entry.action,
                lead_id,
                entry.revision,
                details,
                prev_hash,
                hash.clone(),
            ));
            prev_hash = hash;
        }
        for chunk in rows.chunks(ENTRIES_PER_STATEMENT) {
            let placeholders: Vec<String> = (0..chunk.len())
                .map(|row| {
                    let base = row * 9;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        base + 1,
                        base + 2,
                        base + 3,
                        base + 4,
                        base + 5,
                        base + 6,
                        base + 7,
                        base + 8,
                        base + 9
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO audit_entries (seq, at, actor, action, lead_id, revision, details, prev_hash, entry_hash) VALUES {}",
                placeholders.join(", ")
            );
            on_backend!(tx.conn(), conn => {
                let mut query = sqlx::query(&sql);
                for (seq, at, actor, action, lead_id, revision, details, prev, hash) in chunk {
                    query = query
                        .bind(*seq)
                        .bind(*at)
                        .bind(actor)
                        .bind(*action)
                        .bind(lead_id.map(DbUuid::from))
                        .bind(*revision)
                        .bind(details)
                        .bind(prev)
                        .bind(hash);
                }
                query.execute(&mut *conn).await.map(|done| done.rows_affected())
            })?;
            statements += 1;
        }
        on_backend!(tx.conn(), conn => sqlx::query("UPDATE audit_head SET seq = $1, head_hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(&prev_hash)
            .execute(&mut *conn)
            .await.map(|done| done.rows_affected()))?;
        Ok(statements + 1)
    }
}

#[allow(clippy::too_many_arguments)]
fn entry_hash(
    seq: i64,
    at: DbTime,
    actor: &str,
    action: &str,
    lead_id: Option<LeadId>,
    revision: Option<i64>,
    details: &str,
    prev_hash: &str,
) -> String {
    // The hashed forms: the time as stored text, the id hyphenated in lowercase.
    let covered = json!({
        "seq": seq,
        "at": at.text(),
        "actor": actor,
        "action": action,
        "lead_id": lead_id.map(|id| id.to_string()),
        "revision": revision,
        "details": details,
        "prev_hash": prev_hash,
    });
    hex::encode(Sha256::digest(canonical_json(&covered)))
}

/// The result of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLedger {
    pub entries: i64,
    pub head_hash: String,
}

/// A ledger entry as stored.
struct StoredEntry {
    seq: i64,
    at: DbTime,
    actor: String,
    action: String,
    lead_id: Option<LeadId>,
    revision: Option<i64>,
    details: String,
    prev_hash: String,
    entry_hash: String,
}

/// Recomputes the whole chain and compares it with the stored head.
pub async fn verify(store: &Store) -> Result<VerifiedLedger, AuditError> {
    let (rows, head): (Vec<StoredEntry>, (i64, String)) = on_backend!(store.db(), pool => {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, lead_id, revision, details, prev_hash, entry_hash \
             FROM audit_entries ORDER BY seq",
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::from)?
        .iter()
        .map(|row| -> Result<StoredEntry, StoreError> {
            let seq: i64 = column(row, "seq", &"audit entry")?;
            let which = format!("audit entry {seq}");
            Ok(StoredEntry {
                seq,
                at: column(row, "at", &which)?,
                actor: column(row, "actor", &which)?,
                action: column(row, "action", &which)?,
                lead_id: column::<_, Option<DbUuid>>(row, "lead_id", &which)?.map(LeadId::from),
                revision: column(row, "revision", &which)?,
                details: column(row, "details", &which)?,
                prev_hash: column(row, "prev_hash", &which)?,
                entry_hash: column(row, "entry_hash", &which)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        let head = sqlx::query_as("SELECT seq, head_hash FROM audit_head WHERE id = 1")
            .fetch_one(pool)
            .await
            .map_err(StoreError::from)?;
        Ok::<_, StoreError>((rows, head))
    })?;
    let mut expected_prev = GENESIS_HASH.to_owned();
    let mut expected_seq = 1;
    for row in &rows {
        let seq = row.seq;
        let broken = |reason: String| AuditError::Broken { seq, reason };
        if seq != expected_seq {
            return Err(broken(format!(
                "expected entry {expected_seq}: entries are missing or reordered"
            )));
        }
        if row.prev_hash != expected_prev {
            return Err(broken("prev_hash does not match the previous entry".into()));
        }
        let recomputed = entry_hash(
            seq,
            row.at,
            &row.actor,
            &row.action,
            row.lead_id,
            row.revision,
            &row.details,
            &row.prev_hash,
        );
        if recomputed != row.entry_hash {
            return Err(broken("the entry's content does not match its hash".into()));
        }
        expected_prev = row.entry_hash.clone();
        expected_seq += 1;
    }
    let (head_seq, head_hash) = head;
    if head_seq != expected_seq - 1 || head_hash != expected_prev {
        return Err(AuditError::Broken {
            seq: head_seq,
            reason: format!(
                "the ledger head names entry {head_seq}, but the chain ends at entry {}",
                expected_seq - 1
            ),
        });
    }
    Ok(VerifiedLedger {
        entries: expected_seq - 1,
        head_hash,
    })
}
