//! The PA's XRPL side (security officer, auditor): `GET /v1/ledger/account` answers the
//! account the active `xrpl-account` key holds, with its sequence counter; `GET
//! /v1/ledger/transactions?grantId=&kid=&state=` lists the outbox (see
//! [`crate::api::ledger_book`]), blobs included, in sequence order. Without an
//! xrpl-account token (or active key) the account answers 503 LEDGER_NOT_CONFIGURED; the
//! outbox answers what it holds.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use crate::api::AppState;
use crate::api::error::ApiResult;
use crate::api::extract::ApiQuery;
use crate::api::ledger_book::{TxFilter, TxState};
use crate::api::respond::json_response;
use crate::api::signing::blocking;
use crate::model::check_id;

/// `GET /v1/ledger/account`: `{account, kid, publicKey, algorithm, nextSequence,
/// sequenceSource, feeDrops, submitter?}`; `submitter` (`{endpoint, lastContact,
/// lastError}`) when the service runs with `--xrpl-rpc`.
pub async fn account(State(state): State<AppState>) -> ApiResult<Response> {
    let s = state.clone();
    let (account, counter) = blocking(move || {
        let account = s.ledger().account(s.keys().as_ref())?;
        let (_, counter) = s.ledger().account_state(&account.address)?;
        Ok((account, counter))
    })
    .await?;
    let alg = match account.key {
        crate::xrpl::credential_tx::AccountKey::Secp256k1(_) => "ES256K",
        crate::xrpl::credential_tx::AccountKey::Ed25519(_) => "EdDSA",
    };
    let mut body = json!({
            "account": account.address,
            "kid": account.kid,
            "publicKey": account.key.hex(),
            "algorithm": alg,
            "nextSequence": counter.next_sequence,
            "sequenceSource": counter.source,
            "feeDrops": state.config().ledger.fee_drops.to_string(),
    });
    if let Some(status) = state.ledger().submitter_status() {
        body["submitter"] = json!(status);
    }
    json_response(StatusCode::OK, &body)
}

/// Query of `GET /v1/ledger/transactions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransactionsQuery {
    /// Only the transactions of this grant.
    pub grant_id: Option<String>,
    /// Only the transactions of this key (caused by it, or signed by it).
    pub kid: Option<String>,
    /// Only in this state.
    pub state: Option<String>,
}

/// `GET /v1/ledger/transactions`: `{"transactions": [LedgerTx…]}`.
pub async fn transactions(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TransactionsQuery>,
) -> ApiResult<Response> {
    if let Some(g) = &q.grant_id {
        check_id(g, "grantId")?;
    }
    if let Some(k) = &q.kid {
        check_id(k, "kid")?;
    }
    let filter = TxFilter {
        grant_id: q.grant_id,
        kid: q.kid,
        state: q.state.as_deref().map(TxState::parse).transpose()?,
    };
    let s = state.clone();
    let txs = blocking(move || s.ledger().list(&filter)).await?;
    json_response(StatusCode::OK, &json!({ "transactions": txs }))
}
