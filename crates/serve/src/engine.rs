//! The engine thread: owns the compute pool and batches generations continuously.
//!
//! Generation is CPU-bound and must not run on the async runtime, so a
//! dedicated OS thread takes [`Job`]s from a bounded queue. Up to
//! [`MAX_BATCH`] sequences run together: each forward step advances every
//! active sequence by one token (a newly admitted one by its whole prompt),
//! so the weights are read once per step for all of them. Sequences join and
//! leave between steps. Admission is
//! decided at [`Engine::submit`]: a full queue is reported at once (HTTP 429)
//! instead of letting latency grow without bound. Each job carries the sending
//! half of an unbounded channel; text deltas go out through it as they are
//! produced. When the client goes away its receiver is dropped, the next send
//! fails, and the generation callback returns `Break`, so an abandoned request
//! stops costing compute within one token.
//!
//! Every sequence's KV cache is drawn from one [`KvPool`] with a byte budget.
//! A job is admitted only when its prompt fits and every running sequence
//! keeps room for one more block (so admitting it cannot starve the next
//! step); otherwise it waits, ahead of the queue, until sequences finish. If
//! nothing runs and the prompt still does not fit, it never will: 429
//! `kv_cache_full`. A step that cannot reserve room for its new tokens fails
//! before computing anything and is retried after making room: first by
//! dropping idle cached prefixes, then by preempting the newest sequence
//! (vLLM-style recompute): its blocks are freed and it goes back to the front
//! of the waiting line with its prompt and the tokens generated so far, to
//! be recomputed in one step when there is room again, so its stream goes on
//! without repeating or losing a token. Only a sequence that cannot grow even
//! when running alone fails.
//!
//! Prompt prefixes are shared through a [`PrefixCache`] keyed by the adapter
//! set (content ids and weights) and the tokens: after a sequence's prompt
//! step, and when it finishes normally, its full KV blocks are recorded, and
//! a new sequence whose tokens start the same way under the same adapters
//! adopts them instead of recomputing those positions (a shared system
//! prompt, a multi-turn chat). Recorded blocks count against the KV budget
//! (up to a quarter of it, [`PREFIX_CACHE_SHARE`]) but are given back first
//! whenever the pool runs short; a cancelled or failed sequence records
//! nothing.
//!
//! A panic inside a step is caught and reported as an internal error to the
//! requests in that step; the thread keeps serving the queue.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use credence_model::generate::{GenerateParams, Generation, GenerationOutput};
use credence_model::kv::{KvPool, KvPoolStats, PrefixCache};
use credence_model::llama::{Model, WeightedAdapter};
use credence_model::threadpool::ThreadPool;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::error::{ApiError, Result};

/// What the engine reports back for one job.
#[derive(Debug)]
pub enum Event {
    /// A UTF-8-complete piece of generated text.
    Text(String),
    /// Generation finished (the final text is in the output).
    Done(GenerationOutput),
    /// Generation failed.
    Failed(ApiError),
}

/// One generation request, ready to run.
#[derive(Debug)]
pub struct Job {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Sampling and stopping parameters.
    pub params: GenerateParams,
    /// The request field holding the prompt, for error messages.
    pub prompt_param: &'static str,
    /// Whether the caller wants text deltas (streams) or only the final output.
    pub stream: bool,
    /// LoRA adapters applied to this request only.
    pub adapters: Vec<WeightedAdapter>,
    events: UnboundedSender<Event>,
}

impl Job {
    /// A job and the receiver on which its events arrive.
    pub fn new(
        prompt: Vec<u32>,
        params: GenerateParams,
        prompt_param: &'static str,
        stream: bool,
    ) -> (Self, UnboundedReceiver<Event>) {
        let (events, rx) = unbounded_channel();
        (
            Self {
                prompt,
                params,
                prompt_param,
                stream,
                adapters: Vec::new(),
                events,
            },
            rx,
        )
    }

