//! The payment gate: authorises a paid call before any generation and turns
//! it into a receipt afterwards.
//!
//! A call may run only if the payer's latest voucher, minus what it has
//! already spent and what its calls in flight have reserved, covers the most
//! the call can cost (its prompt plus `max_tokens`, at every adapter's
//! price). A voucher is only as good as the escrow deposit behind it, so each
//! new, higher voucher is checked against the chain once before it is kept.
//! The reservation is released when the call ends; the receipt charges only
//! the tokens really used.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use alloy_primitives::Address;

use crate::book::{Book, PayerState, VoucherUpdate};
use crate::receipt::{NewReceipt, Receipt};
use crate::split::{AdapterTerms, call_fee, split_call};
use crate::voucher::{SignedVoucher, VOUCHER_HEADER, VoucherDomain};
use crate::{Error, Result};

/// What backs vouchers on-chain (the escrow), as the gate needs it.
pub trait EscrowView: Send + Sync + std::fmt::Debug {
    /// Everything `payer` can still be made to pay the node: its escrow
    /// balance plus what the node has already redeemed from it.
    fn backing(&self, payer: Address) -> Result<u128>;
}

/// One call to price.
#[derive(Debug, Clone, PartialEq)]
pub struct CallTerms {
    /// The model the answer reports.
    pub model: String,
    /// The terms of each adapter applied, with its weight.
    pub adapters: Vec<(AdapterTerms, f32)>,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// The most tokens the call may generate.
    pub max_completion_tokens: usize,
}

impl CallTerms {
    fn terms(&self) -> Vec<AdapterTerms> {
        self.adapters.iter().map(|(t, _)| t.clone()).collect()
    }
}

/// Authorises paid calls and records their receipts.
#[derive(Debug)]
pub struct Gate {
    book: Arc<Book>,
    domain: VoucherDomain,
    escrow: Arc<dyn EscrowView>,
    base_price_per_1k: u128,
    /// Amounts reserved by calls in flight, per payer.
    holds: Mutex<HashMap<Address, u128>>,
}

impl Gate {
    /// A gate charging `base_price_per_1k` for the base model (kept by the
    /// node) plus each adapter's own price.
    pub fn new(
        book: Arc<Book>,
        domain: VoucherDomain,
        escrow: Arc<dyn EscrowView>,
        base_price_per_1k: u128,
    ) -> Self {
        Self {
            book,
            domain,
            escrow,
            base_price_per_1k,
            holds: Mutex::new(HashMap::new()),
        }
    }

    /// Where this gate's vouchers are valid.
    pub fn domain(&self) -> &VoucherDomain {
        &self.domain
    }

    /// The settlement book.
    pub fn book(&self) -> &Arc<Book> {
        &self.book
    }

    /// The most `call` can cost.
    pub fn max_fee(&self, call: &CallTerms) -> u128 {
        let tokens = call
            .prompt_tokens
            .saturating_add(call.max_completion_tokens);
        call_fee(self.base_price_per_1k, &call.terms(), tokens)
    }

    /// Authorises `call` with the voucher header's value, if any. A free call
    /// needs no voucher and gets `None`.
    pub fn authorize(
        self: &Arc<Self>,
        voucher: Option<&str>,
        call: CallTerms,
    ) -> Result<Option<Hold>> {
        let max_fee = self.max_fee(&call);
        if max_fee == 0 {
            return Ok(None);
        }
        let Some(header) = voucher else {
            return Err(Error::PaymentRequired(format!(
                "this call costs up to {max_fee} base units; attach a voucher signed for {} in \
                 the {VOUCHER_HEADER} header (GET /v1/billing describes how)",
                self.domain.payee
            )));
        };
        let voucher = SignedVoucher::parse(header)?;
        voucher.verify(&self.domain)?;
        let (state, update) = self.check_voucher(&voucher)?;
        self.reserve(voucher.payer, state, max_fee)?;
        Ok(Some(Hold {
            gate: Arc::clone(self),
            id: new_receipt_id(),
            payer: voucher.payer,
            reserved: max_fee,
            voucher: update,
            call,
        }))
    }

