//! Transparency-log primitives (supervision contract §2–§4): entries and their canonical
//! bytes, the RFC 9162 Merkle tree kept as stored subtree hashes, inclusion and consistency
//! proofs, and C2SP checkpoints signed with Ed25519.
//!
//! Promise: the tree, its proofs and its checkpoints follow RFC 9162 and C2SP exactly, so a
//! supervisor's own tools can check them; the tree is computed with `tlog_tiles`, and every
//! proof it produces is checked in tests against [`verify`], an independent implementation of
//! the RFC's verification algorithms that shares no code with it. Nothing here touches a
//! database: the stores keep entries and stored hashes and call these functions.

pub mod checkpoint;
pub mod entry;
pub mod evidence;
pub mod memory;
pub mod tree;
pub mod verify;
pub mod witness;

pub use checkpoint::{Checkpoint, CheckpointError, LogKey, SignedNote, VerifierKey};
pub use entry::LogEntry;
pub use tree::{StoredHashes, TreeError};
pub use verify::{verify_consistency, verify_inclusion, Digest32, ProofError};

/// The origin line of a log's checkpoints: `leadbridge/<deployment>/<log>`.
pub fn origin(deployment: &str, log: &str) -> String {
    format!("leadbridge/{deployment}/{log}")
}
