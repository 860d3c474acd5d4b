//! The model crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A GGUF file is malformed (bad magic, truncated, inconsistent offsets, …).
    #[error("invalid GGUF file: {0}")]
    Gguf(String),
    /// A safetensors / config.json checkpoint is malformed or inconsistent.
    #[error("invalid safetensors checkpoint: {0}")]
    Safetensors(String),
    /// A tensor uses a storage type this engine does not implement.
    #[error("unsupported tensor type {0}")]
    UnsupportedType(String),
    /// The model's architecture is not one of the llama family.
    #[error("unsupported architecture `{0}` (supported: llama, mistral, qwen2, smollm)")]
    UnsupportedArchitecture(String),
    /// A required tensor is missing or has the wrong shape.
    #[error("tensor `{name}`: {problem}")]
    Tensor {
        /// Tensor name as stored in the file.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A hyper-parameter in the model metadata is missing or out of range.
    #[error("model config: {0}")]
    Config(String),
    /// Building or running the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Rendering a chat template failed.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// The prompt (plus cached tokens) does not fit in the context window.
    #[error("sequence of {tokens} tokens exceeds the context window of {context} tokens")]
    ContextOverflow {
        /// Tokens the sequence would hold.
        tokens: usize,
        /// The model's context length.
        context: usize,
    },
    /// The KV cache pool's byte budget cannot cover the blocks a sequence needs.
    #[error(
        "KV cache memory exhausted: {needed} more bytes needed, {free} of the {budget}-byte budget free"
    )]
    KvExhausted {
        /// Bytes the failed allocation asked for.
        needed: usize,
        /// Bytes still free in the pool.
        free: usize,
        /// The pool's budget.
        budget: usize,
    },
    /// Invalid sampling or generation parameters.
    #[error("invalid generation parameter `{field}`: {problem}")]
    InvalidParameter {
        /// The offending field.
        field: &'static str,
        /// Why it is rejected.
        problem: String,
    },
    /// An adapter file is malformed or does not fit the base model.
    #[error("invalid adapter: {0}")]
    Adapter(String),
    /// A shape or length mismatch inside the engine (a bug or a bad caller).
    #[error("shape mismatch: {0}")]
    Shape(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Tensor`].
    pub fn tensor(name: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Tensor {
            name: name.into(),
            problem: problem.into(),
        }
    }

    /// Builds an [`Error::InvalidParameter`].
    pub fn param(field: &'static str, problem: impl Into<String>) -> Self {
        Self::InvalidParameter {
            field,
            problem: problem.into(),
        }
    }
}
