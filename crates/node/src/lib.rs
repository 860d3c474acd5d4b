//! The composition root of a Credence node.
//!
//! This crate is the one place that knows every other crate: it turns a
//! [`NodeConfig`] (flags + TOML) into a loaded model, an engine and an HTTP
//! listener ([`Node`]), manages the local model cache ([`models`]), runs
//! one-off generations ([`generate`]) and hosts the generation benchmark
//! ([`bench`]). The `credence` binary is a thin layer
//! of argument parsing and progress display on top of it.
//!
//! ```text
//! NodeConfig ──validate──▶ models::resolve_model ──▶ Model::load ──▶ serve::AppState
//!                                                                   └─▶ serve::router ──▶ axum::serve
//! ```

pub mod anchor;
pub mod bench;
pub mod bench_serve;
pub mod billing;
pub mod client;
pub mod config;
pub mod error;
pub mod generate;
pub mod keys;
pub mod models;
pub mod pay;
pub mod settlement;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use std::sync::Arc;

use credence_datanet::Datanets;
use credence_datanet::ingest::Limits;
use credence_ledger::{Chain, ChainConfig};
use credence_model::llama::Model;
use credence_serve::{AppState, ServeConfig};
use tokio::net::TcpListener;

pub use config::NodeConfig;
pub use error::{Error, Result};

/// How often new datanet versions are anchored on-chain.
const ANCHOR_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// A node with its model loaded, its chain open and its socket bound, ready to serve.
#[derive(Debug)]
pub struct Node {
    listener: TcpListener,
    state: AppState,
    /// The embedded chain; `None` when settling on an external one.
    chain: Option<Arc<Chain>>,
    datanets: Arc<Datanets>,
    settlement: settlement::Settlement,
    epoch_every: Option<std::time::Duration>,
    addr: SocketAddr,
}

impl Node {
    /// Validates `config`, loads the model and binds the listener.
    pub async fn start(config: &NodeConfig) -> Result<Self> {
        config.validate()?;
        let home = config.home_dir()?;
        let path = models::resolve_model(&home, &config.model)?;
        tracing::info!(model = %path.display(), "loading model");
        let started = std::time::Instant::now();
        let load_path = path.clone();
        let model = tokio::task::spawn_blocking(move || Model::load(&load_path))
            .await
            .map_err(|e| Error::config("model", format!("model loading task failed: {e}")))??;
        let threads = config.effective_threads();
        let model_id = model_id(&path);
        tracing::info!(
            id = %model_id,
            name = model.name(),
            context = model.config().context_length,
            threads,
            seconds = format_args!("{:.2}", started.elapsed().as_secs_f64()),
            "model loaded"
        );
        let mut aliases = vec!["default".to_owned()];
        if !model.name().is_empty() && model.name() != model_id {
            aliases.push(model.name().to_owned());
        }
        let serve_config = ServeConfig {
            model_id,
            model_aliases: aliases,
            queue_capacity: config.queue_size,
            max_body_bytes: config.max_body_bytes,
            default_max_tokens: config.default_max_tokens,
            adapter_dir: Some(home.join("adapters")),
            adapter_cache_bytes: config.adapter_cache_mib << 20,
            adapter_dtype: config.lora_dtype,
            kv_cache_bytes: config.kv_cache_mib << 20,
            max_adapter_upload_bytes: config.max_adapter_upload_mib << 20,
            api_keys: keys::node_keys(&home, &config.api_keys)?,
        };
        let state = AppState::new(model, threads, serve_config)
            .await
            .map_err(|e| Error::io("cannot start the engine thread for", &path, e))?;
        let serve_error = |source| Error::Serve {
            addr: config.listen.to_string(),
            source,
        };
        let datanets = open_datanets(&home).await?;
        let (chain, settlement) = open_settlement(config, &home, Arc::clone(&datanets)).await?;
        settlement.install(&state, Arc::clone(&datanets));
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(serve_error)?;
        let addr = listener.local_addr().map_err(serve_error)?;
        Ok(Self {
            listener,
            state,
            chain,
            datanets,
            settlement,
            epoch_every: (config.epoch_seconds > 0)
                .then(|| std::time::Duration::from_secs(config.epoch_seconds)),
            addr,
        })
    }

