//! A reader that hashes, counts and stores what passes through it.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use credence_store::{BlobId, BlobWriter};
use sha2::{Digest, Sha256};

use crate::hash::Hash32;

/// Wraps an upload: every byte the parser reads is also hashed (SHA-256), counted
/// against the file-size limit, and appended to a blob, in one pass.
pub struct Tee<R> {
    inner: R,
    hasher: Sha256,
    blob: BlobWriter,
    bytes: u64,
    counter: Arc<AtomicU64>,
    limit: u64,
    exceeded: bool,
}

impl<R: Read> Tee<R> {
    /// Tees `inner` into `blob`, failing reads once more than `limit` bytes came through.
    pub fn new(inner: R, blob: BlobWriter, limit: u64) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            blob,
            bytes: 0,
            counter: Arc::new(AtomicU64::new(0)),
            limit,
            exceeded: false,
        }
    }

    /// A shared count of the bytes read so far, for progress reports.
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.counter)
    }

    /// Whether the size limit stopped the read.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// Reads whatever the parser left unread (so the hash covers the whole file),
    /// then finishes the blob. Returns the file's SHA-256, its blob and its size.
    pub fn finish(mut self) -> io::Result<(Hash32, BlobId, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let hash = Hash32(self.hasher.finalize().into());
        let blob = self.blob.finish().map_err(io::Error::other)?;
        Ok((hash, blob, self.bytes))
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        self.counter.store(self.bytes, Ordering::Relaxed);
        if self.bytes > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("file size limit exceeded"));
        }
        self.hasher.update(&buf[..n]);
        self.blob.write(&buf[..n]).map_err(io::Error::other)?;
        Ok(n)
    }
}
