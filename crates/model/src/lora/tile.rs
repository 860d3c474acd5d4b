//! The two LoRA products for [`TILE`] rows at once, for an adapter that
//! several rows of a step share (a prompt, or sequences on a popular
//! adapter).
//!
//! Row by row, every multiply-add of the shrink and the expand also loads
//! (and for f16 widens) one factor value, so a shared adapter costs several
//! times its arithmetic. Here each factor value, once in a register, serves
//! four rows: the shrink dots one row of `A` with four input rows, the
//! expand adds a panel's values into four output rows.
//!
//! AVX2 kernels for f32 and f16 factors; q8 factors, and CPUs without AVX2,
//! FMA and F16C, go row by row through the single-row products (the same
//! sums).

use std::ops::Range;

use super::{Factor, Panels};

/// Rows the tiled products handle together.
pub const TILE: usize = 4;

impl Factor {
    /// `[x_r · self[start..start + n]]` for the four rows `xs` (each of
    /// length `n`).
    ///
    /// # Panics
    /// If the rows differ in length or the range is outside the factor.
    pub fn dot_tile(&self, start: usize, xs: [&[f32]; TILE]) -> [f32; TILE] {
        let n = xs[0].len();
        assert!(xs.iter().all(|x| x.len() == n), "dot_tile: lengths differ");
        assert!(
            start + n <= self.len(),
            "dot_tile: range outside the factor"
        );
        #[cfg(target_arch = "x86_64")]
        if super::factor::has_f16_kernels() {
            let ptrs = xs.map(<[f32]>::as_ptr);
            match self {
                // SAFETY: the CPU supports AVX2, FMA and F16C (checked just
                // above); every row has n values and the factor has n from
                // `start` (asserted above).
                Self::F32(v) => return unsafe { x86::dot_tile(v[start..].as_ptr(), ptrs, n) },
                Self::F16(v) => return unsafe { x86::dot_tile(v[start..].as_ptr(), ptrs, n) },
                Self::Q8(_) => {}
            }
        }
        xs.map(|x| self.dot(start, x))
    }

