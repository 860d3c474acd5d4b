//! The JSON-RPC endpoint over a real TCP socket, with transactions of all
//! three supported types signed here and submitted raw.

use std::net::SocketAddr;
use std::sync::Arc;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEip2930, TxEnvelope, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_primitives::{Address, B256, Bytes, TxKind, U256, hex};
use alloy_sol_types::{SolCall, SolError, SolEvent};
use credence_ledger::contracts::OpenToken;
use credence_ledger::rpc;
use credence_ledger::{Chain, Wallet};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{ether, fresh};

async fn serve(chain: Arc<Chain>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, rpc::router(chain)).await.unwrap() });
    addr
}

/// One HTTP/1.1 POST on a fresh connection; returns the parsed JSON body.
async fn post(addr: SocketAddr, body: &str) -> Value {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap()
}

async fn call(addr: SocketAddr, method: &str, params: Value) -> Value {
    let r = post(
        addr,
        &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string(),
    )
    .await;
    assert!(r.get("error").is_none(), "{method}: {r}");
    r["result"].clone()
}

async fn call_err(addr: SocketAddr, method: &str, params: Value) -> (i64, String, Value) {
    let r = post(
        addr,
        &json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string(),
    )
    .await;
    let e = &r["error"];
    assert!(e.is_object(), "{method} should fail: {r}");
    (
        e["code"].as_i64().unwrap(),
        e["message"].as_str().unwrap().to_owned(),
        e["data"].clone(),
    )
}

