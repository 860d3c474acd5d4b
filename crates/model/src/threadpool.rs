//! A small fork-join pool tuned for the forward pass.
//!
//! One decode step issues a few hundred short parallel loops (one per projection),
//! each lasting tens of microseconds. General-purpose pools park idle workers
//! and pay a wake-up per loop; here idle workers spin briefly on a generation
//! counter before parking, so back-to-back loops start in well under a
//! microsecond, while an idle node still sleeps.

#![allow(unsafe_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN_BEFORE_PARK: Duration = Duration::from_millis(2);

/// One parallel loop, living on the stack of the thread that called [`ThreadPool::run`].
struct Job<'a> {
    body: &'a (dyn Fn(usize) + Sync),
    n_tasks: usize,
    next_task: AtomicUsize,
    /// Tasks that have finished running.
    done_tasks: AtomicUsize,
    panicked: AtomicBool,
}

impl Job<'_> {
    fn work(&self) {
        loop {
            let task = self.next_task.fetch_add(1, Ordering::Relaxed);
            if task >= self.n_tasks {
                break;
            }
            if catch_unwind(AssertUnwindSafe(|| (self.body)(task))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
            self.done_tasks.fetch_add(1, Ordering::Release);
        }
    }
}

struct Shared {
    generation: AtomicU64,
    job: AtomicPtr<Job<'static>>,
    sleepers: AtomicUsize,
    /// Workers currently between announcing themselves and leaving a job.
    active: AtomicUsize,
    shutdown: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// A fixed set of worker threads that run indexed tasks in parallel.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises callers: one parallel loop runs at a time.
    run_lock: Mutex<()>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads())
            .finish()
    }
}

