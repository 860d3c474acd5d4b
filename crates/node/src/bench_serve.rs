//! `credence bench serve`: multi-adapter serving under load, end to end.
//!
//! One in-process node (real engine, real adapter store on disk, real HTTP
//! socket) serves `clients` concurrent streaming clients, each a thread with
//! its own HTTP connection, until `requests` completions of `gen_tokens`
//! tokens each (`ignore_eos`) have finished. Scenarios run in the same
//! process, in paired rounds: each round runs the base model, then the
//! scenarios of its group, one after the other, and each scenario's ratio is
//! taken against the base run of its own round. A shared VM's speed drifts
//! by ±10–20% over minutes; pairing keeps that drift out of the ratios, and
//! the spread of the per-round ratios shows what is left of it:
//!
//! * `base`: the base model only;
//! * `1 adapter`: every request names the same rank-16 all-linear adapter;
//! * `N adapters, uniform|zipf`: each request names one of N synthetic
//!   adapters (ranks 8/16/32 on q,v / q,k,v,o / all seven projections),
//!   chosen uniformly or by a Zipf law with exponent `zipf_s`;
//! * `merge per request`: the baseline without batched multi-adapter
//!   support: for each request the adapter is merged into the weights
//!   (dequantise, add, requantise), then the request runs alone.
//!
//! Adapters are registered as scenarios need them, so an `N adapters`
//! scenario runs with N adapters in the store. After each, cold loads are
//! timed ([`cold_load`]): from the page cache, and from the disk against
//! reading the same file alone.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use credence_model::kv::KvCache;
use credence_model::llama::{BatchSeq, Model, Transformer, WeightedAdapter};
use credence_model::lora::{LoraDtype, PROJECTIONS, random_adapter, runtime_file_name};
use credence_model::merge::merge_adapters;
use credence_model::sampling::argmax;
use credence_model::threadpool::ThreadPool;
use credence_model::tokenizer::Tokenizer;
use credence_model::weights::LayerTensor;
use credence_serve::{AppState, ServeConfig};
use serde::Serialize;

mod cold_load;

pub use cold_load::ColdLoads;
use cold_load::{StoreFiles, cold_loads};

use crate::bench::BENCH_TEXT;
use crate::error::{Error, Result};

/// What to measure.
#[derive(Debug, Clone)]
pub struct ServeBenchConfig {
    /// The model file or directory.
    pub model: PathBuf,
    /// Compute threads of the engine.
    pub threads: usize,
    /// Concurrent streaming clients.
    pub clients: usize,
    /// Completions per scenario.
    pub requests: usize,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Tokens generated per request.
    pub gen_tokens: usize,
    /// Adapter counts to serve (each run uniform and Zipf).
    pub adapter_counts: Vec<usize>,
    /// RAM budget for decoded adapters, MiB.
    pub cache_mib: usize,
    /// Element type adapters are held in.
    pub lora_dtype: LoraDtype,
    /// Zipf exponent.
    pub zipf_s: f64,
    /// Cold loads timed.
    pub cold_loads: usize,
    /// Requests in the merge-per-request baseline (0 to skip).
    pub merge_requests: usize,
    /// Paired rounds per group of scenarios (each with its own base run).
    pub rounds: usize,
    /// Where the adapter store lives (a fresh subdirectory is made).
    pub work_dir: PathBuf,
    /// Seed of the synthetic adapters and traffic.
    pub seed: u64,
}

impl ServeBenchConfig {
    /// Rejects settings that cannot run.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("clients", self.clients),
            ("requests", self.requests),
            ("prompt_tokens", self.prompt_tokens),
            ("gen_tokens", self.gen_tokens),
            ("cache_mib", self.cache_mib),
            ("rounds", self.rounds),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::config(field, "must be at least 1"));
        }
        if self.adapter_counts.iter().any(|&n| n == 0 || n > 100_000) {
            return Err(Error::config("adapters", "counts must be in 1..=100000"));
        }
        if !(self.zipf_s > 0.0 && self.zipf_s < 10.0) {
            return Err(Error::config("zipf_s", "must be in (0, 10)"));
        }
        Ok(())
    }
}

