//! Merkle trees over a version's record ids, and inclusion proofs.
//!
//! The scheme is the one OpenZeppelin's `MerkleProof.verify` checks on chain, so
//! the ledger can anchor a version root in a contract and verify claims there:
//!
//! - leaf = `keccak256(keccak256(record_id))`: OpenZeppelin's `StandardMerkleTree`
//!   leaf for a single `bytes32` value. Hashing twice makes a leaf (32 bytes in)
//!   impossible to confuse with an inner node (64 bytes in).
//! - inner node = `keccak256(min(a, b) ‖ max(a, b))`: sorted pairs, so a proof is just
//!   the list of siblings, with no left/right flags.
//! - leaves in the order of the version's sorted record ids; an odd node at the end
//!   of a level moves up unchanged.
//! - the root of an empty version is 32 zero bytes, and it has no proofs.

use serde::{Deserialize, Serialize};

use crate::hash::Hash32;

/// The name of this scheme, written into proofs and manifests.
pub const SCHEME: &str = "keccak256-sorted-pairs/leaf=keccak256(keccak256(record_id))";

/// The leaf of a record id.
pub fn leaf(record_id: &Hash32) -> Hash32 {
    Hash32::keccak(&Hash32::keccak(&record_id.0).0)
}

fn parent(a: &Hash32, b: &Hash32) -> Hash32 {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(&low.0);
    bytes[32..].copy_from_slice(&high.0);
    Hash32::keccak(&bytes)
}

/// A tree built over a list of record ids.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    /// `levels[0]` are the leaves, the last level is the root alone.
    levels: Vec<Vec<Hash32>>,
}

impl MerkleTree {
    /// Builds the tree over `record_ids` in the given order (callers pass them sorted).
    pub fn new(record_ids: &[Hash32]) -> Self {
        let mut levels = vec![record_ids.iter().map(leaf).collect::<Vec<_>>()];
        while levels.last().is_some_and(|level| level.len() > 1) {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let above = below
                .chunks(2)
                .map(|pair| match pair {
                    [a, b] => parent(a, b),
                    [single] => *single,
                    _ => unreachable!("chunks(2) yields one or two items"),
                })
                .collect();
            levels.push(above);
        }
        Self { levels }
    }

    /// The root (zero for an empty tree).
    pub fn root(&self) -> Hash32 {
        match self.levels.last().map(Vec::as_slice) {
            Some([root]) => *root,
            _ => Hash32::default(),
        }
    }

    /// The siblings from the leaf at `index` up to the root; `None` if out of range.
    pub fn proof(&self, index: usize) -> Option<Vec<Hash32>> {
        let leaves = self.levels.first()?;
        if index >= leaves.len() {
            return None;
        }
        let mut proof = Vec::new();
        let mut position = index;
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(sibling) = level.get(position ^ 1) {
                proof.push(*sibling);
            }
            position /= 2;
        }
        Some(proof)
    }
}

/// Checks that `record_id` is in the tree with this `root`, given its proof.
pub fn verify(root: &Hash32, record_id: &Hash32, proof: &[Hash32]) -> bool {
    // An empty version has the zero root and contains nothing.
    if *root == Hash32::default() {
        return false;
    }
    let computed = proof
        .iter()
        .fold(leaf(record_id), |node, sibling| parent(&node, sibling));
    computed == *root
}

/// Everything needed to check that a record belongs to a datanet version,
/// without access to the datanet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The tree scheme (see [`SCHEME`]).
    pub scheme: String,
    /// The datanet.
    pub datanet: String,
    /// The version id.
    pub version: Hash32,
    /// The version's Merkle root.
    pub root: Hash32,
    /// The record's content id.
    pub record: Hash32,
    /// Sibling hashes from the leaf up.
    pub proof: Vec<Hash32>,
}

impl InclusionProof {
    /// Whether the proof holds (same scheme, and the record hashes up to the root).
    pub fn verify(&self) -> bool {
        self.scheme == SCHEME && verify(&self.root, &self.record, &self.proof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Hash32> {
        let mut ids: Vec<_> = (0..n).map(|i| Hash32::sha256(&i.to_le_bytes())).collect();
        ids.sort();
        ids
    }

    #[test]
    fn small_trees_match_a_hand_computation() {
        let ids = ids(3);
        let (a, b, c) = (leaf(&ids[0]), leaf(&ids[1]), leaf(&ids[2]));
        let tree = MerkleTree::new(&ids);
        assert_eq!(tree.root(), parent(&parent(&a, &b), &c));
        assert_eq!(tree.proof(2), Some(vec![parent(&a, &b)]));
        assert_eq!(tree.proof(0), Some(vec![b, c]));
        assert_eq!(MerkleTree::new(&ids[..1]).root(), a);
        assert_eq!(MerkleTree::new(&[]).root(), Hash32::default());
    }

    #[test]
    fn every_member_verifies_and_outsiders_do_not() {
        for n in 1..20 {
            let ids = ids(n);
            let tree = MerkleTree::new(&ids);
            for (i, id) in ids.iter().enumerate() {
                let proof = tree.proof(i).expect("in range");
                assert!(verify(&tree.root(), id, &proof), "n={n} i={i}");
                assert!(!verify(&tree.root(), &Hash32::sha256(b"outsider"), &proof));
            }
            assert_eq!(tree.proof(n), None);
        }
        assert!(!verify(&Hash32::default(), &Hash32::default(), &[]));
    }
}
