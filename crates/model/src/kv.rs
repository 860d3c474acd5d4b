//! Paged key/value cache.
//!
//! A sequence's keys and values live in fixed-size blocks of
//! [`BLOCK_TOKENS`] positions; one block holds those positions for every
//! layer (per layer, `BLOCK_TOKENS` rows of keys then as many rows of values,
//! each row `kv_dim` floats). Blocks come from a [`KvPool`] shared by many
//! sequences under a byte budget: a sequence grows one block at a time, an
//! allocation past the budget fails with [`Error::KvExhausted`] instead of
//! growing memory without bound, and blocks go back to the pool when a cache
//! is truncated or dropped. Attention reads the blocks in place through the
//! cache's block table, so a step never copies the history.
//!
//! Blocks are reference-counted: cloning a cache (forking a sequence, or
//! reusing a cached prompt prefix) shares every block, and a shared block is
//! copied only when one side writes into it. Full blocks are never written
//! again, so sharing a common prefix costs no copy at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::config::LlamaConfig;
use crate::error::{Error, Result};
use crate::ops::KvBlock;

/// Positions per block. Small enough that a sequence wastes little of its
/// last block, large enough that a block table stays short and attention
/// walks long contiguous runs.
pub const BLOCK_TOKENS: usize = 16;

/// The shape of the blocks a pool hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    n_layers: usize,
    kv_dim: usize,
    /// The model's context window: no cache may grow past it.
    context: usize,
}

impl Geometry {
    fn of(config: &LlamaConfig) -> Self {
        Self {
            n_layers: config.n_layers,
            kv_dim: config.kv_dim(),
            context: config.context_length,
        }
    }

    /// Floats of one layer's keys (or values) in a block.
    fn half(&self) -> usize {
        BLOCK_TOKENS * self.kv_dim
    }

    fn block_floats(&self) -> usize {
        self.n_layers * 2 * self.half()
    }

    fn block_bytes(&self) -> usize {
        self.block_floats() * std::mem::size_of::<f32>()
    }
}

/// State shared by a pool's handles and its blocks.
#[derive(Debug)]
struct PoolShared {
    geometry: Geometry,
    /// Most blocks live at once (`usize::MAX` for no budget).
    max_blocks: usize,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Blocks currently owned by caches.
    used: usize,
    /// Storage of released blocks, reused before allocating: blocks are
    /// large and allocator round-trips would otherwise hit `mmap` each time.
    spare: Vec<Box<[f32]>>,
}

impl PoolShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // The state is two plain counters and a list; a panic while holding
        // the lock cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `n` fresh blocks, or none at all when the budget cannot cover them.
    fn allocate(self: &Arc<Self>, n: usize) -> Result<Vec<Arc<Block>>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut spare = {
            let mut state = self.lock();
            if n > self.max_blocks - state.used {
                let bytes = self.geometry.block_bytes();
                return Err(Error::KvExhausted {
                    needed: n * bytes,
                    free: (self.max_blocks - state.used) * bytes,
                    budget: self.max_blocks.saturating_mul(bytes),
                });
            }
            state.used += n;
            let keep = state.spare.len().saturating_sub(n);
            state.spare.split_off(keep)
        };
        // Fresh storage is zeroed (calloc: pages are mapped on first write).
        let floats = self.geometry.block_floats();
        spare.resize_with(n, || vec![0f32; floats].into_boxed_slice());
        Ok(spare
            .into_iter()
            .map(|data| {
                Arc::new(Block {
                    data,
                    pool: Arc::clone(self),
                })
            })
            .collect())
    }

    fn release(&self, data: Box<[f32]>) {
        let mut state = self.lock();
        state.used -= 1;
        state.spare.push(data);
    }
}

/// One block: `BLOCK_TOKENS` positions of keys and values for every layer.
/// Dropping it returns its storage to the pool.
#[derive(Debug)]
struct Block {
    data: Box<[f32]>,
    pool: Arc<PoolShared>,
}

impl Drop for Block {
    fn drop(&mut self) {
        self.pool.release(std::mem::take(&mut self.data));
    }
}

