//! Crash safety of the receipt registry: the real `mpcp-pa serve` binary (SoftHSM2 receipt
//! key, sled, durable audit log, TLS) is SIGKILLed at random moments while requesters ask
//! for decisions and providers consume them and report outcomes. This test is the client,
//! so it knows which answers were acknowledged. After each kill it opens the store and
//! checks that decisions, registry entries and outcomes match their audit entries one to
//! one (none without its entry, no entry without its record, no decision consumed twice),
//! and that everything acknowledged is there. After each restart it presents every
//! acknowledged decision again: an admitted one answers already_consumed (with its outcome
//! when one was acknowledged, byte for byte), never admitted a second time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::kit;
use crate::kit::bin::{Server, bin, client, json_post, json_put, kill_round, serve_on};
use crate::kit::rng::Rng;
use mpcp_pa::api::receipt_book::{Consumption, StoredOutcome, trees};
use mpcp_pa::audit::{AuditLog, Entry};
use mpcp_pa::clock::SystemClock;
use mpcp_pa::events::Event;
use mpcp_pa::store::Store;
use serde_json::{Value, json};

const ROUNDS: usize = 6;
const WORKERS: usize = 2;
const PROVIDER: &str = "mcp://provider.crash.test";

fn start(data: &Path) -> (Server, String) {
    serve_on(
        data,
        &[
            "--issuer",
            "pa.receipts-crash.test",
            "--rate-per-token",
            "0",
        ],
    )
}

fn call(nonce: &str) -> Value {
    json!({"name": "pay", "arguments": {"amountMinor": 1200, "to": "acct-7"},
           "_meta": {"authorization_binding": {"nonce": nonce}}})
}

/// What the client was told about one call.
#[derive(Debug, Clone, Default)]
struct Seen {
    decision: Option<Value>,
    admitted: bool,
    /// The outcome bytes as released.
    outcome: Option<Vec<u8>>,
}

type Calls = Arc<Mutex<BTreeMap<String, Seen>>>;

struct Tokens {
    requester: String,
    consumer: String,
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    body: &Value,
) -> Option<(u16, Vec<u8>)> {
    let r = json_post(http, format!("{base}{path}"), token, body.to_string())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.bytes().await.ok()?.to_vec()))
}

fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(b)))
}

/// Decides, consumes and reports calls until the service dies; returns the nonces of the
/// calls it started.
async fn worker(
    http: reqwest::Client,
    base: String,
    t: Arc<Tokens>,
    calls: Calls,
    stop: Arc<AtomicBool>,
    round: usize,
    w: usize,
) -> Vec<String> {
    let mut mine = Vec::new();
    for n in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let nonce = format!("r{round}-w{w}-{n}");
        calls.lock().unwrap().insert(nonce.clone(), Seen::default());
        mine.push(nonce.clone());
        let req = json!({"audience": PROVIDER, "actionId": format!("act-{nonce}"),
                         "subject": "agent:payer", "request": call(&nonce)});
        let Some((status, body)) =
            post(&http, &base, &t.requester, "/v1/receipts/decisions", &req).await
        else {
            break;
        };
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        let decision = json_of(&body);
        calls.lock().unwrap().get_mut(&nonce).unwrap().decision = Some(decision.clone());
        let consume = json!({"decision": decision, "request": call(&nonce)});
        let Some((status, body)) =
            post(&http, &base, &t.consumer, "/v1/receipts/consume", &consume).await
        else {
            break;
        };
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        calls.lock().unwrap().get_mut(&nonce).unwrap().admitted = true;
        let digest = json_of(&body)["decisionDigest"].clone();
        let report = json!({"decisionDigest": digest, "status": "executed"});
        let Some((status, body)) =
            post(&http, &base, &t.consumer, "/v1/receipts/outcomes", &report).await
        else {
            break;
        };
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        calls.lock().unwrap().get_mut(&nonce).unwrap().outcome = Some(body);
    }
    mine
}

