//! A blocking HTTP client for a running node's API, used by `credence
//! adapter …` and `credence chat`.
//!
//! It speaks plain HTTP (a node listens on loopback by default; TLS belongs
//! in a reverse proxy in front of it), sends the API key as
//! `Authorization: Bearer <key>`, turns the node's OpenAI-style error bodies
//! into [`ClientError::Http`] and reads streamed chat answers as server-sent
//! events. The multipart upload body is built here rather than through an
//! HTTP library feature, which would pull in MIME guessing and a random
//! number crate for two fixed parts.

use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use credence_model::lora::{CONFIG_FILE, WEIGHTS_FILE};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use ureq::http::Response;

use crate::config::credence_home;
use crate::keys;

/// Where a node listens by default (see [`crate::config::DEFAULT_LISTEN`]).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// How long to wait for a connection; generation itself has no time limit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most characters of a non-JSON error body quoted in an error message.
const QUOTED_BODY_CHARS: usize = 300;

/// Everything talking to a node can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing accepts connections at the URL.
    #[error(
        "cannot connect to the node at {url}: is the node running? start it with `credence node`"
    )]
    NotRunning {
        /// The node's base URL.
        url: String,
    },
    /// The node answered with an error status.
    #[error("the node answered {status}: {message}{}{}", code_suffix(.code), status_hint(*.status))]
    Http {
        /// The HTTP status.
        status: u16,
        /// The server's `error.message` (or the start of its body).
        message: String,
        /// The server's `error.code`, e.g. `invalid_api_key`.
        code: Option<String>,
    },
    /// A streamed answer reported an error after it had started.
    #[error("the node failed while answering: {message}{}", code_suffix(.code))]
    Stream {
        /// The server's `error.message`.
        message: String,
        /// The server's `error.code`.
        code: Option<String>,
    },
    /// The node's answer is not what the API promises.
    #[error("unexpected response from the node: {0}")]
    BadResponse(String),
    /// The connection failed in another way (name lookup, reset, timeout).
    #[error("request to {url} failed")]
    Transport {
        /// The request URL.
        url: String,
        /// The HTTP library's error.
        source: ureq::Error,
    },
    /// The base URL cannot be used.
    #[error("invalid node URL `{url}`: {problem}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A local file (an adapter to upload) could not be read.
    #[error("cannot read {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The API key could not be found or is malformed.
    #[error(transparent)]
    Key(#[from] crate::Error),
}

impl ClientError {
    /// The HTTP status of an [`ClientError::Http`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's error code, if it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Http { code, .. } | Self::Stream { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref()
        .map_or_else(String::new, |c| format!(" [{c}]"))
}

/// What to do about a status the user can fix locally.
fn status_hint(status: u16) -> &'static str {
    match status {
        401 => {
            "; pass the node's key with --api-key or CREDENCE_API_KEY \
             (a node without configured keys keeps it in <home>/api-key)"
        }
        _ => "",
    }
}

/// Result alias for the client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Where the node is and how to authenticate, as `--flags` (global, so they
/// may follow a subcommand) with environment fallbacks.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ClientConfig {
    /// Base URL of the node's HTTP API.
    #[arg(long, env = "CREDENCE_URL", default_value = DEFAULT_URL, global = true)]
    pub url: String,
    /// API key for write endpoints [default: the key in <home>/api-key].
    #[arg(
        long,
        env = "CREDENCE_API_KEY",
        hide_env_values = true,
        value_name = "KEY",
        global = true
    )]
    pub api_key: Option<String>,
    /// Data directory holding the node's api-key file [default: $HOME/.cache/credence].
    #[arg(long, env = "CREDENCE_HOME", global = true)]
    pub home: Option<PathBuf>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.to_owned(),
            api_key: None,
            home: None,
        }
    }
}

