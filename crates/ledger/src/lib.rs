//! Credence's ledger: the Solidity contracts (sources in `contracts/`,
//! compiled artifacts in `artifacts/`), typed bindings to them, and an
//! embedded EVM chain with a JSON-RPC endpoint.
//!
//! - [`contracts`]: `sol!` bindings generated from the committed artifacts.
//! - [`Chain`]: revm in-process running Cancun rules, one block per
//!   transaction, dev accounts from a mnemonic, the contracts deployed when a
//!   fresh chain starts, and every block in an fsynced append-only log (plus
//!   snapshots) so a killed node restarts with every confirmed transaction.
//! - [`rpc`]: the Ethereum JSON-RPC subset wallets and client libraries need,
//!   as an axum `Router` the node mounts.
//! - [`merkle`]: payout trees in the shape `AttributionDistributor` verifies.

pub mod accounts;
pub mod chain;
pub mod contracts;
mod error;
pub mod genesis;
pub mod merkle;
pub mod rpc;

pub use accounts::{DEV_MNEMONIC, Wallet, dev_wallets};
pub use chain::{Block, BlockId, CallRequest, Chain, LogEntry, LogFilter, TxEntry};
pub use error::{Error, Result};
pub use genesis::{ChainConfig, Deployment, ProtocolParams};
