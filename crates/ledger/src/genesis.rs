//! The chain's fixed starting point: parameters, funded dev accounts, and the
//! transactions that deploy and wire the contracts.
//!
//! Deployment is ordinary signed transactions, mined one block each, so they
//! are logged, replayed and visible to explorers like any other. Contract
//! addresses follow from the deployer's nonces, so they are known before
//! deployment and identical on every fresh chain.
//!
//! One list of transactions ([`protocol_steps`]) serves both places that
//! deploy: the embedded chain signs it from dev account 0 at genesis (and then
//! hands OPEN to the other dev accounts), and [`deploy`] sends it through a
//! [`Client`] to any external chain.

use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_sol_types::{SolCall, SolConstructor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

use crate::client::Client;
use crate::contracts::{
    AttributionDistributor, ContributionVotes, CredenceGovernor, CredenceTimelock, DatanetRegistry,
    ModelRegistry, OpenToken, PaymentEscrow, Staking,
};

const ETHER: u128 = 1_000_000_000_000_000_000;
const GWEI: u64 = 1_000_000_000;

/// Everything that shapes a new chain. Values that determine history
/// (`chain_id`, `gas_limit`, `base_fee`) are frozen in the chain directory at
/// creation; later runs use the stored ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainConfig {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// BIP-39 phrase the dev accounts derive from.
    pub mnemonic: String,
    /// How many dev accounts to fund (at least 1: account 0 deploys).
    pub dev_accounts: u32,
    /// Ether given to each dev account at genesis, in wei.
    pub dev_balance: U256,
    /// Block gas limit.
    pub gas_limit: u64,
    /// Constant EIP-1559 base fee in wei: blocks hold one transaction and are
    /// never congested, so a moving base fee would only add noise.
    pub base_fee: u64,
    /// Tip suggested by `eth_maxPriorityFeePerGas`.
    pub priority_fee: u64,
    /// Write a snapshot every this many blocks.
    pub snapshot_every: u64,
    /// Contract parameters.
    pub protocol: ProtocolParams,
}

/// Constructor arguments of the genesis contracts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolParams {
    /// OPEN minted to dev account 0.
    pub token_supply: U256,
    /// OPEN handed from account 0 to each other dev account.
    pub dev_token_grant: U256,
    /// Seconds between `requestWithdraw` and `withdraw` in the escrow.
    pub withdraw_delay: u64,
    /// Seconds a posted epoch root can be challenged.
    pub challenge_window: u64,
    /// Seconds between `requestUnstake` and `unstake`.
    pub unstake_cooldown: u64,
    /// Seconds the timelock holds a queued proposal.
    pub timelock_delay: u64,
    /// Blocks between proposing and voting.
    pub voting_delay_blocks: u64,
    /// Blocks a vote stays open.
    pub voting_period_blocks: u32,
    /// Votes needed to propose.
    pub proposal_threshold: U256,
    /// Quorum as a percentage of all votes.
    pub quorum_percent: u64,
}

impl Default for ProtocolParams {
    fn default() -> Self {
        Self {
            token_supply: U256::from(1_000_000_000u128 * ETHER),
            dev_token_grant: U256::from(1_000_000u128 * ETHER),
            withdraw_delay: 24 * 3600,
            challenge_window: 3600,
            unstake_cooldown: 7 * 24 * 3600,
            timelock_delay: 3600,
            voting_delay_blocks: 1,
            voting_period_blocks: 50,
            proposal_threshold: U256::ZERO,
            quorum_percent: 4,
        }
    }
}

impl Default for ChainConfig {
    fn default() -> Self {
        Self {
            chain_id: 16_120,
            mnemonic: crate::accounts::DEV_MNEMONIC.to_owned(),
            dev_accounts: 10,
            dev_balance: U256::from(10_000u128 * ETHER),
            gas_limit: 30_000_000,
            base_fee: GWEI,
            priority_fee: GWEI,
            snapshot_every: 100,
            protocol: ProtocolParams::default(),
        }
    }
}

/// The frozen, history-determining part of the configuration (genesis.json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GenesisFile {
    pub format: u32,
    pub chain_id: u64,
    pub timestamp: u64,
    pub gas_limit: u64,
    pub base_fee: u64,
    pub alloc: Vec<(Address, U256)>,
}

