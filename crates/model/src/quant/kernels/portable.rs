//! Scalar kernels for every type: the reference semantics of the SIMD paths and
//! the fallback on CPUs without them.

use super::XRows;
use crate::quant::act::ActRow;
use crate::quant::blocks::{QK, QK_K, Sub, decode_block, dequantize_row};
use crate::quant::types::GgmlType;

/// See [`super::rows`].
pub(super) fn rows<const K: usize>(
    ty: GgmlType,
    w: &[u8],
    row_bytes: usize,
    xs: &XRows<'_, K>,
    out: &mut [[f32; K]],
) {
    match xs {
        XRows::Q8(acts) => {
            for (row, o) in w.chunks_exact(row_bytes).zip(out.iter_mut()) {
                *o = row_q8(ty, row, acts);
            }
        }
        XRows::F32(x) => {
            let mut buf = vec![0f32; x[0].len()];
            for (row, o) in w.chunks_exact(row_bytes).zip(out.iter_mut()) {
                dequantize_row(ty, row, &mut buf);
                *o = std::array::from_fn(|k| buf.iter().zip(x[k]).map(|(a, b)| a * b).sum());
            }
        }
    }
}

/// One block-format row against `K` quantised activation rows.
fn row_q8<const K: usize>(ty: GgmlType, row: &[u8], acts: &[ActRow<'_>; K]) -> [f32; K] {
    let mut subs = [Sub::default(); QK_K / QK];
    let per_block = ty.block_len() / QK;
    let mut acc = [0f32; K];
    for (bi, block) in row.chunks_exact(ty.block_bytes()).enumerate() {
        decode_block(ty, block, &mut subs);
        for (si, sub) in subs.iter().take(per_block).enumerate() {
            let b = bi * per_block + si;
            for (a, x) in acc.iter_mut().zip(acts) {
                *a += sub_dot(sub, &x.qs[b * QK..(b + 1) * QK], x.ds[b]);
            }
        }
    }
    acc
}

/// `Σ value_i · x_i` for one sub-block: integer dots per 16-element half, then
/// the scales, then `min · s` for the additive part.
fn sub_dot(sub: &Sub, xq: &[i8], [d, s]: [f32; 2]) -> f32 {
    let half = |h: usize| -> i32 {
        (16 * h..16 * h + 16)
            .map(|i| i32::from(sub.q[i]) * i32::from(xq[i]))
            .sum()
    };
    d * (sub.scale[0] * half(0) as f32 + sub.scale[1] * half(1) as f32) + sub.min * s
}
