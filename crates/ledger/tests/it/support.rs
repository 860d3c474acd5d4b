//! Helpers shared by the tests: a fresh chain, typed calls and sends.

use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::{SolCall, SolInterface};
use credence_ledger::{CallRequest, Chain, ChainConfig, Error, TxEntry, Wallet};

pub struct TestChain {
    pub chain: Chain,
    // Held so the directory lives as long as the chain.
    pub _dir: tempfile::TempDir,
}

pub fn fresh() -> TestChain {
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::open(dir.path(), &ChainConfig::default()).unwrap();
    TestChain { chain, _dir: dir }
}

pub fn wallet(chain: &Chain, i: usize) -> Wallet {
    chain.dev_wallets()[i].clone()
}

/// Sends a call and requires it to be mined successfully.
pub fn send<C: SolCall>(chain: &Chain, from: &Wallet, to: Address, call: C) -> TxEntry {
    let entry = chain
        .send(from, Some(to), call.abi_encode().into(), U256::ZERO)
        .unwrap();
    assert!(entry.success, "transaction reverted");
    entry
}

/// Sends a call that must revert, and decodes the contract's custom error.
pub fn send_err<C: SolCall, E: SolInterface>(
    chain: &Chain,
    from: &Wallet,
    to: Address,
    call: C,
) -> E {
    match chain.send(from, Some(to), call.abi_encode().into(), U256::ZERO) {
        Err(Error::Reverted { output }) => {
            E::abi_decode(&output).unwrap_or_else(|e| panic!("undecodable revert {output}: {e}"))
        }
        other => panic!("expected a revert, got {other:?}"),
    }
}

/// A read-only call, decoded.
pub fn view<C: SolCall>(chain: &Chain, to: Address, call: C) -> C::Return {
    let out = chain
        .call(&CallRequest {
            to: Some(to),
            input: Some(Bytes::from(call.abi_encode())),
            ..CallRequest::default()
        })
        .unwrap();
    C::abi_decode_returns(&out).unwrap()
}

pub fn ether(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18))
}
