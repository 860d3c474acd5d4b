//! Exact and near-duplicate lookups against the records already stored.
//!
//! Clusters are implicit: a record belongs to the cluster of every stored record
//! with the same content id or an estimated Jaccard similarity ≥
//! [`crate::minhash::THRESHOLD`]. The lookups return the earliest (lowest entry)
//! matching record in a given set of states.

use credence_store::rusqlite::{OptionalExtension, Statement, Transaction, params};

use super::lsh::BandIndex;

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

    fn includes(self, status: &str) -> bool {
        match self {
            Self::Live => status == "pending" || status == "accepted",
            Self::Accepted => status == "accepted",
        }
    }
}

/// Candidates examined per lookup (the earliest ones in scope), and taken from
/// any one bucket; bounds the cost of one lookup when massive boilerplate puts
/// thousands of records in one bucket.
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

/// The duplicate lookups of one transaction, with their statements prepared once.
///
/// Held for the whole transaction rather than taken from the statement cache per
/// record: returning a statement to rusqlite's cache clears its bindings, and
/// SQLite then re-prepares any statement whose plan looked at a bound value
/// (`col = ?` qualifies), which cost about a sixth of the ingest time.
pub(crate) struct Lookup<'tx> {
    exact: Statement<'tx>,
    load: Statement<'tx>,
    scope: Scope,
}

impl<'tx> Lookup<'tx> {
    pub(crate) fn new(tx: &'tx Transaction<'_>, scope: Scope) -> Result<Self> {
        // The earliest two suffice: at most one of them is the excluded entry.
        let exact = tx.prepare(&format!(
            "SELECT entry FROM records WHERE datanet_id = ?1 AND content_id = ?2 \
             AND status IN {} ORDER BY entry LIMIT 2",
            scope.statuses()
        ))?;
        let load = tx.prepare("SELECT status, minhash FROM records WHERE entry = ?1")?;
        Ok(Self { exact, load, scope })
    }

    /// The earliest record in scope that this one duplicates, other than `exclude`.
    /// `bands` must be caught up with the transaction (see [`BandIndex::catch_up`]).
    pub(crate) fn find(
        &mut self,
        bands: &BandIndex,
        datanet: &str,
        content_id: &Hash32,
        signature: Option<&Signature>,
        exclude: i64,
    ) -> Result<Option<Match>> {
        let mut rows = self.exact.query(params![datanet, content_id.to_string()])?;
        while let Some(row) = rows.next()? {
            let entry: i64 = row.get(0)?;
            if entry != exclude {
                return Ok(Some(Match::Exact(entry)));
            }
        }
        drop(rows);
        let Some(signature) = signature else {
            return Ok(None);
        };
        Ok(self.find_near(bands, signature, exclude)?.map(Match::Near))
    }

    fn find_near(
        &mut self,
        bands: &BandIndex,
        signature: &Signature,
        exclude: i64,
    ) -> Result<Option<i64>> {
        let mut examined = 0;
        // Ascending entries: the first match is the earliest record of the cluster.
        for slot in bands.candidates(signature, CANDIDATE_CAP) {
            let entry = bands.entry(slot);
            if entry == exclude {
                continue;
            }
            let row: Option<(String, Option<Vec<u8>>)> = self
                .load
                .query_row([entry], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            let Some((status, bytes)) = row else {
                continue;
            };
            if !self.scope.includes(&status) {
                continue;
            }
            let similar = bytes
                .as_deref()
                .and_then(Signature::from_bytes)
                .is_some_and(|other| other.similarity(signature) >= minhash::THRESHOLD);
            if similar {
                return Ok(Some(entry));
            }
            examined += 1;
            if examined == CANDIDATE_CAP {
                break;
            }
        }
        Ok(None)
    }
}
