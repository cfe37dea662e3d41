//! The appliance's HTTPS service.
//!
//! Layers, one file each: [`server`] (TLS on rustls, connection limit, graceful drain),
//! [`tls`] (certificate, next key, pins), [`error`] (the one mapping from [`crate::Error`] to
//! `{code, message, field?}` responses), [`head`] (URI and header sizes), [`body`] (strict
//! JSON bodies), [`tokens`] and
//! [`auth`] (bearer tokens with one role each), [`ratelimit`], [`idempotency`],
//! [`signing`] (HSM signing off the runtime, audit entry before release) and the handlers in
//! [`routes`]. The service depends only on the seams ([`ActiveKeys`], [`AuditSink`],
//! [`Clock`], [`Store`]); the key registry, the HSM backend and the audit log plug in there.
//!
//! Every route the service answers is listed once, in [`routes::table`]; the router is built
//! from that table and the OpenAPI document is checked against it.

pub mod artifacts;
pub mod auth;
pub mod body;
pub mod error;
pub mod extract;
pub mod head;
pub mod idempotency;
pub mod issuance;
pub mod ledger_book;
pub mod ledger_rpc;
pub mod ledger_submitter;
pub mod observe;
pub mod ratelimit;
pub mod receipt_book;
pub mod refusals;
pub mod respond;
pub mod routes;
pub mod server;
pub mod signing;
pub mod tls;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use crate::audit::{AuditLog, AuditSink, Checkpointer};
use crate::clock::Clock;
use crate::error::{Error, ErrorCode, Result};
use crate::keys::publication::KeyPublisher;
use crate::keys::{ActiveKeys, KeyRegistry};
use crate::metrics::Metrics;
use crate::store::Store;

pub use crate::seams::readiness::ReadinessProbe;
pub use server::{Limits, RunningServer, Transport};

/// Service settings that are not limits.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The PA's identifier, written as `issuer` / `bundleIssuer` of what it signs.
    pub issuer: String,
    /// Request limits.
    pub limits: Limits,
    /// How long an idempotency record answers for its key.
    pub idempotency_ttl: Duration,
    /// Validity of a signed key set from its signing.
    pub keyset_lifetime: Duration,
    /// `Cache-Control: max-age` of the public documents.
    pub public_max_age: Duration,
    /// Trust-bundle assurance profiles: the longest lifetime the PA signs, per profile
    /// (7 days at most).
    pub bundle_profiles: crate::bundle_profiles::BundleProfiles,
    /// Longest destination-allowlist lifetime the PA signs.
    pub max_allowlist_lifetime: Duration,
    /// Clock drift tolerance of the self-check every signed artifact passes.
    pub drift: Duration,
    /// Longest grant lifetime the PA signs, whatever a policy allows (a policy's
    /// `maxGrantLifetimeSeconds` can only shorten it).
    pub max_grant_lifetime: Duration,
    /// Whether issuer-role requests must also come over a TLS connection with a client
    /// certificate verified against the configured client CA (mutual TLS).
    pub issuer_requires_client_certificate: bool,
    /// The XRPL side: fee of offline-signed transactions, declared external issuers.
    pub ledger: ledger_book::LedgerConfig,
}

impl ServiceConfig {
    /// Defaults: key sets valid 24 h, public documents cached 5 min, the built-in bundle
    /// profiles (policies/bundle-profiles.toml: 6 h, 24 h, 7 days), allowlists at most 30
    /// days, grants at most 30 days, idempotency records kept 24 h, drift 300 s.
    pub fn new(issuer: impl Into<String>) -> ServiceConfig {
        ServiceConfig {
            issuer: issuer.into(),
            limits: Limits::default(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            keyset_lifetime: Duration::from_secs(24 * 3600),
            public_max_age: Duration::from_secs(300),
            bundle_profiles: crate::bundle_profiles::BundleProfiles::builtin()
                .expect("the built-in bundle profiles are valid (unit-tested)"),
            max_allowlist_lifetime: Duration::from_secs(30 * 24 * 3600),
            drift: crate::clock::DEFAULT_DRIFT,
            max_grant_lifetime: Duration::from_secs(30 * 24 * 3600),
            issuer_requires_client_certificate: false,
            ledger: ledger_book::LedgerConfig::default(),
        }
    }
}

/// The audit log, and the sink that every append of the service goes through: the log
/// itself, or a wrapper built from that very log (tests interpose failures). Built only by
/// [`AuditHandle::new`] and [`AuditHandle::wrapped`], so the two always name one log.
#[derive(Clone)]
pub struct AuditHandle {
    log: Arc<AuditLog>,
    sink: Arc<dyn AuditSink>,
}

impl AuditHandle {
    /// Appends go straight to `log`.
    pub fn new(log: Arc<AuditLog>) -> AuditHandle {
        AuditHandle {
            sink: log.clone(),
            log,
        }
    }

