//! Running one transaction or call through revm on top of the chain state.

use alloy_consensus::{Transaction as _, TxEnvelope};
use alloy_primitives::{Address, B256, TxKind, U256};
use revm::context::result::{EVMError, ExecResultAndState, ExecutionResult, InvalidTransaction};
use revm::context::{BlockEnv, CfgEnv, TxEnv};
use revm::database::{CacheDB, EmptyDB};
use revm::primitives::hardfork::SpecId;
use revm::state::EvmState;
use revm::{Context, ExecuteEvm, MainBuilder, MainContext};

use super::types::{CallRequest, mix_hash};
use crate::{Error, Result};

/// The chain's state: every account, its code and storage, in memory.
pub(crate) type StateDb = CacheDB<EmptyDB>;

/// The hardfork the chain runs: OpenZeppelin 5.x needs Cancun's MCOPY, and the
/// contracts are compiled for exactly this target.
pub(crate) const SPEC: SpecId = SpecId::CANCUN;

/// Chain-wide constants every execution needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    pub chain_id: u64,
    pub gas_limit: u64,
    pub base_fee: u64,
}

impl Rules {
    pub(crate) fn block_env(&self, number: u64, timestamp: u64) -> BlockEnv {
        BlockEnv {
            number: U256::from(number),
            timestamp: U256::from(timestamp),
            gas_limit: self.gas_limit,
            basefee: self.base_fee,
            prevrandao: Some(mix_hash(number)),
            ..BlockEnv::default()
        }
    }

    fn cfg(&self) -> CfgEnv {
        let mut cfg = CfgEnv::new_with_spec(SPEC);
        cfg.chain_id = self.chain_id;
        cfg
    }
}

/// What executing a transaction produced, before it is committed.
pub(crate) struct Outcome {
    pub result: ExecutionResult,
    pub state: EvmState,
}

/// Executes a signed transaction from `sender` without committing its state.
pub(crate) fn execute_tx(
    db: &mut StateDb,
    rules: &Rules,
    block: BlockEnv,
    tx: &TxEnvelope,
    sender: Address,
) -> Result<Outcome> {
    let tx_env = tx_env(tx, sender)?;
    let mut evm = Context::mainnet()
        .with_db(db)
        .with_cfg(rules.cfg())
        .with_block(block)
        .build_mainnet();
    let ExecResultAndState { result, state } = evm.transact(tx_env).map_err(rejection)?;
    Ok(Outcome { result, state })
}

/// Runs a call against the current state and throws the changes away. Like
/// geth, a call without a gas price pays no fees and skips the nonce check.
pub(crate) fn call(
    db: &StateDb,
    rules: &Rules,
    block: BlockEnv,
    req: &CallRequest,
    gas: u64,
) -> Result<ExecutionResult> {
    let mut cfg = rules.cfg();
    cfg.disable_nonce_check = true;
    let price = req
        .max_fee_per_gas
        .or(req.gas_price)
        .map(|p| p.to::<u128>())
        .unwrap_or(0);
    if price == 0 {
        cfg.disable_base_fee = true;
    }
    let caller = req.from.unwrap_or(Address::ZERO);
    let overlay = CacheDB::new(db);
    let tx = TxEnv {
        tx_type: if req.max_fee_per_gas.is_some() { 2 } else { 0 },
        caller,
        gas_limit: gas,
        gas_price: price,
        gas_priority_fee: req.max_priority_fee_per_gas.map(|p| p.to::<u128>()),
        kind: req.to.map_or(TxKind::Create, TxKind::Call),
        value: req.value.unwrap_or_default(),
        data: req.input.clone().unwrap_or_default(),
        nonce: 0,
        chain_id: Some(rules.chain_id),
        ..TxEnv::default()
    };
    let mut evm = Context::mainnet()
        .with_db(overlay)
        .with_cfg(cfg)
        .with_block(block)
        .build_mainnet();
    evm.transact(tx).map(|r| r.result).map_err(rejection)
}