    /// The same job with `adapters` applied.
    pub fn with_adapters(mut self, adapters: Vec<WeightedAdapter>) -> Self {
        self.adapters = adapters;
        self
    }
}

/// Scheduler counters, as a snapshot ([`Engine::scheduler_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Sequences that looked for a cached prefix when admitted.
    pub prefix_lookups: u64,
    /// Of those, sequences that adopted one.
    pub prefix_hits: u64,
    /// Positions adopted from cached prefixes instead of being computed.
    pub prefix_hit_tokens: u64,
    /// Bytes of KV blocks recorded in the prefix cache (some may also be
    /// in use by running sequences).
    pub prefix_cached_bytes: u64,
    /// Sequences preempted for lack of KV memory (and later recomputed).
    pub preemptions: u64,
    /// Forward steps run.
    pub steps: u64,
    /// Sequences summed over steps (÷ `steps`: the mean batch).
    pub step_sequences: u64,
    /// Input tokens summed over steps (prompt chunks and decoded tokens).
    pub step_tokens: u64,
}

/// Appends the scheduler's counters to a Prometheus exposition.
pub(crate) fn render_scheduler_metrics(out: &mut String, stats: &SchedulerStats) {
    let rows = [
        (
            "credence_kv_prefix_hit_tokens_total",
            "Prompt positions adopted from cached prefixes instead of computed.",
            "counter",
            stats.prefix_hit_tokens,
        ),
        (
            "credence_kv_prefix_cache_bytes",
            "Bytes of KV blocks recorded as reusable prefixes (evicted first when short).",
            "gauge",
            stats.prefix_cached_bytes,
        ),
        (
            "credence_preemptions_total",
            "Sequences preempted for lack of KV memory and recomputed later.",
            "counter",
            stats.preemptions,
        ),
        (
            "credence_engine_steps_total",
            "Forward steps run by the engine.",
            "counter",
            stats.steps,
        ),
        (
            "credence_engine_step_sequences_total",
            "Sequences summed over forward steps (divided by the steps: the mean batch).",
            "counter",
            stats.step_sequences,
        ),
        (
            "credence_engine_step_tokens_total",
            "Input tokens (prompt and decoded) summed over forward steps.",
            "counter",
            stats.step_tokens,
        ),
    ];
    for (name, help, kind, value) in rows {
        crate::metrics::gauge(out, name, help, kind, value);
    }
}

/// The worker's side of [`SchedulerStats`].
#[derive(Debug, Default)]
struct Counters {
    prefix_lookups: AtomicU64,
    prefix_hits: AtomicU64,
    prefix_hit_tokens: AtomicU64,
    prefix_cached_bytes: AtomicU64,
    preemptions: AtomicU64,
    steps: AtomicU64,
    step_sequences: AtomicU64,
    step_tokens: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SchedulerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SchedulerStats {
            prefix_lookups: get(&self.prefix_lookups),
            prefix_hits: get(&self.prefix_hits),
            prefix_hit_tokens: get(&self.prefix_hit_tokens),
            prefix_cached_bytes: get(&self.prefix_cached_bytes),
            preemptions: get(&self.preemptions),
            steps: get(&self.steps),
            step_sequences: get(&self.step_sequences),
            step_tokens: get(&self.step_tokens),
        }
    }

    fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
}

