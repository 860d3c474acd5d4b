//! LoRA factors as signed 8-bit values with one f32 scale per block of
//! [`Q8_BLOCK`] consecutive values (`value ≈ q · scale`, `scale` = the
//! block's largest magnitude / 127).
//!
//! With many distinct adapters in a decode step, each adapter's factors
//! stream from DRAM once per step; here they take 1.125 bytes per value
//! against 2 for f16, and so does an adapter in the RAM cache and in its
//! runtime file (measured on the development VM, docs/benchmarks.md: the
//! step is about as fast as with f16, the cache and the cold reads from disk
//! about half the size). The rounding error is at
//! most half a step, 1/254 of the block's largest value, on a low-rank
//! update that is itself a small correction to the base weights. The
//! kernels widen the bytes to f32 in registers and accumulate in f32.

/// Values per scale.
pub const Q8_BLOCK: usize = 32;

/// Quantised values and their block scales.
#[derive(Clone, Debug, PartialEq)]
pub struct Q8Values {
    /// One signed byte per value, in [-127, 127].
    pub(crate) values: Vec<i8>,
    /// One scale per block of [`Q8_BLOCK`] values (the last block may be
    /// shorter); the kernels rely on there being exactly that many.
    pub(crate) scales: Vec<f32>,
}

impl Q8Values {
    /// Rounds finite `values` to the nearest step of their block.
    pub fn quantize(values: &[f32]) -> Self {
        let mut q = Vec::with_capacity(values.len());
        let mut scales = Vec::with_capacity(values.len().div_ceil(Q8_BLOCK));
        for block in values.chunks(Q8_BLOCK) {
            let largest = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = largest / 127.0;
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            // In range by construction: |v| · inverse ≤ 127.
            q.extend(block.iter().map(|v| (v * inverse).round() as i8));
            scales.push(scale);
        }
        Self { values: q, scales }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Bytes held: the values and their scales.
    pub fn bytes(&self) -> usize {
        self.values.len() + 4 * self.scales.len()
    }

    /// Bytes `len` values take quantised.
    pub fn bytes_for(len: usize) -> usize {
        len + 4 * len.div_ceil(Q8_BLOCK)
    }

    /// The kernels read a scale per block without bounds checks.
    fn assert_scales(&self) {
        assert_eq!(
            self.scales.len(),
            self.len().div_ceil(Q8_BLOCK),
            "q8: one scale per block"
        );
    }

    /// Value `i`, widened.
    fn get(&self, i: usize) -> f32 {
        f32::from(self.values[i]) * self.scales[i / Q8_BLOCK]
    }

    /// Every value, widened.
    pub fn to_f32(&self) -> Vec<f32> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }

    /// `x · self[start..start + x.len()]`.
    ///
    /// # Panics
    /// If the range is outside the values.
    pub fn dot(&self, start: usize, x: &[f32]) -> f32 {
        assert!(
            start + x.len() <= self.len(),
            "q8 dot: range outside the values"
        );
        self.assert_scales();
        #[cfg(target_arch = "x86_64")]
        if start.is_multiple_of(Q8_BLOCK) && crate::ops::has_avx2_fma() {
            let end = start + x.len();
            let (q, scales) = (&self.values[start..end], &self.scales[start / Q8_BLOCK..]);
            // SAFETY: the CPU supports AVX2 and FMA (checked just above), and
            // AVX-512 F when that path is active; `start` begins a block, the
            // range is in bounds (asserted), and its blocks' scales follow
            // `start / Q8_BLOCK`.
            return unsafe {
                if has_avx512() {
                    x86_512::dot(x, q, scales)
                } else {
                    x86::dot(x, q, scales)
                }
            };
        }
        x.iter()
            .enumerate()
            .map(|(i, v)| v * self.get(start + i))
            .sum()
    }

