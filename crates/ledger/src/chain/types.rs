//! What the chain stores per block and per transaction, and the request
//! shapes (call, log filter) its read API accepts.

use alloy_consensus::{
    EMPTY_OMMER_ROOT_HASH, Header, Receipt, ReceiptEnvelope, ReceiptWithBloom, TxEnvelope, TxType,
    proofs,
};
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{Address, B64, B256, Bloom, Bytes, Log, U64, U128, U256, keccak256};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A sealed block. Blocks hold at most one transaction (the chain mines a
/// block per transaction), so per-block data is the transaction's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// Height; genesis is 0.
    pub number: u64,
    /// Keccak of the RLP header.
    pub hash: B256,
    /// The previous block's hash.
    pub parent_hash: B256,
    /// Seconds since the Unix epoch; strictly increasing.
    pub timestamp: u64,
    /// Block gas limit.
    pub gas_limit: u64,
    /// Gas used by the block's transaction.
    pub gas_used: u64,
    /// EIP-1559 base fee (constant on this chain).
    pub base_fee: u64,
    /// Bloom of the transaction's logs.
    pub logs_bloom: Bloom,
    /// Trie root over the block's transactions.
    pub transactions_root: B256,
    /// Trie root over the block's receipts.
    pub receipts_root: B256,
    /// The randomness value (`prevrandao`) exposed to contracts.
    pub mix_hash: B256,
    /// RLP size of the header in bytes (reported as the block size).
    pub size: u64,
    /// The transaction mined in this block, if any.
    pub tx: Option<B256>,
}

/// A mined transaction with everything its receipt reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxEntry {
    /// Transaction hash.
    pub hash: B256,
    /// The EIP-2718 encoding exactly as submitted.
    pub raw: Bytes,
    /// Recovered sender.
    pub from: Address,
    /// Block it was mined in.
    pub block_number: u64,
    /// Gas used after refunds.
    pub gas_used: u64,
    /// Price per gas actually paid (base fee + effective tip).
    pub effective_gas_price: u128,
    /// Whether execution succeeded.
    pub success: bool,
    /// The created contract, for deployments that succeeded.
    pub contract_address: Option<Address>,
    /// Logs emitted (empty when the transaction reverted).
    pub logs: Vec<Log>,
}

impl TxEntry {
    /// Decodes the stored transaction.
    pub fn envelope(&self) -> Result<TxEnvelope> {
        TxEnvelope::decode_2718_exact(&self.raw)
            .map_err(|e| Error::Corrupt(format!("stored transaction {}: {e}", self.hash)))
    }

    /// The receipt in consensus form (used for the receipts root).
    pub(crate) fn receipt_envelope(&self, ty: TxType) -> ReceiptEnvelope {
        let receipt = ReceiptWithBloom::new(
            Receipt {
                status: self.success.into(),
                cumulative_gas_used: self.gas_used,
                logs: self.logs.clone(),
            },
            self.logs_bloom(),
        );
        match ty {
            TxType::Legacy => ReceiptEnvelope::Legacy(receipt),
            TxType::Eip2930 => ReceiptEnvelope::Eip2930(receipt),
            TxType::Eip4844 => ReceiptEnvelope::Eip4844(receipt),
            TxType::Eip7702 => ReceiptEnvelope::Eip7702(receipt),
            TxType::Eip1559 => ReceiptEnvelope::Eip1559(receipt),
        }
    }

    /// Bloom over this transaction's logs.
    pub fn logs_bloom(&self) -> Bloom {
        alloy_primitives::logs_bloom(self.logs.iter())
    }
}

/// The fields of a header this chain varies; everything else is constant.
pub(crate) struct Seal<'a> {
    pub parent_hash: B256,
    pub number: u64,
    pub timestamp: u64,
    pub gas_limit: u64,
    pub base_fee: u64,
    pub tx: Option<(&'a TxEnvelope, &'a TxEntry)>,
}

/// `prevrandao` for a height: deterministic (so replay reproduces it) and
/// documented as not random — contracts must not use it for randomness here.
pub(crate) fn mix_hash(number: u64) -> B256 {
    keccak256(number.to_be_bytes())
}

