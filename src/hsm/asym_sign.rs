//! Signing digests with token keys, under the MPCP convention (SPEC-NOTES "Signatures"):
//! - Ed25519: `CKM_EDDSA` (pure, no parameters) over the 32-byte digest `D`.
//! - ECDSA (secp256k1, P-256): the appliance computes `SHA-256(D)` and the token signs it
//!   with raw `CKM_ECDSA` (SoftHSM2 2.6.1 has no `CKM_ECDSA_SHA256`); the raw `r||s` it returns
//!   is encoded as DER with low-S.

use std::sync::{Arc, PoisonError, RwLock};

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{ObjectClass, ObjectHandle};

use sha2::Digest;

use crate::crypto::{Alg, PublicKey, ecdsa_prehash, ecdsa_raw_to_der_low_s, p256_raw_low_s};
use crate::error::{Error, ErrorCode, Result};
use crate::hsm::key_management::find_key;
use crate::hsm::pool::{Epoch, SessionCtx, TokenPool};
use crate::hsm::utils::{CkResultExt, Failure, Fault};
use crate::seams::digest_signer::{DigestSignature, DigestSigner};

/// The bytes the token signs for digest `D`: `D` itself for Ed25519, `SHA-256(D)` for ECDSA.
pub(crate) fn token_message(alg: Alg, digest: &[u8; 32]) -> [u8; 32] {
    match alg {
        Alg::EdDSA => *digest,
        Alg::ES256K | Alg::ES256 => ecdsa_prehash(digest),
    }
}

/// The signing mechanism for `alg`.
pub(crate) fn sign_mechanism(alg: Alg) -> Mechanism<'static> {
    match alg {
        Alg::EdDSA => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
        Alg::ES256K | Alg::ES256 => Mechanism::Ecdsa,
    }
}

/// Turns the token's output into the MPCP signature bytes: 64 bytes for Ed25519, low-S DER
/// for ECDSA.
pub(crate) fn finish_signature(alg: Alg, raw: Vec<u8>) -> Result<Vec<u8>> {
    match alg {
        Alg::EdDSA if raw.len() == 64 => Ok(raw),
        Alg::EdDSA => Err(Error::new(
            ErrorCode::HsmError,
            format!("token returned a {}-byte Ed25519 signature", raw.len()),
        )),
        Alg::ES256K | Alg::ES256 => ecdsa_raw_to_der_low_s(alg, &raw),
    }
}

/// Signs with the key at `handle` in the operation's session.
pub(crate) fn sign_in_session(
    ctx: &SessionCtx<'_>,
    alg: Alg,
    handle: ObjectHandle,
    message: &[u8; 32],
) -> Result<Vec<u8>, Failure> {
    ctx.session
        .sign(&sign_mechanism(alg), handle, message)
        .on(ctx.label, "C_Sign")
}

/// [`sign_in_session`], looking the key up once more when the cached handle went stale
/// (e.g. the library dropped the token's handles when its last session closed).
fn sign_refinding(
    ctx: &SessionCtx<'_>,
    key: &KeyRef,
    alg: Alg,
    handle: ObjectHandle,
    message: &[u8; 32],
) -> Result<Vec<u8>, Failure> {
    match sign_in_session(ctx, alg, handle, message) {
        Err(f) if f.fault == Some(Fault::StaleObject) => {
            key.forget_handle();
            let handle = key.handle(ctx)?;
            sign_in_session(ctx, alg, handle, message).inspect_err(|f| {
                if f.fault == Some(Fault::StaleObject) {
                    key.forget_handle();
                }
            })
        }
        other => other,
    }
}

/// A private key on a token, found by CKA_ID; its object handle is cached per epoch (read by
/// every signature, from many threads at once: a read-write lock).
pub(crate) struct KeyRef {
    pool: Arc<TokenPool>,
    object_id: Vec<u8>,
    cached: RwLock<Option<(Epoch, ObjectHandle)>>,
}

impl KeyRef {
    /// A reference to the private key with `object_id` on `pool`'s token.
    pub(crate) fn new(
        pool: Arc<TokenPool>,
        object_id: Vec<u8>,
        handle: Option<(Epoch, ObjectHandle)>,
    ) -> Self {
        KeyRef {
            pool,
            object_id,
            cached: RwLock::new(handle),
        }
    }

    /// The private key's handle valid in `ctx`'s epoch, looked up again by CKA_ID if needed.
    fn handle(&self, ctx: &SessionCtx<'_>) -> Result<ObjectHandle, Failure> {
        if let Some((epoch, h)) = *self.cached.read().unwrap_or_else(PoisonError::into_inner)
            && epoch == ctx.epoch
        {
            return Ok(h);
        }
        let h = find_key(ctx, ObjectClass::PRIVATE_KEY, &self.object_id)?;
        *self.cached.write().unwrap_or_else(PoisonError::into_inner) = Some((ctx.epoch, h));
        Ok(h)
    }

    fn forget_handle(&self) {
        *self.cached.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// A token key that signs MPCP digests. Cheap to share (`Arc`), `Send + Sync`; each
/// signature is one pooled HSM call bounded by the configured timeout.
pub struct HsmSigner {
    kid: String,
    alg: Alg,
    public: PublicKey,
    key: Arc<KeyRef>,
}

impl std::fmt::Debug for HsmSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmSigner")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("token", &self.key.pool.label())
            .field("object_id", &hex::encode(&self.key.object_id))
            .finish()
    }
}

