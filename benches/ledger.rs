//! What a grant's XLS-70 credential costs: grants whose `activeGrantCredentialIssuer` is the
//! PA's own account (a second HSM signature, ES256K with the xrpl-account key, and the ledger
//! lock held from the counter's read to the commit, so they are signed one at a time)
//! against plain grants on the same service, in one run.
//!
//! Per concurrency level C in {1, 8, 32}, alternating slices of:
//! - plain: C clients `POST /v1/grants` (EdDSA grant key, no credential);
//! - credential: C clients `POST /v1/grants` naming the PA's account as credential issuer,
//!   each committing its CredentialCreate in the grant's append.
//!
//! - raw: one thread calling `C_Sign` (CKM_ECDSA) directly with the xrpl-account key on its
//!   token: the ceiling of signatures made one at a time, as the ledger lock makes them.
//!
//! Printed: raw C_Sign/s, grants/s of both, the ratio credential/plain (median of the per-pair ratios),
//! latency percentiles of the credential grants, and µs of service CPU per grant of both
//! (from /proc/self/task/*/schedstat; SoftHSM2's signing threads included). SoftHSM2, the
//! service and the client share the machine's cores. Each cell checks one audit entry per
//! grant, and at the end that the credential sequences are exactly 1..=n.
//!
//! Run: `cargo bench --bench ledger` (`LEDGER_BENCH_SECONDS`, default 3). Under `cargo test`
//! it runs as a smoke test with very short slices.

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
use mpcp_pa::api::ledger_book::TxFilter;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::crypto::Alg;
use mpcp_pa::keys::KeyRole;
use serde_json::json;
use slices::{CLIENT_THREADS, Slice, median, percentile, raw_slice, timed_slice};

/// The allocator the `mpcp-pa` binary uses (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONCURRENCY: [usize; 3] = [1, 8, 32];
const SUBJECT: &str = "rBeSeHbNsfZ3dqofxZ8MsfEo6ZTRJ1iHqA";
const GATEWAY: &str = "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b5";

struct Clients {
    client: reqwest::Client,
    url: String,
    token: String,
    policy_hash: String,
    /// The PA's account, for credential grants.
    account: Option<String>,
    next: Arc<AtomicU64>,
    issued: AtomicU64,
}

