//! HSM calls on the caller's own thread, with the deadline enforced where the caller can be
//! freed: the async task waiting for the blocking work.
//!
//! A thread stuck in a PKCS#11 call cannot be freed; only whoever waits for it can stop
//! waiting. The session pool therefore has two ways to run a call (see [`crate::hsm`]):
//! - **inline**, on the calling thread, when the thread runs inside [`CallWatch::run`]: each
//!   call publishes its deadline to the watch, and the watcher ([`bounded`]: the async task
//!   that spawned the blocking work) answers `HSM_TIMEOUT` at that deadline and stops
//!   waiting. No thread hand-off per call.
//! - **hand-off** otherwise: the call runs on a pool worker thread and the blocking caller
//!   stops waiting at the deadline itself.
//!
//! A call that overran its deadline inline still finishes on its thread; it then reports
//! `HSM_TIMEOUT` too (whatever the token answered), and its session is closed, never
//! returned to the pool. After a watcher gave up, further HSM calls of the same blocking
//! work fail at once with `HSM_TIMEOUT` instead of starting.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorCode, Result};
use crate::hsm::utils::lock;

/// How soon a watcher first looks for a deadline while none is published yet (blocking work
/// that has not reached its HSM call, or is between calls); the interval then doubles up to
/// [`WATCH_POLL_MAX`], so work queued for long costs few wake-ups. A deadline the watcher has
/// seen is waited for exactly; one that passes before the watcher has seen it is noticed at
/// its next look.
pub const WATCH_POLL: Duration = Duration::from_millis(20);
/// The longest interval between two looks (far below any sensible call timeout).
pub const WATCH_POLL_MAX: Duration = Duration::from_millis(320);

thread_local! {
    /// The watch of the work this thread runs, if any ([`CallWatch::run`]).
    static CURRENT: RefCell<Option<Arc<CallWatch>>> = const { RefCell::new(None) };
}

/// The HSM call in flight under a watch.
#[derive(Debug, Clone)]
struct InFlight {
    deadline: Instant,
    token: Arc<str>,
    what: &'static str,
    timeout: Duration,
}

/// Shared between blocking work that makes HSM calls inline and the one waiting for it: the
/// deadline of the call in flight, and whether the waiter gave up.
#[derive(Debug, Default)]
pub struct CallWatch {
    in_flight: Mutex<Option<InFlight>>,
    abandoned: AtomicBool,
}

impl CallWatch {
    /// A watch with no call in flight.
    pub fn new() -> Arc<CallWatch> {
        Arc::new(CallWatch::default())
    }

    /// Runs `f` on this thread with every HSM call it makes run inline (no hand-off),
    /// publishing each call's deadline here. Whoever calls this takes on enforcing those
    /// deadlines for its own waiter (as [`bounded`] does); a thread that nobody can free
    /// should not use it. A watch serves one thread at a time.
    pub fn run<T>(self: &Arc<Self>, f: impl FnOnce() -> T) -> T {
        struct Restore(Option<Arc<CallWatch>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = previous);
            }
        }
        let previous = CURRENT.with(|c| c.borrow_mut().replace(Arc::clone(self)));
        let _restore = Restore(previous);
        f()
    }

    /// The watch of the work running on this thread.
    pub(crate) fn current() -> Option<Arc<CallWatch>> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// The deadline of the call in flight.
    pub fn deadline(&self) -> Option<Instant> {
        lock(&self.in_flight).as_ref().map(|c| c.deadline)
    }

    /// True once the waiter gave up.
    pub fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    /// Marks the waiter as gone: calls not yet started fail at once.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
    }

    /// Publishes the call starting now; `done` withdraws it.
    pub(crate) fn begin(
        &self,
        deadline: Instant,
        token: Arc<str>,
        what: &'static str,
        timeout: Duration,
    ) {
        *lock(&self.in_flight) = Some(InFlight {
            deadline,
            token,
            what,
            timeout,
        });
    }

    /// The call published by `begin` has returned.
    pub(crate) fn done(&self) {
        *lock(&self.in_flight) = None;
    }

    /// The timeout error when the call in flight is past its deadline at `now`.
    pub fn overdue(&self, now: Instant) -> Option<Error> {
        let g = lock(&self.in_flight);
        let c = g.as_ref().filter(|c| now >= c.deadline)?;
        Some(timeout_error(
            &c.token,
            c.what,
            c.timeout,
            "the caller stopped waiting",
        ))
    }
}

/// `HSM_TIMEOUT` for a call on `token` that did not complete within `timeout`.
pub(crate) fn timeout_error(token: &str, what: &str, timeout: Duration, outcome: &str) -> Error {
    Error::new(
        ErrorCode::HsmTimeout,
        format!(
            "token {token:?}: {what} did not complete within {} ms; {outcome} (the call was \
             abandoned; its session is closed once the module returns)",
            timeout.as_millis()
        ),
    )
}

