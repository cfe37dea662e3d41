//! Receipt decision throughput end to end against the raw HSM, measured in one run on the
//! same SoftHSM2 token, store and machine.
//!
//! Per concurrency level C in {1, 8, 32}:
//! - raw: S = min(C, pool size) threads, each with its own pre-opened session on the
//!   receipt-signing token, call `C_Sign` (CKM_ECDSA, P-256) directly through cryptoki with
//!   the service's receipt key on a fixed 32-byte hash: the token's ES256 throughput with the
//!   sessions the service itself can use at that concurrency;
//! - e2e: C clients `POST /v1/receipts/decisions` with an `Idempotency-Key` over HTTPS (TLS
//!   1.3, keep-alive) to the real service, each for a call with its own binding nonce:
//!   bearer auth, strict parse, the projection digest, the receipt policy, the decidedAt
//!   reservation, the HSM signature with its self-check, and the decision record committed
//!   durably (group commit, fsync) with its audit entry before the 201.
//!
//! The two run in alternating slices; the ratio printed is the median of the per-pair
//! ratios e2e/raw. CPU columns (from /proc/self/task/*/schedstat): µs per raw signature, per
//! decision in the service (signature included) and per request in the HTTPS client.
//! SoftHSM2, the service and the client share this machine's cores.
//! Each cell checks that the audit log grew by exactly the number of decisions signed.
//!
//! Run: `cargo bench --bench receipts` (`RECEIPT_BENCH_SECONDS`: seconds per path and cell,
//! default 3; `RECEIPT_BENCH_POOL`: sessions per token, default 4). Under `cargo test` it
//! runs as a smoke test with very short slices.

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
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::crypto::Alg;
use mpcp_pa::hsm::config::DEFAULT_POOL_SIZE;
use mpcp_pa::keys::KeyRole;
use serde_json::json;
use slices::{CLIENT_THREADS, Slice, floor_slice, median, percentile, raw_slice, timed_slice};

/// The allocator the `mpcp-pa` binary uses (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONCURRENCY: [usize; 3] = [1, 8, 32];
const PROVIDER: &str = "mcp://bench.provider";

struct Clients {
    client: reqwest::Client,
    url: String,
    token: String,
    next: AtomicU64,
    signed: AtomicU64,
}

impl Clients {
    /// Asks for one decision; returns its latency.
    async fn decide(&self) -> Duration {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "audience": PROVIDER, "actionId": format!("a-{n}"), "subject": "agent:bench",
            "request": {"name": "pay", "arguments": {"amountMinor": 100, "to": "acct-1"},
                        "_meta": {"authorization_binding": {"nonce": format!("n-{n}")}}},
        })
        .to_string();
        let t = Instant::now();
        let r = self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("idempotency-key", format!("d-{n}"))
            .body(body)
            .send()
            .await
            .expect("request");
        let status = r.status();
        let bytes = r.bytes().await.expect("response body");
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&bytes));
        self.signed.fetch_add(1, Ordering::Relaxed);
        t.elapsed()
    }
}

