//! The sled-backed audit log end to end: durable group commit under concurrency, checkpoint
//! signing (and refusal to sign inconsistent trees), reopening, the background
//! checkpointer, and the read/export/verify CLI.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mpcp_pa::audit::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use mpcp_pa::audit::{AuditConfig, AuditLog, Checkpoint, Entry, verify_checkpoint};
use mpcp_pa::error::ErrorCode;
use mpcp_pa::events::EventSink;
use mpcp_pa::store::trees;

use crate::kit;
use crate::kit::audit::*;

#[test]
fn concurrent_records_are_durable_distinct_and_ordered() {
    let dir = kit::tmp::dir("concurrent");
    let store = reopen(&dir);
    let log = Arc::new(open(&store));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..40u64)
                    .map(|i| {
                        let n = t * 1000 + i;
                        (log.record(&actor(n), event(n)).unwrap(), n)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<(u64, u64)> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all.iter().map(|x| x.0).collect::<Vec<_>>(),
        (0..320).collect::<Vec<_>>()
    );
    assert_eq!(log.size(), 320);
    // Each index holds the event its caller recorded, in canonical form.
    let entries = log.entries(0, 320).unwrap();
    for (index, n) in &all {
        let e: Entry = serde_json::from_slice(&entries[*index as usize]).unwrap();
        assert_eq!(e.index, *index);
        assert_eq!(e.event, event(*n));
        assert_eq!(e.actor, actor(*n));
        assert_eq!(e.time, "2026-03-01T12:00:00Z");
        assert_eq!(e.to_bytes().unwrap(), entries[*index as usize]);
        assert_eq!(
            log.index_of(&leaf_hash(&entries[*index as usize])).unwrap(),
            Some(*index)
        );
    }
}

/// A store written before the bucketed leaf index (one `audit/leaf-index` key per entry)
/// still answers by hash after reopening, new entries are found through their buckets, and
/// an index record that names the wrong entry is never believed.
#[test]
fn proofs_by_hash_read_the_old_leaf_index_and_confirm_every_record() {
    let dir = kit::tmp::dir("leaf_index");
    let old: Vec<Vec<u8>> = {
        let store = reopen(&dir);
        let log = open(&store);
        fill(&log, 40);
        let entries = log.entries(0, 40).unwrap();
        drop(log);
        // Rewrite the index as the old layout had it.
        store
            .tree(trees::AUDIT_LEAF_BUCKETS)
            .unwrap()
            .clear()
            .unwrap();
        let legacy = store.tree(trees::AUDIT_LEAF_INDEX).unwrap();
        for (i, e) in entries.iter().enumerate() {
            legacy
                .insert(leaf_hash(e), &(i as u64).to_be_bytes())
                .unwrap();
        }
        // A damaged record: entry 3's hash names entry 5.
        legacy
            .insert(leaf_hash(&entries[3]), &5u64.to_be_bytes())
            .unwrap();
        store.flush().unwrap();
        entries
    };
    let store = reopen(&dir);
    let log = open(&store);
    for (i, e) in old.iter().enumerate() {
        let want = (i != 3).then_some(i as u64);
        assert_eq!(log.index_of(&leaf_hash(e)).unwrap(), want, "old entry {i}");
    }
    fill(&log, 10);
    let size = log.size();
    for (i, e) in log.entries(40, size).unwrap().iter().enumerate() {
        assert_eq!(log.index_of(&leaf_hash(e)).unwrap(), Some(40 + i as u64));
    }
    assert!(store.tree(trees::AUDIT_LEAF_INDEX).unwrap().len() == 40);
    assert_eq!(log.index_of(&leaf_hash(b"never appended")).unwrap(), None);
}

