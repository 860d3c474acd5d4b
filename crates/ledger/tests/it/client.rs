//! The chain client against the embedded chain, through its RPC router.

use std::sync::Arc;

use alloy_primitives::{Address, U256};
use credence_ledger::contracts::OpenToken;
use credence_ledger::{Chain, ChainConfig, Client, Error, ProtocolParams};

use crate::support::ether;

fn chain() -> (Arc<Chain>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::open(dir.path(), &ChainConfig::default()).unwrap();
    (Arc::new(chain), dir)
}

#[test]
fn the_whole_flow_runs_in_process() {
    let (chain, _dir) = chain();
    let client = Client::in_process(Arc::clone(&chain), None).unwrap();
    assert_eq!(client.chain_id(), chain.chain_id());
    crate::flow::run(&client, chain.dev_wallets());
}

#[test]
fn concurrent_sends_from_one_signer_never_reuse_a_nonce() {
    let (chain, _dir) = chain();
    let sender = chain.dev_wallets()[1].clone();
    let client = Client::in_process(Arc::clone(&chain), Some(sender.clone())).unwrap();
    let token = chain.deployment().token;
    let start = chain.nonce(sender.address());
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let client = client.clone();
            s.spawn(move || {
                for i in 0..3u8 {
                    let to = Address::repeat_byte(0x10 + t * 3 + i);
                    client
                        .send(
                            token,
                            &OpenToken::transferCall {
                                to,
                                value: ether(1),
                            },
                        )
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(chain.nonce(sender.address()), start + 12);
    for b in 0x10..0x10 + 12u8 {
        let got = client
            .view(
                token,
                &OpenToken::balanceOfCall {
                    account: Address::repeat_byte(b),
                },
            )
            .unwrap();
        assert_eq!(got, ether(1));
    }
}

#[test]
fn reads_work_without_a_signer_and_sends_need_one() {
    let (chain, _dir) = chain();
    let client = Client::in_process(Arc::clone(&chain), None).unwrap();
    let d = *chain.deployment();
    assert_eq!(
        client.view(d.token, &OpenToken::symbolCall {}).unwrap(),
        "OPEN"
    );
    let e = client
        .send(
            d.token,
            &OpenToken::transferCall {
                to: Address::ZERO,
                value: U256::from(1),
            },
        )
        .unwrap_err();
    assert!(matches!(e, Error::NoSigner), "{e}");
    // The embedded chain tells the client where its contracts are.
    let remote = credence_ledger::ops::remote_deployment(&client)
        .unwrap()
        .unwrap();
    assert_eq!(remote.contracts, d);
    assert_eq!(remote.chain_id, chain.chain_id());
    // A JSON-RPC error keeps its code and message.
    let e = client
        .rpc::<serde_json::Value>("eth_nope", serde_json::json!([]))
        .unwrap_err();
    assert!(
        matches!(&e, Error::Rpc { code: -32601, message, .. } if message.contains("eth_nope")),
        "{e}"
    );
}

#[test]
fn governance_and_staking_operations_work_through_the_client() {
    use credence_ledger::contracts::{ContributionVotes, OpenToken as Token};
    use credence_ledger::ops::{self, Action, Support};

    let (chain, _dir) = chain();
    let d = *chain.deployment();
    let minter =
        Client::in_process(Arc::clone(&chain), Some(chain.dev_wallets()[0].clone())).unwrap();
    let voter = minter.with_signer(chain.dev_wallets()[1].clone());
    // Voting power is earned, here minted by the minter as settlement would.
    minter
        .send(
            d.votes,
            &ContributionVotes::mintCall {
                account: voter.signer_address().unwrap(),
                amount: ether(100),
                reason: alloy_primitives::B256::repeat_byte(1),
            },
        )
        .unwrap();
    minter.mine().unwrap();
    let action = Action {
        target: d.token,
        value: U256::ZERO,
        calldata: alloy_sol_types::SolCall::abi_encode(&Token::transferCall {
            to: Address::repeat_byte(9),
            value: U256::from(1),
        })
        .into(),
    };
    let (id, _) = ops::propose(&voter, &d, &[action], "send 1 unit").unwrap();
    assert_eq!(ops::proposal_state(&voter, &d, id).unwrap(), "pending");
    minter.mine().unwrap();
    minter.mine().unwrap();
    assert_eq!(ops::proposal_state(&voter, &d, id).unwrap(), "active");
    ops::vote(
        &voter,
        &d,
        id,
        "for".parse::<Support>().unwrap(),
        Some("fine"),
    )
    .unwrap();
    // A second vote is refused with the governor's error.
    let e = ops::vote(&voter, &d, id, Support::Against, None).unwrap_err();
    assert!(e.to_string().contains("GovernorAlreadyCastVote"), "{e}");

    // Staking: stake, start the cooldown, refused early, released after it.
    let staker = minter.with_signer(chain.dev_wallets()[2].clone());
    ops::stake(&staker, &d, ether(5)).unwrap();
    let (_, release_at) = ops::request_unstake(&staker, &d, None).unwrap();
    assert!(release_at > staker.block_timestamp().unwrap());
    let e = ops::complete_unstake(&staker, &d).unwrap_err();
    assert!(e.to_string().contains("cooling down"), "{e}");
    staker
        .increase_time(ProtocolParams::default().unstake_cooldown)
        .unwrap();
    let (_, released) = ops::complete_unstake(&staker, &d).unwrap();
    assert_eq!(released, ether(5));
    let e = ops::stake(&staker, &d, ether(10_000_000)).unwrap_err();
    assert!(e.to_string().contains("but 10000000 OPEN is needed"), "{e}");
}
