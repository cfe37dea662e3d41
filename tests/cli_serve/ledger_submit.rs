//! The XRPL submitter on the real binary against the rippled stand-in
//! (`tests/interop/rippled_standin.mjs`, which decodes every blob, verifies its signature and
//! enforces sequences): in-order submission to validation, an endpoint that goes down and
//! comes back, a sequence gap (re-signing), and SIGKILLs between signing and submission and
//! in the middle of a round. Each test checks that every transaction ends `validated`, that
//! the stand-in applied them in our sequence order, each hash once, and that its credentials
//! are the ones the grants call for.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::kit;
use crate::kit::bin::{
    Server, client, grant_request, issuer_with_policy, officer_token, post_ok, up,
};
use crate::kit::xrpl::{Standin, hex_of};
use serde_json::{Value, json};

/// The grant subject's XRPL account.
const SUBJECT: &str = "rBeSeHbNsfZ3dqofxZ8MsfEo6ZTRJ1iHqA";

struct Pa {
    server: Option<Server>,
    base: String,
    http: reqwest::Client,
    officer: String,
    issuer: String,
    auditor: String,
    policy: String,
    account: String,
}

fn rpc_flags(standin: &Standin) -> Vec<String> {
    vec![
        "--xrpl-rpc".into(),
        standin.url(),
        "--xrpl-poll-ms".into(),
        "100".into(),
    ]
}

fn start(data: &Path, flags: &[String]) -> (Server, String, String) {
    let mut args: Vec<&str> = vec!["--rate-per-token", "0"];
    args.extend(flags.iter().map(String::as_str));
    let (server, addr, stdout, _) = up(data, &args);
    (server, format!("https://{addr}"), stdout)
}

