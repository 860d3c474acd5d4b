//! The datanet HTTP API, mounted by the node under `/v1/datanets`.
//!
//! JSON in and out; uploads stream the raw file as the request body (NDJSON for
//! JSONL, or CSV/text/Markdown as declared in the signed header) or as the last
//! part of a `multipart/form-data` form (see `upload`), and exports stream
//! NDJSON back. Every write carries an EIP-191 signature (see
//! [`crate::model::Signed`]); reads of permissioned datanets carry a signed
//! [`ReadPermit`] in the `x-credence-read` header. The blocking store work runs
//! on tokio's blocking pool, never on the async workers.
//!
//! | method and path | body / answer |
//! |---|---|
//! | `GET /v1/datanets` | all datanets |
//! | `POST /v1/datanets` | `Signed<CreateDatanet>` → 201 datanet |
//! | `GET /v1/datanets/{id}` | the datanet |
//! | `POST /v1/datanets/{id}/contributions` | header `x-credence-contribution: Signed<ContributionHeader>` (JSON), body the file; or a multipart form with the header's fields and a `file` part → 201 report |
//! | `GET /v1/datanets/{id}/records?status=&after=&limit=` | records with status and provenance |
//! | `POST /v1/datanets/{id}/reviews` | `Signed<Review>` → outcomes |
//! | `GET`, `POST /v1/datanets/{id}/versions` | log; `Signed<CommitRequest>` → 201 version |
//! | `GET /v1/datanets/{id}/versions/{v}` | one version |
//! | `GET /v1/datanets/{id}/versions/{v}/export` | NDJSON training set |
//! | `GET /v1/datanets/{id}/versions/{v}/manifest` | manifest (root, record → contributor) |
//! | `GET /v1/datanets/{id}/versions/{v}/proofs/{record}` | inclusion proof |
//! | `GET /v1/datanets/{id}/diff?from=&to=` | records added and removed |
//! | `GET /v1/datanets/{id}/contributors` | reputation per contributor |
//! | `POST /v1/datanets/{id}/curators` | `Signed<CuratorChange>` (owner) → the datanet |
//! | `GET /v1/datanets/{id}/access` | requests and grants (curators only) |
//! | `POST /v1/datanets/{id}/access/requests` | `Signed<AccessRequest>` |
//! | `POST /v1/datanets/{id}/access/decisions` | `Signed<AccessDecision>` (owner) |

mod error;
mod upload;

use std::io::Write;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use error::{ApiError, classify};
pub use upload::{CONTRIBUTION_FIELD, FILE_FIELD};

use crate::hash::{Address, Hash32};
use crate::model::{
    AccessDecision, AccessRequest, CommitRequest, ContributionHeader, CreateDatanet, CuratorChange,
    ReadPermit, Review, Signed, Status,
};
use crate::service::now;
use crate::{Datanets, Error, Result};

type Shared = Arc<Datanets>;
type Answer<T> = std::result::Result<T, ApiError>;

/// The header carrying a contribution's signed header.
pub const CONTRIBUTION_HEADER: &str = "x-credence-contribution";
/// The header carrying a signed read permit.
pub const READ_HEADER: &str = "x-credence-read";
/// Largest JSON request body (uploads are limited by [`crate::ingest::Limits`] instead).
const JSON_LIMIT: usize = 4 << 20;

/// The router for `/v1/datanets/…`.
pub fn router(datanets: Arc<Datanets>) -> Router {
    let v = "/v1/datanets";
    Router::new()
        .route(v, get(list).post(create))
        .route(&format!("{v}/{{id}}"), get(show))
        .route(
            &format!("{v}/{{id}}/contributions"),
            post(contribute).layer(DefaultBodyLimit::disable()),
        )
        .route(&format!("{v}/{{id}}/records"), get(records))
        .route(&format!("{v}/{{id}}/reviews"), post(review))
        .route(&format!("{v}/{{id}}/versions"), get(log).post(commit))
        .route(&format!("{v}/{{id}}/versions/{{version}}"), get(version))
        .route(
            &format!("{v}/{{id}}/versions/{{version}}/export"),
            get(export),
        )
        .route(
            &format!("{v}/{{id}}/versions/{{version}}/manifest"),
            get(manifest),
        )
        .route(
            &format!("{v}/{{id}}/versions/{{version}}/proofs/{{record}}"),
            get(proof),
        )
        .route(&format!("{v}/{{id}}/diff"), get(diff))
        .route(&format!("{v}/{{id}}/contributors"), get(contributors))
        .route(&format!("{v}/{{id}}/curators"), post(change_curator))
        .route(&format!("{v}/{{id}}/access"), get(access_list))
        .route(&format!("{v}/{{id}}/access/requests"), post(request_access))
        .route(&format!("{v}/{{id}}/access/decisions"), post(decide_access))
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .with_state(datanets)
}

