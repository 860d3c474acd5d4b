//! OpenAI-compatible HTTP serving for Credence.
//!
//! The request path, end to end:
//!
//! ```text
//! HTTP (axum, tokio) ── parse + validate ([`api`]) ── tokenize (blocking pool)
//!        │                                                   │
//!        │ 429 if full                                        ▼
//!        └──────────────────────────── bounded queue ──▶ engine thread ([`engine`])
//!                                                            │ generate() on a ThreadPool
//!   SSE chunks / JSON  ◀── unbounded event channel ◀─────────┘ text deltas, then Done
//! ```
//!
//! * [`router`] builds the whole HTTP surface from an [`AppState`]; tests drive
//!   it with `tower::ServiceExt::oneshot`, the node binds it to a socket.
//! * Generation runs on one dedicated OS thread, never on the async runtime.
//!   A dropped client drops its event receiver, which stops its generation.
//! * All failures are [`ApiError`]s, turned into OpenAI-style error JSON in one
//!   place ([`error`]).
//! * A request naming an adapter gets it from the tiered store ([`adapters`]:
//!   object store → RAM cache under a byte budget → the running sequence),
//!   loaded just in time; adapter management, API keys for writes and the
//!   Prometheus counters ([`metrics`]) live in `admin`.
//!
//! This crate knows the model crate's public API and nothing about where the
//! model came from, configuration files or the command line; that is the node's
//! job.

pub mod adapters;
mod admin;
pub mod api;
pub mod billing;
pub mod engine;
pub mod error;
pub mod metrics;
mod openapi;
mod routes;

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use credence_model::llama::Model;
use credence_model::lora::LoraDtype;
use credence_model::threadpool::ThreadPool;

pub use admin::require_key;
pub use error::{ApiError, Result};
pub use routes::router;

use crate::adapters::{Acquired, AdapterRegistry};
use crate::api::AdapterWeight;
use crate::billing::Billing;
use crate::engine::Engine;
use crate::metrics::Metrics;
use credence_model::llama::WeightedAdapter;

/// Serving limits and identity.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The id clients put in `model` and see in `/v1/models`.
    pub model_id: String,
    /// Other names accepted in `model` (e.g. `default`).
    pub model_aliases: Vec<String>,
    /// Generation requests that may wait for the engine; more get 429.
    pub queue_capacity: usize,
    /// Largest accepted request body in bytes; larger gets 413.
    pub max_body_bytes: usize,
    /// Completion length when the request names none (capped by the context left).
    pub default_max_tokens: usize,
    /// Where registered adapters are stored (none: kept in memory only).
    pub adapter_dir: Option<std::path::PathBuf>,
    /// RAM budget for decoded adapters, in bytes.
    pub adapter_cache_bytes: usize,
    /// Element type adapters are held in while served (stored files keep
    /// their exact values whatever this is).
    pub adapter_dtype: LoraDtype,
    /// RAM budget for the KV cache shared by all running sequences, in bytes.
    pub kv_cache_bytes: usize,
    /// Largest adapter upload (`POST /v1/adapters` body) in bytes.
    pub max_adapter_upload_bytes: usize,
    /// Keys accepted in `Authorization: Bearer …` by the write endpoints
    /// (adapter management). Empty leaves them open: only for tests and
    /// embedding; the node always configures at least one.
    pub api_keys: Vec<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            model_id: "default".to_owned(),
            model_aliases: Vec::new(),
            queue_capacity: 64,
            max_body_bytes: 1 << 20,
            default_max_tokens: 512,
            adapter_dir: None,
            adapter_cache_bytes: 1 << 30,
            adapter_dtype: LoraDtype::F16,
            kv_cache_bytes: 1 << 30,
            max_adapter_upload_bytes: 256 << 20,
            api_keys: Vec::new(),
        }
    }
}

/// Shared state behind every handler: the model, the engine handle and the limits.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    model: Arc<Model>,
    engine: Engine,
    adapters: AdapterRegistry,
    metrics: Metrics,
    config: ServeConfig,
    created: u64,
    /// The payment gate; unset means every call is free.
    billing: OnceLock<Arc<dyn Billing>>,
}

/// What a request's `model` field and composition resolve to.
struct Resolved {
    /// The id reported back in the answer.
    model: String,
    /// The adapters applied to the sequence.
    adapters: Vec<WeightedAdapter>,
    /// Their content ids and weights, for billing.
    ids: Vec<(String, f32)>,
}

