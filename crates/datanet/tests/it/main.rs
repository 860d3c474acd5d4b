//! Integration tests for datanets: real SQLite files, real blobs on disk, real
//! secp256k1 signatures.

mod bad_input;
mod common;
mod crash;
mod curators;
mod flow;
mod http;
mod multipart;
mod props;
