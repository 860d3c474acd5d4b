//! Settlement over HTTP: what a caller needs to pay (`GET /v1/billing`), its
//! standing, receipts, epochs and claim proofs. Errors map to statuses in
//! [`status`], the one place that decides them.

use std::sync::Arc;

use alloy_primitives::Address;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::Error;
use crate::book::{Epoch, PayerState};
use crate::gate::Gate;
use crate::settler::{ClaimProof, Settler};
use crate::voucher::VOUCHER_HEADER;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct SettleState {
    /// The payment gate (its book and voucher domain).
    pub gate: Arc<Gate>,
    /// The chain side.
    pub settler: Arc<Settler>,
}

/// Read-only routes, open to anyone. (Running a round spends the node's
/// gas, so the node mounts that route itself, behind its API keys.)
pub fn routes(state: SettleState) -> Router {
    Router::new()
        .route("/v1/billing", get(billing))
        .route("/v1/billing/payers/{address}", get(payer))
        .route("/v1/receipts/{id}", get(receipt))
        .route("/v1/epochs", get(epochs))
        .route("/v1/epochs/{number}", get(epoch))
        .route("/v1/earnings/{address}", get(earnings))
        .with_state(state)
}

/// The HTTP status and the error body's `code` for a settlement error.
pub fn status(error: &Error) -> (StatusCode, &'static str) {
    match error {
        Error::PaymentRequired(_) => (StatusCode::PAYMENT_REQUIRED, "payment_required"),
        Error::InvalidVoucher(_) => (StatusCode::BAD_REQUEST, "invalid_voucher"),
        Error::StaleVoucher { .. } => (StatusCode::BAD_REQUEST, "stale_voucher"),
        Error::InvalidTerms(_) => (StatusCode::BAD_REQUEST, "invalid_terms"),
        Error::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        Error::Chain(_) => (StatusCode::BAD_GATEWAY, "chain_error"),
        Error::Corrupt(_) | Error::Store(_) | Error::Commit(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
        }
    }
}

/// An error as an OpenAI-style JSON body.
pub struct HttpError(pub Error);

impl From<Error> for HttpError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, code) = status(&self.0);
        let message = if status.is_server_error() && status != StatusCode::BAD_GATEWAY {
            tracing::error!(error = %self.0, "settlement request failed");
            "internal server error".to_owned()
        } else {
            self.0.to_string()
        };
        let kind = if status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let body = json!({ "error": { "message": message, "type": kind, "code": code } });
        (status, Json(body)).into_response()
    }
}

type HttpResult<T> = std::result::Result<Json<T>, HttpError>;

fn parse_address(text: &str) -> Result<Address, HttpError> {
    text.parse()
        .map_err(|_| HttpError(Error::InvalidRequest(format!("`{text}` is not an address"))))
}

/// Runs blocking book or chain work off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<T, HttpError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HttpError(Error::Corrupt(format!("settlement task failed: {e}"))))?
        .map_err(HttpError)
}

async fn billing(State(s): State<SettleState>) -> Json<serde_json::Value> {
    let domain = s.gate.domain();
    let contracts = s.settler.contracts();
    Json(json!({
        "payee": domain.payee,
        "chainId": domain.chain_id,
        "escrow": domain.escrow,
        "token": contracts.token,
        "distributor": contracts.distributor,
        "voucherHeader": VOUCHER_HEADER,
        "voucherTypedData": {
            "domain": { "name": "CredencePaymentEscrow", "version": "1",
                        "chainId": domain.chain_id, "verifyingContract": domain.escrow },
            "types": { "Voucher": [
                { "name": "payer", "type": "address" },
                { "name": "payee", "type": "address" },
                { "name": "cumulativeAmount", "type": "uint256" } ] },
        },
    }))
}

/// A payer's standing and what it can still spend.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PayerView {
    address: Address,
    #[serde(flatten)]
    state: PayerState,
    #[serde(with = "crate::amount")]
    held: u128,
    #[serde(with = "crate::amount")]
    available: u128,
}

async fn payer(State(s): State<SettleState>, Path(address): Path<String>) -> HttpResult<PayerView> {
    let address = parse_address(&address)?;
    let gate = Arc::clone(&s.gate);
    let state = blocking(move || gate.book().payer(address))
        .await?
        .ok_or_else(|| HttpError(Error::NotFound(format!("{address} has sent no voucher"))))?;
    let held = s.gate.held(address);
    Ok(Json(PayerView {
        address,
        state,
        held,
        available: state
            .voucher
            .saturating_sub(state.spent)
            .saturating_sub(held),
    }))
}

async fn receipt(
    State(s): State<SettleState>,
    Path(id): Path<String>,
) -> HttpResult<crate::Receipt> {
    let gate = Arc::clone(&s.gate);
    let found = blocking(move || gate.book().receipt(&id).map(|r| (id, r))).await?;
    match found {
        (_, Some(r)) => Ok(Json(r)),
        (id, None) => Err(HttpError(Error::NotFound(format!("no receipt `{id}`")))),
    }
}

async fn epochs(State(s): State<SettleState>) -> HttpResult<Vec<Epoch>> {
    let gate = Arc::clone(&s.gate);
    blocking(move || gate.book().epochs()).await.map(Json)
}

async fn epoch(State(s): State<SettleState>, Path(number): Path<u64>) -> HttpResult<Epoch> {
    let gate = Arc::clone(&s.gate);
    blocking(move || gate.book().epoch(number))
        .await?
        .map(Json)
        .ok_or_else(|| HttpError(Error::NotFound(format!("epoch {number} is not sealed"))))
}

/// An account's claimable earnings.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Earnings {
    account: Address,
    /// The proof against the latest final epoch, if the account is in one.
    claim: Option<ClaimProof>,
}

async fn earnings(
    State(s): State<SettleState>,
    Path(address): Path<String>,
) -> HttpResult<Earnings> {
    let account = parse_address(&address)?;
    let settler = Arc::clone(&s.settler);
    let claim = blocking(move || settler.proof(account)).await?;
    Ok(Json(Earnings { account, claim }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_status_and_code() {
        let cases = [
            (Error::PaymentRequired("x".into()), 402, "payment_required"),
            (Error::InvalidVoucher("x".into()), 400, "invalid_voucher"),
            (
                Error::StaleVoucher {
                    payer: Address::ZERO,
                    given: 1,
                    latest: 2,
                },
                400,
                "stale_voucher",
            ),
            (Error::InvalidTerms("x".into()), 400, "invalid_terms"),
            (Error::InvalidRequest("x".into()), 400, "invalid_request"),
            (Error::NotFound("x".into()), 404, "not_found"),
            (Error::Conflict("x".into()), 409, "conflict"),
            (
                Error::Chain(credence_ledger::Error::Transport("x".into())),
                502,
                "chain_error",
            ),
            (Error::Commit("x".into()), 500, "internal_error"),
            (Error::Corrupt("x".into()), 500, "internal_error"),
        ];
        for (error, want_status, want_code) in cases {
            let (got, code) = status(&error);
            assert_eq!((got.as_u16(), code), (want_status, want_code), "{error}");
        }
    }
}
