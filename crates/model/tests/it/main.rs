//! Integration tests of the model crate: tiny generated models for the
//! engine's invariants, the real default model for end-to-end correctness.

mod forward;
mod gguf_errors;
mod real_model;
mod reference;
