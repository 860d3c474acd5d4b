//! The in-memory LSH band index of one datanet.
//!
//! SQLite holds every record's MinHash signature (`records.minhash`); this index
//! is derived from those rows and never stored. Keeping it in SQLite cost about
//! 64 B-tree operations per ingested record (32 band rows written, 32 looked up)
//! and bounded ingest to a few thousand records per second, so the bands live in
//! hash maps instead: about 9 bytes per record and band plus a 128-byte sketch
//! per record, ~0.4 GB for a million-record datanet.
//!
//! Consistency with the database, which stays the only source of truth:
//! - [`BandIndex::catch_up`] indexes every record with an entry above the highest
//!   one seen, inside the write transaction that is about to use the index. Entries
//!   are rowids and records are never deleted, so new records always have higher
//!   entries; this also picks up records written by another process (e.g. the CLI
//!   while a node runs) and builds the index on first use after a restart.
//! - A write that fails (and is rolled back) calls [`BandIndex::undo`] with the
//!   [`Mark`] taken before it, which drops everything added since; a killed process
//!   simply loses the index with the rest of its memory.
//!
//! The index only proposes candidates; callers check each against the stored
//! signature and status, so a hash collision costs a lookup, never a wrong flag.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use credence_store::rusqlite::{Connection, params};

use crate::minhash::{BANDS, PERMUTATIONS, Signature, THRESHOLD};
use crate::{Error, Result};

/// Marks a map value as an index into [`BandIndex::lists`] rather than a record slot.
const LIST: u32 = 1 << 31;

/// A position in [`BandIndex`] to roll back to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    slots: usize,
    lists: usize,
    upto: i64,
}

/// Band buckets → record entries, for one datanet.
#[derive(Debug)]
pub(crate) struct BandIndex {
    /// Record slot → entry. Maps store 4-byte slots instead of 8-byte entries.
    entries: Vec<i64>,
    /// Per band: bucket key → one slot, or `LIST | i` for `lists[i]`. Most buckets
    /// hold one record, so the common case costs no allocation.
    bands: Vec<HashMap<u32, u32, BuildHasherDefault<SpreadHasher>>>,
    /// Buckets with two or more records, slots in ascending entry order.
    lists: Vec<Vec<u32>>,
    /// Slot → the low byte of each signature slot ([`sketch`]), `PERMUTATIONS` bytes
    /// per record: checks candidates without a database read.
    sketches: Vec<u8>,
    /// The highest entry indexed (records arrive in ascending entry order).
    upto: i64,
}

/// The low byte of every slot of a signature. Slots that are equal have equal
/// low bytes, so the fraction of equal bytes is never below the signature's
/// similarity: a candidate whose sketch is below the threshold cannot be a near
/// duplicate, and most random band collisions are dropped here. (Unequal slots
/// agree by chance 1 time in 256, so few false candidates get through.)
pub(crate) fn sketch(signature: &Signature) -> Vec<u8> {
    signature.0.iter().map(|&slot| slot as u8).collect()
}

fn sketch_similarity(a: &[u8], b: &[u8]) -> f64 {
    let equal = a.iter().zip(b).filter(|(x, y)| x == y).count();
    equal as f64 / PERMUTATIONS as f64
}

impl Default for BandIndex {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            bands: (0..BANDS).map(|_| HashMap::default()).collect(),
            lists: Vec::new(),
            sketches: Vec::new(),
            upto: 0,
        }
    }
}

/// The bucket keys are already well-mixed hashes: one multiply spreads them over
/// the 64 bits the hash table wants (SipHash would cost more than the rest of a lookup).
#[derive(Debug, Default)]
pub(crate) struct SpreadHasher(u64);

