//! Adapter management, metrics and the API-key check for write endpoints.
//!
//! * `POST /v1/adapters`: upload a PEFT adapter as `multipart/form-data`
//!   (parts `adapter_config.json` and `adapter_model.safetensors`, optional
//!   `alias`), or register a directory on the node's disk with JSON
//!   `{"path", "alias"}` (as vLLM's `load_lora_adapter` does).
//! * `GET /v1/adapters`, `GET|DELETE /v1/adapters/{name}`,
//!   `POST /v1/adapters/{name}/load|unload|pin|unpin`.
//! * `GET /metrics` in the Prometheus text format.
//!
//! Every route that changes state requires `Authorization: Bearer <key>`
//! when keys are configured.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use credence_model::lora::{CONFIG_FILE, WEIGHTS_FILE};

use crate::AppState;
use crate::adapters::AdapterInfo;
use crate::error::{ApiError, Result};
use crate::metrics::{gauge, histogram};

/// Adapter routes: reads open, writes behind the API-key check.
pub(crate) fn adapter_routes(state: &AppState) -> Router<AppState> {
    let writes = Router::new()
        .route(
            "/v1/adapters",
            post(register).layer(DefaultBodyLimit::max(
                state.config().max_adapter_upload_bytes,
            )),
        )
        .route("/v1/adapters/{name}", axum::routing::delete(remove))
        .route("/v1/adapters/{name}/load", post(load))
        .route("/v1/adapters/{name}/unload", post(unload))
        .route("/v1/adapters/{name}/pin", post(pin))
        .route("/v1/adapters/{name}/unpin", post(unpin))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .route("/v1/adapters", get(list))
        .route("/v1/adapters/{name}", get(show))
        .route("/metrics", get(metrics))
        .merge(writes)
}

/// Rejects a request without one of the configured keys (constant-time compare).
/// Other crates' write routes use it too, through
/// `axum::middleware::from_fn_with_state(state, require_key)`.
pub async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let keys = &state.config().api_keys;
    if keys.is_empty() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given)
            if keys
                .iter()
                .any(|k| constant_time_eq(k.as_bytes(), given.as_bytes())) =>
        {
            next.run(req).await
        }
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// Compares without an early exit, so timing does not reveal a key prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /v1/adapters` JSON body: a PEFT directory on this node's disk.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterDir {
    path: std::path::PathBuf,
    alias: Option<String>,
}

async fn register(State(state): State<AppState>, req: Request) -> Result<Response> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let limit = state.config().max_adapter_upload_bytes;
    let registry = state.adapters();
    let (id, created) = if is_multipart {
        let upload = read_upload(Multipart::from_request(req, &state).await.map_err(|e| {
            ApiError::invalid("body", format!("not a multipart/form-data body: {e}"))
        })?)
        .await
        .map_err(|e| oversize(e, limit))?;
        registry
            .register(upload.config, upload.weights, upload.alias.as_deref())
            .await?
    } else {
        let body = Bytes::from_request(req, &state)
            .await
            .map_err(|r| ApiError::from_body_rejection(r, limit))?;
        let req: RegisterDir = serde_json::from_slice(&body).map_err(|e| {
            ApiError::invalid(
                "body",
                format!(
                    "expected multipart/form-data with `{CONFIG_FILE}` and `{WEIGHTS_FILE}`, \
                     or JSON {{\"path\", \"alias\"}}: {e}"
                ),
            )
        })?;
        registry
            .register_dir(&req.path, req.alias.as_deref())
            .await?
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let info = registry
        .info(&id)
        .ok_or_else(|| ApiError::Internal(format!("adapter {id} vanished after registering")))?;
    Ok((status, Json(info)).into_response())
}

struct Upload {
    config: Bytes,
    weights: Bytes,
    alias: Option<String>,
}

/// Collects the upload's parts; unknown part names are refused.
async fn read_upload(mut form: Multipart) -> Result<Upload> {
    let (mut config, mut weights, mut alias) = (None, None, None);
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.map_err(multipart_error)?;
        match name.as_str() {
            CONFIG_FILE | "config" => config = Some(bytes),
            WEIGHTS_FILE | "weights" => weights = Some(bytes),
            "alias" => {
                let text = String::from_utf8(bytes.to_vec())
                    .map_err(|_| ApiError::invalid("alias", "must be UTF-8 text"))?;
                alias = Some(text);
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    format!(
                        "unexpected part; send `{CONFIG_FILE}`, `{WEIGHTS_FILE}` and optionally `alias`"
                    ),
                ));
            }
        }
    }
    let missing = |part: &str| ApiError::invalid(part, format!("the `{part}` part is missing"));
    Ok(Upload {
        config: config.ok_or_else(|| missing(CONFIG_FILE))?,
        weights: weights.ok_or_else(|| missing(WEIGHTS_FILE))?,
        alias,
    })
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit: 0 }
    } else {
        ApiError::invalid(
            "body",
            format!("malformed multipart body: {}", e.body_text()),
        )
    }
}

