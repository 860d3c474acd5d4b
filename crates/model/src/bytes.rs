//! Tensor storage: bytes owned in memory or borrowed from a memory-mapped file.

use std::ops::Range;
use std::sync::Arc;

use memmap2::Mmap;

/// The raw bytes of one tensor. Cloning is cheap (reference counted).
#[derive(Clone)]
pub enum TensorBytes {
    /// Bytes held in memory (quantised at load time, or built by a test).
    Owned(Arc<[u8]>),
    /// A range of a memory-mapped model file; the map lives as long as any tensor uses it.
    Mapped {
        /// The whole file.
        map: Arc<Mmap>,
        /// This tensor's byte range inside it.
        range: Range<usize>,
    },
}

impl TensorBytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Self::Owned(b) => b,
            Self::Mapped { map, range } => &map[range.clone()],
        }
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<u8>> for TensorBytes {
    fn from(v: Vec<u8>) -> Self {
        Self::Owned(v.into())
    }
}

impl std::fmt::Debug for TensorBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if matches!(self, Self::Owned(_)) {
            "owned"
        } else {
            "mapped"
        };
        write!(f, "TensorBytes({kind}, {} bytes)", self.len())
    }
}
