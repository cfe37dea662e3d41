//! Tampering with the sled store behind the log's back (opening its trees directly) and
//! checking that offline verification of an export fails, naming the right entry index.

use std::path::Path;
use std::process::Command;

use mpcp_pa::audit::export::export;
use mpcp_pa::audit::verify::{VerifyFailure, VerifyOptions, VerifyReport, verify_export};
use mpcp_pa::audit::{AuditConfig, AuditLog, Checkpoint, StoredCheckpoint};
use mpcp_pa::canonical::canonical_bytes_of;
use mpcp_pa::error::ErrorCode;
use mpcp_pa::store::trees;

use crate::kit;
use crate::kit::audit::*;

const SIZE: u64 = 40;

/// A log of 40 entries with checkpoints at 30 and 40; returns the directory and the note of
/// the checkpoint at 30 (saved by an auditor) and at 40.
fn build(name: &str) -> (kit::tmp::TmpDir, String, String) {
    let dir = kit::tmp::dir(name);
    let store = reopen(&dir);
    let log = open(&store);
    fill(&log, 30);
    let at30 = log.sign_checkpoint(&log_signer()).unwrap().note;
    fill(&log, SIZE - 30);
    let at40 = log.sign_checkpoint(&log_signer()).unwrap().note;
    (dir, at30, at40)
}

fn key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

fn check(
    dir: &Path,
    trusted: Option<&str>,
    with_vkey: bool,
) -> Result<VerifyReport, VerifyFailure> {
    let store = reopen(dir);
    let out = dir.join("export");
    export(&store, &out).unwrap();
    let options = VerifyOptions {
        trusted_vkeys: if with_vkey { vec![log_vkey()] } else { vec![] },
        trusted_checkpoint: trusted.map(str::to_string),
    };
    verify_export(&out, &options, &mut |_| {})
}

fn assert_bad(r: Result<VerifyReport, VerifyFailure>, code: ErrorCode, index: Option<u64>) {
    let f = r.expect_err("verification must fail");
    assert_eq!(f.error.code, code, "{f}");
    assert_eq!(f.first_bad_index, index, "{f}");
}

fn reopen_fails(dir: &Path) {
    let store = reopen(dir);
    let e = AuditLog::open(&store, AuditConfig::new(ORIGIN), clock()).unwrap_err();
    assert_eq!(e.code, ErrorCode::AuditLogInvalid, "{e}");
}

#[test]
fn untouched_log_verifies() {
    let (dir, at30, _) = build("untouched");
    let r = check(&dir, Some(&at30), true).unwrap();
    assert_eq!(
        (r.entries, r.checkpoint.size, r.trusted.unwrap().size),
        (SIZE, SIZE, 30)
    );
}

