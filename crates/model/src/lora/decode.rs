//! Decoding one tensor's bytes into held factors in a single pass: widen
//! the file's dtype, check for non-finite values, narrow to the held dtype
//! and put each value in place (transposed and Q/K-permuted for `B`), block
//! by block while the block sits in L1.

use safetensors::tensor::{Dtype, TensorView};

use super::{Factor, LoraDtype};
use crate::error::{Error, Result};

fn bad(msg: String) -> Error {
    Error::Adapter(msg)
}

/// Where a tensor's decoded values go: the element type held, and for a `B`
/// tensor the transposition (and Q/K row permutation) into `LoraPair::bt`.
#[derive(Clone, Copy)]
pub(super) struct Layout {
    pub dtype: LoraDtype,
    /// Transpose `[rows, cols]` into `[cols, rows]`.
    pub transpose: bool,
    /// Permute the rows per head of this width while transposing
    /// ([`interleaved_row`]).
    pub interleave: Option<usize>,
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
pub(super) fn decode(
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
/// block) stay put, as in `tensors::deinterleave_rows`.
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
