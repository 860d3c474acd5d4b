//! The OpenAPI document describes the router: every operation it lists is routed.

use axum::http::StatusCode;
use serde_json::Value;

use crate::{SHARED, send_with};

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let (status, bytes) = send_with(&SHARED, "GET", "/openapi.json", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&bytes).expect("JSON");
    let paths = doc["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path.replace("{name}", "no-such-adapter");
        for method in ["get", "post", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let (status, body) = send_with(
                &SHARED,
                &method.to_uppercase(),
                &concrete,
                &[("content-type", "application/json")],
                b"{}".to_vec(),
            )
            .await;
            let code = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_ne!(code.as_deref(), Some("unknown_url"), "{method} {path}");
            checked += 1;
        }
    }
    assert!(checked >= 14, "only {checked} operations documented");
}
