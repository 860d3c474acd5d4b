//! OpenAI wire types: what clients send and what they get back.
//!
//! Requests are parsed leniently where OpenAI's own server is lenient (unknown
//! fields are ignored, `stop` may be a string or a list) and strictly where a
//! silently ignored value would change the answer: a parameter we do not
//! implement is accepted only at its neutral value, and otherwise rejected with
//! a 400 naming the field.

use credence_model::generate::{GenerateParams, SamplingParams};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Result};

/// Most stop sequences accepted per request.
pub const MAX_STOP_SEQUENCES: usize = 8;

/// `POST /v1/completions` request body.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// Model id; when absent, the node's base model.
    pub model: Option<String>,
    /// The prompt.
    pub prompt: Prompt,
    /// Sampling, length and streaming options shared with chat (parsed by [`parse_request`]).
    #[serde(skip)]
    pub options: CommonOptions,
    /// Echo the prompt back (unsupported: only `false`).
    pub echo: Option<bool>,
    /// Text after the insertion point (unsupported: only empty).
    pub suffix: Option<String>,
    /// Server-side best-of sampling (unsupported: only 1).
    pub best_of: Option<u32>,
    /// Number of log-probabilities to return (unsupported: only 0).
    pub logprobs: Option<u32>,
}

/// The `prompt` field: a string, a one-element list of strings, or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Plain text.
    Text(String),
    /// A batch of texts (only one element is supported).
    Texts(Vec<String>),
    /// Pre-tokenised prompt.
    Tokens(Vec<u32>),
    /// A batch of pre-tokenised prompts (only one element is supported).
    TokenBatches(Vec<Vec<u32>>),
}

/// What a prompt turns into before tokenisation.
#[derive(Debug, PartialEq, Eq)]
pub enum PromptInput {
    /// Text still to be tokenised.
    Text(String),
    /// Token ids given by the caller.
    Tokens(Vec<u32>),
}

impl Prompt {
    /// Reduces the prompt to exactly one input, rejecting batches.
    pub fn into_single(self) -> Result<PromptInput> {
        let batch_error = |n: usize| {
            ApiError::invalid(
                "prompt",
                format!("batched prompts are not supported (got {n}); send one request per prompt"),
            )
        };
        match self {
            Self::Text(text) => Ok(PromptInput::Text(text)),
            Self::Tokens(tokens) => Ok(PromptInput::Tokens(tokens)),
            Self::Texts(mut texts) => match texts.len() {
                1 => Ok(PromptInput::Text(texts.remove(0))),
                n => Err(batch_error(n)),
            },
            Self::TokenBatches(mut batches) => match batches.len() {
                1 => Ok(PromptInput::Tokens(batches.remove(0))),
                n => Err(batch_error(n)),
            },
        }
    }
}

/// `POST /v1/chat/completions` request body.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// Model id; when absent, the node's base model.
    pub model: Option<String>,
    /// The conversation so far.
    pub messages: Vec<ChatMessageIn>,
    /// Sampling, length and streaming options shared with completions (parsed by [`parse_request`]).
    #[serde(skip)]
    pub options: CommonOptions,
    /// Return log-probabilities (unsupported: only `false`).
    pub logprobs: Option<bool>,
    /// Alternatives per position (unsupported: only 0).
    pub top_logprobs: Option<u32>,
    /// Tool definitions (unsupported: only empty).
    pub tools: Option<Vec<serde_json::Value>>,
    /// Tool choice (unsupported: only `"none"` or `"auto"` without tools).
    pub tool_choice: Option<serde_json::Value>,
    /// Output format (only `{"type": "text"}`).
    pub response_format: Option<serde_json::Value>,
}

/// One incoming chat message.
#[derive(Debug, Deserialize)]
pub struct ChatMessageIn {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// The text, as a string or a list of text parts.
    pub content: Option<MessageContent>,
}

/// Message content: a string or OpenAI content parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Content parts; only `{"type": "text", "text": …}` is supported.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    /// Part type (`text`, `image_url`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop sequence.
    One(String),
    /// Several stop sequences.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with token usage before `[DONE]`.
    pub include_usage: Option<bool>,
}

