//! Crash safety of API token administration: the real `mpcp-pa serve` binary (SoftHSM2
//! tokens, sled store, durable audit log, TLS) is SIGKILLed at random moments, 12 times,
//! while a security officer (created with the `tokens create` CLI) creates API tokens and
//! revokes them, every request with an `Idempotency-Key`. Each created token is used at once
//! (it must work) and again after its revocation is acknowledged (it must be refused). This
//! test is the client, so it knows which responses were acknowledged. After each kill it
//! opens the store and checks:
//!
//! - token records and `token_*` audit entries match one to one: each record has exactly one
//!   `token_created` entry and each entry its record (with its id index); a record is revoked
//!   exactly when it has a `token_revoked` entry; nothing is recorded twice;
//! - the officer's idempotency records and the officer's `token_*` entries match one to one; a
//!   creation's record holds the 409 TOKEN_SECRET_NOT_REPLAYED refusal (never the secret), a
//!   revocation's record the response as released;
//! - (before the first start and after the last round) no secret of a created token is
//!   anywhere in the store's files (records, idempotency records, audit log), neither as
//!   handed out nor as raw bytes, while the hash of each is (the scan reads where records
//!   live).
//!
//! After each restart it retries every request sent before the kill: an acknowledged creation
//! answers 409 TOKEN_SECRET_NOT_REPLAYED (`Idempotent-Replayed`), an acknowledged revocation
//! its first response byte for byte; an unacknowledged one replays (it was committed) or runs
//! once afresh (it was not). The last round replays every request ever sent and checks that
//! this added no audit entry beyond the fresh runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::kit;
use crate::kit::bin::{
    Recorded, Server, bin, client, keys_to_retry, kill_round, resend, send_recorded, serve_on,
};
use crate::kit::rng::Rng;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mpcp_pa::api::tokens::TokenRecord;
use mpcp_pa::audit::{AuditLog, Entry};
use mpcp_pa::clock::SystemClock;
use mpcp_pa::events::Event;
use mpcp_pa::store::Store;
use serde_json::Value;
use sha2::{Digest, Sha256};

const ROUNDS: usize = 12;
const WORKERS: usize = 2;
const OFFICER: &str = "crash-officer";

/// Starts `serve` (see [`serve_on`]); returns the server and its base URL.
fn start(data: &Path) -> (Server, String) {
    serve_on(
        data,
        &["--issuer", "pa.tokens-crash.test", "--rate-per-token", "0"],
    )
}

/// One request the client sent, under its own Idempotency-Key.
#[derive(Debug, Clone)]
struct Sent {
    /// The token it creates or revokes.
    name: String,
    create: bool,
    path: String,
    body: String,
    /// The first response received (status, body).
    acked: Option<(u16, Vec<u8>)>,
}

impl Recorded for Sent {
    fn request(&self) -> (&str, &str) {
        (&self.path, &self.body)
    }
}

type Requests = Arc<Mutex<BTreeMap<String, Sent>>>;
/// Secrets handed out by acknowledged creations.
type Secrets = Arc<Mutex<Vec<String>>>;

/// Status of an authenticated GET with `token` (a route the auditor role may call).
async fn probe(http: &reqwest::Client, base: &str, token: &str) -> reqwest::Result<u16> {
    let r = http
        .get(format!("{base}/v1/audit/vkeys"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    Ok(r.status().as_u16())
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| panic!("non-JSON body {}", String::from_utf8_lossy(bytes)))
}

/// Asserts the answer to a creation this key already made.
fn assert_not_replayed(what: &str, status: u16, replayed: bool, body: &[u8], name: &str) {
    let v = json(body);
    assert_eq!(
        (status, replayed, v["code"].as_str()),
        (409, true, Some("TOKEN_SECRET_NOT_REPLAYED")),
        "{what}: {v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{name:?}")),
        "{what}: {v}"
    );
}

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Which of `needles` (each at least 8 bytes) occur in the files of the store: one pass over
/// the bytes, an 8-byte prefix index, confirmed in full.
fn on_disk(data: &Path, needles: &[Vec<u8>]) -> Vec<bool> {
    let mut paths = Vec::new();
    files(&mpcp_pa::app::DataDir::new(data).store(), &mut paths);
    let mut index: HashMap<[u8; 8], Vec<usize>> = HashMap::new();
    for (i, n) in needles.iter().enumerate() {
        index.entry(n[..8].try_into().unwrap()).or_default().push(i);
    }
    let mut found = vec![false; needles.len()];
    for p in paths {
        let disk = std::fs::read(p).unwrap();
        for (at, w) in disk.windows(8).enumerate() {
            if let Some(ix) = index.get(<&[u8; 8]>::try_from(w).unwrap()) {
                for &i in ix {
                    found[i] |= disk[at..].starts_with(&needles[i]);
                }
            }
        }
    }
    found
}

