//! Cold loads: rank-16 all-linear adapters dropped from the RAM cache and
//! loaded again from the store, timed two ways, with the disk itself as the
//! reference.
//!
//! * **page cache**: the adapter's files were just read, so the load is the
//!   node's own work (map, parse, validate, copy into the cache);
//! * **disk**: the files are dropped from the OS page cache first
//!   (`posix_fadvise(DONTNEED)`), so the load reads the disk as it would
//!   for an adapter not used in a long while;
//! * **disk read** (the reference): the same runtime file dropped the same
//!   way and read whole into memory, and nothing else. A load from disk
//!   cannot beat it, so its ratio to it is what the node adds to the disk.
//!
//! Dropping files needs Linux; elsewhere only the page-cache loads run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use credence_serve::AppState;
use serde::Serialize;

use super::{Progress, mib, percentile_ms};
use crate::error::{Error, Result};

/// Cold-load latency with a given number of adapters in the store.
#[derive(Debug, Clone, Serialize)]
pub struct ColdLoads {
    /// Adapters registered in the store when the loads were timed.
    pub store_adapters: usize,
    /// Loads timed in each way.
    pub loads: usize,
    /// Size of the adapter in RAM, MiB.
    pub adapter_mib: f64,
    /// Size of its runtime file, MiB.
    pub file_mib: f64,
    /// Loads with the adapter's files in the page cache, ms (p50, p99).
    pub cached_ms: (f64, f64),
    /// Loads with the files dropped from the page cache, ms (p50, p99);
    /// absent where the OS cannot drop them.
    pub disk_ms: Option<(f64, f64)>,
    /// The reference: reading the runtime file whole after dropping it, ms
    /// (p50, p99).
    pub disk_read_ms: Option<(f64, f64)>,
}

impl ColdLoads {
    /// One line of the report.
    pub fn line(&self) -> String {
        let mut line = format!(
            "Cold load of a rank-16 all-linear adapter ({:.1} MiB in RAM, {:.1} MiB file), {} adapters in the store, {} loads each: from the page cache p50 {:.2} ms, p99 {:.2} ms",
            self.adapter_mib,
            self.file_mib,
            self.store_adapters,
            self.loads,
            self.cached_ms.0,
            self.cached_ms.1
        );
        if let (Some(disk), Some(read)) = (self.disk_ms, self.disk_read_ms) {
            line.push_str(&format!(
                "; from disk p50 {:.2} ms, p99 {:.2} ms, against reading the file alone p50 {:.2} ms, p99 {:.2} ms ({:.2}× at p50)",
                disk.0,
                disk.1,
                read.0,
                read.1,
                disk.0 / read.0.max(1e-9)
            ));
        }
        line
    }
}

/// Where an adapter's files are: the store directory and the runtime file's
/// name in each adapter's directory.
pub(super) struct StoreFiles<'a> {
    pub(super) root: &'a Path,
    pub(super) runtime_file: &'a str,
}

impl StoreFiles<'_> {
    fn adapter_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }
}

/// Times `count` loads of each kind, cycling over the rank-16 all-linear
/// adapters `candidates` (the store holds `store_adapters`).
pub(super) async fn cold_loads(
    state: &AppState,
    files: &StoreFiles<'_>,
    candidates: &[&String],
    store_adapters: usize,
    count: usize,
    progress: Progress<'_>,
) -> Result<ColdLoads> {
    let registry = state.adapters();
    let load = |id: &str| {
        let id = id.to_owned();
        async move {
            let _ = registry.unload(&id);
            let started = Instant::now();
            let info = registry
                .load(&id, false)
                .await
                .map_err(|e| Error::config("adapters", format!("cold load of {id}: {e}")))?;
            let took = started.elapsed();
            let _ = registry.unload(&id);
            Ok::<_, Error>((took, info.bytes))
        }
    };
    let (mut cached, mut disk, mut read) = (Vec::new(), Vec::new(), Vec::new());
    let (mut size, mut file_size) = (0, 0);
    let mut can_drop = true;
    let take = if candidates.is_empty() { 0 } else { count };
    for (n, id) in candidates.iter().cycle().take(take).enumerate() {
        let dir = files.adapter_dir(id);
        // Once to bring the files into the page cache, then timed.
        load(id).await?;
        let (took, bytes) = load(id).await?;
        cached.push(took);
        size = bytes;
        if can_drop {
            can_drop = drop_cached(&dir)?;
        }
        if can_drop {
            let file = dir.join(files.runtime_file);
            let started = Instant::now();
            let bytes = std::fs::read(&file).map_err(|e| Error::io("cannot read", &file, e))?;
            read.push(started.elapsed());
            file_size = bytes.len();
            drop(bytes);
            drop_cached(&dir)?;
            disk.push(load(id).await?.0);
        }
        progress("cold loads", n as u64 + 1, take as u64);
    }
    let quantiles = |mut times: Vec<Duration>| {
        (!times.is_empty()).then(|| {
            (
                percentile_ms(&mut times, 50.0),
                percentile_ms(&mut times, 99.0),
            )
        })
    };
    Ok(ColdLoads {
        store_adapters,
        loads: cached.len(),
        adapter_mib: mib(size as u64),
        file_mib: mib(file_size as u64),
        cached_ms: quantiles(cached).unwrap_or_default(),
        disk_ms: quantiles(disk),
        disk_read_ms: quantiles(read),
    })
}

/// Drops every file of an adapter's directory from the OS page cache, so
/// the next read comes from the disk. Returns false where that cannot be
/// done (not Linux).
fn drop_cached(dir: &Path) -> Result<bool> {
    #[cfg(target_os = "linux")]
    {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io("cannot list", dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io("cannot list", dir, e))?.path();
            let file =
                std::fs::File::open(&path).map_err(|e| Error::io("cannot open", &path, e))?;
            // Dirty pages are not dropped: write them back first.
            file.sync_data()
                .map_err(|e| Error::io("cannot sync", &path, e))?;
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)
                .map_err(|e| Error::io("cannot drop from the page cache", &path, e.into()))?;
        }
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        Ok(false)
    }
}
