//! The log's Merkle tree as stored hashes: the hash of every complete subtree, at the
//! positions `tlog_tiles` assigns them (`stored_hash_index`, the layout of Go's sumdb tlog).
//! Appending leaf n stores at most 1 + log₂ n hashes (two on average); a root, an inclusion
//! proof or a consistency proof reads O(log n) of them, whatever the size of the log, which
//! is what lets a database-backed log answer proofs at millions of entries.
//!
//! The hashes a computation reads depend only on the sizes and indexes involved, never on
//! hash values, so a caller whose hashes live in a database first asks which stored hashes a
//! computation needs ([`needed_for`]), fetches exactly those, and then runs it over them.

use std::cell::RefCell;
use std::collections::HashMap;

use tlog_tiles::{
    prove_record, prove_tree, stored_hash_count, stored_hashes_for_record_hash, tree_hash, Hash,
    HashReader,
};

use super::verify::Digest32;

/// Why a tree computation failed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// An index or size outside the log (the caller answers 404 or 400).
    #[error("{0}")]
    OutOfRange(String),
    /// Typically a stored hash the computation needs is missing: the stored tree is
    /// incomplete.
    #[error("tree computation failed: {0}")]
    Tlog(String),
}

/// Stored hashes by their index.
#[derive(Clone, Debug, Default)]
pub struct StoredHashes {
    hashes: HashMap<u64, Digest32>,
}

impl StoredHashes {
    pub fn new() -> StoredHashes {
        StoredHashes::default()
    }

    /// Holds `(index, hash)` pairs read from storage.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (u64, Digest32)>) -> StoredHashes {
        StoredHashes {
            hashes: pairs.into_iter().collect(),
        }
    }

    pub fn insert(&mut self, index: u64, hash: Digest32) {
        self.hashes.insert(index, hash);
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

impl HashReader for StoredHashes {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|index| {
                self.hashes
                    .get(index)
                    .map(|hash| Hash(*hash))
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

/// Records the indexes a computation asks for, answering zero hashes.
struct Recorder(RefCell<Vec<u64>>);

impl HashReader for Recorder {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        self.0.borrow_mut().extend_from_slice(indexes);
        Ok(vec![Hash::default(); indexes.len()])
    }
}

/// The stored-hash indexes `compute` reads, sorted and without duplicates.
pub fn needed_for<T>(compute: impl FnOnce(&dyn HashReader) -> T) -> Vec<u64> {
    let recorder = Recorder(RefCell::new(Vec::new()));
    let _ = compute(&recorder);
    let mut indexes = recorder.0.into_inner();
    indexes.sort_unstable();
    indexes.dedup();
    indexes
}

/// `dyn HashReader` as a `HashReader`, so the generic `tlog_tiles` functions accept it.
struct Dyn<'a>(&'a dyn HashReader);

impl HashReader for Dyn<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        self.0.read_hashes(indexes)
    }
}

fn tlog_error(error: tlog_tiles::Error) -> TreeError {
    TreeError::Tlog(error.to_string())
}

/// The number of stored hashes of a tree of `size` leaves: the next leaf's hashes start
/// there.
pub fn stored_count(size: u64) -> u64 {
    stored_hash_count(size)
}

/// The hashes to store for leaf `index` (its own hash first), at
/// `stored_count(index)` onwards. Reads earlier stored hashes from `hashes`.
pub fn hashes_for_leaf(
    index: u64,
    leaf_hash: Digest32,
    hashes: &dyn HashReader,
) -> Result<Vec<Digest32>, TreeError> {
    stored_hashes_for_record_hash(index, Hash(leaf_hash), &Dyn(hashes))
        .map(|new| new.into_iter().map(|hash| hash.0).collect())
        .map_err(tlog_error)
}

/// Appends leaves after the first `size` to `hashes`, in order; returns the new size.
pub fn append_leaves(
    size: u64,
    leaf_hashes: &[Digest32],
    hashes: &mut StoredHashes,
) -> Result<u64, TreeError> {
    for (index, hash) in append_over(size, leaf_hashes, hashes)? {
        hashes.insert(index, hash);
    }
    Ok(size + leaf_hashes.len() as u64)
}

