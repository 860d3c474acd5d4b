//! AttributionDistributor: epoch roots, the challenge window, claims by proof.

use alloy_primitives::{Address, B256, U256};
use credence_ledger::contracts::OpenToken;
use credence_ledger::contracts::attribution_distributor::AttributionDistributor::{
    self, AttributionDistributorErrors,
};
use credence_ledger::merkle::PayoutTree;

use crate::support::{ether, fresh, send, send_err, view, wallet};

/// Accounts that have never held anything: the most expensive claim, since
/// the token balance goes from zero to non-zero (and, unless the poster
/// warmed it, the claimed-amount slot too).
fn fresh_accounts(n: u8) -> Vec<Address> {
    (1..=n).map(|i| Address::repeat_byte(0x40 + i)).collect()
}

#[test]
fn claims_pay_cumulative_amounts_once_within_the_gas_budget() {
    let t = fresh();
    let c = &t.chain;
    let d = *c.deployment();
    let (poster, relayer) = (wallet(c, 0), wallet(c, 5));
    let accounts = fresh_accounts(100);
    let epoch1: Vec<(Address, U256)> = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| (*a, ether(i as u64 + 1)))
        .collect();
    let total1: U256 = epoch1.iter().map(|e| e.1).sum();
    let tree1 = PayoutTree::new(&epoch1).unwrap();

    send(
        c,
        &poster,
        d.token,
        OpenToken::approveCall {
            spender: d.distributor,
            value: ether(1_000_000),
        },
    );
    let post = send(
        c,
        &poster,
        d.distributor,
        AttributionDistributor::postEpochCall {
            epoch: 1,
            root: tree1.root(),
            receiptsRoot: B256::repeat_byte(7),
            total: total1.to(),
        },
    );
    eprintln!("gas: epoch post (first) = {}", post.gas_used);
    // The poster warms the claim slots of all accounts but the last, which
    // shows what a claim costs without it.
    let (warm_now, cold) = accounts.split_at(accounts.len() - 1);
    let e: AttributionDistributorErrors = send_err(
        c,
        &relayer,
        d.distributor,
        AttributionDistributor::warmCall {
            accounts: warm_now.to_vec(),
        },
    );
    assert!(
        matches!(e, AttributionDistributorErrors::NotPoster(_)),
        "{e:?}"
    );
    let warming = send(
        c,
        &poster,
        d.distributor,
        AttributionDistributor::warmCall {
            accounts: warm_now.to_vec(),
        },
    );
    eprintln!(
        "gas: warm {} accounts = {} ({} each)",
        warm_now.len(),
        warming.gas_used,
        warming.gas_used / warm_now.len() as u64
    );
    let warmed = |account| {
        view(
            c,
            d.distributor,
            AttributionDistributor::warmedCall { account },
        )
    };
    assert!(warmed(warm_now[0]) && !warmed(cold[0]));
    assert_eq!(
        view(
            c,
            d.distributor,
            AttributionDistributor::claimedCall {
                account: warm_now[0]
            }
        ),
        U256::ZERO,
        "a warm slot has claimed nothing"
    );
    assert_eq!(
        view(
            c,
            d.token,
            OpenToken::balanceOfCall {
                account: d.distributor
            }
        ),
        total1
    );

    let claim = |epoch: u64, tree: &PayoutTree, account: Address, amount: U256| {
        AttributionDistributor::claimCall {
            epoch,
            account,
            cumulativeAmount: amount,
            proof: tree.proof(account, amount).unwrap(),
        }
    };
    // Not final during the challenge window.
    let (a0, v0) = epoch1[0];
    let e: AttributionDistributorErrors =
        send_err(c, &relayer, d.distributor, claim(1, &tree1, a0, v0));
    assert!(
        matches!(e, AttributionDistributorErrors::NotFinal(_)),
        "{e:?}"
    );
    let e: AttributionDistributorErrors = send_err(
        c,
        &relayer,
        d.distributor,
        AttributionDistributor::finalizeCall { epoch: 1 },
    );
    assert!(
        matches!(e, AttributionDistributorErrors::ChallengeWindowOpen(_)),
        "{e:?}"
    );
    c.advance_time(3600).unwrap();
    let fin = send(
        c,
        &relayer,
        d.distributor,
        AttributionDistributor::finalizeCall { epoch: 1 },
    );
    eprintln!("gas: epoch finalize = {}", fin.gas_used);

    let first = send(c, &relayer, d.distributor, claim(1, &tree1, a0, v0));
    eprintln!(
        "gas: claim (empty wallet, warm slot, 100-leaf tree) = {}",
        first.gas_used
    );
    assert!(
        first.gas_used <= 80_000,
        "first claim used {} gas",
        first.gas_used
    );
    assert_eq!(
        view(c, d.token, OpenToken::balanceOfCall { account: a0 }),
        v0
    );
    assert_eq!(
        view(
            c,
            d.distributor,
            AttributionDistributor::claimedCall { account: a0 }
        ),
        v0
    );
    // Without warming, the claimed-amount slot is created by the claim: a
    // second zero-to-non-zero write (22,100 instead of 5,000).
    let (last, v_last) = epoch1[cold_index(&epoch1, cold[0])];
    let unwarmed = send(c, &relayer, d.distributor, claim(1, &tree1, last, v_last));
    eprintln!(
        "gas: claim (empty wallet, cold slot, 100-leaf tree) = {}",
        unwarmed.gas_used
    );
    assert!(unwarmed.gas_used <= 95_000, "{}", unwarmed.gas_used);
    assert!(warmed(last), "a claimed slot counts as warm");

    // A second claim of the same amount pays nothing.
    let e: AttributionDistributorErrors =
        send_err(c, &relayer, d.distributor, claim(1, &tree1, a0, v0));
    assert!(
        matches!(e, AttributionDistributorErrors::NothingToClaim(_)),
        "{e:?}"
    );
    // A proof for a different amount does not verify.
    let mut forged = claim(1, &tree1, a0, v0);
    forged.cumulativeAmount = v0 + ether(1);
    let e: AttributionDistributorErrors = send_err(c, &relayer, d.distributor, forged);
    assert!(
        matches!(e, AttributionDistributorErrors::InvalidProof(_)),
        "{e:?}"
    );

    // Epoch 2: everyone earned 1 more. The claim pays only the increase; the
    // pull from the poster is only the growth of the total.
    let epoch2: Vec<(Address, U256)> = epoch1.iter().map(|(a, v)| (*a, *v + ether(1))).collect();
    let total2: U256 = epoch2.iter().map(|e| e.1).sum();
    let tree2 = PayoutTree::new(&epoch2).unwrap();
    let post2 = send(
        c,
        &poster,
        d.distributor,
        AttributionDistributor::postEpochCall {
            epoch: 2,
            root: tree2.root(),
            receiptsRoot: B256::repeat_byte(8),
            total: total2.to(),
        },
    );
    eprintln!("gas: epoch post (next) = {}", post2.gas_used);
    c.advance_time(3600).unwrap();
    send(
        c,
        &relayer,
        d.distributor,
        AttributionDistributor::finalizeCall { epoch: 2 },
    );
    let again = send(
        c,
        &relayer,
        d.distributor,
        claim(2, &tree2, a0, epoch2[0].1),
    );
    eprintln!("gas: claim (repeat account) = {}", again.gas_used);
    assert!(
        again.gas_used <= 80_000,
        "repeat claim used {} gas",
        again.gas_used
    );
    assert_eq!(
        view(c, d.token, OpenToken::balanceOfCall { account: a0 }),
        epoch2[0].1
    );
    // Another account claims both epochs' earnings at once from the newer root.
    let (a5, v5) = epoch2[5];
    send(c, &relayer, d.distributor, claim(2, &tree2, a5, v5));
    assert_eq!(
        view(c, d.token, OpenToken::balanceOfCall { account: a5 }),
        v5
    );
    // Conservation: held + claimed = funded total.
    let held = view(
        c,
        d.token,
        OpenToken::balanceOfCall {
            account: d.distributor,
        },
    );
    assert_eq!(held + epoch2[0].1 + v5 + v_last, total2);
}

