//! Crash safety: a child process signs artifacts, records each issuance in the audit log and
//! prints the index once `record` has returned (the moment the appliance would release the
//! signature), while signing checkpoints on a timer. The parent kills it with SIGKILL at
//! random moments, at least 20 times; after each kill the log must reopen, hold every index
//! the child reported, verify offline, and all its checkpoints must be consistent with each
//! other and with the checkpoint seen before the kill.
//!
//! The child is this test binary re-run with `MPCP_AUDIT_CRASH_DIR` set (the ignored test
//! `crash_child`). Its signers come from [`child_signers`]: today an in-process key for the
//! artifacts and for checkpoints (tests only); the HSM-backed signers plug in there.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mpcp_pa::audit::export::export;
use mpcp_pa::audit::merkle::verify_consistency;
use mpcp_pa::audit::verify::{VerifyOptions, verify_export};
use mpcp_pa::audit::{AuditConfig, AuditLog, Entry, NoteSigner};
use mpcp_pa::canonical::{Domain, signing_digest};
use mpcp_pa::clock::SystemClock;
use mpcp_pa::crypto::Alg;
use mpcp_pa::events::{Actor, Event, EventSink};
use mpcp_pa::signer::{DigestSigner, SoftwareSigner, sign_artifact};
use mpcp_pa::store::Store;

use crate::kit;
use crate::kit::audit::*;
use crate::kit::rng::Rng;

const ENV_DIR: &str = "MPCP_AUDIT_CRASH_DIR";
const ROUNDS: usize = 24;
const WRITERS: u64 = 4;

/// The keys the child signs with. Replace these with HSM-backed signers (grant-signing
/// role for artifacts, audit role for checkpoints) to run the same test against a token.
struct ChildSigners {
    artifact: Box<dyn DigestSigner>,
    checkpoint: Box<dyn NoteSigner>,
}

fn child_signers() -> ChildSigners {
    ChildSigners {
        artifact: Box::new(
            SoftwareSigner::from_secret("crash-grant-1", Alg::EdDSA, &[5; 32]).unwrap(),
        ),
        checkpoint: Box::new(log_signer()),
    }
}

/// The child: runs until killed.
#[test]
#[ignore = "run by audit_crash_kill_loop as a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    // The parent may still be releasing the store's file lock (sled lets go of it from a
    // background thread shortly after the last handle drops).
    let path = mpcp_pa::app::DataDir::new(std::path::Path::new(&dir)).store();
    let deadline = Instant::now() + Duration::from_secs(20);
    let store = loop {
        match Store::open(&path) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying open: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot open the store: {e}"),
        }
    };
    let log =
        Arc::new(AuditLog::open(&store, AuditConfig::new(ORIGIN), Arc::new(SystemClock)).unwrap());
    let signers = Arc::new(child_signers());
    println!("READY {}", log.size());
    for w in 0..WRITERS {
        let (log, signers) = (log.clone(), signers.clone());
        std::thread::spawn(move || {
            let actor = Actor {
                name: format!("crash-writer-{w}"),
                role: "issuer".into(),
            };
            for n in 0u64.. {
                let grant = serde_json::json!({
                    "version": "1.0",
                    "grantId": format!("g-{w}-{n}"),
                    "issuerKeyId": signers.artifact.kid(),
                });
                let signed = sign_artifact(
                    signers.artifact.as_ref(),
                    Domain::PolicyGrant,
                    "1.0",
                    &grant,
                )
                .unwrap();
                let digest = signing_digest(Domain::PolicyGrant, "1.0", &signed).unwrap();
                let event = Event::GrantIssued {
                    grant_id: format!("g-{w}-{n}"),
                    issuer_key_id: signers.artifact.kid().to_string(),
                    policy_hash: "00".repeat(32),
                    request_digest: hex::encode(digest),
                    credential_tx: None,
                };
                let index = log.record(&actor, event).unwrap();
                // Only now may the signed grant leave the appliance.
                println!("DURABLE {index} g-{w}-{n}");
            }
        });
    }
    loop {
        std::thread::sleep(Duration::from_millis(3));
        if let Some(cp) = log.maybe_checkpoint(signers.checkpoint.as_ref()).unwrap() {
            println!("CHECKPOINT {}", cp.verify().unwrap().size);
        }
    }
}

