//! LoRA factor storage in f32, f16 or 8-bit blocks, and the two products
//! the forward pass needs from it.
//!
//! With many distinct adapters in a decode step the factors stream from DRAM
//! once per step each, so their width is the step's cost: holding them as
//! f16 halves it (and halves what an adapter takes of the RAM cache), at a
//! rounding error far below what LoRA training resolves. Serving stacks do
//! the same (vLLM's `--lora-dtype`, llama.cpp's f16 adapter files); f32
//! stays available where exactness matters (exports, tests). `q8` (see
//! [`Q8Values`]) takes 1.125 bytes per value, for nodes whose steps carry
//! many distinct adapters.
//!
//! The kernels widen f16 (F16C) or bytes to f32 in registers and accumulate
//! in f32.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use half::f16;
use half::slice::HalfFloatSliceExt;
use serde::{Deserialize, Serialize};

use super::Panels;
use super::q8::Q8Values;
use crate::ops;

/// The element type adapter factors are held in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraDtype {
    /// Exactly the values the file gave (after widening F16/BF16).
    #[default]
    F32,
    /// Rounded to IEEE half precision: half the memory and bandwidth. A
    /// module whose values exceed f16's range (±65504) stays f32.
    F16,
    /// Signed bytes with an f32 scale per 32 values ([`Q8Values`]): 1.125
    /// bytes per value.
    Q8,
}

impl LoraDtype {
    /// Every dtype, widest first.
    pub const ALL: [Self; 3] = [Self::F32, Self::F16, Self::Q8];

    /// The lowercase name used in configs and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8 => "q8",
        }
    }
}

impl fmt::Display for LoraDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LoraDtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Self::F32),
            "f16" | "float16" | "half" => Ok(Self::F16),
            "q8" | "int8" => Ok(Self::Q8),
            other => Err(format!(
                "unknown LoRA dtype `{other}` (expected f32, f16 or q8)"
            )),
        }
    }
}

/// One factor matrix, row-major, in its held element type.
#[derive(Clone, Debug, PartialEq)]
pub enum Factor {
    /// Single precision.
    F32(Vec<f32>),
    /// Half precision.
    F16(Vec<f16>),
    /// Bytes with block scales.
    Q8(Q8Values),
}

impl Factor {
    /// `values` held as `dtype`. For f16, values beyond its range keep the
    /// factor in f32 rather than turning into infinities.
    pub fn from_f32(values: Vec<f32>, dtype: LoraDtype) -> Self {
        match dtype {
            LoraDtype::F16 if fits_f16(&values) => {
                let mut half = vec![f16::ZERO; values.len()];
                half.convert_from_f32_slice(&values);
                Self::F16(half)
            }
            LoraDtype::Q8 => Self::Q8(Q8Values::quantize(&values)),
            _ => Self::F32(values),
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F16(v) => v.len(),
            Self::Q8(q) => q.len(),
        }
    }

    /// True when the factor holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type held.
    pub fn dtype(&self) -> LoraDtype {
        match self {
            Self::F32(_) => LoraDtype::F32,
            Self::F16(_) => LoraDtype::F16,
            Self::Q8(_) => LoraDtype::Q8,
        }
    }

    /// Bytes of values held.
    pub fn bytes(&self) -> usize {
        match self {
            Self::F32(v) => std::mem::size_of_val(v.as_slice()),
            Self::F16(v) => std::mem::size_of_val(v.as_slice()),
            Self::Q8(q) => q.bytes(),
        }
    }

    /// Bytes the values would take held as `dtype` (see [`Factor::from_f32`]).
    pub fn bytes_as(&self, dtype: LoraDtype) -> usize {
        match (self, dtype) {
            (f, d) if f.dtype() == d => self.bytes(),
            (Self::F32(v), LoraDtype::F16) if !fits_f16(v) => self.bytes(),
            (_, LoraDtype::F32) => 4 * self.len(),
            (_, LoraDtype::F16) => 2 * self.len(),
            (_, LoraDtype::Q8) => Q8Values::bytes_for(self.len()),
        }
    }

