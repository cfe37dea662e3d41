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
use crate::clock::SigningGate;
use crate::crypto::b64url_encode;
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, Event};
use crate::keys::{ActiveKeys, KeyRole};
use crate::metrics::Metrics;
use crate::seams::SharedSigner;
use crate::signer::DigestSigner;

/// The signing keys handlers use, behind a [`SigningGate`]: `active_signer` refuses with the
/// gate's error (`CLOCK_BEHIND`) before any key is touched, so no artifact is signed while
/// the clock is behind the audit log. Published keys are not gated. With metrics, every
/// signature of the signers it hands out is counted and timed by role and algorithm, and
/// every failed one counted by its stable code.
pub struct GatedKeys {
    /// The keys.
    pub inner: Arc<dyn ActiveKeys>,
    /// What may refuse signing.
    pub gate: Arc<dyn SigningGate>,
    /// Where signatures are counted, if anywhere.
    pub metrics: Option<Arc<Metrics>>,
}

impl ActiveKeys for GatedKeys {
    fn active_signer(&self, role: KeyRole) -> Result<SharedSigner> {
        if let Err(e) = self.gate.check_signing_time() {
            tracing::warn!(role = role.as_str(), code = e.code.as_str(), cause = %e.message, "signing refused by the clock gate");
            return Err(e);
        }
        let signer = self.inner.active_signer(role)?;
        Ok(match &self.metrics {
            Some(metrics) => Arc::new(Counted {
                inner: signer,
                role,
                metrics: metrics.clone(),
            }),
            None => signer,
        })
    }
    fn published_keys(&self, role: KeyRole) -> Result<Vec<crate::jwk::Jwk>> {
        self.inner.published_keys(role)
    }
}

/// A signer whose signatures are counted and timed ([`GatedKeys`]).
struct Counted {
    inner: SharedSigner,
    role: KeyRole,
    metrics: Arc<Metrics>,
}

impl DigestSigner for Counted {
    fn kid(&self) -> &str {
        self.inner.kid()
    }
    fn alg(&self) -> crate::crypto::Alg {
        self.inner.alg()
    }
    fn public_key(&self) -> &crate::crypto::PublicKey {
        self.inner.public_key()
    }
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<crate::seams::DigestSignature> {
        self.counted(|| self.inner.sign_digest(digest))
    }
    fn sign_es256(&self, message: &[u8]) -> Result<[u8; 64]> {
        self.counted(|| self.inner.sign_es256(message))
    }
    fn sign_xrpl(&self, signing_data: &[u8]) -> Result<Vec<u8>> {
        self.counted(|| self.inner.sign_xrpl(signing_data))
    }
}

impl Counted {
    /// Runs one signature, counting and timing it, or counting and logging its failure.
    fn counted<T>(&self, sign: impl FnOnce() -> Result<T>) -> Result<T> {
        let start = std::time::Instant::now();
        let signed = sign();
        match &signed {
            Ok(_) => self.metrics.signature(
                self.role.as_str(),
                self.inner.alg().as_str(),
                start.elapsed().as_secs_f64(),
            ),
            Err(e) => {
                self.metrics.hsm_error(e.code.as_str());
                tracing::warn!(role = self.role.as_str(), kid = self.inner.kid(), code = e.code.as_str(), cause = %e.message, "HSM signature failed");
            }
        }
        signed
    }
}

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

/// Runs work that signs off the async runtime, with its HSM calls inline on that thread and
/// their deadlines enforced here ([`crate::hsm::bounded`]): the request gets `HSM_TIMEOUT` at
/// the deadline of a hung call instead of waiting for it, and no per-call thread hand-off.
pub async fn signing_hop<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    crate::hsm::bounded(f).await
}

/// The active signer of `role` (KEY_NOT_FOUND / ALGORITHM_DEPRECATED from the registry).
pub async fn active_signer(state: &AppState, role: KeyRole) -> Result<SharedSigner> {
    let keys = state.keys().clone();
    blocking(move || keys.active_signer(role)).await
}

/// Signs `unsigned` with the active key of `role`: names the key in `kid_member` (e.g.
/// `issuerKeyId`), then [`sign_checked`]. Returns the signed artifact and the kid. On the
/// calling thread (call it from a [`signing_hop`]).
pub fn sign_with_active(
    keys: &dyn ActiveKeys,
    role: KeyRole,
    kid_member: &str,
    domain: Domain,
    version: &str,
    mut unsigned: serde_json::Map<String, Value>,
) -> Result<(Value, String)> {
    let signer = keys.active_signer(role)?;
    let kid = signer.kid().to_string();
    unsigned.insert(kid_member.into(), Value::String(kid.clone()));
    let signed = sign_owned(signer.as_ref(), domain, version, Value::Object(unsigned))?;
    Ok((signed, kid))
}