#[test]
fn checkpoints_are_signed_consistent_and_survive_reopen() {
    let dir = kit::tmp::dir("checkpoints");
    let signer = log_signer();
    let vk = log_vkey();
    let first;
    {
        let store = reopen(&dir);
        let log = open(&store);
        // The empty tree can be checkpointed too.
        let c0 = log.sign_checkpoint(&signer).unwrap();
        assert_eq!(c0.verify().unwrap().size, 0);
        fill(&log, 10);
        first = log.sign_checkpoint(&signer).unwrap();
        let v = verify_checkpoint(&first.note, &vk, &[], 0).unwrap();
        assert_eq!(v.checkpoint.size, 10);
        assert_eq!(v.checkpoint.root, log.root(10).unwrap());
        assert_eq!(first.vkey, vk.to_string());
        // Not grown: nothing new, and signing again returns the same checkpoint.
        assert!(log.maybe_checkpoint(&signer).unwrap().is_none());
        assert_eq!(log.sign_checkpoint(&signer).unwrap(), first);
        // A key with another name is refused.
        let wrong = mpcp_pa::audit::SoftwareNoteSigner::from_seed("other.log", &[1; 32]).unwrap();
        assert_eq!(
            log.sign_checkpoint(&wrong).unwrap_err().code,
            ErrorCode::ConfigInvalid
        );
        fill(&log, 7);
        assert!(log.maybe_checkpoint(&signer).unwrap().is_some());
        assert_eq!(log.checkpoints().unwrap().len(), 3);
    }
    let store = reopen(&dir);
    let log = open(&store);
    assert_eq!(log.size(), 17);
    let latest = log.latest_checkpoint().unwrap().unwrap();
    let (a, b) = (first.verify().unwrap(), latest.verify().unwrap());
    assert_eq!(b.size, 17);
    verify_consistency(
        a.size,
        b.size,
        &a.root,
        &b.root,
        &log.consistency_proof(10, 17).unwrap(),
    )
    .unwrap();
    // Appends continue after reopen.
    fill(&log, 3);
    assert_eq!(
        log.sign_checkpoint(&signer).unwrap().verify().unwrap().size,
        20
    );
    // The origin is the log's identity.
    drop(log);
    let e = AuditLog::open(&store, AuditConfig::new("another.origin"), clock()).unwrap_err();
    assert_eq!(e.code, ErrorCode::ConfigInvalid);
}

#[test]
fn refuses_to_sign_a_tree_inconsistent_with_the_last_checkpoint() {
    let dir = kit::tmp::dir("inconsistent");
    let store = reopen(&dir);
    let log = open(&store);
    let signer = log_signer();
    fill(&log, 12);
    log.sign_checkpoint(&signer).unwrap();
    fill(&log, 5);
    // Rewrite history behind the log's back: the stored subtree over entries 0..8, which
    // both the signed head (12) and the current head (17) are built from.
    let nodes = store.tree(trees::AUDIT_NODES).unwrap();
    let mut key = [0u8; 9];
    key[0] = 3;
    nodes.insert(key, &[0x42u8; 32]).unwrap();
    let e = log.sign_checkpoint(&signer).unwrap_err();
    assert_eq!(e.code, ErrorCode::CheckpointInconsistent, "{e}");
    assert_eq!(
        log.checkpoints().unwrap().len(),
        1,
        "nothing new was signed"
    );
    drop(log);
    // Nor does the log reopen over a tree that no longer matches its checkpoint.
    let e = AuditLog::open(&store, AuditConfig::new(ORIGIN), clock()).unwrap_err();
    assert_eq!(e.code, ErrorCode::AuditLogInvalid, "{e}");
}

