//! Paid calls: the node's [`Billing`] for the serving layer, pricing each
//! call from the chain's model registry and attributing the contributors'
//! part to the people whose records trained the adapter.
//!
//! An adapter is paid when its content id is registered in `ModelRegistry`
//! (price per 1k tokens, owner, fee split, datanet version roots). Its
//! attribution record, until per-answer attribution lands, is the datanet
//! versions it was trained on: each contributor is weighted by the records it
//! has in those versions, read from this node's datanets. Adapters nobody
//! registered are free, like the base model unless `base_price` is set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256};
use axum::http::HeaderMap;
use credence_datanet::Datanets;
use credence_ledger::Client;
use credence_ledger::contracts::ModelRegistry;
use credence_serve::ApiError;
use credence_serve::billing::{Billing, CallQuote, Charge};
use credence_settle::{AdapterTerms, CallTerms, FeeSplit, Gate, Hold, VOUCHER_HEADER};

/// The node's payment gate as the serving layer sees it.
#[derive(Debug)]
pub struct NodeBilling {
    gate: Arc<Gate>,
    prices: Prices,
}

impl NodeBilling {
    /// Billing through `gate`, pricing adapters from the registry at `models`.
    pub fn new(gate: Arc<Gate>, client: Client, models: Address, datanets: Arc<Datanets>) -> Self {
        Self {
            gate,
            prices: Prices {
                client,
                models,
                datanets,
                cache: Mutex::new(HashMap::new()),
            },
        }
    }
}

impl Billing for NodeBilling {
    fn authorize(
        &self,
        headers: &HeaderMap,
        quote: &CallQuote,
    ) -> Result<Option<Box<dyn Charge>>, ApiError> {
        let mut adapters = Vec::with_capacity(quote.adapters.len());
        for (id, weight) in &quote.adapters {
            if let Some(terms) = self.prices.terms(id).map_err(settle_error)? {
                adapters.push((terms, *weight));
            }
        }
        let call = CallTerms {
            model: quote.model.clone(),
            adapters,
            prompt_tokens: quote.prompt_tokens,
            max_completion_tokens: quote.max_completion_tokens,
        };
        let voucher = match headers.get(VOUCHER_HEADER) {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| {
                ApiError::invalid(VOUCHER_HEADER, "the voucher header must be ASCII JSON")
            })?),
        };
        let hold = self.gate.authorize(voucher, call).map_err(settle_error)?;
        Ok(hold.map(|hold| Box::new(PaidCall(hold)) as Box<dyn Charge>))
    }
}

/// A call holding a reservation with the gate.
#[derive(Debug)]
struct PaidCall(Hold);

impl Charge for PaidCall {
    fn receipt_id(&self) -> &str {
        self.0.id()
    }

    fn settle(self: Box<Self>, prompt_tokens: usize, completion_tokens: usize) {
        let id = self.0.id().to_owned();
        match self.0.settle(
            prompt_tokens,
            completion_tokens,
            credence_settle::unix_now(),
        ) {
            Ok(receipt) => tracing::info!(receipt = %id, fee = receipt.fee, "call charged"),
            // The answer was delivered; losing its receipt is the node's loss,
            // never the payer's, and must be visible to the operator.
            Err(e) => tracing::error!(receipt = %id, error = %e, "recording a receipt failed"),
        }
    }
}

/// Maps settlement refusals onto the API's errors.
fn settle_error(e: credence_settle::Error) -> ApiError {
    use credence_settle::Error as E;
    match e {
        E::PaymentRequired(message) => ApiError::PaymentRequired(message),
        E::InvalidVoucher(_) | E::StaleVoucher { .. } => {
            ApiError::invalid(VOUCHER_HEADER, e.to_string())
        }
        other => ApiError::Internal(other.to_string()),
    }
}

/// Adapter prices and attribution, read from the chain and the datanets.
#[derive(Debug)]
struct Prices {
    client: Client,
    models: Address,
    datanets: Arc<Datanets>,
    /// Terms looked up recently, by content id: working them out takes
    /// several chain reads and a walk over datanet versions, too much for
    /// every call.
    cache: Mutex<HashMap<String, (Instant, Option<AdapterTerms>)>>,
}

/// How long looked-up terms are used before the chain is asked again, so a
/// new price, retirement or registration takes effect within this time.
const TERMS_TTL: Duration = Duration::from_secs(10);

impl Prices {
    /// The terms of a registered, live adapter (`None` if it is not
    /// registered), from the cache when fresh.
    fn terms(&self, content_id: &str) -> credence_settle::Result<Option<AdapterTerms>> {
        let cached = self.lock().get(content_id).cloned();
        if let Some((_, terms)) = cached.filter(|(at, _)| at.elapsed() < TERMS_TTL) {
            return Ok(terms);
        }
        let terms = self.look_up(content_id)?;
        self.lock()
            .insert(content_id.to_owned(), (Instant::now(), terms.clone()));
        Ok(terms)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Option<AdapterTerms>)>> {
        // The map holds whole entries only; a panic cannot leave one half-written.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The terms as the chain and the datanets give them now.
    fn look_up(&self, content_id: &str) -> credence_settle::Result<Option<AdapterTerms>> {
        let Ok(hash) = content_id.parse::<B256>() else {
            return Ok(None); // not a content id: cannot be registered
        };
        let id = self.client.view(
            self.models,
            &ModelRegistry::adapterOfContentCall { contentHash: hash },
        )?;
        if id.is_zero() {
            return Ok(None);
        }
        let adapter = self
            .client
            .view(self.models, &ModelRegistry::adapterCall { adapterId: id })?;
        if adapter.retired {
            return Err(credence_settle::Error::PaymentRequired(format!(
                "adapter {content_id} is retired by its owner and no longer sold"
            )));
        }
        let version = self.client.view(
            self.models,
            &ModelRegistry::adapterVersionCall {
                adapterId: id,
                version: adapter.versionCount,
            },
        )?;
        Ok(Some(AdapterTerms {
            adapter: content_id.to_owned(),
            price_per_1k: adapter.pricePer1kTokens.to::<u128>(),
            owner: adapter.owner,
            split: FeeSplit {
                owner_bps: adapter.split.ownerBps,
                contributors_bps: adapter.split.contributorsBps,
                node_bps: adapter.split.nodeBps,
            },
            contributors: self.contributors(&version.datanetRoots),
        }))
    }

    /// Contributors of the datanet versions with these roots, weighted by
    /// their records in them. Versions this node does not hold add nobody.
    fn contributors(&self, roots: &[B256]) -> Vec<(Address, u64)> {
        let mut weights = std::collections::BTreeMap::<Address, u64>::new();
        for root in roots {
            for (who, records) in self.version_contributors(root) {
                *weights.entry(who).or_default() += records;
            }
        }
        weights.into_iter().collect()
    }

    fn version_contributors(&self, root: &B256) -> Vec<(Address, u64)> {
        let found = self
            .datanets
            .list()
            .ok()
            .into_iter()
            .flatten()
            .find_map(|net| {
                let log = self.datanets.log(&net.id).ok()?;
                let version = log.into_iter().find(|v| v.root.0 == root.0)?;
                self.datanets.diff(&net.id, None, &version.id).ok()
            });
        let mut counts = std::collections::BTreeMap::<Address, u64>::new();
        for entry in found.map(|d| d.added).unwrap_or_default() {
            *counts
                .entry(Address::from(entry.contributor.0))
                .or_default() += 1;
        }
        counts.into_iter().collect()
    }
}