/// A shared supply of KV blocks for one model, under a byte budget.
/// Cloning the handle shares the pool.
#[derive(Clone, Debug)]
pub struct KvPool {
    shared: Arc<PoolShared>,
}

/// A pool's occupancy, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvPoolStats {
    /// Bytes of one block.
    pub block_bytes: usize,
    /// The budget (`usize::MAX` when unbounded).
    pub budget_bytes: usize,
    /// Bytes of blocks held by caches.
    pub used_bytes: usize,
    /// Bytes that may still be handed out (budget minus used).
    pub free_bytes: usize,
    /// Bytes of released blocks kept for reuse (part of the free bytes, but
    /// still allocated from the operating system).
    pub spare_bytes: usize,
}

impl KvPool {
    /// A pool of at most `budget_bytes` of blocks for a model of this shape
    /// (rounded down to whole blocks).
    pub fn new(config: &LlamaConfig, budget_bytes: usize) -> Self {
        let geometry = Geometry::of(config);
        let max_blocks = budget_bytes / geometry.block_bytes().max(1);
        Self::with_blocks(geometry, max_blocks)
    }

    /// A pool without a budget: allocation fails only when the operating
    /// system's memory does.
    pub fn unbounded(config: &LlamaConfig) -> Self {
        Self::with_blocks(Geometry::of(config), usize::MAX)
    }

    fn with_blocks(geometry: Geometry, max_blocks: usize) -> Self {
        Self {
            shared: Arc::new(PoolShared {
                geometry,
                max_blocks,
                state: Mutex::new(PoolState::default()),
            }),
        }
    }

    /// Bytes of one block ([`BLOCK_TOKENS`] positions of every layer).
    pub fn block_bytes(&self) -> usize {
        self.shared.geometry.block_bytes()
    }

    /// Current occupancy.
    pub fn stats(&self) -> KvPoolStats {
        let bytes = self.block_bytes();
        let state = self.shared.lock();
        KvPoolStats {
            block_bytes: bytes,
            budget_bytes: self.shared.max_blocks.saturating_mul(bytes),
            used_bytes: state.used * bytes,
            free_bytes: (self.shared.max_blocks - state.used).saturating_mul(bytes),
            spare_bytes: state.spare.len() * bytes,
        }
    }

    /// Bytes of blocks held by caches.
    pub fn used_bytes(&self) -> usize {
        self.stats().used_bytes
    }

    /// Bytes that may still be handed out.
    pub fn free_bytes(&self) -> usize {
        self.stats().free_bytes
    }

    /// Returns the storage of released blocks to the operating system (it is
    /// otherwise kept for reuse).
    pub fn release_spare(&self) {
        let spare = std::mem::take(&mut self.shared.lock().spare);
        drop(spare);
    }

    /// Whether both handles share one pool.
    pub fn same_pool(&self, other: &KvPool) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// The cached keys and values of one sequence: a table of blocks drawn from
/// a [`KvPool`].
///
/// `Clone` forks the sequence: both caches share every block, and a shared
/// block is copied only when one of them writes into it.
#[derive(Clone)]
pub struct KvCache {
    pool: KvPool,
    blocks: Vec<Arc<Block>>,
    len: usize,
    capacity: usize,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl KvCache {
    /// A cache for up to `capacity_tokens` positions (clamped to the context
    /// window) with its own pool and no budget.
    pub fn new(config: &LlamaConfig, capacity_tokens: usize) -> Self {
        Self::in_pool(&KvPool::unbounded(config), capacity_tokens)
    }

    /// A cache for up to `capacity_tokens` positions (clamped to the context
    /// window) whose blocks come from `pool`. Nothing is allocated yet.
    pub fn in_pool(pool: &KvPool, capacity_tokens: usize) -> Self {
        Self {
            pool: pool.clone(),
            blocks: Vec::new(),
            len: 0,
            capacity: capacity_tokens.min(pool.shared.geometry.context),
        }
    }

    /// The pool this cache draws from.
    pub fn pool(&self) -> &KvPool {
        &self.pool
    }

    /// Positions cached so far (the next token's position).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum positions this cache accepts.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions still free.
    pub fn remaining(&self) -> usize {
        self.capacity - self.len
    }

    /// Bytes of the blocks this cache refers to (shared blocks included).
    pub fn bytes(&self) -> usize {
        self.blocks.len() * self.pool.block_bytes()
    }

    /// Blocks in the block table.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Forgets positions from `len` on (rolls back, or keeps a shared
    /// prefix) and returns blocks no longer needed to the pool.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        self.blocks.truncate(self.len.div_ceil(BLOCK_TOKENS));
    }

