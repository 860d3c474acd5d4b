//! The one place where datanet errors become HTTP responses.
//!
//! Bodies use the same envelope as the OpenAI-compatible API:
//! `{"error": {"message", "type", "param", "code"}}`. Internal failures are
//! logged with their detail and reported only generically.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::Error;

/// A datanet error on its way to an HTTP client.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

/// The HTTP status, error `type` and machine-readable `code` for an error.
pub fn classify(error: &Error) -> (StatusCode, &'static str, &'static str) {
    use StatusCode as S;
    match error {
        Error::NotFound { .. } => (S::NOT_FOUND, "invalid_request_error", "not_found"),
        Error::Invalid { .. } => (S::BAD_REQUEST, "invalid_request_error", "invalid_field"),
        Error::BadSignature(_) => (S::UNAUTHORIZED, "authentication_error", "bad_signature"),
        Error::WrongSigner { .. } => (S::UNAUTHORIZED, "authentication_error", "wrong_signer"),
        Error::Forbidden { .. } => (S::FORBIDDEN, "permission_error", "forbidden"),
        Error::TooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "invalid_request_error", "too_large"),
        Error::Rejected { .. } => (
            S::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
            "contribution_rejected",
        ),
        Error::Conflict(_) => (S::CONFLICT, "invalid_request_error", "conflict"),
        // A client that stops sending mid-upload is the client's problem.
        Error::Io(_) => (S::BAD_REQUEST, "invalid_request_error", "read_failed"),
        Error::Store(_) | Error::Internal(_) => {
            (S::INTERNAL_SERVER_ERROR, "server_error", "internal")
        }
    }
}

#[derive(Debug, Serialize)]
struct Envelope {
    error: Detail,
}

#[derive(Debug, Serialize)]
struct Detail {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<String>,
    code: &'static str,
    /// Line-level problems of a rejected contribution.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lines: Vec<crate::ingest::LineError>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, code) = classify(&self.0);
        let message = if status.is_server_error() {
            tracing::error!(error = %self.0, "datanet request failed");
            "internal server error".to_owned()
        } else {
            self.0.to_string()
        };
        let param = match &self.0 {
            Error::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        };
        let lines = match self.0 {
            Error::Rejected { lines, .. } => lines,
            _ => Vec::new(),
        };
        let body = Envelope {
            error: Detail {
                message,
                kind,
                param,
                code,
                lines,
            },
        };
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins every variant's status: clients branch on them.
    #[test]
    fn every_error_has_a_stable_status() {
        let store = credence_store::Error::BlobNotFound("x".into());
        let cases = [
            (Error::not_found("datanet", "x"), 404),
            (Error::invalid("name", "bad"), 400),
            (Error::BadSignature("v".into()), 401),
            (
                Error::WrongSigner {
                    claimed: "a".into(),
                    recovered: "b".into(),
                },
                401,
            ),
            (
                Error::Forbidden {
                    address: "a".into(),
                    action: "read",
                    datanet: "d".into(),
                },
                403,
            ),
            (
                Error::TooLarge {
                    what: "file",
                    limit: 1,
                },
                413,
            ),
            (
                Error::Rejected {
                    reason: "r".into(),
                    lines: vec![],
                },
                422,
            ),
            (Error::Conflict("c".into()), 409),
            (Error::Io(std::io::Error::other("eof")), 400),
            (Error::Store(store), 500),
            (Error::Internal("bug".into()), 500),
        ];
        for (error, status) in cases {
            assert_eq!(classify(&error).0.as_u16(), status, "{error:?}");
        }
    }
}
