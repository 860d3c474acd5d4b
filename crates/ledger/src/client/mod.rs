//! A chain client: typed contract reads, signed EIP-1559 transactions and
//! dev-chain controls over any JSON-RPC [`Transport`].
//!
//! The same code drives the embedded chain ([`InProcess`], through the RPC
//! router, so it sees exactly what external wallets see) and any EVM node
//! ([`Http`]), e.g. hardhat's or a testnet's. Nothing here knows which one
//! it talks to: gas comes from `eth_estimateGas`, fees from the latest base
//! fee and `eth_maxPriorityFeePerGas`, nonces from `eth_getTransactionCount`
//! at `pending`.
//!
//! Sends from one signer are serialised process-wide (see [`send_lock`]), from
//! signing until the receipt arrives, so threads sharing a key never reuse a
//! nonce and a transaction's gas estimate sees its predecessors' effects.

mod transport;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, Bytes, Log, TxKind, U256};
use alloy_sol_types::{SolCall, SolEvent};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use transport::{Http, InProcess, Transport};

use crate::rpc::{EXECUTION_REVERTED, METHOD_NOT_FOUND};
use crate::{Chain, Error, LogEntry, Result, Wallet};

/// Tip used when a node does not implement `eth_maxPriorityFeePerGas`.
const FALLBACK_TIP: u128 = 1_000_000_000;
/// How long `send` waits for a receipt by default.
const DEFAULT_RECEIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest pause between two receipt polls.
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// A mined transaction, as the client needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Transaction hash.
    pub tx_hash: B256,
    /// Block it was mined in.
    pub block_number: u64,
    /// Gas it used.
    pub gas_used: u64,
    /// The created contract, for a deployment.
    pub contract_address: Option<Address>,
    /// Its logs, in order.
    pub logs: Vec<Log>,
}

impl Receipt {
    /// The events of type `E` among the logs (others are skipped).
    pub fn events<E: SolEvent>(&self) -> Vec<E> {
        self.logs
            .iter()
            .filter(|l| l.topics().first() == Some(&E::SIGNATURE_HASH))
            .filter_map(|l| E::decode_log_data(&l.data).ok())
            .collect()
    }
}

