//! The audit trail: every handoff, recorded as an entry of the role's transparency log
//! ([`log`]), the RFC 9162 tree whose signed checkpoints supervisors check.
//!
//! Promise: entries are appended inside the same database transaction as the state change
//! they record — queued there, sequenced into the tree in batches afterwards — so a committed
//! change always has its entries and a rolled-back one never does, and appending never makes
//! writers wait for one another. [`LedgerAppender::lock`] is the one serialisation left, for
//! the transactions that must also serialise their reads (decisions on one lead): they take
//! the `audit_head` row, which nothing else takes.

pub mod copy;
pub mod log;
pub mod witness;

use crate::contract::lead::LeadId;
use crate::on_backend;
use crate::shared::store::{Store, StoreError, Tx};
use chrono::{DateTime, Utc};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
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

/// Appends entries within one transaction: they are buffered and queued for the log, in
/// order, by [`LedgerAppender::finish`], which must run before commit.
#[derive(Debug, Default)]
pub struct LedgerAppender {
    pending: Vec<AuditEntry>,
}

impl LedgerAppender {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serialises this transaction with the others that call `lock`: until it ends, they wait
    /// here. Appending needs no lock; this is for transactions whose reads must not interleave.
    pub async fn lock(&mut self, tx: &mut Tx) -> Result<(), AuditError> {
        // A no-op write takes the row lock (PostgreSQL) or the write lock (SQLite).
        on_backend!(tx.conn(), conn => sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1")
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Buffers an entry; it is written, in order, by [`Self::finish`].
    pub fn append(&mut self, entry: AuditEntry) {
        self.pending.push(entry);
    }

    /// Queues the buffered entries for the log in the caller's transaction. Returns how many
    /// statements that took, for callers that account for their statements.
    pub async fn finish(self, tx: &mut Tx) -> Result<u64, AuditError> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        log::queue(tx, &self.pending).await
    }
}

/// Records one entry that goes with no other change (an access, a refusal), in a transaction
/// of its own.
pub async fn record(store: &Store, entry: AuditEntry) -> Result<(), AuditError> {
    record_all(store, vec![entry]).await
}

/// Records entries that go with no other change, in one transaction of their own.
pub async fn record_all(store: &Store, entries: Vec<AuditEntry>) -> Result<(), AuditError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut tx = store.begin().await?;
    let mut ledger = LedgerAppender::new();
    for entry in entries {
        ledger.append(entry);
    }
    ledger.finish(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Moves everything queued into the log and recomputes it from its stored entries (tree
/// hashes, head, checkpoint roots; not the checkpoints' signatures, which
/// [`log::verify`] checks against the role's key).
pub async fn verify(store: &Store) -> Result<log::VerifiedLog, AuditError> {
    log::sequence_all(store).await?;
    log::verify_tree(store, log::LogTables::OWN, None).await
}
