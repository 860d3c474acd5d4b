//! How JSON-RPC requests reach a chain: in-process to the embedded chain, or
//! over HTTP to any EVM node. Both speak the same JSON, so everything above
//! this module is identical for both.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Chain, Error, Result};

/// One JSON-RPC endpoint.
pub trait Transport: Send + Sync + 'static {
    /// One JSON-RPC call; returns `result`, or [`Error::Rpc`] (code, message,
    /// data as the server sent them) for a JSON-RPC error.
    fn request(&self, method: &str, params: Value) -> Result<Value>;
}

/// The embedded chain, called through [`crate::rpc::handle_body`] so the
/// client exercises exactly the RPC surface external wallets see.
#[derive(Debug, Clone)]
pub struct InProcess {
    chain: Arc<Chain>,
}

impl InProcess {
    /// A transport to `chain`.
    pub fn new(chain: Arc<Chain>) -> Self {
        Self { chain }
    }
}

impl Transport for InProcess {
    fn request(&self, method: &str, params: Value) -> Result<Value> {
        let body = envelope(method, params).to_string();
        let reply = crate::rpc::handle_body(&self.chain, body.as_bytes())
            .ok_or_else(|| Error::BadResponse(format!("{method}: no response")))?;
        unwrap_response(method, reply)
    }
}

/// How long to wait for a connection to an HTTP endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one HTTP request may take in all (a hung node must not hang us).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A JSON-RPC endpoint over plain HTTP (`http://host:port/path`).
#[derive(Debug)]
pub struct Http {
    url: String,
    agent: ureq::Agent,
}

impl Http {
    /// A transport to `url`. Only `http://` is supported: a node's RPC is on
    /// loopback, and remote providers belong behind a local proxy.
    pub fn new(url: &str) -> Result<Self> {
        if !url.starts_with("http://") {
            return Err(Error::Invalid(format!(
                "RPC URL `{url}` must start with http:// (TLS is not built in)"
            )));
        }
        let agent = ureq::Agent::config_builder()
            // JSON-RPC errors come with HTTP 200 or 4xx/5xx depending on the
            // server; the body says what happened, so read it either way.
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            // A proxy from the environment cannot reach a loopback node.
            .proxy(None)
            .build()
            .new_agent();
        Ok(Self {
            url: url.to_owned(),
            agent,
        })
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Transport for Http {
    fn request(&self, method: &str, params: Value) -> Result<Value> {
        let body = envelope(method, params).to_string();
        let mut response = self
            .agent
            .post(&self.url)
            .header("content-type", "application/json")
            .send(body.as_bytes())
            .map_err(|e| Error::Transport(format!("{}: {e}", self.url)))?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| Error::Transport(format!("{}: {e}", self.url)))?;
        let reply: Value = serde_json::from_str(&text).map_err(|_| {
            let start: String = text.chars().take(200).collect();
            Error::Transport(format!(
                "{} answered {status} without JSON: {start}",
                self.url
            ))
        })?;
        unwrap_response(method, reply)
    }
}

fn envelope(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params })
}

/// Splits a response into its result or an [`Error::Rpc`].
fn unwrap_response(method: &str, mut reply: Value) -> Result<Value> {
    if let Some(error) = reply.get_mut("error").map(Value::take) {
        return Err(Error::Rpc {
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("no message")
                .to_owned(),
            data: error.get("data").cloned(),
        });
    }
    match reply.get_mut("result").map(Value::take) {
        Some(result) => Ok(result),
        None => Err(Error::BadResponse(format!(
            "{method}: neither result nor error in {reply}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_code_message_and_data() {
        let e = unwrap_response(
            "eth_call",
            json!({"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"execution reverted","data":"0x01"}}),
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::Rpc { code: 3, message, data: Some(d) } if message == "execution reverted" && d == "0x01"),
            "{e:?}"
        );
        let ok = unwrap_response("x", json!({"jsonrpc":"2.0","id":1,"result":null})).unwrap();
        assert!(ok.is_null());
        assert!(matches!(
            unwrap_response("x", json!({"jsonrpc":"2.0","id":1})),
            Err(Error::BadResponse(_))
        ));
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(Http::new("https://example.com").is_err());
        assert!(Http::new("http://127.0.0.1:8545").is_ok());
    }
}
