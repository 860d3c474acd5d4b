//! Property tests: Merkle proofs, and first-accepted-wins deduplication.

use credence_datanet::Hash32;
use credence_datanet::ingest::Format;
use credence_datanet::merkle::{MerkleTree, verify};
use credence_datanet::model::{ContributionHeader, Signed, Status, Visibility};
use credence_datanet::sign::LocalSigner;
use proptest::prelude::*;

use crate::common::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every member's proof verifies against the root; no proof verifies an outsider,
    /// and no proof verifies a member against another version's root.
    #[test]
    fn merkle_proofs_hold_for_members_only(
        seeds in prop::collection::btree_set(any::<u64>(), 1..80),
        outsider in any::<u64>(),
    ) {
        let mut ids: Vec<Hash32> = seeds.iter().map(|s| Hash32::sha256(&s.to_le_bytes())).collect();
        ids.sort();
        let tree = MerkleTree::new(&ids);
        let root = tree.root();
        let stranger = Hash32::sha256(&outsider.to_be_bytes());
        let other_root = MerkleTree::new(&ids[..ids.len() - 1]).root();
        for (i, id) in ids.iter().enumerate() {
            let proof = tree.proof(i).expect("in range");
            prop_assert!(verify(&root, id, &proof));
            if !ids.contains(&stranger) {
                prop_assert!(!verify(&root, &stranger, &proof));
            }
            if ids.len() > 1 {
                prop_assert!(!verify(&other_root, id, &proof) || other_root == root);
            }
        }
    }
}

/// A text in cluster `base`: variant 0 is the original, 1 an exact copy, 2 the same
/// words with other case and punctuation (a different content id, identical shingles),
/// 3 the original with a typo.
fn text(base: usize, variant: usize) -> String {
    let original = sentence(base * 7 + 3);
    match variant {
        0 | 1 => original,
        2 => format!("{}!!", original.to_uppercase()),
        _ => original.replacen('a', "e", 1) + " ok",
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Whatever the upload and review order, the first record accepted in a cluster
    /// is the only accepted one; later accepts become duplicates pointing at it.
    #[test]
    fn first_accepted_record_owns_its_cluster(
        uploads in prop::collection::vec((0usize..4, 0usize..4, 0usize..3), 1..12),
        order_seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let nets = open(dir.path());
        create(&nets, "p", Visibility::Public);
        let contributors = [alice(), bob(), LocalSigner::from_seed("carol")];
        let mut bases = Vec::new();
        for (i, (base, variant, who)) in uploads.iter().enumerate() {
            let bytes = jsonl(&[&text(*base, *variant)]);
            let header = ContributionHeader {
                datanet: "p".into(),
                file_sha256: Hash32::sha256(&bytes),
                format: Format::Jsonl,
                source: format!("upload-{i}.jsonl"),
            };
            let signed = Signed::sign(header, &contributors[*who]).expect("sign");
            nets.contribute(&signed, &bytes[..], &mut |_| {}).expect("contribute");
            bases.push(*base);
        }
        let records = nets.records("p", None, 0, 100, None).expect("records");
        prop_assert_eq!(records.len(), uploads.len());

        // Review in a pseudo-random order derived from the seed.
        let mut order: Vec<usize> = (0..records.len()).collect();
        let mut x = order_seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut owner_of = std::collections::HashMap::new();
        for i in order {
            let outcome = review(&nets, "p", vec![accept(records[i].entry)], &owner()).expect("review");
            match owner_of.get(&bases[i]) {
                None => {
                    prop_assert_eq!(outcome[0].status, Status::Accepted);
                    owner_of.insert(bases[i], records[i].entry);
                }
                Some(first) => {
                    prop_assert_eq!(outcome[0].status, Status::Duplicate);
                    prop_assert_eq!(outcome[0].duplicate_of, Some(*first));
                }
            }
        }
        let accepted = nets.records("p", Some(Status::Accepted), 0, 100, None).expect("records");
        prop_assert_eq!(accepted.len(), owner_of.len());
    }
}
