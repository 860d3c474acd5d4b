//! The store crate's error type.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A SQLite statement or transaction failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blob store failed (I/O, missing object, …).
    #[error("blob store error: {0}")]
    Blob(#[from] object_store::Error),
    /// A blob was asked for that is not stored.
    #[error("blob {0} not found")]
    BlobNotFound(String),
    /// A stored blob's bytes no longer match its name (corruption on disk).
    #[error("blob {id} is corrupt: its bytes hash to {actual}")]
    BlobCorrupt {
        /// The name it was stored under.
        id: String,
        /// The hash of what was read.
        actual: String,
    },
    /// A string is not a blob id (64 lowercase hex digits).
    #[error("invalid blob id `{0}`: expected 64 lowercase hex digits")]
    InvalidBlobId(String),
    /// The database was written by a newer version of Credence.
    #[error(
        "database {path} is at schema version {found}, newer than this binary knows ({known}); \
         upgrade Credence"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The number of migrations this binary has.
        known: usize,
    },
    /// A directory could not be created.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}
