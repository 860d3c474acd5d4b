//! AVX2 + FMA + F16C kernels.
//!
//! Integer formats: per 32-element block, the weight quants are unpacked to a
//! 32-byte vector once and multiplied with each of the `K` activation blocks
//! by `maddubs` (u8 × i8 → pairs of i16) and `madd` (→ 8 × i32). Unsigned
//! quants (nibbles, 5-bit) go in directly; signed ones use the sign trick
//! (|w| × sign(x, w)). Each block's i32 partial sums are scaled by
//! `d_w · d_x` into f32 lane accumulators; additive weight mins are applied
//! through the activation block sums `s` in a separate accumulator.

use std::arch::x86_64::*;

use super::XRows;
use super::avx2_kquant;
use crate::quant::act::ActRow;
use crate::quant::blocks::QK;
use crate::quant::types::GgmlType;

/// See [`super::rows`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w.len() == out.len() * row_bytes`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn rows<const K: usize>(
    ty: GgmlType,
    w: &[u8],
    row_bytes: usize,
    xs: &XRows<'_, K>,
    out: &mut [[f32; K]],
) {
    match xs {
        XRows::F32(x) => {
            check_f32(ty, row_bytes, x);
            for (r, o) in w.chunks_exact(row_bytes).zip(out.iter_mut()) {
                *o = match ty {
                    GgmlType::F16 => row_float::<F16, K>(r, x),
                    GgmlType::BF16 => row_float::<Bf16, K>(r, x),
                    _ => row_float::<F32, K>(r, x),
                };
            }
        }
        XRows::Q8(x) => {
            check_q8(ty, row_bytes, x);
            if !matches!(
                ty,
                GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 | GgmlType::Q8_1
            ) {
                // SAFETY: forwarded contract; activations checked above.
                unsafe { avx2_kquant::rows(ty, w, row_bytes, x, out) };
                return;
            }
            for (r, o) in w.chunks_exact(row_bytes).zip(out.iter_mut()) {
                // SAFETY: every row is `row_bytes` long and every activation row
                // covers as many elements (checked above).
                *o = unsafe {
                    match ty {
                        GgmlType::Q4_0 => row32::<Q4_0, K>(r, x),
                        GgmlType::Q4_1 => row32::<Q4_1, K>(r, x),
                        GgmlType::Q8_0 => row32::<Q8_0, K>(r, x),
                        _ => row32::<Q8_1, K>(r, x),
                    }
                };
            }
        }
    }
}

/// Checks that activation rows match a weight row of `row_bytes` bytes, so the
/// kernels' unchecked loads stay in bounds.
pub(super) fn check_q8<const K: usize>(ty: GgmlType, row_bytes: usize, xs: &[ActRow<'_>; K]) {
    let cols = row_bytes / ty.block_bytes() * ty.block_len();
    for x in xs {
        assert!(
            x.qs.len() >= cols && x.ds.len() >= cols / QK,
            "activation row shorter than weight row"
        );
    }
}

fn check_f32<const K: usize>(ty: GgmlType, row_bytes: usize, xs: &[&[f32]; K]) {
    let cols = row_bytes / ty.block_bytes();
    assert!(
        xs.iter().all(|x| x.len() == cols),
        "activation row length differs from weight row"
    );
}

/// Horizontal sum of 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Lane 1 of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn lane1(v: __m128) -> f32 {
    _mm_cvtss_f32(_mm_movehdup_ps(v))
}

/// 16 bytes of GGML nibbles → 32 bytes 0..16 in element order (low nibbles first).
///
/// # Safety
/// `p` must be valid for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes.
    let b = unsafe { _mm_loadu_si128(p.cast()) };
    _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16::<4>(b), b),
        _mm256_set1_epi8(0x0F),
    )
}

/// `[d, s, 0, 0]` of activation block `b`.
///
/// # Safety
/// `b < x.ds.len()`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn act_ds(x: &ActRow<'_>, b: usize) -> __m128 {
    // SAFETY: `b` is in bounds (caller); `[f32; 2]` is 8 bytes, loaded unaligned.
    unsafe { _mm_castpd_ps(_mm_load_sd(x.ds.as_ptr().add(b).cast())) }
}

