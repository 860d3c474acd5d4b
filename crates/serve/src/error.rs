//! The one place where failures become HTTP responses.
//!
//! Every handler returns [`ApiError`]; [`ApiError::status`] and
//! [`ApiError::kind`] decide what the client sees, in OpenAI's error shape:
//! `{"error": {"message", "type", "param", "code"}}`. Internal failures are
//! logged here with their detail and reported to the client only generically.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Result alias for this crate.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A request field is missing, malformed, out of range or unsupported.
    #[error("{message}")]
    InvalidRequest {
        /// The offending field (dotted path, e.g. `messages[1].content`), when known.
        param: Option<String>,
        /// What is wrong, phrased for the caller.
        message: String,
    },
    /// The prompt, or the prompt plus `max_tokens`, does not fit the context window.
    #[error(
        "this model's context window is {context} tokens, but the request needs {requested} \
         ({prompt} in the prompt); shorten the prompt or lower max_tokens"
    )]
    ContextOverflow {
        /// The field holding the prompt (`prompt` or `messages`).
        param: &'static str,
        /// Tokens in the prompt.
        prompt: usize,
        /// Tokens the request asks for in total.
        requested: usize,
        /// The model's context window.
        context: usize,
    },
    /// The `model` field names a model this node does not serve.
    #[error("the model `{0}` does not exist on this node; GET /v1/models lists the served models")]
    ModelNotFound(String),
    /// A field names an adapter this node does not have.
    #[error("no adapter named `{name}` is registered; GET /v1/adapters lists them")]
    AdapterNotFound {
        /// The field naming it (e.g. `adapters[1].id`).
        param: String,
        /// The name given.
        name: String,
    },
    /// No route matches the path.
    #[error("no route for {0}")]
    RouteNotFound(String),
    /// The request body exceeds the configured limit.
    #[error("request body too large (limit {limit} bytes)")]
    PayloadTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The generation queue is full.
    #[error("the server is busy ({capacity} requests already queued); retry later")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// An adapter is malformed or does not fit the served model.
    #[error("invalid adapter: {0}")]
    InvalidAdapter(String),
    /// The adapter RAM cache is full of pinned adapters or adapters in use.
    #[error(
        "the adapter cache is full ({budget} bytes, all in use or pinned) and cannot take \
         {needed} more bytes; retry later"
    )]
    AdapterCacheFull {
        /// Bytes the adapter needs.
        needed: usize,
        /// The cache's budget.
        budget: usize,
    },
    /// The KV cache budget cannot hold this sequence now.
    #[error(
        "the KV cache is full ({budget} bytes; {free} free, {needed} needed); retry later or \
         shorten the request"
    )]
    KvCacheFull {
        /// Bytes the sequence needed.
        needed: usize,
        /// Bytes free.
        free: usize,
        /// The pool's budget.
        budget: usize,
    },
    /// A write endpoint was called without a valid API key.
    #[error("this endpoint needs a valid API key in `Authorization: Bearer <key>`")]
    Unauthorized,
    /// A paid call without enough prepaid balance behind it (nothing was generated).
    #[error("payment required: {0}")]
    PaymentRequired(String),
    /// The engine thread is gone (shutting down, or a fatal bug).
    #[error("the generation engine is not running")]
    EngineUnavailable,
    /// A failure inside the server; the detail is logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// An [`ApiError::InvalidRequest`] about `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            param: Some(param.into()),
            message: message.into(),
        }
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } | Self::ContextOverflow { .. } => StatusCode::BAD_REQUEST,
            Self::ModelNotFound(_) | Self::RouteNotFound(_) | Self::AdapterNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidAdapter(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::QueueFull { .. } | Self::AdapterCacheFull { .. } | Self::KvCacheFull { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::PaymentRequired(_) => StatusCode::PAYMENT_REQUIRED,
            Self::EngineUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `type` and `code` strings for this error.
    pub fn kind(&self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::InvalidRequest { .. } => ("invalid_request_error", None),
            Self::ContextOverflow { .. } => {
                ("invalid_request_error", Some("context_length_exceeded"))
            }
            Self::ModelNotFound(_) => ("invalid_request_error", Some("model_not_found")),
            Self::RouteNotFound(_) => ("invalid_request_error", Some("unknown_url")),
            Self::AdapterNotFound { .. } => ("invalid_request_error", Some("adapter_not_found")),
            Self::PayloadTooLarge { .. } => ("invalid_request_error", Some("payload_too_large")),
            Self::InvalidAdapter(_) => ("invalid_request_error", Some("invalid_adapter")),
            Self::QueueFull { .. } => ("rate_limit_error", Some("queue_full")),
            Self::AdapterCacheFull { .. } => ("rate_limit_error", Some("adapter_cache_full")),
            Self::KvCacheFull { .. } => ("rate_limit_error", Some("kv_cache_full")),
            Self::Unauthorized => ("invalid_request_error", Some("invalid_api_key")),
            Self::PaymentRequired(_) => ("invalid_request_error", Some("payment_required")),
            Self::EngineUnavailable => ("server_error", Some("engine_unavailable")),
            Self::Internal(_) => ("server_error", None),
        }
    }

    /// The field the error is about, if any.
    pub fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { param, .. } => param.as_deref(),
            Self::ContextOverflow { param, .. } => Some(param),
            Self::ModelNotFound(_) => Some("model"),
            Self::AdapterNotFound { param, .. } => Some(param),
            _ => None,
        }
    }

    /// The JSON body sent to the client (also used for in-stream errors).
    pub fn body(&self) -> ErrorBody {
        let (kind, code) = self.kind();
        let message = match self {
            // Never leak internals (paths, engine state) to clients.
            Self::Internal(_) => "internal server error".to_owned(),
            other => other.to_string(),
        };
        ErrorBody {
            error: ErrorDetail {
                message,
                kind,
                param: self.param().map(str::to_owned),
                code,
            },
        }
    }

    /// Maps an engine error raised for the field holding the prompt (`prompt_param`).
    pub fn from_model(error: credence_model::Error, prompt_param: &'static str) -> Self {
        use credence_model::Error as E;
        match error {
            E::InvalidParameter { field, problem } => Self::invalid(field, problem),
            E::ContextOverflow { tokens, context } => Self::ContextOverflow {
                param: prompt_param,
                prompt: tokens,
                requested: tokens,
                context,
            },
            // A template or tokenizer failure is caused by what the caller sent.
            E::ChatTemplate(problem) => Self::invalid(prompt_param, problem),
            E::KvExhausted {
                needed,
                free,
                budget,
            } => Self::KvCacheFull {
                needed,
                free,
                budget,
            },
            other => Self::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    /// Maps a failure to read the request body; `limit` is the configured body limit.
    pub fn from_body_rejection(rejection: BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge { limit }
        } else {
            Self::InvalidRequest {
                param: None,
                message: rejection.body_text(),
            }
        }
    }

    /// Maps a JSON syntax or type error, naming the field where it occurred.
    pub fn from_json(error: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = format!("invalid JSON body: {inner}");
        let param = (!path.is_empty() && path != "." && path != "?").then_some(path);
        Self::InvalidRequest { param, message }
    }
}

