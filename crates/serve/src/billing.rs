//! The payment gate: a hook the node plugs in so paid calls are authorised
//! before any generation and charged after it.
//!
//! Serving knows nothing about vouchers, prices or chains. It describes each
//! call as a [`CallQuote`] (the adapters it uses, its prompt and the most it
//! may generate) and asks the configured [`Billing`] for a [`Charge`]. A
//! refusal becomes the HTTP error the hook chose (402 when there is not
//! enough prepaid balance), so the engine never runs an unpaid call. When the
//! answer is complete the charge is settled with the real token counts; a
//! stream the client abandoned is settled for the tokens already sent, and a
//! call the server failed is released without charge.

use axum::http::HeaderMap;

use crate::error::ApiError;

/// What a call is about to use, for pricing before generation.
#[derive(Debug, Clone, PartialEq)]
pub struct CallQuote {
    /// The `model` the answer reports (the base id or an adapter name).
    pub model: String,
    /// Content ids of the adapters applied, with their weights (empty for the base model).
    pub adapters: Vec<(String, f32)>,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// The most tokens the call may generate.
    pub max_completion_tokens: usize,
}

/// Decides whether a call may run and who pays for it.
pub trait Billing: Send + Sync + std::fmt::Debug + 'static {
    /// Authorises a call before it is queued. `Ok(None)` means the call is free;
    /// `Ok(Some(charge))` reserves what it may cost; an error refuses it.
    ///
    /// Called on a blocking thread: implementations may touch disk or a chain.
    fn authorize(
        &self,
        headers: &HeaderMap,
        quote: &CallQuote,
    ) -> Result<Option<Box<dyn Charge>>, ApiError>;
}

/// A reservation for one call. Dropping it without [`Charge::settle`] releases
/// the reservation and charges nothing.
pub trait Charge: Send + std::fmt::Debug {
    /// The receipt id the call will be recorded under (sent as a response header).
    fn receipt_id(&self) -> &str;

    /// Records the call's real usage durably. Called on a blocking thread.
    fn settle(self: Box<Self>, prompt_tokens: usize, completion_tokens: usize);
}

/// Response header carrying the receipt id of a charged call.
pub const RECEIPT_HEADER: &str = "x-credence-receipt";
