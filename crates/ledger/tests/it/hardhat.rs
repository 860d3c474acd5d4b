//! External-chain mode: the same flow as `client.rs`, against hardhat's node
//! (`hardhat@2.29.1`, pinned in scripts/contracts/package.json) over HTTP.

use std::path::PathBuf;

use credence_ledger::devnet::Hardhat;
use credence_ledger::{Client, DEV_MNEMONIC, dev_wallets};

fn contracts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/contracts")
}

#[test]
fn the_whole_flow_runs_against_hardhat() {
    let node = Hardhat::start(&contracts_dir()).unwrap_or_else(|e| panic!("{e}"));
    let client = Client::http(node.url(), None).unwrap();
    assert_eq!(client.chain_id(), 31_337, "hardhat's default chain id");
    // Hardhat funds the same mnemonic's accounts as the embedded chain.
    let wallets = dev_wallets(DEV_MNEMONIC, 5).unwrap();
    assert!(!client.balance(wallets[4].address()).unwrap().is_zero());
    crate::flow::run(&client, &wallets);
}
