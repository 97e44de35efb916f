//! A witness's side of cosigning (supervision contract §2), as `leadbridge audit witness` runs
//! it for a procuratorate: it keeps the last checkpoint it cosigned, and cosigns a new one only
//! after checking that the log's key signed it under the log's origin and that it extends the
//! kept one — the same tree, or a larger one proven consistent with it. Nothing here touches
//! the network: the command fetches, these functions decide.

use super::checkpoint::{self, Checkpoint, CheckpointError, LogKey, SignedNote, VerifierKey};
use super::verify::{verify_consistency, Digest32};

/// Why a witness refuses to cosign.
#[derive(Debug, thiserror::Error)]
pub enum WitnessCheckError {
    #[error("the checkpoint does not verify: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The log shows a smaller tree than the witness already cosigned.
    #[error("the log shows a tree of {shown} entries after the witness cosigned one of {kept}: a rollback")]
    Rollback { kept: u64, shown: u64 },
    /// Two checkpoints of one size with different roots.
    #[error(
        "the log shows another root for the {size} entries the witness cosigned: a split view"
    )]
    SplitView { size: u64 },
    #[error("the new checkpoint does not extend the cosigned one: {0}")]
    Inconsistent(String),
}

/// A checkpoint as the log signed it: its fields, and its note with the log's signature only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub checkpoint: Checkpoint,
    pub note: String,
}

/// Reads a served checkpoint (cosignatures may follow the log's signature) and keeps only
/// what the log's `key` signed under `origin`.
pub fn observe(text: &str, key: &VerifierKey, origin: &str) -> Result<Observed, WitnessCheckError> {
    let checkpoint = checkpoint::verify(text, key, origin)?;
    let note = SignedNote::parse(text)?;
    let line = note
        .signature_line_of(key)
        .expect("verify found the log's signature");
    Ok(Observed {
        checkpoint,
        note: format!("{}\n{line}", note.body),
    })
}

/// What the witness needs before cosigning `new`, given the checkpoint it kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needed {
    /// The witness cosigned nothing of this log before.
    Nothing,
    /// The very checkpoint it kept.
    Same,
    /// A consistency proof from the kept size to the new one.
    Consistency { first: u64, second: u64 },
}

/// Compares a new checkpoint with the kept one.
pub fn needed(kept: Option<&Checkpoint>, new: &Checkpoint) -> Result<Needed, WitnessCheckError> {
    let Some(kept) = kept else {
        return Ok(Needed::Nothing);
    };
    if new.size < kept.size {
        return Err(WitnessCheckError::Rollback {
            kept: kept.size,
            shown: new.size,
        });
    }
    if new.size == kept.size {
        if new.root != kept.root {
            return Err(WitnessCheckError::SplitView { size: new.size });
        }
        return Ok(Needed::Same);
    }
    Ok(Needed::Consistency {
        first: kept.size,
        second: new.size,
    })
}

/// Checks the consistency proof the log served from `kept` to `new`.
pub fn check_consistency(
    kept: &Checkpoint,
    new: &Checkpoint,
    path: &[Digest32],
) -> Result<(), WitnessCheckError> {
    verify_consistency(kept.size, new.size, &kept.root, &new.root, path)
        .map_err(|error| WitnessCheckError::Inconsistent(error.to_string()))
}

/// The cosigned text to post: the log's note with the witness's signature line added.
pub fn cosigned(observed: &Observed, witness: &LogKey) -> String {
    format!(
        "{}{}",
        observed.note,
        witness.signature_line(&observed.checkpoint.body())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::tlog::memory::MemoryLog;

    fn log_of(size: u64) -> MemoryLog {
        let mut log = MemoryLog::new("zibo", "hub");
        for index in 0..size {
            log.append(
                chrono::Utc::now(),
                "relay",
                "lead.published",
                None,
                None,
                serde_json::json!({ "offset": index }),
            )
            .unwrap();
        }
        log
    }

    #[test]
    fn a_witness_cosigns_only_an_extension_of_what_it_kept() {
        let log = log_of(5);
        let key = VerifierKey::parse(&log.key.verifier_key()).unwrap();
        let origin = "leadbridge/zibo/hub";
        let first = observe(&log.signed_checkpoint().unwrap(), &key, origin).unwrap();
        assert_eq!(needed(None, &first.checkpoint).unwrap(), Needed::Nothing);
        assert_eq!(
            needed(Some(&first.checkpoint), &first.checkpoint).unwrap(),
            Needed::Same
        );

        let mut grown = log;
        grown
            .append(
                chrono::Utc::now(),
                "relay",
                "lead.published",
                None,
                None,
                serde_json::json!({}),
            )
            .unwrap();
        let second = observe(&grown.signed_checkpoint().unwrap(), &key, origin).unwrap();
        let step = needed(Some(&first.checkpoint), &second.checkpoint).unwrap();
        assert_eq!(
            step,
            Needed::Consistency {
                first: 5,
                second: 6
            }
        );
        let proof = grown.consistency_proof(5).unwrap();
        check_consistency(&first.checkpoint, &second.checkpoint, &proof).unwrap();
        assert!(matches!(
            needed(Some(&second.checkpoint), &first.checkpoint),
            Err(WitnessCheckError::Rollback { kept: 6, shown: 5 })
        ));

        // Another log of the same size signed by the same key: a split view.
        let fork = log_of(5);
        let forked = grown.key.sign(&fork.checkpoint().unwrap());
        let forked = observe(&forked, &key, origin).unwrap();
        assert!(matches!(
            needed(Some(&first.checkpoint), &forked.checkpoint),
            Err(WitnessCheckError::SplitView { size: 5 })
        ));
        // A proof of another tree does not pass.
        let mut wrong = proof.clone();
        wrong[0][0] ^= 1;
        assert!(check_consistency(&first.checkpoint, &second.checkpoint, &wrong).is_err());

        // The cosigned text verifies under both keys, over one body.
        let witness = LogKey::generate("procuratorate-witness");
        let text = cosigned(&second, &witness);
        let note = SignedNote::parse(&text).unwrap();
        assert!(note.signed_by(&key));
        assert!(note.signed_by(&VerifierKey::parse(&witness.verifier_key()).unwrap()));
        assert_eq!(note.signatures.len(), 2);
        // A checkpoint under another origin or by another key is not observed.
        assert!(observe(&text, &key, "leadbridge/zibo/police").is_err());
        let other =
            VerifierKey::parse(&LogKey::generate("leadbridge-zibo-hub").verifier_key()).unwrap();
        assert!(observe(&text, &other, origin).is_err());
    }
}
