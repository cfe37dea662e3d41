//! Grant issuance throughput end to end against the raw HSM, measured in one run on the same
//! SoftHSM2 token, store and machine.
//!
//! Per algorithm (EdDSA, ES256K, ES256; the service's grant-signing key is rotated to each;
//! ES256, which the built-in policy keeps to root keys, is allowed for this bench)
//! and per concurrency level C in {1, 8, 32}:
//! - raw: S = min(C, pool size) threads, each with its own pre-opened session on the
//!   grant-signing token, call `C_Sign` directly through cryptoki with the service's key on
//!   a fixed input (for ECDSA the precomputed SHA-256(D)): the token's throughput with the
//!   sessions the service itself can use at that concurrency;
//! - e2e: C clients issue `POST /v1/grants` with an `Idempotency-Key` over HTTPS (TLS 1.3,
//!   keep-alive) to the real service: bearer auth, strict parse, MPCP validation, policy
//!   lookup, HSM signature with self-check, and the audit entry committed durably (group
//!   commit, fsync) together with the grant and idempotency records before the 201.
//!
//! The two run in alternating slices (raw, e2e, raw, e2e, ...) so that load from other
//! processes hits both alike; the ratio printed is the median of the per-pair ratios
//! e2e/raw (target >= 70%). Latency percentiles are over every e2e request of the cell.
//! CPU columns, from /proc/self/task/*/schedstat: µs of CPU per raw signature, per grant in
//! the service (all threads but the client's; the signature on the token's threads included)
//! and per request in the HTTPS client (its own runtime, one thread). SoftHSM2 signs on this
//! machine's cores, which the service and the client share: once both paths saturate the
//! cores, e2e/raw cannot exceed sig CPU / (svc CPU + cli CPU).
//! Each cell also checks that the audit log grew by exactly the number of grants issued.
//!
//! Observability cost: two fresh services, one as shipped (metrics on) and one with its
//! metrics off; slices alternate between the first with the service log on (JSON lines as
//! `serve` writes them, into /dev/null: formatting and the write included) and the second
//! with the log off, EdDSA grants at C=8, in pairs whose order alternates
//! (`API_BENCH_OBS_PAIRS`, default 10; `API_BENCH_OBS=log` or `metrics` for one of the two
//! alone). It prints the service's CPU per grant of both and their ratio (the median of the
//! per-pair ratios; target <= 105%).
//!
//! Run: `cargo bench --bench api_throughput` (`API_BENCH_SECONDS`: seconds per path and
//! cell, default 3; `API_BENCH_ALGS=ES256,EdDSA` to run only some algorithms, `API_BENCH_C=32`
//! only some concurrency levels, `API_BENCH_POOL=1`: sessions per token, default 4, so that the
//! token can be given fewer cores than the machine has). Under
//! `cargo test` (no `--bench` argument) it runs as a smoke test with very short slices.

#[path = "../tests/api_common/mod.rs"]
mod api_common;

#[path = "raw_token/mod.rs"]
mod raw_token;

#[path = "slices/mod.rs"]
mod slices;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_common::Harness;
use mpcp_pa::algorithms::{AlgorithmPolicy, BUILTIN_POLICY_TOML};
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::crypto::Alg;
use mpcp_pa::events::Actor;
use mpcp_pa::hsm::config::DEFAULT_POOL_SIZE;
use mpcp_pa::keys::KeyRole;
use mpcp_pa::signer::{DigestSigner, SoftwareSigner};
use serde_json::json;

/// The allocator the `mpcp-pa` binary uses (src/main.rs), so the in-process service is
/// measured as shipped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONCURRENCY: [usize; 3] = [1, 8, 32];

use slices::{CLIENT_THREADS, Slice, floor_slice, median, percentile, raw_slice, timed_slice};

/// What the e2e clients share.
struct Clients {
    client: reqwest::Client,
    url: String,
    token: String,
    policy_hash: String,
    next_id: AtomicU64,
    issued: AtomicU64,
}

impl Clients {
    /// Issues one grant; returns its latency.
    async fn issue(&self) -> Duration {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let exp = mpcp_pa::clock::format_rfc3339(
            time::OffsetDateTime::now_utc() + Duration::from_secs(3000),
        );
        let body = json!({
            "version": "1.0", "grantId": format!("bench-{n}"), "policyHash": self.policy_hash,
            "subjectId": "v-1", "scope": "SESSION", "allowedRails": ["xrpl"], "expiresAt": exp,
            "authorizedGateway": "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b5",
            "velocityLimit": {"maxPayments": 10, "windowSeconds": 3600}
        })
        .to_string();
        let t = Instant::now();
        let r = self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("idempotency-key", format!("bench-{n}"))
            .body(body)
            .send()
            .await
            .expect("request");
        let status = r.status();
        let bytes = r.bytes().await.expect("response body");
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&bytes));
        self.issued.fetch_add(1, Ordering::Relaxed);
        t.elapsed()
    }
}