/// One scenario's results.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Scenario label.
    pub name: String,
    /// Distinct adapters requests may name (0 for base only).
    pub adapters: usize,
    /// Completions finished.
    pub requests: usize,
    /// Requests that failed.
    pub errors: usize,
    /// Generated tokens over wall time.
    pub tokens_per_s: f64,
    /// Throughput relative to the base run of the same round: the median
    /// over rounds.
    pub ratio_to_base: f64,
    /// The lowest and highest per-round ratio.
    pub ratio_range: (f64, f64),
    /// Tokens/s of each round, in run order.
    pub round_tokens_per_s: Vec<f64>,
    /// Time to first token, ms (p50, p99).
    pub ttft_ms: (f64, f64),
    /// Inter-token latency, ms (p50, p99).
    pub itl_ms: (f64, f64),
    /// Peak resident memory of the process during the scenario, MiB.
    pub peak_rss_mib: f64,
    /// Peak bytes of decoded adapters in the RAM cache, MiB.
    pub peak_cache_mib: f64,
    /// Adapter loads from the store during the scenario.
    pub loads: u64,
    /// Sequences per engine forward step, on average.
    pub mean_batch: f64,
    /// Share of the prompt tokens served from the prefix cache (KV blocks
    /// of an earlier request with the same adapters and prompt start).
    pub prompt_reuse: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct ServeBenchReport {
    /// Engine threads.
    pub threads: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Prompt and generated tokens per request.
    pub prompt_tokens: usize,
    /// Generated tokens per request.
    pub gen_tokens: usize,
    /// Adapter RAM budget, MiB.
    pub cache_mib: usize,
    /// Element type adapters were held in.
    pub lora_dtype: LoraDtype,
    /// Scenario results, in run order.
    pub scenarios: Vec<ScenarioResult>,
    /// Cold loads of a rank-16 all-linear adapter, one entry per store size
    /// they were timed with.
    pub cold_loads: Vec<ColdLoads>,
}

impl ServeBenchReport {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }

    /// The report as a markdown table.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| scenario | adapters | tok/s | × base | × base, rounds min–max | TTFT p50 / p99 ms | ITL p50 / p99 ms | mean batch | prompt reused | peak RSS MiB | adapter cache MiB | loads | errors |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for s in &self.scenarios {
            out.push_str(&format!(
                "| {} | {} | {:.1} | {:.2} | {:.2}–{:.2} | {:.0} / {:.0} | {:.1} / {:.1} | {:.1} | {:.0}% | {:.0} | {:.0} | {} | {} |\n",
                s.name,
                s.adapters,
                s.tokens_per_s,
                s.ratio_to_base,
                s.ratio_range.0,
                s.ratio_range.1,
                s.ttft_ms.0,
                s.ttft_ms.1,
                s.itl_ms.0,
                s.itl_ms.1,
                s.mean_batch,
                100.0 * s.prompt_reuse,
                s.peak_rss_mib,
                s.peak_cache_mib,
                s.loads,
                s.errors
            ));
        }
        out.push_str(&format!("\nAdapters held as {}.\n", self.lora_dtype));
        for c in &self.cold_loads {
            out.push_str(&c.line());
            out.push('\n');
        }
        out
    }
}

/// Target modules of the synthetic adapters, cycled.
const TARGET_SETS: [&[LayerTensor]; 3] = [
    &[LayerTensor::Q, LayerTensor::V],
    &[
        LayerTensor::Q,
        LayerTensor::K,
        LayerTensor::V,
        LayerTensor::O,
    ],
    &PROJECTIONS,
];

/// Ranks of the synthetic adapters, cycled.
const RANKS: [usize; 3] = [8, 16, 32];

/// Rank and targets of synthetic adapter `i`: all nine combinations recur
/// every nine adapters.
fn adapter_spec(i: usize) -> (usize, &'static [LayerTensor]) {
    (RANKS[i % 3], TARGET_SETS[(i / 3) % 3])
}

/// Whether adapter `i` is rank 16 on all seven projections.
fn is_rank16_all_linear(i: usize) -> bool {
    i % 9 == 7
}

/// Progress callback: (stage, done, total).
pub type Progress<'a> = &'a (dyn Fn(&str, u64, u64) + Sync);

