//! Time behind a trait, and the gate that may refuse signing because of the time.

use time::OffsetDateTime;

use crate::error::Result;

/// Something that may refuse signing because of the time: the audit log, whose last entry
/// the clock must not be behind by more than the drift tolerance. Lower layers (key
/// publication) and the API consult it before every signature.
pub trait SigningGate: Send + Sync {
    /// `CLOCK_BEHIND` while signing must not happen now; clears by itself once the clock
    /// reads a time at or after the gate's limit.
    fn check_signing_time(&self) -> Result<()>;
}

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// The current time (UTC).
    fn now(&self) -> OffsetDateTime;
}
