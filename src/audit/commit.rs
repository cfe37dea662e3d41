//! Group commit: many callers hand items to one committer thread, which writes whatever has
//! queued up as one batch, makes it durable once (one flush for the whole batch) and then
//! wakes every waiter with its own outcome. Callers wait either on a thread
//! ([`GroupCommitter::submit`]) or as a future ([`GroupCommitter::submit_async`], which parks
//! no thread). The writer may refuse single items (a failed precondition): those callers get
//! their item's error and the rest of the batch commits. If the write or the flush fails,
//! every caller in the batch (and everyone queued behind it) gets `AUDIT_UNAVAILABLE`, and
//! the committer is marked failed. It does not latch: before the next batch it has the
//! writer re-read its state from the store ([`BatchWriter::recover`]), so the in-memory view
//! equals what is on disk, and it writes nothing while that fails. While failed and idle it
//! retries the recovery every [`PROBE_INTERVAL`], so readiness comes back without traffic;
//! the first successful batch or recovery clears the failure.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::{Error, ErrorCode, Result};
use crate::metrics::Metrics;

/// Writes one batch durably. Runs on the committer thread only.
pub trait BatchWriter: Send + 'static {
    /// What callers submit.
    type Item: Send + 'static;
    /// Writes `items` and makes them durable before returning `Ok`, with one outcome per
    /// item in order: its index, or the error that refused it (nothing of it written). `Err`
    /// means the batch as a whole failed.
    fn write_batch(&mut self, items: Vec<Self::Item>) -> Result<Vec<Result<u64>>>;

    /// Called after a failed batch, before anything else is written, and periodically while
    /// failed: brings the writer's in-memory state back to what the store holds and checks
    /// that it can write again. `Ok` clears the failure. The default has no state to restore.
    fn recover(&mut self) -> Result<()> {
        Ok(())
    }
}

/// How often a failed committer retries [`BatchWriter::recover`] while no item arrives.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Where a caller waits for its outcome.
enum Reply {
    Thread(mpsc::SyncSender<Result<u64>>),
    Task(oneshot::Sender<Result<u64>>),
}

impl Reply {
    fn send(self, r: Result<u64>) {
        // A caller that went away (a dropped future) no longer needs the answer.
        match self {
            Reply::Thread(tx) => {
                let _ = tx.send(r);
            }
            Reply::Task(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

struct Pending<I> {
    item: I,
    reply: Reply,
}

struct Queue<I> {
    pending: Vec<Pending<I>>,
    shutdown: bool,
    failed: Option<Error>,
}

struct Shared<I> {
    queue: Mutex<Queue<I>>,
    wake: Condvar,
    /// Where batches and failures are counted, once the log is given metrics.
    metrics: OnceLock<Arc<Metrics>>,
}

/// The committer thread and its queue.
pub struct GroupCommitter<I: Send + 'static> {
    shared: Arc<Shared<I>>,
    thread: Option<JoinHandle<()>>,
}

impl<I: Send + 'static> std::fmt::Debug for GroupCommitter<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitter").finish_non_exhaustive()
    }
}

/// Counts and logs `n` appends that failed with `err`.
fn failed(metrics: &OnceLock<Arc<Metrics>>, n: usize, err: &Error) {
    if let Some(m) = metrics.get() {
        m.audit_append_failed(n as u64);
    }
    tracing::error!(entries = n, code = err.code.as_str(), cause = %err.message, "audit append failed");
}

fn unavailable(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::AuditUnavailable, msg)
}

