//! Issue 11 item 4: the clock. The real `mpcp-pa` binary runs under libfaketime (Debian
//! package `faketime`, preloaded with `LD_PRELOAD`; the fake time comes from a file re-read
//! on every call, `FAKETIME_NO_CACHE=1`, so a test can move the clock of a running server;
//! the monotonic clock is left alone, `FAKETIME_DONT_FAKE_MONOTONIC=1`, so tokio's timers
//! and SoftHSM2 behave).
//!
//! - Ten years ahead: `serve` refuses to start without `--accept-clock-jump`, naming the jump;
//!   with it, it starts. Back at the real time, retries with the Idempotency-Keys of grants
//!   issued before replay their first response byte for byte: no idempotency record was
//!   purged, and no request digest has a second `grant_issued`.
//! - In 2020: the service starts but refuses to sign grants and key sets (503 CLOCK_BEHIND),
//!   /readyz says NOT_READY, no entry's time runs backwards; when the clock is right again
//!   signing resumes by itself, without a restart, and `audit verify` accepts the log.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::kit;
use crate::kit::bin::{
    Server, announced, bin, client, grant_request, issuer_with_policy, officer_token,
    post_idempotent, serve_command, serve_on, spawn_lines, up,
};
use serde_json::Value;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// `serve` on `data` with its clock read from `spec` (a libfaketime time spec file).
fn spawn_faked(data: &Path, spec: &Path, extra: &[&str]) -> (Server, mpsc::Receiver<String>) {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "libfaketime is missing: run scripts/ensure-deps.sh (Debian package faketime)"
    );
    let mut cmd: Command = serve_command(data, extra);
    cmd.env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", spec)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stderr(Stdio::piped());
    spawn_lines(cmd)
}

struct Pa {
    base: String,
    http: reqwest::Client,
    issuer: String,
    ph: String,
}

impl Pa {
    fn grant(&self, id: &str) -> String {
        self.grant_expiring(
            id,
            &mpcp_pa::clock::format_rfc3339(
                time::OffsetDateTime::now_utc() + time::Duration::hours(12),
            ),
        )
    }

    fn grant_expiring(&self, id: &str, expires: &str) -> String {
        grant_request(id, &self.ph, expires).to_string()
    }

