//! Audit log reads (auditor role), the HTTP face of [`crate::audit::AuditLog`]'s read side,
//! in the same JSON forms as `mpcp-pa audit` (hashes in standard base64):
//! - `GET /v1/audit/checkpoint`: the latest signed checkpoint (C2SP signed note), its vkey
//!   and the kid of the audit key that signed it;
//! - `POST /v1/audit/checkpoints` (auditor or security officer): a checkpoint covering every
//!   entry now, signed on the spot with the active audit key if the latest does not (201),
//!   else the latest (200);
//! - `GET /v1/audit/vkeys`: every audit key of the registry in C2SP vkey form, with its state
//!   (pin them all to verify a log signed across rotations);
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
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::body::{NoParameters, OptionalStrictJson, parse_request};
use crate::api::error::ApiResult;
use crate::api::extract::ApiQuery;
use crate::api::respond::json_response;
use crate::api::signing::blocking;
use crate::audit::{AuditLog, Hash, StoredCheckpoint, Vkey};
use crate::canonical::parse_strict;
use crate::crypto::PublicKey;
use crate::error::{Error, ErrorCode, Result};
use crate::keys::{KeyRecord, KeyRegistry, KeyRole};

/// Most entries one request returns.
pub const MAX_ENTRIES: u64 = 1000;

fn b64(h: &Hash) -> String {
    STANDARD.encode(h)
}

/// The Ed25519 public key of an audit-role key record, if it is one.
fn ed25519_public(rec: &KeyRecord) -> Result<Option<[u8; 32]>> {
    Ok(match rec.public_key()? {
        PublicKey::Ed25519(vk) => Some(vk.to_bytes()),
        _ => None,
    })
}

/// The JSON form of a stored checkpoint, with the kid of the registry's audit key whose
/// public key signed it (absent if the registry holds no such key).
fn checkpoint_json(cp: &StoredCheckpoint, registry: &KeyRegistry) -> Result<Value> {
    let head = cp.checkpoint()?;
    let public = Vkey::parse(&cp.vkey)?.public;
    let mut kid = None;
    for rec in registry.list_role(KeyRole::Audit)? {
        if ed25519_public(&rec)? == Some(public) {
            kid = Some(rec.kid);
        }
    }
    Ok(json!({
        "origin": head.origin,
        "size": head.size,
        "rootHash": b64(&head.root),
        "note": cp.note,
        "vkey": cp.vkey,
        "kid": kid,
    }))
}

/// `GET /v1/audit/checkpoint`.
pub async fn checkpoint(State(state): State<AppState>) -> ApiResult<Response> {
    let log = state.audit().clone();
    let registry = state.registry().clone();
    let out = blocking(move || {
        let cp = log
            .latest_checkpoint()?
            .ok_or_else(|| Error::new(ErrorCode::NotFound, "no checkpoint signed yet"))?;
        checkpoint_json(&cp, &registry)
    })
    .await?;
    json_response(StatusCode::OK, &out)
}

/// `POST /v1/audit/checkpoints`: 201 with a checkpoint signed now, or 200 with the latest
/// one when it already covers every entry. `AUDIT_KEY_MISSING` (503) when the audit role has
/// no active key. Signing a checkpoint records no audit entry (it would grow the log).
pub async fn sign_checkpoint(
    State(state): State<AppState>,
    OptionalStrictJson(body): OptionalStrictJson,
) -> ApiResult<Response> {
    // The request has no parameters: any member is refused rather than ignored.
    let NoParameters {} = parse_request(&body)?;
    let checkpointer = state.checkpointer().clone();
    let registry = state.registry().clone();
    let (signed_now, out) = blocking(move || {
        let outcome = checkpointer.checkpoint()?;
        Ok((
            outcome.signed_now,
            checkpoint_json(&outcome.checkpoint, &registry)?,
        ))
    })
    .await?;
    let status = if signed_now {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json_response(status, &out)
}

/// `GET /v1/audit/vkeys`: `{origin, vkeys: [{kid, state, vkey, signsCheckpoints}]}` for every
/// Ed25519 audit key in the registry, oldest first.
pub async fn vkeys(State(state): State<AppState>) -> ApiResult<Response> {
    let registry = state.registry().clone();
    let origin = state.audit().origin().to_string();
    let out = blocking(move || {
        let active = registry.active_kid(KeyRole::Audit)?;
        let mut keys = Vec::new();
        for rec in registry.list_role(KeyRole::Audit)? {
            if let Some(public) = ed25519_public(&rec)? {
                keys.push(json!({
                    "kid": rec.kid,
                    "state": rec.state.as_str(),
                    "vkey": Vkey::ed25519(&origin, public).to_string(),
                    "signsCheckpoints": active.as_deref() == Some(rec.kid.as_str()),
                }));
            }
        }
        Ok(json!({"origin": origin, "vkeys": keys}))
    })
    .await?;
    json_response(StatusCode::OK, &out)
}

/// A read-only query of the audit log (entries and proofs), answered off the async runtime.
pub trait LogQuery: DeserializeOwned + Send + 'static {
    /// The JSON answer to the query over `log`.
    fn answer(self, log: &AuditLog) -> Result<Value>;
}

/// The handler of `GET` for the log query `Q`: 200 with its answer.
pub async fn read<Q: LogQuery>(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<Q>,
) -> ApiResult<Response> {
    let log = state.audit().clone();
    let out = blocking(move || q.answer(&log)).await?;
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

/// `GET /v1/audit/entries`: the entries from `start` to `end`.
impl LogQuery for EntriesQuery {
    fn answer(self, log: &AuditLog) -> Result<Value> {
        let size = log.size();
        let end = self
            .end
            .unwrap_or_else(|| size.min(self.start.saturating_add(MAX_ENTRIES)));
        if end.saturating_sub(self.start) > MAX_ENTRIES {
            return Err(Error::new(
                ErrorCode::ProofOutOfRange,
                format!("at most {MAX_ENTRIES} entries per request"),
            ));
        }
        let raw = log.entries(self.start, end)?;
        let entries = raw
            .iter()
            .map(|e| parse_strict(e))
            .collect::<Result<Vec<Value>>>()?;
        Ok(json!({"start": self.start, "end": end, "size": size, "entries": entries}))
    }
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
impl LogQuery for InclusionQuery {
    fn answer(self, log: &AuditLog) -> Result<Value> {
        let size = self.size.unwrap_or(log.size());
        let (index, proof) = match (self.index, &self.leaf_hash) {
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
    }
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
impl LogQuery for ConsistencyQuery {
    fn answer(self, log: &AuditLog) -> Result<Value> {
        let to = self.to.unwrap_or(log.size());
        let proof = log.consistency_proof(self.from, to)?;
        Ok(json!({
            "fromSize": self.from,
            "toSize": to,
            "fromRoot": b64(&log.root(self.from)?),
            "toRoot": b64(&log.root(to)?),
            "proof": proof.iter().map(b64).collect::<Vec<_>>(),
        }))
    }
}
