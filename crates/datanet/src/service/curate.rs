//! Curator decisions, record listings and contributor reputation.
//!
//! The rule that makes payment unambiguous: within a cluster of exact or near
//! copies, only the first record a curator accepts is ever accepted. Accepting
//! a record that copies an already accepted one turns it into a duplicate
//! instead, so at most one record of a cluster is in any version.

use credence_store::rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::dedup::{Lookup, Scope};
use super::lsh::BandIndex;
use super::{Datanets, col, record_action};
use crate::hash::{Address, Hash32};
use crate::minhash::Signature;
use crate::model::{Decision, DecisionOutcome, RecordInfo, Reputation, Review, Signed, Status};
use crate::record::Example;
use crate::{Error, Result};

impl Datanets {
    /// Applies a curator's signed decisions, all or none.
    pub fn review(&self, request: &Signed<Review>) -> Result<Vec<DecisionOutcome>> {
        let digest = request.verify()?;
        let review = &request.payload;
        let datanet = self.get(&review.datanet)?;
        if !datanet.can_curate(&request.signer) {
            return Err(Error::Forbidden {
                address: request.signer.to_string(),
                action: "review records",
                datanet: datanet.id,
            });
        }
        if review.decisions.is_empty() {
            return Err(Error::invalid("decisions", "no decisions"));
        }
        self.write_indexed(&datanet.id, |tx, bands| {
            record_action(tx, &digest, "review", &request.signer)?;
            let mut lookup = Lookup::new(tx, Scope::Accepted)?;
            review
                .decisions
                .iter()
                .map(|decision| {
                    decide(
                        tx,
                        &mut lookup,
                        bands,
                        &datanet.id,
                        decision,
                        &request.signer,
                    )
                })
                .collect()
        })
    }

    /// Records of a datanet in entry order, optionally only those in one state,
    /// starting after entry `after`, at most `limit`.
    pub fn records(
        &self,
        datanet: &str,
        status: Option<Status>,
        after: i64,
        limit: usize,
        reader: Option<&Address>,
    ) -> Result<Vec<RecordInfo>> {
        let net = self.get(datanet)?;
        self.db.read(|conn| {
            super::access::check_read(conn, &net, reader)?;
            let mut stmt = conn.prepare_cached(&format!(
                "{RECORD_SELECT} WHERE r.datanet_id = ?1 AND r.entry > ?2 \
                 AND (?3 IS NULL OR r.status = ?3) ORDER BY r.entry LIMIT ?4"
            ))?;
            let rows = stmt.query_map(
                params![datanet, after, status.map(Status::as_str), limit as i64],
                RawRecord::from_row,
            )?;
            rows.map(|row| row.map_err(Error::from).and_then(RawRecord::into_info))
                .collect()
        })
    }

    /// Accepted, rejected, flagged and pending counts per contributor, by address.
    pub fn reputation(&self, datanet: &str) -> Result<Vec<Reputation>> {
        self.get(datanet)?;
        self.db.read(|conn| reputation(conn, datanet))
    }
}

const RECORD_SELECT: &str = "SELECT r.entry, r.content_id, r.body, r.contributor, \
    r.contribution_id, c.source, r.line, r.status, r.duplicate_of, r.reason \
    FROM records r JOIN contributions c ON c.id = r.contribution_id";

struct RawRecord {
    entry: i64,
    id: String,
    body: String,
    contributor: String,
    contribution: String,
    source: String,
    line: i64,
    status: String,
    duplicate_of: Option<i64>,
    reason: Option<String>,
}

impl RawRecord {
    fn from_row(row: &Row<'_>) -> credence_store::rusqlite::Result<Self> {
        Ok(Self {
            entry: row.get(0)?,
            id: row.get(1)?,
            body: row.get(2)?,
            contributor: row.get(3)?,
            contribution: row.get(4)?,
            source: row.get(5)?,
            line: row.get(6)?,
            status: row.get(7)?,
            duplicate_of: row.get(8)?,
            reason: row.get(9)?,
        })
    }