/// Where the protocol contracts live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// The account that deployed everything (dev account 0 on the embedded
    /// chain). It starts as the distributor's poster and guardian and as the
    /// cVOTE minter.
    pub deployer: Address,
    /// `OpenToken` (OPEN).
    pub token: Address,
    /// `CredenceTimelock`, the owner of protocol parameters.
    pub timelock: Address,
    /// `ContributionVotes`, the governance voting units.
    pub votes: Address,
    /// `CredenceGovernor`.
    pub governor: Address,
    /// `DatanetRegistry`.
    pub datanets: Address,
    /// `ModelRegistry`.
    pub models: Address,
    /// `PaymentEscrow`.
    pub escrow: Address,
    /// `AttributionDistributor`.
    pub distributor: Address,
    /// `Staking`.
    pub staking: Address,
}

impl Deployment {
    /// The addresses deployment from a fresh `deployer` produces (genesis).
    pub fn for_deployer(deployer: Address) -> Self {
        Self::at_nonce(deployer, 0)
    }

    /// The addresses [`protocol_steps`] produce when its first transaction is
    /// sent with the deployer's nonce `nonce` (step `i` uses `nonce + i`).
    pub fn at_nonce(deployer: Address, nonce: u64) -> Self {
        let at = |i: u64| deployer.create(nonce + i);
        Self {
            deployer,
            token: at(0),
            timelock: at(1),
            votes: at(2),
            governor: at(3),
            datanets: at(7),
            models: at(8),
            escrow: at(9),
            distributor: at(10),
            staking: at(11),
        }
    }
}

/// A deployment together with the chain it is on: what a node saves (e.g. as
/// `$CREDENCE_HOME/deployment.json`) after deploying to an external chain,
/// and what the embedded chain's `credence_deployment` RPC method returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainDeployment {
    /// EIP-155 chain id the contracts live on.
    pub chain_id: u64,
    /// First block to scan for the contracts' events.
    pub start_block: u64,
    /// The contract addresses.
    #[serde(flatten)]
    pub contracts: Deployment,
}

impl ChainDeployment {
    /// Writes the file atomically (temporary file, fsync, rename), so a crash
    /// never leaves a half-written deployment behind.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        crate::chain::write_json_atomic(path, self)
    }

    /// Reads a file written by [`ChainDeployment::save`].
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Invalid(format!("{}: not a deployment file: {e}", path.display())))
    }
}

/// One deployment transaction: a creation (`to == None`) or a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The called contract, or `None` to create one.
    pub to: Option<Address>,
    /// Calldata, or creation code followed by the constructor arguments.
    pub data: Bytes,
}

fn create(bytecode: &Bytes, args: Vec<u8>) -> Step {
    let mut data = bytecode.to_vec();
    data.extend_from_slice(&args);
    Step {
        to: None,
        data: data.into(),
    }
}

fn call(to: Address, call: impl SolCall) -> Step {
    Step {
        to: Some(to),
        data: call.abi_encode().into(),
    }
}

/// The genesis transactions: the protocol, then OPEN for each dev account
/// but the first. Step `i` is sent with the deployer's nonce `i`, which is how
/// a restart knows which steps already ran.
pub(crate) fn steps(d: &Deployment, p: &ProtocolParams, dev: &[Address]) -> Vec<Step> {
    let mut steps = protocol_steps(d, p);
    for &to in dev.iter().skip(1) {
        steps.push(call(
            d.token,
            OpenToken::transferCall {
                to,
                value: p.dev_token_grant,
            },
        ));
    }
    steps
}

