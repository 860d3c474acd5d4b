//! Registering PEFT adapters and generating with them over HTTP.

use axum::http::StatusCode;
use credence_model::config::LlamaConfig;
use credence_model::lora::random_adapter;
use credence_model::weights::LayerTensor;
use credence_serve::{AppState, ServeConfig};
use serde_json::{Value, json};

use crate::{new_state, test_config};

async fn call(state: &AppState, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let (status, bytes) = crate::send(state, method, path, body.to_string().into_bytes()).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn complete(model: &str) -> Value {
    json!({"model": model, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0})
}

#[tokio::test]
async fn registered_adapters_serve_requests_and_persist() {
    let store = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        adapter_dir: Some(store.path().to_owned()),
        ..test_config()
    };
    let state = new_state(config.clone());
    let base_config = state.model().config().clone();
    let peft = tempfile::tempdir().unwrap();
    let all = [
        LayerTensor::Q,
        LayerTensor::V,
        LayerTensor::Up,
        LayerTensor::Down,
    ];
    random_adapter(&base_config, 8, &all, 7)
        .save(peft.path())
        .unwrap();

    let body = json!({"path": peft.path(), "alias": "france-v1"});
    let (status, created) = call(&state, "POST", "/v1/adapters", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    // The same content again is the same adapter.
    let (status, again) = call(&state, "POST", "/v1/adapters", body).await;
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
    let (status, tuned) = call(&state, "POST", "/v1/completions", complete("france-v1")).await;
    assert_eq!(status, StatusCode::OK, "{tuned}");
    assert_eq!(tuned["model"], "france-v1");
    assert_ne!(
        tuned["choices"][0]["text"], base["choices"][0]["text"],
        "the adapter changes the answer"
    );

    // A restarted node serves the same adapter under the same alias.
    let restarted = new_state(config);
    let (status, again) = call(&restarted, "POST", "/v1/completions", complete("france-v1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["choices"][0]["text"], tuned["choices"][0]["text"]);

    let (status, _) = call(&restarted, "DELETE", "/v1/adapters/france-v1", Value::Null).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&restarted, "POST", "/v1/completions", complete("france-v1")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_adapter_for_another_model_is_422() {
    let state = new_state(test_config());
    let other = LlamaConfig {
        intermediate_size: 64,
        ..credence_model::testing::tiny_config(32)
    };
    let peft = tempfile::tempdir().unwrap();
    random_adapter(&other, 4, &[LayerTensor::Q], 1)
        .save(peft.path())
        .unwrap();
    let (status, body) = call(&state, "POST", "/v1/adapters", json!({"path": peft.path()})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_adapter");
    let (status, body) = call(
        &state,
        "POST",
        "/v1/adapters",
        json!({"path": "/nonexistent"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = call(
        &state,
        "POST",
        "/v1/adapters",
        json!({"path": peft.path(), "alias": "a/b"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}
