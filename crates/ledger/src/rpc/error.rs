//! JSON-RPC errors, with the codes Ethereum clients branch on.

use alloy_primitives::Bytes;
use alloy_sol_types::{Revert, SolError};
use serde_json::{Value, json};

use crate::Error;

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Not a JSON-RPC request object.
pub const INVALID_REQUEST: i64 = -32600;
/// Unknown method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Wrong or malformed parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// A fault on our side.
pub const INTERNAL_ERROR: i64 = -32603;
/// geth's catch-all for refused transactions and unavailable data; viem and
/// ethers classify these by message ("nonce too low", "insufficient funds"…).
pub const SERVER_ERROR: i64 = -32000;
/// geth's code for a reverted call, with the revert data in `data`.
pub const EXECUTION_REVERTED: i64 = 3;

/// An error object ready to put in a response.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// JSON-RPC error code.
    pub code: i64,
    /// Human-readable message.
    pub message: String,
    /// Extra data (the revert bytes for code 3).
    pub data: Option<Value>,
}

impl RpcError {
    /// An error without data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Bad parameters.
    pub fn params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }

    /// The `error` member of a response.
    pub fn to_json(&self) -> Value {
        match &self.data {
            Some(data) => json!({ "code": self.code, "message": self.message, "data": data }),
            None => json!({ "code": self.code, "message": self.message }),
        }
    }

    fn reverted(output: &Bytes) -> Self {
        // Decode `Error(string)` so the message carries the reason, as geth does.
        let message = match Revert::abi_decode(output) {
            Ok(r) => format!("execution reverted: {}", r.reason),
            Err(_) => "execution reverted".to_owned(),
        };
        Self {
            code: EXECUTION_REVERTED,
            message,
            data: Some(Value::String(output.to_string())),
        }
    }
}

impl From<Error> for RpcError {
    fn from(e: Error) -> Self {
        match &e {
            Error::Reverted { output } => Self::reverted(output),
            Error::Rejected(_) | Error::InvalidTransaction(_) | Error::NotFound(_) => {
                Self::new(SERVER_ERROR, e.to_string())
            }
            Error::Halted(_) => Self::new(SERVER_ERROR, e.to_string()),
            Error::Invalid(_) => Self::params(e.to_string()),
            Error::Rpc {
                code,
                message,
                data,
            } => Self {
                code: *code,
                message: message.clone(),
                data: data.clone(),
            },
            Error::Io { .. }
            | Error::Transport(_)
            | Error::BadResponse(_)
            | Error::NoSigner
            | Error::Corrupt(_)
            | Error::Mnemonic(_)
            | Error::Genesis(_)
            | Error::Evm(_) => {
                tracing::error!(error = %e, "rpc internal error");
                Self::new(INTERNAL_ERROR, "internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revert_reason_is_decoded_into_the_message() {
        let output: Bytes = Revert::from("no").abi_encode().into();
        let e = RpcError::from(Error::Reverted {
            output: output.clone(),
        });
        assert_eq!(e.code, EXECUTION_REVERTED);
        assert_eq!(e.message, "execution reverted: no");
        assert_eq!(e.data, Some(Value::String(output.to_string())));
    }

    #[test]
    fn custom_errors_keep_their_data() {
        let output = Bytes::from(vec![0xde, 0xad, 0xbe, 0xef]);
        let e = RpcError::from(Error::Reverted { output });
        assert_eq!(e.message, "execution reverted");
        assert_eq!(e.data, Some(Value::String("0xdeadbeef".into())));
    }

    #[test]
    fn rejections_use_the_server_error_code() {
        let e = RpcError::from(Error::Rejected(
            "nonce too low: next nonce 3, tx nonce 1".into(),
        ));
        assert_eq!(
            (e.code, e.message.as_str()),
            (SERVER_ERROR, "nonce too low: next nonce 3, tx nonce 1")
        );
    }
}
