//! Memory under sustained issuance: the real `mpcp-pa up` binary, 8 HTTPS clients issuing
//! grants (each with an Idempotency-Key, so every grant is an audit entry, a grant record and
//! an idempotency record) until the audit log has grown by the target number of entries; the
//! service's resident memory (VmRSS from /proc) is sampled every `SOAK_SAMPLE_SECONDS` and at
//! each tenth of the target. The verdict line compares the last sample with the one taken
//! after warm-up (the first tenth): target flat within 10 %. A last line fits a straight line
//! through every sample after warm-up and prints its slope and rise, which two samples alone
//! report with several MiB of noise.
//!
//! CPUs: SoftHSM2 (in the service's process), the service and the client share the machine's
//! 2 cores, unpinned; this bench measures memory, not speed.
//!
//! Run: `cargo bench --bench soak` (`SOAK_GRANTS`, default 100000; `SOAK_CACHE_MIB`, the
//! service's `--store-cache-mib`, default the service's own default; `SOAK_SAMPLE_SECONDS`,
//! default 60). Under `cargo test` (no `--bench` argument) it runs as a smoke test with 400
//! grants.

#[path = "../tests/bin_support/mod.rs"]
mod bin_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const GATEWAY: &str = "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b5";
const CLIENTS: u64 = 8;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

async fn post(
    c: &reqwest::Client,
    url: String,
    token: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut r = c
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let target: u64 = if full {
        env_or("SOAK_GRANTS", 100_000)
    } else {
        400
    };
    let sample_every = Duration::from_secs(env_or("SOAK_SAMPLE_SECONDS", 60));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut extra = vec!["--rate-per-token".to_string(), "0".to_string()];
    if let Ok(mib) = std::env::var("SOAK_CACHE_MIB") {
        extra.extend(["--store-cache-mib".to_string(), mib]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (server, addr, stdout, _) = bin_support::up(&data, &extra);
    let pid = server.0.id();
    let officer = stdout.trim().to_string();
    let base = format!("https://{addr}");
    let c = bin_support::client(&data);
    let (s, t) = post(
        &c,
        format!("{base}/v1/tokens"),
        &officer,
        None,
        &json!({"name": "issuer-1", "role": "issuer"}),
    )
    .await;
    assert_eq!(s, 201, "{t}");
    let issuer = t["token"].as_str().unwrap().to_string();
    let (s, p) = post(
        &c,
        format!("{base}/v1/policies"),
        &issuer,
        None,
        &json!({"version": "1.0", "maxGrantLifetimeSeconds": 86400}),
    )
    .await;
    assert!(s == 200 || s == 201, "{p}");
    let ph = p["policyHash"].as_str().unwrap().to_string();
    let expires =
        mpcp_pa::clock::format_rfc3339(time::OffsetDateTime::now_utc() + time::Duration::hours(20));

    let issued = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..CLIENTS {
        let (c, base, issuer, ph, expires) = (
            c.clone(),
            base.clone(),
            issuer.clone(),
            ph.clone(),
            expires.clone(),
        );
        let (issued, stop) = (issued.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let id = format!("soak-{w}-{n}");
                let body = json!({
                    "version": "1.0", "grantId": id, "policyHash": ph, "subjectId": "vehicle-4711",
                    "scope": "SESSION", "allowedRails": ["xrpl"], "authorizedGateway": GATEWAY,
                    "velocityLimit": {"maxPayments": 10, "windowSeconds": 3600},
                    "budgetMinor": "50000", "budgetCurrency": "XRP", "expiresAt": expires,
                });
                let (s, e) = post(&c, format!("{base}/v1/grants"), &issuer, Some(&id), &body).await;
                assert_eq!(s, 201, "{e}");
                issued.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
        }));
    }

    println!(
        "soak: {target} grants by {CLIENTS} clients; service pid {pid}; RSS every {} s and each tenth",
        sample_every.as_secs()
    );
    println!(
        "{:>8} {:>9} {:>9} {:>9}",
        "seconds", "grants", "grants/s", "RSS MiB"
    );
    let start = Instant::now();
    let mut next_sample = start + sample_every;
    let mut next_tenth = target / 10;
    let mut warm: Option<f64> = None;
    let mut last = (0u64, start);
    let mut samples = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = issued.load(Ordering::SeqCst);
        let now = Instant::now();
        if now >= next_sample || n >= next_tenth || n >= target {
            let rss = rss_mib(pid);
            let rate = (n - last.0) as f64 / (now - last.1).as_secs_f64().max(1e-9);
            println!(
                "{:>8.0} {:>9} {:>9.0} {:>9.1}",
                (now - start).as_secs_f64(),
                n,
                rate,
                rss
            );
            samples.push((n, rss));
            if warm.is_none() && n >= target / 10 {
                warm = Some(rss);
            }
            last = (n, now);
            while next_sample <= now {
                next_sample += sample_every;
            }
            while next_tenth <= n {
                next_tenth += target / 10;
            }
        }
        if n >= target {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let (warm, end) = (
        warm.unwrap_or(f64::NAN),
        samples.last().map(|s| s.1).unwrap_or(f64::NAN),
    );
    println!(
        "RSS after warm-up (first tenth) {warm:.1} MiB, at the end {end:.1} MiB: {:+.1} % (target within 10 %)",
        (end / warm - 1.0) * 100.0
    );
    // Two samples are noisy (RSS moves by several MiB between samples); a least-squares line
    // through every sample after warm-up gives the slope, and its rise over the run.
    let after: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(n, _)| *n >= target / 10)
        .map(|(n, r)| (*n as f64, *r))
        .collect();
    if after.len() >= 3 {
        let line = bin_support::line_fit::Line::fit(&after);
        let (x0, x1) = (after[0].0, after[after.len() - 1].0);
        println!(
            "fitted through {} samples after warm-up: {:.3} MiB per 1,000 grants, {:.1} -> {:.1} MiB: {:+.1} %",
            after.len(),
            line.slope * 1000.0,
            line.at(x0),
            line.at(x1),
            (line.at(x1) / line.at(x0) - 1.0) * 100.0
        );
    }
    server.stop();
}