    /// POSTs a grant under Idempotency-Key `id` (its body fixed by `body`).
    async fn issue(&self, id: &str, body: &str) -> (u16, bool, Vec<u8>) {
        post_idempotent(&self.http, &self.base, &self.issuer, id, "/v1/grants", body)
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// `up` on a fresh data dir, an issuer token and a policy; returns the server and the client.
async fn prepare(data: &Path) -> (Server, Pa) {
    let (server, addr, stdout, _) = up(data, &["--rate-per-token", "0"]);
    let base = format!("https://{addr}");
    let officer = officer_token(&stdout);
    let http = client(data);
    let (issuer, ph) = issuer_with_policy(&http, &base, &officer).await;
    (
        server,
        Pa {
            base,
            http,
            issuer,
            ph,
        },
    )
}

/// Exports and verifies the log of `data` (service stopped); returns its entries.
fn export_and_verify(data: &Path, out: &Path) -> Vec<Value> {
    bin(data, &["audit", "export", "--out", out.to_str().unwrap()]);
    bin(data, &["audit", "verify", out.to_str().unwrap()]);
    std::fs::read_to_string(out.join("entries.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn no_digest_twice(entries: &[Value]) {
    let mut digests = BTreeSet::new();
    for e in entries {
        if e["event"]["action"] == "grant_issued" {
            let d = e["event"]["requestDigest"].as_str().unwrap().to_string();
            assert!(digests.insert(d), "two grant_issued for one request: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_years_ahead_is_refused_unless_confirmed_and_purges_no_retry() {
    let _gate = kit::gate::exclusive();
    let tmp = kit::tmp::dir("clock");
    let data = tmp.path().join("data");
    let (server, pa) = prepare(&data).await;
    let mut first = Vec::new();
    for i in 0..5 {
        let key = format!("k-{i}");
        let body = pa.grant(&key);
        let (status, replayed, bytes) = pa.issue(&key, &body).await;
        assert_eq!((status, replayed), (201, false));
        first.push((key, body, bytes));
    }
    server.stop();

    let spec: PathBuf = tmp.path().join("faketime");
    std::fs::write(&spec, "+3650d\n").unwrap();
    // Refused without the confirmation, with a message naming the jump.
    let (mut server, lines) = spawn_faked(&data, &spec, &[]);
    let seen = match announced(&lines, Duration::from_secs(60)) {
        Ok(addr) => panic!("started ten years ahead without --accept-clock-jump on {addr}"),
        Err(seen) => seen.join("\n"),
    };
    let status = server.0.wait().unwrap();
    assert!(!status.success(), "{seen}");
    assert!(
        seen.contains("CLOCK_JUMP") && seen.contains("--accept-clock-jump"),
        "the refusal does not explain itself:\n{seen}"
    );
    // Confirmed: it starts (and says so).
    let (server, lines) = spawn_faked(&data, &spec, &["--accept-clock-jump"]);
    match announced(&lines, Duration::from_secs(60)) {
        Ok(_) => {}
        Err(seen) => panic!(
            "did not start with --accept-clock-jump:\n{}",
            seen.join("\n")
        ),
    }
    server.stop();

    // Back at the real time: every retry replays its first response.
    let (server, base) = serve_on(&data, &[]);
    let pa = Pa { base, ..pa };
    for (key, body, bytes) in &first {
        let (status, replayed, again) = pa.issue(key, body).await;
        assert_eq!((status, replayed), (201, true), "retry of {key}");
        assert_eq!(&again, bytes, "retry of {key} is not the first response");
    }
    server.stop();
    let entries = export_and_verify(&data, &tmp.path().join("export"));
    no_digest_twice(&entries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_2020_signing_is_refused_until_the_clock_is_right() {
    let _gate = kit::gate::exclusive();
    let tmp = kit::tmp::dir("clock");
    let data = tmp.path().join("data");
    let (server, pa) = prepare(&data).await;
    let body = pa.grant("before");
    assert_eq!(pa.issue("before", &body).await.0, 201);
    server.stop();

    let spec: PathBuf = tmp.path().join("faketime");
    std::fs::write(&spec, "@2020-06-01 12:00:00\n").unwrap();
    let (server, lines) = spawn_faked(&data, &spec, &[]);
    let addr = announced(&lines, Duration::from_secs(60))
        .unwrap_or_else(|seen| panic!("did not start in 2020:\n{}", seen.join("\n")));
    let pa = Pa {
        base: format!("https://{addr}"),
        ..pa
    };
    // A grant valid for the faked clock (expiring in 2020): signed, it would be an expired
    // artifact with a valid signature.
    let (status, _, bytes) = pa
        .issue(
            "in-2020",
            &pa.grant_expiring("in-2020", "2020-06-02T00:00:00Z"),
        )
        .await;
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert_eq!(
        (status, v["code"].as_str()),
        (503, Some("CLOCK_BEHIND")),
        "{v}"
    );
    // Any grant: the clock is named first, not a lifetime judged against the wrong time.
    let (status, _, bytes) = pa.issue("in-2020-b", &pa.grant("in-2020-b")).await;
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert_eq!(
        (status, v["code"].as_str()),
        (503, Some("CLOCK_BEHIND")),
        "{v}"
    );
    // A retry of a request answered before replays, clock or not.
    let (status, replayed, _) = pa.issue("before", &body).await;
    assert_eq!((status, replayed), (201, true));
    let (status, v) = pa.get("/.well-known/mpcp-keys.signed.json").await;
    assert_eq!(
        (status, v["code"].as_str()),
        (503, Some("CLOCK_BEHIND")),
        "signed key set in 2020: {v}"
    );
    let (status, v) = pa.get("/readyz").await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("CLOCK_BEHIND"),
        "{v}"
    );
    // The plain key set needs no signature and keeps being served.
    assert_eq!(pa.get("/.well-known/mpcp-keys.json").await.0, 200);

    // The clock is put right: signing resumes by itself.
    std::fs::write(&spec, "+0\n").unwrap();
    let t = Instant::now();
    loop {
        let (status, _, bytes) = pa.issue("after", &pa.grant("after")).await;
        if status == 201 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{status} {}",
            String::from_utf8_lossy(&bytes)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(pa.get("/.well-known/mpcp-keys.signed.json").await.0, 200);
    assert_eq!(pa.get("/readyz").await.0, 200);
    server.stop();

    let entries = export_and_verify(&data, &tmp.path().join("export"));
    no_digest_twice(&entries);
    let mut last = String::new();
    for e in &entries {
        let t = e["time"].as_str().unwrap().to_string();
        assert!(t >= last, "audit time runs backwards: {last} then {e}");
        assert!(!t.starts_with("2020"), "an entry dated 2020: {e}");
        last = t;
    }
}