/// Options both endpoints accept.
#[derive(Debug, Default, Deserialize)]
pub struct CommonOptions {
    /// Most tokens to generate.
    pub max_tokens: Option<usize>,
    /// Chat's newer name for `max_tokens`.
    pub max_completion_tokens: Option<usize>,
    /// Softmax temperature; 0 is greedy.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: Option<usize>,
    /// Drop tokens below this fraction of the top probability.
    pub min_p: Option<f32>,
    /// Multiplicative penalty on tokens already present (1 = off).
    pub repetition_penalty: Option<f32>,
    /// OpenAI's additive frequency penalty (unsupported: only 0).
    pub frequency_penalty: Option<f32>,
    /// OpenAI's additive presence penalty (unsupported: only 0).
    pub presence_penalty: Option<f32>,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
    /// Stop sequences; the text stops before the first match.
    pub stop: Option<Stop>,
    /// Stream the answer as server-sent events.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Number of choices (unsupported: only 1).
    pub n: Option<u32>,
    /// Per-token logit offsets (unsupported: only empty).
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    /// End-user id; accepted and ignored.
    pub user: Option<String>,
    /// Keep generating past end-of-sequence tokens until `max_tokens` (as
    /// vLLM's extension; for benchmarks and fixed-length tests).
    pub ignore_eos: Option<bool>,
    /// A weighted composition of registered adapters applied on the base
    /// model (a Credence extension; `model` must then name the base).
    pub adapters: Option<Vec<AdapterWeight>>,
}

/// One member of a weighted adapter composition.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdapterWeight {
    /// Adapter id or alias.
    pub id: String,
    /// Factor on the adapter's update (1 applies it as trained).
    pub weight: f32,
}

/// Most adapters one request may compose.
pub const MAX_COMPOSITION: usize = 8;

/// Largest accepted |weight| in a composition.
pub const MAX_ADAPTER_WEIGHT: f32 = 16.0;

impl AdapterWeight {
    /// Checks a composition's size, weights and duplicates.
    pub fn check_composition(list: &[AdapterWeight]) -> Result<()> {
        if list.is_empty() || list.len() > MAX_COMPOSITION {
            return Err(ApiError::invalid(
                "adapters",
                format!("give 1 to {MAX_COMPOSITION} adapters"),
            ));
        }
        for (i, a) in list.iter().enumerate() {
            if !a.weight.is_finite() || a.weight.abs() > MAX_ADAPTER_WEIGHT {
                return Err(ApiError::invalid(
                    format!("adapters[{i}].weight"),
                    format!("must be a finite number within ±{MAX_ADAPTER_WEIGHT}"),
                ));
            }
            if list[..i].iter().any(|b| b.id == a.id) {
                return Err(ApiError::invalid(
                    format!("adapters[{i}].id"),
                    format!("`{}` appears twice; give each adapter once", a.id),
                ));
            }
        }
        Ok(())
    }
}

/// A request body made of endpoint-specific fields plus [`CommonOptions`].
pub trait RequestBody: DeserializeOwned {
    /// Stores the shared options parsed from the same body.
    fn set_options(&mut self, options: CommonOptions);
}

impl RequestBody for CompletionRequest {
    fn set_options(&mut self, options: CommonOptions) {
        self.options = options;
    }
}

impl RequestBody for ChatRequest {
    fn set_options(&mut self, options: CommonOptions) {
        self.options = options;
    }
}

/// Parses a JSON request body. Type errors name the field (`param`); the
/// shared options are parsed in a second pass over the same value rather than
/// through `#[serde(flatten)]`, which would lose the field path.
pub fn parse_request<T: RequestBody>(body: &[u8]) -> Result<T> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequest {
            param: None,
            message: format!("invalid JSON body: {e}"),
        })?;
    if !value.is_object() {
        return Err(ApiError::InvalidRequest {
            param: None,
            message: "the request body must be a JSON object".into(),
        });
    }
    let options: CommonOptions =
        serde_path_to_error::deserialize(&value).map_err(ApiError::from_json)?;
    let mut request: T = serde_path_to_error::deserialize(&value).map_err(ApiError::from_json)?;
    request.set_options(options);
    Ok(request)
}