/// Runs every scenario; `progress` reports set-up and scenario progress.
pub fn run_serve_bench(
    config: &ServeBenchConfig,
    progress: Progress<'_>,
) -> Result<ServeBenchReport> {
    config.validate()?;
    let model = Model::load(&config.model)?;
    let prompts = Prompts::new(model.tokenizer(), config.prompt_tokens)?;
    let store_dir = config
        .work_dir
        .join(format!("{STORE_PREFIX}{}", std::process::id()));
    remove_interrupted_stores(&config.work_dir);
    let _cleanup = RemoveOnDrop(store_dir.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start a runtime for", &config.model, e))?;
    let serve_config = ServeConfig {
        model_id: "base".into(),
        queue_capacity: 2 * config.requests.max(config.clients),
        adapter_dir: Some(store_dir.clone()),
        adapter_cache_bytes: config.cache_mib << 20,
        adapter_dtype: config.lora_dtype,
        ..ServeConfig::default()
    };
    let base_weights = model.transformer().weights().clone();
    let base_config = model.config().clone();
    let runtime_file = runtime_file_name(&base_config, config.lora_dtype);
    let store_files = StoreFiles {
        root: &store_dir,
        runtime_file: &runtime_file,
    };
    let threads = crate::config::effective_threads(config.threads);
    let state = runtime
        .block_on(AppState::new(model, threads, serve_config))
        .map_err(|e| Error::io("cannot start the engine for", &config.model, e))?;
    // Adapters are registered as the scenarios need them, so each scenario
    // runs with as many adapters in the store as it serves (a node serving
    // 64 adapters does not keep 1,000 on disk). The first few include the
    // rank-16 all-linear adapter of the "1 adapter" scenario.
    let mut ids = Vec::new();
    runtime.block_on(register_adapters(
        &state,
        &mut ids,
        9,
        config.seed,
        progress,
    ))?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| Error::io("cannot bind", std::path::Path::new("127.0.0.1:0"), e))?;
    let addr = listener.local_addr().map_err(|e| {
        Error::io(
            "cannot read the address of",
            std::path::Path::new("socket"),
            e,
        )
    })?;
    let app = credence_serve::router(state.clone());
    runtime.spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/v1/completions");

    let bench = Runner {
        config,
        url,
        state: &state,
        prompts: &prompts,
        progress,
    };
    bench.warm_up()?;
    let one = ids
        .iter()
        .enumerate()
        .find(|(i, _)| is_rank16_all_linear(*i))
        .map(|(_, id)| id.clone())
        .unwrap_or_default();
    let (mut scenarios, base_tps) =
        bench.paired("base", &[("1 adapter".to_owned(), 1, Traffic::One(one))])?;
    let mut cold = Vec::new();
    for &n in &config.adapter_counts {
        runtime.block_on(register_adapters(
            &state,
            &mut ids,
            n,
            config.seed,
            progress,
        ))?;
        let pool = &ids[..n.min(ids.len())];
        let group = [
            (format!("{n} adapters, uniform"), n, Traffic::Uniform(pool)),
            (
                format!("{n} adapters, zipf s={}", config.zipf_s),
                n,
                Traffic::Zipf(pool, Zipf::new(pool.len(), config.zipf_s)),
            ),
        ];
        scenarios.extend(
            bench
                .paired(&format!("base, paired with {n} adapters"), &group)?
                .0,
        );
        if config.cold_loads > 0 {
            let candidates: Vec<&String> = ids
                .iter()
                .enumerate()
                .filter(|(i, _)| is_rank16_all_linear(*i))
                .map(|(_, id)| id)
                .collect();
            cold.push(runtime.block_on(cold_loads(
                &state,
                &store_files,
                &candidates,
                ids.len(),
                config.cold_loads,
                progress,
            ))?);
        }
    }
    if config.merge_requests > 0 {
        let adapters: Vec<_> = runtime.block_on(async {
            let mut out = Vec::new();
            for id in ids.iter().take(
                config
                    .adapter_counts
                    .first()
                    .copied()
                    .unwrap_or(64)
                    .min(ids.len()),
            ) {
                if let Ok(Some((_, a))) = state.adapters().acquire(id).await {
                    out.push(a);
                }
                if out.len() >= config.merge_requests {
                    break;
                }
            }
            out
        });
        let merged = merge_baseline(
            config,
            &base_config,
            &base_weights,
            &adapters,
            &prompts,
            threads,
            progress,
        )?;
        // Not interleaved with base runs: compared with the first group's.
        scenarios.push(summarise(
            "merge per request (baseline)",
            adapters.len(),
            &[merged],
            &[base_tps],
        ));
    }
    drop(bench);
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(ServeBenchReport {
        threads,
        clients: config.clients,
        prompt_tokens: config.prompt_tokens,
        gen_tokens: config.gen_tokens,
        cache_mib: config.cache_mib,
        lora_dtype: config.lora_dtype,
        scenarios,
        cold_loads: cold,
    })
}

