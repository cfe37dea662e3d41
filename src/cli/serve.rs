//! `serve` and `pins`: the HTTPS service and the TLS key pins gateways hold.
//!
//! `serve` opens the appliance in the data directory with [`crate::app::Appliance`] (the
//! PKCS#11 backend from `pkcs11.toml`, the sled store, the audit log, the key registry and
//! the readiness probes), refuses to start unless the audit role has an active key in the
//! HSM (a log nobody signs is not auditable), records a `startup` event with the digest of
//! the effective configuration and signs a checkpoint covering it, then serves until SIGINT
//! or SIGTERM while the checkpointer signs a new checkpoint every
//! `--checkpoint-interval-seconds` if the log grew. On shutdown it drains in-flight
//! requests, records `shutdown` and signs a final checkpoint covering everything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::tls::{
    TlsPaths, dev_names, ensure_dev_material, pins, server_config_with_client_ca,
};
use crate::api::{AppState, Limits, ServiceConfig, Transport};
use crate::app::{Appliance, DataDir, Options};
use crate::audit::{AuditLog, Checkpointer, StoredCheckpoint};
use crate::canonical::canonical_bytes;
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, Event, EventSink};
use crate::keys::KeyRegistry;

/// TLS material options shared by `serve` and `pins`.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Certificate chain (PEM). Default: the development certificate under <data-dir>/tls/,
    /// generated on first start.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of the certificate (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The next (backup) TLS key (PEM), whose pin gateways hold alongside the current one.
    #[arg(long, requires = "tls_cert")]
    pub tls_next_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The configured files, or the embedded default in `dir`.
    pub fn paths(&self, dir: &DataDir) -> TlsPaths {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => TlsPaths {
                cert: cert.clone(),
                key: key.clone(),
                next_key: self.tls_next_key.clone(),
            },
            _ => dir.tls(),
        }
    }

    /// Whether the embedded default is in use.
    pub fn is_default(&self) -> bool {
        self.tls_cert.is_none()
    }
}

