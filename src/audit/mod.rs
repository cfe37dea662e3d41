//! The append-only signed audit log: a Merkle transparency log (RFC 9162 / RFC 6962 hashing)
//! in sled, with C2SP checkpoints signed by the appliance's audit key.
//!
//! - [`entry`]: one canonical-JSON record per [`crate::events::Event`]
//!   (`index`, `time`, `actor`, `event`). Never a PIN, token or private material.
//! - [`merkle`]: hashing, proofs from stored perfect subtrees, RFC 9162 verification.
//! - [`log`]: [`AuditLog`], the sled-backed log. It implements
//!   [`crate::events::EventSink`]: `record` returns only once the entry is flushed, and
//!   concurrent callers share one flush (group commit, [`commit`]). If the write or flush
//!   fails every caller in the batch gets `AUDIT_UNAVAILABLE` and must not release its
//!   result; the log then refuses appends until reopened.
//! - [`append`]: appends that carry side writes ([`AuditSink`]): the records that go with
//!   an entry (an issued artifact, an idempotency record, ...) commit in the entry's own
//!   transaction and flush, so after a crash all of them exist or none does.
//! - [`checkpoint`], [`note`]: C2SP tlog-checkpoint bodies in C2SP signed notes, signed by a
//!   [`note::NoteSigner`] (raw-message Ed25519; in the appliance, the audit-role HSM key).
//!   The log never signs a checkpoint that is not consistent with the last one it signed.
//! - [`checkpointer`]: [`Checkpointer`], which signs checkpoints with the audit role's active
//!   key (resolved through [`crate::seams::CheckpointKeys`] for every checkpoint) on a timer
//!   while the log grows and on demand.
//! - [`export`], [`verify`]: offline export and verification for auditors.
//!
//! # Witnesses
//!
//! A checkpoint signed only by the log proves what the log committed to, but a log (or a
//! stolen log key) could show different, individually valid checkpoints to different
//! parties: a *split view*. Independent witnesses close that gap. A witness:
//!
//! 1. fetches the latest checkpoint and verifies the log's signature with the log's vkey;
//! 2. fetches a consistency proof from the last checkpoint it cosigned for this origin
//!    (size `n`) to the new one (size `m >= n`) and checks it with
//!    [`merkle::verify_consistency`]; it refuses to cosign anything that fails, and never
//!    cosigns two different roots for the same size;
//! 3. adds its own signature line with [`note::cosign_text`] (C2SP tlog-cosignature v1,
//!    Ed25519, signature type `0x04`: it signs `"cosignature/v1\ntime <t>\n" || body`), i.e.
//!    appends `— <witness name> <base64(key ID || timestamp || signature)>` to the note, and
//!    remembers `(m, root)`.
//!
//! A relying party that requires witness cosignatures verifies with
//! [`checkpoint::verify_checkpoint`], passing the log vkey, the witness vkeys (type `0x04`,
//! e.g. `witness.example/w1+<id>+<base64(0x04 || key)>`) and a quorum. A forked checkpoint
//! shown only to the victim carries no valid cosignature from an honest witness (the witness
//! saw the other branch and the consistency check failed), so the victim rejects it. The
//! test `tests/audit/audit_witness.rs` plays this out with a second Ed25519 key as the witness.

pub mod append;
pub mod checkpoint;
pub mod checkpointer;
pub mod commit;
pub mod entry;
pub mod export;
pub mod leaf_buckets;
pub mod log;
pub mod merkle;
pub mod note;
pub mod verify;

pub use append::{AppendTicket, AuditSink, SideWrites};
pub use checkpoint::{Checkpoint, VerifiedCheckpoint, verify_checkpoint};
pub use checkpointer::{CheckpointOutcome, Checkpointer};
pub use entry::Entry;
pub use log::{AuditConfig, AuditLog, CheckpointTask, LogStats, StoredCheckpoint};
pub use merkle::Hash;
pub use note::{NoteSigner, SoftwareNoteSigner, Vkey};
