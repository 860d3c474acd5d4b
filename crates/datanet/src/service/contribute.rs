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
use std::sync::mpsc;

use credence_store::rusqlite::{Statement, Transaction, params};

use super::dedup::{Lookup, Match, Scope};
use super::lsh::BandIndex;
use super::{Datanets, now};
use crate::hash::{Address, Hash32};
use crate::ingest::{self, Format, Item, Limits, LineError, Tee};
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

/// Records parsed and hashed together; MinHash signatures, the costliest part of
/// ingest, are computed for a batch on up to [`MAX_WORKERS`] threads.
const BATCH: usize = 256;

/// Batches waiting for the database thread, beyond the one being parsed.
const BATCHES_IN_FLIGHT: usize = 2;

/// Most threads hashing one batch.
const MAX_WORKERS: usize = 4;

/// How often (in records) progress is reported.
const PROGRESS_EVERY: u64 = 256;

struct Ingest<'a, 'tx> {
    /// Prepared once per contribution (see [`Lookup`] for why not cached).
    lookup: Lookup<'tx>,
    insert: Statement<'tx>,
    datanet: &'a str,
    contribution: String,
    contributor: String,
    limits: &'a Limits,
    report: ContributionReport,
}

/// An item with the per-record work done (canonical form, content id, MinHash)
/// on the parsing thread, so the database thread only looks up
/// and inserts.
enum Prepared {
    Record {
        line: u64,
        canonical: String,
        id: Hash32,
        signature: Option<Signature>,
    },
    Bad(LineError),
}

impl Prepared {
    fn of(item: Item) -> Self {
        match item {
            Item::Bad(problem) => Self::Bad(problem),
            Item::Record { line, example } => {
                let canonical = example.canonical();
                let signature = Signature::of(&example.text());
                Self::Record {
                    line,
                    id: Hash32::sha256(canonical.as_bytes()),
                    canonical,
                    signature,
                }
            }
        }
    }
}

/// [`Prepared::of`] for every item, in order, split over `workers` threads.
fn prepare(mut items: Vec<Item>, workers: usize) -> Vec<Prepared> {
    let per_thread = items.len().div_ceil(workers.max(1)).max(1);
    if items.len() <= per_thread {
        return items.into_iter().map(Prepared::of).collect();
    }
    let mut chunks = Vec::with_capacity(workers);
    while items.len() > per_thread {
        let rest = items.split_off(per_thread);
        chunks.push(std::mem::replace(&mut items, rest));
    }
    chunks.push(items);
    std::thread::scope(|scope| {
        let mut chunks = chunks.into_iter();
        let first = chunks.next().unwrap_or_default();
        let others: Vec<_> = chunks
            .map(|chunk| {
                scope.spawn(move || chunk.into_iter().map(Prepared::of).collect::<Vec<_>>())
            })
            .collect();
        let mut out: Vec<Prepared> = first.into_iter().map(Prepared::of).collect();
        for handle in others {
            // A panic here is a bug; pass it on to the parsing thread's join.
            out.extend(
                handle
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
            );
        }
        out
    })
}

