//! Parsing positional JSON-RPC parameters.

use alloy_primitives::{Address, B256, Bytes, U256};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::RpcError;
use crate::chain::{BlockId, Chain, LogFilter};

/// The positional parameters of one call.
pub(super) struct Params<'a> {
    values: &'a [Value],
}

impl<'a> Params<'a> {
    pub(super) fn new(params: &'a Value) -> Result<Self, RpcError> {
        match params {
            Value::Array(values) => Ok(Self { values }),
            Value::Null => Ok(Self { values: &[] }),
            _ => Err(RpcError::params("params must be an array")),
        }
    }

    fn get(&self, i: usize) -> Option<&'a Value> {
        self.values.get(i).filter(|v| !v.is_null())
    }

    /// A required parameter of any deserializable type.
    pub(super) fn req<T: DeserializeOwned>(&self, i: usize, what: &str) -> Result<T, RpcError> {
        let v = self
            .get(i)
            .ok_or_else(|| RpcError::params(format!("missing {what} (param {i})")))?;
        T::deserialize(v).map_err(|e| RpcError::params(format!("invalid {what}: {e}")))
    }

    /// An optional parameter.
    pub(super) fn opt<T: DeserializeOwned>(
        &self,
        i: usize,
        what: &str,
    ) -> Result<Option<T>, RpcError> {
        self.get(i).map(|_| self.req(i, what)).transpose()
    }

    pub(super) fn address(&self, i: usize) -> Result<Address, RpcError> {
        self.req(i, "address")
    }

    pub(super) fn bytes(&self, i: usize) -> Result<Bytes, RpcError> {
        self.req(i, "data")
    }

    pub(super) fn hash(&self, i: usize) -> Result<B256, RpcError> {
        self.req(i, "hash")
    }

    pub(super) fn u256(&self, i: usize) -> Result<U256, RpcError> {
        self.req(i, "quantity")
    }

    /// A block tag, number or EIP-1898 object; `latest` when absent.
    pub(super) fn block(&self, i: usize) -> Result<BlockId, RpcError> {
        self.get(i).map_or(Ok(BlockId::Latest), block_id)
    }

    /// A count given as a hex quantity or a plain JSON number.
    pub(super) fn count(&self, i: usize) -> Result<u64, RpcError> {
        match self.get(i) {
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| RpcError::params("invalid count")),
            Some(Value::String(s)) => quantity(s),
            _ => Err(RpcError::params(format!("missing count (param {i})"))),
        }
    }
}

/// Parses a hex quantity ("0x1a").
pub(super) fn quantity(s: &str) -> Result<u64, RpcError> {
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| RpcError::params(format!("not a hex quantity: {s}")))?;
    u64::from_str_radix(digits, 16)
        .map_err(|_| RpcError::params(format!("not a hex quantity: {s}")))
}

fn block_id(v: &Value) -> Result<BlockId, RpcError> {
    match v {
        Value::String(s) => match s.as_str() {
            "latest" | "pending" | "safe" | "finalized" => Ok(BlockId::Latest),
            "earliest" => Ok(BlockId::Earliest),
            s if s.len() == 66 => s
                .parse()
                .map(BlockId::Hash)
                .map_err(|_| RpcError::params("invalid block hash")),
            s => quantity(s).map(BlockId::Number),
        },
        Value::Object(o) => {
            if let Some(h) = o.get("blockHash") {
                return B256::deserialize(h)
                    .map(BlockId::Hash)
                    .map_err(|e| RpcError::params(e.to_string()));
            }
            o.get("blockNumber").map_or(
                Err(RpcError::params(
                    "block object needs blockNumber or blockHash",
                )),
                block_id,
            )
        }
        _ => Err(RpcError::params("invalid block tag")),
    }
}

use serde::Deserialize as _;

/// Parses an `eth_getLogs` filter object and resolves its range.
pub(super) fn log_filter(chain: &Chain, v: &Value) -> Result<LogFilter, RpcError> {
    let o = v
        .as_object()
        .ok_or_else(|| RpcError::params("filter must be an object"))?;
    let resolve = |key: &str| -> Result<u64, RpcError> {
        let id = o
            .get(key)
            .filter(|v| !v.is_null())
            .map_or(Ok(BlockId::Latest), block_id)?;
        // A range end past the head just means "up to now".
        Ok(match id {
            BlockId::Number(n) => n,
            other => chain
                .resolve(other)
                .ok_or_else(|| RpcError::params(format!("unknown block in {key}")))?,
        })
    };
    let (from_block, to_block) = match o.get("blockHash").filter(|v| !v.is_null()) {
        Some(h) => {
            let hash = B256::deserialize(h).map_err(|e| RpcError::params(e.to_string()))?;
            let n = chain
                .resolve(BlockId::Hash(hash))
                .ok_or_else(|| RpcError::new(super::error::SERVER_ERROR, "unknown block"))?;
            (n, n)
        }
        None => (resolve("fromBlock")?, resolve("toBlock")?),
    };
    if from_block > to_block {
        return Err(RpcError::params("invalid block range params"));
    }
    let addresses = match o.get("address") {
        None | Some(Value::Null) => Vec::new(),
        Some(a @ Value::String(_)) => {
            vec![Address::deserialize(a).map_err(|e| RpcError::params(e.to_string()))?]
        }
        Some(a) => Vec::<Address>::deserialize(a).map_err(|e| RpcError::params(e.to_string()))?,
    };
    let topics = match o.get("topics") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ts)) => ts
            .iter()
            .map(|t| match t {
                Value::Null => Ok(None),
                Value::String(_) => B256::deserialize(t).map(|h| Some(vec![h])),
                _ => Vec::<B256>::deserialize(t).map(Some),
            })
            .collect::<Result<_, _>>()
            .map_err(|e| RpcError::params(format!("invalid topics: {e}")))?,
        Some(_) => return Err(RpcError::params("topics must be an array")),
    };
    Ok(LogFilter {
        from_block,
        to_block,
        addresses,
        topics,
    })
}