/// A registered adapter as the node describes it.
///
/// Unknown fields are kept in `extra`, so re-serialising prints everything
/// the node sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adapter {
    /// Content id (SHA-256, 64 hex digits).
    pub id: String,
    /// Aliases pointing at it.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Adapted projections.
    #[serde(default)]
    pub modules: usize,
    /// Smallest LoRA rank among them.
    #[serde(default)]
    pub min_rank: usize,
    /// Largest LoRA rank among them.
    #[serde(default)]
    pub max_rank: usize,
    /// Bytes its factors take in RAM.
    #[serde(default)]
    pub bytes: u64,
    /// Unix seconds when it was registered.
    #[serde(default)]
    pub created: u64,
    /// Decoded in the node's RAM cache now.
    #[serde(default)]
    pub resident: bool,
    /// Exempt from eviction.
    #[serde(default)]
    pub pinned: bool,
    /// Requests using it now.
    #[serde(default)]
    pub in_use: usize,
    /// Fields this client does not know (e.g. `object`).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// The answer to an upload.
#[derive(Debug, Clone, PartialEq)]
pub struct AddedAdapter {
    /// The adapter.
    pub adapter: Adapter,
    /// Whether it is new (`false`: the same content was already registered).
    pub created: bool,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_owned(),
            content: content.into(),
        }
    }
}

/// One member of a weighted adapter composition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdapterWeight {
    /// Adapter id or alias.
    pub id: String,
    /// Factor on its update (1 applies it as trained).
    pub weight: f32,
}

/// Generation options of a chat request; `None` leaves the node's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatParams {
    /// Most tokens to generate.
    pub max_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy).
    pub temperature: Option<f32>,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
    /// A weighted composition on the base model (Credence extension); empty
    /// for none.
    pub adapters: Vec<AdapterWeight>,
}

/// A finished (or deliberately abandoned) streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatReply {
    /// Every delta, concatenated.
    pub text: String,
    /// Why generation ended (`stop`, `length`), when the node said.
    pub finish_reason: Option<String>,
    /// Whether the caller's callback stopped reading before the end.
    pub abandoned: bool,
    /// The receipt the node recorded for a paid call.
    pub receipt: Option<String>,
}

/// The `/v1/chat/completions` body this client sends.
#[derive(Serialize)]
struct ChatBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    messages: &'a [ChatMessage],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    adapters: &'a [AdapterWeight],
}

/// A blocking client for one node.
#[derive(Debug, Clone)]
pub struct NodeClient {
    agent: ureq::Agent,
    base: String,
    api_key: Option<String>,
    /// A signed voucher sent with generation requests (paid calls).
    voucher: Option<String>,
}

impl NodeClient {
    /// A client for the node at `url` (`http://host:port`), sending `api_key`
    /// on every request when given.
    pub fn new(url: &str, api_key: Option<String>) -> Result<Self> {
        let base = check_url(url)?;
        let mut config = ureq::Agent::config_builder()
            // Error statuses carry the node's explanation in the body; read it ourselves.
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .user_agent(concat!("credence/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&base) {
            // An HTTP(S)_PROXY from the environment cannot reach this machine's loopback.
            config = config.proxy(None);
        }
        Ok(Self {
            agent: config.build().new_agent(),
            base,
            api_key,
            voucher: None,
        })
    }

    /// This client with `voucher` (the `x-credence-voucher` header value)
    /// attached to every generation request.
    pub fn with_voucher(mut self, voucher: Option<String>) -> Self {
        self.voucher = voucher;
        self
    }

    /// A client from flags: the explicit key, else the key file under the
    /// data directory, else none (reads and chat still work).
    pub fn from_config(config: &ClientConfig) -> Result<Self> {
        let explicit = config
            .api_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty());
        let key = match explicit {
            Some(key) if keys::is_valid_key(key) => Some(key.to_owned()),
            Some(_) => {
                return Err(crate::Error::config(
                    "api_key",
                    "must be 16–256 printable ASCII characters without spaces",
                )
                .into());
            }
            None => local_key(config.home.as_deref())?,
        };
        Self::new(&config.url, key)
    }