/// `clients` concurrent clients issuing grants for `secs`; latencies appended to `lat`.
async fn e2e_slice(
    rt: &tokio::runtime::Handle,
    c: &Arc<Clients>,
    clients: usize,
    secs: f64,
    lat: &Arc<Mutex<Vec<Duration>>>,
) -> Slice {
    let c = c.clone();
    timed_slice(rt, clients, secs, lat, move || {
        let c = c.clone();
        async move { c.issue().await }
    })
    .await
}

/// µs of CPU (this thread) per signature check with `alg`: the self-check every signature
/// of the service gets before release (the HSM's public key, the same digest).
fn self_check_cpu(alg: Alg) -> f64 {
    let signer = SoftwareSigner::from_secret("bench", alg, &[7; 32]).unwrap();
    let digest = [9u8; 32];
    let sig = signer.sign_digest(&digest).unwrap();
    let n = 400;
    let t0 = slices::thread_cpu_ns();
    for _ in 0..n {
        signer
            .public_key()
            .verify_digest(&digest, &sig.bytes)
            .expect("self-check");
    }
    (slices::thread_cpu_ns() - t0) as f64 / 1e3 / n as f64
}

/// The service log as `serve` installs it (JSON), behind a filter the bench switches: `off`
/// except in the slices that measure it.
type LogSwitch =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

fn install_log() -> LogSwitch {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, switch) =
        tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new("off"));
    let sink = Arc::new(std::fs::File::create("/dev/null").unwrap());
    tracing_subscriber::registry()
        .with(filter)
        .with(mpcp_pa::cli::logging::format_layer(true, false, sink))
        .init();
    switch
}

fn set_log(switch: &LogSwitch, on: bool) {
    let directive = if on {
        mpcp_pa::cli::logging::DEFAULT_FILTER
    } else {
        "off"
    };
    switch
        .reload(tracing_subscriber::EnvFilter::new(directive))
        .unwrap();
}