    /// The payer's standing as this voucher leaves it, and the voucher itself
    /// if it raises what the book holds. A raise is checked against the
    /// escrow once; it is stored with the receipt of the call it pays for.
    fn check_voucher(
        &self,
        voucher: &SignedVoucher,
    ) -> Result<(PayerState, Option<VoucherUpdate>)> {
        let payer = voucher.payer;
        let given = voucher.cumulative_amount;
        let mut state = self.book.payer(payer)?.unwrap_or(PayerState {
            voucher: 0,
            spent: 0,
            redeemed: 0,
        });
        if given < state.voucher {
            return Err(Error::StaleVoucher {
                payer,
                given,
                latest: state.voucher,
            });
        }
        if given == state.voucher {
            return Ok((state, None));
        }
        let backing = self.escrow.backing(payer)?;
        if given > backing {
            return Err(Error::PaymentRequired(format!(
                "the voucher promises {given} but {payer} has only {backing} in the escrow for \
                 this node; deposit more (credence deposit)"
            )));
        }
        state.voucher = given;
        let update = VoucherUpdate {
            cumulative: given,
            signature: voucher.signature.clone(),
        };
        Ok((state, Some(update)))
    }

    fn reserve(&self, payer: Address, state: PayerState, amount: u128) -> Result<()> {
        let mut holds = self.holds();
        let held = holds.get(&payer).copied().unwrap_or(0);
        let available = state
            .voucher
            .saturating_sub(state.spent)
            .saturating_sub(held);
        if available < amount {
            return Err(Error::PaymentRequired(format!(
                "this call costs up to {amount} base units but {payer}'s voucher leaves \
                 {available} ({} signed, {} spent, {held} held by calls in flight); sign a \
                 voucher for at least {}",
                state.voucher,
                state.spent,
                state.spent + held + amount
            )));
        }
        *holds.entry(payer).or_default() += amount;
        Ok(())
    }

    fn release(&self, payer: Address, amount: u128) {
        let mut holds = self.holds();
        if let Some(held) = holds.get_mut(&payer) {
            *held = held.saturating_sub(amount);
            if *held == 0 {
                holds.remove(&payer);
            }
        }
    }

    /// What calls in flight have reserved from `payer`.
    pub fn held(&self, payer: Address) -> u128 {
        self.holds().get(&payer).copied().unwrap_or(0)
    }

    fn holds(&self) -> MutexGuard<'_, HashMap<Address, u128>> {
        // The map only ever holds whole updates.
        self.holds.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A paid call's reservation. Dropping it releases the reservation unbilled.
#[derive(Debug)]
pub struct Hold {
    gate: Arc<Gate>,
    id: String,
    payer: Address,
    reserved: u128,
    /// A higher voucher this call brought, stored with its receipt.
    voucher: Option<VoucherUpdate>,
    call: CallTerms,
}

impl Hold {
    /// The receipt id this call will be recorded under.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Who pays.
    pub fn payer(&self) -> Address {
        self.payer
    }

    /// Charges the call's real usage (never more than was reserved) and
    /// records its receipt.
    pub fn settle(
        mut self,
        prompt_tokens: usize,
        completion_tokens: usize,
        now: u64,
    ) -> Result<Receipt> {
        let tokens = prompt_tokens.saturating_add(completion_tokens);
        let gate = &self.gate;
        let terms = self.call.terms();
        let mut shares = split_call(gate.base_price_per_1k, &terms, tokens, gate.domain.payee);
        let fee: u128 = shares.iter().map(|s| s.amount).sum();
        if fee > self.reserved {
            // Only reachable if usage exceeded the quote; charge the quote.
            shares = split_call(
                gate.base_price_per_1k,
                &terms,
                self.call.prompt_tokens + self.call.max_completion_tokens,
                gate.domain.payee,
            );
        }
        let receipt = NewReceipt {
            id: self.id.clone(),
            payer: self.payer,
            model: self.call.model.clone(),
            adapters: self
                .call
                .adapters
                .iter()
                .map(|(t, w)| (t.adapter.clone(), w.to_string()))
                .collect(),
            prompt_tokens,
            completion_tokens,
            created_at: now,
            shares,
        };
        gate.book.record(receipt, self.voucher.take())
        // `self` drops here, releasing the reservation after the spend is durable.
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.gate.release(self.payer, self.reserved);
    }
}

/// A receipt id unique across restarts: the clock in nanoseconds plus a counter.
fn new_receipt_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("rcpt-{nanos:x}-{n:x}")
}