/// Where `account` sits in `entries`.
fn cold_index(entries: &[(Address, U256)], account: Address) -> usize {
    entries
        .iter()
        .position(|(a, _)| *a == account)
        .expect("the account has a leaf")
}

#[test]
fn a_challenged_root_never_becomes_claimable() {
    let t = fresh();
    let c = &t.chain;
    let d = *c.deployment();
    let guardian = wallet(c, 0); // the deployer is the dev chain's guardian
    let entries = vec![(Address::repeat_byte(0x77), ether(5))];
    let tree = PayoutTree::new(&entries).unwrap();
    send(
        c,
        &guardian,
        d.token,
        OpenToken::approveCall {
            spender: d.distributor,
            value: ether(5),
        },
    );
    send(
        c,
        &guardian,
        d.distributor,
        AttributionDistributor::postEpochCall {
            epoch: 1,
            root: tree.root(),
            receiptsRoot: B256::ZERO,
            total: ether(5).to(),
        },
    );
    send(
        c,
        &guardian,
        d.distributor,
        AttributionDistributor::challengeCall {
            epoch: 1,
            evidence: B256::repeat_byte(1),
        },
    );
    c.advance_time(3600).unwrap();
    let e: AttributionDistributorErrors = send_err(
        c,
        &wallet(c, 2),
        d.distributor,
        AttributionDistributor::finalizeCall { epoch: 1 },
    );
    assert!(
        matches!(e, AttributionDistributorErrors::EpochChallenged(_)),
        "{e:?}"
    );
    // Only the poster posts, and epochs are sequential.
    let e: AttributionDistributorErrors = send_err(
        c,
        &wallet(c, 2),
        d.distributor,
        AttributionDistributor::postEpochCall {
            epoch: 2,
            root: tree.root(),
            receiptsRoot: B256::ZERO,
            total: 0,
        },
    );
    assert!(
        matches!(e, AttributionDistributorErrors::NotPoster(_)),
        "{e:?}"
    );
    let e: AttributionDistributorErrors = send_err(
        c,
        &guardian,
        d.distributor,
        AttributionDistributor::postEpochCall {
            epoch: 3,
            root: tree.root(),
            receiptsRoot: B256::ZERO,
            total: 0,
        },
    );
    assert!(
        matches!(e, AttributionDistributorErrors::EpochOutOfOrder(_)),
        "{e:?}"
    );
}
