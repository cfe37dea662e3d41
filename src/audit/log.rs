//! The audit log in sled: append with durable group commit, read side (entries, heads,
//! proofs), and checkpoint signing that never signs two inconsistent checkpoints.
//!
//! Layout (tree names in [`crate::store::trees`]):
//! - `audit/entries`: big-endian index -> canonical entry bytes.
//! - `audit/nodes`: `level (1 byte) || index (8 bytes BE)` -> 32-byte hash of the perfect
//!   subtree; leaves are level 0. Written once, when the subtree completes.
//! - `audit/leaf-buckets`: two bytes of leaf hash -> the records of the entries with that
//!   prefix ([`super::leaf_buckets`]); `audit/leaf-index` (leaf hash -> big-endian index) of
//!   stores written before them is still read.
//! - `audit/meta`: `size` (u64 BE, advanced in the same transaction as the entries it
//!   counts, after checking it still holds the expected value) and `origin`.
//! - `audit/checkpoints`: big-endian tree size -> `{"note","vkey"}` canonical JSON.
//!
//! Nothing in this module updates or deletes a stored entry, node or checkpoint: every write
//! is an insert of a key checked to be absent (entries, checkpoints) or new by construction
//! (nodes), and the API offers no other operation. The leaf index is derived data: a bucket
//! only grows by a record, and a record is confirmed against its entry before use. Side
//! writes that commit with an entry ([`super::append`]) go to service trees only; one aimed
//! at an `audit/` tree is refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use time::OffsetDateTime;

use super::append::{Append, AppendTicket, AuditSink, Expect, SideWrites};
use super::checkpoint::Checkpoint;
use super::commit::{BatchWriter, GroupCommitter};
use super::entry::Entry;
use super::leaf_buckets;
use super::merkle::{self, Frontier, Hash, NodeSource};
use super::note::{Note, NoteSigner, Vkey, check_key_name};
use crate::canonical::canonical_bytes_of;
use crate::clock::{Clock, DEFAULT_DRIFT, SigningGate, format_rfc3339, parse_rfc3339};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, Event, EventSink};
use crate::seams::debug_showing;
use crate::store::{Store, store_error, trees};

const META_SIZE: &[u8] = b"size";
const META_ORIGIN: &[u8] = b"origin";

/// Most entries one [`AuditLog::entries`] call returns.
pub const MAX_ENTRIES_PER_READ: u64 = 10_000;
/// Stored nodes at this level and above (one per 2^level entries) are also kept in memory
/// once read or written: every proof passes through them, and they never change.
pub const CACHED_LEVEL: u8 = 8;
/// Default largest batch the committer writes with one flush.
pub const DEFAULT_MAX_BATCH: usize = 1024;

/// How the log is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Checkpoint origin line, also the checkpoint key's name (a schema-less URL such as
    /// `pa.example.com/audit`). Fixed for the life of the log.
    pub origin: String,
    /// Largest number of entries written and flushed together.
    pub max_batch: usize,
}

