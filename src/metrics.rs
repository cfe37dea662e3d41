//! The appliance's Prometheus metrics: one [`Metrics`] object, created by the `Appliance`
//! builder and handed to the layers that count (the service's request layer and handlers,
//! the audit log's group commit, the listener). There is no global registry: a process may
//! hold several appliances (the test kit does), each with its own numbers.
//!
//! The client crate is `prometheus-client`, the Prometheus project's own Rust client: typed
//! metrics and label sets without a process-wide default registry, atomics on the hot path
//! and a maintained OpenMetrics encoder. Its encoder writes OpenMetrics only; the service
//! answers that to scrapers that ask for it (`Accept: application/openmetrics-text`) and
//! the classic text format (0.0.4, which `promtool check metrics` lints) otherwise, derived
//! from the same encoding by [`to_classic_text`].
//!
//! Names follow the Prometheus conventions: the `mpcp_` prefix, base units (`_seconds`),
//! `_total` counters, and labels only of bounded sets: route templates of the route table
//! (never a raw path), status codes, key roles and states, algorithms, stable error codes
//! and token labels of the HSM configuration. No label ever carries a token name, a secret
//! or a request value.
//!
//! Values that the appliance already keeps (the log's size, the age of its latest
//! checkpoint, keys by role and state, HSM sessions and recoveries) are sampled when the
//! metrics are rendered rather than counted twice: the service sets them just before
//! [`Metrics::render`], and the HSM backend is read through [`HsmSampler`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Labels of one HTTP request: method, route template and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

/// Labels of a signature: key role and algorithm.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignLabels {
    role: String,
    alg: String,
}

/// A stable error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

/// An HSM token of the configuration, by its label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabel {
    token: String,
}

/// The appliance's version.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

/// One readiness check of `/readyz`, by name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabel {
    check: String,
}

/// A receipt verdict, by its stable wire name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: String,
}

/// A receipt decision: allow, block or escalate.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: String,
}

/// An outbox state of the XRPL transactions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TxStateLabel {
    state: String,
}

/// An answer of the ledger to a submission (engine result or RPC error).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// Keys of one role in one lifecycle state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    role: String,
    state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets from 0.5 ms to about 16 s (doubling).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Batch-size buckets: 1, 2, 4, … 512 entries.
fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

/// What the HSM backend reports of one token when metrics are rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSample {
    /// The token's label (from the HSM configuration: a bounded set).
    pub token: String,
    /// Sessions checked out or open in the token's pool now.
    pub sessions_in_use: u64,
    /// Recoveries of the token's sessions and login since the process started.
    pub recoveries: u64,
}

/// The HSM backend as the metrics see it: sampled at each render.
pub trait HsmSampler: Send + Sync {
    /// One sample per configured token.
    fn tokens(&self) -> Vec<TokenSample>;
    /// Successful re-initialisations of the PKCS#11 module since the process started.
    fn reinitialisations(&self) -> u64;
}

