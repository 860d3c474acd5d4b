//! The HTTP API, driven in-process through the router.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use credence_datanet::http::{CONTRIBUTION_HEADER, READ_HEADER, router};
use credence_datanet::ingest::{Format, Limits};
use credence_datanet::merkle::InclusionProof;
use credence_datanet::model::{
    CommitRequest, CreateDatanet, Manifest, ReadPermit, RecordInfo, Review, Signed, Version,
    Visibility,
};
use credence_datanet::sign::LocalSigner;
use credence_datanet::{Datanets, now_millis};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::common::*;

struct Reply {
    status: StatusCode,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).expect("response JSON")
    }
}

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body)).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Reply { status, body }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("json")
}

fn app(dir: &std::path::Path, limits: Limits) -> Router {
    router(Arc::new(Datanets::open(dir, limits).expect("open")))
}

async fn create_over_http(app: &Router, name: &str, visibility: Visibility) {
    let spec = CreateDatanet {
        name: name.into(),
        description: "over http".into(),
        tags: vec![],
        license: "MIT".into(),
        visibility,
        curators: vec![],
    };
    let reply = send(
        app,
        "POST",
        "/v1/datanets",
        &[],
        json(&Signed::sign(spec, &owner()).expect("sign")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.json());
}

async fn upload(app: &Router, name: &str, bytes: &[u8], signer: &LocalSigner) -> Reply {
    let h = header(name, bytes, Format::Jsonl, signer);
    let headers = [
        (
            CONTRIBUTION_HEADER,
            serde_json::to_string(&h).expect("json"),
        ),
        ("content-type", "application/x-ndjson".into()),
    ];
    send(
        app,
        "POST",
        &format!("/v1/datanets/{name}/contributions"),
        &headers,
        bytes.to_vec(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app(dir.path(), Limits::default());
    create_over_http(&app, "web", Visibility::Public).await;

    let bytes = jsonl(&[&sentence(1), &sentence(2)]);
    let reply = upload(&app, "web", &bytes, &alice()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.json());
    assert_eq!(reply.json()["pending"], 2);

    let reply = send(
        &app,
        "GET",
        "/v1/datanets/web/records?status=pending",
        &[],
        vec![],
    )
    .await;
    let records: Vec<RecordInfo> = reply.parse();
    assert_eq!(records.len(), 2);

    let review = Review {
        datanet: "web".into(),
        decisions: records.iter().map(|r| accept(r.entry)).collect(),
        time: now_millis(),
    };
    let reply = send(
        &app,
        "POST",
        "/v1/datanets/web/reviews",
        &[],
        json(&Signed::sign(review, &owner()).expect("sign")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());

    let commit = CommitRequest {
        datanet: "web".into(),
        parent: None,
        message: "v1".into(),
        time: 1,
    };
    let reply = send(
        &app,
        "POST",
        "/v1/datanets/web/versions",
        &[],
        json(&Signed::sign(commit, &owner()).expect("sign")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.json());
    let v1: Version = reply.parse();

    let reply = send(&app, "GET", "/v1/datanets/web/versions", &[], vec![]).await;
    assert_eq!(reply.parse::<Vec<Version>>(), vec![v1.clone()]);

    let base = format!("/v1/datanets/web/versions/{}", v1.id);
    let export = send(&app, "GET", &format!("{base}/export"), &[], vec![]).await;
    assert_eq!(export.status, StatusCode::OK);
    assert_eq!(String::from_utf8_lossy(&export.body).lines().count(), 2);
    let manifest: Manifest = send(&app, "GET", &format!("{base}/manifest"), &[], vec![])
        .await
        .parse();
    assert_eq!(
        manifest.export_sha256,
        credence_datanet::Hash32::sha256(&export.body)
    );
    assert_eq!(manifest.root, v1.root);

    let reply = send(
        &app,
        "GET",
        &format!("{base}/proofs/{}", records[0].id),
        &[],
        vec![],
    )
    .await;
    assert!(reply.parse::<InclusionProof>().verify());

    let reply = send(
        &app,
        "GET",
        &format!("/v1/datanets/web/diff?to={}", v1.id),
        &[],
        vec![],
    )
    .await;
    assert_eq!(reply.json()["added"].as_array().map(Vec::len), Some(2));
    let reply = send(&app, "GET", "/v1/datanets/web/contributors", &[], vec![]).await;
    assert_eq!(reply.json()[0]["accepted"], 2);
    let reply = send(&app, "GET", "/v1/datanets", &[], vec![]).await;
    assert_eq!(reply.json()[0]["id"], "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_their_statuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        max_file_bytes: 1000,
        max_bad_lines: 0,
        ..Limits::default()
    };
    let app = app(dir.path(), limits);
    let reply = send(&app, "GET", "/v1/datanets/nope", &[], vec![]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json()["error"]["code"], "not_found");

    create_over_http(&app, "e", Visibility::Permissioned).await;
    let bytes = jsonl(&["fine text"]);
    // Signed by Alice, claimed by Bob.
    let mut h = header("e", &bytes, Format::Jsonl, &alice());
    h.signer = bob().address();
    let headers = [(
        CONTRIBUTION_HEADER,
        serde_json::to_string(&h).expect("json"),
    )];
    let reply = send(
        &app,
        "POST",
        "/v1/datanets/e/contributions",
        &headers,
        bytes.clone(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{:?}", reply.json());

    let reply = send(&app, "POST", "/v1/datanets/e/contributions", &[], bytes).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let big = jsonl(&[&"y".repeat(2000)]);
    assert_eq!(
        upload(&app, "e", &big, &alice()).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    let reply = upload(&app, "e", b"{\"text\": \"ok\"}\nbroken\n", &alice()).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json()["error"]["lines"][0]["line"], 2);

    let reply = send(&app, "POST", "/v1/datanets", &[], b"{not json".to_vec()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // Permissioned reads need a signed, unexpired permit from an allowed address.
    assert_eq!(
        upload(&app, "e", &jsonl(&["ok text"]), &alice())
            .await
            .status,
        StatusCode::CREATED
    );
    let reply = send(&app, "GET", "/v1/datanets/e/records", &[], vec![]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let permit = |signer: &LocalSigner, expires: i64| {
        let p = ReadPermit {
            datanet: "e".into(),
            expires,
        };
        (
            READ_HEADER,
            serde_json::to_string(&Signed::sign(p, signer).expect("sign")).expect("json"),
        )
    };
    let far = now_millis() / 1000 + 600;
    let reply = send(
        &app,
        "GET",
        "/v1/datanets/e/records",
        &[permit(&owner(), far)],
        vec![],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = send(
        &app,
        "GET",
        "/v1/datanets/e/records",
        &[permit(&bob(), far)],
        vec![],
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = send(
        &app,
        "GET",
        "/v1/datanets/e/records",
        &[permit(&owner(), 1)],
        vec![],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_requests_and_grants_over_http() {
    use credence_datanet::model::{AccessDecision, AccessRequest};
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app(dir.path(), Limits::default());
    create_over_http(&app, "closed", Visibility::Permissioned).await;
    let b = bob();
    let ask = AccessRequest {
        datanet: "closed".into(),
        message: "please".into(),
        time: now_millis(),
    };
    let body = json(&Signed::sign(ask, &b).expect("sign"));
    let reply = send(
        &app,
        "POST",
        "/v1/datanets/closed/access/requests",
        &[],
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.json());
    assert_eq!(reply.json()["status"], "requested");

    let decision = |signer: &LocalSigner| {
        let d = AccessDecision {
            datanet: "closed".into(),
            address: b.address(),
            grant: true,
            time: now_millis(),
        };
        json(&Signed::sign(d, signer).expect("sign"))
    };
    let path = "/v1/datanets/closed/access/decisions";
    let reply = send(&app, "POST", path, &[], decision(&b)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = send(&app, "POST", path, &[], decision(&owner())).await;
    assert_eq!(reply.json()["status"], "granted");

    let permit = |signer: &LocalSigner| {
        let p = ReadPermit {
            datanet: "closed".into(),
            expires: now_millis() / 1000 + 60,
        };
        (
            READ_HEADER,
            serde_json::to_string(&Signed::sign(p, signer).expect("sign")).expect("json"),
        )
    };
    let reply = send(
        &app,
        "GET",
        "/v1/datanets/closed/records",
        &[permit(&b)],
        vec![],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    // Listing who has access is for curators only.
    let reply = send(
        &app,
        "GET",
        "/v1/datanets/closed/access",
        &[permit(&b)],
        vec![],
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = send(
        &app,
        "GET",
        "/v1/datanets/closed/access",
        &[permit(&owner())],
        vec![],
    )
    .await;
    assert_eq!(reply.json()[0]["address"], b.address().to_string());
    // A permit for another datanet is refused.
    let reply = send(
        &app,
        "GET",
        "/v1/datanets/other/records",
        &[permit(&b)],
        vec![],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curators_change_over_http_only_by_the_owner() {
    use credence_datanet::model::CuratorChange;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app(dir.path(), Limits::default());
    create_over_http(&app, "cur", Visibility::Public).await;
    let change = |add: bool, signer: &LocalSigner| {
        let payload = CuratorChange {
            datanet: "cur".into(),
            address: bob().address(),
            add,
            time: now_millis(),
        };
        json(&Signed::sign(payload, signer).expect("sign"))
    };
    let uri = "/v1/datanets/cur/curators";
    let refused = send(&app, "POST", uri, &[], change(true, &alice())).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.json());
    let added = send(&app, "POST", uri, &[], change(true, &owner())).await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.json());
    assert_eq!(added.json()["curators"][0], bob().address().to_string());
    let again = send(&app, "POST", uri, &[], change(true, &owner())).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let removed = send(&app, "POST", uri, &[], change(false, &owner())).await;
    assert_eq!(removed.status, StatusCode::OK);
    assert_eq!(removed.json()["curators"], serde_json::json!([]));
}
