//! Kill test: a child process records paid calls and runs settlement rounds
//! and is SIGKILLed at varying moments; after each kill every receipt the
//! child saw committed must be in the book exactly once, the book's sums must
//! hold, and settlement must carry on and agree with the chain.
//!
//! The child is this test binary re-invoked to run only [`child_process`].

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use alloy_primitives::Address;
use credence_ledger::contracts::AttributionDistributor;
use credence_settle::CallTerms;

use crate::support::{Fixture, OPEN, terms};

const ENV: &str = "CREDENCE_SETTLE_CRASH_CHILD";
/// Starts the child's progress lines (the harness may print before them).
const MARK: &str = "@@ ";

fn paid_call(i: usize) -> CallTerms {
    let contributors = vec![(Address::with_last_byte(0xC1), 1 + i as u64 % 3)];
    CallTerms {
        model: "m".into(),
        adapters: vec![(terms(OPEN / 100, contributors), 1.0)],
        prompt_tokens: 10 + i % 7,
        max_completion_tokens: 20,
    }
}

/// Runs in the child only: paid calls and settlement rounds until killed.
#[test]
fn child_process() {
    let Ok(dir) = std::env::var(ENV) else {
        return; // a normal test run: nothing to do
    };
    let f = Fixture::at(Path::new(&dir));
    let header = f.voucher(1000 * OPEN);
    for i in 0.. {
        let hold = f
            .gate
            .authorize(Some(&header), paid_call(i))
            .expect("authorised")
            .expect("paid");
        let receipt = hold.settle(10 + i % 7, i % 20, 1).expect("recorded");
        println!("{MARK}receipt {}", receipt.id);
        if i % 4 == 3 {
            f.settler.run(2).expect("round");
            println!("{MARK}round {i}");
        }
    }
}

/// Starts the child and kills it after it has printed `lines` progress lines.
fn run_child_until(dir: &Path, lines: usize) -> Vec<String> {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash::child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped");
    let mut seen = Vec::new();
    let mut count = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child output");
        let Some(rest) = line.split_once(MARK).map(|(_, r)| r) else {
            continue;
        };
        if let Some(id) = rest.strip_prefix("receipt ") {
            seen.push(id.to_owned());
        }
        count += 1;
        if count >= lines {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("reaped");
    assert!(
        !status.success(),
        "the child must have been killed, not finished"
    );
    seen
}

#[test]
fn a_kill_during_settlement_loses_and_doubles_nothing() {
    if std::env::var(ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    Fixture::at(dir.path()).deposit(1000 * OPEN);
    let mut committed = HashSet::new();
    // Different kill points: inside calls, inside rounds, between them.
    for lines in [3, 7, 12, 5, 9, 16] {
        committed.extend(run_child_until(dir.path(), lines));
        let f = Fixture::at(dir.path());
        for id in &committed {
            let receipt = f
                .book
                .receipt(id)
                .expect("read")
                .expect("a committed receipt survives");
            assert_eq!(receipt.hash, receipt.compute_hash(), "stored intact");
        }
        let totals = f.book.totals().expect("totals");
        assert_eq!(totals.fees, totals.spent);
        assert_eq!(totals.fees, totals.owed + totals.retained);
        // Settlement resumes: whatever the kill interrupted is finished now.
        f.settler.run(2).expect("a round after the kill");
        let last = f
            .node
            .view(
                f.chain.deployment().distributor,
                &AttributionDistributor::lastEpochCall {},
            )
            .expect("lastEpoch");
        assert_eq!(
            last,
            f.book.last_sealed().expect("sealed"),
            "book and chain agree"
        );
        for epoch in f.book.epochs().expect("epochs") {
            assert!(epoch.posted_tx.is_some(), "epoch {} posted", epoch.epoch);
            let posted = f
                .node
                .view(
                    f.chain.deployment().distributor,
                    &AttributionDistributor::postedCall { epoch: epoch.epoch },
                )
                .expect("posted");
            assert_eq!(posted.root, epoch.root);
        }
        let sealed: u128 = f
            .book
            .epochs()
            .expect("epochs")
            .last()
            .map_or(0, |e| e.total + e.retained);
        assert_eq!(
            sealed, totals.fees,
            "after the round every receipt is sealed once"
        );
    }
    assert!(committed.len() >= 20, "the child made progress");
}
