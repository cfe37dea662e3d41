//! [`Appliance`]: one builder that opens the parts of an appliance in its data directory
//! (HSM backend, store, audit log, key registry, readiness probes) for every command.
//!
//! Each step method opens its part on first call and returns the same part afterwards;
//! a step opens the parts it needs first (the registry needs the policy, the HSM, the store
//! and the audit log), so a command calls only the last step it needs, or calls earlier
//! steps first where the order of its checks matters (which error a broken directory
//! reports first).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::algorithms::AlgorithmPolicy;
use crate::api::{ReadinessProbe, ServiceParts};
use crate::audit::{AuditConfig, AuditLog};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorCode, Result};
use crate::hsm::dev::DevInit;
use crate::hsm::{HsmBackend, HsmConfig};
use crate::keys::{ActiveKeys, CheckpointKeys, KeyRegistry, KeyRole};
use crate::metrics::Metrics;
use crate::seams::debug_showing;
use crate::store::Store;

use super::DataDir;

/// Audit-log origin used when the appliance creates its log on first use and no origin is
/// given.
pub const DEFAULT_AUDIT_ORIGIN: &str = "mpcp-pa.local/audit";

/// Loads the algorithm policy file at `path`, or the policy built into this binary.
pub fn load_policy(path: Option<&Path>) -> Result<AlgorithmPolicy> {
    match path {
        Some(p) => AlgorithmPolicy::load(p),
        None => AlgorithmPolicy::builtin(),
    }
}

/// Opens the audit log of `store`, creating it under [`DEFAULT_AUDIT_ORIGIN`] when the
/// store holds none yet.
pub fn open_audit(store: &Store, clock: Arc<dyn Clock>) -> Result<AuditLog> {
    match AuditLog::open_existing(store, clock.clone()) {
        Ok(log) => Ok(log),
        Err(e) if e.code == ErrorCode::NotFound => {
            AuditLog::open(store, AuditConfig::new(DEFAULT_AUDIT_ORIGIN), clock)
        }
        Err(e) => Err(e),
    }
}

/// How the audit log is opened.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuditMode {
    /// The existing log, created under [`DEFAULT_AUDIT_ORIGIN`] if the store holds none.
    #[default]
    CreateDefault,
    /// The existing log, which must have this origin, or a new one with it.
    Create(String),
    /// Only an existing log (NOT_FOUND when the store holds none).
    Existing,
}

/// How the store is opened.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreMode {
    /// Created on first use.
    #[default]
    Create,
    /// Only an existing store: NOT_FOUND `no store at <path>` when its directory is missing.
    Existing,
}

/// What the builder is given besides the data directory. [`Options::default`] is what
/// the `keys` commands use: the HSM configuration in the data directory, the built-in
/// algorithm policy, the audit log created under the default origin if missing, the system
/// clock, sled's default cache and reserve.
#[derive(Clone)]
pub struct Options {
    /// HSM configuration file instead of the data directory's `pkcs11.toml`.
    pub hsm_config: Option<PathBuf>,
    /// Refuse with a hint to run `hsm init-dev` when the HSM configuration file is missing
    /// (CONFIG_INVALID), instead of the loader's own error.
    pub explain_missing_hsm_config: bool,
    /// Algorithm policy file instead of the built-in policy.
    pub algorithm_policy: Option<PathBuf>,
    /// How the audit log is opened.
    pub audit: AuditMode,
    /// How the store is opened.
    pub store: StoreMode,
    /// Appended in parentheses to a store open error (e.g. who may hold its lock).
    pub store_lock_hint: Option<String>,
    /// sled's page cache in bytes.
    pub store_cache_bytes: u64,
    /// Free space the store's file system must keep (None: the store's default).
    pub store_reserve_bytes: Option<u64>,
    /// The audit log's clock drift tolerance (None: the log's default).
    pub clock_drift: Option<Duration>,
    /// Time source of the audit log, the registry and the service.
    pub clock: Arc<dyn Clock>,
    /// Whether the parts count into the appliance's [`Metrics`] and the service serves them
    /// (`GET /metrics`); off, nothing is counted (the baseline of the bench).
    pub metrics: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            hsm_config: None,
            explain_missing_hsm_config: false,
            algorithm_policy: None,
            audit: AuditMode::default(),
            store: StoreMode::default(),
            store_lock_hint: None,
            store_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            store_reserve_bytes: None,
            clock_drift: None,
            clock: Arc::new(SystemClock),
            metrics: true,
        }
    }
}