    /// Appends go through the sink `wrap` builds around `log`; returns the handle and that
    /// sink (for the caller to steer).
    pub fn wrapped<S: AuditSink + 'static>(
        log: Arc<AuditLog>,
        wrap: impl FnOnce(Arc<AuditLog>) -> S,
    ) -> (AuditHandle, Arc<S>) {
        let sink = Arc::new(wrap(log.clone()));
        (
            AuditHandle {
                log,
                sink: sink.clone(),
            },
            sink,
        )
    }

    /// The log, for reads, proofs, checkpoints and readiness.
    pub fn log(&self) -> &Arc<AuditLog> {
        &self.log
    }

    /// Where events are recorded durably, with the records that go with them.
    pub fn sink(&self) -> &Arc<dyn AuditSink> {
        &self.sink
    }
}

/// The parts the service is built from, one handle each.
pub struct ServiceParts {
    /// The shared store (the service keeps tokens, idempotency records and issued artifacts
    /// in its own trees).
    pub store: Store,
    /// The audit log and the sink appends go through.
    pub audit: AuditHandle,
    /// The key registry: signing keys for handlers (behind the clock gate) and key
    /// management for the security officer. Its audit sink must write to the same log as
    /// `audit`: key changes it prepares are committed through `audit`'s sink.
    pub registry: Arc<KeyRegistry>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Extra readiness checks (HSM login, audit log).
    pub readiness: Vec<Arc<dyn ReadinessProbe>>,
    /// The metrics the service counts into and serves at `GET /metrics`; `None` turns the
    /// metrics off (no counting, `/metrics` answers 404 NOT_FOUND).
    pub metrics: Option<Arc<Metrics>>,
}

struct Inner {
    config: ServiceConfig,
    store: Store,
    audit: AuditHandle,
    keys: Arc<dyn ActiveKeys>,
    registry: Arc<KeyRegistry>,
    clock: Arc<dyn Clock>,
    readiness: Vec<Arc<dyn ReadinessProbe>>,
    tokens: tokens::TokenStore,
    rate: ratelimit::RateLimiter,
    idempotency: idempotency::IdempotencyStore,
    artifacts: artifacts::ArtifactStore,
    checkpointer: Arc<Checkpointer>,
    publisher: Arc<KeyPublisher>,
    public_cache_control: axum::http::HeaderValue,
    serial_lock: Arc<tokio::sync::Mutex<()>>,
    counters: refusals::RequestCounters,
    receipts: receipt_book::ReceiptBook,
    ledger: ledger_book::LedgerBook,
    metrics: Option<Arc<Metrics>>,
}

