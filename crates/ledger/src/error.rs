//! The crate's one error type.

use std::path::PathBuf;

use alloy_primitives::Bytes;

/// Everything that can go wrong in the ledger. Transaction-level variants carry
/// the geth-style message that Ethereum clients match on (see `rpc::error`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file in the chain directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The chain directory holds data this code cannot restore.
    #[error("corrupt chain data: {0}")]
    Corrupt(String),
    /// The dev mnemonic or a derivation path was invalid.
    #[error("invalid mnemonic: {0}")]
    Mnemonic(String),
    /// A raw transaction could not be decoded or its signature recovered.
    #[error("invalid transaction: {0}")]
    InvalidTransaction(String),
    /// The transaction is well-formed but the chain refuses it (nonce, funds,
    /// fees, chain id…); the message follows geth's wording.
    #[error("{0}")]
    Rejected(String),
    /// The call or transaction reverted; `output` is the revert data.
    #[error("execution reverted")]
    Reverted {
        /// ABI-encoded revert reason or custom error.
        output: Bytes,
    },
    /// Execution stopped abnormally (out of gas, invalid opcode…).
    #[error("execution halted: {0}")]
    Halted(String),
    /// A block, transaction or state the request names does not exist here.
    #[error("{0}")]
    NotFound(String),
    /// Deploying the genesis contracts failed (a bug, not bad input).
    #[error("genesis deployment failed: {0}")]
    Genesis(String),
    /// The EVM reported an internal failure.
    #[error("evm failure: {0}")]
    Evm(String),
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
