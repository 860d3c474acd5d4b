//! The on-chain half of settlement: redeeming vouchers, posting epoch roots,
//! finalizing them and building claim proofs, through the same
//! [`Client`] whether the chain is embedded or external.
//!
//! Every step is safe to repeat after a crash because the chain is read
//! before it is written: a voucher is redeemed only above what the escrow
//! says is redeemed, and an epoch is posted only if the distributor's
//! `lastEpoch` shows it is not there yet. The book is updated after each
//! step, and a rerun catches up on whatever a kill skipped.

use std::sync::Arc;

use alloy_primitives::{Address, B256, U256};
use credence_ledger::contracts::{
    AttributionDistributor, ContributionVotes, OpenToken, PaymentEscrow,
};
use credence_ledger::merkle::PayoutTree;
use credence_ledger::{Client, Deployment};
use serde::Serialize;

use crate::book::{Book, Epoch};
use crate::gate::EscrowView;
use crate::{Error, Result};

/// The node's settlement account on a chain with the Credence contracts.
#[derive(Clone)]
pub struct Settler {
    book: Arc<Book>,
    client: Client,
    contracts: Deployment,
    node: Address,
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler")
            .field("node", &self.node)
            .field("chain_id", &self.client.chain_id())
            .finish_non_exhaustive()
    }
}

/// What one settlement run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    /// Payers whose vouchers were redeemed.
    pub redeemed_payers: usize,
    /// Tokens redeemed from the escrow in this run.
    #[serde(with = "crate::amount")]
    pub redeemed: u128,
    /// The epoch posted in this run, if any.
    pub posted: Option<u64>,
    /// Epochs finalized in this run.
    pub finalized: Vec<u64>,
    /// Contribution-vote mints sent in this run.
    pub votes_minted: usize,
    /// Accounts whose claim slots this run warmed.
    pub warmed: usize,
    /// Gas spent on redemptions, the epoch post (with its approval), claim
    /// slot warming, vote mints and finalizations.
    pub gas: GasReport,
}

/// Gas a settlement round spent, by step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GasReport {
    /// `redeem` transactions.
    pub redeem: u64,
    /// The `approve` before a post, if one was needed.
    pub approve: u64,
    /// `postEpoch`.
    pub post: u64,
    /// `finalize` transactions.
    pub finalize: u64,
    /// `ContributionVotes.mint` transactions.
    pub votes: u64,
    /// `AttributionDistributor.warm` transactions.
    pub warm: u64,
}

/// Accounts warmed per transaction: about 23k gas each, so a batch stays
/// far below any block gas limit.
const WARM_BATCH: usize = 200;

/// Mints `amounts` of contribution votes with `reason`, skipping accounts
/// the chain already shows a mint for under that reason (so repeating after
/// a crash mints nothing twice). Returns the mints sent.
pub fn mint_once(
    client: &Client,
    votes: Address,
    reason: B256,
    amounts: &[(Address, u128)],
    gas: &mut GasReport,
) -> Result<usize> {
    if amounts.is_empty() {
        return Ok(0);
    }
    let done: std::collections::HashSet<Address> = client
        .events::<ContributionVotes::ContributionMinted>(votes, 0)?
        .into_iter()
        .filter(|(e, _)| e.reason == reason)
        .map(|(e, _)| e.account)
        .collect();
    let mut sent = 0;
    for &(account, amount) in amounts {
        if done.contains(&account) || amount == 0 {
            continue;
        }
        let receipt = client.send(
            votes,
            &ContributionVotes::mintCall {
                account,
                amount: U256::from(amount),
                reason,
            },
        )?;
        gas.votes += receipt.gas_used;
        sent += 1;
    }
    Ok(sent)
}