    fn into_info(self) -> Result<RecordInfo> {
        let example: Example = serde_json::from_str(&self.body)
            .map_err(|e| Error::invalid("record body", e.to_string()))?;
        Ok(RecordInfo {
            entry: self.entry,
            id: col(&self.id)?,
            example,
            contributor: col(&self.contributor)?,
            contribution: col(&self.contribution)?,
            source: self.source,
            line: self.line,
            status: Status::parse(&self.status)?,
            duplicate_of: self.duplicate_of,
            reason: self.reason,
        })
    }
}

fn decide(
    tx: &Transaction<'_>,
    lookup: &mut Lookup<'_>,
    bands: &BandIndex,
    datanet: &str,
    decision: &Decision,
    curator: &Address,
) -> Result<DecisionOutcome> {
    let row: Option<(String, Option<Vec<u8>>, String)> = tx
        .query_row(
            "SELECT content_id, minhash, status FROM records WHERE entry = ?1 AND datanet_id = ?2",
            params![decision.entry, datanet],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    let Some((content_id, minhash, status)) = row else {
        return Err(Error::not_found("record", decision.entry.to_string()));
    };
    let outcome = |status, duplicate_of| DecisionOutcome {
        entry: decision.entry,
        status,
        duplicate_of,
    };
    if !decision.accept {
        if decision.reason.trim().is_empty() {
            return Err(Error::invalid("reason", "a rejection needs a reason"));
        }
        set_status(
            tx,
            decision.entry,
            Status::Rejected,
            None,
            Some(&decision.reason),
            curator,
        )?;
        return Ok(outcome(Status::Rejected, None));
    }
    if Status::parse(&status)? == Status::Accepted {
        return Ok(outcome(Status::Accepted, None));
    }
    let content_id: Hash32 = col(&content_id)?;
    let signature = minhash.as_deref().and_then(Signature::from_bytes);
    let owner = lookup.find(
        bands,
        datanet,
        &content_id,
        signature.as_ref(),
        decision.entry,
    )?;
    match owner {
        Some(found) => {
            let entry = found.entry();
            let reason = format!("copy of accepted entry {entry}");
            set_status(
                tx,
                decision.entry,
                Status::Duplicate,
                Some(entry),
                Some(&reason),
                curator,
            )?;
            Ok(outcome(Status::Duplicate, Some(entry)))
        }
        None => {
            set_status(tx, decision.entry, Status::Accepted, None, None, curator)?;
            Ok(outcome(Status::Accepted, None))
        }
    }
}

fn set_status(
    tx: &Transaction<'_>,
    entry: i64,
    status: Status,
    duplicate_of: Option<i64>,
    reason: Option<&str>,
    curator: &Address,
) -> Result<()> {
    tx.prepare_cached(
        "UPDATE records SET status = ?2, duplicate_of = ?3, reason = ?4, reviewed_by = ?5 \
         WHERE entry = ?1",
    )?
    .execute(params![
        entry,
        status.as_str(),
        duplicate_of,
        reason,
        curator.to_string()
    ])?;
    Ok(())
}

fn reputation(conn: &Connection, datanet: &str) -> Result<Vec<Reputation>> {
    let mut by_address = std::collections::BTreeMap::<String, Reputation>::new();
    let mut stmt = conn.prepare(
        "SELECT contributor, status, count(*) FROM records WHERE datanet_id = ?1 \
         GROUP BY contributor, status",
    )?;
    let rows = stmt.query_map([datanet], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (address, status, count) = row?;
        let rep = slot(&mut by_address, address)?;
        let count = count as u64;
        match Status::parse(&status)? {
            Status::Accepted => rep.accepted += count,
            Status::Rejected => rep.rejected += count,
            Status::Duplicate => rep.flagged += count,
            Status::Pending => rep.pending += count,
        }
    }
    let mut stmt = conn.prepare(
        "SELECT contributor, sum(bad_lines) FROM contributions WHERE datanet_id = ?1 \
         GROUP BY contributor",
    )?;
    let rows = stmt.query_map([datanet], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (address, bad) = row?;
        slot(&mut by_address, address)?.rejected += bad as u64;
    }
    Ok(by_address.into_values().collect())
}

fn slot(
    map: &mut std::collections::BTreeMap<String, Reputation>,
    address: String,
) -> Result<&mut Reputation> {
    let parsed: Address = col(&address)?;
    Ok(map.entry(address).or_insert(Reputation {
        address: parsed,
        accepted: 0,
        rejected: 0,
        flagged: 0,
        pending: 0,
    }))
}