/// Deletes the bench's adapter store when the bench ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Prefix of a run's store directory, followed by the process id.
const STORE_PREFIX: &str = "bench-serve-";

/// Removes the stores of runs that were killed before they could clean up
/// (their process is gone): with 1,000 adapters each holds about 18 GB.
fn remove_interrupted_stores(work_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(work_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(STORE_PREFIX))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid.filter(|&p| p != std::process::id() && !process_exists(p)) {
            let path = entry.path();
            tracing::info!(path = %path.display(), pid, "removing the store of an interrupted benchmark run");
            if let Err(error) = std::fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), %error, "cannot remove an old benchmark store");
            }
        }
    }
}

/// Whether process `pid` is running. Where that cannot be told (not
/// Linux), every process counts as running, so nothing is removed.
fn process_exists(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        std::path::Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Registers `count` synthetic adapters; returns their ids in order.
async fn register_adapters(
    state: &AppState,
    ids: &mut Vec<String>,
    count: usize,
    seed: u64,
    progress: Progress<'_>,
) -> Result<()> {
    let base = state.model().config().clone();
    for i in ids.len()..count {
        let (rank, targets) = adapter_spec(i);
        let adapter = random_adapter(&base, rank, targets, seed.wrapping_add(i as u64));
        let (config, weights) = adapter.to_peft_bytes()?;
        let (id, _) = state
            .adapters()
            .register(config.into(), weights.into(), None)
            .await
            .map_err(|e| {
                Error::config(
                    "adapters",
                    format!("registering synthetic adapter {i}: {e}"),
                )
            })?;
        ids.push(id);
        progress("registering adapters", i as u64 + 1, count as u64);
    }
    Ok(())
}

/// Which model each request names.
enum Traffic<'a> {
    Base,
    One(String),
    Uniform(&'a [String]),
    Zipf(&'a [String], Zipf),
}

impl Traffic<'_> {
    /// The `model` of request `n` (deterministic per request).
    fn pick(&self, n: usize, seed: u64) -> String {
        let u = unit(splitmix(
            seed ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ));
        match self {
            Traffic::Base => "base".to_owned(),
            Traffic::One(id) => id.clone(),
            Traffic::Uniform(ids) => {
                ids[((u * ids.len() as f64) as usize).min(ids.len() - 1)].clone()
            }
            Traffic::Zipf(ids, zipf) => ids[zipf.sample(u)].clone(),
        }
    }
}

/// Zipf's law over `n` ranks: P(k) ∝ 1/(k+1)^s, sampled by inverting the CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (0..n)
            .map(|k| {
                acc += 1.0 / ((k + 1) as f64).powf(s);
                acc
            })
            .collect();
        cdf.iter_mut().for_each(|c| *c /= acc);
        Self { cdf }
    }

    fn sample(&self, u: f64) -> usize {
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform number in [0, 1) from 53 random bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// What one request observed.
#[derive(Default)]
struct RequestTrace {
    ttft: Option<Duration>,
    gaps: Vec<Duration>,
    /// Prompt tokens sent.
    prompt_tokens: usize,
    /// Tokens generated.
    tokens: usize,
    failed: bool,
}

/// The benchmark's prompts: `len` tokens each, cut from [`BENCH_TEXT`] at
/// varying offsets and each opened by its own number, so no two requests of
/// a run share a first block. Otherwise the prefix cache would skip part of
/// the prompts of some scenarios (requests on the base model share cached
/// blocks, requests on different adapters cannot) and the comparison would
/// measure cache hits instead of the cost of serving adapters.
///
/// The number is written with [`NUMBER_TOKENS`] tokens in base `B`, the
/// distinct tokens of the text being the digits: fixed width, so no number
/// is a prefix of another, and real tokens of any tokenizer.
struct Prompts {
    text: Vec<u32>,
    digits: Vec<u32>,
    len: usize,
    issued: AtomicUsize,
}

/// Tokens that open each prompt with its number.
const NUMBER_TOKENS: usize = 4;

impl Prompts {
    fn new(tokenizer: &Tokenizer, len: usize) -> Result<Self> {
        Self::from_text(tokenizer.encode(&BENCH_TEXT.repeat(8), false)?, len)
    }

    fn from_text(text: Vec<u32>, len: usize) -> Result<Self> {
        let mut digits = Vec::new();
        for &t in &text {
            if !digits.contains(&t) {
                digits.push(t);
            }
        }
        if digits.len() < 10 {
            return Err(Error::config(
                "model",
                "the tokenizer gives the benchmark text fewer than 10 distinct tokens",
            ));
        }
        Ok(Self {
            text,
            digits,
            len,
            issued: AtomicUsize::new(0),
        })
    }

    /// The next request's prompt (distinct from every earlier one for the
    /// first `B^4` requests, at least 10,000).
    fn next(&self) -> Vec<u32> {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let base = self.digits.len();
        let number = (0..NUMBER_TOKENS as u32).map(|place| self.digits[n / base.pow(place) % base]);
        let room = self.text.len().saturating_sub(self.len).max(1);
        let text = self.text.iter().cycle().skip(n * 37 % room);
        number.chain(text.copied()).take(self.len).collect()
    }
}

struct Runner<'a> {
    config: &'a ServeBenchConfig,
    url: String,
    state: &'a AppState,
    prompts: &'a Prompts,
    progress: Progress<'a>,
}

