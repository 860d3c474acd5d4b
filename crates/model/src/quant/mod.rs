//! Quantised weight storage (GGML block formats) and the matrix kernels that use it.
//!
//! A [`QMatrix`] is a row-major weight matrix `W[rows, cols]` stored in one of
//! the GGML formats of [`GgmlType`], exactly as laid out in a GGUF file, so a
//! memory-mapped file is used in place. [`QMatrix::matmul`] computes
//! `x · Wᵀ` for a batch of activation rows; it is the hot path of the engine.
//!
//! Kernels: activations are quantised once per call to 8-bit blocks of 32 with
//! an f32 scale (finer than GGML's Q8_K, and shared by every integer format),
//! then integer dot products run on the widest SIMD path the CPU offers,
//! chosen at run time: AVX-512 VNNI, AVX2 (+FMA, F16C), or portable scalar
//! code. `CREDENCE_KERNEL=portable|avx2|avx512` forces a lower path.

mod act;
mod blocks;
mod kernels;
mod matrix;
mod quantize;
mod types;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fixtures;

pub(crate) use kernels::Kernel;
pub use kernels::kernel_name;
pub use matrix::QMatrix;
pub use types::GgmlType;