impl AuditConfig {
    /// A configuration with the given origin and default batching.
    pub fn new(origin: impl Into<String>) -> AuditConfig {
        AuditConfig {
            origin: origin.into(),
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// A signed checkpoint as stored: the note and the vkey of the key that signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCheckpoint {
    /// The signed note text.
    pub note: String,
    /// The signing key in vkey form.
    pub vkey: String,
}

impl StoredCheckpoint {
    /// The tree head the note commits to (the signature is checked by
    /// [`StoredCheckpoint::verify`]).
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        Checkpoint::parse_body(&Note::parse(&self.note)?.text)
    }

    /// Checks the note's signature against its recorded vkey and returns the tree head.
    pub fn verify(&self) -> Result<Checkpoint> {
        let vkey = Vkey::parse(&self.vkey)?;
        let v = super::checkpoint::verify_checkpoint(&self.note, &vkey, &[], 0)?;
        Ok(v.checkpoint)
    }
}

struct Trees {
    entries: sled::Tree,
    nodes: sled::Tree,
    leaves: sled::Tree,
    legacy_leaves: sled::Tree,
    meta: sled::Tree,
    checkpoints: sled::Tree,
}

impl Trees {
    /// The stored size counter and the time of the last stored entry (None when empty),
    /// checked to agree: AUDIT_LOG_INVALID when the counter is not one past the last entry.
    fn stored_tail(&self) -> Result<(u64, Option<OffsetDateTime>)> {
        let size = match self
            .meta
            .get(META_SIZE)
            .map_err(|e| store_error("read", e))?
        {
            Some(v) => be_u64(&v)?,
            None => 0,
        };
        let last = self.entries.last().map_err(|e| store_error("read", e))?;
        let last_index = match &last {
            Some((k, _)) => Some(be_u64(k)?),
            None => None,
        };
        if last_index.map_or(0, |i| i + 1) != size {
            return Err(invalid(format!(
                "size counter is {size} but the last stored entry is {last_index:?}"
            )));
        }
        let last_time = match &last {
            Some((_, v)) => Some(entry_time(v)?),
            None => None,
        };
        Ok((size, last_time))
    }
}

struct LogInner {
    store: Store,
    t: Trees,
    origin: String,
    clock: Arc<dyn Clock>,
    /// Durable size: entries below it are flushed and their nodes final.
    size: AtomicU64,
    /// Time of the last entry (whole seconds). Entry times never go below it, and signing is
    /// refused while the clock reads earlier than it minus `drift_secs`.
    last_time: Mutex<Option<OffsetDateTime>>,
    /// Drift tolerance of the signing gate, in seconds.
    drift_secs: AtomicU64,
    /// The appender's frontier; held while a batch is written.
    writer: Mutex<Frontier>,
    /// Serialises checkpoint signing.
    signing: Mutex<()>,
    /// Service trees that side writes target, opened on first use.
    side: Mutex<HashMap<&'static str, sled::Tree>>,
    /// Upper Merkle nodes (level >= [`CACHED_LEVEL`]); immutable once stored.
    upper: RwLock<HashMap<(u8, u64), Hash>>,
    /// Counters for [`AuditLog::stats`].
    batches: AtomicU64,
    node_reads: AtomicU64,
    /// Where signed checkpoints are counted, once the log is given metrics.
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

/// Counters since the log was opened (for benchmarks and monitoring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogStats {
    /// Batches written (each durable batch is one flush).
    pub batches: u64,
    /// Merkle nodes read from the store for heads and proofs (cached upper nodes excluded).
    pub node_reads: u64,
}

fn node_key(level: u8, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = level;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn be_u64(bytes: &[u8]) -> Result<u64> {
    let a: [u8; 8] = bytes
        .try_into()
        .map_err(|_| invalid("stored counter is not 8 bytes"))?;
    Ok(u64::from_be_bytes(a))
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::AuditLogInvalid, msg)
}

impl NodeSource for LogInner {
    fn node(&self, level: u8, index: u64) -> Result<Hash> {
        if level >= CACHED_LEVEL
            && let Some(h) = self
                .upper
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(level, index))
        {
            return Ok(*h);
        }
        self.node_reads.fetch_add(1, Ordering::Relaxed);
        let v = self
            .t
            .nodes
            .get(node_key(level, index))
            .map_err(|e| store_error("read", e))?
            .ok_or_else(|| invalid(format!("Merkle node ({level}, {index}) is missing")))?;
        let h: Hash = v
            .as_ref()
            .try_into()
            .map_err(|_| invalid(format!("Merkle node ({level}, {index}) is not 32 bytes")))?;
        if level >= CACHED_LEVEL {
            self.upper
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert((level, index), h);
        }
        Ok(h)
    }
}

/// The append-only audit log. Implements [`EventSink`]: `record` returns the entry's index
/// only after the entry is flushed to disk, sharing one flush among concurrent callers; and
/// [`AuditSink`]: `append` commits an entry together with its side writes (see
/// [`super::append`]) in the same transaction and flush, awaited without a thread.
pub struct AuditLog {
    inner: Arc<LogInner>,
    committer: GroupCommitter<Append>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("origin", &self.inner.origin)
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

struct CommitWriter(Arc<LogInner>);

/// Whether `event` is a change the service log names (keys, API tokens, HSM bindings,
/// startup and shutdown).
fn is_change(event: &Event) -> bool {
    !matches!(
        event,
        Event::PolicyStored { .. }
            | Event::GrantIssued { .. }
            | Event::GrantRevoked { .. }
            | Event::AllowlistIssued { .. }
            | Event::KeySetSigned { .. }
            | Event::TrustBundleIssued { .. }
            | Event::RequestRefused { .. }
    )
}

impl BatchWriter for CommitWriter {
    type Item = Append;
    fn write_batch(&mut self, items: Vec<Append>) -> Result<Vec<Result<u64>>> {
        // Key and token changes, startup and shutdown are logged once durable (events
        // never carry secrets); artifacts and refusals have the request's log line.
        // Logged in the caller's span (the request's), so the line carries its request id.
        let changes: Vec<(usize, String, String, tracing::Span)> = items
            .iter()
            .enumerate()
            .filter(|(_, a)| is_change(&a.event))
            .filter_map(|(i, a)| {
                let json = serde_json::to_string(&a.event).ok()?;
                Some((i, a.actor.name.clone(), json, a.span.clone()))
            })
            .collect();
        let outcomes = self.0.append_batch(items, true)?;
        for (i, actor, event, span) in changes {
            if let Some(Ok(index)) = outcomes.get(i) {
                span.in_scope(|| {
                    tracing::info!(index, actor = %actor, event = %event, "audit: change recorded")
                });
            }
        }
        Ok(outcomes)
    }

