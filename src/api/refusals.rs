//! What the service keeps of requests that change nothing: refusals of authenticated tokens
//! become audit entries, aggregated; unauthenticated refusals and reads are counters.
//!
//! A refusal of an authenticated token for its role (403 FORBIDDEN, 403
//! CLIENT_CERTIFICATE_REQUIRED) or its rate (429 RATE_LIMITED) is recorded as a
//! `request_refused` entry naming the token, the route template and the code (never the
//! body, a header or a secret). So that a hostile token cannot grow the log without bound,
//! a (token, route, code) gets at most one entry per [`WINDOW`]; refusals in between are
//! counted, and the next entry of that key carries them in `count`. The keys are bounded:
//! token names come from the token store, routes from the route table, codes from
//! [`crate::error::ErrorCode`]. When the audit log cannot write, the request is refused all
//! the same; the count is kept for the next entry and the failure is counted.
//!
//! 401s (unknown, revoked or malformed tokens) are not logged per attempt (anyone can send
//! them): [`RequestCounters`] counts them, and authenticated reads, for a metrics exporter.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

/// The aggregation window of refusal entries per (token, route, code).
pub const WINDOW: Duration = Duration::from_secs(60);

/// Counters of requests that the audit log does not record one by one. Read by
/// [`RequestCounters::snapshot`]; never reset while the process runs.
#[derive(Debug, Default)]
pub struct RequestCounters {
    reads: AtomicU64,
    unauthenticated: AtomicU64,
    refusals_recorded: AtomicU64,
    refusals_aggregated: AtomicU64,
    refusal_audit_failures: AtomicU64,
    windows: Mutex<HashMap<(String, String, &'static str), Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    /// When the last entry of the key was written.
    logged_at: OffsetDateTime,
    /// Refusals since that entry.
    pending: u64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Authenticated GET requests admitted to their handler.
    pub reads: u64,
    /// Requests refused as unauthenticated (401).
    pub unauthenticated: u64,
    /// Refusals written as a `request_refused` entry.
    pub refusals_recorded: u64,
    /// Refusals folded into a later entry's count instead of an entry of their own.
    pub refusals_aggregated: u64,
    /// Refusal entries the audit log could not write.
    pub refusal_audit_failures: u64,
}

impl RequestCounters {
    /// Counts an authenticated read.
    pub fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an unauthenticated refusal.
    pub fn unauthenticated(&self) {
        self.unauthenticated.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes a refusal of `token` on `route` with `code` at `now`: `Some(count)` when an
    /// entry is due now (standing for `count` refusals), `None` when it is aggregated.
    pub fn refusal(
        &self,
        token: &str,
        route: &str,
        code: &'static str,
        now: OffsetDateTime,
    ) -> Option<u64> {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let key = (token.to_string(), route.to_string(), code);
        match w.get_mut(&key) {
            Some(win) if now - win.logged_at < WINDOW && now >= win.logged_at => {
                win.pending += 1;
                self.refusals_aggregated.fetch_add(1, Ordering::Relaxed);
                None
            }
            Some(win) => {
                let count = win.pending + 1;
                *win = Window {
                    logged_at: now,
                    pending: 0,
                };
                Some(count)
            }
            None => {
                w.insert(
                    key,
                    Window {
                        logged_at: now,
                        pending: 0,
                    },
                );
                Some(1)
            }
        }
    }

    /// Records the outcome of writing a due entry of `count` refusals; on failure the
    /// count goes back to the key, so the next entry carries it.
    pub fn refusal_written(
        &self,
        token: &str,
        route: &str,
        code: &'static str,
        count: u64,
        ok: bool,
    ) {
        if ok {
            self.refusals_recorded.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.refusal_audit_failures.fetch_add(1, Ordering::Relaxed);
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(win) = w.get_mut(&(token.to_string(), route.to_string(), code)) {
            win.pending += count;
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            reads: self.reads.load(Ordering::Relaxed),
            unauthenticated: self.unauthenticated.load(Ordering::Relaxed),
            refusals_recorded: self.refusals_recorded.load(Ordering::Relaxed),
            refusals_aggregated: self.refusals_aggregated.load(Ordering::Relaxed),
            refusal_audit_failures: self.refusal_audit_failures.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_window_carrying_what_it_aggregated() {
        let c = RequestCounters::default();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(c.refusal("a", "GET /x", "FORBIDDEN", t0), Some(1));
        for s in 1..10 {
            assert_eq!(
                c.refusal("a", "GET /x", "FORBIDDEN", t0 + time::Duration::seconds(s)),
                None
            );
        }
        assert_eq!(c.refusal("a", "GET /y", "FORBIDDEN", t0), Some(1));
        assert_eq!(
            c.refusal("a", "GET /x", "FORBIDDEN", t0 + time::Duration::seconds(61)),
            Some(10)
        );
        c.refusal_written("a", "GET /x", "FORBIDDEN", 10, false);
        assert_eq!(
            c.refusal(
                "a",
                "GET /x",
                "FORBIDDEN",
                t0 + time::Duration::seconds(122)
            ),
            Some(11)
        );
    }
}
