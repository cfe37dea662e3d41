//! A bounded pool of logged-in sessions on one token.
//!
//! A request checks a session out exclusively (a [`Lease`]), runs its operation on it and
//! checks it back in, so a `Session` is never used by two threads at once. Where the
//! operation runs depends on who waits for it (see [`crate::hsm::bounded`]):
//! - **inline**, on the calling thread, when it runs under a [`CallWatch`] (the service's
//!   signing, through [`crate::hsm::bounded`]): the call's deadline is published to the
//!   watch and the async waiter stops waiting at it. A call that overran reports
//!   `HSM_TIMEOUT` when it returns and its session is closed, never checked back in.
//! - **hand-off** otherwise: the lease and the operation go to a worker thread
//!   ([`Worker`]) and the caller waits at most until the deadline. An abandoned call keeps
//!   its worker and its lease until it returns; the session is then closed and the slot
//!   freed. Idle workers are reused.
//!
//! Either way one deadline (the configured timeout) covers the wait for a free session and
//! the call, and a hung module pins at most one thread and one session per hung call: once
//! every slot is pinned, new requests time out waiting for a slot.
//!
//! Health and recovery:
//! - Before each use the session is checked with `C_GetSessionInfo` (same slot, still logged
//!   in as user). A failing check fails the request with `HSM_UNAVAILABLE`.
//! - A failure that means the token's sessions or login are gone (session handle invalid,
//!   user not logged in, ...) fails the request and starts a new *epoch* for the token:
//!   every session of an older epoch is closed and replaced on its next use, the slot is
//!   looked up again by label and the user logs in again.
//! - A module-level failure (device error or removal, token not present, library not
//!   initialised, a failing slot list, the token gone from the slot list after it was found,
//!   or [`SESSION_LOSSES_BEFORE_REINIT`] session losses in a row without a success between)
//!   additionally re-initialises the whole module: `C_Finalize`, `C_Initialize`, a new module
//!   generation (see [`crate::hsm::module`]). Older sessions are dropped without
//!   `C_CloseSession`, whose handle numbers the library may have reused; sessions are opened
//!   and logged in again and keys looked up again by CKA_ID. This is what brings back a
//!   remote HSM behind p11-kit whose server restarted.
//! - Recovery is lazy, on the next request. When it fails, further requests fail fast with
//!   `HSM_UNAVAILABLE` until an exponential backoff (configured initial and maximum) allows
//!   the next attempt; a success resets it. The process never needs restarting.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;

use crate::error::{Error, ErrorCode};
use crate::hsm::bounded::{CallWatch, timeout_error};
use crate::hsm::module::Module;
use crate::hsm::pin::Pin;
use crate::hsm::utils::{CkResultExt, Failure, Fault, lock};
use crate::hsm::worker::{CallError, Worker};

/// Session losses in a row (without a successful operation between) after which the module
/// is re-initialised rather than only the token's sessions re-opened.
pub(crate) const SESSION_LOSSES_BEFORE_REINIT: u32 = 3;

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

/// What an operation gets to work with.
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

/// One slot of the pool: at most one session.
struct SessionSlot {
    module: Arc<Module>,
    session: Option<Session>,
    slot: Option<Slot>,
    epoch: Epoch,
}

impl SessionSlot {
    /// Lets go of the session. It is closed only when its handle is known to still be ours:
    /// same library generation, not reported dead, and no re-initialisation of the module
    /// pending (which kills it anyway, and must not run while we call into the module).
    fn discard(&mut self, session_gone: bool) {
        // Otherwise (opened with "no close on drop") dropping the session makes no call.
        if let Some(s) = self.session.take()
            && !session_gone
            && self.epoch.module == self.module.generation()
            && let Some(_inside) = self.module.try_enter()
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

/// A slot checked out by one caller. Checked back in, its session is reused; dropped
/// instead (the call overran, was abandoned or panicked), its session is closed on the
/// dropping thread, after the call returned, and only then is the slot free again.
struct Lease {
    pool: Arc<TokenPool>,
    slot: Option<SessionSlot>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            drop(slot);
            let mut st = lock(&self.pool.slots);
            st.live -= 1;
            if st.waiting > 0 {
                self.pool.freed.notify_one();
            }
        }
    }
}

struct Slots {
    idle: Vec<SessionSlot>,
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
    label: Arc<str>,
    module: Arc<Module>,
    pin: Pin,
    settings: PoolSettings,
    token_epoch: AtomicU64,
    slots: Mutex<Slots>,
    freed: Condvar,
    /// Idle worker threads of the hand-off path.
    workers: Mutex<Vec<Worker>>,
    health: Mutex<Health>,
    /// True while `health` holds a failed recovery (lets the hot path skip its lock).
    degraded: AtomicBool,
    slot_cache: Mutex<Option<(Epoch, Slot)>>,
    /// The token was found in the slot list at least once (its disappearance later is a
    /// module failure, not a configuration error).
    found: AtomicBool,
    /// Session losses since the last successful operation.
    session_losses: AtomicU32,
    worker_seq: AtomicU64,
}