    fn recover(&mut self) -> Result<()> {
        self.0.recover()
    }
}

impl AuditLog {
    /// Opens (creating on first use) the log in `store` and checks it: the origin matches,
    /// the size counter matches the stored entries, the Merkle nodes of the head are there,
    /// and the latest checkpoint verifies under its recorded key and matches the tree at its
    /// size. A log that fails these checks is refused (`AUDIT_LOG_INVALID`): the appliance
    /// must not append to a log it cannot vouch for. `audit export` reads such a store
    /// without these checks so that `audit verify` can locate the damage.
    pub fn open(store: &Store, config: AuditConfig, clock: Arc<dyn Clock>) -> Result<AuditLog> {
        check_key_name(&config.origin)?;
        let t = Trees {
            entries: store.tree(trees::AUDIT_ENTRIES)?,
            nodes: store.tree(trees::AUDIT_NODES)?,
            leaves: store.tree(trees::AUDIT_LEAF_BUCKETS)?,
            legacy_leaves: store.tree(trees::AUDIT_LEAF_INDEX)?,
            meta: store.tree(trees::AUDIT_META)?,
            checkpoints: store.tree(trees::AUDIT_CHECKPOINTS)?,
        };
        // The origin is the log's identity: set once, then only compared.
        let prev = t
            .meta
            .compare_and_swap(
                META_ORIGIN,
                None as Option<&[u8]>,
                Some(config.origin.as_bytes()),
            )
            .map_err(|e| store_error("write", e))?;
        if let Err(cas) = prev {
            let stored = cas
                .current
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            if stored.as_deref() != Some(config.origin.as_str()) {
                return Err(Error::new(
                    ErrorCode::ConfigInvalid,
                    format!(
                        "audit log origin is {stored:?}, configuration says {:?}",
                        config.origin
                    ),
                ));
            }
        }
        let (size, last_time) = t.stored_tail()?;
        let inner = LogInner {
            store: store.clone(),
            t,
            origin: config.origin.clone(),
            clock,
            size: AtomicU64::new(size),
            last_time: Mutex::new(last_time),
            drift_secs: AtomicU64::new(DEFAULT_DRIFT.as_secs()),
            writer: Mutex::new(Frontier::new()),
            signing: Mutex::new(()),
            side: Mutex::new(HashMap::new()),
            upper: RwLock::new(HashMap::new()),
            batches: AtomicU64::new(0),
            metrics: std::sync::OnceLock::new(),
            node_reads: AtomicU64::new(0),
        };
        let frontier = Frontier::load(&inner, size)?;
        if let Some(cp) = inner.latest_checkpoint()? {
            let head = cp.verify().map_err(|e| {
                invalid(format!("latest checkpoint does not verify: {}", e.message))
            })?;
            if head.size > size {
                return Err(invalid(format!(
                    "latest checkpoint covers {} entries but the log holds {size}",
                    head.size
                )));
            }
            if merkle::root_at(&inner, head.size)? != head.root {
                return Err(invalid(format!(
                    "tree at size {} does not match the latest checkpoint",
                    head.size
                )));
            }
        }
        *inner.writer.lock().unwrap_or_else(|p| p.into_inner()) = frontier;
        let inner = Arc::new(inner);
        let committer = GroupCommitter::start(CommitWriter(inner.clone()), config.max_batch)?;
        Ok(AuditLog { inner, committer })
    }