/// Arguments of `mpcp-pa pins`.
#[derive(Debug, Args)]
pub struct PinsArgs {
    /// Where the TLS key and certificate are.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Print `{"current": ..., "next": ...}` instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// Prints the `pin-sha256` of the current and the next TLS key.
pub fn pins_cmd(dir: &DataDir, a: PinsArgs) -> Result<ExitCode> {
    let paths = a.tls.paths(dir);
    if a.tls.is_default() && !paths.key.exists() {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!(
                "no TLS key at {}: start `mpcp-pa serve` once to generate the development \
                 certificate, or pass --tls-cert/--tls-key",
                paths.key.display()
            ),
        ));
    }
    let p = pins(&paths)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"current": p.current, "next": p.next})
        );
    } else {
        println!("current pin-sha256=\"{}\"", p.current);
        match &p.next {
            Some(n) => println!("next    pin-sha256=\"{n}\""),
            None => eprintln!("warning: no next (backup) key configured; pin only the current key"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `mpcp-pa serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// The Policy Authority's identifier, written as issuer / bundleIssuer.
    #[arg(long, env = "MPCP_PA_ISSUER", default_value = "mpcp-pa.local")]
    pub issuer: String,
    /// Where the TLS key and certificate are.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// DEVELOPMENT ONLY: plain HTTP instead of TLS; refused unless --listen is a loopback
    /// address.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_next_key"])]
    pub insecure_http_loopback: bool,
    /// Mutual TLS for the issuer role: CA certificate(s) (PEM) that issuer clients'
    /// certificates must chain to; issuer requests without one are refused.
    #[arg(long, conflicts_with = "insecure_http_loopback")]
    pub issuer_client_ca: Option<PathBuf>,
    /// Algorithm policy file (default: the built-in policy).
    #[arg(long, env = "MPCP_PA_ALGORITHM_POLICY")]
    pub algorithm_policy: Option<PathBuf>,
    /// Longest grant lifetime the PA signs, in seconds, whatever a policy allows.
    #[arg(long, default_value_t = 30 * 24 * 3600, value_parser = clap::value_parser!(u64).range(60..=366 * 24 * 3600))]
    pub max_grant_lifetime_seconds: u64,
    /// Trust-bundle assurance profiles file (default: the built-in
    /// policies/bundle-profiles.toml).
    #[arg(long, env = "MPCP_PA_BUNDLE_PROFILES")]
    pub bundle_profiles: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Largest request head in bytes (request line and headers); a longer URI is 414, a
    /// longer head 431.
    #[arg(long, default_value_t = Limits::default().max_header_bytes, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=1_048_576))]
    pub max_header_bytes: usize,
    /// Sustained requests per second per API token (0 = unlimited).
    #[arg(long, default_value_t = Limits::default().requests_per_second_per_token)]
    pub rate_per_token: u32,
    /// Burst of requests per API token.
    #[arg(long, default_value_t = Limits::default().burst_per_token)]
    pub burst_per_token: u32,
    /// Concurrent connections; at the limit the next one waits in the kernel's backlog.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Concurrent connections from one peer (IPv4 address or IPv6 /64); more are closed at
    /// once.
    #[arg(long, default_value_t = Limits::default().max_connections_per_ip, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections_per_ip: usize,
    /// Seconds allowed for a TLS handshake.
    #[arg(long, default_value_t = Limits::default().handshake_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub handshake_timeout_seconds: u64,
    /// Seconds allowed for a request's headers: the first from the end of the TLS
    /// handshake (protocol detection included), each later HTTP/1.1 one from the previous
    /// response.
    #[arg(long, default_value_t = Limits::default().header_read_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_seconds: u64,
    /// Seconds allowed for a request body to arrive completely (later: 408).
    #[arg(long, default_value_t = Limits::default().body_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout_seconds: u64,
    /// Seconds a connection may stay open with no request in progress.
    #[arg(long, default_value_t = Limits::default().idle_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_seconds: u64,
    /// Seconds between HTTP/2 keep-alive pings.
    #[arg(long, default_value_t = Limits::default().http2_ping_interval.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http2_ping_interval_seconds: u64,
    /// Seconds an HTTP/2 peer has to answer a ping before its connection is closed.
    #[arg(long, default_value_t = Limits::default().http2_ping_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http2_ping_timeout_seconds: u64,
    /// Seconds shutdown waits for in-flight requests.
    #[arg(long, default_value_t = 30)]
    pub drain_seconds: u64,
    /// Minutes between runs of due key destructions (0 = never from the service).
    #[arg(long, default_value_t = 60)]
    pub destruction_interval_minutes: u64,
    /// Seconds between audit checkpoints while the log grows (a checkpoint is also signed at
    /// startup, at shutdown and on demand).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub checkpoint_interval_seconds: u64,
    /// MiB of sled page cache (docs/performance.md, "Memory", for sizing).
    #[arg(long, default_value_t = crate::store::DEFAULT_CACHE_BYTES / (1024 * 1024), value_parser = clap::value_parser!(u64).range(8..=65_536))]
    pub store_cache_mib: u64,
    /// Free space (MiB) the store's file system must keep: audit appends and checkpoints are
    /// refused (503, nothing written) below it, and resume by themselves once space is freed.
    #[arg(long, default_value_t = crate::store::DEFAULT_RESERVE_BYTES >> 20)]
    pub store_reserve_mib: u64,
    /// Clock drift tolerance (seconds): signing is refused (503 CLOCK_BEHIND) while the clock
    /// reads earlier than the last audit entry by more than this.
    #[arg(long, default_value_t = crate::clock::DEFAULT_DRIFT.as_secs())]
    pub clock_drift_seconds: u64,
    /// Largest forward step of the clock (hours) since the last audit entry that a start
    /// accepts without `--accept-clock-jump`.
    #[arg(long, default_value_t = DEFAULT_MAX_CLOCK_JUMP_HOURS, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_clock_jump_hours: u64,
    /// Start even though the clock is further ahead of the last audit entry than
    /// `--max-clock-jump-hours` (confirm only after checking the clock: entries then carry
    /// the new time, and signing is refused while the clock later reads earlier than that).
    #[arg(long)]
    pub accept_clock_jump: bool,
    /// Fee (drops) of each XRPL transaction signed without ledger access.
    #[arg(long, default_value_t = crate::api::ledger_book::LedgerConfig::default().fee_drops, value_parser = clap::value_parser!(u64).range(10..=10_000_000))]
    pub xrpl_fee_drops: u64,
    /// An XRPL account (classic address) that issues grant credentials itself: grants whose
    /// activeGrantCredentialIssuer names it are signed, the credential being its job. Repeat
    /// for several. Grants naming any account other than these and the PA's own are
    /// refused (CREDENTIAL_ISSUER_UNKNOWN).
    #[arg(long = "xrpl-credential-issuer", value_parser = parse_address)]
    pub xrpl_credential_issuers: Vec<String>,
    /// A rippled JSON-RPC endpoint (http:// or https://): with it a background task submits
    /// the signed credential transactions in sequence order and follows them to a
    /// validated ledger. Without it they stay `signed` for `mpcp-pa ledger export`.
    #[arg(long, value_parser = parse_rpc_url)]
    pub xrpl_rpc: Option<String>,
    /// Milliseconds between the submitter's rounds (with --xrpl-rpc).
    #[arg(long, default_value_t = 1000, requires = "xrpl_rpc", value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub xrpl_poll_ms: u64,
    /// Log format on stderr: `auto` (JSON lines unless stderr is a terminal), `json`, `text`
    /// or `off`. The filter is `MPCP_PA_LOG` (default `warn,mpcp_pa=info`).
    #[arg(long, value_enum, default_value_t = super::logging::LogFormat::Auto)]
    pub log_format: super::logging::LogFormat,
}

fn parse_rpc_url(s: &str) -> std::result::Result<String, String> {
    if s.starts_with("http://") || s.starts_with("https://") {
        Ok(s.to_string())
    } else {
        Err("must be an http:// or https:// URL".into())
    }
}

fn parse_address(s: &str) -> std::result::Result<String, String> {
    crate::xrpl::validate_classic_address(s, "--xrpl-credential-issuer")
        .map(|_| s.to_string())
        .map_err(|e| e.message)
}

/// Default of `--max-clock-jump-hours`: a week, longer than a plausible outage of an
/// appliance in service, far shorter than a wrong year.
pub const DEFAULT_MAX_CLOCK_JUMP_HOURS: u64 = 7 * 24;

impl ServeArgs {
    /// The builder options `serve` opens the appliance with.
    fn appliance_options(&self) -> Options {
        Options {
            explain_missing_hsm_config: true,
            algorithm_policy: self.algorithm_policy.clone(),
            store_cache_bytes: self.store_cache_mib * 1024 * 1024,
            store_reserve_bytes: Some(self.store_reserve_mib << 20),
            clock_drift: Some(Duration::from_secs(self.clock_drift_seconds)),
            ..Options::default()
        }
    }

    /// The service settings of these flags (loads `--bundle-profiles`).
    fn service_config(&self) -> Result<ServiceConfig> {
        let mut config = ServiceConfig::new(self.issuer.clone());
        config.limits = self.limits();
        config.issuer_requires_client_certificate = self.issuer_client_ca.is_some();
        config.max_grant_lifetime = Duration::from_secs(self.max_grant_lifetime_seconds);
        config.ledger.fee_drops = self.xrpl_fee_drops;
        config.ledger.external_issuers = self.xrpl_credential_issuers.clone();
        if let Some(p) = &self.bundle_profiles {
            config.bundle_profiles = crate::bundle_profiles::BundleProfiles::load(p)?;
        }
        Ok(config)
    }

    fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_header_bytes: self.max_header_bytes,
            requests_per_second_per_token: self.rate_per_token,
            burst_per_token: self.burst_per_token,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            handshake_timeout: Duration::from_secs(self.handshake_timeout_seconds),
            header_read_timeout: Duration::from_secs(self.header_timeout_seconds),
            body_timeout: Duration::from_secs(self.body_timeout_seconds),
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            http2_ping_interval: Duration::from_secs(self.http2_ping_interval_seconds),
            http2_ping_timeout: Duration::from_secs(self.http2_ping_timeout_seconds),
            drain_timeout: Duration::from_secs(self.drain_seconds),
        }
    }
}

/// One line describing a checkpoint, for the service's log.
fn describe(what: &str, cp: &StoredCheckpoint) -> String {
    match cp.checkpoint() {
        Ok(head) => format!(
            "{what} audit checkpoint: size {} signed by {}",
            head.size, cp.vkey
        ),
        Err(e) => format!("{what} audit checkpoint: {e}"),
    }
}

/// Says where gateways will look for the keys of what this service signs, and warns when
/// the issuer names no place a gateway can fetch from (e.g. the default `mpcp-pa.local`).
fn announce_issuer(issuer: &str) {
    match crate::keys::keyset::unreachable_issuer(issuer) {
        Some(why) => eprintln!(
            "warning: {why}; pass --issuer with the domain, https URL or did:web under which \
             gateways reach this service (docs/interop.md)"
        ),
        None => {
            if let Ok(url) = crate::keys::keyset::key_set_url(issuer) {
                eprintln!("issuer {issuer:?}: gateways fetch its keys from {url}");
            }
        }
    }
}

/// The transport `a` asks for, and its description for the effective configuration. With
/// the embedded default TLS material, generates it in `dir` on first start; prints the pins.
fn transport(dir: &DataDir, a: &ServeArgs) -> Result<(Transport, Value)> {
    if a.insecure_http_loopback {
        crate::api::server::check_bind(&a.listen, &Transport::InsecureLoopback)?;
        eprintln!("WARNING: plain HTTP on {} (development only)", a.listen);
        return Ok((
            Transport::InsecureLoopback,
            json!({"insecureHttpLoopback": true}),
        ));
    }
    let paths = a.tls.paths(dir);
    if a.tls.is_default() && ensure_dev_material(&paths, &dev_names())? {
        eprintln!(
            "generated a self-signed development certificate and a next key in {}",
            paths
                .cert
                .parent()
                .map(Path::display)
                .map(|d| d.to_string())
                .unwrap_or_default()
        );
    }
    let p = pins(&paths)?;
    eprintln!("TLS pin-sha256 current \"{}\"", p.current);
    if let Some(n) = &p.next {
        eprintln!("TLS pin-sha256 next    \"{n}\"");
    }
    let desc = json!({
        "cert": paths.cert.display().to_string(),
        "pinCurrent": p.current,
        "pinNext": p.next,
        "issuerClientCa": a.issuer_client_ca.as_ref().map(|p| p.display().to_string()),
    });
    let config = server_config_with_client_ca(&paths, a.issuer_client_ca.as_deref())?;
    Ok((Transport::Tls(config), desc))
}

/// SHA-256 of the canonical effective configuration, recorded in `startup` and `shutdown`.
fn config_digest(
    a: &ServeArgs,
    config: &ServiceConfig,
    transport: Value,
    audit_origin: &str,
) -> Result<String> {
    let effective = json!({
        "listen": a.listen.to_string(),
        "issuer": config.issuer,
        "transport": transport,
        "limits": {
            "maxBodyBytes": config.limits.max_body_bytes,
            "maxHeaderBytes": config.limits.max_header_bytes,
            "ratePerToken": config.limits.requests_per_second_per_token,
            "burstPerToken": config.limits.burst_per_token,
            "maxConnections": config.limits.max_connections,
            "maxConnectionsPerIp": config.limits.max_connections_per_ip,
            "handshakeTimeoutSeconds": a.handshake_timeout_seconds,
            "headerTimeoutSeconds": a.header_timeout_seconds,
            "bodyTimeoutSeconds": a.body_timeout_seconds,
            "idleTimeoutSeconds": a.idle_timeout_seconds,
            "http2PingIntervalSeconds": a.http2_ping_interval_seconds,
            "http2PingTimeoutSeconds": a.http2_ping_timeout_seconds,
        },
        "auditOrigin": audit_origin,
        "maxGrantLifetimeSeconds": a.max_grant_lifetime_seconds,
        "checkpointIntervalSeconds": a.checkpoint_interval_seconds,
        "storeCacheMib": a.store_cache_mib,
        "xrplFeeDrops": a.xrpl_fee_drops,
        "xrplCredentialIssuers": a.xrpl_credential_issuers,
    });
    let mut effective = effective;
    if let Some(rpc) = &a.xrpl_rpc {
        effective["xrplRpc"] = json!(rpc);
        effective["xrplPollMs"] = json!(a.xrpl_poll_ms);
    }
    Ok(hex::encode(Sha256::digest(canonical_bytes(&effective)?)))
}

/// Refuses to start without an audit key (fail closed: a log nobody signs is not
/// auditable), warns when no API token exists, records `startup` and signs a checkpoint
/// covering it.
fn start_up(state: &AppState, audit: &AuditLog, config_digest: &str) -> Result<()> {
    let checkpointer = state.checkpointer();
    checkpointer.signer().map_err(|e| {
        Error::new(
            e.code,
            format!(
                "refusing to start: {} (a log nobody signs is not auditable)",
                e.message
            ),
        )
    })?;
    if !state.tokens().any_active()? {
        eprintln!(
            "warning: no API token exists; create the first one with `mpcp-pa tokens bootstrap` \
             (with the service stopped)"
        );
    }
    audit.record(
        &Actor::system(),
        Event::Startup {
            config_digest: config_digest.to_string(),
            version: crate::VERSION_STRING.to_string(),
        },
    )?;
    let first = checkpointer.checkpoint()?;
    eprintln!("{}", describe("startup", &first.checkpoint));
    Ok(())
}

/// Serves `state` on `a.listen` until SIGINT or SIGTERM, running due key destructions every
/// `--destruction-interval-minutes`; returns once in-flight requests are drained.
fn run_server(
    state: AppState,
    registry: Arc<KeyRegistry>,
    transport: Transport,
    a: &ServeArgs,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::new(ErrorCode::Internal, format!("async runtime: {e}")))?;
    let limits = state.limits().clone();
    let listen = a.listen;
    let interval = Duration::from_secs(a.destruction_interval_minutes * 60);
    let submitter =
        a.xrpl_rpc
            .clone()
            .map(|endpoint| crate::api::ledger_submitter::SubmitterConfig {
                endpoint,
                poll: Duration::from_millis(a.xrpl_poll_ms),
            });
    runtime.block_on(async move {
        if !interval.is_zero() {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                loop {
                    tick.tick().await;
                    let r = registry.clone();
                    // Failures are retried on the next run; each outcome is in the audit log.
                    let _ = tokio::task::spawn_blocking(move || {
                        r.run_due_destructions(&Actor::system())
                    })
                    .await;
                }
            });
        }
        let metrics = state.metrics().cloned();
        let submitting = submitter.map(|config| {
            eprintln!("submitting XRPL transactions to {}", config.endpoint);
            tokio::spawn(crate::api::ledger_submitter::run(state.clone(), config))
        });
        let server = crate::api::server::start_counted(
            listen,
            crate::api::router(state),
            transport,
            limits,
            metrics,
            shutdown_signal(),
        )
        .await?;
        tracing::info!(address = %server.local_addr(), version = crate::VERSION_STRING, "listening");
        eprintln!(
            "mpcp-pa {} listening on {}",
            crate::VERSION_STRING,
            server.local_addr()
        );
        let served = server.wait().await;
        if let Some(task) = submitting {
            task.abort();
            let _ = task.await;
        }
        served
    })
}

/// After the server stopped: records `shutdown` and signs a final checkpoint covering
/// everything, then returns the server's own error if it had one.
fn shut_down(
    audit: &AuditLog,
    checkpointer: &Checkpointer,
    config_digest: String,
    served: Result<()>,
) -> Result<ExitCode> {
    let shutdown = audit.record(&Actor::system(), Event::Shutdown { config_digest });
    // Decision: a stop that cannot write its final entry or checkpoint (a full disk) still
    // tries both, says on stderr exactly what is missing, and exits non-zero so that the
    // supervisor and the operator notice. Nothing acknowledged is lost: every answered
    // request's entry was durable before its answer, and the next start records `startup`
    // and signs a checkpoint covering everything.
    let mut missing = Vec::new();
    if let Err(e) = &shutdown {
        eprintln!(
            "shutdown: could not write the final audit entry (shutdown): {e}; every \
             acknowledged entry is already durable"
        );
        missing.push("the final audit entry");
    }
    // The final checkpoint covers everything, the shutdown entry included.
    match checkpointer.checkpoint() {
        Ok(last) => eprintln!("{}", describe("final", &last.checkpoint)),
        Err(e) => {
            let covered = audit
                .latest_checkpoint()
                .ok()
                .flatten()
                .and_then(|cp| cp.checkpoint().ok())
                .map_or(0, |c| c.size);
            eprintln!(
                "shutdown: could not write the final checkpoint: {e}; the last stored \
                 checkpoint covers {covered} of {} entries, the next start signs one \
                 covering the rest",
                audit.size()
            );
            missing.push("the final checkpoint");
        }
    }
    served?;
    if !missing.is_empty() {
        return Err(Error::new(
            ErrorCode::AuditUnavailable,
            format!("stopped without {}", missing.join(" and ")),
        ));
    }
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Runs the service until SIGINT or SIGTERM.
pub fn serve_cmd(dir: &DataDir, a: ServeArgs) -> Result<ExitCode> {
    announce_issuer(&a.issuer);
    let (transport, transport_desc) = transport(dir, &a)?;
    let mut app = Appliance::new(dir.clone(), a.appliance_options());
    // The order of the checks: policy, HSM, store and audit log, clock, registry.
    app.policy()?;
    app.hsm()?;
    let audit = app.audit()?;
    app.check_clock_jump(a.max_clock_jump_hours, a.accept_clock_jump)?;
    let parts = app.service_parts()?;
    let registry = parts.registry.clone();
    let config = a.service_config()?;
    let config_digest = config_digest(&a, &config, transport_desc, audit.origin())?;
    let state = AppState::new(parts, config)?;
    let checkpointer = state.checkpointer().clone();
    start_up(&state, &audit, &config_digest)?;
    let checkpoints =
        checkpointer.spawn(Duration::from_secs(a.checkpoint_interval_seconds), |r| {
            // Retried at the next interval; the entries stay in the log meanwhile.
            if let Err(e) = r {
                tracing::error!(code = e.code.as_str(), cause = %e.message, "audit checkpoint failed");
                eprintln!("audit checkpoint failed: {e}");
            }
        })?;
    let served = run_server(state, registry, transport, &a);
    checkpoints.stop();
    let outcome = shut_down(&audit, &checkpointer, config_digest, served);
    release_within((app, checkpointer), HSM_RELEASE_WAIT);
    outcome
}

/// How long a stopped appliance waits for the HSM to release its sessions and module.
const HSM_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Drops `parts` (what holds the HSM backend) on a thread of its own and waits for that at
/// most `wait`. Closing sessions and `C_Finalize` talk to the device, and a remote HSM that
/// failed or has just come back can leave those calls hanging; a stopped appliance exits
/// anyway, since everything it must keep is durable by then (the final entry and checkpoint
/// were flushed before "stopped").
fn release_within<T: Send + 'static>(parts: T, wait: Duration) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(parts);
        let _ = done.send(());
    });
    if finished.recv_timeout(wait).is_err() {
        eprintln!(
            "shutdown: the HSM did not release its sessions within {} s; exiting without \
             waiting for it",
            wait.as_secs()
        );
    }
}

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a SIGTERM that arrives right after the
/// "listening on" line must drain the service, not kill it with the default disposition.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn limits(args: &[&str]) -> std::result::Result<Limits, clap::Error> {
        let argv = std::iter::once("serve").chain(args.iter().copied());
        Flags::try_parse_from(argv).map(|f| f.serve.limits())
    }

    #[test]
    fn connection_flags_reach_the_limits() {
        assert_eq!(limits(&[]).unwrap(), Limits::default());
        let l = limits(&[
            "--max-connections-per-ip",
            "4",
            "--handshake-timeout-seconds",
            "2",
            "--header-timeout-seconds",
            "3",
            "--body-timeout-seconds",
            "5",
            "--idle-timeout-seconds",
            "7",
            "--http2-ping-interval-seconds",
            "11",
            "--http2-ping-timeout-seconds",
            "13",
        ])
        .unwrap();
        assert_eq!(l.max_connections_per_ip, 4);
        assert_eq!(l.handshake_timeout, Duration::from_secs(2));
        assert_eq!(l.header_read_timeout, Duration::from_secs(3));
        assert_eq!(l.body_timeout, Duration::from_secs(5));
        assert_eq!(l.idle_timeout, Duration::from_secs(7));
        assert_eq!(l.http2_ping_interval, Duration::from_secs(11));
        assert_eq!(l.http2_ping_timeout, Duration::from_secs(13));
        for zero in [
            "--max-connections-per-ip",
            "--header-timeout-seconds",
            "--body-timeout-seconds",
            "--idle-timeout-seconds",
        ] {
            assert!(limits(&[zero, "0"]).is_err(), "{zero} 0 accepted");
        }
    }
}