/// Adds one weight block's contribution to the `K` accumulators.
///
/// `q`: the 32 weight quants (u8 if `!SIGNED`, else i8); `mul16`: per-i16-pair
/// multiplier for `madd` (ones, or per-16 sub-scales for Q6_K); `hdr`:
/// `[scale, min, ..]` so that `w = scale · mul · q + min`; activation block `b`.
///
/// # Safety
/// Each activation row must hold block `b`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn step<const K: usize, const SIGNED: bool, const MIN: bool>(
    acc: &mut [__m256; K],
    macc: &mut [__m128; K],
    q: __m256i,
    mul16: __m256i,
    hdr: __m128,
    xs: &[ActRow<'_>; K],
    b: usize,
) {
    let qa = if SIGNED { _mm256_sign_epi8(q, q) } else { q };
    for k in 0..K {
        // SAFETY: block `b` of row k exists (caller), i.e. 32 quants at 32·b.
        let x = unsafe { _mm256_loadu_si256(xs[k].qs.as_ptr().add(b * QK).cast()) };
        let xq = if SIGNED { _mm256_sign_epi8(x, q) } else { x };
        let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(qa, xq), mul16);
        // SAFETY: as above.
        let prod = _mm_mul_ps(hdr, unsafe { act_ds(&xs[k], b) });
        acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_broadcastss_ps(prod), acc[k]);
        if MIN {
            macc[k] = _mm_add_ps(macc[k], prod);
        }
    }
}

/// A GGML format with 32-element blocks.
pub(super) trait Fmt32 {
    /// Bytes per block.
    const BYTES: usize;
    /// Offset of the quants in a block.
    const QOFF: usize;
    /// Quants are signed bytes (else nibbles).
    const SIGNED: bool;
    /// Factor applied to the accumulated `hdr[1] · s` (0: no additive term).
    const MIN_FACTOR: f32;
    /// `[scale, min-coefficient, ..]` of the block at `p`.
    ///
    /// # Safety
    /// `p` must point at a whole block; the CPU must support F16C.
    unsafe fn header(p: *const u8) -> __m128;
}

/// Four f16 copies of the scale at `p`, widened.
///
/// # Safety
/// `p` valid for 2 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16x4(p: *const u8) -> __m128 {
    // SAFETY: the caller guarantees 2 readable bytes.
    _mm_cvtph_ps(_mm_set1_epi16(unsafe { p.cast::<i16>().read_unaligned() }))
}

/// `Q4_0`: `w = d·q − 8d` → nibbles with scale d and min term `−8·d·s`.
pub(super) struct Q4_0;
/// `Q4_1`: `w = d·q + m`.
pub(super) struct Q4_1;
/// `Q8_0`: `w = d·q`, signed bytes.
pub(super) struct Q8_0;
/// `Q8_1`: `w = d·q`, signed bytes after `{d, s}`.
pub(super) struct Q8_1;

impl Fmt32 for Q4_0 {
    const BYTES: usize = 18;
    const QOFF: usize = 2;
    const SIGNED: bool = false;
    const MIN_FACTOR: f32 = -8.0;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn header(p: *const u8) -> __m128 {
        // SAFETY: forwarded contract.
        unsafe { f16x4(p) }
    }
}

impl Fmt32 for Q4_1 {
    const BYTES: usize = 20;
    const QOFF: usize = 4;
    const SIGNED: bool = false;
    const MIN_FACTOR: f32 = 1.0;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn header(p: *const u8) -> __m128 {
        // SAFETY: a Q4_1 block starts with the f16 pair {d, m}.
        _mm_cvtph_ps(_mm_cvtsi32_si128(unsafe {
            p.cast::<i32>().read_unaligned()
        }))
    }
}

impl Fmt32 for Q8_0 {
    const BYTES: usize = 34;
    const QOFF: usize = 2;
    const SIGNED: bool = true;
    const MIN_FACTOR: f32 = 0.0;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn header(p: *const u8) -> __m128 {
        // SAFETY: forwarded contract.
        unsafe { f16x4(p) }
    }
}

impl Fmt32 for Q8_1 {
    const BYTES: usize = 36;
    const QOFF: usize = 4;
    const SIGNED: bool = true;
    const MIN_FACTOR: f32 = 0.0;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn header(p: *const u8) -> __m128 {
        // SAFETY: forwarded contract.
        unsafe { f16x4(p) }
    }
}

/// One row of a 32-block format against `K` activation rows.
///
/// # Safety
/// Every activation row holds at least `row.len() / F::BYTES` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn row32<F: Fmt32, const K: usize>(row: &[u8], xs: &[ActRow<'_>; K]) -> [f32; K] {
    let mut acc = [_mm256_setzero_ps(); K];
    let mut macc = [_mm_setzero_ps(); K];
    let ones = _mm256_set1_epi16(1);
    for (b, blk) in row.chunks_exact(F::BYTES).enumerate() {
        // SAFETY: `blk` is a whole block; activations hold block b (caller).
        unsafe {
            let hdr = F::header(blk.as_ptr());
            let q = if F::SIGNED {
                _mm256_loadu_si256(blk.as_ptr().add(F::QOFF).cast())
            } else {
                nibbles(blk.as_ptr().add(F::QOFF))
            };
            if F::SIGNED {
                step::<K, true, false>(&mut acc, &mut macc, q, ones, hdr, xs, b);
            } else {
                step::<K, false, true>(&mut acc, &mut macc, q, ones, hdr, xs, b);
            }
        }
    }
    std::array::from_fn(|k| hsum(acc[k]) + F::MIN_FACTOR * lane1(macc[k]))
}