/// Handle to the engine thread. Dropping every handle ends the thread once
/// the queue is drained.
#[derive(Debug)]
pub struct Engine {
    queue: mpsc::SyncSender<Job>,
    kv: KvPool,
    capacity: usize,
    queued: Arc<AtomicUsize>,
    alive: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl Engine {
    /// Starts the engine thread with a queue of `capacity` waiting jobs and
    /// a KV cache of at most `kv_bytes` shared by all running sequences.
    pub fn start(
        model: Arc<Model>,
        pool: ThreadPool,
        capacity: usize,
        kv_bytes: usize,
    ) -> std::io::Result<Self> {
        let kv = model.new_pool(kv_bytes);
        let capacity = capacity.max(1);
        let (queue, jobs) = mpsc::sync_channel::<Job>(capacity);
        let queued = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicBool::new(true));
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            model,
            pool,
            kv: kv.clone(),
            jobs,
            queued: Arc::clone(&queued),
            counters: Arc::clone(&counters),
        };
        let alive_flag = Arc::clone(&alive);
        std::thread::Builder::new()
            .name("credence-engine".into())
            .spawn(move || {
                worker.run();
                alive_flag.store(false, Ordering::Release);
            })?;
        Ok(Self {
            queue,
            kv,
            capacity,
            queued,
            alive,
            counters,
        })
    }

    /// Queues `job`, or fails at once when the queue is full.
    pub fn submit(&self, job: Job) -> Result<()> {
        // Count before sending so the worker's decrement can never underflow.
        self.queued.fetch_add(1, Ordering::AcqRel);
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                match e {
                    mpsc::TrySendError::Full(_) => Err(ApiError::QueueFull {
                        capacity: self.capacity,
                    }),
                    mpsc::TrySendError::Disconnected(_) => Err(ApiError::EngineUnavailable),
                }
            }
        }
    }

    /// Jobs waiting for the engine (not counting the one running).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Occupancy of the KV pool: blocks of running sequences and of cached
    /// prefixes (see [`Engine::scheduler_stats`]).
    pub fn kv_stats(&self) -> KvPoolStats {
        self.kv.stats()
    }

    /// Prefix-cache and preemption counters.
    pub fn scheduler_stats(&self) -> SchedulerStats {
        self.counters.snapshot()
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the engine thread is still running.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}

/// Most sequences advanced together in one forward step.
pub const MAX_BATCH: usize = 16;

/// The prefix cache keeps at most `1 / PREFIX_CACHE_SHARE` of the KV budget.
/// Its blocks are the first to go when sequences need room anyway; the cap
/// keeps a node whose requests share little from holding its whole KV
/// budget in idle blocks (released blocks stay allocated for reuse, so
/// whatever the cache grows to stays resident).
pub const PREFIX_CACHE_SHARE: usize = 4;

struct Worker {
    model: Arc<Model>,
    pool: ThreadPool,
    kv: KvPool,
    jobs: mpsc::Receiver<Job>,
    queued: Arc<AtomicUsize>,
    counters: Arc<Counters>,
}

/// A job with its sequence: running, waiting for KV room, or preempted.
struct Active<'m> {
    job: Job,
    generation: Generation<'m>,
    /// The adapter set the sequence's KV blocks are computed under, as the
    /// prefix cache keys it.
    prefix_key: String,
    started: Instant,
    /// Set when an error was already reported to the client.
    failed: bool,
}

/// The worker's scheduling state.
struct Schedule<'m> {
    /// Sequences in the batch, oldest first.
    running: Vec<Active<'m>>,
    /// Sequences waiting for KV room, preempted ones at the front; they hold
    /// no blocks.
    waiting: VecDeque<Active<'m>>,
    prefixes: PrefixCache,
}

impl Worker {
    fn run(self) {
        tracing::debug!(threads = self.pool.threads(), "engine thread started");
        let budget_blocks = self.kv.stats().budget_bytes / self.kv.block_bytes().max(1);
        let mut schedule = Schedule {
            running: Vec::new(),
            waiting: VecDeque::new(),
            prefixes: PrefixCache::new(&self.kv, budget_blocks / PREFIX_CACHE_SHARE),
        };
        while self.admit(&mut schedule) {
            self.step(&mut schedule);
        }
        tracing::debug!("engine thread stopped");
    }

