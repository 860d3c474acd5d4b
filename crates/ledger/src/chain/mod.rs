//! The embedded chain: revm state, one block per transaction, durable history.
//!
//! [`Chain`] is the whole node-side ledger: it validates and mines raw signed
//! transactions, answers reads, and persists every mined block to the block
//! log before anyone learns the transaction hash (see `store`).

mod exec;
mod restore;
mod store;
mod types;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use alloy_consensus::{
    SignableTransaction, Transaction as _, TxEip1559, TxEnvelope, transaction::SignerRecoverable,
};
use alloy_eips::eip2718::{Decodable2718, Encodable2718};
use alloy_primitives::{Address, B256, BloomInput, Bytes, TxKind, U256};
use revm::DatabaseCommit;
use revm::context::result::ExecutionResult;

pub use types::{Block, BlockId, CallRequest, LogEntry, LogFilter, TxEntry};

pub(crate) use store::write_json_atomic;

use crate::accounts::Wallet;
use crate::genesis::{ChainConfig, Deployment};
use crate::{Error, Result};
use exec::{Rules, StateDb};
use store::{BlockLog, Record};
use types::Seal;

/// Most logs one `eth_getLogs` may return (clients then narrow the range).
pub const MAX_LOGS: usize = 10_000;

/// A running embedded chain. Cheap to share behind an `Arc`; every method
/// takes `&self`.
#[derive(Debug)]
pub struct Chain {
    rules: Rules,
    priority_fee: u64,
    snapshot_every: u64,
    dir: PathBuf,
    wallets: Vec<Wallet>,
    deployment: Deployment,
    inner: Mutex<Inner>,
}

/// Everything behind the lock: state, history and the open log.
#[derive(Debug)]
struct Inner {
    db: StateDb,
    blocks: Vec<Block>,
    txs: Vec<TxEntry>,
    tx_index: HashMap<B256, usize>,
    block_index: HashMap<B256, u64>,
    log: BlockLog,
    /// Seconds added to the wall clock (`advance_time`).
    time_offset: u64,
    last_snapshot: u64,
}

impl Chain {
    /// Opens the chain stored in `dir`, creating and deploying a fresh one if
    /// the directory is empty. Every block in the log is restored.
    pub fn open(dir: &Path, config: &ChainConfig) -> Result<Self> {
        restore::open(dir, config)
    }

    /// The EIP-155 chain id.
    pub fn chain_id(&self) -> u64 {
        self.rules.chain_id
    }

    /// The directory holding the chain's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Addresses of the genesis contracts.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// The funded dev accounts (index 0 deployed the contracts).
    pub fn dev_wallets(&self) -> &[Wallet] {
        &self.wallets
    }

    /// The constant base fee.
    pub fn base_fee(&self) -> u64 {
        self.rules.base_fee
    }

    /// The suggested tip.
    pub fn priority_fee(&self) -> u64 {
        self.priority_fee
    }

