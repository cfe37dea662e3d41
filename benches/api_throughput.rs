//! What the HTTPS service costs on top of the HSM signature it wraps, measured in one run on
//! the same SoftHSM2 token, store and machine (ratios, not absolute targets):
//!
//! - baseline: `sign_digest` on the active grant-signing key, called directly;
//! - `GET /healthz` over TLS (keep-alive): the transport and router floor;
//! - `POST /v1/grants`, one client: auth, strict parse, validation, HSM signature,
//!   durable audit entry, durable grant record, idempotency record;
//! - the same with 8 concurrent clients (audit group commit shares flushes);
//! - an idempotent replay of a stored response.
//!
//! Run: `cargo bench --bench api_throughput` (bounded: a few hundred requests per case).
//! Under `cargo test` (no `--bench` argument) it runs as a smoke test with a handful of
//! operations per case.

#[path = "../tests/api_common/mod.rs"]
mod api_common;

use std::time::{Duration, Instant};

use api_common::Harness;
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::keys::{ActiveKeys, KeyRole};
use serde_json::json;

const CLIENTS: usize = 8;

fn grant(ph: &str, id: &str) -> String {
    let exp =
        mpcp_pa::clock::format_rfc3339(time::OffsetDateTime::now_utc() + Duration::from_secs(3000));
    json!({
        "version": "1.0", "grantId": id, "policyHash": ph, "subjectId": "v-1", "scope": "SESSION",
        "allowedRails": ["xrpl"], "expiresAt": exp,
        "authorizedGateway": "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b5",
        "velocityLimit": {"maxPayments": 10, "windowSeconds": 3600}
    })
    .to_string()
}

fn per_op(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = if full { 200 } else { 8 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let limits = Limits {
            requests_per_second_per_token: 0,
            ..Limits::default()
        };
        let h = Harness::start(limits).await;
        let issuer = h.token("bench-issuer", ApiRole::Issuer);
        let (_, p) = h.post("/v1/policies", Some(&issuer), r#"{"version":"1.0"}"#).await;
        let ph = p["policyHash"].as_str().unwrap().to_string();

        // Baseline: the HSM signature alone.
        let signer = h.registry.active_signer(KeyRole::GrantSigning).unwrap();
        let t = Instant::now();
        for i in 0..n {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&(i as u64).to_be_bytes());
            signer.sign_digest(&d).unwrap();
        }
        let sign = per_op(t.elapsed(), n);

        let t = Instant::now();
        for _ in 0..n {
            let r = h.client.get(h.url("/healthz")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
        let health = per_op(t.elapsed(), n);

        let first_body = grant(&ph, "seq-0");
        let t = Instant::now();
        for i in 0..n {
            let body = if i == 0 {
                first_body.clone()
            } else {
                grant(&ph, &format!("seq-{i}"))
            };
            let r = h
                .client
                .post(h.url("/v1/grants"))
                .bearer_auth(&issuer)
                .header("content-type", "application/json")
                .header("idempotency-key", format!("seq-{i}"))
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.bytes().await.unwrap();
        }
        let issue = per_op(t.elapsed(), n);

        let t = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (client, url, tok, ph) = (h.client.clone(), h.url("/v1/grants"), issuer.clone(), ph.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..n / CLIENTS {
                    let id = format!("par-{c}-{i}");
                    let r = client
                        .post(&url)
                        .bearer_auth(&tok)
                        .header("content-type", "application/json")
                        .body(grant(&ph, &id))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 201);
                    r.bytes().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let issue_par = per_op(t.elapsed(), n / CLIENTS * CLIENTS);

        // Replays of the first request, byte for byte.
        let body = first_body;
        let t = Instant::now();
        for _ in 0..n {
            let r = h
                .client
                .post(h.url("/v1/grants"))
                .bearer_auth(&issuer)
                .header("content-type", "application/json")
                .header("idempotency-key", "seq-0")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.headers()["idempotent-replayed"], "true");
            r.bytes().await.unwrap();
        }
        let replay = per_op(t.elapsed(), n);

        println!("api_throughput ({n} operations per case, SoftHSM2 EdDSA, sled, TLS 1.3 keep-alive)");
        println!("  HSM sign_digest (baseline)        {sign:>9.1} us/op   1.00x");
        println!("  GET /healthz over TLS             {health:>9.1} us/op   {:>5.2}x", health / sign);
        println!("  POST /v1/grants, 1 client         {issue:>9.1} us/op   {:>5.2}x", issue / sign);
        println!(
            "  POST /v1/grants, {CLIENTS} clients        {issue_par:>9.1} us/op   {:>5.2}x  ({:.2}x the 1-client cost)",
            issue_par / sign,
            issue_par / issue
        );
        println!("  idempotent replay                 {replay:>9.1} us/op   {:>5.2}x", replay / sign);
    });
}
