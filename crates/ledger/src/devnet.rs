//! A local `hardhat node` for tests and demos of external-chain mode: the
//! pinned `hardhat@2.29.1` from `scripts/contracts/node_modules` (installed by
//! `npm ci` there, which the test script runs), on a free loopback port,
//! killed when dropped. Its accounts come from the same public dev mnemonic
//! as the embedded chain's.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Client, Error, Result};

/// How long hardhat may take to answer after starting. It bounds start-up
/// only (a broken install must fail, not hang); nothing is timed.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `hardhat node`.
#[derive(Debug)]
pub struct Hardhat {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Hardhat {
    /// Starts hardhat from `<repo>/scripts/contracts` and waits until it answers.
    pub fn start(contracts_dir: &Path) -> Result<Self> {
        let bin = contracts_dir.join("node_modules/.bin/hardhat");
        if !bin.exists() {
            return Err(Error::Transport(format!(
                "{} is missing: run `npm ci` in scripts/contracts to install hardhat",
                bin.display()
            )));
        }
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!(
            "credence-hardhat-{}-{port}.log",
            std::process::id()
        ));
        let out = File::create(&log).map_err(|e| Error::io(&log, e))?;
        let err = out.try_clone().map_err(|e| Error::io(&log, e))?;
        let child = Command::new(&bin)
            .current_dir(contracts_dir)
            .args(["--config", "hardhat/hardhat.config.cjs", "node"])
            .args(["--hostname", "127.0.0.1", "--port", &port.to_string()])
            .env("HARDHAT_DISABLE_TELEMETRY_PROMPT", "true")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::Transport(format!("cannot start {}: {e}", bin.display())))?;
        let mut node = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        node.wait_until_ready()?;
        Ok(node)
    }

    /// Its JSON-RPC endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn wait_until_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if Client::http(&self.url, None).is_ok() {
                return Ok(());
            }
            let exited = self
                .child
                .try_wait()
                .map_err(|e| Error::Transport(format!("cannot watch hardhat: {e}")))?;
            if let Some(status) = exited {
                return Err(self.failed(&format!("hardhat node exited ({status})")));
            }
            if Instant::now() >= deadline {
                return Err(self.failed("hardhat node did not answer"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn failed(&self, what: &str) -> Error {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        Error::Transport(format!("{what}:\n{log}"))
    }
}

impl Drop for Hardhat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn free_port() -> Result<u16> {
    // The port is released before hardhat binds it; nothing else on this
    // machine races for ephemeral ports in practice.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Transport(format!("no free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::Transport(format!("no free port: {e}")))
}
