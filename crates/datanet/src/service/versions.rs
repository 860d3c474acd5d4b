//! Versions: commit, log, diff, export and inclusion proofs.

use std::collections::BTreeMap;
use std::io::Write;

use credence_store::rusqlite::{Connection, OptionalExtension, Row, params};
use sha2::{Digest, Sha256};

use super::{Datanets, col, record_action};
use crate::hash::{Address, Hash32, action_digest, canonical_json};
use crate::merkle::{InclusionProof, MerkleTree, SCHEME};
use crate::model::{CommitRequest, Diff, DiffEntry, Manifest, Signed, Version};
use crate::{Error, Result};

impl Datanets {
    /// Commits every accepted record as a new version on top of the head.
    pub fn commit(&self, request: &Signed<CommitRequest>) -> Result<Version> {
        self.commit_with_progress(request, &mut |_| {})
    }

    /// [`Datanets::commit`], calling `progress` with the number of record ids
    /// written so far (the version is invisible until the transaction commits).
    pub fn commit_with_progress(
        &self,
        request: &Signed<CommitRequest>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Version> {
        let digest = request.verify()?;
        let commit = &request.payload;
        let datanet = self.get(&commit.datanet)?;
        if !datanet.can_curate(&request.signer) {
            return Err(Error::Forbidden {
                address: request.signer.to_string(),
                action: "commit versions",
                datanet: datanet.id,
            });
        }
        if commit.message.trim().is_empty() {
            return Err(Error::invalid("message", "a version needs a message"));
        }
        self.db.write(|tx| {
            record_action(tx, &digest, "commit", &request.signer)?;
            // Re-read the head inside the transaction: another commit may have won.
            let head = super::load(tx, &datanet.id)?
                .ok_or_else(|| Error::not_found("datanet", &datanet.id))?
                .head;
            if head != commit.parent {
                return Err(Error::Conflict(format!(
                    "the head is {}, not the parent {}; fetch the log and retry",
                    display(head),
                    display(commit.parent)
                )));
            }
            let accepted = accepted_records(tx, &datanet.id)?;
            let ids: Vec<Hash32> = accepted.iter().map(|r| r.0).collect();
            let root = MerkleTree::new(&ids).root();
            let parent = match head {
                Some(id) => Some(version(tx, &datanet.id, &id)?),
                None => None,
            };
            if parent.as_ref().map_or(ids.is_empty(), |p| p.root == root) {
                return Err(Error::Conflict("nothing to commit".into()));
            }
            let mut version = Version {
                id: Hash32::default(),
                datanet: datanet.id.clone(),
                number: parent.as_ref().map_or(1, |p| p.number + 1),
                parent: head,
                message: commit.message.clone(),
                author: request.signer,
                time: commit.time,
                root,
                records: ids.len() as u64,
            };
            version.id = action_digest("version", &version)?;
            tx.execute(
                "INSERT INTO versions (id, datanet_id, number, parent, message, author, time, \
                 root, records, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    version.id.to_string(),
                    version.datanet,
                    version.number,
                    version.parent.map(|p| p.to_string()),
                    version.message,
                    version.author.to_string(),
                    version.time,
                    version.root.to_string(),
                    version.records as i64,
                    request.signature.to_string()
                ],
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO version_records (version_id, content_id, entry) VALUES (?1, ?2, ?3)",
            )?;
            for (written, (id, entry)) in accepted.iter().enumerate() {
                insert.execute(params![version.id.to_string(), id.to_string(), entry])?;
                if (written + 1) % 256 == 0 {
                    progress(written as u64 + 1);
                }
            }
            tx.execute(
                "UPDATE datanets SET head = ?2 WHERE id = ?1",
                params![datanet.id, version.id.to_string()],
            )?;
            Ok(version)
        })
    }