    /// Adds sequences up to [`MAX_BATCH`]: first those waiting for KV room
    /// (preempted ones first), then queued jobs; blocks while idle. False
    /// once the queue is closed and nothing is left to run.
    fn admit<'m>(&'m self, s: &mut Schedule<'m>) -> bool {
        while s.running.len() < MAX_BATCH {
            let Some(waiting) = s.waiting.pop_front() else {
                break;
            };
            if let Some(waiting) = self.start(waiting, s) {
                s.waiting.push_front(waiting);
                break;
            }
        }
        while s.running.is_empty() {
            let Ok(job) = self.jobs.recv() else {
                return false;
            };
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.take(job, s);
        }
        while s.running.len() < MAX_BATCH && s.waiting.is_empty() {
            let Ok(job) = self.jobs.try_recv() else {
                break;
            };
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.take(job, s);
        }
        true
    }

    /// Turns a queued job into a sequence and tries to start it; it waits
    /// when there is no KV room yet.
    fn take<'m>(&'m self, job: Job, s: &mut Schedule<'m>) {
        if let Some(sequence) = self.prepare(job)
            && let Some(sequence) = self.start(sequence, s)
        {
            s.waiting.push_back(sequence);
        }
    }

    /// Validates a job and builds its sequence (no KV blocks yet); reports
    /// invalid ones to their client.
    fn prepare<'m>(&'m self, mut job: Job) -> Option<Active<'m>> {
        if job.events.is_closed() {
            tracing::debug!("client left before its generation started; skipping");
            return None;
        }
        let built = Generation::in_pool_unreserved(&self.model, &job.prompt, &job.params, &self.kv);
        match built {
            Ok(generation) => {
                let adapters = std::mem::take(&mut job.adapters);
                Some(Active {
                    prefix_key: prefix_key(&adapters),
                    // The generation holds the only engine-side reference, so
                    // an adapter counts as in use exactly while a sequence
                    // runs or waits.
                    generation: generation.with_adapters(adapters),
                    job,
                    started: Instant::now(),
                    failed: false,
                })
            }
            Err(error) => {
                let _ = job
                    .events
                    .send(Event::Failed(ApiError::from_model(error, job.prompt_param)));
                None
            }
        }
    }

    /// Adopts the sequence's cached prefix and reserves the rest of its
    /// next step, keeping a block of headroom per running sequence; hands
    /// the sequence back (holding no blocks) when that does not fit while
    /// others run. With nothing running it can never fit and fails.
    fn start<'m>(&'m self, mut a: Active<'m>, s: &mut Schedule<'m>) -> Option<Active<'m>> {
        if a.job.events.is_closed() {
            tracing::debug!("client left while its generation waited; dropping it");
            return None;
        }
        let reused = a.generation.reuse_prefix(&mut s.prefixes, &a.prefix_key);
        let headroom = s.running.len();
        let reserved = self.with_room(&mut s.prefixes, || {
            a.generation.reserve_input()?;
            self.check_headroom(headroom)
        });
        match reserved {
            Ok(()) => {
                // Counted on admission only: a sequence that keeps waiting
                // looks its prefix up again each time it is retried.
                Counters::bump(&self.counters.prefix_lookups, 1);
                if reused > 0 {
                    Counters::bump(&self.counters.prefix_hits, 1);
                    Counters::bump(&self.counters.prefix_hit_tokens, reused as u64);
                }
                s.running.push(a);
                None
            }
            Err(credence_model::Error::KvExhausted { .. }) if !s.running.is_empty() => {
                a.generation.preempt();
                Some(a)
            }
            Err(error) => {
                let _ = a.job.events.send(Event::Failed(ApiError::from_model(
                    error,
                    a.job.prompt_param,
                )));
                None
            }
        }
    }

    /// Fails with [`credence_model::Error::KvExhausted`] unless `blocks`
    /// more blocks are free.
    fn check_headroom(&self, blocks: usize) -> credence_model::Result<()> {
        let stats = self.kv.stats();
        let needed = blocks.saturating_mul(stats.block_bytes);
        if stats.free_bytes < needed {
            return Err(credence_model::Error::KvExhausted {
                needed,
                free: stats.free_bytes,
                budget: stats.budget_bytes,
            });
        }
        Ok(())
    }

    /// Runs `attempt`; while it fails for lack of KV memory, evicts idle
    /// cached prefixes to cover the shortfall and retries. Gives up when
    /// nothing is left to evict.
    fn with_room<T>(
        &self,
        prefixes: &mut PrefixCache,
        mut attempt: impl FnMut() -> credence_model::Result<T>,
    ) -> credence_model::Result<T> {
        loop {
            match attempt() {
                Err(credence_model::Error::KvExhausted { needed, free, .. })
                    if prefixes.evict(self.blocks_short(needed, free)) > 0 =>
                {
                    self.publish_prefix_bytes(prefixes);
                }
                other => return other,
            }
        }
    }

    /// Whole blocks covering the gap between `needed` and `free` bytes (at
    /// least one).
    fn blocks_short(&self, needed: usize, free: usize) -> usize {
        needed
            .saturating_sub(free)
            .div_ceil(self.kv.block_bytes().max(1))
            .max(1)
    }

    /// One forward step for every running sequence, then retire finished ones.
    fn step(&self, s: &mut Schedule<'_>) {
        let prefilling: Vec<bool> = s
            .running
            .iter()
            .map(|a| a.generation.pending_tokens() > 1)
            .collect();
        let tokens: usize = s
            .running
            .iter()
            .map(|a| a.generation.pending_tokens())
            .sum();
        Counters::bump(&self.counters.steps, 1);
        Counters::bump(&self.counters.step_sequences, s.running.len() as u64);
        Counters::bump(&self.counters.step_tokens, tokens as u64);
        match catch_unwind(AssertUnwindSafe(|| self.forward_and_sample(&mut s.running))) {
            Ok(Ok(())) => {
                // A prompt (or a recomputed history) just filled its blocks:
                // later sequences starting the same way can adopt them now,
                // while this one is still generating.
                for (a, _) in s.running.iter().zip(prefilling).filter(|(_, p)| *p) {
                    self.record(&mut s.prefixes, a);
                }
            }
            // The step reserves KV space before computing anything, so it
            // can be retried once there is room.
            Ok(Err(credence_model::Error::KvExhausted { needed, free, .. })) => {
                self.make_room(s, needed, free);
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "forward step failed");
                fail_all(&mut s.running, |_| {
                    ApiError::Internal(format!("forward step failed: {error}"))
                });
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                tracing::error!(panic = %what, "generation panicked; the engine keeps running");
                fail_all(&mut s.running, |_| {
                    ApiError::Internal(format!("generation panicked: {what}"))
                });
            }
        }
        let mut i = 0;
        while i < s.running.len() {
            let a = &s.running[i];
            if a.failed {
                s.running.remove(i);
            } else if a.generation.finished().is_some() {
                let a = s.running.remove(i);
                if !a.job.events.is_closed() {
                    // A finished conversation is the prefix of its next turn.
                    self.record(&mut s.prefixes, &a);
                }
                let done = release(a);
                // Its blocks are idle now: keep the prefix cache to its size
                // before the client hears that the request is done.
                s.prefixes.trim();
                self.publish_prefix_bytes(&s.prefixes);
                done.report();
            } else {
                i += 1;
            }
        }
    }

    /// Records a sequence's full blocks for later sequences to adopt.
    fn record(&self, prefixes: &mut PrefixCache, a: &Active<'_>) {
        a.generation.record_prefix(prefixes, &a.prefix_key);
        self.publish_prefix_bytes(prefixes);
    }

    /// Publishes the prefix cache's size; called whenever it changes, before
    /// any client hears of the step that changed it.
    fn publish_prefix_bytes(&self, prefixes: &PrefixCache) {
        self.counters
            .prefix_cached_bytes
            .store(prefixes.bytes() as u64, Ordering::Relaxed);
    }

    /// After a step found the KV pool `needed - free` bytes short: frees
    /// idle cached prefixes if there are any, else preempts the newest
    /// sequence (it waits, first in line, to be recomputed), and fails a
    /// sequence only when it runs alone and still cannot grow.
    fn make_room(&self, s: &mut Schedule<'_>, needed: usize, free: usize) {
        if s.prefixes.evict(self.blocks_short(needed, free)) > 0 {
            self.publish_prefix_bytes(&s.prefixes);
            return;
        }
        let Some(mut newest) = s.running.pop() else {
            return;
        };
        if s.running.is_empty() {
            let error = credence_model::Error::KvExhausted {
                needed,
                free,
                budget: self.kv.stats().budget_bytes,
            };
            tracing::warn!(%error, "a sequence alone does not fit the KV cache; stopping it");
            let _ = newest.job.events.send(Event::Failed(ApiError::from_model(
                error,
                newest.job.prompt_param,
            )));
            return;
        }
        tracing::debug!(
            running = s.running.len(),
            "KV cache full; preempting the newest sequence"
        );
        newest.generation.preempt();
        Counters::bump(&self.counters.preemptions, 1);
        s.waiting.push_front(newest);
    }

    fn forward_and_sample(&self, running: &mut [Active<'_>]) -> credence_model::Result<()> {
        let mut batch: Vec<_> = running
            .iter_mut()
            .map(|a| a.generation.next_input())
            .collect();
        let logits = self.model.forward(&self.pool, &mut batch)?;
        drop(batch);
        for (a, mut logits) in running.iter_mut().zip(logits) {
            match a.generation.accept(&mut logits) {
                Ok(piece) => deliver(a, piece),
                Err(error) => {
                    let _ = a.job.events.send(Event::Failed(ApiError::from_model(
                        error,
                        a.job.prompt_param,
                    )));
                    a.failed = true;
                }
            }
        }
        Ok(())
    }
}

