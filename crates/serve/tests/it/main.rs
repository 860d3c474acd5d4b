//! Integration tests of the HTTP API against the real default model.
//!
//! `api` drives the router in-process with `oneshot` (no sockets); `openai_client`
//! binds a real socket and talks to it with the `async-openai` client crate.

mod adapters;
mod api;
mod openai_client;
mod openapi;
mod scheduling;

use std::path::PathBuf;
use std::sync::LazyLock;

use credence_model::llama::Model;
use credence_serve::{AppState, ServeConfig};

/// The SmolLM2-135M-Instruct GGUF: `$CREDENCE_MODEL_GGUF`, else the node's cache.
pub fn model_path() -> PathBuf {
    if let Some(path) = std::env::var_os("CREDENCE_MODEL_GGUF") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("CREDENCE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/credence")))
        .expect("HOME or CREDENCE_HOME must be set");
    let path = home.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} is missing: run `credence models fetch` or scripts/test.sh, or set CREDENCE_MODEL_GGUF",
        path.display()
    );
    path
}

/// A fresh serving state with its own engine thread. Built on a thread of
/// its own so that sync contexts (the shared `LazyLock`) can call it too.
pub fn new_state(config: ServeConfig) -> AppState {
    std::thread::spawn(move || {
        let model = Model::load(&model_path()).expect("the test model loads");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(AppState::new(model, 2, config))
            .expect("engine thread starts")
    })
    .join()
    .expect("state construction does not panic")
}

/// The serving configuration most tests use.
pub fn test_config() -> ServeConfig {
    ServeConfig {
        model_id: "smollm2".into(),
        model_aliases: vec!["default".into()],
        ..ServeConfig::default()
    }
}

/// One state shared by the tests that do not depend on queue behaviour.
pub static SHARED: LazyLock<AppState> = LazyLock::new(|| new_state(test_config()));

/// Sends one JSON request through the router in-process; returns status and body bytes.
pub async fn send(
    state: &AppState,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (axum::http::StatusCode, Vec<u8>) {
    send_with(
        state,
        method,
        path,
        &[("content-type", "application/json")],
        body,
    )
    .await
}

/// Sends one request with the given headers through the router in-process.
pub async fn send_with(
    state: &AppState,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (axum::http::StatusCode, Vec<u8>) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut request = axum::http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(axum::body::Body::from(body))
        .expect("valid request");
    let response = credence_serve::router(state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, bytes.to_vec())
}
