//! LoRA updates for a whole batch, grouped by adapter (SGMV-style).
//!
//! In a step every stacked row belongs to one sequence, and a sequence carries
//! zero or more weighted adapters. [`LoraBatch`] regroups the rows by adapter
//! once per step; then, for each projection, every adapter's rows go through
//! its factors together: the shrink `S = x·Aᵀ` at the adapter's own rank (no
//! padding to a common rank), scaled per row by `weight·scale`, then the
//! expand `out += S·Bᵀ`. A and B are therefore read once per adapter per step,
//! however many sequences share the adapter.
//!
//! Both halves run on the worker pool. Adapters whose rows intersect (mixed
//! in one sequence) add to the same output elements, so they form a cluster;
//! a task owns a window of a cluster's rows, shrink then expand, so no two
//! tasks write one element. Three cases:
//!
//! * many clusters (many distinct adapters, whose factors stream from
//!   DRAM): a task is one whole cluster, reading each adapter's A and B back
//!   to back;
//! * few clusters over many rows (a popular adapter, a prompt): the rows are
//!   cut into windows, about one per thread; each task reads the factors
//!   (by then in cache) for its rows, four rows at a time ([`TILE`]);
//! * few clusters over a few rows: the shrink is split into (adapter, block
//!   of A rows, chunk of rows) tasks and the expand into (cluster, chunk of
//!   output columns) tasks, so even one row uses every thread.

use std::ops::Range;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::llama::WeightedAdapter;
use crate::lora::{LoraAdapter, LoraPair, TILE};
use crate::threadpool::{SharedMut, ThreadPool};
use crate::weights::LayerTensor;

/// With at least this many clusters per thread, each task handles whole
/// clusters (see the module documentation).
const FUSED_CLUSTERS_PER_THREAD: usize = 2;

/// Most rows in one window of a fused task: long prompts are split into
/// more windows than threads, so uneven tasks still balance.
const WINDOW_MAX_ROWS: usize = 64;

/// Rows of A handled by one shrink task.
const SHRINK_BLOCK: usize = 8;

/// Group rows handled by one shrink task.
const SHRINK_ROWS: usize = 64;

/// Expand tasks aimed for per thread, so uneven tasks still balance.
const EXPAND_TASKS_PER_THREAD: usize = 4;

/// Fewest output columns an expand task is given: below this a task costs
/// more to schedule than to run.
const EXPAND_MIN_CHUNK: usize = 64;

/// Below this many multiply-adds a projection's update runs on the calling
/// thread: waking the pool would cost more than it saves.
const PARALLEL_MIN_MACS: usize = 16 * 1024;

/// Runs `n` tasks, on the pool or inline: `run(n, body)`.
type Runner<'r> = &'r dyn Fn(usize, &(dyn Fn(usize) + Sync));

/// Every sequence's adapters for one forward step, grouped by adapter.
#[derive(Debug)]
pub struct LoraBatch<'a> {
    /// Each distinct adapter (by identity) with the rows it applies to.
    groups: Vec<Group<'a>>,
    /// Per sequence, its adapters and stacked rows (for [`LoraBatch::add_serial`]).
    seqs: Vec<(&'a [WeightedAdapter], Range<usize>)>,
}

/// One adapter and the stacked rows it is added to, each with its weight.
#[derive(Debug)]
struct Group<'a> {
    adapter: &'a LoraAdapter,
    rows: Vec<(usize, f32)>,
}

/// One adapter's work on one projection part.
struct Job<'a> {
    pair: &'a LoraPair,
    rows: &'a [(usize, f32)],
    /// Which entry of the caller's `parts` it adds to.
    part: usize,
    /// Start of its `[rows, rank]` block in the shrink buffer.
    offset: usize,
}

