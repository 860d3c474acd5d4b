//! Ingesting a signed contribution.
//!
//! Policy for bad lines: a malformed, empty or oversized line is reported with
//! its line number and skipped, and the rest of the file is ingested. A signed
//! file is the contributor's whole statement, and one stray line in a hundred
//! thousand should not cost them the rest; the skipped lines are counted
//! against their reputation as automatic rejections. But when more than
//! [`Limits::max_bad_lines`] lines are bad, or no line is good, the file is
//! almost certainly in the wrong format or mapping, and the whole contribution
//! is rejected so the contributor fixes it instead of half of it landing.
//! Limits on file size and record count also reject the whole contribution.
//! In every rejection nothing is stored (the transaction rolls back).

use std::io::Read;
use std::sync::atomic::Ordering;

use credence_store::rusqlite::{Transaction, params};

use super::dedup::{self, Match, Scope};
use super::{Datanets, now};
use crate::hash::{Address, Hash32};
use crate::ingest::{self, Item, Limits, LineError, Tee};
use crate::minhash::Signature;
use crate::model::{ContributionHeader, ContributionReport, Signed, Status};
use crate::{Error, Result};

/// How far an ingest has got, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the file read so far.
    pub bytes: u64,
    /// Records stored so far.
    pub records: u64,
}

/// Line problems kept in a report (all are counted).
const REPORTED_PROBLEMS: usize = 100;

/// How often (in records) progress is reported.
const PROGRESS_EVERY: u64 = 256;

struct Ingest<'a> {
    datanet: &'a str,
    contribution: String,
    contributor: String,
    limits: &'a Limits,
    report: ContributionReport,
}

impl Ingest<'_> {
    fn add(&mut self, tx: &Transaction<'_>, item: Item) -> Result<()> {
        match item {
            Item::Bad(problem) => self.bad(problem),
            Item::Record { line, example } => {
                let stored = self.report.pending
                    + self.report.exact_duplicates
                    + self.report.near_duplicates;
                if stored >= self.limits.max_records as u64 {
                    return Err(Error::TooLarge {
                        what: "records in one contribution",
                        limit: self.limits.max_records as u64,
                    });
                }
                let id = example.content_id();
                let signature = Signature::of(&example.text());
                let found =
                    dedup::find(tx, self.datanet, &id, signature.as_ref(), Scope::Live, -1)?;
                let (status, reason) = match found {
                    None => {
                        self.report.pending += 1;
                        (Status::Pending, None)
                    }
                    Some(Match::Exact(entry)) => {
                        self.report.exact_duplicates += 1;
                        (
                            Status::Duplicate,
                            Some(format!("exact copy of entry {entry}")),
                        )
                    }
                    Some(Match::Near(entry)) => {
                        self.report.near_duplicates += 1;
                        (
                            Status::Duplicate,
                            Some(format!("near copy of entry {entry}")),
                        )
                    }
                };
                tx.prepare_cached(
                    "INSERT INTO records (datanet_id, content_id, contribution_id, contributor, \
                     line, body, minhash, status, duplicate_of, reason) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?
                .execute(params![
                    self.datanet,
                    id.to_string(),
                    self.contribution,
                    self.contributor,
                    line as i64,
                    example.canonical(),
                    signature.as_ref().map(Signature::to_bytes),
                    status.as_str(),
                    found.map(Match::entry),
                    reason
                ])?;
                if let Some(signature) = &signature {
                    dedup::index(tx, self.datanet, tx.last_insert_rowid(), signature)?;
                }
                Ok(())
            }
        }
    }

    fn bad(&mut self, problem: LineError) -> Result<()> {
        self.report.bad_lines += 1;
        if self.report.problems.len() < REPORTED_PROBLEMS {
            self.report.problems.push(problem);
        }
        if self.report.bad_lines > self.limits.max_bad_lines as u64 {
            return Err(Error::Rejected {
                reason: format!(
                    "more than {} bad lines; check the format and column mapping",
                    self.limits.max_bad_lines
                ),
                lines: std::mem::take(&mut self.report.problems),
            });
        }
        Ok(())
    }

    fn stored(&self) -> u64 {
        self.report.pending + self.report.exact_duplicates + self.report.near_duplicates
    }
}