    /// `out += Σ_k s[k]·self[start + k·stride..][..out.len()]`.
    ///
    /// # Panics
    /// If the rows read do not lie inside the values.
    pub fn rank_update(&self, s: &[f32], start: usize, stride: usize, out: &mut [f32]) {
        let needed = match s.len() {
            0 => return,
            k => start + (k - 1) * stride + out.len(),
        };
        assert!(needed <= self.len(), "q8 rank_update: matrix too short");
        self.assert_scales();
        #[cfg(target_arch = "x86_64")]
        if [start, stride, out.len()]
            .iter()
            .all(|v| v.is_multiple_of(Q8_BLOCK))
            && crate::ops::has_avx2_fma()
        {
            let (q, scales) = (&self.values, &self.scales);
            // SAFETY: the CPU supports AVX2 and FMA (checked just above), and
            // AVX-512 F when that path is active; the rows lie inside the
            // values (asserted) and each row is whole blocks, so block `b` of
            // the values has scale `b`.
            return unsafe {
                if has_avx512() {
                    x86_512::rank_update(s, q, scales, start, stride, out)
                } else {
                    x86::rank_update(s, q, scales, start, stride, out)
                }
            };
        }
        self.rank_update_portable(s, start, stride, out);
    }

    fn rank_update_portable(&self, s: &[f32], start: usize, stride: usize, out: &mut [f32]) {
        for (k, &sk) in s.iter().enumerate() {
            let row = start + k * stride;
            for (i, o) in out.iter_mut().enumerate() {
                *o += sk * self.get(row + i);
            }
        }
    }
}

/// Whether the AVX-512 kernels run: the CPU has them and
/// `CREDENCE_KERNEL` does not ask for a lower path.
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    crate::quant::Kernel::active() == crate::quant::Kernel::Avx512
}

/// The same kernels sixteen lanes wide: one instruction widens sixteen
/// bytes, so a block takes half the instructions of the AVX2 path.
#[cfg(target_arch = "x86_64")]
mod x86_512 {
    use std::arch::x86_64::*;

    use super::Q8_BLOCK;

