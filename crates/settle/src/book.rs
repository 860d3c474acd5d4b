//! The settlement book: one SQLite file holding every payer's latest voucher,
//! every receipt and its shares, and every sealed epoch with its payout
//! leaves.
//!
//! Each change is one transaction, so a kill at any moment leaves the book
//! either before or after it: a receipt is recorded together with the payer's
//! spent total, and an epoch is sealed together with the receipts it covers.
//! Amounts are `u128` stored as decimal text (SQLite integers stop at 2⁶³).

use std::collections::BTreeMap;
use std::path::Path;

use alloy_primitives::{Address, B256, Bytes};
use credence_store::Database;
use credence_store::rusqlite::{self, OptionalExtension, Transaction, params};
use serde::Serialize;

use crate::group::GroupCommit;
use crate::receipt::{NewReceipt, Receipt, ReceiptHash};
use crate::split::{Role, Share};
use crate::{Error, Result};

const MIGRATIONS: &[credence_store::Migration] = &[
    "
CREATE TABLE payers (
    payer BLOB PRIMARY KEY,
    voucher TEXT NOT NULL,
    signature BLOB NOT NULL,
    spent TEXT NOT NULL,
    redeemed TEXT NOT NULL
);
CREATE TABLE receipts (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    payer BLOB NOT NULL,
    model TEXT NOT NULL,
    adapters TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    fee TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    hash BLOB NOT NULL,
    epoch INTEGER
);
CREATE INDEX receipts_unsealed ON receipts(epoch) WHERE epoch IS NULL;
CREATE TABLE shares (
    receipt INTEGER NOT NULL REFERENCES receipts(seq),
    account BLOB NOT NULL,
    role TEXT NOT NULL,
    amount TEXT NOT NULL
);
CREATE INDEX shares_by_receipt ON shares(receipt);
CREATE TABLE epochs (
    epoch INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    receipts_root BLOB NOT NULL,
    total TEXT NOT NULL,
    retained TEXT NOT NULL,
    receipts INTEGER NOT NULL,
    sealed_at INTEGER NOT NULL,
    posted_tx BLOB,
    final INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE leaves (
    epoch INTEGER NOT NULL,
    account BLOB NOT NULL,
    cumulative TEXT NOT NULL,
    PRIMARY KEY (epoch, account)
);
",
    // Whether an epoch's contribution votes (cVOTE for paid usage) are minted.
    "ALTER TABLE epochs ADD COLUMN votes_minted INTEGER NOT NULL DEFAULT 0;",
    // Accounts whose distributor claim slot is known to be warm.
    "CREATE TABLE warm (account BLOB PRIMARY KEY);",
];

/// A payer's standing with this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PayerState {
    /// The latest accepted voucher's cumulative amount.
    #[serde(with = "crate::amount")]
    pub voucher: u128,
    /// Fees charged so far (always ≤ `voucher`).
    #[serde(with = "crate::amount")]
    pub spent: u128,
    /// Amount of the voucher already redeemed on-chain.
    #[serde(with = "crate::amount")]
    pub redeemed: u128,
}

/// The latest voucher a payer signed, as the escrow contract redeems it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVoucher {
    /// Who signed it.
    pub payer: Address,
    /// Its cumulative amount.
    pub cumulative: u128,
    /// The 65-byte signature.
    pub signature: Bytes,
    /// Already redeemed on-chain.
    pub redeemed: u128,
}

/// A sealed epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Epoch {
    /// Its number (1, 2, …, matching `AttributionDistributor.lastEpoch`).
    pub epoch: u64,
    /// Merkle root of (account, cumulative earnings) leaves.
    pub root: B256,
    /// Merkle root of the hashes of the receipts it sealed.
    pub receipts_root: B256,
    /// Sum of all leaves: everything claimable up to this epoch.
    #[serde(with = "crate::amount")]
    pub total: u128,
    /// The node's own shares up to this epoch (kept, never posted for claims).
    #[serde(with = "crate::amount")]
    pub retained: u128,
    /// Receipts sealed into this epoch.
    pub receipts: u64,
    /// When it was sealed (Unix seconds).
    pub sealed_at: u64,
    /// The `postEpoch` transaction, once mined.
    pub posted_tx: Option<B256>,
    /// Whether the root is final on-chain (claims may use it).
    pub is_final: bool,
}