    /// The node's base URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Uploads the PEFT adapter in `dir` (`adapter_config.json` and
    /// `adapter_model.safetensors`), optionally under `alias`.
    pub fn add_adapter(&self, dir: &Path, alias: Option<&str>) -> Result<AddedAdapter> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| ClientError::File { path, source })
        };
        let config = read(CONFIG_FILE)?;
        let weights = read(WEIGHTS_FILE)?;
        let mut parts = vec![
            Part::file(CONFIG_FILE, "application/json", &config),
            Part::file(WEIGHTS_FILE, "application/octet-stream", &weights),
        ];
        if let Some(alias) = alias {
            parts.push(Part::text("alias", alias));
        }
        let (boundary, body) = multipart_body(&parts);
        let url = self.endpoint("/v1/adapters");
        let request = self
            .authorized(self.agent.post(&url))
            .content_type(format!("multipart/form-data; boundary={boundary}"))
            // The node refuses a bad key before reading the body; without this it
            // would close the socket mid-upload and the 401 would be lost.
            .header("Expect", "100-continue");
        let response = expect_success(&url, request.send(body))?;
        let created = response.status().as_u16() == 201;
        let adapter = read_json(&url, response)?;
        Ok(AddedAdapter { adapter, created })
    }

    /// Every registered adapter.
    pub fn list_adapters(&self) -> Result<Vec<Adapter>> {
        #[derive(Deserialize)]
        struct List {
            data: Vec<Adapter>,
        }
        let url = self.endpoint("/v1/adapters");
        let response = expect_success(&url, self.authorized(self.agent.get(&url)).call())?;
        Ok(read_json::<List>(&url, response)?.data)
    }

    /// One adapter, by id or alias.
    pub fn get_adapter(&self, name: &str) -> Result<Adapter> {
        let url = self.adapter_url(name, "");
        let response = expect_success(&url, self.authorized(self.agent.get(&url)).call())?;
        read_json(&url, response)
    }

    /// Unregisters an adapter, its aliases and its files.
    pub fn remove_adapter(&self, name: &str) -> Result<()> {
        let url = self.adapter_url(name, "");
        expect_success(&url, self.authorized(self.agent.delete(&url)).call())?;
        Ok(())
    }

    /// Loads an adapter into the node's RAM cache now.
    pub fn load_adapter(&self, name: &str) -> Result<Adapter> {
        self.adapter_action(name, "load")
    }

    /// Drops an adapter from the node's RAM cache.
    pub fn unload_adapter(&self, name: &str) -> Result<Adapter> {
        self.adapter_action(name, "unload")
    }

    /// Loads an adapter and exempts it from eviction.
    pub fn pin_adapter(&self, name: &str) -> Result<Adapter> {
        self.adapter_action(name, "pin")
    }

    /// Makes an adapter evictable again.
    pub fn unpin_adapter(&self, name: &str) -> Result<Adapter> {
        self.adapter_action(name, "unpin")
    }

    /// Streams the answer to `messages` from `model` (an adapter id or alias,
    /// or the base model when `None`), calling `on_delta` with each piece of
    /// text as it arrives. Returning `Break` from `on_delta` stops reading
    /// (the connection is dropped, which ends the generation on the node).
    pub fn chat_stream(
        &self,
        model: Option<&str>,
        messages: &[ChatMessage],
        params: &ChatParams,
        on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<ChatReply> {
        let body = ChatBody {
            model,
            messages,
            stream: true,
            max_tokens: params.max_tokens,
            temperature: params.temperature,
            seed: params.seed,
            adapters: &params.adapters,
        };
        let json = serde_json::to_vec(&body)
            .map_err(|e| ClientError::BadResponse(format!("cannot encode the request: {e}")))?;
        let url = self.endpoint("/v1/chat/completions");
        let mut request = self
            .authorized(self.agent.post(&url))
            .content_type("application/json");
        if let Some(voucher) = &self.voucher {
            request = request.header(credence_settle::VOUCHER_HEADER, voucher);
        }
        let response = expect_success(&url, request.send(json))?;
        let receipt = response
            .headers()
            .get(credence_serve::billing::RECEIPT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let events = SseEvents::new(BufReader::new(response.into_body().into_reader()));
        let mut reply = read_chat_stream(events, on_delta)?;
        reply.receipt = receipt;
        Ok(reply)
    }

    /// `GET path`, decoded.
    pub(crate) fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = self.endpoint(path);
        let response = expect_success(&url, self.authorized(self.agent.get(&url)).call())?;
        read_json(&url, response)
    }

    /// `POST path` with an empty body, decoded.
    pub(crate) fn post_empty<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = self.endpoint(path);
        let response = expect_success(&url, self.authorized(self.agent.post(&url)).send_empty())?;
        read_json(&url, response)
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `/v1/adapters/{name}` plus `suffix`, with the name percent-encoded.
    fn adapter_url(&self, name: &str, suffix: &str) -> String {
        format!("{}/v1/adapters/{}{suffix}", self.base, encode_segment(name))
    }

    fn adapter_action(&self, name: &str, action: &str) -> Result<Adapter> {
        let url = self.adapter_url(name, &format!("/{action}"));
        let response = expect_success(&url, self.authorized(self.agent.post(&url)).send_empty())?;
        read_json(&url, response)
    }

    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.api_key {
            Some(key) => request.header("Authorization", format!("Bearer {key}")),
            None => request,
        }
    }
}

