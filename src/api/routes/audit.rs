//! Audit log reads (auditor role), the HTTP face of [`crate::audit::AuditLog`]'s read side,
//! in the same JSON forms as `mpcp-pa audit` (hashes in standard base64):
//! - `GET /v1/audit/checkpoint`: the latest signed checkpoint (C2SP signed note) and vkey;
//! - `GET /v1/audit/entries?start=&end=`: entries `[start, end)` (at most
//!   [`MAX_ENTRIES`] per request; `end` defaults to that many or the log size);
//! - `GET /v1/audit/proofs/inclusion?index=|leafHash=&size=`;
//! - `GET /v1/audit/proofs/consistency?from=&to=`.
//!
//! Sizes default to the current log size. Out-of-range requests are PROOF_OUT_OF_RANGE.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiQuery, json_response};
use crate::api::AppState;
use crate::api::auth::{Auditor, Auth};
use crate::api::error::ApiResult;
use crate::api::signing::blocking;
use crate::audit::Hash;
use crate::canonical::parse_strict;
use crate::error::{Error, ErrorCode, Result};

/// Most entries one request returns.
pub const MAX_ENTRIES: u64 = 1000;

fn b64(h: &Hash) -> String {
    STANDARD.encode(h)
}

/// `GET /v1/audit/checkpoint`.
pub async fn checkpoint(
    State(state): State<AppState>,
    _auth: Auth<Auditor>,
) -> ApiResult<Response> {
    let log = state.audit().clone();
    let out = blocking(move || {
        let cp = log
            .latest_checkpoint()?
            .ok_or_else(|| Error::new(ErrorCode::NotFound, "no checkpoint signed yet"))?;
        let head = cp.checkpoint()?;
        Ok(json!({
            "origin": head.origin,
            "size": head.size,
            "rootHash": b64(&head.root),
            "note": cp.note,
            "vkey": cp.vkey,
        }))
    })
    .await?;
    json_response(StatusCode::OK, &out)
}

/// Query of `GET /v1/audit/entries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    /// First index (default 0).
    #[serde(default)]
    pub start: u64,
    /// One past the last index.
    pub end: Option<u64>,
}

/// `GET /v1/audit/entries`.
pub async fn entries(
    State(state): State<AppState>,
    _auth: Auth<Auditor>,
    ApiQuery(q): ApiQuery<EntriesQuery>,
) -> ApiResult<Response> {
    let log = state.audit().clone();
    let out = blocking(move || {
        let size = log.size();
        let end = q
            .end
            .unwrap_or_else(|| size.min(q.start.saturating_add(MAX_ENTRIES)));
        if end.saturating_sub(q.start) > MAX_ENTRIES {
            return Err(Error::new(
                ErrorCode::ProofOutOfRange,
                format!("at most {MAX_ENTRIES} entries per request"),
            ));
        }
        let raw = log.entries(q.start, end)?;
        let entries = raw
            .iter()
            .map(|e| parse_strict(e))
            .collect::<Result<Vec<Value>>>()?;
        Ok(json!({"start": q.start, "end": end, "size": size, "entries": entries}))
    })
    .await?;
    json_response(StatusCode::OK, &out)
}

/// Query of `GET /v1/audit/proofs/inclusion`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InclusionQuery {
    /// Entry index.
    pub index: Option<u64>,
    /// Leaf hash `SHA-256(0x00 || entry)`, hex.
    pub leaf_hash: Option<String>,
    /// Tree size (default: the log size).
    pub size: Option<u64>,
}

/// `GET /v1/audit/proofs/inclusion`.
pub async fn inclusion(
    State(state): State<AppState>,
    _auth: Auth<Auditor>,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> ApiResult<Response> {
    let log = state.audit().clone();
    let out = blocking(move || {
        let size = q.size.unwrap_or(log.size());
        let (index, proof) = match (q.index, &q.leaf_hash) {
            (Some(i), None) => (i, log.inclusion_proof(i, size)?),
            (None, Some(h)) => {
                let leaf: Hash = hex::decode(h)
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| {
                        Error::field(
                            ErrorCode::SchemaInvalid,
                            "leafHash",
                            "leafHash must be 64 hex digits",
                        )
                    })?;
                log.inclusion_proof_by_hash(&leaf, size)?
            }
            _ => {
                return Err(Error::new(
                    ErrorCode::SchemaInvalid,
                    "give exactly one of index and leafHash",
                ));
            }
        };
        Ok(json!({
            "index": index,
            "treeSize": size,
            "rootHash": b64(&log.root(size)?),
            "proof": proof.iter().map(b64).collect::<Vec<_>>(),
        }))
    })
    .await?;
    json_response(StatusCode::OK, &out)
}

/// Query of `GET /v1/audit/proofs/consistency`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// Earlier size.
    pub from: u64,
    /// Later size (default: the log size).
    pub to: Option<u64>,
}

/// `GET /v1/audit/proofs/consistency`.
pub async fn consistency(
    State(state): State<AppState>,
    _auth: Auth<Auditor>,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> ApiResult<Response> {
    let log = state.audit().clone();
    let out = blocking(move || {
        let to = q.to.unwrap_or(log.size());
        let proof = log.consistency_proof(q.from, to)?;
        Ok(json!({
            "fromSize": q.from,
            "toSize": to,
            "fromRoot": b64(&log.root(q.from)?),
            "toRoot": b64(&log.root(to)?),
            "proof": proof.iter().map(b64).collect::<Vec<_>>(),
        }))
    })
    .await?;
    json_response(StatusCode::OK, &out)
}