/// A voucher higher than the one held, kept together with the receipt it paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoucherUpdate {
    /// Its cumulative amount.
    pub cumulative: u128,
    /// The payer's signature.
    pub signature: Bytes,
}

type Job = (NewReceipt, Option<VoucherUpdate>);

/// The settlement database.
#[derive(Debug)]
pub struct Book {
    db: Database,
    commits: GroupCommit<Job, Result<Receipt>>,
}

impl Book {
    /// Opens (creating if needed) the book at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            db: Database::open(path, MIGRATIONS)?,
            commits: GroupCommit::new(),
        })
    }

    /// A payer's standing, if it ever sent a voucher.
    pub fn payer(&self, payer: Address) -> Result<Option<PayerState>> {
        self.db.read(|c| payer_state(c, payer))
    }

    /// Records a charged call: the receipt, its shares, the payer's new
    /// spent total and, if it is higher than the one held, the voucher that
    /// paid for it, all in one transaction (shared with concurrent calls, see
    /// [`GroupCommit`]). Refuses a fee the payer's voucher does not cover and
    /// a receipt id seen before, so a retry never double-counts.
    pub fn record(&self, receipt: NewReceipt, voucher: Option<VoucherUpdate>) -> Result<Receipt> {
        self.commits
            .submit((receipt, voucher), |batch| self.write_batch(batch))
            .unwrap_or_else(|| Err(Error::Commit("the batch's writer panicked".into())))
    }

    fn write_batch(&self, batch: Vec<(u64, Job)>) -> Vec<(u64, Result<Receipt>)> {
        let tickets: Vec<u64> = batch.iter().map(|(t, _)| *t).collect();
        let written = self.db.write(|tx| {
            let mut results = Vec::with_capacity(batch.len());
            for (ticket, (receipt, voucher)) in batch {
                // A savepoint per call: one refused receipt leaves the others.
                tx.execute_batch("SAVEPOINT call")?;
                let result = record_in(tx, &receipt, voucher.as_ref());
                let end = if result.is_ok() {
                    "RELEASE call"
                } else {
                    "ROLLBACK TO call; RELEASE call"
                };
                tx.execute_batch(end)?;
                results.push((ticket, result));
            }
            Ok::<_, Error>(results)
        });
        written.unwrap_or_else(|e| {
            let message = e.to_string();
            tickets
                .into_iter()
                .map(|t| (t, Err(Error::Commit(message.clone()))))
                .collect()
        })
    }

    /// One receipt by id.
    pub fn receipt(&self, id: &str) -> Result<Option<Receipt>> {
        self.db.read(|c| {
            let seq: Option<i64> = c
                .query_row("SELECT seq FROM receipts WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            seq.map(|seq| load_receipt(c, seq)).transpose()
        })
    }

    /// Vouchers holding more than has been redeemed on-chain.
    pub fn redeemable(&self) -> Result<Vec<StoredVoucher>> {
        self.db.read(|c| {
            let mut stmt =
                c.prepare("SELECT payer, voucher, signature, redeemed FROM payers ORDER BY payer")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (payer, voucher, signature, redeemed) = row?;
                let v = StoredVoucher {
                    payer: address(&payer)?,
                    cumulative: amount(&voucher)?,
                    signature: signature.into(),
                    redeemed: amount(&redeemed)?,
                };
                if v.cumulative > v.redeemed {
                    out.push(v);
                }
            }
            Ok(out)
        })
    }

    /// Notes how much of a payer's vouchers the chain says is redeemed.
    pub fn set_redeemed(&self, payer: Address, redeemed: u128) -> Result<()> {
        self.db.write(|tx| {
            tx.execute(
                "UPDATE payers SET redeemed = ?2 WHERE payer = ?1",
                params![payer.as_slice(), redeemed.to_string()],
            )?;
            Ok(())
        })
    }

    /// Seals every receipt not yet in an epoch into epoch `number`, computing
    /// cumulative earnings per account from the previous epoch's leaves.
    /// Returns `None` (and writes nothing) when there is nothing new to post.
    pub fn seal(&self, number: u64, now: u64) -> Result<Option<Epoch>> {
        self.db.write(|tx| {
            let last = last_epoch(tx)?;
            if number != last + 1 {
                return Err(Error::Conflict(format!(
                    "epoch {number} cannot follow sealed epoch {last}"
                )));
            }
            let (hashes, shares) = unsealed(tx)?;
            if hashes.is_empty() {
                return Ok(None);
            }
            let mut leaves = load_leaves(tx, last)?;
            let mut retained = match last {
                0 => 0,
                n => load_epoch(tx, n)?.map_or(0, |e| e.retained),
            };
            for share in shares {
                match share.role {
                    Role::Node => retained += share.amount,
                    _ => *leaves.entry(share.account).or_default() += share.amount,
                }
            }
            // Nothing is sealed while no one but the node has earned anything:
            // the distributor refuses an empty root.
            seal_rows(tx, number, now, &hashes, &leaves, retained)
        })
    }

    /// The highest sealed epoch (0 if none).
    pub fn last_sealed(&self) -> Result<u64> {
        self.db.read(last_epoch)
    }

    /// A sealed epoch.
    pub fn epoch(&self, number: u64) -> Result<Option<Epoch>> {
        self.db.read(|c| load_epoch(c, number))
    }

    /// Every sealed epoch, oldest first.
    pub fn epochs(&self) -> Result<Vec<Epoch>> {
        self.db.read(|c| {
            let last = last_epoch(c)?;
            (1..=last)
                .filter_map(|n| load_epoch(c, n).transpose())
                .collect()
        })
    }

    /// Records the transaction that posted an epoch.
    pub fn mark_posted(&self, number: u64, tx_hash: B256) -> Result<()> {
        self.update_epoch(number, "posted_tx = ?2", tx_hash.as_slice())
    }

    /// Records that an epoch's root is final on-chain.
    pub fn mark_final(&self, number: u64) -> Result<()> {
        self.update_epoch(number, "final = ?2", 1)
    }

    fn update_epoch(&self, number: u64, set: &str, value: impl rusqlite::ToSql) -> Result<()> {
        self.db.write(|tx| {
            let changed = tx.execute(
                &format!("UPDATE epochs SET {set} WHERE epoch = ?1"),
                params![number as i64, value],
            )?;
            if changed == 0 {
                return Err(Error::NotFound(format!("epoch {number} is not sealed")));
            }
            Ok(())
        })
    }

    /// Posted epochs whose contribution votes are not minted yet, oldest first.
    pub fn epochs_without_votes(&self) -> Result<Vec<u64>> {
        self.db.read(|c| {
            let mut stmt = c.prepare(
                "SELECT epoch FROM epochs WHERE votes_minted = 0 AND posted_tx IS NOT NULL
                 ORDER BY epoch",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, i64>(0))?;
            rows.map(|n| Ok(n? as u64)).collect()
        })
    }

    /// Records that an epoch's contribution votes are minted.
    pub fn mark_votes_minted(&self, number: u64) -> Result<()> {
        self.update_epoch(number, "votes_minted = ?2", 1)
    }

    /// Accounts in the leaves of posted epochs not yet recorded as warm
    /// ([`Book::mark_warm`]).
    pub fn unwarmed_accounts(&self) -> Result<Vec<Address>> {
        self.db.read(|c| {
            let mut stmt = c.prepare(
                "SELECT DISTINCT l.account FROM leaves l JOIN epochs e ON e.epoch = l.epoch
                 WHERE e.posted_tx IS NOT NULL
                   AND l.account NOT IN (SELECT account FROM warm)
                 ORDER BY l.account",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
            rows.map(|bytes| address(&bytes?)).collect()
        })
    }

    /// Records that these accounts' claim slots are warm on-chain.
    pub fn mark_warm(&self, accounts: &[Address]) -> Result<()> {
        self.db.write(|tx| {
            let mut stmt = tx.prepare_cached("INSERT OR IGNORE INTO warm (account) VALUES (?1)")?;
            for account in accounts {
                stmt.execute([account.as_slice()])?;
            }
            Ok(())
        })
    }

    /// What each account earned in epoch `number` alone (its leaf minus its
    /// leaf in the epoch before), for accounts that earned anything.
    pub fn earned_in(&self, number: u64) -> Result<Vec<(Address, u128)>> {
        self.db.read(|c| {
            let now = load_leaves(c, number)?;
            let before = match number {
                0 | 1 => BTreeMap::new(),
                n => load_leaves(c, n - 1)?,
            };
            Ok(now
                .into_iter()
                .map(|(a, v)| (a, v - before.get(&a).copied().unwrap_or(0).min(v)))
                .filter(|&(_, v)| v > 0)
                .collect())
        })
    }

    /// An account's cumulative earnings in `epoch`'s leaves (0 if absent).
    pub fn earned(&self, number: u64, account: Address) -> Result<u128> {
        self.db.read(|c| {
            let text: Option<String> = c
                .query_row(
                    "SELECT cumulative FROM leaves WHERE epoch = ?1 AND account = ?2",
                    params![number as i64, account.as_slice()],
                    |r| r.get(0),
                )
                .optional()?;
            text.map_or(Ok(0), |t| amount(&t))
        })
    }

    /// All leaves of an epoch (for its proofs).
    pub fn leaves(&self, number: u64) -> Result<Vec<(Address, u128)>> {
        self.db
            .read(|c| Ok(load_leaves(c, number)?.into_iter().collect()))
    }

    /// Totals over every recorded receipt: fees charged, and the parts owed to
    /// others and kept by the node (sealed or not).
    pub fn totals(&self) -> Result<Totals> {
        self.db.read(|c| {
            let mut totals = Totals::default();
            let mut stmt = c.prepare("SELECT fee FROM receipts")?;
            for fee in stmt.query_map([], |r| r.get::<_, String>(0))? {
                totals.fees += amount(&fee?)?;
            }
            let mut stmt = c.prepare("SELECT role, amount FROM shares")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (role, value) = row?;
                match Role::parse(&role)? {
                    Role::Node => totals.retained += amount(&value)?,
                    _ => totals.owed += amount(&value)?,
                }
            }
            let mut stmt = c.prepare("SELECT spent FROM payers")?;
            for spent in stmt.query_map([], |r| r.get::<_, String>(0))? {
                totals.spent += amount(&spent?)?;
            }
            Ok(totals)
        })
    }
}

