//! The durable tier: adapter files and the catalogue in an object store.
//!
//! Layout under the store's root:
//!
//! ```text
//! <id>/adapter_config.json
//! <id>/adapter_model.safetensors
//! <id>/runtime-<dtype>-<q/k rows>.safetensors   (derived, see below)
//! catalog.json
//! ```
//!
//! The runtime file holds the factors as this node serves them
//! (`LoraAdapter::to_runtime_bytes`): loading it skips the transposition and
//! narrowing the PEFT file needs. It is derived data: when it is missing or
//! unreadable the PEFT files are loaded and it is written again.
//!
//! Every object is written whole and atomically by `object_store` (a local
//! directory writes a temporary file and renames it), and an adapter's files
//! are written before the catalogue names it, so a crash leaves at worst an
//! unreferenced directory, never a catalogue entry without its files.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use credence_model::lora::{CONFIG_FILE, WEIGHTS_FILE};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{ApiError, Result};

const CATALOG: &str = "catalog.json";

/// Adapter files and the catalogue, in any `object_store` backend.
#[derive(Debug, Clone)]
pub(crate) struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// The root directory when the store is a local directory.
    local: Option<PathBuf>,
    /// Name of the runtime file in each adapter's directory.
    runtime: String,
    /// Every runtime file name an adapter's directory may hold (from nodes
    /// run with other settings), all deleted with the adapter.
    runtime_names: Vec<String>,
}

/// The two files of one adapter, as stored.
pub(crate) struct AdapterFiles {
    pub(crate) config: Bytes,
    pub(crate) weights: Bytes,
}

impl Blobs {
    /// Blobs under a local directory (created if missing), or in memory,
    /// with runtime files named `runtime` (the first of `runtime_names`,
    /// which lists every name to delete with an adapter).
    pub(crate) fn open(dir: Option<&std::path::Path>, runtime_names: Vec<String>) -> Result<Self> {
        let runtime = runtime_names.first().cloned().unwrap_or_default();
        let store: Arc<dyn ObjectStore> = match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    ApiError::Internal(format!("creating adapter store {}: {e}", dir.display()))
                })?;
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(dir)
                        .map_err(|e| store_error("opening the adapter store", e))?,
                )
            }
            None => Arc::new(object_store::memory::InMemory::new()),
        };
        Ok(Self {
            store,
            local: dir.map(std::path::Path::to_path_buf),
            runtime,
            runtime_names,
        })
    }

    /// Stores (or replaces) an adapter's runtime file.
    pub(crate) async fn put_runtime(&self, id: &str, bytes: Bytes) -> Result<()> {
        self.store
            .put(&file_path(id, &self.runtime), PutPayload::from_bytes(bytes))
            .await
            .map(drop)
            .map_err(|e| store_error("storing an adapter runtime file", e))
    }

    /// The runtime file's path, when the store is a local directory.
    pub(crate) fn local_runtime_file(&self, id: &str) -> Option<PathBuf> {
        self.local_adapter_dir(id)
            .map(|dir| dir.join(&self.runtime))
    }

    /// Reads an adapter's runtime file; `None` if there is none.
    pub(crate) async fn get_runtime(&self, id: &str) -> Result<Option<Bytes>> {
        let path = file_path(id, &self.runtime);
        self.get_optional(&path, "reading an adapter runtime file")
            .await
    }

    /// The directory holding an adapter's files, when the store is a local
    /// directory: loading maps the files there instead of reading them
    /// through `object_store` into a buffer.
    pub(crate) fn local_adapter_dir(&self, id: &str) -> Option<PathBuf> {
        self.local.as_ref().map(|root| root.join(id))
    }

    /// Stores an adapter's files under its id: weights first, then the config.
    pub(crate) async fn put_adapter(&self, id: &str, files: AdapterFiles) -> Result<()> {
        for (name, bytes) in [(WEIGHTS_FILE, files.weights), (CONFIG_FILE, files.config)] {
            self.store
                .put(&file_path(id, name), PutPayload::from_bytes(bytes))
                .await
                .map_err(|e| store_error("storing an adapter", e))?;
        }
        Ok(())
    }

    /// Reads an adapter's files.
    pub(crate) async fn get_adapter(&self, id: &str) -> Result<AdapterFiles> {
        let read = |name| async move {
            let path = file_path(id, name);
            let result = self
                .store
                .get(&path)
                .await
                .map_err(|e| store_error("reading an adapter", e))?;
            result
                .bytes()
                .await
                .map_err(|e| store_error("reading an adapter", e))
        };
        Ok(AdapterFiles {
            config: read(CONFIG_FILE).await?,
            weights: read(WEIGHTS_FILE).await?,
        })
    }

    /// Deletes an adapter's files (missing files are not an error).
    pub(crate) async fn delete_adapter(&self, id: &str) -> Result<()> {
        let runtime = self.runtime_names.iter().map(String::as_str);
        for name in runtime.chain([CONFIG_FILE, WEIGHTS_FILE]) {
            match self.store.delete(&file_path(id, name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error("deleting an adapter", e)),
            }
        }
        // A local store leaves the adapter's directory behind; remove it
        // if it is now empty (anything else in it is not ours to delete).
        if let Some(dir) = self.local_adapter_dir(id) {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    /// The stored catalogue, if one was ever written.
    pub(crate) async fn get_catalog(&self) -> Result<Option<Bytes>> {
        self.get_optional(&StorePath::from(CATALOG), "reading the adapter catalogue")
            .await
    }

    /// The object at `path`, or `None` if there is none; `what` names the
    /// read in errors.
    async fn get_optional(&self, path: &StorePath, what: &str) -> Result<Option<Bytes>> {
        match self.store.get(path).await {
            Ok(result) => result
                .bytes()
                .await
                .map(Some)
                .map_err(|e| store_error(what, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(what, e)),
        }
    }

    /// Replaces the catalogue atomically.
    pub(crate) async fn put_catalog(&self, json: Vec<u8>) -> Result<()> {
        self.store
            .put(&StorePath::from(CATALOG), PutPayload::from(json))
            .await
            .map(drop)
            .map_err(|e| store_error("writing the adapter catalogue", e))
    }
}

fn file_path(id: &str, name: &str) -> StorePath {
    StorePath::from(format!("{id}/{name}"))
}

fn store_error(what: &str, e: object_store::Error) -> ApiError {
    ApiError::Internal(format!("{what}: {e}"))
}