/// Rejects `value` for `field` unless it is absent or equal to `neutral`.
fn only_neutral<T: PartialEq + std::fmt::Debug>(
    field: &str,
    value: Option<T>,
    neutral: T,
    hint: &str,
) -> Result<()> {
    match value {
        Some(v) if v != neutral => Err(ApiError::invalid(
            field,
            format!("`{field}` = {v:?} is not supported (only {neutral:?}){hint}"),
        )),
        _ => Ok(()),
    }
}

impl CommonOptions {
    /// Whether the caller asked for a stream.
    pub fn stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether a streamed answer ends with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The requested completion length, if any (`max_completion_tokens` wins).
    pub fn requested_max_tokens(&self) -> Result<Option<usize>> {
        let (field, value) = match (self.max_completion_tokens, self.max_tokens) {
            (Some(v), _) => ("max_completion_tokens", Some(v)),
            (None, v) => ("max_tokens", v),
        };
        match value {
            Some(0) => Err(ApiError::invalid(
                field,
                format!("`{field}` must be at least 1"),
            )),
            v => Ok(v),
        }
    }

    /// Rejects parameters this server does not implement at non-neutral values.
    pub fn check_supported(&self) -> Result<()> {
        let penalty_hint = "; use `repetition_penalty` instead";
        only_neutral(
            "frequency_penalty",
            self.frequency_penalty,
            0.0,
            penalty_hint,
        )?;
        only_neutral("presence_penalty", self.presence_penalty, 0.0, penalty_hint)?;
        only_neutral("n", self.n, 1, "; send one request per choice")?;
        if self.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(ApiError::invalid(
                "logit_bias",
                "`logit_bias` is not supported",
            ));
        }
        Ok(())
    }

    /// Builds the engine's parameters; fields left out keep the engine's defaults.
    pub fn generate_params(&self, max_tokens: usize) -> Result<GenerateParams> {
        let defaults = SamplingParams::default();
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            min_p: self.min_p.unwrap_or(defaults.min_p),
            repetition_penalty: self
                .repetition_penalty
                .unwrap_or(defaults.repetition_penalty),
            seed: self.seed.or(defaults.seed),
        };
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(list)) => list.clone(),
        };
        if stop.len() > MAX_STOP_SEQUENCES {
            return Err(ApiError::invalid(
                "stop",
                format!(
                    "at most {MAX_STOP_SEQUENCES} stop sequences are allowed, got {}",
                    stop.len()
                ),
            ));
        }
        if stop.iter().any(String::is_empty) {
            return Err(ApiError::invalid(
                "stop",
                "stop sequences must not be empty",
            ));
        }
        let params = GenerateParams {
            sampling,
            max_tokens,
            stop,
            ignore_eos: self.ignore_eos.unwrap_or(false),
        };
        params
            .validate()
            .map_err(|e| ApiError::from_model(e, "prompt"))?;
        Ok(params)
    }
}

impl CompletionRequest {
    /// Rejects completions-only parameters we do not implement.
    pub fn check_supported(&self) -> Result<()> {
        self.options.check_supported()?;
        only_neutral("echo", self.echo, false, "")?;
        only_neutral("best_of", self.best_of, 1, "")?;
        only_neutral("logprobs", self.logprobs, 0, "")?;
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::invalid(
                "suffix",
                "`suffix` (insertion) is not supported",
            ));
        }
        Ok(())
    }
}