/// Stored hashes below `start` from `base`, from `start` on from `new`.
struct Overlay<'a> {
    base: &'a dyn HashReader,
    start: u64,
    new: &'a HashMap<u64, Digest32>,
}

impl HashReader for Overlay<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|index| {
                if *index >= self.start {
                    self.new
                        .get(index)
                        .map(|hash| Hash(*hash))
                        .ok_or(tlog_tiles::Error::IndexesNotInTree)
                } else {
                    self.base.read_hashes(&[*index]).map(|hashes| hashes[0])
                }
            })
            .collect()
    }
}

/// The stored hashes that appending `leaf_hashes` after the first `size` leaves adds, by
/// index, reading the earlier ones from `base`.
pub fn append_over(
    size: u64,
    leaf_hashes: &[Digest32],
    base: &dyn HashReader,
) -> Result<Vec<(u64, Digest32)>, TreeError> {
    let start = stored_count(size);
    let mut new: HashMap<u64, Digest32> = HashMap::new();
    let mut added = Vec::new();
    for (offset, leaf) in leaf_hashes.iter().enumerate() {
        let index = size + offset as u64;
        let overlay = Overlay {
            base,
            start,
            new: &new,
        };
        let hashes = hashes_for_leaf(index, *leaf, &overlay)?;
        let first = stored_count(index);
        for (position, hash) in hashes.into_iter().enumerate() {
            new.insert(first + position as u64, hash);
            added.push((first + position as u64, hash));
        }
    }
    Ok(added)
}

