//! The appliance's checkpointer: signs checkpoints of the audit log with the audit role's
//! active key (in the HSM), on a timer while the log grows and on demand.
//!
//! Guarantees:
//! - the key is resolved from the key registry ([`CheckpointKeys`]) for every checkpoint it
//!   signs, so after a rotation of the audit key the next checkpoint is signed by the new key;
//! - a checkpoint is signed only when the log holds entries the latest checkpoint does not
//!   cover; otherwise the latest one is returned (on demand) or nothing happens (timer);
//! - every checkpoint goes through [`AuditLog::sign_checkpoint`], which proves the tree
//!   consistent with the last signed checkpoint and refuses otherwise, so two inconsistent
//!   checkpoints are never signed;
//! - signing a checkpoint records no audit entry (that entry would make the log grow with
//!   every checkpoint); the checkpoint itself is kept in the log's checkpoint tree and
//!   exported with it.

use std::sync::Arc;
use std::time::Duration;

use super::log::{AuditLog, CheckpointTask, StoredCheckpoint};
use super::note::NoteSigner;
use crate::error::Result;
use crate::seams::checkpoint_keys::CheckpointKeys;

/// A checkpoint returned by [`Checkpointer::checkpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointOutcome {
    /// The checkpoint covering every durable entry at the time of the call.
    pub checkpoint: StoredCheckpoint,
    /// Whether it was signed by this call (false: the latest one already covered the log).
    pub signed_now: bool,
}

/// Signs checkpoints of one log with the audit role's active key.
pub struct Checkpointer {
    log: Arc<AuditLog>,
    keys: Arc<dyn CheckpointKeys>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("origin", &self.log.origin())
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// A checkpointer for `log` whose key comes from `keys`.
    pub fn new(log: Arc<AuditLog>, keys: Arc<dyn CheckpointKeys>) -> Checkpointer {
        Checkpointer { log, keys }
    }

    /// The log.
    pub fn log(&self) -> &Arc<AuditLog> {
        &self.log
    }

    /// The note signer of the audit role's active key, named after the log's origin.
    /// `AUDIT_KEY_MISSING` when there is none (the service refuses to start then).
    pub fn signer(&self) -> Result<Arc<dyn NoteSigner>> {
        self.keys.checkpoint_signer(self.log.origin())
    }

    /// Whether the latest checkpoint covers every durable entry.
    fn latest_if_current(&self) -> Result<Option<StoredCheckpoint>> {
        let size = self.log.size();
        match self.log.latest_checkpoint()? {
            Some(cp) if cp.checkpoint()?.size == size => Ok(Some(cp)),
            _ => Ok(None),
        }
    }

    /// A checkpoint covering every durable entry: the latest one if it already does,
    /// otherwise a new one signed now. Blocking (HSM and store).
    pub fn checkpoint(&self) -> Result<CheckpointOutcome> {
        if let Some(cp) = self.latest_if_current()? {
            return Ok(CheckpointOutcome {
                checkpoint: cp,
                signed_now: false,
            });
        }
        let signer = self.signer()?;
        let before = self.log.latest_checkpoint()?;
        let cp = self.log.sign_checkpoint(signer.as_ref())?;
        // Another caller may have signed the same size in between; then this one is not new.
        let signed_now = before.as_ref() != Some(&cp);
        Ok(CheckpointOutcome {
            checkpoint: cp,
            signed_now,
        })
    }

    /// Signs a checkpoint only if the log grew since the latest one (the timer's step).
    pub fn checkpoint_if_grown(&self) -> Result<Option<StoredCheckpoint>> {
        let outcome = self.checkpoint()?;
        Ok(outcome.signed_now.then_some(outcome.checkpoint))
    }

