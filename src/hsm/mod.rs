//! The PKCS#11 HSM backend: key generation, lookup, destruction and signing inside tokens.
//!
//! - [`config`]: `pkcs11.toml` (module, pool size, timeout, role -> token binding).
//! - [`pin`]: PIN sources and the zeroised, redacted [`pin::Pin`].
//! - `module` / `pool` / `worker`: one shared `Pkcs11` context, a bounded session pool per
//!   token with health checks, recovery and per-call timeouts.
//! - [`mod@bounded`]: where the timeout of a call is enforced. Work run through [`bounded()`]
//!   (the service's signing) makes its HSM calls inline on its blocking thread and the
//!   async waiter stops waiting at the call's deadline; any other caller hands each call to
//!   a pool worker thread and stops waiting itself. Either way every HSM call is bounded by
//!   the configured timeout, a session is used by one thread at a time, and a session whose
//!   call overran or was abandoned is closed once the call returns, never reused.
//! - [`key_management`], [`asym_sign`]: key pairs and the MPCP signing convention.
//! - [`note_sign`]: raw-message Ed25519 for C2SP signed notes (audit checkpoints).
//! - [`mechanisms`]: the startup probe.
//! - [`dev`]: `hsm init-dev`, SoftHSM2 tokens for development and tests.
//!
//! [`HsmBackend`] implements [`KeyBackend`]; it is `Send + Sync` and cheap to clone. All
//! calls block (an HSM round trip); async code runs them with [`bounded()`] (or
//! `spawn_blocking`, which keeps the per-call hand-off).
//!
//! One process uses one PKCS#11 configuration: library state is process-wide, and SoftHSM2
//! reads its configuration file once per process (see [`bind_softhsm2_conf`]).

pub mod asym_sign;
pub mod bounded;
pub mod config;
pub mod dev;
pub mod key_management;
pub mod mechanisms;
mod module;
pub mod note_sign;
pub mod pin;
mod pool;
pub mod readiness;
mod utils;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::crypto::Alg;
use crate::error::{Error, ErrorCode, Result};
use crate::seams::SharedSigner;
use crate::seams::key_backend::{GeneratedKey, KeyBackend, material_missing};
use crate::seams::key_role::KeyRole;
use crate::seams::note_signer::NoteSigner;

pub use asym_sign::HsmSigner;
pub use bounded::{CallWatch, bounded};
pub use config::HsmConfig;
pub use mechanisms::TokenReport;
pub use module::bind_softhsm2_conf;
pub use note_sign::HsmNoteSigner;
pub use pin::{Pin, PinSource};

use asym_sign::KeyRef;
use module::Module;
use pool::{PoolSettings, TokenPool};

/// Longest object label accepted from callers (before the role prefix).
pub const MAX_KEY_LABEL: usize = 64;
/// Longest CKA_ID accepted when loading or destroying a key.
pub const MAX_OBJECT_ID: usize = 64;

struct RoleBinding {
    pool: Arc<TokenPool>,
    label_prefix: String,
    algorithms: Vec<Alg>,
}

struct Inner {
    /// Every module in use (one per distinct path), in configuration order.
    modules: Vec<Arc<Module>>,
    roles: BTreeMap<KeyRole, RoleBinding>,
    report: Vec<TokenReport>,
}

