//! Offline verification of an export directory (see [`super::export`]): recomputes the
//! Merkle tree from the entries, checks the checkpoint signature and root, checks each
//! entry's own index and canonical form, checks consistency with a previously trusted
//! checkpoint, and names the first entry index that does not verify. Needs no HSM, no store
//! and no appliance.
//!
//! Several audit keys over the log's life: the appliance signs every checkpoint with the
//! audit key active at that moment, so after a rotation older checkpoints carry the old key.
//! Every checkpoint (the latest, each one in the history and the trusted one) must verify
//! under one of the trusted keys (pin every audit key the appliance published), and every
//! checkpoint in the history must match the tree recomputed from the entries at its size.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::checkpoint::{Checkpoint, verify_checkpoint};
use super::entry::check_entry_bytes;
use super::export::{CHECKPOINT_FILE, CHECKPOINTS_FILE, ENTRIES_FILE, LEAF_HASHES_FILE, VKEY_FILE};
use super::log::StoredCheckpoint;
use super::merkle::{self, Frontier, Hash};
use super::note::Vkey;
use crate::error::{Error, ErrorCode, Result};

/// What to trust while verifying.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Log keys obtained out of band (every audit key the log was signed with). When empty,
    /// the keys in the export's own `log.vkey` are used and the report says so (that proves
    /// integrity against those keys only).
    pub trusted_vkeys: Vec<Vkey>,
    /// A checkpoint saved earlier (note text); the log must extend it.
    pub trusted_checkpoint: Option<String>,
}

/// A successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries in the export.
    pub entries: u64,
    /// Root over all entries.
    pub root: Hash,
    /// The verified checkpoint.
    pub checkpoint: Checkpoint,
    /// The trusted checkpoint the log was shown to extend, if one was given.
    pub trusted: Option<Checkpoint>,
    /// Whether the log key came from the export itself rather than from the caller.
    pub vkey_from_export: bool,
    /// The log key that signed the checkpoint.
    pub vkey: Vkey,
    /// Which keys signed the checkpoint history, in order of first use.
    pub signers: Vec<SignerSpan>,
}

/// The checkpoints of the history one key signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerSpan {
    /// The key.
    pub vkey: Vkey,
    /// How many checkpoints it signed.
    pub checkpoints: u64,
    /// Tree size of the first of them.
    pub first_size: u64,
    /// Tree size of the last of them.
    pub last_size: u64,
}

impl VerifyReport {
    /// Entries after the checkpoint (well-formed but not yet covered by a signature).
    pub fn unsigned_tail(&self) -> u64 {
        self.entries - self.checkpoint.size
    }

    /// Checkpoints in the verified history.
    pub fn checkpoints(&self) -> u64 {
        self.signers.iter().map(|s| s.checkpoints).sum()
    }
}