/// Everything a claim transaction needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimProof {
    /// The account paid.
    pub account: Address,
    /// The final epoch the proof is against.
    pub epoch: u64,
    /// The account's cumulative earnings in that epoch.
    #[serde(with = "crate::amount")]
    pub cumulative: u128,
    /// Already claimed on-chain.
    #[serde(with = "crate::amount")]
    pub claimed: u128,
    /// Sibling hashes from the leaf to the root.
    pub proof: Vec<B256>,
}

impl Settler {
    /// A settler signing with the client's wallet, which must be the
    /// distributor's poster and the payee vouchers name.
    pub fn new(book: Arc<Book>, client: Client, contracts: Deployment) -> Result<Self> {
        let node = client.signer_address().ok_or_else(|| {
            Error::Conflict("settlement needs a signing wallet for the node".into())
        })?;
        Ok(Self {
            book,
            client,
            contracts,
            node,
        })
    }

    /// The node's settlement address (the voucher payee and epoch poster).
    pub fn node(&self) -> Address {
        self.node
    }

    /// The chain client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The contract addresses.
    pub fn contracts(&self) -> &Deployment {
        &self.contracts
    }

    /// One settlement round: catch up with the chain, redeem vouchers, seal
    /// and post the next epoch if there are new receipts, finalize epochs
    /// whose challenge window has passed.
    pub fn run(&self, now: u64) -> Result<RunReport> {
        let mut report = RunReport::default();
        let on_chain = self.sync_posted()?;
        let (payers, redeemed) = self.redeem_vouchers(&mut report.gas)?;
        report.redeemed_payers = payers;
        report.redeemed = redeemed;
        let pending = match self.book.last_sealed()? {
            sealed if sealed > on_chain => self.book.epoch(on_chain + 1)?,
            _ => self.book.seal(on_chain + 1, now)?,
        };
        if let Some(epoch) = pending {
            self.post(&epoch, &mut report.gas)?;
            report.posted = Some(epoch.epoch);
        }
        report.warmed = self.warm_new_accounts(&mut report.gas)?;
        report.votes_minted = self.mint_votes(&mut report.gas)?;
        report.finalized = self.finalize_due(&mut report.gas)?;
        Ok(report)
    }

    /// Warms the distributor claim slots of accounts new to a posted root
    /// (see `AttributionDistributor.warm`), so that each account's first
    /// claim costs it about 17k gas less. The chain is read first: a crash
    /// between a warm and the book's note warms nothing twice.
    fn warm_new_accounts(&self, gas: &mut GasReport) -> Result<usize> {
        let distributor = self.contracts.distributor;
        let mut cold = Vec::new();
        for account in self.book.unwarmed_accounts()? {
            if self
                .client
                .view(distributor, &AttributionDistributor::warmedCall { account })?
            {
                self.book.mark_warm(&[account])?;
            } else {
                cold.push(account);
            }
        }
        for batch in cold.chunks(WARM_BATCH) {
            let receipt = self.client.send(
                distributor,
                &AttributionDistributor::warmCall {
                    accounts: batch.to_vec(),
                },
            )?;
            gas.warm += receipt.gas_used;
            self.book.mark_warm(batch)?;
        }
        Ok(cold.len())
    }

    /// Mints contribution votes for paid usage in every posted epoch that has
    /// none yet: 1 cVOTE per OPEN each account earned in it, with the epoch's
    /// receipts root as the reason (docs/ledger.md). Accounts the chain already
    /// shows a mint for under that reason are skipped, so a crash between a
    /// mint and the book's note never mints twice.
    fn mint_votes(&self, gas: &mut GasReport) -> Result<usize> {
        let mut minted = 0;
        for number in self.book.epochs_without_votes()? {
            let epoch = self
                .book
                .epoch(number)?
                .ok_or_else(|| Error::Corrupt(format!("epoch {number} vanished")))?;
            minted += mint_once(
                &self.client,
                self.contracts.votes,
                epoch.receipts_root,
                &self.book.earned_in(number)?,
                gas,
            )?;
            self.book.mark_votes_minted(number)?;
        }
        Ok(minted)
    }

