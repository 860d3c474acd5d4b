//! Reading and writing the `lora_A` / `lora_B` tensors of a PEFT safetensors file.

use std::collections::BTreeMap;

use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};

use super::{MODULES, Slot, module_path, tensor_name};
use crate::error::{Error, Result};

/// Prefix PEFT puts before the base model's own module paths.
const PREFIX: &str = "base_model.model.model.layers.";

/// One decoded adapter tensor.
pub(super) struct RawTensor {
    /// Name in the file.
    pub name: String,
    /// Row-major dimensions (always two).
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Values converted to f32: row-major `[rows, cols]` for an A tensor,
    /// transposed (`[cols, rows]`) for a B tensor, the layout the expand
    /// kernel reads (see `LoraPair::bt`).
    pub data: Vec<f32>,
}

/// The A and B halves found for one module.
#[derive(Default)]
pub(super) struct RawPair {
    /// `lora_A`, `[r, in]`.
    pub a: Option<RawTensor>,
    /// `lora_B`, `[out, r]`.
    pub b: Option<RawTensor>,
}

fn bad(msg: String) -> Error {
    Error::Adapter(msg)
}

/// Splits a PEFT tensor name into its slot and whether it is the A half.
fn parse_name(name: &str) -> Option<(Slot, bool)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (layer, rest) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let layer: usize = layer.parse().ok()?;
    let (module, half) = rest
        .strip_suffix(".lora_A.weight")
        .map(|m| (m, true))
        .or_else(|| rest.strip_suffix(".lora_B.weight").map(|m| (m, false)))?;
    let index = MODULES.iter().position(|(_, m)| *m == module)?;
    Some(((layer, index), half))
}

/// Decodes little-endian F32 / F16 / BF16 data to f32, rejecting non-finite values.
///
/// This is most of an adapter's load time, so both passes are written to
/// vectorise: fixed-size chunks instead of indexed slices, and a finiteness
/// check without an early exit per value (see [`first_non_finite`]).
fn decode(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
    let bytes = view.data();
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => bytes
            .as_chunks::<4>()
            .0
            .iter()
            .map(|c| f32::from_le_bytes(*c))
            .collect(),
        Dtype::F16 => bytes
            .as_chunks::<2>()
            .0
            .iter()
            .map(|c| half::f16::from_le_bytes(*c).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .as_chunks::<2>()
            .0
            .iter()
            .map(|c| half::bf16::from_le_bytes(*c).to_f32())
            .collect(),
        other => {
            return Err(bad(format!(
                "tensor `{name}` has dtype {other:?}; expected F32, F16 or BF16"
            )));
        }
    };
    if let Some(i) = first_non_finite(&data) {
        return Err(bad(format!(
            "tensor `{name}` has a non-finite value ({}) at index {i}",
            data[i]
        )));
    }
    Ok(data)
}

/// Values checked per block by [`first_non_finite`].
pub(super) const FINITE_BLOCK: usize = 256;

/// The index of the first NaN or infinity. Each block is first checked with
/// a branch-free fold (which the compiler turns into SIMD compares); only a
/// block that fails is searched value by value.
pub(super) fn first_non_finite(values: &[f32]) -> Option<usize> {
    values
        .chunks(FINITE_BLOCK)
        .enumerate()
        .find(|(_, block)| block.iter().fold(false, |bad, v| bad | !v.is_finite()))
        .and_then(|(b, block)| {
            let i = block.iter().position(|v| !v.is_finite())?;
            Some(b * FINITE_BLOCK + i)
        })
}

/// Decodes one named tensor, checking its name, layer and rank-2 shape.
fn read_tensor(
    name: &str,
    view: &TensorView<'_>,
    n_layers: usize,
) -> Result<(Slot, bool, RawTensor)> {
    let (slot, is_a) = parse_name(name).ok_or_else(|| {
        bad(format!(
            "unknown tensor `{name}` (expected {PREFIX}N.<module>.lora_A|lora_B.weight)"
        ))
    })?;
    if slot.0 >= n_layers {
        return Err(bad(format!(
            "tensor `{name}` targets layer {} but the base model has {n_layers} layers",
            slot.0
        )));
    }
    let &[rows, cols] = view.shape() else {
        return Err(bad(format!(
            "tensor `{name}` has shape {:?}; expected two dimensions",
            view.shape()
        )));
    };
    let mut data = decode(name, view)?;
    if !is_a {
        // Transposed here, on the decoding thread while the values are still
        // in cache, rather than in a separate pass over the whole adapter.
        data = super::transpose(&data, rows, cols);
    }
    let tensor = RawTensor {
        name: name.to_string(),
        rows,
        cols,
        data,
    };
    Ok((slot, is_a, tensor))
}

/// Adapters smaller than this are decoded on the calling thread: starting
/// threads costs tens of microseconds, which only pays off on the
/// multi-megabyte adapters whose cold load a request waits for.
const PARALLEL_MIN_BYTES: usize = 4 << 20;

