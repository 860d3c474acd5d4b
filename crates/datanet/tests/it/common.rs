//! Helpers shared by the integration tests.

use credence_datanet::ingest::{Format, Limits};
use credence_datanet::model::{
    CommitRequest, ContributionHeader, ContributionReport, CreateDatanet, Datanet, Decision,
    DecisionOutcome, Review, Signed, Version, Visibility,
};
use credence_datanet::sign::LocalSigner;
use credence_datanet::{Datanets, Hash32, Result, now_millis};

pub(crate) fn owner() -> LocalSigner {
    LocalSigner::from_seed("owner")
}

pub(crate) fn alice() -> LocalSigner {
    LocalSigner::from_seed("alice")
}

pub(crate) fn bob() -> LocalSigner {
    LocalSigner::from_seed("bob")
}

pub(crate) fn open(dir: &std::path::Path) -> Datanets {
    Datanets::open(dir, Limits::default()).expect("open datanets")
}

pub(crate) fn create(nets: &Datanets, name: &str, visibility: Visibility) -> Datanet {
    let spec = CreateDatanet {
        name: name.into(),
        description: "test data".into(),
        tags: vec!["test".into()],
        license: "CC-BY-4.0".into(),
        visibility,
        curators: vec![],
    };
    nets.create(&Signed::sign(spec, &owner()).expect("sign"))
        .expect("create")
}

pub(crate) fn header(
    datanet: &str,
    bytes: &[u8],
    format: Format,
    signer: &LocalSigner,
) -> Signed<ContributionHeader> {
    let payload = ContributionHeader {
        datanet: datanet.into(),
        file_sha256: Hash32::sha256(bytes),
        format,
        source: "upload.jsonl".into(),
    };
    Signed::sign(payload, signer).expect("sign")
}

pub(crate) fn contribute(
    nets: &Datanets,
    datanet: &str,
    bytes: &[u8],
    signer: &LocalSigner,
) -> Result<ContributionReport> {
    nets.contribute(
        &header(datanet, bytes, Format::Jsonl, signer),
        bytes,
        &mut |_| {},
    )
}

pub(crate) fn jsonl(texts: &[&str]) -> Vec<u8> {
    texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string() + "\n")
        .collect::<String>()
        .into_bytes()
}

pub(crate) fn review(
    nets: &Datanets,
    datanet: &str,
    decisions: Vec<Decision>,
    signer: &LocalSigner,
) -> Result<Vec<DecisionOutcome>> {
    let payload = Review {
        datanet: datanet.into(),
        decisions,
        time: now_millis(),
    };
    nets.review(&Signed::sign(payload, signer).expect("sign"))
}

pub(crate) fn accept(entry: i64) -> Decision {
    Decision {
        entry,
        accept: true,
        reason: String::new(),
    }
}

pub(crate) fn commit(nets: &Datanets, datanet: &str, message: &str) -> Result<Version> {
    let parent = nets.get(datanet)?.head;
    let payload = CommitRequest {
        datanet: datanet.into(),
        parent,
        message: message.into(),
        time: 1_700_000_000,
    };
    nets.commit(&Signed::sign(payload, &owner()).expect("sign"))
}

/// Distinct, realistic-looking sentences: pseudo-words from random syllables, so
/// two different sentences share few character shingles.
pub(crate) fn sentence(i: usize) -> String {
    const SYLLABLES: [&str; 24] = [
        "ka", "lor", "men", "tis", "bru", "vel", "sho", "rin", "pa", "dex", "mu", "gral", "fen",
        "ost", "qui", "zar", "lem", "tor", "yas", "nib", "cro", "wen", "hul", "ept",
    ];
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x1234_5678;
    let mut next = move || {
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 32;
        x
    };
    let words: Vec<String> = (0..12)
        .map(|_| {
            let n = 2 + (next() % 2) as usize;
            (0..n).map(|_| SYLLABLES[(next() % 24) as usize]).collect()
        })
        .collect();
    format!("Record {i}: {}.", words.join(" "))
}
