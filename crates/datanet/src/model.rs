//! The datanet domain types: datanets, signed actions, records, versions, reports.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::hash::{Address, Hash32, action_digest};
use crate::ingest::{Format, LineError};
use crate::record::Example;
use crate::sign::{LocalSigner, Signature, verify};
use crate::{Error, Result};

/// Who may read a datanet's versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Anyone.
    Public,
    /// The owner, the curators, and addresses the owner granted access.
    Permissioned,
}

impl Visibility {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Permissioned => "permissioned",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        match text {
            "public" => Ok(Self::Public),
            "permissioned" => Ok(Self::Permissioned),
            other => Err(Error::invalid("visibility", format!("unknown `{other}`"))),
        }
    }
}

/// A datanet as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Datanet {
    /// Unique name, also its id: lowercase letters, digits and `-`.
    pub id: String,
    /// What it is for.
    pub description: String,
    /// Domain tags.
    pub tags: Vec<String>,
    /// License of the data (SPDX id or free text).
    pub license: String,
    /// Who created it and grants access.
    pub owner: Address,
    /// Who may read it.
    pub visibility: Visibility,
    /// Who may accept and reject records and commit versions, besides the owner.
    pub curators: Vec<Address>,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// The latest version, if any.
    pub head: Option<Hash32>,
}

/// An action that is signed by an address before a datanet applies it.
pub trait Action: Serialize + DeserializeOwned {
    /// The name mixed into the signed digest (see [`action_digest`]).
    const KIND: &'static str;
}

/// A payload with the address that claims it and that address's EIP-191 signature
/// over [`action_digest`] of the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "T: Action")]
pub struct Signed<T: Action> {
    /// What is asked.
    pub payload: T,
    /// Who asks.
    pub signer: Address,
    /// Their signature.
    pub signature: Signature,
}

impl<T: Action> Signed<T> {
    /// Signs `payload` with a local key.
    pub fn sign(payload: T, signer: &LocalSigner) -> Result<Self> {
        let digest = action_digest(T::KIND, &payload)?;
        Ok(Self {
            payload,
            signer: signer.address(),
            signature: signer.sign(&digest),
        })
    }

    /// The digest that was signed.
    pub fn digest(&self) -> Result<Hash32> {
        action_digest(T::KIND, &self.payload)
    }

    /// Checks the signature against the claimed signer; returns the digest.
    pub fn verify(&self) -> Result<Hash32> {
        let digest = self.digest()?;
        verify(&digest, &self.signature, &self.signer)?;
        Ok(digest)
    }
}

/// Create a datanet; signed by its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateDatanet {
    /// The datanet's name and id.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Domain tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// License of the data.
    pub license: String,
    /// Who may read it.
    pub visibility: Visibility,
    /// Curators besides the owner.
    #[serde(default)]
    pub curators: Vec<Address>,
}

impl Action for CreateDatanet {
    const KIND: &'static str = "create-datanet";
}

/// The header of a contribution; signed by the contributor. Its digest is the
/// contribution's content hash and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContributionHeader {
    /// The datanet contributed to (so the signature cannot be replayed elsewhere).
    pub datanet: String,
    /// SHA-256 of the uploaded file's bytes, exactly as uploaded.
    pub file_sha256: Hash32,
    /// How the file is to be read.
    pub format: Format,
    /// The file's name, for the records' provenance.
    pub source: String,
}

impl Action for ContributionHeader {
    const KIND: &'static str = "contribution";
}

/// One curator decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The record's entry number in the datanet.
    pub entry: i64,
    /// Accept, or reject.
    pub accept: bool,
    /// Why (required when rejecting).
    #[serde(default)]
    pub reason: String,
}

/// Curator decisions on records; signed by a curator or the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// The datanet.
    pub datanet: String,
    /// The decisions, applied in order.
    pub decisions: Vec<Decision>,
    /// Unix milliseconds when signed; makes each review a distinct, non-replayable action.
    pub time: i64,
}

impl Action for Review {
    const KIND: &'static str = "review";
}

/// Commit the accepted records as a new version; signed by a curator or the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRequest {
    /// The datanet.
    pub datanet: String,
    /// The version this one follows: must be the current head.
    pub parent: Option<Hash32>,
    /// What changed.
    pub message: String,
    /// Unix seconds; becomes the version's time.
    pub time: i64,
}

impl Action for CommitRequest {
    const KIND: &'static str = "commit";
}

/// Ask for read access to a permissioned datanet; signed by the asker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    /// The datanet.
    pub datanet: String,
    /// Why access is wanted.
    #[serde(default)]
    pub message: String,
    /// Unix milliseconds when signed.
    pub time: i64,
}

impl Action for AccessRequest {
    const KIND: &'static str = "access-request";
}

/// Grant or deny an address read access; signed by the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessDecision {
    /// The datanet.
    pub datanet: String,
    /// Who is granted or denied.
    pub address: Address,
    /// Grant (true) or deny (false).
    pub grant: bool,
    /// Unix milliseconds when signed.
    pub time: i64,
}

impl Action for AccessDecision {
    const KIND: &'static str = "access-decision";
}

