//! `credence adapter …` and `credence chat` against a `credence node` process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use credence_model::llama::Model;
use credence_model::lora::random_adapter;
use credence_model::weights::LayerTensor;

use super::{NodeProcess, credence, model_path};

const KEY: &str = "cr-cli-test-key-0123456789ab";

/// `credence` with the connection given by flags and no ambient settings.
fn client_command(home: &Path, url: &str, args: &[&str]) -> Command {
    let mut command = credence();
    command
        .env_remove("CREDENCE_URL")
        .env_remove("CREDENCE_API_KEY")
        .env("CREDENCE_HOME", home)
        .args(args)
        .args(["--url", url]);
    command
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `credence chat` with `input` piped to its stdin.
fn chat(mut command: Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("finishes")
}

#[test]
fn adapter_commands_and_piped_chat_work_against_a_running_node() {
    let home = std::env::temp_dir().join(format!("credence-remote-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).expect("home");
    let base = Model::load(&model_path())
        .expect("model loads")
        .config()
        .clone();
    let dir: PathBuf = home.join("style-adapter");
    random_adapter(&base, 8, &[LayerTensor::Q, LayerTensor::V], 5)
        .save(&dir)
        .expect("adapter saved");
    let node = NodeProcess::start(&home.join("node"), &["--threads", "2", "--api-key", KEY]);
    let cli = |args: &[&str]| client_command(&home, &node.url, args);

    let added = run_ok(cli(&["adapter", "add", "--alias", "style", "--api-key", KEY]).arg(&dir));
    assert!(added.starts_with("added: "), "{added}");
    let listed = run_ok(&mut cli(&["adapter", "ls"]));
    assert!(
        listed.starts_with("ID ") && listed.contains("style"),
        "{listed}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&run_ok(&mut cli(&["adapter", "ls", "--json"]))).expect("JSON");
    let id = json["data"][0]["id"].as_str().expect("an id").to_owned();
    assert_eq!(json["data"][0]["aliases"][0], "style");

    // `ls` shows 12 hex digits; they are enough to name the adapter.
    let pinned = run_ok(&mut cli(&["adapter", "pin", &id[..12], "--api-key", KEY]));
    assert!(pinned.contains("resident, pinned"), "{pinned}");
    let refused = cli(&[
        "adapter",
        "unpin",
        "style",
        "--api-key",
        "cr-wrong-key-000000000",
    ])
    .output()
    .expect("runs");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Piped input: one answer per line, `/reset` is a command, EOF ends the chat.
    let flags = ["--max-tokens", "5", "--temperature", "0"];
    let mut base_chat = cli(&["chat", "--system", "Be brief."]);
    base_chat.args(flags);
    let output = chat(
        base_chat,
        "What is the capital of France?\n/reset\nHello!\n",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.lines().count() >= 2, "two answers: {stdout}");
    assert!(!stdout.contains("/reset"), "{stdout}");
    for adapters in [
        &["--adapter", "style"][..],
        &["--adapter", "style", "--weight", "0.5"],
    ] {
        let mut command = cli(&["chat"]);
        command.args(adapters).args(flags);
        let output = chat(command, "hi\n");
        assert!(
            output.status.success(),
            "{adapters:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let removed = run_ok(&mut cli(&["adapter", "rm", "style", "--api-key", KEY]));
    assert!(removed.contains("removed"), "{removed}");
    let missing = cli(&["adapter", "show", "style"]).output().expect("runs");
    assert!(!missing.status.success());
    drop(node);
    std::fs::remove_dir_all(&home).ok();
}
