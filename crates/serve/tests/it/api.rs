//! The router driven in-process with `oneshot`.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use credence_serve::{ServeConfig, router};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{SHARED, new_state, test_config};

async fn post(path: &str, body: Value) -> (StatusCode, Vec<u8>) {
    post_raw(&SHARED, path, body.to_string().into_bytes()).await
}

async fn post_raw(
    state: &credence_serve::AppState,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    crate::send(state, "POST", path, body).await
}

async fn get(path: &str) -> (StatusCode, Value) {
    let (status, bytes) = crate::send(&SHARED, "GET", path, Vec::new()).await;
    (status, serde_json::from_slice(&bytes).expect("JSON body"))
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// The `data:` payloads of an SSE body.
fn sse_data(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(str::to_owned)
        .collect()
}

fn assert_error(status: StatusCode, body: &[u8], want: StatusCode, param: Option<&str>) -> Value {
    let body = json(body);
    assert_eq!(status, want, "{body}");
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    match param {
        Some(p) => assert_eq!(error["param"], p, "{body}"),
        None => assert!(error["param"].is_null(), "{body}"),
    }
    body
}

#[tokio::test]
async fn health_and_models_describe_the_node() {
    let (status, body) = get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["model"], "smollm2");

    let (status, body) = get("/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], "smollm2");
    assert_eq!(body["data"][0]["object"], "model");
    assert_eq!(body["data"][0]["context_length"], 8192);
}

#[tokio::test]
async fn completion_returns_text_and_usage() {
    let (status, body) = post(
        "/v1/completions",
        json!({"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}),
    )
    .await;
    let body = json(&body);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("cmpl-"))
    );
    let choice = &body["choices"][0];
    assert!(
        choice["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(["stop", "length"].contains(&choice["finish_reason"].as_str().unwrap_or("")));
    let usage = &body["usage"];
    let (p, c, t) = (
        usage["prompt_tokens"].as_u64(),
        usage["completion_tokens"].as_u64(),
        usage["total_tokens"].as_u64(),
    );
    let (p, c, t) = (
        p.expect("prompt"),
        c.expect("completion"),
        t.expect("total"),
    );
    assert!(p >= 5 && (1..=8).contains(&c) && t == p + c, "{usage}");
}

#[tokio::test]
async fn streamed_completion_matches_the_whole_answer() {
    let request = json!({"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0, "model": "default"});
    let (status, whole) = post("/v1/completions", request.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let whole = json(&whole);

    let mut streamed = request;
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (status, body) = post("/v1/completions", streamed).await;
    assert_eq!(status, StatusCode::OK);
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| json(d.as_bytes()))
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).and_then(|ch| ch["text"].as_str()))
        .collect();
    assert_eq!(
        text,
        whole["choices"][0]["text"].as_str().expect("text"),
        "greedy output is deterministic"
    );
    let finish = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["finish_reason"].as_str())
        .collect::<Vec<_>>();
    assert_eq!(
        finish.len(),
        1,
        "exactly one chunk carries the finish reason"
    );
    let usage_chunk = chunks.last().expect("usage chunk");
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], whole["usage"]);
    let id = &chunks[0]["id"];
    assert!(chunks.iter().all(|c| &c["id"] == id), "one id per answer");
}

#[tokio::test]
async fn chat_stream_announces_the_role_then_streams_content() {
    let (status, body) = post(
        "/v1/chat/completions",
        json!({
            "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2+2?"}],
            "max_completion_tokens": 10, "temperature": 0, "seed": 1, "stream": true
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| json(d.as_bytes()))
        .collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!content.is_empty(), "{chunks:?}");
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "no usage unless asked"
    );
    let last = chunks.last().expect("finish chunk");
    assert!(last["choices"][0]["finish_reason"].is_string());
}