impl<I: Send + 'static> GroupCommitter<I> {
    /// Starts the committer thread; batches hold at most `max_batch` items.
    pub fn start<W: BatchWriter<Item = I>>(mut writer: W, max_batch: usize) -> Result<Self> {
        let max_batch = max_batch.max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                shutdown: false,
                failed: None,
            }),
            wake: Condvar::new(),
            metrics: OnceLock::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("audit-committer".into())
            .spawn(move || {
                // Set after a failed batch: the writer's state must be re-read from the store
                // before anything else is written.
                let mut must_recover = false;
                loop {
                    let batch: Vec<Pending<I>> = {
                        let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
                        while q.pending.is_empty() && !q.shutdown {
                            if q.failed.is_none() {
                                q = s.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                                continue;
                            }
                            // Failed and idle: probe, so readiness recovers without traffic.
                            let (g, timeout) = s
                                .wake
                                .wait_timeout(q, PROBE_INTERVAL)
                                .unwrap_or_else(|p| p.into_inner());
                            q = g;
                            if timeout.timed_out() && q.pending.is_empty() && !q.shutdown {
                                drop(q);
                                let healed = writer.recover();
                                q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
                                if healed.is_ok() {
                                    must_recover = false;
                                    q.failed = None;
                                }
                            }
                        }
                        if q.pending.is_empty() {
                            return;
                        }
                        let n = q.pending.len().min(max_batch);
                        q.pending.drain(..n).collect()
                    };
                    let (items, replies): (Vec<I>, Vec<_>) =
                        batch.into_iter().map(|p| (p.item, p.reply)).unzip();
                    let n = items.len();
                    let started = Instant::now();
                    let written = if must_recover {
                        // Nothing is written over an in-memory state that may be stale.
                        writer.recover().and_then(|()| {
                            must_recover = false;
                            writer.write_batch(items)
                        })
                    } else {
                        writer.write_batch(items)
                    };
                    match written {
                        Ok(outcomes) if outcomes.len() == n => {
                            if let Some(m) = s.metrics.get() {
                                let durable = outcomes.iter().filter(|o| o.is_ok()).count();
                                m.audit_batch(n, durable, started.elapsed().as_secs_f64());
                            }
                            s.queue.lock().unwrap_or_else(|p| p.into_inner()).failed = None;
                            for (r, o) in replies.into_iter().zip(outcomes) {
                                r.send(o);
                            }
                        }
                        Ok(outcomes) => {
                            let err = unavailable(format!(
                                "audit writer answered {} of {n} items",
                                outcomes.len()
                            ));
                            must_recover = true;
                            failed(&s.metrics, n, &err);
                            s.queue.lock().unwrap_or_else(|p| p.into_inner()).failed =
                                Some(err.clone());
                            for r in replies {
                                r.send(Err(err.clone()));
                            }
                        }
                        Err(e) => {
                            let err = unavailable(format!("audit append failed: {}", e.message));
                            must_recover = true;
                            let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
                            q.failed = Some(err.clone());
                            // Everything queued behind the failed batch fails too.
                            failed(&s.metrics, n + q.pending.len(), &err);
                            for p in q.pending.drain(..) {
                                p.reply.send(Err(err.clone()));
                            }
                            drop(q);
                            for r in replies {
                                r.send(Err(err.clone()));
                            }
                        }
                    }
                }
            })
            .map_err(|e| unavailable(format!("cannot start the audit committer: {e}")))?;
        Ok(GroupCommitter {
            shared,
            thread: Some(thread),
        })
    }

    fn enqueue(&self, item: I, reply: Reply) -> Result<()> {
        {
            // A failed committer still takes items: the next batch recovers first, and a
            // refusal that no longer holds must not outlive its cause.
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.shutdown {
                return Err(unavailable("audit log is shut down"));
            }
            q.pending.push(Pending { item, reply });
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Queues `item` and blocks the calling thread until its batch is durable; returns its
    /// outcome.
    pub fn submit(&self, item: I) -> Result<u64> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.enqueue(item, Reply::Thread(tx))?;
        rx.recv()
            .unwrap_or_else(|_| Err(unavailable("audit committer stopped")))
    }

    /// Queues `item`; the returned receiver yields its outcome once its batch is durable
    /// (await it: no thread waits). Refusals before queueing (a failed or stopped committer)
    /// come back at once as `Err`.
    pub fn submit_async(&self, item: I) -> Result<oneshot::Receiver<Result<u64>>> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(item, Reply::Task(tx))?;
        Ok(rx)
    }

    /// Counts batches (size, flush time, durable entries) and failed appends into `metrics`
    /// from now on; the first call wins.
    pub fn count_into(&self, metrics: Arc<Metrics>) {
        let _ = self.shared.metrics.set(metrics);
    }

    /// Number of callers queued and not yet taken into a batch.
    pub fn queued(&self) -> usize {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending
            .len()
    }

    /// The error of the last failed batch, until a later batch or recovery succeeds.
    pub fn failed(&self) -> Option<Error> {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failed
            .clone()
    }
}

