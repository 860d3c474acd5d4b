//! The Ethereum JSON-RPC endpoint of the embedded chain: the subset viem,
//! ethers, alloy, cast and MetaMask use (see docs/ledger.md for the list).
//!
//! [`router`] returns an axum `Router` answering `POST /` with single or
//! batched requests; the node mounts it (on loopback). Each request runs on
//! the blocking pool because mining fsyncs and execution is CPU work.

mod error;
mod params;
mod render;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes as BodyBytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub use error::{
    EXECUTION_REVERTED, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND,
    PARSE_ERROR, RpcError, SERVER_ERROR,
};

use crate::chain::{BlockId, CallRequest, Chain};
use params::Params;
use render::q;

/// Largest request body accepted (a batch of large deployments fits).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Most requests in one batch.
pub const MAX_BATCH: usize = 100;
/// Most blocks one `eth_feeHistory` covers.
const MAX_FEE_HISTORY: u64 = 1024;

/// The JSON-RPC router over a chain: `POST /` (and CORS preflight, so
/// browser wallets and dapps on other origins can call it).
pub fn router(chain: Arc<Chain>) -> Router {
    Router::new()
        .route("/", post(handle).options(preflight))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(chain)
}

async fn preflight() -> Response {
    with_cors(StatusCode::NO_CONTENT.into_response())
}

fn with_cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    r
}

async fn handle(State(chain): State<Arc<Chain>>, body: BodyBytes) -> Response {
    let reply = match tokio::task::spawn_blocking(move || handle_body(&chain, &body)).await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::error!(error = %e, "rpc handler panicked");
            Some(error_response(
                Value::Null,
                &RpcError::new(INTERNAL_ERROR, "internal error"),
            ))
        }
    };
    // Notifications (no id) get no response body, per JSON-RPC 2.0.
    let response = match reply {
        Some(v) => axum::Json(v).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    };
    with_cors(response)
}

/// Handles one HTTP body: a request or a batch. Public for in-process use.
pub fn handle_body(chain: &Chain, body: &[u8]) -> Option<Value> {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return Some(error_response(
                Value::Null,
                &RpcError::new(PARSE_ERROR, format!("parse error: {e}")),
            ));
        }
    };
    match parsed {
        Value::Array(batch) if batch.is_empty() => Some(error_response(
            Value::Null,
            &RpcError::new(INVALID_REQUEST, "empty batch"),
        )),
        Value::Array(batch) if batch.len() > MAX_BATCH => Some(error_response(
            Value::Null,
            &RpcError::new(INVALID_REQUEST, format!("batch larger than {MAX_BATCH}")),
        )),
        Value::Array(batch) => {
            let replies: Vec<Value> = batch.iter().filter_map(|r| handle_one(chain, r)).collect();
            (!replies.is_empty()).then_some(Value::Array(replies))
        }
        single => handle_one(chain, &single),
    }
}

fn handle_one(chain: &Chain, req: &Value) -> Option<Value> {
    let Some(obj) = req.as_object() else {
        return Some(error_response(
            Value::Null,
            &RpcError::new(INVALID_REQUEST, "request must be an object"),
        ));
    };
    let id = obj.get("id").cloned();
    let method = match (
        obj.get("jsonrpc").and_then(Value::as_str),
        obj.get("method").and_then(Value::as_str),
    ) {
        (Some("2.0"), Some(m)) => m,
        _ => {
            let e = RpcError::new(INVALID_REQUEST, "expected jsonrpc \"2.0\" and a method");
            return Some(error_response(id.unwrap_or(Value::Null), &e));
        }
    };
    let result = Params::new(obj.get("params").unwrap_or(&Value::Null))
        .and_then(|p| dispatch(chain, method, &p));
    let id = id?;
    Some(match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(e) => error_response(id, &e),
    })
}

fn error_response(id: Value, e: &RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": e.to_json() })
}

/// Reads of account state exist only for the newest block: the chain keeps
/// one state, not one per height.
fn require_latest(chain: &Chain, id: BlockId) -> Result<(), RpcError> {
    let head = chain.block_number();
    match chain.resolve(id) {
        Some(n) if n == head => Ok(()),
        Some(_) => Err(RpcError::new(
            SERVER_ERROR,
            "historical state is not available: this chain keeps only the latest state",
        )),
        None => Err(RpcError::new(SERVER_ERROR, "header not found")),
    }
}