impl Runner<'_> {
    fn warm_up(&self) -> Result<()> {
        let agent = agent();
        let trace = stream_request(&agent, &self.url, "base", &self.prompts.next(), 4);
        if trace.failed {
            return Err(Error::config("model", "the warm-up request failed"));
        }
        Ok(())
    }

    /// Runs `rounds` paired rounds: the base model, then each scenario of
    /// `group` in turn. Returns the base row (labelled `base_label`) and the
    /// group's rows, each ratio taken against the base run of its round,
    /// and the base's aggregate tokens/s.
    fn paired(
        &self,
        base_label: &str,
        group: &[(String, usize, Traffic<'_>)],
    ) -> Result<(Vec<ScenarioResult>, f64)> {
        let rounds = self.config.rounds;
        let mut base = Vec::with_capacity(rounds);
        let mut runs: Vec<Vec<Round>> = group.iter().map(|_| Vec::new()).collect();
        for r in 1..=rounds {
            let label = |name: &str| format!("{name} (round {r}/{rounds})");
            base.push(self.round(&label(base_label), &Traffic::Base)?);
            for ((name, _, traffic), runs) in group.iter().zip(&mut runs) {
                runs.push(self.round(&label(name), traffic)?);
            }
        }
        let base_rates: Vec<f64> = base.iter().map(Round::tokens_per_s).collect();
        let mut rows = vec![summarise(base_label, 0, &base, &base_rates)];
        for ((name, adapters, _), runs) in group.iter().zip(&runs) {
            rows.push(summarise(name, *adapters, runs, &base_rates));
        }
        let base_tps = rows[0].tokens_per_s;
        Ok((rows, base_tps))
    }

    /// Runs `requests` completions over `clients` threads.
    fn round(&self, name: &str, traffic: &Traffic<'_>) -> Result<Round> {
        let config = self.config;
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let traces = Mutex::new(Vec::with_capacity(config.requests));
        let before = Observed::now(self.state);
        let sampler = Sampler::start(self.state.clone());
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..config.clients {
                scope.spawn(|| {
                    let agent = agent();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= config.requests {
                            break;
                        }
                        let model = traffic.pick(n, config.seed);
                        let trace = stream_request(
                            &agent,
                            &self.url,
                            &model,
                            &self.prompts.next(),
                            config.gen_tokens,
                        );
                        traces.lock().unwrap_or_else(|e| e.into_inner()).push(trace);
                        let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                        (self.progress)(name, finished as u64, config.requests as u64);
                    }
                });
            }
        });
        let wall = started.elapsed();
        let (peak_rss, peak_cache) = sampler.stop();
        let traces = traces.into_inner().unwrap_or_else(|e| e.into_inner());
        let counted = Observed::now(self.state).since(&before);
        Ok(Round {
            traces,
            wall,
            peak_rss,
            peak_cache,
            counted,
        })
    }
}

/// Node counters a scenario reads before and after it runs.
struct Observed {
    loads: u64,
    steps: u64,
    step_sequences: u64,
    /// Prompt tokens taken from the prefix cache instead of computed.
    prefix_hit_tokens: u64,
}

