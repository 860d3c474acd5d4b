//! Registering, uploading, composing, caching and swapping PEFT adapters over HTTP.

use axum::http::StatusCode;
use credence_model::config::LlamaConfig;
use credence_model::lora::{
    LoadOptions, LoraAdapter, LoraDtype, random_adapter, runtime_file_name,
};
use credence_model::weights::LayerTensor;
use credence_serve::{AppState, ServeConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{new_state, send_with, test_config};

const KEY: &str = "test-key-0123456789";

async fn call(state: &AppState, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer test-key-0123456789"),
    ];
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let (status, bytes) = send_with(state, method, path, &headers, body).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn complete(model: &str) -> Value {
    json!({"model": model, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0})
}

fn text(answer: &Value) -> &str {
    answer["choices"][0]["text"].as_str().unwrap_or_default()
}

fn adapter(state: &AppState, rank: usize, seed: u64) -> LoraAdapter {
    let targets = [
        LayerTensor::Q,
        LayerTensor::V,
        LayerTensor::Up,
        LayerTensor::Down,
    ];
    random_adapter(state.model().config(), rank, &targets, seed)
}

/// A `multipart/form-data` body with the given parts; returns (content type, body).
fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "credence-test-boundary-7f3a";
    let mut body = Vec::new();
    for (name, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                 filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Uploads `adapter` as the two PEFT files; returns status and body.
async fn upload(
    state: &AppState,
    adapter: &LoraAdapter,
    alias: Option<&str>,
) -> (StatusCode, Value) {
    let (config, weights) = adapter.to_peft_bytes().expect("serialisable");
    let mut parts: Vec<(&str, &[u8])> = vec![
        ("adapter_config.json", &config),
        ("adapter_model.safetensors", &weights),
    ];
    if let Some(alias) = alias {
        parts.push(("alias", alias.as_bytes()));
    }
    let (content_type, body) = multipart(&parts);
    let auth = format!("Bearer {KEY}");
    let headers = [
        ("content-type", content_type.as_str()),
        ("authorization", auth.as_str()),
    ];
    let (status, bytes) = send_with(state, "POST", "/v1/adapters", &headers, body).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn keyed(config: ServeConfig) -> ServeConfig {
    ServeConfig {
        api_keys: vec![KEY.to_owned()],
        ..config
    }
}

#[tokio::test]
async fn uploaded_adapters_load_just_in_time_and_persist() {
    let store = tempfile::tempdir().unwrap();
    let config = keyed(ServeConfig {
        adapter_dir: Some(store.path().to_owned()),
        ..test_config()
    });
    let state = new_state(config.clone());
    let tuned = adapter(&state, 8, 7);
    let (status, created) = upload(&state, &tuned, Some("france-v1")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(id, tuned.id());
    assert_eq!(created["resident"], false, "registering does not load");
    // The same content again (here from a directory) is the same adapter.
    let peft = tempfile::tempdir().unwrap();
    tuned.save(peft.path()).unwrap();
    let (status, again) = call(&state, "POST", "/v1/adapters", json!({"path": peft.path()})).await;
    assert_eq!(
        (status, again["id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );

    let (_, models) = call(&state, "GET", "/v1/models", Value::Null).await;
    let names: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        names.contains(&"france-v1") && names.contains(&id.as_str()),
        "{names:?}"
    );

    let (status, base) = call(&state, "POST", "/v1/completions", complete("smollm2")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = call(&state, "POST", "/v1/completions", complete("france-v1")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["model"], "france-v1");
    assert_ne!(text(&answer), text(&base), "the adapter changes the answer");
    let (_, info) = call(&state, "GET", "/v1/adapters/france-v1", Value::Null).await;
    assert_eq!(
        (info["resident"].as_bool(), info["in_use"].as_u64()),
        (Some(true), Some(0))
    );

    // Unload, pin and unpin through the API; metrics show the traffic.
    let (status, info) = call(&state, "POST", "/v1/adapters/france-v1/unload", Value::Null).await;
    assert_eq!(
        (status, info["resident"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let (_, info) = call(&state, "POST", "/v1/adapters/france-v1/pin", Value::Null).await;
    assert_eq!(
        (info["resident"].as_bool(), info["pinned"].as_bool()),
        (Some(true), Some(true))
    );
    let (_, info) = call(&state, "POST", "/v1/adapters/france-v1/unpin", Value::Null).await;
    assert_eq!(info["pinned"], false);
    let (status, metrics) = send_with(&state, "GET", "/metrics", &[], Vec::new()).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert_eq!(status, StatusCode::OK);
    let tokens = &answer["usage"]["completion_tokens"];
    for line in [
        "credence_requests_total{model=\"france-v1\"} 1".to_owned(),
        format!("credence_completion_tokens_total{{model=\"france-v1\"}} {tokens}"),
        "credence_adapter_loads_total 2".to_owned(),
        "credence_adapters_registered 1".to_owned(),
        "credence_adapter_load_seconds_count 2".to_owned(),
    ] {
        assert!(metrics.contains(&line), "missing `{line}` in\n{metrics}");
    }

    // A restarted node serves the same adapter under the same alias.
    let restarted = new_state(config);
    let (status, again) = call(&restarted, "POST", "/v1/completions", complete("france-v1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text(&again), text(&answer));

    let (status, _) = call(&restarted, "DELETE", "/v1/adapters/france-v1", Value::Null).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&restarted, "POST", "/v1/completions", complete("france-v1")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        !store
            .path()
            .join(&id)
            .join("adapter_model.safetensors")
            .exists()
    );
}

#[tokio::test]
async fn write_endpoints_need_a_key() {
    let state = new_state(keyed(test_config()));
    let tuned = adapter(&state, 4, 1);
    let (config, weights) = tuned.to_peft_bytes().unwrap();
    let (content_type, body) = multipart(&[
        ("adapter_config.json", &config),
        ("adapter_model.safetensors", &weights),
    ]);
    for auth in [None, Some("Bearer wrong-key-0123456789"), Some(KEY)] {
        let mut headers = vec![("content-type", content_type.as_str())];
        headers.extend(auth.map(|a| ("authorization", a)));
        let (status, bytes) =
            send_with(&state, "POST", "/v1/adapters", &headers, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        let error: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(error["error"]["code"], "invalid_api_key");
    }
    let (status, _) = upload(&state, &tuned, None).await;
    assert_eq!(status, StatusCode::CREATED);
    for path in ["/v1/adapters", "/v1/models", "/metrics"] {
        let (status, _) = send_with(&state, "GET", path, &[], Vec::new()).await;
        assert_eq!(status, StatusCode::OK, "{path} is open for reading");
    }
    let (status, _) = send_with(
        &state,
        "DELETE",
        &format!("/v1/adapters/{}", tuned.id()),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_uploads_are_refused_clearly() {
    let state = new_state(keyed(test_config()));
    let other = LlamaConfig {
        intermediate_size: 64,
        ..credence_model::testing::tiny_config(32)
    };
    let (status, body) = upload(
        &state,
        &random_adapter(&other, 4, &[LayerTensor::Q], 1),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_adapter");

    let (config, weights) = adapter(&state, 4, 2).to_peft_bytes().unwrap();
    let corrupt = &weights[..weights.len() / 2];
    let (content_type, body) = multipart(&[
        ("adapter_config.json", &config),
        ("adapter_model.safetensors", corrupt),
    ]);
    let auth = format!("Bearer {KEY}");
    let headers = [
        ("content-type", content_type.as_str()),
        ("authorization", auth.as_str()),
    ];
    let (status, _) = send_with(&state, "POST", "/v1/adapters", &headers, body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (content_type, body) = multipart(&[("adapter_config.json", &config)]);
    let headers = [
        ("content-type", content_type.as_str()),
        ("authorization", auth.as_str()),
    ];
    let (status, bytes) = send_with(&state, "POST", "/v1/adapters", &headers, body).await;
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (status, error["error"]["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("adapter_model.safetensors"))
    );

    let (status, _) = call(
        &state,
        "POST",
        "/v1/adapters",
        json!({"path": "/nonexistent"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = upload(&state, &adapter(&state, 4, 3), Some("a/b")).await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("alias"))
    );
    let (status, _) = call(&state, "POST", "/v1/adapters/nope/load", Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn weighted_compositions_are_served_and_checked() {
    let state = new_state(keyed(test_config()));
    let (a, b) = (adapter(&state, 8, 11), adapter(&state, 4, 12));
    assert_eq!(upload(&state, &a, Some("a")).await.0, StatusCode::CREATED);
    assert_eq!(upload(&state, &b, Some("b")).await.0, StatusCode::CREATED);
    let ask = |adapters: Value| {
        let mut body = complete("smollm2");
        body["adapters"] = adapters;
        body
    };
    let (status, mixed) = call(
        &state,
        "POST",
        "/v1/completions",
        ask(json!([{"id": "a", "weight": 0.5}, {"id": b.id(), "weight": 0.7}])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{mixed}");
    assert_eq!(mixed["model"], "smollm2");
    let (_, alone) = call(&state, "POST", "/v1/completions", complete("a")).await;
    let (_, unit) = call(
        &state,
        "POST",
        "/v1/completions",
        ask(json!([{"id": "a", "weight": 1.0}])),
    )
    .await;
    assert_eq!(text(&unit), text(&alone), "weight 1 is the adapter itself");

    let cases = [
        (
            ask(json!([{"id": "a", "weight": 1e9}])),
            StatusCode::BAD_REQUEST,
            "adapters[0].weight",
        ),
        (
            ask(json!([{"id": "a", "weight": 1}, {"id": "a", "weight": 1}])),
            StatusCode::BAD_REQUEST,
            "adapters[1].id",
        ),
        (
            ask(json!([{"id": "a", "weight": 1}, {"id": "zzz", "weight": 1}])),
            StatusCode::NOT_FOUND,
            "adapters[1].id",
        ),
        (ask(json!([])), StatusCode::BAD_REQUEST, "adapters"),
        (
            ask(json!([{"id": "a"}])),
            StatusCode::BAD_REQUEST,
            "adapters[0]",
        ),
    ];
    for (body, want, param) in cases {
        let (status, error) = call(&state, "POST", "/v1/completions", body.clone()).await;
        assert_eq!(status, want, "{body} → {error}");
        assert!(
            error["error"]["param"]
                .as_str()
                .is_some_and(|p| p.starts_with(param)),
            "{error}"
        );
    }
    let mut on_adapter = ask(json!([{"id": "b", "weight": 1}]));
    on_adapter["model"] = json!("a");
    let (status, _) = call(&state, "POST", "/v1/completions", on_adapter).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Starts a streamed completion and waits for its first chunk; the returned
/// body keeps the request running until dropped.
async fn start_stream(state: &AppState, model: &str, max_tokens: usize) -> axum::body::Body {
    let body = json!({"model": model, "prompt": "Once upon a time", "max_tokens": max_tokens, "temperature": 0, "stream": true, "ignore_eos": true});
    let request = axum::http::Request::post("/v1/completions")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .expect("valid request");
    let response = credence_serve::router(state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    body.frame()
        .await
        .expect("a first chunk")
        .expect("readable");
    body
}

/// Reads a whole SSE body and concatenates the completion text deltas.
async fn stream_text(body: axum::body::Body) -> String {
    let bytes = body.collect().await.expect("readable").to_bytes();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["text"].as_str().map(str::to_owned))
        .collect()
}

async fn wait_until_unused(state: &AppState, name: &str) {
    for _ in 0..200 {
        let (_, info) = call(state, "GET", &format!("/v1/adapters/{name}"), Value::Null).await;
        if info["in_use"] == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{name} is still in use");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_never_drops_an_adapter_in_use() {
    let first = {
        let probe = new_state(test_config());
        adapter(&probe, 8, 21)
    };
    // Room for exactly one adapter of this size.
    let state = new_state(keyed(ServeConfig {
        adapter_cache_bytes: first.resident_bytes_as(test_config().adapter_dtype),
        ..test_config()
    }));
    let second = adapter(&state, 8, 22);
    upload(&state, &first, Some("first")).await;
    upload(&state, &second, Some("second")).await;

    let running = start_stream(&state, "first", 400).await;
    let (status, error) = call(&state, "POST", "/v1/completions", complete("second")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{error}");
    assert_eq!(error["error"]["code"], "adapter_cache_full");
    let (_, info) = call(&state, "GET", "/v1/adapters/first", Value::Null).await;
    assert_eq!(
        (info["resident"].as_bool(), info["in_use"].as_u64()),
        (Some(true), Some(1))
    );

    drop(running); // the client goes away: its sequence ends and lets go
    wait_until_unused(&state, "first").await;
    let (status, _) = call(&state, "POST", "/v1/completions", complete("second")).await;
    assert_eq!(status, StatusCode::OK);
    let (_, info) = call(&state, "GET", "/v1/adapters/first", Value::Null).await;
    assert_eq!(
        info["resident"], false,
        "the idle adapter was evicted for the new one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repointing_an_alias_leaves_running_requests_alone() {
    let state = new_state(keyed(test_config()));
    let (v1, v2) = (adapter(&state, 8, 31), adapter(&state, 8, 32));
    upload(&state, &v1, Some("bot")).await;
    let mut expected = complete("bot");
    expected["max_tokens"] = json!(24);
    expected["prompt"] = json!("Once upon a time");
    expected["ignore_eos"] = json!(true);
    let (_, v1_answer) = call(&state, "POST", "/v1/completions", expected.clone()).await;

    let running = start_stream(&state, "bot", 24).await;
    let (status, info) = upload(&state, &v2, Some("bot")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(info["aliases"], json!(["bot"]));
    let (_, old) = call(
        &state,
        "GET",
        &format!("/v1/adapters/{}", v1.id()),
        Value::Null,
    )
    .await;
    assert_eq!(old["aliases"], json!([]));

    let rest = stream_text(running).await;
    assert!(
        text(&v1_answer).ends_with(&rest) && !rest.is_empty(),
        "the running stream kept v1: {rest:?} vs {:?}",
        text(&v1_answer)
    );
    let (_, v2_answer) = call(&state, "POST", "/v1/completions", expected).await;
    assert_ne!(text(&v2_answer), text(&v1_answer), "new requests get v2");
}

#[tokio::test]
async fn oversized_uploads_are_413() {
    let state = new_state(keyed(ServeConfig {
        max_adapter_upload_bytes: 64 << 10,
        ..test_config()
    }));
    let (status, body) = upload(&state, &adapter(&state, 8, 5), None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("65536")),
        "{body}"
    );
}

/// Waits (up to five seconds) for the background rewrite of a runtime file.
async fn wait_for_runtime(file: &std::path::Path, dir: &std::path::Path, base: &LlamaConfig) {
    let options = LoadOptions::held_as(test_config().adapter_dtype);
    for _ in 0..100 {
        if LoraAdapter::load_runtime(dir, file, base, &options).is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{} was not rewritten", file.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_files_are_derived_and_rebuilt_when_missing_or_corrupt() {
    let store = tempfile::tempdir().unwrap();
    let state = new_state(keyed(ServeConfig {
        adapter_dir: Some(store.path().to_owned()),
        ..test_config()
    }));
    let base = state.model().config().clone();
    let (status, created) = upload(&state, &adapter(&state, 8, 31), Some("derived")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let dir = store.path().join(&id);
    let runtime = dir.join(runtime_file_name(&base, test_config().adapter_dtype));
    assert!(runtime.exists(), "registration writes the runtime file");
    let (_, first) = call(&state, "POST", "/v1/completions", complete("derived")).await;

    // Corrupt, then missing: each load falls back to the PEFT files, answers
    // the same, and the runtime file is written again.
    for damage in ["corrupt", "missing"] {
        match damage {
            "corrupt" => std::fs::write(&runtime, b"not a safetensors file").unwrap(),
            _ => std::fs::remove_file(&runtime).unwrap(),
        }
        let (status, _) = call(&state, "POST", "/v1/adapters/derived/unload", Value::Null).await;
        assert_eq!(status, StatusCode::OK);
        let (status, again) = call(&state, "POST", "/v1/completions", complete("derived")).await;
        assert_eq!(status, StatusCode::OK, "{damage}: {again}");
        assert_eq!(text(&again), text(&first), "{damage}");
        wait_for_runtime(&runtime, &dir, &base).await;
    }

    // Runtime files left by nodes run with other dtypes go too.
    let others = [LoraDtype::F32, LoraDtype::Q8].map(|d| dir.join(runtime_file_name(&base, d)));
    for other in &others {
        assert_ne!(other, &runtime);
        std::fs::write(other, b"written by another node").unwrap();
    }
    let (status, _) = call(&state, "DELETE", "/v1/adapters/derived", Value::Null).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        !runtime.exists(),
        "deleting an adapter deletes its runtime file"
    );
    assert!(others.iter().all(|o| !o.exists()), "and any other dtype's");
    assert!(!dir.exists(), "and the directory they were in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_q8_node_holds_bytes_and_reloads_them_from_its_runtime_file() {
    let store = tempfile::tempdir().unwrap();
    let state = new_state(keyed(ServeConfig {
        adapter_dir: Some(store.path().to_owned()),
        adapter_dtype: LoraDtype::Q8,
        ..test_config()
    }));
    let base = state.model().config().clone();
    let (status, created) = upload(&state, &adapter(&state, 8, 32), Some("bytes")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let dir = store.path().join(created["id"].as_str().unwrap());
    let runtime = dir.join(runtime_file_name(&base, LoraDtype::Q8));
    let options = LoadOptions::held_as(LoraDtype::Q8);
    let held = LoraAdapter::load_runtime(&dir, &runtime, &base, &options).unwrap();
    assert_eq!(held.dtype(), LoraDtype::Q8);
    let (status, first) = call(&state, "POST", "/v1/completions", complete("bytes")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, _) = call(&state, "POST", "/v1/adapters/bytes/unload", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    let (_, again) = call(&state, "POST", "/v1/completions", complete("bytes")).await;
    assert_eq!(text(&again), text(&first), "reloaded from the runtime file");
}