impl<'a> LoraBatch<'a> {
    /// Groups the batch's rows by adapter. Each item is one sequence's
    /// adapters and the range of stacked rows it occupies. Adapters are the
    /// same when they are the same allocation (`Arc` identity): grouping
    /// must not hash adapter contents every step.
    pub fn new(seqs: impl IntoIterator<Item = (&'a [WeightedAdapter], Range<usize>)>) -> Self {
        let seqs: Vec<_> = seqs.into_iter().collect();
        let mut groups: Vec<Group<'a>> = Vec::new();
        for (adapters, rows) in &seqs {
            for wa in adapters.iter() {
                let group = match groups
                    .iter()
                    .position(|g| std::ptr::eq(g.adapter, Arc::as_ptr(&wa.adapter)))
                {
                    Some(i) => &mut groups[i],
                    None => {
                        groups.push(Group {
                            adapter: &wa.adapter,
                            rows: Vec::new(),
                        });
                        let last = groups.len() - 1;
                        &mut groups[last]
                    }
                };
                // A sequence naming the same adapter twice adds its weights:
                // a row appears once per group, so the tiled kernels never
                // write one output row through two slices.
                match group.rows.iter().position(|&(r, _)| r == rows.start) {
                    Some(at) => group.rows[at..at + rows.len()]
                        .iter_mut()
                        .for_each(|(_, w)| *w += wa.weight),
                    None => group.rows.extend(rows.clone().map(|r| (r, wa.weight))),
                }
            }
        }
        // Ascending rows let a task find its window of a job's rows by
        // bisection (see `row_windows`).
        for g in &mut groups {
            g.rows.sort_by_key(|&(r, _)| r);
        }
        Self { groups, seqs }
    }

    /// True when no sequence carries an adapter.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Distinct adapters in the batch.
    pub fn adapters(&self) -> usize {
        self.groups.len()
    }

    /// Adds every adapter's update to a projection's output: for each
    /// `(tensor, column)` of `parts`, `out[row, column..column + out_dim] +=
    /// weight·scale·(x[row]·Aᵀ)·Bᵀ` for the rows the adapter applies to.
    /// `x` is `[rows, in_dim]` and `out` is `[rows, out_width]`, row-major.
    ///
    /// # Errors
    /// [`Error::Shape`] when a factor does not fit `in_dim`, a part's columns
    /// fall outside `out_width`, parts overlap, or a row is outside `x`/`out`.
    #[allow(clippy::too_many_arguments)] // the shape of one projection's product
    pub fn add(
        &self,
        pool: &ThreadPool,
        layer: usize,
        parts: &[(LayerTensor, usize)],
        x: &[f32],
        in_dim: usize,
        out: &mut [f32],
        out_width: usize,
    ) -> Result<()> {
        let (jobs, shrunk_len) = self.jobs(layer, parts);
        if jobs.is_empty() {
            return Ok(());
        }
        check_shapes(&jobs, parts, x, in_dim, out, out_width)?;
        let macs: usize = jobs
            .iter()
            .map(|j| j.rows.len() * j.pair.rank * (in_dim + j.pair.out_dim))
            .sum();
        let run = |n: usize, body: &(dyn Fn(usize) + Sync)| {
            if macs < PARALLEL_MIN_MACS {
                (0..n).for_each(body);
            } else {
                pool.run(n, body);
            }
        };
        let clusters = clusters(&jobs, parts.len(), out.len() / out_width.max(1));
        let mut shrunk = vec![0f32; shrunk_len];
        let p = Projection {
            jobs: &jobs,
            clusters: &clusters,
            parts,
            x,
            in_dim,
            out_width,
        };
        let threads = pool.threads();
        if clusters.len() >= FUSED_CLUSTERS_PER_THREAD * threads {
            let whole: Vec<Task> = (0..clusters.len()).map(|c| (c, 0..usize::MAX)).collect();
            p.fused(&run, &whole, &mut shrunk, out);
        } else if let Some(windows) = row_windows(&jobs, &clusters, threads) {
            p.fused(&run, &windows, &mut shrunk, out);
        } else {
            p.shrink(&run, &mut shrunk);
            p.expand(&run, threads, &shrunk, out);
        }
        Ok(())
    }

    /// The same update computed one sequence and one row at a time, on the
    /// calling thread: each sequence re-reads its adapters' factors. The
    /// reference for [`LoraBatch::add`] in tests and benchmarks.
    pub fn add_serial(
        &self,
        layer: usize,
        parts: &[(LayerTensor, usize)],
        x: &[f32],
        in_dim: usize,
        out: &mut [f32],
        out_width: usize,
    ) {
        let mut shrunk = Vec::new();
        for (adapters, rows) in &self.seqs {
            for wa in adapters.iter() {
                for &(tensor, column) in parts {
                    let Some(p) = wa.adapter.pair(layer, tensor) else {
                        continue;
                    };
                    let factor = wa.weight * p.scale;
                    for t in rows.clone() {
                        let xr = &x[t * in_dim..(t + 1) * in_dim];
                        shrunk.clear();
                        shrunk.extend((0..p.rank).map(|k| p.a.dot(k * in_dim, xr) * factor));
                        let o =
                            &mut out[t * out_width + column..t * out_width + column + p.out_dim];
                        p.b_panels
                            .panel_update(&shrunk, p.panels(), 0..p.out_dim, o);
                    }
                }
            }
        }
    }

    /// The (adapter, part) pairs with factors for `layer`, and the total
    /// length of their shrink outputs.
    fn jobs(&self, layer: usize, parts: &[(LayerTensor, usize)]) -> (Vec<Job<'_>>, usize) {
        let mut jobs = Vec::new();
        let mut offset = 0;
        for (part, &(tensor, _)) in parts.iter().enumerate() {
            for g in &self.groups {
                if let Some(pair) = g.adapter.pair(layer, tensor) {
                    jobs.push(Job {
                        pair,
                        rows: &g.rows,
                        part,
                        offset,
                    });
                    offset += g.rows.len() * pair.rank;
                }
            }
        }
        (jobs, offset)
    }
}

/// Rejects factors and parts that do not fit the buffers, so the parallel
/// writes below stay in bounds and disjoint.
fn check_shapes(
    jobs: &[Job<'_>],
    parts: &[(LayerTensor, usize)],
    x: &[f32],
    in_dim: usize,
    out: &[f32],
    out_width: usize,
) -> Result<()> {
    let rows = (x.len() / in_dim.max(1)).min(out.len() / out_width.max(1));
    let mut spans = vec![0..0; parts.len()];
    for j in jobs {
        let p = j.pair;
        if p.in_dim != in_dim
            || p.a.len() != p.rank * in_dim
            || p.b_panels.len() != p.out_dim * p.rank
        {
            return Err(Error::Shape(format!(
                "LoRA factors {}→{} (rank {}) do not fit an input of width {in_dim}",
                p.in_dim, p.out_dim, p.rank
            )));
        }
        if let Some(&(r, _)) = j.rows.iter().find(|&&(r, _)| r >= rows) {
            return Err(Error::Shape(format!(
                "LoRA row {r} is outside a batch of {rows} rows"
            )));
        }
        let column = parts[j.part].1;
        let span = &mut spans[j.part];
        *span = column..span.end.max(column + p.out_dim);
    }
    let mut sorted: Vec<_> = spans.into_iter().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| s.start);
    if sorted.last().is_some_and(|s| s.end > out_width)
        || sorted.windows(2).any(|w| w[0].end > w[1].start)
    {
        return Err(Error::Shape(format!(
            "LoRA output columns {sorted:?} overlap or exceed the width {out_width}"
        )));
    }
    Ok(())
}

/// One projection's LoRA work: its jobs, their clusters and the buffers' shapes.
struct Projection<'p> {
    jobs: &'p [Job<'p>],
    /// Jobs adding to the same output elements (adapters mixed in one
    /// sequence); tasks never split a cluster's rows, so they never write
    /// the same element.
    clusters: &'p [Vec<usize>],
    parts: &'p [(LayerTensor, usize)],
    x: &'p [f32],
    in_dim: usize,
    out_width: usize,
}

