//! Crash safety of key management: the real `mpcp-pa serve` binary (SoftHSM2 tokens, sled
//! store, durable audit log, TLS) is SIGKILLed at random moments, at least 12 times, while a
//! security officer rotates the grant-signing and root keys (each rotation generates its key)
//! and revokes and schedules the destruction of retired keys, every request with an
//! `Idempotency-Key`. This test is the client, so it knows which responses were
//! acknowledged. After each kill it opens the store and checks:
//!
//! - replaying the `key_*` audit entries from an empty registry yields exactly the stored key
//!   records and active pointers: no entry without its change, no change without its entry,
//!   no operation recorded twice (each entry must be a valid transition of the state before);
//! - every role has exactly one active key, and it is the only record in state active;
//! - the officer's state-changing entries (`key_activated`, `key_revoked`,
//!   `key_destroy_scheduled`) and the officer's idempotency records match one to one, each
//!   record's stored response describing its entry's change; every acknowledged response is
//!   stored byte for byte as released.
//!
//! After each restart it retries every request sent before the kill: an acknowledged one
//! replays its first response byte for byte (`Idempotent-Replayed`), an unacknowledged one
//! replays (it was committed) or runs once afresh (it was not). In the last round it replays
//! every request ever sent and checks that this added no audit entry beyond the fresh runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::kit;
use crate::kit::bin::{
    Recorded, Server, bin, client, keys_to_retry, kill_round, resend, send_recorded, serve_on,
};
use crate::kit::rng::Rng;
use mpcp_pa::audit::{AuditLog, Entry};
use mpcp_pa::clock::SystemClock;
use mpcp_pa::events::Event;
use mpcp_pa::keys::{KeyRecord, KeyState};
use mpcp_pa::store::Store;
use serde_json::{Value, json};

const ROUNDS: usize = 12;
const OFFICER: &str = "crash-officer";
/// Roles the officer rotates concurrently, one client task each (the audit role keeps its
/// key: it signs checkpoints).
const ROLES: [&str; 2] = ["grant-signing", "root"];

/// Starts `serve` (see [`serve_on`]); returns the server and its base URL.
fn start(data: &Path) -> (Server, String) {
    serve_on(
        data,
        &[
            "--issuer",
            "pa.keys-crash.test",
            "--rate-per-token",
            "0",
            "--destruction-interval-minutes",
            "0",
        ],
    )
}

/// One request the client sent, under its own Idempotency-Key.
#[derive(Debug, Clone)]
struct Sent {
    path: String,
    body: String,
    /// The response body, once one was received.
    acked: Option<Vec<u8>>,
}

impl Recorded for Sent {
    fn request(&self) -> (&str, &str) {
        (&self.path, &self.body)
    }
}

type Requests = Arc<Mutex<BTreeMap<String, Sent>>>;

/// The registry as the audit log tells it: state and scheduled flag per kid, active kid per
/// role.
#[derive(Debug, Default, PartialEq)]
struct Model {
    keys: BTreeMap<String, (KeyState, bool)>,
    active: BTreeMap<String, String>,
}