impl Seal<'_> {
    /// Builds the Cancun header and hashes it. The state root is left zero:
    /// computing a Merkle-Patricia root over all state per block is not needed
    /// by any client of a single-node dev chain.
    pub(crate) fn seal(self) -> Block {
        let (transactions_root, receipts_root, gas_used, logs_bloom, tx) = match self.tx {
            Some((env, entry)) => (
                proofs::calculate_transaction_root(std::slice::from_ref(env)),
                proofs::calculate_receipt_root(&[entry.receipt_envelope(env.tx_type())]),
                entry.gas_used,
                entry.logs_bloom(),
                Some(entry.hash),
            ),
            None => (
                alloy_consensus::EMPTY_ROOT_HASH,
                alloy_consensus::EMPTY_ROOT_HASH,
                0,
                Bloom::ZERO,
                None,
            ),
        };
        let header = Header {
            parent_hash: self.parent_hash,
            ommers_hash: EMPTY_OMMER_ROOT_HASH,
            beneficiary: Address::ZERO,
            state_root: B256::ZERO,
            transactions_root,
            receipts_root,
            logs_bloom,
            difficulty: U256::ZERO,
            number: self.number,
            gas_limit: self.gas_limit,
            gas_used,
            timestamp: self.timestamp,
            extra_data: Bytes::new(),
            mix_hash: mix_hash(self.number),
            nonce: B64::ZERO,
            base_fee_per_gas: Some(self.base_fee),
            withdrawals_root: Some(alloy_consensus::EMPTY_ROOT_HASH),
            blob_gas_used: Some(0),
            excess_blob_gas: Some(0),
            parent_beacon_block_root: Some(B256::ZERO),
            requests_hash: None,
            block_access_list_hash: None,
            slot_number: None,
        };
        let size = alloy_rlp::Encodable::length(&header) as u64;
        Block {
            number: self.number,
            hash: header.hash_slow(),
            parent_hash: self.parent_hash,
            timestamp: self.timestamp,
            gas_limit: self.gas_limit,
            gas_used,
            base_fee: self.base_fee,
            logs_bloom,
            transactions_root,
            receipts_root,
            mix_hash: header.mix_hash,
            size,
            tx,
        }
    }
}

/// Which block a read refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockId {
    /// A height.
    Number(u64),
    /// The newest block (also `pending`, `safe` and `finalized`: there is no
    /// pool and every block is final the moment it is mined).
    Latest,
    /// Block 0.
    Earliest,
    /// A block hash.
    Hash(B256),
}

/// An `eth_call` / `eth_estimateGas` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRequest {
    /// Caller; the zero address when absent.
    pub from: Option<Address>,
    /// Callee; absent for contract creation.
    pub to: Option<Address>,
    /// Gas limit; the block gas limit when absent.
    pub gas: Option<U64>,
    /// Legacy gas price.
    pub gas_price: Option<U128>,
    /// EIP-1559 fee cap.
    pub max_fee_per_gas: Option<U128>,
    /// EIP-1559 tip cap.
    pub max_priority_fee_per_gas: Option<U128>,
    /// Wei sent along.
    pub value: Option<U256>,
    /// Calldata (`input` is the newer name; both are accepted).
    #[serde(alias = "data")]
    pub input: Option<Bytes>,
    /// Nonce (ignored: calls do not check it).
    pub nonce: Option<U64>,
}

/// An `eth_getLogs` filter with its block range already resolved.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// First block, inclusive.
    pub from_block: u64,
    /// Last block, inclusive.
    pub to_block: u64,
    /// Emitting contracts; empty matches any.
    pub addresses: Vec<Address>,
    /// Per position, the topics accepted there; `None` or empty matches any.
    pub topics: Vec<Option<Vec<B256>>>,
}

impl LogFilter {
    pub(crate) fn matches(&self, log: &Log) -> bool {
        if !self.addresses.is_empty() && !self.addresses.contains(&log.address) {
            return false;
        }
        let topics = log.topics();
        self.topics
            .iter()
            .enumerate()
            .all(|(i, wanted)| match wanted {
                None => true,
                Some(w) if w.is_empty() => true,
                Some(w) => topics.get(i).is_some_and(|t| w.contains(t)),
            })
    }
}

/// A log as `eth_getLogs` and receipts report it, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The log itself.
    pub log: Log,
    /// Block it was emitted in.
    pub block_number: u64,
    /// That block's hash.
    pub block_hash: B256,
    /// The emitting transaction.
    pub tx_hash: B256,
    /// Index within the block (and the transaction: one per block).
    pub log_index: u64,
}