    /// Makes room for `n` more positions: allocates missing blocks and gives
    /// this cache its own copy of a shared block it will write into. All or
    /// nothing: on failure the cache and the pool are unchanged.
    ///
    /// # Errors
    /// [`Error::ContextOverflow`] past the capacity, [`Error::KvExhausted`]
    /// when the pool's budget cannot cover the blocks.
    pub fn reserve(&mut self, n: usize) -> Result<()> {
        self.check_room(n)?;
        let needed = (self.len + n).div_ceil(BLOCK_TOKENS);
        let missing = needed.saturating_sub(self.blocks.len());
        // Blocks that will be written but are shared must be copied first.
        let first = self.len / BLOCK_TOKENS;
        let shared: Vec<usize> = (first..needed.min(self.blocks.len()))
            .filter(|&b| Arc::strong_count(&self.blocks[b]) > 1)
            .collect();
        let mut fresh = self.pool.shared.allocate(missing + shared.len())?;
        for b in shared {
            let mut copy = fresh.pop().ok_or_else(|| unreachable_block("copy"))?;
            let unique = Arc::get_mut(&mut copy).ok_or_else(|| unreachable_block("copy"))?;
            unique.data.copy_from_slice(&self.blocks[b].data);
            self.blocks[b] = copy;
        }
        self.blocks.extend(fresh);
        Ok(())
    }

    /// Whether this cache was made for a model of this shape.
    pub(crate) fn fits(&self, config: &LlamaConfig) -> bool {
        let g = self.pool.shared.geometry;
        g.n_layers == config.n_layers && g.kv_dim == config.kv_dim()
    }

    /// Checks that `n` more positions fit.
    pub(crate) fn check_room(&self, n: usize) -> Result<()> {
        if n > self.remaining() {
            return Err(Error::ContextOverflow {
                tokens: self.len + n,
                context: self.capacity,
            });
        }
        Ok(())
    }

    /// Writes rows for `layer` at positions `len..len + rows` (not yet
    /// committed); the positions must have been [reserved](Self::reserve).
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) -> Result<()> {
        let g = self.pool.shared.geometry;
        let (dim, half) = (g.kv_dim, g.half());
        let layer_start = layer * 2 * half;
        let rows = k.len() / dim.max(1);
        let mut done = 0;
        while done < rows {
            let pos = self.len + done;
            let (b, slot) = (pos / BLOCK_TOKENS, pos % BLOCK_TOKENS);
            let n = (BLOCK_TOKENS - slot).min(rows - done);
            let block = self
                .blocks
                .get_mut(b)
                .and_then(Arc::get_mut)
                .ok_or_else(|| unreachable_block("write"))?;
            let at = layer_start + slot * dim;
            let src = done * dim..(done + n) * dim;
            block.data[at..at + n * dim].copy_from_slice(&k[src.clone()]);
            block.data[half + at..half + at + n * dim].copy_from_slice(&v[src]);
            done += n;
        }
        Ok(())
    }

    /// The block table of `layer`: every reserved block's keys and values,
    /// [`BLOCK_TOKENS`] rows of `kv_dim` floats each.
    pub(crate) fn layer_blocks(&self, layer: usize) -> Vec<KvBlock<'_>> {
        let half = self.pool.shared.geometry.half();
        let start = layer * 2 * half;
        self.blocks
            .iter()
            .map(|b| KvBlock {
                keys: &b.data[start..start + half],
                values: &b.data[start + half..start + 2 * half],
            })
            .collect()
    }

    /// Marks `n` appended positions as part of the sequence.
    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
    }
}

/// A block the cache should own exclusively does not exist or is shared:
/// `reserve` was skipped. A bug in the caller, reported rather than panicking.
fn unreachable_block(what: &str) -> Error {
    Error::Shape(format!(
        "KV cache {what} into a block that was not reserved"
    ))
}

