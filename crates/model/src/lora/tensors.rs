//! Reading and writing the `lora_A` / `lora_B` tensors of a PEFT safetensors file.

use std::collections::BTreeMap;

use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};

use super::{Factor, LoraDtype, MODULES, Slot, module_path, tensor_name};
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
    /// Values in the requested dtype: row-major `[rows, cols]` for an A
    /// tensor, transposed (`[cols, rows]`) for a B tensor, the layout the
    /// expand kernel reads (see `LoraPair::bt`).
    pub data: Factor,
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

/// Which kind of file a tensor set comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// A PEFT file: `lora_B` is `[out, r]` in Hugging Face row order; B is
    /// transposed while decoding, with Q/K rows interleaved per head of
    /// this width when given.
    Peft { qk_interleave: Option<usize> },
    /// A runtime file (`LoraAdapter::to_runtime_bytes`): `lora_BT` is
    /// already `[r, out]` in the base's runtime row order.
    Runtime,
}

impl Source {
    /// The suffix naming the B half in this kind of file.
    fn b_suffix(self) -> &'static str {
        match self {
            Self::Peft { .. } => ".lora_B.weight",
            Self::Runtime => RUNTIME_B_SUFFIX,
        }
    }
}

/// How a runtime file names the transposed B half.
pub(super) const RUNTIME_B_SUFFIX: &str = ".lora_BT.weight";

/// Splits a tensor name into its slot and whether it is the A half.
fn parse_name(name: &str, source: Source) -> Option<(Slot, bool)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (layer, rest) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let layer: usize = layer.parse().ok()?;
    let (module, half) = rest
        .strip_suffix(".lora_A.weight")
        .map(|m| (m, true))
        .or_else(|| rest.strip_suffix(source.b_suffix()).map(|m| (m, false)))?;
    let index = MODULES.iter().position(|(_, m)| *m == module)?;
    Some(((layer, index), half))
}

/// Where a tensor's decoded values go: the element type held, and for a `B`
/// tensor the transposition (and Q/K row permutation) into `LoraPair::bt`.
#[derive(Clone, Copy)]
struct Layout {
    dtype: LoraDtype,
    /// Transpose `[rows, cols]` into `[cols, rows]`.
    transpose: bool,
    /// Permute the rows per head of this width while transposing
    /// ([`interleaved_row`]).
    interleave: Option<usize>,
}

/// Values decoded per block: small enough for L1, so each value is read
/// from the file once and written to its destination once.
const DECODE_BLOCK: usize = 2048;

/// A held element type.
trait Held: Copy + Default {
    /// Stores `src` into `dst` (equal lengths); false when a value does not
    /// fit the type's range.
    fn store(src: &[f32], dst: &mut [Self]) -> bool;
}

impl Held for f32 {
    fn store(src: &[f32], dst: &mut [Self]) -> bool {
        dst.copy_from_slice(src);
        true
    }
}

impl Held for half::f16 {
    fn store(src: &[f32], dst: &mut [Self]) -> bool {
        super::factor::narrow_f16(src, dst)
    }
}

/// Bytes per value of a supported file dtype.
fn value_size(name: &str, dtype: Dtype) -> Result<usize> {
    match dtype {
        Dtype::F32 => Ok(4),
        Dtype::F16 | Dtype::BF16 => Ok(2),
        other => Err(bad(format!(
            "tensor `{name}` has dtype {other:?}; expected F32, F16 or BF16"
        ))),
    }
}

/// Widens little-endian F32 / F16 / BF16 `bytes` into `out` (one value per
/// element of `out`), written to vectorise.
fn widen(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.as_chunks::<4>().0) {
                *o = f32::from_le_bytes(*c);
            }
        }
        Dtype::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.as_chunks::<2>().0) {
                *o = f32::from_bits(u32::from(u16::from_le_bytes(*c)) << 16);
            }
        }
        _ => {
            use half::slice::HalfFloatSliceExt;
            let mut halves = [half::f16::ZERO; DECODE_BLOCK];
            let halves = &mut halves[..out.len()];
            for (h, c) in halves.iter_mut().zip(bytes.as_chunks::<2>().0) {
                *h = half::f16::from_le_bytes(*c);
            }
            halves.convert_to_f32_slice(out);
        }
    }
}

/// Decodes a `[rows, cols]` tensor into `layout` in one pass over the file's
/// bytes: each block is widened, checked for non-finite values, narrowed and
/// put in place (transposed for `B`) while it sits in L1. A cold load is a
/// request's latency, and separate passes (widen, check, transpose, narrow)
/// cost several times this one's memory traffic.
fn decode(
    name: &str,
    view: &TensorView<'_>,
    rows: usize,
    cols: usize,
    layout: Layout,
) -> Result<Factor> {
    let size = value_size(name, view.dtype())?;
    if view.dtype() == Dtype::F16 && layout.dtype == LoraDtype::F16 && !layout.transpose {
        return copy_f16(name, view.data()).map(Factor::F16);
    }
    // A value beyond f16's range leaves `None`: this factor then stays f32.
    if layout.dtype == LoraDtype::F16
        && let Some(values) = decode_as::<half::f16>(name, view, size, rows, cols, layout)?
    {
        return Ok(Factor::F16(values));
    }
    let values = decode_as::<f32>(name, view, size, rows, cols, layout)?;
    Ok(Factor::F32(values.unwrap_or_default()))
}

