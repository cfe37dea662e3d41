//! Crash safety of issuance: the real `mpcp-pa serve` binary (SoftHSM2 token, sled store,
//! durable audit log, TLS) is SIGKILLed at random moments while clients issue grants with
//! `Idempotency-Key`s, at least 20 times. This test is the client, so it knows exactly which
//! responses were acknowledged. After each kill it checks the store directly and then
//! restarts the service and retries every key sent during the previous run:
//!
//! - an acknowledged key replays its first response byte for byte (same signature);
//! - a key whose response was lost gets either that first response (it was committed) or
//!   one fresh issuance (it was not);
//! - in the store, the audit entries, grant records and idempotency records match one to
//!   one (each grant record has exactly one `grant_issued` entry and one idempotency record
//!   holding the same signed grant; none exists without the others), and no grant id ever
//!   has a second entry.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::kit;
use crate::kit::bin::{
    Recorded, Server, bin, client_builder, json_post, keys_to_retry, kill_round, resend,
    send_recorded, serve_on,
};
use crate::kit::rng::Rng;
use mpcp_pa::audit::{AuditLog, Entry};
use mpcp_pa::canonical::canonical_bytes;
use mpcp_pa::clock::SystemClock;
use mpcp_pa::events::Event;
use mpcp_pa::store::Store;
use serde_json::{Value, json};

const ROUNDS: usize = 22;
const WORKERS: usize = 8;
const TOKEN_NAME: &str = "crash-issuer";

