//! The Credence tensor engine: llama-family language models on CPU.
//!
//! This crate owns everything between a model file and a vector of logits:
//! GGUF and safetensors loading ([`gguf`], [`weights`]), quantised storage and
//! SIMD kernels ([`quant`]), the tokenizer and chat templates ([`tokenizer`],
//! [`chat`]), the batched forward pass with its paged KV cache ([`llama`], [`kv`]),
//! sampling plus streamed generation ([`sampling`], [`generate`]), and
//! Hugging Face PEFT LoRA adapters: reading, validation against the base
//! model, content ids and saving ([`lora`]).
//!
//! It knows nothing about HTTP, adapters' storage, datasets or ledgers; those
//! crates build on it. The forward pass takes a batch of sequences, each at its
//! own position, which is what continuous batching and mixed-adapter batches
//! are built on.

#![allow(unsafe_code)] // SIMD kernels, the memory map and the worker pool need it; each use carries a SAFETY note.

pub mod bytes;
pub mod chat;
pub mod config;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod kv;
pub mod llama;
pub mod lora;
pub mod merge;
pub mod ops;
pub mod quant;
pub mod sampling;
pub mod testing;
pub mod text;
pub mod threadpool;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};