/// The HSM: one session pool per token, each on its token's module (one loaded context per
/// distinct module path), each role bound to its token.
#[derive(Clone)]
pub struct HsmBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HsmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmBackend")
            .field(
                "modules",
                &self
                    .inner
                    .modules
                    .iter()
                    .map(|m| m.path())
                    .collect::<Vec<_>>(),
            )
            .field(
                "tokens",
                &self
                    .inner
                    .report
                    .iter()
                    .map(|t| &t.label)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The metrics sample every configured token once (roles sharing a token share its pool).
impl crate::metrics::HsmSampler for HsmBackend {
    fn tokens(&self) -> Vec<crate::metrics::TokenSample> {
        let mut by_label = BTreeMap::new();
        for binding in self.inner.roles.values() {
            by_label
                .entry(binding.pool.label().to_string())
                .or_insert_with(|| binding.pool.sample());
        }
        by_label.into_values().collect()
    }

    fn reinitialisations(&self) -> u64 {
        // Each generation after the first initialisation is one re-initialisation.
        self.inner.modules.iter().map(|m| m.generation()).sum()
    }
}

impl HsmBackend {
    /// Loads every token's module, reads every token's PIN, logs in to every token and probes that it
    /// offers what its roles need (mechanisms and a self-test signature per algorithm).
    ///
    /// Errors: `HSM_UNAVAILABLE` (module missing or unusable, naming the path),
    /// `HSM_TOKEN_NOT_FOUND`, `HSM_PIN_INVALID`, `HSM_MECHANISM_UNSUPPORTED`,
    /// `CONFIG_INVALID` (PIN source missing, SoftHSM2 configuration conflict).
    pub fn open(config: &HsmConfig) -> Result<HsmBackend> {
        if let Some(conf) = &config.softhsm2_conf {
            bind_softhsm2_conf(conf)?;
        }
        let mut modules: Vec<Arc<Module>> = Vec::new();
        let settings = PoolSettings {
            size: config.pool_size,
            timeout: config.call_timeout,
            backoff_initial: config.backoff_initial,
            backoff_max: config.backoff_max,
        };
        // Every PIN is read before the first login, so a missing source fails cleanly.
        let mut pools = BTreeMap::new();
        for (label, token) in &config.tokens {
            let pin = Pin::load(&token.pin, label)?;
            let module = Module::load(config.module_of(label))?;
            if !modules.iter().any(|m| Arc::ptr_eq(m, &module)) {
                modules.push(Arc::clone(&module));
            }
            pools.insert(label.clone(), TokenPool::new(label, module, pin, settings));
        }
        let mut roles = BTreeMap::new();
        for (role, rc) in &config.roles {
            let pool = pools.get(&rc.token).ok_or_else(|| {
                Error::new(
                    ErrorCode::ConfigInvalid,
                    format!("role {role}: token {:?} is not configured", rc.token),
                )
            })?;
            roles.insert(
                *role,
                RoleBinding {
                    pool: Arc::clone(pool),
                    label_prefix: rc.label_prefix.clone(),
                    algorithms: rc.algorithms.clone(),
                },
            );
        }
        for role in KeyRole::REQUIRED {
            if !roles.contains_key(&role) {
                return Err(Error::new(
                    ErrorCode::ConfigInvalid,
                    format!("role {role} is not configured"),
                ));
            }
        }
        let mut report = Vec::new();
        for (label, pool) in &pools {
            let on_token: Vec<KeyRole> = roles
                .iter()
                .filter(|(_, b)| Arc::ptr_eq(&b.pool, pool))
                .map(|(r, _)| *r)
                .collect();
            let mut algs: Vec<Alg> = Vec::new();
            for r in &on_token {
                for a in &roles[r].algorithms {
                    if !algs.contains(a) {
                        algs.push(*a);
                    }
                }
            }
            let label = label.clone();
            let probe_algs = algs.clone();
            let info = pool
                .run("startup probe", move |ctx| {
                    mechanisms::check_mechanisms(ctx, &probe_algs)?;
                    for alg in &probe_algs {
                        mechanisms::self_test(ctx, *alg)?;
                    }
                    let t = ctx.module.ctx().get_token_info(ctx.slot).map_err(|e| {
                        utils::Failure::pkcs11(
                            &e,
                            &format!("token {:?}: C_GetTokenInfo", ctx.label),
                        )
                    })?;
                    Ok((
                        t.manufacturer_id().to_string(),
                        t.model().to_string(),
                        t.serial_number().to_string(),
                    ))
                })
                .map_err(|f| f.error)?;
            report.push(TokenReport {
                label,
                roles: on_token,
                algorithms: algs,
                manufacturer: info.0,
                model: info.1,
                serial: info.2,
            });
        }
        Ok(HsmBackend {
            inner: Arc::new(Inner {
                modules,
                roles,
                report,
            }),
        })
    }

    /// What the startup probe found, one entry per token.
    pub fn report(&self) -> &[TokenReport] {
        &self.inner.report
    }

    /// The label of the token holding `role`'s keys.
    pub fn token_of(&self, role: KeyRole) -> Result<&str> {
        Ok(self.binding(role)?.pool.label())
    }

    /// Checks that `role`'s token is usable now: a pooled session passes `C_GetSessionInfo`
    /// (right slot, logged in as user), or a fresh one is opened and logged in; bounded by
    /// the configured timeout like every HSM call. A failure starts the pool's recovery, so
    /// a later check (or call) can succeed without a restart. Errors: `HSM_UNAVAILABLE`,
    /// `HSM_PIN_INVALID`, `HSM_TIMEOUT`, `HSM_TOKEN_NOT_FOUND`.
    pub fn check_token(&self, role: KeyRole) -> Result<()> {
        self.binding(role)?
            .pool
            .run("session check", |_| Ok(()))
            .map_err(|f| f.error)
    }

    /// The pool of `role`'s token and `object_id` (checked, and owned for the pooled call):
    /// what a call on one key pair needs.
    fn key_call(&self, role: KeyRole, object_id: &[u8]) -> Result<(&Arc<TokenPool>, Vec<u8>)> {
        let b = self.binding(role)?;
        check_object_id(object_id)?;
        Ok((&b.pool, object_id.to_vec()))
    }

    fn binding(&self, role: KeyRole) -> Result<&RoleBinding> {
        self.inner.roles.get(&role).ok_or_else(|| {
            Error::new(
                ErrorCode::ConfigInvalid,
                format!("role {role} is not configured"),
            )
        })
    }

    fn enabled(&self, role: KeyRole, alg: Alg) -> Result<&RoleBinding> {
        let b = self.binding(role)?;
        if !b.algorithms.contains(&alg) {
            return Err(Error::new(
                ErrorCode::AlgorithmUnsupported,
                format!("{alg} is not enabled for role {role} in the HSM configuration"),
            ));
        }
        Ok(b)
    }
}

fn check_object_id(object_id: &[u8]) -> Result<()> {
    if object_id.is_empty() || object_id.len() > MAX_OBJECT_ID {
        return Err(Error::new(
            ErrorCode::KeyNotFound,
            format!("object id must be 1..={MAX_OBJECT_ID} bytes"),
        ));
    }
    Ok(())
}

impl KeyBackend for HsmBackend {
    fn holds(&self, role: KeyRole) -> bool {
        self.inner.roles.contains_key(&role)
    }

    /// Generates the key pair on `role`'s token. CKA_LABEL is the role's label prefix
    /// followed by `label` (printable ASCII, at most [`MAX_KEY_LABEL`]; when empty, the hex
    /// of the random CKA_ID is used instead).
    ///
    /// On `HSM_TIMEOUT` the generation may still complete on the token after the call was
    /// abandoned, leaving a key pair nobody knows the id of; it carries the requested
    /// label, so an operator can find and destroy it.
    fn generate(&self, role: KeyRole, alg: Alg, label: &str) -> Result<GeneratedKey> {
        let b = self.enabled(role, alg)?;
        if label.len() > MAX_KEY_LABEL || !label.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(Error::field(
                ErrorCode::SchemaInvalid,
                "label",
                format!("key label must be at most {MAX_KEY_LABEL} printable ASCII characters"),
            ));
        }
        let prefix = b.label_prefix.clone();
        let name = label.to_string();
        b.pool
            .run("C_GenerateKeyPair", move |ctx| {
                key_management::generate(ctx, alg, &prefix, &name, true).map(|(k, _)| k)
            })
            .map_err(|f| f.error)
    }

    /// Loads the key pair with CKA_ID `object_id` from `role`'s token, checking that the
    /// private key is a safe `alg` key, and returns a signer for it.
    fn signer(&self, role: KeyRole, alg: Alg, object_id: &[u8], kid: &str) -> Result<SharedSigner> {
        let b = self.enabled(role, alg)?;
        check_object_id(object_id)?;
        let id = object_id.to_vec();
        let (handle, public) = b
            .pool
            .run("load key", move |ctx| {
                key_management::load(ctx, alg, &id).map(|(h, p)| ((ctx.epoch, h), p))
            })
            .map_err(|f| f.error)?;
        let key = KeyRef::new(Arc::clone(&b.pool), object_id.to_vec(), Some(handle));
        Ok(Arc::new(HsmSigner::new(kid, alg, public, key)))
    }

    /// Loads an EdDSA key as a C2SP note signer (see [`note_sign`]).
    fn note_signer(
        &self,
        role: KeyRole,
        object_id: &[u8],
        kid: &str,
        name: &str,
    ) -> Result<Arc<dyn NoteSigner>> {
        Ok(Arc::new(note_sign::load_note_signer(
            self, role, object_id, kid, name,
        )?))
    }

    /// Looks the private key up by CKA_ID (one pooled call, same timeout as signing).
    fn check_key(&self, role: KeyRole, object_id: &[u8]) -> Result<()> {
        let (pool, id) = self.key_call(role, object_id)?;
        pool.run("key check", move |ctx| {
            key_management::find_key(ctx, cryptoki::object::ObjectClass::PRIVATE_KEY, &id)
                .map(|_| ())
        })
        .map_err(|f| material_missing(f.error))
    }

    /// Destroys both objects of the key pair (serialised with key generation).
    fn destroy(&self, role: KeyRole, object_id: &[u8]) -> Result<()> {
        let (pool, id) = self.key_call(role, object_id)?;
        pool.run("C_DestroyObject", move |ctx| {
            key_management::destroy(ctx, &id).map(|_| ())
        })
        .map_err(|f| f.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_and_signer_are_shareable_across_threads() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<HsmBackend>();
        shareable::<HsmSigner>();
        shareable::<Pin>();
    }
}