impl Datanets {
    /// Verifies and ingests a contribution read from `reader`, which must hold
    /// exactly the bytes whose SHA-256 the contributor signed. `progress` is
    /// called as the file is read.
    pub fn contribute(
        &self,
        header: &Signed<ContributionHeader>,
        reader: impl Read,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ContributionReport> {
        let id = header.verify()?;
        let spec = &header.payload;
        ingest::validate(&spec.format)?;
        let datanet = self.get(&spec.datanet)?;
        let mut tee = Tee::new(reader, self.blobs.writer()?, self.limits.max_file_bytes);
        let counter = tee.counter();
        let limits = self.limits;
        self.db.write(|tx| {
            insert_contribution(tx, &id, header)?;
            let mut ingest = Ingest {
                datanet: &datanet.id,
                contribution: id.to_string(),
                contributor: header.signer.to_string(),
                limits: &limits,
                report: empty_report(id, header.signer),
            };
            let parsed = ingest::parse(&mut tee, &spec.format, &limits, &mut |item| {
                ingest.add(tx, item)?;
                let stored = ingest.stored();
                if stored.is_multiple_of(PROGRESS_EVERY) {
                    let bytes = counter.load(Ordering::Relaxed);
                    progress(Progress {
                        bytes,
                        records: stored,
                    });
                }
                Ok(())
            });
            if tee.exceeded() {
                return Err(Error::TooLarge {
                    what: "uploaded file (bytes)",
                    limit: limits.max_file_bytes,
                });
            }
            parsed?;
            let (file_sha256, blob, bytes) = tee.finish()?;
            if file_sha256 != spec.file_sha256 {
                return Err(Error::invalid(
                    "file_sha256",
                    format!(
                        "the signed hash is {}, the uploaded bytes hash to {file_sha256}",
                        spec.file_sha256
                    ),
                ));
            }
            if ingest.stored() == 0 {
                return Err(Error::Rejected {
                    reason: "no valid record in the file".into(),
                    lines: std::mem::take(&mut ingest.report.problems),
                });
            }
            ingest.report.bytes = bytes;
            finish_contribution(tx, &ingest.report, &blob.to_string())?;
            progress(Progress {
                bytes,
                records: ingest.stored(),
            });
            Ok(ingest.report)
        })
    }
}

fn empty_report(id: Hash32, contributor: Address) -> ContributionReport {
    ContributionReport {
        id,
        contributor,
        bytes: 0,
        pending: 0,
        exact_duplicates: 0,
        near_duplicates: 0,
        bad_lines: 0,
        problems: Vec::new(),
    }
}

fn insert_contribution(
    tx: &Transaction<'_>,
    id: &Hash32,
    header: &Signed<ContributionHeader>,
) -> Result<()> {
    let header_json = serde_json::to_string(&header.payload)
        .map_err(|e| Error::invalid("header", e.to_string()))?;
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO contributions (id, datanet_id, contributor, signature, header, \
         source, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            id.to_string(),
            header.payload.datanet,
            header.signer.to_string(),
            header.signature.to_string(),
            header_json,
            header.payload.source,
            now()
        ],
    )?;
    if inserted == 0 {
        return Err(Error::Conflict(format!(
            "contribution {id} was already ingested"
        )));
    }
    Ok(())
}

fn finish_contribution(
    tx: &Transaction<'_>,
    report: &ContributionReport,
    blob: &str,
) -> Result<()> {
    let problems = serde_json::to_string(&report.problems).unwrap_or_else(|_| "[]".into());
    let records = report.pending + report.exact_duplicates + report.near_duplicates;
    tx.execute(
        "UPDATE contributions SET blob = ?2, bytes = ?3, records = ?4, bad_lines = ?5, \
         report = ?6 WHERE id = ?1",
        params![
            report.id.to_string(),
            blob,
            report.bytes as i64,
            records as i64,
            report.bad_lines as i64,
            problems
        ],
    )?;
    Ok(())
}