/// Fills in the limit for a too-large multipart body.
fn oversize(e: ApiError, limit: usize) -> ApiError {
    match e {
        ApiError::PayloadTooLarge { .. } => ApiError::PayloadTooLarge { limit },
        other => other,
    }
}

async fn list(State(state): State<AppState>) -> Response {
    Json(serde_json::json!({ "object": "list", "data": state.adapters().list() })).into_response()
}

async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<AdapterInfo>> {
    state
        .adapters()
        .info(&name)
        .map(Json)
        .ok_or(ApiError::ModelNotFound(name))
}

async fn remove(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode> {
    if state.adapters().remove(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::ModelNotFound(name))
    }
}

async fn load(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<AdapterInfo>> {
    state.adapters().load(&name, false).await.map(Json)
}

async fn pin(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<AdapterInfo>> {
    state.adapters().load(&name, true).await.map(Json)
}

async fn unpin(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<AdapterInfo>> {
    state.adapters().unpin(&name).map(Json)
}

async fn unload(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<AdapterInfo>> {
    state.adapters().unload(&name).map(Json)
}

/// `GET /metrics`: Prometheus text exposition.
async fn metrics(State(state): State<AppState>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::new();
    state.metrics().render(&mut out);
    let engine = state.engine();
    gauge(
        &mut out,
        "credence_queue_depth",
        "Requests waiting for the engine.",
        "gauge",
        engine.queued(),
    );
    gauge(
        &mut out,
        "credence_queue_capacity",
        "Requests the queue holds.",
        "gauge",
        engine.capacity(),
    );
    let kv = engine.kv_stats();
    gauge(
        &mut out,
        "credence_kv_cache_bytes",
        "Bytes of KV blocks held by running sequences and cached prefixes.",
        "gauge",
        kv.used_bytes,
    );
    gauge(
        &mut out,
        "credence_kv_cache_budget_bytes",
        "RAM budget of the KV cache.",
        "gauge",
        kv.budget_bytes,
    );
    crate::engine::render_scheduler_metrics(&mut out, &engine.scheduler_stats());
    let adapters = state.adapters();
    let stats = adapters.cache_stats();
    let (bytes, resident, budget) = adapters.cache_usage();
    let rows: [(&str, &str, &str, u64); 9] = [
        (
            "credence_adapters_registered",
            "Registered adapters.",
            "gauge",
            adapters.len() as u64,
        ),
        (
            "credence_adapters_resident",
            "Adapters decoded in RAM.",
            "gauge",
            resident as u64,
        ),
        (
            "credence_adapter_cache_bytes",
            "Bytes of decoded adapters in RAM.",
            "gauge",
            bytes as u64,
        ),
        (
            "credence_adapter_cache_budget_bytes",
            "RAM budget for decoded adapters.",
            "gauge",
            budget as u64,
        ),
        (
            "credence_adapter_cache_hits_total",
            "Adapter lookups served from RAM.",
            "counter",
            stats.hits.load(Relaxed),
        ),
        (
            "credence_adapter_cache_misses_total",
            "Adapter lookups that waited for a load.",
            "counter",
            stats.misses.load(Relaxed),
        ),
        (
            "credence_adapter_loads_total",
            "Adapters loaded from the store.",
            "counter",
            stats.loads.load(Relaxed),
        ),
        (
            "credence_adapter_load_failures_total",
            "Adapter loads that failed.",
            "counter",
            stats.load_failures.load(Relaxed),
        ),
        (
            "credence_adapter_evictions_total",
            "Adapters evicted to make room.",
            "counter",
            stats.evictions.load(Relaxed),
        ),
    ];
    for (name, help, kind, value) in rows {
        gauge(&mut out, name, help, kind, value);
    }
    histogram(
        &mut out,
        "credence_adapter_load_seconds",
        "Seconds to load an adapter from the store into RAM.",
        &stats.load_seconds,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_comparison_needs_the_whole_key() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret", b""));
    }
}
