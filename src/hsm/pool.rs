//! A bounded pool of logged-in sessions on one token.
//!
//! Each session is owned by one worker thread ([`Worker`]) and is used by one request at a
//! time: a request checks a worker out exclusively, runs its operation on the worker's
//! session with a deadline, and checks it back in. A `Session` is therefore never used by
//! two threads at once, and every HSM call is bounded by the configured timeout.
//!
//! Health and recovery:
//! - Before each use the session is checked with `C_GetSessionInfo` (same slot, still logged
//!   in as user). A failing check fails the request with `HSM_UNAVAILABLE`.
//! - A failure that means the token's sessions or login are gone (session handle invalid,
//!   device removed, token not present, user not logged in, ...) fails the request and starts
//!   a new *epoch* for the token: every session of an older epoch is closed and replaced on
//!   its next use, the slot is looked up again by label and the user logs in again.
//!   `CKR_CRYPTOKI_NOT_INITIALIZED` additionally re-initialises the library (a new module
//!   generation; older sessions are dropped without `C_CloseSession`, whose handle numbers
//!   the library may have reused).
//! - Recovery is lazy, on the next request. When it fails, further requests fail fast with
//!   `HSM_UNAVAILABLE` until an exponential backoff (configured initial and maximum) allows
//!   the next attempt; a success resets it. The process never needs restarting.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;

use crate::error::{Error, ErrorCode};
use crate::hsm::module::Module;
use crate::hsm::pin::Pin;
use crate::hsm::utils::{CkResultExt, Failure, Fault, lock};
use crate::hsm::worker::{CallError, Worker};

/// The validity period of sessions, slot lookups and object handles of one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch {
    /// Library initialisation generation.
    pub module: u64,
    /// Token recovery count.
    pub token: u64,
}

/// Sizing and timing of one pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    pub size: usize,
    pub timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// What an operation gets to work with, on the worker thread.
pub(crate) struct SessionCtx<'a> {
    /// The checked, logged-in session (exclusively this operation's).
    pub session: &'a Session,
    /// The epoch the session belongs to (keys cache object handles per epoch).
    pub epoch: Epoch,
    /// The token's label, for error messages.
    pub label: &'a str,
    /// The slot holding the token.
    pub slot: Slot,
    /// The module (for the key-generation lock).
    pub module: &'a Module,
}

/// The state a worker thread owns: at most one session.
struct SessionSlot {
    module: Arc<Module>,
    session: Option<Session>,
    slot: Option<Slot>,
    epoch: Epoch,
}

impl SessionSlot {
    /// Lets go of the session. It is closed only when its handle is known to still be ours:
    /// same library generation and not reported dead.
    fn discard(&mut self, session_gone: bool) {
        // Otherwise (opened with "no close on drop") dropping the session makes no call.
        if let Some(s) = self.session.take()
            && !session_gone
            && self.epoch.module == self.module.generation()
        {
            // A failure to close a session we are abandoning changes nothing.
            let _ = s.close();
        }
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.discard(false);
    }
}

struct Slots {
    idle: Vec<Worker<SessionSlot>>,
    live: usize,
    /// Requests waiting for a slot (so that check-in skips the wake-up call when none is).
    waiting: usize,
}

#[derive(Default)]
struct Health {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

/// The session pool of one token.
pub(crate) struct TokenPool {
    label: String,
    module: Arc<Module>,
    pin: Pin,
    settings: PoolSettings,
    token_epoch: AtomicU64,
    slots: Mutex<Slots>,
    freed: Condvar,
    health: Mutex<Health>,
    /// True while `health` holds a failed recovery (lets the hot path skip its lock).
    degraded: AtomicBool,
    slot_cache: Mutex<Option<(Epoch, Slot)>>,
    worker_seq: AtomicU64,
}

impl Drop for TokenPool {
    /// Closes the idle sessions and waits for their threads, so that no session is being
    /// closed while the process tears the module down. Abandoned (timed-out) workers are not
    /// waited for: they exit when their call returns.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut lock(&self.slots).idle);
        for w in idle {
            w.shutdown();
        }
    }
}

impl std::fmt::Debug for TokenPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPool")
            .field("label", &self.label)
            .field("size", &self.settings.size)
            .finish_non_exhaustive()
    }
}

impl TokenPool {
    /// A pool for the token labelled `label`. No session is opened yet.
    pub(crate) fn new(
        label: &str,
        module: Arc<Module>,
        pin: Pin,
        settings: PoolSettings,
    ) -> Arc<Self> {
        Arc::new(TokenPool {
            label: label.to_string(),
            module,
            pin,
            settings,
            token_epoch: AtomicU64::new(0),
            slots: Mutex::new(Slots {
                idle: Vec::new(),
                live: 0,
                waiting: 0,
            }),
            freed: Condvar::new(),
            health: Mutex::new(Health::default()),
            degraded: AtomicBool::new(false),
            slot_cache: Mutex::new(None),
            worker_seq: AtomicU64::new(0),
        })
    }

