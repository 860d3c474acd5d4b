//! Autoregressive generation for one sequence, streamed as text.
//!
//! The prompt is processed in one forward step, then one token per step. Text
//! reaches the callback only in whole UTF-8 characters, and never includes a
//! stop string or a prefix of one that might still complete.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::llama::{BatchSeq, Model};
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
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            max_tokens: 256,
            stop: Vec::new(),
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

/// Generates a completion of `prompt`, calling `on_text` with each new piece
/// of text; returning `Break` from it stops generation.
pub fn generate(
    model: &Model,
    pool: &ThreadPool,
    prompt: &[u32],
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
) -> Result<GenerationOutput> {
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
    let mut sampler = Sampler::new(params.sampling.clone())?;
    let mut cache = model.new_cache(prompt.len() + params.max_tokens);
    let mut history = prompt.to_vec();
    let mut decoder = StreamDecoder::new(model.tokenizer());
    let mut stops = StopMatcher::new(params.stop.clone());
    let mut text = String::new();
    let mut emit = |piece: &str, text: &mut String| {
        text.push_str(piece);
        on_text(piece)
    };
    let mut input = prompt.to_vec();
    let mut completion_tokens = 0;
    let finish_reason = loop {
        let mut logits = model.forward(pool, &mut [BatchSeq::new(&input, &mut cache)])?;
        let token = sampler.sample(&mut logits[0], &history);
        completion_tokens += 1;
        history.push(token);
        if model.tokenizer().eos_ids().contains(&token) {
            break FinishReason::Stop;
        }
        if let Some(piece) = decoder.push(token)? {
            let (safe, stopped) = stops.push(&piece);
            if !safe.is_empty() && emit(&safe, &mut text).is_break() {
                break FinishReason::Stop;
            }
            if stopped {
                break FinishReason::Stop;
            }
        }
        if completion_tokens >= params.max_tokens || cache.remaining() == 0 {
            break FinishReason::Length;
        }
        input = vec![token];
    };
    if finish_reason == FinishReason::Length || !stops.stopped() {
        let tail = decoder.finish()?.unwrap_or_default();
        let (mut safe, _) = stops.push(&tail);
        safe.push_str(&stops.flush());
        if !safe.is_empty() {
            let _ = emit(&safe, &mut text);
        }
    }
    Ok(GenerationOutput {
        text,
        prompt_tokens: prompt.len(),
        completion_tokens,
        finish_reason,
    })
}
