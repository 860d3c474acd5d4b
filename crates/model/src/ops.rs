//! Element-wise and small vector operations of the forward pass.
//!
//! Attention's dot products and weighted sums run over every cached position,
//! so they get an AVX2+FMA path chosen at run time; the rest are cheap and
//! written so the compiler can vectorise them.

/// Dot product of two equally long slices.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { x86::dot(a, b) };
    }
    dot_portable(a, b)
}

/// `y += alpha * x`.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { x86::axpy(alpha, x, y) };
    }
    axpy_portable(alpha, x, y);
}

fn axpy_portable(alpha: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
}

/// The cached keys and values one query head attends over: `len` positions,
/// position `j`'s key at `keys[j * stride + offset..]` (values likewise).
#[derive(Clone, Copy, Debug)]
pub struct KvHead<'a> {
    /// Keys of every position, `stride` floats apart.
    pub keys: &'a [f32],
    /// Values, laid out like the keys.
    pub values: &'a [f32],
    /// Floats between consecutive positions.
    pub stride: usize,
    /// Where this head starts inside a position's row.
    pub offset: usize,
    /// Positions attended over.
    pub len: usize,
}

impl KvHead<'_> {
    fn key(&self, j: usize, hd: usize) -> &[f32] {
        &self.keys[j * self.stride + self.offset..j * self.stride + self.offset + hd]
    }

    fn value(&self, j: usize, hd: usize) -> &[f32] {
        &self.values[j * self.stride + self.offset..j * self.stride + self.offset + hd]
    }
}

/// One query head attending over its cached positions:
/// `out = softmax(q·Kᵀ·scale)·V`. `scores` is scratch space. The SIMD path is
/// chosen once per head, not once per position.
pub fn attend_head(q: &[f32], kv: &KvHead<'_>, scale: f32, scores: &mut Vec<f32>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { x86::attend_head(q, kv, scale, scores, out) };
    }
    attend_head_with(q, kv, scale, scores, out, dot_portable, axpy_portable);
}

/// [`attend_head`] over the given dot and axpy primitives.
#[inline(always)]
fn attend_head_with(
    q: &[f32],
    kv: &KvHead<'_>,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
    dot: impl Fn(&[f32], &[f32]) -> f32,
    axpy: impl Fn(f32, &[f32], &mut [f32]),
) {
    let hd = q.len();
    scores.clear();
    scores.extend((0..kv.len).map(|j| dot(q, kv.key(j, hd)) * scale));
    softmax(scores);
    out.fill(0.0);
    for (j, &p) in scores.iter().enumerate() {
        axpy(p, kv.value(j, hd), out);
    }
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (ca, cb) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    let tail: f32 = a[chunks..]
        .iter()
        .zip(&b[chunks..])
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && std::env::var("CREDENCE_KERNEL").map_or(true, |k| k != "portable")
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn attend_head(
        q: &[f32],
        kv: &super::KvHead<'_>,
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        // SAFETY (both closures): this function only runs on AVX2+FMA CPUs.
        super::attend_head_with(
            q,
            kv,
            scale,
            scores,
            out,
            |a, b| unsafe { dot(a, b) },
            |a, x, y| unsafe { axpy(a, x, y) },
        );
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `a` and `b` have equal lengths.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY (all loads): i + 16 <= n, resp. i + 8 <= n, keeps reads in bounds.
        while i + 16 <= n {
            unsafe {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    acc1,
                );
            }
            i += 16;
        }
        while i + 8 <= n {
            unsafe {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            }
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `x` and `y` have equal lengths.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let va = _mm256_set1_ps(alpha);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n keeps both accesses in bounds.
            unsafe {
                let py = y.as_mut_ptr().add(i);
                _mm256_storeu_ps(
                    py,
                    _mm256_fmadd_ps(va, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(py)),
                );
            }
            i += 8;
        }
        while i < n {
            y[i] += alpha * x[i];
            i += 1;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

/// RMSNorm of one row: `out = x / rms(x) * weight`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (mean_sq + eps).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// Softmax in place (numerically stable).
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// SwiGLU: `gate = silu(gate) * up`, in place.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_matches_portable() {
        for n in [0, 1, 7, 8, 15, 16, 17, 64, 100] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            assert!((dot(&a, &b) - dot_portable(&a, &b)).abs() < 1e-4);
            let mut y1 = b.clone();
            axpy(0.5, &a, &mut y1);
            let y2: Vec<f32> = b.iter().zip(&a).map(|(y, x)| y + 0.5 * x).collect();
            assert!(y1.iter().zip(&y2).all(|(p, q)| (p - q).abs() < 1e-6));
        }
    }

    #[test]
    fn attend_head_matches_portable() {
        let (hd, stride, offset, n) = (16, 48, 16, 9);
        let q: Vec<f32> = (0..hd).map(|i| (i as f32 * 0.3).sin()).collect();
        let keys: Vec<f32> = (0..n * stride).map(|i| (i as f32 * 0.07).cos()).collect();
        let values: Vec<f32> = (0..n * stride).map(|i| (i as f32 * 0.13).sin()).collect();
        let (mut s1, mut s2) = (Vec::new(), Vec::new());
        let (mut o1, mut o2) = (vec![0f32; hd], vec![0f32; hd]);
        let kv = KvHead {
            keys: &keys,
            values: &values,
            stride,
            offset,
            len: n,
        };
        attend_head(&q, &kv, 0.25, &mut s1, &mut o1);
        attend_head_with(&q, &kv, 0.25, &mut s2, &mut o2, dot_portable, axpy_portable);
        assert!(o1.iter().zip(&o2).all(|(a, b)| (a - b).abs() < 1e-5));
        // The weights are a softmax: the output is a convex mix of the values.
        let w: f32 = s1.iter().sum();
        assert!((w - 1.0).abs() < 1e-5);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut v = vec![1000.0, 1001.0, -5.0];
        softmax(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(v[1] > v[0] && v[0] > v[2]);
    }
}