/// Identity of a block's content: a SHA-256 chain over the adapter key and
/// every token up to the end of the block. Cryptographic, so one client
/// cannot craft a prompt whose blocks collide with another client's.
type ChainHash = [u8; 32];

/// Full KV blocks of earlier prompts, keyed by the adapters they were
/// computed under and the tokens they hold, so a new sequence that starts
/// with the same tokens under the same adapters adopts them instead of
/// recomputing (a shared system prompt, a multi-turn chat).
///
/// Only full blocks are recorded, and a cache that writes into a recorded
/// block copies it first, so recorded blocks never change. They count
/// against their pool's budget while recorded: a caller whose allocation
/// fails with [`Error::KvExhausted`] can [evict](Self::evict) and retry.
#[derive(Debug)]
pub struct PrefixCache {
    pool: KvPool,
    entries: HashMap<ChainHash, PrefixEntry>,
    max_blocks: usize,
    clock: u64,
}

#[derive(Debug)]
struct PrefixEntry {
    /// Chain hash of everything before this block (verified on lookup).
    parent: ChainHash,
    tokens: [u32; BLOCK_TOKENS],
    block: Arc<Block>,
    /// Position of the block in its sequence; deeper blocks go first on
    /// eviction, so a chain is trimmed from its end.
    depth: usize,
    last_used: u64,
}

impl PrefixCache {
    /// A cache of at most `max_blocks` blocks from `pool`.
    pub fn new(pool: &KvPool, max_blocks: usize) -> Self {
        Self {
            pool: pool.clone(),
            entries: HashMap::new(),
            max_blocks,
            clock: 0,
        }
    }

