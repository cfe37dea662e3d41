//! Time behind a trait, so expiry, lifetimes and deprecation dates are testable with a fake
//! clock, and the drift tolerance verifiers apply to expiry checks.

use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, ErrorCode, Result};

/// Default tolerance for clock drift between issuer and verifier.
pub const DEFAULT_DRIFT: Duration = Duration::from_secs(300);

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// The current time (UTC).
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that stays where it is set; for tests and for `verify --at`.
#[derive(Debug)]
pub struct FixedClock(Mutex<OffsetDateTime>);

impl FixedClock {
    /// A clock fixed at `t`.
    pub fn new(t: OffsetDateTime) -> Self {
        FixedClock(Mutex::new(t))
    }

    /// Moves the clock to `t`.
    pub fn set(&self, t: OffsetDateTime) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *g += d;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Parses an RFC 3339 timestamp; `field` names the member for the error.
pub fn parse_rfc3339(s: &str, field: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
        Error::field(
            ErrorCode::TimestampInvalid,
            field,
            format!("{field} is not an RFC 3339 timestamp: {s:?}"),
        )
    })
}

/// Formats a time as RFC 3339 in UTC with whole seconds (`2026-01-02T03:04:05Z`).
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_and_refusal() {
        let t = parse_rfc3339("2026-12-31T23:59:59Z", "expiresAt").unwrap();
        assert_eq!(format_rfc3339(t), "2026-12-31T23:59:59Z");
        let t2 = parse_rfc3339("2026-12-31T23:59:59.5+01:00", "x").unwrap();
        assert_eq!(format_rfc3339(t2), "2026-12-31T22:59:59Z");
        for bad in [
            "2026-12-31",
            "2026-13-01T00:00:00Z",
            "yesterday",
            "2026-12-31T23:59:59",
        ] {
            assert_eq!(
                parse_rfc3339(bad, "f").unwrap_err().code,
                ErrorCode::TimestampInvalid
            );
        }
        let c = FixedClock::new(t);
        c.advance(Duration::from_secs(1));
        assert_eq!(format_rfc3339(c.now()), "2027-01-01T00:00:00Z");
    }
}
