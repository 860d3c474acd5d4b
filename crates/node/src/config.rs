//! Node configuration: one struct for command-line flags and the TOML file.
//!
//! Precedence, highest first: a flag given on the command line, an environment
//! variable (`CREDENCE_HOME`), the TOML file (`--config`), the defaults in
//! [`NodeConfig::default`]. Defaults are named constants so that the flag help
//! and `Default` cannot drift apart.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::ArgMatches;
use clap::parser::ValueSource;
use credence_model::lora::LoraDtype;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default listen address: loopback only, so a fresh node is not exposed.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// Default model: the cached SmolLM2 GGUF (see [`crate::models`]).
pub const DEFAULT_MODEL: &str = "default";
/// Default generation queue length.
pub const DEFAULT_QUEUE_SIZE: usize = 64;
/// Default request body limit (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default completion length when a request names none.
pub const DEFAULT_MAX_TOKENS: usize = 512;
/// Default RAM budget for decoded adapters (MiB).
pub const DEFAULT_ADAPTER_CACHE_MIB: usize = 1024;
/// Default RAM budget for the KV cache (MiB).
pub const DEFAULT_KV_CACHE_MIB: usize = 1024;
/// Default cap on an adapter upload (MiB).
pub const DEFAULT_MAX_ADAPTER_UPLOAD_MIB: usize = 256;
/// Default seconds between settlement rounds.
pub const DEFAULT_EPOCH_SECONDS: u64 = 3600;

/// How a node runs. Every field is a `--flag` and a TOML key of the same name
/// (with `-` for `_` on the command line).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Address and port to listen on.
    #[arg(long, default_value_t = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Model to serve: a .gguf file, a directory with config.json + *.safetensors
    /// + tokenizer.json, or `default` (the cached SmolLM2-135M-Instruct).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,

    /// Compute threads for generation (0 = one per available core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,

    /// Generation requests that may wait in the queue; more are refused with 429.
    #[arg(long, default_value_t = DEFAULT_QUEUE_SIZE)]
    pub queue_size: usize,

    /// Largest accepted request body in bytes; larger bodies get 413.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Completion length for requests that set no max_tokens.
    #[arg(long, default_value_t = DEFAULT_MAX_TOKENS)]
    pub default_max_tokens: usize,

    /// Data directory (models, caches) [default: $HOME/.cache/credence].
    #[arg(long, env = "CREDENCE_HOME")]
    pub home: Option<PathBuf>,

    /// RAM budget for decoded LoRA adapters, in MiB; colder adapters are
    /// evicted (least recently used first) and reloaded on demand.
    #[arg(long, default_value_t = DEFAULT_ADAPTER_CACHE_MIB)]
    pub adapter_cache_mib: usize,

    /// Element type adapters are held in while served: `f16` halves their
    /// memory and the bandwidth a batch of distinct adapters needs; `q8`
    /// (bytes with a scale per 32 values) takes 1.125 bytes per value, for
    /// steps with many distinct adapters; `f32` keeps the files' values
    /// exactly.
    #[arg(long, default_value_t = LoraDtype::F16)]
    pub lora_dtype: LoraDtype,

    /// RAM budget for the KV cache shared by running sequences, in MiB;
    /// requests wait (or get 429) when it is spent.
    #[arg(long, default_value_t = DEFAULT_KV_CACHE_MIB)]
    pub kv_cache_mib: usize,

    /// Largest adapter upload in MiB; larger uploads get 413.
    #[arg(long, default_value_t = DEFAULT_MAX_ADAPTER_UPLOAD_MIB)]
    pub max_adapter_upload_mib: usize,

    /// API keys accepted by the write endpoints (repeatable). When none is
    /// given, the node creates one in `<home>/api-key` on first start.
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_keys: Vec<String>,

    /// Price of the base model per 1,000 tokens, in OPEN (for example
    /// `0.001`); `0` serves it free. Registered adapters add their own price.
    #[arg(long, default_value = "0")]
    pub base_price: String,

    /// Seconds between settlement rounds (redeem vouchers, post the epoch
    /// root, finalize); 0 settles only on `POST /v1/epochs`.
    #[arg(long, default_value_t = DEFAULT_EPOCH_SECONDS)]
    pub epoch_seconds: u64,

    /// JSON-RPC URL of an external EVM chain to settle on instead of the
    /// embedded one (which is then not started, and `/rpc` is not served).
    #[arg(long, value_name = "URL")]
    pub chain_rpc: Option<String>,

    /// File holding the hex private key the node settles with on the
    /// external chain (it must be the distributor's poster).
    #[arg(long, value_name = "FILE")]
    pub chain_key: Option<PathBuf>,

    /// The contracts on the external chain [default: <home>/deployment.json,
    /// as written by `credence chain deploy`].
    #[arg(long, value_name = "FILE")]
    pub chain_deployment: Option<PathBuf>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            model: DEFAULT_MODEL.to_owned(),
            threads: 0,
            queue_size: DEFAULT_QUEUE_SIZE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            default_max_tokens: DEFAULT_MAX_TOKENS,
            home: None,
            adapter_cache_mib: DEFAULT_ADAPTER_CACHE_MIB,
            lora_dtype: LoraDtype::F16,
            kv_cache_mib: DEFAULT_KV_CACHE_MIB,
            max_adapter_upload_mib: DEFAULT_MAX_ADAPTER_UPLOAD_MIB,
            api_keys: Vec::new(),
            base_price: "0".to_owned(),
            epoch_seconds: DEFAULT_EPOCH_SECONDS,
            chain_rpc: None,
            chain_key: None,
            chain_deployment: None,
        }
    }
}