impl<I: Send + 'static> Drop for GroupCommitter<I> {
    fn drop(&mut self) {
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.shutdown = true;
        }
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Counts flushes; holds the batch containing `gate_at` until the test opens the gate;
    /// fails the batch containing `fail_at`.
    struct Recorder {
        next: u64,
        flushes: Arc<AtomicUsize>,
        gate_at: u32,
        gate: mpsc::Receiver<()>,
        at_gate: mpsc::Sender<()>,
        fail_at: Option<u32>,
    }

    impl BatchWriter for Recorder {
        type Item = u32;
        fn write_batch(&mut self, items: Vec<u32>) -> Result<Vec<Result<u64>>> {
            if items.contains(&self.gate_at) {
                let _ = self.at_gate.send(());
                let _ = self.gate.recv();
            }
            self.flushes.fetch_add(1, Ordering::SeqCst);
            if let Some(f) = self.fail_at
                && items.contains(&f)
            {
                return Err(Error::new(ErrorCode::StoreError, "disk full"));
            }
            // Odd items above 1000 are refused on their own.
            Ok(items
                .iter()
                .map(|&i| {
                    if i > 1000 && i % 2 == 1 {
                        return Err(Error::new(ErrorCode::Conflict, format!("refused {i}")));
                    }
                    self.next += 1;
                    Ok(self.next - 1)
                })
                .collect())
        }
    }

    type Setup = (
        Arc<GroupCommitter<u32>>,
        Arc<AtomicUsize>,
        mpsc::Sender<()>,
        mpsc::Receiver<()>,
    );

    fn setup(fail_at: Option<u32>) -> Setup {
        let flushes = Arc::new(AtomicUsize::new(0));
        let (open, gate) = mpsc::channel();
        let (at_gate, reached) = mpsc::channel();
        let w = Recorder {
            next: 0,
            flushes: flushes.clone(),
            gate_at: 0,
            gate,
            at_gate,
            fail_at,
        };
        let c = Arc::new(GroupCommitter::start(w, 1024).unwrap());
        (c, flushes, open, reached)
    }

    fn wait_queued(c: &GroupCommitter<u32>, n: usize) {
        while c.queued() != n {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn spawn(c: &Arc<GroupCommitter<u32>>, i: u32) -> std::thread::JoinHandle<Result<u64>> {
        let c = c.clone();
        std::thread::spawn(move || c.submit(i))
    }

    #[test]
    fn concurrent_callers_share_one_flush_and_get_distinct_indices() {
        let (c, flushes, open, reached) = setup(None);
        let first = spawn(&c, 0); // held at the gate while the others queue up
        reached.recv().unwrap();
        let rest: Vec<_> = (1..64u32).map(|i| spawn(&c, i)).collect();
        wait_queued(&c, 63);
        open.send(()).unwrap();
        let mut got = vec![first.join().unwrap().unwrap()];
        got.extend(rest.into_iter().map(|h| h.join().unwrap().unwrap()));
        got.sort_unstable();
        assert_eq!(got, (0..64).collect::<Vec<u64>>());
        assert_eq!(
            flushes.load(Ordering::SeqCst),
            2,
            "63 queued callers share one flush"
        );
    }

    #[test]
    fn a_failed_batch_fails_every_caller_in_it_then_the_committer_recovers() {
        let (c, _flushes, open, reached) = setup(Some(7));
        let first = spawn(&c, 0);
        reached.recv().unwrap();
        let batch: Vec<_> = [5u32, 6, 7, 8].into_iter().map(|i| spawn(&c, i)).collect();
        wait_queued(&c, 4);
        open.send(()).unwrap();
        assert_eq!(first.join().unwrap().unwrap(), 0);
        for h in batch {
            let e = h.join().unwrap().unwrap_err();
            assert_eq!(e.code, ErrorCode::AuditUnavailable);
        }
        assert!(c.failed().is_some());
        // The fault is gone (the next batch has no 7): it is written, the failure clears.
        assert_eq!(c.submit(9).unwrap(), 1);
        assert!(c.failed().is_none());
    }

    /// Fails every batch and every recovery while `broken` is set.
    struct Flaky {
        next: u64,
        broken: Arc<std::sync::atomic::AtomicBool>,
        recoveries: Arc<AtomicUsize>,
    }

    impl BatchWriter for Flaky {
        type Item = u32;
        fn write_batch(&mut self, items: Vec<u32>) -> Result<Vec<Result<u64>>> {
            if self.broken.load(Ordering::SeqCst) {
                return Err(Error::new(ErrorCode::StoreError, "disk full"));
            }
            Ok(items
                .iter()
                .map(|_| {
                    self.next += 1;
                    Ok(self.next - 1)
                })
                .collect())
        }
        fn recover(&mut self) -> Result<()> {
            self.recoveries.fetch_add(1, Ordering::SeqCst);
            if self.broken.load(Ordering::SeqCst) {
                return Err(Error::new(ErrorCode::StoreError, "disk full"));
            }
            Ok(())
        }
    }

    #[test]
    fn a_failed_committer_recovers_first_and_probes_while_idle() {
        let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let recoveries = Arc::new(AtomicUsize::new(0));
        let c = GroupCommitter::start(
            Flaky {
                next: 0,
                broken: broken.clone(),
                recoveries: recoveries.clone(),
            },
            16,
        )
        .unwrap();
        assert_eq!(c.submit(1).unwrap_err().code, ErrorCode::AuditUnavailable);
        // Still broken: the recovery before the batch fails, nothing is written.
        assert_eq!(c.submit(2).unwrap_err().code, ErrorCode::AuditUnavailable);
        assert!(recoveries.load(Ordering::SeqCst) >= 1);
        assert!(c.failed().is_some());
        // Fixed: the idle probe clears the failure without any item.
        broken.store(false, Ordering::SeqCst);
        let t = std::time::Instant::now();
        while c.failed().is_some() {
            assert!(t.elapsed() < PROBE_INTERVAL * 6, "the probe never cleared");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(c.submit(3).unwrap(), 0, "no index was consumed by failures");
    }

    #[tokio::test]
    async fn async_callers_share_a_flush_and_refused_items_fail_alone() {
        let (c, flushes, open, reached) = setup(None);
        let first = spawn(&c, 0);
        reached.recv().unwrap();
        let rxs: Vec<_> = (1001..1033u32)
            .map(|i| c.submit_async(i).unwrap())
            .collect();
        assert_eq!(c.queued(), 32);
        open.send(()).unwrap();
        assert_eq!(first.join().unwrap().unwrap(), 0);
        let mut indices = Vec::new();
        for (i, rx) in (1001..1033u32).zip(rxs) {
            match rx.await.unwrap() {
                Ok(index) => {
                    assert_eq!(i % 2, 0);
                    indices.push(index);
                }
                Err(e) => {
                    assert_eq!((i % 2, e.code), (1, ErrorCode::Conflict));
                }
            }
        }
        // The accepted half got consecutive indices; refusals consumed none.
        assert_eq!(indices, (1..17).collect::<Vec<u64>>());
        assert_eq!(flushes.load(Ordering::SeqCst), 2);
        assert!(c.failed().is_none());
    }
}
