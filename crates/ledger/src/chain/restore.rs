//! Opening a chain directory: genesis, snapshot, log replay, and finishing
//! the genesis deployment if a previous run was killed half-way through it.
//!
//! Files in the directory:
//! - `genesis.json`: chain id, gas limit, base fee, funded accounts, time;
//! - `blocks.log`: every block after genesis (see `store`);
//! - `snapshot.json`: state and history up to some block, to skip replay.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use alloy_consensus::{TxEnvelope, transaction::SignerRecoverable};
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{Address, B256, Bytes, U256};
use revm::bytecode::Bytecode;
use revm::database::{AccountState, DbAccount};
use revm::state::AccountInfo;
use serde::{Deserialize, Serialize};

use super::exec::{self, Rules, StateDb};
use super::store::{self, BlockLog, Record};
use super::types::{Block, Seal, TxEntry};
use super::{Chain, Inner, now};
use crate::accounts::dev_wallets;
use crate::genesis::{self, ChainConfig, Deployment, GenesisFile};
use crate::{Error, Result};

const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    genesis_hash: B256,
    blocks: Vec<Block>,
    txs: Vec<TxEntry>,
    accounts: Vec<SnapAccount>,
}

#[derive(Serialize, Deserialize)]
struct SnapAccount {
    address: Address,
    nonce: u64,
    balance: U256,
    code: Bytes,
    storage: Vec<(U256, U256)>,
}

pub(super) fn open(dir: &Path, config: &ChainConfig) -> Result<Chain> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let wallets = dev_wallets(&config.mnemonic, config.dev_accounts.max(1))?;
    let genesis_path = dir.join("genesis.json");
    let genesis = match store::read_json::<GenesisFile>(&genesis_path)? {
        Some(g) if g.format == FORMAT => g,
        Some(g) => {
            return Err(Error::Corrupt(format!(
                "genesis format {} unsupported",
                g.format
            )));
        }
        None => {
            let g = GenesisFile {
                format: FORMAT,
                chain_id: config.chain_id,
                timestamp: now(),
                gas_limit: config.gas_limit,
                base_fee: config.base_fee,
                alloc: wallets
                    .iter()
                    .map(|w| (w.address(), config.dev_balance))
                    .collect(),
            };
            store::write_json_atomic(&genesis_path, &g)?;
            g
        }
    };
    let rules = Rules {
        chain_id: genesis.chain_id,
        gas_limit: genesis.gas_limit,
        base_fee: genesis.base_fee,
    };
    let (log, records) = BlockLog::open(&dir.join("blocks.log"))?;
    let mut inner = genesis_state(&genesis, &rules, log);
    let genesis_hash = inner.blocks[0].hash;
    let last_logged = records.last().map_or(0, |r| r.number);
    if let Some(snap) = read_snapshot(dir, genesis_hash, last_logged) {
        load_snapshot(&mut inner, snap);
    }
    let from = inner.head().number;
    for record in records.iter().filter(|r| r.number > from) {
        replay(&mut inner, &rules, record)?;
    }
    inner.time_offset = inner.head().timestamp.saturating_sub(now());
    let replayed = inner.head().number - from;
    tracing::info!(blocks = inner.head().number, replayed, "chain restored");

    let chain = Chain {
        rules,
        priority_fee: config.priority_fee,
        snapshot_every: config.snapshot_every.max(1),
        dir: dir.to_owned(),
        deployment: Deployment::for_deployer(wallets[0].address()),
        wallets,
        inner: Mutex::new(inner),
    };
    deploy_remaining(&chain, config)?;
    if replayed >= chain.snapshot_every {
        chain.snapshot()?;
    }
    Ok(chain)
}

fn genesis_state(genesis: &GenesisFile, rules: &Rules, log: BlockLog) -> Inner {
    let mut db = StateDb::default();
    for (address, balance) in &genesis.alloc {
        db.insert_account_info(
            *address,
            AccountInfo {
                balance: *balance,
                ..AccountInfo::default()
            },
        );
    }
    let block = Seal {
        parent_hash: B256::ZERO,
        number: 0,
        timestamp: genesis.timestamp,
        gas_limit: rules.gas_limit,
        base_fee: rules.base_fee,
        tx: None,
    }
    .seal();
    exec::record_block_hash(&mut db, 0, block.hash);
    Inner {
        db,
        block_index: HashMap::from([(block.hash, 0)]),
        blocks: vec![block],
        txs: Vec::new(),
        tx_index: HashMap::new(),
        log,
        time_offset: 0,
        last_snapshot: 0,
    }
}

