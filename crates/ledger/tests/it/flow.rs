//! The whole protocol flow over [`Client`], written once and run against
//! both transports: the embedded chain in-process and hardhat's node over
//! HTTP. Deploy, create a datanet and commit a version, register an adapter,
//! deposit, pay with a voucher, redeem it, post an epoch, wait out the
//! challenge window, finalize, claim.

use alloy_primitives::{Address, B256, U256, keccak256};
use credence_ledger::contracts::attribution_distributor::AttributionDistributor::{
    self, AttributionDistributorErrors,
};
use credence_ledger::contracts::model_registry::ModelRegistry;
use credence_ledger::contracts::{DatanetRegistry, OpenToken, PaymentEscrow};
use credence_ledger::merkle::PayoutTree;
use credence_ledger::{Client, Error, ProtocolParams, Wallet, genesis, ops, voucher};

use crate::support::ether;

/// Runs the flow. `client` may have any signer; `wallets` are funded dev
/// accounts: 0 deploys and runs the node, 1 curates, 2 owns the adapter,
/// 3 pays, 4 contributed data and claims.
pub fn run(client: &Client, wallets: &[Wallet]) {
    let [node, curator, owner, payer, contributor] = [0, 1, 2, 3, 4].map(|i| wallets[i].clone());
    let as_ = |w: &Wallet| client.with_signer(w.clone());
    let params = ProtocolParams::default();

    // Deploy everything from the node's account.
    let deployed = genesis::deploy(&as_(&node), &params).unwrap();
    assert_eq!(deployed.chain_id, client.chain_id());
    let d = deployed.contracts;
    assert_eq!(d.deployer, node.address());
    assert_eq!(
        client
            .view(
                d.token,
                &OpenToken::balanceOfCall {
                    account: node.address()
                }
            )
            .unwrap(),
        params.token_supply
    );
    // The deployment survives a save/load round trip.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deployment.json");
    deployed.save(&file).unwrap();
    assert_eq!(genesis::ChainDeployment::load(&file).unwrap(), deployed);

    // A datanet with one committed version.
    let r = as_(&curator)
        .send(
            d.datanets,
            &DatanetRegistry::createDatanetCall {
                metadataCid: keccak256("meta"),
            },
        )
        .unwrap();
    let created = r.events::<DatanetRegistry::DatanetCreated>();
    assert_eq!(created.len(), 1);
    let datanet = created[0].datanetId;
    let root = keccak256("version 1 records");
    as_(&curator)
        .send(
            d.datanets,
            &DatanetRegistry::commitVersionCall {
                datanetId: datanet,
                root,
                manifestCid: keccak256("manifest"),
            },
        )
        .unwrap();
    assert_eq!(
        client
            .view(d.datanets, &DatanetRegistry::datanetOfRootCall { root })
            .unwrap(),
        datanet
    );

    // An adapter trained on it.
    let r = as_(&owner)
        .send(
            d.models,
            &ModelRegistry::registerCall {
                contentHash: keccak256("adapter bytes"),
                baseModelHash: keccak256("base model"),
                datanetRoots: vec![root],
                pricePer1kTokens: alloy_primitives::aliases::U96::from(10u64.pow(15)),
                split: ModelRegistry::FeeSplit {
                    ownerBps: 7000,
                    contributorsBps: 2000,
                    nodeBps: 1000,
                },
            },
        )
        .unwrap();
    let registered = r.events::<ModelRegistry::AdapterRegistered>();
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].owner, owner.address());

    // The payer gets OPEN and deposits it.
    as_(&node)
        .send(
            d.token,
            &OpenToken::transferCall {
                to: payer.address(),
                value: ether(100),
            },
        )
        .unwrap();
    ops::deposit(&as_(&payer), &d, ether(40)).unwrap();
    let escrowed = client
        .view(
            d.escrow,
            &PaymentEscrow::accountCall {
                payer: payer.address(),
            },
        )
        .unwrap();
    assert_eq!(U256::from(escrowed.balance), ether(40));

    // The payer signs a cumulative voucher; the node checks and redeems it.
    let chain_id = client.chain_id();
    let owed = ether(10);
    let sig = voucher::sign(
        &payer,
        d.escrow,
        chain_id,
        payer.address(),
        node.address(),
        owed,
    )
    .unwrap();
    assert_eq!(
        voucher::recover(
            d.escrow,
            chain_id,
            payer.address(),
            node.address(),
            owed,
            &sig
        )
        .unwrap(),
        payer.address()
    );
    let v = voucher::voucher(payer.address(), node.address(), owed);
    assert_eq!(
        client
            .view(
                d.escrow,
                &PaymentEscrow::voucherDigestCall { voucher: v.clone() }
            )
            .unwrap(),
        voucher::digest(d.escrow, chain_id, payer.address(), node.address(), owed)
    );
    let r = as_(&node)
        .send(
            d.escrow,
            &PaymentEscrow::redeemCall {
                voucher: v.clone(),
                signature: sig.clone(),
            },
        )
        .unwrap();
    let redeemed = r.events::<PaymentEscrow::VoucherRedeemed>();
    assert_eq!(redeemed.len(), 1);
    assert_eq!(redeemed[0].paid, owed);
    // A replay is refused before it is sent, with the contract's error.
    let replay = as_(&node)
        .send(
            d.escrow,
            &PaymentEscrow::redeemCall {
                voucher: v,
                signature: sig,
            },
        )
        .unwrap_err();
    assert!(
        matches!(&replay, Error::Reverted { .. })
            && replay.to_string().contains("VoucherNotIncreasing"),
        "{replay}"
    );

    // The node posts epoch 1: 6 OPEN to the contributor, 2 to a fresh address.
    let fresh = Address::repeat_byte(0x5a);
    let payouts = [(contributor.address(), ether(6)), (fresh, ether(2))];
    let tree = PayoutTree::new(&payouts).unwrap();
    let total = ether(8);
    as_(&node)
        .send(
            d.token,
            &OpenToken::approveCall {
                spender: d.distributor,
                value: total,
            },
        )
        .unwrap();
    as_(&node)
        .send(
            d.distributor,
            &AttributionDistributor::postEpochCall {
                epoch: 1,
                root: tree.root(),
                receiptsRoot: B256::repeat_byte(7),
                total: total.to(),
            },
        )
        .unwrap();

    // Not final during the challenge window: the revert decodes on both transports.
    match as_(&node).send(
        d.distributor,
        &AttributionDistributor::finalizeCall { epoch: 1 },
    ) {
        Err(Error::Reverted { output }) => {
            use alloy_sol_types::SolInterface;
            let e = AttributionDistributorErrors::abi_decode(&output).unwrap();
            assert!(
                matches!(e, AttributionDistributorErrors::ChallengeWindowOpen(_)),
                "{e:?}"
            );
        }
        other => panic!("expected ChallengeWindowOpen, got {other:?}"),
    }

    let before = client.block_timestamp().unwrap();
    client.increase_time(params.challenge_window + 1).unwrap();
    assert!(client.block_timestamp().unwrap() > before + params.challenge_window);
    as_(&node)
        .send(
            d.distributor,
            &AttributionDistributor::finalizeCall { epoch: 1 },
        )
        .unwrap();

    // The contributor claims with a proof; anyone may claim for the fresh address.
    let claim = |account: Address, amount: U256| AttributionDistributor::claimCall {
        epoch: 1,
        account,
        cumulativeAmount: amount,
        proof: tree.proof(account, amount).unwrap(),
    };
    let balance = |a: Address| {
        client
            .view(d.token, &OpenToken::balanceOfCall { account: a })
            .unwrap()
    };
    let start = balance(contributor.address());
    let r = as_(&contributor)
        .send(d.distributor, &claim(contributor.address(), ether(6)))
        .unwrap();
    assert!(r.gas_used > 0);
    assert_eq!(balance(contributor.address()), start + ether(6));
    as_(&curator)
        .send(d.distributor, &claim(fresh, ether(2)))
        .unwrap();
    assert_eq!(balance(fresh), ether(2));
    // A second claim of the same amount pays nothing and is refused.
    assert!(
        as_(&contributor)
            .send(d.distributor, &claim(contributor.address(), ether(6)))
            .is_err()
    );

    // The claims are visible as events from the deployment's first block.
    let claimed = client
        .events::<AttributionDistributor::Claimed>(d.distributor, deployed.start_block)
        .unwrap();
    let paid: Vec<(Address, U256)> = claimed.iter().map(|(e, _)| (e.account, e.paid)).collect();
    assert_eq!(
        paid,
        vec![(contributor.address(), ether(6)), (fresh, ether(2))]
    );
}
