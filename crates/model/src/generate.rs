//! Autoregressive generation for one sequence, streamed as text.
//!
//! The prompt is processed in one forward step, then one token per step. Text
//! reaches the callback only in whole UTF-8 characters, and never includes a
//! stop string or a prefix of one that might still complete.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kv::{KvCache, KvPool, PrefixCache};
use crate::llama::{BatchSeq, Model, WeightedAdapter};
use crate::sampling::Sampler;
pub use crate::sampling::SamplingParams;
use crate::text::{StopMatcher, StreamDecoder};
use crate::threadpool::ThreadPool;

/// Upper bound on stop strings per request (OpenAI allows 4; a little slack).
const MAX_STOP_STRINGS: usize = 16;

/// What to generate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateParams {
    /// Token selection.
    pub sampling: SamplingParams,
    /// Maximum completion tokens.
    pub max_tokens: usize,
    /// Generation ends before any of these strings; they are not emitted.
    pub stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens (benchmarks and tests
    /// that need a fixed length, as vLLM's `ignore_eos`).
    pub ignore_eos: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            max_tokens: 256,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

impl GenerateParams {
    /// Rejects invalid settings, naming the field.
    pub fn validate(&self) -> Result<()> {
        self.sampling.validate()?;
        if self.max_tokens == 0 {
            return Err(Error::param("max_tokens", "must be at least 1"));
        }
        if self.stop.len() > MAX_STOP_STRINGS {
            return Err(Error::param(
                "stop",
                format!("at most {MAX_STOP_STRINGS} stop strings"),
            ));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(Error::param("stop", "stop strings must not be empty"));
        }
        Ok(())
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string, or the caller stopped it.
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
}

/// The result of [`generate`].
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationOutput {
    /// The full completion text (what was streamed).
    pub text: String,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Tokens generated (including a final end-of-sequence token, if any).
    pub completion_tokens: usize,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// One sequence being generated, advanced one forward step at a time by its
/// owner: [`generate`] for a single stream, or a scheduler that batches many
/// sequences (each possibly with its own adapters) into one forward call.
pub struct Generation<'m> {
    model: &'m Model,
    sampler: Sampler,
    decoder: StreamDecoder,
    stops: StopMatcher,
    cache: KvCache,
    adapters: Vec<WeightedAdapter>,
    history: Vec<u32>,
    /// Tokens to feed at the next step: the prompt, then each sampled token.
    input: Vec<u32>,
    prompt_tokens: usize,
    completion_tokens: usize,
    max_tokens: usize,
    ignore_eos: bool,
    text: String,
    finished: Option<FinishReason>,
}

impl<'m> Generation<'m> {
    /// Validates `params` and the prompt length; nothing is computed yet.
    /// The KV cache has its own pool, without a memory budget.
    pub fn new(model: &'m Model, prompt: &[u32], params: &GenerateParams) -> Result<Self> {
        Self::build(model, prompt, params, None)
    }

    /// Like [`Generation::new`], with the KV cache drawn from `pool` (a
    /// serving engine's shared, budgeted pool). The prompt's blocks are
    /// reserved at once, so a full pool is reported here as
    /// [`Error::KvExhausted`] rather than at the first step. Dropping the
    /// generation returns its blocks.
    pub fn in_pool(
        model: &'m Model,
        prompt: &[u32],
        params: &GenerateParams,
        pool: &KvPool,
    ) -> Result<Self> {
        let mut generation = Self::build(model, prompt, params, Some(pool))?;
        generation.reserve_input()?;
        Ok(generation)
    }

    /// Like [`Generation::in_pool`] but reserves no KV blocks yet: a
    /// scheduler first adopts a cached prefix ([`Generation::reuse_prefix`])
    /// and then reserves the rest ([`Generation::reserve_input`]) when it
    /// admits the sequence.
    pub fn in_pool_unreserved(
        model: &'m Model,
        prompt: &[u32],
        params: &GenerateParams,
        pool: &KvPool,
    ) -> Result<Self> {
        Self::build(model, prompt, params, Some(pool))
    }

    fn build(
        model: &'m Model,
        prompt: &[u32],
        params: &GenerateParams,
        pool: Option<&KvPool>,
    ) -> Result<Self> {
        params.validate()?;
        let context = model.config().context_length;
        if prompt.is_empty() {
            return Err(Error::param("prompt", "must not be empty"));
        }
        if prompt.len() >= context {
            return Err(Error::ContextOverflow {
                tokens: prompt.len() + 1,
                context,
            });
        }
        let capacity = prompt.len().saturating_add(params.max_tokens);
        let cache = match pool {
            Some(pool) => KvCache::in_pool(pool, capacity),
            None => model.new_cache(capacity),
        };
        Ok(Self {
            model,
            sampler: Sampler::new(params.sampling.clone())?,
            decoder: StreamDecoder::new(model.tokenizer()),
            stops: StopMatcher::new(params.stop.clone()),
            cache,
            adapters: Vec::new(),
            history: prompt.to_vec(),
            input: prompt.to_vec(),
            prompt_tokens: prompt.len(),
            completion_tokens: 0,
            max_tokens: params.max_tokens,
            ignore_eos: params.ignore_eos,
            text: String::new(),
            finished: None,
        })
    }

    /// Generates with these LoRA adapters on top of the base model.
    pub fn with_adapters(mut self, adapters: Vec<WeightedAdapter>) -> Self {
        self.adapters = adapters;
        self
    }

    /// Before the first step (or the first after [`Generation::preempt`]):
    /// adopts the longest prefix of the tokens so far that `prefixes`
    /// recorded under the adapter-set `key` (see [`PrefixCache::insert`]),
    /// so only the rest is computed. Returns the tokens reused.
    pub fn reuse_prefix(&mut self, prefixes: &mut PrefixCache, key: &str) -> usize {
        if !self.cache.is_empty() || self.input.len() != self.history.len() {
            return 0;
        }
        let reused = prefixes.lookup(key, &self.input, &mut self.cache);
        self.input.drain(..reused);
        reused
    }

    /// Reserves KV blocks for the tokens of the next step, all or nothing
    /// (see [`KvCache::reserve`]); the step itself then allocates nothing.
    ///
    /// # Errors
    /// [`Error::KvExhausted`] when the pool cannot cover them,
    /// [`Error::ContextOverflow`] past the cache's capacity.
    pub fn reserve_input(&mut self) -> Result<()> {
        self.cache.reserve(self.input.len())
    }

    /// Gives back every KV block (a scheduler making room for others): the
    /// next step recomputes the prompt and every token generated so far, in
    /// one go, and samples the next token from exactly where it left off, so
    /// the stream neither repeats nor loses anything. Sampling state, text
    /// decoder and stop matching are untouched.
    pub fn preempt(&mut self) {
        self.cache.truncate(0);
        self.input.clone_from(&self.history);
    }

    /// Tokens the next step feeds: the prompt (or, after a preemption,
    /// everything so far, less any reused prefix), then one per step.
    pub fn pending_tokens(&self) -> usize {
        self.input.len()
    }

    /// Records this sequence's full KV blocks in `prefixes` under the
    /// adapter-set `key`, for later requests sharing its beginning.
    pub fn record_prefix(&self, prefixes: &mut PrefixCache, key: &str) {
        prefixes.insert(key, &self.history, &self.cache);
    }

    /// This sequence's share of the next forward step.
    pub fn next_input(&mut self) -> BatchSeq<'_> {
        BatchSeq::new(&self.input, &mut self.cache).with_adapters(&self.adapters)
    }

    /// Takes the logits of the step just run: samples a token and returns the
    /// text it completes (possibly empty; never a broken character or any
    /// part of a stop string).
    pub fn accept(&mut self, logits: &mut [f32]) -> Result<String> {
        let token = self.sampler.sample(logits, &self.history);
        self.completion_tokens += 1;
        self.history.push(token);
        self.input = vec![token];
        let mut piece = String::new();
        if !self.ignore_eos && self.model.tokenizer().eos_ids().contains(&token) {
            self.finished = Some(FinishReason::Stop);
        } else if let Some(decoded) = self.decoder.push(token)? {
            let (safe, stopped) = self.stops.push(&decoded);
            piece = safe;
            if stopped {
                self.finished = Some(FinishReason::Stop);
            }
        }
        if self.finished.is_none()
            && (self.completion_tokens >= self.max_tokens || self.cache.remaining() == 0)
        {
            self.finished = Some(FinishReason::Length);
            piece.push_str(&self.flush()?);
        } else if self.finished == Some(FinishReason::Stop) && !self.stops.stopped() {
            // End of sequence: text held back as a possible stop prefix is real.
            piece.push_str(&self.flush()?);
        }
        self.text.push_str(&piece);
        Ok(piece)
    }

    fn flush(&mut self) -> Result<String> {
        let tail = self.decoder.finish()?.unwrap_or_default();
        let (mut safe, _) = self.stops.push(&tail);
        safe.push_str(&self.stops.flush());
        Ok(safe)
    }

    /// Ends generation early (the caller stopped listening).
    pub fn stop(&mut self) {
        self.finished.get_or_insert(FinishReason::Stop);
    }

    /// Bytes of KV cache blocks this sequence holds.
    pub fn kv_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Why generation ended, once it has.
    pub fn finished(&self) -> Option<FinishReason> {
        self.finished
    }

    /// The result so far (complete once [`Generation::finished`] is set).
    pub fn output(&self) -> GenerationOutput {
        GenerationOutput {
            text: self.text.clone(),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            finish_reason: self.finished.unwrap_or(FinishReason::Length),
        }
    }
}

/// Generates a completion of `prompt`, calling `on_text` with each new piece
/// of text; returning `Break` from it stops generation.
pub fn generate(
    model: &Model,
    pool: &ThreadPool,
    prompt: &[u32],
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
) -> Result<GenerationOutput> {
    let mut generation = Generation::new(model, prompt, params)?;
    while generation.finished().is_none() {
        let mut logits = model.forward(pool, &mut [generation.next_input()])?;
        let piece = generation.accept(&mut logits[0])?;
        if !piece.is_empty() && on_text(&piece).is_break() {
            generation.stop();
        }
    }
    Ok(generation.output())
}
