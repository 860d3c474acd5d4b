//! A chain process killed with SIGKILL at arbitrary points restarts with
//! every transaction it confirmed, including mid-way through genesis.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use alloy_primitives::{B256, Bytes, U256};
use credence_ledger::{Chain, ChainConfig};

const CHILD_DIR: &str = "CREDENCE_LEDGER_CHILD_DIR";

fn config() -> ChainConfig {
    // Frequent snapshots so kills also land during snapshot writes.
    ChainConfig {
        snapshot_every: 4,
        ..ChainConfig::default()
    }
}

/// The child side: opens the chain and sends transfers forever, printing each
/// hash only after `send` returned (i.e. after the block hit the disk). In a
/// normal test run (no `CHILD_DIR`) it returns at once.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let chain = Chain::open(Path::new(&dir), &config()).unwrap();
    let (from, to) = (
        chain.dev_wallets()[1].clone(),
        chain.dev_wallets()[2].address(),
    );
    let mut out = std::io::stdout();
    writeln!(out, "READY").unwrap();
    loop {
        let e = chain
            .send(&from, Some(to), Bytes::new(), U256::from(1))
            .unwrap();
        writeln!(out, "CONFIRMED {}", e.hash).unwrap();
        out.flush().unwrap();
    }
}

/// Runs the child until it confirmed `after` transactions (or for `delay`
/// when `after` is `None`), kills it with SIGKILL, returns what it confirmed.
fn run_and_kill(dir: &Path, after: Option<usize>, delay: Duration) -> Vec<B256> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durability::child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut confirmed = Vec::new();
    match after {
        Some(n) => {
            while confirmed.len() < n {
                let line = lines.next().expect("child exited early").unwrap();
                if let Some(h) = line.strip_prefix("CONFIRMED ") {
                    confirmed.push(h.parse().unwrap());
                }
            }
        }
        None => std::thread::sleep(delay),
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    // Anything printed before the kill was confirmed too.
    for line in lines.map_while(Result::ok) {
        if let Some(h) = line.strip_prefix("CONFIRMED ") {
            confirmed.push(h.parse().unwrap());
        }
    }
    confirmed
}

#[test]
fn sigkill_never_loses_a_confirmed_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut all: HashSet<B256> = HashSet::new();
    // The first kill lands during genesis deployment; later ones mid-stream,
    // right after a confirmation (the next transaction is then in flight).
    let plan = [
        (None, 150),
        (Some(1), 0),
        (Some(9), 0),
        (None, 400),
        (Some(5), 0),
        (Some(13), 0),
    ];
    for (after, ms) in plan {
        let got = run_and_kill(dir.path(), after, Duration::from_millis(ms));
        all.extend(got);
        let chain = Chain::open(dir.path(), &config()).unwrap();
        for h in &all {
            let tx = chain
                .transaction(*h)
                .unwrap_or_else(|| panic!("confirmed {h} lost"));
            assert!(tx.success);
        }
        // Genesis always completes on reopen.
        assert!(!chain.code(chain.deployment().staking).is_empty());
    }
    let chain = Chain::open(dir.path(), &config()).unwrap();
    let (from, to) = (
        chain.dev_wallets()[1].address(),
        chain.dev_wallets()[2].address(),
    );
    // Every transfer on the chain is counted exactly once in the state: each
    // moved 1 wei, and the sender's nonce counts them.
    let sent = chain.nonce(from);
    assert!(
        sent as usize >= all.len(),
        "nonce {sent} < confirmed {}",
        all.len()
    );
    assert_eq!(
        chain.balance(to),
        ChainConfig::default().dev_balance + U256::from(sent)
    );
    // Blocks are contiguous and each links to its parent.
    let blocks = chain.blocks(0, chain.block_number());
    assert!(
        blocks
            .windows(2)
            .all(|w| w[1].parent_hash == w[0].hash && w[1].number == w[0].number + 1)
    );
}

#[test]
fn restart_reproduces_the_same_chain_with_and_without_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ChainConfig {
        snapshot_every: 1_000_000,
        ..ChainConfig::default()
    };
    let (head, balance) = {
        let chain = Chain::open(dir.path(), &cfg).unwrap();
        let w = chain.dev_wallets()[3].clone();
        for _ in 0..3 {
            chain
                .send(
                    &w,
                    Some(chain.dev_wallets()[4].address()),
                    Bytes::new(),
                    U256::from(5),
                )
                .unwrap();
        }
        (
            chain.block(credence_ledger::BlockId::Latest).unwrap(),
            chain.balance(w.address()),
        )
    };
    // Replay from the log alone.
    let chain = Chain::open(dir.path(), &cfg).unwrap();
    assert_eq!(chain.block(credence_ledger::BlockId::Latest).unwrap(), head);
    assert_eq!(chain.balance(chain.dev_wallets()[3].address()), balance);
    chain.snapshot().unwrap();
    drop(chain);
    // From the snapshot (and an empty log tail).
    let chain = Chain::open(dir.path(), &cfg).unwrap();
    assert_eq!(chain.block(credence_ledger::BlockId::Latest).unwrap(), head);
    assert_eq!(chain.balance(chain.dev_wallets()[3].address()), balance);
    assert_eq!(
        chain.code(chain.deployment().token).len(),
        credence_ledger::contracts::OpenToken::DEPLOYED_BYTECODE.len()
    );
}

#[test]
fn genesis_resumes_after_a_cut_log() {
    let dir = tempfile::tempdir().unwrap();
    let deployed_head = Chain::open(dir.path(), &config()).unwrap().block_number();
    // What a kill during deployment leaves: some whole records, then a torn one.
    let log = dir.path().join("blocks.log");
    let bytes = std::fs::read(&log).unwrap();
    std::fs::write(&log, &bytes[..bytes.len() / 3]).unwrap();
    let _ = std::fs::remove_file(dir.path().join("snapshot.json"));
    let chain = Chain::open(dir.path(), &config()).unwrap();
    assert_eq!(
        chain.block_number(),
        deployed_head,
        "every deployment step ran exactly once"
    );
    let d = *chain.deployment();
    for addr in [
        d.token,
        d.timelock,
        d.votes,
        d.governor,
        d.datanets,
        d.models,
        d.escrow,
        d.distributor,
        d.staking,
    ] {
        assert!(!chain.code(addr).is_empty());
    }
}
