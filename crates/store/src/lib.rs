//! Storage for Credence's domain crates: content-addressed blobs and
//! transactional metadata.
//!
//! - [`Blobs`] keeps immutable byte objects (uploaded files, exports) through
//!   `object_store`, on a local directory by default. Objects are named by the
//!   SHA-256 of their bytes, so writing the same content twice is harmless and
//!   a reader can check what it got.
//! - [`Database`] is one SQLite file in WAL mode with numbered migrations
//!   (tracked in `PRAGMA user_version`) and write transactions that either
//!   commit whole or leave nothing behind.
//!
//! The crash-safety recipe for callers: write blobs first (an interrupted blob
//! write leaves at most an unreferenced object), then record everything that
//! refers to them in one [`Database::write`] transaction.
//!
//! The API is synchronous: SQLite is, and local blob I/O is cheap. Async callers
//! run it inside `tokio::task::spawn_blocking` (see [`Blobs`]).

mod blobs;
mod db;
mod error;

pub use blobs::{BlobId, BlobWriter, Blobs};
pub use db::{Database, Migration};
pub use error::{Error, Result};
/// The SQLite binding this crate uses, so callers write queries against the same version.
pub use rusqlite;