/// Copies each listed field from `$cli` into `$self` when it was given explicitly.
macro_rules! override_explicit {
    ($self:ident, $cli:ident, $matches:ident; $($field:ident),+ $(,)?) => {
        $(
            if is_explicit($matches, stringify!($field)) {
                $self.$field = $cli.$field.clone();
            }
        )+
    };
}

fn is_explicit(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

impl NodeConfig {
    /// Parses a TOML configuration; missing keys keep their defaults.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::ConfigFile {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
        Self::from_toml(&text, path)
    }

    /// The effective configuration: the file (or defaults) overridden by every
    /// value given explicitly on the command line or through the environment.
    /// `matches` are the argument matches `cli` was parsed from.
    pub fn layered(file: Option<&Path>, cli: &Self, matches: &ArgMatches) -> Result<Self> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        override_explicit!(config, cli, matches;
            listen, model, threads, queue_size, max_body_bytes, default_max_tokens, home,
            adapter_cache_mib, lora_dtype, kv_cache_mib, max_adapter_upload_mib, api_keys, base_price,
            epoch_seconds, chain_rpc, chain_key, chain_deployment);
        config.validate()?;
        Ok(config)
    }

    /// Rejects values that cannot work, naming the setting.
    pub fn validate(&self) -> Result<()> {
        if self.model.trim().is_empty() {
            return Err(Error::config(
                "model",
                "must name a file, a directory or `default`",
            ));
        }
        if self.threads > 1024 {
            return Err(Error::config(
                "threads",
                format!("{} is more than 1024", self.threads),
            ));
        }
        if !(1..=1_000_000).contains(&self.queue_size) {
            return Err(Error::config("queue_size", "must be between 1 and 1000000"));
        }
        if !(1024..=(1 << 30)).contains(&self.max_body_bytes) {
            return Err(Error::config(
                "max_body_bytes",
                "must be between 1 KiB and 1 GiB",
            ));
        }
        if self.default_max_tokens == 0 {
            return Err(Error::config("default_max_tokens", "must be at least 1"));
        }
        if self.home.as_ref().is_some_and(|h| h.as_os_str().is_empty()) {
            return Err(Error::config("home", "must not be empty"));
        }
        if !(1..=1 << 20).contains(&self.adapter_cache_mib) {
            return Err(Error::config(
                "adapter_cache_mib",
                "must be between 1 MiB and 1 TiB",
            ));
        }
        if !(1..=1 << 20).contains(&self.kv_cache_mib) {
            return Err(Error::config(
                "kv_cache_mib",
                "must be between 1 MiB and 1 TiB",
            ));
        }
        if !(1..=16 << 10).contains(&self.max_adapter_upload_mib) {
            return Err(Error::config(
                "max_adapter_upload_mib",
                "must be between 1 MiB and 16 GiB",
            ));
        }
        if let Some(bad) = self.api_keys.iter().find(|k| !crate::keys::is_valid_key(k)) {
            let shown: String = bad.chars().take(4).collect();
            return Err(Error::config(
                "api_keys",
                format!(
                    "key starting `{shown}` must be 16–256 printable ASCII characters without spaces"
                ),
            ));
        }
        self.base_price_units()?;
        match (&self.chain_rpc, &self.chain_key) {
            (Some(_), None) => {
                return Err(Error::config(
                    "chain_key",
                    "an external chain (chain_rpc) needs the node's settlement key file",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::config("chain_key", "is only used with chain_rpc"));
            }
            _ => {}
        }
        if self.chain_deployment.is_some() && self.chain_rpc.is_none() {
            return Err(Error::config(
                "chain_deployment",
                "is only used with chain_rpc (the embedded chain knows its contracts)",
            ));
        }
        Ok(())
    }

    /// The base model's price per 1,000 tokens in token base units.
    pub fn base_price_units(&self) -> Result<u128> {
        let units = credence_ledger::units::parse_amount(&self.base_price)
            .map_err(|e| Error::config("base_price", e.to_string()))?;
        u128::try_from(units).map_err(|_| Error::config("base_price", "is too large"))
    }

    /// Compute threads to use: the configured number, or one per available core.
    pub fn effective_threads(&self) -> usize {
        effective_threads(self.threads)
    }

    /// The data directory: `home`, else `$CREDENCE_HOME`, else `$HOME/.cache/credence`.
    pub fn home_dir(&self) -> Result<PathBuf> {
        credence_home(self.home.as_deref())
    }
}