fn tx_env(tx: &TxEnvelope, sender: Address) -> Result<TxEnv> {
    let (gas_price, priority) = match tx {
        TxEnvelope::Legacy(_) | TxEnvelope::Eip2930(_) => (tx.gas_price().unwrap_or(0), None),
        TxEnvelope::Eip1559(_) => (tx.max_fee_per_gas(), tx.max_priority_fee_per_gas()),
        _ => return Err(Error::Rejected("transaction type not supported".into())),
    };
    Ok(TxEnv {
        tx_type: tx.tx_type() as u8,
        caller: sender,
        gas_limit: tx.gas_limit(),
        gas_price,
        gas_priority_fee: priority,
        kind: tx.kind(),
        value: tx.value(),
        data: tx.input().clone(),
        nonce: tx.nonce(),
        chain_id: tx.chain_id(),
        access_list: tx.access_list().cloned().unwrap_or_default(),
        ..TxEnv::default()
    })
}

/// Maps revm's validation errors to the messages geth sends, which viem,
/// ethers and MetaMask recognise (e.g. "nonce too low").
fn rejection<E: std::fmt::Debug>(err: EVMError<E>) -> Error {
    let EVMError::Transaction(invalid) = err else {
        return Error::Evm(format!("{err:?}"));
    };
    Error::Rejected(match invalid {
        InvalidTransaction::NonceTooLow { tx, state } => {
            format!("nonce too low: next nonce {state}, tx nonce {tx}")
        }
        InvalidTransaction::NonceTooHigh { tx, state } => {
            format!("nonce too high: next nonce {state}, tx nonce {tx}")
        }
        InvalidTransaction::LackOfFundForMaxFee { fee, balance } => {
            format!("insufficient funds for gas * price + value: balance {balance}, tx cost {fee}")
        }
        InvalidTransaction::GasPriceLessThanBasefee => {
            "max fee per gas less than block base fee".into()
        }
        InvalidTransaction::CallerGasLimitMoreThanBlock => "exceeds block gas limit".into(),
        InvalidTransaction::CallGasCostMoreThanGasLimit {
            initial_gas,
            gas_limit,
        } => {
            format!("intrinsic gas too low: gas {gas_limit}, minimum needed {initial_gas}")
        }
        InvalidTransaction::PriorityFeeGreaterThanMaxFee => {
            "max priority fee per gas higher than max fee per gas".into()
        }
        InvalidTransaction::InvalidChainId | InvalidTransaction::MissingChainId => {
            "invalid chain id".into()
        }
        InvalidTransaction::RejectCallerWithCode => "sender not an eoa".into(),
        other => format!("invalid transaction: {other}"),
    })
}

/// Reads an account's nonce, balance and code straight from the cache, so
/// RPC reads of unknown addresses leave no trace in the state.
pub(crate) fn account(db: &StateDb, address: Address) -> (u64, U256, alloy_primitives::Bytes) {
    let Some(info) = db.cache.accounts.get(&address).map(|a| &a.info) else {
        return (0, U256::ZERO, alloy_primitives::Bytes::new());
    };
    let code = info
        .code
        .as_ref()
        .or_else(|| db.cache.contracts.get(&info.code_hash))
        .map(|c| c.original_bytes())
        .unwrap_or_default();
    (info.nonce, info.balance, code)
}

/// Reads a storage slot (zero when unset).
pub(crate) fn storage(db: &StateDb, address: Address, slot: U256) -> U256 {
    db.cache
        .accounts
        .get(&address)
        .and_then(|a| a.storage.get(&slot).copied())
        .unwrap_or_default()
}

/// The hash the EVM's BLOCKHASH returns for a height.
pub(crate) fn record_block_hash(db: &mut StateDb, number: u64, hash: B256) {
    db.cache.block_hashes.insert(U256::from(number), hash);
}
