//! Near-duplicate detection: MinHash signatures over character shingles,
//! indexed with locality-sensitive hashing (LSH) bands.
//!
//! Parameters (also in `docs/datanet.md`):
//! - text is lowercased, every run of non-alphanumeric characters becomes one
//!   space, so punctuation and spacing edits do not matter;
//! - shingles are [`SHINGLE`]-character windows of that text (character rather
//!   than word shingles, so a typo changes a few shingles instead of whole words,
//!   and reordered words keep their inner shingles);
//! - [`PERMUTATIONS`] = 128 hash functions, split into [`BANDS`] = 32 bands of
//!   [`ROWS`] = 4 rows. Two texts whose shingle sets have Jaccard similarity `s`
//!   become LSH candidates with probability `1 − (1 − s⁴)³²`: 0.99 at s = 0.6,
//!   0.80 at s = 0.4, 0.05 at s = 0.2;
//! - a candidate is a near duplicate when the signatures agree in at least
//!   [`THRESHOLD`] of their slots (estimated Jaccard ≥ 0.6).
//!
//! Hashes are fixed functions of the bytes (no per-process random seeds), so
//! signatures stored in the database stay comparable across restarts and versions.

/// Characters per shingle.
pub const SHINGLE: usize = 5;
/// Hash functions per signature.
pub const PERMUTATIONS: usize = 128;
/// LSH bands.
pub const BANDS: usize = 32;
/// Signature slots per band.
pub const ROWS: usize = PERMUTATIONS / BANDS;
/// Estimated Jaccard similarity at or above which two texts are near duplicates.
pub const THRESHOLD: f64 = 0.6;

/// A MinHash signature: the minimum of each hash function over the shingles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature(pub Vec<u32>);

/// splitmix64's finaliser: a fast, well-mixed, fixed 64-bit hash step.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a over bytes, then mixed: the base hash of a shingle.
fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// Lowercase alphanumerics separated by single spaces.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut gap = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.extend(c.to_lowercase());
        } else {
            gap = true;
        }
    }
    out
}

/// The distinct shingle hashes of `text` (empty if it has no alphanumerics).
fn shingles(text: &str) -> Vec<u64> {
    let normal = normalise(text);
    let chars: Vec<(usize, char)> = normal.char_indices().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let mut hashes: Vec<u64> = if chars.len() <= SHINGLE {
        vec![hash_bytes(normal.as_bytes())]
    } else {
        (0..=chars.len() - SHINGLE)
            .map(|i| {
                let start = chars[i].0;
                let end = chars.get(i + SHINGLE).map_or(normal.len(), |c| c.0);
                hash_bytes(&normal.as_bytes()[start..end])
            })
            .collect()
    };
    hashes.sort_unstable();
    hashes.dedup();
    hashes
}

impl Signature {
    /// The signature of `text`; `None` when it has nothing to compare
    /// (no letters or digits).
    pub fn of(text: &str) -> Option<Self> {
        let shingles = shingles(text);
        if shingles.is_empty() {
            return None;
        }
        let slots = (0..PERMUTATIONS as u64)
            .map(|i| {
                let seed = mix(i.wrapping_add(0x9e37_79b9_7f4a_7c15));
                let min = shingles
                    .iter()
                    .map(|&s| mix(s ^ seed))
                    .min()
                    .unwrap_or(u64::MAX);
                // The upper half is enough: collisions at 2^-32 barely move the estimate.
                (min >> 32) as u32
            })
            .collect();
        Some(Self(slots))
    }

    /// The fraction of equal slots: an estimate of the Jaccard similarity.
    pub fn similarity(&self, other: &Self) -> f64 {
        let equal = self.0.iter().zip(&other.0).filter(|(a, b)| a == b).count();
        equal as f64 / PERMUTATIONS as f64
    }

    /// The LSH bucket of each band; band index is mixed in so bands never collide.
    pub fn buckets(&self) -> Vec<i64> {
        self.0
            .chunks(ROWS)
            .enumerate()
            .map(|(band, rows)| {
                let mut h = mix(band as u64 + 1);
                for &row in rows {
                    h = mix(h ^ u64::from(row));
                }
                h as i64
            })
            .collect()
    }

    /// Little-endian bytes, for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The inverse of [`Signature::to_bytes`]; `None` if the length is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != PERMUTATIONS * 4 {
            return None;
        }
        let slots = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(Self(slots))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "The quick brown fox jumps over the lazy dog while the farmer sleeps \
                        under the old oak tree near the river bank in the afternoon sun.";

    fn sim(a: &str, b: &str) -> f64 {
        let a = Signature::of(a).expect("text");
        let b = Signature::of(b).expect("text");
        a.similarity(&b)
    }

    #[test]
    fn normalising_drops_case_and_punctuation() {
        assert_eq!(normalise("  Hello,  WORLD!! 42 "), "hello world 42");
        assert!(Signature::of("!!! ...").is_none());
    }

    #[test]
    fn edits_stay_similar_and_unrelated_texts_do_not() {
        assert_eq!(sim(TEXT, TEXT), 1.0);
        let typos = TEXT.replace("quick", "quikc").replace("farmer", "framer");
        assert!(sim(TEXT, &typos) >= THRESHOLD, "{}", sim(TEXT, &typos));
        let punctuation = TEXT.to_uppercase().replace(' ', "  ");
        assert_eq!(sim(TEXT, &punctuation), 1.0);
        let unrelated = "Quarterly revenue grew by eleven percent, driven by strong demand \
                         for cloud services across European markets and new contracts.";
        assert!(sim(TEXT, unrelated) < 0.2, "{}", sim(TEXT, unrelated));
    }

    #[test]
    fn identical_signatures_share_every_bucket_and_bytes_round_trip() {
        let a = Signature::of(TEXT).expect("text");
        assert_eq!(a.buckets().len(), BANDS);
        assert_eq!(Signature::from_bytes(&a.to_bytes()), Some(a.clone()));
        assert_eq!(Signature::from_bytes(&[1, 2, 3]), None);
        let b = Signature::of(TEXT).expect("text");
        assert_eq!(a.buckets(), b.buckets());
    }
}