    /// The values as f32 (borrowed when already f32).
    pub fn to_f32(&self) -> Cow<'_, [f32]> {
        match self {
            Self::F32(v) => Cow::Borrowed(v),
            Self::F16(v) => {
                let mut out = vec![0f32; v.len()];
                v.convert_to_f32_slice(&mut out);
                Cow::Owned(out)
            }
            Self::Q8(q) => Cow::Owned(q.to_f32()),
        }
    }

    /// `x · self[start..start + x.len()]`.
    ///
    /// # Panics
    /// If the range is outside the factor.
    pub fn dot(&self, start: usize, x: &[f32]) -> f32 {
        let end = start + x.len();
        match self {
            Self::F32(v) => ops::dot(x, &v[start..end]),
            Self::F16(v) => dot_f16(x, &v[start..end]),
            Self::Q8(q) => q.dot(start, x),
        }
    }

    /// `out += Σ_k s[k]·Bᵀ[k, cols]` for a `B` held as `panels`: the expand
    /// of output columns `cols` of one row (`out` holds exactly those
    /// columns). Each panel's piece is `s.len()` rows of contiguous values.
    ///
    /// # Panics
    /// If `out` is shorter than `cols` or the panels do not lie inside the
    /// factor.
    pub fn panel_update(&self, s: &[f32], panels: Panels, cols: Range<usize>, out: &mut [f32]) {
        let first = cols.start;
        for piece in panels.pieces(cols) {
            let o = &mut out[piece.cols.start - first..piece.cols.end - first];
            self.rank_update(s, piece.start, piece.stride, o);
        }
    }

    /// `out += Σ_k s[k]·self[start + k·stride..][..out.len()]`: `s.len()`
    /// rows `stride` apart (see [`ops::rank_update`]).
    ///
    /// # Panics
    /// If the rows read do not lie inside the factor.
    pub(super) fn rank_update(&self, s: &[f32], start: usize, stride: usize, out: &mut [f32]) {
        match self {
            Self::F32(v) => ops::rank_update(s, &v[start.min(v.len())..], stride, out),
            Self::F16(v) => rank_update_f16(s, &v[start.min(v.len())..], stride, out),
            Self::Q8(q) => q.rank_update(s, start, stride, out),
        }
    }
}

/// Whether every value is within f16's finite range.
fn fits_f16(values: &[f32]) -> bool {
    values.iter().fold(0f32, |m, x| m.max(x.abs())) <= f16::MAX.to_f32()
}

/// Rounds finite `src` into `dst` (equal lengths) as f16, or returns false
/// (leaving `dst` unspecified) when a value is beyond f16's range. One pass:
/// this is most of the work of loading an adapter as f16.
pub(super) fn narrow_f16(src: &[f32], dst: &mut [f16]) -> bool {
    assert_eq!(src.len(), dst.len(), "narrow_f16: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if has_f16_kernels() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked just above);
        // the lengths are equal (asserted above).
        return unsafe { x86::narrow(src, dst) };
    }
    if !fits_f16(src) {
        return false;
    }
    dst.convert_from_f32_slice(src);
    true
}

/// Dot product of f32 `x` with f16 `w` of the same length.
fn dot_f16(x: &[f32], w: &[f16]) -> f32 {
    assert_eq!(x.len(), w.len(), "dot_f16: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if has_f16_kernels() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked just above);
        // the lengths are equal (asserted above).
        return unsafe { x86::dot(x, w) };
    }
    x.iter().zip(w).map(|(a, b)| a * b.to_f32()).sum()
}

/// [`Factor::rank_update`] for f16 rows.
fn rank_update_f16(s: &[f32], w: &[f16], stride: usize, out: &mut [f32]) {
    let needed = match s.len() {
        0 => return,
        k => (k - 1) * stride + out.len(),
    };
    assert!(w.len() >= needed, "rank_update_f16: matrix too short");
    #[cfg(target_arch = "x86_64")]
    if has_f16_kernels() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked just above),
        // and rows 0..s.len() of `out.len()` values lie inside `w` (asserted).
        return unsafe { x86::rank_update(s, w.as_ptr(), stride, out) };
    }
    rank_update_f16_portable(s, w, stride, out);
}

