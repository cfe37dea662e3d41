//! The checkpoint key: the `audit` role's active key as a C2SP note signer
//! ([`CheckpointKeys`]).
//!
//! The signer is resolved from the registry each time a checkpoint is to be signed, so a
//! rotation of the audit key takes effect at the next checkpoint. Like the digest signers of
//! [`ActiveKeys`](crate::keys::ActiveKeys), the signer handed out checks before every
//! signature that its key is still the role's active key and that its algorithm may sign at
//! that instant.

use std::sync::Arc;

use super::{KeyRegistry, not_found, wrong_state};
use crate::algorithms::AlgorithmPolicy;
use crate::clock::Clock;
use crate::crypto::PublicKey;
use crate::error::{Error, ErrorCode, Result};
use crate::keys::record::KeyRecord;
use crate::keys::{CheckpointKeys, KeyRole};
use crate::seams::note_signer::NoteSigner;
use crate::store::store_error;

impl CheckpointKeys for KeyRegistry {
    fn checkpoint_signer(&self, origin: &str) -> Result<Arc<dyn NoteSigner>> {
        let role = KeyRole::Audit;
        // EdDSA only (the policy loader refuses anything else for this role), and not
        // deprecated now.
        let rec = self.signing_record(role, || {
            Error::new(
                ErrorCode::AuditKeyMissing,
                "the audit role has no active key, so no audit checkpoint can be signed; \
                 generate and activate one (`mpcp-pa keys rotate --role audit --alg EdDSA`)",
            )
        })?;
        let kid = rec.kid.clone();
        let registered = match rec.public_key()? {
            PublicKey::Ed25519(vk) => vk.to_bytes(),
            other => {
                return Err(Error::new(
                    ErrorCode::AlgorithmUnsupported,
                    format!(
                        "audit key {kid} is {}; checkpoints are signed with Ed25519 only",
                        other.alg()
                    ),
                ));
            }
        };
        let inner = self
            .backend
            .note_signer(role, &rec.object_id_bytes()?, &kid, origin)?;
        if inner.public_key() != registered {
            return Err(Error::new(
                ErrorCode::HsmError,
                format!("token key for {kid} does not match the registered public key"),
            ));
        }
        Ok(Arc::new(GatedNoteSigner {
            inner,
            kid,
            role,
            keys: self.keys.clone(),
            active: self.active.clone(),
            policy: self.policy.clone(),
            clock: self.clock.clone(),
        }))
    }
}

/// The note signer handed out by [`CheckpointKeys::checkpoint_signer`]: refuses once its key
/// is no longer the audit role's active key or its algorithm may no longer sign.
struct GatedNoteSigner {
    inner: Arc<dyn NoteSigner>,
    kid: String,
    role: KeyRole,
    keys: sled::Tree,
    active: sled::Tree,
    policy: Arc<AlgorithmPolicy>,
    clock: Arc<dyn Clock>,
}

impl NoteSigner for GatedNoteSigner {
    fn key_name(&self) -> &str {
        self.inner.key_name()
    }

    fn public_key(&self) -> [u8; 32] {
        self.inner.public_key()
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64]> {
        self.policy
            .check_signing(self.role, crate::crypto::Alg::EdDSA, self.clock.now())?;
        let current = self
            .active
            .get(self.role.as_str())
            .map_err(|e| store_error("read", e))?;
        if current.as_deref() != Some(self.kid.as_bytes()) {
            let rec = self
                .keys
                .get(self.kid.as_bytes())
                .map_err(|e| store_error("read", e))?
                .map(|b| KeyRecord::from_bytes(&b))
                .transpose()?;
            return Err(match rec {
                Some(r) => wrong_state(&r, "it no longer signs checkpoints"),
                None => not_found(&self.kid),
            });
        }
        self.inner.sign(message)
    }
}
