//! AVX-512 VNNI kernels for the 32-block formats (Q4_0, Q4_1, Q8_0, Q8_1).
//!
//! Two consecutive weight blocks fill one 512-bit register, in the element
//! order of the two matching activation blocks, and one `vpdpbusd` (u8 × i8,
//! four products summed per i32 lane) replaces AVX2's `maddubs` + `madd`.
//! `vpdpbusd` needs unsigned weights: nibbles already are; signed Q8 bytes are
//! offset by +128 and the offset removed through the activation sums
//! (`−128 · d_w · s`). Lanes 0..8 belong to the first block and 8..16 to the
//! second, so one permute spreads the two `d_w · d_x` scales over the lanes.
//! (Pre-spreading activation scales in memory to save that permute measured
//! no faster on Zen 4: the loop is bound by the 512-bit float/int ops.)
//! The other formats use the AVX2 kernels (every AVX-512 CPU has AVX2).

use std::arch::x86_64::*;

use super::XRows;
use super::avx2::{self, Fmt32, Q4_0, Q4_1, Q8_0, Q8_1, check_q8, hsum, lane1, nibbles, step};
use crate::quant::act::ActRow;
use crate::quant::blocks::QK;
use crate::quant::types::GgmlType;

/// See [`super::rows`].
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI;
/// `w.len() == out.len() * row_bytes`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn rows<const K: usize>(
    ty: GgmlType,
    w: &[u8],
    row_bytes: usize,
    xs: &XRows<'_, K>,
    out: &mut [[f32; K]],
) {
    let x = match xs {
        XRows::Q8(x)
            if matches!(
                ty,
                GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 | GgmlType::Q8_1
            ) =>
        {
            x
        }
        // SAFETY: AVX2/FMA/F16C are a subset of this function's features.
        _ => return unsafe { avx2::rows(ty, w, row_bytes, xs, out) },
    };
    check_q8(ty, row_bytes, x);
    for (r, o) in w.chunks_exact(row_bytes).zip(out.iter_mut()) {
        // SAFETY: activation rows hold every block of the row (checked above).
        *o = unsafe {
            match ty {
                GgmlType::Q4_0 => row_pairs::<Q4_0, K>(r, x),
                GgmlType::Q4_1 => row_pairs::<Q4_1, K>(r, x),
                GgmlType::Q8_0 => row_pairs::<Q8_0, K>(r, x),
                _ => row_pairs::<Q8_1, K>(r, x),
            }
        };
    }
}

/// A 32-block format processed two blocks at a time.
trait Pair: Fmt32 {
    /// Multiplier of the accumulated `hdr[1] · s` terms (includes the +128 offset for bytes).
    const PAIR_MIN: f32;
    /// `[scale0, min0, scale1, min1]` of the blocks at `p0` and `p1`.
    ///
    /// # Safety
    /// Both point at whole blocks; AVX-512 + F16C available.
    unsafe fn header2(p0: *const u8, p1: *const u8) -> __m128;
    /// Both blocks' quants as u8, in activation element order.
    ///
    /// # Safety
    /// As for `header2`.
    unsafe fn quants2(p0: *const u8, p1: *const u8) -> __m512i;
}

/// Builds `[d0, d0, d1, d1]` from the f16 scales at the start of two blocks.
///
/// # Safety
/// Both pointers valid for 2 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn d_pair(p0: *const u8, p1: *const u8) -> __m128 {
    // SAFETY: 2 readable bytes each (caller).
    let (a, b) = unsafe {
        (
            p0.cast::<i16>().read_unaligned(),
            p1.cast::<i16>().read_unaligned(),
        )
    };
    _mm_cvtph_ps(_mm_setr_epi16(a, a, b, b, 0, 0, 0, 0))
}

/// Two blocks of 16 nibble bytes → `[b0 lo, b0 hi, b1 lo, b1 hi]` (128-bit lanes).
///
/// # Safety
/// Both pointers valid for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn nibbles2(q0: *const u8, q1: *const u8) -> __m512i {
    // SAFETY: 16 readable bytes each (caller).
    let y = unsafe {
        _mm256_inserti128_si256::<1>(
            _mm256_castsi128_si256(_mm_loadu_si128(q0.cast())),
            _mm_loadu_si128(q1.cast()),
        )
    };
    let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(y), _mm256_srli_epi16::<4>(y));
    let z = _mm512_and_si512(z, _mm512_set1_epi8(0x0F));
    // z = [b0 lo, b1 lo, b0 hi, b1 hi]; reorder 128-bit lanes to 0, 2, 1, 3.
    _mm512_shuffle_i64x2::<0b11_01_10_00>(z, z)
}

/// Two blocks of 32 signed bytes → u8 (`q + 128`), block 0 then block 1.
///
/// # Safety
/// Both pointers valid for 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn bytes2(q0: *const u8, q1: *const u8) -> __m512i {
    // SAFETY: 32 readable bytes each (caller).
    let z = unsafe {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_loadu_si256(q0.cast())),
            _mm256_loadu_si256(q1.cast()),
        )
    };
    _mm512_xor_si512(z, _mm512_set1_epi8(-128))
}

