//! `mpcp-pa audit ...`: read the audit log in the store at `--data-dir` (checkpoint, entries,
//! proofs), export it, and verify an export offline. None of these needs the HSM, except
//! `audit checkpoint --sign`, which signs a checkpoint with the audit role's active key in the
//! HSM while the service is stopped (the running service signs its own).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::app::{Appliance, AuditMode, DataDir, Options, StoreMode};
use crate::audit::export::{self, ENTRIES_FILE};
use crate::audit::merkle::Hash;
use crate::audit::verify::{VerifyOptions, verify_export};
use crate::audit::{AuditLog, CheckpointOutcome, Checkpointer, Vkey};
use crate::error::{Error, ErrorCode, Result};
use crate::store::Store;

/// Arguments of `mpcp-pa audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Print the latest signed checkpoint (C2SP signed note).
    Checkpoint {
        /// Print the log's verifier key (vkey) instead.
        #[arg(long)]
        vkey: bool,
        /// First sign a checkpoint of the whole log with the audit role's active key in the
        /// HSM, unless the latest one already covers it (service stopped: it holds the store).
        #[arg(long, conflicts_with = "vkey")]
        sign: bool,
        /// With --sign: HSM configuration file (default: DATA_DIR/pkcs11.toml).
        #[arg(long)]
        hsm_config: Option<PathBuf>,
        /// With --sign: algorithm policy file (default: the built-in policy).
        #[arg(long, env = "MPCP_PA_ALGORITHM_POLICY")]
        algorithm_policy: Option<PathBuf>,
    },
    /// Print entries [start, end) as JSON lines.
    Entries {
        /// First index.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// One past the last index (default: the log size).
        #[arg(long)]
        end: Option<u64>,
    },
    /// Print an inclusion or consistency proof as JSON (hashes in standard base64).
    #[command(subcommand)]
    Proof(ProofCommand),
    /// Export entries, recorded leaf hashes, the latest checkpoint and its vkey to a
    /// directory for offline verification.
    Export {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an export directory offline (no HSM, no store needed).
    Verify(VerifyArgs),
}

#[derive(Debug, Subcommand)]
enum ProofCommand {
    /// Inclusion of one entry (by index or by leaf hash) in the tree of a given size.
    Inclusion {
        /// Entry index.
        #[arg(
            long,
            conflicts_with = "leaf_hash",
            required_unless_present = "leaf_hash"
        )]
        index: Option<u64>,
        /// Leaf hash SHA-256(0x00 || entry) in hex.
        #[arg(long)]
        leaf_hash: Option<String>,
        /// Tree size (default: the log size).
        #[arg(long)]
        size: Option<u64>,
    },
    /// Consistency between two tree sizes.
    Consistency {
        /// Earlier size.
        #[arg(long)]
        from: u64,
        /// Later size (default: the log size).
        #[arg(long)]
        to: Option<u64>,
    },
}

/// Arguments of `mpcp-pa audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Export directory written by `audit export`.
    pub dir: PathBuf,
    /// A checkpoint saved earlier; the log must still contain what it committed to.
    #[arg(long)]
    pub trusted_checkpoint: Option<PathBuf>,
    /// A published audit vkey (repeatable: give every audit key the log was signed with
    /// across rotations). Without it the keys in the export's own log.vkey are used, which
    /// proves integrity only against those keys.
    #[arg(long = "vkey")]
    pub vkeys: Vec<String>,
}