/// Clients issuing grants to `h` under a policy stored there.
async fn clients_of(h: &Harness) -> Arc<Clients> {
    let issuer = h.token("bench-issuer", ApiRole::Issuer);
    let (_, p) = h
        .post("/v1/policies", Some(&issuer), r#"{"version":"1.0"}"#)
        .await;
    Arc::new(Clients {
        client: api_common::client_for(&h.tls),
        url: h.url("/v1/grants"),
        token: issuer,
        policy_hash: p["policyHash"].as_str().unwrap().to_string(),
        next_id: AtomicU64::new(0),
        issued: AtomicU64::new(0),
    })
}

/// The service's CPU per grant with the log and metrics on (as shipped) and off, on two
/// fresh services with the same history (so that neither has a larger store or log), in
/// alternating slices whose order alternates too (on/off, off/on, ...); prints the medians
/// and the median of the per-pair ratios.
#[allow(clippy::too_many_arguments)]
async fn observability_cost(
    log: &LogSwitch,
    limits: Limits,
    policy: AlgorithmPolicy,
    crt: &tokio::runtime::Handle,
    slice: f64,
    pairs: usize,
    full: bool,
) {
    let c = 8;
    // `API_BENCH_OBS=log` or `metrics` measures one of the two alone.
    let mode = std::env::var("API_BENCH_OBS").unwrap_or_else(|_| "both".into());
    let (with_log, with_metrics) = (mode != "metrics", mode != "log");
    let shipped = Harness::start_observed(
        limits.clone(),
        &KeyRole::ALL,
        |_| {},
        policy.clone(),
        with_metrics,
    )
    .await;
    let bare = Harness::start_observed(limits, &KeyRole::ALL, |_| {}, policy, false).await;
    let (on, off) = (clients_of(&shipped).await, clients_of(&bare).await);
    let lat = Arc::new(Mutex::new(Vec::new()));
    for (clients, logged) in [(&on, with_log), (&off, false)] {
        set_log(log, logged);
        e2e_slice(crt, clients, c, slice.min(0.3), &lat).await;
    }
    let settle = Duration::from_millis(if full { 250 } else { 10 });
    let per_grant = |s: Slice| (s.cpu - s.client_cpu) * 1e6 / s.ops.max(1) as f64;
    let (mut with, mut without, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..pairs {
        let (mut w, mut wo) = (0.0, 0.0);
        // Alternate which goes first, so that drift over the run favours neither.
        let order = if pair % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for observed in order {
            set_log(log, observed && with_log);
            let clients = if observed { &on } else { &off };
            let cpu = per_grant(e2e_slice(crt, clients, c, slice, &lat).await);
            tokio::time::sleep(settle).await;
            if observed { w = cpu } else { wo = cpu }
        }
        with.push(w);
        without.push(wo);
        ratios.push(w / wo);
    }
    set_log(log, false);
    println!(
        "observability ({mode}): EdDSA C={c}: service CPU per grant {:.0} µs with the JSON log \
         and/or metrics, {:.0} µs without (medians); ratio {:.1}% (median of {pairs} slice \
         pairs; target <= 105%)",
        median(with),
        median(without),
        median(ratios) * 100.0
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let log = install_log();
    // Alternating slices per path and cell.
    let slices: usize = if full { 6 } else { 2 };
    let secs: f64 = std::env::var("API_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 3.0 } else { 0.3 });
    let slice = secs / slices as f64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The HTTPS client runs on its own runtime (one thread) so that its CPU is counted apart.
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()
        .unwrap();
    let crt = client_rt.handle().clone();
    rt.block_on(async {
        // Every client runs on this host: no per-address cap below the global one.
        let limits = Limits {
            requests_per_second_per_token: 0,
            max_connections_per_ip: Limits::default().max_connections,
            ..Limits::default()
        };
        // The built-in policy keeps ES256 to root keys (MPCP 1.0 gateways need only verify
        // EdDSA and ES256K grants); this bench allows it for grants to measure that path too.
        let grant_algs = r#"grant-signing = ["EdDSA", "ES256K"]"#;
        assert!(BUILTIN_POLICY_TOML.contains(grant_algs));
        let policy = AlgorithmPolicy::from_toml_str(&BUILTIN_POLICY_TOML.replace(
            grant_algs,
            r#"grant-signing = ["EdDSA", "ES256K", "ES256"]"#,
        ))
        .unwrap();
        // Sessions per token (the service's pool; the raw baseline uses as many).
        let pool: usize = std::env::var("API_BENCH_POOL")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_POOL_SIZE);
        api_common::hsm_with_pool_size(pool);
        let h = Harness::start_with_policy(limits.clone(), |_| {}, policy.clone()).await;
        let clients = clients_of(&h).await;

        // The raw baseline: a second handle on the same (process-wide) library.
        let (p11, slot) = raw_token::open("mpcp-grant-signing");

        println!(
            "api_throughput: SoftHSM2 (pool {pool} sessions), sled with durable \
             group commit, TLS 1.3 keep-alive, Idempotency-Key on every request; {secs} s per \
             path and cell in {slices} alternating slices"
        );
        let only = std::env::var("API_BENCH_ALGS").unwrap_or_default();
        let only_c = std::env::var("API_BENCH_C").unwrap_or_default();
        // The HTTPS floor per concurrency level, once: what TLS + HTTP alone cost here.
        let mut floor_cpu = Vec::new();
        for c in CONCURRENCY {
            if !only_c.is_empty() && !only_c.split(',').any(|x| x == c.to_string()) {
                floor_cpu.push(f64::NAN);
                continue;
            }
            let url = h.url("/healthz");
            floor_slice(&crt, &clients.client, &url, c, 0.2).await;
            let f = floor_slice(&crt, &clients.client, &url, c, slice.max(0.2)).await;
            let per = f.cpu * 1e6 / f.ops.max(1) as f64;
            println!(
                "https floor C={c:<3} GET /healthz {:>7.0} req/s, {per:>4.0} µs CPU per request \
                 (service {:.0} + client {:.0})",
                f.rate(),
                (f.cpu - f.client_cpu) * 1e6 / f.ops.max(1) as f64,
                f.client_cpu * 1e6 / f.ops.max(1) as f64,
            );
            floor_cpu.push(per);
        }
        println!(
            "{:<7} {:>3} {:>4} {:>10} {:>9} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}",
            "alg",
            "C",
            "sess",
            "raw sig/s",
            "grants/s",
            "ratio",
            "p50 ms",
            "p99 ms",
            "sig CPU",
            "svc CPU",
            "cli CPU",
            "non-HSM",
            "check",
            "bound"
        );
        for alg in Alg::ALL {
            if !only.is_empty() && !only.split(',').any(|a| a == alg.as_str()) {
                continue;
            }
            let reg = h.registry.clone();
            let rotated = tokio::task::spawn_blocking(move || {
                reg.rotate(&Actor::cli(), KeyRole::GrantSigning, None, Some(alg))
                    .unwrap()
            })
            .await
            .unwrap();
            let object_id = rotated.activated.object_id_bytes().unwrap();
            let check = self_check_cpu(alg);
            for (ci, c) in CONCURRENCY.into_iter().enumerate() {
                if !only_c.is_empty() && !only_c.split(',').any(|x| x == c.to_string()) {
                    continue;
                }
                let sessions = c.min(pool);
                // Warm-up: connections, handshakes, caches.
                let lat = Arc::new(Mutex::new(Vec::new()));
                e2e_slice(&crt, &clients, c, slice.min(0.3), &lat).await;
                lat.lock().unwrap().clear();
                let audit_before = h.audit.size();
                let issued_before = clients.issued.load(Ordering::Relaxed);
                let (mut raw, mut e2e) = (Slice::default(), Slice::default());
                let mut ratios = Vec::new();
                let settle = Duration::from_millis(if full { 250 } else { 10 });
                for _ in 0..slices {
                    let (p11, id) = (p11.clone(), object_id.clone());
                    let r = tokio::task::spawn_blocking(move || {
                        raw_slice(&p11, slot, &id, alg, sessions, slice)
                    })
                    .await
                    .unwrap();
                    let e = e2e_slice(&crt, &clients, c, slice, &lat).await;
                    // Let the work an e2e slice leaves behind (sled's background writes, the
                    // checkpointer) finish before the next raw slice, which it would slow.
                    tokio::time::sleep(settle).await;
                    ratios.push(e.rate() / r.rate());
                    for (acc, x) in [(&mut raw, r), (&mut e2e, e)] {
                        acc.ops += x.ops;
                        acc.wall += x.wall;
                        acc.cpu += x.cpu;
                        acc.client_cpu += x.client_cpu;
                    }
                }
                // Durable audit: one entry per grant issued, no more, no less.
                let issued = clients.issued.load(Ordering::Relaxed) - issued_before;
                assert_eq!(h.audit.size() - audit_before, issued);
                let mut l = std::mem::take(&mut *lat.lock().unwrap());
                l.sort_unstable();
                let per = |cpu: f64, ops: u64| cpu * 1e6 / ops.max(1) as f64;
                let (sig, svc) = (per(raw.cpu, raw.ops), per(e2e.cpu - e2e.client_cpu, e2e.ops));
                println!(
                    "{:<7} {c:>3} {sessions:>4} {:>10.0} {:>9.0} {:>5.1}% {:>7.2} {:>7.2} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>6.0} {:>5.1}%",
                    alg.as_str(),
                    raw.rate(),
                    e2e.rate(),
                    median(ratios) * 100.0,
                    percentile(&l, 0.50),
                    percentile(&l, 0.99),
                    sig,
                    svc,
                    per(e2e.client_cpu, e2e.ops),
                    svc - sig,
                    check,
                    sig / (sig + floor_cpu[ci] + check) * 100.0,
                );
            }
        }
        let pairs = std::env::var("API_BENCH_OBS_PAIRS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if full { 10 } else { 2 });
        observability_cost(&log, limits, policy, &crt, slice, pairs, full).await;
        let stats = h.audit.stats();
        println!(
            "audit log: {} entries in {} durable batches ({:.1} entries per flush)",
            h.audit.size(),
            stats.batches,
            h.audit.size() as f64 / stats.batches.max(1) as f64
        );
        println!(
            "ratio: median over slice pairs of e2e grants/s / raw C_Sign/s (target >= 70%); \
             CPU columns: µs of CPU per raw signature, per grant in the service (signature \
             included), per request in the HTTPS client; non-HSM: service CPU per grant \
             minus one raw signature's (the appliance's own work, which an off-host HSM \
             would not share); check: µs of CPU per signature self-check; bound: sig / (sig + \
             HTTPS floor + check), the most a service doing nothing but TLS, HTTP, the \
             signature and its check could reach while SoftHSM2, service and client share \
             these {} cores (no parsing, validation, store or audit log counted)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    });
    drop(client_rt);
}