impl Resolved {
    fn base(model: String) -> Self {
        Self {
            model,
            adapters: Vec::new(),
            ids: Vec::new(),
        }
    }

    fn push(&mut self, (id, adapter): Acquired, weight: f32) {
        self.ids.push((id, weight));
        self.adapters.push(WeightedAdapter { adapter, weight });
    }
}

impl AppState {
    /// Starts the engine thread for `model` with a pool of `threads` compute
    /// threads, and opens the adapter catalogue stored in `config.adapter_dir`.
    pub async fn new(model: Model, threads: usize, config: ServeConfig) -> std::io::Result<Self> {
        let adapters = AdapterRegistry::open(
            model.config().clone(),
            config.adapter_dir.clone(),
            config.adapter_cache_bytes,
            config.adapter_dtype,
        )
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        let model = Arc::new(model);
        let engine = Engine::start(
            Arc::clone(&model),
            ThreadPool::new(threads),
            config.queue_capacity,
            config.kv_cache_bytes,
        )?;
        Ok(Self {
            inner: Arc::new(Shared {
                model,
                engine,
                adapters,
                metrics: Metrics::default(),
                config,
                created: unix_now(),
                billing: OnceLock::new(),
            }),
        })
    }

    /// The served model.
    pub fn model(&self) -> &Model {
        &self.inner.model
    }

    /// The engine handle.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The registered adapters.
    pub fn adapters(&self) -> &AdapterRegistry {
        &self.inner.adapters
    }

    /// Request counters for `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The serving configuration.
    pub fn config(&self) -> &ServeConfig {
        &self.inner.config
    }

    /// Installs the payment gate that authorises and charges generation calls.
    /// Only the first call has an effect (returns `false` after that): the gate
    /// cannot change under requests already holding charges.
    pub fn set_billing(&self, billing: Arc<dyn Billing>) -> bool {
        self.inner.billing.set(billing).is_ok()
    }

    /// The payment gate, if one is installed.
    pub fn billing(&self) -> Option<&Arc<dyn Billing>> {
        self.inner.billing.get()
    }

    fn model_arc(&self) -> Arc<Model> {
        Arc::clone(&self.inner.model)
    }

    fn created(&self) -> u64 {
        self.inner.created
    }

    /// Whether `name` is the base model's id or one of its aliases.
    fn is_base(&self, name: &str) -> bool {
        let config = self.config();
        name.is_empty() || name == config.model_id || config.model_aliases.iter().any(|a| a == name)
    }

    /// Maps the request's `model` field and optional composition to the id
    /// reported back and the adapters to apply, loading cold adapters.
    async fn resolve_model(
        &self,
        requested: Option<&str>,
        composition: Option<&[AdapterWeight]>,
    ) -> Result<Resolved> {
        let base = self.config().model_id.clone();
        match (requested, composition) {
            (None, None) => Ok(Resolved::base(base)),
            (Some(name), None) if self.is_base(name) => Ok(Resolved::base(base)),
            (Some(name), None) => {
                let mut resolved = Resolved::base(name.to_owned());
                resolved.push(self.acquire(name, "model").await?, 1.0);
                Ok(resolved)
            }
            (model, Some(list)) => {
                if let Some(name) = model.filter(|m| !self.is_base(m)) {
                    return Err(ApiError::invalid(
                        "adapters",
                        format!(
                            "a composition applies to the base model; `model` is `{name}`, \
                             name the base model `{base}` or omit it"
                        ),
                    ));
                }
                AdapterWeight::check_composition(list)?;
                let mut resolved = Resolved::base(base);
                for (i, member) in list.iter().enumerate() {
                    let param = format!("adapters[{i}].id");
                    resolved.push(self.acquire(&member.id, &param).await?, member.weight);
                }
                Ok(resolved)
            }
        }
    }

    /// A registered adapter, loaded; 404 naming `param` if unknown.
    async fn acquire(&self, name: &str, param: &str) -> Result<Acquired> {
        self.adapters()
            .acquire(name)
            .await?
            .ok_or_else(|| match param {
                "model" => ApiError::ModelNotFound(name.to_owned()),
                _ => ApiError::AdapterNotFound {
                    param: param.to_owned(),
                    name: name.to_owned(),
                },
            })
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
