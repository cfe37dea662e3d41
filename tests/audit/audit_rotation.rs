//! Several audit keys over the life of one log: checkpoints before a rotation carry the old
//! key, later ones the new key. The export lists every key that signed and every checkpoint;
//! verification requires each checkpoint to verify under one of the pinned keys and to match
//! the entries at its size.

use std::path::Path;

use mpcp_pa::audit::export::{CHECKPOINTS_FILE, VKEY_FILE, export};
use mpcp_pa::audit::verify::{VerifyFailure, VerifyOptions, VerifyReport, verify_export};
use mpcp_pa::audit::{Checkpoint, NoteSigner, SoftwareNoteSigner, StoredCheckpoint, Vkey};
use mpcp_pa::canonical::canonical_bytes_of;
use mpcp_pa::error::ErrorCode;
use mpcp_pa::store::trees;

use crate::kit;
use crate::kit::audit::*;

fn new_signer() -> SoftwareNoteSigner {
    SoftwareNoteSigner::from_seed(ORIGIN, &[0x33; 32]).unwrap()
}

fn vkey_of(s: &SoftwareNoteSigner) -> Vkey {
    Vkey::ed25519(ORIGIN, s.public_key())
}

/// 40 entries; checkpoints at 10 and 20 by the first key, at 30 and 40 by the second.
/// Returns the directory and the note at 10 (an auditor's saved checkpoint).
fn build(name: &str) -> (kit::tmp::TmpDir, String) {
    let dir = kit::tmp::dir(name);
    let store = reopen(&dir);
    let log = open(&store);
    let (old, new) = (log_signer(), new_signer());
    fill(&log, 10);
    let at10 = log.sign_checkpoint(&old).unwrap().note;
    fill(&log, 10);
    log.sign_checkpoint(&old).unwrap();
    fill(&log, 10);
    log.sign_checkpoint(&new).unwrap();
    fill(&log, 10);
    log.sign_checkpoint(&new).unwrap();
    (dir, at10)
}

fn check(
    dir: &Path,
    vkeys: Vec<Vkey>,
    trusted: Option<&str>,
) -> Result<VerifyReport, VerifyFailure> {
    let store = reopen(dir);
    let out = dir.join("export");
    export(&store, &out).unwrap();
    verify_export(
        &out,
        &VerifyOptions {
            trusted_vkeys: vkeys,
            trusted_checkpoint: trusted.map(str::to_string),
        },
        &mut |_| {},
    )
}

#[test]
fn rotated_log_verifies_under_every_pinned_key() {
    let (dir, at10) = build("rotated");
    let (old, new) = (vkey_of(&log_signer()), vkey_of(&new_signer()));
    let r = check(&dir, vec![old.clone(), new.clone()], Some(&at10)).unwrap();
    assert_eq!((r.entries, r.checkpoint.size, r.checkpoints()), (40, 40, 4));
    assert_eq!(r.vkey, new);
    let spans: Vec<_> = r
        .signers
        .iter()
        .map(|s| (s.vkey.clone(), s.checkpoints, s.first_size, s.last_size))
        .collect();
    assert_eq!(
        spans,
        vec![(old.clone(), 2, 10, 20), (new.clone(), 2, 30, 40)]
    );
    // The export names both keys, oldest first, and every checkpoint.
    let out = dir.join("export");
    let listed = std::fs::read_to_string(out.join(VKEY_FILE)).unwrap();
    assert_eq!(listed, format!("{old}\n{new}\n"));
    let history = std::fs::read_to_string(out.join(CHECKPOINTS_FILE)).unwrap();
    assert_eq!(history.lines().count(), 4);
    // Without pinned keys the export's own list is used (and the report says so).
    assert!(check(&dir, vec![], Some(&at10)).unwrap().vkey_from_export);
}

#[test]
fn a_checkpoint_under_a_key_that_is_not_pinned_fails() {
    let (dir, at10) = build("unpinned");
    let (old, new) = (vkey_of(&log_signer()), vkey_of(&new_signer()));
    // Only the new key: the history signed by the old key does not verify.
    let f = check(&dir, vec![new], None).unwrap_err();
    assert_eq!(f.error.code, ErrorCode::CheckpointInvalid, "{f}");
    assert!(f.error.message.contains("history"), "{f}");
    // Only the old key: the latest checkpoint does not verify.
    let f = check(&dir, vec![old], Some(&at10)).unwrap_err();
    assert_eq!(f.error.code, ErrorCode::CheckpointInvalid, "{f}");
}

#[test]
fn an_inconsistent_checkpoint_in_the_history_fails() {
    let (dir, _) = build("forked-history");
    // The old key signed a second tree head of size 20 that these entries do not produce
    // (a fork shown to someone else); it replaces the genuine one in the history.
    let forged = Checkpoint {
        origin: ORIGIN.into(),
        size: 20,
        root: [0x5a; 32],
    };
    let record = StoredCheckpoint {
        note: forged.sign(&log_signer()).unwrap(),
        vkey: vkey_of(&log_signer()).to_string(),
    };
    {
        let store = reopen(&dir);
        store
            .tree(trees::AUDIT_CHECKPOINTS)
            .unwrap()
            .insert(20u64.to_be_bytes(), canonical_bytes_of(&record).unwrap())
            .unwrap();
    }
    let keys = vec![vkey_of(&log_signer()), vkey_of(&new_signer())];
    let f = check(&dir, keys, None).unwrap_err();
    assert_eq!(f.error.code, ErrorCode::CheckpointInconsistent, "{f}");
    assert!(f.error.message.contains("size 20"), "{f}");
}

#[test]
fn a_missing_or_truncated_history_fails() {
    let (dir, _) = build("history-cut");
    let keys = vec![vkey_of(&log_signer()), vkey_of(&new_signer())];
    check(&dir, keys.clone(), None).unwrap();
    let out = dir.join("export");
    let history = std::fs::read_to_string(out.join(CHECKPOINTS_FILE)).unwrap();
    let cut: String = history.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(out.join(CHECKPOINTS_FILE), cut).unwrap();
    let options = VerifyOptions {
        trusted_vkeys: keys,
        trusted_checkpoint: None,
    };
    let f = verify_export(&out, &options, &mut |_| {}).unwrap_err();
    assert_eq!(f.error.code, ErrorCode::CheckpointInconsistent, "{f}");
    std::fs::remove_file(out.join(CHECKPOINTS_FILE)).unwrap();
    let f = verify_export(&out, &options, &mut |_| {}).unwrap_err();
    assert_eq!(f.error.code, ErrorCode::Io, "{f}");
}