    /// Opens an existing log under the origin it was created with (for read-only tools).
    /// `NOT_FOUND` if the store holds no audit log.
    pub fn open_existing(store: &Store, clock: Arc<dyn Clock>) -> Result<AuditLog> {
        let meta = store.tree(trees::AUDIT_META)?;
        let origin = meta
            .get(META_ORIGIN)
            .map_err(|e| store_error("read", e))?
            .ok_or_else(|| Error::new(ErrorCode::NotFound, "the store holds no audit log"))?;
        let origin = String::from_utf8(origin.to_vec())
            .map_err(|_| invalid("stored origin is not UTF-8"))?;
        AuditLog::open(store, AuditConfig::new(origin), clock)
    }

    /// The log origin (and checkpoint key name).
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// Number of durable entries.
    pub fn size(&self) -> u64 {
        self.inner.size()
    }

    /// The tree head at `size` (at most the current size).
    pub fn root(&self, size: u64) -> Result<Hash> {
        self.inner.check_size(size)?;
        merkle::root_at(self.inner.as_ref(), size)
    }

    /// The canonical bytes of entries `[start, end)`; at most [`MAX_ENTRIES_PER_READ`].
    pub fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>> {
        self.inner.check_size(end)?;
        if start > end {
            return Err(merkle::out_of_range(format!(
                "start {start} is after end {end}"
            )));
        }
        if end - start > MAX_ENTRIES_PER_READ {
            return Err(merkle::out_of_range(format!(
                "at most {MAX_ENTRIES_PER_READ} entries per read"
            )));
        }
        let mut out = Vec::with_capacity((end - start) as usize);
        for r in self
            .inner
            .t
            .entries
            .range(start.to_be_bytes()..end.to_be_bytes())
        {
            let (_, v) = r.map_err(|e| store_error("read", e))?;
            out.push(v.to_vec());
        }
        if out.len() as u64 != end - start {
            return Err(invalid("entries are missing from the store"));
        }
        Ok(out)
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        self.inner.check_size(size)?;
        merkle::inclusion_proof(self.inner.as_ref(), index, size)
    }

    /// The index of the entry whose leaf hash (`SHA-256(0x00 || entry)`) is `leaf`, and its
    /// inclusion proof in the tree of `size` entries. `NOT_FOUND` if no durable entry has
    /// that hash; `PROOF_OUT_OF_RANGE` if the entry is not inside `size`.
    pub fn inclusion_proof_by_hash(&self, leaf: &Hash, size: u64) -> Result<(u64, Vec<Hash>)> {
        self.inner.check_size(size)?;
        let index = self
            .inner
            .index_of(leaf)?
            .ok_or_else(|| Error::new(ErrorCode::NotFound, "no entry with that leaf hash"))?;
        Ok((
            index,
            merkle::inclusion_proof(self.inner.as_ref(), index, size)?,
        ))
    }

    /// The index of the durable entry with leaf hash `leaf`, if any.
    pub fn index_of(&self, leaf: &Hash) -> Result<Option<u64>> {
        self.inner.index_of(leaf)
    }

    /// The consistency proof between sizes `m <= n <= size()`.
    pub fn consistency_proof(&self, m: u64, n: u64) -> Result<Vec<Hash>> {
        self.inner.check_size(n)?;
        merkle::consistency_proof(self.inner.as_ref(), m, n)
    }

    /// The latest signed checkpoint, if one was signed.
    pub fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        self.inner.latest_checkpoint()
    }