impl Observed {
    fn now(state: &AppState) -> Self {
        let engine = state.engine().scheduler_stats();
        Self {
            loads: state.adapters().cache_stats().loads.load(Ordering::Relaxed),
            steps: engine.steps,
            step_sequences: engine.step_sequences,
            prefix_hit_tokens: engine.prefix_hit_tokens,
        }
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            loads: self.loads - before.loads,
            steps: self.steps - before.steps,
            step_sequences: self.step_sequences - before.step_sequences,
            prefix_hit_tokens: self.prefix_hit_tokens - before.prefix_hit_tokens,
        }
    }
}

/// What one run of a scenario's requests measured.
struct Round {
    traces: Vec<RequestTrace>,
    wall: Duration,
    peak_rss: u64,
    peak_cache: u64,
    /// Counter increments during the run.
    counted: Observed,
}

impl Round {
    fn tokens(&self) -> usize {
        self.traces
            .iter()
            .filter(|t| !t.failed)
            .map(|t| t.tokens)
            .sum()
    }

    fn tokens_per_s(&self) -> f64 {
        self.tokens() as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into()
}

/// One streamed completion; records when each text chunk arrived.
fn stream_request(
    agent: &ureq::Agent,
    url: &str,
    model: &str,
    prompt: &[u32],
    gen_tokens: usize,
) -> RequestTrace {
    let body = serde_json::json!({
        "model": model,
        "prompt": prompt,
        "max_tokens": gen_tokens,
        "temperature": 0,
        "ignore_eos": true,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let sent = Instant::now();
    let mut trace = RequestTrace {
        prompt_tokens: prompt.len(),
        ..RequestTrace::default()
    };
    let response = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string());
    let mut response = match response {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            tracing::warn!(status = r.status().as_u16(), model, "bench request refused");
            trace.failed = true;
            return trace;
        }
        Err(e) => {
            tracing::warn!(error = %e, model, "bench request failed");
            trace.failed = true;
            return trace;
        }
    };
    let mut last = sent;
    for line in BufReader::new(response.body_mut().as_reader()).lines() {
        let Ok(line) = line else {
            trace.failed = true;
            break;
        };
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let Ok(event) = serde_json::from_str::<serde_json::Value>(data) else {
            continue;
        };
        if event.get("error").is_some() {
            trace.failed = true;
            break;
        }
        if let Some(n) = event["usage"]["completion_tokens"].as_u64() {
            trace.tokens = n as usize;
        }
        if event["choices"][0]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
        {
            let now = Instant::now();
            match trace.ttft {
                None => trace.ttft = Some(now - sent),
                Some(_) => trace.gaps.push(now - last),
            }
            last = now;
        }
    }
    trace
}

/// Samples the process's resident memory and the adapter cache every 20 ms.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(u64, u64)>,
}

impl Sampler {
    fn start(state: AppState) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let (mut rss, mut cache) = (0u64, 0u64);
            loop {
                rss = rss.max(resident_bytes().unwrap_or(0));
                cache = cache.max(state.adapters().cache_usage().0 as u64);
                if flag.load(Ordering::Relaxed) {
                    return (rss, cache);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self { stop, handle }
    }

    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or((0, 0))
    }
}

/// The process's resident set size (Linux `/proc/self/status`).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Nearest-rank percentile of `values` in milliseconds (0 when empty).
fn percentile_ms(values: &mut [Duration], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1].as_secs_f64() * 1e3
}

