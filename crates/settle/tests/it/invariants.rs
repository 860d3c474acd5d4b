//! Property tests of the economic invariants over random sequences of paid
//! calls, settlement rounds, time passing and claims, on the real chain.

use alloy_primitives::Address;
use credence_ledger::contracts::AttributionDistributor;
use proptest::prelude::*;

use crate::support::{Fixture, OPEN};

#[derive(Debug, Clone)]
enum Op {
    /// A paid call: price per 1k (in OPEN/1000), tokens, contributor mask.
    Call {
        price: u128,
        prompt: usize,
        completion: usize,
        mask: u8,
    },
    /// A settlement round.
    Settle,
    /// The challenge window passes, then a round.
    Wait,
    /// Account `i` claims whatever it can.
    Claim(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u128..50, 1usize..200, 0usize..200, 0u8..16).prop_map(|(price, prompt, completion, mask)| Op::Call { price, prompt, completion, mask }),
        2 => Just(Op::Settle),
        1 => Just(Op::Wait),
        2 => (0usize..5).prop_map(Op::Claim),
    ]
}

fn accounts() -> Vec<Address> {
    (0..4)
        .map(|i| Address::with_last_byte(0xC0 + i))
        .chain([Address::with_last_byte(0xA0)])
        .collect()
}

fn claimed(f: &Fixture, account: Address) -> u128 {
    let v = f
        .node
        .view(
            f.chain.deployment().distributor,
            &AttributionDistributor::claimedCall { account },
        )
        .expect("claimed");
    u128::try_from(v).expect("fits")
}

/// fees = spent = owed + retained; posted totals are funded and every claim
/// came out of them; nothing is claimable twice.
fn check(f: &Fixture) {
    let totals = f.book.totals().expect("totals");
    assert_eq!(
        totals.fees, totals.spent,
        "every fee is spent by exactly one payer"
    );
    assert_eq!(
        totals.fees,
        totals.owed + totals.retained,
        "shares add up to fees"
    );
    let all_claimed: u128 = accounts().iter().map(|&a| claimed(f, a)).sum();
    let distributor = f.chain.deployment().distributor;
    let held = f.token_balance(distributor);
    let last_posted = f
        .book
        .epochs()
        .expect("epochs")
        .into_iter()
        .rev()
        .find(|e| e.posted_tx.is_some());
    let posted_total = last_posted.as_ref().map_or(0, |e| e.total);
    // Fees collected = claimed + still claimable + the node's share.
    assert_eq!(
        held + all_claimed,
        posted_total,
        "the distributor holds what was posted minus claims"
    );
    if let Some(e) = last_posted {
        assert!(
            e.total + e.retained <= totals.fees,
            "an epoch never posts more than was paid"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn fees_are_conserved_and_never_paid_twice(ops in proptest::collection::vec(op(), 1..14)) {
        let f = Fixture::new();
        f.deposit(1000 * OPEN);
        let header = f.voucher(1000 * OPEN);
        let people = accounts();
        for op in ops {
            match op {
                Op::Call { price, prompt, completion, mask } => {
                    let contributors = (0..4)
                        .filter(|i| mask & (1 << i) != 0)
                        .map(|i| (people[i], i as u64 + 1))
                        .collect();
                    let call = credence_settle::CallTerms {
                        model: "m".into(),
                        adapters: vec![(crate::support::terms(price * OPEN / 1000, contributors), 1.0)],
                        prompt_tokens: prompt,
                        max_completion_tokens: 200,
                    };
                    let hold = f.gate.authorize(Some(&header), call).expect("authorised").expect("paid");
                    hold.settle(prompt, completion, 1).expect("recorded");
                }
                Op::Settle => { f.settler.run(2).expect("round"); }
                Op::Wait => {
                    f.node.increase_time(3601).expect("time");
                    f.settler.run(3).expect("round");
                }
                Op::Claim(i) => {
                    if let Some(proof) = f.settler.proof(people[i]).expect("proof") {
                        let distributor = f.chain.deployment().distributor;
                        let before = f.token_balance(people[i]);
                        let result = credence_settle::settler::claim(&f.node, distributor, &proof);
                        if proof.cumulative > proof.claimed {
                            result.expect("claim pays");
                            prop_assert_eq!(f.token_balance(people[i]), before + proof.cumulative - proof.claimed);
                        } else {
                            prop_assert!(result.is_err(), "a claim of nothing new must fail");
                        }
                        let twice = credence_settle::settler::claim(&f.node, distributor, &proof);
                        prop_assert!(twice.is_err(), "the same proof never pays twice");
                    }
                }
            }
            check(&f);
        }
    }
}
