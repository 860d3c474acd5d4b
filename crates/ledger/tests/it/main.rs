//! Integration tests: the real contracts on the real embedded chain (revm),
//! through signed transactions, plus durability under SIGKILL and the
//! JSON-RPC endpoint over a socket.
#![allow(clippy::unwrap_used, unreachable_pub)] // test helpers panic on purpose; items are crate-local

mod client;
mod distributor;
mod durability;
mod escrow;
mod flow;
mod genesis;
mod governance;
mod hardhat;
mod registry;
mod rpc;
mod support;
