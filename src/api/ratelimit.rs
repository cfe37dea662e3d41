//! Per-token request rate limit: a token bucket per principal that refills at `rate` requests
//! per second up to `burst`. A request that finds the bucket empty is refused with
//! RATE_LIMITED (429) and changes nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorCode, Result};

/// Token buckets keyed by principal name.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate` requests per second sustained, `burst` at most at once. A rate of 0 disables
    /// the limit.
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `who`'s bucket as of `now`.
    pub fn check_at(&self, who: &str, now: Instant) -> Result<()> {
        if self.rate == 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (level, last) = buckets.entry(who.to_string()).or_insert((self.burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *level = (*level + elapsed * self.rate).min(self.burst);
        *last = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            let wait = Duration::from_secs_f64((1.0 - *level) / self.rate);
            Err(Error::new(
                ErrorCode::RateLimited,
                format!(
                    "rate limit exceeded; retry in {} ms",
                    wait.as_millis().max(1)
                ),
            ))
        }
    }

    /// Takes one request from `who`'s bucket now.
    pub fn check(&self, who: &str) -> Result<()> {
        self.check_at(who, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_per_principal() {
        let rl = RateLimiter::new(2, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            rl.check_at("a", t0).unwrap();
        }
        assert_eq!(
            rl.check_at("a", t0).unwrap_err().code,
            ErrorCode::RateLimited
        );
        rl.check_at("b", t0).unwrap();
        rl.check_at("a", t0 + Duration::from_millis(500)).unwrap();
        assert!(rl.check_at("a", t0 + Duration::from_millis(500)).is_err());
        let off = RateLimiter::new(0, 1);
        for _ in 0..100 {
            off.check_at("a", t0).unwrap();
        }
    }
}