/// Checks the killed service's store against its audit log and what was acknowledged;
/// returns the number of registry entries.
fn check_store(data: &Path, calls: &BTreeMap<String, Seen>, round: usize) -> usize {
    let store = Store::open(&mpcp_pa::app::DataDir::new(data).store()).unwrap();
    let log = AuditLog::open_existing(&store, Arc::new(SystemClock))
        .unwrap_or_else(|e| panic!("round {round}: audit log does not reopen: {e}"));
    let (mut decided, mut consumed, mut outcomes) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for raw in log.entries(0, log.size()).unwrap() {
        let e: Entry = serde_json::from_slice(&raw).unwrap();
        let (set, d) = match e.event {
            Event::ReceiptDecided {
                decision_digest, ..
            } => (&mut decided, decision_digest),
            Event::ReceiptConsumed {
                decision_digest, ..
            } => (&mut consumed, decision_digest),
            Event::ReceiptOutcomeSigned {
                decision_digest, ..
            } => (&mut outcomes, decision_digest),
            _ => continue,
        };
        assert!(set.insert(d.clone()), "round {round}: {d} recorded twice");
    }
    let keys = |tree: &str| -> BTreeSet<String> {
        store
            .tree(tree)
            .unwrap()
            .iter()
            .map(|i| String::from_utf8(i.unwrap().0.to_vec()).unwrap())
            .collect()
    };
    assert_eq!(
        keys(trees::RECEIPT_DECISIONS),
        decided,
        "round {round}: decisions"
    );
    assert_eq!(
        keys(trees::RECEIPT_OUTCOMES),
        outcomes,
        "round {round}: outcomes"
    );
    let mut by_nonce = BTreeMap::new();
    let mut by_action = BTreeSet::new();
    for item in store.tree(trees::RECEIPT_CONSUMED).unwrap().iter() {
        let (k, v) = item.unwrap();
        let c: Consumption = serde_json::from_slice(&v).unwrap();
        if let Some(nonce) = k.strip_prefix(b"n\0") {
            by_nonce.insert(
                String::from_utf8(nonce.to_vec()).unwrap(),
                c.decision_digest,
            );
        } else {
            by_action.insert(c.decision_digest);
        }
    }
    let registry: BTreeSet<String> = by_nonce.values().cloned().collect();
    assert_eq!(
        registry, consumed,
        "round {round}: registry vs receipt_consumed"
    );
    assert_eq!(
        by_action, consumed,
        "round {round}: action index vs receipt_consumed"
    );
    let outcome_tree = store.tree(trees::RECEIPT_OUTCOMES).unwrap();
    for (nonce, seen) in calls {
        if let Some(d) = &seen.decision {
            let digest = mpcp_pa::receipts::record::decision_digest(d).unwrap();
            assert!(
                decided.contains(&digest),
                "round {round}: acknowledged {nonce} lost"
            );
            if seen.admitted {
                assert_eq!(by_nonce.get(nonce), Some(&digest), "round {round}: {nonce}");
            }
            if let Some(bytes) = &seen.outcome {
                let stored: StoredOutcome =
                    serde_json::from_slice(&outcome_tree.get(&digest).unwrap().unwrap()).unwrap();
                assert_eq!(&stored.record, &json_of(bytes), "round {round}: {nonce}");
            }
        }
    }
    by_nonce.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_service_consumes_each_call_once_with_its_entry() {
    let _gate = kit::gate::exclusive();
    let dir = kit::tmp::dir("receipts_crash");
    let data = dir.path();
    bin(data, &["hsm", "init-dev"]);
    for (role, alg) in [
        ("grant-signing", "EdDSA"),
        ("root", "EdDSA"),
        ("audit", "EdDSA"),
        ("receipt-signing", "ES256"),
    ] {
        bin(data, &["keys", "rotate", "--role", role, "--alg", alg]);
    }
    let token = |name: &str, role: &str, extra: &[&str]| {
        let mut args = vec!["tokens", "create", "--name", name, "--role", role];
        args.extend_from_slice(extra);
        String::from_utf8(bin(data, &args).stdout)
            .unwrap()
            .trim()
            .to_string()
    };
    let officer = token("officer", "security-officer", &[]);
    let t = Arc::new(Tokens {
        requester: token("requester", "receipt-requester", &[]),
        consumer: token("consumer", "receipt-consumer", &["--audience", PROVIDER]),
    });
    let calls: Calls = Arc::new(Mutex::new(BTreeMap::new()));
    let mut rng = Rng::from_clock();
    let mut admitted_total = 0;
    for round in 0..=ROUNDS {
        let (server, base) = start(data);
        let http = client(data);
        if round == 0 {
            let policy = json!({"version": 1, "policyId": "pay-1", "otherwise": "block",
                "rules": [{"requesters": ["requester"], "audiences": [PROVIDER], "tools": ["pay"],
                           "decision": "allow", "maxAgeSeconds": 600}]});
            let r = json_put(
                &http,
                format!("{base}/v1/receipts/policy"),
                &officer,
                policy.to_string(),
            )
            .send()
            .await
            .unwrap();
            assert_eq!(r.status().as_u16(), 201);
        }
        // Every decision seen so far, presented again after the restart.
        let snapshot = calls.lock().unwrap().clone();
        for (nonce, seen) in &snapshot {
            let Some(d) = &seen.decision else { continue };
            let (status, body) = post(
                &http,
                &base,
                &t.consumer,
                "/v1/receipts/consume",
                &json!({"decision": d, "request": call(nonce)}),
            )
            .await
            .unwrap();
            let v = json_of(&body);
            if seen.admitted {
                assert_eq!(
                    (status, &v["verdict"]),
                    (409, &json!("already_consumed")),
                    "{nonce}: {v}"
                );
                if let Some(o) = &seen.outcome {
                    assert_eq!(v["outcome"], json_of(o), "{nonce}: prior outcome");
                }
            } else {
                // Its consume was never acknowledged: committed before the kill, or not.
                assert!(
                    v["verdict"] == "already_consumed" || v["verdict"] == "admitted",
                    "{nonce}: {v}"
                );
                calls.lock().unwrap().get_mut(nonce).unwrap().admitted = true;
            }
        }
        if round == ROUNDS {
            drop(server);
            let n = check_store(data, &calls.lock().unwrap(), round);
            println!(
                "{ROUNDS} kills, {n} calls consumed once each, {admitted_total} checked after restarts"
            );
            assert!(
                n >= ROUNDS * WORKERS,
                "too little progress to test anything"
            );
            break;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                tokio::spawn(worker(
                    http.clone(),
                    base.clone(),
                    t.clone(),
                    calls.clone(),
                    stop.clone(),
                    round,
                    w,
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300 + rng.next() % 700)).await;
        kill_round(server, &stop, workers).await;
        admitted_total = check_store(data, &calls.lock().unwrap(), round);
    }
}
