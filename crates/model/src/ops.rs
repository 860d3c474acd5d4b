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

/// `out += Σ_k s[k]·w[k·stride..k·stride + out.len()]`: a rank-`s.len()`
/// update of one output row from a row-major `[s.len(), stride]` matrix
/// (LoRA's expand with `B` stored transposed). It runs along the output with
/// no horizontal sums.
///
/// # Panics
/// If `w` does not hold `s.len()` rows of `out.len()` floats `stride` apart.
pub fn rank_update(s: &[f32], w: &[f32], stride: usize, out: &mut [f32]) {
    let needed = match s.len() {
        0 => return,
        k => (k - 1) * stride + out.len(),
    };
    assert!(w.len() >= needed, "rank_update: matrix too short");
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above), and
        // rows 0..s.len() of `out.len()` floats lie inside `w` (asserted above).
        return unsafe { x86::weighted_rows(s, w.as_ptr(), stride, out) };
    }
    rank_update_portable(s, w, stride, out);
}

fn rank_update_portable(s: &[f32], w: &[f32], stride: usize, out: &mut [f32]) {
    let n = out.len();
    for (k, &sk) in s.iter().enumerate() {
        axpy_portable(sk, &w[k * stride..k * stride + n], out);
    }
}

/// One block of cached positions: `keys` and `values` hold a row of
/// `stride` floats per position.
#[derive(Clone, Copy, Debug)]
pub struct KvBlock<'a> {
    /// Key rows.
    pub keys: &'a [f32],
    /// Value rows, laid out like the keys.
    pub values: &'a [f32],
}

/// The cached keys and values one query head attends over: the first `len`
/// positions of a block table, `block_len` positions per block, position
/// `j`'s key at `blocks[j / block_len].keys[(j % block_len) * stride + offset..]`.
#[derive(Clone, Copy, Debug)]
pub struct KvHead<'a> {
    /// The block table, in position order.
    pub blocks: &'a [KvBlock<'a>],
    /// Positions per block.
    pub block_len: usize,
    /// Floats between consecutive positions.
    pub stride: usize,
    /// Where this head starts inside a position's row.
    pub offset: usize,
    /// Positions attended over.
    pub len: usize,
}

