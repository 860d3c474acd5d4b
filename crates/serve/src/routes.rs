//! HTTP handlers, SSE streaming and request logging.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use credence_model::generate::{FinishReason, GenerateParams, GenerationOutput};
use futures_util::StreamExt;
use futures_util::stream;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::{
    ChatChoice, ChatChunk, ChatChunkChoice, ChatDelta, ChatMessageOut, ChatRequest, ChatResponse,
    CommonOptions, CompletionChoice, CompletionRequest, CompletionResponse, Health, ModelCard,
    ModelList, PromptInput, RequestBody, Usage, parse_request,
};
use crate::billing::{CallQuote, Charge, RECEIPT_HEADER};
use crate::engine::{Event, Job};
use crate::error::{ApiError, Result};
use crate::{AppState, Resolved, unix_now};

/// Builds the HTTP API: generation, models, adapters, metrics, health and the OpenAPI document.
pub fn router(state: AppState) -> Router {
    let limit = state.config().max_body_bytes;
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route("/health", get(health))
        .route("/openapi.json", get(crate::openapi::document))
        .merge(crate::admin::adapter_routes(&state))
        .fallback(|uri: Uri| async move { ApiError::RouteNotFound(uri.path().to_owned()) })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// A JSON body whose errors are [`ApiError`]s naming the offending field.
///
/// Unlike axum's `Json`, it does not insist on a `Content-Type` header, so a bare
/// `curl -d '{…}'` works.
struct ApiJson<T>(T);

impl<T: RequestBody> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| ApiError::from_body_rejection(r, state.config().max_body_bytes))?;
        parse_request(&bytes).map(Self)
    }
}

async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    tracing::info!(
        %method,
        %path,
        status = response.status().as_u16(),
        ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
        "http request"
    );
    response
}

/// 200 while the engine thread runs, 503 once it is gone (for load balancers).
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let engine = state.engine();
    let alive = engine.is_alive();
    let status = if alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let health = Health {
        status: if alive { "ok" } else { "unavailable" },
        model: state.config().model_id.clone(),
        queued: engine.queued(),
        queue_capacity: engine.capacity(),
    };
    (status, Json(health))
}

async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    let card = |id: String| ModelCard {
        id,
        object: "model",
        created: state.created(),
        owned_by: "credence",
        context_length: state.model().config().context_length,
    };
    let mut data = vec![card(state.config().model_id.clone())];
    for adapter in state.adapters().list() {
        data.extend(adapter.aliases.into_iter().map(card));
        data.push(card(adapter.id));
    }
    Json(ModelList {
        object: "list",
        data,
    })
}

async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response> {
    req.check_supported()?;
    let resolved = state
        .resolve_model(req.model.as_deref(), req.options.adapters.as_deref())
        .await?;
    let input = req.prompt.into_single()?;
    let prompt = tokenize_prompt(&state, input).await?;
    let params = generation_params(&state, &req.options, prompt.len(), "prompt")?;
    let charge = authorize(&state, headers, &resolved, prompt.len(), params.max_tokens).await?;
    let meta = Meta::new(
        &state,
        "cmpl",
        resolved.model,
        Shape::Completion,
        req.options.include_usage(),
    )
    .with_charge(charge, prompt.len());
    let job = Job::new(prompt, params, "prompt", req.options.stream());
    respond(&state, job, resolved.adapters, meta).await
}

async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response> {
    req.check_supported()?;
    let resolved = state
        .resolve_model(req.model.as_deref(), req.options.adapters.as_deref())
        .await?;
    let messages = req.chat_messages()?;
    let engine_model = state.model_arc();
    let prompt = tokio::task::spawn_blocking(move || {
        let template = engine_model.chat_template().ok_or_else(|| {
            ApiError::invalid(
                "messages",
                "this model has no chat template; use /v1/completions",
            )
        })?;
        let text = template
            .render(&messages, true)
            .map_err(|e| ApiError::from_model(e, "messages"))?;
        // The template writes the special tokens it wants as text.
        engine_model
            .tokenizer()
            .encode(&text, false)
            .map_err(|e| ApiError::from_model(e, "messages"))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("prompt rendering task failed: {e}")))??;
    let params = generation_params(&state, &req.options, prompt.len(), "messages")?;
    let charge = authorize(&state, headers, &resolved, prompt.len(), params.max_tokens).await?;
    let meta = Meta::new(
        &state,
        "chatcmpl",
        resolved.model,
        Shape::Chat,
        req.options.include_usage(),
    )
    .with_charge(charge, prompt.len());
    let job = Job::new(prompt, params, "messages", req.options.stream());
    respond(&state, job, resolved.adapters, meta).await
}