impl Clients {
    async fn issue(&self) -> Duration {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let expires = mpcp_pa::clock::format_rfc3339(
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        );
        let mut body = json!({
            "version": "1.0", "grantId": format!("b-{n}"), "policyHash": self.policy_hash,
            "subjectId": SUBJECT, "scope": "SESSION", "allowedRails": ["xrpl"],
            "authorizedGateway": GATEWAY, "expiresAt": expires,
            "velocityLimit": {"maxPayments": 10, "windowSeconds": 3600},
            "budgetMinor": "50000", "budgetCurrency": "XRP",
        });
        if let Some(a) = &self.account {
            body["activeGrantCredentialIssuer"] = json!(a);
        }
        let t = Instant::now();
        let r = self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("idempotency-key", format!("k-{n}"))
            .body(body.to_string())
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

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let slices: usize = if full { 6 } else { 2 };
    let secs: f64 = std::env::var("LEDGER_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 3.0 } else { 0.3 });
    let slice = secs / slices as f64;
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
        let h = Harness::start(limits).await;
        let issuer = h.token("bench-issuer", ApiRole::Issuer);
        let auditor = h.token("bench-auditor", ApiRole::Auditor);
        let (s, p) = h
            .post("/v1/policies", Some(&issuer), r#"{"version":"1.0"}"#)
            .await;
        assert!(s == 200 || s == 201, "{p}");
        let (s, a) = h.get("/v1/ledger/account", Some(&auditor)).await;
        assert_eq!(s, 200, "{a}");
        let next = Arc::new(AtomicU64::new(0));
        let make = |account: Option<String>| {
            Arc::new(Clients {
                client: api_common::client_for(&h.tls),
                url: h.url("/v1/grants"),
                token: issuer.clone(),
                policy_hash: p["policyHash"].as_str().unwrap().to_string(),
                account,
                next: next.clone(),
                issued: AtomicU64::new(0),
            })
        };
        let active = h
            .registry
            .active_kid(KeyRole::XrplAccount)
            .unwrap()
            .unwrap();
        let object_id = h.registry.get(&active).unwrap().object_id_bytes().unwrap();
        let (p11, slot) = raw_token::open("mpcp-xrpl-account");
        let plain = make(None);
        let credential = make(Some(a["account"].as_str().unwrap().to_string()));
        println!(
            "ledger: grants with a PA-issued XLS-70 credential (ES256K CredentialCreate, ledger \
             lock) vs plain grants (EdDSA), same service; SoftHSM2 (pool 4), sled durable group \
             commit, TLS 1.3 keep-alive; {secs} s per path and cell in {slices} alternating \
             slices; SoftHSM2, service and client share {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "{:>3} {:>9} {:>9} {:>12} {:>6} {:>7} {:>7} {:>10} {:>10}",
            "C",
            "raw sig/s",
            "plain/s",
            "credential/s",
            "ratio",
            "p50 ms",
            "p99 ms",
            "plain CPU",
            "cred CPU"
        );
        for c in CONCURRENCY {
            let lat = Arc::new(Mutex::new(Vec::new()));
            let scratch = Arc::new(Mutex::new(Vec::new()));
            for w in [&plain, &credential] {
                let w = w.clone();
                timed_slice(&crt, c, slice.min(0.3), &scratch, move || {
                    let w = w.clone();
                    async move { w.issue().await }
                })
                .await;
            }
            let audit_before = h.audit.size();
            let issued_before =
                plain.issued.load(Ordering::Relaxed) + credential.issued.load(Ordering::Relaxed);
            let (mut p_acc, mut c_acc, mut r_acc) =
                (Slice::default(), Slice::default(), Slice::default());
            let mut ratios = Vec::new();
            for _ in 0..slices {
                let (p11, id) = (p11.clone(), object_id.clone());
                let r = tokio::task::spawn_blocking(move || {
                    raw_slice(&p11, slot, &id, Alg::ES256K, 1, slice)
                })
                .await
                .unwrap();
                r_acc.ops += r.ops;
                r_acc.wall += r.wall;
                let pl = plain.clone();
                let ps = timed_slice(&crt, c, slice, &scratch, move || {
                    let pl = pl.clone();
                    async move { pl.issue().await }
                })
                .await;
                let cr = credential.clone();
                let cs = timed_slice(&crt, c, slice, &lat, move || {
                    let cr = cr.clone();
                    async move { cr.issue().await }
                })
                .await;
                tokio::time::sleep(Duration::from_millis(if full { 250 } else { 10 })).await;
                ratios.push(cs.rate() / ps.rate());
                for (acc, x) in [(&mut p_acc, ps), (&mut c_acc, cs)] {
                    acc.ops += x.ops;
                    acc.wall += x.wall;
                    acc.cpu += x.cpu;
                    acc.client_cpu += x.client_cpu;
                }
            }
            let issued = plain.issued.load(Ordering::Relaxed)
                + credential.issued.load(Ordering::Relaxed)
                - issued_before;
            assert_eq!(h.audit.size() - audit_before, issued, "one entry per grant");
            let mut l = std::mem::take(&mut *lat.lock().unwrap());
            l.sort_unstable();
            let per = |s: Slice| (s.cpu - s.client_cpu) * 1e6 / s.ops.max(1) as f64;
            println!(
                "{c:>3} {:>9.0} {:>9.0} {:>12.0} {:>5.1}% {:>7.2} {:>7.2} {:>10.0} {:>10.0}",
                r_acc.rate(),
                p_acc.rate(),
                c_acc.rate(),
                median(ratios) * 100.0,
                percentile(&l, 0.50),
                percentile(&l, 0.99),
                per(p_acc),
                per(c_acc),
            );
        }
        let txs = h.state.ledger().list(&TxFilter::default()).unwrap();
        let mut seqs: Vec<u32> = txs.iter().map(|t| t.sequence).collect();
        seqs.sort_unstable();
        let n = u32::try_from(seqs.len()).unwrap();
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "sequences 1..=n, no gap");
        assert_eq!(u64::from(n), credential.issued.load(Ordering::Relaxed));
        println!(
            "raw: ES256K C_Sign/s of the xrpl-account key from one session (the ledger lock signs \
             one at a time); ratio: median over slice pairs of credential grants/s / plain \
             grants/s; CPU: µs of service CPU per grant (SoftHSM2 included); {n} credential \
             transactions, sequences 1..={n}"
        );
    });
    drop(client_rt);
}