/// Most threads one decode uses.
const MAX_DECODE_THREADS: usize = 4;

/// One decoded tensor: its module, whether it is the A half, and its values.
type Decoded = (Slot, bool, RawTensor);

/// Decodes every tensor, results in input order. A large adapter is split
/// into contiguous runs of tensors, one per thread (the calling thread takes
/// the first): decoding is memory-bound copying and checking, and a cold
/// load is latency a request waits for.
fn decode_all(tensors: &[(String, TensorView<'_>)], n_layers: usize) -> Vec<Result<Decoded>> {
    let decode_run = |run: &[(String, TensorView<'_>)]| -> Vec<Result<Decoded>> {
        run.iter()
            .map(|(name, view)| read_tensor(name, view, n_layers))
            .collect()
    };
    let bytes: usize = tensors.iter().map(|(_, v)| v.data().len()).sum();
    let threads = if bytes < PARALLEL_MIN_BYTES {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .min(MAX_DECODE_THREADS)
    };
    if threads <= 1 || tensors.len() < 2 {
        return decode_run(tensors);
    }
    let mut runs = tensors.chunks(tensors.len().div_ceil(threads));
    let first = runs.next().unwrap_or_default();
    std::thread::scope(|scope| {
        let others: Vec<_> = runs
            .map(|run| scope.spawn(move || decode_run(run)))
            .collect();
        let mut out = decode_run(first);
        for handle in others {
            // Decoding does not panic; if it ever did, the panic belongs to
            // the caller, as it would without threads.
            out.extend(
                handle
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
            );
        }
        out
    })
}

/// Reads every tensor of a safetensors file, grouped by module.
pub(super) fn read_all(bytes: &[u8], n_layers: usize) -> Result<BTreeMap<Slot, RawPair>> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("adapter_model.safetensors: {e}")))?;
    let mut pairs: BTreeMap<Slot, RawPair> = BTreeMap::new();
    for decoded in decode_all(&file.tensors(), n_layers) {
        let (slot, is_a, tensor) = decoded?;
        let pair = pairs.entry(slot).or_default();
        let half = if is_a { &mut pair.a } else { &mut pair.b };
        *half = Some(tensor);
    }
    if pairs.is_empty() {
        return Err(bad("adapter contains no LoRA tensors".into()));
    }
    Ok(pairs)
}

/// Encodes f32 values little-endian.
pub(super) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Serialises `(name, shape, values)` triples as an F32 safetensors file.
pub(super) fn write_f32<V: AsRef<[f32]>>(tensors: &[(String, [usize; 2], V)]) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| f32_bytes(v.as_ref()))
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, _), data) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, shape.to_vec(), data)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        views.push((name.clone(), view));
    }
    safetensors::serialize(views, None).map_err(|e| bad(format!("serialising adapter: {e}")))
}

/// The PEFT names of the A and B tensors of `slot`.
pub(super) fn pair_names(slot: Slot) -> (String, String) {
    let path = module_path(slot);
    (tensor_name(&path, true), tensor_name(&path, false))
}

/// Reorders the rows of a row-major `[rows, cols]` matrix from Hugging Face
/// order into the order llama.cpp's GGUF converter gives Q/K rows so that
/// RoPE can rotate adjacent pairs: within each block of `head_dim` rows, HF
/// row `j·(head_dim/2) + i` becomes row `2i + j` (`j` in {0, 1}).
pub(super) fn interleave_rows(values: &[f32], cols: usize, head_dim: usize) -> Vec<f32> {
    reorder_rows(values, cols, head_dim, true)
}

/// The inverse of [`interleave_rows`]: back to Hugging Face row order.
pub(super) fn deinterleave_rows(values: &[f32], cols: usize, head_dim: usize) -> Vec<f32> {
    reorder_rows(values, cols, head_dim, false)
}

fn reorder_rows(values: &[f32], cols: usize, head_dim: usize, to_interleaved: bool) -> Vec<f32> {
    // Starting from a copy keeps any rows the mapping does not cover (an odd
    // head width's last row, a partial trailing block) where they were, so
    // the two directions stay exact inverses whatever the shape.
    let mut out = values.to_vec();
    let half = head_dim / 2;
    if cols == 0 || half == 0 {
        return out;
    }
    let block = head_dim * cols;
    for (dst, src) in out.chunks_exact_mut(block).zip(values.chunks_exact(block)) {
        for i in 0..half {
            for j in 0..2 {
                let (hf, interleaved) = ((j * half + i) * cols, (2 * i + j) * cols);
                let (to, from) = if to_interleaved {
                    (interleaved, hf)
                } else {
                    (hf, interleaved)
                };
                dst[to..to + cols].copy_from_slice(&src[from..from + cols]);
            }
        }
    }
    out
}