impl Drop for TokenPool {
    /// Closes the idle sessions on this thread and waits for the idle worker threads, so
    /// that no session is being closed while the process tears the module down. Calls that
    /// are still running keep the pool alive until they return.
    fn drop(&mut self) {
        drop(std::mem::take(&mut lock(&self.slots).idle));
        for w in std::mem::take(&mut *lock(&self.workers)) {
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

/// Withdraws the published call from its watch, also when the operation panics.
struct Published<'a>(&'a CallWatch);

impl Drop for Published<'_> {
    fn drop(&mut self) {
        self.0.done();
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
            label: label.into(),
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
            workers: Mutex::new(Vec::new()),
            health: Mutex::new(Health::default()),
            degraded: AtomicBool::new(false),
            slot_cache: Mutex::new(None),
            found: AtomicBool::new(false),
            session_losses: AtomicU32::new(0),
            worker_seq: AtomicU64::new(0),
        })
    }

    /// The token's label.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// What the metrics sample of this pool: sessions checked out now, and recoveries of
    /// the token's sessions started since the pool opened (each starts a token epoch).
    pub(crate) fn sample(&self) -> crate::metrics::TokenSample {
        let st = lock(&self.slots);
        crate::metrics::TokenSample {
            token: self.label.to_string(),
            sessions_in_use: st.live.saturating_sub(st.idle.len()) as u64,
            recoveries: self.token_epoch.load(Ordering::Acquire),
        }
    }

    fn epoch(&self) -> Epoch {
        Epoch {
            module: self.module.generation(),
            token: self.token_epoch.load(Ordering::Acquire),
        }
    }

    /// Runs `op` on a checked, logged-in session of this token, waiting at most the
    /// configured timeout in all (for a free session and for the call): inline when this
    /// thread runs under a [`CallWatch`], else handed off to a worker thread (see the module
    /// documentation). `what` names the operation in errors.
    pub(crate) fn run<R, F>(self: &Arc<Self>, what: &'static str, op: F) -> Result<R, Failure>
    where
        R: Send + 'static,
        F: FnOnce(&SessionCtx<'_>) -> Result<R, Failure> + Send + 'static,
    {
        match CallWatch::current() {
            Some(watch) => self.run_inline(&watch, what, op),
            None => self.run_handoff(what, op),
        }
    }

    fn timed_out(&self, what: &str, outcome: &str) -> Failure {
        timeout_error(&self.label, what, self.settings.timeout, outcome).into()
    }

    /// The inline path: `op` runs on this thread; its deadline is published to `watch`.
    fn run_inline<R>(
        self: &Arc<Self>,
        watch: &CallWatch,
        what: &'static str,
        op: impl FnOnce(&SessionCtx<'_>) -> Result<R, Failure>,
    ) -> Result<R, Failure> {
        if watch.abandoned() {
            return Err(self.timed_out(what, "not started: the caller had stopped waiting"));
        }
        let deadline = Instant::now() + self.settings.timeout;
        self.gate()?;
        watch.begin(
            deadline,
            Arc::clone(&self.label),
            what,
            self.settings.timeout,
        );
        let _published = Published(watch);
        let mut lease = self.checkout(deadline, what)?;
        let result = match lease.slot.as_mut() {
            Some(slot) => self.in_session(slot, deadline, op),
            None => Err(Error::new(ErrorCode::Internal, "lease without a slot").into()),
        };
        if Instant::now() >= deadline {
            // Whoever waited has been told HSM_TIMEOUT; the session is not trusted again.
            drop(lease);
            return Err(self.timed_out(what, "it returned late"));
        }
        self.checkin(lease);
        result
    }

    /// The hand-off path: `op` runs on a worker thread; this thread waits until the deadline.
    fn run_handoff<R, F>(self: &Arc<Self>, what: &'static str, op: F) -> Result<R, Failure>
    where
        R: Send + 'static,
        F: FnOnce(&SessionCtx<'_>) -> Result<R, Failure> + Send + 'static,
    {
        let deadline = Instant::now() + self.settings.timeout;
        self.gate()?;
        let lease = self.checkout(deadline, what)?;
        let worker = match self.idle_worker() {
            Ok(w) => w,
            Err(f) => {
                self.checkin(lease);
                return Err(f);
            }
        };
        let pool = Arc::clone(self);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let job = move || {
            let mut lease = lease;
            let result = match lease.slot.as_mut() {
                Some(slot) => pool.in_session(slot, deadline, op),
                None => Err(Error::new(ErrorCode::Internal, "lease without a slot").into()),
            };
            (lease, result)
        };
        match worker.call(remaining, job) {
            Ok((worker, (lease, result))) => {
                self.checkin(lease);
                lock(&self.workers).push(worker);
                result
            }
            Err(CallError::Elapsed) => Err(self.timed_out(what, "the caller stopped waiting")),
            Err(CallError::Gone) => Err(Error::new(
                ErrorCode::Internal,
                format!("token {:?}: {what}: HSM worker thread failed", self.label),
            )
            .into()),
        }
    }

    fn idle_worker(&self) -> Result<Worker, Failure> {
        if let Some(w) = lock(&self.workers).pop() {
            return Ok(w);
        }
        let n = self.worker_seq.fetch_add(1, Ordering::Relaxed);
        Worker::spawn(format!("hsm-{}-{n}", self.label)).map_err(|e| {
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
        tracing::warn!(
            token = %self.label,
            attempt = h.failures,
            retry_in_ms = delay.as_millis() as u64,
            code = f.error.code.as_str(),
            cause = %f.error.message,
            "hsm: token recovery failed"
        );
        self.degraded.store(true, Ordering::Release);
    }

    fn recovery_succeeded(&self) {
        if self.degraded.load(Ordering::Acquire) {
            // Both flag updates happen under the health lock, so they cannot cross.
            let mut h = lock(&self.health);
            if h.failures > 0 {
                tracing::warn!(
                    token = %self.label,
                    failed_attempts = h.failures,
                    "hsm: token recovered after failed recovery attempts"
                );
            }
            *h = Health::default();
            self.degraded.store(false, Ordering::Release);
        }
    }

    fn checkout(self: &Arc<Self>, deadline: Instant, what: &str) -> Result<Lease, Failure> {
        let mut st = lock(&self.slots);
        loop {
            if let Some(slot) = st.idle.pop() {
                return Ok(Lease {
                    pool: Arc::clone(self),
                    slot: Some(slot),
                });
            }
            if st.live < self.settings.size {
                st.live += 1;
                return Ok(Lease {
                    pool: Arc::clone(self),
                    slot: Some(SessionSlot {
                        module: Arc::clone(&self.module),
                        session: None,
                        slot: None,
                        epoch: self.epoch(),
                    }),
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

    fn checkin(&self, mut lease: Lease) {
        if let Some(slot) = lease.slot.take() {
            let mut st = lock(&self.slots);
            st.idle.push(slot);
            if st.waiting > 0 {
                self.freed.notify_one();
            }
        }
    }

    /// Makes the session usable, runs the operation, and records what a failure means for
    /// the token and its module. Everything runs inside the module ([`Module::enter`]), so
    /// the module is never re-initialised under it.
    fn in_session<R>(
        &self,
        slot: &mut SessionSlot,
        deadline: Instant,
        op: impl FnOnce(&SessionCtx<'_>) -> Result<R, Failure>,
    ) -> Result<R, Failure> {
        let inside = match self.module.enter(deadline) {
            Ok(g) => g,
            Err(f) => {
                self.recovery_failed(&f);
                return Err(f);
            }
        };
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
        match &result {
            Ok(_) => {
                if self.session_losses.load(Ordering::Relaxed) != 0 {
                    self.session_losses.store(0, Ordering::Relaxed);
                }
            }
            Err(f) => self.record_fault(slot, f),
        }
        drop(inside);
        result
    }

    /// What a failed operation means for the pool. Runs inside the module, so the module's
    /// generation is the one the failing call ran in.
    fn record_fault(&self, slot: &mut SessionSlot, f: &Failure) {
        match f.fault {
            Some(Fault::Token { session_gone }) => {
                // Only the first failure of an epoch starts a new one; stragglers from the
                // same epoch must not invalidate sessions that were just re-opened.
                if self
                    .token_epoch
                    .compare_exchange(
                        slot.epoch.token,
                        slot.epoch.token + 1,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
                {
                    tracing::warn!(
                        token = %self.label,
                        code = f.error.code.as_str(),
                        cause = %f.error.message,
                        "hsm: token sessions lost; re-opening them and logging in again"
                    );
                }
                let losses = self.session_losses.fetch_add(1, Ordering::AcqRel) + 1;
                if losses >= SESSION_LOSSES_BEFORE_REINIT {
                    // Re-opening sessions did not help: the module itself is suspect.
                    self.session_losses.store(0, Ordering::Release);
                    self.module.request_reinit(
                        self.module.generation(),
                        &format!(
                            "token {:?}: sessions lost {losses} times in a row; last: {}",
                            self.label, f.error.message
                        ),
                    );
                    slot.discard(true);
                } else {
                    slot.discard(session_gone);
                }
            }
            Some(Fault::Module) => {
                self.module
                    .request_reinit(self.module.generation(), &f.error.message);
                slot.discard(true);
            }
            Some(Fault::StaleObject) | None => {}
        }
    }

    fn prepare(&self, slot: &mut SessionSlot) -> Result<(), Failure> {
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
                // (A module-level fault is recorded by the caller, with the other faults.)
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
        let slot = match self.module.find_token(&self.label) {
            Ok(slot) => slot,
            Err(mut f) => {
                if f.error.code == ErrorCode::HsmTokenNotFound && self.found.load(Ordering::Acquire)
                {
                    // It was there before: the module lost it (a remote HSM whose client
                    // came up while the server was down lists no slots), so the module
                    // starts over, and the caller sees an outage, not a configuration error.
                    f.fault = Some(Fault::Module);
                    f.error = Error::new(
                        ErrorCode::HsmUnavailable,
                        format!(
                            "token {:?} is no longer present: {}",
                            self.label, f.error.message
                        ),
                    );
                }
                return Err(f);
            }
        };
        self.found.store(true, Ordering::Release);
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
