//! Settlement benchmark: receipts per second through the whole pipeline,
//! against the naive alternative of settling every call with its own token
//! transfer on the same chain, plus the gas of each on-chain step.
//!
//! ```sh
//! cargo bench -p credence-settle --bench pipeline -- --calls 5000
//! ```
//!
//! Pipeline: each call is authorised (voucher signature check, headroom,
//! reservation) and settled (fee split, receipt and spent total in one
//! SQLite transaction on a real file), once with one prepaid voucher for
//! every call and once with a fresh, higher voucher per call (each new
//! voucher is also checked against the escrow on the chain). Then one
//! settlement round redeems, seals and posts the epoch; its time is included.
//!
//! Reference: per-call settlement, one ERC-20 `transfer` transaction per call
//! from the payer to the node, on the same embedded chain (revm, fsynced log).

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use alloy_primitives::{Address, U256};
use credence_ledger::contracts::OpenToken;
use credence_ledger::{Chain, ChainConfig, Client, Wallet};
use credence_settle::{
    AdapterTerms, Book, CallTerms, EscrowView, FeeSplit, Gate, Settler, SignedVoucher,
    VoucherDomain,
};

const OPEN: u128 = 1_000_000_000_000_000_000;
const PRICE: u128 = OPEN / 1000;

struct Node {
    _dir: tempfile::TempDir,
    chain: Arc<Chain>,
    client: Client,
    payer: Wallet,
    /// Dev accounts 1–8, each with a deposit: one per concurrent client.
    payers: Vec<Wallet>,
    settler: Arc<Settler>,
    gate: Arc<Gate>,
}

fn node() -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain =
        Arc::new(Chain::open(&dir.path().join("chain"), &ChainConfig::default()).expect("chain"));
    let wallets = chain.dev_wallets().to_vec();
    let client = Client::in_process(Arc::clone(&chain), Some(wallets[0].clone())).expect("client");
    let book = Arc::new(Book::open(&dir.path().join("book.db")).expect("book"));
    let deployment = *chain.deployment();
    let settler =
        Arc::new(Settler::new(Arc::clone(&book), client.clone(), deployment).expect("settler"));
    let domain = VoucherDomain {
        chain_id: chain.chain_id(),
        escrow: deployment.escrow,
        payee: settler.node(),
    };
    let gate = Arc::new(Gate::new(
        book,
        domain,
        Arc::clone(&settler) as Arc<dyn EscrowView>,
        0,
    ));
    let payers = wallets[1..=8].to_vec();
    for payer in &payers {
        let client = client.with_signer(payer.clone());
        credence_ledger::ops::deposit(&client, &deployment, U256::from(10_000 * OPEN))
            .expect("deposit");
    }
    Node {
        _dir: dir,
        chain,
        client,
        payer: payers[0].clone(),
        payers,
        settler,
        gate,
    }
}

fn voucher(node: &Node, cumulative: u128) -> String {
    voucher_of(node, &node.payer, cumulative)
}

fn voucher_of(node: &Node, payer: &Wallet, cumulative: u128) -> String {
    SignedVoucher::sign(payer, node.gate.domain(), cumulative)
        .expect("sign")
        .header()
}

fn call(i: usize) -> CallTerms {
    let contributors = (0..8)
        .map(|c| {
            (
                Address::with_last_byte(0xC0 + c),
                1 + (i as u64 + c as u64) % 5,
            )
        })
        .collect();
    CallTerms {
        model: "bench".into(),
        adapters: vec![(
            AdapterTerms {
                adapter: "ab".repeat(32),
                price_per_1k: PRICE,
                owner: Address::with_last_byte(0xA0),
                split: FeeSplit {
                    owner_bps: 3000,
                    contributors_bps: 6000,
                    node_bps: 1000,
                },
                contributors,
            },
            1.0,
        )],
        prompt_tokens: 100,
        max_completion_tokens: 100,
    }
}

/// Receipts per second from `clients` concurrent payers, with one prepaid
/// voucher each or a fresh voucher per call; returns the rate.
fn pipeline(calls: usize, fresh_vouchers: bool, clients: usize) -> f64 {
    let node = node();
    let per_client = calls / clients;
    let start = Instant::now();
    std::thread::scope(|scope| {
        for payer in &node.payers[..clients] {
            let node = &node;
            scope.spawn(move || client_calls(node, payer, per_client, fresh_vouchers));
        }
    });
    let recorded = start.elapsed().as_secs_f64();
    let round = Instant::now();
    let report = node.settler.run(2).expect("round");
    let settled = round.elapsed().as_secs_f64();
    let total = recorded + settled;
    let calls = per_client * clients;
    let mode = if fresh_vouchers {
        "a fresh voucher per call"
    } else {
        "one prepaid voucher each"
    };
    println!(
        "pipeline ({clients} clients, {mode}): {calls} receipts in {recorded:.2} s + round \
         {settled:.2} s = {:.0} receipts/s (round gas: redeem {}, approve {}, postEpoch {})",
        calls as f64 / total,
        report.gas.redeem,
        report.gas.approve,
        report.gas.post
    );
    calls as f64 / total
}