/// The client of every round: trusts the data dir's certificate, 30 s timeout.
fn client(data: &Path) -> reqwest::Client {
    client_builder(data)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Starts `serve` (see [`serve_on`]); returns the server and its base URL.
fn start(data: &Path) -> (Server, String) {
    serve_on(
        data,
        &[
            "--issuer",
            "pa.crash.test",
            "--rate-per-token",
            "0",
            "--destruction-interval-minutes",
            "0",
        ],
    )
}

/// What the client knows about one key.
#[derive(Debug, Clone)]
struct Sent {
    body: String,
    /// The response body, once one was received.
    acked: Option<Vec<u8>>,
}

impl Recorded for Sent {
    fn request(&self) -> (&str, &str) {
        ("/v1/grants", &self.body)
    }
}

type Keys = Arc<Mutex<BTreeMap<String, Sent>>>;

/// Checks the store of the killed service: entries, grant records and idempotency records
/// match one to one, and everything acknowledged is there exactly as released.
fn check_store(data: &Path, keys: &BTreeMap<String, Sent>, round: usize) -> usize {
    let store = Store::open(&mpcp_pa::app::DataDir::new(data).store()).unwrap();
    let log = AuditLog::open_existing(&store, Arc::new(SystemClock))
        .unwrap_or_else(|e| panic!("round {round}: audit log does not reopen: {e}"));
    let mut issued: BTreeMap<String, usize> = BTreeMap::new();
    let size = log.size();
    let mut start = 0;
    while start < size {
        let end = size.min(start + 10_000);
        for raw in log.entries(start, end).unwrap() {
            let e: Entry = serde_json::from_slice(&raw).unwrap();
            if let Event::GrantIssued { grant_id, .. } = e.event {
                *issued.entry(grant_id).or_default() += 1;
            }
        }
        start = end;
    }
    for (id, n) in &issued {
        assert_eq!(*n, 1, "round {round}: grant {id} has {n} audit entries");
    }
    let grants = store.tree("api/grants").unwrap();
    let idem = store.tree("api/idempotency").unwrap();
    let mut records = BTreeMap::new();
    for item in grants.iter() {
        let (k, v) = item.unwrap();
        let rec: Value = serde_json::from_slice(&v).unwrap();
        records.insert(
            String::from_utf8(k.to_vec()).unwrap(),
            canonical_bytes(&rec["grant"]).unwrap(),
        );
    }
    let mut responses = BTreeMap::new();
    for item in idem.iter() {
        let (k, v) = item.unwrap();
        let k = String::from_utf8(k.to_vec()).unwrap();
        let key = k
            .strip_prefix(&format!("{TOKEN_NAME}\n"))
            .unwrap()
            .to_string();
        let rec: Value = serde_json::from_slice(&v).unwrap();
        // A grant's response is kept once, in its grant record, which the idempotency record
        // names; a name without its record stays a mismatch below.
        let body = match rec.get("bodyRef") {
            Some(at) => {
                assert_eq!(
                    (at, rec["body"].as_str()),
                    (
                        &serde_json::json!({"tree": "api/grants", "key": format!("g-{key}"), "member": "grant"}),
                        Some("")
                    ),
                    "round {round}: {key}: unexpected idempotency record"
                );
                records
                    .get(&format!("g-{key}"))
                    .cloned()
                    .unwrap_or_else(|| b"<no grant record>".to_vec())
            }
            None => rec["body"].as_str().unwrap().as_bytes().to_vec(),
        };
        responses.insert(key, body);
    }
    let ids = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<BTreeSet<_>>();
    let issued_ids: BTreeSet<String> = issued.keys().cloned().collect();
    assert_eq!(
        ids(&records),
        issued_ids,
        "round {round}: grant records without audit entry or the reverse"
    );
    let key_grants: BTreeSet<String> = responses.keys().map(|k| format!("g-{k}")).collect();
    assert_eq!(
        key_grants, issued_ids,
        "round {round}: idempotency records without their grant or the reverse"
    );
    for (key, body) in &responses {
        assert_eq!(
            &records[&format!("g-{key}")],
            body,
            "round {round}: {key}: stored response is not the stored grant"
        );
    }
    for (key, sent) in keys {
        if let Some(acked) = &sent.acked {
            assert_eq!(
                responses.get(key),
                Some(acked),
                "round {round}: acknowledged {key} is not stored as released"
            );
        }
    }
    issued_ids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_service_never_signs_a_key_twice_and_loses_nothing_acknowledged() {
    let _gate = kit::gate::exclusive();
    let dir = kit::tmp::dir("api_crash");
    let data = dir.path();
    bin(data, &["hsm", "init-dev"]);
    for role in ["grant-signing", "root", "audit"] {
        bin(data, &["keys", "rotate", "--role", role, "--alg", "EdDSA"]);
    }
    let token = String::from_utf8(
        bin(
            data,
            &["tokens", "create", "--name", TOKEN_NAME, "--role", "issuer"],
        )
        .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let mut rng = Rng::from_clock();
    let keys: Keys = Arc::new(Mutex::new(BTreeMap::new()));
    let mut previous_round: Vec<String> = Vec::new();
    let (mut lost_committed, mut lost_fresh, mut killed_in_flight) = (0, 0, 0);
    let mut policy_hash = String::new();

    for round in 0..=ROUNDS {
        let (server, base) = start(data);
        let http = client(data);
        if round == 0 {
            let r = json_post(
                &http,
                format!("{base}/v1/policies"),
                &token,
                r#"{"version":"1.0"}"#,
            )
            .send()
            .await
            .unwrap();
            assert_eq!(r.status(), 201);
            let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            policy_hash = v["policyHash"].as_str().unwrap().to_string();
        }

        // Retry every key the previous run was sent (the last round retries all of them).
        let retry = keys_to_retry(&keys, &mut previous_round, round == ROUNDS);
        for key in retry {
            let (sent, status, replayed, body) = resend(&http, &base, &token, &keys, &key).await;
            assert_eq!(
                status,
                201,
                "round {round}: retry of {key}: {}",
                String::from_utf8_lossy(&body)
            );
            match &sent.acked {
                Some(first) => {
                    assert!(replayed, "round {round}: {key} was signed again");
                    assert_eq!(&body, first, "round {round}: {key} replays other bytes");
                }
                None => {
                    if replayed {
                        lost_committed += 1;
                    } else {
                        lost_fresh += 1;
                    }
                    keys.lock().unwrap().get_mut(&key).unwrap().acked = Some(body);
                }
            }
        }
        if round == ROUNDS {
            drop(server);
            break;
        }

        // New issuances from several clients until the kill.
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let (http, base, token, keys, stop, ph) = (
                http.clone(),
                base.clone(),
                token.clone(),
                keys.clone(),
                stop.clone(),
                policy_hash.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for n in 0u64.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let key = format!("r{round}-w{w}-{n}");
                    let expires = mpcp_pa::clock::format_rfc3339(
                        time::OffsetDateTime::now_utc() + Duration::from_secs(3600),
                    );
                    let body = json!({
                        "version": "1.0", "grantId": format!("g-{key}"), "policyHash": ph,
                        "subjectId": "v-1", "scope": "SESSION", "allowedRails": ["xrpl"],
                        "expiresAt": expires,
                        "authorizedGateway": "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b5",
                        "velocityLimit": {"maxPayments": 10, "windowSeconds": 3600}
                    })
                    .to_string();
                    let request = Sent { body, acked: None };
                    match send_recorded(&http, &base, &token, &keys, &mut mine, &key, request).await
                    {
                        Some((201, false, bytes)) => {
                            keys.lock().unwrap().get_mut(&key).unwrap().acked = Some(bytes);
                        }
                        Some((status, replayed, bytes)) => panic!(
                            "{key}: {status} replayed={replayed} {}",
                            String::from_utf8_lossy(&bytes)
                        ),
                        // The service died with this request in flight.
                        None => break,
                    }
                }
                mine
            }));
        }
        tokio::time::sleep(Duration::from_millis(30 + rng.next() % 270)).await;
        previous_round.extend(kill_round(server, &stop, workers).await);
        let snapshot = keys.lock().unwrap().clone();
        killed_in_flight += previous_round
            .iter()
            .filter(|k| snapshot[*k].acked.is_none())
            .count();
        check_store(data, &snapshot, round);
    }

    let all = keys.lock().unwrap().clone();
    let issued = check_store(data, &all, ROUNDS);
    assert_eq!(
        issued,
        all.len(),
        "every key ends with exactly one issuance"
    );
    assert!(all.values().all(|s| s.acked.is_some()));
    println!(
        "{ROUNDS} kills, {} keys, {killed_in_flight} in flight at a kill: {lost_committed} \
         committed (replayed on retry), {lost_fresh} not committed (issued on retry)",
        all.len()
    );
    assert!(
        all.len() >= ROUNDS * WORKERS,
        "too little progress to test anything"
    );
}
