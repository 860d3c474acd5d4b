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
//!
//! This crate knows the model crate's public API and nothing about where the
//! model came from, configuration files or the command line; that is the node's
//! job.

pub mod adapters;
pub mod api;
pub mod engine;
pub mod error;
mod routes;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use credence_model::llama::Model;
use credence_model::threadpool::ThreadPool;

pub use error::{ApiError, Result};
pub use routes::router;

use crate::adapters::AdapterRegistry;
use crate::engine::Engine;
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
    config: ServeConfig,
    created: u64,
}

impl AppState {
    /// Starts the engine thread for `model` with a pool of `threads` compute
    /// threads, and loads the adapters stored in `config.adapter_dir`.
    pub fn new(model: Model, threads: usize, config: ServeConfig) -> std::io::Result<Self> {
        let adapters = AdapterRegistry::open(model.config().clone(), config.adapter_dir.clone())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let model = Arc::new(model);
        let engine = Engine::start(
            Arc::clone(&model),
            ThreadPool::new(threads),
            config.queue_capacity,
        )?;
        Ok(Self {
            inner: Arc::new(Shared {
                model,
                engine,
                adapters,
                config,
                created: unix_now(),
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

    /// The serving configuration.
    pub fn config(&self) -> &ServeConfig {
        &self.inner.config
    }

    fn model_arc(&self) -> Arc<Model> {
        Arc::clone(&self.inner.model)
    }

    fn created(&self) -> u64 {
        self.inner.created
    }

    /// Maps the request's `model` field to the id reported back and the
    /// adapters to apply: the base model, or a registered adapter on it.
    fn resolve_model(&self, requested: Option<&str>) -> Result<(String, Vec<WeightedAdapter>)> {
        let config = self.config();
        match requested {
            None | Some("") => Ok((config.model_id.clone(), Vec::new())),
            Some(name)
                if name == config.model_id || config.model_aliases.iter().any(|a| a == name) =>
            {
                Ok((config.model_id.clone(), Vec::new()))
            }
            Some(name) => match self.adapters().resolve(name) {
                Some((_, adapter)) => Ok((
                    name.to_owned(),
                    vec![WeightedAdapter {
                        adapter,
                        weight: 1.0,
                    }],
                )),
                None => Err(ApiError::ModelNotFound(name.to_owned())),
            },
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
