//! The datanet crate's error type.

use crate::ingest::LineError;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a datanet operation can fail with. Each variant is a distinct
/// kind of failure a client can act on; [`crate::http`] maps them to statuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage layer failed.
    #[error(transparent)]
    Store(#[from] credence_store::Error),
    /// A datanet, version, record or contribution does not exist.
    #[error("{what} `{id}` not found")]
    NotFound {
        /// What kind of thing was looked up.
        what: &'static str,
        /// The id or name asked for.
        id: String,
    },
    /// A field of a request is missing, malformed or out of range.
    #[error("invalid `{field}`: {message}")]
    Invalid {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A signature is malformed or does not recover to any key.
    #[error("invalid signature: {0}")]
    BadSignature(String),
    /// A signature is valid but was made by another address than the one claimed.
    #[error("signature was made by {recovered}, not by the claimed signer {claimed}")]
    WrongSigner {
        /// The address the request claims.
        claimed: String,
        /// The address the signature recovers to.
        recovered: String,
    },
    /// The signer may not do this (not a curator, not the owner, no access).
    #[error("{address} may not {action} on datanet `{datanet}`")]
    Forbidden {
        /// Who tried.
        address: String,
        /// What they tried.
        action: &'static str,
        /// Where.
        datanet: String,
    },
    /// An input exceeds a configured limit; nothing was stored.
    #[error("{what} exceeds the limit of {limit}")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// A contribution was rejected as a whole; nothing was stored.
    #[error("contribution rejected: {reason} ({} line problem(s), first: {})",
        .lines.len(), .lines.first().map_or_else(|| "none".to_owned(), ToString::to_string))]
    Rejected {
        /// Why the whole contribution was refused.
        reason: String,
        /// The line-level problems found (up to the report limit).
        lines: Vec<LineError>,
    },
    /// The request conflicts with the current state (name taken, stale parent, replay).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A bug or a failure outside the caller's control (e.g. a worker thread died).
    #[error("internal error: {0}")]
    Internal(String),
    /// Reading an input stream failed.
    #[error("cannot read input: {0}")]
    Io(#[from] std::io::Error),
}

impl From<credence_store::rusqlite::Error> for Error {
    fn from(error: credence_store::rusqlite::Error) -> Self {
        Self::Store(error.into())
    }
}

impl Error {
    /// An [`Error::Invalid`] about `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An [`Error::NotFound`].
    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            what,
            id: id.into(),
        }
    }
}