/// No secret (base64url as handed out, or its 32 raw bytes) is in any file of the store,
/// while the hash of each is: the scan reads where token records live.
fn check_no_secret_on_disk(data: &Path, hashes: &[String], secrets: &[String]) {
    let mut needles: Vec<Vec<u8>> = hashes.iter().map(|h| h.as_bytes().to_vec()).collect();
    for s in secrets {
        let part = s.splitn(3, '_').nth(2).unwrap();
        let raw = URL_SAFE_NO_PAD.decode(part).unwrap();
        assert!(
            hashes.contains(&hex::encode(Sha256::digest(&raw))),
            "no record for a secret"
        );
        needles.push(part.as_bytes().to_vec());
        needles.push(raw);
    }
    let t = Instant::now();
    let found = on_disk(data, &needles);
    println!("scanned for {} secrets in {:?}", secrets.len(), t.elapsed());
    let (hashes_found, secrets_found) = found.split_at(hashes.len());
    assert!(
        hashes_found.iter().all(|f| *f),
        "the scan misses stored hashes"
    );
    assert!(
        secrets_found.iter().all(|f| !f),
        "{} token secrets are stored",
        secrets_found.iter().filter(|f| **f).count()
    );
}

/// Checks the store of the killed service (see the module doc); returns the number of the
/// officer's `token_*` entries.
fn check_store(
    data: &Path,
    sent: &BTreeMap<String, Sent>,
    secrets: &[String],
    round: usize,
    scan_secrets: bool,
) -> usize {
    let store = Store::open(&mpcp_pa::app::DataDir::new(data).store()).unwrap();
    let log = AuditLog::open_existing(&store, Arc::new(SystemClock))
        .unwrap_or_else(|e| panic!("round {round}: audit log does not reopen: {e}"));
    let mut created: BTreeMap<String, usize> = BTreeMap::new();
    let mut revoked: BTreeMap<String, usize> = BTreeMap::new();
    let mut officer: BTreeSet<(bool, String)> = BTreeSet::new();
    for raw in log.entries(0, log.size()).unwrap() {
        let e: Entry = serde_json::from_slice(&raw).unwrap();
        let (create, name) = match e.event {
            Event::TokenCreated { token_name, .. } => (true, token_name),
            Event::TokenRevoked { token_name } => (false, token_name),
            _ => continue,
        };
        let count = if create { &mut created } else { &mut revoked };
        *count.entry(name.clone()).or_default() += 1;
        if e.actor.name == OFFICER {
            officer.insert((create, name));
        }
    }
    for (what, m) in [("created", &created), ("revoked", &revoked)] {
        for (name, n) in m {
            assert_eq!(*n, 1, "round {round}: {name} {what} {n} times");
        }
    }
    // Records and entries, one to one.
    let ids = store.tree("api/token-ids").unwrap();
    let mut records = BTreeMap::new();
    let mut hashes = Vec::new();
    for item in store.tree("api/tokens").unwrap().iter() {
        let (k, v) = item.unwrap();
        let rec: TokenRecord = serde_json::from_slice(&v).unwrap();
        assert_eq!(k.as_ref(), rec.name.as_bytes());
        assert_eq!(
            ids.get(rec.id.as_bytes()).unwrap().as_deref(),
            Some(rec.name.as_bytes()),
            "round {round}: {} has no id index",
            rec.name
        );
        assert!(
            created.contains_key(&rec.name),
            "round {round}: token {} exists without its token_created entry",
            rec.name
        );
        assert_eq!(
            rec.revoked_at.is_some(),
            revoked.contains_key(&rec.name),
            "round {round}: revocation of {} and its entry differ",
            rec.name
        );
        hashes.push(rec.secret_sha256.clone());
        records.insert(rec.name.clone(), rec);
    }
    assert_eq!(ids.len(), records.len(), "round {round}: stray id index");
    for name in created.keys() {
        assert!(
            records.contains_key(name),
            "round {round}: token_created {name} without its record"
        );
    }
    // The officer's entries and idempotency records, one to one.
    let mut described = BTreeSet::new();
    let mut stored: BTreeMap<String, (u16, Vec<u8>)> = BTreeMap::new();
    for item in store.tree("api/idempotency").unwrap().iter() {
        let (k, v) = item.unwrap();
        let k = String::from_utf8(k.to_vec()).unwrap();
        let Some(key) = k.strip_prefix(&format!("{OFFICER}\n")) else {
            continue;
        };
        let s = sent
            .get(key)
            .unwrap_or_else(|| panic!("round {round}: record for unknown key {key}"));
        let rec: Value = serde_json::from_slice(&v).unwrap();
        let status = rec["status"].as_u64().unwrap() as u16;
        let body = rec["body"].as_str().unwrap().as_bytes().to_vec();
        if s.create {
            assert_eq!(status, 409, "round {round}: {key}");
            assert_eq!(json(&body)["code"], "TOKEN_SECRET_NOT_REPLAYED");
        } else {
            assert_eq!(status, 200, "round {round}: {key}");
            assert_eq!(json(&body)["token"]["name"], s.name.as_str());
        }
        let change = (s.create, s.name.clone());
        assert!(
            officer.contains(&change),
            "round {round}: {key}: stored response {change:?} has no audit entry"
        );
        assert!(
            described.insert(change),
            "round {round}: two records for {key}"
        );
        stored.insert(key.to_string(), (status, body));
    }
    assert_eq!(
        described, officer,
        "round {round}: audited changes without their idempotency record"
    );
    for (key, s) in sent {
        match &s.acked {
            Some((200, body)) => assert_eq!(
                stored.get(key),
                Some(&(200, body.clone())),
                "round {round}: acknowledged {key} is not stored as released"
            ),
            Some(_) => assert!(
                stored.get(key).is_some_and(|r| r.0 == 409),
                "round {round}: acknowledged creation {key} has no record"
            ),
            None => {}
        }
    }
    let n = officer.len();
    drop((log, ids, store));
    if scan_secrets {
        check_no_secret_on_disk(data, &hashes, secrets);
    }
    n
}

