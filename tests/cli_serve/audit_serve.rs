//! Audit checkpoints in the running service, through the `mpcp-pa` binary on SoftHSM2
//! development tokens: `serve` refuses to start without an active audit key, signs a
//! checkpoint at startup, on a timer while the log grows (and none while it is idle), on
//! demand and at shutdown, always with the audit role's key in the HSM (a rotation takes
//! effect at the next checkpoint); `audit checkpoint --sign` signs with the service stopped;
//! `audit export` + `audit verify` pass with the pinned keys and fail when the checkpoint is
//! swapped for one signed by another key. Every checkpoint is checked with a vkey computed
//! from the audit key's public JWK and a signature check that does not use the appliance's
//! note code.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::kit;
use crate::kit::bin::{client, json_post, serve_command, sigterm};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signer as _;
use serde_json::Value;

const ORIGIN: &str = "pa.serve.test/audit";

fn bin(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mpcp-pa"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("SOFTHSM2_CONF")
        .env_remove("MPCP_PA_ALGORITHM_POLICY")
        .env("MPCP_PA_AUDIT_ORIGIN", ORIGIN)
        .output()
        .unwrap()
}

#[track_caller]
fn ok(data: &Path, args: &[&str]) -> String {
    let out = bin(data, args);
    assert!(
        out.status.success(),
        "mpcp-pa {args:?}: stdout {}\nstderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Development tokens, grant-signing and root keys, and (if `audit`) an active audit key.
/// Returns the bearer values of a security officer, an auditor and an issuer.
fn setup(data: &Path, audit: bool) -> (String, String, String) {
    ok(data, &["hsm", "init-dev"]);
    let mut roles = vec!["grant-signing", "root"];
    if audit {
        roles.push("audit");
    }
    for role in roles {
        ok(data, &["keys", "rotate", "--role", role, "--alg", "EdDSA"]);
    }
    let officer = ok(data, &["tokens", "bootstrap"]).trim().to_string();
    let token = |name: &str, role: &str| {
        ok(data, &["tokens", "create", "--name", name, "--role", role])
            .trim()
            .to_string()
    };
    (officer, token("aud-1", "auditor"), token("iss-1", "issuer"))
}

/// The public key of the active audit key, from `keys list --json` (its public JWK).
fn audit_public(data: &Path) -> [u8; 32] {
    let keys: Value = serde_json::from_str(&ok(data, &["keys", "list", "--json"])).unwrap();
    let rec = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "audit" && k["state"] == "active")
        .expect("an active audit key");
    kit::note_check::jwk_public(&rec["publicJwk"])
}

fn entry_count(data: &Path) -> u64 {
    ok(data, &["audit", "entries"]).lines().count() as u64
}

struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
    client: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(data: &Path, interval: &str) -> Server {
        let mut child = serve_command(data, &["--checkpoint-interval-seconds", interval])
            .env_remove("SOFTHSM2_CONF")
            .env_remove("MPCP_PA_ALGORITHM_POLICY")
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            log.lock().unwrap().push(line.clone());
            if let Some(rest) = line.split(" listening on ").nth(1) {
                addr = Some(rest.trim().to_string());
                break;
            }
        }
        let l = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let addr = addr.unwrap_or_else(|| panic!("no address announced: {:?}", log.lock()));
        Server {
            child,
            base: format!("https://{addr}"),
            log,
            client: client(data),
        }
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        read(r).await
    }

    async fn post(&self, path: &str, token: &str, body: &str) -> (u16, Value) {
        let r = json_post(
            &self.client,
            format!("{}{path}", self.base),
            token,
            body.to_string(),
        )
        .send()
        .await
        .unwrap();
        read(r).await
    }

    /// The log size the service reports.
    async fn size(&self, auditor: &str) -> u64 {
        let (status, body) = self.get("/v1/audit/entries?start=0&end=0", auditor).await;
        assert_eq!(status, 200, "{body}");
        body["size"].as_u64().unwrap()
    }

    /// The latest checkpoint, verified independently under `public`.
    async fn checkpoint(&self, auditor: &str, public: &[u8; 32]) -> (kit::note_check::Head, Value) {
        let (status, cp) = self.get("/v1/audit/checkpoint", auditor).await;
        assert_eq!(status, 200, "{cp}");
        let head = kit::note_check::verify(cp["note"].as_str().unwrap(), ORIGIN, public);
        assert_eq!(cp["vkey"], kit::note_check::vkey(ORIGIN, public).as_str());
        (head, cp)
    }

    /// SIGTERM, then the exit status and everything the service printed.
    fn stop(mut self) -> (ExitStatus, String) {
        sigterm(&self.child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "service did not stop");
            std::thread::sleep(Duration::from_millis(50));
        };
        // Let the reader thread take the last lines.
        std::thread::sleep(Duration::from_millis(200));
        let log = self.log.lock().unwrap().join("\n");
        (status, log)
    }
}