impl ChatRequest {
    /// Rejects chat-only parameters we do not implement.
    pub fn check_supported(&self) -> Result<()> {
        self.options.check_supported()?;
        only_neutral("logprobs", self.logprobs, false, "")?;
        only_neutral("top_logprobs", self.top_logprobs, 0, "")?;
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::invalid("tools", "tool calling is not supported"));
        }
        if let Some(choice) = &self.tool_choice
            && !matches!(choice.as_str(), Some("none" | "auto"))
        {
            return Err(ApiError::invalid(
                "tool_choice",
                "tool calling is not supported",
            ));
        }
        if let Some(format) = &self.response_format
            && format.get("type").and_then(|t| t.as_str()) != Some("text")
        {
            return Err(ApiError::invalid(
                "response_format",
                "only {\"type\": \"text\"} is supported",
            ));
        }
        Ok(())
    }

    /// The conversation as the chat template expects it.
    pub fn chat_messages(&self) -> Result<Vec<credence_model::chat::ChatMessage>> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "`messages` must not be empty",
            ));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let role = match m.role.as_str() {
                    "system" | "developer" => "system",
                    "user" => "user",
                    "assistant" => "assistant",
                    other => {
                        return Err(ApiError::invalid(
                            format!("messages[{i}].role"),
                            format!(
                                "role `{other}` is not supported (system, developer, user, assistant)"
                            ),
                        ));
                    }
                };
                let content = match &m.content {
                    None => String::new(),
                    Some(MessageContent::Text(text)) => text.clone(),
                    Some(MessageContent::Parts(parts)) => {
                        let mut text = String::new();
                        for (j, part) in parts.iter().enumerate() {
                            match (part.kind.as_str(), &part.text) {
                                ("text", Some(t)) => text.push_str(t),
                                (kind, _) => {
                                    return Err(ApiError::invalid(
                                        format!("messages[{i}].content[{j}]"),
                                        format!("content part `{kind}` is not supported (text only)"),
                                    ));
                                }
                            }
                        }
                        text
                    }
                };
                Ok(credence_model::chat::ChatMessage { role: role.to_owned(), content })
            })
            .collect()
    }
}

/// Token accounting returned with every answer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Sum of both.
    pub total_tokens: usize,
}

impl Usage {
    /// Usage for a prompt and completion length.
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// `POST /v1/completions` answer, and (with `object = "text_completion"`) its stream chunks.
#[derive(Debug, Serialize)]
pub struct CompletionResponse {
    /// Unique id (`cmpl-…`).
    pub id: String,
    /// Always `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// One choice (or none, in a stream's usage chunk).
    pub choices: Vec<CompletionChoice>,
    /// Token usage (absent in intermediate stream chunks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One completion choice.
#[derive(Debug, Serialize)]
pub struct CompletionChoice {
    /// Always 0.
    pub index: u32,
    /// Generated text (a delta in streams).
    pub text: String,
    /// Always null.
    pub logprobs: Option<()>,
    /// `stop` or `length` when finished, null while streaming.
    pub finish_reason: Option<&'static str>,
}

/// `POST /v1/chat/completions` answer.
#[derive(Debug, Serialize)]
pub struct ChatResponse {
    /// Unique id (`chatcmpl-…`).
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// One choice.
    pub choices: Vec<ChatChoice>,
    /// Token usage.
    pub usage: Usage,
}

/// One chat choice.
#[derive(Debug, Serialize)]
pub struct ChatChoice {
    /// Always 0.
    pub index: u32,
    /// The assistant's message.
    pub message: ChatMessageOut,
    /// Always null.
    pub logprobs: Option<()>,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
}

/// An outgoing assistant message.
#[derive(Debug, Serialize)]
pub struct ChatMessageOut {
    /// Always `assistant`.
    pub role: &'static str,
    /// The generated text.
    pub content: String,
}

/// One `chat.completion.chunk` of a streamed chat answer.
#[derive(Debug, Serialize)]
pub struct ChatChunk {
    /// Same id for every chunk of one answer.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// One choice delta, or none in the usage chunk.
    pub choices: Vec<ChatChunkChoice>,
    /// Token usage, only in the final usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One choice delta.
#[derive(Debug, Serialize)]
pub struct ChatChunkChoice {
    /// Always 0.
    pub index: u32,
    /// What changed.
    pub delta: ChatDelta,
    /// Always null.
    pub logprobs: Option<()>,
    /// Set on the last content chunk.
    pub finish_reason: Option<&'static str>,
}

/// A message delta.
#[derive(Debug, Default, Serialize)]
pub struct ChatDelta {
    /// `assistant`, on the first chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// `GET /v1/models` answer.
#[derive(Debug, Serialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// The served models.
    pub data: Vec<ModelCard>,
}

/// One served model.
#[derive(Debug, Serialize)]
pub struct ModelCard {
    /// The id to put in `model`.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds when the node loaded it.
    pub created: u64,
    /// Always `credence`.
    pub owned_by: &'static str,
    /// Context window in tokens (an extension to OpenAI's schema).
    pub context_length: usize,
}

/// `GET /health` answer.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok` while the engine thread runs, else `unavailable`.
    pub status: &'static str,
    /// The served model's id.
    pub model: String,
    /// Requests waiting for the engine.
    pub queued: usize,
    /// Queue capacity.
    pub queue_capacity: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(json: &str) -> CommonOptions {
        serde_json::from_str(json).expect("valid options")
    }