    /// [`Factor::panel_update`] for four rows: `outs[r] += Σ_k
    /// s[r][k]·Bᵀ[k, cols]`, every `s[r]` of length `panels.rank`.
    ///
    /// # Panics
    /// If an `s` row is not `panels.rank` long, an output is shorter than
    /// `cols`, or the panels do not lie inside the factor.
    pub fn panel_update_tile(
        &self,
        s: [&[f32]; TILE],
        panels: Panels,
        cols: Range<usize>,
        outs: [&mut [f32]; TILE],
    ) {
        let rank = panels.rank;
        assert!(s.iter().all(|r| r.len() == rank), "panel_update_tile: rank");
        assert!(
            panels.rank * panels.out_dim <= self.len(),
            "panel_update_tile: panels outside the factor"
        );
        #[cfg(target_arch = "x86_64")]
        if super::factor::has_f16_kernels() && !matches!(self, Self::Q8(_)) {
            let first = cols.start;
            let mut outs = outs;
            for piece in panels.pieces(cols) {
                let width = piece.cols.len();
                let at = piece.cols.start - first;
                let o = outs.each_mut().map(|o| o[at..at + width].as_mut_ptr());
                let s = s.map(<[f32]>::as_ptr);
                match self {
                    // SAFETY: the CPU supports AVX2, FMA and F16C (checked
                    // above); a piece's `rank` rows of `width` values lie
                    // inside the panels, which lie inside the factor
                    // (asserted above); each output has `width` values from
                    // `at` (the slicing checked it) and the outputs are four
                    // distinct `&mut` slices.
                    Self::F32(v) => unsafe {
                        x86::rank_update_tile(
                            s,
                            rank,
                            v[piece.start..].as_ptr(),
                            piece.stride,
                            o,
                            width,
                        )
                    },
                    Self::F16(v) => unsafe {
                        x86::rank_update_tile(
                            s,
                            rank,
                            v[piece.start..].as_ptr(),
                            piece.stride,
                            o,
                            width,
                        )
                    },
                    Self::Q8(_) => unreachable!("q8 factors take the row-by-row path"),
                }
            }
            return;
        }
        for (sr, out) in s.into_iter().zip(outs) {
            self.panel_update(sr, panels, cols.clone(), out);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::TILE;

    /// A factor element the kernels widen eight at a time.
    pub(super) trait Lanes: Copy {
        /// Eight values at `p` as f32; scalar `p` as f32.
        ///
        /// # Safety
        /// The CPU supports AVX2, FMA and F16C; eight values at `p` are
        /// readable (one for `one`).
        unsafe fn eight(p: *const Self) -> __m256;
        unsafe fn one(p: *const Self) -> f32;
    }

    impl Lanes for f32 {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn eight(p: *const Self) -> __m256 {
            // SAFETY: eight readable floats, by the contract.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline]
        unsafe fn one(p: *const Self) -> f32 {
            // SAFETY: readable, by the contract.
            unsafe { *p }
        }
    }

    impl Lanes for f16 {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn eight(p: *const Self) -> __m256 {
            // SAFETY: eight readable halves are sixteen readable bytes; F16C
            // by the contract.
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
        }
        #[inline]
        unsafe fn one(p: *const Self) -> f32 {
            // SAFETY: readable, by the contract.
            unsafe { *p }.to_f32()
        }
    }

    /// `[x_r · w[..n]]` for four rows: each eight values of `w` are widened
    /// once and multiplied into all four rows, two chains per row so the
    /// FMA latency is hidden.
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C; `w` and every `x` have `n`
    /// readable values.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_tile<T: Lanes>(
        w: *const T,
        x: [*const f32; TILE],
        n: usize,
    ) -> [f32; TILE] {
        let mut even = [_mm256_setzero_ps(); TILE];
        let mut odd = [_mm256_setzero_ps(); TILE];
        let mut i = 0;
        // SAFETY (all reads): i + 16 <= n, resp. i + 8 <= n, resp. i < n.
        while i + 16 <= n {
            unsafe {
                let (a, b) = (T::eight(w.add(i)), T::eight(w.add(i + 8)));
                for r in 0..TILE {
                    even[r] = _mm256_fmadd_ps(_mm256_loadu_ps(x[r].add(i)), a, even[r]);
                    odd[r] = _mm256_fmadd_ps(_mm256_loadu_ps(x[r].add(i + 8)), b, odd[r]);
                }
            }
            i += 16;
        }
        if i + 8 <= n {
            unsafe {
                let a = T::eight(w.add(i));
                for r in 0..TILE {
                    even[r] = _mm256_fmadd_ps(_mm256_loadu_ps(x[r].add(i)), a, even[r]);
                }
            }
            i += 8;
        }
        let mut sums = [0f32; TILE];
        for r in 0..TILE {
            sums[r] = crate::ops::x86::hsum(_mm256_add_ps(even[r], odd[r]));
            for j in i..n {
                sums[r] += unsafe { *x[r].add(j) * T::one(w.add(j)) };
            }
        }
        sums
    }

    /// `out_r[..width] += Σ_k s_r[k]·w[k·stride..][..width]` for four rows:
    /// sixteen columns of the four rows stay in eight registers while the
    /// `rank` rows of `w` pass, each value widened once for four rows.
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C; each `s_r` has `rank` values,
    /// `w` has `rank` rows of `width` readable values `stride` apart, each
    /// `out_r` has `width` writable values, and the outputs do not overlap.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rank_update_tile<T: Lanes>(
        s: [*const f32; TILE],
        rank: usize,
        w: *const T,
        stride: usize,
        out: [*mut f32; TILE],
        width: usize,
    ) {
        let mut c = 0;
        // SAFETY (all accesses): c + 16 <= width, resp. c + 8 <= width,
        // resp. c < width, with rows k < rank, keep them in bounds.
        while c + 16 <= width {
            unsafe { columns::<T, 2>(s, rank, w, stride, out, c) };
            c += 16;
        }
        if c + 8 <= width {
            unsafe { columns::<T, 1>(s, rank, w, stride, out, c) };
            c += 8;
        }
        for r in 0..TILE {
            for k in 0..rank {
                let sk = unsafe { *s[r].add(k) };
                for j in c..width {
                    unsafe { *out[r].add(j) += sk * T::one(w.add(k * stride + j)) };
                }
            }
        }
    }

    /// Columns `c..c + 8·V` of the four rows.
    ///
    /// # Safety
    /// As [`rank_update_tile`], with `c + 8·V <= width`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn columns<T: Lanes, const V: usize>(
        s: [*const f32; TILE],
        rank: usize,
        w: *const T,
        stride: usize,
        out: [*mut f32; TILE],
        c: usize,
    ) {
        // SAFETY: in bounds by the caller's contract.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); V]; TILE];
            for (a, o) in acc.iter_mut().zip(out) {
                for (v, x) in a.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(o.add(c + 8 * v));
                }
            }
            for k in 0..rank {
                let row = w.add(k * stride + c);
                let mut b = [_mm256_setzero_ps(); V];
                for (v, x) in b.iter_mut().enumerate() {
                    *x = T::eight(row.add(8 * v));
                }
                for (a, sr) in acc.iter_mut().zip(s) {
                    let sv = _mm256_broadcast_ss(&*sr.add(k));
                    for (x, bv) in a.iter_mut().zip(&b) {
                        *x = _mm256_fmadd_ps(sv, *bv, *x);
                    }
                }
            }
            for (a, o) in acc.iter().zip(out) {
                for (v, x) in a.iter().enumerate() {
                    _mm256_storeu_ps(o.add(c + 8 * v), *x);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::LoraDtype;
    use crate::testing::TestRng;

    fn factors(n: usize, seed: u64) -> Vec<Factor> {
        let values = TestRng::new(seed).vec(n, 1.0);
        LoraDtype::ALL
            .iter()
            .map(|&d| Factor::from_f32(values.clone(), d))
            .collect()
    }

    #[test]
    fn tiled_dots_equal_single_row_dots() {
        for n in [1, 7, 8, 15, 16, 17, 40, 576] {
            let rows: Vec<Vec<f32>> = (0..TILE as u64)
                .map(|r| TestRng::new(r).vec(n, 1.0))
                .collect();
            let xs: [&[f32]; TILE] = std::array::from_fn(|r| rows[r].as_slice());
            for f in factors(3 * n + 5, 9) {
                let got = f.dot_tile(n + 3, xs);
                for (r, x) in xs.iter().enumerate() {
                    let want = f.dot(n + 3, x);
                    assert!(
                        (got[r] - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "{n} {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn tiled_expands_equal_single_row_expands() {
        for (rank, out_dim, cols) in [
            (1, 8, 0..8),
            (3, 70, 5..70),
            (16, 576, 0..576),
            (8, 200, 64..137),
            (5, 13, 2..11),
        ] {
            let panels = Panels { rank, out_dim };
            let s: Vec<Vec<f32>> = (0..TILE as u64)
                .map(|r| TestRng::new(40 + r).vec(rank, 1.0))
                .collect();
            let s_rows: [&[f32]; TILE] = std::array::from_fn(|r| s[r].as_slice());
            for f in factors(rank * out_dim, 3) {
                let start: Vec<Vec<f32>> = (0..TILE as u64)
                    .map(|r| TestRng::new(80 + r).vec(cols.len(), 1.0))
                    .collect();
                let mut tiled = start.clone();
                let mut single = start.clone();
                let mut rows = tiled.iter_mut();
                let outs =
                    std::array::from_fn(|_| rows.next().map(Vec::as_mut_slice).unwrap_or_default());
                f.panel_update_tile(s_rows, panels, cols.clone(), outs);
                for (r, out) in single.iter_mut().enumerate() {
                    f.panel_update(s_rows[r], panels, cols.clone(), out);
                }
                for (t, u) in tiled.iter().flatten().zip(single.iter().flatten()) {
                    assert!(
                        (t - u).abs() <= 1e-4 * u.abs().max(1.0),
                        "{rank} {out_dim} {cols:?}"
                    );
                }
                assert_ne!(tiled, start);
            }
        }
    }
}
