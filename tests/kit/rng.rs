//! A small deterministic random source for the crash tests: xorshift64, seeded from the
//! clock and printed, so a failing run can be told apart (and its timing replayed by hand).

use std::time::{SystemTime, UNIX_EPOCH};

/// xorshift64: the same seed yields the same sequence.
pub struct Rng(pub u64);

impl Rng {
    /// Seeds from the clock (never zero, which xorshift would keep forever) and prints the
    /// seed on stdout.
    pub fn from_clock() -> Rng {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        println!("seed {seed}");
        Rng(seed)
    }

    /// The next value of the sequence.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
