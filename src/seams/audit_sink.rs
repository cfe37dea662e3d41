//! The audit sink seam: where events go, and the side writes committed atomically with an
//! entry.
//!
//! [`EventSink`] is defined in [`crate::events`], next to the events it records (that module
//! sits below this layer and its old path must keep working), and re-exported here.
//! [`AuditSink`] adds appends that carry [`SideWrites`]: the records that go with an entry (an
//! issued artifact, an idempotency record, a revocation, a single-use receipt, ...), applied
//! all together with the entry or not at all. This is how every durable write of the service
//! happens. The sled implementation (the audit log) lives in `crate::audit`.
//!
//! Side writes may only target service trees: [`SideWrites::check`] refuses any write into an
//! `audit/` tree, so no code path can update or delete a stored audit entry through this
//! facility.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio::sync::oneshot;

use crate::error::{Error, ErrorCode, Result};
pub use crate::events::EventSink;
use crate::events::{Actor, Event};

/// Prefix of the audit log's own trees; side writes into them are refused.
pub const AUDIT_TREE_PREFIX: &str = "audit/";

/// What a side write expects to find under its key before it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The key is absent.
    Absent,
    /// The key holds exactly these bytes.
    Value(Vec<u8>),
}

/// One conditional write into a service tree.
#[derive(Debug, Clone)]
pub struct SideWrite {
    /// sled tree name (never an `audit/` tree).
    pub tree: &'static str,
    /// Key in that tree.
    pub key: Vec<u8>,
    /// Precondition, checked in the commit's transaction.
    pub expect: Expect,
    /// The value written when the precondition holds; `None` removes the key.
    pub value: Option<Vec<u8>>,
    /// What the caller gets when the precondition does not hold.
    pub on_conflict: Error,
}

/// The side writes of one append, applied all together or not at all.
#[derive(Debug, Clone, Default)]
pub struct SideWrites(Vec<SideWrite>);

impl SideWrites {
    /// No side writes.
    pub fn new() -> SideWrites {
        SideWrites(Vec::new())
    }

    /// Writes `value` under `key` in `tree` if the key is absent; otherwise the append is
    /// refused with `on_conflict`.
    pub fn insert_new(
        &mut self,
        tree: &'static str,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        on_conflict: Error,
    ) -> &mut SideWrites {
        self.push(
            tree,
            key.into(),
            Expect::Absent,
            Some(value.into()),
            on_conflict,
        )
    }

    /// Replaces what the caller read under `key` (`None`: absent) by `value`; if the stored
    /// value differs from `expected`, the append is refused with `on_conflict`.
    pub fn swap(
        &mut self,
        tree: &'static str,
        key: impl Into<Vec<u8>>,
        expected: Option<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        on_conflict: Error,
    ) -> &mut SideWrites {
        let expect = expected.map_or(Expect::Absent, Expect::Value);
        self.push(tree, key.into(), expect, Some(value.into()), on_conflict)
    }

    /// Removes `key` from `tree` if it still holds exactly `expected` (the bytes the caller
    /// read); otherwise (changed or already gone) the append is refused with `on_conflict`.
    pub fn remove(
        &mut self,
        tree: &'static str,
        key: impl Into<Vec<u8>>,
        expected: Vec<u8>,
        on_conflict: Error,
    ) -> &mut SideWrites {
        self.push(tree, key.into(), Expect::Value(expected), None, on_conflict)
    }

    /// Appends every write of `other` after these (checked together by [`SideWrites::check`]).
    pub fn extend(&mut self, other: SideWrites) -> &mut SideWrites {
        self.0.extend(other.0);
        self
    }

