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
//! AVX2 kernels for f32, f16 and q8 factors (q8 at positions that are
//! multiples of eight, which the layouts of the 135M model's projections
//! give); other positions, and CPUs without AVX2, FMA and F16C, go row by
//! row through the single-row products (the same sums).

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
        if let Some(view) = x86::View::of(self, start, 0) {
            // SAFETY: the view exists only on CPUs with AVX2, FMA and F16C;
            // every row has n values and the factor has n from `start`
            // (asserted above).
            return unsafe { view.dot_tile(xs.map(<[f32]>::as_ptr), n) };
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
        mut outs: [&mut [f32]; TILE],
    ) {
        let rank = panels.rank;
        assert!(s.iter().all(|r| r.len() == rank), "panel_update_tile: rank");
        assert!(
            panels.rank * panels.out_dim <= self.len(),
            "panel_update_tile: panels outside the factor"
        );
        let first = cols.start;
        for piece in panels.pieces(cols) {
            let at = piece.cols.start - first;
            let mut o = outs.each_mut().map(|o| &mut o[at..at + piece.cols.len()]);
            #[cfg(target_arch = "x86_64")]
            if let Some(view) = x86::View::of(self, piece.start, piece.stride) {
                let o = o.each_mut().map(|o| o.as_mut_ptr());
                // SAFETY: the view exists only on CPUs with AVX2, FMA and
                // F16C; a piece's `rank` rows of its width lie inside the
                // panels, which lie inside the factor (asserted above); each
                // output has that width (the slicing checked it) and the
                // outputs are four distinct `&mut` slices.
                unsafe {
                    view.rank_update_tile(
                        s.map(<[f32]>::as_ptr),
                        rank,
                        piece.stride,
                        o,
                        piece.cols.len(),
                    )
                };
                continue;
            }
            for (sr, out) in s.iter().zip(&mut o) {
                self.rank_update(sr, piece.start, piece.stride, out);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::TILE;
    use crate::lora::{Factor, Q8_BLOCK};

    /// Where the kernels read a factor from, by element type.
    #[derive(Clone, Copy)]
    pub(super) enum View {
        F32(F32s),
        F16(F16s),
        Q8(Q8s),
    }

    impl View {
        /// The factor from value `start` on, when the CPU has AVX2, FMA
        /// and F16C. For q8, `start` and `stride` (0 for one row) must be
        /// multiples of eight, so no eight values read together straddle
        /// two scale blocks; otherwise `None`.
        pub(super) fn of(factor: &Factor, start: usize, stride: usize) -> Option<Self> {
            if !crate::lora::factor::has_f16_kernels() {
                return None;
            }
            Some(match factor {
                Factor::F32(v) => Self::F32(F32s(v[start.min(v.len())..].as_ptr())),
                Factor::F16(v) => Self::F16(F16s(v[start.min(v.len())..].as_ptr())),
                Factor::Q8(q) => {
                    let aligned = start.is_multiple_of(8) && stride.is_multiple_of(8);
                    let scaled = q.scales.len() == q.values.len().div_ceil(Q8_BLOCK);
                    if !(aligned && scaled) {
                        return None;
                    }
                    Self::Q8(Q8s {
                        q: q.values[start.min(q.values.len())..].as_ptr(),
                        scales: q.scales.as_ptr(),
                        first: start,
                    })
                }
            })
        }

        /// [`dot_tile`] on this view.
        ///
        /// # Safety
        /// As [`dot_tile`].
        pub(super) unsafe fn dot_tile(self, x: [*const f32; TILE], n: usize) -> [f32; TILE] {
            // SAFETY: by the caller's contract.
            unsafe {
                match self {
                    Self::F32(w) => dot_tile(w, x, n),
                    Self::F16(w) => dot_tile(w, x, n),
                    Self::Q8(w) => dot_tile(w, x, n),
                }
            }
        }

        /// [`rank_update_tile`] on this view.
        ///
        /// # Safety
        /// As [`rank_update_tile`].
        pub(super) unsafe fn rank_update_tile(
            self,
            s: [*const f32; TILE],
            rank: usize,
            stride: usize,
            out: [*mut f32; TILE],
            width: usize,
        ) {
            // SAFETY: by the caller's contract.
            unsafe {
                match self {
                    Self::F32(w) => rank_update_tile(s, rank, w, stride, out, width),
                    Self::F16(w) => rank_update_tile(s, rank, w, stride, out, width),
                    Self::Q8(w) => rank_update_tile(s, rank, w, stride, out, width),
                }
            }
        }
    }

    /// Values a kernel widens eight at a time, by index from the view's start.
    trait Lanes: Copy {
        /// Values `i..i + 8` as f32.
        ///
        /// # Safety
        /// The CPU supports AVX2, FMA and F16C; the values are readable.
        unsafe fn eight(self, i: usize) -> __m256;

        /// Value `i` as f32.
        ///
        /// # Safety
        /// The value is readable.
        unsafe fn one(self, i: usize) -> f32;
    }

    #[derive(Clone, Copy)]
    pub(super) struct F32s(*const f32);

    impl Lanes for F32s {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn eight(self, i: usize) -> __m256 {
            // SAFETY: readable, by the contract.
            unsafe { _mm256_loadu_ps(self.0.add(i)) }
        }

        #[inline]
        unsafe fn one(self, i: usize) -> f32 {
            // SAFETY: readable, by the contract.
            unsafe { *self.0.add(i) }
        }
    }

    #[derive(Clone, Copy)]
    pub(super) struct F16s(*const f16);

    impl Lanes for F16s {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn eight(self, i: usize) -> __m256 {
            // SAFETY: eight readable halves are sixteen readable bytes.
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(self.0.add(i).cast())) }
        }

        #[inline]
        unsafe fn one(self, i: usize) -> f32 {
            // SAFETY: readable, by the contract.
            unsafe { *self.0.add(i) }.to_f32()
        }
    }

    /// Bytes from index `first` of a q8 factor, with all its block scales.
    /// Eight values read together never straddle two blocks: indices the
    /// kernels read eight at a time are multiples of eight from `first`,
    /// itself a multiple of eight ([`View::of`]).
    #[derive(Clone, Copy)]
    pub(super) struct Q8s {
        q: *const i8,
        scales: *const f32,
        first: usize,
    }

    impl Q8s {
        /// The scale of value `i`.
        ///
        /// # Safety
        /// Value `i` exists (so does its block's scale).
        #[inline]
        unsafe fn scale(self, i: usize) -> f32 {
            // SAFETY: one scale per block, checked by `View::of`.
            unsafe { *self.scales.add((self.first + i) / Q8_BLOCK) }
        }
    }

    impl Lanes for Q8s {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn eight(self, i: usize) -> __m256 {
            // SAFETY: eight readable bytes, in one block (see the type).
            unsafe {
                let bytes = _mm_loadl_epi64(self.q.add(i).cast());
                let values = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
                _mm256_mul_ps(values, _mm256_set1_ps(self.scale(i)))
            }
        }

        #[inline]
        unsafe fn one(self, i: usize) -> f32 {
            // SAFETY: readable, by the contract.
            unsafe { f32::from(*self.q.add(i)) * self.scale(i) }
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
    unsafe fn dot_tile<L: Lanes>(w: L, x: [*const f32; TILE], n: usize) -> [f32; TILE] {
        let mut even = [_mm256_setzero_ps(); TILE];
        let mut odd = [_mm256_setzero_ps(); TILE];
        let mut i = 0;
        // SAFETY (all reads): i + 16 <= n, resp. i + 8 <= n, resp. j < n.
        while i + 16 <= n {
            unsafe {
                let (a, b) = (w.eight(i), w.eight(i + 8));
                for r in 0..TILE {
                    even[r] = _mm256_fmadd_ps(_mm256_loadu_ps(x[r].add(i)), a, even[r]);
                    odd[r] = _mm256_fmadd_ps(_mm256_loadu_ps(x[r].add(i + 8)), b, odd[r]);
                }
            }
            i += 16;
        }
        if i + 8 <= n {
            unsafe {
                let a = w.eight(i);
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
                sums[r] += unsafe { *x[r].add(j) * w.one(j) };
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
    unsafe fn rank_update_tile<L: Lanes>(
        s: [*const f32; TILE],
        rank: usize,
        w: L,
        stride: usize,
        out: [*mut f32; TILE],
        width: usize,
    ) {
        let mut c = 0;
        // SAFETY (all accesses): c + 16 <= width, resp. c + 8 <= width,
        // resp. j < width, with rows k < rank, keep them in bounds.
        while c + 16 <= width {
            unsafe { columns::<L, 2>(s, rank, w, stride, out, c) };
            c += 16;
        }
        if c + 8 <= width {
            unsafe { columns::<L, 1>(s, rank, w, stride, out, c) };
            c += 8;
        }
        for r in 0..TILE {
            for k in 0..rank {
                let sk = unsafe { *s[r].add(k) };
                for j in c..width {
                    unsafe { *out[r].add(j) += sk * w.one(k * stride + j) };
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
    unsafe fn columns<L: Lanes, const V: usize>(
        s: [*const f32; TILE],
        rank: usize,
        w: L,
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
                let row = k * stride + c;
                let mut b = [_mm256_setzero_ps(); V];
                for (v, x) in b.iter_mut().enumerate() {
                    *x = w.eight(row + 8 * v);
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
            // Starts at a multiple of eight (every dtype tiled) and not (q8
            // row by row).
            for start in [8, n + 3] {
                for f in factors(3 * n + 16, 9) {
                    let got = f.dot_tile(start, xs);
                    for (r, x) in xs.iter().enumerate() {
                        let want = f.dot(start, x);
                        let close = (got[r] - want).abs() <= 1e-4 * want.abs().max(1.0);
                        assert!(close, "{:?} n {n} start {start} row {r}", f.dtype());
                    }
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