/// The root of the first `size` leaves.
pub fn root(size: u64, hashes: &dyn HashReader) -> Result<Digest32, TreeError> {
    tree_hash(size, &Dyn(hashes))
        .map(|hash| hash.0)
        .map_err(tlog_error)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves, leaf to root.
pub fn inclusion_proof(
    index: u64,
    size: u64,
    hashes: &dyn HashReader,
) -> Result<Vec<Digest32>, TreeError> {
    if index >= size {
        return Err(TreeError::OutOfRange(format!(
            "leaf index {index} is not below tree size {size}"
        )));
    }
    prove_record(size, index, &Dyn(hashes))
        .map(|proof| proof.into_iter().map(|hash| hash.0).collect())
        .map_err(tlog_error)
}

/// The consistency proof from the tree of `first` leaves to the tree of `second`.
pub fn consistency_proof(
    first: u64,
    second: u64,
    hashes: &dyn HashReader,
) -> Result<Vec<Digest32>, TreeError> {
    if first > second {
        return Err(TreeError::OutOfRange(format!(
            "the first tree size {first} is larger than the second {second}"
        )));
    }
    if first == 0 || first == second {
        return Ok(Vec::new());
    }
    prove_tree(second, first, &Dyn(hashes))
        .map(|proof| proof.into_iter().map(|hash| hash.0).collect())
        .map_err(tlog_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::tlog::verify::{
        reference_consistency, reference_inclusion, root_of, verify_consistency, verify_inclusion,
    };

    fn leaves(n: usize) -> Vec<Digest32> {
        (0..n)
            .map(|i| crate::shared::tlog::entry::leaf_hash(format!("entry {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn the_stored_tree_agrees_with_the_rfc_definitions_and_the_independent_verifier() {
        let all = leaves(70);
        let mut hashes = StoredHashes::new();
        let mut size = 0;
        for n in 1..=all.len() {
            size = append_leaves(size, &all[n - 1..n], &mut hashes).unwrap();
            assert_eq!(size, n as u64);
            assert_eq!(
                hashes.len() as u64,
                stored_count(size),
                "two hashes a leaf on average"
            );
            let tree = &all[..n];
            let expected = root_of(tree);
            assert_eq!(root(size, &hashes).unwrap(), expected, "root of {n}");
            for index in 0..n {
                let proof = inclusion_proof(index as u64, size, &hashes).unwrap();
                assert_eq!(
                    proof,
                    reference_inclusion(index, tree),
                    "inclusion {index} of {n}"
                );
                verify_inclusion(index as u64, size, &tree[index], &proof, &expected).unwrap();
            }
            for m in 0..=n {
                let proof = consistency_proof(m as u64, size, &hashes).unwrap();
                assert_eq!(
                    proof,
                    reference_consistency(m, tree),
                    "consistency {m} → {n}"
                );
                verify_consistency(m as u64, size, &root_of(&tree[..m]), &expected, &proof)
                    .unwrap();
            }
        }
    }

    #[test]
    fn appending_a_batch_over_stored_hashes_adds_what_one_by_one_would() {
        let all = leaves(300);
        // One leaf per call, checked against the RFC's root, as the reference.
        let mut one_by_one = StoredHashes::new();
        for (index, leaf) in all.iter().enumerate() {
            append_leaves(index as u64, std::slice::from_ref(leaf), &mut one_by_one).unwrap();
        }
        assert_eq!(
            root(300, &one_by_one).unwrap(),
            crate::shared::tlog::verify::root_of(&all)
        );
        for split in [0usize, 1, 7, 128, 255, 299] {
            let mut earlier = StoredHashes::new();
            append_leaves(0, &all[..split], &mut earlier).unwrap();
            let needed = needed_for(|reader| append_over(split as u64, &all[split..], reader));
            assert!(needed
                .iter()
                .all(|index| *index < stored_count(split as u64)));
            let only = StoredHashes::from_pairs(
                needed
                    .iter()
                    .map(|i| (*i, earlier.read_hashes(&[*i]).unwrap()[0].0)),
            );
            let added = append_over(split as u64, &all[split..], &only).unwrap();
            assert_eq!(
                added.len() as u64,
                stored_count(300) - stored_count(split as u64)
            );
            for (index, hash) in added {
                assert_eq!(
                    one_by_one.read_hashes(&[index]).unwrap()[0].0,
                    hash,
                    "{split}: {index}"
                );
            }
        }
    }

    #[test]
    fn a_computation_reads_only_the_hashes_it_said_it_needs_and_few_of_them() {
        let all = leaves(1000);
        let mut hashes = StoredHashes::new();
        append_leaves(0, &all, &mut hashes).unwrap();
        for (index, size) in [(0u64, 1000u64), (999, 1000), (511, 777), (3, 4)] {
            let needed = needed_for(|reader| inclusion_proof(index, size, reader));
            assert!(needed.len() <= 2 * 10 + 2, "{index}/{size}: {needed:?}");
            let only = StoredHashes::from_pairs(needed.iter().map(|i| {
                let hash = hashes.read_hashes(&[*i]).unwrap()[0].0;
                (*i, hash)
            }));
            assert_eq!(
                inclusion_proof(index, size, &only).unwrap(),
                inclusion_proof(index, size, &hashes).unwrap()
            );
        }
        let needed = needed_for(|reader| consistency_proof(300, 1000, reader));
        let only = StoredHashes::from_pairs(
            needed
                .iter()
                .map(|i| (*i, hashes.read_hashes(&[*i]).unwrap()[0].0)),
        );
        assert_eq!(
            consistency_proof(300, 1000, &only).unwrap(),
            consistency_proof(300, 1000, &hashes).unwrap()
        );
        // A hash the stored tree lacks is an error, not a wrong proof.
        let partial = StoredHashes::from_pairs(
            needed
                .iter()
                .skip(1)
                .map(|i| (*i, hashes.read_hashes(&[*i]).unwrap()[0].0)),
        );
        assert!(consistency_proof(300, 1000, &partial).is_err());
        assert!(matches!(
            inclusion_proof(1000, 1000, &hashes),
            Err(TreeError::OutOfRange(_))
        ));
        assert!(matches!(
            consistency_proof(1001, 1000, &hashes),
            Err(TreeError::OutOfRange(_))
        ));
    }
}
