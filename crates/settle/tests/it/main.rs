//! Settlement against the real embedded chain: vouchers, 402s, receipts,
//! epochs, finalization and claims, plus the invariants and a kill test.
#![allow(clippy::unwrap_used, unreachable_pub)] // test helpers panic on purpose; items are crate-local

mod crash;
mod flow;
mod invariants;
mod support;