/// F16 values kept as f16 in the file's order (a runtime file's factors, or
/// the A half of an F16 PEFT file): a straight copy, checked on the bits.
fn copy_f16(name: &str, bytes: &[u8]) -> Result<Vec<half::f16>> {
    let values: Vec<half::f16> = bytes
        .as_chunks::<2>()
        .0
        .iter()
        .map(|c| half::f16::from_le_bytes(*c))
        .collect();
    // All exponent bits set: an infinity or a NaN.
    const EXPONENT: u16 = 0x7c00;
    let bad_bits = |h: &half::f16| h.to_bits() & EXPONENT == EXPONENT;
    let failing = values
        .chunks(FINITE_BLOCK)
        .enumerate()
        .find(|(_, block)| block.iter().fold(false, |bad, h| bad | bad_bits(h)));
    if let Some((b, block)) = failing {
        let i = b * FINITE_BLOCK + block.iter().position(bad_bits).unwrap_or(0);
        return Err(non_finite(name, i, values[i].to_f32()));
    }
    Ok(values)
}

/// [`decode`] into `T`; `None` when a value does not fit `T`.
fn decode_as<T: Held>(
    name: &str,
    view: &TensorView<'_>,
    size: usize,
    rows: usize,
    cols: usize,
    layout: Layout,
) -> Result<Option<Vec<T>>> {
    let bytes = view.data();
    let n = rows * cols;
    if n == 0 {
        // Shape checks against the base reject it; nothing to decode.
        return Ok(Some(Vec::new()));
    }
    // A transposed tensor is scattered into place, so it needs all of its
    // buffer up front; otherwise blocks are appended (no zero-fill pass).
    let mut out = Vec::with_capacity(n);
    if layout.transpose {
        out.resize(n, T::default());
    }
    // Whole rows per block, so a transposed block scatters whole rows.
    let block_rows = (DECODE_BLOCK / cols.max(1)).max(1);
    // Scratch sized to this tensor: zeroing full blocks for every small
    // tensor was measurable.
    let block = DECODE_BLOCK.min(n);
    let mut wide = vec![0f32; block];
    let mut narrow = vec![T::default(); block];
    let mut dsts = vec![0usize; if layout.transpose { block_rows } else { 0 }];
    let mut row = 0;
    while row < rows {
        let take = block_rows.min(rows - row);
        let (start, len) = (row * cols, take * cols);
        if len > DECODE_BLOCK {
            // A single row wider than a block: decode it in pieces, untransposed
            // rows only (a transposed B has `cols` = rank <= MAX_RANK).
            return decode_wide_rows(name, view, size, rows, cols, layout);
        }
        let wide = &mut wide[..len];
        widen(
            view.dtype(),
            &bytes[start * size..(start + len) * size],
            wide,
        );
        if let Some(i) = first_non_finite(wide) {
            return Err(non_finite(name, start + i, wide[i]));
        }
        let narrow = &mut narrow[..len];
        if !T::store(wide, narrow) {
            return Ok(None);
        }
        if layout.transpose {
            let dsts = &mut dsts[..take];
            for (d, r) in dsts.iter_mut().zip(row..) {
                *d = layout
                    .interleave
                    .map_or(r, |hd| interleaved_row(r, rows, hd));
            }
            // Output row by output row, so writes run along each row of the
            // transpose; the strided reads stay in L1.
            for (k, dst_row) in out.chunks_exact_mut(rows).enumerate() {
                for (&d, values) in dsts.iter().zip(narrow.chunks_exact(cols)) {
                    dst_row[d] = values[k];
                }
            }
        } else {
            out.extend_from_slice(narrow);
        }
        row += take;
    }
    Ok(Some(out))
}