/// The key in `<home>/api-key`, if a data directory and the file exist.
fn local_key(home: Option<&Path>) -> Result<Option<String>> {
    // Without any data directory there is simply no local key; reads need none.
    let Ok(home) = credence_home(home) else {
        return Ok(None);
    };
    Ok(keys::read_key(&home)?)
}

/// Validates `url` and strips trailing slashes.
fn check_url(url: &str) -> Result<String> {
    let invalid = |problem| ClientError::InvalidUrl {
        url: url.to_owned(),
        problem,
    };
    let base = url.trim().trim_end_matches('/');
    if base.starts_with("https://") {
        return Err(invalid(
            "https is not supported; use http:// (put TLS in a reverse proxy in front of the node)",
        ));
    }
    let Some(authority) = base.strip_prefix("http://") else {
        return Err(invalid(
            "must start with http://, e.g. http://127.0.0.1:8080",
        ));
    };
    if authority.is_empty() || authority.starts_with('/') {
        return Err(invalid("names no host"));
    }
    Ok(base.to_owned())
}

/// Whether the URL's host is this machine's loopback interface.
fn is_loopback(base: &str) -> bool {
    let authority = base
        .strip_prefix("http://")
        .unwrap_or(base)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a name
/// can never change the path it is put in.
fn encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Passes a 2xx response through; turns anything else into a [`ClientError`].
fn expect_success(
    url: &str,
    result: std::result::Result<Response<ureq::Body>, ureq::Error>,
) -> Result<Response<ureq::Body>> {
    let mut response = result.map_err(|e| transport_error(url, e))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(response);
    }
    // A body that cannot be read still leaves the status to report.
    let body = response.body_mut().read_to_string().unwrap_or_default();
    Err(http_error(status, &body))
}

fn transport_error(url: &str, error: ureq::Error) -> ClientError {
    let refused = match &error {
        ureq::Error::Io(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        ureq::Error::ConnectionFailed => true,
        _ => false,
    };
    if refused {
        let base = url.split("/v1/").next().unwrap_or(url);
        ClientError::NotRunning {
            url: base.to_owned(),
        }
    } else {
        ClientError::Transport {
            url: url.to_owned(),
            source: error,
        }
    }
}

/// `error.message` and `error.code` of an OpenAI-style error body.
fn error_fields(value: &Value) -> Option<(String, Option<String>)> {
    let error = value.get("error")?;
    let message = match error.get("message").and_then(Value::as_str) {
        Some(message) => message.to_owned(),
        None => error.as_str()?.to_owned(),
    };
    let code = error.get("code").and_then(Value::as_str).map(str::to_owned);
    Some((message, code))
}

/// An error status with the node's explanation, or the start of whatever it sent.
fn http_error(status: u16, body: &str) -> ClientError {
    let parsed = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| error_fields(&v));
    let (message, code) = parsed.unwrap_or_else(|| {
        let text: String = body.trim().chars().take(QUOTED_BODY_CHARS).collect();
        let message = if text.is_empty() {
            "no explanation in the response".to_owned()
        } else {
            text
        };
        (message, None)
    });
    ClientError::Http {
        status,
        message,
        code,
    }
}

fn read_json<T: serde::de::DeserializeOwned>(
    url: &str,
    mut response: Response<ureq::Body>,
) -> Result<T> {
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| transport_error(url, e))?;
    serde_json::from_str(&body)
        .map_err(|e| ClientError::BadResponse(format!("{url} sent malformed JSON: {e}")))
}