    /// The token's label.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    fn epoch(&self) -> Epoch {
        Epoch {
            module: self.module.generation(),
            token: self.token_epoch.load(Ordering::Acquire),
        }
    }

    /// Runs `op` on a checked, logged-in session of this token, waiting at most the
    /// configured timeout in all (for a free session and for the call). `what` names the
    /// operation in errors.
    pub(crate) fn run<R, F>(self: &Arc<Self>, what: &'static str, op: F) -> Result<R, Failure>
    where
        R: Send + 'static,
        F: FnOnce(&SessionCtx<'_>) -> Result<R, Failure> + Send + 'static,
    {
        let deadline = Instant::now() + self.settings.timeout;
        self.gate()?;
        let worker = self.checkout(deadline, what)?;
        let pool = Arc::clone(self);
        let remaining = deadline.saturating_duration_since(Instant::now());
        match worker.call(remaining, move |slot| pool.in_worker(slot, op)) {
            Ok((worker, result)) => {
                self.checkin(worker);
                result
            }
            Err(CallError::Elapsed) => Err(Error::new(
                ErrorCode::HsmTimeout,
                format!(
                    "token {:?}: {what} did not complete within {} ms; the call was abandoned \
                     (its session is closed once the module returns)",
                    self.label,
                    self.settings.timeout.as_millis()
                ),
            )
            .into()),
            Err(CallError::Gone) => Err(Error::new(
                ErrorCode::Internal,
                format!("token {:?}: {what}: HSM worker thread failed", self.label),
            )
            .into()),
        }
    }

    /// Fails fast while a failed recovery's backoff is running.
    fn gate(&self) -> Result<(), Failure> {
        if !self.degraded.load(Ordering::Acquire) {
            return Ok(());
        }
        let h = lock(&self.health);
        if let Some(at) = h.retry_at {
            let now = Instant::now();
            if now < at {
                return Err(Error::new(
                    ErrorCode::HsmUnavailable,
                    format!(
                        "token {:?} unavailable after {} failed recovery attempt(s) (last: {}); \
                         next attempt in {} ms",
                        self.label,
                        h.failures,
                        h.last_error,
                        (at - now).as_millis()
                    ),
                )
                .into());
            }
        }
        Ok(())
    }

    fn recovery_failed(&self, f: &Failure) {
        let mut h = lock(&self.health);
        h.failures = h.failures.saturating_add(1);
        let factor = 1u32 << h.failures.saturating_sub(1).min(16);
        let delay = self
            .settings
            .backoff_initial
            .saturating_mul(factor)
            .min(self.settings.backoff_max);
        h.retry_at = Some(Instant::now() + delay);
        h.last_error = f.error.to_string();
        self.degraded.store(true, Ordering::Release);
    }

    fn recovery_succeeded(&self) {
        if self.degraded.load(Ordering::Acquire) {
            // Both flag updates happen under the health lock, so they cannot cross.
            let mut h = lock(&self.health);
            *h = Health::default();
            self.degraded.store(false, Ordering::Release);
        }
    }

    fn checkout(
        self: &Arc<Self>,
        deadline: Instant,
        what: &str,
    ) -> Result<Worker<SessionSlot>, Failure> {
        let mut st = lock(&self.slots);
        loop {
            if let Some(w) = st.idle.pop() {
                return Ok(w);
            }
            if st.live < self.settings.size {
                st.live += 1;
                drop(st);
                return self.spawn_worker().inspect_err(|_| {
                    lock(&self.slots).live -= 1;
                    self.freed.notify_one();
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::new(
                    ErrorCode::HsmTimeout,
                    format!(
                        "token {:?}: {what}: no free HSM session within {} ms ({} in use)",
                        self.label,
                        self.settings.timeout.as_millis(),
                        st.live
                    ),
                )
                .into());
            }
            st.waiting += 1;
            st = self
                .freed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            st.waiting -= 1;
        }
    }

    fn checkin(&self, worker: Worker<SessionSlot>) {
        let mut st = lock(&self.slots);
        st.idle.push(worker);
        if st.waiting > 0 {
            self.freed.notify_one();
        }
    }

    fn spawn_worker(self: &Arc<Self>) -> Result<Worker<SessionSlot>, Failure> {
        let weak: Weak<TokenPool> = Arc::downgrade(self);
        let n = self.worker_seq.fetch_add(1, Ordering::Relaxed);
        let state = SessionSlot {
            module: Arc::clone(&self.module),
            session: None,
            slot: None,
            epoch: self.epoch(),
        };
        Worker::spawn(format!("hsm-{}-{n}", self.label), state, move || {
            // The slot is free only once the thread (and its session) is gone.
            if let Some(pool) = weak.upgrade() {
                lock(&pool.slots).live -= 1;
                pool.freed.notify_one();
            }
        })
        .map_err(|e| {
            Error::new(
                ErrorCode::Internal,
                format!(
                    "token {:?}: cannot start HSM worker thread: {e}",
                    self.label
                ),
            )
            .into()
        })
    }

    /// Runs on the worker thread: make the session usable, run the operation, and record
    /// what a failure means for the token.
    fn in_worker<R>(
        &self,
        slot: &mut SessionSlot,
        op: impl FnOnce(&SessionCtx<'_>) -> Result<R, Failure>,
    ) -> Result<R, Failure> {
        let result = self
            .prepare(slot)
            .and_then(|()| match (&slot.session, slot.slot) {
                (Some(session), Some(slot_id)) => op(&SessionCtx {
                    session,
                    epoch: slot.epoch,
                    label: &self.label,
                    slot: slot_id,
                    module: &self.module,
                }),
                _ => Err(Error::new(ErrorCode::Internal, "prepared slot has no session").into()),
            });
        if let Err(f) = &result {
            match f.fault {
                Some(Fault::Token { session_gone }) => {
                    // Only the first failure of an epoch starts a new one; stragglers from
                    // the same epoch must not invalidate sessions that were just re-opened.
                    let _ = self.token_epoch.compare_exchange(
                        slot.epoch.token,
                        slot.epoch.token + 1,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    slot.discard(session_gone);
                }
                Some(Fault::Library) => {
                    if slot.epoch.module == self.module.generation() {
                        self.module.mark_uninitialized();
                    }
                    slot.discard(true);
                }
                Some(Fault::StaleObject) | None => {}
            }
        }
        result
    }

    fn prepare(&self, slot: &mut SessionSlot) -> Result<(), Failure> {
        if let Err(f) = self.module.ensure_initialized() {
            self.recovery_failed(&f);
            return Err(f);
        }
        let current = self.epoch();
        if let (Some(session), Some(slot_id)) = (&slot.session, slot.slot)
            && slot.epoch == current
        {
            return self.check(session, slot_id);
        }
        // No session yet, or one from an older epoch: replace it.
        slot.discard(false);
        match self.open(current) {
            Ok((session, slot_id)) => {
                slot.session = Some(session);
                slot.slot = Some(slot_id);
                slot.epoch = current;
                self.recovery_succeeded();
                Ok(())
            }
            Err(f) => {
                if f.fault == Some(Fault::Library) {
                    self.module.mark_uninitialized();
                }
                self.recovery_failed(&f);
                Err(f)
            }
        }
    }

    /// The pre-use health check.
    fn check(&self, session: &Session, slot: Slot) -> Result<(), Failure> {
        let info = session
            .get_session_info()
            .on(&self.label, "C_GetSessionInfo")?;
        if info.slot_id() != slot {
            return Err(Failure {
                error: Error::new(
                    ErrorCode::HsmUnavailable,
                    format!(
                        "token {:?}: pooled session now belongs to another slot",
                        self.label
                    ),
                ),
                fault: Some(Fault::Token { session_gone: true }),
            });
        }
        if info.session_state() != SessionState::RwUser {
            return Err(Failure {
                error: Error::new(
                    ErrorCode::HsmUnavailable,
                    format!(
                        "token {:?}: pooled session is no longer logged in ({:?})",
                        self.label,
                        info.session_state()
                    ),
                ),
                fault: Some(Fault::Token {
                    session_gone: false,
                }),
            });
        }
        Ok(())
    }

    fn resolve_slot(&self, epoch: Epoch) -> Result<Slot, Failure> {
        let mut cache = lock(&self.slot_cache);
        if let Some((e, slot)) = *cache
            && e == epoch
        {
            return Ok(slot);
        }
        let slot = self.module.find_token(&self.label)?;
        *cache = Some((epoch, slot));
        Ok(slot)
    }

    /// Opens a read-write session on the token and makes sure it is logged in as user.
    fn open(&self, epoch: Epoch) -> Result<(Session, Slot), Failure> {
        let slot = self.resolve_slot(epoch)?;
        let session = self
            .module
            .ctx()
            .open_rw_session_no_drop(slot)
            .on(&self.label, "C_OpenSession")?;
        match self.login(&session) {
            Ok(()) => Ok((session, slot)),
            Err(f) => {
                let _ = session.close();
                Err(f)
            }
        }
    }

    fn login(&self, session: &Session) -> Result<(), Failure> {
        let state = session
            .get_session_info()
            .on(&self.label, "C_GetSessionInfo")?
            .session_state();
        if state != SessionState::RwUser {
            // Login state is per token and application: the first session logs all in.
            match session.login(UserType::User, Some(&self.pin.to_auth_pin())) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(e) => {
                    return Err(Failure::pkcs11(
                        &e,
                        &format!("token {:?}: C_Login", self.label),
                    ));
                }
            }
            let state = session
                .get_session_info()
                .on(&self.label, "C_GetSessionInfo")?
                .session_state();
            if state != SessionState::RwUser {
                return Err(Error::new(
                    ErrorCode::HsmUnavailable,
                    format!(
                        "token {:?}: session not logged in after C_Login ({state:?})",
                        self.label
                    ),
                )
                .into());
            }
        }
        Ok(())
    }
}
