//! Datanet ingest benchmark: throughput with deduplication, and near-duplicate
//! precision/recall on planted copies.
//!
//! ```sh
//! cargo bench -p credence-datanet --bench ingest -- --records 1000000 --planted 2000
//! ```
//!
//! Throughput: one signed JSONL contribution of `--records` distinct synthetic
//! records (about 30 words each) into an empty datanet on a real SQLite file,
//! with the exact and near-duplicate checks on, timed end to end (parse, hash,
//! MinHash, LSH lookups, inserts, commit).
//!
//! Precision/recall: `--planted` originals are ingested first; then a second
//! contribution holds one variant of each original (character edits, word
//! reordering, added boilerplate, in turn) and as many fresh records. A variant
//! flagged as a duplicate is a true positive, a fresh record flagged is a false
//! positive.

#![allow(missing_docs)]

use std::time::Instant;

use credence_datanet::ingest::{Format, Limits};
use credence_datanet::model::{ContributionHeader, CreateDatanet, Signed, Status, Visibility};
use credence_datanet::sign::LocalSigner;
use credence_datanet::{Datanets, Hash32};

const SYLLABLES: [&str; 32] = [
    "ka", "lor", "men", "tis", "bru", "vel", "sho", "rin", "pa", "dex", "mu", "gral", "fen", "ost",
    "qui", "zar", "lem", "tor", "yas", "nib", "cro", "wen", "hul", "ept", "sa", "vim", "do", "rak",
    "bel", "fio", "gan", "tue",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn words(seed: u64, count: usize) -> Vec<String> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    (0..count)
        .map(|_| {
            let n = 2 + rng.below(2);
            (0..n)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect()
        })
        .collect()
}

fn record(seed: u64) -> String {
    words(seed, 30).join(" ")
}

/// A near copy of `text` of the given kind.
fn variant(text: &str, kind: usize, rng: &mut Rng) -> String {
    match kind % 3 {
        0 => {
            // Five character substitutions.
            let mut chars: Vec<char> = text.chars().collect();
            for _ in 0..5 {
                let i = rng.below(chars.len());
                chars[i] = (b'a' + rng.below(26) as u8) as char;
            }
            chars.into_iter().collect()
        }
        1 => {
            // Three swaps of adjacent words.
            let mut w: Vec<&str> = text.split(' ').collect();
            for _ in 0..3 {
                let i = rng.below(w.len() - 1);
                w.swap(i, i + 1);
            }
            w.join(" ")
        }
        _ => format!("Source: community upload, please cite. {text} Thanks for reading."),
    }
}

fn jsonl(texts: impl Iterator<Item = String>) -> Vec<u8> {
    let mut out = Vec::new();
    for t in texts {
        out.extend_from_slice(serde_json::json!({ "text": t }).to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

fn contribute(nets: &Datanets, bytes: &[u8], signer: &LocalSigner, source: &str) {
    let header = ContributionHeader {
        datanet: "bench".into(),
        file_sha256: Hash32::sha256(bytes),
        format: Format::Jsonl,
        source: source.into(),
    };
    let signed = Signed::sign(header, signer).expect("sign");
    nets.contribute(&signed, bytes, &mut |_| {})
        .expect("contribute");
}

fn fresh(dir: &std::path::Path) -> Datanets {
    let limits = Limits {
        max_records: usize::MAX,
        max_file_bytes: u64::MAX,
        ..Limits::default()
    };
    let nets = Datanets::open(dir, limits).expect("open");
    let spec = CreateDatanet {
        name: "bench".into(),
        description: String::new(),
        tags: vec![],
        license: "MIT".into(),
        visibility: Visibility::Public,
        curators: vec![],
    };
    nets.create(&Signed::sign(spec, &LocalSigner::from_seed("owner")).expect("sign"))
        .expect("create");
    nets
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn throughput(records: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let nets = fresh(dir.path());
    let bytes = jsonl((0..records as u64).map(record));
    let start = Instant::now();
    contribute(
        &nets,
        &bytes,
        &LocalSigner::from_seed("alice"),
        "synthetic.jsonl",
    );
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "ingest: {records} records, {:.1} MB in {seconds:.2} s = {:.0} records/s",
        bytes.len() as f64 / 1e6,
        records as f64 / seconds
    );
}

fn precision_recall(planted: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let nets = fresh(dir.path());
    let originals: Vec<String> = (0..planted as u64)
        .map(|i| record(i + 1_000_000_000))
        .collect();
    contribute(
        &nets,
        &jsonl(originals.iter().cloned()),
        &LocalSigner::from_seed("a"),
        "originals",
    );
    let mut rng = Rng(42);
    // Interleave variants (even lines) with fresh records (odd lines).
    let mixed = (0..planted).flat_map(|i| {
        let v = variant(&originals[i], i, &mut rng);
        [v, record(i as u64 + 2_000_000_000)]
    });
    let mixed: Vec<String> = mixed.collect();
    contribute(
        &nets,
        &jsonl(mixed.into_iter()),
        &LocalSigner::from_seed("b"),
        "mixed",
    );
    let records = nets
        .records("bench", None, planted as i64, usize::MAX, None)
        .expect("records");
    let (mut tp, mut fp, mut found) = (0usize, 0usize, [0usize; 3]);
    for (i, r) in records.iter().enumerate() {
        let flagged = r.status == Status::Duplicate;
        if i % 2 == 0 {
            tp += usize::from(flagged);
            found[(i / 2) % 3] += usize::from(flagged);
        } else {
            fp += usize::from(flagged);
        }
    }
    let per_kind = planted.div_ceil(3);
    println!(
        "near duplicates: {planted} planted, recall {:.3} (char edits {:.3}, word swaps {:.3}, \
         boilerplate {:.3}), precision {:.3}",
        tp as f64 / planted as f64,
        found[0] as f64 / per_kind as f64,
        found[1] as f64 / per_kind as f64,
        found[2] as f64 / (planted / 3).max(1) as f64,
        tp as f64 / (tp + fp).max(1) as f64
    );
}

fn main() {
    // `cargo test --benches` runs benches with --bench absent; keep that fast.
    let quick = !std::env::args().any(|a| a == "--bench");
    let records = arg("--records", if quick { 2_000 } else { 100_000 });
    let planted = arg("--planted", if quick { 300 } else { 3_000 });
    throughput(records);
    precision_recall(planted);
}