/// Re-executes a logged block. It was valid when first mined and execution
/// is deterministic, so any failure means the files do not belong together.
fn replay(inner: &mut Inner, rules: &Rules, record: &Record) -> Result<()> {
    let expected = inner.head().number + 1;
    if record.number != expected {
        return Err(Error::Corrupt(format!(
            "log has block {} where {expected} belongs",
            record.number
        )));
    }
    let Some(raw) = &record.tx else {
        inner.apply(rules, record, None);
        return Ok(());
    };
    let bad = |e: String| Error::Corrupt(format!("replaying block {}: {e}", record.number));
    let tx = TxEnvelope::decode_2718_exact(raw).map_err(|e| bad(e.to_string()))?;
    let sender = tx.recover_signer().map_err(|e| bad(e.to_string()))?;
    let block = rules.block_env(record.number, record.timestamp);
    let outcome = exec::execute_tx(&mut inner.db, rules, block, &tx, sender)
        .map_err(|e| bad(e.to_string()))?;
    inner.apply(rules, record, Some((tx, sender, outcome)));
    Ok(())
}

/// A snapshot is used only if it belongs to this genesis and the log reaches
/// at least as far (otherwise it would contain blocks the log lost).
fn read_snapshot(dir: &Path, genesis_hash: B256, last_logged: u64) -> Option<Snapshot> {
    let snap = match store::read_json::<Snapshot>(&dir.join("snapshot.json")) {
        Ok(s) => s?,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring unreadable snapshot; replaying the log");
            return None;
        }
    };
    let height = snap.blocks.last().map_or(0, |b| b.number);
    let usable = snap.format == FORMAT
        && snap.genesis_hash == genesis_hash
        && snap.blocks.first().is_some_and(|b| b.hash == genesis_hash)
        && height <= last_logged;
    if !usable {
        tracing::warn!(
            height,
            last_logged,
            "ignoring snapshot that does not match the log"
        );
    }
    usable.then_some(snap)
}

fn load_snapshot(inner: &mut Inner, snap: Snapshot) {
    let mut db = StateDb::default();
    for a in snap.accounts {
        let code = Bytecode::new_raw(a.code);
        let info = AccountInfo {
            balance: a.balance,
            nonce: a.nonce,
            ..AccountInfo::default()
        }
        .with_code(code);
        db.insert_account_info(a.address, info);
        for (slot, value) in a.storage {
            db.cache
                .accounts
                .entry(a.address)
                .or_default()
                .storage
                .insert(slot, value);
        }
    }
    for b in &snap.blocks {
        exec::record_block_hash(&mut db, b.number, b.hash);
    }
    inner.db = db;
    inner.block_index = snap.blocks.iter().map(|b| (b.hash, b.number)).collect();
    inner.tx_index = snap
        .txs
        .iter()
        .enumerate()
        .map(|(i, t)| (t.hash, i))
        .collect();
    inner.last_snapshot = snap.blocks.last().map_or(0, |b| b.number);
    inner.blocks = snap.blocks;
    inner.txs = snap.txs;
}

pub(super) fn write_snapshot(dir: &Path, inner: &mut Inner) -> Result<()> {
    let accounts = inner
        .db
        .cache
        .accounts
        .iter()
        .filter(|(_, a)| !matches!(a.account_state, AccountState::NotExisting))
        .map(|(address, a)| snap_account(&inner.db, *address, a))
        .filter(|(_, a)| {
            a.nonce != 0 || !a.balance.is_zero() || !a.code.is_empty() || !a.storage.is_empty()
        })
        .collect::<BTreeMap<_, _>>()
        .into_values()
        .collect();
    let snap = Snapshot {
        format: FORMAT,
        genesis_hash: inner.blocks[0].hash,
        blocks: inner.blocks.clone(),
        txs: inner.txs.clone(),
        accounts,
    };
    store::write_json_atomic(&dir.join("snapshot.json"), &snap)?;
    inner.last_snapshot = inner.head().number;
    Ok(())
}

fn snap_account(db: &StateDb, address: Address, a: &DbAccount) -> (Address, SnapAccount) {
    let (nonce, balance, code) = exec::account(db, address);
    let mut storage: Vec<(U256, U256)> = a
        .storage
        .iter()
        .filter(|(_, v)| !v.is_zero())
        .map(|(k, v)| (*k, *v))
        .collect();
    storage.sort_unstable();
    (
        address,
        SnapAccount {
            address,
            nonce,
            balance,
            code,
            storage,
        },
    )
}

/// Sends the genesis steps the deployer's nonce says have not run yet.
fn deploy_remaining(chain: &Chain, config: &ChainConfig) -> Result<()> {
    let d = *chain.deployment();
    let dev: Vec<Address> = chain.dev_wallets().iter().map(|w| w.address()).collect();
    let steps = genesis::steps(&d, &config.protocol, &dev);
    let done = chain.nonce(d.deployer) as usize;
    for (i, step) in steps.iter().enumerate().skip(done) {
        let entry = chain
            .send(
                &chain.dev_wallets()[0],
                step.to,
                step.data.clone(),
                U256::ZERO,
            )
            .map_err(|e| Error::Genesis(format!("step {i}: {e}")))?;
        if !entry.success {
            return Err(Error::Genesis(format!("step {i} reverted")));
        }
    }
    Ok(())
}
