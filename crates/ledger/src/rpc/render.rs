//! Blocks, transactions, receipts and logs in the JSON shapes geth returns.

use alloy_consensus::transaction::to_eip155_value;
use alloy_consensus::{EMPTY_OMMER_ROOT_HASH, Transaction as _, TxEnvelope};
use alloy_primitives::{B256, U256};
use serde_json::{Value, json};

use crate::chain::{Block, LogEntry, TxEntry};
use crate::{Error, Result};

/// A hex quantity.
pub(super) fn q(n: impl Into<u128>) -> Value {
    Value::String(format!("0x{:x}", n.into()))
}

pub(super) fn block(b: &Block, txs: Option<Vec<Value>>) -> Value {
    let transactions = match (txs, b.tx) {
        (Some(full), _) => Value::Array(full),
        (None, Some(h)) => json!([h]),
        (None, None) => json!([]),
    };
    json!({
        "number": q(b.number),
        "hash": b.hash,
        "parentHash": b.parent_hash,
        "nonce": "0x0000000000000000",
        "sha3Uncles": EMPTY_OMMER_ROOT_HASH,
        "logsBloom": b.logs_bloom,
        "transactionsRoot": b.transactions_root,
        "stateRoot": B256::ZERO,
        "receiptsRoot": b.receipts_root,
        "miner": alloy_primitives::Address::ZERO,
        "difficulty": "0x0",
        "totalDifficulty": "0x0",
        "extraData": "0x",
        "size": q(b.size),
        "gasLimit": q(b.gas_limit),
        "gasUsed": q(b.gas_used),
        "timestamp": q(b.timestamp),
        "transactions": transactions,
        "uncles": [],
        "baseFeePerGas": q(b.base_fee),
        "mixHash": b.mix_hash,
        "withdrawals": [],
        "withdrawalsRoot": alloy_consensus::EMPTY_ROOT_HASH,
        "blobGasUsed": "0x0",
        "excessBlobGas": "0x0",
        "parentBeaconBlockRoot": B256::ZERO,
    })
}

pub(super) fn transaction(t: &TxEntry, block_hash: B256) -> Result<Value> {
    let env = t.envelope()?;
    let sig = *env.signature();
    let mut v = json!({
        "hash": t.hash,
        "type": q(env.tx_type() as u8),
        "nonce": q(env.nonce()),
        "blockHash": block_hash,
        "blockNumber": q(t.block_number),
        "transactionIndex": "0x0",
        "from": t.from,
        "to": env.to(),
        "value": env.value(),
        "gas": q(env.gas_limit()),
        "gasPrice": q(t.effective_gas_price),
        "input": env.input(),
        "r": U256::from(sig.r()),
        "s": U256::from(sig.s()),
    });
    let obj = v.as_object_mut().ok_or_else(|| Error::Evm("json".into()))?;
    match &env {
        TxEnvelope::Legacy(tx) => {
            obj.insert("v".into(), q(to_eip155_value(sig.v(), tx.tx().chain_id)));
            if let Some(id) = tx.tx().chain_id {
                obj.insert("chainId".into(), q(id));
            }
        }
        _ => {
            let parity = u8::from(sig.v());
            obj.insert("v".into(), q(parity));
            obj.insert("yParity".into(), q(parity));
            obj.insert("chainId".into(), q(env.chain_id().unwrap_or_default()));
            let list: Vec<Value> = env
                .access_list()
                .map(|l| {
                    l.iter()
                        .map(|i| json!({ "address": i.address, "storageKeys": i.storage_keys }))
                        .collect()
                })
                .unwrap_or_default();
            obj.insert("accessList".into(), Value::Array(list));
            if matches!(env, TxEnvelope::Eip1559(_)) {
                obj.insert("maxFeePerGas".into(), q(env.max_fee_per_gas()));
                obj.insert(
                    "maxPriorityFeePerGas".into(),
                    q(env.max_priority_fee_per_gas().unwrap_or(0)),
                );
            }
        }
    }
    Ok(v)
}

pub(super) fn receipt(t: &TxEntry, block: &Block) -> Result<Value> {
    let env = t.envelope()?;
    let logs: Vec<Value> = t
        .logs
        .iter()
        .enumerate()
        .map(|(i, log)| {
            log_entry(&LogEntry {
                log: log.clone(),
                block_number: block.number,
                block_hash: block.hash,
                tx_hash: t.hash,
                log_index: i as u64,
            })
        })
        .collect();
    Ok(json!({
        "transactionHash": t.hash,
        "transactionIndex": "0x0",
        "blockHash": block.hash,
        "blockNumber": q(block.number),
        "from": t.from,
        "to": env.to(),
        "cumulativeGasUsed": q(t.gas_used),
        "gasUsed": q(t.gas_used),
        "effectiveGasPrice": q(t.effective_gas_price),
        "contractAddress": t.contract_address,
        "logs": logs,
        "logsBloom": t.logs_bloom(),
        "status": if t.success { "0x1" } else { "0x0" },
        "type": q(env.tx_type() as u8),
    }))
}

pub(super) fn log_entry(l: &LogEntry) -> Value {
    json!({
        "address": l.log.address,
        "topics": l.log.topics(),
        "data": l.log.data.data,
        "blockNumber": q(l.block_number),
        "blockHash": l.block_hash,
        "transactionHash": l.tx_hash,
        "transactionIndex": "0x0",
        "logIndex": q(l.log_index),
        "removed": false,
    })
}
