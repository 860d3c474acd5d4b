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
    /// The call or transaction reverted; `output` is the revert data (the
    /// message names the contract error when it is one of ours).
    #[error("execution reverted{}", describe_revert(output))]
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
    /// A JSON-RPC endpoint answered with an error object (code and message as
    /// the server sent them; `data` is whatever extra it attached).
    #[error("JSON-RPC error {code}: {message}")]
    Rpc {
        /// The JSON-RPC error code, e.g. -32000.
        code: i64,
        /// The server's message.
        message: String,
        /// The server's `data`, if any.
        data: Option<serde_json::Value>,
    },
    /// The endpoint could not be reached or its answer was not JSON-RPC.
    #[error("transport: {0}")]
    Transport(String),
    /// The endpoint's answer was JSON-RPC but not the shape the method promises.
    #[error("unexpected response: {0}")]
    BadResponse(String),
    /// A transaction was asked for from a client that has no signing key.
    #[error("no signer: this operation sends a transaction and needs a wallet")]
    NoSigner,
    /// Bad user input (an amount, a key file, a deployment file…).
    #[error("{0}")]
    Invalid(String),
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

/// `": <reason>"` for revert data the protocol's ABIs can decode: a
/// `require` message, a panic, or a custom error with its arguments.
fn describe_revert(output: &Bytes) -> String {
    use alloy_sol_types::{Panic, Revert, SolError, SolInterface};

    use crate::contracts::{
        attribution_distributor::AttributionDistributor::AttributionDistributorErrors as A,
        contribution_votes::ContributionVotes::ContributionVotesErrors as V,
        credence_governor::CredenceGovernor::CredenceGovernorErrors as G,
        credence_timelock::CredenceTimelock::CredenceTimelockErrors as T,
        datanet_registry::DatanetRegistry::DatanetRegistryErrors as D,
        model_registry::ModelRegistry::ModelRegistryErrors as M,
        open_token::OpenToken::OpenTokenErrors as O,
        payment_escrow::PaymentEscrow::PaymentEscrowErrors as P,
        staking::Staking::StakingErrors as S,
    };

    if output.is_empty() {
        return String::new();
    }
    if let Ok(r) = Revert::abi_decode(output) {
        return format!(": {}", r.reason);
    }
    if let Ok(p) = Panic::abi_decode(output) {
        return format!(": panic {p:?}");
    }
    // `Debug` of an error enum is `Name(Name { fields })`; the inner part
    // alone reads better.
    let shown = |debug: String| {
        let inner = debug
            .split_once('(')
            .and_then(|(_, rest)| rest.strip_suffix(')'))
            .map(str::to_owned);
        format!(": {}", inner.unwrap_or(debug))
    };
    macro_rules! try_decode {
        ($($e:ident),*) => {$(
            if let Ok(e) = $e::abi_decode(output) {
                return shown(format!("{e:?}"));
            }
        )*};
    }
    try_decode!(P, S, A, D, M, O, G, T, V);
    format!(" (data {output})")
}