    /// Blocks recorded.
    pub fn blocks(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of the blocks recorded (some may also be in use by caches).
    pub fn bytes(&self) -> usize {
        self.entries.len() * self.pool.block_bytes()
    }

    fn root(key: &str) -> ChainHash {
        Sha256::new()
            .chain_update(b"credence-kv-prefix-v1\0")
            .chain_update((key.len() as u64).to_le_bytes())
            .chain_update(key.as_bytes())
            .finalize()
            .into()
    }

    fn next(parent: &ChainHash, tokens: &[u32]) -> ChainHash {
        let mut h = Sha256::new().chain_update(parent);
        for t in tokens {
            h.update(t.to_le_bytes());
        }
        h.finalize().into()
    }

    /// Records the full blocks of `cache`, which holds the first
    /// `cache.len()` of `tokens` computed under the adapter set `key` (for
    /// example the adapters' content ids and weights; `""` for the base
    /// model). Caches from another pool are ignored.
    pub fn insert(&mut self, key: &str, tokens: &[u32], cache: &KvCache) {
        if !cache.pool.same_pool(&self.pool) {
            return;
        }
        self.clock += 1;
        let full = cache.len().min(tokens.len()) / BLOCK_TOKENS;
        let mut hash = Self::root(key);
        for (depth, chunk) in tokens.chunks_exact(BLOCK_TOKENS).take(full).enumerate() {
            let Ok(block_tokens) = <[u32; BLOCK_TOKENS]>::try_from(chunk) else {
                break;
            };
            let parent = hash;
            hash = Self::next(&parent, chunk);
            let clock = self.clock;
            let entry = self.entries.entry(hash).or_insert_with(|| PrefixEntry {
                parent,
                tokens: block_tokens,
                block: Arc::clone(&cache.blocks[depth]),
                depth,
                last_used: clock,
            });
            entry.last_used = clock;
        }
        self.trim();
    }

    /// Evicts idle blocks beyond the cache's size. Blocks still used by a
    /// cache cannot go, so the size may be exceeded until they are released:
    /// call this again after dropping caches. Returns how many were freed.
    pub fn trim(&mut self) -> usize {
        let excess = self.entries.len().saturating_sub(self.max_blocks);
        self.evict(excess)
    }

    /// Starts the empty `cache` with the longest recorded prefix of `tokens`
    /// under `key`, always leaving at least one token to compute (its
    /// logits are needed); returns the positions reused. The blocks are
    /// shared, not copied. Nothing is reused when the cache is not empty,
    /// comes from another pool, or is too small.
    pub fn lookup(&mut self, key: &str, tokens: &[u32], cache: &mut KvCache) -> usize {
        if !cache.is_empty() || !cache.pool.same_pool(&self.pool) {
            return 0;
        }
        self.clock += 1;
        let usable = tokens.len().saturating_sub(1).min(cache.capacity) / BLOCK_TOKENS;
        let mut hash = Self::root(key);
        let mut found = Vec::new();
        for chunk in tokens.chunks_exact(BLOCK_TOKENS).take(usable) {
            let parent = hash;
            hash = Self::next(&parent, chunk);
            match self.entries.get_mut(&hash) {
                Some(e) if e.parent == parent && e.tokens[..] == *chunk => {
                    e.last_used = self.clock;
                    found.push(Arc::clone(&e.block));
                }
                _ => break,
            }
        }
        cache.blocks = found;
        cache.len = cache.blocks.len() * BLOCK_TOKENS;
        cache.len
    }

    /// Forgets up to `blocks` recorded blocks that no cache is using, least
    /// recently used (and deepest) first, returning them to the pool;
    /// returns how many were freed.
    pub fn evict(&mut self, blocks: usize) -> usize {
        if blocks == 0 {
            return 0;
        }
        let mut idle: Vec<(u64, std::cmp::Reverse<usize>, ChainHash)> = self
            .entries
            .iter()
            .filter(|(_, e)| Arc::strong_count(&e.block) == 1)
            .map(|(h, e)| (e.last_used, std::cmp::Reverse(e.depth), *h))
            .collect();
        idle.sort_unstable();
        let n = idle.len().min(blocks);
        for (_, _, h) in &idle[..n] {
            self.entries.remove(h);
        }
        n
    }

    /// Forgets every recorded block (those in use stay with their caches).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testing::tiny_config;

    fn config() -> LlamaConfig {
        tiny_config(32)
    }

    /// Appends `n` positions whose every float encodes (position, layer, k/v).
    fn push(cache: &mut KvCache, n: usize) -> Result<()> {
        cache.reserve(n)?;
        let c = config();
        let d = c.kv_dim();
        for layer in 0..c.n_layers {
            let val = |p: usize, kv: usize| (p * 100 + layer * 10 + kv) as f32;
            let k: Vec<f32> = (0..n * d).map(|i| val(cache.len() + i / d, 0)).collect();
            let v: Vec<f32> = (0..n * d).map(|i| val(cache.len() + i / d, 1)).collect();
            cache.append(layer, &k, &v)?;
        }
        cache.commit(n);
        Ok(())
    }

    /// Every committed position reads back what `push` wrote.
    fn check_contents(cache: &KvCache) {
        let c = config();
        let d = c.kv_dim();
        for layer in 0..c.n_layers {
            let blocks = cache.layer_blocks(layer);
            for p in 0..cache.len() {
                let b = &blocks[p / BLOCK_TOKENS];
                let row = (p % BLOCK_TOKENS) * d;
                let want = (p * 100 + layer * 10) as f32;
                assert_eq!(b.keys[row], want, "key at {p}");
                assert_eq!(b.values[row + d - 1], want + 1.0, "value at {p}");
            }
        }
    }

    #[test]
    fn blocks_return_to_the_pool_on_truncate_and_drop() {
        let pool = KvPool::new(&config(), 1 << 20);
        let bytes = pool.block_bytes();
        let mut a = KvCache::in_pool(&pool, 100);
        push(&mut a, 40).unwrap();
        assert_eq!(a.blocks(), 3);
        assert_eq!(pool.used_bytes(), 3 * bytes);
        a.truncate(16);
        assert_eq!((a.len(), a.blocks()), (16, 1));
        assert_eq!(pool.used_bytes(), bytes);
        check_contents(&a);
        drop(a);
        let stats = pool.stats();
        assert_eq!(stats.used_bytes, 0);
        assert_eq!(stats.spare_bytes, 3 * bytes);
        pool.release_spare();
        assert_eq!(pool.stats().spare_bytes, 0);
    }

    #[test]
    fn the_budget_is_enforced_without_side_effects() {
        let c = config();
        let one = KvPool::unbounded(&c).block_bytes();
        let pool = KvPool::new(&c, 2 * one + one / 2);
        assert_eq!(pool.stats().budget_bytes, 2 * one);
        let mut a = KvCache::in_pool(&pool, 100);
        push(&mut a, 20).unwrap();
        let e = push(&mut a, 20).unwrap_err();
        assert!(
            matches!(e, Error::KvExhausted { needed, free, .. } if needed == one && free == 0),
            "{e}"
        );
        assert!(e.to_string().contains("KV cache memory exhausted"), "{e}");
        assert_eq!((a.len(), a.blocks()), (20, 2));
        push(&mut a, 12).unwrap(); // still fits the second block
        let mut b = KvCache::in_pool(&pool, 100);
        assert!(matches!(b.reserve(1), Err(Error::KvExhausted { .. })));
        drop(a);
        push(&mut b, 32).unwrap();
        check_contents(&b);
    }

    #[test]
    fn forks_share_full_blocks_and_copy_on_write() {
        let pool = KvPool::new(&config(), 1 << 20);
        let mut a = KvCache::in_pool(&pool, 100);
        push(&mut a, 20).unwrap();
        let mut b = a.clone();
        assert_eq!(pool.stats().used_bytes, 2 * pool.block_bytes());
        // Writing position 20 lands in the shared second block: b copies it.
        push(&mut b, 5).unwrap();
        assert_eq!(pool.stats().used_bytes, 3 * pool.block_bytes());
        push(&mut a, 1).unwrap();
        check_contents(&a);
        check_contents(&b);
        assert!(Arc::ptr_eq(&a.blocks[0], &b.blocks[0]));
        assert!(!Arc::ptr_eq(&a.blocks[1], &b.blocks[1]));
    }

    #[test]
    fn capacity_is_checked_before_allocating() {
        let pool = KvPool::new(&config(), 1 << 20);
        let mut a = KvCache::in_pool(&pool, 10);
        assert!(matches!(a.reserve(11), Err(Error::ContextOverflow { .. })));
        assert_eq!(pool.used_bytes(), 0);
        let huge = KvCache::in_pool(&pool, usize::MAX);
        assert_eq!(huge.capacity(), config().context_length);
    }

    #[test]
    fn prefixes_are_shared_by_key_and_tokens() {
        let pool = KvPool::new(&config(), 1 << 20);
        let bytes = pool.block_bytes();
        let mut prefixes = PrefixCache::new(&pool, 8);
        let tokens: Vec<u32> = (0..40).collect();
        let mut first = KvCache::in_pool(&pool, 100);
        push(&mut first, 40).unwrap();
        prefixes.insert("adapter-a", &tokens, &first);
        assert_eq!(prefixes.blocks(), 2, "only full blocks are recorded");
        assert_eq!(pool.used_bytes(), 3 * bytes, "recording copies nothing");

        let mut again = KvCache::in_pool(&pool, 100);
        assert_eq!(prefixes.lookup("adapter-a", &tokens, &mut again), 32);
        check_contents(&again);
        // A prompt of exactly two blocks reuses one: its last token is computed.
        let mut short = KvCache::in_pool(&pool, 100);
        assert_eq!(prefixes.lookup("adapter-a", &tokens[..32], &mut short), 16);
        // Another adapter set or a different second block shares less.
        let mut other = KvCache::in_pool(&pool, 100);
        assert_eq!(prefixes.lookup("adapter-b", &tokens, &mut other), 0);
        let mut changed = tokens.clone();
        changed[20] = 999;
        assert_eq!(prefixes.lookup("adapter-a", &changed, &mut other), 16);
        assert_eq!(pool.used_bytes(), 3 * bytes);

        // Writing after an adopted prefix copies nothing: the next block is new.
        push(&mut again, 3).unwrap();
        assert_eq!(pool.used_bytes(), 4 * bytes);
        check_contents(&again);

        // Blocks in use are never evicted; idle ones are.
        assert_eq!(prefixes.evict(10), 0);
        drop((first, again, short, other));
        assert_eq!(
            pool.used_bytes(),
            2 * bytes,
            "the prefix cache still holds its blocks"
        );
        assert_eq!(prefixes.evict(1), 1);
        assert_eq!(prefixes.evict(10), 1);
        assert_eq!(pool.used_bytes(), 0);
    }

    #[test]
    fn the_prefix_cache_respects_its_size() {
        let pool = KvPool::new(&config(), 1 << 20);
        let mut prefixes = PrefixCache::new(&pool, 2);
        for salt in 0..3u32 {
            let tokens: Vec<u32> = (0..16).map(|t| t + 100 * salt).collect();
            let mut c = KvCache::in_pool(&pool, 100);
            push(&mut c, 16).unwrap();
            prefixes.insert("", &tokens, &c);
        }
        assert_eq!(prefixes.blocks(), 2);
        assert_eq!(pool.used_bytes(), 2 * pool.block_bytes());
        // Blocks in use may exceed the size until they are released.
        let tokens: Vec<u32> = (0..48).map(|t| t + 1000).collect();
        let mut busy = KvCache::in_pool(&pool, 100);
        push(&mut busy, 48).unwrap();
        prefixes.insert("", &tokens, &busy);
        assert_eq!(prefixes.blocks(), 3, "only idle blocks were evicted");
        drop(busy);
        assert_eq!(prefixes.trim(), 1);
        assert_eq!(prefixes.blocks(), 2);
        prefixes.clear();
        assert_eq!(pool.used_bytes(), 0);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(usize, usize),
        Truncate(usize, usize),
        Fork(usize),
        Drop(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4usize, 1..40usize).prop_map(|(c, n)| Op::Push(c, n)),
            (0..4usize, 0..80usize).prop_map(|(c, n)| Op::Truncate(c, n)),
            (0..4usize).prop_map(Op::Fork),
            (0..4usize).prop_map(Op::Drop),
        ]
    }

