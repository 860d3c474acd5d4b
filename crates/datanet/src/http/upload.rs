//! Streaming an HTTP request body into the synchronous ingest code.

use std::io::{self, Read};

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use tokio::sync::mpsc;

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
        Self {
            chunks: rx,
            current: Bytes::new(),
        }
    }
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
