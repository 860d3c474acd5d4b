//! Exact and near-duplicate lookups against the records already stored.
//!
//! Clusters are implicit: a record belongs to the cluster of every stored record
//! with the same content id or an estimated Jaccard similarity ≥
//! [`crate::minhash::THRESHOLD`]. The lookups return the earliest (lowest entry)
//! matching record in a given set of states.

use std::collections::BTreeSet;

use credence_store::rusqlite::{Transaction, params};

use crate::Result;
use crate::hash::Hash32;
use crate::minhash::{self, Signature};

/// Which records count as the owner of a cluster.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope {
    /// Pending or accepted: what a new upload is compared with.
    Live,
    /// Accepted only: what an accept decision is compared with.
    Accepted,
}

impl Scope {
    fn statuses(self) -> &'static str {
        match self {
            Self::Live => "('pending', 'accepted')",
            Self::Accepted => "('accepted')",
        }
    }
}

/// Candidates examined per lookup (the earliest ones); bounds the cost of one
/// lookup when massive boilerplate puts thousands of records in one bucket.
const CANDIDATE_CAP: usize = 512;

/// A stored record that `content_id` or `signature` duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Match {
    /// Same content id.
    Exact(i64),
    /// Similar enough.
    Near(i64),
}

impl Match {
    pub(crate) fn entry(self) -> i64 {
        match self {
            Self::Exact(e) | Self::Near(e) => e,
        }
    }
}

/// The earliest record in `scope` that this one duplicates, other than `exclude`.
pub(crate) fn find(
    tx: &Transaction<'_>,
    datanet: &str,
    content_id: &Hash32,
    signature: Option<&Signature>,
    scope: Scope,
    exclude: i64,
) -> Result<Option<Match>> {
    let sql = format!(
        "SELECT min(entry) FROM records WHERE datanet_id = ?1 AND content_id = ?2 \
         AND status IN {} AND entry != ?3",
        scope.statuses()
    );
    let exact: Option<i64> = tx
        .prepare_cached(&sql)?
        .query_row(params![datanet, content_id.to_string(), exclude], |row| {
            row.get(0)
        })?;
    if let Some(entry) = exact {
        return Ok(Some(Match::Exact(entry)));
    }
    let Some(signature) = signature else {
        return Ok(None);
    };
    Ok(find_near(tx, datanet, signature, scope, exclude)?.map(Match::Near))
}

fn find_near(
    tx: &Transaction<'_>,
    datanet: &str,
    signature: &Signature,
    scope: Scope,
    exclude: i64,
) -> Result<Option<i64>> {
    // One statement for all bands: `bucket IN (…)` with the band buckets inlined as
    // integers (they are computed here, never user text), cached per shape.
    let buckets = signature.buckets();
    let list = buckets
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "SELECT DISTINCT r.entry FROM lsh l JOIN records r ON r.entry = l.entry \
         WHERE l.datanet_id = ?1 AND l.bucket IN ({list}) AND r.status IN {} AND r.entry != ?2 \
         ORDER BY r.entry LIMIT ?3",
        scope.statuses()
    );
    let mut stmt = tx.prepare(&sql)?;
    let rows = stmt.query_map(params![datanet, exclude, CANDIDATE_CAP as i64], |row| {
        row.get::<_, i64>(0)
    })?;
    let candidates = rows.collect::<Result<BTreeSet<i64>, _>>()?;
    let mut load = tx.prepare_cached("SELECT minhash FROM records WHERE entry = ?1")?;
    // Ascending entries: the first match is the earliest record of the cluster.
    for entry in candidates {
        let bytes: Option<Vec<u8>> = load.query_row([entry], |row| row.get(0))?;
        let similar = bytes
            .as_deref()
            .and_then(Signature::from_bytes)
            .is_some_and(|other| other.similarity(signature) >= minhash::THRESHOLD);
        if similar {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

/// Adds a stored record's signature to the LSH index.
pub(crate) fn index(
    tx: &Transaction<'_>,
    datanet: &str,
    entry: i64,
    signature: &Signature,
) -> Result<()> {
    let mut stmt =
        tx.prepare_cached("INSERT INTO lsh (datanet_id, bucket, entry) VALUES (?1, ?2, ?3)")?;
    for bucket in signature.buckets() {
        stmt.execute(params![datanet, bucket, entry])?;
    }
    Ok(())
}
