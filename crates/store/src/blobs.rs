//! Content-addressed blobs through `object_store`.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The name of a blob: the SHA-256 of its bytes, as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobId(pub [u8; 32]);

impl BlobId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Parses 64 lowercase hex digits.
    pub fn parse(text: &str) -> Result<Self> {
        let mut out = [0u8; 32];
        let lower = text.bytes().all(|b| !b.is_ascii_uppercase());
        match hex::decode_to_slice(text, &mut out) {
            Ok(()) if lower => Ok(Self(out)),
            _ => Err(Error::InvalidBlobId(text.to_owned())),
        }
    }

    /// Where the blob lives in the object store: fanned out by the first byte
    /// so no directory grows unboundedly.
    fn location(&self) -> ObjectPath {
        let hex = self.to_string();
        ObjectPath::from(format!("sha256/{}/{hex}", &hex[..2]))
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Immutable, content-addressed byte objects.
///
/// Methods block. `object_store` is async, so each call is driven to completion
/// here: on the current tokio runtime's handle when there is one (the caller
/// must then be on a blocking thread, e.g. inside `spawn_blocking`, as tokio
/// forbids blocking a worker), otherwise inline. The local backend does plain
/// file I/O either way.
#[derive(Debug, Clone)]
pub struct Blobs {
    inner: Arc<dyn ObjectStore>,
}

/// Parts of a streamed upload; the local backend buffers nothing between them.
const PART_SIZE: usize = 8 << 20;

/// Makes staging names unique within a process (the pid separates processes).
static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Blobs {
    /// Blobs in the local directory `dir`, created if missing.
    pub fn local(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(dir)?;
        Ok(Self::new(Arc::new(store)))
    }

    /// Blobs in any object store (S3, GCS, Azure, memory, …).
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }

    /// Stores `bytes` and returns their id. Idempotent.
    pub fn put(&self, bytes: Vec<u8>) -> Result<BlobId> {
        let id = BlobId::of(&bytes);
        // The local backend writes to a temporary file and renames it, so a
        // crash never leaves a truncated object under its final name.
        block_on(self.inner.put(&id.location(), PutPayload::from(bytes)))?;
        Ok(id)
    }

    /// Starts a streamed upload whose id is known only when it is finished.
    pub fn writer(&self) -> Result<BlobWriter> {
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let staging = ObjectPath::from(format!("staging/{}-{n}", std::process::id()));
        let upload = block_on(self.inner.put_multipart(&staging))?;
        Ok(BlobWriter {
            store: Arc::clone(&self.inner),
            staging,
            upload: Some(upload),
            hasher: Sha256::new(),
            buffer: Vec::with_capacity(PART_SIZE),
            len: 0,
        })
    }

    /// Reads a whole blob and checks it against its id.
    pub fn get(&self, id: &BlobId) -> Result<Vec<u8>> {
        let result = block_on(self.inner.get(&id.location())).map_err(|e| match e {
            object_store::Error::NotFound { .. } => Error::BlobNotFound(id.to_string()),
            other => Error::Blob(other),
        })?;
        let bytes = block_on(result.bytes())?.to_vec();
        let actual = BlobId::of(&bytes);
        if actual != *id {
            return Err(Error::BlobCorrupt {
                id: id.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Whether a blob is stored.
    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        match block_on(self.inner.head(&id.location())) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(other) => Err(other.into()),
        }
    }
}

/// A blob being written piece by piece; [`BlobWriter::finish`] names it.
///
/// Dropping it unfinished aborts the upload. A crash leaves only a file under
/// `staging/`, which no id refers to.
pub struct BlobWriter {
    store: Arc<dyn ObjectStore>,
    staging: ObjectPath,
    upload: Option<Box<dyn MultipartUpload>>,
    hasher: Sha256,
    buffer: Vec<u8>,
    len: u64,
}

impl fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobWriter")
            .field("staging", &self.staging)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl BlobWriter {
    /// Appends bytes.
    pub fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = PART_SIZE - self.buffer.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            bytes = rest;
            if self.buffer.len() == PART_SIZE {
                self.flush_part()?;
            }
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn flush_part(&mut self) -> Result<()> {
        let part = std::mem::replace(&mut self.buffer, Vec::with_capacity(PART_SIZE));
        if let Some(upload) = self.upload.as_mut() {
            block_on(upload.put_part(PutPayload::from(part)))?;
        }
        Ok(())
    }

    /// Completes the upload and moves it under its content id.
    pub fn finish(mut self) -> Result<BlobId> {
        if !self.buffer.is_empty() || self.len == 0 {
            self.flush_part()?;
        }
        let id = BlobId(self.hasher.clone().finalize().into());
        if let Some(mut upload) = self.upload.take() {
            block_on(upload.complete())?;
        }
        // Renaming is atomic on a local filesystem; an identical blob already
        // there is simply replaced by the same bytes.
        block_on(self.store.rename(&self.staging, &id.location()))?;
        Ok(id)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            // Best effort: a leftover staging file is harmless.
            let _ = block_on(upload.abort());
        }
    }
}

/// Drives an `object_store` future to completion from synchronous code.
fn block_on<F: Future>(future: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(future),
        Err(_) => futures::executor::block_on(future),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_and_stream_agree_on_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = Blobs::local(dir.path()).expect("open");
        let id = blobs.put(b"hello".to_vec()).expect("put");
        assert_eq!(id, BlobId::of(b"hello"));
        assert_eq!(blobs.get(&id).expect("get"), b"hello");

        let big: Vec<u8> = (0..PART_SIZE * 2 + 17).map(|i| (i % 251) as u8).collect();
        let mut writer = blobs.writer().expect("writer");
        for chunk in big.chunks(1 << 20) {
            writer.write(chunk).expect("write");
        }
        let streamed = writer.finish().expect("finish");
        assert_eq!(streamed, BlobId::of(&big));
        assert_eq!(blobs.get(&streamed).expect("get"), big);
    }

    #[test]
    fn empty_stream_and_missing_blob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = Blobs::local(dir.path()).expect("open");
        let id = blobs.writer().expect("writer").finish().expect("finish");
        assert_eq!(id, BlobId::of(b""));
        assert!(blobs.contains(&id).expect("head"));
        let missing = BlobId::of(b"nope");
        assert!(!blobs.contains(&missing).expect("head"));
        assert!(matches!(blobs.get(&missing), Err(Error::BlobNotFound(_))));
    }

    #[test]
    fn blob_ids_round_trip_and_reject_junk() {
        let id = BlobId::of(b"x");
        assert_eq!(BlobId::parse(&id.to_string()).expect("parse"), id);
        assert!(BlobId::parse("abc").is_err());
        assert!(BlobId::parse(&id.to_string().to_uppercase()).is_err());
    }
}
