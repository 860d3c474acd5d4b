//! [`Datanets`]: the datanet operations over one store.
//!
//! Every operation that changes state verifies its signature first, then runs
//! in one SQLite write transaction, so it is applied whole or not at all, also
//! when the process is killed half-way. Signed actions are recorded by digest
//! and refused if replayed.

mod access;
mod contribute;
mod curate;
mod dedup;
mod lsh;
mod versions;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use credence_store::rusqlite::{OptionalExtension, Row, Transaction, params};
use credence_store::{Blobs, Database};

pub use contribute::Progress;

use self::lsh::BandIndex;
use crate::hash::{Address, Hash32};
use crate::ingest::Limits;
use crate::model::{CreateDatanet, Datanet, Signed, Visibility};
use crate::schema::MIGRATIONS;
use crate::{Error, Result};

/// The datanets of one node: metadata in `<dir>/datanets.sqlite`, uploaded
/// files as blobs under `<dir>/blobs`.
#[derive(Debug)]
pub struct Datanets {
    db: Database,
    blobs: Blobs,
    limits: Limits,
    /// Each datanet's LSH band index, built from the database on first use.
    bands: Mutex<HashMap<String, BandIndex>>,
}

/// Current Unix time in seconds.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Current Unix time in milliseconds (for signed actions' `time` fields).
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Parses a hex column written by this crate.
pub(crate) fn col<T: std::str::FromStr<Err = Error>>(text: &str) -> Result<T> {
    text.parse()
}

impl Datanets {
    /// Opens (creating if needed) the datanets stored in `dir`.
    pub fn open(dir: &Path, limits: Limits) -> Result<Self> {
        let db = Database::open(&dir.join("datanets.sqlite"), MIGRATIONS)?;
        let blobs = Blobs::local(&dir.join("blobs"))?;
        Ok(Self {
            db,
            blobs,
            limits,
            bands: Mutex::default(),
        })
    }

    /// Runs `f` in one write transaction with the band index of `datanet`, caught
    /// up with the database first. If the write fails (and is rolled back), what
    /// `f` added to the index is dropped too, so index and database stay in step.
    fn write_indexed<T>(
        &self,
        datanet: &str,
        f: impl FnOnce(&Transaction<'_>, &mut BandIndex) -> Result<T>,
    ) -> Result<T> {
        // Taken before the database's write lock, everywhere, so the two never deadlock.
        let mut all = self.bands_lock();
        let bands = all.entry(datanet.to_owned()).or_default();
        let mark = bands.mark();
        let result = self.db.write(|tx| {
            bands.catch_up(tx, datanet)?;
            f(tx, bands)
        });
        if result.is_err() {
            bands.undo(mark);
        }
        result
    }

    fn bands_lock(&self) -> MutexGuard<'_, HashMap<String, BandIndex>> {
        self.bands.lock().unwrap_or_else(|poisoned| {
            // A panic mid-write rolled the transaction back but not the index:
            // forget every index; they are rebuilt from the database on next use.
            let mut all = poisoned.into_inner();
            all.clear();
            self.bands.clear_poison();
            all
        })
    }

    /// The limits applied to contributions.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The blob store (uploaded files are kept there by content hash).
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// Creates a datanet owned by the signer.
    pub fn create(&self, request: &Signed<CreateDatanet>) -> Result<Datanet> {
        let digest = request.verify()?;
        let spec = &request.payload;
        validate_name(&spec.name)?;
        if spec.license.trim().is_empty() {
            return Err(Error::invalid("license", "must not be empty"));
        }
        let mut curators = spec.curators.clone();
        curators.sort();
        curators.dedup();
        let created_at = now();
        self.db.write(|tx| {
            record_action(tx, &digest, "create-datanet", &request.signer)?;
            if load(tx, &spec.name)?.is_some() {
                return Err(Error::Conflict(format!(
                    "datanet `{}` already exists",
                    spec.name
                )));
            }
            let tags = serde_json::to_string(&spec.tags).unwrap_or_else(|_| "[]".into());
            tx.execute(
                "INSERT INTO datanets (id, description, tags, license, owner, visibility, \
                 created_at, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    spec.name,
                    spec.description,
                    tags,
                    spec.license,
                    request.signer.to_string(),
                    spec.visibility.as_str(),
                    created_at,
                    request.signature.to_string()
                ],
            )?;
            for curator in &curators {
                tx.execute(
                    "INSERT INTO curators (datanet_id, address) VALUES (?1, ?2)",
                    params![spec.name, curator.to_string()],
                )?;
            }
            load(tx, &spec.name)?.ok_or_else(|| Error::not_found("datanet", &spec.name))
        })
    }

    /// One datanet.
    pub fn get(&self, id: &str) -> Result<Datanet> {
        self.db
            .read(|conn| load(conn, id))?
            .ok_or_else(|| Error::not_found("datanet", id))
    }

    /// Every datanet, by name.
    pub fn list(&self) -> Result<Vec<Datanet>> {
        self.db.read(|conn| {
            let mut stmt = conn.prepare("SELECT id FROM datanets ORDER BY id")?;
            let ids = stmt
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.extend(load(conn, &id)?);
            }
            Ok(out)
        })
    }
}

/// Names are ids in URLs and on chain: keep them short and unambiguous.
fn validate_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            "use 1 to 64 lowercase letters, digits and `-`, not starting with `-`",
        ))
    }
}

/// Refuses a signed action seen before (replay), and remembers this one.
pub(crate) fn record_action(
    tx: &Transaction<'_>,
    digest: &Hash32,
    kind: &str,
    signer: &Address,
) -> Result<()> {
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO actions (digest, kind, signer, at) VALUES (?1, ?2, ?3, ?4)",
        params![digest.to_string(), kind, signer.to_string(), now()],
    )?;
    if inserted == 0 {
        return Err(Error::Conflict(format!(
            "this signed {kind} was already applied (replay)"
        )));
    }
    Ok(())
}

pub(crate) fn load(
    conn: &credence_store::rusqlite::Connection,
    id: &str,
) -> Result<Option<Datanet>> {
    let row = conn
        .query_row(
            "SELECT id, description, tags, license, owner, visibility, created_at, head \
             FROM datanets WHERE id = ?1",
            [id],
            row_strings,
        )
        .optional()?;
    let Some((id, description, tags, license, owner, visibility, created_at, head)) = row else {
        return Ok(None);
    };
    let mut stmt =
        conn.prepare_cached("SELECT address FROM curators WHERE datanet_id = ?1 ORDER BY address")?;
    let curators = stmt
        .query_map([&id], |row| row.get::<_, String>(0))?
        .map(|a| a.map_err(Error::from).and_then(|a| col(&a)))
        .collect::<Result<Vec<Address>>>()?;
    Ok(Some(Datanet {
        id,
        description,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        license,
        owner: col(&owner)?,
        visibility: Visibility::parse(&visibility)?,
        curators,
        created_at,
        head: head.as_deref().map(col).transpose()?,
    }))
}

type DatanetRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
);

fn row_strings(row: &Row<'_>) -> credence_store::rusqlite::Result<DatanetRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

impl Datanet {
    /// Whether `address` may curate (accept, reject, commit).
    pub fn can_curate(&self, address: &Address) -> bool {
        self.owner == *address || self.curators.contains(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("medical-qa-2").is_ok());
        for bad in ["", "-x", "Upper", "a b", "x/y", &"a".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