/// Asks the payment gate, if any, to authorise the call before it is queued.
async fn authorize(
    state: &AppState,
    headers: HeaderMap,
    resolved: &Resolved,
    prompt_tokens: usize,
    max_completion_tokens: usize,
) -> Result<Option<Box<dyn Charge>>> {
    let Some(billing) = state.billing().cloned() else {
        return Ok(None);
    };
    let quote = CallQuote {
        model: resolved.model.clone(),
        adapters: resolved.ids.clone(),
        prompt_tokens,
        max_completion_tokens,
    };
    tokio::task::spawn_blocking(move || billing.authorize(&headers, &quote))
        .await
        .map_err(|e| ApiError::Internal(format!("billing task failed: {e}")))?
}

/// Tokenises a completion prompt off the async runtime, or checks given token ids.
async fn tokenize_prompt(state: &AppState, input: PromptInput) -> Result<Vec<u32>> {
    match input {
        PromptInput::Tokens(tokens) => {
            let vocab = state.model().config().vocab_size;
            if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
                return Err(ApiError::invalid(
                    "prompt",
                    format!("token id {bad} is outside the vocabulary (size {vocab})"),
                ));
            }
            Ok(tokens)
        }
        PromptInput::Text(text) => {
            let model = state.model_arc();
            tokio::task::spawn_blocking(move || model.tokenizer().encode(&text, true))
                .await
                .map_err(|e| ApiError::Internal(format!("tokenizer task failed: {e}")))?
                .map_err(|e| ApiError::from_model(e, "prompt"))
        }
    }
}

/// Decides the completion length against the context window and builds the engine's parameters.
fn generation_params(
    state: &AppState,
    options: &CommonOptions,
    prompt_len: usize,
    param: &'static str,
) -> Result<GenerateParams> {
    let context = state.model().config().context_length;
    let requested = options.requested_max_tokens()?;
    if prompt_len == 0 {
        return Err(ApiError::invalid(param, "the prompt is empty"));
    }
    if prompt_len >= context {
        let requested = prompt_len + requested.unwrap_or(1);
        return Err(ApiError::ContextOverflow {
            param,
            prompt: prompt_len,
            requested,
            context,
        });
    }
    let room = context - prompt_len;
    let max_tokens = match requested {
        Some(n) if n > room => {
            return Err(ApiError::ContextOverflow {
                param,
                prompt: prompt_len,
                requested: prompt_len.saturating_add(n),
                context,
            });
        }
        Some(n) => n,
        None => state.config().default_max_tokens.min(room),
    };
    options.generate_params(max_tokens)
}

/// Queues the job and answers with a stream or a whole JSON body.
async fn respond(
    state: &AppState,
    (job, events): (Job, UnboundedReceiver<Event>),
    adapters: Vec<credence_model::llama::WeightedAdapter>,
    mut meta: Meta,
) -> Result<Response> {
    let stream = job.stream;
    // A refused submission drops `meta`, which releases its charge unbilled.
    state.engine().submit(job.with_adapters(adapters))?;
    let receipt = meta.receipt_header();
    let mut response = if stream {
        sse_response(events, meta)
    } else {
        match wait_for_output(events).await {
            Ok(output) => {
                meta.record_done(&output);
                meta.settle(output.prompt_tokens, output.completion_tokens)
                    .await;
                meta.whole(output)
            }
            Err(e) => {
                meta.record_failure();
                return Err(e);
            }
        }
    };
    if let Some(value) = receipt {
        response.headers_mut().insert(RECEIPT_HEADER, value);
    }
    Ok(response)
}

