//! Signing C2SP signed notes (the audit log's checkpoints) with an Ed25519 key inside the
//! token.
//!
//! A note signature (type `0x01`) is pure Ed25519 over the note text itself, not over an MPCP
//! digest: the token signs the raw bytes with `CKM_EDDSA` without parameters, which accepts
//! messages of any length. Only EdDSA keys qualify; the public key is read from the token
//! (`CKA_EC_POINT`) when the signer is loaded, and every signature is checked against it
//! before it leaves this module.

use std::sync::Arc;

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

use super::asym_sign::{HsmSigner, KeyRef};
use super::{HsmBackend, check_object_id, key_management};
use crate::crypto::{Alg, PublicKey};
use crate::error::{Error, ErrorCode, Result};
use crate::seams::debug_showing;
use crate::seams::key_role::KeyRole;
use crate::seams::note_signer::{NoteSigner, check_key_name};

/// An Ed25519 key in the token that signs notes under the key name `name` (for the audit
/// log: its origin). `Send + Sync`; each signature is one pooled HSM call.
pub struct HsmNoteSigner {
    name: String,
    public: [u8; 32],
    signer: HsmSigner,
}

debug_showing!(HsmNoteSigner { name, signer });

impl HsmNoteSigner {
    /// The registry kid the signer was loaded as.
    pub fn kid(&self) -> &str {
        use crate::seams::digest_signer::DigestSigner as _;
        self.signer.kid()
    }
}

impl NoteSigner for HsmNoteSigner {
    fn key_name(&self) -> &str {
        &self.name
    }

    fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// Pure Ed25519 over `message` in the token, verified against the token's public key
    /// before it is returned (`HSM_ERROR` if it does not verify).
    fn sign(&self, message: &[u8]) -> Result<[u8; 64]> {
        let sig = self.signer.sign_eddsa_message(message)?;
        let vk = VerifyingKey::from_bytes(&self.public)
            .map_err(|_| Error::new(ErrorCode::HsmError, "token public key is not Ed25519"))?;
        vk.verify(message, &Signature::from_bytes(&sig))
            .map_err(|_| {
                Error::new(
                    ErrorCode::HsmError,
                    format!(
                        "note signature by {} does not verify under the token's public key",
                        self.kid()
                    ),
                )
            })?;
        Ok(sig)
    }
}

/// Loads the EdDSA key pair with CKA_ID `object_id` from `role`'s token as a note signer
/// named `name`. Refused: `ALGORITHM_UNSUPPORTED` when EdDSA is not enabled for the role,
/// `KEY_ALG_MISMATCH` when the token key is not an Ed25519 key, `CONFIG_INVALID` for an
/// invalid key name, `KEY_NOT_FOUND` when no such key is on the token.
pub fn load_note_signer(
    hsm: &HsmBackend,
    role: KeyRole,
    object_id: &[u8],
    kid: &str,
    name: &str,
) -> Result<HsmNoteSigner> {
    check_key_name(name)?;
    let b = hsm.enabled(role, Alg::EdDSA)?;
    check_object_id(object_id)?;
    let id = object_id.to_vec();
    let (handle, public) = b
        .pool
        .run("load key", move |ctx| {
            key_management::load(ctx, Alg::EdDSA, &id).map(|(h, p)| ((ctx.epoch, h), p))
        })
        .map_err(|f| f.error)?;
    let raw = match &public {
        PublicKey::Ed25519(vk) => vk.to_bytes(),
        other => {
            return Err(Error::new(
                ErrorCode::AlgorithmUnsupported,
                format!(
                    "key {kid} is {}; notes are signed with Ed25519 keys only",
                    other.alg()
                ),
            ));
        }
    };
    let key = KeyRef::new(Arc::clone(&b.pool), object_id.to_vec(), Some(handle));
    Ok(HsmNoteSigner {
        name: name.to_string(),
        public: raw,
        signer: HsmSigner::new(kid, Alg::EdDSA, public, key),
    })
}