impl HsmSigner {
    /// A signer for a key whose public half was read from the token.
    pub(crate) fn new(kid: &str, alg: Alg, public: PublicKey, key: KeyRef) -> HsmSigner {
        HsmSigner {
            kid: kid.to_string(),
            alg,
            public,
            key: Arc::new(key),
        }
    }

    /// The key's CKA_ID.
    pub fn object_id(&self) -> &[u8] {
        &self.key.object_id
    }
}

impl DigestSigner for HsmSigner {
    fn kid(&self) -> &str {
        &self.kid
    }

    fn alg(&self) -> Alg {
        self.alg
    }

    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Ed25519 over `D`, or ECDSA over `SHA-256(D)` returned as low-S DER. Errors:
    /// `HSM_TIMEOUT`, `HSM_UNAVAILABLE` (the pool recovers for the next call), `KEY_NOT_FOUND`
    /// when the key object is gone.
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<DigestSignature> {
        let alg = self.alg;
        let message = token_message(alg, digest);
        let raw =
            self.run_sign(move |ctx, key, handle| sign_refinding(ctx, key, alg, handle, &message))?;
        Ok(DigestSignature {
            kid: self.kid.clone(),
            alg,
            bytes: finish_signature(alg, raw)?,
        })
    }

    fn sign_es256(&self, message: &[u8]) -> Result<[u8; 64]> {
        self.es256(message)
    }

    /// secp256k1: the appliance computes SHA-512-half of the data and the token signs it
    /// with raw `CKM_ECDSA` (low-S DER); Ed25519: `CKM_EDDSA` over the data.
    fn sign_xrpl(&self, signing_data: &[u8]) -> Result<Vec<u8>> {
        match self.alg {
            Alg::EdDSA => Ok(self.sign_eddsa_message(signing_data)?.to_vec()),
            Alg::ES256K => {
                let hash = crate::crypto::sha512_half(signing_data);
                let raw = self.run_sign(move |ctx, key, handle| {
                    sign_refinding(ctx, key, Alg::ES256K, handle, &hash)
                })?;
                ecdsa_raw_to_der_low_s(Alg::ES256K, &raw)
            }
            Alg::ES256 => Err(crate::seams::digest_signer::not_xrpl(&self.kid, self.alg)),
        }
    }
}

impl HsmSigner {
    /// Runs `sign` as one pooled `C_Sign` call, given the key and its object handle (cached
    /// per epoch, else looked up).
    fn run_sign(
        &self,
        sign: impl FnOnce(&SessionCtx<'_>, &KeyRef, ObjectHandle) -> Result<Vec<u8>, Failure>
        + Send
        + 'static,
    ) -> Result<Vec<u8>> {
        let key = Arc::clone(&self.key);
        self.key
            .pool
            .run("C_Sign", move |ctx| {
                let handle = key.handle(ctx)?;
                sign(ctx, &key, handle)
            })
            .map_err(|f| f.error)
    }

    /// ES256 over `message`: the appliance computes `SHA-256(message)` and the token signs it
    /// with raw `CKM_ECDSA`; the `r || s` it returns is checked and normalised to low-S.
    /// One pooled HSM call bounded by the configured timeout.
    fn es256(&self, message: &[u8]) -> Result<[u8; 64]> {
        if self.alg != Alg::ES256 {
            return Err(crate::seams::digest_signer::not_es256(&self.kid, self.alg));
        }
        let hash: [u8; 32] = sha2::Sha256::digest(message).into();
        let raw = self.run_sign(move |ctx, key, handle| {
            sign_refinding(ctx, key, Alg::ES256, handle, &hash)
        })?;
        p256_raw_low_s(&raw)
    }

    /// Pure Ed25519 (`CKM_EDDSA`, no parameters) over `message` as is, of any length: the
    /// raw-message signature of formats that do not sign an MPCP digest (C2SP signed notes,
    /// see [`crate::hsm::note_sign`]). One pooled HSM call bounded by the configured timeout.
    /// Refused (`ALGORITHM_UNSUPPORTED`) for ECDSA keys, whose mechanism signs hashes only.
    pub(crate) fn sign_eddsa_message(&self, message: &[u8]) -> Result<[u8; 64]> {
        if self.alg != Alg::EdDSA {
            return Err(Error::new(
                ErrorCode::AlgorithmUnsupported,
                format!(
                    "key {} is {}; only Ed25519 keys sign raw messages",
                    self.kid, self.alg
                ),
            ));
        }
        let message = message.to_vec();
        let raw = self.run_sign(move |ctx, key, handle| {
            ctx.session
                .sign(&sign_mechanism(Alg::EdDSA), handle, &message)
                .on(ctx.label, "C_Sign")
                .inspect_err(|f| {
                    if f.fault == Some(Fault::StaleObject) {
                        key.forget_handle();
                    }
                })
        })?;
        let len = raw.len();
        raw.try_into().map_err(|_| {
            Error::new(
                ErrorCode::HsmError,
                format!("token returned a {len}-byte Ed25519 signature"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_message_follows_the_convention() {
        let d = [5u8; 32];
        assert_eq!(token_message(Alg::EdDSA, &d), d);
        assert_eq!(token_message(Alg::ES256K, &d), ecdsa_prehash(&d));
        assert_eq!(token_message(Alg::ES256, &d), ecdsa_prehash(&d));
        assert!(finish_signature(Alg::EdDSA, vec![0; 63]).is_err());
        assert!(
            finish_signature(Alg::ES256, vec![0; 64]).is_err(),
            "r = s = 0 is not a signature"
        );
    }
}
