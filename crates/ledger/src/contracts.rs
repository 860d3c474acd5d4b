//! Typed bindings generated from the committed artifacts (`artifacts/*.json`,
//! produced by `scripts/contracts/build.mjs`). Each module holds the call,
//! event and error types plus `BYTECODE` (creation code) and
//! `DEPLOYED_BYTECODE`, so nothing here needs a Solidity compiler. Each
//! contract gets its own module because several ABIs mention the same
//! OpenZeppelin library types (e.g. `Checkpoints`).
#![allow(missing_docs, unreachable_pub, clippy::too_many_arguments)]

/// `OpenToken` (its module also holds the library types its ABI mentions).
pub mod open_token {
    alloy_sol_types::sol!(
        #[sol(all_derives)]
        OpenToken,
        "artifacts/OpenToken.json"
    );
}
pub use open_token::OpenToken;
/// `ContributionVotes` (its module also holds the library types its ABI mentions).
pub mod contribution_votes {
    alloy_sol_types::sol!(
        #[sol(all_derives)]
        ContributionVotes,
        "artifacts/ContributionVotes.json"
    );
}
pub use contribution_votes::ContributionVotes;
/// `CredenceTimelock` (its module also holds the library types its ABI mentions).
pub mod credence_timelock {
    alloy_sol_types::sol!(
        #[sol(all_derives)]
        CredenceTimelock,
        "artifacts/CredenceTimelock.json"
    );
}
pub use credence_timelock::CredenceTimelock;
/// `CredenceGovernor` (its module also holds the library types its ABI mentions).
pub mod credence_governor {
    alloy_sol_types::sol!(
        #[sol(all_derives)]
        CredenceGovernor,
        "artifacts/CredenceGovernor.json"
    );
}
pub use credence_governor::CredenceGovernor;
/// `DatanetRegistry` (its module also holds the library types its ABI mentions).
pub mod datanet_registry {
    alloy_sol_types::sol!(
        #[sol(all_derives)]
        DatanetRegistry,
        "artifacts/DatanetRegistry.json"
    );
}
pub use datanet_registry::DatanetRegistry;
/// `ModelRegistry` (its module also holds the library types its ABI mentions).
pub mod model_registry {
    alloy_sol_types::sol!(
        #[sol(all_derives)]
        ModelRegistry,
        "artifacts/ModelRegistry.json"
    );
}
pub use model_registry::ModelRegistry;
/// `PaymentEscrow` (its module also holds the library types its ABI mentions).
pub mod payment_escrow {
    alloy_sol_types::sol!(
        #[sol(all_derives)]
        PaymentEscrow,
        "artifacts/PaymentEscrow.json"
    );
}
pub use payment_escrow::PaymentEscrow;
/// `AttributionDistributor` (its module also holds the library types its ABI mentions).
pub mod attribution_distributor {
    alloy_sol_types::sol!(
        #[sol(all_derives)]
        AttributionDistributor,
        "artifacts/AttributionDistributor.json"
    );
}
pub use attribution_distributor::AttributionDistributor;
/// `Staking` (its module also holds the library types its ABI mentions).
pub mod staking {
    alloy_sol_types::sol!(
        #[sol(all_derives)]
        Staking,
        "artifacts/Staking.json"
    );
}
pub use staking::Staking;

/// The EIP-712 voucher a payer signs for `PaymentEscrow`, declared in
/// Solidity syntax so its type hash and signing hash come from `sol!`; the
/// contract's `VOUCHER_TYPEHASH` must match (a test checks it).
pub mod voucher {
    alloy_sol_types::sol! {
        #[derive(Debug, PartialEq, Eq)]
        struct Voucher {
            address payer;
            address payee;
            uint256 cumulativeAmount;
        }
    }
}