    /// Block gas limit.
    pub fn gas_limit(&self) -> u64 {
        self.rules.gas_limit
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock happens before any state commit
        // (commits cannot panic), so the data is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Height of the newest block.
    pub fn block_number(&self) -> u64 {
        self.lock().head().number
    }

    /// A block by number, tag or hash.
    pub fn block(&self, id: BlockId) -> Option<Block> {
        let inner = self.lock();
        let number = inner.resolve(id)?;
        inner.blocks.get(number as usize).cloned()
    }

    /// Blocks `from..=to`, clamped to the chain (for fee history).
    pub fn blocks(&self, from: u64, to: u64) -> Vec<Block> {
        let inner = self.lock();
        let end = (to as usize).min(inner.blocks.len().saturating_sub(1));
        inner
            .blocks
            .get(from as usize..=end)
            .map(<[Block]>::to_vec)
            .unwrap_or_default()
    }

    /// Resolves a block id to a height, if that block exists.
    pub fn resolve(&self, id: BlockId) -> Option<u64> {
        self.lock().resolve(id)
    }

    /// Balance in wei.
    pub fn balance(&self, address: Address) -> U256 {
        exec::account(&self.lock().db, address).1
    }

    /// The next nonce the account must use.
    pub fn nonce(&self, address: Address) -> u64 {
        exec::account(&self.lock().db, address).0
    }

    /// Deployed code (empty for accounts without code).
    pub fn code(&self, address: Address) -> Bytes {
        exec::account(&self.lock().db, address).2
    }

    /// A storage slot.
    pub fn storage_at(&self, address: Address, slot: U256) -> U256 {
        exec::storage(&self.lock().db, address, slot)
    }

    /// A mined transaction.
    pub fn transaction(&self, hash: B256) -> Option<TxEntry> {
        let inner = self.lock();
        inner.tx_index.get(&hash).map(|&i| inner.txs[i].clone())
    }

    /// The block a transaction was mined in (for receipts).
    pub fn block_of(&self, tx: &TxEntry) -> Option<Block> {
        self.lock().blocks.get(tx.block_number as usize).cloned()
    }

    /// Logs matching a filter, oldest first.
    pub fn logs(&self, filter: &LogFilter) -> Result<Vec<LogEntry>> {
        let inner = self.lock();
        let mut out = Vec::new();
        let last = filter.to_block.min(inner.head().number);
        for block in inner
            .blocks
            .iter()
            .take(last as usize + 1)
            .skip(filter.from_block as usize)
        {
            let Some(i) = block.tx.and_then(|h| inner.tx_index.get(&h)) else {
                continue;
            };
            let tx = &inner.txs[*i];
            if !filter.addresses.is_empty() || !filter.topics.is_empty() {
                // The bloom rules out most blocks without touching their logs.
                let bloom_hit = filter.addresses.is_empty()
                    || filter.addresses.iter().any(|a| {
                        block
                            .logs_bloom
                            .contains_input(BloomInput::Raw(a.as_slice()))
                    });
                if !bloom_hit {
                    continue;
                }
            }
            for (index, log) in tx.logs.iter().enumerate() {
                if filter.matches(log) {
                    if out.len() == MAX_LOGS {
                        return Err(Error::Rejected(format!(
                            "query returned more than {MAX_LOGS} results"
                        )));
                    }
                    out.push(LogEntry {
                        log: log.clone(),
                        block_number: block.number,
                        block_hash: block.hash,
                        tx_hash: tx.hash,
                        log_index: index as u64,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Executes a call against the newest state without changing it; returns
    /// the output, or `Error::Reverted` with the revert data.
    pub fn call(&self, req: &CallRequest) -> Result<Bytes> {
        let inner = self.lock();
        let gas = req.gas.map_or(self.rules.gas_limit, |g| g.to::<u64>());
        let result = exec::call(
            &inner.db,
            &self.rules,
            inner.pending_env(&self.rules),
            req,
            gas,
        )?;
        into_output(result)
    }

    /// The gas a transaction needs: like geth, a binary search for the
    /// smallest limit that succeeds, since refunds and the 63/64 rule make
    /// "gas used" an underestimate.
    pub fn estimate_gas(&self, req: &CallRequest) -> Result<u64> {
        let inner = self.lock();
        let env = inner.pending_env(&self.rules);
        let cap = req.gas.map_or(self.rules.gas_limit, |g| g.to::<u64>());
        let run = |gas| exec::call(&inner.db, &self.rules, env.clone(), req, gas);
        let first = run(cap)?;
        let spent = first.gas().total_gas_spent();
        into_output(first)?;
        // Try a little above the spent gas first: it is almost always enough.
        let guess = (spent + spent / 16 + 2_300).min(cap);
        let (mut lo, mut hi) = if run(guess)?.is_success() {
            (spent.saturating_sub(1), guess)
        } else {
            (guess, cap)
        };
        while hi - lo > 1 && (hi - lo) * 100 > hi {
            let mid = lo + (hi - lo) / 2;
            if run(mid)?.is_success() {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(hi)
    }

    /// Validates, executes and mines a raw EIP-2718 transaction (legacy with
    /// EIP-155, EIP-2930 or EIP-1559) in a new block. Returns its hash once the
    /// block is on disk; a reverted transaction is still mined (status 0).
    pub fn send_raw_transaction(&self, raw: &[u8]) -> Result<B256> {
        let tx = TxEnvelope::decode_2718_exact(raw)
            .map_err(|e| Error::InvalidTransaction(format!("rlp: {e}")))?;
        match tx {
            TxEnvelope::Legacy(_) | TxEnvelope::Eip2930(_) | TxEnvelope::Eip1559(_) => {}
            _ => return Err(Error::Rejected("transaction type not supported".into())),
        }
        match tx.chain_id() {
            Some(id) if id == self.rules.chain_id => {}
            Some(id) => {
                return Err(Error::Rejected(format!(
                    "invalid chain id: have {id}, want {}",
                    self.rules.chain_id
                )));
            }
            None => {
                return Err(Error::Rejected(
                    "only replay-protected (EIP-155) transactions allowed over RPC".into(),
                ));
            }
        }
        let sender = tx
            .recover_signer()
            .map_err(|_| Error::Rejected("invalid sender".into()))?;
        let hash = *tx.tx_hash();
        let mut inner = self.lock();
        if inner.tx_index.contains_key(&hash) {
            return Err(Error::Rejected("already known".into()));
        }
        let record = Record {
            number: inner.head().number + 1,
            timestamp: inner.next_timestamp(),
            tx: Some(Bytes::copy_from_slice(raw)),
        };
        let block = self.rules.block_env(record.number, record.timestamp);
        let outcome = exec::execute_tx(&mut inner.db, &self.rules, block, &tx, sender)?;
        // Durable before visible: the hash is returned only after the fsync.
        inner.log.append(&record)?;
        inner.apply(&self.rules, &record, Some((tx, sender, outcome)));
        self.maybe_snapshot(&mut inner);
        Ok(hash)
    }

    /// Mines an empty block (`evm_mine`), e.g. to move a vote's block clock.
    pub fn mine(&self) -> Result<Block> {
        let mut inner = self.lock();
        let record = Record {
            number: inner.head().number + 1,
            timestamp: inner.next_timestamp(),
            tx: None,
        };
        inner.log.append(&record)?;
        inner.apply(&self.rules, &record, None);
        self.maybe_snapshot(&mut inner);
        Ok(inner.head().clone())
    }

    /// Moves the clock forward by `seconds` and mines an empty block at the
    /// new time (`evm_increaseTime` + `evm_mine`), so the jump is durable.
    pub fn advance_time(&self, seconds: u64) -> Result<Block> {
        {
            let mut inner = self.lock();
            // Measured from the head, which may already run ahead of the wall
            // clock (timestamps strictly increase even for bursts of blocks).
            let target = inner.head().timestamp + seconds;
            inner.time_offset = inner.time_offset.max(target.saturating_sub(now()));
        }
        self.mine()
    }

    /// Builds, signs and submits an EIP-1559 transaction from a local wallet
    /// with the next nonce and an estimated gas limit. The same path as
    /// `eth_sendRawTransaction`; a transaction that would revert is refused
    /// here with `Error::Reverted` (like a client's gas estimation).
    pub fn send(
        &self,
        from: &Wallet,
        to: Option<Address>,
        data: Bytes,
        value: U256,
    ) -> Result<TxEntry> {
        let req = CallRequest {
            from: Some(from.address()),
            to,
            value: Some(value),
            input: Some(data.clone()),
            ..CallRequest::default()
        };
        let gas = self.estimate_gas(&req)?;
        let tx = TxEip1559 {
            chain_id: self.rules.chain_id,
            nonce: self.nonce(from.address()),
            gas_limit: gas,
            max_fee_per_gas: u128::from(self.rules.base_fee) * 2 + u128::from(self.priority_fee),
            max_priority_fee_per_gas: u128::from(self.priority_fee),
            to: to.map_or(TxKind::Create, TxKind::Call),
            value,
            access_list: Default::default(),
            input: data,
        };
        let sig = from.sign_hash(&tx.signature_hash())?;
        let raw = TxEnvelope::from(tx.into_signed(sig)).encoded_2718();
        let hash = self.send_raw_transaction(&raw)?;
        self.transaction(hash)
            .ok_or_else(|| Error::NotFound(format!("transaction {hash}")))
    }

    /// Writes a snapshot now (also done every `snapshot_every` blocks).
    pub fn snapshot(&self) -> Result<()> {
        let mut inner = self.lock();
        restore::write_snapshot(&self.dir, &mut inner)
    }

    fn maybe_snapshot(&self, inner: &mut Inner) {
        if inner.head().number >= inner.last_snapshot + self.snapshot_every {
            // The log already holds everything; a failed snapshot only makes
            // the next restart slower, so it must not fail the transaction.
            if let Err(e) = restore::write_snapshot(&self.dir, inner) {
                tracing::warn!(error = %e, "snapshot failed");
            }
        }
    }
}

fn into_output(result: ExecutionResult) -> Result<Bytes> {
    match result {
        ExecutionResult::Success { output, .. } => Ok(output.into_data()),
        ExecutionResult::Revert { output, .. } => Err(Error::Reverted { output }),
        ExecutionResult::Halt { reason, .. } => Err(Error::Halted(format!("{reason:?}"))),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Inner {
    fn head(&self) -> &Block {
        // There is always a genesis block.
        &self.blocks[self.blocks.len() - 1]
    }

    fn resolve(&self, id: BlockId) -> Option<u64> {
        match id {
            BlockId::Latest => Some(self.head().number),
            BlockId::Earliest => Some(0),
            BlockId::Number(n) => (n <= self.head().number).then_some(n),
            BlockId::Hash(h) => self.block_index.get(&h).copied(),
        }
    }

    /// Timestamps strictly increase, follow the (offset) wall clock, and never
    /// go backwards even if the clock does.
    fn next_timestamp(&self) -> u64 {
        (now() + self.time_offset).max(self.head().timestamp + 1)
    }

    /// The environment of the block a call is simulated in: the next one.
    fn pending_env(&self, rules: &Rules) -> revm::context::BlockEnv {
        rules.block_env(self.head().number + 1, self.next_timestamp())
    }

    /// Commits an executed transaction (or an empty block) and seals its block.
    fn apply(
        &mut self,
        rules: &Rules,
        record: &Record,
        tx: Option<(TxEnvelope, Address, exec::Outcome)>,
    ) {
        let parent_hash = self.head().hash;
        let entry = tx.map(|(env, from, outcome)| {
            self.db.commit(outcome.state);
            let result = outcome.result;
            let success = result.is_success();
            let entry = TxEntry {
                hash: *env.tx_hash(),
                raw: record.tx.clone().unwrap_or_default(),
                from,
                block_number: record.number,
                gas_used: result.tx_gas_used(),
                effective_gas_price: env.effective_gas_price(Some(rules.base_fee)),
                success,
                contract_address: if success {
                    result.created_address()
                } else {
                    None
                },
                logs: if success {
                    result.into_logs()
                } else {
                    Vec::new()
                },
            };
            (env, entry)
        });
        let block = Seal {
            parent_hash,
            number: record.number,
            timestamp: record.timestamp,
            gas_limit: rules.gas_limit,
            base_fee: rules.base_fee,
            tx: entry.as_ref().map(|(env, e)| (env, e)),
        }
        .seal();
        if let Some((_, entry)) = entry {
            self.tx_index.insert(entry.hash, self.txs.len());
            self.txs.push(entry);
        }
        exec::record_block_hash(&mut self.db, block.number, block.hash);
        self.block_index.insert(block.hash, block.number);
        self.blocks.push(block);
    }
}
