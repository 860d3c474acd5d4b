//! `NodeClient` against a real node (real model, real sockets) started in-process.

use std::ops::ControlFlow;
use std::path::Path;

use credence_model::config::LlamaConfig;
use credence_model::lora::random_adapter;
use credence_model::weights::LayerTensor;
use credence_node::client::{
    AdapterWeight, ChatMessage, ChatParams, ChatReply, ClientConfig, ClientError, NodeClient,
};
use credence_node::{Node, NodeConfig};

use super::model_path;

pub(crate) const KEY: &str = "cr-client-test-key-0123456789";

/// A node serving on a loopback port from its own runtime; stops when dropped.
pub(crate) struct RunningNode {
    pub(crate) url: String,
    pub(crate) base: LlamaConfig,
    /// The node's datanet store (shared with the running server).
    pub(crate) datanets: std::sync::Arc<credence_datanet::Datanets>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Runs the server; dropping it (after the stop signal) ends the node.
    _runtime: tokio::runtime::Runtime,
}

impl RunningNode {
    fn start(home: &Path) -> Self {
        Self::start_with(home, |_| {})
    }

    /// Starts a node whose configuration `tweak` may change first.
    pub(crate) fn start_with(home: &Path, tweak: impl FnOnce(&mut NodeConfig)) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut config = NodeConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            model: model_path().display().to_string(),
            threads: 2,
            home: Some(home.to_owned()),
            api_keys: vec![KEY.to_owned()],
            ..NodeConfig::default()
        };
        tweak(&mut config);
        let node = runtime.block_on(Node::start(&config)).expect("node starts");
        let datanets = std::sync::Arc::clone(node.datanets());
        let url = format!("http://{}", node.local_addr());
        let base = node.state().model().config().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(node.serve(async move {
            let _ = stopped.await;
        }));
        Self {
            url,
            base,
            datanets,
            stop: Some(stop),
            _runtime: runtime,
        }
    }

    pub(crate) fn client(&self, key: &str) -> NodeClient {
        NodeClient::new(&self.url, Some(key.to_owned())).expect("valid URL")
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        // Dropping the runtime afterwards cancels whatever is still in flight.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) fn save_adapter(base: &LlamaConfig, dir: &Path, seed: u64) {
    random_adapter(base, 8, &[LayerTensor::Q, LayerTensor::V], seed)
        .save(dir)
        .expect("adapter saved");
}

/// Streams a short greedy answer and checks the deltas add up to it.
fn chat(client: &NodeClient, model: Option<&str>, adapters: Vec<AdapterWeight>) -> ChatReply {
    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "What is the capital of France?"),
    ];
    let params = ChatParams {
        max_tokens: Some(6),
        temperature: Some(0.0),
        seed: Some(1),
        adapters,
    };
    let mut deltas = String::new();
    let reply = client
        .chat_stream(model, &messages, &params, &mut |delta| {
            deltas.push_str(delta);
            ControlFlow::Continue(())
        })
        .expect("chat streams");
    assert_eq!(deltas, reply.text);
    assert!(!reply.abandoned);
    assert!(
        matches!(reply.finish_reason.as_deref(), Some("stop" | "length")),
        "{reply:?}"
    );
    reply
}