impl<'a, 'tx> Ingest<'a, 'tx> {
    fn new(
        tx: &'tx Transaction<'_>,
        datanet: &'a str,
        header: &Signed<ContributionHeader>,
        id: Hash32,
        limits: &'a Limits,
    ) -> Result<Self> {
        Ok(Self {
            lookup: Lookup::new(tx, Scope::Live)?,
            insert: tx.prepare(
                "INSERT INTO records (datanet_id, content_id, contribution_id, contributor, \
                 line, body, minhash, status, duplicate_of, reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?,
            datanet,
            contribution: id.to_string(),
            contributor: header.signer.to_string(),
            limits,
            report: empty_report(id, header.signer),
        })
    }

    fn add(&mut self, bands: &mut BandIndex, item: Prepared) -> Result<()> {
        let (line, canonical, id, signature) = match item {
            Prepared::Bad(problem) => return self.bad(problem),
            Prepared::Record {
                line,
                canonical,
                id,
                signature,
            } => (line, canonical, id, signature),
        };
        if self.stored() >= self.limits.max_records as u64 {
            return Err(Error::TooLarge {
                what: "records in one contribution",
                limit: self.limits.max_records as u64,
            });
        }
        let found = self
            .lookup
            .find(bands, self.datanet, &id, signature.as_ref(), -1)?;
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
        let entry = self.insert.insert(params![
            self.datanet,
            id.to_string(),
            self.contribution,
            self.contributor,
            line as i64,
            canonical,
            signature.as_ref().map(Signature::to_bytes),
            status.as_str(),
            found.map(Match::entry),
            reason
        ])?;
        if let Some(signature) = &signature {
            bands.insert(entry, signature)?;
        }
        Ok(())
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
    /// called as the file is read. The reader is read on a parsing thread (hence
    /// `Send`) while this thread writes the records, all in one transaction.
    pub fn contribute(
        &self,
        header: &Signed<ContributionHeader>,
        reader: impl Read + Send,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ContributionReport> {
        let id = header.verify()?;
        let spec = &header.payload;
        ingest::validate(&spec.format)?;
        let datanet = self.get(&spec.datanet)?;
        let mut tee = Tee::new(reader, self.blobs.writer()?, self.limits.max_file_bytes);
        let limits = self.limits;
        self.write_indexed(&datanet.id, |tx, bands| {
            insert_contribution(tx, &id, header)?;
            let mut ingest = Ingest::new(tx, &datanet.id, header, id, &limits)?;
            let (parsed, consumed) = pipeline(
                &mut tee,
                &spec.format,
                &limits,
                &mut ingest,
                bands,
                progress,
            );
            consumed?;
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

/// Parses and hashes `tee` on other threads while `ingest` stores the records on
/// this one (which holds the transaction); the bounded channel between them keeps
/// a few batches of records in memory. Returns the parsing side's result and the
/// storing side's: when storing fails, the parser stops at its next batch.
fn pipeline<R: Read + Send>(
    tee: &mut Tee<R>,
    format: &Format,
    limits: &Limits,
    ingest: &mut Ingest<'_, '_>,
    bands: &mut BandIndex,
    progress: &mut dyn FnMut(Progress),
) -> (Result<()>, Result<()>) {
    let counter = tee.counter();
    std::thread::scope(|scope| {
        let (send, receive) = mpsc::sync_channel::<Vec<Prepared>>(BATCHES_IN_FLIGHT);
        let parser = scope.spawn(move || parse_in_batches(tee, format, limits, &send));
        let consumed = receive.iter().flatten().try_for_each(|item| {
            ingest.add(bands, item)?;
            let stored = ingest.stored();
            if stored.is_multiple_of(PROGRESS_EVERY) {
                progress(Progress {
                    bytes: counter.load(Ordering::Relaxed),
                    records: stored,
                });
            }
            Ok::<_, Error>(())
        });
        // Unblocks the parser if we stopped early.
        drop(receive);
        let parsed = parser
            .join()
            .unwrap_or_else(|_| Err(Error::Internal("the parsing thread panicked".into())));
        (parsed, consumed)
    })
}

/// Parses `reader`, sending [`Prepared`] items in batches of [`BATCH`].
fn parse_in_batches(
    reader: impl Read,
    format: &Format,
    limits: &Limits,
    send: &mpsc::SyncSender<Vec<Prepared>>,
) -> Result<()> {
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(MAX_WORKERS);
    // A closed channel means the storing side failed; its error is the one reported.
    let stopped = |_| Error::Internal("ingest stopped".into());
    let mut batch = Vec::with_capacity(BATCH);
    ingest::parse(reader, format, limits, &mut |item| {
        batch.push(item);
        if batch.len() == BATCH {
            let items = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            send.send(prepare(items, workers)).map_err(stopped)?;
        }
        Ok(())
    })?;
    send.send(prepare(batch, workers)).map_err(stopped)
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
