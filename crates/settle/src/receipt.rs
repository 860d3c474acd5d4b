//! Receipts: the durable record of one charged call, and the hash that
//! anchors it on-chain inside an epoch's receipts root.

use alloy_primitives::{Address, B256, keccak256};
use alloy_sol_types::SolValue;
use serde::{Deserialize, Serialize};

use crate::split::Share;

/// A receipt's anchor hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptHash(pub B256);

/// A call about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReceipt {
    /// Unique id (also returned to the caller in `x-credence-receipt`).
    pub id: String,
    /// Who paid.
    pub payer: Address,
    /// The model the answer reported.
    pub model: String,
    /// Content ids of the adapters used, with weights as text (exact).
    pub adapters: Vec<(String, String)>,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated (or sent, for an abandoned stream).
    pub completion_tokens: usize,
    /// When the call finished (Unix seconds).
    pub created_at: u64,
    /// How the fee divides.
    pub shares: Vec<Share>,
}

impl NewReceipt {
    /// The recorded form, with its fee and hash.
    pub(crate) fn finish(&self, fee: u128) -> Receipt {
        let mut receipt = Receipt {
            id: self.id.clone(),
            payer: self.payer,
            model: self.model.clone(),
            adapters: self.adapters.clone(),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            fee,
            created_at: self.created_at,
            shares: self.shares.clone(),
            hash: ReceiptHash(B256::ZERO),
            epoch: None,
        };
        receipt.hash = receipt.compute_hash();
        receipt
    }
}

/// A recorded call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// Unique id.
    pub id: String,
    /// Who paid.
    pub payer: Address,
    /// The model the answer reported.
    pub model: String,
    /// Content ids of the adapters used, with their weights.
    pub adapters: Vec<(String, String)>,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// The fee charged.
    #[serde(with = "crate::amount")]
    pub fee: u128,
    /// When the call finished (Unix seconds).
    pub created_at: u64,
    /// Who earned what.
    pub shares: Vec<Share>,
    /// The anchor hash.
    pub hash: ReceiptHash,
    /// The epoch that sealed it, once sealed.
    pub epoch: Option<u64>,
}

impl Receipt {
    /// `keccak256(abi.encode(keccak(id), payer, keccak(model), keccak(adapters),
    /// promptTokens, completionTokens, fee, createdAt, accounts, amounts))`:
    /// anyone holding the receipt can recompute it and check it against the
    /// epoch's receipts root.
    pub fn compute_hash(&self) -> ReceiptHash {
        let adapters: Vec<u8> = self
            .adapters
            .iter()
            .flat_map(|(id, w)| [id.as_bytes(), b"\0", w.as_bytes(), b"\0"].concat())
            .collect();
        let accounts: Vec<Address> = self.shares.iter().map(|s| s.account).collect();
        let amounts: Vec<alloy_primitives::U256> = self
            .shares
            .iter()
            .map(|s| alloy_primitives::U256::from(s.amount))
            .collect();
        let encoded = (
            keccak256(self.id.as_bytes()),
            self.payer,
            keccak256(self.model.as_bytes()),
            keccak256(&adapters),
            alloy_primitives::U256::from(self.prompt_tokens),
            alloy_primitives::U256::from(self.completion_tokens),
            alloy_primitives::U256::from(self.fee),
            alloy_primitives::U256::from(self.created_at),
            accounts,
            amounts,
        )
            .abi_encode();
        ReceiptHash(keccak256(encoded))
    }
}

/// The Merkle root over receipt hashes (sorted pairs, like every tree here).
pub fn receipts_root(hashes: &[B256]) -> B256 {
    credence_ledger::merkle::root_of(hashes)
}