    fn push(
        &mut self,
        tree: &'static str,
        key: Vec<u8>,
        expect: Expect,
        value: Option<Vec<u8>>,
        on_conflict: Error,
    ) -> &mut SideWrites {
        self.0.push(SideWrite {
            tree,
            key,
            expect,
            value,
            on_conflict,
        });
        self
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The writes, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &SideWrite> {
        self.0.iter()
    }

    /// Refuses writes into the audit log's trees and two writes to one key (whose
    /// preconditions could not both be checked against the state before the append).
    pub fn check(&self) -> Result<()> {
        for (i, w) in self.0.iter().enumerate() {
            if w.tree.starts_with(AUDIT_TREE_PREFIX) {
                return Err(Error::new(
                    ErrorCode::Internal,
                    format!("side write into audit tree {:?} refused", w.tree),
                ));
            }
            if self.0[..i]
                .iter()
                .any(|o| o.tree == w.tree && o.key == w.key)
            {
                return Err(Error::new(
                    ErrorCode::Internal,
                    format!("two side writes to one key of {:?}", w.tree),
                ));
            }
        }
        Ok(())
    }
}

/// The outcome of an append, to be awaited: resolves to the entry's index once the entry and
/// its side writes are durable, to the side write's own error if a precondition failed
/// (nothing written), or to `AUDIT_UNAVAILABLE` if the log could not write. Awaiting parks
/// no thread.
#[derive(Debug)]
pub struct AppendTicket(Ticket);

#[derive(Debug)]
enum Ticket {
    Ready(Option<Result<u64>>),
    Waiting(oneshot::Receiver<Result<u64>>),
}

impl AppendTicket {
    /// A ticket that is already decided (a refusal before queueing, or a sink that writes
    /// synchronously).
    pub fn ready(result: Result<u64>) -> AppendTicket {
        AppendTicket(Ticket::Ready(Some(result)))
    }

    /// A ticket answered through `rx`; a dropped sender means the committer stopped.
    pub fn waiting(rx: oneshot::Receiver<Result<u64>>) -> AppendTicket {
        AppendTicket(Ticket::Waiting(rx))
    }

    /// Blocks the calling thread until the append is decided, for synchronous callers (the
    /// CLI, the key registry inside a blocking task). Never call it on an async task: it parks
    /// the thread, not the task.
    pub fn wait(self) -> Result<u64> {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut ticket = std::pin::pin!(self);
        loop {
            if let Poll::Ready(r) = ticket.as_mut().poll(&mut cx) {
                return r;
            }
            // Spurious wake-ups only cost another poll.
            std::thread::park();
        }
    }
}

impl Future for AppendTicket {
    type Output = Result<u64>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<u64>> {
        match &mut self.0 {
            Ticket::Ready(r) => Poll::Ready(r.take().unwrap_or_else(|| {
                Err(Error::new(
                    ErrorCode::Internal,
                    "append ticket polled twice",
                ))
            })),
            Ticket::Waiting(rx) => Pin::new(rx).poll(cx).map(|r| {
                r.unwrap_or_else(|_| {
                    Err(Error::new(
                        ErrorCode::AuditUnavailable,
                        "audit committer stopped",
                    ))
                })
            }),
        }
    }
}

/// An event sink that can also commit side writes atomically with an entry, and be awaited
/// without blocking a thread. The audit log implements it; the service records every
/// signature and the records that go with it through it.
pub trait AuditSink: EventSink {
    /// Queues `event` with `writes` for the next group commit (see [`AppendTicket`]).
    fn append(&self, actor: &Actor, event: Event, writes: SideWrites) -> AppendTicket;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tickets_resolve() {
        assert_eq!(AppendTicket::ready(Ok(3)).await.unwrap(), 3);
        let (tx, rx) = oneshot::channel();
        tx.send(Ok(9)).unwrap();
        assert_eq!(AppendTicket::waiting(rx).await.unwrap(), 9);
        let (tx, rx) = oneshot::channel::<Result<u64>>();
        drop(tx);
        assert_eq!(
            AppendTicket::waiting(rx).await.unwrap_err().code,
            ErrorCode::AuditUnavailable
        );
    }
}
