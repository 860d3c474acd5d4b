//! f32 → GGML block encoders (round-to-nearest with max-based scales).
//!
//! These are used to build weights in tests and at load time (e.g. quantising a
//! safetensors checkpoint); they favour simplicity over GGML's iterative
//! scale search. Quants are computed against the *stored* (f16-rounded) scales
//! so rounding of the scale itself does not add error.

use half::{bf16, f16};

use super::blocks::{QK, QK_K};
use super::types::GgmlType;

/// Encodes one row (`x.len()` a multiple of the block length) into `out`
/// (`ty.row_bytes(x.len())` bytes).
pub(crate) fn quantize_row(ty: GgmlType, x: &[f32], out: &mut [u8]) {
    let (bl, bb) = (ty.block_len(), ty.block_bytes());
    for (xb, ob) in x.chunks_exact(bl).zip(out.chunks_exact_mut(bb)) {
        match ty {
            GgmlType::F32 => ob.copy_from_slice(&xb[0].to_le_bytes()),
            GgmlType::F16 => ob.copy_from_slice(&f16::from_f32(xb[0]).to_le_bytes()),
            GgmlType::BF16 => ob.copy_from_slice(&bf16::from_f32(xb[0]).to_le_bytes()),
            GgmlType::Q4_0 => q4_0(xb, ob),
            GgmlType::Q4_1 => q4_1(xb, ob),
            GgmlType::Q8_0 => q8(xb, ob, false),
            GgmlType::Q8_1 => q8(xb, ob, true),
            GgmlType::Q8_K => q8_k(xb, ob),
            GgmlType::Q4_K | GgmlType::Q5_K => q45_k(ty, xb, ob),
            GgmlType::Q6_K => q6_k(xb, ob),
        }
    }
}

/// f16-rounds `v`, writes it at `out[off..off+2]` and returns the rounded value.
fn put_f16(out: &mut [u8], off: usize, v: f32) -> f32 {
    let h = f16::from_f32(v);
    out[off..off + 2].copy_from_slice(&h.to_le_bytes());
    h.to_f32()
}

/// `round(x / d)` clamped to `lo..=hi`; 0 when `d` is 0 (an all-zero block).
fn q_near(x: f32, d: f32, lo: i32, hi: i32) -> i32 {
    if d == 0.0 {
        return 0;
    }
    ((x / d).round() as i32).clamp(lo, hi)
}

/// The element with the largest magnitude, sign kept.
fn signed_absmax(x: &[f32]) -> f32 {
    x.iter()
        .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
}

fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, &v| m.max(v.abs()))
}

/// Packs 32 values 0..16 as GGML nibbles: low nibble = element l, high = element l + 16.
fn pack_nibbles(q: &[i32; QK], out: &mut [u8]) {
    for l in 0..16 {
        out[l] = (q[l] as u8) | ((q[l + 16] as u8) << 4);
    }
}

/// Q4_0: the largest-magnitude value maps to q = 0 (i.e. -8 · d), as GGML does.
fn q4_0(x: &[f32], out: &mut [u8]) {
    let d = put_f16(out, 0, signed_absmax(x) / -8.0);
    let q: [i32; QK] = std::array::from_fn(|i| q_near(x[i], d, -8, 7) + 8);
    pack_nibbles(&q, &mut out[2..]);
}

fn q4_1(x: &[f32], out: &mut [u8]) {
    let lo = x.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let d = put_f16(out, 0, (hi - lo) / 15.0);
    let m = put_f16(out, 2, lo);
    let q: [i32; QK] = std::array::from_fn(|i| q_near(x[i] - m, d, 0, 15));
    pack_nibbles(&q, &mut out[4..]);
}

/// Q8_0 `{d, qs}` or Q8_1 `{d, s = d·Σq, qs}`.
fn q8(x: &[f32], out: &mut [u8], with_sum: bool) {
    let d = put_f16(out, 0, amax(x) / 127.0);
    let start = if with_sum { 4 } else { 2 };
    let mut sum = 0i32;
    for (o, &v) in out[start..start + QK].iter_mut().zip(x) {
        let q = q_near(v, d, -127, 127);
        sum += q;
        *o = q as i8 as u8;
    }
    if with_sum {
        put_f16(out, 2, d * sum as f32);
    }
}

