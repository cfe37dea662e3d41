//! A thread that owns state which must never be shared between threads (a PKCS#11 session)
//! and runs jobs on it, so that the caller can stop waiting after a deadline.
//!
//! What happens to an abandoned call: PKCS#11 has no portable way to cancel a call in
//! flight, so the worker thread keeps running it. The caller drops the [`Worker`] handle;
//! when the call finally returns, the thread finds no further job, drops its state (closing
//! the session) and exits, and only then runs its exit hook, which gives the pool slot back.
//! A hung module therefore pins at most one thread and one session per pool slot, and the
//! pool stays bounded: once every slot is pinned, new requests time out waiting for a slot.

use std::sync::mpsc;
use std::time::Duration;

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// Why a call produced no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The deadline passed; the job may still be running and the worker is abandoned.
    Elapsed,
    /// The worker thread is gone (its job panicked).
    Gone,
}

/// Handle to one worker thread. Dropping it lets the thread finish its current job and exit
/// (detached); [`Worker::shutdown`] waits for that.
pub(crate) struct Worker<S> {
    tx: mpsc::Sender<Job<S>>,
    thread: std::thread::JoinHandle<()>,
}

struct OnExit<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for OnExit<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl<S: Send + 'static> Worker<S> {
    /// Starts a thread owning `state`. `on_exit` runs on that thread after `state` has been
    /// dropped, also when a job panicked.
    pub(crate) fn spawn(
        name: String,
        state: S,
        on_exit: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Worker<S>> {
        let (tx, rx) = mpsc::channel::<Job<S>>();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            // Declared first so that it runs last, after the state is gone.
            let _exit = OnExit(Some(on_exit));
            let mut state = state;
            while let Ok(job) = rx.recv() {
                job(&mut state);
            }
        })?;
        Ok(Worker { tx, thread })
    }

    /// Stops an idle worker and waits until its thread has dropped its state. Only for
    /// workers that run no job (a hung job would block this forever).
    pub(crate) fn shutdown(self) {
        drop(self.tx);
        // A panic on that thread was already reported to the caller of its job.
        let _ = self.thread.join();
    }

    /// Runs `f` on the worker's state and waits at most `timeout` for its result. On
    /// success the worker comes back for reuse; on any error it is consumed (abandoned).
    pub(crate) fn call<R: Send + 'static>(
        self,
        timeout: Duration,
        f: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<(Worker<S>, R), CallError> {
        let (rtx, rrx) = mpsc::sync_channel(1);
        self.tx
            .send(Box::new(move |s: &mut S| {
                // The caller may have given up; then nobody wants the result.
                let _ = rtx.send(f(s));
            }))
            .map_err(|_| CallError::Gone)?;
        match rrx.recv_timeout(timeout) {
            Ok(r) => Ok((self, r)),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(CallError::Elapsed),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(CallError::Gone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;

    struct Tracked(Arc<AtomicBool>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn runs_jobs_in_order_on_owned_state() {
        let exited = Arc::new(AtomicUsize::new(0));
        let e = exited.clone();
        let w = Worker::spawn("t".into(), 0u32, move || {
            e.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        let (w, a) = w
            .call(Duration::from_secs(5), |s| {
                *s += 1;
                *s
            })
            .unwrap();
        let (w, b) = w
            .call(Duration::from_secs(5), |s| {
                *s += 1;
                *s
            })
            .unwrap();
        assert_eq!((a, b), (1, 2));
        w.shutdown();
        assert_eq!(
            exited.load(Ordering::SeqCst),
            1,
            "shutdown waits for the thread"
        );
    }

    #[test]
    fn timeout_abandons_and_exit_waits_for_the_call() {
        let dropped = Arc::new(AtomicBool::new(false));
        let exited = Arc::new(AtomicBool::new(false));
        let dropped_first = Arc::new(AtomicBool::new(false));
        let (d, e, d2, f) = (
            dropped.clone(),
            exited.clone(),
            dropped.clone(),
            dropped_first.clone(),
        );
        let w = Worker::spawn("t".into(), Tracked(d), move || {
            // The state must be gone before the slot is released.
            f.store(d2.load(Ordering::SeqCst), Ordering::SeqCst);
            e.store(true, Ordering::SeqCst);
        })
        .unwrap();
        let started = Instant::now();
        let r = w.call(Duration::from_millis(50), |_| {
            std::thread::sleep(Duration::from_millis(400));
        });
        assert_eq!(r.err(), Some(CallError::Elapsed));
        assert!(
            started.elapsed() < Duration::from_millis(350),
            "gave up waiting in time"
        );
        assert!(
            !exited.load(Ordering::SeqCst),
            "the abandoned call still holds its slot"
        );
        let t = Instant::now();
        while !exited.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(exited.load(Ordering::SeqCst));
        assert!(
            dropped_first.load(Ordering::SeqCst),
            "state dropped before the exit hook"
        );
    }

    #[test]
    fn a_panicking_job_reports_gone_and_releases() {
        let exited = Arc::new(AtomicBool::new(false));
        let e = exited.clone();
        let w = Worker::spawn("t".into(), (), move || e.store(true, Ordering::SeqCst)).unwrap();
        let r = w.call(Duration::from_secs(5), |_| -> u8 { panic!("job failed") });
        assert_eq!(r.err(), Some(CallError::Gone));
        let t = Instant::now();
        while !exited.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(exited.load(Ordering::SeqCst));
    }
}
