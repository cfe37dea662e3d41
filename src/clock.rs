//! Time behind a trait, so expiry, lifetimes and deprecation dates are testable with a fake
//! clock, and the drift tolerance verifiers apply to expiry checks.

use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, ErrorCode, Result};
pub use crate::seams::clock::{Clock, SigningGate};

/// Default tolerance for clock drift between issuer and verifier.
pub const DEFAULT_DRIFT: Duration = Duration::from_secs(300);

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

/// Most fractional-second digits a timestamp may carry (nanoseconds, what `time` keeps).
pub const MAX_FRACTION_DIGITS: usize = 9;

/// Parses a timestamp of the appliance's one RFC 3339 profile,
/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`: uppercase `T` and `Z`, UTC only (no numeric offset), at
/// most nine fractional digits; `field` names the member for the error. Every timestamp the
/// appliance accepts or signs goes through here, so an accepted value has one spelling per
/// instant modulo trailing fraction digits, and what it signs is always UTC `Z`.
pub fn parse_rfc3339(s: &str, field: &str) -> Result<OffsetDateTime> {
    let refuse = || {
        Error::field(
            ErrorCode::TimestampInvalid,
            field,
            format!(
                "{field} must be an RFC 3339 UTC timestamp YYYY-MM-DDTHH:MM:SS[.fraction]Z \
                 (uppercase T and Z, at most {MAX_FRACTION_DIGITS} fraction digits): {s:?}"
            ),
        )
    };
    if !in_profile(s.as_bytes()) {
        return Err(refuse());
    }
    // The shape is checked above; `time` checks the ranges (month, day of month, hour...).
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| refuse())
}

/// The profile's shape; RFC 3339 itself also allows lowercase `t`/`z`, numeric offsets and
/// any number of fraction digits, which `time` accepts and this profile does not.
fn in_profile(b: &[u8]) -> bool {
    const SHAPE: &[u8; 19] = b"dddd-dd-ddTdd:dd:dd";
    let Some((&b'Z', rest)) = b.split_last() else {
        return false;
    };
    if rest.len() < SHAPE.len() {
        return false;
    }
    let (head, fraction) = rest.split_at(SHAPE.len());
    let head_ok = head.iter().zip(SHAPE).all(|(c, want)| {
        if *want == b'd' {
            c.is_ascii_digit()
        } else {
            c == want
        }
    });
    let fraction_ok = match fraction.split_first() {
        None => true,
        Some((b'.', digits)) => {
            (1..=MAX_FRACTION_DIGITS).contains(&digits.len())
                && digits.iter().all(u8::is_ascii_digit)
        }
        Some(_) => false,
    };
    head_ok && fraction_ok
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
        let t2 = parse_rfc3339("2026-12-31T23:59:58.5Z", "x").unwrap();
        assert_eq!(format_rfc3339(t2), "2026-12-31T23:59:58Z");
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

    #[test]
    fn one_profile_uppercase_utc_at_most_nine_fraction_digits() {
        for good in [
            "2026-12-31T23:59:59Z",
            "2026-12-31T23:59:59.5Z",
            "2026-12-31T23:59:59.123456789Z",
            "0001-01-01T00:00:00Z",
        ] {
            parse_rfc3339(good, "t").unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        assert_eq!(
            parse_rfc3339("2026-12-31T23:59:59.123456789Z", "t")
                .unwrap()
                .nanosecond(),
            123_456_789
        );
        for bad in [
            "2026-12-31t23:59:59Z",
            "2026-12-31T23:59:59z",
            "2026-12-31 23:59:59Z",
            "2026-12-31T23:59:50.99999999999999999999Z",
            "2026-12-31T23:59:59.1234567890Z",
            "2026-12-31T23:59:59.Z",
            "2026-12-31T23:59:59+00:00",
            "2026-12-31T23:59:59-00:00",
            "2026-12-31T23:59:59.5+01:00",
            "2026-12-31T23:59:59ZZ",
            "2026-12-31T23:59:59Z ",
            " 2026-12-31T23:59:59Z",
            "+2026-12-31T23:59:59Z",
            "2026-1-31T23:59:59Z",
            "2026-12-31T23:59:5\u{0663}Z",
            "2026-12-31T24:00:00Z",
            "2026-02-30T00:00:00Z",
        ] {
            let e = parse_rfc3339(bad, "expiresAt").unwrap_err();
            assert_eq!(e.code, ErrorCode::TimestampInvalid, "{bad}");
            assert_eq!(e.field.as_deref(), Some("expiresAt"), "{bad}");
        }
    }
}
