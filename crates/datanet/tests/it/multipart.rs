//! `multipart/form-data` uploads over a real TCP connection: the router served by
//! axum on a loopback port, the form sent with chunked transfer encoding in small
//! pieces, as a browser or `curl -F` streaming a large file would.

use std::net::SocketAddr;
use std::sync::Arc;

use credence_datanet::Datanets;
use credence_datanet::http::router;
use credence_datanet::ingest::{Format, Limits};
use credence_datanet::model::{ContributionHeader, Signed, Status, Visibility};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

const BOUNDARY: &str = "credence-test-boundary-7f3a";

/// Serves the datanets in `dir` on a free loopback port for the rest of the test.
async fn serve(dir: &std::path::Path, limits: Limits) -> (SocketAddr, Arc<Datanets>) {
    let nets = Arc::new(Datanets::open(dir, limits).expect("open"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(Arc::clone(&nets));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, nets)
}

/// One form part: a text field, or a file with a file name.
enum Part<'a> {
    Text(&'a str, String),
    File(&'a str, &'a [u8]),
}

fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::Text(name, value) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}")
                        .as_bytes(),
                );
            }
            Part::File(file_name, bytes) => {
                body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
                         Content-Type: application/x-ndjson\r\n\r\n"
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(bytes);
            }
        }
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// POSTs `body` as a multipart form in 1 KiB chunks; returns the status and JSON answer.
async fn post_form(addr: SocketAddr, datanet: &str, body: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/datanets/{datanet}/contributions HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    for chunk in body.chunks(1024) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        // The server may answer (and stop reading) early, e.g. on a bad signature.
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    parse_response(&answer)
}

fn parse_response(answer: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

fn texts(range: std::ops::Range<usize>) -> Vec<u8> {
    let texts: Vec<String> = range.map(sentence).collect();
    jsonl(&texts.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The signed header's fields as separate form fields (source: the file name).
fn header_fields(signed: &Signed<ContributionHeader>) -> Vec<Part<'static>> {
    vec![
        Part::Text("signer", signed.signer.to_string()),
        Part::Text("signature", signed.signature.to_string()),
        Part::Text("file_sha256", signed.payload.file_sha256.to_string()),
        Part::Text("format", "jsonl".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_upload_signed_files_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, nets) = serve(dir.path(), Limits::default()).await;
    create(&nets, "forms", Visibility::Public);

    // Separate fields; the file (~90 KB) arrives in 1 KiB chunks.
    let bytes = texts(0..1000);
    let signed = header("forms", &bytes, Format::Jsonl, &alice());
    let mut parts = header_fields(&signed);
    parts.push(Part::File("upload.jsonl", &bytes));
    let (status, report) = post_form(addr, "forms", &form(&parts)).await;
    assert_eq!(status, 201, "{report}");
    assert_eq!(report["pending"], 1000);
    assert_eq!(report["contributor"], alice().address().to_string());

    // The whole signed header as one `contribution` field; a copy of an earlier
    // record is flagged as usual.
    let bytes = texts(999..1002);
    let signed = header("forms", &bytes, Format::Jsonl, &bob());
    let parts = [
        Part::Text(
            "contribution",
            serde_json::to_string(&signed).expect("json"),
        ),
        Part::File("whatever.jsonl", &bytes),
    ];
    let (status, report) = post_form(addr, "forms", &form(&parts)).await;
    assert_eq!(status, 201, "{report}");
    assert_eq!(
        (
            report["pending"].clone(),
            report["exact_duplicates"].clone()
        ),
        (2.into(), 1.into())
    );

    let records = nets.records("forms", None, 0, 2000, None).expect("records");
    assert_eq!(records.len(), 1003);
    assert!(records.iter().all(|r| r.source == "upload.jsonl"));
    assert_eq!(
        records
            .iter()
            .filter(|r| r.status == Status::Duplicate)
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_forms_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        max_file_bytes: 50_000,
        ..Limits::default()
    };
    let (addr, nets) = serve(dir.path(), limits).await;
    create(&nets, "forms", Visibility::Public);
    let bytes = texts(0..100);
    let signed = header("forms", &bytes, Format::Jsonl, &alice());

    // Signed by bob, claimed by alice.
    let forged = Signed {
        signer: alice().address(),
        ..header("forms", &bytes, Format::Jsonl, &bob())
    };
    let mut parts = header_fields(&forged);
    parts.push(Part::File("upload.jsonl", &bytes));
    let (status, answer) = post_form(addr, "forms", &form(&parts)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("wrong_signer"))
    );

    // A part after the file: the upload is refused, not half-read.
    let mut parts = header_fields(&signed);
    parts.push(Part::File("upload.jsonl", &bytes));
    parts.push(Part::Text("note", "late".into()));
    let (status, answer) = post_form(addr, "forms", &form(&parts)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("after the `file` part")),
        "{answer}"
    );

    // Missing fields, unknown fields, no file part.
    let (status, answer) = post_form(addr, "forms", &form(&[Part::File("x.jsonl", &bytes)])).await;
    assert_eq!(
        (status, answer["error"]["param"].as_str()),
        (400, Some("signer"))
    );
    let mut parts = header_fields(&signed);
    parts.push(Part::Text("colour", "blue".into()));
    let (status, answer) = post_form(addr, "forms", &form(&parts)).await;
    assert_eq!(
        (status, answer["error"]["param"].as_str()),
        (400, Some("colour"))
    );
    let (status, answer) = post_form(addr, "forms", &form(&header_fields(&signed))).await;
    assert_eq!(
        (status, answer["error"]["param"].as_str()),
        (400, Some("file"))
    );

    // A file over the size limit, correctly signed.
    let big = texts(0..1000);
    let mut parts = header_fields(&header("forms", &big, Format::Jsonl, &alice()));
    parts.push(Part::File("upload.jsonl", &big));
    let (status, answer) = post_form(addr, "forms", &form(&parts)).await;
    assert_eq!(status, 413, "{answer}");

    assert!(
        nets.records("forms", None, 0, 10, None)
            .expect("records")
            .is_empty()
    );
    assert!(nets.reputation("forms").expect("reputation").is_empty());
}