/// [`decode_as`] for untransposed tensors whose rows exceed a block (an
/// `A` with a very wide input), decoded block by block.
fn decode_wide_rows<T: Held>(
    name: &str,
    view: &TensorView<'_>,
    size: usize,
    rows: usize,
    cols: usize,
    layout: Layout,
) -> Result<Option<Vec<T>>> {
    let n = rows * cols;
    if layout.transpose {
        return Err(bad(format!(
            "tensor `{name}` has {cols} columns, more than any supported rank"
        )));
    }
    let bytes = view.data();
    let mut out = vec![T::default(); n];
    let mut wide = [0f32; DECODE_BLOCK];
    for (b, dst) in out.chunks_mut(DECODE_BLOCK).enumerate() {
        let start = b * DECODE_BLOCK;
        let wide = &mut wide[..dst.len()];
        widen(
            view.dtype(),
            &bytes[start * size..(start + dst.len()) * size],
            wide,
        );
        if let Some(i) = first_non_finite(wide) {
            return Err(non_finite(name, start + i, wide[i]));
        }
        if !T::store(wide, dst) {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

fn non_finite(name: &str, index: usize, value: f32) -> Error {
    bad(format!(
        "tensor `{name}` has a non-finite value ({value}) at index {index}"
    ))
}

/// Where row `r` of a `rows`-row Q/K projection in Hugging Face order goes in
/// the order llama.cpp's GGUF converter gives those rows so that RoPE can
/// rotate adjacent pairs: within each block of `head_dim` rows, HF row
/// `j·(head_dim/2) + i` becomes row `2i + j` (`j` in {0, 1}). Rows the
/// mapping does not cover (an odd head width's last row, a partial trailing
/// block) stay put, as in [`deinterleave_rows`].
pub(super) fn interleaved_row(r: usize, rows: usize, head_dim: usize) -> usize {
    let half = head_dim / 2;
    let (block, within) = (r / head_dim.max(1), r % head_dim.max(1));
    if half == 0 || (block + 1) * head_dim > rows || within >= 2 * half {
        return r;
    }
    let (j, i) = (within / half, within % half);
    block * head_dim + 2 * i + j
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
    dtype: LoraDtype,
    source: Source,
) -> Result<(Slot, bool, RawTensor)> {
    let (slot, is_a) = parse_name(name, source).ok_or_else(|| {
        bad(format!(
            "unknown tensor `{name}` (expected {PREFIX}N.<module>.lora_A.weight or …{})",
            source.b_suffix()
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
    let layout = match source {
        Source::Peft { qk_interleave } => Layout {
            dtype,
            transpose: !is_a,
            // Q/K rows of B follow the base's runtime head layout (see `LoraAdapter`).
            interleave: qk_interleave.filter(|_| !is_a && super::is_qk(slot)),
        },
        Source::Runtime => Layout {
            dtype,
            transpose: false,
            interleave: None,
        },
    };
    let data = decode(name, view, rows, cols, layout)?;
    // A runtime B is stored `[r, out]`; report the PEFT shape `[out, r]` so
    // both kinds are checked the same way.
    let (rows, cols) = match source {
        Source::Runtime if !is_a => (cols, rows),
        _ => (rows, cols),
    };
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
fn decode_all(
    tensors: &[(String, TensorView<'_>)],
    n_layers: usize,
    dtype: LoraDtype,
    source: Source,
) -> Vec<Result<Decoded>> {
    let decode_run = |run: &[(String, TensorView<'_>)]| -> Vec<Result<Decoded>> {
        run.iter()
            .map(|(name, view)| read_tensor(name, view, n_layers, dtype, source))
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

/// Reads every tensor of a safetensors file, grouped by module, `B` in the
/// runtime layout (see [`Source`]).
pub(super) fn read_all(
    bytes: &[u8],
    n_layers: usize,
    dtype: LoraDtype,
    source: Source,
) -> Result<BTreeMap<Slot, RawPair>> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("adapter_model.safetensors: {e}")))?;
    let mut pairs: BTreeMap<Slot, RawPair> = BTreeMap::new();
    for decoded in decode_all(&file.tensors(), n_layers, dtype, source) {
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

/// Serialises `(name, shape, factor)` triples in their held dtypes, with
/// `metadata` in the header.
pub(super) fn write_factors(
    tensors: &[(String, [usize; 2], &Factor)],
    metadata: std::collections::HashMap<String, String>,
) -> Result<Vec<u8>> {
    let encoded: Vec<(Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|(_, _, f)| match f {
            Factor::F32(v) => (Dtype::F32, f32_bytes(v)),
            Factor::F16(v) => (Dtype::F16, v.iter().flat_map(|h| h.to_le_bytes()).collect()),
        })
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, _), (dtype, data)) in tensors.iter().zip(&encoded) {
        let view = TensorView::new(*dtype, shape.to_vec(), data)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        views.push((name.clone(), view));
    }
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| bad(format!("serialising adapter: {e}")))
}

/// The header metadata of a safetensors file (empty when it has none).
pub(super) fn metadata(bytes: &[u8]) -> Result<std::collections::HashMap<String, String>> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("adapter runtime file: {e}")))?;
    Ok(header.metadata().clone().unwrap_or_default())
}

/// The PEFT names of the A and B tensors of `slot`.
pub(super) fn pair_names(slot: Slot) -> (String, String) {
    let path = module_path(slot);
    (tensor_name(&path, true), tensor_name(&path, false))
}

/// Reorders the rows of a row-major `[rows, cols]` matrix from the
/// interleaved order of [`interleaved_row`] back to Hugging Face order.
pub(super) fn deinterleave_rows(values: &[f32], cols: usize, head_dim: usize) -> Vec<f32> {
    reorder_rows(values, cols, head_dim, false)
}

fn reorder_rows<T: Copy>(
    values: &[T],
    cols: usize,
    head_dim: usize,
    to_interleaved: bool,
) -> Vec<T> {
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