/// A JSON-RPC chain client with an optional signing wallet. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    transport: Arc<dyn Transport>,
    chain_id: u64,
    signer: Option<Wallet>,
    receipt_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("chain_id", &self.chain_id)
            .field("signer", &self.signer_address())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client over `transport`; asks the endpoint for its chain id, which
    /// every signed transaction then commits to.
    pub fn new(transport: Arc<dyn Transport>, signer: Option<Wallet>) -> Result<Self> {
        let chain_id = wire::quantity(&transport.request("eth_chainId", json!([]))?)?;
        Ok(Self {
            transport,
            chain_id,
            signer,
            receipt_timeout: DEFAULT_RECEIPT_TIMEOUT,
        })
    }

    /// A client of the embedded chain, through its JSON-RPC router.
    pub fn in_process(chain: Arc<Chain>, signer: Option<Wallet>) -> Result<Self> {
        Self::new(Arc::new(InProcess::new(chain)), signer)
    }

    /// A client of the JSON-RPC endpoint at `url` (plain `http://`).
    pub fn http(url: &str, signer: Option<Wallet>) -> Result<Self> {
        Self::new(Arc::new(Http::new(url)?), signer)
    }

    /// The same endpoint, signing with `signer`.
    pub fn with_signer(&self, signer: Wallet) -> Self {
        Self {
            signer: Some(signer),
            ..self.clone()
        }
    }

    /// The same client, waiting at most `timeout` for each receipt.
    pub fn with_receipt_timeout(&self, timeout: Duration) -> Self {
        Self {
            receipt_timeout: timeout,
            ..self.clone()
        }
    }

    /// The endpoint's EIP-155 chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The signing wallet's address, if there is one.
    pub fn signer_address(&self) -> Option<Address> {
        self.signer.as_ref().map(Wallet::address)
    }

    /// One raw JSON-RPC call, its result decoded into `T`.
    pub fn rpc<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T> {
        let value = self.transport.request(method, params)?;
        serde_json::from_value(value).map_err(|e| Error::BadResponse(format!("{method}: {e}")))
    }

    /// `eth_call` of a typed contract call against the latest block, decoded;
    /// a revert is [`Error::Reverted`] with the contract's revert data.
    pub fn view<C: SolCall>(&self, to: Address, call: &C) -> Result<C::Return> {
        let out = self.call(
            self.signer_address(),
            Some(to),
            &call.abi_encode().into(),
            U256::ZERO,
        )?;
        C::abi_decode_returns(&out)
            .map_err(|e| Error::BadResponse(format!("cannot decode {}: {e}", C::SIGNATURE)))
    }

    /// `eth_call` with raw calldata; a revert is [`Error::Reverted`].
    pub fn call(
        &self,
        from: Option<Address>,
        to: Option<Address>,
        data: &Bytes,
        value: U256,
    ) -> Result<Bytes> {
        let req = wire::call_request(from, to, data, value, None);
        self.rpc::<Bytes>("eth_call", json!([req, "latest"]))
            .map_err(into_revert)
    }

    /// Sends a typed contract call as a signed transaction and waits for it
    /// to be mined (see [`Client::transact`]).
    pub fn send<C: SolCall>(&self, to: Address, call: &C) -> Result<Receipt> {
        self.transact(Some(to), call.abi_encode().into(), U256::ZERO)
    }

    /// Deploys `creation_code` (bytecode followed by ABI-encoded constructor
    /// arguments) and returns the new contract's address.
    pub fn deploy(&self, creation_code: Bytes) -> Result<Address> {
        let receipt = self.transact(None, creation_code, U256::ZERO)?;
        receipt.contract_address.ok_or_else(|| {
            Error::BadResponse(format!(
                "receipt of deployment {} has no contractAddress",
                receipt.tx_hash
            ))
        })
    }

    /// Builds, signs and submits an EIP-1559 transaction from the signer and
    /// waits for its receipt. The gas limit is the node's estimate plus 20 %
    /// (estimates can fall short when state moves between estimate and
    /// inclusion); the fee cap is twice the latest base fee plus the tip, so
    /// it stays valid through several base-fee rises. A call the node's
    /// estimate says would revert is refused before signing, and a mined but
    /// reverted transaction is replayed as `eth_call` to recover the revert
    /// data; both give [`Error::Reverted`].
    pub fn transact(&self, to: Option<Address>, data: Bytes, value: U256) -> Result<Receipt> {
        let signer = self.signer.as_ref().ok_or(Error::NoSigner)?;
        let from = signer.address();
        let lock = send_lock(self.chain_id, from);
        // A panic while holding this lock leaves no state behind it to repair.
        let _serialised = lock.lock().unwrap_or_else(|p| p.into_inner());
        let gas = self.estimate_gas(from, to, &data, value)?;
        let (max_fee, tip, gas_cap) = self.fees()?;
        let tx = TxEip1559 {
            chain_id: self.chain_id,
            nonce: self.nonce(from)?,
            gas_limit: (gas + gas / 5).min(gas_cap.max(gas)),
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
            to: to.map_or(TxKind::Create, TxKind::Call),
            value,
            access_list: Default::default(),
            input: data.clone(),
        };
        let sig = signer.sign_hash(&tx.signature_hash())?;
        let raw = Bytes::from(TxEnvelope::from(tx.into_signed(sig)).encoded_2718());
        let hash: B256 = self.rpc("eth_sendRawTransaction", json!([raw]))?;
        let receipt = self.wait_for_receipt(hash)?;
        if !receipt.success {
            return Err(self.replay_revert(from, to, &data, value));
        }
        Ok(receipt.receipt)
    }

    /// The signer's next nonce, counting transactions still in the pool.
    pub fn nonce(&self, address: Address) -> Result<u64> {
        wire::quantity(&self.rpc::<Value>("eth_getTransactionCount", json!([address, "pending"]))?)
    }

    /// Balance in wei.
    pub fn balance(&self, address: Address) -> Result<U256> {
        self.rpc("eth_getBalance", json!([address, "latest"]))
    }

    /// Height of the newest block.
    pub fn block_number(&self) -> Result<u64> {
        wire::quantity(&self.rpc::<Value>("eth_blockNumber", json!([]))?)
    }

    /// Timestamp of the newest block.
    pub fn block_timestamp(&self) -> Result<u64> {
        Ok(self.latest_block()?.timestamp)
    }

    /// Moves a dev chain's clock forward and mines a block at the new time
    /// (`evm_increaseTime` + `evm_mine`; the embedded chain and hardhat both
    /// have them, production chains do not).
    pub fn increase_time(&self, seconds: u64) -> Result<()> {
        self.rpc::<Value>("evm_increaseTime", json!([seconds]))?;
        self.mine()
    }

    /// Mines an empty block on a dev chain (`evm_mine`).
    pub fn mine(&self) -> Result<()> {
        self.rpc::<Value>("evm_mine", json!([]))?;
        Ok(())
    }

    /// Logs emitted by `address` with first topic `topic0`, from block
    /// `from_block` to the latest, oldest first.
    pub fn logs(&self, address: Address, topic0: B256, from_block: u64) -> Result<Vec<LogEntry>> {
        let filter = json!({
            "address": address,
            "topics": [topic0],
            "fromBlock": format!("0x{from_block:x}"),
            "toBlock": "latest",
        });
        let logs: Vec<wire::RpcLog> = self.rpc("eth_getLogs", json!([filter]))?;
        logs.into_iter().map(wire::RpcLog::into_entry).collect()
    }

    /// The events of type `E` emitted by `address` since `from_block`, decoded,
    /// each with the log it came from.
    pub fn events<E: SolEvent>(
        &self,
        address: Address,
        from_block: u64,
    ) -> Result<Vec<(E, LogEntry)>> {
        self.logs(address, E::SIGNATURE_HASH, from_block)?
            .into_iter()
            .map(|entry| {
                let event = E::decode_log_data(&entry.log.data).map_err(|e| {
                    Error::BadResponse(format!("cannot decode {}: {e}", E::SIGNATURE))
                })?;
                Ok((event, entry))
            })
            .collect()
    }

    fn estimate_gas(
        &self,
        from: Address,
        to: Option<Address>,
        data: &Bytes,
        value: U256,
    ) -> Result<u64> {
        let req = wire::call_request(Some(from), to, data, value, None);
        let gas = self
            .rpc::<Value>("eth_estimateGas", json!([req]))
            .map_err(into_revert)?;
        wire::quantity(&gas)
    }

    /// (fee cap, tip, block gas limit) for a new transaction.
    fn fees(&self) -> Result<(u128, u128, u64)> {
        let block = self.latest_block()?;
        let tip = match self.rpc::<Value>("eth_maxPriorityFeePerGas", json!([])) {
            Ok(v) => u128::from(wire::quantity(&v)?),
            Err(Error::Rpc { code, .. }) if code == METHOD_NOT_FOUND => FALLBACK_TIP,
            Err(e) => return Err(e),
        };
        // A chain without EIP-1559 has no base fee; the gas price stands in.
        let base = match block.base_fee() {
            Some(b) => u128::from(b),
            None => u128::from(wire::quantity(
                &self.rpc::<Value>("eth_gasPrice", json!([]))?,
            )?),
        };
        Ok((base * 2 + tip, tip, block.gas_limit))
    }

    fn latest_block(&self) -> Result<wire::RpcBlock> {
        let block: Option<wire::RpcBlock> =
            self.rpc("eth_getBlockByNumber", json!(["latest", false]))?;
        block.ok_or_else(|| Error::BadResponse("no latest block".into()))
    }

    /// Polls for the receipt with a growing interval: the embedded chain and
    /// hardhat mine at once, public chains take seconds.
    fn wait_for_receipt(&self, hash: B256) -> Result<wire::Mined> {
        let deadline = Instant::now() + self.receipt_timeout;
        let mut pause = Duration::from_millis(10);
        loop {
            let receipt: Option<wire::RpcReceipt> =
                self.rpc("eth_getTransactionReceipt", json!([hash]))?;
            if let Some(r) = receipt {
                return r.into_mined();
            }
            if Instant::now() >= deadline {
                return Err(Error::Transport(format!(
                    "transaction {hash} was not mined within {} s",
                    self.receipt_timeout.as_secs()
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_POLL_INTERVAL);
        }
    }

    /// Re-runs a reverted transaction as a call to get its revert data. The
    /// replay runs on the latest state (not every node keeps older ones), so
    /// the data is the best available explanation, not a proof.
    fn replay_revert(
        &self,
        from: Address,
        to: Option<Address>,
        data: &Bytes,
        value: U256,
    ) -> Error {
        match self.call(Some(from), to, data, value) {
            Err(e @ Error::Reverted { .. }) => e,
            _ => Error::Reverted {
                output: Bytes::new(),
            },
        }
    }
}

/// Turns a JSON-RPC revert into [`Error::Reverted`]. geth and the embedded
/// chain use code 3 with the data as a hex string; hardhat uses -32603 with
/// a message mentioning the revert and `data` either a hex string or an
/// object holding one under `data`.
fn into_revert(e: Error) -> Error {
    let Error::Rpc {
        code,
        message,
        data,
    } = &e
    else {
        return e;
    };
    let hex = match data {
        Some(Value::String(s)) => Some(s.as_str()),
        Some(Value::Object(o)) => o.get("data").and_then(Value::as_str),
        _ => None,
    };
    let is_revert = *code == EXECUTION_REVERTED || message.contains("revert");
    match (is_revert, hex.map(str::parse::<Bytes>)) {
        (true, Some(Ok(output))) => Error::Reverted { output },
        (true, None) => Error::Reverted {
            output: Bytes::new(),
        },
        _ => e,
    }
}

/// The lock that serialises sends from `signer` on chain `chain_id` across
/// every client in the process (clients are cloned freely and may be created
/// separately for the same key).
fn send_lock(chain_id: u64, signer: Address) -> Arc<Mutex<()>> {
    type Locks = HashMap<(u64, Address), Arc<Mutex<()>>>;
    static LOCKS: OnceLock<Mutex<Locks>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    Arc::clone(locks.entry((chain_id, signer)).or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverts_are_recognised_in_geth_and_hardhat_shapes() {
        let geth = into_revert(Error::Rpc {
            code: 3,
            message: "execution reverted".into(),
            data: Some(json!("0xdeadbeef")),
        });
        assert!(
            matches!(geth, Error::Reverted { output } if output.as_ref() == [0xde, 0xad, 0xbe, 0xef])
        );
        let hardhat = into_revert(Error::Rpc {
            code: -32603,
            message:
                "Error: VM Exception while processing transaction: reverted with custom error 'X()'"
                    .into(),
            data: Some(json!({ "message": "…", "data": "0x12345678" })),
        });
        assert!(matches!(hardhat, Error::Reverted { output } if output.len() == 4));
        let other = into_revert(Error::Rpc {
            code: -32000,
            message: "nonce too low".into(),
            data: None,
        });
        assert!(matches!(other, Error::Rpc { code: -32000, .. }));
    }
}