/// Runs store work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Answer<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("worker failed: {e}")))?
        .map_err(ApiError)
}

fn parse_json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::invalid(what, format!("invalid JSON: {e}")))
}

fn same_datanet(path: &str, payload: &str) -> Result<()> {
    if path != payload {
        return Err(Error::invalid(
            "datanet",
            format!("`{payload}` does not match the path `{path}`"),
        ));
    }
    Ok(())
}

fn parse_hash(field: &str, text: &str) -> Result<Hash32> {
    text.parse()
        .map_err(|_| Error::invalid(field, format!("`{text}` is not a 0x-prefixed 32-byte hash")))
}

/// The address proven by a read permit, if the request has one.
fn reader(headers: &HeaderMap, datanet: &str) -> Result<Option<Address>> {
    let Some(value) = headers.get(READ_HEADER) else {
        return Ok(None);
    };
    let permit: Signed<ReadPermit> = parse_json(READ_HEADER, value.as_bytes())?;
    permit.verify()?;
    same_datanet(datanet, &permit.payload.datanet)?;
    if permit.payload.expires < now() {
        return Err(Error::invalid(READ_HEADER, "the read permit has expired"));
    }
    Ok(Some(permit.signer))
}

async fn list(State(nets): State<Shared>) -> Answer<Response> {
    let all = blocking(move || nets.list()).await?;
    Ok(Json(all).into_response())
}

