//! `credence chain|wallet|deposit|stake|unstake` against a `credence node`
//! process and its embedded chain.

use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::Value;

use super::{NodeProcess, credence, model_path};

/// `credence <args> --url <node>` with `home` as the CLI's data directory
/// and no connection settings from the environment.
fn cli(home: &Path, url: &str, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--url", url]);
    local(home, &all)
}

/// `credence <args>` with `home` as the data directory (wallet commands).
fn local(home: &Path, args: &[&str]) -> Output {
    credence()
        .env_remove("CREDENCE_URL")
        .env_remove("CREDENCE_RPC")
        .env("CREDENCE_HOME", home)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runs")
}

/// `credence wallet import --force` with `key` on stdin; returns the address printed.
fn import(home: &Path, key: &str) -> String {
    use std::io::Write;
    let mut child = credence()
        .env("CREDENCE_HOME", home)
        .args(["wallet", "import", "--force"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    writeln!(stdin, "{key}").expect("write key");
    drop(stdin);
    ok(child.wait_with_output().expect("exits"))
        .trim()
        .to_owned()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn failure(output: Output) -> String {
    assert!(!output.status.success(), "expected a failure");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// An OPEN amount from `--json` output (a 0x-hex quantity) in base units.
fn units(v: &Value) -> u128 {
    let hex = v.as_str().expect("hex string");
    u128::from_str_radix(hex.trim_start_matches("0x"), 16).expect("hex")
}

const OPEN: u128 = 1_000_000_000_000_000_000;

#[test]
fn chain_commands_drive_the_nodes_embedded_chain() {
    let dir = std::env::temp_dir().join(format!("credence-chain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (node_home, home) = (dir.join("node"), dir.join("cli"));
    let node = NodeProcess::start(&node_home, &["--threads", "1"]);
    let url = node.url.as_str();

    // Status: the embedded chain and the addresses it reports itself.
    let status = json(&ok(cli(&home, url, &["chain", "status", "--json"])));
    assert_eq!(status["chainId"], 16_120);
    assert!(status["deployment"]["escrow"].is_string(), "{status}");
    let text = ok(cli(&home, url, &["chain", "status"]));
    assert!(text.contains("chain id:   16120"), "{text}");

    // Accounts: the ten funded dev accounts.
    let accounts = json(&ok(cli(&home, url, &["chain", "accounts", "--json"])));
    let rows = accounts.as_array().expect("array");
    assert_eq!(rows.len(), 10);
    assert!(
        rows[0]["address"]
            .as_str()
            .is_some_and(|a| a.eq_ignore_ascii_case("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"))
    );
    assert_eq!(units(&rows[3]["open"]), 1_000_000 * OPEN);

    // A new wallet: saved privately, its key printed only on request.
    let address = ok(local(&home, &["wallet", "new"])).trim().to_owned();
    assert!(
        address.starts_with("0x") && address.len() == 42,
        "{address}"
    );
    let key_file = home.join("wallet.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(ok(local(&home, &["wallet", "show"])).trim(), address);
    let shown = ok(local(&home, &["wallet", "show", "--private-key"]));
    let key = std::fs::read_to_string(&key_file).expect("key");
    assert!(shown.contains(key.trim()), "the key is shown when asked");
    assert!(failure(local(&home, &["wallet", "new"])).contains("already exists"));
    let imported = import(
        &home,
        "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    );
    assert!(
        imported.eq_ignore_ascii_case("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
        "{imported}"
    );
    // Back to the empty wallet for the refusal below.
    let fresh_key = key.trim().to_owned();
    assert_eq!(import(&home, &fresh_key), address);
    // The new wallet holds no OPEN: a clear refusal, before any gas is spent.
    let err = failure(cli(&home, url, &["deposit", "1"]));
    assert!(err.contains("holds 0 OPEN but 1 OPEN is needed"), "{err}");

    // Deposit and stake from dev accounts, with exact decimal amounts.
    let out = ok(cli(&home, url, &["deposit", "1.5", "--dev-account", "3"]));
    assert!(out.contains("deposited 1.5 OPEN"), "{out}");
    let out = ok(cli(
        &home,
        url,
        &["stake", "2.25", "--dev-account", "4", "--json"],
    ));
    let staked = json(&out);
    assert_eq!(units(&staked["balances"]["staked"]), 2 * OPEN + OPEN / 4);
    let accounts = json(&ok(cli(&home, url, &["chain", "accounts", "--json"])));
    assert_eq!(units(&accounts[3]["escrow"]), OPEN + OPEN / 2);
    assert_eq!(
        units(&accounts[3]["open"]),
        1_000_000 * OPEN - OPEN - OPEN / 2
    );
    assert_eq!(units(&accounts[4]["staked"]), 2 * OPEN + OPEN / 4);

    // Unstaking starts a cooldown; releasing early is refused plainly.
    let out = ok(cli(&home, url, &["unstake", "--dev-account", "4"]));
    assert!(out.contains("cooldown started"), "{out}");
    let err = failure(cli(
        &home,
        url,
        &["unstake", "--complete", "--dev-account", "4"],
    ));
    assert!(err.contains("cooling down"), "{err}");

    // Bad amounts never reach the chain.
    let err = failure(cli(&home, url, &["deposit", "1.2.3", "--dev-account", "3"]));
    assert!(err.contains("invalid amount `1.2.3`"), "{err}");
    let err = failure(cli(
        &home,
        url,
        &["stake", "0.0000000000000000001", "--dev-account", "3"],
    ));
    assert!(err.contains("more than 18 decimal places"), "{err}");
    drop(node);
    std::fs::remove_dir_all(&dir).ok();
}

/// Writes a small random PEFT adapter for the served model into `dir`.
fn adapter_dir(dir: &Path) {
    let model = credence_model::llama::Model::load(&model_path()).expect("model");
    credence_model::lora::random_adapter(
        model.config(),
        4,
        &[credence_model::weights::LayerTensor::Q],
        11,
    )
    .save(dir)
    .expect("saved");
}

/// Piped `credence chat` with `args`, saying "hi".
fn chat(home: &Path, url: &str, args: &[&str]) -> Output {
    use std::io::Write;
    let mut child = credence()
        .env_remove("CREDENCE_URL")
        .env("CREDENCE_HOME", home)
        .args([
            "chat",
            "--max-tokens",
            "4",
            "--temperature",
            "0",
            "--url",
            url,
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(b"hi\n")
        .expect("stdin");
    child.wait_with_output().expect("exits")
}

#[test]
fn a_paid_chat_is_settled_and_its_earnings_claimed_from_the_command_line() {
    let dir = tempfile_dir("credence-pay");
    let node = NodeProcess::start(&dir, &["--threads", "1"]);
    let url = node.url.as_str();

    // The developer uploads an adapter and registers it for sale (no
    // datanet: the contributors' part goes to the owner).
    let peft = dir.join("peft");
    adapter_dir(&peft);
    let added = json(&ok(cli(
        &dir,
        url,
        &[
            "adapter",
            "add",
            peft.to_str().expect("utf-8"),
            "--alias",
            "tuned",
            "--json",
        ],
    )));
    assert!(added["id"].is_string(), "{added}");
    let registered = json(&ok(cli(
        &dir,
        url,
        &[
            "adapter",
            "register",
            "tuned",
            "--price",
            "1",
            "--split",
            "30/60/10",
            "--dev-account",
            "3",
            "--json",
        ],
    )));
    assert_eq!(registered["registryId"], "1", "{registered}");
    let twice = failure(cli(
        &dir,
        url,
        &[
            "adapter",
            "register",
            "tuned",
            "--price",
            "1",
            "--dev-account",
            "3",
        ],
    ));
    assert!(twice.contains("already registered"), "{twice}");
    let chain = credence_ledger::Client::http(&format!("{url}/rpc"), None).expect("rpc");

    // Without a voucher the priced adapter is refused; with --pay it answers.
    let refused = failure(chat(&dir, url, &["--adapter", "tuned"]));
    assert!(refused.contains("payment required"), "{refused}");
    ok(cli(&dir, url, &["deposit", "5", "--dev-account", "1"]));
    let paid = chat(
        &dir,
        url,
        &["--adapter", "tuned", "--pay", "1", "--dev-account", "1"],
    );
    let stderr = String::from_utf8_lossy(&paid.stderr).into_owned();
    assert!(paid.status.success(), "{stderr}");
    assert!(stderr.contains("(receipt rcpt-"), "{stderr}");

    // Two settlement rounds around the challenge window, then the owner claims.
    let api =
        credence_node::client::NodeClient::from_config(&credence_node::client::ClientConfig {
            url: url.to_owned(),
            api_key: None,
            home: Some(dir.clone()),
        })
        .expect("client");
    assert_eq!(api.run_epoch().expect("round")["posted"], 1);
    chain.increase_time(3601).expect("time");
    assert_eq!(
        api.run_epoch().expect("round")["finalized"],
        serde_json::json!([1])
    );
    let claimed = json(&ok(cli(
        &dir,
        url,
        &["claim", "--dev-account", "3", "--json"],
    )));
    let amount: u128 = claimed["paid"]
        .as_str()
        .expect("paid")
        .parse()
        .expect("amount");
    assert!(amount > 0, "{claimed}");
    let again = failure(cli(&dir, url, &["claim", "--dev-account", "3"]));
    assert!(again.contains("already claimed"), "{again}");
    drop(node);
    std::fs::remove_dir_all(&dir).ok();
}

/// A fresh directory under the system temp dir, unique to this process.
fn tempfile_dir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