#[test]
fn background_checkpointer_follows_the_log() {
    let dir = kit::tmp::dir("checkpointer");
    let store = reopen(&dir);
    let log = open(&store);
    let task = log
        .spawn_checkpointer(Arc::new(log_signer()), Duration::from_millis(20))
        .unwrap();
    for round in 1..=3u64 {
        fill(&log, 5);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let size = log
                .latest_checkpoint()
                .unwrap()
                .map(|c| c.verify().unwrap().size);
            if size == Some(round * 5) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no checkpoint of size {}",
                round * 5
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(task.last_error().is_none());
    task.stop();
    // The log only grows by checkpoints' sizes: each consecutive pair is consistent.
    let cps: Vec<Checkpoint> = log
        .checkpoints()
        .unwrap()
        .iter()
        .map(|c| c.verify().unwrap())
        .collect();
    for w in cps.windows(2) {
        let p = log.consistency_proof(w[0].size, w[1].size).unwrap();
        verify_consistency(w[0].size, w[1].size, &w[0].root, &w[1].root, &p).unwrap();
    }
}

fn cli(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mpcp-pa"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn b64hash(v: &serde_json::Value) -> Hash {
    STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

#[test]
fn cli_reads_exports_and_verifies() {
    let dir = kit::tmp::dir("cli");
    let leaf5;
    {
        let store = reopen(&dir);
        let log = open(&store);
        fill(&log, 25);
        log.sign_checkpoint(&log_signer()).unwrap();
        fill(&log, 2); // an unsigned tail
        leaf5 = leaf_hash(&log.entries(5, 6).unwrap()[0]);
    }
    let (code, note, _) = cli(&dir, &["audit", "checkpoint"]);
    assert_eq!(code, 0);
    let cp = verify_checkpoint(&note, &log_vkey(), &[], 0)
        .unwrap()
        .checkpoint;
    assert_eq!(cp.size, 25);
    let (_, vkey, _) = cli(&dir, &["audit", "checkpoint", "--vkey"]);
    assert_eq!(vkey.trim(), log_vkey().to_string());

    let (code, out, _) = cli(
        &dir,
        &[
            "audit",
            "proof",
            "inclusion",
            "--index",
            "5",
            "--size",
            "25",
        ],
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let proof: Vec<Hash> = v["proof"].as_array().unwrap().iter().map(b64hash).collect();
    verify_inclusion(5, 25, &leaf5, &proof, &cp.root).unwrap();
    let (code, out2, _) = cli(
        &dir,
        &[
            "audit",
            "proof",
            "inclusion",
            "--leaf-hash",
            &hex::encode(leaf5),
            "--size",
            "25",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(out, out2);
    let (code, out, _) = cli(&dir, &["audit", "proof", "consistency", "--from", "25"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let proof: Vec<Hash> = v["proof"].as_array().unwrap().iter().map(b64hash).collect();
    verify_consistency(25, 27, &cp.root, &b64hash(&v["toRoot"]), &proof).unwrap();
    let (code, _, err) = cli(&dir, &["audit", "proof", "inclusion", "--index", "27"]);
    assert_eq!(code, 1);
    assert!(err.contains("PROOF_OUT_OF_RANGE"), "{err}");
    let (code, out, _) = cli(&dir, &["audit", "entries", "--start", "20", "--end", "22"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2);

    let export = dir.join("export");
    let (code, out, err) = cli(
        &dir,
        &["audit", "export", "--out", export.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("exported 27 entries"), "{out}");
    let (code, out, _) = cli(
        &dir,
        &[
            "audit",
            "verify",
            export.to_str().unwrap(),
            "--vkey",
            &log_vkey().to_string(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("OK: 27 entries"), "{out}");
    assert!(out.contains("2 entries after the checkpoint"), "{out}");
    // Against an earlier checkpoint saved by an auditor.
    let trusted = dir.join("trusted");
    std::fs::write(&trusted, &note).unwrap();
    let (code, out, _) = cli(
        &dir,
        &[
            "audit",
            "verify",
            export.to_str().unwrap(),
            "--trusted-checkpoint",
            trusted.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("extends the trusted checkpoint of size 25"),
        "{out}"
    );
    assert!(out.contains("keys came from the export"), "{out}");
    // A missing store is an error, not a freshly created one.
    let (code, _, err) = cli(&dir.join("nowhere"), &["audit", "checkpoint"]);
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND"), "{err}");
    assert!(!dir.join("nowhere").exists());
}