impl Projection<'_> {
    /// One task per `(cluster, window of rows)`: for each of the cluster's
    /// adapters, the shrink of its rows in the window followed at once by
    /// their expand.
    ///
    /// With many adapters each task is a whole cluster, and streams A and B
    /// of its adapters back to back, which is what matters when the factors
    /// come from DRAM (measured: separate shrink and expand phases were ~20%
    /// slower there). With one adapter over many rows the windows split its
    /// rows among the threads: each reads the (cached) factors once for its
    /// rows, and there is no barrier between shrink and expand.
    fn fused(&self, run: Runner<'_>, tasks: &[Task], shrunk: &mut [f32], out: &mut [f32]) {
        let s = SharedMut::new(shrunk);
        let o = SharedMut::new(out);
        run(tasks.len(), &|t| {
            let (c, window) = &tasks[t];
            for job in self.clusters[*c].iter().map(|&j| &self.jobs[j]) {
                let first = job.rows.partition_point(|&(r, _)| r < window.start);
                let end = job.rows.partition_point(|&(r, _)| r < window.end);
                let (rows, rank) = (&job.rows[first..end], job.pair.rank);
                if rows.is_empty() {
                    continue;
                }
                // SAFETY: the job's shrink rows `first..end` and the
                // cluster's output rows in the window belong to this task
                // alone (windows of a cluster do not overlap).
                unsafe {
                    self.shrink_rows(job, 0..rank, rows, first, &s);
                    let at = job.offset + first * rank;
                    let mine = s.slice(at..job.offset + end * rank);
                    self.expand_rows(job, first..end, 0..job.pair.out_dim, mine, &o);
                }
            }
        });
    }

    /// Few adapters: `S = x·Aᵀ` for all jobs, one task per block of A rows
    /// and chunk of a group's rows (so one adapter, or a long prompt, still
    /// spreads over the threads).
    fn shrink(&self, run: Runner<'_>, shrunk: &mut [f32]) {
        let mut tasks = Vec::new();
        for (j, job) in self.jobs.iter().enumerate() {
            for k0 in (0..job.pair.rank).step_by(SHRINK_BLOCK) {
                for r0 in (0..job.rows.len()).step_by(SHRINK_ROWS) {
                    tasks.push((j, k0, r0));
                }
            }
        }
        let s = SharedMut::new(shrunk);
        run(tasks.len(), &|t| {
            let (j, k0, r0) = tasks[t];
            let job = &self.jobs[j];
            let ks = k0..(k0 + SHRINK_BLOCK).min(job.pair.rank);
            let rows = &job.rows[r0..(r0 + SHRINK_ROWS).min(job.rows.len())];
            // SAFETY: task (j, k0, r0) alone writes columns `ks` of these rows of job j.
            unsafe { self.shrink_rows(job, ks, rows, r0, &s) };
        });
    }

    /// Few adapters: `out += S·Bᵀ`, one task per cluster and chunk of its
    /// columns, chunks as wide as the parallelism allows so each B is read
    /// in long runs.
    fn expand(&self, run: Runner<'_>, threads: usize, shrunk: &[f32], out: &mut [f32]) {
        let per_cluster = (EXPAND_TASKS_PER_THREAD * threads).div_ceil(self.clusters.len().max(1));
        let mut tasks = Vec::new();
        for (c, members) in self.clusters.iter().enumerate() {
            let width = members
                .iter()
                .map(|&j| self.jobs[j].pair.out_dim)
                .max()
                .unwrap_or(0);
            let chunks = per_cluster.clamp(1, width.div_ceil(EXPAND_MIN_CHUNK).max(1));
            // Whole 64-float blocks keep the expand kernel in registers.
            let chunk = width.div_ceil(chunks).next_multiple_of(64);
            tasks.extend(
                (0..width)
                    .step_by(chunk)
                    .map(|c0| (c, c0..(c0 + chunk).min(width))),
            );
        }
        let o = SharedMut::new(out);
        run(tasks.len(), &|t| {
            let (c, cols) = &tasks[t];
            for job in self.clusters[*c].iter().map(|&j| &self.jobs[j]) {
                let mine = &shrunk[job.offset..job.offset + job.rows.len() * job.pair.rank];
                // SAFETY: only this task writes columns `cols` of its cluster's rows.
                unsafe { self.expand_rows(job, 0..job.rows.len(), cols.clone(), mine, &o) };
            }
        });
    }

    /// `S[i, ks] = weight·scale·x[row]·A[ks]ᵀ` for `rows` (entries
    /// `first..` of the job's rows). A is walked one row at a time and each
    /// A row is dotted with every x row while it sits in L1: one sequential
    /// stream (reading eight A rows side by side measured far slower from DRAM).
    ///
    /// # Safety
    /// No other live slice of `s` may cover columns `ks` of these rows of this job.
    unsafe fn shrink_rows(
        &self,
        job: &Job<'_>,
        ks: Range<usize>,
        rows: &[(usize, f32)],
        first: usize,
        s: &SharedMut<'_, f32>,
    ) {
        let (in_dim, rank, scale) = (self.in_dim, job.pair.rank, job.pair.scale);
        let x_row = |row: usize| &self.x[row * in_dim..(row + 1) * in_dim];
        let put = |i: usize, k: usize, value: f32| {
            let at = job.offset + i * rank + k;
            // SAFETY: exclusive by the caller's contract.
            let slot = unsafe { s.slice(at..at + 1) };
            slot[0] = value;
        };
        for k in ks {
            let (tiles, rest) = rows.as_chunks::<TILE>();
            let mut i = first;
            for tile in tiles {
                let dots = job
                    .pair
                    .a
                    .dot_tile(k * in_dim, tile.map(|(row, _)| x_row(row)));
                for (t, &(_, weight)) in tile.iter().enumerate() {
                    put(i + t, k, dots[t] * weight * scale);
                }
                i += TILE;
            }
            for (i, &(row, weight)) in (i..).zip(rest) {
                put(
                    i,
                    k,
                    job.pair.a.dot(k * in_dim, x_row(row)) * weight * scale,
                );
            }
        }
    }

    /// `out[row, column + cols] += S[i]·B[cols]ᵀ` for the job's rows
    /// `index` (entries of `job.rows`), `s` being their `[rows, rank]`
    /// shrink output.
    ///
    /// # Safety
    /// No other live slice of `out` may cover columns `cols` of these rows
    /// in the job's part.
    unsafe fn expand_rows(
        &self,
        job: &Job<'_>,
        index: Range<usize>,
        cols: Range<usize>,
        s: &[f32],
        out: &SharedMut<'_, f32>,
    ) {
        let (rank, out_dim) = (job.pair.rank, job.pair.out_dim);
        let cols = cols.start.min(out_dim)..cols.end.min(out_dim);
        let column = self.parts[job.part].1;
        let s_row = |i: usize| &s[i * rank..(i + 1) * rank];
        // SAFETY: exclusive by the caller's contract; in bounds because
        // parts were checked against `out_width`.
        let out_row = |row: usize| {
            let at = row * self.out_width + column;
            unsafe { out.slice(at + cols.start..at + cols.end) }
        };
        let (pair, panels) = (job.pair, job.pair.panels());
        let (tiles, rest) = job.rows[index].as_chunks::<TILE>();
        let mut i = 0;
        for tile in tiles {
            // A row appears once in a job (see `LoraBatch::new`), so the
            // four output slices are disjoint.
            let s_rows = std::array::from_fn(|t| s_row(i + t));
            let outs = tile.map(|(row, _)| out_row(row));
            pair.b_panels
                .panel_update_tile(s_rows, panels, cols.clone(), outs);
            i += TILE;
        }
        for (i, &(row, _)) in (i..).zip(rest) {
            pair.b_panels
                .panel_update(s_row(i), panels, cols.clone(), out_row(row));
        }
    }
}