#[tokio::test]
async fn chat_completion_returns_an_assistant_message() {
    let (status, body) = post(
        "/v1/chat/completions",
        json!({"model": "smollm2", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16, "temperature": 0.5, "top_k": 40, "top_p": 0.9, "min_p": 0.05, "repetition_penalty": 1.1, "seed": 7, "stop": ["\n\n"]}),
    )
    .await;
    let body = json(&body);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert!(body["choices"][0]["message"]["content"].is_string());
    assert!(
        !body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("\n\n")
    );
    assert!(
        body["usage"]["prompt_tokens"]
            .as_u64()
            .is_some_and(|n| n > 5)
    );
}

#[tokio::test]
async fn invalid_requests_get_400_naming_the_field() {
    let cases = [
        (json!({"prompt": "x", "temperature": -1}), "temperature"),
        (json!({"prompt": "x", "top_p": 1.5}), "top_p"),
        (json!({"prompt": "x", "max_tokens": "many"}), "max_tokens"),
        (json!({"prompt": "x", "max_tokens": 0}), "max_tokens"),
        (
            json!({"prompt": "x", "frequency_penalty": 0.5}),
            "frequency_penalty",
        ),
        (
            json!({"prompt": "x", "presence_penalty": 1}),
            "presence_penalty",
        ),
        (json!({"prompt": "x", "n": 3}), "n"),
        (json!({"prompt": "x", "echo": true}), "echo"),
        (json!({"prompt": ["a", "b"]}), "prompt"),
        (json!({"prompt": [999999]}), "prompt"),
        (json!({"prompt": ""}), "prompt"),
        (json!({"prompt": "x", "stop": ["", "a"]}), "stop"),
    ];
    for (body, field) in cases {
        let (status, bytes) = post("/v1/completions", body.clone()).await;
        let error = assert_error(status, &bytes, StatusCode::BAD_REQUEST, Some(field));
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
    }
    let chat_cases = [
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}),
            "tools",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "logprobs": true}),
            "logprobs",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}),
            "response_format",
        ),
    ];
    for (body, field) in chat_cases {
        let (status, bytes) = post("/v1/chat/completions", body).await;
        assert_error(status, &bytes, StatusCode::BAD_REQUEST, Some(field));
    }
}

#[tokio::test]
async fn malformed_json_and_missing_fields_are_400() {
    let (status, bytes) = post_raw(&SHARED, "/v1/completions", b"{not json".to_vec()).await;
    assert_error(status, &bytes, StatusCode::BAD_REQUEST, None);
    let (status, bytes) = post("/v1/chat/completions", json!({"model": "smollm2"})).await;
    let body = assert_error(status, &bytes, StatusCode::BAD_REQUEST, None);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("messages"),
        "{body}"
    );
}

#[tokio::test]
async fn too_long_prompts_are_400_context_length_exceeded() {
    let tokens: Vec<u32> = (0..8192).map(|i| 100 + (i % 1000)).collect();
    let (status, bytes) = post("/v1/completions", json!({"prompt": tokens})).await;
    let body = assert_error(status, &bytes, StatusCode::BAD_REQUEST, Some("prompt"));
    assert_eq!(body["error"]["code"], "context_length_exceeded");

    let (status, bytes) = post(
        "/v1/completions",
        json!({"prompt": "hello", "max_tokens": 100_000}),
    )
    .await;
    let body = assert_error(status, &bytes, StatusCode::BAD_REQUEST, Some("prompt"));
    assert_eq!(body["error"]["code"], "context_length_exceeded");
}

#[tokio::test]
async fn unknown_models_and_routes_are_404() {
    let (status, bytes) = post("/v1/completions", json!({"model": "gpt-4", "prompt": "x"})).await;
    let body = assert_error(status, &bytes, StatusCode::NOT_FOUND, Some("model"));
    assert_eq!(body["error"]["code"], "model_not_found");
    let (status, body) = get("/v1/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "unknown_url");
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let padding = "x".repeat(2 << 20);
    let (status, bytes) = post("/v1/completions", json!({"prompt": padding})).await;
    let body = assert_error(status, &bytes, StatusCode::PAYLOAD_TOO_LARGE, None);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("1048576"),
        "{body}"
    );
}

/// A prompt the model keeps continuing: long generations for queue tests.
fn endless_request() -> Value {
    json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,", "max_tokens": 1500, "temperature": 0, "stream": true})
}

