//! Streaming an HTTP upload into the synchronous ingest code: a raw body, or
//! the file part of a `multipart/form-data` form.
//!
//! A form carries the signed contribution header either whole, as a
//! `contribution` field (the same JSON as the `x-credence-contribution` header),
//! or as separate `signer`, `signature`, `file_sha256`, `format` (a name such as
//! `jsonl`, or the JSON object) and `source` fields (default: the file part's
//! file name), then the file itself as the `file` part, which must come last:
//! the header is checked before a byte of the file is read, and the file is
//! forwarded chunk by chunk, never held whole in memory.

use std::io::{self, Read};

use axum::body::{Body, Bytes};
use axum::extract::Multipart;
use axum::extract::multipart::Field;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::hash::Hash32;
use crate::ingest::Format;
use crate::model::{ContributionHeader, Signed};
use crate::sign::Signature;
use crate::{Error, Result};

/// The form field holding the whole signed header (JSON).
pub const CONTRIBUTION_FIELD: &str = "contribution";
/// The form part holding the file.
pub const FILE_FIELD: &str = "file";
/// Largest text field of a form; signed headers are a few hundred bytes.
const FIELD_LIMIT: usize = 64 << 10;
/// Most text fields before the file (there are at most six kinds).
const MAX_FIELDS: usize = 16;

/// Chunks in flight between the network and the parser; bounds memory per upload.
const IN_FLIGHT: usize = 16;

/// A blocking [`Read`] over a body that an async task forwards chunk by chunk.
pub(crate) struct BodyReader {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl BodyReader {
    /// Starts forwarding `body` on the current runtime; read it from a blocking thread.
    pub(crate) fn spawn(body: Body) -> Self {
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        tokio::spawn(async move {
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(io::Error::other);
                let failed = chunk.is_err();
                // The reader hung up (the ingest failed early): stop reading the body.
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });
        Self::from_channel(rx)
    }

    fn from_channel(chunks: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self {
            chunks,
            current: Bytes::new(),
        }
    }
}

/// Reads a form's fields up to the file part and returns the signed header they
/// carry (or `header`, from the request header, if given) and a reader over the
/// file. The signature is not checked here.
pub(crate) async fn multipart(
    mut form: Multipart,
    header: Option<Signed<ContributionHeader>>,
    datanet: String,
) -> Result<(Signed<ContributionHeader>, BodyReader)> {
    let (head_tx, head_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    // The form is read on its own task because a field borrows the form: the task
    // reads the fields, hands back the header, then forwards the file's chunks.
    tokio::spawn(async move {
        let mut fields = Fields::default();
        let file = loop {
            match next_field(&mut form, &mut fields).await {
                Ok(Some(file)) => break file,
                Ok(None) => {}
                Err(error) => {
                    let _ = head_tx.send(Err(error));
                    return;
                }
            }
        };
        let source = file.file_name().map(str::to_owned);
        let header = match header {
            Some(header) => Ok(header),
            None => fields.header(datanet, source),
        };
        let ok = header.is_ok();
        if head_tx.send(header).is_err() || !ok {
            return;
        }
        forward_file(file, &tx).await;
        // The file is the last part: anything after it would be ignored silently.
        let trailing = match form.next_field().await {
            Ok(None) => return,
            Ok(Some(field)) => format!(
                "unexpected part `{}` after the `{FILE_FIELD}` part",
                field.name().unwrap_or_default()
            ),
            Err(error) => format!("malformed multipart body: {}", error.body_text()),
        };
        let _ = tx.send(Err(io::Error::other(trailing))).await;
    });
    let header = head_rx
        .await
        .map_err(|_| Error::Internal("multipart reader stopped".into()))??;
    Ok((header, BodyReader::from_channel(rx)))
}

/// Reads the next field: `Some` if it is the file, otherwise stores it in `fields`.
async fn next_field<'a>(form: &'a mut Multipart, fields: &mut Fields) -> Result<Option<Field<'a>>> {
    let field = form
        .next_field()
        .await
        .map_err(|e| {
            Error::invalid(
                "body",
                format!("malformed multipart body: {}", e.body_text()),
            )
        })?
        .ok_or_else(|| Error::invalid(FILE_FIELD, "missing: the form has no `file` part"))?;
    let name = field.name().unwrap_or_default().to_owned();
    if name == FILE_FIELD {
        return Ok(Some(field));
    }
    fields.count += 1;
    if fields.count > MAX_FIELDS {
        return Err(Error::invalid(
            "body",
            "too many form fields before the file",
        ));
    }
    let value = read_text(field, &name).await?;
    fields.set(&name, value)?;
    Ok(None)
}