/// Creates and revokes tokens until the service dies; returns the keys it sent.
#[allow(clippy::too_many_arguments)]
async fn worker(
    http: reqwest::Client,
    base: String,
    token: String,
    sent: Requests,
    secrets: Secrets,
    stop: Arc<AtomicBool>,
    round: usize,
    w: usize,
) -> Vec<String> {
    let mut mine = Vec::new();
    // A created token waiting for its revocation: (name, secret).
    let mut live: Option<(String, String)> = None;
    for n in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let key = format!("r{round}-w{w}-{n}");
        let (name, create) = match &live {
            Some((name, _)) => (name.clone(), false),
            None => (format!("t-{round}-{w}-{n}"), true),
        };
        let (path, body) = if create {
            (
                "/v1/tokens".to_string(),
                format!(r#"{{"name":"{name}","role":"auditor"}}"#),
            )
        } else {
            (format!("/v1/tokens/{name}/revoke"), "{}".to_string())
        };
        let request = Sent {
            name: name.clone(),
            create,
            path: path.clone(),
            body,
            acked: None,
        };
        let Some((status, replayed, bytes)) =
            send_recorded(&http, &base, &token, &sent, &mut mine, &key, request).await
        else {
            break; // The service died with this request in flight.
        };
        let expected = if create { 201 } else { 200 };
        assert_eq!(
            (status, replayed),
            (expected, false),
            "{key} {path}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if create {
            let secret = json(&bytes)["token"].as_str().unwrap().to_string();
            secrets.lock().unwrap().push(secret.clone());
            live = Some((name.clone(), secret));
        }
        sent.lock().unwrap().get_mut(&key).unwrap().acked = Some((status, bytes));
        // A created token works at once; a revoked one is refused from the next request on.
        let (_, secret) = live.as_ref().unwrap();
        let Ok(got) = probe(&http, &base, secret).await else {
            break;
        };
        assert_eq!(got, if create { 200 } else { 401 }, "{key}: token {name}");
        if !create {
            live = None;
        }
    }
    mine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_service_applies_each_token_change_once_with_its_entry() {
    let _gate = kit::gate::exclusive();
    let dir = kit::tmp::dir("api_tokens_crash");
    let data = dir.path();
    bin(data, &["hsm", "init-dev"]);
    for role in ["grant-signing", "root", "audit"] {
        bin(data, &["keys", "rotate", "--role", role, "--alg", "EdDSA"]);
    }
    let args = [
        "tokens",
        "create",
        "--name",
        OFFICER,
        "--role",
        "security-officer",
    ];
    let token = String::from_utf8(bin(data, &args).stdout)
        .unwrap()
        .trim()
        .to_string();
    let mut rng = Rng::from_clock();
    let sent: Requests = Arc::new(Mutex::new(BTreeMap::new()));
    let secrets: Secrets = Arc::new(Mutex::new(vec![token.clone()]));
    let mut previous_round: Vec<String> = Vec::new();
    let (mut lost_committed, mut lost_fresh) = (0, 0);
    let mut changes_at_last_check =
        check_store(data, &BTreeMap::new(), &secrets.lock().unwrap(), 0, true);

    for round in 0..=ROUNDS {
        let (server, base) = start(data);
        let http = client(data);

        // Retry every request of the previous run (the last round: every request ever sent).
        let last = round == ROUNDS;
        let retry = keys_to_retry(&sent, &mut previous_round, last);
        let mut fresh = 0;
        for key in retry {
            let (s, status, replayed, body) = resend(&http, &base, &token, &sent, &key).await;
            let what = format!("round {round}: retry of {key} {}", s.path);
            match (&s.acked, s.create) {
                (Some(_), true) => assert_not_replayed(&what, status, replayed, &body, &s.name),
                (Some((_, first)), false) => {
                    assert_eq!((status, replayed), (200, true), "{what}");
                    assert_eq!(&body, first, "{what}: replays other bytes");
                }
                (None, create) => {
                    if replayed {
                        lost_committed += 1;
                        if create {
                            assert_not_replayed(&what, status, replayed, &body, &s.name);
                        } else {
                            assert_eq!(status, 200, "{what}");
                        }
                    } else {
                        lost_fresh += 1;
                        fresh += 1;
                        assert_eq!(status, if create { 201 } else { 200 }, "{what}");
                        if create {
                            let secret = json(&body)["token"].as_str().unwrap().to_string();
                            assert_eq!(probe(&http, &base, &secret).await.unwrap(), 200);
                            secrets.lock().unwrap().push(secret);
                        }
                    }
                    sent.lock().unwrap().get_mut(&key).unwrap().acked = Some((status, body));
                }
            }
        }
        if last {
            drop(server);
            let all = sent.lock().unwrap().clone();
            let changes = check_store(data, &all, &secrets.lock().unwrap(), round, true);
            assert_eq!(
                changes,
                changes_at_last_check + fresh,
                "replaying acknowledged requests added audit entries"
            );
            assert!(all.values().all(|s| s.acked.is_some()));
            println!(
                "{ROUNDS} kills, {} requests, {changes} audited token changes; lost responses: \
                 {lost_committed} committed (replayed), {lost_fresh} not (ran on retry)",
                all.len()
            );
            assert!(
                changes >= ROUNDS * WORKERS,
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
                    token.clone(),
                    sent.clone(),
                    secrets.clone(),
                    stop.clone(),
                    round,
                    w,
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50 + rng.next() % 400)).await;
        previous_round.extend(kill_round(server, &stop, workers).await);
        let snapshot = sent.lock().unwrap().clone();
        changes_at_last_check =
            check_store(data, &snapshot, &secrets.lock().unwrap(), round, false);
    }
}
