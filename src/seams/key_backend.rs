//! The key backend seam: key operations inside the token(s). The PKCS#11 implementation
//! lives in `crate::hsm`; the key registry (`crate::keys`) sits on top of this trait.

use std::sync::Arc;

use super::key_role::KeyRole;
use super::note_signer::NoteSigner;
use crate::crypto::{Alg, PublicKey};
use crate::error::{Error, ErrorCode, Result};
use crate::seams::digest_signer::SharedSigner;

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
    /// Whether the backend holds a token for `role` (optional roles may have none: then
    /// every operation on the role is refused).
    fn holds(&self, role: KeyRole) -> bool;
    /// Generates a sign-only, sensitive, non-extractable key pair for `role` on the role's
    /// token, and checks its attributes before returning.
    fn generate(&self, role: KeyRole, alg: Alg, label: &str) -> Result<GeneratedKey>;
    /// A signer for an existing key, identified by its object id, signing as `kid`.
    fn signer(&self, role: KeyRole, alg: Alg, object_id: &[u8], kid: &str) -> Result<SharedSigner>;
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