impl Pair for Q4_0 {
    const PAIR_MIN: f32 = -8.0;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn header2(p0: *const u8, p1: *const u8) -> __m128 {
        // SAFETY: forwarded contract.
        unsafe { d_pair(p0, p1) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn quants2(p0: *const u8, p1: *const u8) -> __m512i {
        // SAFETY: quants follow the 2-byte header.
        unsafe { nibbles2(p0.add(2), p1.add(2)) }
    }
}

impl Pair for Q4_1 {
    const PAIR_MIN: f32 = 1.0;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn header2(p0: *const u8, p1: *const u8) -> __m128 {
        // SAFETY: each block starts with the f16 pair {d, m}.
        let (a, b) = unsafe {
            (
                p0.cast::<i32>().read_unaligned(),
                p1.cast::<i32>().read_unaligned(),
            )
        };
        _mm_cvtph_ps(_mm_setr_epi32(a, b, 0, 0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn quants2(p0: *const u8, p1: *const u8) -> __m512i {
        // SAFETY: quants follow the 4-byte header.
        unsafe { nibbles2(p0.add(4), p1.add(4)) }
    }
}

impl Pair for Q8_0 {
    const PAIR_MIN: f32 = -128.0;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn header2(p0: *const u8, p1: *const u8) -> __m128 {
        // SAFETY: forwarded contract.
        unsafe { d_pair(p0, p1) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn quants2(p0: *const u8, p1: *const u8) -> __m512i {
        // SAFETY: quants follow the 2-byte header.
        unsafe { bytes2(p0.add(2), p1.add(2)) }
    }
}

impl Pair for Q8_1 {
    const PAIR_MIN: f32 = -128.0;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn header2(p0: *const u8, p1: *const u8) -> __m128 {
        // SAFETY: forwarded contract.
        unsafe { d_pair(p0, p1) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn quants2(p0: *const u8, p1: *const u8) -> __m512i {
        // SAFETY: quants follow the 4-byte header {d, s}.
        unsafe { bytes2(p0.add(4), p1.add(4)) }
    }
}

/// `m[1] + m[3]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn odd_lanes(m: __m128) -> f32 {
    let t = _mm_movehdup_ps(m);
    _mm_cvtss_f32(_mm_add_ss(t, _mm_movehl_ps(t, t)))
}

/// One row of a 32-block format against `K` activation rows, two blocks per step.
///
/// # Safety
/// Every activation row holds at least `row.len() / F::BYTES` blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn row_pairs<F: Pair, const K: usize>(row: &[u8], xs: &[ActRow<'_>; K]) -> [f32; K] {
    let nb = row.len() / F::BYTES;
    let mut acc = [_mm512_setzero_ps(); K];
    let mut macc = [_mm_setzero_ps(); K];
    let spread = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    let p = row.as_ptr();
    for b in (0..nb - nb % 2).step_by(2) {
        // SAFETY: blocks b and b+1 lie inside the row; activation blocks b, b+1
        // (64 quants, two [d, s] pairs) exist in every activation row (caller).
        unsafe {
            let (p0, p1) = (p.add(b * F::BYTES), p.add((b + 1) * F::BYTES));
            let hdr = F::header2(p0, p1);
            let q = F::quants2(p0, p1);
            for k in 0..K {
                let x = _mm512_loadu_si512(xs[k].qs.as_ptr().add(b * QK).cast());
                let prod = _mm_mul_ps(hdr, _mm_loadu_ps(xs[k].ds.as_ptr().add(b).cast()));
                let scale = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(prod));
                let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, x);
                acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[k]);
                if F::PAIR_MIN != 0.0 {
                    macc[k] = _mm_add_ps(macc[k], prod);
                }
            }
        }
    }
    let mut res: [f32; K] =
        std::array::from_fn(|k| _mm512_reduce_add_ps(acc[k]) + F::PAIR_MIN * odd_lanes(macc[k]));
    if nb % 2 == 1 {
        // SAFETY: as above, for the last block.
        let tail = unsafe { tail_block::<F, K>(p.add((nb - 1) * F::BYTES), xs, nb - 1) };
        res.iter_mut().zip(tail).for_each(|(r, t)| *r += t);
    }
    res
}

/// The odd last block of a row, with the AVX2 single-block step.
///
/// # Safety
/// `blk` is a whole block; activation block `b` exists.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tail_block<F: Fmt32, const K: usize>(
    blk: *const u8,
    xs: &[ActRow<'_>; K],
    b: usize,
) -> [f32; K] {
    let mut acc = [_mm256_setzero_ps(); K];
    let mut macc = [_mm_setzero_ps(); K];
    let ones = _mm256_set1_epi16(1);
    // SAFETY: forwarded contract.
    unsafe {
        let hdr = F::header(blk);
        if F::SIGNED {
            let q = _mm256_loadu_si256(blk.add(F::QOFF).cast());
            step::<K, true, false>(&mut acc, &mut macc, q, ones, hdr, xs, b);
        } else {
            step::<K, false, true>(
                &mut acc,
                &mut macc,
                nibbles(blk.add(F::QOFF)),
                ones,
                hdr,
                xs,
                b,
            );
        }
    }
    std::array::from_fn(|k| hsum(acc[k]) + F::MIN_FACTOR * lane1(macc[k]))
}