debug_showing!(Options {
    hsm_config,
    algorithm_policy,
    audit,
    store
});

/// The appliance being assembled in one data directory. Opens nothing until a step method
/// is called; each part is opened at most once and shared by every later step (sled locks
/// its directory, so there is one [`Store`] per process).
pub struct Appliance {
    dir: DataDir,
    opts: Options,
    policy: Option<Arc<AlgorithmPolicy>>,
    hsm: Option<Arc<HsmBackend>>,
    store: Option<Store>,
    audit: Option<Arc<AuditLog>>,
    registry: Option<Arc<KeyRegistry>>,
    metrics: Arc<Metrics>,
}

debug_showing!(Appliance { dir, opts });

impl Appliance {
    /// The appliance in `dir` with `opts`; nothing is opened yet.
    pub fn new(dir: DataDir, opts: Options) -> Appliance {
        Appliance {
            dir,
            opts,
            policy: None,
            hsm: None,
            store: None,
            audit: None,
            registry: None,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The appliance's metrics: created with the builder, counted into by the audit log, the
    /// HSM backend (sampled) and the service when [`Options::metrics`] is on.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Uses `hsm`, a backend already open in this process, instead of opening one from the
    /// HSM configuration: PKCS#11 modules are per process, so a process that serves several
    /// appliances (a test kit) opens its tokens once.
    pub fn with_hsm(mut self, hsm: Arc<HsmBackend>) -> Appliance {
        if self.opts.metrics {
            self.metrics.sample_hsm(hsm.clone());
        }
        self.hsm = Some(hsm);
        self
    }

    /// Uses `policy` instead of loading [`Options::algorithm_policy`].
    pub fn with_policy(mut self, policy: Arc<AlgorithmPolicy>) -> Appliance {
        self.policy = Some(policy);
        self
    }

    /// The data directory.
    pub fn data_dir(&self) -> &DataDir {
        &self.dir
    }

    /// The clock every part uses.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.opts.clock.clone()
    }

    /// The HSM configuration file in use: the override, else the data directory's.
    pub fn hsm_config_path(&self) -> PathBuf {
        self.opts
            .hsm_config
            .clone()
            .unwrap_or_else(|| self.dir.hsm_config())
    }

    /// DEVELOPMENT: creates SoftHSM2 tokens and `pkcs11.toml` in the data directory with the
    /// module at `module` (as `hsm init-dev`) when the HSM configuration file does not exist;
    /// None when it exists (a real HSM's configuration is used as it is).
    pub fn create_dev_hsm_if_missing(&mut self, module: &Path) -> Result<Option<DevInit>> {
        if self.hsm_config_path().exists() {
            return Ok(None);
        }
        crate::hsm::dev::init_dev_in(&self.dir.dev_layout()?, module).map(Some)
    }

    /// The algorithm policy (loaded on first call).
    pub fn policy(&mut self) -> Result<Arc<AlgorithmPolicy>> {
        if let Some(p) = &self.policy {
            return Ok(p.clone());
        }
        let p = Arc::new(load_policy(self.opts.algorithm_policy.as_deref())?);
        self.policy = Some(p.clone());
        Ok(p)
    }

    /// The HSM backend from the HSM configuration, every token logged in and probed (opened
    /// on first call).
    pub fn hsm(&mut self) -> Result<Arc<HsmBackend>> {
        if let Some(h) = &self.hsm {
            return Ok(h.clone());
        }
        let path = self.hsm_config_path();
        if self.opts.explain_missing_hsm_config && !path.is_file() {
            return Err(Error::new(
                ErrorCode::ConfigInvalid,
                format!(
                    "no HSM configuration at {} (run `mpcp-pa hsm init-dev --data-dir {}` for development tokens)",
                    path.display(),
                    self.dir.root().display()
                ),
            ));
        }
        let h = Arc::new(HsmBackend::open(&HsmConfig::load(&path)?)?);
        if self.opts.metrics {
            self.metrics.sample_hsm(h.clone());
        }
        self.hsm = Some(h.clone());
        Ok(h)
    }

    /// The store (opened on first call, with the configured cache and reserve).
    pub fn store(&mut self) -> Result<Store> {
        if let Some(s) = &self.store {
            return Ok(s.clone());
        }
        let path = self.dir.store();
        if self.opts.store == StoreMode::Existing && !path.is_dir() {
            return Err(Error::new(
                ErrorCode::NotFound,
                format!("no store at {}", path.display()),
            ));
        }
        let store =
            Store::open_with_cache(&path, self.opts.store_cache_bytes).map_err(|e| match &self
                .opts
                .store_lock_hint
            {
                Some(hint) => Error::new(e.code, format!("{} ({hint})", e.message)),
                None => e,
            })?;
        if let Some(r) = self.opts.store_reserve_bytes {
            store.set_reserve(r);
        }
        self.store = Some(store.clone());
        Ok(store)
    }

    /// The audit log in the store, opened as [`Options::audit`] says (on first call; opens
    /// the store first).
    pub fn audit(&mut self) -> Result<Arc<AuditLog>> {
        if let Some(a) = &self.audit {
            return Ok(a.clone());
        }
        let store = self.store()?;
        let clock = self.clock();
        let log = match &self.opts.audit {
            AuditMode::CreateDefault => open_audit(&store, clock)?,
            AuditMode::Create(origin) => {
                AuditLog::open(&store, AuditConfig::new(origin.clone()), clock)?
            }
            AuditMode::Existing => AuditLog::open_existing(&store, clock)?,
        };
        if let Some(d) = self.opts.clock_drift {
            log.set_drift(d);
        }
        if self.opts.metrics {
            log.count_into(self.metrics.clone());
        }
        let log = Arc::new(log);
        self.audit = Some(log.clone());
        Ok(log)
    }

    /// Refuses (`CLOCK_JUMP`) a start whose clock reads more than `max_hours` after the last
    /// audit entry, unless `accept`; says on stderr when an accepted jump is used. Opens the
    /// audit log first.
    pub fn check_clock_jump(&mut self, max_hours: u64, accept: bool) -> Result<()> {
        let audit = self.audit()?;
        let Some(last) = audit.last_entry_time() else {
            return Ok(());
        };
        let now = self.opts.clock.now();
        let ahead = now - last;
        if ahead <= time::Duration::hours(max_hours as i64) {
            return Ok(());
        }
        let what = format!(
            "the clock reads {}, {} hours after the last audit entry ({}), more than \
             --max-clock-jump-hours {max_hours}",
            crate::clock::format_rfc3339(now),
            ahead.whole_hours(),
            crate::clock::format_rfc3339(last),
        );
        if accept {
            tracing::warn!(
                max_hours,
                "clock jump accepted by --accept-clock-jump: {what}"
            );
            eprintln!("warning: {what}; accepted by --accept-clock-jump");
            return Ok(());
        }
        tracing::error!(max_hours, code = "CLOCK_JUMP", "start refused: {what}");
        Err(Error::new(
            ErrorCode::ClockJump,
            format!(
                "refusing to start: {what}. If the clock is wrong, fix it (NTP) and start again; \
                 if it is right, start once with --accept-clock-jump"
            ),
        ))
    }

    /// The key registry over the HSM backend, with the audit log as its sink (on first call;
    /// opens the policy, the HSM, the store and the audit log first, in that order, where
    /// not open yet).
    pub fn registry(&mut self) -> Result<Arc<KeyRegistry>> {
        if let Some(r) = &self.registry {
            return Ok(r.clone());
        }
        let policy = self.policy()?;
        let backend = self.hsm()?;
        let store = self.store()?;
        let audit = self.audit()?;
        let r = Arc::new(KeyRegistry::new(
            &store,
            backend,
            audit,
            self.clock(),
            policy,
        )?);
        self.registry = Some(r.clone());
        Ok(r)
    }

    /// The readiness probes of the service: every role's HSM token logged in (checked live),
    /// the grant-signing and root roles' active keys usable, and the audit role's key able
    /// to sign checkpoints. Opens the registry first.
    pub fn readiness(&mut self) -> Result<Vec<Arc<dyn ReadinessProbe>>> {
        let registry = self.registry()?;
        let audit = self.audit()?;
        let hsm = self.hsm()?;
        let mut probes = crate::hsm::readiness::probes(&hsm);
        probes.push(Arc::new(SigningKeysProbe(registry.clone())));
        probes.push(Arc::new(CheckpointKeyProbe {
            keys: registry,
            origin: audit.origin().to_string(),
        }));
        Ok(probes)
    }

    /// What `api` needs to serve: the store, the audit log (as sink and for reads), the
    /// registry (as signing keys and for key management), the clock and the readiness
    /// probes. Opens everything not open yet.
    pub fn service_parts(&mut self) -> Result<ServiceParts> {
        let readiness = self.readiness()?;
        let registry = self.registry()?;
        let audit = self.audit()?;
        Ok(ServiceParts {
            store: self.store()?,
            audit: crate::api::AuditHandle::new(audit),
            registry,
            clock: self.clock(),
            readiness,
            metrics: self.opts.metrics.then(|| self.metrics.clone()),
        })
    }
}

/// Ready when the grant-signing and root roles each have a usable active key (which needs
/// their tokens logged in).
pub struct SigningKeysProbe(pub Arc<dyn ActiveKeys>);

impl ReadinessProbe for SigningKeysProbe {
    fn name(&self) -> &str {
        "signing keys"
    }
    fn check(&self) -> Result<()> {
        for role in [KeyRole::GrantSigning, KeyRole::Root] {
            self.0.active_signer(role)?;
        }
        Ok(())
    }
}

/// Ready when the audit role's active key can sign checkpoints of the log `origin`
/// (loaded from its token).
pub struct CheckpointKeyProbe {
    /// Where the audit role's key comes from.
    pub keys: Arc<dyn CheckpointKeys>,
    /// The audit log's origin.
    pub origin: String,
}

impl ReadinessProbe for CheckpointKeyProbe {
    fn name(&self) -> &str {
        "audit checkpoint key"
    }
    fn check(&self) -> Result<()> {
        self.keys.checkpoint_signer(&self.origin).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::events::{Actor, Event, EventSink};

    fn app(dir: &Path, opts: Options) -> Appliance {
        Appliance::new(DataDir::new(dir), opts)
    }

    /// The default options with one change.
    fn with(change: impl FnOnce(&mut Options)) -> Options {
        let mut o = Options::default();
        change(&mut o);
        o
    }

    /// The audit log of a directory another appliance just released: sled lets go of its
    /// lock a moment after the last handle is dropped.
    fn reopen_audit(dir: &Path, opts: &Options) -> Arc<AuditLog> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match app(dir, opts.clone()).audit() {
                Err(e)
                    if e.code == ErrorCode::StoreError && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                r => return r.unwrap(),
            }
        }
    }

