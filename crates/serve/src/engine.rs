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
//! A job whose prompt does not fit waits (ahead of the queue) until running
//! sequences finish; if nothing runs it can never fit and gets 429
//! `kv_cache_full`. A step that cannot reserve room for its new tokens fails
//! before computing anything, and the newest sequence gives way.
//!
//! A panic inside a step is caught and reported as an internal error to the
//! requests in that step; the thread keeps serving the queue.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use credence_model::generate::{GenerateParams, Generation, GenerationOutput};
use credence_model::kv::{KvPool, KvPoolStats};
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

/// Handle to the engine thread. Dropping every handle ends the thread once
/// the queue is drained.
#[derive(Debug)]
pub struct Engine {
    queue: mpsc::SyncSender<Job>,
    kv: KvPool,
    capacity: usize,
    queued: Arc<AtomicUsize>,
    alive: Arc<AtomicBool>,
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
        let worker = Worker {
            model,
            pool,
            kv: kv.clone(),
            jobs,
            queued: Arc::clone(&queued),
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

    /// Occupancy of the KV cache shared by the running sequences.
    pub fn kv_stats(&self) -> KvPoolStats {
        self.kv.stats()
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

struct Worker {
    model: Arc<Model>,
    pool: ThreadPool,
    kv: KvPool,
    jobs: mpsc::Receiver<Job>,
    queued: Arc<AtomicUsize>,
}

/// A job being generated.
struct Active<'m> {
    job: Job,
    generation: Generation<'m>,
    started: Instant,
    /// Set when an error was already reported to the client.
    failed: bool,
}

impl Worker {
    fn run(self) {
        tracing::debug!(threads = self.pool.threads(), "engine thread started");
        let mut active: Vec<Active<'_>> = Vec::new();
        let mut deferred: VecDeque<Job> = VecDeque::new();
        while self.admit(&mut active, &mut deferred) {
            self.step(&mut active);
        }
        tracing::debug!("engine thread stopped");
    }

    /// Adds jobs up to [`MAX_BATCH`]: first those deferred for lack of KV
    /// space, then queued ones; blocks while idle. False once the queue is
    /// closed and nothing is left to run.
    fn admit<'m>(&'m self, active: &mut Vec<Active<'m>>, deferred: &mut VecDeque<Job>) -> bool {
        while active.len() < MAX_BATCH {
            let Some(job) = deferred.pop_front() else {
                break;
            };
            if let Some(job) = self.start(job, active) {
                deferred.push_front(job);
                break;
            }
        }
        while active.is_empty() {
            let Ok(job) = self.jobs.recv() else {
                return false;
            };
            self.queued.fetch_sub(1, Ordering::AcqRel);
            if let Some(job) = self.start(job, active) {
                deferred.push_back(job);
            }
        }
        while active.len() < MAX_BATCH && deferred.is_empty() {
            let Ok(job) = self.jobs.try_recv() else {
                break;
            };
            self.queued.fetch_sub(1, Ordering::AcqRel);
            if let Some(job) = self.start(job, active) {
                deferred.push_back(job);
            }
        }
        true
    }

    /// Starts `job`, or hands it back when the KV cache cannot hold its
    /// prompt while other sequences run (it waits for them to finish). With
    /// nothing running, such a job can never fit and fails instead.
    fn start<'m>(&'m self, mut job: Job, active: &mut Vec<Active<'m>>) -> Option<Job> {
        if job.events.is_closed() {
            tracing::debug!("client left before its generation started; skipping");
            return None;
        }
        match Generation::in_pool(&self.model, &job.prompt, &job.params, &self.kv) {
            Err(credence_model::Error::KvExhausted { .. }) if !active.is_empty() => {
                return Some(job);
            }
            Ok(generation) => active.push(Active {
                // The generation holds the only engine-side reference, so an
                // adapter counts as in use exactly while a sequence runs.
                generation: generation.with_adapters(std::mem::take(&mut job.adapters)),
                job,
                started: Instant::now(),
                failed: false,
            }),
            Err(error) => {
                let _ = job
                    .events
                    .send(Event::Failed(ApiError::from_model(error, job.prompt_param)));
            }
        }
        None
    }

    /// One forward step for every active sequence, then retire finished ones.
    fn step(&self, active: &mut Vec<Active<'_>>) {
        match catch_unwind(AssertUnwindSafe(|| self.forward_and_sample(active))) {
            Ok(Ok(())) => {}
            // The step reserves KV space before computing anything, so it
            // can be retried: the newest sequence gives way to the others.
            Ok(Err(error @ credence_model::Error::KvExhausted { .. })) => {
                if let Some(newest) = active.pop() {
                    tracing::warn!(%error, "KV cache full; stopping the newest sequence");
                    let _ = newest.job.events.send(Event::Failed(ApiError::from_model(
                        error,
                        newest.job.prompt_param,
                    )));
                }
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "forward step failed");
                fail_all(active, |_| {
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
                fail_all(active, |_| {
                    ApiError::Internal(format!("generation panicked: {what}"))
                });
            }
        }
        let mut i = 0;
        while i < active.len() {
            let a = &active[i];
            if a.failed {
                active.remove(i);
            } else if a.generation.finished().is_some() {
                finish(active.remove(i));
            } else {
                i += 1;
            }
        }
    }

    fn forward_and_sample(&self, active: &mut [Active<'_>]) -> credence_model::Result<()> {
        let mut batch: Vec<_> = active
            .iter_mut()
            .map(|a| a.generation.next_input())
            .collect();
        let logits = self.model.forward(&self.pool, &mut batch)?;
        drop(batch);
        for (a, mut logits) in active.iter_mut().zip(logits) {
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

/// Reports a finished job. The sequence (its KV cache and adapter
/// references) is dropped first, so whoever sees `Done` sees it released.
fn finish(a: Active<'_>) {
    let output = a.generation.output();
    let Active {
        job,
        started,
        generation,
        ..
    } = a;
    drop(generation);
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        prompt_tokens = output.prompt_tokens,
        completion_tokens = output.completion_tokens,
        seconds = format_args!("{secs:.3}"),
        tokens_per_second = format_args!("{:.1}", output.completion_tokens as f64 / secs.max(1e-9)),
        cancelled = job.events.is_closed(),
        "generation finished"
    );
    // The client may be gone; nobody is left to tell then.
    let _ = job.events.send(Event::Done(output));
}

fn fail_all(active: &mut [Active<'_>], error: impl Fn(&Active<'_>) -> ApiError) {
    for a in active.iter_mut().filter(|a| !a.failed) {
        let _ = a.job.events.send(Event::Failed(error(a)));
        a.failed = true;
    }
}
