//! Staking cooldown, and slashing that only governance (Governor + timelock,
//! voting with contribution votes) can do.

use alloy_primitives::{B256, Bytes, U256, keccak256};
use alloy_sol_types::SolCall;
use credence_ledger::contracts::staking::Staking::{self, StakingErrors};
use credence_ledger::contracts::{ContributionVotes, CredenceGovernor, OpenToken};

use crate::support::{ether, fresh, send, send_err, view, wallet};

#[test]
fn unstaking_waits_for_the_cooldown() {
    let t = fresh();
    let c = &t.chain;
    let d = *c.deployment();
    let staker = wallet(c, 6);
    let balance = || {
        view(
            c,
            d.token,
            OpenToken::balanceOfCall {
                account: staker.address(),
            },
        )
    };
    let start = balance();
    send(
        c,
        &staker,
        d.token,
        OpenToken::approveCall {
            spender: d.staking,
            value: ether(1000),
        },
    );
    send(
        c,
        &staker,
        d.staking,
        Staking::stakeCall {
            amount: ether(1000),
        },
    );
    send(
        c,
        &staker,
        d.staking,
        Staking::requestUnstakeCall { amount: ether(400) },
    );
    let e: StakingErrors = send_err(c, &staker, d.staking, Staking::unstakeCall {});
    assert!(matches!(e, StakingErrors::CoolingDown(_)), "{e:?}");
    c.advance_time(7 * 24 * 3600 - 10).unwrap();
    let e: StakingErrors = send_err(c, &staker, d.staking, Staking::unstakeCall {});
    assert!(matches!(e, StakingErrors::CoolingDown(_)), "{e:?}");
    c.advance_time(10).unwrap();
    send(c, &staker, d.staking, Staking::unstakeCall {});
    assert_eq!(balance(), start - ether(600));
    let s = view(
        c,
        d.staking,
        Staking::stakeOfCall {
            staker: staker.address(),
        },
    );
    assert_eq!(
        (U256::from(s.staked), U256::from(s.cooling)),
        (ether(600), U256::ZERO)
    );
    // Nothing left cooling.
    let e: StakingErrors = send_err(c, &staker, d.staking, Staking::unstakeCall {});
    assert!(matches!(e, StakingErrors::NothingCooling(_)), "{e:?}");
}

#[test]
fn only_a_passed_governance_proposal_can_slash() {
    let t = fresh();
    let c = &t.chain;
    let d = *c.deployment();
    let (minter, voter, staker) = (wallet(c, 0), wallet(c, 1), wallet(c, 6));
    send(
        c,
        &staker,
        d.token,
        OpenToken::approveCall {
            spender: d.staking,
            value: ether(500),
        },
    );
    send(
        c,
        &staker,
        d.staking,
        Staking::stakeCall { amount: ether(500) },
    );

    // Slashing directly, even by the deployer, is refused.
    let slash = Staking::slashCall {
        staker: staker.address(),
        amount: ether(200),
        evidence: B256::repeat_byte(9),
    };
    let e: StakingErrors = send_err(c, &minter, d.staking, slash.clone());
    assert!(
        matches!(e, StakingErrors::OwnableUnauthorizedAccount(_)),
        "{e:?}"
    );

    // Contribution votes: minted, self-delegated, not transferable.
    send(
        c,
        &minter,
        d.votes,
        ContributionVotes::mintCall {
            account: voter.address(),
            amount: ether(10),
            reason: B256::ZERO,
        },
    );
    assert_eq!(
        view(
            c,
            d.votes,
            ContributionVotes::getVotesCall {
                account: voter.address()
            }
        ),
        ether(10)
    );
    let e: ContributionVotes::ContributionVotesErrors = send_err(
        c,
        &voter,
        d.votes,
        ContributionVotes::transferCall {
            to: staker.address(),
            value: ether(1),
        },
    );
    assert!(
        matches!(
            e,
            ContributionVotes::ContributionVotesErrors::NonTransferable(_)
        ),
        "{e:?}"
    );
    c.mine().unwrap();

    let targets = vec![d.staking];
    let values = vec![U256::ZERO];
    let calldatas = vec![Bytes::from(slash.abi_encode())];
    let description = "slash a misbehaving node".to_owned();
    let description_hash = keccak256(description.as_bytes());
    send(
        c,
        &voter,
        d.governor,
        CredenceGovernor::proposeCall {
            targets: targets.clone(),
            values: values.clone(),
            calldatas: calldatas.clone(),
            description,
        },
    );
    let id = view(
        c,
        d.governor,
        CredenceGovernor::hashProposalCall {
            targets: targets.clone(),
            values: values.clone(),
            calldatas: calldatas.clone(),
            descriptionHash: description_hash,
        },
    );
    c.mine().unwrap();
    c.mine().unwrap();
    send(
        c,
        &voter,
        d.governor,
        CredenceGovernor::castVoteCall {
            proposalId: id,
            support: 1,
        },
    );
    for _ in 0..50 {
        c.mine().unwrap();
    }
    send(
        c,
        &voter,
        d.governor,
        CredenceGovernor::queueCall {
            targets: targets.clone(),
            values: values.clone(),
            calldatas: calldatas.clone(),
            descriptionHash: description_hash,
        },
    );
    c.advance_time(3600).unwrap();
    send(
        c,
        &voter,
        d.governor,
        CredenceGovernor::executeCall {
            targets,
            values,
            calldatas,
            descriptionHash: description_hash,
        },
    );

    let s = view(
        c,
        d.staking,
        Staking::stakeOfCall {
            staker: staker.address(),
        },
    );
    assert_eq!(U256::from(s.staked), ether(300));
    assert_eq!(
        view(
            c,
            d.token,
            OpenToken::balanceOfCall {
                account: d.timelock
            }
        ),
        ether(200)
    );
}