fn client_calls(node: &Node, payer: &Wallet, calls: usize, fresh_vouchers: bool) {
    let max_fee = node.gate.max_fee(&call(0));
    let prepaid = voucher_of(node, payer, max_fee * calls as u128);
    let mut spent = 0u128;
    for i in 0..calls {
        let header = if fresh_vouchers {
            voucher_of(node, payer, spent + max_fee)
        } else {
            prepaid.clone()
        };
        let hold = node
            .gate
            .authorize(Some(&header), call(i))
            .expect("authorised")
            .expect("paid");
        spent += hold.settle(100, 50 + i % 50, 1).expect("settled").fee;
    }
}

/// The reference: one token transfer per call.
fn per_call_transfers(calls: usize) -> f64 {
    let node = node();
    let payer = node.client.with_signer(node.payer.clone());
    let token = node.chain.deployment().token;
    let to = node.settler.node();
    let start = Instant::now();
    let mut gas = 0;
    for _ in 0..calls {
        let receipt = payer
            .send(
                token,
                &OpenToken::transferCall {
                    to,
                    value: U256::from(PRICE / 10),
                },
            )
            .expect("transfer");
        gas = receipt.gas_used;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "reference (one ERC-20 transfer per call): {calls} transfers in {seconds:.2} s = {:.0} calls/s, {gas} gas each",
        calls as f64 / seconds
    );
    calls as f64 / seconds
}

/// Gas of each settlement step in steady state: a second epoch, a claim, a repeat claim.
fn gas_per_step() {
    let node = node();
    let mut header = voucher(&node, 1000 * OPEN);
    let mut rounds = Vec::new();
    for epoch in 0..2 {
        for i in 0..10 {
            let hold = node
                .gate
                .authorize(Some(&header), call(i + epoch * 10))
                .expect("ok")
                .expect("paid");
            hold.settle(100, 100, 1).expect("settled");
        }
        rounds.push(node.settler.run(2).expect("round"));
        node.client.increase_time(3601).expect("time");
        node.settler.run(3).expect("finalize");
        // A higher voucher for the next epoch, so its redemption is a repeat one.
        header = voucher(&node, 2000 * OPEN);
    }
    let distributor = node.chain.deployment().distributor;
    let claim = |account: Address| {
        let proof = node.settler.proof(account).expect("proof").expect("earned");
        credence_settle::settler::claim(&node.client, distributor, &proof).expect("claim")
    };
    let empty = claim(Address::with_last_byte(0xC1));
    // A contributor who already holds OPEN: no zero-to-nonzero balance write.
    let holder = Address::with_last_byte(0xC2);
    node.client
        .send(
            node.chain.deployment().token,
            &OpenToken::transferCall {
                to: holder,
                value: U256::from(1u64),
            },
        )
        .expect("transfer");
    let holding = claim(holder);
    println!(
        "gas: redeem first {} / later {}, postEpoch first {} / later {}, \
         warming {} new accounts' claim slots {}, vote mints {} / {}, \
         claim into an empty wallet {}, claim into a wallet holding OPEN {}",
        rounds[0].gas.redeem,
        rounds[1].gas.redeem,
        rounds[0].gas.post,
        rounds[1].gas.post,
        rounds[0].warmed,
        rounds[0].gas.warm,
        rounds[0].gas.votes,
        rounds[1].gas.votes,
        empty.gas_used,
        holding.gas_used
    );
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo test --benches` runs benches without --bench; keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let calls = arg("--calls", if quick { 50 } else { 2000 });
    let reference = per_call_transfers(calls);
    for clients in [1, 8] {
        let prepaid = pipeline(calls, false, clients);
        let fresh = pipeline(calls, true, clients);
        println!(
            "{clients} clients, ratio to per-call transfers: {:.1}× (prepaid voucher), {:.1}× (a voucher per call)",
            prepaid / reference,
            fresh / reference
        );
    }
    gas_per_step();
}