/// Signs a SEP-2828 receipt record (`unsigned`: its five signed members) with the active
/// key of `role`: names the key in `{asserted}.secretVersion` and its `alg` in both `alg`
/// members, signs the JCS bytes with ES256 in the token, checks the signature against the
/// key's public half and adds it as 128 lowercase hex. Returns the record and the kid. On
/// the calling thread (call it from a [`signing_hop`]).
pub fn sign_receipt_with_active(
    keys: &dyn ActiveKeys,
    role: KeyRole,
    asserted: &str,
    mut unsigned: serde_json::Map<String, Value>,
) -> Result<(Value, String)> {
    use crate::receipts::record::RECEIPT_ALG;
    let signer = keys.active_signer(role)?;
    let kid = signer.kid().to_string();
    let Some(Value::Object(block)) = unsigned.get_mut(asserted) else {
        return Err(Error::new(
            ErrorCode::Internal,
            format!("receipt record has no {asserted} block"),
        ));
    };
    block.insert("secretVersion".into(), Value::String(kid.clone()));
    block.insert("alg".into(), Value::String(RECEIPT_ALG.into()));
    unsigned.insert("alg".into(), Value::String(RECEIPT_ALG.into()));
    if unsigned.contains_key("signature") {
        return Err(Error::new(
            ErrorCode::Internal,
            "record to sign already has a signature",
        ));
    }
    let mut record = Value::Object(unsigned);
    let payload = serde_jcs::to_vec(&record)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("receipt record: {e}")))?;
    let sig = hex::encode(signer.sign_es256(&payload)?);
    if !crate::receipts::verify::verify_es256_hex(signer.public_key(), &payload, &sig) {
        return Err(Error::new(
            ErrorCode::HsmError,
            format!("receipt signature by {kid} failed its self-check"),
        ));
    }
    if let Value::Object(map) = &mut record {
        map.insert("signature".into(), Value::String(sig));
    }
    Ok((record, kid))
}

/// Signs `unsigned` (whose key-id member already names the signer, and which has no
/// `signature`) and verifies the signature with the signer's public key against the same
/// digest, on the calling thread (call it from a blocking hop). Returns `unsigned` with its
/// `signature`.
pub fn sign_checked(
    signer: &dyn DigestSigner,
    domain: Domain,
    version: &str,
    unsigned: &Value,
) -> Result<Value> {
    sign_owned(signer, domain, version, unsigned.clone())
}

/// [`sign_checked`] taking the artifact by value (no copy of it is made).
fn sign_owned(
    signer: &dyn DigestSigner,
    domain: Domain,
    version: &str,
    unsigned: Value,
) -> Result<Value> {
    let Some(map) = unsigned.as_object() else {
        return Err(Error::new(
            ErrorCode::SchemaInvalid,
            "artifact is not a JSON object",
        ));
    };
    if map.contains_key("signature") {
        return Err(Error::new(
            ErrorCode::Internal,
            "artifact to sign already has a signature",
        ));
    }
    let digest = signing_digest(domain, version, &unsigned)?;
    let sig = signer.sign_digest(&digest)?;
    signer
        .public_key()
        .verify_digest(&digest, &sig.bytes)
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
    let mut signed = unsigned;
    if let Value::Object(map) = &mut signed {
        map.insert("signature".into(), Value::String(b64url_encode(&sig.bytes)));
    }
    Ok(signed)
}

/// [`sign_checked`] in its own blocking hop.
pub async fn sign(
    signer: Arc<dyn DigestSigner>,
    domain: Domain,
    version: String,
    unsigned: Value,
) -> Result<Value> {
    signing_hop(move || sign_checked(signer.as_ref(), domain, &version, &unsigned)).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Alg, PublicKey};
    use crate::signer::{DigestSignature, SoftwareSigner, sign_artifact};
    use serde_json::json;

    /// A token that returns a signature by another key (a faulty or substituted token).
    struct Faulty {
        good: SoftwareSigner,
        other: SoftwareSigner,
    }

    impl DigestSigner for Faulty {
        fn kid(&self) -> &str {
            self.good.kid()
        }
        fn alg(&self) -> Alg {
            self.good.alg()
        }
        fn public_key(&self) -> &PublicKey {
            self.good.public_key()
        }
        fn sign_digest(&self, digest: &[u8; 32]) -> Result<DigestSignature> {
            self.other.sign_digest(digest)
        }
        fn sign_es256(&self, message: &[u8]) -> Result<[u8; 64]> {
            self.other.sign_es256(message)
        }
        fn sign_xrpl(&self, signing_data: &[u8]) -> Result<Vec<u8>> {
            self.other.sign_xrpl(signing_data)
        }
    }

    #[test]
    fn signs_like_sign_artifact_and_catches_a_faulty_token() {
        let unsigned = json!({"version": "1.0", "grantId": "g-1", "issuerKeyId": "k-1"});
        for alg in Alg::ALL {
            let good = SoftwareSigner::from_secret("k-1", alg, &[3; 32]).unwrap();
            let signed = sign_checked(&good, Domain::PolicyGrant, "1.0", &unsigned).unwrap();
            let reference = sign_artifact(&good, Domain::PolicyGrant, "1.0", &unsigned).unwrap();
            if alg == Alg::EdDSA {
                // Deterministic: byte-identical to the reference path.
                assert_eq!(signed, reference);
            }
            let digest = signing_digest(Domain::PolicyGrant, "1.0", &signed).unwrap();
            let sig =
                crate::crypto::decode_signature(signed["signature"].as_str().unwrap()).unwrap();
            good.public_key().verify_digest(&digest, &sig).unwrap();

            let faulty = Faulty {
                good: SoftwareSigner::from_secret("k-1", alg, &[3; 32]).unwrap(),
                other: SoftwareSigner::from_secret("k-1", alg, &[4; 32]).unwrap(),
            };
            let e = sign_checked(&faulty, Domain::PolicyGrant, "1.0", &unsigned).unwrap_err();
            assert_eq!(e.code, ErrorCode::HsmError, "{alg:?}");
            assert!(e.message.contains("self-check"));
            let e = sign_checked(&good, Domain::PolicyGrant, "1.0", &signed).unwrap_err();
            assert_eq!(e.code, ErrorCode::Internal);
        }
    }
}