impl Model {
    /// Applies one entry, asserting it is a valid transition of the state before it.
    fn apply(&mut self, index: u64, event: &Event) {
        let bad = |why: &str| panic!("entry {index} ({event:?}): {why}");
        let state = |m: &Model, kid: &str| m.keys.get(kid).map(|s| s.0);
        match event {
            Event::KeyGenerated { kid, .. } => {
                if self.keys.contains_key(kid) {
                    bad("generated twice");
                }
                self.keys.insert(kid.clone(), (KeyState::Pending, false));
            }
            Event::KeyActivated { kid, role, retired } => {
                if state(self, kid) != Some(KeyState::Pending) {
                    bad("activates a key that is not pending");
                }
                if self.active.get(role) != retired.as_ref() {
                    bad("the retired key is not the role's active key");
                }
                if let Some(p) = retired {
                    self.keys.insert(p.clone(), (KeyState::Retired, false));
                }
                self.keys.insert(kid.clone(), (KeyState::Active, false));
                self.active.insert(role.clone(), kid.clone());
            }
            Event::KeyRetired { kid, role } => {
                if self.active.get(role) != Some(kid) {
                    bad("retires a key that is not active");
                }
                self.active.remove(role);
                self.keys.insert(kid.clone(), (KeyState::Retired, false));
            }
            Event::KeyRevoked { kid, role, .. } => {
                match state(self, kid) {
                    Some(KeyState::Pending | KeyState::Retired) => {}
                    Some(KeyState::Active) => {
                        self.active.remove(role);
                    }
                    _ => bad("revokes a key that is not live"),
                }
                self.keys.insert(kid.clone(), (KeyState::Revoked, false));
            }
            Event::KeyDestroyScheduled { kid, .. } => {
                if self.keys.get(kid) != Some(&(KeyState::Revoked, false)) {
                    bad("schedules a key that is not revoked and unscheduled");
                }
                self.keys.insert(kid.clone(), (KeyState::Revoked, true));
            }
            Event::KeyDestroyCancelled { kid, .. } => {
                if self.keys.get(kid) != Some(&(KeyState::Revoked, true)) {
                    bad("cancels what is not scheduled");
                }
                self.keys.insert(kid.clone(), (KeyState::Revoked, false));
            }
            Event::KeyDestroyed { kid, .. } => {
                if self.keys.get(kid) != Some(&(KeyState::Revoked, true)) {
                    bad("destroys what is not scheduled");
                }
                self.keys.insert(kid.clone(), (KeyState::Destroyed, false));
            }
            _ => {}
        }
    }
}

/// What a stored idempotency response says the officer changed: (action, kid).
fn response_change(path: &str, body: &Value) -> (&'static str, String) {
    let kid = |v: &Value| v["kid"].as_str().unwrap().to_string();
    if path.ends_with("/rotate") {
        ("key_activated", kid(&body["activated"]))
    } else if path.ends_with("/revoke") {
        ("key_revoked", kid(&body["key"]))
    } else {
        ("key_destroy_scheduled", kid(&body["key"]))
    }
}