/// A text field, refusing more than [`FIELD_LIMIT`] bytes without buffering them.
async fn read_text(mut field: Field<'_>, name: &str) -> Result<String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| Error::invalid(name, format!("cannot read the field: {}", e.body_text())))?
    {
        if bytes.len() + chunk.len() > FIELD_LIMIT {
            return Err(Error::invalid(
                name,
                format!("longer than {FIELD_LIMIT} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| Error::invalid(name, "not UTF-8"))
}

async fn forward_file(mut file: Field<'_>, tx: &mpsc::Sender<io::Result<Bytes>>) {
    loop {
        let chunk = match file.chunk().await {
            Ok(Some(chunk)) => Ok(chunk),
            Ok(None) => return,
            Err(error) => Err(io::Error::other(error.body_text())),
        };
        let failed = chunk.is_err();
        // The reader hung up (the ingest failed early): stop reading the body.
        if tx.send(chunk).await.is_err() || failed {
            return;
        }
    }
}

/// The header fields of a form, as sent.
#[derive(Default)]
struct Fields {
    count: usize,
    contribution: Option<String>,
    signer: Option<String>,
    signature: Option<String>,
    file_sha256: Option<String>,
    format: Option<String>,
    source: Option<String>,
}

impl Fields {
    fn set(&mut self, name: &str, value: String) -> Result<()> {
        let slot = match name {
            CONTRIBUTION_FIELD => &mut self.contribution,
            "signer" => &mut self.signer,
            "signature" => &mut self.signature,
            "file_sha256" => &mut self.file_sha256,
            "format" => &mut self.format,
            "source" => &mut self.source,
            other => {
                return Err(Error::invalid(
                    other,
                    format!(
                        "unknown form field; expected `{CONTRIBUTION_FIELD}` or `signer`, \
                         `signature`, `file_sha256`, `format`, `source`, then `{FILE_FIELD}`"
                    ),
                ));
            }
        };
        if slot.replace(value).is_some() {
            return Err(Error::invalid(name, "given twice"));
        }
        Ok(())
    }

    /// The signed header: the `contribution` field, or one built from the others.
    fn header(
        self,
        datanet: String,
        file_name: Option<String>,
    ) -> Result<Signed<ContributionHeader>> {
        if let Some(json) = self.contribution {
            return serde_json::from_str(&json)
                .map_err(|e| Error::invalid(CONTRIBUTION_FIELD, format!("invalid JSON: {e}")));
        }
        let required = |value: Option<String>, name: &str| {
            value.ok_or_else(|| {
                Error::invalid(
                    name,
                    format!("missing: send it, or the whole header as `{CONTRIBUTION_FIELD}`"),
                )
            })
        };
        let signer = required(self.signer, "signer")?;
        let signature = required(self.signature, "signature")?;
        let file_sha256 = required(self.file_sha256, "file_sha256")?;
        let format = required(self.format, "format")?;
        let source = self.source.or(file_name).ok_or_else(|| {
            Error::invalid("source", "missing, and the file part has no file name")
        })?;
        let payload = ContributionHeader {
            datanet,
            file_sha256: file_sha256
                .parse::<Hash32>()
                .map_err(|_| Error::invalid("file_sha256", "not a 0x-prefixed 32-byte hash"))?,
            format: parse_format(&format)?,
            source,
        };
        Ok(Signed {
            payload,
            signer: signer
                .parse()
                .map_err(|_| Error::invalid("signer", "not a 0x-prefixed 20-byte address"))?,
            signature: signature
                .parse::<Signature>()
                .map_err(|_| Error::invalid("signature", "not a 0x-prefixed 65-byte signature"))?,
        })
    }
}

/// `jsonl`, `text`, `markdown`, or the format's JSON object (needed for CSV's mapping).
fn parse_format(text: &str) -> Result<Format> {
    let value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text)
    } else {
        Ok(serde_json::json!({ "format": text.trim() }))
    };
    value
        .and_then(serde_json::from_value)
        .map_err(|e| Error::invalid("format", format!("unknown format `{text}`: {e}")))
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
