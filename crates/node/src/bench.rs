//! `credence bench generate`: generation throughput of our engine.
//!
//! Three measurements, each the median over `repetitions` runs after a warm-up:
//!
//! * **prompt processing** (`pp`): one forward call over a `prompt_tokens`-long
//!   prompt into an empty cache;
//! * **single-stream decode** (`tg`): `gen_tokens` forward calls of one token
//!   each, starting from an empty cache, feeding back the greedy choice (EOS is
//!   ignored, so the length is fixed);
//! * **batched decode**: for each batch size B, B sequences with their own KV
//!   caches and [`BATCH_PROMPT_TOKENS`]-token prompts cut from different places
//!   of the text are prefilled (not timed), then
//!   `gen_tokens` forward calls each advance every sequence by one token;
//!   reported as total tokens per second.
//!
//! `scripts/bench-generate.sh` runs this and llama.cpp's own `llama-bench`
//! (pp, tg) and `llama-batched-bench` (same prompt length and batch sizes) side
//! by side.

use std::path::PathBuf;
use std::time::Instant;

use credence_model::kv::KvCache;
use credence_model::llama::{BatchSeq, Model};
use credence_model::sampling::argmax;
use credence_model::threadpool::ThreadPool;
use serde::Serialize;

use crate::error::{Error, Result};

/// Text the benchmark prompts are cut from (repeated as needed). Throughput
/// does not depend on which tokens are fed; llama-bench uses random ones.
pub const BENCH_TEXT: &str = "The river town woke slowly. Fishermen checked their nets \
along the stone quay while the bakery on the corner pushed its first trays of bread into \
the window. A schoolteacher crossed the bridge with a stack of corrected essays, counting \
the mistakes she would explain that morning: commas in the wrong place, dates confused, a \
map of the valley drawn upside down. Above the hills the clouds were thinning, and by nine \
the market square was full of voices, carts and the smell of oranges. ";

/// Prompt length of every sequence in batched decode (llama-batched-bench `-npp`).
pub const BATCH_PROMPT_TOKENS: usize = 128;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The model file or directory.
    pub model: PathBuf,
    /// Compute threads.
    pub threads: usize,
    /// Prompt length for prompt processing.
    pub prompt_tokens: usize,
    /// Decode steps per measurement.
    pub gen_tokens: usize,
    /// Batch sizes for batched decode (empty to skip).
    pub batches: Vec<usize>,
    /// Timed runs per measurement; the median is reported.
    pub repetitions: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            threads: 0,
            prompt_tokens: 512,
            gen_tokens: 128,
            batches: vec![1, 4, 16, 64],
            repetitions: 3,
        }
    }
}

impl BenchConfig {
    /// Rejects settings that cannot run.
    pub fn validate(&self) -> Result<()> {
        if self.prompt_tokens == 0 {
            return Err(Error::config("prompt_tokens", "must be at least 1"));
        }
        if self.gen_tokens == 0 {
            return Err(Error::config("gen_tokens", "must be at least 1"));
        }
        if self.repetitions == 0 {
            return Err(Error::config("repetitions", "must be at least 1"));
        }
        if let Some(&b) = self.batches.iter().find(|&&b| b == 0 || b > 1024) {
            return Err(Error::config(
                "batches",
                format!("batch size {b} is not in 1..=1024"),
            ));
        }
        Ok(())
    }
}

/// The results, as printed and as written to JSON.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Always `credence`.
    pub engine: &'static str,
    /// The model path.
    pub model: String,
    /// Compute threads used.
    pub threads: usize,
    /// Prompt length for `pp`.
    pub prompt_tokens: usize,
    /// Decode steps for `tg` and batched decode.
    pub gen_tokens: usize,
    /// Timed runs per measurement.
    pub repetitions: usize,
    /// Median prompt-processing throughput, tokens/s.
    pub pp_tokens_per_s: f64,
    /// Median single-stream decode throughput, tokens/s.
    pub tg_tokens_per_s: f64,
    /// Median batched decode throughput per batch size.
    pub batched: Vec<BatchResult>,
}

/// Batched decode at one batch size.
#[derive(Debug, Clone, Serialize)]
pub struct BatchResult {
    /// Sequences decoded together.
    pub batch: usize,
    /// Median total decode throughput (all sequences), tokens/s.
    pub tokens_per_s: f64,
}

impl BenchReport {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }

    /// A plain-text table of the results.
    pub fn table(&self) -> String {
        let mut out = format!(
            "credence bench generate — {} ({} threads, median of {})\n",
            self.model, self.threads, self.repetitions
        );
        out.push_str(&format!("{:<34} {:>12}\n", "measurement", "tokens/s"));
        out.push_str(&format!(
            "{:<34} {:>12.1}\n",
            format!("prompt processing (pp{})", self.prompt_tokens),
            self.pp_tokens_per_s
        ));
        out.push_str(&format!(
            "{:<34} {:>12.1}\n",
            format!("decode, 1 stream (tg{})", self.gen_tokens),
            self.tg_tokens_per_s
        ));
        for b in &self.batched {
            out.push_str(&format!(
                "{:<34} {:>12.1}\n",
                format!("decode, batch {} (total)", b.batch),
                b.tokens_per_s
            ));
        }
        out
    }
}

