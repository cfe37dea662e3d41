//! The PKCS#11 module: one shared `Pkcs11` context per module path, its (re-)initialisation,
//! and lookup of tokens by label.
//!
//! Re-initialisation: a failure that means the module as a whole is gone (the library lost
//! its initialisation, the device failed or was removed, the slot list fails: a remote HSM
//! behind p11-kit whose server went away answers every call with `CKR_DEVICE_ERROR` until
//! the client library is finalised and initialised again) is reported with
//! [`Module::request_reinit`]. The next [`Module::enter`] then drains the calls in flight on
//! this module (bounded by the caller's deadline: a hung call postpones the attempt, never
//! blocks it forever), calls `C_Finalize` and `C_Initialize`, and starts a new generation:
//! every session, slot lookup and object handle of older generations is dead, and pools
//! re-open sessions, log in again and look their keys up again. A failed attempt leaves the
//! request standing; callers back off (see the pool) and the next `enter` tries again.
//!
//! PKCS#11 library state is per process: every `Pkcs11` handle on the same module shares it.
//! SoftHSM2 reads `SOFTHSM2_CONF` when it is initialised, so one process serves one data
//! directory; [`bind_softhsm2_conf`] enforces that.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Instant;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::slot::Slot;

use crate::error::{Error, ErrorCode, Result};
use crate::hsm::utils::{CkResultExt, Failure, Fault, exactly_one, lock, to_error};

/// The SoftHSM2 configuration this process is bound to (PKCS#11 state is process-global).
static SOFTHSM2_CONF_BOUND: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The loaded modules of this process, by path. PKCS#11 library state is per process, so
/// every backend on the same module shares one [`Module`]: one context, one generation
/// counter (a re-initialisation invalidates every backend's sessions alike) and one
/// object lock.
static LOADED: Mutex<Vec<(PathBuf, Weak<Module>)>> = Mutex::new(Vec::new());

/// Points `SOFTHSM2_CONF` at `conf` for this process, once. Binding the same file again is a
/// no-op; binding another file is refused, because the library reads the variable only when
/// it initialises and a process therefore serves exactly one SoftHSM2 data directory (tests
/// that need several token directories run in separate processes).
pub fn bind_softhsm2_conf(conf: &Path) -> Result<()> {
    let canonical = conf.canonicalize().map_err(|e| {
        Error::new(
            ErrorCode::HsmUnavailable,
            format!("SoftHSM2 configuration {}: {e}", conf.display()),
        )
    })?;
    let mut bound = lock(&SOFTHSM2_CONF_BOUND);
    match bound.as_ref() {
        Some(p) if *p == canonical => Ok(()),
        Some(p) => Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!(
                "this process already uses SoftHSM2 configuration {}; one process serves one \
                 data directory (cannot switch to {})",
                p.display(),
                canonical.display()
            ),
        )),
        None => {
            // Once per process (guarded above), before any module is initialised.
            crate::os::set_module_env("SOFTHSM2_CONF", canonical.as_os_str());
            *bound = Some(canonical);
            Ok(())
        }
    }
}

/// One loaded and initialised PKCS#11 module.
pub(crate) struct Module {
    ctx: Pkcs11,
    path: PathBuf,
    /// Bumped on every re-initialisation: sessions and object handles of an older
    /// generation are dead (and their numbers may have been reused).
    generation: AtomicU64,
    /// Calls in flight and re-initialisation requests (see the module documentation).
    calls: Mutex<Calls>,
    /// Signalled when a call leaves or a re-initialisation attempt ends.
    changed: Condvar,
    /// Serialises key generation and object destruction: SoftHSM2 2.6.1 crashes when they
    /// run in parallel. Signing does not take it.
    pub(crate) object_lock: Mutex<()>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The bookkeeping behind [`Module::enter`].
#[derive(Default)]
struct Calls {
    /// Operations currently inside the module ([`InModule`] guards alive).
    in_flight: usize,
    /// A failure asked for a re-initialisation that has not succeeded yet.
    reinit_wanted: bool,
    /// A thread is draining calls or re-initialising right now.
    reinit_running: bool,
    /// Ended re-initialisation attempts (lets waiters see that the one they waited for ended).
    attempts: u64,
    /// Why the last attempt failed.
    last_failure: Option<Error>,
}

/// Proof that an operation is inside the module: while any guard lives, the module is not
/// finalised. Dropping it lets a waiting re-initialisation proceed.
pub(crate) struct InModule<'a> {
    module: &'a Module,
}

