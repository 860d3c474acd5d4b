//! `credence generate`: one prompt, one streamed completion, no server.

use std::ops::ControlFlow;

use credence_model::chat::ChatMessage;
use credence_model::generate::{GenerateParams, GenerationOutput, generate};
use credence_model::llama::Model;
use credence_model::threadpool::ThreadPool;

use crate::error::{Error, Result};

/// What to generate from.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// The prompt (the user message when `chat` is set).
    pub prompt: String,
    /// Wrap the prompt in the model's chat template as a user turn.
    pub chat: bool,
    /// Optional system message (chat only).
    pub system: Option<String>,
    /// Sampling, length and stop strings.
    pub params: GenerateParams,
}

/// The prompt's token ids: raw text with the tokenizer's special tokens, or
/// the chat template rendered with a generation prompt.
pub fn prompt_tokens(model: &Model, request: &GenerateRequest) -> Result<Vec<u32>> {
    if !request.chat {
        if request.system.is_some() {
            return Err(Error::config("system", "a system message needs --chat"));
        }
        return Ok(model.tokenizer().encode(&request.prompt, true)?);
    }
    let template = model
        .chat_template()
        .ok_or_else(|| Error::config("chat", "this model has no chat template"))?;
    let mut messages = Vec::new();
    if let Some(system) = &request.system {
        messages.push(ChatMessage {
            role: "system".into(),
            content: system.clone(),
        });
    }
    messages.push(ChatMessage {
        role: "user".into(),
        content: request.prompt.clone(),
    });
    let text = template.render(&messages, true)?;
    // The template writes the special tokens it wants as text.
    Ok(model.tokenizer().encode(&text, false)?)
}

/// Generates a completion on `threads` threads, handing each text piece to `on_text`.
pub fn generate_text(
    model: &Model,
    threads: usize,
    request: &GenerateRequest,
    on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
) -> Result<GenerationOutput> {
    request.params.validate()?;
    let prompt = prompt_tokens(model, request)?;
    let pool = ThreadPool::new(crate::config::effective_threads(threads));
    Ok(generate(model, &pool, &prompt, &request.params, on_text)?)
}