fn q8_k(x: &[f32], out: &mut [u8]) {
    let d = amax(x) / 127.0;
    out[0..4].copy_from_slice(&d.to_le_bytes());
    for (g, xs) in x.chunks_exact(16).enumerate() {
        let mut sum = 0i16;
        for (l, &v) in xs.iter().enumerate() {
            let q = q_near(v, d, -127, 127);
            sum += q as i16;
            out[4 + 16 * g + l] = q as i8 as u8;
        }
        out[260 + 2 * g..262 + 2 * g].copy_from_slice(&sum.to_le_bytes());
    }
}

/// Packs eight 6-bit scales and mins into the 12-byte Q4_K / Q5_K layout
/// (the inverse of [`super::blocks::k_scale_min`]).
fn pack_k_scales(sc: &[u8; 8], mn: &[u8; 8], out: &mut [u8]) {
    for j in 0..4 {
        out[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        out[j + 4] = (mn[j] & 63) | ((mn[j + 4] >> 4) << 6);
        out[j + 8] = (sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4);
    }
}

/// Q4_K / Q5_K: each sub-block of 32 gets `x ≈ d·sc·q − dmin·m` with q in
/// 0..=nmax, from its own min (≤ 0) and max; the 8 scales and mins are then
/// quantised to 6 bits against the super-block's largest.
fn q45_k(ty: GgmlType, x: &[f32], out: &mut [u8]) {
    let five = ty == GgmlType::Q5_K;
    let nmax = if five { 31.0 } else { 15.0 };
    let mut scale = [0f32; 8];
    let mut neg_min = [0f32; 8];
    for (j, s) in x.chunks_exact(QK).enumerate() {
        let lo = s.iter().copied().fold(0.0f32, f32::min);
        let hi = s.iter().copied().fold(lo, f32::max);
        scale[j] = (hi - lo) / nmax;
        neg_min[j] = -lo;
    }
    let d = put_f16(out, 0, scale.iter().copied().fold(0.0, f32::max) / 63.0);
    let dmin = put_f16(out, 2, neg_min.iter().copied().fold(0.0, f32::max) / 63.0);
    let sc: [u8; 8] = std::array::from_fn(|j| q_near(scale[j], d, 0, 63) as u8);
    let mn: [u8; 8] = std::array::from_fn(|j| q_near(neg_min[j], dmin, 0, 63) as u8);
    pack_k_scales(&sc, &mn, &mut out[4..16]);
    let (qh_off, qs_off) = if five { (16, 48) } else { (0, 16) };
    if five {
        out[16..48].fill(0);
    }
    for (j, s) in x.chunks_exact(QK).enumerate() {
        let step = d * f32::from(sc[j]);
        let offset = dmin * f32::from(mn[j]);
        for (l, &v) in s.iter().enumerate() {
            let q = q_near(v + offset, step, 0, nmax as i32) as u8;
            let byte = &mut out[qs_off + (j / 2) * QK + l];
            if j % 2 == 0 {
                *byte = q & 0x0F;
            } else {
                *byte |= (q & 0x0F) << 4;
            }
            if five {
                out[qh_off + l] |= ((q >> 4) & 1) << j;
            }
        }
    }
}

/// Q6_K: each group of 16 gets `x ≈ d·sc·(q − 32)`, its largest-magnitude value
/// mapping to q − 32 = −32; the 16 scales are quantised to i8 the same way.
fn q6_k(x: &[f32], out: &mut [u8]) {
    let scale: [f32; 16] = std::array::from_fn(|g| signed_absmax(&x[16 * g..16 * g + 16]) / -32.0);
    let d = put_f16(out, 208, signed_absmax(&scale) / -128.0);
    let sc: [i8; 16] = std::array::from_fn(|g| q_near(scale[g], d, -128, 127) as i8);
    for (g, s) in sc.iter().enumerate() {
        out[192 + g] = *s as u8;
    }
    out[..192].fill(0);
    for (e, &v) in x.iter().enumerate().take(QK_K) {
        let step = d * f32::from(sc[e / 16]);
        let q = (q_near(v, step, -32, 31) + 32) as u8;
        let (h, k, l) = (e / 128, (e % 128) / 32, e % 32);
        out[64 * h + 32 * (k % 2) + l] |= (q & 0x0F) << (4 * (k / 2));
        out[128 + 32 * h + l] |= (q >> 4) << (2 * k);
    }
}
