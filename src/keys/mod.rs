//! Key roles and the key backend seam.
//!
//! The appliance holds keys for exactly three roles, each on its own token by default; it has
//! no role for gateway or settlement keys and refuses configuration that names one. A
//! [`KeyBackend`] generates, loads and destroys keys inside the token; the PKCS#11
//! implementation lives in [`crate::hsm`]. The key registry (kid, state, timestamps) sits on
//! top of this seam.

use std::sync::Arc;

pub mod keyset;
pub mod publication;
pub mod record;
pub mod registry;
#[cfg(test)]
pub(crate) mod test_support;

pub use record::{KeyRecord, KeyState};
pub use registry::KeyRegistry;

use serde::{Deserialize, Serialize};

use crate::audit::NoteSigner;
use crate::crypto::{Alg, PublicKey};
use crate::error::{Error, ErrorCode, Result};
use crate::signer::DigestSigner;

/// What a key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyRole {
    /// PolicyGrants and destination allowlists.
    GrantSigning,
    /// Trust bundles and signed key sets.
    Root,
    /// Audit-log checkpoints.
    Audit,
}

impl KeyRole {
    /// Every role.
    pub const ALL: [KeyRole; 3] = [KeyRole::GrantSigning, KeyRole::Root, KeyRole::Audit];

    /// Config / CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::GrantSigning => "grant-signing",
            KeyRole::Root => "root",
            KeyRole::Audit => "audit",
        }
    }

    /// Parses a role name. Gateway or settlement roles are refused by name: the appliance
    /// never holds those keys.
    pub fn parse(s: &str) -> Result<KeyRole> {
        if let Some(r) = KeyRole::ALL.into_iter().find(|r| r.as_str() == s) {
            return Ok(r);
        }
        let lowered = s.to_ascii_lowercase();
        let msg = if lowered.contains("gateway") || lowered.contains("settlement") {
            format!(
                "role {s:?} refused: the Policy Authority never holds gateway or settlement keys"
            )
        } else {
            format!("unknown key role {s:?} (expected grant-signing, root or audit)")
        };
        Err(Error::new(ErrorCode::ConfigInvalid, msg))
    }
}

impl std::fmt::Display for KeyRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key pair freshly generated inside a token.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// CKA_ID of both objects.
    pub object_id: Vec<u8>,
    /// CKA_LABEL of both objects.
    pub label: String,
    /// The public key read back from the token.
    pub public: PublicKey,
}

/// Key operations inside the token(s). Blocking; async callers run them off the runtime.
pub trait KeyBackend: Send + Sync {
    /// Generates a sign-only, sensitive, non-extractable key pair for `role` on the role's
    /// token, and checks its attributes before returning.
    fn generate(&self, role: KeyRole, alg: Alg, label: &str) -> Result<GeneratedKey>;
    /// A signer for an existing key, identified by its object id, signing as `kid`.
    fn signer(
        &self,
        role: KeyRole,
        alg: Alg,
        object_id: &[u8],
        kid: &str,
    ) -> Result<Arc<dyn DigestSigner>>;
    /// Destroys both objects of a key in the role's token.
    fn destroy(&self, role: KeyRole, object_id: &[u8]) -> Result<()>;
    /// Ok while the private key with `object_id` is present in the role's token;
    /// KEY_MATERIAL_MISSING when it is not, or the token's error.
    fn check_key(&self, role: KeyRole, object_id: &[u8]) -> Result<()>;
    /// A signer of C2SP signed notes (pure Ed25519 over the raw note text) for an existing
    /// EdDSA key, named `name` in signature lines. Keys of other algorithms are refused.
    fn note_signer(
        &self,
        role: KeyRole,
        object_id: &[u8],
        kid: &str,
        name: &str,
    ) -> Result<Arc<dyn NoteSigner>>;
}

/// A token's KEY_NOT_FOUND for a key the registry holds as present: the key's object vanished
/// from its token, a server-state failure (KEY_MATERIAL_MISSING, 503), not the caller's.
/// Other errors pass unchanged.
pub fn material_missing(e: Error) -> Error {
    if e.code == ErrorCode::KeyNotFound {
        Error::new(ErrorCode::KeyMaterialMissing, e.message)
    } else {
        e
    }
}

/// The registry's view that signing layers use: which key signs for a role right now, and
/// which keys are published. Implemented by the key registry; the service and the audit log
/// depend only on this trait.
pub trait ActiveKeys: Send + Sync {
    /// The active signer of `role`. KEY_NOT_FOUND when the role has no active key;
    /// ALGORITHM_DEPRECATED when its algorithm is past its deprecation date.
    fn active_signer(&self, role: KeyRole) -> Result<Arc<dyn DigestSigner>>;
    /// Every published key of `role` as a JWK (revoked and destroyed keys with active:false).
    fn published_keys(&self, role: KeyRole) -> Result<Vec<crate::jwk::Jwk>>;
}

/// The key that signs audit-log checkpoints: the `audit` role's active key. Implemented by
/// the key registry; the audit checkpointer depends only on this trait.
pub trait CheckpointKeys: Send + Sync {
    /// A note signer for the audit role's active key, named `origin` (the log's origin is
    /// the checkpoint key's name). It refuses to sign once that key is no longer active or
    /// its algorithm may no longer sign. `AUDIT_KEY_MISSING` when the audit role has no
    /// active key.
    fn checkpoint_signer(&self, origin: &str) -> Result<Arc<dyn NoteSigner>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_roles_are_refused() {
        assert_eq!(KeyRole::parse("root").unwrap(), KeyRole::Root);
        let e = KeyRole::parse("gateway-settlement").unwrap_err();
        assert!(e.message.contains("never holds"));
        assert_eq!(
            KeyRole::parse("nope").unwrap_err().code,
            ErrorCode::ConfigInvalid
        );
    }
}