    /// Every signed checkpoint, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>> {
        self.inner.checkpoints()
    }

    /// Signs a checkpoint of the current durable tree with `signer` (whose key name must be
    /// the origin), after proving the tree consistent with the last signed checkpoint, and
    /// stores it durably. Returns the last checkpoint unchanged if the tree has not grown.
    /// Refuses (`CHECKPOINT_INCONSISTENT`) rather than sign a tree that does not extend the
    /// last signed one.
    pub fn sign_checkpoint(&self, signer: &dyn NoteSigner) -> Result<StoredCheckpoint> {
        self.inner.sign_checkpoint(signer)
    }

    /// Counts into `metrics` from now on: group-commit batches (size, flush time, durable
    /// entries), failed appends and signed checkpoints. The first call wins.
    pub fn count_into(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.inner.metrics.set(metrics.clone());
        self.committer.count_into(metrics);
    }

    /// Signs a checkpoint only if the log grew since the last one; for a timer.
    pub fn maybe_checkpoint(&self, signer: &dyn NoteSigner) -> Result<Option<StoredCheckpoint>> {
        self.inner.maybe_checkpoint(signer)
    }

    /// Starts a thread that calls [`AuditLog::maybe_checkpoint`] every `interval` until the
    /// returned task is dropped or stopped.
    pub fn spawn_checkpointer(
        &self,
        signer: Arc<dyn NoteSigner>,
        interval: Duration,
    ) -> Result<CheckpointTask> {
        let inner = self.inner.clone();
        CheckpointTask::spawn(interval, move || {
            inner.maybe_checkpoint(signer.as_ref()).map(|_| ())
        })
    }

    /// Appends many events with one transaction and one flush per `chunk` entries, bypassing
    /// the committer. For building large logs in benchmarks and tests; returns the first
    /// index. Durable on return.
    pub fn bulk_append(&self, events: Vec<(Actor, Event)>, chunk: usize) -> Result<u64> {
        let first = self.size();
        let mut it = events.into_iter().peekable();
        while it.peek().is_some() {
            let batch: Vec<_> = it
                .by_ref()
                .take(chunk.max(1))
                .map(|(actor, event)| Append {
                    actor,
                    event,
                    writes: SideWrites::new(),
                    span: tracing::Span::none(),
                })
                .collect();
            for outcome in self.inner.append_batch(batch, false)? {
                outcome?;
            }
        }
        self.inner.store.flush()?;
        Ok(first)
    }

    /// Counters since the log was opened.
    pub fn stats(&self) -> LogStats {
        LogStats {
            batches: self.inner.batches.load(Ordering::Relaxed),
            node_reads: self.inner.node_reads.load(Ordering::Relaxed),
        }
    }

    /// The error of the last failed append, until an append or the committer's recovery
    /// probe succeeds again (see [`super::commit`]): a full disk clears by itself once space
    /// is freed.
    pub fn failed(&self) -> Option<Error> {
        self.committer.failed()
    }

    /// The time of the last entry (None for an empty log). Every later entry carries this
    /// time or a later one.
    pub fn last_entry_time(&self) -> Option<OffsetDateTime> {
        *self
            .inner
            .last_time
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the drift tolerance of [`SigningGate::check_signing_time`] (default 300 s).
    pub fn set_drift(&self, drift: Duration) {
        self.inner
            .drift_secs
            .store(drift.as_secs(), Ordering::Relaxed);
    }
}

impl SigningGate for AuditLog {
    /// `CLOCK_BEHIND` while the clock reads earlier than the last entry's time minus the
    /// drift tolerance: an artifact signed now would carry times (issuedAt, expiresAt) that
    /// the log already passed, possibly expired ones. Checked on every call, so signing
    /// resumes by itself when the clock is right.
    fn check_signing_time(&self) -> Result<()> {
        let Some(last) = self.last_entry_time() else {
            return Ok(());
        };
        let drift = self.inner.drift_secs.load(Ordering::Relaxed);
        let now = self.inner.clock.now();
        if now + Duration::from_secs(drift) < last {
            return Err(Error::new(
                ErrorCode::ClockBehind,
                format!(
                    "the clock reads {}, before the last audit entry ({}) by more than the \
                     drift tolerance of {drift} s; signing resumes when the clock is right",
                    format_rfc3339(now),
                    format_rfc3339(last)
                ),
            ));
        }
        Ok(())
    }
}

/// The `time` of stored entry bytes.
fn entry_time(bytes: &[u8]) -> Result<OffsetDateTime> {
    let e: Entry = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("stored entry is not an entry: {e}")))?;
    parse_rfc3339(&e.time, "time").map_err(|e| invalid(e.message))
}

impl EventSink for AuditLog {
    fn record(&self, actor: &Actor, event: Event) -> Result<u64> {
        self.committer.submit(Append {
            actor: actor.clone(),
            event,
            writes: SideWrites::new(),
            span: tracing::Span::current(),
        })
    }
}

impl AuditSink for AuditLog {
    fn append(&self, actor: &Actor, event: Event, writes: SideWrites) -> AppendTicket {
        if let Err(e) = writes.check() {
            return AppendTicket::ready(Err(e));
        }
        let item = Append {
            actor: actor.clone(),
            event,
            writes,
            span: tracing::Span::current(),
        };
        match self.committer.submit_async(item) {
            Ok(rx) => AppendTicket::waiting(rx),
            Err(e) => AppendTicket::ready(Err(e)),
        }
    }
}

impl LogInner {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn check_size(&self, size: u64) -> Result<()> {
        let have = self.size();
        if size > have {
            return Err(merkle::out_of_range(format!(
                "tree size {size} is larger than the log ({have} entries)"
            )));
        }
        Ok(())
    }