fn qty(v: &Value) -> u128 {
    u128::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

fn raw(env: TxEnvelope) -> String {
    hex::encode_prefixed(env.encoded_2718())
}

fn legacy(w: &Wallet, chain_id: Option<u64>, nonce: u64, to: Address, input: Bytes) -> String {
    let tx = TxLegacy {
        chain_id,
        nonce,
        gas_price: 2_000_000_000,
        gas_limit: 100_000,
        to: TxKind::Call(to),
        value: U256::ZERO,
        input,
    };
    let sig = w.sign_hash(&tx.signature_hash()).unwrap();
    raw(tx.into_signed(sig).into())
}

fn eip2930(w: &Wallet, chain_id: u64, nonce: u64, to: Address, input: Bytes) -> String {
    let access_list = AccessList(vec![AccessListItem {
        address: to,
        storage_keys: vec![B256::ZERO],
    }]);
    let tx = TxEip2930 {
        chain_id,
        nonce,
        gas_price: 2_000_000_000,
        gas_limit: 100_000,
        to: TxKind::Call(to),
        value: U256::ZERO,
        access_list,
        input,
    };
    let sig = w.sign_hash(&tx.signature_hash()).unwrap();
    raw(tx.into_signed(sig).into())
}

fn eip1559(w: &Wallet, chain_id: u64, nonce: u64, to: Address, input: Bytes) -> String {
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit: 100_000,
        max_fee_per_gas: 3_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(to),
        value: U256::ZERO,
        access_list: AccessList::default(),
        input,
    };
    let sig = w.sign_hash(&tx.signature_hash()).unwrap();
    raw(tx.into_signed(sig).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_serves_reads_transactions_logs_and_errors_over_http() {
    let t = fresh();
    let chain = Arc::new(t.chain);
    let addr = serve(chain.clone()).await;
    let d = *chain.deployment();
    let id = chain.chain_id();
    let (alice, bob) = (
        chain.dev_wallets()[1].clone(),
        chain.dev_wallets()[2].address(),
    );

    assert_eq!(
        qty(&call(addr, "eth_chainId", json!([])).await),
        u128::from(id)
    );
    assert_eq!(
        call(addr, "net_version", json!([])).await,
        json!(id.to_string())
    );
    assert!(
        call(addr, "web3_clientVersion", json!([]))
            .await
            .as_str()
            .unwrap()
            .starts_with("credence/")
    );
    let head = qty(&call(addr, "eth_blockNumber", json!([])).await) as u64;
    assert_eq!(head, chain.block_number());

    let latest = call(addr, "eth_getBlockByNumber", json!(["latest", false])).await;
    assert_eq!(qty(&latest["baseFeePerGas"]), 1_000_000_000);
    assert_eq!(
        call(addr, "eth_getBlockByNumber", json!(["pending", false])).await["hash"],
        latest["hash"]
    );
    assert_eq!(
        call(addr, "eth_getBlockByHash", json!([latest["hash"], true])).await["number"],
        latest["number"]
    );
    assert_eq!(
        call(addr, "eth_getBlockByNumber", json!(["0xffffff", false])).await,
        Value::Null
    );

    let bal = call(addr, "eth_getBalance", json!([alice.address(), "latest"])).await;
    assert_eq!(qty(&bal), 10_000 * 10u128.pow(18));
    assert_eq!(
        qty(&call(
            addr,
            "eth_getTransactionCount",
            json!([alice.address(), "pending"])
        )
        .await),
        0
    );
    assert!(
        call(addr, "eth_getCode", json!([d.token, "latest"]))
            .await
            .as_str()
            .unwrap()
            .len()
            > 1000
    );
    // OpenZeppelin ERC20 keeps totalSupply in slot 2.
    let supply = call(addr, "eth_getStorageAt", json!([d.token, "0x2", "latest"])).await;
    assert_eq!(
        U256::from_str_radix(supply.as_str().unwrap().trim_start_matches("0x"), 16).unwrap(),
        ether(1_000_000_000)
    );
    assert_eq!(
        qty(&call(addr, "eth_gasPrice", json!([])).await),
        2_000_000_000
    );
    assert_eq!(
        qty(&call(addr, "eth_maxPriorityFeePerGas", json!([])).await),
        1_000_000_000
    );
    let fh = call(addr, "eth_feeHistory", json!(["0x4", "latest", [25, 75]])).await;
    assert_eq!(fh["baseFeePerGas"].as_array().unwrap().len(), 5);
    assert_eq!(fh["reward"].as_array().unwrap().len(), 4);
    assert_eq!(qty(&fh["oldestBlock"]) as u64, head - 3);

    let balance_of = Bytes::from(
        OpenToken::balanceOfCall {
            account: alice.address(),
        }
        .abi_encode(),
    );
    let out = call(
        addr,
        "eth_call",
        json!([{"to": d.token, "data": balance_of}, "latest"]),
    )
    .await;
    assert_eq!(
        U256::from_str_radix(out.as_str().unwrap().trim_start_matches("0x"), 16).unwrap(),
        ether(1_000_000)
    );
    let transfer = |amount: u64| {
        Bytes::from(
            OpenToken::transferCall {
                to: bob,
                value: ether(amount),
            }
            .abi_encode(),
        )
    };
    let gas = qty(&call(
        addr,
        "eth_estimateGas",
        json!([{"from": alice.address(), "to": d.token, "input": transfer(1)}]),
    )
    .await);
    assert!((30_000..100_000).contains(&gas), "estimate {gas}");

    // Three transaction types, each mined in its own block.
    let sent = [
        legacy(&alice, Some(id), 0, d.token, transfer(1)),
        eip2930(&alice, id, 1, d.token, transfer(2)),
        eip1559(&alice, id, 2, d.token, transfer(3)),
    ];
    for (i, raw) in sent.iter().enumerate() {
        let hash = call(addr, "eth_sendRawTransaction", json!([raw])).await;
        let r = call(addr, "eth_getTransactionReceipt", json!([hash])).await;
        assert_eq!(r["status"], "0x1");
        assert_eq!(qty(&r["type"]) as usize, i);
        assert_eq!(qty(&r["blockNumber"]) as u64, head + 1 + i as u64);
        assert_eq!(
            r["logs"][0]["address"].as_str().unwrap().to_lowercase(),
            d.token.to_string().to_lowercase()
        );
        let tx = call(addr, "eth_getTransactionByHash", json!([hash])).await;
        assert_eq!(tx["hash"], hash);
        assert_eq!(
            tx["from"].as_str().unwrap().to_lowercase(),
            alice.address().to_string().to_lowercase()
        );
        assert_eq!(qty(&tx["nonce"]) as usize, i);
    }
    assert_eq!(
        qty(&call(
            addr,
            "eth_getTransactionCount",
            json!([alice.address(), "pending"])
        )
        .await),
        3
    );
    assert_eq!(
        call(
            addr,
            "eth_getTransactionReceipt",
            json!([B256::repeat_byte(1)])
        )
        .await,
        Value::Null
    );

    // Logs by address and topic (Transfer to bob), over the three blocks.
    let topic = OpenToken::Transfer::SIGNATURE_HASH;
    let bob_topic = B256::left_padding_from(bob.as_slice());
    let logs = call(
        addr,
        "eth_getLogs",
        json!([{"fromBlock": format!("0x{:x}", head + 1), "toBlock": "latest", "address": d.token, "topics": [topic, null, bob_topic]}]),
    )
    .await;
    let amounts: Vec<U256> = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            U256::from_str_radix(l["data"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
        })
        .collect();
    assert_eq!(amounts, vec![ether(1), ether(2), ether(3)]);

    // Errors clients recognise.
    let (code, msg, _) = call_err(
        addr,
        "eth_sendRawTransaction",
        json!([eip1559(&alice, id + 1, 3, d.token, transfer(1))]),
    )
    .await;
    assert_eq!(
        (code, msg.starts_with("invalid chain id")),
        (-32000, true),
        "{msg}"
    );
    let (code, msg, _) = call_err(
        addr,
        "eth_sendRawTransaction",
        json!([eip1559(&alice, id, 0, d.token, transfer(1))]),
    )
    .await;
    assert_eq!(
        (code, msg.starts_with("nonce too low")),
        (-32000, true),
        "{msg}"
    );
    let (code, msg, _) = call_err(
        addr,
        "eth_sendRawTransaction",
        json!([legacy(&alice, None, 3, d.token, transfer(1))]),
    )
    .await;
    assert!(code == -32000 && msg.contains("EIP-155"), "{msg}");
    let (code, _, _) = call_err(addr, "eth_sendRawTransaction", json!(["0xdeadbeef"])).await;
    assert_eq!(code, -32000);
    let (code, _, _) = call_err(addr, "eth_sendRawTransaction", json!([sent[2]])).await;
    assert_eq!(code, -32000);
    // A reverting call: code 3 with the custom error's data.
    let too_much = Bytes::from(
        OpenToken::transferCall {
            to: bob,
            value: ether(10_000_000),
        }
        .abi_encode(),
    );
    let (code, _, data) = call_err(
        addr,
        "eth_call",
        json!([{"from": alice.address(), "to": d.token, "data": too_much}]),
    )
    .await;
    assert_eq!(code, 3);
    let selector = hex::encode_prefixed(OpenToken::ERC20InsufficientBalance::SELECTOR);
    assert!(data.as_str().unwrap().starts_with(&selector), "{data}");
    let (code, _, _) = call_err(
        addr,
        "eth_estimateGas",
        json!([{"from": alice.address(), "to": d.token, "data": too_much}]),
    )
    .await;
    assert_eq!(code, 3);
    assert_eq!(call_err(addr, "eth_nope", json!([])).await.0, -32601);
    assert_eq!(
        call_err(addr, "eth_getBalance", json!(["0x12"])).await.0,
        -32602
    );
    assert_eq!(
        call_err(addr, "eth_getBalance", json!([alice.address(), "0x1"]))
            .await
            .0,
        -32000
    );
    let r = post(addr, "{not json").await;
    assert_eq!(r["error"]["code"], -32700);

    // Batches answer each request, in order.
    let batch = post(addr, r#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId"},{"jsonrpc":"2.0","id":2,"method":"eth_nope"}]"#).await;
    assert_eq!(batch[0]["id"], 1);
    assert_eq!(batch[1]["error"]["code"], -32601);
}
