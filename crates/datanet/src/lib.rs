//! Datanets: versioned, signed, curated community datasets.
//!
//! A datanet collects training examples from many contributors and makes it
//! unambiguous who contributed which record, which records a version contains,
//! and that nobody is paid twice for the same content:
//!
//! - contributors sign each uploaded file with an EVM key (EIP-191, [`sign`]);
//! - uploads are parsed as a stream ([`ingest`]: JSONL, CSV, text, Markdown)
//!   into normalised records with content ids ([`record`]);
//! - automatic checks flag empty, oversize, malformed, exactly and nearly
//!   duplicated records ([`minhash`]); curators accept or reject the rest, and
//!   the first accepted record of a duplicate cluster is the only one that counts;
//! - accepted records are committed into versions with a Merkle root that a
//!   contract can check inclusion proofs against ([`merkle`]);
//! - permissioned datanets are readable only by addresses the owner granted.
//!
//! [`Datanets`] is the entry point; [`http::router`] exposes it under `/v1/datanets`.

pub mod error;
pub mod hash;
pub mod http;
pub mod ingest;
pub mod merkle;
pub mod minhash;
pub mod model;
pub mod record;
mod schema;
mod service;
pub mod sign;

pub use error::{Error, Result};
pub use hash::{Address, Hash32};
pub use service::{Datanets, Progress, now_millis};
