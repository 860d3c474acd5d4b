//! The RAM tier: decoded adapters under a byte budget.
//!
//! * **Just in time.** A request for an adapter that is not resident loads it;
//!   concurrent requests for the same cold adapter share one load (a
//!   per-id `OnceCell`), so a burst costs one read, not one per request.
//! * **Bounded.** Making room evicts the least recently used adapter that is
//!   neither pinned nor in use. "In use" is read off the `Arc`: a running
//!   sequence holds a clone, so an adapter some sequence still needs is never
//!   dropped, and when nothing can be evicted the load fails with
//!   [`ApiError::AdapterCacheFull`] (429) instead of overrunning the budget.
//! * **Explicit control.** Pinned adapters are never evicted; `unload` drops
//!   the cache's reference (sequences still running keep theirs).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use credence_model::lora::LoraAdapter;
use tokio::sync::OnceCell;

use crate::error::{ApiError, Result};
use crate::metrics::Histogram;

/// Residency of one adapter, as reported by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Residency {
    /// Decoded in RAM.
    pub resident: bool,
    /// Exempt from eviction.
    pub pinned: bool,
    /// Sequences currently holding it.
    pub in_use: usize,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups that found the adapter resident.
    pub hits: AtomicU64,
    /// Lookups that had to wait for a load.
    pub misses: AtomicU64,
    /// Loads completed.
    pub loads: AtomicU64,
    /// Loads that failed.
    pub load_failures: AtomicU64,
    /// Adapters evicted to make room.
    pub evictions: AtomicU64,
    /// Seconds from the start of a load to the adapter being resident.
    pub load_seconds: Histogram,
}

struct Slot {
    adapter: Arc<LoraAdapter>,
    bytes: usize,
    last_used: u64,
    pinned: bool,
}

impl Slot {
    /// References held outside the cache: running sequences and requests.
    fn users(&self) -> usize {
        Arc::strong_count(&self.adapter) - 1
    }
}

#[derive(Default)]
struct State {
    slots: HashMap<String, Slot>,
    bytes: usize,
    clock: u64,
    loading: HashMap<String, Arc<OnceCell<Arc<LoraAdapter>>>>,
}

/// Decoded adapters by id, within a byte budget.
pub(crate) struct AdapterCache {
    budget: usize,
    state: Mutex<State>,
    stats: CacheStats,
}

impl std::fmt::Debug for AdapterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterCache")
            .field("budget", &self.budget)
            .field("resident_bytes", &self.resident_bytes())
            .finish()
    }
}

