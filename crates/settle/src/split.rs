//! Prices and fee splits: what a call costs and who earns which part of it.
//!
//! Every amount is an integer number of the payment token's base units. A fee
//! is split exactly: the shares of a call always add up to its fee, with
//! rounding dust going to the node that served it, so no unit is created or
//! lost by division.

use alloy_primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Basis points in a whole (100%).
pub const BPS: u32 = 10_000;

/// How one adapter's fees divide, in basis points summing to [`BPS`]
/// (the `ModelRegistry.FeeSplit` on-chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeSplit {
    /// The adapter's owner (the model developer).
    pub owner_bps: u16,
    /// The data contributors, by attribution.
    pub contributors_bps: u16,
    /// The node that served the call.
    pub node_bps: u16,
}

impl FeeSplit {
    /// Checks the parts add up to a whole.
    pub fn validate(&self) -> Result<()> {
        let total =
            u32::from(self.owner_bps) + u32::from(self.contributors_bps) + u32::from(self.node_bps);
        if total == BPS {
            Ok(())
        } else {
            Err(Error::InvalidTerms(format!(
                "fee split adds up to {total} basis points, not {BPS}"
            )))
        }
    }
}

/// What a call on one adapter pays and to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterTerms {
    /// The adapter's content id (as served).
    pub adapter: String,
    /// Price per 1,000 tokens (prompt + completion), in token base units.
    pub price_per_1k: u128,
    /// Who receives the owner's part.
    pub owner: Address,
    /// How the fee divides.
    pub split: FeeSplit,
    /// The call's attribution record: contributors and their relative weights
    /// (for example accepted records in the datanet versions the adapter was
    /// trained on). Empty gives the contributors' part to the owner.
    pub contributors: Vec<(Address, u64)>,
}

/// Who a share is paid to, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An adapter owner.
    Owner,
    /// A data contributor.
    Contributor,
    /// The serving node (kept by the node, never posted for claims).
    Node,
}

impl Role {
    /// The name stored in the book.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Contributor => "contributor",
            Self::Node => "node",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "owner" => Ok(Self::Owner),
            "contributor" => Ok(Self::Contributor),
            "node" => Ok(Self::Node),
            other => Err(Error::Corrupt(format!("unknown share role `{other}`"))),
        }
    }
}

/// One part of a fee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// Who earns it.
    pub account: Address,
    /// Why.
    pub role: Role,
    /// How much, in token base units.
    #[serde(with = "crate::amount")]
    pub amount: u128,
}

/// The fee for `tokens` at `price_per_1k`, rounded up so a call is never free
/// by rounding (a price of 0 is free).
pub fn fee(price_per_1k: u128, tokens: usize) -> u128 {
    let tokens = tokens as u128;
    price_per_1k.saturating_mul(tokens).div_ceil(1000)
}

/// What a call costs: each adapter's price on all its tokens (a composition
/// uses every member), plus the base model's price, which goes to the node.
pub fn call_fee(base_price_per_1k: u128, adapters: &[AdapterTerms], tokens: usize) -> u128 {
    adapters
        .iter()
        .map(|t| fee(t.price_per_1k, tokens))
        .fold(fee(base_price_per_1k, tokens), u128::saturating_add)
}

/// Splits a call's fee into shares that add up to exactly `fee(…)` for the
/// same tokens. Shares to the same account and role are merged.
pub fn split_call(
    base_price_per_1k: u128,
    adapters: &[AdapterTerms],
    tokens: usize,
    node: Address,
) -> Vec<Share> {
    let mut shares = Vec::new();
    push(
        &mut shares,
        node,
        Role::Node,
        fee(base_price_per_1k, tokens),
    );
    for terms in adapters {
        split_adapter_fee(&mut shares, fee(terms.price_per_1k, tokens), terms, node);
    }
    shares.retain(|s| s.amount > 0);
    shares
}

fn split_adapter_fee(shares: &mut Vec<Share>, total: u128, terms: &AdapterTerms, node: Address) {
    let bps = u128::from(BPS);
    let owner = mul_div(total, u128::from(terms.split.owner_bps), bps);
    let contributors = mul_div(total, u128::from(terms.split.contributors_bps), bps);
    push(shares, terms.owner, Role::Owner, owner);
    let weight_sum: u128 = terms.contributors.iter().map(|&(_, w)| u128::from(w)).sum();
    let mut paid = owner;
    if weight_sum == 0 {
        push(shares, terms.owner, Role::Owner, contributors);
        paid += contributors;
    } else {
        for &(account, weight) in &terms.contributors {
            let amount = mul_div(contributors, u128::from(weight), weight_sum);
            push(shares, account, Role::Contributor, amount);
            paid += amount;
        }
    }
    // The node's part plus every unit rounding left over.
    push(shares, node, Role::Node, total - paid);
}

