//! Decoding one tensor's bytes into held factors in a single pass: widen
//! the file's dtype, check for non-finite values, narrow to the held dtype
//! and put each value in place (transposed into panels and Q/K-permuted for
//! `B`), block by block while the block sits in L1.

use safetensors::tensor::{Dtype, TensorView};

use super::{Factor, LoraDtype, Panels, Q8_BLOCK, Q8Values};
use crate::error::{Error, Result};

fn bad(msg: String) -> Error {
    Error::Adapter(msg)
}

/// Where a tensor's decoded values go: the element type held, and for a `B`
/// tensor the transposition into panels (and Q/K row permutation) of
/// `LoraPair::b_panels`.
#[derive(Clone, Copy)]
pub(super) struct Layout {
    pub dtype: LoraDtype,
    /// Transpose `[rows, cols]` into `[cols, rows]` held in column panels.
    pub panels: bool,
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
/// put in place (transposed into panels for `B`) while it sits in L1. A cold load is a
/// request's latency, and separate passes (widen, check, transpose, narrow)
/// cost several times this one's memory traffic.
pub(super) fn decode(
    name: &str,
    view: &TensorView<'_>,
    scales: Option<&TensorView<'_>>,
    rows: usize,
    cols: usize,
    layout: Layout,
) -> Result<Factor> {
    if view.dtype() == Dtype::I8 {
        let q = q8_values(name, view, scales, layout)?;
        return Ok(match layout.dtype {
            LoraDtype::Q8 => Factor::Q8(q),
            other => Factor::from_f32(q.to_f32(), other),
        });
    }
    let size = value_size(name, view.dtype())?;
    if view.dtype() == Dtype::F16 && layout.dtype == LoraDtype::F16 && !layout.panels {
        return copy_f16(name, view.data()).map(Factor::F16);
    }
    // A value beyond f16's range leaves `None`: this factor then stays f32.
    if layout.dtype == LoraDtype::F16
        && let Some(values) = decode_as::<half::f16>(name, view, size, rows, cols, layout)?
    {
        return Ok(Factor::F16(values));
    }
    let values = decode_as::<f32>(name, view, size, rows, cols, layout)?.unwrap_or_default();
    // Bytes hold any finite values: each block's scale absorbs its range.
    let dtype = match layout.dtype {
        LoraDtype::Q8 => LoraDtype::Q8,
        _ => LoraDtype::F32,
    };
    Ok(Factor::from_f32(values, dtype))
}

/// A runtime file's 8-bit factor: the I8 values as stored and their F32
/// block scales (`<name>.scales`), checked.
fn q8_values(
    name: &str,
    view: &TensorView<'_>,
    scales: Option<&TensorView<'_>>,
    layout: Layout,
) -> Result<Q8Values> {
    let scales = scales.ok_or_else(|| {
        bad(format!(
            "tensor `{name}` has dtype I8 but the file has no `{name}.scales`"
        ))
    })?;
    if layout.panels {
        // PEFT files hold B as [out, r]; only runtime files store bytes.
        return Err(bad(format!(
            "tensor `{name}` has dtype I8; expected F32, F16 or BF16"
        )));
    }
    let values: Vec<i8> = view.data().iter().map(|&b| b as i8).collect();
    let blocks = values.len().div_ceil(Q8_BLOCK);
    if scales.dtype() != Dtype::F32 || scales.data().len() != 4 * blocks {
        return Err(bad(format!(
            "`{name}.scales` must be {blocks} F32 values (one per {Q8_BLOCK} values)"
        )));
    }
    let scales: Vec<f32> = scales
        .data()
        .as_chunks::<4>()
        .0
        .iter()
        .map(|c| f32::from_le_bytes(*c))
        .collect();
    if let Some(i) = scales.iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
        return Err(bad(format!(
            "`{name}.scales` has an invalid scale ({}) at index {i}",
            scales[i]
        )));
    }
    Ok(Q8Values { values, scales })
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
    let n = rows * cols;
    if n == 0 {
        // Shape checks against the base reject it; nothing to decode.
        return Ok(Some(Vec::new()));
    }
    // Scratch sized to this tensor: zeroing full blocks for every small
    // tensor was measurable.
    let block = DECODE_BLOCK.min(n);
    let mut wide = vec![0f32; block];
    let mut narrow = vec![T::default(); block];
    if !layout.panels {
        // Blocks are appended in file order (no zero-fill pass over `out`).
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(block) {
            let len = block.min(n - start);
            let narrow = &mut narrow[..len];
            if !widen_checked(name, view, size, start, &mut wide[..len], narrow)? {
                return Ok(None);
            }
            out.extend_from_slice(narrow);
        }
        return Ok(Some(out));
    }
    // Into panels: whole rows per block, scattered into a buffer allocated
    // up front. A `B` has `cols` = its rank, so a row always fits a block.
    // Row `r` of B is column `r` of Bᵀ.
    if cols > DECODE_BLOCK {
        return Err(bad(format!(
            "tensor `{name}` has {cols} columns, more than any supported rank"
        )));
    }
    let mut out = vec![T::default(); n];
    let panels = Panels {
        rank: cols,
        out_dim: rows,
    };
    let block_rows = DECODE_BLOCK / cols;
    let mut dsts = vec![0usize; block_rows];
    for row in (0..rows).step_by(block_rows) {
        let take = block_rows.min(rows - row);
        let len = take * cols;
        let narrow = &mut narrow[..len];
        if !widen_checked(name, view, size, row * cols, &mut wide[..len], narrow)? {
            return Ok(None);
        }
        let dsts = &mut dsts[..take];
        for (d, r) in dsts.iter_mut().zip(row..) {
            *d = layout
                .interleave
                .map_or(r, |hd| interleaved_row(r, rows, hd));
        }
        // Row by row of Bᵀ, so writes run along each panel row; the
        // strided reads stay in L1.
        for k in 0..cols {
            for (&d, values) in dsts.iter().zip(narrow.chunks_exact(cols)) {
                out[panels.index(k, d)] = values[k];
            }
        }
    }
    Ok(Some(out))
}

/// Widens values `start..start + wide.len()` of the tensor into `wide`,
/// refuses non-finite ones, and stores them into `narrow` as `T`; false
/// when a value does not fit `T`.
fn widen_checked<T: Held>(
    name: &str,
    view: &TensorView<'_>,
    size: usize,
    start: usize,
    wide: &mut [f32],
    narrow: &mut [T],
) -> Result<bool> {
    let bytes = &view.data()[start * size..(start + wide.len()) * size];
    widen(view.dtype(), bytes, wide);
    if let Some(i) = first_non_finite(wide) {
        return Err(non_finite(name, start + i, wide[i]));
    }
    Ok(T::store(wide, narrow))
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