/// Sums over the whole book, for invariant checks and status pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Fees of all receipts.
    #[serde(with = "crate::amount")]
    pub fees: u128,
    /// Sum of every payer's spent total (equals `fees`).
    #[serde(with = "crate::amount")]
    pub spent: u128,
    /// Shares owed to owners and contributors.
    #[serde(with = "crate::amount")]
    pub owed: u128,
    /// Shares the node keeps.
    #[serde(with = "crate::amount")]
    pub retained: u128,
}

fn payer_state(c: &rusqlite::Connection, payer: Address) -> Result<Option<PayerState>> {
    let row: Option<(String, String, String)> = c
        .query_row(
            "SELECT voucher, spent, redeemed FROM payers WHERE payer = ?1",
            [payer.as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    row.map(|(voucher, spent, redeemed)| {
        Ok(PayerState {
            voucher: amount(&voucher)?,
            spent: amount(&spent)?,
            redeemed: amount(&redeemed)?,
        })
    })
    .transpose()
}

/// One receipt inside a batch's transaction.
fn record_in(
    tx: &Transaction<'_>,
    receipt: &NewReceipt,
    voucher: Option<&VoucherUpdate>,
) -> Result<Receipt> {
    let fee: u128 = receipt.shares.iter().map(|s| s.amount).sum();
    let state = payer_state(tx, receipt.payer)?;
    let held = state.map_or(0, |s| s.voucher);
    let spent = state.map_or(0, |s| s.spent) + fee;
    let covered = match voucher {
        Some(v) if v.cumulative > held => {
            tx.execute(
                "INSERT INTO payers (payer, voucher, signature, spent, redeemed)
                 VALUES (?1, ?2, ?3, '0', '0')
                 ON CONFLICT (payer) DO UPDATE SET voucher = ?2, signature = ?3",
                params![
                    receipt.payer.as_slice(),
                    v.cumulative.to_string(),
                    v.signature.as_ref()
                ],
            )?;
            v.cumulative
        }
        _ => held,
    };
    if state.is_none() && covered == 0 {
        return Err(Error::PaymentRequired(format!(
            "{} has no voucher with this node",
            receipt.payer
        )));
    }
    if spent > covered {
        return Err(Error::PaymentRequired(format!(
            "the voucher covers {covered} but {spent} would be spent"
        )));
    }
    let exists: Option<i64> = tx
        .query_row(
            "SELECT seq FROM receipts WHERE id = ?1",
            [&receipt.id],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Err(Error::Conflict(format!(
            "receipt {} is already recorded",
            receipt.id
        )));
    }
    let full = receipt.finish(fee);
    insert_receipt(tx, &full)?;
    tx.execute(
        "UPDATE payers SET spent = ?2 WHERE payer = ?1",
        params![receipt.payer.as_slice(), spent.to_string()],
    )?;
    Ok(full)
}

fn insert_receipt(tx: &Transaction<'_>, r: &Receipt) -> Result<()> {
    let adapters = serde_json::to_string(&r.adapters)
        .map_err(|e| Error::Corrupt(format!("adapters of receipt {}: {e}", r.id)))?;
    tx.execute(
        "INSERT INTO receipts (id, payer, model, adapters, prompt_tokens, completion_tokens,
                               fee, created_at, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            r.id,
            r.payer.as_slice(),
            r.model,
            adapters,
            r.prompt_tokens as i64,
            r.completion_tokens as i64,
            r.fee.to_string(),
            r.created_at as i64,
            r.hash.0.as_slice(),
        ],
    )?;
    let seq = tx.last_insert_rowid();
    for share in &r.shares {
        tx.execute(
            "INSERT INTO shares (receipt, account, role, amount) VALUES (?1, ?2, ?3, ?4)",
            params![
                seq,
                share.account.as_slice(),
                share.role.as_str(),
                share.amount.to_string()
            ],
        )?;
    }
    Ok(())
}

fn load_receipt(c: &rusqlite::Connection, seq: i64) -> Result<Receipt> {
    type Row = (
        String,
        Vec<u8>,
        String,
        String,
        i64,
        i64,
        String,
        i64,
        Vec<u8>,
        Option<i64>,
    );
    let row: Row = c.query_row(
        "SELECT id, payer, model, adapters, prompt_tokens, completion_tokens, fee, created_at,
                hash, epoch
         FROM receipts WHERE seq = ?1",
        [seq],
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
            ))
        },
    )?;
    let (id, payer, model, adapters, prompt, completion, fee, created, hash, epoch) = row;
    Ok(Receipt {
        adapters: serde_json::from_str(&adapters)
            .map_err(|e| Error::Corrupt(format!("adapters of receipt {id}: {e}")))?,
        id,
        payer: address(&payer)?,
        model,
        prompt_tokens: prompt as usize,
        completion_tokens: completion as usize,
        fee: amount(&fee)?,
        created_at: created as u64,
        hash: ReceiptHash(hash32(&hash)?),
        epoch: epoch.map(|e| e as u64),
        shares: receipt_shares(c, seq)?,
    })
}