/// Shared state of every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("issuer", &self.0.config.issuer)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Opens the service's trees in the store and assembles the state.
    pub fn new(parts: ServiceParts, config: ServiceConfig) -> Result<AppState> {
        if config.issuer.trim().is_empty() {
            return Err(Error::new(
                ErrorCode::ConfigInvalid,
                "the PA issuer id is empty",
            ));
        }
        let tokens = tokens::TokenStore::open(&parts.store)?;
        let idempotency =
            idempotency::IdempotencyStore::open(&parts.store, config.idempotency_ttl)?;
        // Purged against the audit log's last entry as well as the wall clock: a clock that
        // jumped ahead must not erase the records that make retries replay.
        idempotency.purge_expired(parts.clock.as_ref(), parts.audit.log().last_entry_time())?;
        let artifacts = artifacts::ArtifactStore::new(Arc::new(parts.store.clone()));
        let public_cache_control = axum::http::HeaderValue::from_str(&format!(
            "public, max-age={}",
            config.public_max_age.as_secs()
        ))
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("max-age header: {e}")))?;
        let publisher = Arc::new(
            KeyPublisher::new(
                parts.registry.clone(),
                parts.audit.sink().clone(),
                parts.clock.clone(),
                config.keyset_lifetime,
            )
            .with_gate(parts.audit.log().clone()),
        );
        // Every signing handler goes through these keys: none signs with the clock behind.
        let keys: Arc<dyn ActiveKeys> = Arc::new(signing::GatedKeys {
            inner: parts.registry.clone(),
            gate: parts.audit.log().clone(),
            metrics: parts.metrics.clone(),
        });
        let rate = ratelimit::RateLimiter::new(
            config.limits.requests_per_second_per_token,
            config.limits.burst_per_token,
        );
        // Checkpoints are signed with the registry's active audit key.
        let checkpointer = Arc::new(Checkpointer::new(
            parts.audit.log().clone(),
            parts.registry.clone(),
        ));
        // Opened now, so that a read never creates a tree (reads change nothing).
        for tree in receipt_book::trees::ALL
            .into_iter()
            .chain(ledger_book::trees::ALL)
        {
            parts.store.tree(tree)?;
        }
        let receipts = receipt_book::ReceiptBook::new(artifacts.clone());
        let ledger = ledger_book::LedgerBook::new(artifacts.clone());
        Ok(AppState(Arc::new(Inner {
            receipts,
            ledger,
            checkpointer,
            store: parts.store,
            audit: parts.audit,
            keys,
            registry: parts.registry,
            clock: parts.clock,
            readiness: parts.readiness,
            tokens,
            rate,
            idempotency,
            publisher,
            artifacts,
            public_cache_control,
            serial_lock: Arc::new(tokio::sync::Mutex::new(())),
            counters: refusals::RequestCounters::default(),
            metrics: parts.metrics,
            config,
        })))
    }

    /// Settings.
    pub fn config(&self) -> &ServiceConfig {
        &self.0.config
    }
    /// Request limits.
    pub fn limits(&self) -> &Limits {
        &self.0.config.limits
    }
    /// The token table.
    pub fn tokens(&self) -> &tokens::TokenStore {
        &self.0.tokens
    }
    /// Per-token rate limiter.
    pub fn rate_limiter(&self) -> &ratelimit::RateLimiter {
        &self.0.rate
    }
    /// Idempotency records.
    pub fn idempotency(&self) -> &idempotency::IdempotencyStore {
        &self.0.idempotency
    }
    /// Time.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.0.clock
    }
    /// The key registry view.
    pub fn keys(&self) -> &Arc<dyn ActiveKeys> {
        &self.0.keys
    }
    /// The key registry.
    pub fn registry(&self) -> &Arc<KeyRegistry> {
        &self.0.registry
    }
    /// The durable event sink.
    pub fn sink(&self) -> &Arc<dyn AuditSink> {
        self.0.audit.sink()
    }
    /// The audit log.
    pub fn audit(&self) -> &Arc<AuditLog> {
        self.0.audit.log()
    }
    /// The audit checkpointer (the audit role's active key signs).
    pub fn checkpointer(&self) -> &Arc<Checkpointer> {
        &self.0.checkpointer
    }
    /// The shared store.
    pub fn store(&self) -> &Store {
        &self.0.store
    }
    /// Policies, grants, allowlists and bundles issued by this PA.
    pub fn artifacts(&self) -> &artifacts::ArtifactStore {
        &self.0.artifacts
    }
    /// `Cache-Control` of the public documents (built once).
    pub fn public_cache_control(&self) -> &axum::http::HeaderValue {
        &self.0.public_cache_control
    }
    /// The key discovery documents (plain and signed key set), kept in memory.
    pub fn publisher(&self) -> &Arc<KeyPublisher> {
        &self.0.publisher
    }
    pub(crate) fn serial_lock(&self) -> &Arc<tokio::sync::Mutex<()>> {
        &self.0.serial_lock
    }
    /// Counters of reads and refusals (see [`refusals`]), for a metrics exporter.
    pub fn request_counters(&self) -> &refusals::RequestCounters {
        &self.0.counters
    }
    /// The PA's XRPL account, sequence counter and outbox.
    pub fn ledger(&self) -> &ledger_book::LedgerBook {
        &self.0.ledger
    }
    /// What the appliance keeps of the receipts it signs.
    pub fn receipts(&self) -> &receipt_book::ReceiptBook {
        &self.0.receipts
    }
    /// Extra readiness probes.
    pub fn readiness(&self) -> &[Arc<dyn ReadinessProbe>] {
        &self.0.readiness
    }
    /// The metrics, unless they are off.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.0.metrics.as_ref()
    }
}

/// The complete router: every route of [`routes::table`], JSON 404/405 fallbacks, panic
/// containment and response headers.
pub fn router(state: AppState) -> axum::Router {
    routes::build(state)
}
