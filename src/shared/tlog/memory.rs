//! A transparency log held in memory: the reference the stores are tested against, and what
//! tests and benchmarks build bundles from. Same entries, tree and checkpoints as a stored
//! log, without a database.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::checkpoint::{Checkpoint, LogKey};
use super::entry::LogEntry;
use super::evidence::{Bundle, BundleEntry, InclusionProof};
use super::tree::{self, StoredHashes, TreeError};
use crate::contract::lead::LeadId;

/// One log: its name (`hub` or `police`), origin, key, entries and stored hashes.
#[derive(Debug)]
pub struct MemoryLog {
    pub log: String,
    pub origin: String,
    pub key: LogKey,
    pub entries: Vec<LogEntry>,
    hashes: StoredHashes,
}

impl MemoryLog {
    /// An empty log of `deployment` named `log`, with a new key.
    pub fn new(deployment: &str, log: &str) -> MemoryLog {
        MemoryLog {
            log: log.to_owned(),
            origin: super::origin(deployment, log),
            key: LogKey::generate(&format!("leadbridge-{deployment}-{log}")),
            entries: Vec::new(),
            hashes: StoredHashes::new(),
        }
    }

    pub fn size(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Appends an entry at the next index.
    pub fn append(
        &mut self,
        at: DateTime<Utc>,
        actor: &str,
        action: &str,
        lead_id: Option<LeadId>,
        revision: Option<i64>,
        details: Value,
    ) -> Result<u64, TreeError> {
        let entry = LogEntry {
            index: self.size(),
            at,
            actor: actor.to_owned(),
            action: action.to_owned(),
            lead_id,
            revision,
            details,
        };
        tree::append_leaves(self.size(), &[entry.leaf_hash()], &mut self.hashes)?;
        self.entries.push(entry);
        Ok(self.size() - 1)
    }

    pub fn checkpoint(&self) -> Result<Checkpoint, TreeError> {
        Ok(Checkpoint {
            origin: self.origin.clone(),
            size: self.size(),
            root: tree::root(self.size(), &self.hashes)?,
        })
    }

    /// The signed checkpoint of the log as it is now.
    pub fn signed_checkpoint(&self) -> Result<String, TreeError> {
        Ok(self.key.sign(&self.checkpoint()?))
    }

    pub fn inclusion_proof(&self, index: u64) -> Result<Vec<[u8; 32]>, TreeError> {
        tree::inclusion_proof(index, self.size(), &self.hashes)
    }

    pub fn consistency_proof(&self, first: u64) -> Result<Vec<[u8; 32]>, TreeError> {
        tree::consistency_proof(first, self.size(), &self.hashes)
    }

    /// The log's entries about `lead`, each with its proof against the current checkpoint.
    pub fn evidence_for(&self, lead: LeadId) -> Result<Vec<BundleEntry>, TreeError> {
        self.entries
            .iter()
            .filter(|entry| entry.lead_id == Some(lead))
            .map(|entry| {
                Ok(BundleEntry {
                    log: self.log.clone(),
                    entry: entry.to_value(),
                    leaf_hash: hex::encode(entry.leaf_hash()),
                    proof: InclusionProof {
                        leaf_index: entry.index,
                        tree_size: self.size(),
                        path: self
                            .inclusion_proof(entry.index)?
                            .iter()
                            .map(hex::encode)
                            .collect(),
                    },
                })
            })
            .collect()
    }
}

/// The evidence bundle of `lead` across `logs`, entries in time order.
pub fn bundle(lead: LeadId, logs: &[&MemoryLog]) -> Result<Bundle, TreeError> {
    let mut entries = Vec::new();
    let mut checkpoints = std::collections::BTreeMap::new();
    for log in logs {
        entries.extend(log.evidence_for(lead)?);
        checkpoints.insert(log.log.clone(), log.signed_checkpoint()?);
    }
    super::evidence::sort_in_time_order(&mut entries);
    Ok(Bundle {
        lead_id: lead.to_string(),
        entries,
        checkpoints,
    })
}