    /// Sixteen signed bytes at `p` widened to f32.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; sixteen bytes at `p` are readable.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const i8) -> __m512 {
        // SAFETY: sixteen readable bytes, as the caller guarantees.
        unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast()))) }
    }

    /// As `super::x86::dot`.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; as `super::x86::dot` otherwise.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot(x: &[f32], q: &[i8], scales: &[f32]) -> f32 {
        let n = x.len().min(q.len());
        let (px, pq) = (x.as_ptr(), q.as_ptr());
        // SAFETY (both): block `i` lies inside `n` (checked by the loops
        // below) and has a scale by the caller's contract.
        let block = |i: usize| unsafe {
            let t = _mm512_mul_ps(_mm512_loadu_ps(px.add(i)), load16(pq.add(i)));
            _mm512_fmadd_ps(_mm512_loadu_ps(px.add(i + 16)), load16(pq.add(i + 16)), t)
        };
        let scale = |i: usize| unsafe { _mm512_set1_ps(*scales.get_unchecked(i / Q8_BLOCK)) };
        let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        // Two blocks per iteration: two independent accumulator chains.
        while i + 2 * Q8_BLOCK <= n {
            acc0 = _mm512_fmadd_ps(block(i), scale(i), acc0);
            let j = i + Q8_BLOCK;
            acc1 = _mm512_fmadd_ps(block(j), scale(j), acc1);
            i += 2 * Q8_BLOCK;
        }
        if i + Q8_BLOCK <= n {
            acc0 = _mm512_fmadd_ps(block(i), scale(i), acc0);
            i += Q8_BLOCK;
        }
        let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
        if i < n {
            let scale = scales[i / Q8_BLOCK];
            sum += (i..n).map(|j| x[j] * f32::from(q[j]) * scale).sum::<f32>();
        }
        sum
    }

    /// As `super::x86::rank_update`.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; as `super::x86::rank_update` otherwise.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rank_update(
        s: &[f32],
        q: &[i8],
        scales: &[f32],
        start: usize,
        stride: usize,
        out: &mut [f32],
    ) {
        let n = out.len();
        let mut c = 0;
        while c + 64 <= n {
            // SAFETY: `out[c..c + 64]` exists and each row holds values c..c + 64.
            unsafe { block::<4>(s, q, scales, start + c, stride, out.as_mut_ptr().add(c)) };
            c += 64;
        }
        while c + Q8_BLOCK <= n {
            // SAFETY: as above, for one block.
            unsafe { block::<2>(s, q, scales, start + c, stride, out.as_mut_ptr().add(c)) };
            c += Q8_BLOCK;
        }
    }

    /// `16·V` outputs at `o` from the values at `at + j·stride`, `V` even (a
    /// block of 32 values per two registers).
    ///
    /// # Safety
    /// As [`rank_update`], with `at` a multiple of [`Q8_BLOCK`] and `16·V`
    /// values readable in every row and writable at `o`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const V: usize>(
        s: &[f32],
        q: &[i8],
        scales: &[f32],
        at: usize,
        stride: usize,
        o: *mut f32,
    ) {
        // SAFETY: in bounds by the caller's contract.
        unsafe {
            let mut acc = [_mm512_setzero_ps(); V];
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(o.add(16 * i));
            }
            for (j, &sj) in s.iter().enumerate() {
                let row = at + j * stride;
                let r = q.as_ptr().add(row);
                let first = row / Q8_BLOCK;
                let mut sv = [_mm512_setzero_ps(); 2];
                for (b, v) in sv.iter_mut().enumerate().take(V / 2) {
                    *v = _mm512_set1_ps(sj * *scales.get_unchecked(first + b));
                }
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(sv[i / 2], load16(r.add(16 * i)), *a);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(o.add(16 * i), *a);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Q8_BLOCK;

    /// Eight signed bytes at `p` widened to f32.
    ///
    /// # Safety
    /// The CPU must support AVX2; eight bytes at `p` are readable.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load8(p: *const i8) -> __m256 {
        // SAFETY: eight readable bytes, as the caller guarantees.
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()))) }
    }

    /// `x · q` with `q`'s block `b` scaled by `scales[b]`.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `x` and `q` have equal lengths and
    /// `scales` covers every block of `q`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(x: &[f32], q: &[i8], scales: &[f32]) -> f32 {
        let n = x.len().min(q.len());
        let (px, pq) = (x.as_ptr(), q.as_ptr());
        /// `Σ x·q` over the block at `i`, unscaled.
        ///
        /// # Safety
        /// As `dot`, with `i + Q8_BLOCK <= n`.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn block(px: *const f32, pq: *const i8, i: usize) -> __m256 {
            // SAFETY: 32 values from `i` are in bounds by the caller's contract.
            unsafe {
                let t0 = _mm256_mul_ps(_mm256_loadu_ps(px.add(i)), load8(pq.add(i)));
                let t1 = _mm256_mul_ps(_mm256_loadu_ps(px.add(i + 8)), load8(pq.add(i + 8)));
                let t0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i + 16)), load8(pq.add(i + 16)), t0);
                let t1 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i + 24)), load8(pq.add(i + 24)), t1);
                _mm256_add_ps(t0, t1)
            }
        }
        // SAFETY (all blocks): their ends are checked against `n`, and each
        // block's scale exists by the caller's contract.
        let scale = |i: usize| unsafe { _mm256_set1_ps(*scales.get_unchecked(i / Q8_BLOCK)) };
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // Two blocks per iteration: two independent accumulator chains.
        while i + 2 * Q8_BLOCK <= n {
            unsafe {
                acc0 = _mm256_fmadd_ps(block(px, pq, i), scale(i), acc0);
                let j = i + Q8_BLOCK;
                acc1 = _mm256_fmadd_ps(block(px, pq, j), scale(j), acc1);
            }
            i += 2 * Q8_BLOCK;
        }
        if i + Q8_BLOCK <= n {
            unsafe { acc0 = _mm256_fmadd_ps(block(px, pq, i), scale(i), acc0) };
            i += Q8_BLOCK;
        }
        let mut sum = crate::ops::x86::hsum(_mm256_add_ps(acc0, acc1));
        if i < n {
            let scale = scales[i / Q8_BLOCK];
            sum += (i..n).map(|j| x[j] * f32::from(q[j]) * scale).sum::<f32>();
        }
        sum
    }

    /// `out += Σ_j s[j]·row_j`, row `j` being `out.len()` values at
    /// `start + j·stride`: 64 outputs stay in eight registers across all rows.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `start`, `stride` and `out.len()`
    /// are multiples of [`Q8_BLOCK`]; every row lies inside `q`, and
    /// `scales` has one scale per block of `q`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rank_update(
        s: &[f32],
        q: &[i8],
        scales: &[f32],
        start: usize,
        stride: usize,
        out: &mut [f32],
    ) {
        let n = out.len();
        let mut c = 0;
        while c + 64 <= n {
            // SAFETY: `out[c..c + 64]` exists and each row holds values c..c + 64.
            unsafe { block::<8>(s, q, scales, start + c, stride, out.as_mut_ptr().add(c)) };
            c += 64;
        }
        while c + Q8_BLOCK <= n {
            // SAFETY: as above, for one block.
            unsafe { block::<4>(s, q, scales, start + c, stride, out.as_mut_ptr().add(c)) };
            c += Q8_BLOCK;
        }
    }

    /// `8·V` outputs at `o` from the values at `at + j·stride`, `V` a
    /// multiple of 4 (a block of 32 values per four registers).
    ///
    /// # Safety
    /// As [`rank_update`], with `at` a multiple of [`Q8_BLOCK`] and `8·V`
    /// values readable in every row and writable at `o`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block<const V: usize>(
        s: &[f32],
        q: &[i8],
        scales: &[f32],
        at: usize,
        stride: usize,
        o: *mut f32,
    ) {
        // SAFETY: in bounds by the caller's contract.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); V];
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(o.add(8 * i));
            }
            for (j, &sj) in s.iter().enumerate() {
                let row = at + j * stride;
                let r = q.as_ptr().add(row);
                let first = row / Q8_BLOCK;
                // One coefficient per block of 32 values (four registers).
                let mut sv = [_mm256_setzero_ps(); 2];
                for (b, v) in sv.iter_mut().enumerate().take(V / 4) {
                    *v = _mm256_set1_ps(sj * *scales.get_unchecked(first + b));
                }
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(sv[i / 4], load8(r.add(8 * i)), *a);
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

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * seed).sin() * 0.05).collect()
    }

    #[test]
    fn quantising_rounds_to_half_a_step_per_block() {
        let v = values(100, 0.37);
        let q = Q8Values::quantize(&v);
        assert_eq!((q.len(), q.scales.len()), (100, 4));
        assert_eq!(q.bytes(), Q8Values::bytes_for(100));
        for (i, (got, want)) in q.to_f32().iter().zip(&v).enumerate() {
            let step = q.scales[i / Q8_BLOCK];
            assert!(
                (got - want).abs() <= step / 2.0 + 1e-9,
                "{i}: {got} vs {want}"
            );
        }
        let zeros = Q8Values::quantize(&[0.0; 40]);
        assert!(zeros.to_f32().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn kernels_match_the_widened_sums() {
        for (k, n, start, stride) in [
            (1, 32, 0, 32),
            (3, 64, 32, 96),
            (16, 576, 0, 576),
            (16, 96, 64, 160),
            (4, 5, 3, 7),
            (2, 40, 1, 41),
        ] {
            let q = Q8Values::quantize(&values(start + k * stride + n, 0.23));
            let wide = q.to_f32();
            let s: Vec<f32> = (0..k).map(|i| (i as f32 * 0.41).cos()).collect();
            let mut fast: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
            let mut want = fast.clone();
            q.rank_update(&s, start, stride, &mut fast);
            for (j, &sj) in s.iter().enumerate() {
                for (i, w) in want.iter_mut().enumerate() {
                    *w += sj * wide[start + j * stride + i];
                }
            }
            let worst = fast
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "k {k} n {n} start {start}: {worst}");
        }
        for (n, start) in [(0, 0), (32, 0), (576, 32), (100, 64), (50, 7)] {
            let q = Q8Values::quantize(&values(start + n, 0.11));
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.3).cos()).collect();
            let wide = q.to_f32();
            let want: f32 = x.iter().enumerate().map(|(i, a)| a * wide[start + i]).sum();
            assert!(
                (q.dot(start, &x) - want).abs() < 1e-4,
                "n {n} start {start}"
            );
        }
    }
}
