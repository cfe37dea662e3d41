//! The PKCS#11 module: one shared `Pkcs11` context per backend, its (re-)initialisation, and
//! lookup of tokens by label.
//!
//! PKCS#11 library state is per process: every `Pkcs11` handle on the same module shares it.
//! SoftHSM2 reads `SOFTHSM2_CONF` when it is initialised, so one process serves one data
//! directory; [`bind_softhsm2_conf`] enforces that.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::slot::Slot;

use crate::error::{Error, ErrorCode, Result};
use crate::hsm::utils::{CkResultExt, Failure, lock, to_error};

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
            // SAFETY: std serialises its own environment accesses; the only foreign reader
            // of this variable is the PKCS#11 module inside C_Initialize, which runs after
            // this call returns. The binding happens once per process (guarded above).
            unsafe { std::env::set_var("SOFTHSM2_CONF", &canonical) };
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
    needs_init: AtomicBool,
    init_lock: Mutex<()>,
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
            needs_init: AtomicBool::new(false),
            init_lock: Mutex::new(()),
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

    /// Records that the library reported itself uninitialised.
    pub(crate) fn mark_uninitialized(&self) {
        self.needs_init.store(true, Ordering::Release);
    }

    /// Re-initialises the library if it was found uninitialised, starting a new generation.
    pub(crate) fn ensure_initialized(&self) -> Result<(), Failure> {
        if !self.needs_init.load(Ordering::Acquire) {
            return Ok(());
        }
        let _g = lock(&self.init_lock);
        if self.needs_init.load(Ordering::Acquire) {
            initialize(&self.ctx).ctx(&format!(
                "PKCS#11 module {}: re-initialise",
                self.path.display()
            ))?;
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.needs_init.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// The slot holding the initialised token labelled `label`. Errors:
    /// `HSM_TOKEN_NOT_FOUND` when there is none, `CONFIG_INVALID` when two tokens share it.
    pub(crate) fn find_token(&self, label: &str) -> Result<Slot, Failure> {
        let ctx = format!("token {label:?}: find");
        let slots = self.ctx.get_slots_with_token().ctx(&ctx)?;
        let mut found = Vec::new();
        let mut seen = Vec::new();
        for slot in slots {
            let info = self.ctx.get_token_info(slot).ctx(&ctx)?;
            if !info.token_initialized() {
                continue;
            }
            if info.label() == label {
                found.push(slot);
            } else {
                seen.push(info.label().to_string());
            }
        }
        match found.as_slice() {
            [slot] => Ok(*slot),
            [] => Err(Error::new(
                ErrorCode::HsmTokenNotFound,
                format!(
                    "no initialised token labelled {label:?} in {} (tokens present: {seen:?})",
                    self.path.display()
                ),
            )
            .into()),
            _ => Err(Error::new(
                ErrorCode::ConfigInvalid,
                format!(
                    "{} tokens are labelled {label:?}; labels must be unique",
                    found.len()
                ),
            )
            .into()),
        }
    }
}
