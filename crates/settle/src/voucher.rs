//! Vouchers as callers attach them to API calls: a JSON object in the
//! `x-credence-voucher` header, checked against this node's escrow, chain and
//! payee address before it is trusted.

use alloy_primitives::{Address, Bytes, U256};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Request header carrying a signed voucher.
pub const VOUCHER_HEADER: &str = "x-credence-voucher";

/// A voucher with its signature, as sent by a caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedVoucher {
    /// Who pays (and signed).
    pub payer: Address,
    /// Who may redeem it: this node's settlement address.
    pub payee: Address,
    /// Everything the payer owes this payee so far, in token base units.
    #[serde(with = "crate::amount")]
    pub cumulative_amount: u128,
    /// 65-byte `r‖s‖v` EIP-712 signature by the payer.
    pub signature: Bytes,
}

/// Where vouchers for this node are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoucherDomain {
    /// The chain's id.
    pub chain_id: u64,
    /// The `PaymentEscrow` contract.
    pub escrow: Address,
    /// This node's settlement address (the only payee it accepts).
    pub payee: Address,
}

impl SignedVoucher {
    /// Signs, as `wallet`, a voucher for `cumulative` base units in total to
    /// the node described by `domain`.
    pub fn sign(
        wallet: &credence_ledger::Wallet,
        domain: &VoucherDomain,
        cumulative: u128,
    ) -> Result<Self> {
        let signature = credence_ledger::voucher::sign(
            wallet,
            domain.escrow,
            domain.chain_id,
            wallet.address(),
            domain.payee,
            U256::from(cumulative),
        )
        .map_err(|e| Error::InvalidVoucher(format!("cannot sign: {e}")))?;
        Ok(Self {
            payer: wallet.address(),
            payee: domain.payee,
            cumulative_amount: cumulative,
            signature,
        })
    }

    /// The value of the `x-credence-voucher` header.
    pub fn header(&self) -> String {
        // A struct of addresses, a decimal string and hex bytes always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the header value.
    pub fn parse(header: &str) -> Result<Self> {
        serde_json::from_str(header).map_err(|e| {
            Error::InvalidVoucher(format!(
                "{VOUCHER_HEADER} must be JSON {{\"payer\",\"payee\",\"cumulativeAmount\",\
                 \"signature\"}}: {e}"
            ))
        })
    }

    /// Checks the payee and the signature: the voucher must be signed by its
    /// payer for this node's escrow on this chain.
    pub fn verify(&self, domain: &VoucherDomain) -> Result<()> {
        if self.payee != domain.payee {
            return Err(Error::InvalidVoucher(format!(
                "the voucher pays {}, but this node settles as {}",
                self.payee, domain.payee
            )));
        }
        let signer = credence_ledger::voucher::recover(
            domain.escrow,
            domain.chain_id,
            self.payer,
            self.payee,
            U256::from(self.cumulative_amount),
            &self.signature,
        )
        .map_err(|e| Error::InvalidVoucher(e.to_string()))?;
        if signer != self.payer {
            return Err(Error::InvalidVoucher(format!(
                "the signature is by {signer}, not the payer {} (wrong key, chain or escrow?)",
                self.payer
            )));
        }
        Ok(())
    }
}