    fn index_of(&self, leaf: &Hash) -> Result<Option<u64>> {
        let size = self.size();
        let read = |t: &sled::Tree, k: &[u8]| t.get(k).map_err(|e| store_error("read", e));
        let confirmed = |i: u64| -> Result<bool> {
            let entry = read(&self.t.entries, &i.to_be_bytes())?;
            Ok(i < size && entry.is_some_and(|e| merkle::leaf_hash(&e) == *leaf))
        };
        if let Some(bucket) = read(&self.t.leaves, &leaf_buckets::bucket_key(leaf))? {
            for i in leaf_buckets::candidates(&bucket, leaf) {
                if confirmed(i)? {
                    return Ok(Some(i));
                }
            }
        }
        // Entries of a store written before the buckets.
        match read(&self.t.legacy_leaves, leaf)? {
            Some(v) => {
                let i = be_u64(&v)?;
                Ok(confirmed(i)?.then_some(i))
            }
            None => Ok(None),
        }
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        match self
            .t
            .checkpoints
            .last()
            .map_err(|e| store_error("read", e))?
        {
            Some((_, v)) => Ok(Some(decode_checkpoint(&v)?)),
            None => Ok(None),
        }
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>> {
        self.t
            .checkpoints
            .iter()
            .map(|r| {
                let (_, v) = r.map_err(|e| store_error("read", e))?;
                decode_checkpoint(&v)
            })
            .collect()
    }

    /// The sled handle of a side-write tree (opened once, then cached).
    fn side_tree(&self, name: &'static str) -> Result<sled::Tree> {
        let mut side = self.side.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = side.get(name) {
            return Ok(t.clone());
        }
        let t = self.store.tree(name)?;
        side.insert(name, t.clone());
        Ok(t)
    }

    /// Writes one batch in a single transaction (entries, Merkle nodes, size counter and
    /// every accepted item's side writes); flushes if `durable`. An item whose side-write
    /// precondition fails is left out (no entry, no index, none of its writes) and gets its
    /// own error; the others get consecutive indices. Advances the in-memory size only once
    /// the batch is written (and flushed, if asked).
    fn append_batch(&self, items: Vec<Append>, durable: bool) -> Result<Vec<Result<u64>>> {
        // Refused before anything is written: sled must never meet ENOSPC (it latches
        // its first I/O error for the life of the process).
        self.store.check_space()?;
        let mut frontier = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let first = frontier.size();
        // Audit time never runs backwards: with the clock behind, entries carry the last
        // entry's time (signing is refused meanwhile, see `check_signing_time`).
        let now = self.clock.now();
        let last_time = *self.last_time.lock().unwrap_or_else(|p| p.into_inner());
        let time = match last_time {
            Some(last) if now < last => format_rfc3339(last),
            _ => format_rfc3339(now),
        };
        // Transaction views: the four log trees, then each side tree the batch touches.
        let mut trees = vec![
            self.t.entries.clone(),
            self.t.nodes.clone(),
            self.t.leaves.clone(),
            self.t.meta.clone(),
        ];
        let mut side_names: Vec<&'static str> = Vec::new();
        let mut entries = Vec::with_capacity(items.len());
        for item in items {
            let checked = item.writes.check();
            if checked.is_ok() {
                for w in item.writes.iter() {
                    if !side_names.contains(&w.tree) {
                        side_names.push(w.tree);
                        trees.push(self.side_tree(w.tree)?);
                    }
                }
            }
            entries.push((item, checked));
        }
        let view = |name: &str| -> std::result::Result<usize, ConflictableTransactionError<Error>> {
            side_names
                .iter()
                .position(|n| *n == name)
                .map(|i| 4 + i)
                .ok_or_else(|| {
                    ConflictableTransactionError::Abort(Error::new(
                        ErrorCode::Internal,
                        format!("side tree {name:?} was not opened for the batch"),
                    ))
                })
        };
        let result =
            trees
                .as_slice()
                .transaction(|tx: &Vec<sled::transaction::TransactionalTree>| {
                    let (te, tn, tl, tm) = (&tx[0], &tx[1], &tx[2], &tx[3]);
                    let current = match tm.get(META_SIZE)? {
                        Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                            ConflictableTransactionError::Abort(invalid("size counter corrupt"))
                        })?),
                        None => 0,
                    };
                    if current != first {
                        return Err(ConflictableTransactionError::Abort(invalid(format!(
                            "size counter is {current}, appender expected {first}"
                        ))));
                    }
                    let mut next = frontier.clone();
                    let mut nodes = Vec::with_capacity(entries.len() * 2);
                    let mut outcomes = Vec::with_capacity(entries.len());
                    for (item, checked) in &entries {
                        if let Err(e) = checked {
                            outcomes.push(Err(e.clone()));
                            continue;
                        }
                        // Every precondition against the state before this item, then all writes.
                        let mut refused = None;
                        for w in item.writes.iter() {
                            let found = tx[view(w.tree)?].get(&w.key)?;
                            let holds = match &w.expect {
                                Expect::Absent => found.is_none(),
                                Expect::Value(v) => found.as_deref() == Some(v.as_slice()),
                            };
                            if !holds {
                                refused = Some(w.on_conflict.clone());
                                break;
                            }
                        }
                        if let Some(e) = refused {
                            outcomes.push(Err(e));
                            continue;
                        }
                        let index = next.size();
                        let bytes = Entry {
                            index,
                            time: time.clone(),
                            actor: item.actor.clone(),
                            event: item.event.clone(),
                        }
                        .to_bytes()
                        .map_err(ConflictableTransactionError::Abort)?;
                        let key = index.to_be_bytes();
                        if te.get(key)?.is_some() {
                            return Err(ConflictableTransactionError::Abort(invalid(
                                "refusing to overwrite an existing entry",
                            )));
                        }
                        let leaf = merkle::leaf_hash(&bytes);
                        next.push(leaf, |l, i, h| nodes.push((node_key(l, i), h)));
                        te.insert(&key, bytes)?;
                        let bucket_key = leaf_buckets::bucket_key(&leaf);
                        let mut bucket =
                            tl.get(bucket_key)?.map(|b| b.to_vec()).unwrap_or_default();
                        leaf_buckets::push(&mut bucket, &leaf, index);
                        tl.insert(&bucket_key, bucket)?;
                        for w in item.writes.iter() {
                            w.apply(&tx[view(w.tree)?])?;
                        }
                        outcomes.push(Ok(index));
                    }
                    for (key, h) in &nodes {
                        tn.insert(key, h)?;
                    }
                    tm.insert(META_SIZE, &next.size().to_be_bytes())?;
                    Ok((outcomes, next, nodes))
                });
        let (outcomes, next, nodes) = match result {
            Ok(r) => r,
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(store_error("append", e)),
        };
        let new_size = next.size();
        if durable && new_size > first {
            self.store.flush()?;
        }
        {
            let mut upper = self.upper.write().unwrap_or_else(|p| p.into_inner());
            for (key, h) in &nodes {
                if key[0] >= CACHED_LEVEL {
                    let index = u64::from_be_bytes(key[1..].try_into().unwrap_or_default());
                    upper.insert((key[0], index), *h);
                }
            }
        }
        *frontier = next;
        if new_size > first {
            *self.last_time.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(parse_rfc3339(&time, "time")?);
        }
        self.size.store(new_size, Ordering::Release);
        self.batches.fetch_add(1, Ordering::Relaxed);
        Ok(outcomes)
    }

    /// After a failed batch: re-reads the size counter, the last entry and the Merkle
    /// frontier from the store, so the in-memory state equals what is stored (a batch whose
    /// transaction applied but whose flush failed stays, unacknowledged, and is flushed with
    /// the next one; its side writes make a retry replay it rather than sign again), then
    /// checks that the store can write (free space above the reserve, a flush succeeds).
    fn recover(&self) -> Result<()> {
        let mut frontier = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (size, last_time) = self.t.stored_tail()?;
        let loaded = Frontier::load(self, size)?;
        self.store.check_space()?;
        self.store.flush()?;
        *frontier = loaded;
        *self.last_time.lock().unwrap_or_else(|p| p.into_inner()) = last_time;
        self.size.store(size, Ordering::Release);
        Ok(())
    }

    fn maybe_checkpoint(&self, signer: &dyn NoteSigner) -> Result<Option<StoredCheckpoint>> {
        let last_size = match self.latest_checkpoint()? {
            Some(cp) => Some(cp.checkpoint()?.size),
            None => None,
        };
        if last_size == Some(self.size()) {
            return Ok(None);
        }
        self.sign_checkpoint(signer).map(Some)
    }

    fn sign_checkpoint(&self, signer: &dyn NoteSigner) -> Result<StoredCheckpoint> {
        let _guard = self.signing.lock().unwrap_or_else(|p| p.into_inner());
        // As for entries: refuse rather than let sled meet ENOSPC.
        self.store.check_space()?;
        if signer.key_name() != self.origin {
            return Err(Error::new(
                ErrorCode::ConfigInvalid,
                format!(
                    "checkpoint key is named {:?}; it must be the log origin {:?}",
                    signer.key_name(),
                    self.origin
                ),
            ));
        }
        let m = self.size();
        let root_m = merkle::root_at(self, m)?;
        if let Some(last) = self.latest_checkpoint()? {
            let prev = last.verify().map_err(|e| {
                Error::new(
                    ErrorCode::CheckpointInconsistent,
                    format!("last checkpoint does not verify: {}", e.message),
                )
            })?;
            let inconsistent = |why: String| Error::new(ErrorCode::CheckpointInconsistent, why);
            if prev.size > m {
                return Err(inconsistent(format!(
                    "last checkpoint covers {} entries, the log only {m}",
                    prev.size
                )));
            }
            if prev.size == m {
                if prev.root == root_m {
                    return Ok(last);
                }
                return Err(inconsistent(format!(
                    "tree at size {m} differs from its checkpoint"
                )));
            }
            let proof = merkle::consistency_proof(self, prev.size, m)?;
            merkle::verify_consistency(prev.size, m, &prev.root, &root_m, &proof).map_err(|e| {
                inconsistent(format!(
                    "tree of size {m} is not consistent with the checkpoint of size {}: {}",
                    prev.size, e.message
                ))
            })?;
        }
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size: m,
            root: root_m,
        };
        let note = cp.sign(signer)?;
        let record = StoredCheckpoint {
            note,
            vkey: Vkey::ed25519(signer.key_name(), signer.public_key()).to_string(),
        };
        let bytes = canonical_bytes_of(&record)?;
        let swapped = self
            .t
            .checkpoints
            .compare_and_swap(m.to_be_bytes(), None as Option<&[u8]>, Some(bytes))
            .map_err(|e| store_error("write", e))?;
        if swapped.is_err() {
            return Err(Error::new(
                ErrorCode::CheckpointInconsistent,
                format!("a checkpoint of size {m} is already stored"),
            ));
        }
        self.store.flush()?;
        tracing::info!(size = m, key = signer.key_name(), "audit checkpoint signed");
        if let Some(metrics) = self.metrics.get() {
            metrics.checkpoint_signed(m);
        }
        Ok(record)
    }
}

