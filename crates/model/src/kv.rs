//! Per-sequence key/value cache.
//!
//! Each layer keeps the keys and values of every position seen so far, one
//! row of `kv_dim` floats per position, so attention reads one contiguous
//! slice per head and position. Storage grows with the sequence up to the
//! capacity fixed at creation (never past the model's context window).

use crate::config::LlamaConfig;
use crate::error::{Error, Result};

/// The cached keys and values of one sequence.
#[derive(Clone, Debug)]
pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    kv_dim: usize,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// A cache for up to `capacity_tokens` positions (clamped to the context window).
    pub fn new(config: &LlamaConfig, capacity_tokens: usize) -> Self {
        Self {
            keys: vec![Vec::new(); config.n_layers],
            values: vec![Vec::new(); config.n_layers],
            kv_dim: config.kv_dim(),
            len: 0,
            capacity: capacity_tokens.min(config.context_length),
        }
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

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|v| v.capacity() * 4)
            .sum()
    }

    /// Forgets positions from `len` on (rolls back, or reuses a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        let keep = self.len * self.kv_dim;
        self.keys
            .iter_mut()
            .chain(self.values.iter_mut())
            .for_each(|v| v.truncate(keep));
    }

    /// Whether this cache was made for a model of this shape.
    pub(crate) fn fits(&self, config: &LlamaConfig) -> bool {
        self.keys.len() == config.n_layers && self.kv_dim == config.kv_dim()
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

    /// Appends rows for `layer` (positions `len..len + rows`), not yet committed.
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        self.keys[layer].extend_from_slice(k);
        self.values[layer].extend_from_slice(v);
    }

    /// Keys and values of `layer` for positions `0..upto`.
    pub(crate) fn layer(&self, layer: usize, upto: usize) -> (&[f32], &[f32]) {
        let n = upto * self.kv_dim;
        (&self.keys[layer][..n], &self.values[layer][..n])
    }

    /// Marks `n` appended positions as part of the sequence.
    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
    }
}