fn dispatch(chain: &Chain, method: &str, p: &Params<'_>) -> Result<Value, RpcError> {
    Ok(match method {
        "web3_clientVersion" => json!(concat!("credence/", env!("CARGO_PKG_VERSION"), "/revm")),
        "eth_chainId" => q(chain.chain_id()),
        "net_version" => json!(chain.chain_id().to_string()),
        "net_listening" => json!(true),
        "eth_syncing" | "eth_mining" => json!(false),
        "eth_accounts" => json!([]),
        "eth_blockNumber" => q(chain.block_number()),
        "eth_getBlockByNumber" => block(chain, p.block(0)?, p.opt(1, "full")?.unwrap_or(false))?,
        "eth_getBlockByHash" => block(
            chain,
            BlockId::Hash(p.hash(0)?),
            p.opt(1, "full")?.unwrap_or(false),
        )?,
        "eth_getBalance" => {
            require_latest(chain, p.block(1)?)?;
            json!(chain.balance(p.address(0)?))
        }
        "eth_getTransactionCount" => {
            require_latest(chain, p.block(1)?)?;
            q(chain.nonce(p.address(0)?))
        }
        "eth_getCode" => {
            require_latest(chain, p.block(1)?)?;
            json!(chain.code(p.address(0)?))
        }
        "eth_getStorageAt" => {
            require_latest(chain, p.block(2)?)?;
            let value = chain.storage_at(p.address(0)?, p.u256(1)?);
            json!(alloy_primitives::B256::from(value))
        }
        "eth_gasPrice" => q(chain.base_fee() + chain.priority_fee()),
        "eth_maxPriorityFeePerGas" => q(chain.priority_fee()),
        "eth_feeHistory" => fee_history(chain, p)?,
        "eth_call" => {
            let req: CallRequest = p.req(0, "call object")?;
            require_latest(chain, p.block(1)?)?;
            json!(chain.call(&req)?)
        }
        "eth_estimateGas" => {
            let req: CallRequest = p.req(0, "call object")?;
            require_latest(chain, p.block(1)?)?;
            q(chain.estimate_gas(&req)?)
        }
        "eth_sendRawTransaction" => json!(chain.send_raw_transaction(&p.bytes(0)?)?),
        "eth_getTransactionByHash" => match chain.transaction(p.hash(0)?) {
            Some(t) => {
                let b = chain
                    .block_of(&t)
                    .ok_or_else(|| RpcError::new(INTERNAL_ERROR, "missing block"))?;
                render::transaction(&t, b.hash)?
            }
            None => Value::Null,
        },
        "eth_getTransactionReceipt" => match chain.transaction(p.hash(0)?) {
            Some(t) => {
                let b = chain
                    .block_of(&t)
                    .ok_or_else(|| RpcError::new(INTERNAL_ERROR, "missing block"))?;
                render::receipt(&t, &b)?
            }
            None => Value::Null,
        },
        "eth_getLogs" => {
            let filter = params::log_filter(chain, &p.req::<Value>(0, "filter")?)?;
            Value::Array(chain.logs(&filter)?.iter().map(render::log_entry).collect())
        }
        // Where the protocol contracts are, so clients (the CLI) need no
        // address book for the embedded chain; same shape as deployment.json.
        "credence_deployment" => json!(crate::genesis::ChainDeployment {
            chain_id: chain.chain_id(),
            start_block: 0,
            contracts: *chain.deployment(),
        }),
        "evm_mine" => q(chain.mine()?.number),
        "evm_increaseTime" => {
            let seconds = p.count(0)?;
            chain.advance_time(seconds)?;
            q(seconds)
        }
        other => {
            return Err(RpcError::new(
                METHOD_NOT_FOUND,
                format!("the method {other} does not exist/is not available"),
            ));
        }
    })
}

fn block(chain: &Chain, id: BlockId, full: bool) -> Result<Value, RpcError> {
    let Some(b) = chain.block(id) else {
        return Ok(Value::Null);
    };
    let txs = match (full, b.tx) {
        (true, Some(h)) => {
            let t = chain
                .transaction(h)
                .ok_or_else(|| RpcError::new(INTERNAL_ERROR, "missing transaction"))?;
            Some(vec![render::transaction(&t, b.hash)?])
        }
        _ => None,
    };
    Ok(render::block(&b, txs))
}

/// Fee history over at most 1024 blocks ending at `newestBlock`. The base fee
/// is constant, and a block's reward at every percentile is the tip its one
/// transaction paid (zero for empty blocks).
fn fee_history(chain: &Chain, p: &Params<'_>) -> Result<Value, RpcError> {
    let count = p.count(0)?.min(MAX_FEE_HISTORY);
    let newest = chain
        .resolve(p.block(1)?)
        .ok_or_else(|| RpcError::new(SERVER_ERROR, "header not found"))?;
    let percentiles: Option<Vec<f64>> = p.opt(2, "reward percentiles")?;
    let bad = |ps: &[f64]| {
        ps.iter().any(|x| !(0.0..=100.0).contains(x)) || ps.windows(2).any(|w| w[0] > w[1])
    };
    if percentiles.as_deref().is_some_and(bad) {
        return Err(RpcError::params(
            "reward percentiles must be ascending and within [0, 100]",
        ));
    }
    if count == 0 {
        return Ok(json!({ "oldestBlock": q(0u64), "baseFeePerGas": [], "gasUsedRatio": [] }));
    }
    let oldest = (newest + 1).saturating_sub(count);
    let blocks = chain.blocks(oldest, newest);
    let mut base_fees: Vec<Value> = blocks.iter().map(|b| q(b.base_fee)).collect();
    base_fees.push(q(chain.base_fee()));
    let ratios: Vec<f64> = blocks
        .iter()
        .map(|b| b.gas_used as f64 / b.gas_limit as f64)
        .collect();
    let mut out = json!({
        "oldestBlock": q(oldest),
        "baseFeePerGas": base_fees,
        "gasUsedRatio": ratios,
        "baseFeePerBlobGas": vec![q(1u64); blocks.len() + 1],
        "blobGasUsedRatio": vec![0.0; blocks.len()],
    });
    if let Some(ps) = percentiles {
        let rewards: Vec<Value> = blocks
            .iter()
            .map(|b| {
                let tip = b.tx.and_then(|h| chain.transaction(h)).map_or(0, |t| {
                    t.effective_gas_price.saturating_sub(u128::from(b.base_fee))
                });
                Value::Array(vec![q(tip); ps.len()])
            })
            .collect();
        out["reward"] = Value::Array(rewards);
    }
    Ok(out)
}
