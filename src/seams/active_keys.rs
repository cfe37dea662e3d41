//! The registry's view the signing layers use: the active signer of a role and the
//! published keys.

use super::key_role::KeyRole;
use crate::error::Result;
use crate::jwk::Jwk;
use crate::seams::digest_signer::SharedSigner;

/// The registry's view that signing layers use: which key signs for a role right now, and
/// which keys are published. Implemented by the key registry; the service and the audit log
/// depend only on this trait.
pub trait ActiveKeys: Send + Sync {
    /// The active signer of `role`. KEY_NOT_FOUND when the role has no active key;
    /// ALGORITHM_DEPRECATED when its algorithm is past its deprecation date.
    fn active_signer(&self, role: KeyRole) -> Result<SharedSigner>;
    /// Every published key of `role` as a JWK (revoked and destroyed keys with active:false).
    fn published_keys(&self, role: KeyRole) -> Result<Vec<Jwk>>;
}
