//! The fixture every test shares: a node with its own chain and book.

use std::sync::Arc;

use alloy_primitives::{Address, U256};
use credence_ledger::contracts::OpenToken;
use credence_ledger::{Chain, ChainConfig, Client, Wallet};
use credence_settle::{AdapterTerms, Book, FeeSplit, Gate, Settler, SignedVoucher, VoucherDomain};

pub const OPEN: u128 = 1_000_000_000_000_000_000;

/// A node with its own chain and book, and a funded payer.
pub struct Fixture {
    pub chain: Arc<Chain>,
    pub node: Client,
    pub payer: Wallet,
    pub book: Arc<Book>,
    pub settler: Arc<Settler>,
    pub gate: Arc<Gate>,
    /// Deletes the directory when the fixture owns it.
    _guard: Option<tempfile::TempDir>,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = Self::at(dir.path());
        f._guard = Some(dir);
        f
    }

    /// Opens (or reopens) the chain and book kept in `dir`.
    pub fn at(dir: &std::path::Path) -> Self {
        let chain =
            Arc::new(Chain::open(&dir.join("chain"), &ChainConfig::default()).expect("chain"));
        let wallets = chain.dev_wallets().to_vec();
        let node =
            Client::in_process(Arc::clone(&chain), Some(wallets[0].clone())).expect("client");
        let book = Arc::new(Book::open(&dir.join("settle.db")).expect("book"));
        let deployment = *chain.deployment();
        let settler =
            Arc::new(Settler::new(Arc::clone(&book), node.clone(), deployment).expect("settler"));
        let domain = VoucherDomain {
            chain_id: chain.chain_id(),
            escrow: deployment.escrow,
            payee: settler.node(),
        };
        let gate = Arc::new(Gate::new(
            Arc::clone(&book),
            domain,
            Arc::clone(&settler) as Arc<dyn credence_settle::EscrowView>,
            0,
        ));
        Self {
            chain,
            node,
            payer: wallets[1].clone(),
            book,
            settler,
            gate,
            _guard: None,
        }
    }

    /// The payer approves the escrow and deposits `amount`.
    pub fn deposit(&self, amount: u128) {
        let client = self.node.with_signer(self.payer.clone());
        credence_ledger::ops::deposit(&client, self.chain.deployment(), U256::from(amount))
            .expect("deposit");
    }

    /// A voucher header from the payer for `cumulative`.
    pub fn voucher(&self, cumulative: u128) -> String {
        voucher_from(&self.payer, self.gate.domain(), cumulative)
    }

    pub fn token_balance(&self, account: Address) -> u128 {
        let value = self
            .node
            .view(
                self.chain.deployment().token,
                &OpenToken::balanceOfCall { account },
            )
            .expect("balanceOf");
        u128::try_from(value).expect("fits")
    }
}

pub fn voucher_from(wallet: &Wallet, domain: &VoucherDomain, cumulative: u128) -> String {
    SignedVoucher::sign(wallet, domain, cumulative)
        .expect("sign")
        .header()
}

/// An adapter priced at `price` per 1k tokens: 30% owner, 60% contributors, 10% node.
pub fn terms(price: u128, contributors: Vec<(Address, u64)>) -> AdapterTerms {
    AdapterTerms {
        adapter: "ab".repeat(32),
        price_per_1k: price,
        owner: Address::with_last_byte(0xA0),
        split: FeeSplit {
            owner_bps: 3000,
            contributors_bps: 6000,
            node_bps: 1000,
        },
        contributors,
    }
}