#[test]
fn changed_byte_in_one_entry_is_named() {
    let (dir, at30, _) = build("changed-byte");
    {
        let store = reopen(&dir);
        let entries = store.tree(trees::AUDIT_ENTRIES).unwrap();
        let mut v = entries.get(key(17)).unwrap().unwrap().to_vec();
        // Still valid canonical JSON: a letter in the actor's name.
        let at = v.windows(6).position(|w| w == b"token-").unwrap();
        v[at] = b'T';
        entries.insert(key(17), v).unwrap();
    }
    assert_bad(
        check(&dir, None, true),
        ErrorCode::AuditLogInvalid,
        Some(17),
    );
    assert_bad(
        check(&dir, Some(&at30), false),
        ErrorCode::AuditLogInvalid,
        Some(17),
    );
    // Through the CLI, with the verdict line naming the index.
    let out = Command::new(env!("CARGO_BIN_EXE_mpcp-pa"))
        .args(["audit", "verify"])
        .arg(dir.join("export"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("FAIL: first bad entry index 17:"),
        "{stdout}"
    );
}

#[test]
fn broken_json_in_one_entry_is_named() {
    let (dir, _, _) = build("broken-json");
    {
        let store = reopen(&dir);
        let entries = store.tree(trees::AUDIT_ENTRIES).unwrap();
        let mut v = entries.get(key(22)).unwrap().unwrap().to_vec();
        v[0] = b'[';
        entries.insert(key(22), v).unwrap();
    }
    assert_bad(
        check(&dir, None, true),
        ErrorCode::AuditLogInvalid,
        Some(22),
    );
}

#[test]
fn entry_and_its_recorded_hash_changed_together_still_fail() {
    // With the recorded leaf hash rewritten too, the signed root still catches it, though
    // the entry can no longer be named.
    let (dir, _, _) = build("entry-and-hash");
    {
        let store = reopen(&dir);
        let entries = store.tree(trees::AUDIT_ENTRIES).unwrap();
        let nodes = store.tree(trees::AUDIT_NODES).unwrap();
        let mut v = entries.get(key(3)).unwrap().unwrap().to_vec();
        let at = v.windows(6).position(|w| w == b"token-").unwrap();
        v[at] = b'T';
        let mut nk = [0u8; 9];
        nk[1..].copy_from_slice(&key(3));
        nodes
            .insert(nk, &mpcp_pa::audit::merkle::leaf_hash(&v))
            .unwrap();
        entries.insert(key(3), v).unwrap();
    }
    assert_bad(check(&dir, None, true), ErrorCode::AuditLogInvalid, None);
}

#[test]
fn deleted_entry_is_named() {
    let (dir, _, _) = build("deleted");
    {
        let store = reopen(&dir);
        store
            .tree(trees::AUDIT_ENTRIES)
            .unwrap()
            .remove(key(9))
            .unwrap();
    }
    assert_bad(check(&dir, None, true), ErrorCode::AuditLogInvalid, Some(9));
}

#[test]
fn swapped_entries_are_named() {
    let (dir, _, _) = build("swapped");
    {
        let store = reopen(&dir);
        let entries = store.tree(trees::AUDIT_ENTRIES).unwrap();
        let a = entries.get(key(5)).unwrap().unwrap();
        let b = entries.get(key(30)).unwrap().unwrap();
        entries.insert(key(5), b).unwrap();
        entries.insert(key(30), a).unwrap();
    }
    assert_bad(check(&dir, None, true), ErrorCode::AuditLogInvalid, Some(5));
}

#[test]
fn truncated_log_fails_against_an_earlier_trusted_checkpoint() {
    let (dir, _, at40) = build("truncated");
    {
        // Roll the store back to size 35 and drop the checkpoint that covered the rest, as a
        // restore from an old backup (or a careful attacker) would.
        let store = reopen(&dir);
        let entries = store.tree(trees::AUDIT_ENTRIES).unwrap();
        for i in 35..SIZE {
            entries.remove(key(i)).unwrap();
        }
        store
            .tree(trees::AUDIT_META)
            .unwrap()
            .insert("size", &35u64.to_be_bytes())
            .unwrap();
        store
            .tree(trees::AUDIT_CHECKPOINTS)
            .unwrap()
            .remove(key(SIZE))
            .unwrap();
    }
    // On its own the shortened log is self-consistent (checkpoint 30 plus an unsigned tail)...
    let r = check(&dir, None, true).unwrap();
    assert_eq!(
        (r.entries, r.checkpoint.size, r.unsigned_tail()),
        (35, 30, 5)
    );
    // ...but not for an auditor who saw the checkpoint of size 40.
    assert_bad(
        check(&dir, Some(&at40), true),
        ErrorCode::CheckpointInconsistent,
        Some(35),
    );
}

fn replace_latest_checkpoint(dir: &Path, record: &StoredCheckpoint, size: u64) {
    let store = reopen(dir);
    let cps = store.tree(trees::AUDIT_CHECKPOINTS).unwrap();
    cps.insert(key(size), canonical_bytes_of(record).unwrap())
        .unwrap();
}

#[test]
fn checkpoint_signed_by_another_key_fails() {
    let (dir, _, _) = build("other-key");
    let store_log_root = {
        let store = reopen(&dir);
        open(&store).root(SIZE).unwrap()
    };
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: SIZE,
        root: store_log_root,
    };
    let other = other_signer();
    let forged = StoredCheckpoint {
        note: cp.sign(&other).unwrap(),
        vkey: mpcp_pa::audit::Vkey::ed25519(ORIGIN, {
            use mpcp_pa::audit::NoteSigner;
            other.public_key()
        })
        .to_string(),
    };
    replace_latest_checkpoint(&dir, &forged, SIZE);
    // Against the published key: refused, and no entry is to blame.
    assert_bad(check(&dir, None, true), ErrorCode::CheckpointInvalid, None);
    // Without it, the export's own (substituted) key is all there is; the report says so.
    assert!(check(&dir, None, false).unwrap().vkey_from_export);
    // A forged note beside the genuine recorded vkey fails even without --vkey.
    let half = StoredCheckpoint {
        note: forged.note.clone(),
        vkey: log_vkey().to_string(),
    };
    replace_latest_checkpoint(&dir, &half, SIZE);
    assert_bad(check(&dir, None, false), ErrorCode::CheckpointInvalid, None);
    reopen_fails(&dir);
}

#[test]
fn checkpoint_larger_than_the_log_fails() {
    let (dir, _, _) = build("cp-too-large");
    {
        let store = reopen(&dir);
        let entries = store.tree(trees::AUDIT_ENTRIES).unwrap();
        for i in 38..SIZE {
            entries.remove(key(i)).unwrap();
        }
        store
            .tree(trees::AUDIT_META)
            .unwrap()
            .insert("size", &38u64.to_be_bytes())
            .unwrap();
    }
    assert_bad(
        check(&dir, None, true),
        ErrorCode::AuditLogInvalid,
        Some(38),
    );
    reopen_fails(&dir); // the latest checkpoint covers more than the log holds
}
