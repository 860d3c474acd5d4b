//! Who may do what: read access to permissioned datanets (signed requests and
//! owner-signed grants) and owner-signed curator changes.

use credence_store::rusqlite::{Connection, OptionalExtension, params};

use super::{Datanets, now, record_action};
use crate::hash::Address;
use crate::model::{
    Access, AccessDecision, AccessRequest, CuratorChange, Datanet, Signed, Visibility,
};
use crate::{Error, Result};

impl Datanets {
    /// Records a signed request for read access by the signer.
    pub fn request_access(&self, request: &Signed<AccessRequest>) -> Result<Access> {
        let digest = request.verify()?;
        let ask = &request.payload;
        let datanet = self.get(&ask.datanet)?;
        if datanet.visibility == Visibility::Public {
            return Err(Error::invalid("datanet", "is public; anyone may read it"));
        }
        self.db.write(|tx| {
            record_action(tx, &digest, "access-request", &request.signer)?;
            // A new request never downgrades an existing grant.
            tx.execute(
                "INSERT INTO access (datanet_id, address, status, message, signature, updated_at) \
                 VALUES (?1, ?2, 'requested', ?3, ?4, ?5) \
                 ON CONFLICT (datanet_id, address) DO UPDATE SET message = excluded.message \
                 WHERE status != 'granted'",
                params![
                    datanet.id,
                    request.signer.to_string(),
                    ask.message,
                    request.signature.to_string(),
                    now()
                ],
            )?;
            access(tx, &datanet.id, &request.signer)
        })
    }

    /// Applies the owner's signed grant or denial.
    pub fn decide_access(&self, request: &Signed<AccessDecision>) -> Result<Access> {
        let digest = request.verify()?;
        let decision = &request.payload;
        let datanet = self.get(&decision.datanet)?;
        if request.signer != datanet.owner {
            return Err(Error::Forbidden {
                address: request.signer.to_string(),
                action: "grant access",
                datanet: datanet.id,
            });
        }
        let status = if decision.grant { "granted" } else { "denied" };
        self.db.write(|tx| {
            record_action(tx, &digest, "access-decision", &request.signer)?;
            tx.execute(
                "INSERT INTO access (datanet_id, address, status, message, signature, updated_at) \
                 VALUES (?1, ?2, ?3, '', ?4, ?5) \
                 ON CONFLICT (datanet_id, address) DO UPDATE SET status = excluded.status, \
                 signature = excluded.signature, updated_at = excluded.updated_at",
                params![
                    datanet.id,
                    decision.address.to_string(),
                    status,
                    request.signature.to_string(),
                    now()
                ],
            )?;
            access(tx, &datanet.id, &decision.address)
        })
    }

    /// Applies the owner's signed change to the curators; returns the datanet as
    /// it is afterwards. Adding a curator twice or removing a non-curator is refused
    /// (409), so a change that does nothing never looks applied.
    pub fn change_curator(&self, request: &Signed<CuratorChange>) -> Result<Datanet> {
        let digest = request.verify()?;
        let change = &request.payload;
        let datanet = self.get(&change.datanet)?;
        if request.signer != datanet.owner {
            return Err(Error::Forbidden {
                address: request.signer.to_string(),
                action: "change curators",
                datanet: datanet.id,
            });
        }
        if change.address == datanet.owner {
            return Err(Error::invalid(
                "address",
                "is the owner, who always curates",
            ));
        }
        let address = change.address.to_string();
        self.db.write(|tx| {
            record_action(tx, &digest, "curator-change", &request.signer)?;
            let changed = if change.add {
                tx.execute(
                    "INSERT OR IGNORE INTO curators (datanet_id, address) VALUES (?1, ?2)",
                    params![datanet.id, address],
                )?
            } else {
                tx.execute(
                    "DELETE FROM curators WHERE datanet_id = ?1 AND address = ?2",
                    params![datanet.id, address],
                )?
            };
            if changed == 0 {
                let state = if change.add { "already" } else { "not" };
                return Err(Error::Conflict(format!(
                    "{address} is {state} a curator of `{}`",
                    datanet.id
                )));
            }
            super::load(tx, &datanet.id)?.ok_or_else(|| Error::not_found("datanet", &datanet.id))
        })
    }

    /// The datanet, if `reader` may read it: the check every consumer of a
    /// datanet's records makes first — export, proofs, diffs, listings, and
    /// training, which must call it with the trainer's address before reading a
    /// version (or read through [`Datanets::export`], which calls it). Anyone may
    /// read a public datanet; a permissioned one needs the owner, a curator, or an
    /// address the owner granted access. Fails with [`Error::Forbidden`] otherwise,
    /// and [`Error::NotFound`] for an unknown datanet.
    pub fn authorize_read(&self, datanet: &str, reader: Option<&Address>) -> Result<Datanet> {
        let net = self.get(datanet)?;
        self.db.read(|conn| check_read(conn, &net, reader))?;
        Ok(net)
    }

    /// Every access request and decision of a datanet.
    pub fn access_list(&self, datanet: &str) -> Result<Vec<Access>> {
        self.get(datanet)?;
        self.db.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT address, status, message FROM access WHERE datanet_id = ?1 ORDER BY address",
            )?;
            let rows = stmt.query_map([datanet], |row| {
                Ok((row.get::<_, String>(0)?, row.get(1)?, row.get(2)?))
            })?;
            rows.map(|r| {
                let (address, status, message) = r?;
                Ok(Access {
                    datanet: datanet.to_owned(),
                    address: address.parse()?,
                    status,
                    message,
                })
            })
            .collect()
        })
    }
}

fn access(conn: &Connection, datanet: &str, address: &Address) -> Result<Access> {
    let row: Option<(String, String)> = conn
        .query_row(
            "SELECT status, message FROM access WHERE datanet_id = ?1 AND address = ?2",
            params![datanet, address.to_string()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let (status, message) = row.ok_or_else(|| Error::not_found("access", address.to_string()))?;
    Ok(Access {
        datanet: datanet.to_owned(),
        address: *address,
        status,
        message,
    })
}

/// Fails unless `reader` may read `datanet`: anyone for public datanets; for
/// permissioned ones the owner, the curators and granted addresses.
pub(crate) fn check_read(
    conn: &Connection,
    datanet: &Datanet,
    reader: Option<&Address>,
) -> Result<()> {
    if datanet.visibility == Visibility::Public {
        return Ok(());
    }
    let forbidden = |address: String| Error::Forbidden {
        address,
        action: "read",
        datanet: datanet.id.clone(),
    };
    let Some(reader) = reader else {
        return Err(forbidden("an anonymous caller".into()));
    };
    if datanet.can_curate(reader) {
        return Ok(());
    }
    let status: Option<String> = conn
        .query_row(
            "SELECT status FROM access WHERE datanet_id = ?1 AND address = ?2",
            params![datanet.id, reader.to_string()],
            |row| row.get(0),
        )
        .optional()?;
    match status.as_deref() {
        Some("granted") => Ok(()),
        _ => Err(forbidden(reader.to_string())),
    }
}
