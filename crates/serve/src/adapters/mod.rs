//! The adapters this node serves, in three tiers:
//!
//! ```text
//! durable store (object_store: local dir by default)   every registered adapter
//!        │ load just in time, one load per cold adapter however many wait
//!        ▼
//! RAM cache (byte budget, LRU, pins)                    decoded factors
//!        │ Arc clone per request
//!        ▼
//! running sequences                                     batched by the engine
//! ```
//!
//! An adapter is addressed by its content id (SHA-256 of its canonical
//! content, so uploading the same adapter twice is one adapter) or by an
//! alias. Catalogue changes are written to the store first and only then
//! published in memory, under one writer lock, so what a client sees is always
//! durable; repointing an alias is one map swap, and requests already running
//! keep the `Arc` of the version they started with until they finish.

mod blobs;
mod cache;
mod catalog;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use credence_model::config::LlamaConfig;
use credence_model::lora::{
    CONFIG_FILE, LoadOptions, LoraAdapter, LoraDtype, MAX_ADAPTER_BYTES, WEIGHTS_FILE,
    runtime_file_name,
};
use serde::Serialize;

pub use cache::{CacheStats, Residency};

use crate::error::{ApiError, Result};
use blobs::{AdapterFiles, Blobs};
use cache::AdapterCache;
use catalog::{Catalog, Entry};

/// What the adapter endpoints show for one adapter.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AdapterInfo {
    /// Content id (SHA-256).
    pub id: String,
    /// Always `"adapter"`.
    pub object: &'static str,
    /// Aliases pointing at it.
    pub aliases: Vec<String>,
    /// Adapted projections.
    pub modules: usize,
    /// Smallest rank among them.
    pub min_rank: usize,
    /// Largest rank among them.
    pub max_rank: usize,
    /// Bytes its factors take in memory.
    pub bytes: usize,
    /// Unix seconds when it was registered.
    pub created: u64,
    /// Decoded in the RAM cache now.
    pub resident: bool,
    /// Exempt from eviction.
    pub pinned: bool,
    /// Requests holding it now.
    pub in_use: usize,
}

/// An adapter ready for a request: its id and decoded factors.
pub type Acquired = (String, Arc<LoraAdapter>);

/// The registered adapters and their storage tiers.
#[derive(Debug)]
pub struct AdapterRegistry {
    base: LlamaConfig,
    /// The element type loaded adapters are held in.
    dtype: LoraDtype,
    blobs: Blobs,
    cache: AdapterCache,
    catalog: RwLock<Catalog>,
    /// Serialises catalogue writes so the stored order is the published order.
    writer: tokio::sync::Mutex<()>,
}