fn decode_checkpoint(v: &[u8]) -> Result<StoredCheckpoint> {
    serde_json::from_slice(v).map_err(|e| invalid(format!("stored checkpoint is corrupt: {e}")))
}

/// A background thread that runs a checkpoint attempt every interval (signing only while the
/// log grows). Dropping it stops the thread.
pub struct CheckpointTask {
    stop: Arc<(Mutex<bool>, Condvar)>,
    last_error: Arc<Mutex<Option<Error>>>,
    thread: Option<JoinHandle<()>>,
}

debug_showing!(CheckpointTask {});

impl CheckpointTask {
    /// Starts a thread that calls `attempt` every `interval` until the task is stopped or
    /// dropped; the error of the latest failed attempt is kept for [`CheckpointTask::last_error`].
    pub fn spawn(
        interval: Duration,
        mut attempt: impl FnMut() -> Result<()> + Send + 'static,
    ) -> Result<CheckpointTask> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let last_error = Arc::new(Mutex::new(None));
        let (s, le) = (stop.clone(), last_error.clone());
        let thread = std::thread::Builder::new()
            .name("audit-checkpointer".into())
            .spawn(move || {
                loop {
                    {
                        let (m, cv) = &*s;
                        let g = m.lock().unwrap_or_else(|p| p.into_inner());
                        let (g, _) = cv
                            .wait_timeout_while(g, interval, |stopped| !*stopped)
                            .unwrap_or_else(|p| p.into_inner());
                        if *g {
                            return;
                        }
                    }
                    let r = attempt();
                    *le.lock().unwrap_or_else(|p| p.into_inner()) = r.err();
                }
            })
            .map_err(|e| {
                Error::new(
                    ErrorCode::Internal,
                    format!("cannot start checkpointer: {e}"),
                )
            })?;
        Ok(CheckpointTask {
            stop,
            last_error,
            thread: Some(thread),
        })
    }

    /// The error of the most recent attempt, if it failed (cleared by the next success).
    pub fn last_error(&self) -> Option<Error> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let (m, cv) = &*self.stop;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for CheckpointTask {
    fn drop(&mut self) {
        self.shutdown();
    }
}