fn rank_update_f16_portable(s: &[f32], w: &[f16], stride: usize, out: &mut [f32]) {
    for (k, &sk) in s.iter().enumerate() {
        let row = &w[k * stride..k * stride + out.len()];
        out.iter_mut()
            .zip(row)
            .for_each(|(o, v)| *o += sk * v.to_f32());
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) fn has_f16_kernels() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| ops::has_avx2_fma() && is_x86_feature_detected!("f16c"))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    /// [`super::narrow_f16`].
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `src` and `dst` have equal lengths.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn narrow(src: &[f32], dst: &mut [f16]) -> bool {
        let n = src.len().min(dst.len());
        let limit = _mm256_set1_ps(f16::MAX.to_f32());
        let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let mut over = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n keeps the load and the 16-byte store in bounds.
            unsafe {
                let v = _mm256_loadu_ps(src.as_ptr().add(i));
                let big = _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_and_ps(v, magnitude), limit);
                over = _mm256_or_ps(over, big);
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), h);
            }
            i += 8;
        }
        let mut fits = _mm256_movemask_ps(over) == 0;
        while i < n {
            fits &= src[i].abs() <= f16::MAX.to_f32();
            dst[i] = f16::from_f32(src[i]);
            i += 1;
        }
        fits
    }

    /// Eight f16 values at `p` widened to f32.
    ///
    /// # Safety
    /// The CPU must support F16C and AVX; eight values at `p` are readable.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const f16) -> __m256 {
        // SAFETY: eight readable halves are sixteen readable bytes.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `x` and `w` have equal lengths.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot(x: &[f32], w: &[f16]) -> f32 {
        let n = x.len().min(w.len());
        let (px, pw) = (x.as_ptr(), w.as_ptr());
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut acc2, mut acc3) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // SAFETY (all loads): i + 32 <= n, i + 16 <= n, resp. i + 8 <= n, keeps reads in bounds.
        while i + 32 <= n {
            unsafe {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i)), load8(pw.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i + 8)), load8(pw.add(i + 8)), acc1);
                acc2 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i + 16)), load8(pw.add(i + 16)), acc2);
                acc3 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i + 24)), load8(pw.add(i + 24)), acc3);
            }
            i += 32;
        }
        acc0 = _mm256_add_ps(acc0, acc2);
        acc1 = _mm256_add_ps(acc1, acc3);
        while i + 16 <= n {
            unsafe {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i)), load8(pw.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i + 8)), load8(pw.add(i + 8)), acc1);
            }
            i += 16;
        }
        while i + 8 <= n {
            unsafe {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i)), load8(pw.add(i)), acc0);
            }
            i += 8;
        }
        let mut sum = crate::ops::x86::hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            sum += x[i] * w[i].to_f32();
            i += 1;
        }
        sum
    }

    /// `out += Σ_j s[j]·row_j`, row `j` being the `out.len()` halves at
    /// `rows + j·stride`: 64 outputs stay in eight registers across all rows.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; rows `0..s.len()` of
    /// `out.len()` values are readable.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rank_update(s: &[f32], rows: *const f16, stride: usize, out: &mut [f32]) {
        let n = out.len();
        let mut c = 0;
        while c + 64 <= n {
            // SAFETY: `out[c..c + 64]` exists and each row holds values c..c + 64.
            unsafe { block::<8>(s, rows, stride, out.as_mut_ptr(), c) };
            c += 64;
        }
        while c + 8 <= n {
            // SAFETY: as above, for eight values.
            unsafe { block::<1>(s, rows, stride, out.as_mut_ptr(), c) };
            c += 8;
        }
        for (j, &sj) in s.iter().enumerate() {
            for (i, o) in out.iter_mut().enumerate().skip(c) {
                // SAFETY: i < n keeps the read inside row j.
                *o += sj * unsafe { *rows.add(j * stride + i) }.to_f32();
            }
        }
    }

    /// Outputs `c..c + 8·V` over every row.
    ///
    /// # Safety
    /// As [`rank_update`], with `out[c..c + 8·V]` writable and in every row.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block<const V: usize>(
        s: &[f32],
        rows: *const f16,
        stride: usize,
        out: *mut f32,
        c: usize,
    ) {
        // SAFETY: in bounds by the caller's contract.
        unsafe {
            let o = out.add(c);
            let mut acc = [_mm256_setzero_ps(); V];
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(o.add(8 * i));
            }
            for (j, &sj) in s.iter().enumerate() {
                let sv = _mm256_set1_ps(sj);
                let r = rows.add(j * stride + c);
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(sv, load8(r.add(8 * i)), *a);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(o.add(8 * i), *a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn halves(n: usize, seed: f32) -> Vec<f16> {
        (0..n)
            .map(|i| f16::from_f32((i as f32 * seed).sin()))
            .collect()
    }

    #[test]
    fn f16_kernels_match_portable_sums() {
        for (k, n, stride) in [
            (0, 8, 8),
            (1, 5, 5),
            (3, 7, 9),
            (16, 200, 576),
            (8, 1536, 1536),
        ] {
            let s: Vec<f32> = (0..k).map(|i| (i as f32 * 0.41).cos()).collect();
            let w = halves(k * stride.max(n), 0.17);
            let mut fast: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let mut slow = fast.clone();
            rank_update_f16(&s, &w, stride, &mut fast);
            rank_update_f16_portable(&s, &w, stride, &mut slow);
            let worst = fast
                .iter()
                .zip(&slow)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-3, "k {k} n {n}: {worst}");
        }
        for n in [0, 1, 7, 8, 15, 16, 17, 100, 576] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.3).cos()).collect();
            let w = halves(n, 0.11);
            let want: f32 = x.iter().zip(&w).map(|(a, b)| a * b.to_f32()).sum();
            assert!((dot_f16(&x, &w) - want).abs() < 1e-3, "n {n}");
        }
    }

    #[test]
    fn f16_factors_round_and_out_of_range_ones_stay_f32() {
        let values = vec![0.1f32, -2.5, 1e-3];
        let f = Factor::from_f32(values.clone(), LoraDtype::F16);
        assert_eq!(f.dtype(), LoraDtype::F16);
        assert_eq!(f.bytes(), 6);
        for (a, b) in f.to_f32().iter().zip(&values) {
            assert!((a - b).abs() <= b.abs() * 1e-3);
        }
        let huge = Factor::from_f32(vec![1.0, 1e6], LoraDtype::F16);
        assert_eq!(huge, Factor::F32(vec![1.0, 1e6]));
        assert_eq!(huge.bytes_as(LoraDtype::F16), 8);
        assert_eq!(f.bytes_as(LoraDtype::F32), 12);
        assert_eq!(Factor::F32(values.clone()).bytes_as(LoraDtype::F16), 6);
        assert_eq!(
            Factor::from_f32(values.clone(), LoraDtype::F32),
            Factor::F32(values)
        );
    }

    #[test]
    fn narrowing_matches_rounding_and_flags_out_of_range() {
        let src: Vec<f32> = (0..37)
            .map(|i| (i as f32 * 0.731).sin() * 3.0e-3 * i as f32)
            .collect();
        let mut dst = vec![f16::ZERO; src.len()];
        assert!(narrow_f16(&src, &mut dst));
        let want: Vec<f16> = src.iter().map(|&v| f16::from_f32(v)).collect();
        assert_eq!(dst, want);
        for at in [3, 35] {
            let mut big = src.clone();
            big[at] = -7.0e4;
            assert!(!narrow_f16(&big, &mut dst), "{at}");
        }
    }

    #[test]
    fn dtype_names_parse_and_print() {
        for d in LoraDtype::ALL {
            assert_eq!(d.to_string().parse::<LoraDtype>(), Ok(d));
        }
        assert_eq!("float16".parse::<LoraDtype>(), Ok(LoraDtype::F16));
        assert_eq!("int8".parse::<LoraDtype>(), Ok(LoraDtype::Q8));
        assert!("bf8".parse::<LoraDtype>().unwrap_err().contains("bf8"));
    }
}