/// `a × b / d` rounded down, without overflowing in between; `d > 0` and
/// `b ≤ d`, so the result fits whenever `a` does.
fn mul_div(a: u128, b: u128, d: u128) -> u128 {
    let wide = U256::from(a) * U256::from(b) / U256::from(d.max(1));
    u128::try_from(wide).unwrap_or(u128::MAX)
}

fn push(shares: &mut Vec<Share>, account: Address, role: Role, amount: u128) {
    match shares
        .iter_mut()
        .find(|s| s.account == account && s.role == role)
    {
        Some(share) => share.amount += amount,
        None => shares.push(Share {
            account,
            role,
            amount,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn terms(price: u128, contributors: Vec<(Address, u64)>) -> AdapterTerms {
        AdapterTerms {
            adapter: "a".into(),
            price_per_1k: price,
            owner: Address::with_last_byte(1),
            split: FeeSplit {
                owner_bps: 3000,
                contributors_bps: 6000,
                node_bps: 1000,
            },
            contributors,
        }
    }

    #[test]
    fn fee_rounds_up_and_zero_price_is_free() {
        assert_eq!(fee(1000, 1), 1);
        assert_eq!(fee(1500, 3), 5);
        assert_eq!(fee(0, 1_000_000), 0);
    }

    #[test]
    fn split_follows_the_basis_points_and_weights() {
        let node = Address::with_last_byte(9);
        let c1 = Address::with_last_byte(2);
        let c2 = Address::with_last_byte(3);
        let t = terms(10_000, vec![(c1, 1), (c2, 3)]);
        let shares = split_call(0, std::slice::from_ref(&t), 1000, node);
        let of = |a, r| {
            shares
                .iter()
                .find(|s| s.account == a && s.role == r)
                .map_or(0, |s| s.amount)
        };
        assert_eq!(of(t.owner, Role::Owner), 3000);
        assert_eq!(of(c1, Role::Contributor), 1500);
        assert_eq!(of(c2, Role::Contributor), 4500);
        assert_eq!(of(node, Role::Node), 1000);
    }

    #[test]
    fn without_contributors_the_owner_takes_their_part() {
        let node = Address::with_last_byte(9);
        let t = terms(10_000, vec![]);
        let shares = split_call(0, std::slice::from_ref(&t), 1000, node);
        let owner = shares
            .iter()
            .find(|s| s.role == Role::Owner)
            .expect("owner share");
        assert_eq!((owner.account, owner.amount), (t.owner, 9000));
        assert!(shares.iter().all(|s| s.role != Role::Contributor));
    }

    #[test]
    fn a_split_must_add_up() {
        let bad = FeeSplit {
            owner_bps: 5000,
            contributors_bps: 5000,
            node_bps: 1,
        };
        assert!(bad.validate().is_err());
    }

    proptest! {
        #[test]
        fn shares_always_add_up_to_the_fee(
            base in 0u128..1_000_000,
            prices in proptest::collection::vec(0u128..u128::from(u64::MAX) << 32, 0..4),
            weights in proptest::collection::vec(0u64..u64::MAX / 8, 0..6),
            owner_bps in 0u16..=10_000,
            tokens in 0usize..5000,
        ) {
            let contributors: Vec<(Address, u64)> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| (Address::with_last_byte(100 + i as u8), w))
                .collect();
            let adapters: Vec<AdapterTerms> = prices
                .iter()
                .map(|&p| AdapterTerms {
                    split: FeeSplit {
                        owner_bps,
                        contributors_bps: (10_000 - owner_bps) / 2,
                        node_bps: 10_000 - owner_bps - (10_000 - owner_bps) / 2,
                    },
                    ..terms(p, contributors.clone())
                })
                .collect();
            let node = Address::with_last_byte(200);
            let shares = split_call(base, &adapters, tokens, node);
            let total: u128 = shares.iter().map(|s| s.amount).sum();
            prop_assert_eq!(total, call_fee(base, &adapters, tokens));
            prop_assert!(shares.iter().all(|s| s.amount > 0));
        }
    }
}