/// One row from a scenario's rounds; round `i`'s ratio is taken against
/// `base_rates[i]` (the last one for rounds beyond it).
fn summarise(name: &str, adapters: usize, rounds: &[Round], base_rates: &[f64]) -> ScenarioResult {
    let traces: Vec<&RequestTrace> = rounds.iter().flat_map(|r| &r.traces).collect();
    let ok: Vec<&RequestTrace> = traces.iter().copied().filter(|t| !t.failed).collect();
    let tokens: usize = rounds.iter().map(Round::tokens).sum();
    let wall: Duration = rounds.iter().map(|r| r.wall).sum();
    let mut ratios: Vec<f64> = rounds
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let base = base_rates
                .get(i)
                .or(base_rates.last())
                .copied()
                .unwrap_or(0.0);
            r.tokens_per_s() / base.max(1e-9)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let (steps, step_sequences, prefix_hits) = rounds.iter().fold((0, 0, 0), |(s, q, h), r| {
        let c = &r.counted;
        (s + c.steps, q + c.step_sequences, h + c.prefix_hit_tokens)
    });
    let prompt_tokens: usize = traces.iter().map(|t| t.prompt_tokens).sum();
    let mut ttft: Vec<Duration> = ok.iter().filter_map(|t| t.ttft).collect();
    let mut gaps: Vec<Duration> = ok.iter().flat_map(|t| t.gaps.iter().copied()).collect();
    ScenarioResult {
        name: name.to_owned(),
        adapters,
        requests: ok.len(),
        errors: traces.len() - ok.len(),
        tokens_per_s: tokens as f64 / wall.as_secs_f64().max(1e-9),
        ratio_to_base: median(&ratios),
        ratio_range: (
            ratios.first().copied().unwrap_or(0.0),
            ratios.last().copied().unwrap_or(0.0),
        ),
        round_tokens_per_s: rounds.iter().map(Round::tokens_per_s).collect(),
        ttft_ms: (
            percentile_ms(&mut ttft, 50.0),
            percentile_ms(&mut ttft, 99.0),
        ),
        itl_ms: (
            percentile_ms(&mut gaps, 50.0),
            percentile_ms(&mut gaps, 99.0),
        ),
        peak_rss_mib: mib(rounds.iter().map(|r| r.peak_rss).max().unwrap_or(0)),
        peak_cache_mib: mib(rounds.iter().map(|r| r.peak_cache).max().unwrap_or(0)),
        loads: rounds.iter().map(|r| r.counted.loads).sum(),
        mean_batch: step_sequences as f64 / steps.max(1) as f64,
        prompt_reuse: prefix_hits as f64 / prompt_tokens.max(1) as f64,
    }
}

