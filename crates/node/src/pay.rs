//! Paying for calls and collecting earnings, from the caller's side: signing
//! vouchers for a node, reading receipts and claim proofs from it, and
//! claiming on-chain.

use alloy_primitives::{Address, U256};
use credence_ledger::{Client, Wallet};
use credence_settle::{ClaimProof, SignedVoucher};
use serde::Deserialize;

use crate::client::{ClientError, NodeClient, Result};

/// What a node publishes about paying it (`GET /v1/billing`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingInfo {
    /// The node's settlement address (the voucher payee).
    pub payee: Address,
    /// The chain vouchers are signed for.
    pub chain_id: u64,
    /// The escrow vouchers draw on.
    pub escrow: Address,
    /// The payment token.
    pub token: Address,
    /// The distributor earnings are claimed from.
    pub distributor: Address,
}

/// A payer's standing with a node (`GET /v1/billing/payers/{address}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayerStanding {
    /// The latest voucher's cumulative amount.
    #[serde(with = "credence_settle::amount")]
    pub voucher: u128,
    /// Spent so far.
    #[serde(with = "credence_settle::amount")]
    pub spent: u128,
    /// Reserved by calls in flight.
    #[serde(with = "credence_settle::amount")]
    pub held: u128,
    /// Still spendable under the latest voucher.
    #[serde(with = "credence_settle::amount")]
    pub available: u128,
}

#[derive(Deserialize)]
struct Earnings {
    claim: Option<ClaimProof>,
}

impl NodeClient {
    /// How to pay this node.
    pub fn billing(&self) -> Result<BillingInfo> {
        self.get_json("/v1/billing")
    }

    /// `payer`'s standing, or `None` if it never sent a voucher.
    pub fn payer(&self, payer: Address) -> Result<Option<PayerStanding>> {
        match self.get_json(&format!("/v1/billing/payers/{payer}")) {
            Ok(standing) => Ok(Some(standing)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One receipt, as the node's JSON.
    pub fn receipt(&self, id: &str) -> Result<serde_json::Value> {
        self.get_json(&format!("/v1/receipts/{id}"))
    }

    /// Every sealed epoch, as JSON.
    pub fn epochs(&self) -> Result<serde_json::Value> {
        self.get_json("/v1/epochs")
    }

    /// Runs a settlement round now (needs the API key).
    pub fn run_epoch(&self) -> Result<serde_json::Value> {
        self.post_empty("/v1/epochs")
    }

    /// `account`'s claim proof against the latest final epoch, if any.
    pub fn claim_proof(&self, account: Address) -> Result<Option<ClaimProof>> {
        let earnings: Earnings = self.get_json(&format!("/v1/earnings/{account}"))?;
        Ok(earnings.claim)
    }
}

/// A voucher header from `wallet` to the node described by `info`, for
/// `cumulative` base units in total.
pub fn voucher_header(wallet: &Wallet, info: &BillingInfo, cumulative: u128) -> Result<String> {
    let signature = credence_ledger::voucher::sign(
        wallet,
        info.escrow,
        info.chain_id,
        wallet.address(),
        info.payee,
        U256::from(cumulative),
    )
    .map_err(|e| ClientError::BadResponse(format!("cannot sign the voucher: {e}")))?;
    let voucher = SignedVoucher {
        payer: wallet.address(),
        payee: info.payee,
        cumulative_amount: cumulative,
        signature,
    };
    serde_json::to_string(&voucher)
        .map_err(|e| ClientError::BadResponse(format!("cannot encode the voucher: {e}")))
}

/// The next voucher for a payer: what it has spent plus `allowance` more,
/// never below its latest voucher (which the node would refuse as stale).
pub fn next_cumulative(standing: Option<&PayerStanding>, allowance: u128) -> u128 {
    standing.map_or(allowance, |s| (s.spent + s.held + allowance).max(s.voucher))
}

/// Claims `proof` on-chain through `chain` (any signer; the tokens go to the account).
pub fn claim(
    chain: &Client,
    info: &BillingInfo,
    proof: &ClaimProof,
) -> std::result::Result<credence_ledger::Receipt, credence_settle::Error> {
    credence_settle::settler::claim(chain, info.distributor, proof)
}