    /// The bound address (useful when the configured port is 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The serving state (model, engine, limits).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The embedded chain (`None` when the node settles on an external chain).
    pub fn chain(&self) -> Option<&Arc<Chain>> {
        self.chain.as_ref()
    }

    /// The datanet store.
    pub fn datanets(&self) -> &Arc<Datanets> {
        &self.datanets
    }

    /// Settlement: the payment gate, the book and the chain side.
    pub fn settlement(&self) -> &settlement::Settlement {
        &self.settlement
    }

    /// Serves HTTP until `shutdown` completes, then finishes in-flight responses.
    /// Datanets are under `/v1/datanets`, settlement under `/v1/billing`,
    /// `/v1/receipts`, `/v1/epochs` and `/v1/earnings`, the chain's JSON-RPC
    /// endpoint at `/rpc`.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        if let Some(every) = self.epoch_every {
            self.settlement.spawn_epochs(every);
        }
        self.settlement.spawn_anchoring(ANCHOR_EVERY);
        let settle_routes = self.settlement.routes(&self.state);
        let mut app = credence_serve::router(self.state)
            .merge(credence_datanet::http::router(self.datanets))
            .merge(settle_routes);
        if let Some(chain) = self.chain {
            app = app.nest("/rpc", credence_ledger::rpc::router(chain));
        }
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::Serve {
                addr: self.addr.to_string(),
                source,
            })
    }
}

/// Loads the model, binds the socket and serves until Ctrl-C or SIGTERM.
pub async fn run(config: &NodeConfig) -> Result<()> {
    let node = Node::start(config).await?;
    tracing::info!("listening on http://{}", node.local_addr());
    node.serve(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Settlement on the external chain the configuration names, or else on the
/// embedded chain (opened, or created with its contracts, under `home/chain`).
async fn open_settlement(
    config: &NodeConfig,
    home: &Path,
    datanets: Arc<Datanets>,
) -> Result<(Option<Arc<Chain>>, settlement::Settlement)> {
    let price = config.base_price_units()?;
    match (&config.chain_rpc, &config.chain_key) {
        (Some(rpc), Some(key)) => {
            let deployment = config
                .chain_deployment
                .clone()
                .unwrap_or_else(|| home.join("deployment.json"));
            let settlement =
                settlement::Settlement::open_external(home, rpc, key, &deployment, datanets, price)
                    .await?;
            Ok((None, settlement))
        }
        _ => {
            let chain = open_chain(home).await?;
            let settlement =
                settlement::Settlement::open_embedded(home, Arc::clone(&chain), datanets, price)
                    .await?;
            Ok((Some(chain), settlement))
        }
    }
}

/// Opens (or creates, deploying the contracts) the embedded chain under `home/chain`.
async fn open_chain(home: &Path) -> Result<Arc<Chain>> {
    let dir = home.join("chain");
    let started = std::time::Instant::now();
    let chain = tokio::task::spawn_blocking(move || Chain::open(&dir, &ChainConfig::default()))
        .await
        .map_err(|e| Error::config("chain", format!("chain opening task failed: {e}")))?
        .map_err(|e| Error::config("chain", e.to_string()))?;
    tracing::info!(
        chain_id = chain.chain_id(),
        seconds = format_args!("{:.2}", started.elapsed().as_secs_f64()),
        "embedded chain ready"
    );
    Ok(Arc::new(chain))
}

/// Opens (or creates) the datanet store under `home/datanets`.
async fn open_datanets(home: &Path) -> Result<Arc<Datanets>> {
    let dir = home.join("datanets");
    let datanets = tokio::task::spawn_blocking(move || Datanets::open(&dir, Limits::default()))
        .await
        .map_err(|e| Error::config("datanets", format!("datanet opening task failed: {e}")))?
        .map_err(|e| Error::config("datanets", e.to_string()))?;
    Ok(Arc::new(datanets))
}

/// Resolves `spec` (a path or `default`) under `home` and loads the model.
pub fn load_model(home: &Path, spec: &str) -> Result<Model> {
    let path = models::resolve_model(home, spec)?;
    Ok(Model::load(&path)?)
}

/// Completes on Ctrl-C or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested");
}

/// The id clients use for a model: the file stem of a GGUF (`SmolLM2-135M-Instruct.Q4_1`)
/// or the name of a checkpoint directory.
pub fn model_id(path: &Path) -> String {
    let name = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    name.and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .unwrap_or("model")
        .to_owned()
}
