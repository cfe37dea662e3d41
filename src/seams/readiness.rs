//! Readiness probes: what must be up for the service to be ready.

use crate::error::Result;

/// Something that must be up for the service to be ready (`GET /readyz`): HSM tokens logged
/// in, the audit log open. The store and the token table are checked by the service itself.
pub trait ReadinessProbe: Send + Sync {
    /// Short name shown in the readiness report.
    fn name(&self) -> &str;
    /// Ok when ready; the error says why not (never a secret).
    fn check(&self) -> Result<()>;
}