/// The prefix-cache key of an adapter set: each adapter's content id and
/// exact weight, in order (the order of a weighted sum changes its
/// rounding, so it is part of the key). Empty for the base model.
fn prefix_key(adapters: &[WeightedAdapter]) -> String {
    adapters
        .iter()
        .map(|wa| format!("{}*{:08x};", wa.adapter.id(), wa.weight.to_bits()))
        .collect()
}

/// Sends a text piece; a client that has gone stops its generation.
fn deliver(a: &mut Active<'_>, piece: String) {
    let listening = if a.job.stream && !piece.is_empty() {
        a.job.events.send(Event::Text(piece)).is_ok()
    } else {
        !a.job.events.is_closed()
    };
    if !listening {
        a.generation.stop();
    }
}

/// A finished job whose sequence has been released.
struct Done {
    job: Job,
    output: GenerationOutput,
    started: Instant,
}

/// Drops a finished job's sequence (its KV blocks and adapter references),
/// so that whoever sees `Done` sees them released.
fn release(a: Active<'_>) -> Done {
    let output = a.generation.output();
    let Active {
        job,
        started,
        generation,
        ..
    } = a;
    drop(generation);
    Done {
        job,
        output,
        started,
    }
}

impl Done {
    /// Logs the job and sends its output.
    fn report(self) {
        let Self {
            job,
            output,
            started,
        } = self;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            prompt_tokens = output.prompt_tokens,
            completion_tokens = output.completion_tokens,
            seconds = format_args!("{secs:.3}"),
            tokens_per_second =
                format_args!("{:.1}", output.completion_tokens as f64 / secs.max(1e-9)),
            cancelled = job.events.is_closed(),
            "generation finished"
        );
        // The client may be gone; nobody is left to tell then.
        let _ = job.events.send(Event::Done(output));
    }
}

fn fail_all(active: &mut [Active<'_>], error: impl Fn(&Active<'_>) -> ApiError) {
    for a in active.iter_mut().filter(|a| !a.failed) {
        let _ = a.job.events.send(Event::Failed(error(a)));
        a.failed = true;
    }
}