/// µs of CPU (this thread) per ES256 self-check of a record signature (ring, as the
/// service checks every signature before release).
fn self_check_cpu() -> f64 {
    use p256::ecdsa::signature::Signer;
    let key = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
    let message = br#"{"alg":"ES256","backLink":{},"version":1}"#;
    let sig: p256::ecdsa::Signature = key.sign(message);
    let hex_sig = hex::encode(sig.to_bytes());
    let public = mpcp_pa::crypto::PublicKey::P256(*key.verifying_key());
    let n = 400;
    let t0 = slices::thread_cpu_ns();
    for _ in 0..n {
        assert!(mpcp_pa::receipts::verify::verify_es256_hex(
            &public, message, &hex_sig
        ));
    }
    (slices::thread_cpu_ns() - t0) as f64 / 1e3 / n as f64
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let slices: usize = if full { 6 } else { 2 };
    let secs: f64 = std::env::var("RECEIPT_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 3.0 } else { 0.3 });
    let slice = secs / slices as f64;
    let pool: usize = std::env::var("RECEIPT_BENCH_POOL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_POOL_SIZE);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()
        .unwrap();
    let crt = client_rt.handle().clone();
    rt.block_on(async {
        let limits = Limits {
            requests_per_second_per_token: 0,
            max_connections_per_ip: Limits::default().max_connections,
            ..Limits::default()
        };
        api_common::hsm_with_pool_size(pool);
        let h = Harness::start(limits).await;
        let officer = h.token("bench-officer", ApiRole::SecurityOfficer);
        let requester = h.token("bench-requester", ApiRole::ReceiptRequester);
        let policy = json!({"version": 1, "policyId": "bench", "otherwise": "block",
            "rules": [{"requesters": ["bench-requester"], "audiences": [PROVIDER],
                       "tools": ["pay"], "decision": "allow", "maxAgeSeconds": 300}]});
        let (status, answer) = h
            .put("/v1/receipts/policy", &officer, &policy.to_string())
            .await;
        assert_eq!(status, 201, "{answer}");
        let clients = Arc::new(Clients {
            client: api_common::client_for(&h.tls),
            url: h.url("/v1/receipts/decisions"),
            token: requester,
            next: AtomicU64::new(0),
            signed: AtomicU64::new(0),
        });
        let active = h
            .registry
            .list_role(KeyRole::ReceiptSigning)
            .unwrap()
            .into_iter()
            .find(|k| Some(&k.kid) == h.registry.active_kid(KeyRole::ReceiptSigning).unwrap().as_ref())
            .expect("an active receipt key");
        let object_id = active.object_id_bytes().unwrap();
        let (p11, slot) = raw_token::open("mpcp-receipt-signing");
        println!(
            "receipts: SoftHSM2 (pool {pool} sessions, ES256), sled with durable group commit, \
             TLS 1.3 keep-alive, Idempotency-Key on every request; {secs} s per path and cell \
             in {slices} alternating slices; SoftHSM2, service and client share {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let check = self_check_cpu();
        println!(
            "{:>3} {:>4} {:>10} {:>11} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8} {:>6} {:>6}",
            "C", "sess", "raw sig/s", "decisions/s", "ratio", "p50 ms", "p99 ms", "sig CPU",
            "svc CPU", "cli CPU", "floor", "bound"
        );
        for c in CONCURRENCY {
            // The HTTPS floor at this concurrency: what TLS + HTTP alone cost here.
            let url = h.url("/healthz");
            floor_slice(&crt, &clients.client, &url, c, 0.2).await;
            let fl = floor_slice(&crt, &clients.client, &url, c, slice.max(0.2)).await;
            let floor = fl.cpu * 1e6 / fl.ops.max(1) as f64;
            let sessions = c.min(pool);
            let lat = Arc::new(Mutex::new(Vec::new()));
            let warm = clients.clone();
            timed_slice(&crt, c, slice.min(0.3), &lat, move || {
                let w = warm.clone();
                async move { w.decide().await }
            })
            .await;
            lat.lock().unwrap().clear();
            let audit_before = h.audit.size();
            let signed_before = clients.signed.load(Ordering::Relaxed);
            let (mut raw, mut e2e) = (Slice::default(), Slice::default());
            let mut ratios = Vec::new();
            for _ in 0..slices {
                let (p11, id) = (p11.clone(), object_id.clone());
                let r = tokio::task::spawn_blocking(move || {
                    raw_slice(&p11, slot, &id, Alg::ES256, sessions, slice)
                })
                .await
                .unwrap();
                let cl = clients.clone();
                let e = timed_slice(&crt, c, slice, &lat, move || {
                    let cl = cl.clone();
                    async move { cl.decide().await }
                })
                .await;
                tokio::time::sleep(Duration::from_millis(if full { 250 } else { 10 })).await;
                ratios.push(e.rate() / r.rate());
                for (acc, x) in [(&mut raw, r), (&mut e2e, e)] {
                    acc.ops += x.ops;
                    acc.wall += x.wall;
                    acc.cpu += x.cpu;
                    acc.client_cpu += x.client_cpu;
                }
            }
            let signed = clients.signed.load(Ordering::Relaxed) - signed_before;
            assert_eq!(h.audit.size() - audit_before, signed, "one entry per decision");
            let mut l = std::mem::take(&mut *lat.lock().unwrap());
            l.sort_unstable();
            let per = |cpu: f64, ops: u64| cpu * 1e6 / ops.max(1) as f64;
            let sig = per(raw.cpu, raw.ops);
            println!(
                "{c:>3} {sessions:>4} {:>10.0} {:>11.0} {:>5.1}% {:>7.2} {:>7.2} {:>8.0} {:>8.0} {:>8.0} {floor:>6.0} {:>5.1}%",
                raw.rate(),
                e2e.rate(),
                median(ratios) * 100.0,
                percentile(&l, 0.50),
                percentile(&l, 0.99),
                sig,
                per(e2e.cpu - e2e.client_cpu, e2e.ops),
                per(e2e.client_cpu, e2e.ops),
                sig / (sig + floor + check) * 100.0,
            );
        }
        println!(
            "ratio: median over slice pairs of e2e decisions/s / raw ES256 C_Sign/s on the \
             receipt token; CPU columns: µs per raw signature, per decision in the service \
             (signature included), per request in the HTTPS client; floor: µs of CPU per \
             GET /healthz (TLS + HTTP, service and client); bound: sig / (sig + floor + \
             check), the most a service doing nothing but TLS, HTTP, the signature and its \
             self-check ({check:.0} µs) could reach while SoftHSM2, service and client share \
             the cores"
        );
    });
    drop(client_rt);
}