/// Runs blocking work `f` on tokio's blocking pool, its HSM calls inline on that thread,
/// and waits for it at most until the deadline of an HSM call in flight: then it answers
/// `HSM_TIMEOUT` and stops waiting (the work finishes on its own; an HSM call it makes
/// after that fails at once). A drop-in replacement for `spawn_blocking(f)` around work that
/// signs: the same bound as the hand-off path, without a thread hand-off per HSM call.
///
/// Errors: what `f` returns; `HSM_TIMEOUT` as above; `INTERNAL` if `f` panicked.
pub async fn bounded<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let watch = CallWatch::new();
    let w = Arc::clone(&watch);
    let mut task = tokio::task::spawn_blocking(move || w.run(f));
    let mut poll = WATCH_POLL;
    loop {
        let wake = watch.deadline().unwrap_or_else(|| {
            let at = Instant::now() + poll;
            poll = (poll * 2).min(WATCH_POLL_MAX);
            at
        });
        tokio::select! {
            biased;
            r = &mut task => {
                return r.map_err(|e| {
                    Error::new(ErrorCode::Internal, format!("blocking task failed: {e}"))
                })?;
            }
            () = tokio::time::sleep_until(wake.into()) => {
                if let Some(e) = watch.overdue(Instant::now()) {
                    watch.abandon();
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_sets_and_restores_the_thread_watch() {
        assert!(CallWatch::current().is_none());
        let outer = CallWatch::new();
        let inner = CallWatch::new();
        outer.run(|| {
            assert!(Arc::ptr_eq(&CallWatch::current().unwrap(), &outer));
            inner.run(|| assert!(Arc::ptr_eq(&CallWatch::current().unwrap(), &inner)));
            assert!(Arc::ptr_eq(&CallWatch::current().unwrap(), &outer));
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                inner.run(|| panic!("work failed"))
            }));
            assert!(r.is_err());
            assert!(
                Arc::ptr_eq(&CallWatch::current().unwrap(), &outer),
                "restored on panic"
            );
        });
        assert!(CallWatch::current().is_none());
    }

    #[test]
    fn overdue_only_past_the_published_deadline() {
        let w = CallWatch::new();
        let now = Instant::now();
        assert!(w.overdue(now).is_none());
        w.begin(
            now + Duration::from_millis(100),
            "tok".into(),
            "C_Sign",
            Duration::from_millis(100),
        );
        assert_eq!(w.deadline(), Some(now + Duration::from_millis(100)));
        assert!(w.overdue(now).is_none());
        let e = w.overdue(now + Duration::from_millis(100)).unwrap();
        assert_eq!(e.code, ErrorCode::HsmTimeout);
        assert!(
            e.message
                .contains("\"tok\": C_Sign did not complete within 100 ms"),
            "{e}"
        );
        w.done();
        assert!(w.overdue(now + Duration::from_secs(1)).is_none());
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn bounded_returns_the_work_result() {
        let r = runtime().block_on(bounded(|| {
            assert!(CallWatch::current().is_some(), "work runs under a watch");
            Ok(7)
        }));
        assert_eq!(r.unwrap(), 7);
        let e = runtime()
            .block_on(bounded(|| -> Result<()> {
                Err(Error::new(ErrorCode::KeyNotFound, "x"))
            }))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::KeyNotFound);
    }

    #[test]
    fn bounded_frees_the_caller_at_the_published_deadline() {
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (ended_tx, ended_rx) = std::sync::mpsc::channel::<bool>();
        let started = Instant::now();
        let rt = runtime();
        let e = rt
            .block_on(bounded(move || -> Result<()> {
                let w = CallWatch::current().unwrap();
                // A call that hangs until released, published like the pool publishes one.
                w.begin(
                    Instant::now() + Duration::from_millis(150),
                    "tok".into(),
                    "C_Sign",
                    Duration::from_millis(150),
                );
                let _ = release_rx.recv_timeout(Duration::from_secs(5));
                w.done();
                let _ = ended_tx.send(w.abandoned());
                Ok(())
            }))
            .unwrap_err();
        let waited = started.elapsed();
        assert_eq!(e.code, ErrorCode::HsmTimeout, "{e}");
        assert!(
            waited >= Duration::from_millis(150),
            "not before the deadline: {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(3),
            "freed at the deadline: {waited:?}"
        );
        // The work was still stuck when the caller was freed; released, it sees it was abandoned.
        release_tx.send(()).unwrap();
        assert!(ended_rx.recv_timeout(Duration::from_secs(5)).unwrap());
        // (Dropping the runtime waits for its blocking work, which has ended now.)
        drop(rt);
    }
}