async fn wait_for_output(mut events: UnboundedReceiver<Event>) -> Result<GenerationOutput> {
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(_) => {}
            Event::Done(output) => return Ok(output),
            Event::Failed(error) => return Err(error),
        }
    }
    Err(ApiError::Internal(
        "the engine dropped the request without an answer".into(),
    ))
}

fn finish_reason(reason: &FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// Which endpoint's JSON shape to produce.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Completion,
    Chat,
}

/// Identity of one answer, shared by all its chunks.
#[derive(Debug)]
struct Meta {
    id: String,
    created: u64,
    model: String,
    shape: Shape,
    include_usage: bool,
    /// For the metrics.
    state: AppState,
    accepted: Instant,
    first_text_seen: bool,
    /// The call's reservation with the payment gate, until settled or released.
    charge: Option<Box<dyn Charge>>,
    prompt_tokens: usize,
    /// Text events sent so far: what an abandoned stream is charged for.
    streamed: usize,
}

impl Meta {
    fn new(
        state: &AppState,
        prefix: &str,
        model: String,
        shape: Shape,
        include_usage: bool,
    ) -> Self {
        Self {
            id: new_id(prefix),
            created: unix_now(),
            model,
            shape,
            include_usage,
            state: state.clone(),
            accepted: Instant::now(),
            first_text_seen: false,
            charge: None,
            prompt_tokens: 0,
            streamed: 0,
        }
    }

    fn with_charge(mut self, charge: Option<Box<dyn Charge>>, prompt_tokens: usize) -> Self {
        self.charge = charge;
        self.prompt_tokens = prompt_tokens;
        self
    }

    fn receipt_header(&self) -> Option<HeaderValue> {
        let id = self.charge.as_ref()?.receipt_id();
        HeaderValue::from_str(id).ok()
    }

    /// Settles the charge with the call's real usage, off the async runtime.
    async fn settle(&mut self, prompt_tokens: usize, completion_tokens: usize) {
        if let Some(charge) = self.charge.take() {
            let task = tokio::task::spawn_blocking(move || {
                charge.settle(prompt_tokens, completion_tokens)
            });
            if let Err(e) = task.await {
                tracing::error!(error = %e, "settling a charge failed");
            }
        }
    }

    /// Drops the charge unbilled: the server, not the client, failed the call.
    fn release(&mut self) {
        self.charge = None;
    }

    fn record_first_text(&mut self) {
        if !self.first_text_seen {
            self.first_text_seen = true;
            let ttft = self.accepted.elapsed();
            self.state.metrics().time_to_first_token.observe(ttft);
        }
    }

    fn record_done(&self, output: &GenerationOutput) {
        self.state.metrics().record_done(&self.model, output);
    }

    fn record_failure(&self) {
        self.state.metrics().record_failure(&self.model);
    }

    /// The non-streamed answer.
    fn whole(&self, output: GenerationOutput) -> Response {
        let usage = Usage::new(output.prompt_tokens, output.completion_tokens);
        let finish = finish_reason(&output.finish_reason);
        match self.shape {
            Shape::Completion => Json(CompletionResponse {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![CompletionChoice {
                    index: 0,
                    text: output.text,
                    logprobs: None,
                    finish_reason: Some(finish),
                }],
                usage: Some(usage),
            })
            .into_response(),
            Shape::Chat => Json(ChatResponse {
                id: self.id.clone(),
                object: "chat.completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChatChoice {
                    index: 0,
                    message: ChatMessageOut {
                        role: "assistant",
                        content: output.text,
                    },
                    logprobs: None,
                    finish_reason: finish,
                }],
                usage,
            })
            .into_response(),
        }
    }

    /// A stream chunk: a role announcement, a text delta, the finish marker or the usage.
    fn chunk(&self, part: ChunkPart<'_>) -> serde_json::Result<SseEvent> {
        let (text, role, finish, usage) = match part {
            ChunkPart::Role => (None, Some("assistant"), None, None),
            ChunkPart::Text(text) => (Some(text), None, None, None),
            ChunkPart::Finish(reason) => (None, None, Some(reason), None),
            ChunkPart::Usage(usage) => (None, None, None, Some(usage)),
        };
        let with_choice = usage.is_none();
        let json = match self.shape {
            Shape::Completion => serde_json::to_string(&CompletionResponse {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model.clone(),
                choices: with_choice
                    .then(|| CompletionChoice {
                        index: 0,
                        text: text.unwrap_or_default().to_owned(),
                        logprobs: None,
                        finish_reason: finish,
                    })
                    .into_iter()
                    .collect(),
                usage,
            })?,
            Shape::Chat => serde_json::to_string(&ChatChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk",
                created: self.created,
                model: self.model.clone(),
                choices: with_choice
                    .then(|| ChatChunkChoice {
                        index: 0,
                        delta: ChatDelta {
                            role,
                            content: text.map(str::to_owned),
                        },
                        logprobs: None,
                        finish_reason: finish,
                    })
                    .into_iter()
                    .collect(),
                usage,
            })?,
        };
        Ok(SseEvent::default().data(json))
    }
}