    /// Every version of a datanet, newest first.
    pub fn log(&self, datanet: &str) -> Result<Vec<Version>> {
        self.get(datanet)?;
        self.db.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "{VERSION_SELECT} WHERE datanet_id = ?1 ORDER BY number DESC"
            ))?;
            let rows = stmt.query_map([datanet], RawVersion::from_row)?;
            rows.map(|r| r.map_err(Error::from).and_then(RawVersion::into_version))
                .collect()
        })
    }

    /// One version.
    pub fn version(&self, datanet: &str, id: &Hash32) -> Result<Version> {
        self.db.read(|conn| version(conn, datanet, id))
    }

    /// Records added and removed from `from` (or the empty datanet) to `to`.
    pub fn diff(&self, datanet: &str, from: Option<&Hash32>, to: &Hash32) -> Result<Diff> {
        let net = self.get(datanet)?;
        self.db.read(|conn| {
            if let Some(from) = from {
                version(conn, &net.id, from)?;
            }
            version(conn, &net.id, to)?;
            let from_text = from.map(ToString::to_string).unwrap_or_default();
            let to_text = to.to_string();
            Ok(Diff {
                from: from.copied(),
                to: *to,
                added: only_in(conn, &to_text, &from_text)?,
                removed: only_in(conn, &from_text, &to_text)?,
            })
        })
    }

    /// Writes a version as JSONL, one record per line in record-id order, each the
    /// record's canonical form plus its `id`; returns the manifest. Same version,
    /// same bytes, on any machine.
    pub fn export(
        &self,
        datanet: &str,
        id: &Hash32,
        reader: Option<&Address>,
        out: &mut dyn Write,
    ) -> Result<Manifest> {
        let net = self.get(datanet)?;
        self.db.read(|conn| {
            super::access::check_read(conn, &net, reader)?;
            let version = version(conn, &net.id, id)?;
            let mut stmt = conn.prepare(
                "SELECT v.content_id, r.body, r.contributor FROM version_records v \
                 JOIN records r ON r.entry = v.entry WHERE v.version_id = ?1 \
                 ORDER BY v.content_id",
            )?;
            let mut rows = stmt.query([id.to_string()])?;
            let mut hasher = Sha256::new();
            let mut contributors = BTreeMap::new();
            while let Some(row) = rows.next()? {
                let record: Hash32 = col(&row.get::<_, String>(0)?)?;
                let line = export_line(&record, &row.get::<_, String>(1)?)?;
                hasher.update(line.as_bytes());
                out.write_all(line.as_bytes())?;
                contributors.insert(record, col(&row.get::<_, String>(2)?)?);
            }
            out.flush()?;
            Ok(Manifest {
                datanet: net.id.clone(),
                version: version.id,
                root: version.root,
                scheme: SCHEME.into(),
                records: contributors.len() as u64,
                export_sha256: Hash32(hasher.finalize().into()),
                contributors,
            })
        })
    }

    /// A standalone proof that `record` is in version `id`.
    pub fn prove(
        &self,
        datanet: &str,
        id: &Hash32,
        record: &Hash32,
        reader: Option<&Address>,
    ) -> Result<InclusionProof> {
        let net = self.get(datanet)?;
        self.db.read(|conn| {
            super::access::check_read(conn, &net, reader)?;
            let version = version(conn, &net.id, id)?;
            let mut stmt = conn.prepare(
                "SELECT content_id FROM version_records WHERE version_id = ?1 ORDER BY content_id",
            )?;
            let ids = stmt
                .query_map([id.to_string()], |row| row.get::<_, String>(0))?
                .map(|r| r.map_err(Error::from).and_then(|t| col(&t)))
                .collect::<Result<Vec<Hash32>>>()?;
            let index = ids
                .binary_search(record)
                .map_err(|_| Error::not_found("record in this version", record.to_string()))?;
            let tree = MerkleTree::new(&ids);
            let proof = tree
                .proof(index)
                .ok_or_else(|| Error::not_found("record in this version", record.to_string()))?;
            Ok(InclusionProof {
                scheme: SCHEME.into(),
                datanet: net.id.clone(),
                version: version.id,
                root: version.root,
                record: *record,
                proof,
            })
        })
    }
}

fn display(id: Option<Hash32>) -> String {
    id.map_or_else(|| "none".into(), |id| id.to_string())
}

fn export_line(record: &Hash32, body: &str) -> Result<String> {
    let mut value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| Error::invalid("record body", e.to_string()))?;
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("id".into(), serde_json::Value::String(record.to_string()));
    }
    Ok(canonical_json(&value) + "\n")
}

fn accepted_records(conn: &Connection, datanet: &str) -> Result<Vec<(Hash32, i64)>> {
    let mut stmt = conn.prepare(
        "SELECT content_id, entry FROM records WHERE datanet_id = ?1 AND status = 'accepted' \
         ORDER BY content_id",
    )?;
    let rows = stmt.query_map([datanet], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))?;
    rows.map(|r| {
        let (id, entry) = r?;
        Ok((col(&id)?, entry))
    })
    .collect()
}

fn only_in(conn: &Connection, version: &str, other: &str) -> Result<Vec<DiffEntry>> {
    let mut stmt = conn.prepare(
        "SELECT v.content_id, r.contributor FROM version_records v \
         JOIN records r ON r.entry = v.entry WHERE v.version_id = ?1 \
         AND v.content_id NOT IN (SELECT content_id FROM version_records WHERE version_id = ?2) \
         ORDER BY v.content_id",
    )?;
    let rows = stmt.query_map([version, other], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    rows.map(|r| {
        let (id, contributor) = r?;
        Ok(DiffEntry {
            id: col(&id)?,
            contributor: col(&contributor)?,
        })
    })
    .collect()
}

const VERSION_SELECT: &str = "SELECT id, datanet_id, number, parent, message, author, time, \
    root, records FROM versions";

struct RawVersion {
    id: String,
    datanet: String,
    number: i64,
    parent: Option<String>,
    message: String,
    author: String,
    time: i64,
    root: String,
    records: i64,
}

impl RawVersion {
    fn from_row(row: &Row<'_>) -> credence_store::rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            datanet: row.get(1)?,
            number: row.get(2)?,
            parent: row.get(3)?,
            message: row.get(4)?,
            author: row.get(5)?,
            time: row.get(6)?,
            root: row.get(7)?,
            records: row.get(8)?,
        })
    }

    fn into_version(self) -> Result<Version> {
        Ok(Version {
            id: col(&self.id)?,
            datanet: self.datanet,
            number: self.number,
            parent: self.parent.as_deref().map(col).transpose()?,
            message: self.message,
            author: col(&self.author)?,
            time: self.time,
            root: col(&self.root)?,
            records: self.records as u64,
        })
    }
}

fn version(conn: &Connection, datanet: &str, id: &Hash32) -> Result<Version> {
    conn.query_row(
        &format!("{VERSION_SELECT} WHERE id = ?1 AND datanet_id = ?2"),
        params![id.to_string(), datanet],
        RawVersion::from_row,
    )
    .optional()?
    .ok_or_else(|| Error::not_found("version", id.to_string()))?
    .into_version()
}
