//! A process-wide gate between tests of one binary: most take it shared (any number at once),
//! a timing-sensitive or load-sensitive test takes it exclusive, so that it runs while no
//! other gated test of the binary does (as it did when it had a binary of its own).
//!
//! The gate prefers sharers: a shared holder may take it shared again (a harness that starts
//! a second server) without waiting for an exclusive taker queued meanwhile, so it cannot
//! deadlock; an exclusive taker waits until nothing holds it. A panicking holder releases it
//! (the guards are dropped on unwind). The guards are `Send`, so they may live in structures
//! that move between threads (the in-process harness).

use std::sync::{Condvar, Mutex, MutexGuard};

struct State {
    shared: usize,
    exclusive: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    shared: 0,
    exclusive: false,
});
static CHANGED: Condvar = Condvar::new();

fn lock() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The gate held shared; released on drop.
#[must_use = "the gate is released when the guard is dropped"]
pub struct Shared(());

/// The gate held exclusive; released on drop.
#[must_use = "the gate is released when the guard is dropped"]
pub struct Exclusive(());

/// Takes the gate shared (waits while an exclusive holder runs).
pub fn shared() -> Shared {
    let mut s = lock();
    while s.exclusive {
        s = CHANGED.wait(s).unwrap_or_else(|e| e.into_inner());
    }
    s.shared += 1;
    Shared(())
}

/// Takes the gate exclusive (waits until nothing holds it). Never take it while this thread
/// holds it shared.
pub fn exclusive() -> Exclusive {
    let mut s = lock();
    while s.exclusive || s.shared > 0 {
        s = CHANGED.wait(s).unwrap_or_else(|e| e.into_inner());
    }
    s.exclusive = true;
    Exclusive(())
}

impl Drop for Shared {
    fn drop(&mut self) {
        lock().shared -= 1;
        CHANGED.notify_all();
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        lock().exclusive = false;
        CHANGED.notify_all();
    }
}
