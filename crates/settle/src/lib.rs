//! Settlement of paid calls: every answer the node sells becomes a durable
//! receipt split among the people behind it, and every epoch their
//! cumulative earnings are posted on-chain for them to claim.
//!
//! ```text
//! caller ── voucher (EIP-712, cumulative) ──▶ Gate::authorize ── 402 if not covered
//!                                                 │ Hold (reserved max fee)
//!          generation ……………………………………………………… Hold::settle ──▶ Book: receipt + shares
//!                                                                      │
//! Settler::run (every epoch): redeem vouchers ─▶ seal epoch ─▶ postEpoch(root, receiptsRoot)
//!                             ─▶ finalize after the challenge window ─▶ proofs for claims
//! ```
//!
//! - [`split`]: prices, fee splits and the call's attribution record, split
//!   exactly (shares always add up to the fee).
//! - [`book`]: the SQLite book (vouchers, receipts, shares, epochs, leaves),
//!   one transaction per change so a kill never loses or doubles a receipt.
//! - [`gate`]: authorisation before generation and receipts after it.
//! - [`settler`]: the chain side, through `credence_ledger::Client`, so the
//!   embedded chain and any EVM endpoint run the same code; every step reads
//!   the chain first and is safe to repeat after a crash.
//! - [`http`]: `/v1/billing`, `/v1/receipts`, `/v1/epochs`, `/v1/earnings`.
//!
//! This crate knows the contracts and the book; it does not know how calls
//! are served or how attribution is computed (the node hands in terms).

pub mod amount;
pub mod book;
mod error;
pub mod gate;
mod group;
pub mod http;
pub mod receipt;
pub mod settler;
pub mod split;
pub mod voucher;

pub use book::{Book, Epoch, PayerState, Totals, VoucherUpdate};
pub use error::{Error, Result};
pub use gate::{CallTerms, EscrowView, Gate, Hold};
pub use receipt::{NewReceipt, Receipt};
pub use settler::{ClaimProof, GasReport, RunReport, Settler};
pub use split::{AdapterTerms, FeeSplit, Role, Share};
pub use voucher::{SignedVoucher, VOUCHER_HEADER, VoucherDomain};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
