//! Crash safety of the outbox: the real `mpcp-pa serve` binary (SoftHSM2 ES256K xrpl-account
//! key, sled, durable audit log, TLS) is SIGKILLed at random moments while issuers sign grants
//! whose credential the PA's own account issues and revoke some of them. This test is the
//! client, so it knows which answers were acknowledged. After each kill it opens the store
//! and checks:
//! - every grant and revocation entry names exactly the transaction the outbox holds for it,
//!   and the outbox holds nothing without its entry;
//! - the pending index is exactly the outbox's transactions not yet final;
//! - the sequences are 1..=n without gap or repeat, and the counter is n+1;
//! - every acknowledged grant and revocation is there with the hash it was answered with.
//!
//! At the end `mpcp-pa ledger export` prints every blob in sequence order, and the XRPL
//! Foundation's codec and keypairs accept each one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::kit;
use crate::kit::bin::{bin, client, json_post, kill_round, serve_on};
use crate::kit::rng::Rng;
use mpcp_pa::api::ledger_book::{AccountState, LedgerTx, trees};
use mpcp_pa::audit::{AuditLog, Entry};
use mpcp_pa::clock::SystemClock;
use mpcp_pa::events::Event;
use mpcp_pa::store::Store;
use serde_json::{Value, json};

const ROUNDS: usize = 5;
const WORKERS: usize = 2;
const SUBJECT: &str = "rBeSeHbNsfZ3dqofxZ8MsfEo6ZTRJ1iHqA";
const GATEWAY: &str = "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b5";

/// What the client was told: grant id -> (create hash, delete hash).
type Acked = Arc<Mutex<BTreeMap<String, (Option<String>, Option<String>)>>>;

struct Ctx {
    http: reqwest::Client,
    base: String,
    issuer: String,
    policy: String,
    account: String,
}

async fn post(c: &Ctx, path: &str, body: &Value) -> Option<reqwest::Response> {
    json_post(
        &c.http,
        format!("{}{path}", c.base),
        &c.issuer,
        body.to_string(),
    )
    .timeout(Duration::from_secs(30))
    .send()
    .await
    .ok()
}

async fn worker(
    c: Arc<Ctx>,
    acked: Acked,
    stop: Arc<AtomicBool>,
    round: usize,
    w: usize,
) -> Vec<String> {
    let mut mine = Vec::new();
    for n in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let id = format!("g-r{round}-w{w}-{n}");
        mine.push(id.clone());
        let expires = mpcp_pa::clock::format_rfc3339(
            time::OffsetDateTime::now_utc() + time::Duration::hours(2),
        );
        let grant = json!({
            "version": "1.0", "grantId": id, "policyHash": c.policy, "subjectId": SUBJECT,
            "scope": "SESSION", "allowedRails": ["xrpl"], "authorizedGateway": GATEWAY,
            "velocityLimit": {"maxPayments": 10, "windowSeconds": 3600},
            "budgetMinor": "50000", "budgetCurrency": "XRP", "expiresAt": expires,
            "activeGrantCredentialIssuer": c.account,
        });
        let Some(r) = post(&c, "/v1/grants", &grant).await else {
            break;
        };
        let status = r.status().as_u16();
        let header = r
            .headers()
            .get("mpcp-credential-transaction")
            .map(|h| h.to_str().unwrap().to_string());
        if r.bytes().await.is_err() {
            break;
        }
        assert_eq!(status, 201);
        let header = header.expect("the credential transaction is named");
        let hash = header
            .split("; ")
            .find_map(|p| p.strip_prefix("hash="))
            .unwrap()
            .to_string();
        acked.lock().unwrap().insert(id.clone(), (Some(hash), None));
        if n % 3 == 2 {
            let Some(r) = post(
                &c,
                &format!("/v1/grants/{id}/revoke"),
                &json!({"reason": "crash test"}),
            )
            .await
            else {
                break;
            };
            let status = r.status().as_u16();
            let Ok(bytes) = r.bytes().await else { break };
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            let hash = v["credentialTransaction"]["hash"]
                .as_str()
                .unwrap()
                .to_string();
            acked.lock().unwrap().get_mut(&id).unwrap().1 = Some(hash);
        }
    }
    mine
}

