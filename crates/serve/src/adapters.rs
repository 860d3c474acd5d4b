//! The adapters this node serves: registered from PEFT directories, kept in
//! memory, addressed by content id or by a human alias.
//!
//! Registering copies the adapter into the node's adapter directory (when it
//! has one) under its content id, so a restart serves the same set; the same
//! content registered twice is one adapter. An alias names one id; pointing
//! it at another id is a single map update, and requests already running
//! keep the `Arc` of the version they started with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use credence_model::config::LlamaConfig;
use credence_model::lora::LoraAdapter;
use serde::Serialize;

use crate::error::{ApiError, Result};

/// What `GET /v1/adapters` shows for one adapter.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AdapterInfo {
    /// Content id (SHA-256).
    pub id: String,
    /// Aliases pointing at it.
    pub aliases: Vec<String>,
    /// Adapted projections.
    pub modules: usize,
    /// Largest rank among them.
    pub max_rank: usize,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: BTreeMap<String, Arc<LoraAdapter>>,
    aliases: BTreeMap<String, String>,
}

/// The registered adapters.
#[derive(Debug)]
pub struct AdapterRegistry {
    base: LlamaConfig,
    dir: Option<PathBuf>,
    inner: RwLock<Inner>,
}

const ALIASES_FILE: &str = "aliases.json";

impl AdapterRegistry {
    /// A registry for adapters of `base`, persisted under `dir` (and loaded
    /// from it: every `<dir>/<id>/` PEFT directory plus `aliases.json`).
    pub fn open(base: LlamaConfig, dir: Option<PathBuf>) -> Result<Self> {
        let registry = Self {
            base,
            dir,
            inner: RwLock::default(),
        };
        if let Some(dir) = &registry.dir {
            registry.load_dir(dir)?;
        }
        Ok(registry)
    }

    fn load_dir(&self, dir: &Path) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        let mut inner = self.write();
        for path in entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
        {
            match LoraAdapter::load(&path, &self.base) {
                Ok(a) => {
                    inner.by_id.insert(a.id(), Arc::new(a));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping a stored adapter")
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string(dir.join(ALIASES_FILE)) {
            let aliases: BTreeMap<String, String> = serde_json::from_str(&text)
                .map_err(|e| ApiError::Internal(format!("{ALIASES_FILE}: {e}")))?;
            inner.aliases = aliases
                .into_iter()
                .filter(|(_, id)| inner.by_id.contains_key(id))
                .collect();
        }
        tracing::info!(adapters = inner.by_id.len(), "adapters loaded");
        Ok(())
    }

    /// Validates and registers the PEFT adapter in `path`; `alias`, if given,
    /// then names it. Returns its id and whether it was new.
    pub fn register(&self, path: &Path, alias: Option<&str>) -> Result<(String, bool)> {
        let adapter = LoraAdapter::load(path, &self.base)
            .map_err(|e| ApiError::InvalidAdapter(e.to_string()))?;
        if let Some(alias) = alias {
            check_alias(alias)?;
        }
        let id = adapter.id();
        let mut inner = self.write();
        let created = !inner.by_id.contains_key(&id);
        if created {
            if let Some(dir) = &self.dir {
                adapter
                    .save(&dir.join(&id))
                    .map_err(|e| ApiError::Internal(format!("storing adapter {id}: {e}")))?;
            }
            inner.by_id.insert(id.clone(), Arc::new(adapter));
        }
        if let Some(alias) = alias {
            inner.aliases.insert(alias.to_owned(), id.clone());
            self.save_aliases(&inner)?;
        }
        Ok((id, created))
    }

    /// The adapter an id or alias names.
    pub fn resolve(&self, name: &str) -> Option<(String, Arc<LoraAdapter>)> {
        let inner = self.read();
        let id = inner.aliases.get(name).map_or(name, String::as_str);
        inner.by_id.get(id).map(|a| (id.to_owned(), Arc::clone(a)))
    }

    /// Every adapter, by id.
    pub fn list(&self) -> Vec<AdapterInfo> {
        let inner = self.read();
        inner
            .by_id
            .iter()
            .map(|(id, a)| AdapterInfo {
                id: id.clone(),
                aliases: inner
                    .aliases
                    .iter()
                    .filter(|(_, v)| *v == id)
                    .map(|(k, _)| k.clone())
                    .collect(),
                modules: a.pairs().count(),
                max_rank: a.pairs().map(|(_, _, p)| p.rank).max().unwrap_or(0),
            })
            .collect()
    }

    /// Unregisters an adapter (by id or alias) and its aliases; running
    /// requests keep their copy. False if nothing had that name.
    pub fn remove(&self, name: &str) -> Result<bool> {
        let mut inner = self.write();
        let id = inner
            .aliases
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_owned());
        if inner.by_id.remove(&id).is_none() {
            return Ok(false);
        }
        inner.aliases.retain(|_, v| *v != id);
        self.save_aliases(&inner)?;
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir.join(&id));
        }
        Ok(true)
    }

    fn save_aliases(&self, inner: &Inner) -> Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join(format!("{ALIASES_FILE}.tmp"));
            std::fs::write(&tmp, serde_json::to_vec_pretty(&inner.aliases)?)?;
            std::fs::rename(&tmp, dir.join(ALIASES_FILE))
        };
        write().map_err(|e| ApiError::Internal(format!("storing adapter aliases: {e}")))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Aliases are names clients type in `model`: short, printable, no slashes.
fn check_alias(alias: &str) -> Result<()> {
    let ok = !alias.is_empty()
        && alias.len() <= 128
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "alias",
            "1–128 characters of letters, digits, '-', '_', '.' or ':'",
        ))
    }
}