#[test]
fn a_client_manages_adapters_and_chats_through_a_running_node() {
    let home = tempfile::tempdir().expect("tempdir");
    let node = RunningNode::start(home.path());
    let client = node.client(KEY);
    let style = home.path().join("upload-style");
    let tone = home.path().join("upload-tone");
    save_adapter(&node.base, &style, 11);
    save_adapter(&node.base, &tone, 12);

    let added = client.add_adapter(&style, Some("style")).expect("uploaded");
    assert!(added.created);
    let id = added.adapter.id.clone();
    assert_eq!(id.len(), 64);
    assert_eq!(added.adapter.aliases, vec!["style".to_owned()]);
    assert_eq!((added.adapter.min_rank, added.adapter.max_rank), (8, 8));
    assert_eq!(
        added.adapter.modules,
        2 * node.base.n_layers,
        "q and v per layer"
    );
    assert!(added.adapter.bytes > 0);
    let again = client.add_adapter(&style, None).expect("idempotent");
    assert!(!again.created);
    assert_eq!(again.adapter.id, id);
    let tone_id = client
        .add_adapter(&tone, Some("tone"))
        .expect("second upload")
        .adapter
        .id;
    assert_ne!(tone_id, id);

    let listed = client.list_adapters().expect("list");
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|a| a.id == id));
    assert_eq!(client.get_adapter("style").expect("by alias").id, id);
    assert_eq!(
        client.get_adapter(&id).expect("by id").extra["object"],
        "adapter"
    );

    let loaded = client.load_adapter("style").expect("load");
    assert!(loaded.resident && !loaded.pinned);
    let pinned = client.pin_adapter(&id).expect("pin");
    assert!(pinned.resident && pinned.pinned);
    let unpinned = client.unpin_adapter("style").expect("unpin");
    assert!(unpinned.resident && !unpinned.pinned);
    let unloaded = client.unload_adapter("style").expect("unload");
    assert!(!unloaded.resident);

    let base = chat(&client, None, Vec::new());
    assert!(!base.text.trim().is_empty(), "{base:?}");
    chat(&client, Some("style"), Vec::new());
    let composed = vec![
        AdapterWeight {
            id: "style".into(),
            weight: 1.0,
        },
        AdapterWeight {
            id: tone_id,
            weight: 0.5,
        },
    ];
    chat(&client, None, composed);
    assert!(
        client.get_adapter("style").expect("still there").resident,
        "chatting loads it on demand"
    );

    let err = client
        .chat_stream(
            Some("no-such-adapter"),
            &[ChatMessage::new("user", "hi")],
            &ChatParams::default(),
            &mut |_| ControlFlow::Continue(()),
        )
        .expect_err("unknown model");
    assert_eq!(err.status(), Some(404), "{err}");
    assert!(err.to_string().contains("no-such-adapter"), "{err}");

    client.remove_adapter("style").expect("removed");
    let err = client.get_adapter(&id).expect_err("gone");
    assert_eq!(err.status(), Some(404), "{err}");
    assert_eq!(client.list_adapters().expect("list").len(), 1);
}

#[test]
fn write_endpoints_need_the_right_key_and_the_key_file_is_found() {
    let home = tempfile::tempdir().expect("tempdir");
    let node = RunningNode::start(home.path());
    let dir = home.path().join("upload");
    save_adapter(&node.base, &dir, 21);

    let wrong = node.client("cr-not-the-key-at-all-000");
    let err = wrong.add_adapter(&dir, None).expect_err("wrong key");
    assert_eq!(err.status(), Some(401), "{err}");
    assert_eq!(err.code(), Some("invalid_api_key"));
    let text = err.to_string();
    assert!(text.contains("401") && text.contains("--api-key"), "{text}");
    // Reads stay open without a key.
    assert!(wrong.list_adapters().expect("list").is_empty());
    let keyless = NodeClient::new(&node.url, None).expect("valid URL");
    assert_eq!(
        keyless.pin_adapter("x").expect_err("no key").status(),
        Some(401)
    );

    // A client home whose api-key file holds the node's key authenticates.
    let client_home = tempfile::tempdir().expect("tempdir");
    std::fs::write(client_home.path().join("api-key"), format!("{KEY}\n")).expect("key file");
    let config = ClientConfig {
        url: format!("{}/", node.url),
        api_key: None,
        home: Some(client_home.path().to_owned()),
    };
    let from_file = NodeClient::from_config(&config).expect("client");
    let added = from_file.add_adapter(&dir, Some("filed")).expect("upload");
    assert!(from_file.pin_adapter("filed").expect("pin").pinned);

    // An explicit key wins over the file; a malformed one is refused locally.
    let explicit = ClientConfig {
        api_key: Some("cr-not-the-key-at-all-000".into()),
        ..config.clone()
    };
    let err = NodeClient::from_config(&explicit)
        .expect("client")
        .remove_adapter(&added.adapter.id)
        .expect_err("wrong explicit key");
    assert_eq!(err.status(), Some(401));
    let malformed = ClientConfig {
        api_key: Some("short".into()),
        ..config
    };
    assert!(matches!(
        NodeClient::from_config(&malformed),
        Err(ClientError::Key(_))
    ));
}

#[test]
fn a_node_that_is_not_running_gets_a_hint_to_start_one() {
    // A port that was free a moment ago: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let client = NodeClient::new(&url, None).expect("valid URL");
    let err = client.list_adapters().expect_err("nothing listens");
    assert!(matches!(err, ClientError::NotRunning { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&url) && text.contains("credence node"),
        "{text}"
    );
    let err = client
        .chat_stream(None, &[], &ChatParams::default(), &mut |_| {
            ControlFlow::Continue(())
        })
        .expect_err("nothing listens");
    assert!(matches!(err, ClientError::NotRunning { .. }), "{err:?}");
    assert!(NodeClient::new("https://127.0.0.1:1", None).is_err());
}
