//! The checkpoint key: the `audit` role's active key as a C2SP note signer
//! ([`CheckpointKeys`]).
//!
//! The signer is resolved from the registry each time a checkpoint is to be signed, so a
//! rotation of the audit key takes effect at the next checkpoint. Like the digest signers of
//! [`ActiveKeys`](crate::keys::ActiveKeys), the signer handed out checks before every
//! signature that its key is still the role's active key and that its algorithm may sign at
//! that instant.

use std::sync::Arc;

use super::{KeyGate, KeyRegistry};
use crate::crypto::{Alg, PublicKey};
use crate::error::{Error, ErrorCode, Result};
use crate::keys::{CheckpointKeys, KeyRole};
use crate::seams::note_signer::NoteSigner;

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
            gate: self.gate(role),
        }))
    }
}

/// The note signer handed out by [`CheckpointKeys::checkpoint_signer`]: refuses once its key
/// is no longer the audit role's active key or its algorithm may no longer sign.
struct GatedNoteSigner {
    inner: Arc<dyn NoteSigner>,
    kid: String,
    gate: KeyGate,
}

impl NoteSigner for GatedNoteSigner {
    fn key_name(&self) -> &str {
        self.inner.key_name()
    }

    fn public_key(&self) -> [u8; 32] {
        self.inner.public_key()
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64]> {
        self.gate
            .check(&self.kid, Alg::EdDSA, "it no longer signs checkpoints")?;
        self.inner.sign(message)
    }
}
