//! Merkle trees of cumulative payouts, hashed the way
//! `AttributionDistributor.claim` verifies them.
//!
//! A leaf is `keccak256(keccak256(abi.encode(account, cumulativeAmount)))`:
//! hashing twice keeps a 64-byte leaf preimage from ever equalling an inner
//! node's preimage. Inner nodes hash their two children in sorted order
//! (OpenZeppelin's `MerkleProof` convention), so a proof is just the sibling
//! hashes, no left/right flags.

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::SolValue;

/// The leaf hash of one account's cumulative amount.
pub fn leaf(account: Address, cumulative: U256) -> B256 {
    keccak256(keccak256((account, cumulative).abi_encode()))
}

fn parent(a: B256, b: B256) -> B256 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(lo.as_slice());
    buf[32..].copy_from_slice(hi.as_slice());
    keccak256(buf)
}

/// A tree over (account, cumulative amount) leaves.
#[derive(Debug, Clone)]
pub struct PayoutTree {
    /// `levels[0]` are the sorted leaf hashes, the last level is the root.
    levels: Vec<Vec<B256>>,
}

impl PayoutTree {
    /// Builds the tree; returns `None` for no leaves (there is no root to post).
    /// Leaves are sorted by hash so the same set always gives the same root.
    pub fn new(entries: &[(Address, U256)]) -> Option<Self> {
        let mut level: Vec<B256> = entries.iter().map(|&(a, v)| leaf(a, v)).collect();
        if level.is_empty() {
            return None;
        }
        level.sort_unstable();
        let mut levels = vec![level];
        while let Some(last) = levels.last().filter(|l| l.len() > 1) {
            // An odd node out is carried up unchanged rather than paired with itself.
            let next = last
                .chunks(2)
                .map(|pair| {
                    if let [a, b] = pair {
                        parent(*a, *b)
                    } else {
                        pair[0]
                    }
                })
                .collect();
            levels.push(next);
        }
        Some(Self { levels })
    }

    /// The root to post on-chain.
    pub fn root(&self) -> B256 {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or_default()
    }

    /// The proof for one entry, or `None` if it is not in the tree.
    pub fn proof(&self, account: Address, cumulative: U256) -> Option<Vec<B256>> {
        let target = leaf(account, cumulative);
        let mut index = self.levels[0].binary_search(&target).ok()?;
        let mut proof = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(sibling) = level.get(index ^ 1) {
                proof.push(*sibling);
            }
            index /= 2;
        }
        Some(proof)
    }
}

/// The root of a tree over arbitrary 32-byte leaves, built the same way
/// (sorted leaves, sorted pairs, an odd node carried up); zero for no leaves.
/// Used for roots that anchor data rather than pay out, such as receipts.
pub fn root_of(hashes: &[B256]) -> B256 {
    let mut level = hashes.to_vec();
    level.sort_unstable();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [a, b] => parent(*a, *b),
                _ => pair[0],
            })
            .collect();
    }
    level.first().copied().unwrap_or_default()
}

/// Checks a proof the way the contract does (used by clients before paying gas).
pub fn verify(root: B256, account: Address, cumulative: U256, proof: &[B256]) -> bool {
    proof
        .iter()
        .fold(leaf(account, cumulative), |acc, p| parent(acc, *p))
        == root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: u64) -> Vec<(Address, U256)> {
        (1..=n)
            .map(|i| (Address::with_last_byte(i as u8), U256::from(i * 1000)))
            .collect()
    }

    #[test]
    fn every_entry_proves_against_the_root_for_many_sizes() {
        for n in 1..=17 {
            let e = entries(n);
            let tree = PayoutTree::new(&e).unwrap();
            for &(a, v) in &e {
                let proof = tree.proof(a, v).unwrap();
                assert!(verify(tree.root(), a, v, &proof), "n={n}");
            }
        }
    }

    #[test]
    fn wrong_amount_or_account_fails() {
        let e = entries(5);
        let tree = PayoutTree::new(&e).unwrap();
        let proof = tree.proof(e[0].0, e[0].1).unwrap();
        assert!(!verify(tree.root(), e[0].0, e[0].1 + U256::from(1), &proof));
        assert!(!verify(tree.root(), e[1].0, e[0].1, &proof));
        assert!(tree.proof(e[0].0, U256::from(7)).is_none());
    }

    #[test]
    fn root_does_not_depend_on_input_order() {
        let mut e = entries(9);
        let a = PayoutTree::new(&e).unwrap().root();
        e.reverse();
        assert_eq!(a, PayoutTree::new(&e).unwrap().root());
        assert!(PayoutTree::new(&[]).is_none());
    }
}
