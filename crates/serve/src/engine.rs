//! The engine thread: owns the compute pool and runs one generation at a time.
//!
//! Generation is CPU-bound and must not run on the async runtime, so a
//! dedicated OS thread takes [`Job`]s from a bounded queue. Admission is
//! decided at [`Engine::submit`]: a full queue is reported at once (HTTP 429)
//! instead of letting latency grow without bound. Each job carries the sending
//! half of an unbounded channel; text deltas go out through it as they are
//! produced. When the client goes away its receiver is dropped, the next send
//! fails, and the generation callback returns `Break`, so an abandoned request
//! stops costing compute within one token.
//!
//! A panic inside a generation is caught and reported as an internal error to
//! that request alone; the thread keeps serving the queue.

use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use credence_model::generate::{GenerateParams, GenerationOutput, generate};
use credence_model::llama::Model;
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
                events,
            },
            rx,
        )
    }
}

/// Handle to the engine thread. Dropping every handle ends the thread once
/// the queue is drained.
#[derive(Debug)]
pub struct Engine {
    queue: mpsc::SyncSender<Job>,
    capacity: usize,
    queued: Arc<AtomicUsize>,
    alive: Arc<AtomicBool>,
}

impl Engine {
    /// Starts the engine thread with a queue of `capacity` waiting jobs.
    pub fn start(model: Arc<Model>, pool: ThreadPool, capacity: usize) -> std::io::Result<Self> {
        let capacity = capacity.max(1);
        let (queue, jobs) = mpsc::sync_channel::<Job>(capacity);
        let queued = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicBool::new(true));
        let worker = Worker {
            model,
            pool,
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

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the engine thread is still running.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}

struct Worker {
    model: Arc<Model>,
    pool: ThreadPool,
    jobs: mpsc::Receiver<Job>,
    queued: Arc<AtomicUsize>,
}

impl Worker {
    fn run(self) {
        tracing::debug!(threads = self.pool.threads(), "engine thread started");
        while let Ok(job) = self.jobs.recv() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            if job.events.is_closed() {
                tracing::debug!("client left before its generation started; skipping");
                continue;
            }
            self.run_job(&job);
        }
        tracing::debug!("engine thread stopped");
    }

    fn run_job(&self, job: &Job) {
        let started = std::time::Instant::now();
        let events = &job.events;
        let mut on_text = |text: &str| {
            let delivered = if job.stream {
                events.send(Event::Text(text.to_owned())).is_ok()
            } else {
                !events.is_closed()
            };
            if delivered {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            generate(
                &self.model,
                &self.pool,
                &job.prompt,
                &job.params,
                &mut on_text,
            )
        }));
        let event = match outcome {
            Ok(Ok(output)) => {
                let secs = started.elapsed().as_secs_f64();
                tracing::info!(
                    prompt_tokens = output.prompt_tokens,
                    completion_tokens = output.completion_tokens,
                    seconds = format_args!("{secs:.3}"),
                    tokens_per_second =
                        format_args!("{:.1}", output.completion_tokens as f64 / secs.max(1e-9)),
                    cancelled = events.is_closed(),
                    "generation finished"
                );
                Event::Done(output)
            }
            Ok(Err(error)) => Event::Failed(ApiError::from_model(error, job.prompt_param)),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                tracing::error!(panic = %what, "generation panicked; the engine keeps running");
                Event::Failed(ApiError::Internal(format!("generation panicked: {what}")))
            }
        };
        // The client may be gone; nobody is left to tell then.
        let _ = events.send(event);
    }
}
