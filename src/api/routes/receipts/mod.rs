//! Scoped authorization receipts (SEP-2828 records, MCP PR #2867): the receipt policy, and
//! the three steps of one high-risk tool call.
//!
//! - `PUT /v1/receipts/policy` (security officer) sets the receipt policy; `GET` reads it
//!   (security officer, auditor). Decisions carry `policyId` = `sha256:` of the policy's
//!   JCS bytes, so any change of the policy is a different id.
//! - `POST /v1/receipts/decisions` (receipt requester): [`decisions`].
//! - `POST /v1/receipts/consume` (receipt consumer): [`consume`].
//! - `POST /v1/receipts/outcomes` (receipt consumer): [`outcomes`].
//!
//! Receipts need the optional receipt-signing role: without its token every receipt route
//! but the policy's answers 503 RECEIPTS_NOT_CONFIGURED.

pub mod consume;
pub mod decisions;
pub mod outcomes;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::body::StrictJson;
use crate::api::error::{ApiError, ApiResult, http_status};
use crate::api::receipt_book::{POLICY_KEY, policy_digest, trees};
use crate::api::respond::json_response;
use crate::api::signing::{blocking, commit};
use crate::audit::SideWrites;
use crate::error::{Error, ErrorCode, Result};
use crate::events::Event;
use crate::keys::KeyRole;
use crate::receipts::policy::ReceiptPolicy;

/// Refuses (503 RECEIPTS_NOT_CONFIGURED) when the deployment has no receipt-signing token.
pub fn require_receipts(state: &AppState) -> Result<()> {
    if state.registry().is_configured(KeyRole::ReceiptSigning) {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::ReceiptsNotConfigured,
        "this appliance has no receipt-signing token configured; add the receipt-signing \
         role to its HSM configuration to issue receipts",
    ))
}

/// A refusal that names a receipt verdict: the usual `{code, message}` plus `verdict`
/// (its stable wire name) and, for `already_consumed`, the prior `outcome` record.
pub fn verdict_refusal(
    code: ErrorCode,
    verdict: &str,
    message: &str,
    outcome: Option<&Value>,
) -> Response {
    let mut body = json!({
        "code": code.as_str(),
        "message": message,
        "verdict": verdict,
    });
    if let Some(o) = outcome {
        body["outcome"] = o.clone();
    }
    let status =
        StatusCode::from_u16(http_status(code)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = crate::canonical::canonical_bytes(&body)
        .unwrap_or_else(|_| br#"{"code":"INTERNAL","message":"error"}"#.to_vec());
    let mut r = (status, bytes).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `PUT /v1/receipts/policy`: validates and sets the receipt policy with its
/// `receipt_policy_set` entry (one durable write). Setting the policy in force again
/// answers 200 and records nothing; a new policy answers 201.
pub async fn set_policy(
    State(state): State<AppState>,
    caller: Caller,
    StrictJson(body): StrictJson,
) -> ApiResult<Response> {
    let policy: ReceiptPolicy = crate::model::from_value(&body, "receipt policy")?;
    policy.validate()?;
    let digest = policy_digest(&policy)?;
    let bytes = serde_jcs::to_vec(&policy)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("receipt policy: {e}")))?;
    let book_state = state.clone();
    let current = blocking(move || book_state.receipts().policy()).await?;
    let answer = json!({"policyId": policy.policy_id, "policyDigest": digest});
    let expect = match current {
        Some((p, _)) if p == policy => return json_response(StatusCode::OK, &answer),
        Some((_, raw)) => Some(raw),
        None => None,
    };
    let mut writes = SideWrites::new();
    let raced = || {
        Error::new(
            ErrorCode::Conflict,
            "the receipt policy changed concurrently",
        )
    };
    writes.swap(trees::RECEIPT_POLICY, POLICY_KEY, expect, bytes, raced());
    let event = Event::ReceiptPolicySet {
        policy_id: policy.policy_id.clone(),
        policy_digest: digest,
    };
    commit(&state, &caller.actor(), event, writes).await?;
    json_response(StatusCode::CREATED, &answer)
}

/// `GET /v1/receipts/policy`: the policy in force and its digest; 409
/// RECEIPT_POLICY_NOT_SET when none is.
pub async fn get_policy(State(state): State<AppState>, _caller: Caller) -> ApiResult<Response> {
    let s = state.clone();
    let Some((policy, _)) = blocking(move || s.receipts().policy()).await? else {
        return Err(ApiError(policy_not_set()));
    };
    let digest = policy_digest(&policy)?;
    let policy = serde_json::to_value(&policy)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("receipt policy: {e}")))?;
    json_response(
        StatusCode::OK,
        &json!({"policy": policy, "policyDigest": digest}),
    )
}

/// No policy is set: nothing is decided.
pub fn policy_not_set() -> Error {
    Error::new(
        ErrorCode::ReceiptPolicyNotSet,
        "no receipt policy is set; a security officer sets one with PUT /v1/receipts/policy",
    )
}
