//! Activation quantisation: f32 rows → 8-bit blocks of 32 with an f32 scale.
//!
//! Every integer kernel consumes this one format: `qs` (i8, row-major, one row
//! of `cols` per activation) and per block `[d, s]` with `x ≈ d · q` and
//! `s = d · Σq` (the sum lets kernels apply a weight block's additive `min`
//! without touching the quants). An f32 scale per 32 values is more accurate
//! than GGML's Q8_1 (f16) or Q8_K (one scale per 256) and costs nothing extra.

use std::cell::RefCell;

use super::blocks::QK;
use super::kernels::Kernel;
use crate::threadpool::{SharedMut, ThreadPool};

/// Quantised activations for `n` rows of `cols` (a multiple of 32).
#[derive(Debug, Default)]
pub(crate) struct QActs {
    qs: Vec<i8>,
    ds: Vec<[f32; 2]>,
    cols: usize,
}

/// One quantised activation row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ActRow<'a> {
    /// `cols` quants.
    pub(crate) qs: &'a [i8],
    /// `cols / 32` pairs `[d, s]`.
    pub(crate) ds: &'a [[f32; 2]],
}

impl QActs {
    /// Row `c`.
    pub(crate) fn row(&self, c: usize) -> ActRow<'_> {
        let nb = self.cols / QK;
        ActRow {
            qs: &self.qs[c * self.cols..(c + 1) * self.cols],
            ds: &self.ds[c * nb..(c + 1) * nb],
        }
    }

    /// Quantises `x` (`n` rows of `cols`), in parallel when there is enough work.
    pub(crate) fn quantize(
        &mut self,
        kernel: Kernel,
        pool: &ThreadPool,
        x: &[f32],
        n: usize,
        cols: usize,
    ) {
        let nb = cols / QK;
        self.cols = cols;
        // A reused buffer keeps its capacity: steady-state calls do not allocate.
        self.qs.resize(n * cols, 0);
        self.ds.resize(n * nb, [0.0; 2]);
        let qs = SharedMut::new(&mut self.qs[..n * cols]);
        let ds = SharedMut::new(&mut self.ds[..n * nb]);

        let body = |rows: std::ops::Range<usize>| {
            // SAFETY: chunks handed out by `for_each_chunk` are disjoint row ranges,
            // so these sub-slices never overlap between tasks.
            let (q, d) = unsafe {
                (
                    qs.slice(rows.start * cols..rows.end * cols),
                    ds.slice(rows.start * nb..rows.end * nb),
                )
            };
            quantize_rows(kernel, &x[rows.start * cols..rows.end * cols], q, d);
        };
        if n * cols >= 1 << 15 {
            pool.for_each_chunk(n, 1, &body);
        } else {
            body(0..n);
        }
    }
}

/// Quantises whole blocks of `x` into `qs` / `ds`.
fn quantize_rows(kernel: Kernel, x: &[f32], qs: &mut [i8], ds: &mut [[f32; 2]]) {
    #[cfg(target_arch = "x86_64")]
    if kernel != Kernel::Portable && kernel.supported() {
        // SAFETY: AVX2 and FMA were detected (both SIMD kernels require them).
        unsafe { super::kernels::avx2::quantize_acts(x, qs, ds) };
        return;
    }
    let _ = kernel;
    for ((xb, qb), d) in x
        .chunks_exact(QK)
        .zip(qs.chunks_exact_mut(QK))
        .zip(ds.iter_mut())
    {
        *d = quantize_block(xb, qb);
    }
}

/// Portable block quantiser: `d = max|x| / 127`, `q = round_even(x · 127 / max|x|)`
/// (the same f32 operations as the SIMD quantiser, so every path sees identical
/// activations); returns `[d, d·Σq]`.
pub(crate) fn quantize_block(x: &[f32], q: &mut [i8]) -> [f32; 2] {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        let r = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
        sum += i32::from(r);
        *o = r;
    }
    let d = amax / 127.0;
    [d, d * sum as f32]
}

thread_local! {
    /// Per-thread scratch so steady-state matmuls do not allocate.
    static SCRATCH: RefCell<QActs> = RefCell::new(QActs::default());
}

/// Runs `f` with activations quantised into this thread's scratch buffer (or a
/// fresh one if the scratch is already in use further up the stack).
pub(crate) fn with_quantized<R>(
    kernel: Kernel,
    pool: &ThreadPool,
    x: &[f32],
    n: usize,
    cols: usize,
    f: impl FnOnce(&QActs) -> R,
) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut acts) => {
            acts.quantize(kernel, pool, x, n, cols);
            f(&acts)
        }
        Err(_) => {
            let mut acts = QActs::default();
            acts.quantize(kernel, pool, x, n, cols);
            f(&acts)
        }
    })
}
