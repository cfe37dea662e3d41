//! A reusable thread that runs one job at a time for a caller that waits with a deadline:
//! the hand-off path of the session pool (see [`crate::hsm::pool`]).
//!
//! What happens to an abandoned call: PKCS#11 has no portable way to cancel a call in
//! flight, so the worker thread keeps running it. The caller drops the [`Worker`] handle;
//! when the call finally returns, the thread drops the job's result (and with it everything
//! the job owned, such as the pool lease of its session) and exits. A hung module therefore
//! pins at most one thread and one session per call it hangs.

use std::sync::mpsc;
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

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
pub(crate) struct Worker {
    tx: mpsc::Sender<Job>,
    thread: std::thread::JoinHandle<()>,
}

impl Worker {
    /// Starts an idle worker thread.
    pub(crate) fn spawn(name: String) -> std::io::Result<Worker> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            while let Ok(job) = rx.recv() {
                job();
            }
        })?;
        Ok(Worker { tx, thread })
    }

    /// Stops an idle worker and waits for its thread to end. Only for workers that run no
    /// job (a hung job would block this forever).
    pub(crate) fn shutdown(self) {
        drop(self.tx);
        // A panic on that thread was already reported to the caller of its job.
        let _ = self.thread.join();
    }

    /// Runs `f` on the worker's thread and waits at most `timeout` for its result. On
    /// success the worker comes back for reuse; on any error it is consumed (abandoned), and
    /// the result of `f`, when it comes, is dropped on the worker's thread.
    pub(crate) fn call<R: Send + 'static>(
        self,
        timeout: Duration,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<(Worker, R), CallError> {
        let (rtx, rrx) = mpsc::sync_channel(1);
        self.tx
            .send(Box::new(move || {
                // The caller may have given up; then the result is dropped right here.
                let _ = rtx.send(f());
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
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    struct Tracked(Arc<AtomicBool>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn runs_jobs_in_order_and_is_reused() {
        let w = Worker::spawn("t".into()).unwrap();
        let first = w.thread.thread().id();
        let (w, a) = w.call(Duration::from_secs(5), || 1).unwrap();
        let (w, b) = w
            .call(Duration::from_secs(5), || std::thread::current().id())
            .unwrap();
        assert_eq!(a, 1);
        assert_eq!(b, first, "the same thread ran both jobs");
        w.shutdown();
    }

    #[test]
    fn timeout_abandons_and_the_result_is_dropped_after_the_call() {
        let dropped = Arc::new(AtomicBool::new(false));
        let owned = Tracked(dropped.clone());
        let w = Worker::spawn("t".into()).unwrap();
        let started = Instant::now();
        let r = w.call(Duration::from_millis(50), move || {
            std::thread::sleep(Duration::from_millis(400));
            owned
        });
        assert_eq!(r.err(), Some(CallError::Elapsed));
        assert!(
            started.elapsed() < Duration::from_millis(350),
            "gave up waiting in time"
        );
        assert!(
            !dropped.load(Ordering::SeqCst),
            "what the abandoned call owns stays alive while it runs"
        );
        let t = Instant::now();
        while !dropped.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            dropped.load(Ordering::SeqCst),
            "dropped once the call returned"
        );
    }

    #[test]
    fn a_panicking_job_reports_gone_and_drops_what_it_owned() {
        let dropped = Arc::new(AtomicBool::new(false));
        let owned = Tracked(dropped.clone());
        let w = Worker::spawn("t".into()).unwrap();
        let r = w.call(Duration::from_secs(5), move || -> u8 {
            let _keep = owned;
            panic!("job failed")
        });
        assert_eq!(r.err(), Some(CallError::Gone));
        assert!(dropped.load(Ordering::SeqCst));
    }
}