/// The middle of sorted `values` (the mean of the two middle ones when even).
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The baseline: per request, merge its adapter into the weights and run it alone.
fn merge_baseline(
    config: &ServeBenchConfig,
    base_config: &credence_model::config::LlamaConfig,
    base_weights: &credence_model::weights::ModelWeights,
    adapters: &[Arc<credence_model::lora::LoraAdapter>],
    prompts: &Prompts,
    threads: usize,
    progress: Progress<'_>,
) -> Result<Round> {
    let pool = ThreadPool::new(threads);
    let mut traces = Vec::new();
    let started = Instant::now();
    let sampler_rss = AtomicUsize::new(0);
    for (n, adapter) in adapters.iter().enumerate() {
        let sent = Instant::now();
        let mix = [WeightedAdapter {
            adapter: Arc::clone(adapter),
            weight: 1.0,
        }];
        let merged = merge_adapters(base_weights, &mix, None)?;
        let model = Transformer::new(base_config.clone(), merged)?;
        let len = config.prompt_tokens;
        let prompt = prompts.next();
        let mut cache: KvCache = model.new_cache(len + config.gen_tokens);
        let mut trace = RequestTrace {
            prompt_tokens: prompt.len(),
            ..RequestTrace::default()
        };
        let mut input = prompt;
        let mut last = sent;
        for _ in 0..config.gen_tokens {
            let logits = model.forward(&pool, &mut [BatchSeq::new(&input, &mut cache)])?;
            let next = logits.first().map_or(0, |l| argmax(l));
            let now = Instant::now();
            match trace.ttft {
                None => trace.ttft = Some(now - sent),
                Some(_) => trace.gaps.push(now - last),
            }
            last = now;
            trace.tokens += 1;
            input = vec![next];
        }
        sampler_rss.fetch_max(resident_bytes().unwrap_or(0) as usize, Ordering::Relaxed);
        traces.push(trace);
        progress("merge per request", n as u64 + 1, adapters.len() as u64);
    }
    let wall = started.elapsed();
    let rss = sampler_rss.load(Ordering::Relaxed) as u64;
    // Each request runs alone: one sequence per step.
    let steps = (adapters.len() * config.gen_tokens) as u64;
    Ok(Round {
        traces,
        wall,
        peak_rss: rss,
        peak_cache: 0,
        counted: Observed {
            loads: 0,
            steps,
            step_sequences: steps,
            prefix_hit_tokens: 0,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round that produced `tokens` in one second over `steps` steps of
    /// `batch` sequences, with one failed request.
    fn round(tokens: usize, steps: u64, batch: u64) -> Round {
        let ok = RequestTrace {
            ttft: Some(Duration::from_millis(10)),
            gaps: vec![Duration::from_millis(5)],
            prompt_tokens: 16,
            tokens,
            failed: false,
        };
        let failed = RequestTrace {
            failed: true,
            tokens: 1000,
            ..RequestTrace::default()
        };
        Round {
            traces: vec![ok, failed],
            wall: Duration::from_secs(1),
            peak_rss: steps << 20,
            peak_cache: 0,
            counted: Observed {
                loads: 1,
                steps,
                step_sequences: steps * batch,
                prefix_hit_tokens: 8,
            },
        }
    }

    #[test]
    fn prompts_are_distinct_and_of_the_asked_length() {
        let text: Vec<u32> = (0..300).map(|i| i % 40).collect();
        let prompts = Prompts::from_text(text, 12).unwrap();
        let all: Vec<Vec<u32>> = (0..5000).map(|_| prompts.next()).collect();
        assert!(all.iter().all(|p| p.len() == 12));
        let distinct: std::collections::HashSet<&[u32]> =
            all.iter().map(|p| &p[..NUMBER_TOKENS]).collect();
        assert_eq!(
            distinct.len(),
            all.len(),
            "every prompt opens with its own number"
        );
        let few = Prompts::from_text((0..100).map(|i| i % 3).collect(), 12);
        assert!(few.is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stores_of_killed_runs_are_removed_and_live_ones_kept() {
        let work = tempfile::tempdir().unwrap();
        // Above Linux's largest pid (2^22), so no process has it.
        let dead = work.path().join(format!("{STORE_PREFIX}4294967"));
        let mine = work
            .path()
            .join(format!("{STORE_PREFIX}{}", std::process::id()));
        let other = work.path().join("bench-serve-notapid");
        for dir in [&dead, &mine, &other] {
            std::fs::create_dir_all(dir.join("adapter")).unwrap();
        }
        remove_interrupted_stores(work.path());
        assert!(!dead.exists());
        assert!(mine.exists() && other.exists());
    }

    #[test]
    fn each_round_is_compared_with_its_own_base_run() {
        let rounds = [round(80, 10, 16), round(100, 30, 8), round(150, 10, 16)];
        let row = summarise("s", 3, &rounds, &[100.0, 200.0, 150.0]);
        // Ratios 0.8, 0.5 and 1.0: the median and the spread, not the
        // aggregate 330 / 450.
        assert!((row.ratio_to_base - 0.8).abs() < 1e-9, "{row:?}");
        assert_eq!(row.ratio_range, (0.5, 1.0));
        assert!(
            (row.tokens_per_s - 110.0).abs() < 1e-9,
            "failed requests do not count"
        );
        assert_eq!((row.requests, row.errors, row.loads), (3, 3, 3));
        assert!((row.mean_batch - 560.0 / 50.0).abs() < 1e-9, "{row:?}");
        // 8 reused tokens a round against the 16 its finished request sent.
        assert!((row.prompt_reuse - 24.0 / 48.0).abs() < 1e-9, "{row:?}");
        assert_eq!(row.round_tokens_per_s, vec![80.0, 100.0, 150.0]);
        assert_eq!(row.peak_rss_mib, 30.0);
        assert_eq!(median(&[1.0, 2.0]), 1.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn zipf_prefers_low_ranks_and_covers_the_range() {
        let zipf = Zipf::new(1000, 1.0);
        let mut counts = vec![0usize; 1000];
        for n in 0..20_000u64 {
            counts[zipf.sample(unit(splitmix(n)))] += 1;
        }
        assert!(counts[0] > counts[9] && counts[9] > counts[99]);
        assert!(counts.iter().filter(|&&c| c > 0).count() > 300);
        assert_eq!(zipf.sample(0.999_999_999), 999);
    }

    #[test]
    fn specs_cycle_all_nine_combinations() {
        let combos: std::collections::BTreeSet<(usize, usize)> = (0..9)
            .map(|i| (adapter_spec(i).0, adapter_spec(i).1.len()))
            .collect();
        assert_eq!(combos.len(), 9);
        assert_eq!(adapter_spec(7), (16, TARGET_SETS[2]));
        assert!(is_rank16_all_linear(7) && is_rank16_all_linear(16));
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&mut v, 50.0), 50.0);
        assert_eq!(percentile_ms(&mut v, 99.0), 99.0);
        assert_eq!(percentile_ms(&mut [], 50.0), 0.0);
    }
}