    /// Reconciles the book with the distributor's `lastEpoch`, marking epochs
    /// a crash left unmarked; returns that last epoch.
    fn sync_posted(&self) -> Result<u64> {
        let distributor = self.contracts.distributor;
        let last = self
            .client
            .view(distributor, &AttributionDistributor::lastEpochCall {})?;
        let sealed = self.book.last_sealed()?;
        if last > sealed {
            return Err(Error::Conflict(format!(
                "the distributor has epoch {last} but this node's book ends at {sealed}; \
                 another poster or a lost book"
            )));
        }
        for number in 1..=last {
            let Some(epoch) = self.book.epoch(number)? else {
                continue;
            };
            if epoch.posted_tx.is_some() {
                continue;
            }
            let posted = self.client.view(
                distributor,
                &AttributionDistributor::postedCall { epoch: number },
            )?;
            if posted.root != epoch.root {
                return Err(Error::Conflict(format!(
                    "epoch {number} on-chain has root {}, the book has {}",
                    posted.root, epoch.root
                )));
            }
            // Posted before a crash could record it; the hash is not kept.
            self.book.mark_posted(number, B256::ZERO)?;
        }
        Ok(last)
    }

    /// Redeems every voucher above what the escrow has paid this node.
    fn redeem_vouchers(&self, gas: &mut GasReport) -> Result<(usize, u128)> {
        let escrow = self.contracts.escrow;
        let (mut payers, mut total) = (0, 0u128);
        for v in self.book.redeemable()? {
            let already = self.redeemed_on_chain(v.payer)?;
            if v.cumulative > already {
                let voucher =
                    credence_ledger::voucher::voucher(v.payer, self.node, U256::from(v.cumulative));
                let receipt = self.client.send(
                    escrow,
                    &PaymentEscrow::redeemCall {
                        voucher,
                        signature: v.signature.clone(),
                    },
                )?;
                gas.redeem += receipt.gas_used;
                payers += 1;
                total += v.cumulative - already;
                tracing::info!(payer = %v.payer, amount = v.cumulative - already, "voucher redeemed");
            }
            self.book.set_redeemed(v.payer, v.cumulative.max(already))?;
        }
        Ok((payers, total))
    }

    fn redeemed_on_chain(&self, payer: Address) -> Result<u128> {
        let value = self.client.view(
            self.contracts.escrow,
            &PaymentEscrow::redeemedCall {
                payer,
                payee: self.node,
            },
        )?;
        to_u128(value)
    }

    /// Posts a sealed epoch, approving the distributor to pull what it needs.
    fn post(&self, epoch: &Epoch, gas: &mut GasReport) -> Result<()> {
        let distributor = self.contracts.distributor;
        let funded = to_u128(
            self.client
                .view(distributor, &AttributionDistributor::fundedCall {})?,
        )?;
        let needed = epoch.total.saturating_sub(funded);
        if needed > 0 {
            let approval = self.client.send(
                self.contracts.token,
                &OpenToken::approveCall {
                    spender: distributor,
                    value: U256::from(needed),
                },
            )?;
            gas.approve += approval.gas_used;
        }
        let receipt = self.client.send(
            distributor,
            &AttributionDistributor::postEpochCall {
                epoch: epoch.epoch,
                root: epoch.root,
                receiptsRoot: epoch.receipts_root,
                total: epoch.total,
            },
        )?;
        gas.post += receipt.gas_used;
        self.book.mark_posted(epoch.epoch, receipt.tx_hash)?;
        tracing::info!(
            epoch = epoch.epoch,
            total = epoch.total,
            receipts = epoch.receipts,
            "epoch posted"
        );
        Ok(())
    }

