//! The JSON shapes the client reads and writes, kept to the fields it uses
//! so any standard node's answers parse.

use alloy_primitives::{Address, B256, Bytes, Log, U64, U256};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Receipt;
use crate::{Error, LogEntry, Result};

/// A hex quantity (`"0x1a"`) as u64.
pub(super) fn quantity(v: &Value) -> Result<u64> {
    serde_json::from_value::<U64>(v.clone())
        .map(|q| q.to::<u64>())
        .map_err(|e| Error::BadResponse(format!("expected a hex quantity, got {v}: {e}")))
}

/// An `eth_call` / `eth_estimateGas` request object.
pub(super) fn call_request(
    from: Option<Address>,
    to: Option<Address>,
    data: &Bytes,
    value: U256,
    gas: Option<u64>,
) -> Value {
    // `data` rather than the newer `input`: every node still accepts it, and
    // some reject a request carrying both.
    let mut req = json!({ "data": data, "value": value });
    if let Some(from) = from {
        req["from"] = json!(from);
    }
    if let Some(to) = to {
        req["to"] = json!(to);
    }
    if let Some(gas) = gas {
        req["gas"] = json!(format!("0x{gas:x}"));
    }
    req
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RpcBlock {
    #[serde(deserialize_with = "u64_quantity")]
    pub timestamp: u64,
    #[serde(deserialize_with = "u64_quantity")]
    pub gas_limit: u64,
    #[serde(default, rename = "baseFeePerGas")]
    base_fee_raw: Option<U64>,
}

impl RpcBlock {
    pub(super) fn base_fee(&self) -> Option<u64> {
        self.base_fee_raw.map(|b| b.to::<u64>())
    }
}

fn u64_quantity<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    U64::deserialize(d).map(|q| q.to::<u64>())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RpcLog {
    address: Address,
    topics: Vec<B256>,
    data: Bytes,
    #[serde(default)]
    block_number: Option<U64>,
    #[serde(default)]
    block_hash: Option<B256>,
    #[serde(default)]
    transaction_hash: Option<B256>,
    #[serde(default)]
    log_index: Option<U64>,
}

impl RpcLog {
    fn into_log(self) -> Log {
        Log::new_unchecked(self.address, self.topics, self.data)
    }

    pub(super) fn into_entry(self) -> Result<LogEntry> {
        let (Some(block_number), Some(block_hash), Some(tx_hash)) =
            (self.block_number, self.block_hash, self.transaction_hash)
        else {
            return Err(Error::BadResponse(
                "eth_getLogs returned a pending log".into(),
            ));
        };
        let log_index = self.log_index.map_or(0, |i| i.to::<u64>());
        Ok(LogEntry {
            log: self.into_log(),
            block_number: block_number.to(),
            block_hash,
            tx_hash,
            log_index,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RpcReceipt {
    transaction_hash: B256,
    block_number: U64,
    gas_used: U64,
    /// Post-Byzantium receipts have a status; pre-Byzantium ones a state root.
    #[serde(default)]
    status: Option<U64>,
    #[serde(default)]
    contract_address: Option<Address>,
    #[serde(default)]
    logs: Vec<RpcLog>,
}

/// A receipt and whether the transaction succeeded.
pub(super) struct Mined {
    pub receipt: Receipt,
    pub success: bool,
}

impl RpcReceipt {
    pub(super) fn into_mined(self) -> Result<Mined> {
        let Some(status) = self.status else {
            return Err(Error::BadResponse(format!(
                "receipt of {} has no status (pre-Byzantium chains are not supported)",
                self.transaction_hash
            )));
        };
        Ok(Mined {
            success: status == U64::from(1),
            receipt: Receipt {
                tx_hash: self.transaction_hash,
                block_number: self.block_number.to(),
                gas_used: self.gas_used.to(),
                contract_address: self.contract_address,
                logs: self.logs.into_iter().map(RpcLog::into_log).collect(),
            },
        })
    }
}