impl AdapterRegistry {
    /// Opens the registry for adapters of `base`, stored under `dir` (in
    /// memory when `None`), with a RAM cache of `cache_bytes` holding
    /// adapters as `dtype`.
    pub async fn open(
        base: LlamaConfig,
        dir: Option<PathBuf>,
        cache_bytes: usize,
        dtype: LoraDtype,
    ) -> Result<Self> {
        // This node's runtime file first, then the ones a node with another
        // dtype would have written (deleted with the adapter too).
        let runtime_names = std::iter::once(dtype)
            .chain(LoraDtype::ALL)
            .map(|d| runtime_file_name(&base, d))
            .fold(Vec::new(), |mut names, name| {
                if !names.contains(&name) {
                    names.push(name);
                }
                names
            });
        let blobs = Blobs::open(dir.as_deref(), runtime_names)?;
        let catalog = match blobs.get_catalog().await? {
            Some(json) => Catalog::parse(&json)?,
            None => Catalog::default(),
        };
        tracing::info!(
            adapters = catalog.adapters.len(),
            cache_bytes,
            %dtype,
            "adapter registry opened"
        );
        Ok(Self {
            base,
            dtype,
            blobs,
            cache: AdapterCache::new(cache_bytes),
            catalog: RwLock::new(catalog),
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// Validates and registers a PEFT adapter given as its two files; `alias`,
    /// if given, then names it. Returns its id and whether it was new.
    pub async fn register(
        &self,
        config_json: Bytes,
        safetensors: Bytes,
        alias: Option<&str>,
    ) -> Result<(String, bool)> {
        if let Some(alias) = alias {
            catalog::check_alias(alias)?;
        }
        let base = self.base.clone();
        let dtype = self.dtype;
        let (adapter, id, files, runtime) = tokio::task::spawn_blocking(move || {
            let adapter = LoraAdapter::from_bytes(&config_json, &safetensors, &base).map_err(
                |e| match e {
                    // Its message already says "invalid adapter"; keep the detail only.
                    credence_model::Error::Adapter(detail) => ApiError::InvalidAdapter(detail),
                    other => ApiError::InvalidAdapter(other.to_string()),
                },
            )?;
            let id = adapter.id();
            let (config, weights) = adapter
                .to_peft_bytes()
                .map_err(|e| ApiError::Internal(format!("re-encoding adapter {id}: {e}")))?;
            let files = AdapterFiles {
                config: config.into(),
                weights: weights.into(),
            };
            // What loads will read: written now so the first request does
            // not wait for the PEFT file's transposition and narrowing.
            let runtime = adapter
                .to_dtype(dtype)
                .to_runtime_bytes()
                .map_err(|e| ApiError::Internal(format!("encoding adapter {id}: {e}")))?;
            Ok::<_, ApiError>((adapter, id, files, Bytes::from(runtime)))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("adapter validation task failed: {e}")))??;
        let resident = adapter.resident_bytes_as(self.dtype);
        if resident > self.cache.budget() {
            return Err(ApiError::InvalidAdapter(format!(
                "the adapter needs {resident} bytes in memory, more than the whole adapter cache ({} bytes)",
                self.cache.budget()
            )));
        }
        let _writing = self.writer.lock().await;
        let mut next = self.snapshot();
        let created = !next.adapters.contains_key(&id);
        if created {
            self.blobs.put_adapter(&id, files).await?;
            self.blobs.put_runtime(&id, runtime).await?;
            next.adapters.insert(
                id.clone(),
                Entry::describe(&adapter, self.dtype, crate::unix_now()),
            );
        }
        if let Some(alias) = alias {
            next.aliases.insert(alias.to_owned(), id.clone());
        }
        if created || alias.is_some() {
            self.publish(next).await?;
        }
        Ok((id, created))
    }

    /// Registers the PEFT directory `dir` on this node's disk.
    pub async fn register_dir(&self, dir: &Path, alias: Option<&str>) -> Result<(String, bool)> {
        let dir = dir.to_owned();
        let (config, weights) = tokio::task::spawn_blocking(move || read_peft_dir(&dir))
            .await
            .map_err(|e| ApiError::Internal(format!("adapter read task failed: {e}")))??;
        self.register(config, weights, alias).await
    }

    /// The id `name` (an id or alias) refers to, if registered.
    pub fn resolve_id(&self, name: &str) -> Option<String> {
        self.read().resolve(name).map(str::to_owned)
    }

    /// The decoded adapter `name` refers to, loading it if it is not resident;
    /// `None` if no adapter has that name.
    pub async fn acquire(&self, name: &str) -> Result<Option<Acquired>> {
        let Some(id) = self.resolve_id(name) else {
            return Ok(None);
        };
        let adapter = self
            .cache
            .get_or_load(&id, || self.load_from_store(&id))
            .await?;
        Ok(Some((id, adapter)))
    }

    async fn load_from_store(&self, id: &str) -> Result<LoraAdapter> {
        let base = self.base.clone();
        let options = LoadOptions::held_as(self.dtype);
        let unreadable = {
            let id = id.to_owned();
            move |e: credence_model::Error| {
                ApiError::Internal(format!("stored adapter {id} is unreadable: {e}"))
            }
        };
        // The store holds what this node validated and wrote under its
        // content id, so the id is not re-hashed here (that would cost more
        // than the load); shapes and values are still checked, which is cheap.
        let load = match self.blobs.local_adapter_dir(id) {
            // A local directory: decode straight from the mapped files.
            Some(dir) => {
                let runtime = self.blobs.local_runtime_file(id);
                tokio::task::spawn_blocking(move || {
                    let from_runtime = runtime.filter(|file| file.exists()).and_then(|file| {
                        read_runtime(&file.display().to_string(), || {
                            LoraAdapter::load_runtime(&dir, &file, &base, &options)
                        })
                    });
                    if let Some(adapter) = from_runtime {
                        return Ok((adapter, None));
                    }
                    let adapter =
                        LoraAdapter::load_with(&dir, &base, &options).map_err(unreadable)?;
                    let runtime = encode_runtime(&adapter);
                    Ok((adapter, runtime))
                })
            }
            None => {
                let runtime = self.blobs.get_runtime(id).await?;
                let files = self.blobs.get_adapter(id).await?;
                tokio::task::spawn_blocking(move || {
                    let from_runtime = runtime.and_then(|bytes| {
                        read_runtime("the stored runtime file", || {
                            LoraAdapter::from_runtime_bytes(&files.config, &bytes, &base, &options)
                        })
                    });
                    if let Some(adapter) = from_runtime {
                        return Ok((adapter, None));
                    }
                    let adapter = LoraAdapter::from_bytes_with(
                        &files.config,
                        &files.weights,
                        &base,
                        &options,
                    )
                    .map_err(unreadable)?;
                    let runtime = encode_runtime(&adapter);
                    Ok((adapter, runtime))
                })
            }
        };
        let (adapter, runtime) = load
            .await
            .map_err(|e| ApiError::Internal(format!("adapter load task failed: {e}")))??;
        if let Some(bytes) = runtime {
            self.rewrite_runtime(id, bytes);
        }
        // The store is content-addressed: these files were written under the
        // id computed from this content at registration.
        Ok(adapter.with_id(id.to_owned()))
    }

    /// Writes an adapter's runtime file again in the background (it was
    /// missing or unreadable); the load that found out does not wait.
    fn rewrite_runtime(&self, id: &str, bytes: Bytes) {
        let (blobs, id) = (self.blobs.clone(), id.to_owned());
        tokio::spawn(async move {
            match blobs.put_runtime(&id, bytes).await {
                Ok(()) => tracing::info!(id, "adapter runtime file written"),
                Err(e) => tracing::warn!(id, error = %e, "cannot write the adapter runtime file"),
            }
        });
    }

    /// Loads `name` into the RAM cache (a prefetch) and optionally pins it.
    pub async fn load(&self, name: &str, pin: bool) -> Result<AdapterInfo> {
        let (id, adapter) = self
            .acquire(name)
            .await?
            .ok_or_else(|| ApiError::ModelNotFound(name.to_owned()))?;
        if pin {
            self.cache.set_pinned(&id, true);
        }
        drop(adapter);
        self.require_info(&id)
    }

    /// Drops `name` from the RAM cache (pinned or not); running requests
    /// keep their reference. Errors if no adapter has that name.
    pub fn unload(&self, name: &str) -> Result<AdapterInfo> {
        let id = self.require_id(name)?;
        self.cache.unload(&id);
        self.require_info(&id)
    }

    /// Makes `name` evictable again.
    pub fn unpin(&self, name: &str) -> Result<AdapterInfo> {
        let id = self.require_id(name)?;
        self.cache.set_pinned(&id, false);
        self.require_info(&id)
    }

    fn require_id(&self, name: &str) -> Result<String> {
        self.resolve_id(name)
            .ok_or_else(|| ApiError::ModelNotFound(name.to_owned()))
    }

    fn require_info(&self, name: &str) -> Result<AdapterInfo> {
        self.info(name)
            .ok_or_else(|| ApiError::ModelNotFound(name.to_owned()))
    }

    /// One adapter's description, by id or alias.
    pub fn info(&self, name: &str) -> Option<AdapterInfo> {
        let catalog = self.read();
        let id = catalog.resolve(name)?;
        let entry = catalog.adapters.get(id)?;
        Some(self.describe(&catalog, id, entry))
    }

    /// Every registered adapter, by id.
    pub fn list(&self) -> Vec<AdapterInfo> {
        let catalog = self.read();
        catalog
            .adapters
            .iter()
            .map(|(id, entry)| self.describe(&catalog, id, entry))
            .collect()
    }

    /// Number of registered adapters.
    pub fn len(&self) -> usize {
        self.read().adapters.len()
    }

    /// True when no adapter is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn describe(&self, catalog: &Catalog, id: &str, entry: &Entry) -> AdapterInfo {
        let Residency {
            resident,
            pinned,
            in_use,
        } = self.cache.residency(id);
        AdapterInfo {
            id: id.to_owned(),
            object: "adapter",
            aliases: catalog.aliases_of(id),
            modules: entry.modules,
            min_rank: entry.min_rank,
            max_rank: entry.max_rank,
            bytes: entry.bytes_as(self.dtype),
            created: entry.created,
            resident,
            pinned,
            in_use,
        }
    }

    /// Unregisters an adapter (by id or alias) with its aliases and files;
    /// running requests keep their copy. False if nothing had that name.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        let _writing = self.writer.lock().await;
        let mut next = self.snapshot();
        let Some(id) = next.resolve(name).map(str::to_owned) else {
            return Ok(false);
        };
        next.remove(&id);
        self.publish(next).await?;
        self.cache.unload(&id);
        // The catalogue no longer names the files; a failure here leaves
        // only unreferenced bytes behind.
        if let Err(e) = self.blobs.delete_adapter(&id).await {
            tracing::warn!(adapter = %id, error = %e, "adapter files not deleted");
        }
        Ok(true)
    }

    /// The RAM cache's counters.
    pub fn cache_stats(&self) -> &CacheStats {
        self.cache.stats()
    }

    /// Bytes of decoded adapters in RAM, adapters resident, and the budget.
    pub fn cache_usage(&self) -> (usize, usize, usize) {
        (
            self.cache.resident_bytes(),
            self.cache.resident_count(),
            self.cache.budget(),
        )
    }

    fn snapshot(&self) -> Catalog {
        self.read().clone()
    }

    /// Stores `next`, then makes it the catalogue clients see.
    async fn publish(&self, next: Catalog) -> Result<()> {
        self.blobs.put_catalog(next.to_json()?).await?;
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads a PEFT directory's two files, refusing oversized ones before reading.
fn read_peft_dir(dir: &Path) -> Result<(Bytes, Bytes)> {
    let read = |name: &str| -> Result<Bytes> {
        let path = dir.join(name);
        let invalid = |e: std::io::Error| {
            ApiError::InvalidAdapter(format!("cannot read {}: {e}", path.display()))
        };
        let size = std::fs::metadata(&path).map_err(invalid)?.len();
        if size > MAX_ADAPTER_BYTES {
            return Err(ApiError::InvalidAdapter(format!(
                "{} is {size} bytes, limit is {MAX_ADAPTER_BYTES}",
                path.display()
            )));
        }
        std::fs::read(&path).map(Bytes::from).map_err(invalid)
    };
    Ok((read(CONFIG_FILE)?, read(WEIGHTS_FILE)?))
}

/// The runtime file of an adapter just loaded from its PEFT files, to write
/// in place of a missing or unusable one (`None`, logged, if it cannot be
/// encoded: loads then keep using the PEFT files).
fn encode_runtime(adapter: &LoraAdapter) -> Option<Bytes> {
    adapter
        .to_runtime_bytes()
        .inspect_err(|e| tracing::warn!(error = %e, "cannot encode an adapter runtime file"))
        .ok()
        .map(Bytes::from)
}

/// The adapter `load` reads from a runtime file (named `what` in the log),
/// or `None` when it cannot be used: the caller then loads the PEFT files,
/// which are the source of truth.
fn read_runtime(
    what: &str,
    load: impl FnOnce() -> credence_model::Result<LoraAdapter>,
) -> Option<LoraAdapter> {
    load()
        .inspect_err(|e| {
            tracing::warn!(file = what, error = %e, "adapter runtime file unusable; loading the PEFT files");
        })
        .ok()
}