async fn get(pa: &Pa, token: &str, path: &str) -> Value {
    let r = pa
        .http
        .get(format!("{}{path}", pa.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

/// `up` on a fresh data directory with `flags`, the tokens and a policy.
async fn first_up(data: &Path, flags: &[String]) -> Pa {
    let (server, base, stdout) = start(data, flags);
    let officer = officer_token(&stdout);
    let http = client(data);
    let (issuer, policy) = issuer_with_policy(&http, &base, &officer).await;
    let auditor = post_ok(
        &http,
        &base,
        &officer,
        "/v1/tokens",
        json!({"name": "auditor-1", "role": "auditor"}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut pa = Pa {
        server: Some(server),
        base,
        http,
        officer,
        issuer,
        auditor,
        policy,
        account: String::new(),
    };
    pa.account = get(&pa, &pa.officer.clone(), "/v1/ledger/account").await["account"]
        .as_str()
        .unwrap()
        .to_string();
    pa
}

impl Pa {
    /// SIGKILLs the service.
    fn kill(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.0.kill().unwrap();
            s.0.wait().unwrap();
        }
    }

    /// Starts the service again on `data` with `flags`.
    fn restart(&mut self, data: &Path, flags: &[String]) {
        self.kill();
        let (server, base, _) = start(data, flags);
        self.server = Some(server);
        self.base = base;
    }

    async fn grant(&self, id: &str) {
        let expires = mpcp_pa::clock::format_rfc3339(
            time::OffsetDateTime::now_utc() + time::Duration::hours(2),
        );
        let mut g = grant_request(id, &self.policy, &expires);
        g["subjectId"] = json!(SUBJECT);
        g["activeGrantCredentialIssuer"] = json!(self.account);
        post_ok(&self.http, &self.base, &self.issuer, "/v1/grants", g).await;
    }

    async fn revoke(&self, id: &str) {
        post_ok(
            &self.http,
            &self.base,
            &self.issuer,
            &format!("/v1/grants/{id}/revoke"),
            json!({"reason": "test"}),
        )
        .await;
    }

    async fn transactions(&self) -> Vec<Value> {
        get(self, &self.officer, "/v1/ledger/transactions").await["transactions"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits until every outbox transaction is validated; their number and the time it took.
    async fn all_validated(&self, within: Duration) -> (Vec<Value>, Duration) {
        let t0 = Instant::now();
        loop {
            let txs = self.transactions().await;
            if !txs.is_empty() && txs.iter().all(|t| t["state"] == "validated") {
                return (txs, t0.elapsed());
            }
            assert!(
                t0.elapsed() < within,
                "not all validated within {within:?}: {:#?}",
                txs.iter()
                    .map(|t| (
                        t["id"].clone(),
                        t["sequence"].clone(),
                        t["state"].clone(),
                        t["result"].clone()
                    ))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn audit_actions(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut start = 0u64;
        loop {
            let page = get(
                self,
                &self.auditor,
                &format!("/v1/audit/entries?start={start}"),
            )
            .await;
            let entries = page["entries"].as_array().unwrap().clone();
            let end = page["end"].as_u64().unwrap();
            out.extend(entries);
            if end >= page["size"].as_u64().unwrap() || end == start {
                return out;
            }
            start = end;
        }
    }
}

/// Checks the stand-in against our validated outbox `txs` and the grants `live` / `revoked`.
async fn check_ledger(
    standin: &Standin,
    pa: &Pa,
    txs: &[Value],
    live: &[String],
    revoked: &[String],
) {
    let st = standin.rpc("standin_state", json!({})).await;
    // Our sequence order is the applied order; nothing applied twice.
    let mut ours: Vec<(u64, String)> = txs
        .iter()
        .map(|t| {
            (
                t["sequence"].as_u64().unwrap(),
                t["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    ours.sort();
    let sequences: BTreeSet<u64> = ours.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        sequences.len(),
        ours.len(),
        "a sequence used twice: {ours:?}"
    );
    let applied: Vec<String> = st["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    let expect: Vec<String> = ours.iter().map(|(_, h)| h.clone()).collect();
    assert_eq!(applied, expect, "applied order vs our sequence order");
    for s in st["submissions"].as_array().unwrap() {
        assert_ne!(s["engine_result"], "invalidTransaction", "{s}");
        if expect.iter().any(|h| s["hash"] == h.as_str()) {
            assert_eq!(s["count"], 1, "an applied transaction submitted again: {s}");
        } else {
            // A blob replaced by re-signing may have been tried again while it waited for
            // its turn (terPRE_SEQ); it must never have been applied.
            assert!(
                s["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r != "tesSUCCESS"),
                "a replaced blob was applied: {s}"
            );
        }
    }
    for h in &expect {
        assert!(
            st["submissions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| &s["hash"] == h),
            "{h} never submitted"
        );
    }
    let creds = st["credentials"].as_array().unwrap();
    let has = |id: &str| {
        creds.iter().any(|c| {
            c["issuer"] == pa.account.as_str()
                && c["subject"] == SUBJECT
                && c["credentialType"] == hex_of(&format!("mpcp:active-grant:{id}")).as_str()
        })
    };
    for id in live {
        assert!(has(id), "no credential for live grant {id}");
    }
    for id in revoked {
        assert!(!has(id), "credential of revoked grant {id} still there");
    }
    assert!(
        txs.iter()
            .all(|t| t["result"] == "tesSUCCESS" && t["ledgerIndex"].is_u64()),
        "{txs:#?}"
    );
}

async fn fund(standin: &Standin, account: &str) {
    let r = standin
        .rpc("standin_fund", json!({"account": account}))
        .await;
    assert_eq!(r["status"], "success", "{r}");
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_submitted_in_order_and_validated() {
    let _gate = kit::gate::shared();
    let dir = kit::tmp::dir("ledger_submit_order");
    let standin = Standin::start(&dir.path().join("ledger.json"), 0);
    let data = dir.path().join("appliance");
    let mut pa = first_up(&data, &rpc_flags(&standin)).await;
    fund(&standin, &pa.account).await;
    let grants = ids("g-order", 10);
    for g in &grants {
        pa.grant(g).await;
    }
    let revoked = grants[..2].to_vec();
    for g in &revoked {
        pa.revoke(g).await;
    }
    let (txs, took) = pa.all_validated(Duration::from_secs(20)).await;
    eprintln!("in order: {} transactions validated in {took:?}", txs.len());
    assert!(txs.len() >= 12, "{txs:#?}");
    check_ledger(&standin, &pa, &txs, &grants[2..], &revoked).await;
    let entries = pa.audit_actions().await.to_vec();
    let text = serde_json::to_string(&entries).unwrap();
    let count = |needle: &str| text.matches(needle).count();
    assert!(count("\"ledger_tx_updated\"") >= 2 * txs.len(), "{text}");
    assert!(text.contains("\"validated\""));
    let account = get(&pa, &pa.officer, "/v1/ledger/account").await;
    assert_eq!(
        account["submitter"]["endpoint"],
        standin.url().as_str(),
        "{account}"
    );
    assert!(account["submitter"]["lastContact"].is_string(), "{account}");
    let metrics = pa
        .http
        .get(format!("{}/metrics", pa.base))
        .bearer_auth(&pa.auditor)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "mpcp_ledger_transactions{{state=\"validated\"}} {}",
            txs.len()
        )),
        "{metrics}"
    );
    assert!(metrics.contains("mpcp_ledger_submissions_total{result=\"tesSUCCESS\"}"));
    pa.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_down_and_back_is_caught_up() {
    let _gate = kit::gate::shared();
    let dir = kit::tmp::dir("ledger_submit_down");
    let mut standin = Standin::start(&dir.path().join("ledger.json"), 0);
    let data = dir.path().join("appliance");
    let mut pa = first_up(&data, &rpc_flags(&standin)).await;
    fund(&standin, &pa.account).await;
    pa.grant("g-down-first").await;
    pa.all_validated(Duration::from_secs(10)).await;
    standin.kill();
    let grants = ids("g-down", 6);
    for g in &grants {
        let t0 = Instant::now();
        pa.grant(g).await;
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "signing waited for the ledger"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let account = get(&pa, &pa.officer, "/v1/ledger/account").await;
    assert!(account["submitter"]["lastError"].is_string(), "{account}");
    let ready = pa
        .http
        .get(format!("{}/readyz", pa.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status().as_u16(),
        200,
        "readyz fails with the ledger down"
    );
    standin.restart();
    let (txs, took) = pa.all_validated(Duration::from_secs(10)).await;
    eprintln!(
        "down and back: {} transactions validated {took:?} after the restart",
        txs.len()
    );
    let mut live = grants.clone();
    live.push("g-down-first".into());
    check_ledger(&standin, &pa, &txs, &live, &[]).await;
    // A pause (HTTP 503) is an outage too.
    standin.rpc("standin_pause", json!({"ms": 2000})).await;
    pa.grant("g-down-paused").await;
    let (txs, took) = pa.all_validated(Duration::from_secs(15)).await;
    eprintln!("pause: validated {took:?} after the grant");
    live.push("g-down-paused".into());
    check_ledger(&standin, &pa, &txs, &live, &[]).await;
    pa.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_gap_is_resigned() {
    let _gate = kit::gate::shared();
    let dir = kit::tmp::dir("ledger_submit_gap");
    let standin = Standin::start(&dir.path().join("ledger.json"), 0);
    let data = dir.path().join("appliance");
    // Sign offline first, then let another tool use the account.
    let mut pa = first_up(&data, &[]).await;
    fund(&standin, &pa.account).await;
    let grants = ids("g-gap", 6);
    for g in &grants {
        pa.grant(g).await;
    }
    let before = pa.transactions().await;
    let lowest = before
        .iter()
        .map(|t| t["sequence"].as_u64().unwrap())
        .min()
        .unwrap();
    standin
        .rpc(
            "standin_set_sequence",
            json!({"account": pa.account, "sequence": lowest + 3}),
        )
        .await;
    pa.restart(&data, &rpc_flags(&standin));
    let (txs, took) = pa.all_validated(Duration::from_secs(20)).await;
    eprintln!("gap: {} transactions validated in {took:?}", txs.len());
    let resigned: Vec<&Value> = txs
        .iter()
        .filter(|t| {
            t["replacedHashes"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        })
        .collect();
    assert_eq!(resigned.len(), 3, "{txs:#?}");
    check_ledger(&standin, &pa, &txs, &grants, &[]).await;
    let text = serde_json::to_string(&pa.audit_actions().await).unwrap();
    assert_eq!(text.matches("\"ledger_tx_resigned\"").count(), 3);
    pa.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_before_and_during_submission_loses_nothing() {
    let _gate = kit::gate::shared();
    let dir = kit::tmp::dir("ledger_submit_kill");
    let standin = Standin::start(&dir.path().join("ledger.json"), 0);
    let data = dir.path().join("appliance");
    let mut pa = first_up(&data, &[]).await;
    fund(&standin, &pa.account).await;
    let mut grants = ids("g-kill", 8);
    for g in &grants {
        pa.grant(g).await;
    }
    // SIGKILL between signing and submission, then restart with the submitter.
    pa.kill();
    pa.restart(&data, &rpc_flags(&standin));
    let (txs, took) = pa.all_validated(Duration::from_secs(20)).await;
    eprintln!(
        "kill before submission: {} validated in {took:?}",
        txs.len()
    );
    check_ledger(&standin, &pa, &txs, &grants, &[]).await;
    // SIGKILL in the middle of rounds, several times.
    for round in 0..4 {
        let more = ids(&format!("g-kill-r{round}"), 5);
        for g in &more {
            pa.grant(g).await;
        }
        grants.extend(more);
        tokio::time::sleep(Duration::from_millis(80 + 60 * round)).await;
        pa.restart(&data, &rpc_flags(&standin));
    }
    let (txs, took) = pa.all_validated(Duration::from_secs(20)).await;
    eprintln!("kills mid-round: {} validated in {took:?}", txs.len());
    check_ledger(&standin, &pa, &txs, &grants, &[]).await;
    pa.kill();
}

/// The counter set above the ledger's sequence (`ledger set-sequence`, as an operator might
/// get it wrong) and a ledger fee above ours: the transactions above the hole are re-signed
/// downward, every one is re-signed at the open-ledger fee, and all are validated in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_ahead_of_the_ledger_and_a_higher_fee_are_resigned() {
    let _gate = kit::gate::shared();
    let dir = kit::tmp::dir("ledger_submit_ahead");
    let standin = Standin::start_with_fee(&dir.path().join("ledger.json"), 0, 50);
    let data = dir.path().join("appliance");
    let mut pa = first_up(&data, &[]).await;
    fund(&standin, &pa.account).await;
    let early = ids("g-early", 2);
    for g in &early {
        pa.grant(g).await;
    }
    pa.kill();
    kit::bin::bin(&data, &["ledger", "set-sequence", "40"]);
    pa.restart(&data, &[]);
    let late = ids("g-late", 3);
    for g in &late {
        pa.grant(g).await;
    }
    let before = pa.transactions().await;
    assert_eq!(
        before.iter().map(|t| t["sequence"].as_u64().unwrap()).max(),
        Some(42),
        "the late grants were signed at 40..42"
    );
    pa.restart(&data, &rpc_flags(&standin));
    let (txs, took) = pa.all_validated(Duration::from_secs(20)).await;
    eprintln!("ahead: {} transactions validated in {took:?}", txs.len());
    let mut seqs: Vec<u64> = txs
        .iter()
        .map(|t| t["sequence"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=txs.len() as u64).collect::<Vec<_>>(),
        "the hole was closed"
    );
    for t in &txs {
        assert_eq!(t["fee"], "50", "re-signed at the ledger's fee: {t}");
        assert!(
            t["replacedHashes"]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
            "{t}"
        );
    }
    let all: Vec<String> = early.iter().chain(&late).cloned().collect();
    check_ledger(&standin, &pa, &txs, &all, &[]).await;
    pa.kill();
}