impl Drop for InModule<'_> {
    fn drop(&mut self) {
        let mut c = lock(&self.module.calls);
        c.in_flight -= 1;
        if c.reinit_running && c.in_flight == 0 {
            self.module.changed.notify_all();
        }
    }
}

fn initialize(ctx: &Pkcs11) -> Result<(), CkError> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another handle in this process initialised it: the state is shared, that is fine.
        Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) | Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Module {
    /// Loads and initialises the module at `path`, or returns the one this process already
    /// has loaded from there. Errors: `HSM_UNAVAILABLE` naming the path when it cannot be
    /// loaded or initialised.
    pub(crate) fn load(path: &Path) -> Result<Arc<Module>> {
        let what = format!("PKCS#11 module {}", path.display());
        let key = path
            .canonicalize()
            .map_err(|e| Error::new(ErrorCode::HsmUnavailable, format!("{what}: {e}")))?;
        let mut loaded = lock(&LOADED);
        loaded.retain(|(_, m)| m.strong_count() > 0);
        if let Some(m) = loaded
            .iter()
            .find(|(p, _)| *p == key)
            .and_then(|(_, m)| m.upgrade())
        {
            return Ok(m);
        }
        let ctx = Pkcs11::new(&key).map_err(|e| to_error(&e, &what))?;
        initialize(&ctx).map_err(|e| to_error(&e, &what))?;
        let module = Arc::new(Module {
            ctx,
            path: path.to_path_buf(),
            generation: AtomicU64::new(0),
            calls: Mutex::new(Calls::default()),
            changed: Condvar::new(),
            object_lock: Mutex::new(()),
        });
        loaded.push((key, Arc::downgrade(&module)));
        Ok(module)
    }

    /// The shared context.
    pub(crate) fn ctx(&self) -> &Pkcs11 {
        &self.ctx
    }

    /// The module's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The current initialisation generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Asks for a full re-initialisation because a call of generation `seen` failed at the
    /// module level (`why`, for the log). Stragglers of an older generation ask for nothing:
    /// the module was re-initialised since they started.
    pub(crate) fn request_reinit(&self, seen: u64, why: &str) {
        let mut c = lock(&self.calls);
        if seen == self.generation() && !c.reinit_wanted {
            c.reinit_wanted = true;
            tracing::warn!(
                module = %self.path.display(),
                cause = why,
                "hsm: PKCS#11 module-level failure; it will be finalised and initialised again"
            );
        }
    }

    /// Enters the module only when no re-initialisation is requested or running, without
    /// waiting: for best-effort calls such as closing a session being abandoned (which a
    /// re-initialisation would kill anyway).
    pub(crate) fn try_enter(&self) -> Option<InModule<'_>> {
        let mut c = lock(&self.calls);
        if c.reinit_wanted || c.reinit_running {
            return None;
        }
        c.in_flight += 1;
        Some(InModule { module: self })
    }

    /// Enters the module for one operation, first re-initialising it if that was requested
    /// (see the module documentation); waits at most until `deadline`. The guard keeps the
    /// module from being finalised under the operation.
    ///
    /// Errors (`HSM_UNAVAILABLE`): the re-initialisation failed (this caller's attempt or
    /// the one it waited for), or calls still in flight (a hung module) or another thread's
    /// attempt outlasted the deadline. None of them carries a fault: the request stands.
    pub(crate) fn enter(&self, deadline: Instant) -> Result<InModule<'_>, Failure> {
        let mut c = lock(&self.calls);
        // The attempt this caller waited for, if any: when it failed, report that failure
        // instead of starting another attempt at once (the pool's backoff paces them).
        let mut waited_for: Option<u64> = None;
        loop {
            if c.reinit_running {
                waited_for.get_or_insert(c.attempts);
                c = self.wait(c, deadline, "waiting for its re-initialisation")?;
                continue;
            }
            if !c.reinit_wanted {
                c.in_flight += 1;
                return Ok(InModule { module: self });
            }
            if let Some(a) = waited_for
                && a != c.attempts
            {
                return Err(self.unavailable(&c));
            }
            // This caller re-initialises: no new call enters, the ones in flight drain.
            c.reinit_running = true;
            while c.in_flight > 0 {
                match self.wait(c, deadline, "draining calls before re-initialising") {
                    Ok(g) => c = g,
                    Err(f) => {
                        let mut c = lock(&self.calls);
                        c.reinit_running = false;
                        c.attempts += 1;
                        c.last_failure = Some(f.error.clone());
                        self.changed.notify_all();
                        return Err(f);
                    }
                }
            }
            drop(c);
            let result = self.reinitialize();
            c = lock(&self.calls);
            c.reinit_running = false;
            c.attempts += 1;
            self.changed.notify_all();
            match result {
                Ok(()) => {
                    c.reinit_wanted = false;
                    c.last_failure = None;
                    let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
                    tracing::warn!(
                        module = %self.path.display(),
                        generation,
                        "hsm: PKCS#11 module re-initialised"
                    );
                }
                Err(e) => {
                    tracing::error!(
                        module = %self.path.display(),
                        cause = %e,
                        "hsm: PKCS#11 module re-initialisation failed"
                    );
                    c.last_failure = Some(e.clone());
                    return Err(e.into());
                }
            }
        }
    }

    /// Waits on `changed` until `deadline`; past it, `HSM_UNAVAILABLE` saying what it was
    /// waiting for.
    fn wait<'a>(
        &self,
        c: std::sync::MutexGuard<'a, Calls>,
        deadline: Instant,
        what: &str,
    ) -> Result<std::sync::MutexGuard<'a, Calls>, Failure> {
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::new(
                ErrorCode::HsmUnavailable,
                format!(
                    "PKCS#11 module {}: {what}: {} call(s) still in flight at the deadline",
                    self.path.display(),
                    c.in_flight
                ),
            )
            .into());
        }
        Ok(self
            .changed
            .wait_timeout(c, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0)
    }

    fn unavailable(&self, c: &Calls) -> Failure {
        Error::new(
            ErrorCode::HsmUnavailable,
            format!(
                "PKCS#11 module {}: re-initialisation failed: {}",
                self.path.display(),
                c.last_failure
                    .as_ref()
                    .map_or_else(|| "unknown".to_string(), |e| e.message.clone())
            ),
        )
        .into()
    }

    /// `C_Finalize` (a library that is no longer initialised is fine: that may be why we are
    /// here) and `C_Initialize`. Runs with no call in flight.
    fn reinitialize(&self) -> Result<(), Error> {
        let what = format!("PKCS#11 module {}: re-initialise", self.path.display());
        // `finalize` consumes its handle; a clone shares the library and finalises it.
        match self.ctx.clone().finalize() {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => {}
            // A module that cannot finalise may still initialise; the outcome of that decides.
            Err(e) => tracing::warn!(
                what = %what,
                cause = %e,
                "hsm: C_Finalize failed; initialising anyway"
            ),
        }
        initialize(&self.ctx).map_err(|e| to_error(&e, &what))
    }

    /// The slot holding the initialised token labelled `label`. Errors:
    /// `HSM_TOKEN_NOT_FOUND` when there is none, `CONFIG_INVALID` when two tokens share it,
    /// and the PKCS#11 error of a failing slot list or token info, with [`Fault::Module`].
    pub(crate) fn find_token(&self, label: &str) -> Result<Slot, Failure> {
        let ctx = format!("token {label:?}: find");
        // A module that cannot even list its slots is broken as a whole, whatever it answers.
        let module_fault = |mut f: Failure| {
            f.fault = Some(Fault::Module);
            f
        };
        let slots = self
            .ctx
            .get_slots_with_token()
            .ctx(&ctx)
            .map_err(module_fault)?;
        let mut found = Vec::new();
        let mut seen = Vec::new();
        for slot in slots {
            let info = self
                .ctx
                .get_token_info(slot)
                .ctx(&ctx)
                .map_err(module_fault)?;
            if !info.token_initialized() {
                continue;
            }
            if info.label() == label {
                found.push(slot);
            } else {
                seen.push(info.label().to_string());
            }
        }
        exactly_one(
            &found,
            || {
                Error::new(
                    ErrorCode::HsmTokenNotFound,
                    format!(
                        "no initialised token labelled {label:?} in {} (tokens present: {seen:?})",
                        self.path.display()
                    ),
                )
            },
            |n| {
                Error::new(
                    ErrorCode::ConfigInvalid,
                    format!("{n} tokens are labelled {label:?}; labels must be unique"),
                )
            },
        )
    }
}
