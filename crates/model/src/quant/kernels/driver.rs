//! Splits a matmul into parallel tasks and register tiles.
//!
//! The output `out[n, rows]` is cut into a grid of tasks: up to 64 activation
//! rows × a slab of weight rows small enough (≤ 256 KiB) to stay in L2 while
//! every 4-row activation tile of the task streams over it. The grid has at
//! least four tasks per thread when the shape allows, so the pool's dynamic
//! task claiming balances uneven progress; decode (`n = 1`) just splits rows.

use std::ops::Range;

use super::{Kernel, XRows};
use crate::quant::act::{self, QActs};
use crate::quant::matrix::QMatrix;
use crate::threadpool::{SharedMut, ThreadPool};

/// Activation rows per register tile.
const TILE: usize = 4;
/// Weight rows per kernel call (bounded by the stack buffer of results).
const CHUNK: usize = 64;
/// Activation rows per task.
const X_PER_TASK: usize = 64;
/// Weight bytes per task meant to stay cache-resident.
const SLAB_BYTES: usize = 256 << 10;

/// Where activation tiles come from.
#[derive(Clone, Copy)]
enum Source<'a> {
    Q8(&'a QActs),
    F32 { x: &'a [f32], cols: usize },
}

impl<'a> Source<'a> {
    fn tile<const K: usize>(self, c0: usize) -> XRows<'a, K> {
        match self {
            Self::Q8(a) => XRows::Q8(std::array::from_fn(|k| a.row(c0 + k))),
            Self::F32 { x, cols } => XRows::F32(std::array::from_fn(|k| {
                &x[(c0 + k) * cols..(c0 + k + 1) * cols]
            })),
        }
    }
}

/// Computes `out = x · Wᵀ` (shapes already validated by the caller).
pub(crate) fn matmul(
    kernel: Kernel,
    m: &QMatrix,
    pool: &ThreadPool,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) {
    if n == 0 || m.rows() == 0 {
        return;
    }
    if m.cols() == 0 {
        out.fill(0.0);
        return;
    }
    if m.ty().is_float() {
        run(kernel, m, pool, Source::F32 { x, cols: m.cols() }, n, out);
    } else {
        act::with_quantized(kernel, pool, x, n, m.cols(), |a| {
            run(kernel, m, pool, Source::Q8(a), n, out)
        });
    }
}

/// The task grid.
struct Plan {
    rows_per_task: usize,
    row_tasks: usize,
    x_per_task: usize,
    tasks: usize,
}

fn plan(m: &QMatrix, n: usize, threads: usize) -> Plan {
    let x_per_task = n.min(X_PER_TASK);
    let x_tasks = n.div_ceil(x_per_task);
    let slab_rows = (SLAB_BYTES / m.row_bytes().max(1)).max(8);
    let want_row_tasks = (4 * threads).div_ceil(x_tasks).max(1);
    let rows_per_task = m
        .rows()
        .div_ceil(want_row_tasks)
        .next_multiple_of(4)
        .clamp(4, slab_rows);
    let row_tasks = m.rows().div_ceil(rows_per_task);
    Plan {
        rows_per_task,
        row_tasks,
        x_per_task,
        tasks: row_tasks * x_tasks,
    }
}

fn run(kernel: Kernel, m: &QMatrix, pool: &ThreadPool, src: Source<'_>, n: usize, out: &mut [f32]) {
    let p = plan(m, n, pool.threads());
    let out = SharedMut::new(out);
    let rows = m.rows();
    pool.run(p.tasks, &|t| {
        let (xt, rt) = (t / p.row_tasks, t % p.row_tasks);
        let r = rt * p.rows_per_task..((rt + 1) * p.rows_per_task).min(rows);
        let c = xt * p.x_per_task..((xt + 1) * p.x_per_task).min(n);
        task(kernel, m, src, r, c, &out);
    });
}

/// One task: weight rows `r` × activation rows `c`, in tiles of up to 4 activations.
fn task(
    kernel: Kernel,
    m: &QMatrix,
    src: Source<'_>,
    r: Range<usize>,
    c: Range<usize>,
    out: &SharedMut<'_, f32>,
) {
    let mut c0 = c.start;
    while c0 < c.end {
        let k = (c.end - c0).min(TILE);
        match k {
            4 => tile::<4>(kernel, m, src, r.clone(), c0, out),
            3 => tile::<3>(kernel, m, src, r.clone(), c0, out),
            2 => tile::<2>(kernel, m, src, r.clone(), c0, out),
            _ => tile::<1>(kernel, m, src, r.clone(), c0, out),
        }
        c0 += k;
    }
}

fn tile<const K: usize>(
    kernel: Kernel,
    m: &QMatrix,
    src: Source<'_>,
    r: Range<usize>,
    c0: usize,
    out: &SharedMut<'_, f32>,
) {
    let xs = src.tile::<K>(c0);
    let (rb, rows) = (m.row_bytes(), m.rows());
    let mut buf = [[0f32; K]; CHUNK];
    let mut r0 = r.start;
    while r0 < r.end {
        let r1 = (r0 + CHUNK).min(r.end);
        let res = &mut buf[..r1 - r0];
        super::rows(kernel, m.ty(), &m.bytes()[r0 * rb..r1 * rb], rb, &xs, res);
        for k in 0..K {
            let base = (c0 + k) * rows;
            // SAFETY: the task grid gives each (activation row, weight row) pair to
            // exactly one task, so this range is written by this task alone, and
            // `out` outlives `pool.run`.
            let o = unsafe { out.slice(base + r0..base + r1) };
            for (v, res) in o.iter_mut().zip(res.iter()) {
                *v = res[k];
            }
        }
        r0 = r1;
    }
}
