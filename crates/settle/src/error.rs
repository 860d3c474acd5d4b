//! The crate's one error type.

use alloy_primitives::Address;

/// Everything settlement can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A paid call has too little prepaid balance behind it.
    #[error("{0}")]
    PaymentRequired(String),
    /// A voucher is malformed, signed by someone else or for another node or chain.
    #[error("invalid voucher: {0}")]
    InvalidVoucher(String),
    /// A voucher lower than one already accepted from the same payer.
    #[error(
        "stale voucher: cumulative amount {given} is below the {latest} already accepted from \
         {payer}; sign a voucher for at least {latest}"
    )]
    StaleVoucher {
        /// The payer.
        payer: Address,
        /// The voucher's cumulative amount.
        given: u128,
        /// The latest accepted cumulative amount.
        latest: u128,
    },
    /// Prices or a fee split handed in by the node are inconsistent.
    #[error("invalid terms: {0}")]
    InvalidTerms(String),
    /// A request names something malformed (an address, an id).
    #[error("{0}")]
    InvalidRequest(String),
    /// Something asked for does not exist (receipt, epoch, account).
    #[error("{0}")]
    NotFound(String),
    /// The book and the chain disagree in a way settlement cannot repair by itself.
    #[error("settlement state conflict: {0}")]
    Conflict(String),
    /// A batch of receipts could not be committed (none of it was written).
    #[error("recording failed: {0}")]
    Commit(String),
    /// The settlement database holds something this code cannot read.
    #[error("corrupt settlement data: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] credence_store::Error),
    /// A chain call failed.
    #[error("chain: {0}")]
    Chain(#[from] credence_ledger::Error),
}

impl From<credence_store::rusqlite::Error> for Error {
    fn from(e: credence_store::rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