/// Checks the store of the killed service (see the module doc); returns the number of the
/// officer's state-changing entries.
fn check_store(data: &Path, sent: &BTreeMap<String, Sent>, round: usize) -> usize {
    let store = Store::open(&mpcp_pa::app::DataDir::new(data).store()).unwrap();
    let log = AuditLog::open_existing(&store, Arc::new(SystemClock))
        .unwrap_or_else(|e| panic!("round {round}: audit log does not reopen: {e}"));
    let mut model = Model::default();
    let mut officer_changes: BTreeMap<(&'static str, String), usize> = BTreeMap::new();
    for (i, raw) in log.entries(0, log.size()).unwrap().iter().enumerate() {
        let e: Entry = serde_json::from_slice(raw).unwrap();
        model.apply(i as u64, &e.event);
        if e.actor.name == OFFICER {
            let change = match &e.event {
                Event::KeyActivated { kid, .. } => Some(("key_activated", kid.clone())),
                Event::KeyRevoked { kid, .. } => Some(("key_revoked", kid.clone())),
                Event::KeyDestroyScheduled { kid, .. } => {
                    Some(("key_destroy_scheduled", kid.clone()))
                }
                _ => None,
            };
            if let Some(c) = change {
                *officer_changes.entry(c).or_default() += 1;
            }
        }
    }
    // The stored registry is exactly what the log describes.
    let mut stored = Model::default();
    for item in store.tree("keys").unwrap().iter() {
        let (k, v) = item.unwrap();
        let rec: KeyRecord = serde_json::from_slice(&v).unwrap();
        assert_eq!(k.as_ref(), rec.kid.as_bytes());
        stored
            .keys
            .insert(rec.kid.clone(), (rec.state, rec.destroy_after.is_some()));
    }
    for item in store.tree("keys/active").unwrap().iter() {
        let (k, v) = item.unwrap();
        stored.active.insert(
            String::from_utf8(k.to_vec()).unwrap(),
            String::from_utf8(v.to_vec()).unwrap(),
        );
    }
    for (kid, s) in &stored.keys {
        assert_eq!(
            model.keys.get(kid),
            Some(s),
            "round {round}: record {kid} does not match its audit entries"
        );
    }
    assert_eq!(
        model, stored,
        "round {round}: audit entries and key records differ"
    );
    // One active key per role, and it is the only active record.
    assert_eq!(
        stored.active.keys().map(String::as_str).collect::<Vec<_>>(),
        ["audit", "grant-signing", "root"],
        "round {round}: a role lost its active key"
    );
    let active_records: BTreeSet<&String> = stored
        .keys
        .iter()
        .filter(|(_, s)| s.0 == KeyState::Active)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        active_records,
        stored.active.values().collect::<BTreeSet<_>>(),
        "round {round}: active records and active pointers differ"
    );
    // The officer's changes and idempotency records match one to one.
    for (c, n) in &officer_changes {
        assert_eq!(*n, 1, "round {round}: {c:?} recorded {n} times");
    }
    let mut responses: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut described = BTreeSet::new();
    for item in store.tree("api/idempotency").unwrap().iter() {
        let (k, v) = item.unwrap();
        let k = String::from_utf8(k.to_vec()).unwrap();
        let Some(key) = k.strip_prefix(&format!("{OFFICER}\n")) else {
            continue;
        };
        let rec: Value = serde_json::from_slice(&v).unwrap();
        let body = rec["body"].as_str().unwrap().as_bytes().to_vec();
        let path = &sent
            .get(key)
            .unwrap_or_else(|| panic!("round {round}: record for unknown key {key}"))
            .path;
        let change = response_change(path, &serde_json::from_slice(&body).unwrap());
        assert!(
            officer_changes.contains_key(&change),
            "round {round}: {key}: stored response {change:?} has no audit entry"
        );
        assert!(
            described.insert(change.clone()),
            "round {round}: two responses for {change:?}"
        );
        responses.insert(key.to_string(), body);
    }
    assert_eq!(
        described,
        officer_changes.keys().cloned().collect::<BTreeSet<_>>(),
        "round {round}: audited changes without their idempotency record"
    );
    for (key, s) in sent {
        if let Some(acked) = &s.acked {
            assert_eq!(
                responses.get(key),
                Some(acked),
                "round {round}: acknowledged {key} is not stored as released"
            );
        }
    }
    officer_changes.len()
}