/// A float weight format: 8 values widened to f32 at a time.
trait FloatFmt {
    /// Bytes per element.
    const SIZE: usize;
    /// Elements `8i..8i+8` widened.
    ///
    /// # Safety
    /// The row must hold them.
    unsafe fn load8(p: *const u8) -> __m256;
    /// One element (tails).
    fn one(row: &[u8], i: usize) -> f32;
}

struct F32;
struct F16;
struct Bf16;

impl FloatFmt for F32 {
    const SIZE: usize = 4;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const u8) -> __m256 {
        // SAFETY: 32 readable bytes (caller).
        unsafe { _mm256_loadu_ps(p.cast()) }
    }
    fn one(row: &[u8], i: usize) -> f32 {
        crate::quant::blocks::f32_at(row, 4 * i)
    }
}

impl FloatFmt for F16 {
    const SIZE: usize = 2;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const u8) -> __m256 {
        // SAFETY: 16 readable bytes (caller).
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
    }
    fn one(row: &[u8], i: usize) -> f32 {
        crate::quant::blocks::f16_at(row, 2 * i)
    }
}

impl FloatFmt for Bf16 {
    const SIZE: usize = 2;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const u8) -> __m256 {
        // SAFETY: 16 readable bytes (caller).
        let h = unsafe { _mm_loadu_si128(p.cast()) };
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
    fn one(row: &[u8], i: usize) -> f32 {
        crate::quant::blocks::bf16_at(row, 2 * i)
    }
}

/// One float-format row against `K` f32 activation rows (all `row.len() / SIZE` long).
#[target_feature(enable = "avx2,fma,f16c")]
fn row_float<F: FloatFmt, const K: usize>(row: &[u8], xs: &[&[f32]; K]) -> [f32; K] {
    let cols = row.len() / F::SIZE;
    let (mut a0, mut a1) = ([_mm256_setzero_ps(); K], [_mm256_setzero_ps(); K]);
    let mut i = 0;
    // Two accumulator sets hide FMA latency when K is small.
    while i + 16 <= cols {
        // SAFETY: elements i..i+16 exist in the row and in every activation row.
        unsafe {
            let w0 = F::load8(row.as_ptr().add(i * F::SIZE));
            let w1 = F::load8(row.as_ptr().add((i + 8) * F::SIZE));
            for k in 0..K {
                a0[k] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs[k].as_ptr().add(i)), a0[k]);
                a1[k] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xs[k].as_ptr().add(i + 8)), a1[k]);
            }
        }
        i += 16;
    }
    if i + 8 <= cols {
        // SAFETY: elements i..i+8 exist.
        unsafe {
            let w0 = F::load8(row.as_ptr().add(i * F::SIZE));
            for k in 0..K {
                a0[k] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs[k].as_ptr().add(i)), a0[k]);
            }
        }
        i += 8;
    }
    std::array::from_fn(|k| {
        let tail: f32 = (i..cols).map(|j| F::one(row, j) * xs[k][j]).sum();
        hsum(_mm256_add_ps(a0[k], a1[k])) + tail
    })
}

/// Quantises whole 32-blocks of `x` into `qs` / `ds` (see [`crate::quant::act`]).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_acts(x: &[f32], qs: &mut [i8], ds: &mut [[f32; 2]]) {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for ((xb, qb), d) in x
        .chunks_exact(QK)
        .zip(qs.chunks_exact_mut(QK))
        .zip(ds.iter_mut())
    {
        // SAFETY: `xb` holds 32 floats.
        let v: [__m256; 4] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_ps(xb.as_ptr().add(8 * i)) });
        let m01 = _mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask));
        let m23 = _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask));
        let amax = hmax(_mm256_max_ps(m01, m23));
        let id = _mm256_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
        let i: [__m256i; 4] = std::array::from_fn(|j| _mm256_cvtps_epi32(_mm256_mul_ps(v[j], id)));
        let packed = _mm256_packs_epi16(
            _mm256_packs_epi32(i[0], i[1]),
            _mm256_packs_epi32(i[2], i[3]),
        );
        // SAFETY: `qb` holds 32 bytes.
        unsafe {
            _mm256_storeu_si256(
                qb.as_mut_ptr().cast(),
                _mm256_permutevar8x32_epi32(packed, order),
            )
        };
        let sum = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        let dv = amax / 127.0;
        *d = [dv, dv * hsum(_mm256_cvtepi32_ps(sum))];
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
}