impl Hasher for SpreadHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.0 = u64::from(value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Within one band's map the key is 32 bits of the band's bucket hash: a false
/// match (about one per million lookups per million records) only adds a candidate.
fn key(bucket: i64) -> u32 {
    ((bucket as u64) >> 32) as u32
}

impl BandIndex {
    /// Indexes every record of `datanet` stored after the highest entry seen.
    pub(crate) fn catch_up(&mut self, conn: &Connection, datanet: &str) -> Result<()> {
        let mut stmt = conn.prepare_cached(
            "SELECT entry, minhash FROM records WHERE datanet_id = ?1 AND entry > ?2 \
             AND minhash IS NOT NULL ORDER BY entry",
        )?;
        let mut rows = stmt.query(params![datanet, self.upto])?;
        while let Some(row) = rows.next()? {
            let entry: i64 = row.get(0)?;
            let bytes: Vec<u8> = row.get(1)?;
            let signature = Signature::from_bytes(&bytes).ok_or_else(|| {
                Error::Internal(format!("record {entry} has a malformed MinHash signature"))
            })?;
            self.insert(entry, &signature)?;
        }
        Ok(())
    }

    /// Adds a record; `entry` must be higher than every entry indexed so far.
    pub(crate) fn insert(&mut self, entry: i64, signature: &Signature) -> Result<()> {
        let buckets = signature.buckets();
        let slot = u32::try_from(self.entries.len())
            .ok()
            .filter(|s| s & LIST == 0)
            .ok_or_else(|| Error::TooLarge {
                what: "records with MinHash signatures in one datanet",
                limit: u64::from(LIST),
            })?;
        self.entries.push(entry);
        self.sketches.extend(sketch(signature));
        self.upto = self.upto.max(entry);
        for (band, &bucket) in self.bands.iter_mut().zip(&buckets) {
            match band.get_mut(&key(bucket)) {
                None => {
                    band.insert(key(bucket), slot);
                }
                Some(value) if *value & LIST != 0 => {
                    self.lists[(*value & !LIST) as usize].push(slot);
                }
                Some(value) => {
                    let list = u32::try_from(self.lists.len())
                        .ok()
                        .filter(|l| l & LIST == 0)
                        .ok_or_else(|| Error::Internal("too many LSH bucket lists".into()))?;
                    self.lists.push(vec![*value, slot]);
                    *value = LIST | list;
                }
            }
        }
        Ok(())
    }

    /// Entries sharing at least one band bucket with `signature` whose sketch is
    /// similar enough to be a near duplicate, ascending and distinct, taking at
    /// most `per_bucket` (the earliest) from each bucket.
    pub(crate) fn candidates(&self, signature: &Signature, per_bucket: usize) -> Vec<u32> {
        let mut found = Vec::new();
        for (band, bucket) in self.bands.iter().zip(signature.buckets()) {
            match band.get(&key(bucket)) {
                None => {}
                Some(&value) if value & LIST != 0 => {
                    found.extend(self.lists[(value & !LIST) as usize].iter().take(per_bucket));
                }
                Some(&slot) => found.push(slot),
            }
        }
        // Slots ascend with entries.
        found.sort_unstable();
        found.dedup();
        let wanted = sketch(signature);
        found.retain(|&slot| {
            let start = slot as usize * PERMUTATIONS;
            self.sketches
                .get(start..start + PERMUTATIONS)
                .is_some_and(|other| sketch_similarity(&wanted, other) >= THRESHOLD)
        });
        found
    }

    /// The entry of a slot returned by [`BandIndex::candidates`].
    pub(crate) fn entry(&self, slot: u32) -> i64 {
        self.entries[slot as usize]
    }

    /// The current position, to [`BandIndex::undo`] to if a write fails.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            slots: self.entries.len(),
            lists: self.lists.len(),
            upto: self.upto,
        }
    }

    /// Forgets every record added since `mark`. Costs a pass over the index, but
    /// only failed writes that had already indexed records pay it.
    pub(crate) fn undo(&mut self, mark: Mark) {
        if self.entries.len() == mark.slots {
            return;
        }
        let keep = mark.slots as u32;
        for list in &mut self.lists {
            list.retain(|&slot| slot < keep);
        }
        let lists = &self.lists;
        for band in &mut self.bands {
            band.retain(|_, value| {
                if *value & LIST == 0 {
                    return *value < keep;
                }
                !lists[(*value & !LIST) as usize].is_empty()
            });
            // A list made during the failed write held at most one older slot (it
            // became a list when the write added a second): back to a single slot.
            for value in band.values_mut() {
                let list = (*value & !LIST) as usize;
                if *value & LIST != 0 && list >= mark.lists {
                    *value = lists[list][0];
                }
            }
        }
        self.lists.truncate(mark.lists);
        self.entries.truncate(mark.slots);
        self.sketches.truncate(mark.slots * PERMUTATIONS);
        self.upto = mark.upto;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signature whose band buckets are all distinct from other seeds' and
    /// whose slots agree with the other seeds' nowhere.
    fn signature(seed: u32) -> Signature {
        Signature((0..PERMUTATIONS as u32).map(|i| seed * 1000 + i).collect())
    }

    /// `signature(seed)` with its first band (and so its first few slots) taken from `other`.
    fn sharing_first_band(seed: u32, other: u32) -> Signature {
        let mut s = signature(seed);
        s.0[..crate::minhash::ROWS].copy_from_slice(&signature(other).0[..crate::minhash::ROWS]);
        s
    }

    fn entries(index: &BandIndex, signature: &Signature) -> Vec<i64> {
        index
            .candidates(signature, 10)
            .into_iter()
            .map(|slot| index.entry(slot))
            .collect()
    }

    #[test]
    fn similar_records_are_candidates_and_band_collisions_are_filtered() {
        let mut index = BandIndex::default();
        index.insert(3, &signature(1)).expect("insert");
        index.insert(7, &signature(2)).expect("insert");
        index.insert(9, &signature(1)).expect("insert");
        // Shares one band with entry 7 but is otherwise different: filtered out.
        index.insert(11, &sharing_first_band(4, 2)).expect("insert");
        assert_eq!(entries(&index, &signature(1)), vec![3, 9]);
        assert_eq!(entries(&index, &signature(2)), vec![7]);
        assert_eq!(index.candidates(&signature(1), 1).len(), 1);
        assert!(entries(&index, &signature(5)).is_empty());
    }

    #[test]
    fn undo_restores_the_marked_state() {
        let mut index = BandIndex::default();
        index.insert(1, &signature(1)).expect("insert");
        index.insert(2, &signature(2)).expect("insert");
        let mark = index.mark();
        index.insert(3, &signature(1)).expect("insert"); // makes lists
        index.insert(4, &signature(4)).expect("insert"); // new singles
        index.insert(5, &signature(2)).expect("insert");
        index.undo(mark);
        assert_eq!(entries(&index, &signature(1)), vec![1]);
        assert_eq!(entries(&index, &signature(2)), vec![2]);
        assert!(entries(&index, &signature(4)).is_empty());
        assert_eq!(index.upto, 2);
        // Still usable: the same entries can be indexed again.
        index.insert(3, &signature(1)).expect("insert");
        assert_eq!(entries(&index, &signature(1)), vec![1, 3]);
    }
}