/// A fused task: a cluster and the window of batch rows it handles.
type Task = (usize, Range<usize>);

/// Windows of rows splitting the clusters' rows among `threads`, when there
/// are enough rows for every thread to get whole tiles; `None` otherwise
/// (a few rows of one adapter are better split by factor rows and output
/// columns).
fn row_windows(jobs: &[Job<'_>], clusters: &[Vec<usize>], threads: usize) -> Option<Vec<Task>> {
    let rows_of = |members: &[usize]| {
        let mut rows: Vec<usize> = members
            .iter()
            .flat_map(|&j| jobs[j].rows.iter().map(|&(r, _)| r))
            .collect();
        rows.sort_unstable();
        rows.dedup();
        rows
    };
    let rows: Vec<Vec<usize>> = clusters.iter().map(|m| rows_of(m)).collect();
    let total: usize = rows.iter().map(Vec::len).sum();
    if total < TILE * threads.max(2) {
        return None;
    }
    let chunk = total
        .div_ceil(threads.max(1))
        .next_multiple_of(TILE)
        .min(WINDOW_MAX_ROWS);
    let mut tasks = Vec::new();
    for (c, rows) in rows.iter().enumerate() {
        for piece in rows.chunks(chunk) {
            let (first, last) = (piece[0], piece[piece.len() - 1]);
            tasks.push((c, first..last + 1));
        }
    }
    Some(tasks)
}

/// Groups jobs of the same part whose rows intersect (union-find over the
/// rows each job touches). Returned clusters list job indices in order.
fn clusters(jobs: &[Job<'_>], parts: usize, rows: usize) -> Vec<Vec<usize>> {
    fn root(parent: &mut [usize], mut j: usize) -> usize {
        while parent[j] != j {
            parent[j] = parent[parent[j]];
            j = parent[j];
        }
        j
    }
    let mut parent: Vec<usize> = (0..jobs.len()).collect();
    let mut owner = vec![usize::MAX; parts * rows];
    for (j, job) in jobs.iter().enumerate() {
        for &(row, _) in job.rows {
            let slot = &mut owner[job.part * rows + row];
            if *slot == usize::MAX {
                *slot = j;
            } else {
                let (a, b) = (root(&mut parent, *slot), root(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut index = vec![usize::MAX; jobs.len()];
    let mut out: Vec<Vec<usize>> = Vec::new();
    for j in 0..jobs.len() {
        let r = root(&mut parent, j);
        if index[r] == usize::MAX {
            index[r] = out.len();
            out.push(Vec::new());
        }
        out[index[r]].push(j);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::random_adapter;
    use crate::testing::{TestRng, tiny_config};

    const ALL: [LayerTensor; 7] = crate::lora::PROJECTIONS;

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    /// One projection's update of `base` by `batch` on `threads` threads,
    /// checked against [`LoraBatch::add_serial`]; returns the grouped output.
    fn grouped_vs_serial(
        batch: &LoraBatch<'_>,
        threads: usize,
        (layer, parts): (usize, &[(LayerTensor, usize)]),
        (x, in_dim): (&[f32], usize),
        (base, width): (&[f32], usize),
    ) -> Vec<f32> {
        let (mut grouped, mut serial) = (base.to_vec(), base.to_vec());
        batch
            .add(
                &ThreadPool::new(threads),
                layer,
                parts,
                x,
                in_dim,
                &mut grouped,
                width,
            )
            .unwrap();
        batch.add_serial(layer, parts, x, in_dim, &mut serial, width);
        let worst = max_diff(&grouped, &serial);
        assert!(worst < 1e-4, "{threads} threads: max diff {worst}");
        grouped
    }

    fn wa(a: &Arc<LoraAdapter>, weight: f32) -> WeightedAdapter {
        WeightedAdapter {
            adapter: Arc::clone(a),
            weight,
        }
    }

    #[test]
    fn grouped_equals_serial_for_shared_distinct_and_mixed_adapters() {
        let c = tiny_config(32);
        let shared = Arc::new(random_adapter(&c, 16, &ALL, 1));
        let small = Arc::new(random_adapter(&c, 3, &[LayerTensor::Q, LayerTensor::V], 2));
        let wide = Arc::new(random_adapter(&c, 24, &ALL, 3));
        let mixes: Vec<Vec<WeightedAdapter>> = vec![
            vec![wa(&shared, 1.0)],
            vec![],
            vec![wa(&shared, 1.0)],
            vec![wa(&small, 0.5), wa(&wide, -0.7)],
            vec![wa(&wide, 1.0)],
            vec![wa(&shared, 0.3), wa(&small, 1.0)],
        ];
        let lens = [1, 3, 2, 1, 4, 2];
        let mut start = 0;
        let seqs: Vec<_> = mixes
            .iter()
            .zip(lens)
            .map(|(m, n)| {
                start += n;
                (m.as_slice(), start - n..start)
            })
            .collect();
        let rows = start;
        let batch = LoraBatch::new(seqs);
        assert_eq!(batch.adapters(), 3);
        let (h, q, kv) = (c.hidden_size, c.q_dim(), c.kv_dim());
        let width = q + 2 * kv;
        let parts = [
            (LayerTensor::Q, 0),
            (LayerTensor::K, q),
            (LayerTensor::V, q + kv),
        ];
        let x = TestRng::new(9).vec(rows * h, 1.0);
        let base = TestRng::new(10).vec(rows * width, 1.0);
        for threads in [1, 2, 3] {
            let grouped = grouped_vs_serial(&batch, threads, (1, &parts), (&x, h), (&base, width));
            // Sequence 1 has no adapter: its rows are untouched.
            assert_eq!(grouped[width..4 * width], base[width..4 * width]);
        }
    }

    #[test]
    fn many_adapters_with_mixes_equal_serial() {
        let c = tiny_config(32);
        let adapters: Vec<Arc<LoraAdapter>> = (0..12)
            .map(|i| Arc::new(random_adapter(&c, 4 + i % 3 * 6, &ALL, 100 + i as u64)))
            .collect();
        // One sequence per adapter, plus two mixing neighbours, so clusters
        // of several adapters sit among single-adapter ones.
        let mut mixes: Vec<Vec<WeightedAdapter>> =
            adapters.iter().map(|a| vec![wa(a, 1.0)]).collect();
        mixes.push(vec![wa(&adapters[0], 0.5), wa(&adapters[1], 0.5)]);
        mixes.push(vec![wa(&adapters[1], 0.2), wa(&adapters[2], 2.0)]);
        let batch = LoraBatch::new(mixes.iter().enumerate().map(|(i, m)| (&m[..], i..i + 1)));
        let rows = mixes.len();
        let (h, ff) = (c.hidden_size, c.intermediate_size);
        let parts = [(LayerTensor::Gate, 0), (LayerTensor::Up, ff)];
        let x = TestRng::new(1).vec(rows * h, 1.0);
        let base = TestRng::new(2).vec(rows * 2 * ff, 1.0);
        for threads in [1, 2, 4, 8] {
            grouped_vs_serial(&batch, threads, (0, &parts), (&x, h), (&base, 2 * ff));
        }
    }

    #[test]
    fn f16_q8_and_f32_adapters_mix_in_one_batch() {
        use crate::lora::LoraDtype;
        let c = tiny_config(32);
        let wide = Arc::new(random_adapter(&c, 8, &ALL, 7));
        let half = Arc::new(wide.to_dtype(LoraDtype::F16));
        let bytes = Arc::new(wide.to_dtype(LoraDtype::Q8));
        let other = Arc::new(random_adapter(&c, 5, &ALL, 8).to_dtype(LoraDtype::F16));
        let mixes = [
            vec![wa(&wide, 1.0)],
            vec![wa(&half, 1.0)],
            vec![wa(&other, 0.5), wa(&bytes, 0.5)],
            vec![wa(&bytes, 1.0)],
        ];
        let batch = LoraBatch::new(mixes.iter().enumerate().map(|(i, m)| (&m[..], i..i + 1)));
        let (h, ff) = (c.hidden_size, c.intermediate_size);
        let parts = [(LayerTensor::Down, 0)];
        // Rows 0, 1 and 3 see the same input through the f32, f16 and q8 copies.
        let row = TestRng::new(3).vec(ff, 1.0);
        let x = [row.clone(), row.clone(), TestRng::new(4).vec(ff, 1.0), row].concat();
        let (mut grouped, mut serial) = (vec![0f32; 4 * h], vec![0f32; 4 * h]);
        batch
            .add(&ThreadPool::new(2), 1, &parts, &x, ff, &mut grouped, h)
            .unwrap();
        batch.add_serial(1, &parts, &x, ff, &mut serial, h);
        let worst = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(p, q)| (p - q).abs() / q.abs().max(1.0))
                .fold(0f32, f32::max)
        };
        assert!(worst(&grouped, &serial) < 1e-4);
        // The f16 and q8 copies of an adapter give nearly the f32 one's update.
        for copy in [1, 3] {
            let rounding = worst(&grouped[copy * h..(copy + 1) * h], &grouped[..h]);
            assert!(rounding < 2e-2, "row {copy}: {rounding}");
            assert_ne!(grouped[..h], grouped[copy * h..(copy + 1) * h]);
        }
    }

    #[test]
    fn an_adapter_named_twice_in_a_sequence_adds_its_weights() {
        let c = tiny_config(32);
        let a = Arc::new(random_adapter(&c, 8, &ALL, 5));
        let twice = [wa(&a, 0.5), wa(&a, 0.25)];
        let once = [wa(&a, 0.75)];
        // Six rows: one tile of four and two rows alone.
        let doubled = LoraBatch::new([(&twice[..], 0..6)]);
        assert_eq!(doubled.groups[0].rows.len(), 6, "each row once");
        let single = LoraBatch::new([(&once[..], 0..6)]);
        let (h, q) = (c.hidden_size, c.q_dim());
        let x = TestRng::new(6).vec(6 * h, 1.0);
        let base = TestRng::new(7).vec(6 * q, 1.0);
        let parts = [(LayerTensor::Q, 0)];
        let pool = ThreadPool::new(2);
        let (mut got, mut want, mut serial) = (base.clone(), base.clone(), base.clone());
        doubled.add(&pool, 0, &parts, &x, h, &mut got, q).unwrap();
        single.add(&pool, 0, &parts, &x, h, &mut want, q).unwrap();
        doubled.add_serial(0, &parts, &x, h, &mut serial, q);
        for (g, (w, s)) in got.iter().zip(want.iter().zip(&serial)) {
            assert!((g - w).abs() < 1e-4 && (g - s).abs() < 1e-4, "{g} {w} {s}");
        }
        assert_ne!(got, base);
    }

    #[test]
    fn a_long_prompt_split_into_row_windows_equals_serial() {
        let c = tiny_config(32);
        let shared = Arc::new(random_adapter(&c, 16, &ALL, 11));
        let other = Arc::new(random_adapter(&c, 5, &ALL, 12).to_dtype(crate::lora::LoraDtype::F16));
        let (one, two) = ([wa(&shared, 0.8)], [wa(&other, 1.0), wa(&shared, 0.5)]);
        // A 37-token prompt, then a sequence of 3 rows mixing both adapters.
        let batch = LoraBatch::new([(&one[..], 0..37), (&two[..], 37..40)]);
        let (h, ff) = (c.hidden_size, c.intermediate_size);
        let parts = [(LayerTensor::Down, 0)];
        let x = TestRng::new(13).vec(40 * ff, 1.0);
        let base = TestRng::new(14).vec(40 * h, 1.0);
        let (jobs, _) = batch.jobs(0, &parts);
        let clusters = clusters(&jobs, 1, 40);
        assert_eq!(clusters.len(), 1, "the mixed sequence joins both adapters");
        let windows = row_windows(&jobs, &clusters, 2).expect("enough rows");
        assert_eq!(windows, vec![(0, 0..20), (0, 20..40)]);
        assert_eq!(
            row_windows(&jobs[..1], &[vec![0]], 16),
            None,
            "too few rows"
        );
        for threads in [1, 2, 4] {
            grouped_vs_serial(&batch, threads, (0, &parts), (&x, ff), (&base, h));
        }
    }

    #[test]
    fn overlapping_parts_are_rejected() {
        let c = tiny_config(32);
        let a = Arc::new(random_adapter(&c, 4, &ALL, 1));
        let mix = [wa(&a, 1.0)];
        let batch = LoraBatch::new([(&mix[..], 0..1)]);
        let h = c.hidden_size;
        let x = vec![0.5; h];
        let mut out = vec![0.0; 2 * c.q_dim()];
        let overlapping = [(LayerTensor::Q, 0), (LayerTensor::K, 1)];
        let e = batch
            .add(
                &ThreadPool::new(2),
                0,
                &overlapping,
                &x,
                h,
                &mut out,
                2 * c.q_dim(),
            )
            .unwrap_err();
        assert!(e.to_string().contains("overlap"), "{e}");
        let e = batch
            .add(
                &ThreadPool::new(2),
                0,
                &[(LayerTensor::Q, 0)],
                &x,
                h - 1,
                &mut out,
                8,
            )
            .unwrap_err();
        assert!(e.to_string().contains("do not fit"), "{e}");
    }
}