fn receipt_shares(c: &rusqlite::Connection, seq: i64) -> Result<Vec<Share>> {
    let mut stmt = c.prepare("SELECT account, role, amount FROM shares WHERE receipt = ?1")?;
    let rows = stmt.query_map([seq], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    rows.map(|row| {
        let (account, role, value) = row?;
        Ok(Share {
            account: address(&account)?,
            role: Role::parse(&role)?,
            amount: amount(&value)?,
        })
    })
    .collect()
}

/// The hashes of unsealed receipts and all their shares.
fn unsealed(tx: &Transaction<'_>) -> Result<(Vec<B256>, Vec<Share>)> {
    let mut stmt = tx.prepare("SELECT seq, hash FROM receipts WHERE epoch IS NULL ORDER BY seq")?;
    let rows: Vec<(i64, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut hashes = Vec::with_capacity(rows.len());
    let mut shares = Vec::new();
    for (seq, hash) in rows {
        hashes.push(hash32(&hash)?);
        shares.extend(receipt_shares(tx, seq)?);
    }
    Ok((hashes, shares))
}

fn seal_rows(
    tx: &Transaction<'_>,
    number: u64,
    now: u64,
    hashes: &[B256],
    leaves: &BTreeMap<Address, u128>,
    retained: u128,
) -> Result<Option<Epoch>> {
    let entries: Vec<(Address, alloy_primitives::U256)> = leaves
        .iter()
        .filter(|&(_, &v)| v > 0)
        .map(|(&a, &v)| (a, alloy_primitives::U256::from(v)))
        .collect();
    let Some(tree) = credence_ledger::merkle::PayoutTree::new(&entries) else {
        return Ok(None);
    };
    let root = tree.root();
    let epoch = Epoch {
        epoch: number,
        root,
        receipts_root: crate::receipt::receipts_root(hashes),
        total: leaves.values().sum(),
        retained,
        receipts: hashes.len() as u64,
        sealed_at: now,
        posted_tx: None,
        is_final: false,
    };
    tx.execute(
        "INSERT INTO epochs (epoch, root, receipts_root, total, retained, receipts, sealed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            number as i64,
            epoch.root.as_slice(),
            epoch.receipts_root.as_slice(),
            epoch.total.to_string(),
            retained.to_string(),
            epoch.receipts as i64,
            now as i64
        ],
    )?;
    for (account, value) in leaves.iter().filter(|&(_, &v)| v > 0) {
        tx.execute(
            "INSERT INTO leaves (epoch, account, cumulative) VALUES (?1, ?2, ?3)",
            params![number as i64, account.as_slice(), value.to_string()],
        )?;
    }
    tx.execute(
        "UPDATE receipts SET epoch = ?1 WHERE epoch IS NULL",
        [number as i64],
    )?;
    Ok(Some(epoch))
}

fn last_epoch(c: &rusqlite::Connection) -> Result<u64> {
    let n: Option<i64> = c.query_row("SELECT MAX(epoch) FROM epochs", [], |r| r.get(0))?;
    Ok(n.map_or(0, |n| n as u64))
}

fn load_epoch(c: &rusqlite::Connection, number: u64) -> Result<Option<Epoch>> {
    type Row = (
        Vec<u8>,
        Vec<u8>,
        String,
        String,
        i64,
        i64,
        Option<Vec<u8>>,
        bool,
    );
    let row: Option<Row> = c
        .query_row(
            "SELECT root, receipts_root, total, retained, receipts, sealed_at, posted_tx, final
             FROM epochs WHERE epoch = ?1",
            [number as i64],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            },
        )
        .optional()?;
    row.map(
        |(root, receipts_root, total, retained, receipts, sealed_at, posted, is_final)| {
            Ok(Epoch {
                epoch: number,
                root: hash32(&root)?,
                receipts_root: hash32(&receipts_root)?,
                total: amount(&total)?,
                retained: amount(&retained)?,
                receipts: receipts as u64,
                sealed_at: sealed_at as u64,
                posted_tx: posted.map(|p| hash32(&p)).transpose()?,
                is_final,
            })
        },
    )
    .transpose()
}

fn load_leaves(c: &rusqlite::Connection, number: u64) -> Result<BTreeMap<Address, u128>> {
    let mut stmt = c.prepare("SELECT account, cumulative FROM leaves WHERE epoch = ?1")?;
    let rows = stmt.query_map([number as i64], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
    })?;
    rows.map(|row| {
        let (account, value) = row?;
        Ok((address(&account)?, amount(&value)?))
    })
    .collect()
}

fn amount(text: &str) -> Result<u128> {
    text.parse()
        .map_err(|_| Error::Corrupt(format!("`{text}` is not an amount")))
}

fn address(bytes: &[u8]) -> Result<Address> {
    Address::try_from(bytes)
        .map_err(|_| Error::Corrupt(format!("{} bytes is not an address", bytes.len())))
}

fn hash32(bytes: &[u8]) -> Result<B256> {
    B256::try_from(bytes)
        .map_err(|_| Error::Corrupt(format!("{} bytes is not a hash", bytes.len())))
}