/// A failed verification: the stable code, what failed, and the first entry index that does
/// not verify when the failure can be tied to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The error (code and message).
    pub error: Error,
    /// First entry index that does not verify, when known.
    pub first_bad_index: Option<u64>,
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.first_bad_index {
            Some(i) => write!(f, "entry {i}: {}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

fn fail(code: ErrorCode, msg: impl Into<String>, index: Option<u64>) -> VerifyFailure {
    VerifyFailure {
        error: Error::new(code, msg),
        first_bad_index: index,
    }
}

/// A checkpoint's `root` against the root `recomputed` from the `count` entries read,
/// refused with `code`: `short` when the log is too short to have the checkpoint's tree
/// (`recomputed` is `None`; the first missing index is named), `differs` when it has another
/// root.
fn check_root(
    code: ErrorCode,
    count: u64,
    recomputed: Option<Hash>,
    root: &Hash,
    short: impl FnOnce() -> String,
    differs: impl FnOnce() -> String,
) -> Result<(), VerifyFailure> {
    match recomputed {
        None => Err(fail(code, short(), Some(count))),
        Some(r) if r != *root => Err(fail(code, differs(), None)),
        Some(_) => Ok(()),
    }
}

/// CHECKPOINT_INVALID, naming no entry: a checkpoint that is malformed or does not verify.
fn invalid_checkpoint(msg: impl Into<String>) -> VerifyFailure {
    fail(ErrorCode::CheckpointInvalid, msg, None)
}

/// CHECKPOINT_INCONSISTENT, naming no entry: checkpoints that disagree with each other or
/// with the log.
fn inconsistent_checkpoint(msg: impl Into<String>) -> VerifyFailure {
    fail(ErrorCode::CheckpointInconsistent, msg, None)
}

impl From<Error> for VerifyFailure {
    fn from(error: Error) -> Self {
        VerifyFailure {
            error,
            first_bad_index: None,
        }
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::new(ErrorCode::Io, format!("read {}: {e}", path.display())))
}

/// Verifies a checkpoint note against the trusted log keys (any key whose name is its
/// origin may have signed it).
fn verify_with_any(note: &str, keys: &[Vkey]) -> Result<(Checkpoint, Vkey)> {
    let mut last = Error::new(ErrorCode::CheckpointInvalid, "no trusted log key given");
    for k in keys {
        match verify_checkpoint(note, k, &[], 0) {
            Ok(v) => return Ok((v.checkpoint, k.clone())),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Reads the recorded leaf hashes, if the file is there and well formed.
fn read_leaf_hashes(path: &Path) -> Option<Vec<Hash>> {
    let f = File::open(path).ok()?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let h: Hash = hex::decode(line.ok()?.trim()).ok()?.try_into().ok()?;
        out.push(h);
    }
    Some(out)
}

/// Parses `log.vkey`: one vkey per non-empty line.
fn read_vkeys(path: &Path) -> Result<Vec<Vkey>> {
    let keys = read_text(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(Vkey::parse)
        .collect::<Result<Vec<_>>>()?;
    if keys.is_empty() {
        return Err(Error::new(
            ErrorCode::CheckpointInvalid,
            format!("{} names no key", path.display()),
        ));
    }
    Ok(keys)
}

/// One checkpoint of the history: size, root and the index of the trusted key that signed it.
type HistoryItem = (u64, Hash, usize);

/// Reads the checkpoint history and verifies every signature under `keys`: sizes strictly
/// increasing, same origin as `latest`, ending with `latest`.
fn read_history(
    path: &Path,
    keys: &[Vkey],
    latest: &Checkpoint,
) -> std::result::Result<(Vec<HistoryItem>, Vec<SignerSpan>), VerifyFailure> {
    let file = File::open(path)
        .map_err(|e| Error::new(ErrorCode::Io, format!("read {}: {e}", path.display())))?;
    let mut items: Vec<HistoryItem> = Vec::new();
    let mut spans: Vec<SignerSpan> = Vec::new();
    let mut last: Option<Checkpoint> = None;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::new(ErrorCode::Io, format!("read checkpoints: {e}")))?;
        let stored: StoredCheckpoint = serde_json::from_str(&line).map_err(|e| {
            invalid_checkpoint(format!(
                "checkpoint {} of the history is malformed: {e}",
                i + 1
            ))
        })?;
        let (cp, key) = verify_with_any(&stored.note, keys).map_err(|e| {
            invalid_checkpoint(format!(
                "checkpoint {} of the history does not verify under the trusted log keys: {}",
                i + 1,
                e.message
            ))
        })?;
        if cp.origin != latest.origin {
            return Err(invalid_checkpoint(format!(
                "checkpoint {} of the history is for log {:?}, not {:?}",
                i + 1,
                cp.origin,
                latest.origin
            )));
        }
        if last.as_ref().is_some_and(|l| l.size >= cp.size) {
            return Err(inconsistent_checkpoint(format!(
                "checkpoint {} of the history (size {}) does not follow the one before",
                i + 1,
                cp.size
            )));
        }
        let k = keys.iter().position(|x| *x == key).unwrap_or(0);
        match spans.iter_mut().find(|s| s.vkey == key) {
            Some(s) => {
                s.checkpoints += 1;
                s.last_size = cp.size;
            }
            None => spans.push(SignerSpan {
                vkey: key,
                checkpoints: 1,
                first_size: cp.size,
                last_size: cp.size,
            }),
        }
        items.push((cp.size, cp.root, k));
        last = Some(cp);
    }
    if last.as_ref() != Some(latest) {
        return Err(inconsistent_checkpoint(format!(
            "the checkpoint history does not end with the exported checkpoint (size {})",
            latest.size
        )));
    }
    Ok((items, spans))
}

fn root_of(leaves: &[Hash]) -> Hash {
    let mut f = Frontier::new();
    for l in leaves {
        f.push(*l, |_, _, _| {});
    }
    f.root()
}

/// Verifies the export in `dir`. `progress` is called with the number of entry-file bytes
/// processed so far (the total is the file's length), for a progress display.
pub fn verify_export(
    dir: &Path,
    options: &VerifyOptions,
    progress: &mut dyn FnMut(u64),
) -> std::result::Result<VerifyReport, VerifyFailure> {
    // 1. Keys and checkpoints: signatures first, so nothing below relies on forged roots.
    let (keys, vkey_from_export) = if options.trusted_vkeys.is_empty() {
        (read_vkeys(&dir.join(VKEY_FILE))?, true)
    } else {
        (options.trusted_vkeys.clone(), false)
    };
    let note = read_text(&dir.join(CHECKPOINT_FILE))?;
    let (cp, vkey) = verify_with_any(&note, &keys).map_err(|e| {
        invalid_checkpoint(format!(
            "checkpoint does not verify under the trusted log key: {}",
            e.message
        ))
    })?;
    let trusted = match &options.trusted_checkpoint {
        Some(t) => {
            let (tc, _) = verify_with_any(t, &keys).map_err(|e| {
                invalid_checkpoint(format!("trusted checkpoint does not verify: {}", e.message))
            })?;
            if tc.origin != cp.origin {
                return Err(inconsistent_checkpoint(format!(
                    "trusted checkpoint is for log {:?}, not {:?}",
                    tc.origin, cp.origin
                )));
            }
            Some(tc)
        }
        None => None,
    };
    let (history, signers) = read_history(&dir.join(CHECKPOINTS_FILE), &keys, &cp)?;

    // 2. The recorded leaf hashes are usable only if they reproduce the signed root.
    let recorded = read_leaf_hashes(&dir.join(LEAF_HASHES_FILE))
        .filter(|l| l.len() as u64 >= cp.size && root_of(&l[..cp.size as usize]) == cp.root);

    // 3. Stream the entries: per-entry checks, leaf hashes, roots at the sizes of interest.
    let path: PathBuf = dir.join(ENTRIES_FILE);
    let file = File::open(&path)
        .map_err(|e| Error::new(ErrorCode::Io, format!("read {}: {e}", path.display())))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut frontier = Frontier::new();
    let mut root_at_cp = (cp.size == 0).then(merkle::empty_root);
    let trusted_size = trusted.as_ref().map(|t| t.size);
    let mut root_at_trusted = (trusted_size == Some(0)).then(merkle::empty_root);
    // The first checkpoint of the history that the entries do not reproduce.
    let mut history_at = 0usize;
    let mut history_mismatch: Option<HistoryItem> = None;
    let mut check_history = |size: u64, root: &dyn Fn() -> Hash| {
        while let Some(item) = history.get(history_at).filter(|h| h.0 == size) {
            if history_mismatch.is_none() && item.1 != root() {
                history_mismatch = Some(*item);
            }
            history_at += 1;
        }
    };
    check_history(0, &merkle::empty_root);
    let mut line = Vec::with_capacity(1024);
    let mut consumed = 0u64;
    let mut index = 0u64;
    let mut latest_time: Option<time::OffsetDateTime> = None;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::new(ErrorCode::Io, format!("read entries: {e}")))?;
        if n == 0 {
            break;
        }
        consumed += n as u64;
        if line.last() != Some(&b'\n') {
            return Err(fail(
                ErrorCode::AuditLogInvalid,
                "last line is cut short",
                Some(index),
            ));
        }
        let bytes = &line[..line.len() - 1];
        let value = check_entry_bytes(bytes, index).map_err(|e| VerifyFailure {
            error: e,
            first_bad_index: Some(index),
        })?;
        let leaf = merkle::leaf_hash(bytes);
        if let Some(rec) = &recorded
            && index < cp.size
            && rec[index as usize] != leaf
        {
            return Err(fail(
                ErrorCode::AuditLogInvalid,
                "entry does not match the leaf hash committed to by the signed checkpoint \
                 (entry changed)",
                Some(index),
            ));
        }
        // Audit time runs forward: a step back beyond the drift tolerance means the log was
        // written with a clock set back (or forged); checked after the leaf hash, so a changed
        // entry is reported as changed.
        let time = value["time"]
            .as_str()
            .and_then(|t| crate::clock::parse_rfc3339(t, "time").ok());
        if let Some(t) = time {
            if let Some(latest) = latest_time
                && t + crate::clock::DEFAULT_DRIFT < latest
            {
                return Err(fail(
                    ErrorCode::AuditTimeBackwards,
                    format!(
                        "entry time {} is before an earlier entry's {} by more than the drift \
                         tolerance of {} s",
                        crate::clock::format_rfc3339(t),
                        crate::clock::format_rfc3339(latest),
                        crate::clock::DEFAULT_DRIFT.as_secs()
                    ),
                    Some(index),
                ));
            }
            latest_time = Some(latest_time.map_or(t, |l| l.max(t)));
        }
        frontier.push(leaf, |_, _, _| {});
        index += 1;
        if index == cp.size {
            root_at_cp = Some(frontier.root());
        }
        if Some(index) == trusted_size {
            root_at_trusted = Some(frontier.root());
        }
        check_history(index, &|| frontier.root());
        if index.is_multiple_of(4096) {
            progress(consumed);
        }
    }
    progress(consumed);
    let count = index;

    // 4. The signed checkpoint against the recomputed tree.
    check_root(
        ErrorCode::AuditLogInvalid,
        count,
        root_at_cp,
        &cp.root,
        || {
            format!(
                "checkpoint covers {} entries but the log has only {count}: entries missing",
                cp.size
            )
        },
        || {
            format!(
                "entries 0..{} do not reproduce the checkpoint root; the recorded leaf hashes \
                 are missing or altered too, so the changed entry cannot be named",
                cp.size
            )
        },
    )?;

    // 5. The trusted checkpoint: the log must still contain the tree it saw.
    if let Some(t) = &trusted {
        check_root(
            ErrorCode::CheckpointInconsistent,
            count,
            root_at_trusted,
            &t.root,
            || {
                format!(
                    "log truncated: the trusted checkpoint covers {} entries, the log has {count}",
                    t.size
                )
            },
            || {
                format!(
                    "the log's first {} entries are not those the trusted checkpoint committed \
                     to (history rewritten or forked)",
                    t.size
                )
            },
        )?;
    }
    // 6. Every checkpoint the log signed must describe this same history.
    if let Some((size, _, k)) = history_mismatch {
        return Err(inconsistent_checkpoint(format!(
            "the checkpoint of size {size} signed by {} does not match the log's first \
                 {size} entries: the log signed a history that this one does not extend",
            keys[k]
        )));
    }
    Ok(VerifyReport {
        entries: count,
        root: frontier.root(),
        checkpoint: cp,
        trusted,
        vkey_from_export,
        vkey,
        signers,
    })
}
