//! The whole paid-call flow on the embedded chain.

use alloy_primitives::Address;
use credence_settle::{CallTerms, Error, Role};

use crate::support::{Fixture, OPEN, terms, voucher_from};

fn call(price: u128, contributors: Vec<(Address, u64)>, prompt: usize, max: usize) -> CallTerms {
    CallTerms {
        model: "tuned".into(),
        adapters: vec![(terms(price, contributors), 1.0)],
        prompt_tokens: prompt,
        max_completion_tokens: max,
    }
}

#[test]
fn a_paid_call_becomes_a_receipt_an_epoch_and_a_claim() {
    let f = Fixture::new();
    f.deposit(100 * OPEN);
    let (c1, c2) = (Address::with_last_byte(0xC1), Address::with_last_byte(0xC2));
    let contributors = vec![(c1, 1), (c2, 3)];

    let hold = f
        .gate
        .authorize(
            Some(&f.voucher(10 * OPEN)),
            call(OPEN, contributors.clone(), 100, 100),
        )
        .expect("authorised")
        .expect("a paid call");
    assert_eq!(
        f.gate.held(f.payer.address()),
        OPEN / 5,
        "the max fee is reserved"
    );
    let receipt = hold.settle(100, 50, 1).expect("recorded");
    assert_eq!(
        f.gate.held(f.payer.address()),
        0,
        "the reservation is released"
    );
    assert_eq!(receipt.fee, OPEN * 150 / 1000);
    let owed = |who: Address, role: Role| {
        receipt
            .shares
            .iter()
            .find(|s| s.account == who && s.role == role)
            .map_or(0, |s| s.amount)
    };
    assert_eq!(owed(c1, Role::Contributor), receipt.fee * 6 / 10 / 4);
    assert_eq!(owed(c2, Role::Contributor), receipt.fee * 6 / 10 * 3 / 4);
    assert_eq!(f.book.receipt(&receipt.id).unwrap().unwrap(), receipt);

    let report = f.settler.run(2).expect("settlement round");
    assert_eq!(report.posted, Some(1));
    let leaves = f.book.leaves(1).unwrap().len();
    assert_eq!(
        report.warmed, leaves,
        "every account new to the root is warmed"
    );
    assert!(report.gas.warm > 0);
    assert_eq!(report.redeemed, 10 * OPEN, "the latest voucher is redeemed");
    assert!(
        report.finalized.is_empty(),
        "the challenge window is still open"
    );
    assert!(
        f.settler.proof(c2).unwrap().is_none(),
        "nothing is final yet"
    );

    f.node.increase_time(3601).expect("time passes");
    let report = f.settler.run(3).expect("second round");
    assert_eq!(report.posted, None, "no new receipts");
    assert_eq!(report.finalized, vec![1]);
    assert_eq!(report.warmed, 0, "accounts are warmed once");

    let proof = f.settler.proof(c2).unwrap().expect("c2 earned");
    assert_eq!(proof.cumulative, owed(c2, Role::Contributor));
    assert_eq!(proof.claimed, 0);
    let distributor = f.chain.deployment().distributor;
    let claimed = credence_settle::settler::claim(&f.node, distributor, &proof).expect("claim");
    assert_eq!(f.token_balance(c2), proof.cumulative);
    assert!(
        claimed.gas_used <= 80_000,
        "a first claim into an empty wallet used {} gas",
        claimed.gas_used
    );
    let again = credence_settle::settler::claim(&f.node, distributor, &proof);
    assert!(again.is_err(), "a second claim of the same amount fails");

    let epoch = f.book.epoch(1).unwrap().unwrap();
    let totals = f.book.totals().unwrap();
    assert_eq!(totals.fees, receipt.fee);
    assert_eq!(totals.spent, receipt.fee);
    assert_eq!(epoch.total + epoch.retained, receipt.fee);
}

#[test]
fn calls_without_enough_prepaid_balance_are_refused() {
    let f = Fixture::new();
    f.deposit(OPEN);
    let paid = || call(OPEN, vec![], 500, 500);

    let none = f.gate.authorize(None, paid()).unwrap_err();
    assert!(matches!(none, Error::PaymentRequired(_)), "{none}");

    let small = f
        .gate
        .authorize(Some(&f.voucher(OPEN / 10)), paid())
        .unwrap_err();
    assert!(matches!(small, Error::PaymentRequired(_)), "{small}");

    let unbacked = f
        .gate
        .authorize(Some(&f.voucher(2 * OPEN)), paid())
        .unwrap_err();
    assert!(
        unbacked.to_string().contains("escrow"),
        "a voucher above the deposit is refused: {unbacked}"
    );

    // Two calls in flight cannot both spend the same headroom.
    let header = f.voucher(OPEN);
    let first = f.gate.authorize(Some(&header), paid()).unwrap();
    assert!(first.is_some());
    let second = f.gate.authorize(Some(&header), paid()).unwrap_err();
    assert!(matches!(second, Error::PaymentRequired(_)), "{second}");
    drop(first);
    assert!(f.gate.authorize(Some(&header), paid()).unwrap().is_some());

    let free = call(0, vec![], 10, 10);
    assert!(
        f.gate.authorize(None, free).unwrap().is_none(),
        "free calls need nothing"
    );
}

#[test]
fn forged_stale_and_misdirected_vouchers_are_refused() {
    let f = Fixture::new();
    f.deposit(10 * OPEN);
    let paid = || call(OPEN, vec![], 10, 10);
    // A voucher is kept with the receipt of the call it paid for.
    f.gate
        .authorize(Some(&f.voucher(2 * OPEN)), paid())
        .expect("valid voucher")
        .expect("a paid call")
        .settle(10, 10, 1)
        .expect("recorded");

    let stale = f
        .gate
        .authorize(Some(&f.voucher(OPEN)), paid())
        .unwrap_err();
    assert!(matches!(stale, Error::StaleVoucher { .. }), "{stale}");

    // Signed by someone else in the payer's name.
    let thief = f.chain.dev_wallets()[2].clone();
    let mut forged: serde_json::Value =
        serde_json::from_str(&voucher_from(&thief, f.gate.domain(), 3 * OPEN)).unwrap();
    forged["payer"] = serde_json::json!(f.payer.address());
    let forged = f
        .gate
        .authorize(Some(&forged.to_string()), paid())
        .unwrap_err();
    assert!(matches!(forged, Error::InvalidVoucher(_)), "{forged}");

    // Signed for another payee.
    let mut other = *f.gate.domain();
    other.payee = Address::with_last_byte(7);
    let misdirected = voucher_from(&f.payer, &other, 3 * OPEN);
    let e = f.gate.authorize(Some(&misdirected), paid()).unwrap_err();
    assert!(matches!(e, Error::InvalidVoucher(_)), "{e}");

    // Signed for another chain.
    let mut other = *f.gate.domain();
    other.chain_id += 1;
    let wrong_chain = voucher_from(&f.payer, &other, 3 * OPEN);
    let e = f.gate.authorize(Some(&wrong_chain), paid()).unwrap_err();
    assert!(matches!(e, Error::InvalidVoucher(_)), "{e}");

    let e = f.gate.authorize(Some("not json"), paid()).unwrap_err();
    assert!(e.to_string().contains("x-credence-voucher"), "{e}");
}