/// OpenAI's error envelope.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// OpenAI's error object.
#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    /// Human-readable explanation.
    pub message: String,
    /// Error class (`invalid_request_error`, `rate_limit_error`, `server_error`).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field at fault, if any.
    pub param: Option<String>,
    /// Machine-readable code, if any.
    pub code: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, %status, "request rejected");
        }
        (status, Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the status, `type` and `code` of every variant: clients branch on them.
    #[test]
    fn every_error_maps_to_a_stable_status_and_kind() {
        let cases = [
            (
                ApiError::invalid("top_p", "too big"),
                400,
                "invalid_request_error",
                None,
            ),
            (
                ApiError::ContextOverflow {
                    param: "prompt",
                    prompt: 9000,
                    requested: 9100,
                    context: 8192,
                },
                400,
                "invalid_request_error",
                Some("context_length_exceeded"),
            ),
            (
                ApiError::ModelNotFound("x".into()),
                404,
                "invalid_request_error",
                Some("model_not_found"),
            ),
            (
                ApiError::AdapterNotFound {
                    param: "adapters[0].id".into(),
                    name: "x".into(),
                },
                404,
                "invalid_request_error",
                Some("adapter_not_found"),
            ),
            (
                ApiError::RouteNotFound("/x".into()),
                404,
                "invalid_request_error",
                Some("unknown_url"),
            ),
            (
                ApiError::PayloadTooLarge { limit: 1 },
                413,
                "invalid_request_error",
                Some("payload_too_large"),
            ),
            (
                ApiError::InvalidAdapter("bad".into()),
                422,
                "invalid_request_error",
                Some("invalid_adapter"),
            ),
            (
                ApiError::QueueFull { capacity: 4 },
                429,
                "rate_limit_error",
                Some("queue_full"),
            ),
            (
                ApiError::AdapterCacheFull {
                    needed: 1,
                    budget: 1,
                },
                429,
                "rate_limit_error",
                Some("adapter_cache_full"),
            ),
            (
                ApiError::KvCacheFull {
                    needed: 2,
                    free: 1,
                    budget: 4,
                },
                429,
                "rate_limit_error",
                Some("kv_cache_full"),
            ),
            (
                ApiError::Unauthorized,
                401,
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
            (
                ApiError::PaymentRequired("deposit more".into()),
                402,
                "invalid_request_error",
                Some("payment_required"),
            ),
            (
                ApiError::EngineUnavailable,
                503,
                "server_error",
                Some("engine_unavailable"),
            ),
            (ApiError::Internal("boom".into()), 500, "server_error", None),
        ];
        for (error, status, kind, code) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.kind(), (kind, code), "{error:?}");
        }
    }

    #[test]
    fn body_names_the_field_and_hides_internals() {
        let body = serde_json::to_value(ApiError::invalid("temperature", "must be ≥ 0").body())
            .expect("serialisable");
        assert_eq!(body["error"]["param"], "temperature");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["message"], "must be ≥ 0");

        let body = serde_json::to_value(ApiError::Internal("/secret/path".into()).body())
            .expect("serialisable");
        assert_eq!(body["error"]["message"], "internal server error");
        assert!(body["error"]["param"].is_null());
    }

    #[test]
    fn model_errors_map_to_client_or_server_faults() {
        let e = ApiError::from_model(credence_model::Error::param("top_k", "bad"), "prompt");
        assert_eq!((e.status().as_u16(), e.param()), (400, Some("top_k")));
        let e = ApiError::from_model(
            credence_model::Error::ContextOverflow {
                tokens: 10,
                context: 5,
            },
            "messages",
        );
        assert_eq!((e.status().as_u16(), e.param()), (400, Some("messages")));
        let e = ApiError::from_model(credence_model::Error::Shape("bug".into()), "prompt");
        assert_eq!(e.status().as_u16(), 500);
    }
}