/// Add or remove a curator; signed by the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CuratorChange {
    /// The datanet.
    pub datanet: String,
    /// Who becomes or stops being a curator.
    pub address: Address,
    /// Add (true) or remove (false).
    pub add: bool,
    /// Unix milliseconds when signed; makes each change a distinct, non-replayable action.
    pub time: i64,
}

impl Action for CuratorChange {
    const KIND: &'static str = "curator-change";
}

/// Proof, for one request over HTTP, that the caller holds an address that may
/// read a permissioned datanet; signed by that address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadPermit {
    /// The datanet.
    pub datanet: String,
    /// Unix seconds after which the permit is void (keeps a leaked permit short-lived).
    pub expires: i64,
}

impl Action for ReadPermit {
    const KIND: &'static str = "read";
}

/// Where a record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Passed the automatic checks; awaiting a curator.
    Pending,
    /// Accepted by a curator: goes into the next version and can earn.
    Accepted,
    /// Rejected by a curator.
    Rejected,
    /// An exact or near copy of an earlier record; never earns.
    Duplicate,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Duplicate => "duplicate",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        match text {
            "pending" => Ok(Self::Pending),
            "accepted" => Ok(Self::Accepted),
            "rejected" => Ok(Self::Rejected),
            "duplicate" => Ok(Self::Duplicate),
            other => Err(Error::invalid("status", format!("unknown `{other}`"))),
        }
    }
}

impl std::str::FromStr for Status {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        Self::parse(text)
    }
}

/// A stored record with its provenance and curation state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordInfo {
    /// Entry number within the node (identifies this copy).
    pub entry: i64,
    /// Content id (SHA-256 of the canonical form).
    pub id: Hash32,
    /// The example.
    pub example: Example,
    /// Who contributed it.
    pub contributor: Address,
    /// The contribution it came in.
    pub contribution: Hash32,
    /// The uploaded file's name.
    pub source: String,
    /// 1-based line in that file.
    pub line: i64,
    /// Curation state.
    pub status: Status,
    /// For duplicates, the entry that owns the cluster.
    pub duplicate_of: Option<i64>,
    /// Why it was rejected or flagged.
    pub reason: Option<String>,
}

/// What ingesting a contribution did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContributionReport {
    /// The contribution id (the signed content hash).
    pub id: Hash32,
    /// The contributor.
    pub contributor: Address,
    /// Bytes read.
    pub bytes: u64,
    /// Records stored as pending.
    pub pending: u64,
    /// Records stored flagged as exact duplicates.
    pub exact_duplicates: u64,
    /// Records stored flagged as near duplicates.
    pub near_duplicates: u64,
    /// Lines that produced no record (malformed, empty, too long).
    pub bad_lines: u64,
    /// The first of those problems, with line numbers.
    pub problems: Vec<LineError>,
}

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionOutcome {
    /// The entry decided on.
    pub entry: i64,
    /// Its state afterwards.
    pub status: Status,
    /// Set when an accept was refused because an accepted copy already exists.
    pub duplicate_of: Option<i64>,
}

/// A committed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Content id of the version header.
    pub id: Hash32,
    /// The datanet.
    pub datanet: String,
    /// 1 for the first version, then 2, 3, …
    pub number: i64,
    /// The previous version.
    pub parent: Option<Hash32>,
    /// The commit message.
    pub message: String,
    /// Who committed it.
    pub author: Address,
    /// When (Unix seconds, as signed by the author).
    pub time: i64,
    /// Merkle root over the sorted record ids (see [`crate::merkle`]).
    pub root: Hash32,
    /// Number of records.
    pub records: u64,
}

/// One record in a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffEntry {
    /// Content id.
    pub id: Hash32,
    /// Its contributor.
    pub contributor: Address,
}

/// Records added and removed between two versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    /// The older version (`None`: the empty datanet).
    pub from: Option<Hash32>,
    /// The newer version.
    pub to: Hash32,
    /// In `to` but not in `from`, sorted by id.
    pub added: Vec<DiffEntry>,
    /// In `from` but not in `to`, sorted by id.
    pub removed: Vec<DiffEntry>,
}

/// A contributor's standing in a datanet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reputation {
    /// The contributor.
    pub address: Address,
    /// Records accepted by a curator.
    pub accepted: u64,
    /// Records rejected by a curator, plus lines rejected by the automatic checks.
    pub rejected: u64,
    /// Records flagged as duplicates.
    pub flagged: u64,
    /// Records awaiting review.
    pub pending: u64,
}

/// Access state of one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// The datanet.
    pub datanet: String,
    /// The address.
    pub address: Address,
    /// `requested`, `granted` or `denied`.
    pub status: String,
    /// The requester's message.
    pub message: String,
}

/// The manifest written next to an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The datanet.
    pub datanet: String,
    /// The version exported.
    pub version: Hash32,
    /// Its Merkle root.
    pub root: Hash32,
    /// The Merkle scheme.
    pub scheme: String,
    /// Number of records (lines in the export).
    pub records: u64,
    /// SHA-256 of the exported JSONL bytes.
    pub export_sha256: Hash32,
    /// Record id → contributor, sorted by id.
    pub contributors: std::collections::BTreeMap<Hash32, Address>,
}
