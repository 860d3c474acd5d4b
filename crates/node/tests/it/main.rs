//! Integration tests of the node crate against the real default model.

mod client;
mod settlement;

use std::ops::ControlFlow;
use std::path::PathBuf;

use credence_model::generate::{GenerateParams, SamplingParams};
use credence_model::llama::Model;
use credence_model::lora::LoraDtype;
use credence_node::bench::{BenchConfig, run_generate_bench};
use credence_node::bench_serve::{ServeBenchConfig, run_serve_bench};
use credence_node::generate::{GenerateRequest, generate_text};
use credence_node::models::{self, Progress};
use credence_node::{Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The SmolLM2-135M-Instruct GGUF: `$CREDENCE_MODEL_GGUF`, else the node's cache.
fn model_path() -> PathBuf {
    if let Some(path) = std::env::var_os("CREDENCE_MODEL_GGUF") {
        return PathBuf::from(path);
    }
    let home = credence_node::config::credence_home(None).expect("HOME is set");
    let path = models::default_llm_path(&home);
    assert!(
        path.exists(),
        "{} is missing: run `credence models fetch`",
        path.display()
    );
    path
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        max_tokens,
        stop: Vec::new(),
        ignore_eos: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_http_on_its_socket_and_shuts_down_gracefully() {
    let home = tempfile::tempdir().expect("tempdir");
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        model: model_path().display().to_string(),
        threads: 2,
        home: Some(home.path().to_owned()),
        ..NodeConfig::default()
    };
    let node = Node::start(&config).await.expect("node starts");
    let addr = node.local_addr();
    assert_ne!(addr.port(), 0);
    assert_eq!(node.state().config().model_id, "SmolLM2-135M-Instruct.Q4_1");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(node.serve(async move {
        let _ = stopped.await;
    }));

    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"status\":\"ok\""), "{response}");

    // Datanets are served on the same port.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /v1/datanets HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // The embedded chain answers JSON-RPC on the same port.
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let chain_id = format!(
        "\"result\":\"{:#x}\"",
        credence_ledger::ChainConfig::default().chain_id
    );
    assert!(response.contains(&chain_id), "{response}");

    stop.send(()).expect("server still running");
    server.await.expect("server task").expect("clean shutdown");
}

#[tokio::test]
async fn a_node_refuses_a_missing_model_with_a_hint() {
    let home = std::env::temp_dir().join(format!("credence-node-empty-{}", std::process::id()));
    let config = NodeConfig {
        home: Some(home),
        ..NodeConfig::default()
    };
    let err = Node::start(&config).await.expect_err("no model there");
    assert!(err.to_string().contains("credence models fetch"), "{err}");
}

#[test]
fn generate_streams_pieces_that_add_up_to_the_answer() {
    let model = Model::load(&model_path()).expect("model loads");
    let request = GenerateRequest {
        prompt: "The capital of France is".into(),
        chat: false,
        system: None,
        params: greedy(8),
    };
    let mut pieces = String::new();
    let output = generate_text(&model, 2, &request, &mut |piece| {
        pieces.push_str(piece);
        ControlFlow::Continue(())
    })
    .expect("generates");
    assert_eq!(pieces, output.text);
    assert!(!output.text.is_empty());
    assert!(output.completion_tokens <= 8);

    let chat = GenerateRequest {
        chat: true,
        system: Some("Be brief.".into()),
        ..request
    };
    let output = generate_text(&model, 2, &chat, &mut |_| ControlFlow::Continue(())).expect("chat");
    assert!(output.prompt_tokens > 10, "the template adds its markup");
}

