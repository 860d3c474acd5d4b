//! A paid call end to end on a real node: a datanet version anchored on its
//! chain, an adapter registered against it, a payer's deposit and voucher,
//! 402 without one, a receipt with one, an epoch posted and finalized, and a
//! data contributor claiming tokens over the node's JSON-RPC endpoint.

use std::ops::ControlFlow;

use alloy_primitives::{Address, B256, U256, keccak256};
use credence_datanet::ingest::Format;
use credence_datanet::model::{
    CommitRequest, ContributionHeader, CreateDatanet, Decision, Review, Signed, Visibility,
};
use credence_datanet::sign::LocalSigner;
use credence_datanet::{Hash32, now_millis};
use credence_ledger::contracts::model_registry::ModelRegistry::FeeSplit;
use credence_ledger::contracts::{ContributionVotes, ModelRegistry, OpenToken};
use credence_ledger::devnet::Hardhat;
use credence_ledger::{
    Client, DEV_MNEMONIC, Deployment, ProtocolParams, accounts, dev_wallets, genesis,
};
use credence_node::client::{ChatMessage, ChatParams, NodeClient};
use credence_node::pay;

use super::client::{KEY, RunningNode, save_adapter};

const OPEN: u128 = 1_000_000_000_000_000_000;

fn address(signer: &LocalSigner) -> Address {
    Address::from(signer.address().0)
}

/// Creates a datanet, takes records from two contributors, accepts them and
/// commits a version; returns its root.
fn datanet_version(
    nets: &credence_datanet::Datanets,
    alice: &LocalSigner,
    bob: &LocalSigner,
) -> B256 {
    let owner = LocalSigner::from_seed("owner");
    let spec = CreateDatanet {
        name: "paid".into(),
        description: "records that earn".into(),
        tags: vec![],
        license: "CC-BY-4.0".into(),
        visibility: Visibility::Public,
        curators: vec![],
    };
    nets.create(&Signed::sign(spec, &owner).expect("sign"))
        .expect("create");
    let upload = |who: &LocalSigner, texts: &[&str]| {
        let bytes: Vec<u8> = texts
            .iter()
            .map(|t| serde_json::json!({ "text": t }).to_string() + "\n")
            .collect::<String>()
            .into_bytes();
        let header = ContributionHeader {
            datanet: "paid".into(),
            file_sha256: Hash32::sha256(&bytes),
            format: Format::Jsonl,
            source: "upload.jsonl".into(),
        };
        nets.contribute(
            &Signed::sign(header, who).expect("sign"),
            &bytes[..],
            &mut |_| {},
        )
        .expect("contribute");
    };
    upload(
        alice,
        &[
            "Paris is the capital of France.",
            "Rome is the capital of Italy.",
            "Oslo is the capital of Norway.",
        ],
    );
    upload(bob, &["Lima is the capital of Peru."]);
    let pending = nets.records("paid", None, 0, 100, None).expect("records");
    let decisions = pending
        .iter()
        .map(|r| Decision {
            entry: r.entry,
            accept: true,
            reason: String::new(),
        })
        .collect();
    let review = Review {
        datanet: "paid".into(),
        decisions,
        time: now_millis(),
    };
    nets.review(&Signed::sign(review, &owner).expect("sign"))
        .expect("review");
    let commit = CommitRequest {
        datanet: "paid".into(),
        parent: None,
        message: "first".into(),
        time: 1_700_000_000,
    };
    let version = nets
        .commit(&Signed::sign(commit, &owner).expect("sign"))
        .expect("commit");
    B256::from(version.root.0)
}

fn chat(
    client: &NodeClient,
    model: &str,
) -> credence_node::client::Result<credence_node::client::ChatReply> {
    let messages = [ChatMessage::new("user", "Name a capital city.")];
    let params = ChatParams {
        max_tokens: Some(8),
        temperature: Some(0.0),
        seed: Some(1),
        adapters: vec![],
    };
    client.chat_stream(Some(model), &messages, &params, &mut |_| {
        ControlFlow::Continue(())
    })
}

#[test]
fn a_paid_call_is_settled_on_the_embedded_chain_and_a_contributor_claims() {
    let home = tempfile::tempdir().expect("tempdir");
    let node = RunningNode::start_with(home.path(), |c| c.epoch_seconds = 0);
    let chain = Client::http(&format!("{}/rpc", node.url), None).expect("rpc client");
    let deployment = credence_ledger::ops::remote_deployment(&chain)
        .expect("deployment")
        .expect("the embedded chain knows its contracts")
        .contracts;
    paid_flow(&node, &chain, &deployment, home.path());
}

