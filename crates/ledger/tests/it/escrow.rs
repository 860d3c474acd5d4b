//! PaymentEscrow: cumulative EIP-712 vouchers pay only their increase.

use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::{Eip712Domain, SolStruct, eip712_domain};
use credence_ledger::contracts::payment_escrow::PaymentEscrow::{self, PaymentEscrowErrors};
use credence_ledger::contracts::{OpenToken, voucher::Voucher};
use credence_ledger::{Chain, Wallet};

use crate::support::{ether, fresh, send, send_err, view, wallet};

fn domain(chain: &Chain) -> Eip712Domain {
    eip712_domain! {
        name: "CredencePaymentEscrow",
        version: "1",
        chain_id: chain.chain_id(),
        verifying_contract: chain.deployment().escrow,
    }
}

fn sign(
    chain: &Chain,
    signer: &Wallet,
    payer: Address,
    payee: Address,
    amount: U256,
) -> (PaymentEscrow::Voucher, Bytes) {
    let v = Voucher {
        payer,
        payee,
        cumulativeAmount: amount,
    };
    let sig = signer
        .sign_hash(&v.eip712_signing_hash(&domain(chain)))
        .unwrap();
    (
        PaymentEscrow::Voucher {
            payer,
            payee,
            cumulativeAmount: amount,
        },
        Bytes::from(sig.as_bytes().to_vec()),
    )
}

#[test]
fn vouchers_pay_the_increase_once_and_refuse_replays_and_lower_amounts() {
    let t = fresh();
    let c = &t.chain;
    let d = *c.deployment();
    let (payer, node) = (wallet(c, 3), wallet(c, 4));
    send(
        c,
        &payer,
        d.token,
        OpenToken::approveCall {
            spender: d.escrow,
            value: ether(1000),
        },
    );
    send(
        c,
        &payer,
        d.escrow,
        PaymentEscrow::depositCall {
            amount: ether(1000),
        },
    );
    let node_start = view(
        c,
        d.token,
        OpenToken::balanceOfCall {
            account: node.address(),
        },
    );

    // The Rust signing hash is the contract's digest.
    let (v, _) = sign(c, &payer, payer.address(), node.address(), ether(100));
    let onchain = view(
        c,
        d.escrow,
        PaymentEscrow::voucherDigestCall { voucher: v.clone() },
    );
    let local = Voucher {
        payer: payer.address(),
        payee: node.address(),
        cumulativeAmount: ether(100),
    }
    .eip712_signing_hash(&domain(c));
    assert_eq!(onchain, local);
    let typehash = view(c, d.escrow, PaymentEscrow::VOUCHER_TYPEHASHCall {});
    assert_eq!(
        typehash,
        Voucher {
            payer: payer.address(),
            payee: node.address(),
            cumulativeAmount: U256::ZERO
        }
        .eip712_type_hash()
    );

    let redeem = |amount: u64| {
        let (voucher, signature) = sign(c, &payer, payer.address(), node.address(), ether(amount));
        PaymentEscrow::redeemCall { voucher, signature }
    };
    let first = send(c, &node, d.escrow, redeem(100));
    eprintln!("gas: voucher redeem (first) = {}", first.gas_used);
    let balance = |a| view(c, d.token, OpenToken::balanceOfCall { account: a });
    assert_eq!(balance(node.address()), node_start + ether(100));

    // Replaying the same voucher pays nothing.
    let e: PaymentEscrowErrors = send_err(c, &node, d.escrow, redeem(100));
    assert!(
        matches!(e, PaymentEscrowErrors::VoucherNotIncreasing(_)),
        "{e:?}"
    );
    // A lower (older) voucher is refused too.
    let e: PaymentEscrowErrors = send_err(c, &node, d.escrow, redeem(40));
    assert!(
        matches!(e, PaymentEscrowErrors::VoucherNotIncreasing(_)),
        "{e:?}"
    );
    // A higher one pays exactly the difference.
    let second = send(c, &node, d.escrow, redeem(250));
    eprintln!("gas: voucher redeem (increase) = {}", second.gas_used);
    assert_eq!(balance(node.address()), node_start + ether(250));
    let acct = view(
        c,
        d.escrow,
        PaymentEscrow::accountCall {
            payer: payer.address(),
        },
    );
    assert_eq!(U256::from(acct.balance), ether(750));

    // Signed by someone other than the payer.
    let (voucher, signature) = sign(c, &node, payer.address(), node.address(), ether(300));
    let e: PaymentEscrowErrors = send_err(
        c,
        &node,
        d.escrow,
        PaymentEscrow::redeemCall { voucher, signature },
    );
    assert!(matches!(e, PaymentEscrowErrors::BadSignature(_)), "{e:?}");
    // More than the deposit.
    let e: PaymentEscrowErrors = send_err(c, &node, d.escrow, redeem(2000));
    assert!(
        matches!(e, PaymentEscrowErrors::InsufficientDeposit(_)),
        "{e:?}"
    );
}

#[test]
fn withdrawal_waits_for_the_delay_and_vouchers_still_redeem_meanwhile() {
    let t = fresh();
    let c = &t.chain;
    let d = *c.deployment();
    let (payer, node) = (wallet(c, 3), wallet(c, 4));
    send(
        c,
        &payer,
        d.token,
        OpenToken::approveCall {
            spender: d.escrow,
            value: ether(100),
        },
    );
    send(
        c,
        &payer,
        d.escrow,
        PaymentEscrow::depositCall { amount: ether(100) },
    );
    send(
        c,
        &payer,
        d.escrow,
        PaymentEscrow::requestWithdrawCall { amount: ether(100) },
    );
    let e: PaymentEscrowErrors = send_err(c, &payer, d.escrow, PaymentEscrow::withdrawCall {});
    assert!(
        matches!(e, PaymentEscrowErrors::WithdrawalLocked(_)),
        "{e:?}"
    );
    // During the delay the node redeems what it is owed.
    let (voucher, signature) = sign(c, &payer, payer.address(), node.address(), ether(30));
    send(
        c,
        &node,
        d.escrow,
        PaymentEscrow::redeemCall { voucher, signature },
    );
    c.advance_time(24 * 3600).unwrap();
    let before = view(
        c,
        d.token,
        OpenToken::balanceOfCall {
            account: payer.address(),
        },
    );
    send(c, &payer, d.escrow, PaymentEscrow::withdrawCall {});
    let after = view(
        c,
        d.token,
        OpenToken::balanceOfCall {
            account: payer.address(),
        },
    );
    assert_eq!(
        after - before,
        ether(70),
        "withdraw pays what vouchers left"
    );
}