#[test]
fn bench_reports_every_measurement() {
    let config = BenchConfig {
        model: model_path(),
        threads: 2,
        prompt_tokens: 32,
        gen_tokens: 4,
        batches: vec![1, 3],
        repetitions: 1,
    };
    let mut steps = 0;
    let report = run_generate_bench(&config, &mut |_| steps += 1).expect("bench runs");
    assert!(steps >= 4);
    assert!(report.pp_tokens_per_s > 0.0 && report.tg_tokens_per_s > 0.0);
    assert_eq!(
        report.batched.iter().map(|b| b.batch).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert!(report.batched.iter().all(|b| b.tokens_per_s > 0.0));
    let json: serde_json::Value =
        serde_json::from_str(&report.to_json().expect("json")).expect("valid");
    assert_eq!(json["engine"], "credence");
    assert!(report.table().contains("pp32"));
}

#[test]
fn serve_bench_runs_every_scenario_without_reusing_prompts() {
    let work = tempfile::tempdir().expect("tempdir");
    let config = ServeBenchConfig {
        model: model_path(),
        threads: 2,
        clients: 3,
        requests: 4,
        prompt_tokens: 20,
        gen_tokens: 3,
        adapter_counts: vec![3],
        cache_mib: 64,
        lora_dtype: LoraDtype::F16,
        zipf_s: 1.0,
        cold_loads: 2,
        merge_requests: 1,
        rounds: 2,
        work_dir: work.path().to_owned(),
        seed: 7,
    };
    let report = run_serve_bench(&config, &|_, _, _| {}).expect("bench runs");
    let names: Vec<&str> = report.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 6, "{names:?}");
    for s in &report.scenarios {
        assert_eq!(s.errors, 0, "{}", s.name);
        assert!(s.tokens_per_s > 0.0 && s.ratio_to_base > 0.0, "{s:?}");
        // Every request's prompt is its own: scenarios compare computed
        // prompts, not prefix-cache hits.
        assert_eq!(s.prompt_reuse, 0.0, "{}", s.name);
    }
    let engine = &report.scenarios[..5];
    assert!(engine.iter().all(|s| s.requests == 4 * 2), "{engine:?}");
    assert_eq!(report.cold_loads.len(), 1);
    let cold = &report.cold_loads[0];
    assert_eq!(cold.loads, 2);
    assert!(
        cold.cached_ms.0 > 0.0 && cold.cached_ms.0 <= cold.cached_ms.1,
        "{cold:?}"
    );
    if cfg!(target_os = "linux") {
        let (disk, read) = (
            cold.disk_ms.expect("disk"),
            cold.disk_read_ms.expect("read"),
        );
        assert!(disk.0 > 0.0 && read.0 > 0.0, "{cold:?}");
        assert!(
            cold.file_mib > 1.0,
            "a rank-16 all-linear f16 file: {cold:?}"
        );
    }
    assert!(report.table().contains("prompt reused"));
    assert!(
        work.path().read_dir().expect("work dir").next().is_none(),
        "store removed"
    );
}

#[cfg(unix)]
#[test]
fn fetch_skips_files_that_are_present_and_valid() {
    let cache = credence_node::config::credence_home(None).expect("HOME is set");
    let minilm = models::models_dir(&cache).join(models::EMBEDDING_DIR);
    assert!(
        minilm.exists(),
        "{} is missing: run `credence models fetch`",
        minilm.display()
    );

    // A fresh home whose files are links to the verified cache: nothing to download.
    let home = std::env::temp_dir().join(format!("credence-fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    for wheel in models::DEFAULT_WHEELS {
        for file in wheel.files {
            let link = models::models_dir(&home).join(file.dest);
            std::fs::create_dir_all(link.parent().expect("has a parent")).expect("mkdir");
            std::os::unix::fs::symlink(models::models_dir(&cache).join(file.dest), &link)
                .expect("symlink");
        }
    }
    let mut downloads = 0;
    let mut cached = 0;
    let paths = models::fetch_default_models(&home, &mut |p| match p {
        Progress::Downloading { .. } => downloads += 1,
        Progress::Ready { cached: true, .. } => cached += 1,
        _ => {}
    })
    .expect("verifies");
    assert_eq!((downloads, cached), (0, models::DEFAULT_WHEELS.len()));
    assert!(paths.iter().any(|p| p.ends_with(models::DEFAULT_LLM_FILE)));
    std::fs::remove_dir_all(&home).ok();
}