/// Work for one role at the start of a round: retired keys to revoke, revoked keys to
/// schedule for destruction.
async fn pending_work(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    role: &str,
) -> (Vec<String>, Vec<String>) {
    let r = http
        .get(format!("{base}/v1/keys"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let (mut revoke, mut schedule) = (Vec::new(), Vec::new());
    for k in v["keys"].as_array().unwrap() {
        if k["role"] != role {
            continue;
        }
        let kid = k["kid"].as_str().unwrap().to_string();
        match k["state"].as_str().unwrap() {
            "retired" => revoke.push(kid),
            "revoked" if k.get("destroyAfter").is_none_or(Value::is_null) => schedule.push(kid),
            _ => {}
        }
    }
    (revoke, schedule)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_service_applies_each_key_change_once_with_its_entry_and_response() {
    let _gate = kit::gate::exclusive();
    let dir = kit::tmp::dir("api_keys_crash");
    let data = dir.path();
    bin(data, &["hsm", "init-dev"]);
    for role in ["grant-signing", "root", "audit"] {
        bin(data, &["keys", "rotate", "--role", role, "--alg", "EdDSA"]);
    }
    let token = String::from_utf8(
        bin(
            data,
            &[
                "tokens",
                "create",
                "--name",
                OFFICER,
                "--role",
                "security-officer",
            ],
        )
        .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let mut rng = Rng::from_clock();
    let sent: Requests = Arc::new(Mutex::new(BTreeMap::new()));
    let mut previous_round: Vec<String> = Vec::new();
    let (mut lost_committed, mut lost_fresh) = (0, 0);
    let mut changes_at_last_check = check_store(data, &BTreeMap::new(), 0);

    for round in 0..=ROUNDS {
        let (server, base) = start(data);
        let http = client(data);

        // Retry every request of the previous run (the last round: every request ever sent).
        let last = round == ROUNDS;
        let retry = keys_to_retry(&sent, &mut previous_round, last);
        let mut fresh = 0;
        for key in retry {
            let (s, status, replayed, body) = resend(&http, &base, &token, &sent, &key).await;
            assert_eq!(
                status,
                200,
                "round {round}: retry of {key} {}: {}",
                s.path,
                String::from_utf8_lossy(&body)
            );
            match &s.acked {
                Some(first) => {
                    assert!(replayed, "round {round}: {key} ran again");
                    assert_eq!(&body, first, "round {round}: {key} replays other bytes");
                }
                None => {
                    if replayed {
                        lost_committed += 1;
                    } else {
                        lost_fresh += 1;
                        fresh += 1;
                    }
                    sent.lock().unwrap().get_mut(&key).unwrap().acked = Some(body);
                }
            }
        }
        if last {
            drop(server);
            let all = sent.lock().unwrap().clone();
            let changes = check_store(data, &all, round);
            assert_eq!(
                changes,
                changes_at_last_check + fresh,
                "replaying acknowledged requests added audit entries"
            );
            assert!(all.values().all(|s| s.acked.is_some()));
            println!(
                "{ROUNDS} kills, {} requests, {changes} audited changes; lost responses: \
                 {lost_committed} committed (replayed), {lost_fresh} not (ran on retry)",
                all.len()
            );
            assert!(
                changes >= ROUNDS * ROLES.len(),
                "too little progress to test anything"
            );
            break;
        }

        // One client task per role: revoke retired keys, schedule revoked ones for
        // destruction, otherwise rotate (generating a key), until the kill.
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for role in ROLES {
            let (mut revoke, mut schedule) = pending_work(&http, &base, &token, role).await;
            let (http, base, token, sent, stop) = (
                http.clone(),
                base.clone(),
                token.clone(),
                sent.clone(),
                stop.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for n in 0u64.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let key = format!("r{round}-{role}-{n}");
                    let (path, body) = if let Some(kid) = revoke.pop() {
                        (
                            format!("/v1/keys/{kid}/revoke"),
                            json!({"reason": "crash test"}),
                        )
                    } else if let Some(kid) = schedule.pop() {
                        (format!("/v1/keys/{kid}/destroy"), json!({"waitDays": 30}))
                    } else {
                        (format!("/v1/keys/{role}/rotate"), json!({}))
                    };
                    let request = Sent {
                        path: path.clone(),
                        body: body.to_string(),
                        acked: None,
                    };
                    match send_recorded(&http, &base, &token, &sent, &mut mine, &key, request).await
                    {
                        Some((200, false, bytes)) => {
                            let v: Value = serde_json::from_slice(&bytes).unwrap();
                            if path.ends_with("/rotate") {
                                revoke.extend(v["retired"]["kid"].as_str().map(String::from));
                            } else if path.ends_with("/revoke") {
                                schedule.push(v["key"]["kid"].as_str().unwrap().to_string());
                            }
                            sent.lock().unwrap().get_mut(&key).unwrap().acked = Some(bytes);
                        }
                        Some((status, replayed, bytes)) => panic!(
                            "{key} {path}: {status} replayed={replayed} {}",
                            String::from_utf8_lossy(&bytes)
                        ),
                        // The service died with this request in flight.
                        None => break,
                    }
                }
                mine
            }));
        }
        tokio::time::sleep(Duration::from_millis(50 + rng.next() % 400)).await;
        previous_round.extend(kill_round(server, &stop, workers).await);
        let snapshot = sent.lock().unwrap().clone();
        changes_at_last_check = check_store(data, &snapshot, round);
    }
}