#[test]
fn audit_crash_kill_loop() {
    let dir = kit::tmp::dir("crash");
    let mut rng = Rng::from_clock();
    let mut reported: Vec<(u64, String)> = Vec::new();
    let mut trusted: Option<String> = None;
    let mut rounds_with_progress = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                kit::child::test_name(module_path!(), "crash_child").as_str(),
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_DIR, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.with_extension("stderr")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until the child is up, then let it run for a random while.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| {
                    let err =
                        std::fs::read_to_string(dir.with_extension("stderr")).unwrap_or_default();
                    panic!("round {round}: child never got ready ({e}): {err}")
                });
            // libtest prints "test crash_child ... " before the child's first line.
            if line.contains("READY ") {
                break;
            }
            assert!(Instant::now() < deadline);
        }
        std::thread::sleep(Duration::from_millis(20 + rng.next() % 180));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let before = reported.len();
        for line in rx.try_iter() {
            if let Some(at) = line.find("DURABLE ") {
                let rest = &line[at + "DURABLE ".len()..];
                let (i, grant) = rest.split_once(' ').unwrap();
                reported.push((i.parse().unwrap(), grant.to_string()));
            }
        }
        if reported.len() > before {
            rounds_with_progress += 1;
        }

        // After the crash: the log reopens and holds everything the child reported.
        let store = Store::open(&mpcp_pa::app::DataDir::new(&dir).store()).unwrap();
        let log = AuditLog::open(&store, AuditConfig::new(ORIGIN), clock())
            .unwrap_or_else(|e| panic!("round {round}: log does not reopen: {e}"));
        let size = log.size();
        for (i, grant) in &reported {
            assert!(
                *i < size,
                "round {round}: reported index {i} lost (size {size})"
            );
            let e: Entry = serde_json::from_slice(&log.entries(*i, i + 1).unwrap()[0]).unwrap();
            match e.event {
                Event::GrantIssued { grant_id, .. } => assert_eq!(&grant_id, grant),
                other => panic!("index {i} holds {other:?}"),
            }
        }
        // Checkpoints: each verifies and is consistent with the next and with the head.
        let cps: Vec<_> = log
            .checkpoints()
            .unwrap()
            .iter()
            .map(|c| c.verify().unwrap())
            .collect();
        for w in cps.windows(2) {
            let p = log.consistency_proof(w[0].size, w[1].size).unwrap();
            verify_consistency(w[0].size, w[1].size, &w[0].root, &w[1].root, &p).unwrap();
        }
        if let Some(last) = cps.last() {
            let p = log.consistency_proof(last.size, size).unwrap();
            verify_consistency(last.size, size, &last.root, &log.root(size).unwrap(), &p).unwrap();
        }
        // Offline verification, against the checkpoint the parent trusted before this round.
        if let Some(latest) = log.latest_checkpoint().unwrap() {
            let out = dir.join("export");
            export(&store, &out).unwrap();
            let options = VerifyOptions {
                trusted_vkeys: vec![log_vkey()],
                trusted_checkpoint: trusted.clone(),
            };
            let r = verify_export(&out, &options, &mut |_| {})
                .unwrap_or_else(|f| panic!("round {round}: export does not verify: {f}"));
            assert_eq!(r.entries, size);
            trusted = Some(latest.note);
        }
        // The appliance appends through the same log after restart.
        log.record(&actor(0), event(0)).unwrap();
    }
    println!(
        "{ROUNDS} kills, {} indices reported durable, {rounds_with_progress} rounds with progress",
        reported.len()
    );
    assert!(
        rounds_with_progress >= ROUNDS / 2,
        "the child made too little progress to test anything"
    );
    assert!(trusted.is_some(), "no checkpoint was ever signed");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("stderr"));
}