/// External-chain mode: the node settles on hardhat's node, where the
/// contracts were deployed through the same client code.
#[test]
fn a_paid_call_is_settled_on_hardhat_and_a_contributor_claims() {
    let contracts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/contracts");
    let hardhat = Hardhat::start(&contracts).unwrap_or_else(|e| panic!("{e}"));
    let home = tempfile::tempdir().expect("tempdir");
    let wallets = dev_wallets(DEV_MNEMONIC, 5).expect("wallets");
    let deployer = Client::http(hardhat.url(), Some(wallets[0].clone())).expect("hardhat");
    let deployed = genesis::deploy(&deployer, &ProtocolParams::default()).expect("deploy");
    // Hardhat funds ether only; the payer needs OPEN from the deployer.
    deployer
        .send(
            deployed.contracts.token,
            &OpenToken::transferCall {
                to: wallets[1].address(),
                value: U256::from(1000 * OPEN),
            },
        )
        .expect("grant");
    let deployment_file = home.path().join("hardhat-deployment.json");
    deployed.save(&deployment_file).expect("saved");
    let key_file = home.path().join("node.key");
    accounts::save_key(&key_file, &wallets[0], false).expect("key saved");

    let url = hardhat.url().to_owned();
    let node = RunningNode::start_with(home.path(), |c| {
        c.epoch_seconds = 0;
        c.chain_rpc = Some(url);
        c.chain_key = Some(key_file);
        c.chain_deployment = Some(deployment_file);
    });
    let chain = Client::http(hardhat.url(), None).expect("rpc client");
    paid_flow(&node, &chain, &deployed.contracts, home.path());
}

/// Datanet version → anchored → adapter registered on it → 402 without a
/// voucher → a paid call → epoch posted and finalized → alice claims.
fn paid_flow(node: &RunningNode, chain: &Client, deployment: &Deployment, home: &std::path::Path) {
    let api = node.client(KEY);
    let (alice, bob) = (
        LocalSigner::from_seed("alice"),
        LocalSigner::from_seed("bob"),
    );
    let root = datanet_version(&node.datanets, &alice, &bob);

    // Anchoring puts the version's root on-chain.
    let round = api.run_epoch().expect("round");
    assert_eq!(round["anchored"], 1, "{round}");
    // Voting power follows contribution: 1 cVOTE per accepted record.
    let votes = |who: Address| {
        chain
            .view(
                deployment.votes,
                &ContributionVotes::getVotesCall { account: who },
            )
            .expect("getVotes")
    };
    assert_eq!(votes(address(&alice)), U256::from(3 * OPEN));
    assert_eq!(votes(address(&bob)), U256::from(OPEN));

    let wallets = dev_wallets(DEV_MNEMONIC, 5).expect("wallets");
    let info = api.billing().expect("billing info");

    // The model developer registers the adapter, trained on that version.
    let dir = home.join("tuned");
    save_adapter(&node.base, &dir, 7);
    let added = api.add_adapter(&dir, Some("tuned")).expect("upload");
    let developer = chain.with_signer(wallets[3].clone());
    developer
        .send(
            deployment.models,
            &ModelRegistry::registerCall {
                contentHash: added
                    .adapter
                    .id
                    .parse()
                    .expect("content id is 32 bytes of hex"),
                baseModelHash: keccak256("SmolLM2-135M-Instruct"),
                datanetRoots: vec![root],
                pricePer1kTokens: alloy_primitives::Uint::from(OPEN),
                split: FeeSplit {
                    ownerBps: 3000,
                    contributorsBps: 6000,
                    nodeBps: 1000,
                },
            },
        )
        .expect("register");

    // The base model stays free; the registered adapter needs a voucher.
    chat(&api, "default").expect("free call");
    let refused = chat(&api, "tuned").expect_err("no voucher");
    assert_eq!(refused.status(), Some(402), "{refused}");
    assert_eq!(refused.code(), Some("payment_required"));

    let payer = chain.with_signer(wallets[1].clone());
    credence_ledger::ops::deposit(&payer, deployment, U256::from(100 * OPEN)).expect("deposit");
    let voucher = pay::voucher_header(&wallets[1], &info, 10 * OPEN).expect("voucher");
    let paying = api.clone().with_voucher(Some(voucher));
    let reply = chat(&paying, "tuned").expect("paid call");
    let receipt_id = reply.receipt.expect("a receipt id header");
    let receipt = api.receipt(&receipt_id).expect("receipt");
    let fee: u128 = receipt["fee"]
        .as_str()
        .expect("fee")
        .parse()
        .expect("amount");
    assert!(fee > 0, "{receipt}");
    let standing = api
        .payer(wallets[1].address())
        .expect("standing")
        .expect("known payer");
    assert_eq!(standing.spent, fee);

    // Epoch 1 is posted, then final once the challenge window has passed.
    let round = api.run_epoch().expect("round");
    assert_eq!(round["posted"], 1, "{round}");
    chain.increase_time(3601).expect("time passes");
    let round = api.run_epoch().expect("round");
    assert_eq!(round["finalized"], serde_json::json!([1]), "{round}");

    // Alice has 3 of the 4 records: three quarters of the contributors' 60%.
    let proof = api
        .claim_proof(address(&alice))
        .expect("earnings")
        .expect("alice earned");
    assert_eq!(proof.cumulative, fee * 6 / 10 * 3 / 4);
    // …and 1 cVOTE per OPEN earned from paid usage.
    assert_eq!(
        votes(address(&alice)),
        U256::from(3 * OPEN + proof.cumulative)
    );
    let anyone = chain.with_signer(wallets[4].clone());
    pay::claim(&anyone, &info, &proof).expect("claim");
    let balance = anyone
        .view(
            info.token,
            &OpenToken::balanceOfCall {
                account: address(&alice),
            },
        )
        .expect("balance");
    assert_eq!(
        balance,
        U256::from(proof.cumulative),
        "the claim paid alice"
    );
}