/// Runs an audit subcommand against the store in `data_dir`.
pub fn run(data_dir: &DataDir, a: AuditArgs) -> Result<ExitCode> {
    match a.command {
        AuditCommand::Verify(v) => verify(v),
        AuditCommand::Export { out } => {
            let store = open_store(data_dir)?;
            let s = export::export(&store, &out)?;
            let checkpoints = if s.checkpoint {
                format!(
                    ", {} checkpoint(s) signed by {} key(s)",
                    s.checkpoints, s.vkeys
                )
            } else {
                " (no checkpoint signed yet)".to_string()
            };
            println!(
                "exported {} entries, {} leaf hashes{checkpoints} to {}",
                s.entries,
                s.leaf_hashes,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint {
            sign: true,
            hsm_config,
            algorithm_policy,
            ..
        } => {
            let outcome =
                sign_checkpoint(data_dir, hsm_config.as_deref(), algorithm_policy.as_deref())?;
            let cp = &outcome.checkpoint;
            eprintln!(
                "{} (size {}, signed by {})",
                if outcome.signed_now {
                    "signed a new checkpoint"
                } else {
                    "the latest checkpoint already covers the log"
                },
                cp.checkpoint()?.size,
                cp.vkey
            );
            print!("{}", cp.note);
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint { vkey, .. } => {
            let log = open_log(data_dir)?;
            let cp = log
                .latest_checkpoint()?
                .ok_or_else(|| Error::new(ErrorCode::NotFound, "no checkpoint signed yet"))?;
            if vkey {
                println!("{}", cp.vkey);
            } else {
                print!("{}", cp.note);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Entries { start, end } => {
            let log = open_log(data_dir)?;
            let end = end.unwrap_or(log.size());
            let mut at = start;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            while at < end {
                let chunk_end = end.min(at + crate::audit::log::MAX_ENTRIES_PER_READ);
                for e in log.entries(at, chunk_end)? {
                    let written = out.write_all(&e).and_then(|()| out.write_all(b"\n"));
                    // A reader that stops early (`| head`) is not an error.
                    if let Err(err) = written {
                        if err.kind() == std::io::ErrorKind::BrokenPipe {
                            return Ok(ExitCode::SUCCESS);
                        }
                        return Err(Error::new(ErrorCode::Io, format!("write entries: {err}")));
                    }
                }
                at = chunk_end;
            }
            match out.flush() {
                Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(Error::new(ErrorCode::Io, format!("write entries: {err}")));
                }
                _ => {}
            }
            if start > end {
                log.entries(start, end)?; // reports the range error
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Proof(ProofCommand::Inclusion {
            index,
            leaf_hash,
            size,
        }) => {
            let log = open_log(data_dir)?;
            let size = size.unwrap_or(log.size());
            let (index, proof) = match (index, leaf_hash) {
                (Some(i), _) => (i, log.inclusion_proof(i, size)?),
                (None, Some(h)) => log.inclusion_proof_by_hash(&parse_hash(&h)?, size)?,
                (None, None) => {
                    return Err(Error::new(
                        ErrorCode::SchemaInvalid,
                        "give --index or --leaf-hash",
                    ));
                }
            };
            let out = json!({
                "index": index,
                "treeSize": size,
                "rootHash": b64(&log.root(size)?),
                "proof": proof.iter().map(b64).collect::<Vec<_>>(),
            });
            println!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Proof(ProofCommand::Consistency { from, to }) => {
            let log = open_log(data_dir)?;
            let to = to.unwrap_or(log.size());
            let proof = log.consistency_proof(from, to)?;
            let out = json!({
                "fromSize": from,
                "toSize": to,
                "fromRoot": b64(&log.root(from)?),
                "toRoot": b64(&log.root(to)?),
                "proof": proof.iter().map(b64).collect::<Vec<_>>(),
            });
            println!("{out}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn b64(h: &Hash) -> String {
    STANDARD.encode(h)
}

fn parse_hash(s: &str) -> Result<Hash> {
    hex::decode(s.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| Error::new(ErrorCode::SchemaInvalid, "leaf hash must be 64 hex digits"))
}

/// The store and audit log of `dir` for reading, with the options every `audit` command
/// shares: only an existing store and log, and a hint when the service holds the lock.
fn appliance(dir: &DataDir, opts: Options) -> Appliance {
    Appliance::new(
        dir.clone(),
        Options {
            store: StoreMode::Existing,
            store_lock_hint: Some("is the appliance running? it holds the store lock".into()),
            audit: AuditMode::Existing,
            ..opts
        },
    )
}

fn open_store(dir: &DataDir) -> Result<Store> {
    appliance(dir, Options::default()).store()
}

fn open_log(dir: &DataDir) -> Result<Arc<AuditLog>> {
    appliance(dir, Options::default()).audit()
}

/// Signs a checkpoint of the log in `dir` with the audit role's active key (unless the
/// latest covers the log), opening the policy, the store, the audit log, the HSM and the key
/// registry, in that order, with the builder `serve` uses.
fn sign_checkpoint(
    dir: &DataDir,
    hsm_config: Option<&Path>,
    algorithm_policy: Option<&Path>,
) -> Result<CheckpointOutcome> {
    let mut app = appliance(
        dir,
        Options {
            hsm_config: hsm_config.map(Path::to_path_buf),
            algorithm_policy: algorithm_policy.map(Path::to_path_buf),
            ..Options::default()
        },
    );
    app.policy()?;
    let log = app.audit()?;
    app.hsm()?;
    let registry = app.registry()?;
    Checkpointer::new(log, registry).checkpoint()
}

fn verify(a: VerifyArgs) -> Result<ExitCode> {
    let mut options = VerifyOptions::default();
    for k in &a.vkeys {
        options.trusted_vkeys.push(Vkey::parse(k)?);
    }
    if let Some(p) = &a.trusted_checkpoint {
        options.trusted_checkpoint =
            Some(std::fs::read_to_string(p).map_err(|e| {
                Error::new(ErrorCode::Io, format!("cannot read {}: {e}", p.display()))
            })?);
    }
    let total = std::fs::metadata(a.dir.join(ENTRIES_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    // Hidden at first; shown only once verification has taken more than a second.
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    if let Ok(style) =
        ProgressStyle::with_template("verifying {bar:40} {bytes}/{total_bytes} ({eta})")
    {
        bar.set_style(style);
    }
    let started = Instant::now();
    let mut shown = false;
    let result = verify_export(&a.dir, &options, &mut |done| {
        if !shown && started.elapsed() > Duration::from_secs(1) {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            shown = true;
        }
        bar.set_position(done);
    });
    bar.finish_and_clear();
    match result {
        Ok(r) => {
            println!(
                "OK: {} entries; checkpoint {} size {} root {} verified under {}",
                r.entries,
                r.checkpoint.origin,
                r.checkpoint.size,
                b64(&r.checkpoint.root),
                r.vkey
            );
            for s in &r.signers {
                println!(
                    "OK: {} checkpoint(s) of sizes {}..={} verified under {}",
                    s.checkpoints, s.first_size, s.last_size, s.vkey
                );
            }
            if let Some(t) = &r.trusted {
                println!(
                    "OK: the log extends the trusted checkpoint of size {}",
                    t.size
                );
            }
            if r.unsigned_tail() > 0 {
                println!(
                    "note: {} entries after the checkpoint are well formed but not yet signed",
                    r.unsigned_tail()
                );
            }
            if r.vkey_from_export {
                println!(
                    "note: the keys came from the export itself; pass --vkey with every \
                     published audit key to rule out a substituted key"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            match f.first_bad_index {
                Some(i) => println!("FAIL: first bad entry index {i}: {}", f.error),
                None => println!("FAIL: {}", f.error),
            }
            Ok(ExitCode::from(1))
        }
    }
}