    /// Finalizes posted epochs whose challenge window has passed.
    fn finalize_due(&self, gas: &mut GasReport) -> Result<Vec<u64>> {
        let distributor = self.contracts.distributor;
        let window = self
            .client
            .view(distributor, &AttributionDistributor::challengeWindowCall {})?;
        let now = self.client.block_timestamp()?;
        let mut done = Vec::new();
        for epoch in self.book.epochs()? {
            if epoch.is_final || epoch.posted_tx.is_none() {
                continue;
            }
            let number = epoch.epoch;
            let root = self.client.view(
                distributor,
                &AttributionDistributor::finalRootCall { epoch: number },
            )?;
            if root == B256::ZERO {
                let posted = self.client.view(
                    distributor,
                    &AttributionDistributor::postedCall { epoch: number },
                )?;
                if posted.challenged {
                    tracing::warn!(
                        epoch = number,
                        "epoch was challenged; it will never finalize"
                    );
                    continue;
                }
                if now < posted.postedAt + window {
                    continue;
                }
                let receipt = self.client.send(
                    distributor,
                    &AttributionDistributor::finalizeCall { epoch: number },
                )?;
                gas.finalize += receipt.gas_used;
            }
            self.book.mark_final(number)?;
            done.push(number);
        }
        Ok(done)
    }

    /// A proof of `account`'s earnings against the latest final epoch that
    /// lists it, with what it has already claimed; `None` if nothing is final.
    pub fn proof(&self, account: Address) -> Result<Option<ClaimProof>> {
        let Some(epoch) = self.book.epochs()?.into_iter().rev().find(|e| e.is_final) else {
            return Ok(None);
        };
        proof_in(&self.book, &epoch, account)?
            .map(|(cumulative, proof)| {
                let claimed = to_u128(self.client.view(
                    self.contracts.distributor,
                    &AttributionDistributor::claimedCall { account },
                )?)?;
                Ok(ClaimProof {
                    account,
                    epoch: epoch.epoch,
                    cumulative,
                    claimed,
                    proof,
                })
            })
            .transpose()
    }
}

/// `account`'s leaf in `epoch` and its proof.
pub fn proof_in(book: &Book, epoch: &Epoch, account: Address) -> Result<Option<(u128, Vec<B256>)>> {
    let leaves = book.leaves(epoch.epoch)?;
    let Some(&(_, cumulative)) = leaves.iter().find(|(a, _)| *a == account) else {
        return Ok(None);
    };
    let entries: Vec<(Address, U256)> = leaves.iter().map(|&(a, v)| (a, U256::from(v))).collect();
    let tree = PayoutTree::new(&entries)
        .ok_or_else(|| Error::Corrupt(format!("epoch {} has no leaves", epoch.epoch)))?;
    if tree.root() != epoch.root {
        return Err(Error::Corrupt(format!(
            "epoch {}'s leaves do not give its root",
            epoch.epoch
        )));
    }
    let proof = tree.proof(account, U256::from(cumulative)).ok_or_else(|| {
        Error::Corrupt(format!("no proof for {account} in epoch {}", epoch.epoch))
    })?;
    Ok(Some((cumulative, proof)))
}

/// Sends the claim for `proof` (anyone may send it; the tokens go to the account).
pub fn claim(
    client: &Client,
    distributor: Address,
    proof: &ClaimProof,
) -> Result<credence_ledger::Receipt> {
    Ok(client.send(
        distributor,
        &AttributionDistributor::claimCall {
            epoch: proof.epoch,
            account: proof.account,
            cumulativeAmount: U256::from(proof.cumulative),
            proof: proof.proof.clone(),
        },
    )?)
}

impl EscrowView for Settler {
    fn backing(&self, payer: Address) -> Result<u128> {
        let account = self
            .client
            .view(self.contracts.escrow, &PaymentEscrow::accountCall { payer })?;
        Ok(account
            .balance
            .saturating_add(self.redeemed_on_chain(payer)?))
    }
}

fn to_u128(value: U256) -> Result<u128> {
    u128::try_from(value).map_err(|_| Error::Conflict(format!("amount {value} exceeds 128 bits")))
}