impl Drop for Meta {
    /// A stream the client abandoned is charged for the text already sent;
    /// one that sent nothing is released.
    fn drop(&mut self) {
        let Some(charge) = self.charge.take() else {
            return;
        };
        if self.streamed == 0 {
            return;
        }
        let (prompt, sent) = (self.prompt_tokens, self.streamed);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || charge.settle(prompt, sent));
            }
            Err(_) => charge.settle(prompt, sent),
        }
    }
}

enum ChunkPart<'a> {
    Role,
    Text(&'a str),
    Finish(&'static str),
    Usage(Usage),
}

/// Where a stream is in its life.
enum Phase {
    Opening,
    Streaming,
    Closed,
}

/// Turns the engine's events into SSE chunks ending in `data: [DONE]`.
fn sse_response(events: UnboundedReceiver<Event>, meta: Meta) -> Response {
    let state = (events, meta, Phase::Opening);
    let chunks = stream::unfold(state, |(mut events, mut meta, phase)| async move {
        let batch: Vec<serde_json::Result<SseEvent>> = match phase {
            Phase::Closed => return None,
            Phase::Opening if matches!(meta.shape, Shape::Chat) => {
                let first = meta.chunk(ChunkPart::Role);
                return Some((vec![first], (events, meta, Phase::Streaming)));
            }
            Phase::Opening | Phase::Streaming => match events.recv().await {
                Some(Event::Text(text)) => {
                    meta.record_first_text();
                    meta.streamed += 1;
                    let chunk = meta.chunk(ChunkPart::Text(&text));
                    return Some((vec![chunk], (events, meta, Phase::Streaming)));
                }
                Some(Event::Done(output)) => {
                    meta.record_done(&output);
                    meta.settle(output.prompt_tokens, output.completion_tokens)
                        .await;
                    let mut batch =
                        vec![meta.chunk(ChunkPart::Finish(finish_reason(&output.finish_reason)))];
                    if meta.include_usage {
                        let usage = Usage::new(output.prompt_tokens, output.completion_tokens);
                        batch.push(meta.chunk(ChunkPart::Usage(usage)));
                    }
                    batch.push(Ok(SseEvent::default().data("[DONE]")));
                    batch
                }
                Some(Event::Failed(error)) => {
                    meta.record_failure();
                    meta.release();
                    vec![error_event(&error)]
                }
                None => vec![error_event(&ApiError::Internal(
                    "the engine dropped the request without an answer".into(),
                ))],
            },
        };
        Some((batch, (events, meta, Phase::Closed)))
    })
    .flat_map(stream::iter);
    Sse::new(chunks)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// An error reported inside an already-started stream, in OpenAI's error shape.
fn error_event(error: &ApiError) -> serde_json::Result<SseEvent> {
    if error.status().is_server_error() {
        tracing::error!(%error, "stream failed");
    }
    Ok(SseEvent::default().data(serde_json::to_string(&error.body())?))
}

/// A process-unique response id: prefix, clock nanoseconds and a counter, in hex.
fn new_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{prefix}-{nanos:x}{n:x}")
}