async fn create(State(nets): State<Shared>, body: Bytes) -> Answer<Response> {
    let request: Signed<CreateDatanet> = parse_json("body", &body)?;
    let created = blocking(move || nets.create(&request)).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn show(State(nets): State<Shared>, Path(id): Path<String>) -> Answer<Response> {
    Ok(Json(blocking(move || nets.get(&id)).await?).into_response())
}

async fn contribute(
    State(nets): State<Shared>,
    Path(id): Path<String>,
    request: Request,
) -> Answer<Response> {
    let header = request
        .headers()
        .get(CONTRIBUTION_HEADER)
        .map(|value| {
            parse_json::<Signed<ContributionHeader>>(CONTRIBUTION_HEADER, value.as_bytes())
        })
        .transpose()?;
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (signed, reader) = if is_form {
        let form = Multipart::from_request(request, &()).await.map_err(|e| {
            Error::invalid(
                "body",
                format!("not a multipart/form-data body: {}", e.body_text()),
            )
        })?;
        upload::multipart(form, header, id.clone()).await?
    } else {
        let header = header.ok_or_else(|| {
            Error::invalid(
                CONTRIBUTION_HEADER,
                "missing: the signed contribution header (or send a multipart/form-data form)",
            )
        })?;
        (header, upload::BodyReader::spawn(request.into_body()))
    };
    same_datanet(&id, &signed.payload.datanet)?;
    // Fail fast on a bad signature before reading a byte of the upload.
    signed.verify()?;
    let report = blocking(move || nets.contribute(&signed, reader, &mut |_| {})).await?;
    Ok((StatusCode::CREATED, Json(report)).into_response())
}

#[derive(Debug, Deserialize)]
struct RecordQuery {
    status: Option<Status>,
    #[serde(default)]
    after: i64,
    limit: Option<usize>,
}

async fn records(
    State(nets): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<RecordQuery>,
    headers: HeaderMap,
) -> Answer<Response> {
    let who = reader(&headers, &id)?;
    let limit = query.limit.unwrap_or(100).min(1000);
    let found =
        blocking(move || nets.records(&id, query.status, query.after, limit, who.as_ref())).await?;
    Ok(Json(found).into_response())
}

async fn review(
    State(nets): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer<Response> {
    let request: Signed<Review> = parse_json("body", &body)?;
    same_datanet(&id, &request.payload.datanet)?;
    Ok(Json(blocking(move || nets.review(&request)).await?).into_response())
}

async fn log(State(nets): State<Shared>, Path(id): Path<String>) -> Answer<Response> {
    Ok(Json(blocking(move || nets.log(&id)).await?).into_response())
}

async fn commit(
    State(nets): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer<Response> {
    let request: Signed<CommitRequest> = parse_json("body", &body)?;
    same_datanet(&id, &request.payload.datanet)?;
    let version = blocking(move || nets.commit(&request)).await?;
    Ok((StatusCode::CREATED, Json(version)).into_response())
}

async fn version(
    State(nets): State<Shared>,
    Path((id, version)): Path<(String, String)>,
) -> Answer<Response> {
    let version = parse_hash("version", &version)?;
    Ok(Json(blocking(move || nets.version(&id, &version)).await?).into_response())
}

/// Streams the export: written on a blocking thread into a bounded channel
/// that the response body drains.
async fn export(
    State(nets): State<Shared>,
    Path((id, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer<Response> {
    let version = parse_hash("version", &version)?;
    let who = reader(&headers, &id)?;
    // Check access and existence first, so those errors still get their status.
    let check = Arc::clone(&nets);
    let (check_id, check_who) = (id.clone(), who);
    blocking(move || {
        check.authorize_read(&check_id, check_who.as_ref())?;
        check.version(&check_id, &version)
    })
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(16);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter { tx: tx.clone() };
        if let Err(error) = nets.export(&id, &version, who.as_ref(), &mut writer) {
            tracing::error!(%error, "export failed mid-stream");
            let _ = tx.blocking_send(Err(std::io::Error::other(error.to_string())));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn manifest(
    State(nets): State<Shared>,
    Path((id, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer<Response> {
    let version = parse_hash("version", &version)?;
    let who = reader(&headers, &id)?;
    let manifest =
        blocking(move || nets.export(&id, &version, who.as_ref(), &mut std::io::sink())).await?;
    Ok(Json(manifest).into_response())
}

async fn proof(
    State(nets): State<Shared>,
    Path((id, version, record)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Answer<Response> {
    let version = parse_hash("version", &version)?;
    let record = parse_hash("record", &record)?;
    let who = reader(&headers, &id)?;
    let proof = blocking(move || nets.prove(&id, &version, &record, who.as_ref())).await?;
    Ok(Json(proof).into_response())
}

#[derive(Debug, Deserialize)]
struct DiffQuery {
    from: Option<String>,
    to: String,
}

async fn diff(
    State(nets): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<DiffQuery>,
    headers: HeaderMap,
) -> Answer<Response> {
    let from = query
        .from
        .as_deref()
        .map(|f| parse_hash("from", f))
        .transpose()?;
    let to = parse_hash("to", &query.to)?;
    let who = reader(&headers, &id)?;
    let diff = blocking(move || {
        nets.authorize_read(&id, who.as_ref())?;
        nets.diff(&id, from.as_ref(), &to)
    })
    .await?;
    Ok(Json(diff).into_response())
}

async fn contributors(State(nets): State<Shared>, Path(id): Path<String>) -> Answer<Response> {
    Ok(Json(blocking(move || nets.reputation(&id)).await?).into_response())
}

async fn change_curator(
    State(nets): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer<Response> {
    let request: Signed<CuratorChange> = parse_json("body", &body)?;
    same_datanet(&id, &request.payload.datanet)?;
    Ok(Json(blocking(move || nets.change_curator(&request)).await?).into_response())
}

async fn access_list(
    State(nets): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer<Response> {
    let who = reader(&headers, &id)?;
    let list = blocking(move || {
        let net = nets.get(&id)?;
        if !who.is_some_and(|w| net.can_curate(&w)) {
            return Err(Error::Forbidden {
                address: who.map_or_else(|| "an anonymous caller".into(), |w| w.to_string()),
                action: "list access",
                datanet: id,
            });
        }
        nets.access_list(&id)
    })
    .await?;
    Ok(Json(list).into_response())
}

async fn request_access(
    State(nets): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer<Response> {
    let request: Signed<AccessRequest> = parse_json("body", &body)?;
    same_datanet(&id, &request.payload.datanet)?;
    let access = blocking(move || nets.request_access(&request)).await?;
    Ok((StatusCode::CREATED, Json(access)).into_response())
}

async fn decide_access(
    State(nets): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer<Response> {
    let request: Signed<AccessDecision> = parse_json("body", &body)?;
    same_datanet(&id, &request.payload.datanet)?;
    Ok(Json(blocking(move || nets.decide_access(&request)).await?).into_response())
}
