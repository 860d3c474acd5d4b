//! AVX2 kernels for the 256-element super-block formats (Q4_K, Q5_K, Q6_K, Q8_K).
//!
//! Each super-block is handled as 8 sub-blocks of 32 against 8 activation
//! blocks, with the same accumulation step as the 32-block formats: Q4_K/Q5_K
//! sub-blocks are unsigned with `scale = d·sc`, `min = −dmin·m`; Q6_K
//! sub-blocks are signed with two i8 scales per 32 applied in the `madd`.

use std::arch::x86_64::*;

use super::avx2::{hsum, lane1, step};
use crate::quant::act::ActRow;
use crate::quant::blocks::{f16_at, f32_at, k_scale_min};
use crate::quant::types::GgmlType;

/// Row kernels for the K formats; see [`super::rows`].
///
/// # Safety
/// AVX2/FMA/F16C available; activation rows checked by [`super::avx2::check_q8`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn rows<const K: usize>(
    ty: GgmlType,
    w: &[u8],
    row_bytes: usize,
    xs: &[ActRow<'_>; K],
    out: &mut [[f32; K]],
) {
    for (r, o) in w.chunks_exact(row_bytes).zip(out.iter_mut()) {
        // SAFETY: forwarded contract: activations hold every block of the row.
        *o = unsafe {
            match ty {
                GgmlType::Q4_K => row_q45k::<false, K>(r, xs),
                GgmlType::Q5_K => row_q45k::<true, K>(r, xs),
                GgmlType::Q6_K => row_q6k(r, xs),
                GgmlType::Q8_K => row_q8k(r, xs),
                _ => unreachable!("float and 32-block formats are handled by avx2::rows"),
            }
        };
    }
}

/// Q4_K (`FIVE = false`, 144-byte blocks) or Q5_K (`FIVE = true`, 176 bytes).
///
/// # Safety
/// Activations hold `8 · blocks` activation blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_q45k<const FIVE: bool, const K: usize>(row: &[u8], xs: &[ActRow<'_>; K]) -> [f32; K] {
    let bytes = if FIVE { 176 } else { 144 };
    let qs_off = if FIVE { 48 } else { 16 };
    let mut acc = [_mm256_setzero_ps(); K];
    let mut macc = [_mm_setzero_ps(); K];
    let (ones, low4, bit0) = (
        _mm256_set1_epi16(1),
        _mm256_set1_epi8(0x0F),
        _mm256_set1_epi8(1),
    );
    for (sb, blk) in row.chunks_exact(bytes).enumerate() {
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        let p = blk.as_ptr();
        // SAFETY: Q5_K blocks hold 32 `qh` bytes at offset 16.
        let qh = if FIVE {
            unsafe { _mm256_loadu_si256(p.add(16).cast()) }
        } else {
            _mm256_setzero_si256()
        };
        for c in 0..4 {
            // SAFETY: 32 quant bytes per pair of sub-blocks, inside the block.
            let pair = unsafe { _mm256_loadu_si256(p.add(qs_off + 32 * c).cast()) };
            for half in 0..2 {
                let j = 2 * c + half;
                let (sc, m) = k_scale_min(&blk[4..16], j);
                let hdr = _mm_setr_ps(d * f32::from(sc), -(dmin * f32::from(m)), 0.0, 0.0);
                let shifted = if half == 0 {
                    pair
                } else {
                    _mm256_srli_epi16::<4>(pair)
                };
                let mut q = _mm256_and_si256(shifted, low4);
                if FIVE {
                    let hb =
                        _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(j as i32)), bit0);
                    q = _mm256_or_si256(q, _mm256_slli_epi16::<4>(hb));
                }
                // SAFETY: activation block 8·sb + j exists (caller).
                unsafe {
                    step::<K, false, true>(&mut acc, &mut macc, q, ones, hdr, xs, 8 * sb + j)
                };
            }
        }
    }
    std::array::from_fn(|k| hsum(acc[k]) + lane1(macc[k]))
}

/// Q6_K (210-byte blocks): quants `ql | qh << 4` minus 32, two i8 scales per sub-block.
///
/// # Safety
/// Activations hold `8 · blocks` activation blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_q6k<const K: usize>(row: &[u8], xs: &[ActRow<'_>; K]) -> [f32; K] {
    let mut acc = [_mm256_setzero_ps(); K];
    let mut macc = [_mm_setzero_ps(); K];
    let (low4, two, off) = (
        _mm256_set1_epi8(0x0F),
        _mm256_set1_epi8(3),
        _mm256_set1_epi8(32),
    );
    for (sb, blk) in row.chunks_exact(210).enumerate() {
        let p = blk.as_ptr();
        let hdr = _mm_set1_ps(f16_at(blk, 208));
        for h in 0..2 {
            // SAFETY: each half reads 64 `ql` bytes and 32 `qh` bytes inside the block.
            let (ql0, ql1, qh) = unsafe {
                (
                    _mm256_loadu_si256(p.add(64 * h).cast()),
                    _mm256_loadu_si256(p.add(64 * h + 32).cast()),
                    _mm256_loadu_si256(p.add(128 + 32 * h).cast()),
                )
            };
            for k in 0..4 {
                let lo_src = if k % 2 == 0 { ql0 } else { ql1 };
                let lo = _mm256_and_si256(
                    if k < 2 {
                        lo_src
                    } else {
                        _mm256_srli_epi16::<4>(lo_src)
                    },
                    low4,
                );
                let hi =
                    _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k as i32)), two);
                let q = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16::<4>(hi)), off);
                let s = 192 + 8 * h + 2 * k;
                let sc = _mm256_set_m128i(
                    _mm_set1_epi16(i16::from(blk[s + 1] as i8)),
                    _mm_set1_epi16(i16::from(blk[s] as i8)),
                );
                // SAFETY: activation block 8·sb + 4·h + k exists (caller).
                unsafe {
                    step::<K, true, false>(&mut acc, &mut macc, q, sc, hdr, xs, 8 * sb + 4 * h + k)
                };
            }
        }
    }
    std::array::from_fn(|k| hsum(acc[k]))
}

/// Q8_K (292-byte blocks): f32 scale, 256 signed quants (the bsums are not needed).
///
/// # Safety
/// Activations hold `8 · blocks` activation blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_q8k<const K: usize>(row: &[u8], xs: &[ActRow<'_>; K]) -> [f32; K] {
    let mut acc = [_mm256_setzero_ps(); K];
    let mut macc = [_mm_setzero_ps(); K];
    let ones = _mm256_set1_epi16(1);
    for (sb, blk) in row.chunks_exact(292).enumerate() {
        let hdr = _mm_set1_ps(f32_at(blk, 0));
        for j in 0..8 {
            // SAFETY: sub-block j's 32 quants lie at 4 + 32·j inside the block, and
            // activation block 8·sb + j exists (caller).
            unsafe {
                let q = _mm256_loadu_si256(blk.as_ptr().add(4 + 32 * j).cast());
                step::<K, true, false>(&mut acc, &mut macc, q, ones, hdr, xs, 8 * sb + j);
            }
        }
    }
    std::array::from_fn(|k| hsum(acc[k]))
}