    #[test]
    fn unsupported_parameters_are_rejected_by_name() {
        for (json, field) in [
            (r#"{"frequency_penalty": 0.5}"#, "frequency_penalty"),
            (r#"{"presence_penalty": -1}"#, "presence_penalty"),
            (r#"{"n": 2}"#, "n"),
            (r#"{"logit_bias": {"1": 5}}"#, "logit_bias"),
        ] {
            let err = options(json).check_supported().expect_err(json);
            assert_eq!(err.param(), Some(field), "{json}");
        }
        options(r#"{"frequency_penalty": 0, "presence_penalty": 0.0, "n": 1, "logit_bias": {}}"#)
            .check_supported()
            .expect("neutral values are accepted");
    }

    #[test]
    fn max_completion_tokens_wins_and_zero_is_rejected() {
        let o = options(r#"{"max_tokens": 5, "max_completion_tokens": 7}"#);
        assert_eq!(o.requested_max_tokens().expect("valid"), Some(7));
        let err = options(r#"{"max_tokens": 0}"#)
            .requested_max_tokens()
            .expect_err("zero");
        assert_eq!(err.param(), Some("max_tokens"));
    }

    #[test]
    fn stop_accepts_a_string_or_a_list() {
        let p = options(r#"{"stop": "\n"}"#)
            .generate_params(4)
            .expect("valid");
        assert_eq!(p.stop, vec!["\n".to_owned()]);
        let p = options(r#"{"stop": ["a", "b"]}"#)
            .generate_params(4)
            .expect("valid");
        assert_eq!(p.stop.len(), 2);
        let err = options(r#"{"stop": [""]}"#)
            .generate_params(4)
            .expect_err("empty stop");
        assert_eq!(err.param(), Some("stop"));
    }

    #[test]
    fn prompt_batches_are_rejected_but_singletons_accepted() {
        let p: Prompt = serde_json::from_str(r#"["hi"]"#).expect("valid");
        assert_eq!(
            p.into_single().expect("one"),
            PromptInput::Text("hi".into())
        );
        let p: Prompt = serde_json::from_str(r#"[1, 2, 3]"#).expect("valid");
        assert_eq!(
            p.into_single().expect("one"),
            PromptInput::Tokens(vec![1, 2, 3])
        );
        let p: Prompt = serde_json::from_str(r#"["a", "b"]"#).expect("valid");
        assert_eq!(p.into_single().expect_err("batch").param(), Some("prompt"));
    }

    #[test]
    fn type_errors_name_the_field_even_in_shared_options() {
        let err = parse_request::<CompletionRequest>(br#"{"prompt": "x", "max_tokens": "many"}"#)
            .expect_err("bad type");
        assert_eq!(err.param(), Some("max_tokens"));
        let err =
            parse_request::<ChatRequest>(br#"{"messages": [{"role": 1}]}"#).expect_err("bad type");
        assert_eq!(err.param(), Some("messages[0].role"));
        let err = parse_request::<ChatRequest>(b"{oops").expect_err("syntax");
        assert_eq!(err.param(), None);
        let req = parse_request::<ChatRequest>(
            br#"{"messages": [], "temperature": 0.2, "stream": true}"#,
        )
        .expect("valid");
        assert_eq!(req.options.temperature, Some(0.2));
        assert!(req.options.stream());
    }

    #[test]
    fn chat_messages_accept_text_parts_and_reject_others() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]}
            ]}"#,
        )
        .expect("valid");
        let msgs = req.chat_messages().expect("valid");
        assert_eq!(msgs[0].role, "system");
        assert_eq!(msgs[1].content, "hi there");

        let req: ChatRequest = serde_json::from_str(
            r#"{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}"#,
        )
        .expect("valid");
        assert_eq!(
            req.chat_messages().expect_err("image").param(),
            Some("messages[0].content[0]")
        );

        let req: ChatRequest =
            serde_json::from_str(r#"{"messages": [{"role": "tool", "content": "x"}]}"#)
                .expect("valid");
        assert_eq!(
            req.chat_messages().expect_err("tool").param(),
            Some("messages[0].role")
        );
    }
}
