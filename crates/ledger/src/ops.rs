//! User-level operations over a [`Client`]: what `credence chain`, `deposit`,
//! `stake`, `unstake` and `gov` do, kept here so the CLI only parses and
//! prints. Each operation checks what it can before spending gas (balances,
//! the signer) and turns the common failures into plain sentences.

use alloy_primitives::{Address, Bytes, U256, keccak256};
use serde::Serialize;
use serde_json::json;

use crate::client::{Client, Receipt};
use crate::contracts::{CredenceGovernor, OpenToken, PaymentEscrow, Staking};
use crate::genesis::{ChainDeployment, Deployment};
use crate::rpc::METHOD_NOT_FOUND;
use crate::units::format_amount;
use crate::{Error, Result};

/// What `credence chain status` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The node software (`web3_clientVersion`).
    pub client_version: String,
    /// Height of the newest block.
    pub block_number: u64,
    /// Its timestamp (Unix seconds).
    pub block_timestamp: u64,
    /// The protocol contracts, when known.
    pub deployment: Option<ChainDeployment>,
}

/// Reads the chain's vital signs.
pub fn status(client: &Client, deployment: Option<ChainDeployment>) -> Result<Status> {
    Ok(Status {
        chain_id: client.chain_id(),
        client_version: client.rpc("web3_clientVersion", json!([]))?,
        block_number: client.block_number()?,
        block_timestamp: client.block_timestamp()?,
        deployment,
    })
}

/// Asks the endpoint where the contracts are (`credence_deployment`, which
/// the embedded chain answers). `None` from a node that does not know the
/// method (hardhat, public chains): use a saved deployment file there.
pub fn remote_deployment(client: &Client) -> Result<Option<ChainDeployment>> {
    match client.rpc::<ChainDeployment>("credence_deployment", json!([])) {
        Ok(d) => Ok(Some(d)),
        Err(Error::Rpc { code, .. }) if code == METHOD_NOT_FOUND => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks a deployment belongs to the client's chain, so addresses from one
/// chain are never used on another.
pub fn check_chain(client: &Client, deployment: &ChainDeployment) -> Result<()> {
    if deployment.chain_id == client.chain_id() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "the deployment is for chain {} but the RPC endpoint is chain {}",
            deployment.chain_id,
            client.chain_id()
        )))
    }
}

/// One account's holdings.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Balances {
    /// The account.
    pub address: Address,
    /// Ether, in wei.
    pub eth_wei: U256,
    /// OPEN, in base units.
    pub open: U256,
    /// OPEN deposited in the escrow.
    pub escrow: U256,
    /// OPEN staked.
    pub staked: U256,
    /// OPEN waiting out the unstake cooldown.
    pub cooling: U256,
}

/// An account's ether, OPEN, escrow deposit and stake.
pub fn balances(client: &Client, d: &Deployment, address: Address) -> Result<Balances> {
    let stake = client.view(d.staking, &Staking::stakeOfCall { staker: address })?;
    Ok(Balances {
        address,
        eth_wei: client.balance(address)?,
        open: open_balance(client, d, address)?,
        escrow: U256::from(
            client
                .view(d.escrow, &PaymentEscrow::accountCall { payer: address })?
                .balance,
        ),
        staked: U256::from(stake.staked),
        cooling: U256::from(stake.cooling),
    })
}

fn open_balance(client: &Client, d: &Deployment, address: Address) -> Result<U256> {
    client.view(d.token, &OpenToken::balanceOfCall { account: address })
}

fn signer(client: &Client) -> Result<Address> {
    client.signer_address().ok_or(Error::NoSigner)
}

/// Refuses early, with amounts in OPEN, when the signer cannot pay `amount`.
fn require_open(client: &Client, d: &Deployment, who: Address, amount: U256) -> Result<()> {
    if amount.is_zero() {
        return Err(Error::Invalid(
            "the amount must be greater than zero".into(),
        ));
    }
    let have = open_balance(client, d, who)?;
    if have < amount {
        return Err(Error::Invalid(format!(
            "{who} holds {} OPEN but {} OPEN is needed",
            format_amount(have),
            format_amount(amount)
        )));
    }
    Ok(())
}

/// Lets `spender` take `amount` of the signer's OPEN, unless it already may.
fn approve(
    client: &Client,
    d: &Deployment,
    spender: Address,
    amount: U256,
) -> Result<Option<Receipt>> {
    let owner = signer(client)?;
    let allowed = client.view(d.token, &OpenToken::allowanceCall { owner, spender })?;
    if allowed >= amount {
        return Ok(None);
    }
    client
        .send(
            d.token,
            &OpenToken::approveCall {
                spender,
                value: amount,
            },
        )
        .map(Some)
}

/// Approves the escrow and deposits `amount` OPEN from the signer, so nodes
/// can redeem the signer's vouchers against it. Returns the receipts sent.
pub fn deposit(client: &Client, d: &Deployment, amount: U256) -> Result<Vec<Receipt>> {
    let payer = signer(client)?;
    require_open(client, d, payer, amount)?;
    let mut sent: Vec<Receipt> = approve(client, d, d.escrow, amount)?.into_iter().collect();
    sent.push(client.send(d.escrow, &PaymentEscrow::depositCall { amount })?);
    Ok(sent)
}