/// Reads `chat.completion.chunk` events until `[DONE]`.
fn read_chat_stream(
    events: impl Iterator<Item = std::io::Result<String>>,
    on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
) -> Result<ChatReply> {
    let mut reply = ChatReply {
        text: String::new(),
        finish_reason: None,
        abandoned: false,
        receipt: None,
    };
    for event in events {
        let data = event.map_err(|e| ClientError::BadResponse(format!("stream broke: {e}")))?;
        if data == "[DONE]" {
            return Ok(reply);
        }
        let chunk: Value = serde_json::from_str(&data).map_err(|e| {
            ClientError::BadResponse(format!("a stream event is not JSON ({e}): {data}"))
        })?;
        if let Some((message, code)) = error_fields(&chunk) {
            return Err(ClientError::Stream { message, code });
        }
        let choice = chunk.pointer("/choices/0");
        if let Some(reason) = choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
        {
            reply.finish_reason = Some(reason.to_owned());
        }
        let delta = choice
            .and_then(|c| c.pointer("/delta/content"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !delta.is_empty() {
            reply.text.push_str(delta);
            if on_delta(delta).is_break() {
                reply.abandoned = true;
                return Ok(reply);
            }
        }
    }
    Err(ClientError::BadResponse(
        "the stream ended before `data: [DONE]`".into(),
    ))
}

/// The `data` of each server-sent event, multi-line data joined with `\n`.
/// Comments (keep-alives) and other fields are skipped; an event cut off by
/// the end of the stream is dropped, as the SSE specification says.
struct SseEvents<R> {
    reader: R,
    line: String,
}

impl<R: BufRead> SseEvents<R> {
    fn new(reader: R) -> Self {
        Self {
            reader,
            line: String::new(),
        }
    }
}

impl<R: BufRead> Iterator for SseEvents<R> {
    type Item = std::io::Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut data: Option<String> = None;
        loop {
            self.line.clear();
            match self.reader.read_line(&mut self.line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
            let line = self.line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if let Some(data) = data.take() {
                    return Some(Ok(data));
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            if field == "data" {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                }
            }
        }
    }
}

/// One part of a `multipart/form-data` body.
struct Part<'a> {
    name: &'a str,
    /// `Some` for file parts, which carry a file name and a content type.
    file: Option<&'a str>,
    data: &'a [u8],
}

impl<'a> Part<'a> {
    fn file(name: &'a str, content_type: &'a str, data: &'a [u8]) -> Self {
        Self {
            name,
            file: Some(content_type),
            data,
        }
    }

    fn text(name: &'a str, value: &'a str) -> Self {
        Self {
            name,
            file: None,
            data: value.as_bytes(),
        }
    }
}

/// Builds a `multipart/form-data` body (RFC 7578); returns the boundary and the body.
fn multipart_body(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = pick_boundary(parts);
    let size: usize = parts.iter().map(|p| p.data.len() + 200).sum();
    let mut body = Vec::with_capacity(size + boundary.len() + 8);
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match part.file {
            Some(content_type) => format!(
                "Content-Disposition: form-data; name=\"{0}\"; filename=\"{0}\"\r\n\
                 Content-Type: {content_type}\r\n\r\n",
                part.name
            ),
            None => format!(
                "Content-Disposition: form-data; name=\"{}\"\r\n\r\n",
                part.name
            ),
        };
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(part.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (boundary, body)
}

/// A boundary that occurs in no part (the weights are arbitrary bytes).
fn pick_boundary(parts: &[Part<'_>]) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = nanos ^ u128::from(std::process::id());
    (0u32..)
        .map(|n| format!("credence-{seed:x}-{n}"))
        .find(|b| !parts.iter().any(|p| contains(p.data, b.as_bytes())))
        .unwrap_or_else(|| "credence-boundary".to_owned())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Vec<String> {
        SseEvents::new(text.as_bytes())
            .collect::<std::io::Result<_>>()
            .expect("in-memory reads")
    }

    #[test]
    fn the_default_url_is_the_default_listen_address() {
        assert_eq!(
            DEFAULT_URL,
            format!("http://{}", crate::config::DEFAULT_LISTEN)
        );
    }

    #[test]
    fn sse_events_skip_comments_join_lines_and_drop_a_cut_event() {
        let stream =
            ": keep-alive\n\ndata: {\"a\":1}\r\n\r\nevent: x\ndata:one\ndata: two\n\ndata: cut";
        assert_eq!(events(stream), vec!["{\"a\":1}", "one\ntwo"]);
    }

    #[test]
    fn a_chat_stream_collects_deltas_and_reports_in_stream_errors() {
        let chunk = |text: &str| {
            format!(
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{text:?}}}}}]}}\n\n"
            )
        };
        let done = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"role\":\"assistant\"}}}}]}}\n\n{}{}\
             data: {{\"choices\":[{{\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\ndata: [DONE]\n\n",
            chunk("Hel"),
            chunk("lo")
        );
        let mut seen = Vec::new();
        let reply = read_chat_stream(SseEvents::new(done.as_bytes()), &mut |d| {
            seen.push(d.to_owned());
            ControlFlow::Continue(())
        })
        .expect("complete stream");
        assert_eq!((reply.text.as_str(), seen.len()), ("Hello", 2));
        assert_eq!(reply.finish_reason.as_deref(), Some("stop"));

        let failed = format!(
            "{}data: {{\"error\":{{\"message\":\"boom\",\"type\":\"server_error\",\"code\":\"x\"}}}}\n\n",
            chunk("a")
        );
        let err = read_chat_stream(SseEvents::new(failed.as_bytes()), &mut |_| {
            ControlFlow::Continue(())
        })
        .expect_err("error event");
        assert!(matches!(&err, ClientError::Stream { message, .. } if message == "boom"));
        assert_eq!(err.code(), Some("x"));

        let cut = chunk("a");
        let err = read_chat_stream(SseEvents::new(cut.as_bytes()), &mut |_| {
            ControlFlow::Continue(())
        })
        .expect_err("no [DONE]");
        assert!(matches!(err, ClientError::BadResponse(_)));
    }

    #[test]
    fn error_bodies_keep_the_server_message_and_code() {
        let body = r#"{"error":{"message":"needs a key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        let err = http_error(401, body);
        assert_eq!(
            (err.status(), err.code()),
            (Some(401), Some("invalid_api_key"))
        );
        let text = err.to_string();
        assert!(text.contains("401") && text.contains("needs a key") && text.contains("--api-key"));
        let err = http_error(502, "<html>bad gateway</html>");
        assert!(err.to_string().contains("bad gateway"), "{err}");
    }

    #[test]
    fn multipart_bodies_frame_each_part_with_a_fresh_boundary() {
        let weights = [0u8, 1, 2, 255, b'-', b'-'];
        let parts = [
            Part::file(CONFIG_FILE, "application/json", b"{}"),
            Part::file(WEIGHTS_FILE, "application/octet-stream", &weights),
            Part::text("alias", "style"),
        ];
        let (boundary, body) = multipart_body(&parts);
        assert!(!contains(&weights, boundary.as_bytes()));
        let opening = format!("--{boundary}\r\n");
        let count = body
            .windows(opening.len())
            .filter(|w| *w == opening.as_bytes())
            .count();
        assert_eq!(count, 3);
        assert!(body.ends_with(format!("\r\n--{boundary}--\r\n").as_bytes()));
        let header = "name=\"adapter_model.safetensors\"; filename=\"adapter_model.safetensors\"";
        assert!(contains(&body, header.as_bytes()));
        assert!(contains(
            &body,
            b"name=\"alias\"\r\n\r\nstyle\r\n--credence-"
        ));
    }

    #[test]
    fn urls_are_checked_and_names_cannot_escape_their_path_segment() {
        assert_eq!(
            check_url("http://127.0.0.1:9/").expect("valid"),
            "http://127.0.0.1:9"
        );
        assert!(check_url("https://example.invalid").is_err());
        assert!(check_url("127.0.0.1:8080").is_err());
        assert!(check_url("http://").is_err());
        assert!(is_loopback("http://localhost:8080"));
        assert!(is_loopback("http://[::1]:8080"));
        assert!(is_loopback("http://127.0.0.2"));
        assert!(!is_loopback("http://10.0.0.1:8080"));
        assert_eq!(encode_segment("a:b.c-d_e"), "a%3Ab.c-d_e");
        assert_eq!(encode_segment("../x?y#z"), "..%2Fx%3Fy%23z");
    }
}