/// Loads the model and runs every measurement; `progress` receives a line per step.
pub fn run_generate_bench(
    config: &BenchConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport> {
    config.validate()?;
    progress(&format!("loading {}", config.model.display()));
    let model = Model::load(&config.model)?;
    let threads = crate::config::effective_threads(config.threads);
    let pool = ThreadPool::new(threads);
    let bench = Bench {
        model: &model,
        pool: &pool,
        config,
    };
    let text_tokens = bench.prompt_tokens()?;

    progress("warming up");
    bench.prompt_processing(&text_tokens[..text_tokens.len().min(32)])?;
    bench.decode(text_tokens[0], 4)?;

    let mut pp = Vec::new();
    for rep in 0..config.repetitions {
        progress(&format!(
            "prompt processing, run {}/{}",
            rep + 1,
            config.repetitions
        ));
        pp.push(bench.prompt_processing(&text_tokens[..config.prompt_tokens])?);
    }
    let mut tg = Vec::new();
    for rep in 0..config.repetitions {
        progress(&format!(
            "single-stream decode, run {}/{}",
            rep + 1,
            config.repetitions
        ));
        tg.push(bench.decode(text_tokens[0], config.gen_tokens)?);
    }
    let mut batched = Vec::new();
    for &batch in &config.batches {
        let mut runs = Vec::new();
        for rep in 0..config.repetitions {
            progress(&format!(
                "batched decode, batch {batch}, run {}/{}",
                rep + 1,
                config.repetitions
            ));
            runs.push(bench.batched_decode(&text_tokens, batch)?);
        }
        batched.push(BatchResult {
            batch,
            tokens_per_s: median(&mut runs),
        });
    }
    Ok(BenchReport {
        engine: "credence",
        model: config.model.display().to_string(),
        threads,
        prompt_tokens: config.prompt_tokens,
        gen_tokens: config.gen_tokens,
        repetitions: config.repetitions,
        pp_tokens_per_s: median(&mut pp),
        tg_tokens_per_s: median(&mut tg),
        batched,
    })
}

struct Bench<'a> {
    model: &'a Model,
    pool: &'a ThreadPool,
    config: &'a BenchConfig,
}

impl Bench<'_> {
    /// At least `prompt_tokens` tokens of [`BENCH_TEXT`], repeated.
    fn prompt_tokens(&self) -> Result<Vec<u32>> {
        let once = self.model.tokenizer().encode(BENCH_TEXT, false)?;
        if once.is_empty() {
            return Err(Error::config(
                "model",
                "the tokenizer produced no tokens for the benchmark text",
            ));
        }
        let context = self.model.config().context_length;
        if self.config.prompt_tokens + 1 > context || self.config.gen_tokens + 64 > context {
            return Err(Error::config(
                "prompt_tokens",
                format!("prompt and generation must fit the context window ({context})"),
            ));
        }
        let needed = self.config.prompt_tokens.max(2 * BATCH_PROMPT_TOKENS);
        Ok(once.iter().copied().cycle().take(needed).collect())
    }

    /// Tokens per second for one forward call over `prompt`.
    fn prompt_processing(&self, prompt: &[u32]) -> Result<f64> {
        let mut cache = KvCache::new(self.model.config(), prompt.len());
        let started = Instant::now();
        self.model
            .forward(self.pool, &mut [BatchSeq::new(prompt, &mut cache)])?;
        Ok(prompt.len() as f64 / started.elapsed().as_secs_f64())
    }

    /// Tokens per second for `steps` single-token forward calls from an empty cache.
    fn decode(&self, first: u32, steps: usize) -> Result<f64> {
        let mut cache = KvCache::new(self.model.config(), steps);
        let mut token = first;
        let started = Instant::now();
        for _ in 0..steps {
            let logits = self
                .model
                .forward(self.pool, &mut [BatchSeq::new(&[token], &mut cache)])?;
            token = logits.first().map_or(first, |l| argmax(l));
        }
        Ok(steps as f64 / started.elapsed().as_secs_f64())
    }

    /// Total tokens per second decoding `batch` sequences together.
    fn batched_decode(&self, text: &[u32], batch: usize) -> Result<f64> {
        let steps = self.config.gen_tokens;
        // Equal-length prompts from different offsets, so the sequences differ.
        let prompts: Vec<&[u32]> = (0..batch)
            .map(|i| {
                let len = BATCH_PROMPT_TOKENS.min(text.len() / 2);
                let start = (i * 13) % (text.len() - len);
                &text[start..start + len]
            })
            .collect();
        let mut caches: Vec<KvCache> = prompts
            .iter()
            .map(|p| KvCache::new(self.model.config(), p.len() + steps))
            .collect();
        let mut seqs: Vec<BatchSeq<'_>> = prompts
            .iter()
            .zip(caches.iter_mut())
            .map(|(p, cache)| BatchSeq::new(p, cache))
            .collect();
        let logits = self.model.forward(self.pool, &mut seqs)?;
        drop(seqs);
        let mut next: Vec<[u32; 1]> = logits.iter().map(|l| [argmax(l)]).collect();

        let started = Instant::now();
        for _ in 0..steps {
            let mut seqs: Vec<BatchSeq<'_>> = next
                .iter()
                .zip(caches.iter_mut())
                .map(|(t, cache)| BatchSeq::new(t, cache))
                .collect();
            let logits = self.model.forward(self.pool, &mut seqs)?;
            drop(seqs);
            for (slot, l) in next.iter_mut().zip(&logits) {
                slot[0] = argmax(l);
            }
        }
        Ok((batch * steps) as f64 / started.elapsed().as_secs_f64())
    }
}

/// The median of `values` (sorted in place); 0 for an empty slice.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn invalid_settings_are_named() {
        let bad = BenchConfig {
            batches: vec![1, 0],
            ..BenchConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Config {
                field: "batches",
                ..
            })
        ));
        let bad = BenchConfig {
            gen_tokens: 0,
            ..BenchConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Config {
                field: "gen_tokens",
                ..
            })
        ));
    }
}
