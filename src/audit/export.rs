//! `audit export`: copies what the store holds into a directory an auditor can verify
//! offline, with no HSM and no appliance. The export reads the sled trees as they are and
//! checks nothing (so a damaged log can still be exported and the verifier can say where the
//! damage is); it needs no signing key, only the latest stored checkpoint.
//!
//! Files:
//! - `entries.jsonl`: the stored entries in index order, one canonical JSON record per line.
//! - `leaf-hashes.txt`: the leaf hashes the log recorded at append time (level-0 Merkle
//!   nodes), lowercase hex, one per line in index order. Untrusted by themselves; the
//!   verifier uses them only after they reproduce a signed root, to name the exact entry
//!   that no longer matches.
//! - `checkpoint`: the latest signed checkpoint note.
//! - `checkpoints.jsonl`: every checkpoint the log signed, oldest first, one
//!   `{"note","vkey"}` canonical JSON record per line (the last one is `checkpoint`).
//! - `log.vkey`: every vkey that signed one of them, one per line, in order of first use (one
//!   line unless the audit key was rotated). Compare them with the published keys, or pass
//!   the published keys to `audit verify --vkey`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::canonical::canonical_bytes_of;
use crate::error::{Error, ErrorCode, Result};
use crate::store::{Store, store_error, trees};

use super::log::StoredCheckpoint;

/// Name of the entries file in an export directory.
pub const ENTRIES_FILE: &str = "entries.jsonl";
/// Name of the recorded leaf hashes file.
pub const LEAF_HASHES_FILE: &str = "leaf-hashes.txt";
/// Name of the checkpoint file.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// Name of the vkey file.
pub const VKEY_FILE: &str = "log.vkey";
/// Name of the file holding every signed checkpoint.
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Entries written.
    pub entries: u64,
    /// Leaf hashes written.
    pub leaf_hashes: u64,
    /// Whether a checkpoint (and vkey) was written.
    pub checkpoint: bool,
    /// Signed checkpoints written to the history file.
    pub checkpoints: u64,
    /// Distinct keys that signed them.
    pub vkeys: u64,
}

fn io(what: &str, e: std::io::Error) -> Error {
    Error::new(ErrorCode::Io, format!("{what}: {e}"))
}

/// Writes the export files for the log in `store` into `out` (created if needed).
pub fn export(store: &Store, out: &Path) -> Result<ExportSummary> {
    std::fs::create_dir_all(out).map_err(|e| io("create export directory", e))?;
    let entries = store.tree(trees::AUDIT_ENTRIES)?;
    let nodes = store.tree(trees::AUDIT_NODES)?;
    let checkpoints = store.tree(trees::AUDIT_CHECKPOINTS)?;

    let mut w = BufWriter::new(
        File::create(out.join(ENTRIES_FILE)).map_err(|e| io("create entries file", e))?,
    );
    let mut n_entries = 0u64;
    for r in entries.iter() {
        let (_, v) = r.map_err(|e| store_error("read", e))?;
        w.write_all(&v).map_err(|e| io("write entries", e))?;
        w.write_all(b"\n").map_err(|e| io("write entries", e))?;
        n_entries += 1;
    }
    w.flush().map_err(|e| io("write entries", e))?;

    // Leaf hashes in index order, stopping at the first gap.
    let mut w = BufWriter::new(
        File::create(out.join(LEAF_HASHES_FILE)).map_err(|e| io("create leaf hash file", e))?,
    );
    let mut n_leaves = 0u64;
    for r in nodes.range([0u8; 9]..[1u8, 0, 0, 0, 0, 0, 0, 0, 0]) {
        let (k, v) = r.map_err(|e| store_error("read", e))?;
        let index = u64::from_be_bytes(k[1..9].try_into().unwrap_or([0xff; 8]));
        if index != n_leaves || v.len() != 32 {
            break;
        }
        writeln!(w, "{}", hex::encode(&v)).map_err(|e| io("write leaf hashes", e))?;
        n_leaves += 1;
    }
    w.flush().map_err(|e| io("write leaf hashes", e))?;

    // Every checkpoint in size order, as stored; the distinct keys in order of first use.
    let mut w = BufWriter::new(
        File::create(out.join(CHECKPOINTS_FILE)).map_err(|e| io("create checkpoints file", e))?,
    );
    let mut latest: Option<StoredCheckpoint> = None;
    let mut vkeys: Vec<String> = Vec::new();
    let mut n_checkpoints = 0u64;
    for r in checkpoints.iter() {
        let (_, v) = r.map_err(|e| store_error("read", e))?;
        let cp: StoredCheckpoint = serde_json::from_slice(&v).map_err(|e| {
            Error::new(
                ErrorCode::AuditLogInvalid,
                format!("stored checkpoint is corrupt: {e}"),
            )
        })?;
        w.write_all(&canonical_bytes_of(&cp)?)
            .and_then(|()| w.write_all(b"\n"))
            .map_err(|e| io("write checkpoints", e))?;
        if !vkeys.contains(&cp.vkey) {
            vkeys.push(cp.vkey.clone());
        }
        n_checkpoints += 1;
        latest = Some(cp);
    }
    w.flush().map_err(|e| io("write checkpoints", e))?;

    let wrote_checkpoint = match latest {
        Some(cp) => {
            std::fs::write(out.join(CHECKPOINT_FILE), cp.note.as_bytes())
                .map_err(|e| io("write checkpoint", e))?;
            let lines: String = vkeys.iter().map(|k| format!("{k}\n")).collect();
            std::fs::write(out.join(VKEY_FILE), lines).map_err(|e| io("write vkey", e))?;
            true
        }
        None => {
            // Never leave a stale checkpoint from an earlier export beside these entries.
            for f in [CHECKPOINT_FILE, VKEY_FILE] {
                match std::fs::remove_file(out.join(f)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("remove stale file", e)),
                }
            }
            false
        }
    };
    Ok(ExportSummary {
        entries: n_entries,
        leaf_hashes: n_leaves,
        checkpoint: wrote_checkpoint,
        checkpoints: n_checkpoints,
        vkeys: vkeys.len() as u64,
    })
}
