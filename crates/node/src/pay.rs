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
    let domain = credence_settle::VoucherDomain {
        chain_id: info.chain_id,
        escrow: info.escrow,
        payee: info.payee,
    };
    let voucher = SignedVoucher::sign(wallet, &domain, cumulative)
        .map_err(|e| ClientError::BadResponse(e.to_string()))?;
    Ok(voucher.header())
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

/// What `credence adapter register` puts in `ModelRegistry`.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The adapter's content id (SHA-256 of its canonical content).
    pub content_id: alloy_primitives::B256,
    /// SHA-256 of the base model's weights file.
    pub base_model_hash: alloy_primitives::B256,
    /// Roots of the datanet versions it was trained on (anchored on-chain).
    pub datanet_roots: Vec<alloy_primitives::B256>,
    /// OPEN base units per 1,000 tokens.
    pub price_per_1k: u128,
    /// Owner / contributors / node basis points (summing to 10,000).
    pub split: credence_settle::FeeSplit,
}

/// The SHA-256 of the default model's GGUF, for adapters of the default model.
pub fn default_base_model_hash() -> Option<alloy_primitives::B256> {
    crate::models::DEFAULT_WHEELS
        .iter()
        .flat_map(|w| w.files)
        .find(|f| f.dest == crate::models::DEFAULT_LLM_FILE)
        .and_then(|f| f.sha256.parse().ok())
}

/// Registers an adapter for sale, owned by `owner`'s signer; returns its
/// registry id. Checks the split and that the adapter is not registered yet
/// before spending gas.
pub fn register_adapter(
    owner: &Client,
    models: Address,
    r: &Registration,
) -> std::result::Result<U256, credence_settle::Error> {
    use credence_ledger::contracts::ModelRegistry;
    use credence_ledger::contracts::model_registry::ModelRegistry::FeeSplit;
    r.split.validate()?;
    let price = alloy_primitives::Uint::<96, 2>::try_from(r.price_per_1k).map_err(|_| {
        credence_settle::Error::InvalidTerms("the price does not fit 96 bits".into())
    })?;
    let existing = owner.view(
        models,
        &ModelRegistry::adapterOfContentCall {
            contentHash: r.content_id,
        },
    )?;
    if !existing.is_zero() {
        return Err(credence_settle::Error::InvalidTerms(format!(
            "this adapter is already registered as #{existing}"
        )));
    }
    let receipt = owner.send(
        models,
        &ModelRegistry::registerCall {
            contentHash: r.content_id,
            baseModelHash: r.base_model_hash,
            datanetRoots: r.datanet_roots.clone(),
            pricePer1kTokens: price,
            split: FeeSplit {
                ownerBps: r.split.owner_bps,
                contributorsBps: r.split.contributors_bps,
                nodeBps: r.split.node_bps,
            },
        },
    )?;
    receipt
        .events::<ModelRegistry::AdapterRegistered>()
        .first()
        .map(|e| e.adapterId)
        .ok_or_else(|| credence_settle::Error::Conflict("register emitted no event".into()))
}

/// Parses `owner/contributors/node` percentages or basis points, e.g.
/// `30/60/10` or `3000/6000/1000`.
pub fn parse_split(text: &str) -> std::result::Result<credence_settle::FeeSplit, String> {
    let parts: Vec<&str> = text.split('/').collect();
    let [owner, contributors, node] = parts.as_slice() else {
        return Err(format!(
            "`{text}` is not owner/contributors/node, e.g. 30/60/10"
        ));
    };
    let parse = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("`{p}` is not a whole number"))
    };
    let (o, c, n) = (parse(owner)?, parse(contributors)?, parse(node)?);
    let scale = if u32::from(o) + u32::from(c) + u32::from(n) == 100 {
        100
    } else {
        1
    };
    let split = credence_settle::FeeSplit {
        owner_bps: o * scale,
        contributors_bps: c * scale,
        node_bps: n * scale,
    };
    split.validate().map_err(|e| e.to_string())?;
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_parse_as_percentages_or_basis_points() {
        let s = parse_split("30/60/10").expect("percent");
        assert_eq!(
            (s.owner_bps, s.contributors_bps, s.node_bps),
            (3000, 6000, 1000)
        );
        let s = parse_split("2500/7000/500").expect("bps");
        assert_eq!(
            (s.owner_bps, s.contributors_bps, s.node_bps),
            (2500, 7000, 500)
        );
        assert!(parse_split("30/60").is_err());
        assert!(parse_split("50/60/10").is_err());
        assert!(parse_split("a/b/c").is_err());
    }

    #[test]
    fn the_default_model_hash_is_known() {
        assert!(default_base_model_hash().is_some());
    }
}