    /// Starts a thread that calls [`Checkpointer::checkpoint_if_grown`] every `interval`;
    /// `report` sees every outcome (a new checkpoint, nothing to do, or the error) so the
    /// caller can log it. The thread stops when the task is stopped or dropped.
    pub fn spawn(
        self: &Arc<Self>,
        interval: Duration,
        report: impl Fn(&Result<Option<StoredCheckpoint>>) + Send + 'static,
    ) -> Result<CheckpointTask> {
        let me = Arc::clone(self);
        CheckpointTask::spawn(interval, move || {
            let r = me.checkpoint_if_grown();
            report(&r);
            r.map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::audit::{AuditConfig, SoftwareNoteSigner, Vkey};
    use crate::clock::SystemClock;
    use crate::error::{Error, ErrorCode};
    use crate::events::{Actor, Event, EventSink};
    use crate::store::Store;

    /// Hands out whichever software key the test set (test double of the registry).
    struct Keys(Mutex<Option<[u8; 32]>>);

    impl CheckpointKeys for Keys {
        fn checkpoint_signer(&self, origin: &str) -> Result<Arc<dyn NoteSigner>> {
            match *self.0.lock().unwrap() {
                Some(seed) => Ok(Arc::new(SoftwareNoteSigner::from_seed(origin, &seed)?)),
                None => Err(Error::new(ErrorCode::AuditKeyMissing, "no audit key")),
            }
        }
    }

    fn open_log(store: &Store) -> Arc<AuditLog> {
        Arc::new(
            AuditLog::open(store, AuditConfig::new("pa.t/audit"), Arc::new(SystemClock)).unwrap(),
        )
    }

    fn grow(log: &AuditLog) {
        log.record(
            &Actor::system(),
            Event::Startup {
                config_digest: "00".into(),
                version: "t".into(),
            },
        )
        .unwrap();
    }

    #[test]
    fn signs_only_when_grown_with_the_key_active_now() {
        let store = Store::temporary().unwrap();
        let log = open_log(&store);
        let keys = Arc::new(Keys(Mutex::new(None)));
        let c = Checkpointer::new(log.clone(), keys.clone());
        grow(&log);
        assert_eq!(c.checkpoint().unwrap_err().code, ErrorCode::AuditKeyMissing);
        assert!(log.latest_checkpoint().unwrap().is_none());

        *keys.0.lock().unwrap() = Some([1; 32]);
        let first = c.checkpoint().unwrap();
        assert!(first.signed_now);
        assert_eq!(first.checkpoint.checkpoint().unwrap().size, 1);
        // Nothing new: the same checkpoint, not signed again; the timer does nothing.
        let again = c.checkpoint().unwrap();
        assert!(!again.signed_now);
        assert_eq!(again.checkpoint, first.checkpoint);
        assert!(c.checkpoint_if_grown().unwrap().is_none());

        // After a key change the next checkpoint is signed by the new key.
        *keys.0.lock().unwrap() = Some([2; 32]);
        grow(&log);
        let second = c.checkpoint_if_grown().unwrap().expect("log grew");
        let new_vkey = Vkey::ed25519(
            "pa.t/audit",
            SoftwareNoteSigner::from_seed("x", &[2; 32])
                .unwrap()
                .public_key(),
        );
        assert_eq!(second.vkey, new_vkey.to_string());
        assert_ne!(second.vkey, first.checkpoint.vkey);
        assert_eq!(second.verify().unwrap().size, 2);
        assert_eq!(log.checkpoints().unwrap().len(), 2);
    }

    #[test]
    fn timer_signs_while_growing_and_reports() {
        let store = Store::temporary().unwrap();
        let log = open_log(&store);
        let keys = Arc::new(Keys(Mutex::new(Some([3; 32]))));
        let c = Arc::new(Checkpointer::new(log.clone(), keys));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let task = c
            .spawn(Duration::from_millis(10), move |r| {
                if let Ok(Some(cp)) = r {
                    s.lock().unwrap().push(cp.checkpoint().unwrap().size);
                }
            })
            .unwrap();
        grow(&log);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        task.stop();
        assert_eq!(*seen.lock().unwrap(), vec![1]);
    }
}
