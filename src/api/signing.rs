//! Signing from request handlers. Store reads, key lookup and PKCS#11 signing block, so a
//! handler does them together in one hop to tokio's blocking pool, ending with
//! [`sign_checked`]: every signature is checked against the key's public half before it is
//! used (a faulty token must not publish a bad signature). The audit entry and the records
//! that go with the signature are then committed together by [`commit`] (one transaction in
//! the audit log's group commit, awaited without holding a thread), which must succeed
//! before a handler releases what it signed: on failure the handler answers with the error
//! (503 AUDIT_UNAVAILABLE when the log cannot write) and the signature is discarded.

use std::sync::Arc;

use serde_json::Value;

use super::AppState;
use crate::audit::SideWrites;
use crate::canonical::{Domain, signing_digest};
use crate::crypto::decode_signature;
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, Event};
use crate::keys::KeyRole;
use crate::signer::{DigestSigner, sign_artifact};

/// Runs blocking work off the async runtime.
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorCode::Internal, format!("blocking task failed: {e}")))?
}

/// The active signer of `role` (KEY_NOT_FOUND / ALGORITHM_DEPRECATED from the registry).
pub async fn active_signer(state: &AppState, role: KeyRole) -> Result<Arc<dyn DigestSigner>> {
    let keys = state.keys().clone();
    blocking(move || keys.active_signer(role)).await
}

/// Signs `unsigned` (whose key-id member already names the signer) and verifies the result
/// with the signer's public key, on the calling thread (call it from a blocking hop).
pub fn sign_checked(
    signer: &dyn DigestSigner,
    domain: Domain,
    version: &str,
    unsigned: &Value,
) -> Result<Value> {
    let signed = sign_artifact(signer, domain, version, unsigned)?;
    let digest = signing_digest(domain, version, &signed)?;
    let sig = signed
        .get("signature")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::new(ErrorCode::Internal, "signer returned no signature"))?;
    signer
        .public_key()
        .verify_digest(&digest, &decode_signature(sig)?)
        .map_err(|e| {
            Error::new(
                ErrorCode::HsmError,
                format!(
                    "signature by {} failed its self-check: {}",
                    signer.kid(),
                    e.code
                ),
            )
        })?;
    Ok(signed)
}

/// [`sign_checked`] in its own blocking hop.
pub async fn sign(
    signer: Arc<dyn DigestSigner>,
    domain: Domain,
    version: String,
    unsigned: Value,
) -> Result<Value> {
    blocking(move || sign_checked(signer.as_ref(), domain, &version, &unsigned)).await
}

/// Commits `event` together with `writes` (see [`crate::audit::append`]): returns once the
/// entry and every side write are durable. A failed side-write precondition comes back as
/// that write's own error, an audit failure as AUDIT_UNAVAILABLE; either way nothing of the
/// request was written and the caller must discard what the event describes.
pub async fn commit(
    state: &AppState,
    actor: &Actor,
    event: Event,
    writes: SideWrites,
) -> Result<u64> {
    state
        .sink()
        .append(actor, event, writes)
        .await
        .map_err(|e| {
            if e.code == ErrorCode::AuditUnavailable {
                Error::new(
                    ErrorCode::AuditUnavailable,
                    format!(
                        "audit entry could not be written ({}); nothing was released",
                        e.message
                    ),
                )
            } else {
                e
            }
        })
}

/// Records `event` durably. Any sink failure becomes AUDIT_UNAVAILABLE (503): the caller
/// must then discard what the event describes.
pub async fn record(state: &AppState, actor: &Actor, event: Event) -> Result<u64> {
    let sink = state.sink().clone();
    let actor = actor.clone();
    blocking(move || sink.record(&actor, event))
        .await
        .map_err(|e| {
            Error::new(
                ErrorCode::AuditUnavailable,
                format!(
                    "audit entry could not be written ({}); nothing was released",
                    e.code
                ),
            )
        })
}