/// Every metric of one appliance, registered in its own registry. Cheap to share
/// (`Arc<Metrics>`); every update is a few atomic operations.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<HttpLabels>,
    signatures: Family<SignLabels, Counter>,
    hsm_duration: HistogramFamily<SignLabels>,
    hsm_errors: Family<CodeLabel, Counter>,
    hsm_recoveries: Family<TokenLabel, Counter>,
    hsm_reinits: Counter,
    hsm_sessions: Family<TokenLabel, Gauge>,
    audit_appends: Counter,
    audit_append_failures: Counter,
    audit_batch: Histogram,
    audit_flush: Histogram,
    audit_entries: Gauge,
    checkpoint_age: Gauge<f64, AtomicU64>,
    checkpoint_entries: Gauge,
    last_checkpoint: Mutex<Option<(Instant, u64)>>,
    checkpoints_signed: Counter,
    idempotent_replays: Counter,
    idempotency_conflicts: Counter,
    rate_limited: Counter,
    connections_open: Gauge,
    connections_refused: Counter,
    keys: Family<KeyLabels, Gauge>,
    ready: Family<CheckLabel, Gauge>,
    receipt_decisions: Family<DecisionLabel, Counter>,
    receipt_verdicts: Family<VerdictLabel, Counter>,
    receipt_outcomes: Counter,
    ledger_transactions: Family<TxStateLabel, Gauge>,
    ledger_submissions: Family<ResultLabel, Counter>,
    hsm: Mutex<Option<Arc<dyn HsmSampler>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `mpcp` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mpcp");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its response, by method, route template and status",
            Unit::Seconds,
            http_duration.clone(),
        );
        let signatures = Family::<SignLabels, Counter>::default();
        registry.register(
            "signatures",
            "Signatures made by the HSM for the service, by key role and algorithm",
            signatures.clone(),
        );
        let hsm_duration: HistogramFamily<SignLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "hsm_sign_duration",
            "Duration of one HSM signature (session checkout included), by key role and algorithm",
            Unit::Seconds,
            hsm_duration.clone(),
        );
        let hsm_errors = Family::<CodeLabel, Counter>::default();
        registry.register(
            "hsm_errors",
            "HSM operations of the service that failed, by stable error code",
            hsm_errors.clone(),
        );
        let hsm_recoveries = Family::<TokenLabel, Counter>::default();
        registry.register(
            "hsm_recoveries",
            "Recoveries of a token's sessions and login after a failure, by token label",
            hsm_recoveries.clone(),
        );
        let hsm_reinits = Counter::default();
        registry.register(
            "hsm_reinitialisations",
            "Re-initialisations of the PKCS#11 module (C_Finalize, C_Initialize)",
            hsm_reinits.clone(),
        );
        let hsm_sessions = Family::<TokenLabel, Gauge>::default();
        registry.register(
            "hsm_sessions_in_use",
            "HSM sessions open in each token's pool",
            hsm_sessions.clone(),
        );
        let audit_appends = Counter::default();
        registry.register(
            "audit_appends",
            "Audit log entries made durable",
            audit_appends.clone(),
        );
        let audit_append_failures = Counter::default();
        registry.register(
            "audit_append_failures",
            "Audit appends that failed to become durable (alert on any increase)",
            audit_append_failures.clone(),
        );
        let audit_batch = batch_histogram();
        registry.register(
            "audit_batch_entries",
            "Entries per group-commit batch of the audit log",
            audit_batch.clone(),
        );
        let audit_flush = latency_histogram();
        registry.register_with_unit(
            "audit_flush_duration",
            "Time to write and flush one group-commit batch of the audit log",
            Unit::Seconds,
            audit_flush.clone(),
        );
        let audit_entries = Gauge::default();
        registry.register(
            "audit_log_entries",
            "Entries in the audit log",
            audit_entries.clone(),
        );
        let checkpoint_age = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "audit_checkpoint_age",
            "Time since this process last signed an audit checkpoint (-1: none yet); \
             checkpoints are signed only while the log grows",
            Unit::Seconds,
            checkpoint_age.clone(),
        );
        let checkpoint_entries = Gauge::default();
        registry.register(
            "audit_checkpoint_entries",
            "Entries covered by the audit checkpoint this process last signed",
            checkpoint_entries.clone(),
        );
        let checkpoints_signed = Counter::default();
        registry.register(
            "audit_checkpoints_signed",
            "Audit checkpoints signed by this process",
            checkpoints_signed.clone(),
        );
        let idempotent_replays = Counter::default();
        registry.register(
            "idempotent_replays",
            "Requests answered by replaying the stored response of their Idempotency-Key",
            idempotent_replays.clone(),
        );
        let idempotency_conflicts = Counter::default();
        registry.register(
            "idempotency_conflicts",
            "Requests refused because their Idempotency-Key was used for another request",
            idempotency_conflicts.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited",
            "Requests refused by the per-token rate limit (429)",
            rate_limited.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Connections being served",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed at accept because their peer was over its connection cap",
            connections_refused.clone(),
        );
        let keys = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "keys",
            "Keys in the registry, by role and lifecycle state",
            keys.clone(),
        );
        let build = Family::<VersionLabel, Gauge>::default();
        registry.register(
            "build_info",
            "The appliance's version (the value is always 1)",
            build.clone(),
        );
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        let ready = Family::<CheckLabel, Gauge>::default();
        registry.register(
            "ready",
            "Readiness checks of /readyz (store, audit log, disk, clock, each HSM token, each \
             role's active key): 1 passing, 0 failing",
            ready.clone(),
        );
        let receipt_decisions = Family::<DecisionLabel, Counter>::default();
        registry.register(
            "receipt_decisions",
            "Receipt decision records signed, by decision (allow, block, escalate)",
            receipt_decisions.clone(),
        );
        let receipt_verdicts = Family::<VerdictLabel, Counter>::default();
        registry.register(
            "receipt_consume_verdicts",
            "Receipt consumes answered, by verdict (admitted, already_consumed, out_of_scope, \
             or the verifier's refusal)",
            receipt_verdicts.clone(),
        );
        let receipt_outcomes = Counter::default();
        registry.register(
            "receipt_outcomes",
            "Receipt outcome records signed",
            receipt_outcomes.clone(),
        );
        let ledger_transactions = Family::<TxStateLabel, Gauge>::default();
        registry.register(
            "ledger_transactions",
            "XRPL credential transactions of the outbox by state (signed, submitted, \
             validated, failed), sampled at the scrape",
            ledger_transactions.clone(),
        );
        let ledger_submissions = Family::<ResultLabel, Counter>::default();
        registry.register(
            "ledger_submissions",
            "XRPL submissions by the ledger's answer (engine result, or invalidTransaction)",
            ledger_submissions.clone(),
        );
        Metrics {
            registry,
            ledger_transactions,
            ledger_submissions,
            ready,
            receipt_decisions,
            receipt_verdicts,
            receipt_outcomes,
            http_requests,
            http_duration,
            signatures,
            hsm_duration,
            hsm_errors,
            hsm_recoveries,
            hsm_reinits,
            hsm_sessions,
            audit_appends,
            audit_append_failures,
            audit_batch,
            audit_flush,
            audit_entries,
            checkpoint_age,
            checkpoint_entries,
            last_checkpoint: Mutex::new(None),
            checkpoints_signed,
            idempotent_replays,
            idempotency_conflicts,
            rate_limited,
            connections_open,
            connections_refused,
            keys,
            hsm: Mutex::new(None),
        }
    }

    /// Counts one answered request of `route` (a route template, or `unmatched`).
    pub fn http_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let labels = HttpLabels {
            method: method.to_string(),
            route: route.to_string(),
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
        self.http_duration.get_or_create(&labels).observe(seconds);
    }

    /// Counts one HSM signature of `role` with `alg` that took `seconds`.
    pub fn signature(&self, role: &str, alg: &str, seconds: f64) {
        let labels = SignLabels {
            role: role.to_string(),
            alg: alg.to_string(),
        };
        self.signatures.get_or_create(&labels).inc();
        self.hsm_duration.get_or_create(&labels).observe(seconds);
    }

    /// Counts one failed HSM operation with its stable code.
    pub fn hsm_error(&self, code: &str) {
        self.hsm_errors
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    /// Records one group-commit batch of `entries` written and flushed in `seconds`, of
    /// which `durable` became entries (the others were refused one by one, e.g. a
    /// conditional write that found its record).
    pub fn audit_batch(&self, entries: usize, durable: usize, seconds: f64) {
        self.audit_batch.observe(entries as f64);
        self.audit_flush.observe(seconds);
        self.audit_appends.inc_by(durable as u64);
    }

    /// Counts `n` audit appends that failed: their batch could not be written or flushed,
    /// or they were queued behind one that could not.
    pub fn audit_append_failed(&self, n: u64) {
        self.audit_append_failures.inc_by(n);
    }

    /// Counts one signed checkpoint, covering `size` entries, signed now.
    pub fn checkpoint_signed(&self, size: u64) {
        self.checkpoints_signed.inc();
        *self
            .last_checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), size));
    }

    /// Counts one signed receipt decision record of `decision`.
    pub fn receipt_decision(&self, decision: &str) {
        self.receipt_decisions
            .get_or_create(&DecisionLabel {
                decision: decision.to_string(),
            })
            .inc();
    }

    /// Counts one answered receipt consume with its `verdict` (a bounded set of wire names).
    pub fn receipt_verdict(&self, verdict: &str) {
        self.receipt_verdicts
            .get_or_create(&VerdictLabel {
                verdict: verdict.to_string(),
            })
            .inc();
    }

    /// Counts one signed receipt outcome record.
    pub fn receipt_outcome(&self) {
        self.receipt_outcomes.inc();
    }

    /// Counts one XRPL submission answered with `result` (an engine result code).
    pub fn ledger_submission(&self, result: &str) {
        self.ledger_submissions
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// Replaces the outbox-by-state gauges with `counts` (state, transactions).
    pub fn set_ledger_transactions(&self, counts: &[(&str, u64)]) {
        self.ledger_transactions.clear();
        for (state, n) in counts {
            self.ledger_transactions
                .get_or_create(&TxStateLabel {
                    state: (*state).to_string(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// Counts one idempotent replay.
    pub fn idempotent_replay(&self) {
        self.idempotent_replays.inc();
    }

    /// Counts one idempotency conflict.
    pub fn idempotency_conflict(&self) {
        self.idempotency_conflicts.inc();
    }

    /// Counts one rate-limit refusal.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// Counts an open connection until the returned guard is dropped.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections_open.inc();
        ConnectionGuard(self.clone())
    }

    /// Counts one connection refused at accept.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Sets the sampled size of the audit log.
    pub fn set_audit_log(&self, entries: u64) {
        self.audit_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// Replaces the keys-by-role-and-state gauges with `counts` (role, state, keys).
    pub fn set_keys(&self, counts: &[(String, String, u64)]) {
        self.keys.clear();
        for (role, state, n) in counts {
            self.keys
                .get_or_create(&KeyLabels {
                    role: role.clone(),
                    state: state.clone(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// Replaces the readiness gauges with `checks` (name, passing).
    pub fn set_ready(&self, checks: &[(String, bool)]) {
        self.ready.clear();
        for (check, ok) in checks {
            self.ready
                .get_or_create(&CheckLabel {
                    check: check.clone(),
                })
                .set(i64::from(*ok));
        }
    }

    /// The HSM backend to sample at each render (replaces an earlier one).
    pub fn sample_hsm(&self, hsm: Arc<dyn HsmSampler>) {
        *self.hsm.lock().unwrap_or_else(PoisonError::into_inner) = Some(hsm);
    }

    fn sample(&self) {
        let hsm = self
            .hsm
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let last = *self
            .last_checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match last {
            Some((at, size)) => {
                self.checkpoint_age.set(at.elapsed().as_secs_f64());
                self.checkpoint_entries
                    .set(i64::try_from(size).unwrap_or(i64::MAX));
            }
            None => {
                self.checkpoint_age.set(-1.0);
            }
        }
        let Some(hsm) = hsm else { return };
        for t in hsm.tokens() {
            let label = TokenLabel { token: t.token };
            self.hsm_sessions
                .get_or_create(&label)
                .set(i64::try_from(t.sessions_in_use).unwrap_or(i64::MAX));
            // The backend's count is monotonic: the counter follows it.
            store_max(
                self.hsm_recoveries.get_or_create(&label).inner(),
                t.recoveries,
            );
        }
        store_max(self.hsm_reinits.inner(), hsm.reinitialisations());
    }

    /// The metrics in the OpenMetrics text format (`# EOF` included).
    pub fn render_openmetrics(&self) -> String {
        self.sample();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The metrics in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        to_classic_text(&self.render_openmetrics())
    }
}

/// Raises `counter` to `value` (never lowers it).
fn store_max(counter: &AtomicU64, value: u64) {
    counter.fetch_max(value, Ordering::Relaxed);
}

/// Counts one open connection while it lives ([`Metrics::connection`]).
pub struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

/// OpenMetrics text as the Prometheus text format 0.0.4: counter families are named with
/// their `_total` suffix in `# HELP` / `# TYPE` (as their samples are), `# UNIT` and
/// `# EOF` lines are dropped, and `_created` samples (OpenMetrics only) are left out.
pub fn to_classic_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, "counter")) = rest.split_once(' ')
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let described = ["# HELP ", "# TYPE "]
            .iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (*p, rest)));
        if let Some((prefix, rest)) = described {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{prefix}{name}_total {tail}\n"));
                continue;
            }
        } else if line
            .split(['{', ' '])
            .next()
            .is_some_and(|n| n.ends_with("_created"))
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, sample: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn counters_are_named_with_total_in_the_classic_format() {
        let m = Metrics::new();
        m.http_request("POST", "/v1/grants", 201, 0.01);
        m.http_request("POST", "/v1/grants", 201, 0.02);
        m.audit_batch(3, 2, 0.001);
        m.audit_append_failed(1);
        let text = m.render();
        assert!(
            text.contains("# TYPE mpcp_http_requests_total counter\n"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                "mpcp_http_requests_total{method=\"POST\",route=\"/v1/grants\",status=\"201\"}"
            ),
            Some(2.0)
        );
        assert_eq!(value(&text, "mpcp_audit_appends_total"), Some(2.0));
        assert_eq!(value(&text, "mpcp_audit_append_failures_total"), Some(1.0));
        assert!(text.contains("# TYPE mpcp_http_request_duration_seconds histogram"));
        assert!(m.render_openmetrics().ends_with("# EOF\n"));
    }

    struct FakeHsm;

    impl HsmSampler for FakeHsm {
        fn tokens(&self) -> Vec<TokenSample> {
            vec![TokenSample {
                token: "t".into(),
                sessions_in_use: 2,
                recoveries: 3,
            }]
        }
        fn reinitialisations(&self) -> u64 {
            1
        }
    }

    #[test]
    fn docs_operations_describes_exactly_these_metrics() {
        let m = Arc::new(Metrics::new());
        // Touch every family, so that each is rendered.
        m.http_request("GET", "/healthz", 200, 0.001);
        m.signature("grant-signing", "EdDSA", 0.001);
        m.hsm_error("HSM_TIMEOUT");
        m.audit_batch(1, 1, 0.001);
        m.audit_append_failed(1);
        m.checkpoint_signed(1);
        m.idempotent_replay();
        m.idempotency_conflict();
        m.rate_limited();
        let _open = m.connection();
        m.connection_refused();
        m.set_audit_log(1);
        m.set_keys(&[("root".into(), "active".into(), 1)]);
        m.set_ready(&[("store".into(), true)]);
        m.sample_hsm(Arc::new(FakeHsm));
        m.receipt_decision("allow");
        m.receipt_verdict("admitted");
        m.receipt_outcome();
        m.ledger_submission("tesSUCCESS");
        m.set_ledger_transactions(&[("validated", 1)]);
        let text = m.render();
        assert_eq!(
            value(&text, "mpcp_hsm_recoveries_total{token=\"t\"}"),
            Some(3.0)
        );
        let served: std::collections::BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect();
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
                .unwrap();
        let documented: std::collections::BTreeSet<String> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `mpcp_"))
            .filter_map(|l| l.split('`').next())
            .map(|n| format!("mpcp_{n}"))
            .collect();
        assert_eq!(
            served, documented,
            "docs/operations.md and the metrics differ"
        );
    }

    #[test]
    fn connections_are_counted_while_open() {
        let m = Arc::new(Metrics::new());
        let a = m.connection();
        let _b = m.connection();
        drop(a);
        assert_eq!(value(&m.render(), "mpcp_connections_open"), Some(1.0));
    }
}