impl AdapterCache {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            state: Mutex::default(),
            stats: CacheStats::default(),
        }
    }

    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    pub(crate) fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Bytes of the resident adapters.
    pub(crate) fn resident_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Number of resident adapters.
    pub(crate) fn resident_count(&self) -> usize {
        self.lock().slots.len()
    }

    /// The resident adapter `id`, or the result of `load` (run at most once
    /// at a time per id, however many callers wait for it).
    pub(crate) async fn get_or_load<F, Fut>(&self, id: &str, load: F) -> Result<Arc<LoraAdapter>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<LoraAdapter>>,
    {
        let cell = {
            let mut state = self.lock();
            if let Some(adapter) = state.touch(id) {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(adapter);
            }
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            Arc::clone(state.loading.entry(id.to_owned()).or_default())
        };
        let result = cell
            .get_or_try_init(|| async {
                let started = Instant::now();
                let loaded = match load().await {
                    Ok(adapter) => self.insert(id, adapter),
                    Err(e) => Err(e),
                };
                match &loaded {
                    Ok(_) => {
                        self.stats.loads.fetch_add(1, Ordering::Relaxed);
                        self.stats.load_seconds.observe(started.elapsed());
                    }
                    Err(_) => {
                        self.stats.load_failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                loaded
            })
            .await
            .cloned();
        let mut state = self.lock();
        if state.loading.get(id).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            state.loading.remove(id);
        }
        result
    }

    /// Makes `adapter` resident under `id`, evicting others if needed.
    pub(crate) fn insert(&self, id: &str, adapter: LoraAdapter) -> Result<Arc<LoraAdapter>> {
        let bytes = adapter.resident_bytes();
        let mut state = self.lock();
        if let Some(existing) = state.touch(id) {
            return Ok(existing);
        }
        let evicted = state.make_room(bytes, self.budget)?;
        self.stats.evictions.fetch_add(evicted, Ordering::Relaxed);
        let adapter = Arc::new(adapter);
        let last_used = state.tick();
        state.bytes += bytes;
        state.slots.insert(
            id.to_owned(),
            Slot {
                adapter: Arc::clone(&adapter),
                bytes,
                last_used,
                pinned: false,
            },
        );
        Ok(adapter)
    }

    /// Pins or unpins a resident adapter; false if it is not resident.
    pub(crate) fn set_pinned(&self, id: &str, pinned: bool) -> bool {
        let mut state = self.lock();
        state.slots.get_mut(id).map(|s| s.pinned = pinned).is_some()
    }

    /// Drops the cache's reference; false if it was not resident.
    pub(crate) fn unload(&self, id: &str) -> bool {
        let mut state = self.lock();
        match state.slots.remove(id) {
            Some(slot) => {
                state.bytes -= slot.bytes;
                true
            }
            None => false,
        }
    }

    /// Whether `id` is resident, pinned, and how many hold it.
    pub(crate) fn residency(&self, id: &str) -> Residency {
        let state = self.lock();
        state
            .slots
            .get(id)
            .map_or_else(Residency::default, |slot| Residency {
                resident: true,
                pinned: slot.pinned,
                in_use: slot.users(),
            })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The resident adapter, marked as just used.
    fn touch(&mut self, id: &str) -> Option<Arc<LoraAdapter>> {
        let now = self.tick();
        let slot = self.slots.get_mut(id)?;
        slot.last_used = now;
        Some(Arc::clone(&slot.adapter))
    }

    /// Evicts least recently used, unpinned, unused adapters until `bytes`
    /// more fit in `budget`. Returns how many were evicted.
    fn make_room(&mut self, bytes: usize, budget: usize) -> Result<u64> {
        if bytes > budget {
            return Err(ApiError::InvalidAdapter(format!(
                "the adapter needs {bytes} bytes in memory, more than the whole adapter cache \
                 ({budget} bytes)"
            )));
        }
        let mut evicted = 0;
        while self.bytes + bytes > budget {
            let victim = self
                .slots
                .iter()
                .filter(|(_, s)| !s.pinned && s.users() == 0)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| id.clone());
            let Some(victim) = victim else {
                return Err(ApiError::AdapterCacheFull {
                    needed: bytes,
                    budget,
                });
            };
            if let Some(slot) = self.slots.remove(&victim) {
                self.bytes -= slot.bytes;
                evicted += 1;
                tracing::debug!(adapter = %victim, bytes = slot.bytes, "adapter evicted");
            }
        }
        Ok(evicted)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use credence_model::lora::random_adapter;
    use credence_model::testing::tiny_config;
    use credence_model::weights::LayerTensor;

    use super::*;

    fn adapter(seed: u64) -> LoraAdapter {
        random_adapter(&tiny_config(32), 2, &[LayerTensor::Q], seed)
    }

    fn size() -> usize {
        adapter(0).resident_bytes()
    }

    async fn load(cache: &AdapterCache, id: &str) -> Result<Arc<LoraAdapter>> {
        let seed = id.len() as u64;
        cache
            .get_or_load(id, || async move { Ok(adapter(seed)) })
            .await
    }

    #[tokio::test]
    async fn evicts_least_recently_used_within_budget() {
        let cache = AdapterCache::new(2 * size());
        load(&cache, "a").await.unwrap();
        load(&cache, "bb").await.unwrap();
        load(&cache, "a").await.unwrap(); // "bb" is now the older one
        load(&cache, "ccc").await.unwrap();
        assert!(cache.residency("a").resident);
        assert!(!cache.residency("bb").resident);
        assert!(cache.resident_bytes() <= cache.budget());
        assert_eq!(cache.stats().evictions.load(Ordering::Relaxed), 1);
        assert_eq!(cache.stats().hits.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn never_evicts_what_a_sequence_holds_or_what_is_pinned() {
        let cache = AdapterCache::new(size());
        let held = load(&cache, "a").await.unwrap();
        let err = load(&cache, "bb").await.unwrap_err();
        assert!(matches!(err, ApiError::AdapterCacheFull { .. }), "{err}");
        assert_eq!(cache.residency("a").in_use, 1);
        drop(held);
        assert!(cache.set_pinned("a", true));
        assert!(load(&cache, "bb").await.is_err());
        cache.set_pinned("a", false);
        load(&cache, "bb").await.unwrap();
        assert!(!cache.residency("a").resident);
    }

    #[tokio::test]
    async fn concurrent_cold_requests_share_one_load() {
        let cache = Arc::new(AdapterCache::new(4 * size()));
        let loads = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, loads) = (Arc::clone(&cache), Arc::clone(&loads));
                tokio::spawn(async move {
                    cache
                        .get_or_load("x", || async move {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            Ok(adapter(1))
                        })
                        .await
                })
            })
            .collect();
        let mut got = Vec::new();
        for task in tasks {
            got.push(task.await.unwrap().unwrap());
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(got.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
    }

    #[tokio::test]
    async fn failed_loads_are_reported_and_retried() {
        let cache = AdapterCache::new(size());
        let err = cache
            .get_or_load("x", || async {
                Err(ApiError::Internal("disk gone".into()))
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("disk gone"));
        load(&cache, "x").await.unwrap();
        assert_eq!(cache.stats().load_failures.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn too_big_for_the_whole_budget_is_invalid() {
        let cache = AdapterCache::new(size() - 1);
        let err = load(&cache, "a").await.unwrap_err();
        assert!(matches!(err, ApiError::InvalidAdapter(_)), "{err}");
    }

    #[tokio::test]
    async fn unload_frees_bytes() {
        let cache = AdapterCache::new(size());
        load(&cache, "a").await.unwrap();
        assert!(cache.unload("a"));
        assert_eq!(cache.resident_bytes(), 0);
        assert!(!cache.unload("a"));
    }
}
