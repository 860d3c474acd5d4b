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
//! - [`client`]: typed reads and signed transactions over JSON-RPC, the same
//!   code for the embedded chain (in-process) and any EVM node (HTTP);
//!   [`genesis::deploy`] deploys the protocol through it.
//! - [`voucher`]: EIP-712 payment vouchers for `PaymentEscrow`.
//! - [`ops`]: the user-level operations the CLI offers (deposit, stake,
//!   governance, wallets) and [`units`] for OPEN amounts.

pub mod accounts;
pub mod chain;
pub mod client;
pub mod contracts;
pub mod devnet;
mod error;
pub mod genesis;
pub mod merkle;
pub mod ops;
pub mod rpc;
pub mod units;
pub mod voucher;

pub use alloy_primitives::{Address, B256, Bytes, U256};

pub use accounts::{DEV_MNEMONIC, Wallet, dev_wallets};
pub use chain::{Block, BlockId, CallRequest, Chain, LogEntry, LogFilter, TxEntry};
pub use client::{Client, Receipt};
pub use error::{Error, Result};
pub use genesis::{ChainConfig, ChainDeployment, Deployment, ProtocolParams};
