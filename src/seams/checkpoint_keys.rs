//! The key that signs audit-log checkpoints, as the audit checkpointer sees it.

use std::sync::Arc;

use super::note_signer::NoteSigner;
use crate::error::Result;

/// The key that signs audit-log checkpoints: the `audit` role's active key. Implemented by
/// the key registry; the audit checkpointer depends only on this trait.
pub trait CheckpointKeys: Send + Sync {
    /// A note signer for the audit role's active key, named `origin` (the log's origin is
    /// the checkpoint key's name). It refuses to sign once that key is no longer active or
    /// its algorithm may no longer sign. `AUDIT_KEY_MISSING` when the audit role has no
    /// active key.
    fn checkpoint_signer(&self, origin: &str) -> Result<Arc<dyn NoteSigner>>;
}
