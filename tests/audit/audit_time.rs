//! Audit time: `audit verify` fails (AUDIT_TIME_BACKWARDS, naming the entry) on a log whose
//! entry times run backwards by more than the drift tolerance, even when every checkpoint
//! signature and the Merkle tree are right (a log written by a version that followed the
//! wall clock back, or by someone holding the key); a step back within the tolerance
//! passes. The appliance itself never writes one: with its clock set back, the entry
//! carries the time of the last entry.

use std::path::Path;

use mpcp_pa::audit::export::export;
use mpcp_pa::audit::merkle::{MemoryTree, leaf_hash};
use mpcp_pa::audit::verify::{VerifyOptions, verify_export};
use mpcp_pa::audit::{Checkpoint, Entry, StoredCheckpoint};
use mpcp_pa::canonical::canonical_bytes_of;
use mpcp_pa::clock::parse_rfc3339;
use mpcp_pa::error::ErrorCode;
use mpcp_pa::events::EventSink;
use mpcp_pa::store::Store;

use crate::kit;
use crate::kit::audit::*;

/// Writes a signed export of entries with the given times.
fn write_export(dir: &Path, times: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut tree = MemoryTree::new();
    let mut lines = String::new();
    for (i, t) in times.iter().enumerate() {
        let bytes = Entry {
            index: i as u64,
            time: t.to_string(),
            actor: actor(i as u64),
            event: event(i as u64),
        }
        .to_bytes()
        .unwrap();
        tree.push(leaf_hash(&bytes));
        lines.push_str(std::str::from_utf8(&bytes).unwrap());
        lines.push('\n');
    }
    let note = Checkpoint {
        origin: ORIGIN.into(),
        size: times.len() as u64,
        root: tree.root(),
    }
    .sign(&log_signer())
    .unwrap();
    let record = StoredCheckpoint {
        note: note.clone(),
        vkey: log_vkey().to_string(),
    };
    std::fs::write(dir.join("entries.jsonl"), lines).unwrap();
    std::fs::write(dir.join("checkpoint"), &note).unwrap();
    let mut rec = canonical_bytes_of(&record).unwrap();
    rec.push(b'\n');
    std::fs::write(dir.join("checkpoints.jsonl"), rec).unwrap();
    std::fs::write(dir.join("log.vkey"), format!("{}\n", log_vkey())).unwrap();
}

fn options() -> VerifyOptions {
    VerifyOptions {
        trusted_vkeys: vec![log_vkey()],
        trusted_checkpoint: None,
    }
}

#[test]
fn entries_whose_time_runs_backwards_fail_verification() {
    let dir = kit::tmp::dir("time-backwards");
    write_export(
        &dir.join("ok"),
        &[
            "2026-03-01T12:00:00Z",
            "2026-03-01T12:00:00Z",
            // Back by 300 s: within the drift tolerance.
            "2026-03-01T11:55:00Z",
            "2026-03-01T12:10:00Z",
        ],
    );
    verify_export(&dir.join("ok"), &options(), &mut |_| {}).unwrap();
    write_export(
        &dir.join("bad"),
        &[
            "2026-03-01T12:00:00Z",
            "2026-03-01T12:10:00Z",
            "2020-06-01T12:00:00Z",
            "2026-03-01T12:20:00Z",
        ],
    );
    let f = verify_export(&dir.join("bad"), &options(), &mut |_| {}).unwrap_err();
    assert_eq!(f.error.code, ErrorCode::AuditTimeBackwards, "{f}");
    assert_eq!(f.error.code.as_str(), "AUDIT_TIME_BACKWARDS");
    assert_eq!(f.first_bad_index, Some(2), "{f}");
}

#[test]
fn the_log_never_writes_a_time_before_its_last_entry() {
    let dir = kit::tmp::dir("time-clamped");
    let store = Store::open(&mpcp_pa::app::DataDir::new(&dir).store()).unwrap();
    let clock = clock();
    let log = mpcp_pa::audit::AuditLog::open(
        &store,
        mpcp_pa::audit::AuditConfig::new(ORIGIN),
        clock.clone(),
    )
    .unwrap();
    fill(&log, 2);
    let at = parse_rfc3339("2020-06-01T12:00:00Z", "t").unwrap();
    clock.set(at);
    log.record(&actor(2), event(2)).unwrap();
    assert_eq!(
        log.last_entry_time(),
        Some(parse_rfc3339("2026-03-01T12:00:00Z", "t").unwrap())
    );
    log.sign_checkpoint(&log_signer()).unwrap();
    let out = dir.join("export");
    export(&store, &out).unwrap();
    verify_export(&out, &options(), &mut |_| {}).unwrap();
    let text = std::fs::read_to_string(out.join("entries.jsonl")).unwrap();
    assert!(!text.contains("2020-"), "{text}");
}