impl KvHead<'_> {
    /// Each block with the number of its positions that are attended over.
    fn runs(&self) -> impl Iterator<Item = (&KvBlock<'_>, usize)> + '_ {
        let per = self.block_len.max(1);
        self.blocks
            .iter()
            .take(self.len.div_ceil(per))
            .enumerate()
            .map(move |(b, block)| (block, (self.len - b * per).min(per)))
    }

    /// Row `j` of a block's keys or values, this head's `hd` floats.
    fn row<'s>(&self, rows: &'s [f32], j: usize, hd: usize) -> &'s [f32] {
        let at = j * self.stride + self.offset;
        &rows[at..at + hd]
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
    for (block, n) in kv.runs() {
        scores.extend((0..n).map(|j| dot(q, kv.row(block.keys, j, hd)) * scale));
    }
    softmax(scores);
    out.fill(0.0);
    let mut p = scores.iter();
    for (block, n) in kv.runs() {
        for (j, &w) in (0..n).zip(&mut p) {
            axpy(w, kv.row(block.values, j, hd), out);
        }
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

/// Whether the AVX2 + FMA kernels may run (the CPU has them and
/// `CREDENCE_KERNEL=portable` does not forbid them).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && std::env::var("CREDENCE_KERNEL").map_or(true, |k| k != "portable")
    })
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// [`super::attend_head`] with kernels shaped for attention: keys are
    /// scored eight positions at a time (one horizontal reduction per eight
    /// dot products, not per position), and the weighted sum of values keeps
    /// the output head in registers across positions.
    ///
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
        let hd = q.len();
        let (stride, offset) = (kv.stride, kv.offset);
        // Every run reads rows 0..n of its block; check the slices once so
        // the kernels below may use raw pointers.
        let fits = |rows: &[f32], n: usize| n == 0 || rows.len() >= (n - 1) * stride + offset + hd;
        assert!(
            out.len() == hd
                && stride >= hd
                && kv.runs().all(|(b, n)| fits(b.keys, n) && fits(b.values, n)),
            "attend_head: block rows out of bounds"
        );
        scores.clear();
        for (block, n) in kv.runs() {
            let start = scores.len();
            scores.resize(start + n, 0.0);
            // SAFETY: rows 0..n of this block are in bounds (asserted above).
            unsafe {
                key_scores(
                    q,
                    block.keys.as_ptr().add(offset),
                    stride,
                    scale,
                    &mut scores[start..],
                );
            }
        }
        super::softmax(scores);
        out.fill(0.0);
        let mut at = 0;
        for (block, n) in kv.runs() {
            // SAFETY: as above, for the values.
            unsafe {
                weighted_rows(
                    &scores[at..at + n],
                    block.values.as_ptr().add(offset),
                    stride,
                    out,
                )
            };
            at += n;
        }
    }

    /// `scores[j] = scale · q·key_j`, key `j` being the `q.len()` floats at
    /// `keys + j·stride`.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; rows `0..scores.len()` are readable.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn key_scores(
        q: &[f32],
        keys: *const f32,
        stride: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        let n = scores.len();
        let mut j = 0;
        while j + 8 <= n {
            // SAFETY: rows j..j+8 are readable (caller's contract).
            unsafe {
                let s = _mm256_mul_ps(dot8(q, keys.add(j * stride), stride), _mm256_set1_ps(scale));
                _mm256_storeu_ps(scores.as_mut_ptr().add(j), s);
            }
            j += 8;
        }
        while j < n {
            // SAFETY: row j is readable (caller's contract).
            let key = unsafe { std::slice::from_raw_parts(keys.add(j * stride), q.len()) };
            // SAFETY: same CPU features.
            scores[j] = unsafe { dot(q, key) } * scale;
            j += 1;
        }
    }

    /// `out += Σ_j w[j]·row_j`, row `j` being the `out.len()` floats at
    /// `rows + j·stride`. A 64-float head stays in eight registers for all
    /// rows; other widths fall back to one `axpy` per row.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; rows `0..w.len()` are readable.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weighted_rows(
        w: &[f32],
        rows: *const f32,
        stride: usize,
        out: &mut [f32],
    ) {
        let hd = out.len();
        let mut c = 0;
        while c + 64 <= hd {
            // SAFETY: `out[c..c + 64]` exists, and row j's floats c..c + 64
            // lie inside the row (c + 64 <= hd).
            unsafe {
                let o = out.as_mut_ptr().add(c);
                let mut acc = [_mm256_setzero_ps(); 8];
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(o.add(8 * i));
                }
                for (j, &p) in w.iter().enumerate() {
                    let pv = _mm256_set1_ps(p);
                    let r = rows.add(j * stride + c);
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(pv, _mm256_loadu_ps(r.add(8 * i)), *a);
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(o.add(8 * i), *a);
                }
            }
            c += 64;
        }
        if c < hd {
            for (j, &p) in w.iter().enumerate() {
                // SAFETY: row j is readable (caller's contract), floats c..hd.
                let row = unsafe { std::slice::from_raw_parts(rows.add(j * stride + c), hd - c) };
                // SAFETY: same CPU features.
                unsafe { axpy(p, row, &mut out[c..]) };
            }
        }
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

    /// The dot products of `x` with eight `x.len()`-long rows, row `r` at
    /// `w + r·stride`, as one vector.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; the eight rows are readable.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot8(x: &[f32], w: *const f32, stride: usize) -> __m256 {
        let k = x.len();
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut i = 0;
        while i + 8 <= k {
            // SAFETY: i + 8 <= k keeps every load inside its row.
            unsafe {
                let xv = _mm256_loadu_ps(x.as_ptr().add(i));
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w.add(r * stride + i)), *a);
                }
            }
            i += 8;
        }
        // Eight vectors to one: pairwise horizontal adds leave each row's
        // partial sums in one 128-bit lane; adding the two lanes finishes them.
        let t0 = _mm256_hadd_ps(acc[0], acc[1]);
        let t1 = _mm256_hadd_ps(acc[2], acc[3]);
        let t2 = _mm256_hadd_ps(acc[4], acc[5]);
        let t3 = _mm256_hadd_ps(acc[6], acc[7]);
        let u0 = _mm256_hadd_ps(t0, t1);
        let u1 = _mm256_hadd_ps(t2, t3);
        let lo = _mm256_permute2f128_ps(u0, u1, 0x20);
        let hi = _mm256_permute2f128_ps(u0, u1, 0x31);
        let mut sums = _mm256_add_ps(lo, hi);
        if i < k {
            let mut tail = [0f32; 8];
            for (r, t) in tail.iter_mut().enumerate() {
                for (j, xj) in x.iter().enumerate().skip(i) {
                    // SAFETY: j < k keeps the read inside row r.
                    *t += xj * unsafe { *w.add(r * stride + j) };
                }
            }
            // SAFETY: `tail` holds eight floats.
            sums = _mm256_add_ps(sums, unsafe { _mm256_loadu_ps(tail.as_ptr()) });
        }
        sums
    }

    /// The sum of the eight lanes.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn hsum(v: __m256) -> f32 {
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
    fn rank_update_matches_portable() {
        for (k, n, stride) in [
            (0, 8, 8),
            (1, 5, 5),
            (8, 64, 64),
            (16, 200, 576),
            (16, 1536, 1536),
            (3, 7, 9),
        ] {
            let s: Vec<f32> = (0..k).map(|i| (i as f32 * 0.41).sin()).collect();
            let w: Vec<f32> = (0..k * stride).map(|i| (i as f32 * 0.17).cos()).collect();
            let start: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let (mut fast, mut slow) = (start.clone(), start);
            rank_update(&s, &w, stride, &mut fast);
            rank_update_portable(&s, &w, stride, &mut slow);
            for (c, (a, b)) in fast.iter().zip(&slow).enumerate() {
                let want = c as f32 + (0..k).map(|j| s[j] * w[j * stride + c]).sum::<f32>();
                assert!(
                    (a - b).abs() < 1e-3 && (a - want).abs() < 1e-3,
                    "k {k} n {n} col {c}: {a} vs {b}"
                );
            }
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
        let whole = [KvBlock {
            keys: &keys,
            values: &values,
        }];
        let kv = KvHead {
            blocks: &whole,
            block_len: n,
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
        // The same positions split into blocks of 4 (the last one partial).
        let paged: Vec<KvBlock<'_>> = keys
            .chunks(4 * stride)
            .zip(values.chunks(4 * stride))
            .map(|(keys, values)| KvBlock { keys, values })
            .collect();
        let mut o3 = vec![0f32; hd];
        let kv = KvHead {
            blocks: &paged,
            block_len: 4,
            ..kv
        };
        attend_head(&q, &kv, 0.25, &mut s2, &mut o3);
        assert!(o1.iter().zip(&o3).all(|(a, b)| (a - b).abs() < 1e-5));
        // Attending over a prefix ignores the later positions.
        let kv = KvHead { len: 5, ..kv };
        attend_head(&q, &kv, 0.25, &mut s2, &mut o3);
        assert_eq!(s2.len(), 5);
    }

    #[test]
    fn paged_attention_matches_portable_for_real_head_sizes() {
        for (hd, heads, n, block) in [
            (64, 3, 37, 16),
            (80, 2, 9, 4),
            (128, 1, 16, 16),
            (64, 2, 3, 16),
        ] {
            let stride = hd * heads;
            let keys: Vec<f32> = (0..n * stride).map(|i| (i as f32 * 0.031).sin()).collect();
            let values: Vec<f32> = (0..n * stride).map(|i| (i as f32 * 0.017).cos()).collect();
            let q: Vec<f32> = (0..hd).map(|i| (i as f32 * 0.7).cos()).collect();
            let table: Vec<KvBlock<'_>> = keys
                .chunks(block * stride)
                .zip(values.chunks(block * stride))
                .map(|(keys, values)| KvBlock { keys, values })
                .collect();
            for head in 0..heads {
                let kv = KvHead {
                    blocks: &table,
                    block_len: block,
                    stride,
                    offset: head * hd,
                    len: n,
                };
                let (mut s1, mut s2) = (Vec::new(), Vec::new());
                let (mut o1, mut o2) = (vec![0f32; hd], vec![0f32; hd]);
                attend_head(&q, &kv, 0.125, &mut s1, &mut o1);
                attend_head_with(
                    &q,
                    &kv,
                    0.125,
                    &mut s2,
                    &mut o2,
                    dot_portable,
                    axpy_portable,
                );
                let worst = o1
                    .iter()
                    .zip(&o2)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst < 1e-5, "hd {hd} head {head}: {worst}");
            }
        }
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut v = vec![1000.0, 1001.0, -5.0];
        softmax(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(v[1] > v[0] && v[0] > v[2]);
    }
}