    /// Distinct blocks referenced by any cache.
    fn live_blocks(caches: &[KvCache]) -> usize {
        let mut ptrs: Vec<*const Block> = caches
            .iter()
            .flat_map(|c| c.blocks.iter().map(Arc::as_ptr))
            .collect();
        ptrs.sort();
        ptrs.dedup();
        ptrs.len()
    }

    proptest! {
        #[test]
        fn block_accounting_matches_the_caches(ops in proptest::collection::vec(op(), 1..40)) {
            let pool = KvPool::new(&config(), 12 * KvPool::unbounded(&config()).block_bytes());
            let bytes = pool.block_bytes();
            let mut caches: Vec<KvCache> = Vec::new();
            for op in ops {
                match op {
                    Op::Push(i, n) => {
                        if caches.is_empty() {
                            caches.push(KvCache::in_pool(&pool, 100));
                        }
                        let i = i % caches.len();
                        let before = (caches[i].len(), caches[i].blocks(), pool.used_bytes());
                        match push(&mut caches[i], n) {
                            Ok(()) => prop_assert_eq!(caches[i].len(), before.0 + n),
                            Err(Error::KvExhausted { .. } | Error::ContextOverflow { .. }) => {
                                let c = &caches[i];
                                prop_assert_eq!((c.len(), c.blocks(), pool.used_bytes()), before);
                            }
                            Err(e) => prop_assert!(false, "unexpected error {}", e),
                        }
                    }
                    Op::Truncate(i, n) if !caches.is_empty() => {
                        let i = i % caches.len();
                        caches[i].truncate(n);
                    }
                    Op::Fork(i) if !caches.is_empty() => {
                        let fork = caches[i % caches.len()].clone();
                        caches.push(fork);
                    }
                    Op::Drop(i) if !caches.is_empty() => {
                        caches.remove(i % caches.len());
                    }
                    _ => {}
                }
                for c in &caches {
                    prop_assert_eq!(c.blocks(), c.len().div_ceil(BLOCK_TOKENS));
                    check_contents(c);
                }
                let stats = pool.stats();
                prop_assert_eq!(stats.used_bytes, live_blocks(&caches) * bytes);
                prop_assert!(stats.used_bytes <= stats.budget_bytes);
                prop_assert_eq!(stats.used_bytes + stats.free_bytes, stats.budget_bytes);
            }
            caches.clear();
            prop_assert_eq!(pool.used_bytes(), 0);
        }
    }
}