/// `threads`, or one per available core when it is 0.
pub fn effective_threads(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// The data directory: `explicit`, else `$CREDENCE_HOME`, else `$HOME/.cache/credence`.
pub fn credence_home(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_owned());
    }
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("CREDENCE_HOME") {
        return Ok(PathBuf::from(dir));
    }
    non_empty("HOME")
        .map(|home| PathBuf::from(home).join(".cache").join("credence"))
        .ok_or(Error::NoHome)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        node: NodeConfig,
    }

    fn parse(args: &[&str]) -> (NodeConfig, ArgMatches) {
        let matches = TestCli::command()
            .try_get_matches_from(std::iter::once("credence").chain(args.iter().copied()))
            .expect("valid flags");
        let cli = TestCli::from_arg_matches(&matches).expect("valid flags");
        (cli.node, matches)
    }

    #[test]
    fn flag_defaults_equal_struct_defaults() {
        let (cli, _) = parse(&[]);
        // `home` may come from CREDENCE_HOME in the test environment.
        assert_eq!(NodeConfig { home: None, ..cli }, NodeConfig::default());
    }

    #[test]
    fn command_line_overrides_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("credence-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("node.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\nqueue_size = 5\nthreads = 3\nlora_dtype = \"f32\"\n",
        )
        .expect("write config");

        let (cli, matches) = parse(&["--queue-size", "7", "--model", "/m.gguf"]);
        let config = NodeConfig::layered(Some(&file), &cli, &matches).expect("valid");
        assert_eq!(config.listen, "0.0.0.0:9000".parse().expect("addr"));
        assert_eq!(config.queue_size, 7);
        assert_eq!(config.threads, 3);
        assert_eq!(config.model, "/m.gguf");
        assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(config.lora_dtype, LoraDtype::F32);
        let (cli, matches) = parse(&["--lora-dtype", "f16"]);
        let config = NodeConfig::layered(Some(&file), &cli, &matches).expect("valid");
        assert_eq!(config.lora_dtype, LoraDtype::F16);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn every_field_can_be_overridden_from_the_command_line() {
        let (cli, matches) = parse(&[
            "--listen=127.0.0.1:1",
            "--model=m",
            "--threads=2",
            "--queue-size=3",
            "--max-body-bytes=4096",
            "--default-max-tokens=5",
            "--home=/h",
        ]);
        let config = NodeConfig::layered(None, &cli, &matches).expect("valid");
        assert_eq!(config, cli);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected_by_name() {
        let err = NodeConfig::from_toml("qeue_size = 3", Path::new("x.toml")).expect_err("typo");
        assert!(err.to_string().contains("qeue_size"), "{err}");

        let bad = NodeConfig {
            queue_size: 0,
            ..NodeConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Config {
                field: "queue_size",
                ..
            })
        ));
        let bad = NodeConfig {
            max_body_bytes: 10,
            ..NodeConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Config {
                field: "max_body_bytes",
                ..
            })
        ));
        NodeConfig::default()
            .validate()
            .expect("defaults are valid");
    }
}