    #[test]
    fn an_existing_store_is_required_only_when_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = with(|o| o.store = StoreMode::Existing);
        let e = app(tmp.path(), opts.clone()).store().unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        assert!(e.message.starts_with("no store at "), "{e}");
        assert!(
            !DataDir::new(tmp.path()).store().exists(),
            "nothing created"
        );
        std::fs::create_dir(DataDir::new(tmp.path()).store()).unwrap();
        app(tmp.path(), opts).store().unwrap();

        let fresh = tempfile::tempdir().unwrap();
        app(fresh.path(), Options::default()).store().unwrap();
        assert!(DataDir::new(fresh.path()).store().is_dir());
    }

    #[test]
    fn parts_are_opened_once_and_shared() {
        let tmp = tempfile::tempdir().unwrap();
        let mut a = app(tmp.path(), with(|o| o.store_reserve_bytes = Some(12345)));
        let log = a.audit().unwrap();
        assert_eq!(log.origin(), DEFAULT_AUDIT_ORIGIN);
        assert!(Arc::ptr_eq(&log, &a.audit().unwrap()));
        assert_eq!(a.store().unwrap().reserve(), 12345);
        assert!(Arc::ptr_eq(&a.policy().unwrap(), &a.policy().unwrap()));
    }

    #[test]
    fn the_audit_mode_decides_what_is_opened() {
        let tmp = tempfile::tempdir().unwrap();
        // Nothing to open yet: an existing log is required, and there is none.
        let existing = with(|o| o.audit = AuditMode::Existing);
        assert_eq!(
            app(tmp.path(), existing.clone()).audit().unwrap_err().code,
            ErrorCode::NotFound
        );
        let named = with(|o| o.audit = AuditMode::Create("pa.example/audit".into()));
        assert_eq!(
            reopen_audit(tmp.path(), &named).origin(),
            "pa.example/audit"
        );
        assert_eq!(
            reopen_audit(tmp.path(), &existing).origin(),
            "pa.example/audit"
        );
        let default = reopen_audit(tmp.path(), &Options::default());
        assert_eq!(
            default.origin(),
            "pa.example/audit",
            "an existing log keeps its origin"
        );
    }

    #[test]
    fn a_missing_hsm_configuration_is_explained_when_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let mut a = app(tmp.path(), with(|o| o.explain_missing_hsm_config = true));
        let e = a.hsm().unwrap_err();
        assert_eq!(e.code, ErrorCode::ConfigInvalid);
        assert!(e.message.contains("hsm init-dev --data-dir"), "{e}");
        assert!(
            e.message
                .contains(&DataDir::new(tmp.path()).hsm_config().display().to_string())
        );
        let other = tmp.path().join("elsewhere.toml");
        let b = app(tmp.path(), with(|o| o.hsm_config = Some(other.clone())));
        assert_eq!(b.hsm_config_path(), other);
    }

    #[test]
    fn a_store_open_error_carries_the_hint() {
        let tmp = tempfile::tempdir().unwrap();
        let _holder = app(tmp.path(), Options::default()).store().unwrap();
        let e = app(
            tmp.path(),
            with(|o| o.store_lock_hint = Some("who holds it".into())),
        )
        .store()
        .unwrap_err();
        assert!(e.message.ends_with(" (who holds it)"), "{e}");
    }

    #[test]
    fn a_clock_jump_is_refused_unless_accepted() {
        let tmp = tempfile::tempdir().unwrap();
        let t0 = time::macros::datetime!(2026-01-01 00:00 UTC);
        let clock = Arc::new(FixedClock::new(t0));
        let opts = with(|o| o.clock = clock.clone());
        let mut a = app(tmp.path(), opts);
        a.check_clock_jump(1, false).unwrap();
        a.audit()
            .unwrap()
            .record(
                &Actor::system(),
                Event::Shutdown {
                    config_digest: "00".into(),
                },
            )
            .unwrap();
        clock.set(t0 + time::Duration::minutes(59));
        a.check_clock_jump(1, false).unwrap();
        clock.set(t0 + time::Duration::hours(3));
        let e = a.check_clock_jump(1, false).unwrap_err();
        assert_eq!(e.code, ErrorCode::ClockJump);
        assert!(e.message.contains("--accept-clock-jump"), "{e}");
        a.check_clock_jump(1, true).unwrap();
        a.check_clock_jump(3, false).unwrap();
    }
}