#[tokio::test]
async fn a_full_queue_answers_429() {
    let state = new_state(ServeConfig {
        queue_capacity: 1,
        ..test_config()
    });
    let app = router(state.clone());
    let mut held = Vec::new();
    let mut refused = None;
    // At most MAX_BATCH generations run and `queue_capacity` wait, so one of
    // this many requests must be refused, however the engine's steps interleave.
    for _ in 0..credence_serve::engine::MAX_BATCH + 3 {
        let request = Request::post("/v1/completions")
            .body(Body::from(endless_request().to_string()))
            .expect("valid request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::OK);
        held.push(response); // keep the stream open: the generation keeps running
    }
    let response = refused.expect("the queue filled up");
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = assert_error(
        StatusCode::TOO_MANY_REQUESTS,
        &bytes,
        StatusCode::TOO_MANY_REQUESTS,
        None,
    );
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(
        held.len() <= credence_serve::engine::MAX_BATCH + 1,
        "at most a full batch running and one queued"
    );
}

#[tokio::test]
async fn a_dropped_stream_stops_its_generation() {
    let state = new_state(ServeConfig {
        queue_capacity: 4,
        ..test_config()
    });
    let app = router(state.clone());
    let request = Request::post("/v1/completions")
        .body(Body::from(endless_request().to_string()))
        .expect("valid request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    // Wait for the first chunk: the generation is running.
    let first = body.frame().await.expect("a chunk").expect("no error");
    assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
    drop(body);

    // 1500 tokens take far longer than this; the next request only gets the
    // engine this soon if the abandoned generation stopped.
    let started = Instant::now();
    let (status, bytes) = post_raw(
        &state,
        "/v1/completions",
        json!({"prompt": "Hi", "max_tokens": 2, "temperature": 0})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn concurrent_requests_are_batched_without_changing_answers() {
    // A fresh engine, so the concurrent requests share its steps.
    let state = new_state(test_config());
    let prompts = [
        "The capital of France is",
        "1, 2, 3, 4,",
        "Once upon a time",
        "def add(a, b):",
    ];
    let body = |p: &str| {
        json!({"prompt": p, "max_tokens": 12, "temperature": 0})
            .to_string()
            .into_bytes()
    };
    let mut alone = Vec::new();
    for p in prompts {
        let (status, bytes) = post_raw(&state, "/v1/completions", body(p)).await;
        assert_eq!(status, StatusCode::OK);
        alone.push(json(&bytes)["choices"][0]["text"].clone());
    }
    let together = futures_util::future::join_all(
        prompts
            .iter()
            .map(|p| post_raw(&state, "/v1/completions", body(p))),
    )
    .await;
    for ((status, bytes), expected) in together.iter().zip(&alone) {
        assert_eq!(*status, StatusCode::OK);
        assert_eq!(&json(bytes)["choices"][0]["text"], expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_returns_its_kv_blocks() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let state = new_state(test_config());
    let body = json!({"prompt": "Once upon a time", "max_tokens": 400, "temperature": 0, "stream": true, "ignore_eos": true});
    let request = axum::http::Request::post("/v1/completions")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let response = credence_serve::router(state.clone())
        .oneshot(request)
        .await
        .unwrap();
    let mut stream = response.into_body();
    stream.frame().await.unwrap().unwrap();
    assert!(
        state.engine().kv_stats().used_bytes > 0,
        "the running sequence holds blocks"
    );
    drop(stream);
    for _ in 0..200 {
        if state.engine().kv_stats().used_bytes == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("KV blocks still held: {:?}", state.engine().kv_stats());
}

#[tokio::test]
async fn a_prompt_larger_than_the_kv_budget_is_429() {
    let state = new_state(ServeConfig {
        kv_cache_bytes: 1 << 20,
        ..test_config()
    });
    let prompt = "word ".repeat(200);
    let (status, body) = crate::send(
        &state,
        "POST",
        "/v1/completions",
        json!({"prompt": prompt, "max_tokens": 4})
            .to_string()
            .into_bytes(),
    )
    .await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "kv_cache_full");
}
