//! Durable chain data: an append-only log of mined blocks (the source of
//! truth) and periodic snapshots (a cache that makes restarts fast).
//!
//! A transaction is confirmed to its sender only after its log record is
//! fsynced, so a kill at any instant loses at most a transaction nobody was
//! told about. Snapshots and the genesis file are written to a temporary file,
//! fsynced and renamed, so they are either the old or the new version.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use alloy_primitives::{Bytes, keccak256};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

const HEADER: usize = 4 + 8; // payload length + checksum
const KIND_TX: u8 = 1;
const KIND_EMPTY: u8 = 2;

/// One mined block as the log stores it: enough to re-execute it exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub number: u64,
    pub timestamp: u64,
    /// The EIP-2718 transaction, or `None` for an empty block.
    pub tx: Option<Bytes>,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let body: &[u8] = self.tx.as_ref().map_or(&[], |b| b);
        let mut payload = Vec::with_capacity(17 + body.len());
        payload.push(if self.tx.is_some() {
            KIND_TX
        } else {
            KIND_EMPTY
        });
        payload.extend_from_slice(&self.number.to_le_bytes());
        payload.extend_from_slice(&self.timestamp.to_le_bytes());
        payload.extend_from_slice(body);
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&keccak256(&payload)[..8]);
        out.extend_from_slice(&payload);
        out
    }

    /// Parses the record at the start of `buf`: `Ok(None)` when `buf` holds
    /// only part of one (a torn tail), `Err` when the bytes are not a record.
    fn decode(buf: &[u8]) -> std::result::Result<Option<(Self, usize)>, String> {
        let Some((len, rest)) = buf.split_first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*len) as usize;
        let Some((sum, rest)) = rest.split_first_chunk::<8>() else {
            return Ok(None);
        };
        let Some(payload) = rest.get(..len) else {
            return Ok(None);
        };
        if keccak256(payload)[..8] != sum[..] {
            return Err("checksum mismatch".into());
        }
        let (Some((&kind, rest)), true) = (payload.split_first(), len >= 17) else {
            return Err("record too short".into());
        };
        let number = u64::from_le_bytes(rest[..8].try_into().map_err(|_| "number")?);
        let timestamp = u64::from_le_bytes(rest[8..16].try_into().map_err(|_| "timestamp")?);
        let tx = match kind {
            KIND_TX => Some(Bytes::copy_from_slice(&rest[16..])),
            KIND_EMPTY => None,
            other => return Err(format!("unknown record kind {other}")),
        };
        Ok(Some((
            Self {
                number,
                timestamp,
                tx,
            },
            HEADER + len,
        )))
    }
}

/// The append-only block log.
#[derive(Debug)]
pub(crate) struct BlockLog {
    path: PathBuf,
    file: File,
}

impl BlockLog {
    /// Opens (creating if needed) and reads every record. A partial record at
    /// the very end — a write cut short by a crash, never confirmed — is cut
    /// off; damage anywhere else is an error, because a confirmed block
    /// would be lost.
    pub(crate) fn open(path: &Path) -> Result<(Self, Vec<Record>)> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
        let mut records = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            match Record::decode(&buf[at..]) {
                Ok(Some((rec, used))) => {
                    records.push(rec);
                    at += used;
                }
                Ok(None) => break,
                // A bad checksum on the last record is also a torn write
                // (the length made it to disk, not all of the payload).
                Err(_) if Self::is_last(&buf[at..]) => break,
                Err(e) => {
                    return Err(Error::Corrupt(format!(
                        "{} at byte {at}: {e}",
                        path.display()
                    )));
                }
            }
        }
        if at < buf.len() {
            tracing::warn!(path = %path.display(), bytes = buf.len() - at, "dropping torn tail of block log");
            file.set_len(at as u64).map_err(|e| Error::io(path, e))?;
            file.sync_all().map_err(|e| Error::io(path, e))?;
        }
        Ok((
            Self {
                path: path.to_owned(),
                file,
            },
            records,
        ))
    }

    fn is_last(buf: &[u8]) -> bool {
        buf.get(..4)
            .and_then(|l| l.try_into().ok())
            .map(|l: [u8; 4]| HEADER + u32::from_le_bytes(l) as usize >= buf.len())
            .unwrap_or(true)
    }

    /// Appends a record and waits until it is on disk.
    pub(crate) fn append(&mut self, record: &Record) -> Result<()> {
        self.file
            .write_all(&record.encode())
            .map_err(|e| Error::io(&self.path, e))?;
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }
}

/// Writes `value` as JSON atomically: temp file, fsync, rename, fsync dir.
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec(value).map_err(|e| Error::Corrupt(e.to_string()))?;
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(&body).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u64) -> Record {
        Record {
            number: n,
            timestamp: 100 + n,
            tx: (n % 2 == 1).then(|| Bytes::from(vec![n as u8; 40])),
        }
    }

    #[test]
    fn records_round_trip_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocks.log");
        let (mut log, read) = BlockLog::open(&path).unwrap();
        assert!(read.is_empty());
        for n in 1..=5 {
            log.append(&rec(n)).unwrap();
        }
        drop(log);
        let (_, read) = BlockLog::open(&path).unwrap();
        assert_eq!(read, (1..=5).map(rec).collect::<Vec<_>>());
    }

    #[test]
    fn torn_tail_is_dropped_at_every_cut_point() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocks.log");
        let (mut log, _) = BlockLog::open(&path).unwrap();
        log.append(&rec(1)).unwrap();
        log.append(&rec(2)).unwrap();
        drop(log);
        let full = std::fs::read(&path).unwrap();
        let first = rec(1).encode().len();
        for cut in first..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (mut log, read) = BlockLog::open(&path).unwrap();
            assert_eq!(read, vec![rec(1)], "cut at {cut}");
            // The log keeps working after the repair.
            log.append(&rec(2)).unwrap();
            drop(log);
            assert_eq!(BlockLog::open(&path).unwrap().1, vec![rec(1), rec(2)]);
        }
    }

    #[test]
    fn damage_before_the_tail_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocks.log");
        let (mut log, _) = BlockLog::open(&path).unwrap();
        log.append(&rec(1)).unwrap();
        log.append(&rec(2)).unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 3] ^= 0xff; // inside the first record's payload
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(BlockLog::open(&path), Err(Error::Corrupt(_))));
    }
}
