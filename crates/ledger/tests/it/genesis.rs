//! A fresh chain deploys and wires every contract.

use alloy_primitives::{B256, keccak256};
use credence_ledger::contracts::{
    AttributionDistributor, ContributionVotes, CredenceGovernor, CredenceTimelock, OpenToken,
    Staking,
};

use crate::support::{ether, fresh, view};

#[test]
fn fresh_chain_has_contracts_funded_accounts_and_governance_wired() {
    let t = fresh();
    let c = &t.chain;
    let d = *c.deployment();
    for (name, addr) in [
        ("token", d.token),
        ("timelock", d.timelock),
        ("votes", d.votes),
        ("governor", d.governor),
        ("datanets", d.datanets),
        ("models", d.models),
        ("escrow", d.escrow),
        ("distributor", d.distributor),
        ("staking", d.staking),
    ] {
        assert!(!c.code(addr).is_empty(), "{name} has no code");
    }
    assert_eq!(view(c, d.token, OpenToken::symbolCall {}), "OPEN");
    let dev1 = c.dev_wallets()[1].address();
    assert_eq!(
        view(c, d.token, OpenToken::balanceOfCall { account: dev1 }),
        ether(1_000_000)
    );
    // The governor proposes through the timelock; the deployer kept no admin power.
    let proposer = keccak256("PROPOSER_ROLE");
    assert!(view(
        c,
        d.timelock,
        CredenceTimelock::hasRoleCall {
            role: proposer,
            account: d.governor
        }
    ));
    assert!(!view(
        c,
        d.timelock,
        CredenceTimelock::hasRoleCall {
            role: B256::ZERO,
            account: d.deployer
        }
    ));
    assert_eq!(
        view(c, d.governor, CredenceGovernor::timelockCall {}),
        d.timelock
    );
    assert_eq!(view(c, d.staking, Staking::ownerCall {}), d.timelock);
    assert_eq!(
        view(c, d.distributor, AttributionDistributor::ownerCall {}),
        d.timelock
    );
    assert_eq!(
        view(c, d.votes, ContributionVotes::minterCall {}),
        d.deployer
    );
    // One block per deployment transaction, after genesis.
    assert_eq!(c.block_number(), c.nonce(d.deployer));
}
