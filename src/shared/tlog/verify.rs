//! An independent verifier of RFC 9162 proofs, written from the RFC's algorithms (§2.1.3.2
//! inclusion, §2.1.4.2 consistency) and sharing no code with the tree the log keeps
//! (`tlog_tiles`), so each checks the other. It is what `audit verify-evidence` runs, with
//! nothing but the bundle and the public keys.
//!
//! Promise: a proof verifies only if it is exactly the RFC's proof for its index and sizes:
//! a path too long or too short, siblings swapped, a proof for another tree size or another
//! leaf all fail. No input panics.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Digest32 = [u8; 32];

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("the first tree size {first} is larger than the second {second}")]
    SizesOutOfOrder { first: u64, second: u64 },
    #[error("the proof has the wrong number of hashes")]
    WrongLength,
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
}

/// SHA-256(0x01 ‖ left ‖ right).
pub fn node(left: &Digest32, right: &Digest32) -> Digest32 {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Digest32 {
    Sha256::digest([]).into()
}

/// MTH(D[n]) over leaf hashes, by the RFC's definition (the reference for tests and for
/// recomputing a whole log).
pub fn root_of(leaves: &[Digest32]) -> Digest32 {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let split = largest_power_of_two_below(n as u64) as usize;
            node(&root_of(&leaves[..split]), &root_of(&leaves[split..]))
        }
    }
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn largest_power_of_two_below(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// RFC 9162 §2.1.3.2: whether `path` proves `leaf_hash` at `index` in the tree of `size`
/// leaves whose root is `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &Digest32,
    path: &[Digest32],
    root: &Digest32,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in path {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: whether `path` proves that the tree of `first` leaves with root
/// `first_root` is a prefix of the tree of `second` leaves with root `second_root`.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Digest32,
    second_root: &Digest32,
    path: &[Digest32],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    if first == second {
        if !path.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if first_root == second_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if first == 0 {
        // Every tree extends the empty one; there is nothing to prove.
        return if path.is_empty() && first_root == &empty_root() {
            Ok(())
        } else if !path.is_empty() {
            Err(ProofError::WrongLength)
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    let mut hashes: Vec<Digest32> = Vec::with_capacity(path.len() + 1);
    if first.is_power_of_two() {
        hashes.push(*first_root);
    }
    hashes.extend_from_slice(path);
    let Some((start, rest)) = hashes.split_first() else {
        return Err(ProofError::WrongLength);
    };
    let (mut fn_, mut sn) = (first - 1, second - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*start, *start);
    for c in rest {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node(c, &fr);
            sr = node(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != first_root || &sr != second_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The RFC's PATH(m, D[n]) over leaf hashes: the reference inclusion proof, for tests.
#[cfg(test)]
pub(crate) fn reference_inclusion(index: usize, leaves: &[Digest32]) -> Vec<Digest32> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = largest_power_of_two_below(n as u64) as usize;
    if index < k {
        let mut path = reference_inclusion(index, &leaves[..k]);
        path.push(root_of(&leaves[k..]));
        path
    } else {
        let mut path = reference_inclusion(index - k, &leaves[k..]);
        path.push(root_of(&leaves[..k]));
        path
    }
}

/// The RFC's PROOF(m, D[n]): the reference consistency proof, for tests.
#[cfg(test)]
pub(crate) fn reference_consistency(first: usize, leaves: &[Digest32]) -> Vec<Digest32> {
    fn subproof(m: usize, leaves: &[Digest32], complete: bool) -> Vec<Digest32> {
        let n = leaves.len();
        if m == n {
            return if complete {
                Vec::new()
            } else {
                vec![root_of(leaves)]
            };
        }
        let k = largest_power_of_two_below(n as u64) as usize;
        if m <= k {
            let mut path = subproof(m, &leaves[..k], complete);
            path.push(root_of(&leaves[k..]));
            path
        } else {
            let mut path = subproof(m - k, &leaves[k..], false);
            path.push(root_of(&leaves[..k]));
            path
        }
    }
    if first == 0 || first == leaves.len() {
        return Vec::new();
    }
    subproof(first, leaves, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Digest32> {
        (0..n)
            .map(|i| crate::shared::tlog::entry::leaf_hash(format!("leaf {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn every_reference_proof_of_every_small_tree_verifies() {
        let all = leaves(40);
        for n in 1..=all.len() {
            let tree = &all[..n];
            let root = root_of(tree);
            for index in 0..n {
                let path = reference_inclusion(index, tree);
                verify_inclusion(index as u64, n as u64, &tree[index], &path, &root)
                    .unwrap_or_else(|error| panic!("inclusion {index} of {n}: {error}"));
            }
            for m in 0..=n {
                let path = reference_consistency(m, tree);
                verify_consistency(m as u64, n as u64, &root_of(&tree[..m]), &root, &path)
                    .unwrap_or_else(|error| panic!("consistency {m} → {n}: {error}"));
            }
        }
    }

    #[test]
    fn an_altered_inclusion_proof_never_verifies() {
        let all = leaves(22);
        for n in 2..all.len() {
            let tree = &all[..n];
            let root = root_of(tree);
            for index in 0..n {
                let path = reference_inclusion(index, tree);
                let (i, size) = (index as u64, n as u64);
                let leaf = &tree[index];
                let fails = |path: &[Digest32], i: u64, size: u64, leaf: &Digest32| {
                    verify_inclusion(i, size, leaf, path, &root).is_err()
                };
                // Too short, too long.
                assert!(fails(&path[..path.len() - 1], i, size, leaf), "{index}/{n}");
                let mut longer = path.clone();
                longer.push(root);
                assert!(fails(&longer, i, size, leaf), "{index}/{n}");
                // Each element changed; neighbours swapped.
                for k in 0..path.len() {
                    let mut changed = path.clone();
                    changed[k][0] ^= 1;
                    assert!(fails(&changed, i, size, leaf), "{index}/{n} element {k}");
                    if k + 1 < path.len() && path[k] != path[k + 1] {
                        let mut swapped = path.clone();
                        swapped.swap(k, k + 1);
                        assert!(fails(&swapped, i, size, leaf), "{index}/{n} swap {k}");
                    }
                }
                // Another leaf, another index; another tree size with that tree's root (a
                // checkpoint binds a size to its root).
                let other = (index + 1) % n;
                assert!(fails(&path, i, size, &tree[other]), "{index}/{n}");
                assert!(fails(&path, other as u64, size, leaf), "{index}/{n}");
                let bigger = root_of(&all[..n + 1]);
                assert!(
                    verify_inclusion(i, size + 1, leaf, &path, &bigger).is_err(),
                    "{index}/{n}"
                );
                // A much larger claimed size with this tree's root: the path is too short
                // for it (the RFC's final sn == 0 check).
                assert!(
                    verify_inclusion(i, 2 * size + 1, leaf, &path, &root).is_err(),
                    "{index}/{n} as size {}",
                    2 * size + 1
                );
                if index < n - 1 {
                    let smaller = root_of(&all[..n - 1]);
                    assert!(
                        verify_inclusion(i, size - 1, leaf, &path, &smaller).is_err(),
                        "{index}/{n}"
                    );
                }
            }
        }
        assert_eq!(
            verify_inclusion(3, 3, &all[0], &[], &root_of(&all[..3])),
            Err(ProofError::IndexOutOfRange { index: 3, size: 3 })
        );
    }

    #[test]
    fn an_altered_consistency_proof_never_verifies() {
        let all = leaves(22);
        for n in 2..all.len() {
            let tree = &all[..n];
            let root = root_of(tree);
            for m in 1..n {
                let first_root = root_of(&tree[..m]);
                let path = reference_consistency(m, tree);
                let fails =
                    |path: &[Digest32], m: u64, n: u64, first: &Digest32, second: &Digest32| {
                        verify_consistency(m, n, first, second, path).is_err()
                    };
                let (first, second) = (m as u64, n as u64);
                assert!(!path.is_empty());
                assert!(
                    fails(&path[..path.len() - 1], first, second, &first_root, &root),
                    "{m}→{n}"
                );
                let mut longer = path.clone();
                longer.push(root);
                assert!(fails(&longer, first, second, &first_root, &root), "{m}→{n}");
                for k in 0..path.len() {
                    let mut changed = path.clone();
                    changed[k][31] ^= 0x80;
                    assert!(
                        fails(&changed, first, second, &first_root, &root),
                        "{m}→{n} element {k}"
                    );
                    if k + 1 < path.len() && path[k] != path[k + 1] {
                        let mut swapped = path.clone();
                        swapped.swap(k, k + 1);
                        assert!(
                            fails(&swapped, first, second, &first_root, &root),
                            "{m}→{n} swap {k}"
                        );
                    }
                }
                let mut other_root = root;
                other_root[0] ^= 1;
                assert!(
                    fails(&path, first, second, &first_root, &other_root),
                    "{m}→{n}"
                );
                assert!(fails(&path, first, second, &other_root, &root), "{m}→{n}");
                let bigger = root_of(&all[..n + 1]);
                assert!(
                    fails(&path, first, second + 1, &first_root, &bigger),
                    "{m}→{n}"
                );
                if m + 1 < n {
                    let next = root_of(&tree[..m + 1]);
                    assert!(fails(&path, first + 1, second, &next, &root), "{m}→{n}");
                }
            }
        }
        // A split view: the same size with another root is not consistent.
        let root = root_of(&all[..4]);
        let mut forked = root;
        forked[5] ^= 1;
        assert_eq!(
            verify_consistency(4, 4, &root, &forked, &[]),
            Err(ProofError::RootMismatch)
        );
        assert_eq!(
            verify_consistency(5, 4, &root, &root, &[]),
            Err(ProofError::SizesOutOfOrder {
                first: 5,
                second: 4
            })
        );
    }
}