/// Checks the killed service's store; returns the number of transactions.
fn check_store(
    data: &Path,
    account: &str,
    acked: &BTreeMap<String, (Option<String>, Option<String>)>,
    round: usize,
) -> usize {
    let store = Store::open(&mpcp_pa::app::DataDir::new(data).store()).unwrap();
    let log = AuditLog::open_existing(&store, Arc::new(SystemClock))
        .unwrap_or_else(|e| panic!("round {round}: audit log does not reopen: {e}"));
    // (outbox id, hash) the audit entries name.
    let mut named = BTreeSet::new();
    for raw in log.entries(0, log.size()).unwrap() {
        let e: Entry = serde_json::from_slice(&raw).unwrap();
        match e.event {
            Event::GrantIssued {
                grant_id,
                credential_tx: Some(h),
                ..
            } => {
                assert!(
                    named.insert((format!("grant/{grant_id}/create"), h)),
                    "round {round}: twice"
                );
            }
            Event::GrantRevoked {
                grant_id,
                credential_tx: Some(h),
                ..
            } => {
                assert!(
                    named.insert((format!("grant/{grant_id}/delete"), h)),
                    "round {round}: twice"
                );
            }
            _ => {}
        }
    }
    let mut held = BTreeSet::new();
    let mut pending_expected = BTreeMap::new();
    let mut seqs = Vec::new();
    for item in store.tree(trees::LEDGER_OUTBOX).unwrap().iter() {
        let (k, v) = item.unwrap();
        let tx: LedgerTx = serde_json::from_slice(&v).unwrap();
        assert_eq!(tx.id.as_bytes(), &k[..]);
        assert_eq!(tx.account, account);
        seqs.push(tx.sequence);
        if !tx.state.is_final() {
            pending_expected.insert(format!("{account}/{:010}", tx.sequence), tx.id.clone());
        }
        if tx.id.starts_with("grant/") {
            held.insert((tx.id, tx.hash));
        }
    }
    assert_eq!(held, named, "round {round}: outbox vs audit entries");
    let pending: BTreeMap<String, String> = store
        .tree(trees::LEDGER_PENDING)
        .unwrap()
        .iter()
        .map(|i| {
            let (k, v) = i.unwrap();
            (
                String::from_utf8(k.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(pending, pending_expected, "round {round}: pending index");
    seqs.sort_unstable();
    let n = u32::try_from(seqs.len()).unwrap();
    assert_eq!(
        seqs,
        (1..=n).collect::<Vec<_>>(),
        "round {round}: sequences"
    );
    let counter: AccountState = serde_json::from_slice(
        &store
            .tree(trees::LEDGER_ACCOUNTS)
            .unwrap()
            .get(account)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(counter.next_sequence, n + 1, "round {round}: counter");
    for (id, (create, delete)) in acked {
        if let Some(h) = create {
            assert!(
                named.contains(&(format!("grant/{id}/create"), h.clone())),
                "round {round}: acknowledged {id} lost"
            );
        }
        if let Some(h) = delete {
            assert!(
                named.contains(&(format!("grant/{id}/delete"), h.clone())),
                "round {round}: acknowledged revocation of {id} lost"
            );
        }
    }
    seqs.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_service_keeps_each_credential_transaction_with_its_entry() {
    let _gate = kit::gate::exclusive();
    let dir = kit::tmp::dir("ledger_crash");
    let data = dir.path();
    bin(data, &["hsm", "init-dev"]);
    // The account first, so the first grant-signing and root keys get their credentials.
    for (role, alg) in [
        ("xrpl-account", "ES256K"),
        ("grant-signing", "EdDSA"),
        ("root", "EdDSA"),
        ("audit", "EdDSA"),
    ] {
        bin(data, &["keys", "rotate", "--role", role, "--alg", alg]);
    }
    let shown = String::from_utf8(bin(data, &["ledger", "account"]).stdout).unwrap();
    let account = shown
        .lines()
        .find_map(|l| l.strip_prefix("account "))
        .unwrap()
        .to_string();
    let issuer = String::from_utf8(
        bin(
            data,
            &["tokens", "create", "--name", "issuer", "--role", "issuer"],
        )
        .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let acked: Acked = Arc::new(Mutex::new(BTreeMap::new()));
    let mut rng = Rng::from_clock();
    let mut policy = String::new();
    let mut total = 0;
    for round in 0..=ROUNDS {
        let (server, base) = serve_on(data, &["--rate-per-token", "0"]);
        let http = client(data);
        if round == 0 {
            let r = json_post(
                &http,
                format!("{base}/v1/policies"),
                &issuer,
                r#"{"version":"1.0"}"#,
            )
            .send()
            .await
            .unwrap();
            let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            policy = v["policyHash"].as_str().unwrap().to_string();
        }
        if round == ROUNDS {
            drop(server);
            break;
        }
        let c = Arc::new(Ctx {
            http,
            base,
            issuer: issuer.clone(),
            policy: policy.clone(),
            account: account.clone(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| tokio::spawn(worker(c.clone(), acked.clone(), stop.clone(), round, w)))
            .collect();
        tokio::time::sleep(Duration::from_millis(300 + rng.next() % 700)).await;
        kill_round(server, &stop, workers).await;
        total = check_store(data, &account, &acked.lock().unwrap(), round);
    }
    let acknowledged = acked.lock().unwrap().len();
    assert!(
        acknowledged >= ROUNDS * WORKERS,
        "too little progress to test anything"
    );
    // Every blob, exported in sequence order, is a valid transaction of the PA's account.
    let out = String::from_utf8(bin(data, &["ledger", "export"]).stdout).unwrap();
    let doc: Value = serde_json::from_str(&out).unwrap();
    let txs = doc["transactions"].as_array().unwrap();
    assert_eq!(txs.len(), total, "every transaction is still to submit");
    let seqs: Vec<u64> = txs
        .iter()
        .map(|t| t["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=total as u64).collect::<Vec<_>>(),
        "in sequence order"
    );
    let blobs: Vec<String> = txs
        .iter()
        .map(|t| t["txBlob"].as_str().unwrap().to_string())
        .collect();
    for (r, t) in kit::xrpl::check_blobs(&blobs).iter().zip(txs) {
        assert!(kit::xrpl::valid(r), "{r}");
        assert_eq!(r["hash"], t["hash"]);
        assert_eq!(r["tx"]["Account"], account);
    }
    println!(
        "{ROUNDS} kills, {acknowledged} acknowledged grants, {total} credential transactions, sequences 1..={total}"
    );
}
