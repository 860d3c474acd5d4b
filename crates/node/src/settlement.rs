//! Wiring settlement into the node: the book under `<home>/settle`, the
//! settler signing as the chain's poster, the gate installed in the serving
//! layer, the HTTP routes, and a background task that settles every epoch.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use credence_datanet::Datanets;
use std::path::Path;

use credence_ledger::{Chain, ChainDeployment, Client, Deployment};
use credence_serve::AppState;
use credence_settle::http::{HttpError, SettleState};
use credence_settle::{Book, EscrowView, Gate, RunReport, Settler, VoucherDomain};
use serde::Serialize;

use crate::anchor::Anchorer;

use crate::{Error, Result};

/// The node's settlement parts.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// Authorises paid calls and records receipts.
    pub gate: Arc<Gate>,
    /// Redeems, posts, finalizes and proves on-chain.
    pub settler: Arc<Settler>,
    /// Anchors datanet versions.
    pub anchorer: Arc<Anchorer>,
}

/// What `POST /v1/epochs` did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoundReport {
    /// Datanet versions anchored.
    pub anchored: usize,
    /// The settlement round.
    #[serde(flatten)]
    pub settled: RunReport,
}

impl Settlement {
    /// Opens the book and connects the settler to the embedded chain, signing
    /// as dev account 0 (the deployer, which the distributor names poster).
    pub async fn open_embedded(
        home: &Path,
        chain: Arc<Chain>,
        datanets: Arc<Datanets>,
        base_price_per_1k: u128,
    ) -> Result<Self> {
        let wallet = chain.dev_wallets().first().cloned().ok_or_else(|| {
            Error::config(
                "chain",
                "the embedded chain has no dev account to settle with",
            )
        })?;
        let deployment = *chain.deployment();
        let client = Client::in_process(chain, Some(wallet))?;
        Self::open(home, client, deployment, datanets, base_price_per_1k).await
    }

    /// Opens the book and connects the settler to an external chain at `rpc`,
    /// signing with the key in `key_file`, the contracts read from
    /// `deployment_file`.
    pub async fn open_external(
        home: &Path,
        rpc: &str,
        key_file: &Path,
        deployment_file: &Path,
        datanets: Arc<Datanets>,
        base_price_per_1k: u128,
    ) -> Result<Self> {
        let (rpc, key_file, deployment_file) = (
            rpc.to_owned(),
            key_file.to_owned(),
            deployment_file.to_owned(),
        );
        let connect = tokio::task::spawn_blocking(move || -> Result<_> {
            let wallet = credence_ledger::accounts::load_key(&key_file)?;
            let client = Client::http(&rpc, Some(wallet))?;
            let deployment = ChainDeployment::load(&deployment_file)?;
            credence_ledger::ops::check_chain(&client, &deployment)?;
            tracing::info!(%rpc, chain_id = client.chain_id(), "settling on an external chain");
            Ok((client, deployment.contracts))
        });
        let (client, deployment) = connect
            .await
            .map_err(|e| Error::config("chain_rpc", format!("connecting task failed: {e}")))??;
        Self::open(home, client, deployment, datanets, base_price_per_1k).await
    }

    async fn open(
        home: &Path,
        client: Client,
        deployment: Deployment,
        datanets: Arc<Datanets>,
        base_price_per_1k: u128,
    ) -> Result<Self> {
        let path = home.join("settle").join("book.db");
        let task = tokio::task::spawn_blocking(move || -> Result<Self> {
            let book = Arc::new(Book::open(&path)?);
            let settler = Arc::new(Settler::new(Arc::clone(&book), client.clone(), deployment)?);
            let domain = VoucherDomain {
                chain_id: client.chain_id(),
                escrow: deployment.escrow,
                payee: settler.node(),
            };
            let escrow = Arc::clone(&settler) as Arc<dyn EscrowView>;
            let gate = Arc::new(Gate::new(book, domain, escrow, base_price_per_1k));
            let anchorer = Arc::new(Anchorer::new(client, &deployment, datanets));
            Ok(Self {
                gate,
                settler,
                anchorer,
            })
        });
        task.await
            .map_err(|e| Error::config("settlement", format!("opening task failed: {e}")))?
    }

    /// Installs the payment gate in the serving layer.
    pub fn install(&self, state: &AppState, datanets: Arc<Datanets>) {
        let billing = crate::billing::NodeBilling::new(
            Arc::clone(&self.gate),
            self.settler.client().clone(),
            self.settler.contracts().models,
            datanets,
        );
        state.set_billing(Arc::new(billing));
    }

    /// Public settlement routes, plus `POST /v1/epochs` (anchor and settle
    /// now) behind the API keys.
    pub fn routes(&self, state: &AppState) -> Router {
        let shared = SettleState {
            gate: Arc::clone(&self.gate),
            settler: Arc::clone(&self.settler),
        };
        let admin = Router::new()
            .route("/v1/epochs", post(run_now))
            .with_state(self.clone())
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                credence_serve::require_key,
            ));
        credence_settle::http::routes(shared).merge(admin)
    }

    /// Anchors new datanet versions, then runs a settlement round.
    pub fn round(&self) -> Result<RoundReport> {
        let anchored = self.anchorer.run()?;
        let settled = self.settler.run(credence_settle::unix_now())?;
        Ok(RoundReport { anchored, settled })
    }

    /// Anchors and settles every `every` until the runtime stops; a failed
    /// round is logged and retried next time (every step is safe to repeat).
    pub fn spawn_epochs(&self, every: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await; // the first tick is immediate; settle after one period
            loop {
                ticks.tick().await;
                let this = this.clone();
                let round = tokio::task::spawn_blocking(move || this.round()).await;
                match round {
                    Ok(Ok(report)) => tracing::info!(?report, "settlement round"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "settlement round failed"),
                    Err(e) => tracing::error!(error = %e, "settlement task panicked"),
                }
            }
        });
    }
}

async fn run_now(State(this): State<Settlement>) -> axum::response::Response {
    let round = tokio::task::spawn_blocking(move || this.round()).await;
    match round {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(Error::Settle(e))) => HttpError(e).into_response(),
        Ok(Err(e)) => HttpError(credence_settle::Error::Conflict(e.to_string())).into_response(),
        Err(e) => HttpError(credence_settle::Error::Corrupt(format!(
            "round task failed: {e}"
        )))
        .into_response(),
    }
}

impl Settlement {
    /// Anchors new datanet versions every `every`, so a committed version is
    /// on-chain within that time without waiting for an epoch.
    pub fn spawn_anchoring(&self, every: Duration) {
        let anchorer = Arc::clone(&self.anchorer);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                let anchorer = Arc::clone(&anchorer);
                match tokio::task::spawn_blocking(move || anchorer.run()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "anchoring failed"),
                    Err(e) => tracing::error!(error = %e, "anchoring task panicked"),
                }
            }
        });
    }
}
