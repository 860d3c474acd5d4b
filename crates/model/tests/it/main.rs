//! Integration tests of the model crate: tiny generated models for the
//! engine's invariants, the real default model for end-to-end correctness.

#![allow(clippy::unwrap_used, unreachable_pub)] // test helpers panic on purpose; items are crate-local

mod forward;
mod gguf_errors;
mod kv;
mod lora;
mod real_model;
mod reference;
mod safetensors;