/// The transactions that deploy and wire the protocol at the addresses in
/// `d` (see [`Deployment::at_nonce`]), to be sent in order from `d.deployer`
/// with consecutive nonces.
pub fn protocol_steps(d: &Deployment, p: &ProtocolParams) -> Vec<Step> {
    let role = |name: &str| keccak256(name.as_bytes());
    vec![
        create(
            &OpenToken::BYTECODE,
            OpenToken::constructorCall {
                holder: d.deployer,
                supply: p.token_supply,
            }
            .abi_encode(),
        ),
        // The deployer administers the timelock only until the governor holds
        // its roles (steps 4–6), then renounces.
        create(
            &CredenceTimelock::BYTECODE,
            CredenceTimelock::constructorCall {
                minDelay: U256::from(p.timelock_delay),
                proposers: vec![],
                executors: vec![Address::ZERO], // anyone may execute a passed proposal
                admin: d.deployer,
            }
            .abi_encode(),
        ),
        create(
            &ContributionVotes::BYTECODE,
            ContributionVotes::constructorCall {
                initialOwner: d.timelock,
                initialMinter: d.deployer,
            }
            .abi_encode(),
        ),
        create(
            &CredenceGovernor::BYTECODE,
            CredenceGovernor::constructorCall {
                votes: d.votes,
                timelockController: d.timelock,
                delayBlocks: alloy_primitives::aliases::U48::saturating_from(p.voting_delay_blocks),
                periodBlocks: p.voting_period_blocks,
                threshold: p.proposal_threshold,
                quorumPercent: U256::from(p.quorum_percent),
            }
            .abi_encode(),
        ),
        call(
            d.timelock,
            CredenceTimelock::grantRoleCall {
                role: role("PROPOSER_ROLE"),
                account: d.governor,
            },
        ),
        call(
            d.timelock,
            CredenceTimelock::grantRoleCall {
                role: role("CANCELLER_ROLE"),
                account: d.governor,
            },
        ),
        call(
            d.timelock,
            CredenceTimelock::renounceRoleCall {
                role: B256::ZERO,
                callerConfirmation: d.deployer,
            },
        ),
        create(&DatanetRegistry::BYTECODE, Vec::new()),
        create(
            &ModelRegistry::BYTECODE,
            ModelRegistry::constructorCall {
                datanetRegistry: d.datanets,
            }
            .abi_encode(),
        ),
        create(
            &PaymentEscrow::BYTECODE,
            PaymentEscrow::constructorCall {
                paymentToken: d.token,
                delaySeconds: p.withdraw_delay,
            }
            .abi_encode(),
        ),
        create(
            &AttributionDistributor::BYTECODE,
            AttributionDistributor::constructorCall {
                payoutToken: d.token,
                windowSeconds: p.challenge_window,
                initialOwner: d.timelock,
                initialPoster: d.deployer,
                initialGuardian: d.deployer,
            }
            .abi_encode(),
        ),
        create(
            &Staking::BYTECODE,
            Staking::constructorCall {
                stakeToken: d.token,
                cooldownSeconds: p.unstake_cooldown,
                governance: d.timelock,
            }
            .abi_encode(),
        ),
    ]
}

/// Deploys and wires the protocol on the client's chain from its signer,
/// which becomes `deployer` (poster, guardian, minter, holder of the whole
/// OPEN supply). Addresses are computed from the signer's nonce first and
/// each creation is checked against them, since later steps already refer
/// to them: another transaction from the same key in between would be caught
/// rather than wiring the wrong contracts.
pub fn deploy(client: &Client, params: &ProtocolParams) -> Result<ChainDeployment> {
    let deployer = client.signer_address().ok_or(Error::NoSigner)?;
    let start_block = client.block_number()?;
    let first_nonce = client.nonce(deployer)?;
    let d = Deployment::at_nonce(deployer, first_nonce);
    for (i, step) in protocol_steps(&d, params).into_iter().enumerate() {
        let fail = |e: Error| match e {
            // Keep reverts matchable; say which step for everything else.
            e @ Error::Reverted { .. } => e,
            e => Error::Genesis(format!("deployment step {i}: {e}")),
        };
        match step.to {
            None => {
                let expected = deployer.create(first_nonce + i as u64);
                let got = client.deploy(step.data).map_err(fail)?;
                if got != expected {
                    return Err(Error::Genesis(format!(
                        "deployment step {i} created {got}, expected {expected}: \
                         was another transaction sent from {deployer} meanwhile?"
                    )));
                }
            }
            Some(to) => {
                client
                    .transact(Some(to), step.data, U256::ZERO)
                    .map_err(fail)?;
            }
        }
    }
    Ok(ChainDeployment {
        chain_id: client.chain_id(),
        start_block,
        contracts: d,
    })
}