impl ThreadPool {
    /// A pool using `threads` threads in total (the caller counts as one).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            sleepers: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("credence-worker-{i}"))
                    .spawn(move || worker_loop(&shared))
                    .expect("spawning a worker thread only fails when the OS is out of threads")
            })
            .collect();
        Self {
            shared,
            workers,
            run_lock: Mutex::new(()),
        }
    }

    /// A pool with one thread per available core.
    pub fn with_available_parallelism() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Total threads, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `body(i)` for every `i` in `0..n_tasks`, spread over all threads, and
    /// returns when every task has finished. Tasks are claimed dynamically, so
    /// giving a few tasks per thread balances uneven work.
    ///
    /// # Panics
    /// Re-raises (as a new panic) if any task panicked.
    pub fn run(&self, n_tasks: usize, body: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.workers.is_empty() || n_tasks == 1 {
            (0..n_tasks).for_each(body);
            return;
        }
        let _guard = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let job = Job {
            body,
            n_tasks,
            next_task: AtomicUsize::new(0),
            done_tasks: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        };
        // SAFETY: workers dereference the pointer only between incrementing and
        // decrementing `active`, and only if they read it non-null in between.
        // This function clears the pointer and then waits for `active` to reach
        // 0 before returning, so `job` outlives every dereference. Waiting for
        // tasks (not for every worker to check in) means a descheduled idle
        // worker cannot stall the caller.
        let erased = (&job as *const Job<'_>).cast::<Job<'static>>().cast_mut();
        self.shared.job.store(erased, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        if self.shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        job.work();
        let mut spins = 0u32;
        while job.done_tasks.load(Ordering::Acquire) != n_tasks {
            spin_or_yield(&mut spins);
        }
        self.shared
            .job
            .store(std::ptr::null_mut(), Ordering::SeqCst);
        while self.shared.active.load(Ordering::SeqCst) != 0 {
            spin_or_yield(&mut spins);
        }
        assert!(
            !job.panicked.load(Ordering::Relaxed),
            "a parallel task panicked"
        );
    }

    /// Splits `0..len` into chunks of at least `min_chunk` items (about four per
    /// thread) and runs `body(range)` for each in parallel.
    pub fn for_each_chunk(
        &self,
        len: usize,
        min_chunk: usize,
        body: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) {
        let chunk = len.div_ceil(self.threads() * 4).max(min_chunk.max(1));
        let n = len.div_ceil(chunk);
        self.run(n, &|i| body(i * chunk..((i + 1) * chunk).min(len)));
    }
}

impl ThreadPool {
    /// Runs `body(row_index, row)` over the `row_len`-wide rows of `data` in
    /// parallel (serially when there are fewer than `min_rows` rows).
    pub fn par_rows(
        &self,
        data: &mut [f32],
        row_len: usize,
        min_rows: usize,
        body: &(dyn Fn(usize, &mut [f32]) + Sync),
    ) {
        let rows = data.len() / row_len.max(1);
        if rows < min_rows.max(2) {
            data.chunks_exact_mut(row_len.max(1))
                .enumerate()
                .for_each(|(i, r)| body(i, r));
            return;
        }
        let shared = SharedMut::new(data);
        self.for_each_chunk(rows, 1, &|range| {
            for i in range {
                // SAFETY: each row index is visited by exactly one task.
                body(i, unsafe { shared.slice(i * row_len..(i + 1) * row_len) });
            }
        });
    }
}

/// A mutable slice shared across tasks that write disjoint ranges of it.
pub struct SharedMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: access goes through `slice`, whose contract requires disjoint ranges,
// so sharing the pointer between threads is sound for `Send` element types.
unsafe impl<T: Send> Sync for SharedMut<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SharedMut<'_, T> {}

impl<'a, T> SharedMut<'a, T> {
    /// Wraps `data` for disjoint parallel writes.
    pub fn new(data: &'a mut [T]) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            _borrow: std::marker::PhantomData,
        }
    }

    /// The sub-slice `range`.
    ///
    /// # Safety
    /// No two live slices obtained from this wrapper may overlap.
    ///
    /// # Panics
    /// If `range` is out of bounds.
    #[allow(clippy::mut_from_ref)] // disjointness is the caller's contract, see above
    pub unsafe fn slice(&self, range: std::ops::Range<usize>) -> &mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "range out of bounds"
        );
        // SAFETY: in bounds (checked); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        {
            let _l = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker_loop(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        seen = wait_for_generation(shared, seen);
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        shared.active.fetch_add(1, Ordering::SeqCst);
        let ptr = shared.job.load(Ordering::SeqCst);
        // SAFETY: `run` clears the pointer before waiting for `active` to reach 0,
        // so a non-null pointer seen after our increment stays valid until our decrement.
        if let Some(job) = unsafe { ptr.as_ref() } {
            job.work();
        }
        shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One busy-wait step. Every so often it yields the core instead: when more
/// threads want to run than there are cores (other processes, a second pool),
/// the thread being waited for may be the one that needs this core.
fn spin_or_yield(spins: &mut u32) {
    *spins = spins.wrapping_add(1);
    if spins.is_multiple_of(128) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// Spins, then parks, until the generation moves past `seen`; returns the new one.
fn wait_for_generation(shared: &Shared, seen: u64) -> u64 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let g = shared.generation.load(Ordering::SeqCst);
        if g != seen {
            return g;
        }
        spin_or_yield(&mut spins);
        if spins.is_multiple_of(1024) && start.elapsed() > SPIN_BEFORE_PARK {
            break;
        }
    }
    let mut guard = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
    shared.sleepers.fetch_add(1, Ordering::SeqCst);
    loop {
        let g = shared.generation.load(Ordering::SeqCst);
        if g != seen {
            shared.sleepers.fetch_sub(1, Ordering::SeqCst);
            return g;
        }
        guard = shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_task_exactly_once() {
        let pool = ThreadPool::new(3);
        for n in [0, 1, 2, 7, 100] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn chunks_cover_the_range() {
        let pool = ThreadPool::new(2);
        let sum = AtomicUsize::new(0);
        pool.for_each_chunk(1000, 7, &|r| {
            sum.fetch_add(r.sum::<usize>(), Ordering::Relaxed);
        });
        assert_eq!(sum.into_inner(), 999 * 1000 / 2);
    }

    #[test]
    fn survives_parking() {
        let pool = ThreadPool::new(2);
        let count = AtomicUsize::new(0);
        for _ in 0..3 {
            std::thread::sleep(SPIN_BEFORE_PARK * 3);
            pool.run(4, &|_| {
                count.fetch_add(1, Ordering::Relaxed);
            });
        }
        assert_eq!(count.into_inner(), 12);
    }

    #[test]
    fn task_panic_is_reported() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| pool.run(4, &|i| assert!(i != 2))));
        assert!(r.is_err());
        pool.run(2, &|_| {}); // still usable
    }
}