async fn read(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

/// The stored checkpoint printed by `audit checkpoint`, verified under `public`.
fn stored_checkpoint(data: &Path, public: &[u8; 32]) -> kit::note_check::Head {
    kit::note_check::verify(&ok(data, &["audit", "checkpoint"]), ORIGIN, public)
}

#[test]
fn serve_refuses_to_start_without_an_active_audit_key() {
    let _gate = kit::gate::shared();
    let dir = kit::tmp::dir("audit_serve");
    let data = dir.path();
    setup(data, false);
    let before = entry_count(data);
    let refused = |data: &Path| {
        let out = bin(data, &["serve", "--listen", "127.0.0.1:0"]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("AUDIT_KEY_MISSING") && stderr.contains("refusing to start"),
            "{stderr}"
        );
    };
    refused(data);
    // A pending audit key signs nothing either.
    ok(
        data,
        &["keys", "generate", "--role", "audit", "--alg", "EdDSA"],
    );
    let after_generate = entry_count(data);
    assert_eq!(after_generate, before + 1);
    refused(data);
    // Nothing was recorded by the refused starts: no startup entry, no checkpoint.
    assert_eq!(entry_count(data), after_generate);
    assert!(!ok(data, &["audit", "entries"]).contains("\"startup\""));
    assert_eq!(bin(data, &["audit", "checkpoint"]).status.code(), Some(1));
    // The audit role takes Ed25519 keys only: checkpoints are C2SP signed notes.
    let es = bin(
        data,
        &["keys", "generate", "--role", "audit", "--alg", "ES256"],
    );
    assert_eq!(es.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&es.stderr).contains("ALGORITHM_UNSUPPORTED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_at_startup_on_demand_after_rotation_and_at_shutdown() {
    let _gate = kit::gate::shared();
    let dir = kit::tmp::dir("audit_serve");
    let data = dir.path();
    let (officer, auditor, issuer) = setup(data, true);
    let first_key = audit_public(data);

    // A long interval: every checkpoint below comes from startup, a request or shutdown.
    let s = Server::start(data, "3600");
    let (head, cp) = s.checkpoint(&auditor, &first_key).await;
    assert_eq!(head.origin, ORIGIN);
    assert_eq!(
        head.size,
        s.size(&auditor).await,
        "startup checkpoint covers the log"
    );
    assert!(cp["kid"].as_str().unwrap().starts_with("audit-eddsa-"));

    // On demand, after the log grew: signed now, covering it.
    let (status, _) = s
        .post("/v1/policies", &issuer, r#"{"version":"1.0"}"#)
        .await;
    assert_eq!(status, 201);
    let (status, fresh) = s.post("/v1/audit/checkpoints", &auditor, "{}").await;
    assert_eq!(status, 201, "{fresh}");
    let fresh_head = kit::note_check::verify(fresh["note"].as_str().unwrap(), ORIGIN, &first_key);
    assert_eq!(fresh_head.size, head.size + 1);
    assert_eq!(fresh_head.size, s.size(&auditor).await);
    let (status, same) = s.post("/v1/audit/checkpoints", &officer, "{}").await;
    assert_eq!((status, &same), (200, &fresh));
    let (status, _) = s.post("/v1/audit/checkpoints", &issuer, "{}").await;
    assert_eq!(status, 403);

    // Rotation of the audit key: the next checkpoint is signed by the new key.
    let (status, rot) = s
        .post("/v1/keys/audit/rotate", &officer, r#"{"alg":"EdDSA"}"#)
        .await;
    assert_eq!(status, 200, "{rot}");
    let second_key = kit::note_check::jwk_public(&rot["activated"]["publicJwk"]);
    assert_ne!(second_key, first_key);
    let (status, rotated) = s.post("/v1/audit/checkpoints", &officer, "{}").await;
    assert_eq!(status, 201, "{rotated}");
    let rotated_head =
        kit::note_check::verify(rotated["note"].as_str().unwrap(), ORIGIN, &second_key);
    assert!(!kit::note_check::verifies(
        rotated["note"].as_str().unwrap(),
        ORIGIN,
        &first_key
    ));
    assert_eq!(rotated_head.size, s.size(&auditor).await);
    let (_, vkeys) = s.get("/v1/audit/vkeys", &auditor).await;
    let listed: Vec<&str> = vkeys["vkeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["vkey"].as_str().unwrap())
        .collect();
    let (vk1, vk2) = (
        kit::note_check::vkey(ORIGIN, &first_key),
        kit::note_check::vkey(ORIGIN, &second_key),
    );
    assert_eq!(listed, [vk1.as_str(), vk2.as_str()]);

    // SIGTERM: a final checkpoint covers everything, the shutdown entry included.
    let (status, log) = s.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("startup audit checkpoint"), "{log}");
    assert!(log.contains("final audit checkpoint"), "{log}");
    let last = stored_checkpoint(data, &second_key);
    assert_eq!(last.size, entry_count(data));
    let entries = ok(data, &["audit", "entries"]);
    assert!(entries.lines().last().unwrap().contains("\"shutdown\""));
    assert!(last.size > rotated_head.size);

    // With the service stopped: the log grows, `audit checkpoint --sign` covers it.
    ok(
        data,
        &["keys", "generate", "--role", "root", "--alg", "EdDSA"],
    );
    let out = bin(data, &["audit", "checkpoint", "--sign"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("signed a new checkpoint"));
    let offline =
        kit::note_check::verify(&String::from_utf8(out.stdout).unwrap(), ORIGIN, &second_key);
    assert_eq!(offline.size, entry_count(data));
    assert_eq!(stored_checkpoint(data, &second_key), offline);
    let out = bin(data, &["audit", "checkpoint", "--sign"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already covers"));

    // Export and verify offline with both pinned audit keys.
    let export = data.join("export");
    ok(
        data,
        &["audit", "export", "--out", export.to_str().unwrap()],
    );
    let dir_arg = export.to_str().unwrap();
    let verified = ok(
        data,
        &["audit", "verify", dir_arg, "--vkey", &vk1, "--vkey", &vk2],
    );
    assert!(verified.starts_with("OK:"), "{verified}");
    assert!(
        verified.contains(&vk1) && verified.contains(&vk2),
        "{verified}"
    );
    let listed = std::fs::read_to_string(export.join("log.vkey")).unwrap();
    assert_eq!(listed, format!("{vk1}\n{vk2}\n"));
    // Pinning only the new key: the checkpoints signed before the rotation do not verify.
    let out = bin(data, &["audit", "verify", dir_arg, "--vkey", &vk2]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("CHECKPOINT_INVALID"));

    // The checkpoint swapped for one over the same tree signed by another key: refused.
    let note = std::fs::read_to_string(export.join("checkpoint")).unwrap();
    let text = &note[..note.rfind("\n\n").unwrap() + 1];
    let intruder = ed25519_dalek::SigningKey::from_bytes(&[0x77; 32]);
    let mut raw = kit::note_check::key_id(ORIGIN, &intruder.verifying_key().to_bytes()).to_vec();
    raw.extend_from_slice(&intruder.sign(text.as_bytes()).to_bytes());
    let forged = format!("{text}\n\u{2014} {ORIGIN} {}\n", STANDARD.encode(raw));
    std::fs::write(export.join("checkpoint"), forged).unwrap();
    let out = bin(
        data,
        &["audit", "verify", dir_arg, "--vkey", &vk1, "--vkey", &vk2],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("FAIL: CHECKPOINT_INVALID"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_signs_while_the_log_grows_and_not_while_idle() {
    let _gate = kit::gate::shared();
    let dir = kit::tmp::dir("audit_serve");
    let data = dir.path();
    let (_, auditor, issuer) = setup(data, true);
    let key = audit_public(data);
    let s = Server::start(data, "1");
    let (start, _) = s.checkpoint(&auditor, &key).await;
    assert_eq!(start.size, s.size(&auditor).await);

    // The log grows; without any request for it, a checkpoint covering it follows.
    for i in 1..=3 {
        let doc = format!(
            r#"{{"version":"1.0","maxGrantLifetimeSeconds":{}}}"#,
            3600 * i
        );
        let (status, body) = s.post("/v1/policies", &issuer, &doc).await;
        assert_eq!(status, 201, "{body}");
    }
    let size = s.size(&auditor).await;
    assert_eq!(size, start.size + 3);
    let deadline = Instant::now() + Duration::from_secs(20);
    let grown = loop {
        let (head, _) = s.checkpoint(&auditor, &key).await;
        if head.size == size {
            break head;
        }
        assert!(Instant::now() < deadline, "no checkpoint of size {size}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(grown.root, start.root);

    // Idle for several intervals: the log does not grow and no checkpoint is signed.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (idle, idle_cp) = s.checkpoint(&auditor, &key).await;
    assert_eq!(idle, grown);
    assert_eq!(s.size(&auditor).await, size);
    assert_eq!(idle_cp["size"], size);

    let (status, log) = s.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("audit checkpoint failed"), "{log}");
    // From the startup checkpoint to the final one, each verifying, sizes increasing (a
    // tick may have fallen between the three requests).
    let export = data.join("export");
    ok(
        data,
        &["audit", "export", "--out", export.to_str().unwrap()],
    );
    let history = std::fs::read_to_string(export.join("checkpoints.jsonl")).unwrap();
    let sizes: Vec<u64> = history
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            kit::note_check::verify(v["note"].as_str().unwrap(), ORIGIN, &key).size
        })
        .collect();
    assert_eq!(sizes.first(), Some(&start.size), "{history}");
    assert_eq!(sizes.last(), Some(&(size + 1)), "{history}");
    assert!(sizes.contains(&size), "{history}");
    assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{history}");
}
