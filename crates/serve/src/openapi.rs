//! The OpenAPI 3.1 description of the HTTP API, served at `GET /openapi.json`.
//!
//! Written by hand next to the handlers; an integration test calls every
//! operation it lists against the real router, so a route that is renamed or
//! removed without updating the document fails the build's tests.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document's text.
pub(crate) const DOCUMENT: &str = include_str!("openapi.json");

pub(crate) async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_is_openapi_3_1_json() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"].as_object().is_some_and(|p| p.len() >= 10));
    }
}