/// Approves staking and stakes `amount` OPEN from the signer.
pub fn stake(client: &Client, d: &Deployment, amount: U256) -> Result<Vec<Receipt>> {
    let staker = signer(client)?;
    require_open(client, d, staker, amount)?;
    let mut sent: Vec<Receipt> = approve(client, d, d.staking, amount)?.into_iter().collect();
    sent.push(client.send(d.staking, &Staking::stakeCall { amount })?);
    Ok(sent)
}

/// Starts the cooldown for `amount` of the signer's stake (all of it when
/// `None`). Returns the receipt and when the tokens can be released.
pub fn request_unstake(
    client: &Client,
    d: &Deployment,
    amount: Option<U256>,
) -> Result<(Receipt, u64)> {
    let staker = signer(client)?;
    let current = client.view(d.staking, &Staking::stakeOfCall { staker })?;
    let staked = U256::from(current.staked);
    let amount = amount.unwrap_or(staked);
    if amount.is_zero() || amount > staked {
        return Err(Error::Invalid(format!(
            "{staker} has {} OPEN staked; cannot unstake {}",
            format_amount(staked),
            format_amount(amount)
        )));
    }
    let receipt = client.send(d.staking, &Staking::requestUnstakeCall { amount })?;
    let release_at = client
        .view(d.staking, &Staking::stakeOfCall { staker })?
        .releaseAt;
    Ok((receipt, release_at))
}

/// Releases the signer's cooled-down stake. Returns the receipt and the
/// amount released.
pub fn complete_unstake(client: &Client, d: &Deployment) -> Result<(Receipt, U256)> {
    let staker = signer(client)?;
    let current = client.view(d.staking, &Staking::stakeOfCall { staker })?;
    if current.cooling == 0 {
        return Err(Error::Invalid(format!(
            "{staker} has nothing cooling down: request an unstake first"
        )));
    }
    let now = client.block_timestamp()?;
    if now < current.releaseAt {
        return Err(Error::Invalid(format!(
            "the stake is cooling down for another {} s (until Unix time {})",
            current.releaseAt - now,
            current.releaseAt
        )));
    }
    let receipt = client.send(d.staking, &Staking::unstakeCall {})?;
    Ok((receipt, U256::from(current.cooling)))
}

/// One action of a governance proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// The contract the timelock will call.
    pub target: Address,
    /// Wei sent with the call.
    pub value: U256,
    /// The calldata.
    pub calldata: Bytes,
}

/// Proposes `actions` to the governor. Returns the proposal id and receipt.
pub fn propose(
    client: &Client,
    d: &Deployment,
    actions: &[Action],
    description: &str,
) -> Result<(U256, Receipt)> {
    signer(client)?;
    if actions.is_empty() {
        return Err(Error::Invalid(
            "a proposal needs at least one action".into(),
        ));
    }
    let call = CredenceGovernor::proposeCall {
        targets: actions.iter().map(|a| a.target).collect(),
        values: actions.iter().map(|a| a.value).collect(),
        calldatas: actions.iter().map(|a| a.calldata.clone()).collect(),
        description: description.to_owned(),
    };
    let id = client.view(
        d.governor,
        &CredenceGovernor::hashProposalCall {
            targets: call.targets.clone(),
            values: call.values.clone(),
            calldatas: call.calldatas.clone(),
            descriptionHash: keccak256(description.as_bytes()),
        },
    )?;
    let receipt = client.send(d.governor, &call)?;
    Ok((id, receipt))
}

/// How to vote, in the governor's `support` encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// 0.
    Against,
    /// 1.
    For,
    /// 2.
    Abstain,
}

impl std::str::FromStr for Support {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "for" | "yes" => Ok(Self::For),
            "against" | "no" => Ok(Self::Against),
            "abstain" => Ok(Self::Abstain),
            _ => Err(Error::Invalid(format!(
                "invalid vote `{s}`: use for, against or abstain"
            ))),
        }
    }
}

/// Casts the signer's vote on a proposal (with an optional reason, which is
/// recorded on-chain in the event).
pub fn vote(
    client: &Client,
    d: &Deployment,
    proposal: U256,
    support: Support,
    reason: Option<&str>,
) -> Result<Receipt> {
    signer(client)?;
    let support = support as u8;
    match reason {
        Some(reason) => client.send(
            d.governor,
            &CredenceGovernor::castVoteWithReasonCall {
                proposalId: proposal,
                support,
                reason: reason.to_owned(),
            },
        ),
        None => client.send(
            d.governor,
            &CredenceGovernor::castVoteCall {
                proposalId: proposal,
                support,
            },
        ),
    }
}

/// OpenZeppelin's proposal states, by their index in `IGovernor.ProposalState`.
const PROPOSAL_STATES: [&str; 8] = [
    "pending",
    "active",
    "canceled",
    "defeated",
    "succeeded",
    "queued",
    "expired",
    "executed",
];

/// A proposal's state as a word ("pending", "active", …).
pub fn proposal_state(client: &Client, d: &Deployment, proposal: U256) -> Result<&'static str> {
    let state: u8 = client.view(
        d.governor,
        &CredenceGovernor::stateCall {
            proposalId: proposal,
        },
    )?;
    PROPOSAL_STATES
        .get(usize::from(state))
        .copied()
        .ok_or_else(|| Error::BadResponse(format!("unknown proposal state {state}")))
}
