//! Witness cosignatures of a log's checkpoints (supervision contract §2): a supervisor who
//! checked that a checkpoint extends the last one they cosigned adds their own signature, and
//! the hub serves the checkpoint with every cosignature it has, so a split view — two
//! checkpoints of one size with different roots — cannot be shown to two witnesses unseen.
//!
//! What it promises: a cosignature is kept only when it is a configured witness's valid
//! signature over the body of a checkpoint this log holds (signed by the log's own key), and
//! that checkpoint is consistent with the witness's previous cosigned one — larger and proven
//! an extension of it by an RFC 9162 consistency proof, or the very same. A witness never
//! cosigns backwards. Cosignatures are append-only (hub migration 0102).

use chrono::{DateTime, Utc};

use super::log::{self, LogTables};
use super::AuditError;
use crate::on_backend;
use crate::shared::store::{DbTime, Store};
use crate::shared::tlog::checkpoint::{self, Checkpoint, SignedNote, VerifierKey};
use crate::shared::tlog::verify::verify_consistency;

/// Why a cosignature was not kept.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The text is not a signed checkpoint of this log.
    #[error("not a checkpoint of this log: {0}")]
    Malformed(String),
    /// No configured witness signed it.
    #[error("no configured witness key signed this checkpoint (the witnesses are {0})")]
    NotAWitness(String),
    /// The log holds no such checkpoint, or the witness's previous one is not extended by it.
    #[error("{0}")]
    Inconsistent(String),
}

/// What a cosignature did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosigned {
    pub witness: String,
    pub size: u64,
    /// False when the witness had cosigned this checkpoint already.
    pub new: bool,
}

/// A log as a witness reaches it: its name, its tables, its key and origin.
pub struct WitnessedLog<'a> {
    pub name: &'a str,
    pub tables: LogTables,
    pub key: &'a VerifierKey,
    pub origin: &'a str,
}

/// The size of the witness's latest cosigned checkpoint of `log`.
async fn previous(store: &Store, log: &str, witness: &str) -> Result<Option<u64>, AuditError> {
    let size: Option<i64> = on_backend!(store.db(), pool => sqlx::query_scalar(
        "SELECT MAX(size) FROM log_cosignatures WHERE log = $1 AND witness = $2",
    )
    .bind(log)
    .bind(witness)
    .fetch_one(pool)
    .await)?;
    Ok(size.map(|size| size as u64))
}

/// Checks and keeps a witness's cosignature of one of `log`'s checkpoints. `text` is the
/// checkpoint with the witness's signature line among its signatures.
pub async fn cosign(
    store: &Store,
    log: &WitnessedLog<'_>,
    witnesses: &[VerifierKey],
    text: &str,
    now: DateTime<Utc>,
) -> Result<Cosigned, WitnessError> {
    let note =
        SignedNote::parse(text).map_err(|error| WitnessError::Malformed(error.to_string()))?;
    let checkpoint = checkpoint::verify(text, log.key, log.origin)
        .map_err(|error| WitnessError::Malformed(error.to_string()))?;
    let (witness, line) = witnesses
        .iter()
        .find_map(|key| note.signature_line_of(key).map(|line| (key, line)))
        .ok_or_else(|| {
            WitnessError::NotAWitness(
                witnesses
                    .iter()
                    .map(|key| key.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })?;
    let Some((_, held_note)) = log::checkpoints_at(store, log.tables, checkpoint.size).await?
    else {
        return Err(WitnessError::Inconsistent(format!(
            "the {} log has no checkpoint of size {}",
            log.name, checkpoint.size
        )));
    };
    let held_body = SignedNote::parse(&held_note)
        .map_err(|error| AuditError::Tree(error.to_string()))?
        .body;
    if held_body != note.body {
        // Signed by the log's key, yet not the log's checkpoint of that size: a split view.
        return Err(WitnessError::Inconsistent(format!(
            "the {} log's checkpoint of size {} has another root: this is not its checkpoint",
            log.name, checkpoint.size
        )));
    }
    if let Some(earlier) = previous(store, log.name, &witness.name).await? {
        if checkpoint.size < earlier {
            return Err(WitnessError::Inconsistent(format!(
                "{} already cosigned the checkpoint of size {earlier}; a witness never cosigns an earlier tree (size {})",
                witness.name, checkpoint.size
            )));
        }
        if checkpoint.size > earlier {
            let (_, earlier_note) = log::checkpoints_at(store, log.tables, earlier)
                .await?
                .ok_or_else(|| {
                    AuditError::Tree(format!(
                        "the cosigned checkpoint of size {earlier} is not among the log's"
                    ))
                })?;
            let earlier_checkpoint = SignedNote::parse(&earlier_note)
                .and_then(|note| Checkpoint::parse_body(&note.body))
                .map_err(|error| AuditError::Tree(error.to_string()))?;
            let proof = log::consistency_proof(store, log.tables, earlier, checkpoint.size).await?;
            verify_consistency(
                earlier,
                checkpoint.size,
                &earlier_checkpoint.root,
                &checkpoint.root,
                &proof,
            )
            .map_err(|error| {
                WitnessError::Inconsistent(format!(
                    "the checkpoint of size {} does not extend {}'s previous one of size {earlier}: {error}",
                    checkpoint.size, witness.name
                ))
            })?;
        }
    }
    let inserted = on_backend!(store.db(), pool => sqlx::query(
        "INSERT INTO log_cosignatures (log, witness, size, signature_line, cosigned_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (log, witness, size) DO NOTHING",
    )
    .bind(log.name)
    .bind(&witness.name)
    .bind(checkpoint.size as i64)
    .bind(&line)
    .bind(DbTime::new(now))
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))
    .map_err(AuditError::from)?;
    Ok(Cosigned {
        witness: witness.name.clone(),
        size: checkpoint.size,
        new: inserted == 1,
    })
}

/// `note` (a checkpoint of `log` of `size`) with every cosignature it has appended.
pub async fn with_cosignatures(
    store: &Store,
    log: &str,
    size: u64,
    note: String,
) -> Result<String, AuditError> {
    let lines: Vec<String> = on_backend!(store.db(), pool => sqlx::query_scalar(
        "SELECT signature_line FROM log_cosignatures WHERE log = $1 AND size = $2 ORDER BY witness",
    )
    .bind(log)
    .bind(size as i64)
    .fetch_all(pool)
    .await)?;
    Ok(lines.into_iter().fold(note, |mut text, line| {
        text.push_str(&line);
        text
    }))
}
