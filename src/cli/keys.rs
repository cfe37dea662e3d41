//! `mpcp-pa keys ...`: key lifecycle and key-set export from the command line.
//!
//! The commands run against a [`KeysContext`] (store, key backend, event sink, clock,
//! algorithm policy, actor), so they are independent of how the appliance wires its HSM
//! backend and audit log; [`open_context`] opens them for the binary with
//! [`crate::app::Appliance`] (PKCS#11 backend from DATA_DIR/pkcs11.toml, store in DATA_DIR,
//! the audit log as the event sink). Every command
//! prints what it did; refusals return the registry's stable error code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::algorithms::AlgorithmPolicy;
use crate::api::ledger_book::{LedgerBook, LedgerConfig, LedgerTx};
use crate::app::{Appliance, AuditMode, DataDir, Options};
use crate::audit::AuditSink;
use crate::clock::Clock;
use crate::crypto::Alg;
use crate::error::{Error, ErrorCode, Result};
use crate::events::Actor;
use crate::keys::keyset::{
    DEFAULT_SIGNED_LIFETIME, build_root_key_set, key_set_value, sign_key_set,
};
use crate::keys::{KeyBackend, KeyRecord, KeyRegistry, KeyRole};
use crate::store::Store;

/// Arguments of `mpcp-pa keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// Algorithm policy file (default: the policy built into this binary,
    /// policies/algorithms.toml).
    #[arg(long, global = true, env = "MPCP_PA_ALGORITHM_POLICY")]
    pub algorithm_policy: Option<PathBuf>,
    /// HSM configuration file (default: DATA_DIR/pkcs11.toml).
    #[arg(long, global = true)]
    pub hsm_config: Option<PathBuf>,
    /// Origin of the audit log (e.g. `pa.example.com/audit`); used only to create the log
    /// when the store holds none yet (default `mpcp-pa.local/audit`), and must match the
    /// existing log otherwise.
    #[arg(long, global = true, env = "MPCP_PA_AUDIT_ORIGIN")]
    pub audit_origin: Option<String>,
    /// The key operation.
    #[command(subcommand)]
    pub command: KeysCommand,
}

fn parse_role(s: &str) -> std::result::Result<KeyRole, String> {
    KeyRole::parse(s).map_err(|e| e.message)
}

fn parse_alg(s: &str) -> std::result::Result<Alg, String> {
    Alg::parse(s).map_err(|e| e.message)
}

/// One `keys` subcommand.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a key pair in the role's token; it is published at once and signs nothing
    /// until activated (state pending).
    Generate {
        /// grant-signing, root or audit.
        #[arg(long, value_parser = parse_role)]
        role: KeyRole,
        /// EdDSA, ES256K or ES256 (ES256 is not allowed for grant-signing).
        #[arg(long, value_parser = parse_alg)]
        alg: Alg,
    },
    /// List every key with its state and timestamps.
    List {
        /// Print the registry records as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Activate a pending key (only when its role has no active key; otherwise rotate).
    Activate {
        /// Key id.
        kid: String,
    },
    /// Make a pending key (the given one, else the oldest usable one, else a new one) active
    /// and retire the current active key, atomically.
    Rotate {
        /// grant-signing, root or audit.
        #[arg(long, value_parser = parse_role)]
        role: KeyRole,
        /// The pending key to activate.
        #[arg(long)]
        kid: Option<String>,
        /// Without --kid: only consider pending keys of this algorithm, and generate one of it
        /// if none is pending.
        #[arg(long, value_parser = parse_alg, conflicts_with = "kid")]
        alg: Option<Alg>,
    },
    /// Retire the active key without a successor (the role stops signing).
    Retire {
        /// Key id.
        kid: String,
    },
    /// Emergency revocation: published active:false at once, never signs again.
    Revoke {
        /// Key id.
        kid: String,
        /// Why (recorded in the registry and the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Schedule the destruction of a revoked key's token objects.
    ScheduleDestroy {
        /// Key id.
        kid: String,
        /// Days to wait before the destruction may happen.
        #[arg(long, default_value_t = 30)]
        wait_days: u32,
    },
    /// Cancel a scheduled destruction during its waiting period.
    CancelDestroy {
        /// Key id.
        kid: String,
    },
    /// Destroy the token objects of every key whose destruction wait has ended.
    RunDestructions,
    /// Write mpcp-keys.json and mpcp-keys.signed.json (signed by the root key) to a directory
    /// for static hosting.
    Export {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Lifetime of the signed key set in hours (at most 168).
        #[arg(long, default_value_t = (DEFAULT_SIGNED_LIFETIME.as_secs() / 3600) as u32)]
        lifetime_hours: u32,
        /// Also write the root public keys (to distribute OUT OF BAND to gateways that pin
        /// them; never host this file next to the key set).
        #[arg(long)]
        root_out: Option<PathBuf>,
    },
}

/// What the `keys` commands run against.
pub struct KeysContext {
    /// The appliance store.
    pub store: Store,
    /// Where keys live (the PKCS#11 backend in the appliance).
    pub backend: Arc<dyn KeyBackend>,
    /// Where events go, with the records they describe (the audit log in the appliance).
    pub sink: Arc<dyn AuditSink>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Algorithm policy.
    pub policy: Arc<AlgorithmPolicy>,
    /// Who runs the command.
    pub actor: Actor,
}

/// Builds the context for the binary from the data directory with [`Appliance`]: the
/// algorithm policy (`algorithm_policy`, else the built-in one), the HSM backend from the HSM
/// configuration (`hsm_config`, else DATA_DIR/pkcs11.toml; logging in to every token and
/// probing it), the store in DATA_DIR, and the audit log in that store as the event sink
/// (created with `audit_origin`, or [`crate::app::DEFAULT_AUDIT_ORIGIN`] when none is given,
/// if the store holds none yet), opened in that order. Actor: the operator at the CLI;
/// clock: the system clock.
pub fn open_context(
    dir: &DataDir,
    algorithm_policy: Option<&Path>,
    hsm_config: Option<&Path>,
    audit_origin: Option<&str>,
) -> Result<KeysContext> {
    let mut app = Appliance::new(
        dir.clone(),
        Options {
            hsm_config: hsm_config.map(Path::to_path_buf),
            algorithm_policy: algorithm_policy.map(Path::to_path_buf),
            audit: match audit_origin {
                Some(origin) => AuditMode::Create(origin.to_string()),
                None => AuditMode::CreateDefault,
            },
            store_lock_hint: Some("is the appliance running? it holds the store lock".into()),
            ..Options::default()
        },
    );
    let policy = app.policy()?;
    let backend = app.hsm()?;
    let store = app.store()?;
    let sink = app.audit()?;
    Ok(KeysContext {
        store,
        backend,
        sink,
        clock: app.clock(),
        policy,
        actor: Actor::cli(),
    })
}

/// Entry point of `mpcp-pa keys`.
pub fn main(dir: &DataDir, args: KeysArgs) -> Result<ExitCode> {
    let ctx = open_context(
        dir,
        args.algorithm_policy.as_deref(),
        args.hsm_config.as_deref(),
        args.audit_origin.as_deref(),
    )?;
    run(args.command, &ctx, &mut std::io::stdout().lock())
}

fn io_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::Io, format!("{what}: {e}"))
}

fn say(out: &mut dyn Write, line: impl AsRef<str>) -> Result<()> {
    writeln!(out, "{}", line.as_ref()).map_err(|e| io_err("write output", e))
}

fn say_tx(out: &mut dyn Write, tx: Option<LedgerTx>) -> Result<()> {
    match tx {
        Some(t) => say(
            out,
            format!(
                "signed {} {} (sequence {}; `mpcp-pa ledger export` prints its blob)",
                t.transaction_type.as_str(),
                t.hash,
                t.sequence
            ),
        ),
        None => Ok(()),
    }
}

fn describe(r: &KeyRecord) -> String {
    format!("{} ({} {} {})", r.kid, r.role, r.alg, r.state)
}

/// Runs one command against `ctx`, printing to `out`.
pub fn run(cmd: KeysCommand, ctx: &KeysContext, out: &mut dyn Write) -> Result<ExitCode> {
    let reg = KeyRegistry::new(
        &ctx.store,
        ctx.backend.clone(),
        ctx.sink.clone(),
        ctx.clock.clone(),
        ctx.policy.clone(),
    )?;
    let actor = &ctx.actor;
    // Key changes sign their XLS-70 credential in the same append (see ledger_book).
    let ledger = LedgerBook::open(&ctx.store)?;
    let fee = LedgerConfig::default().fee_drops;
    match cmd {
        KeysCommand::Generate { role, alg } => {
            let r = reg.generate(actor, role, alg)?;
            say(
                out,
                format!("generated {} (pending, published)", describe(&r)),
            )?;
        }
        KeysCommand::List { json } => list(&reg, json, out)?,
        KeysCommand::Activate { kid } => {
            let (r, tx) =
                ledger.commit_key_change(&reg, reg.prepare_activate(actor, &kid)?, fee)?;
            say(out, format!("activated {}", describe(&r.activated)))?;
            say_tx(out, tx)?;
        }
        KeysCommand::Rotate { role, kid, alg } => {
            let (r, tx) = ledger.commit_key_change(
                &reg,
                reg.prepare_rotate(actor, role, kid.as_deref(), alg)?,
                fee,
            )?;
            say_tx(out, tx)?;
            if r.generated {
                say(out, format!("generated {}", r.activated.kid))?;
            }
            say(out, format!("activated {}", describe(&r.activated)))?;
            if let Some(p) = &r.retired {
                say(out, format!("retired {}", describe(p)))?;
            }
        }
        KeysCommand::Retire { kid } => {
            let r = reg.retire(actor, &kid)?;
            say(out, format!("retired {}", describe(&r)))?;
        }
        KeysCommand::Revoke { kid, reason } => {
            let (r, tx) =
                ledger.commit_key_change(&reg, reg.prepare_revoke(actor, &kid, &reason)?, fee)?;
            say(out, format!("revoked {}", describe(&r)))?;
            say_tx(out, tx)?;
        }
        KeysCommand::ScheduleDestroy { kid, wait_days } => {
            let wait = Duration::from_secs(u64::from(wait_days) * 86400);
            let r = reg.schedule_destroy(actor, &kid, wait)?;
            say(
                out,
                format!(
                    "destruction of {} scheduled, not before {}",
                    r.kid,
                    r.destroy_after.as_deref().unwrap_or("?")
                ),
            )?;
        }
        KeysCommand::CancelDestroy { kid } => {
            let r = reg.cancel_destroy(actor, &kid)?;
            say(out, format!("destruction of {} cancelled", r.kid))?;
        }
        KeysCommand::RunDestructions => {
            let run = reg.run_due_destructions(actor)?;
            for kid in &run.destroyed {
                say(out, format!("destroyed {kid}"))?;
            }
            for (kid, e) in &run.failed {
                say(out, format!("FAILED {kid}: {e}"))?;
            }
            if run.destroyed.is_empty() && run.failed.is_empty() {
                say(out, "no destruction due")?;
            }
            if let Some((_, e)) = run.failed.into_iter().next() {
                return Err(e);
            }
        }
        KeysCommand::Export {
            out: dir,
            lifetime_hours,
            root_out,
        } => export(
            &reg,
            ctx,
            &dir,
            Duration::from_secs(u64::from(lifetime_hours) * 3600),
            root_out.as_deref(),
            out,
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

fn list(reg: &KeyRegistry, json: bool, out: &mut dyn Write) -> Result<()> {
    let records = reg.list()?;
    if json {
        let text = serde_json::to_string_pretty(&records)
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        return say(out, text);
    }
    let now = reg.clock().now();
    say(
        out,
        format!(
            "{:<40} {:<13} {:<6} {:<9} {:<9} {:<20} DETAIL",
            "KID", "ROLE", "ALG", "STATE", "PUBLISHED", "CREATED"
        ),
    )?;
    for r in &records {
        let published = if reg.is_published_active(r, now) {
            "active"
        } else {
            "inactive"
        };
        let mut detail = Vec::new();
        for (label, v) in [
            ("activated", &r.activated_at),
            ("retired", &r.retired_at),
            ("revoked", &r.revoked_at),
            ("destroy-after", &r.destroy_after),
            ("destroyed", &r.destroyed_at),
        ] {
            if let Some(v) = v {
                detail.push(format!("{label} {v}"));
            }
        }
        if let Some(reason) = &r.reason {
            detail.push(format!("reason {reason:?}"));
        }
        say(
            out,
            format!(
                "{:<40} {:<13} {:<6} {:<9} {:<9} {:<20} {}",
                r.kid,
                r.role.as_str(),
                r.alg.as_str(),
                r.state.as_str(),
                published,
                r.created_at,
                detail.join("; ")
            ),
        )?;
    }
    Ok(())
}

/// Writes `value` as pretty JSON to `path` via a temporary file and a rename, so a web server
/// never serves a half-written document.
fn write_json_atomic(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    text.push('\n');
    let name = path
        .file_name()
        .ok_or_else(|| io_err("output path", "no file name"))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(&format!("write {}", path.display()), e)
    })
}

fn export(
    reg: &KeyRegistry,
    ctx: &KeysContext,
    dir: &Path,
    lifetime: Duration,
    root_out: Option<&Path>,
    out: &mut dyn Write,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(&format!("create {}", dir.display()), e))?;
    // Signed (and audited) before anything is written, so a refusal writes nothing. The plain
    // document is the signed one's key set, so both files always agree.
    let signed = sign_key_set(
        reg,
        ctx.sink.as_ref(),
        &ctx.actor,
        ctx.clock.as_ref(),
        lifetime,
    )?;
    let set = signed
        .get("keySet")
        .cloned()
        .ok_or_else(|| Error::new(ErrorCode::Internal, "signed key set without keySet"))?;
    let plain = dir.join("mpcp-keys.json");
    let signed_path = dir.join("mpcp-keys.signed.json");
    write_json_atomic(&plain, &set)?;
    write_json_atomic(&signed_path, &signed)?;
    say(out, format!("wrote {}", plain.display()))?;
    say(
        out,
        format!(
            "wrote {} (signed by {}, expires {})",
            signed_path.display(),
            signed["signerKeyId"].as_str().unwrap_or("?"),
            signed["expiresAt"].as_str().unwrap_or("?")
        ),
    )?;
    if let Some(p) = root_out {
        write_json_atomic(p, &key_set_value(&build_root_key_set(reg)?)?)?;
        say(
            out,
            format!("wrote {} (distribute out of band)", p.display()),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{DEFAULT_DRIFT, FixedClock, parse_rfc3339};
    use crate::jwk::KeySet;
    use crate::keys::keyset::verify_signed_key_set;
    use crate::keys::test_support::{FlakySink, SoftBackend};
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(subcommand)]
        cmd: KeysCommand,
    }

    struct Fx {
        ctx: KeysContext,
        sink: Arc<FlakySink>,
        dir: PathBuf,
    }

    fn fx(name: &str) -> Fx {
        let store = Store::temporary().unwrap();
        let sink = Arc::new(FlakySink::open(&store));
        let dir = std::env::temp_dir().join(format!("mpcp-cli-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Fx {
            ctx: KeysContext {
                store,
                backend: Arc::new(SoftBackend::default()),
                sink: sink.clone(),
                clock: Arc::new(FixedClock::new(
                    parse_rfc3339("2026-03-01T00:00:00Z", "t").unwrap(),
                )),
                policy: Arc::new(AlgorithmPolicy::builtin().unwrap()),
                actor: Actor {
                    name: "cli:test".into(),
                    role: "operator".into(),
                },
            },
            sink,
            dir,
        }
    }

    fn sh(f: &Fx, line: &str) -> Result<String> {
        let argv = std::iter::once("keys").chain(line.split_whitespace());
        let cmd = TestCli::try_parse_from(argv)
            .map_err(|e| Error::new(ErrorCode::SchemaInvalid, e.to_string()))?
            .cmd;
        let mut out = Vec::new();
        run(cmd, &f.ctx, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn kid_of(output: &str, verb: &str) -> String {
        output
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{verb} ")))
            .and_then(|l| l.split_whitespace().next())
            .unwrap()
            .to_string()
    }

    #[test]
    fn lifecycle_from_the_command_line() {
        let f = fx("lifecycle");
        let g1 = kid_of(
            &sh(&f, "generate --role grant-signing --alg EdDSA").unwrap(),
            "generated",
        );
        assert!(g1.starts_with("grant-signing-eddsa-"));
        sh(&f, &format!("activate {g1}")).unwrap();
        let g2 = kid_of(
            &sh(&f, "generate --role grant-signing --alg ES256K").unwrap(),
            "generated",
        );
        let out = sh(&f, &format!("rotate --role grant-signing --kid {g2}")).unwrap();
        assert!(out.contains(&format!("activated {g2}")) && out.contains(&format!("retired {g1}")));
        let e = sh(&f, &format!("activate {g1}")).unwrap_err();
        assert_eq!(e.code, ErrorCode::KeyStateInvalid);
        sh(&f, &format!("revoke {g1} --reason compromised")).unwrap();
        assert_eq!(
            sh(&f, &format!("revoke {g1} --reason again"))
                .unwrap_err()
                .code,
            ErrorCode::KeyRevoked
        );
        let out = sh(&f, &format!("schedule-destroy {g1} --wait-days 1")).unwrap();
        assert!(out.contains("not before 2026-03-02T00:00:00Z"), "{out}");
        sh(&f, &format!("cancel-destroy {g1}")).unwrap();
        let out = sh(&f, &format!("schedule-destroy {g1} --wait-days 0")).unwrap();
        assert!(out.contains("not before 2026-03-01T00:00:00Z"), "{out}");
        // Due at once: no longer cancellable (a run may be destroying it).
        assert_eq!(
            sh(&f, &format!("cancel-destroy {g1}")).unwrap_err().code,
            ErrorCode::KeyStateInvalid
        );
        let out = sh(&f, "run-destructions").unwrap();
        assert_eq!(out.trim(), format!("destroyed {g1}"));
        assert_eq!(
            sh(&f, &format!("cancel-destroy {g1}")).unwrap_err().code,
            ErrorCode::KeyStateInvalid
        );
        let listing = sh(&f, "list").unwrap();
        let line = listing.lines().find(|l| l.starts_with(&g1)).unwrap();
        assert!(
            line.contains("destroyed") && line.contains("inactive") && line.contains("compromised")
        );
        let json: Value = serde_json::from_str(&sh(&f, "list --json").unwrap()).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 2);
        // Usage errors are refused by the parser.
        assert!(sh(&f, "generate --role gateway --alg EdDSA").is_err());
        assert!(sh(&f, "generate --role root --alg RS256").is_err());
        assert!(sh(&f, &format!("rotate --role root --kid {g2} --alg EdDSA")).is_err());
        assert_eq!(
            sh(&f, "generate --role grant-signing --alg ES256")
                .unwrap_err()
                .code,
            ErrorCode::AlgorithmUnsupported
        );
    }

    #[test]
    fn export_writes_verifiable_documents_only_after_audit() {
        let f = fx("export");
        let dir = f.dir.join("site");
        let cmd = format!(
            "export --out {} --root-out {}",
            dir.display(),
            f.dir.join("root.json").display()
        );
        sh(&f, "generate --role grant-signing --alg EdDSA").unwrap();
        // No root key: refused, nothing written.
        assert_eq!(sh(&f, &cmd).unwrap_err().code, ErrorCode::KeyNotFound);
        assert!(!dir.join("mpcp-keys.signed.json").exists());
        let root = kid_of(
            &sh(&f, "generate --role root --alg ES256").unwrap(),
            "generated",
        );
        sh(&f, &format!("activate {root}")).unwrap();
        // Audit down: refused, nothing written.
        f.sink.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(sh(&f, &cmd).unwrap_err().code, ErrorCode::AuditUnavailable);
        assert!(!dir.join("mpcp-keys.json").exists());
        f.sink
            .fail
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let out = sh(&f, &cmd).unwrap();
        assert!(out.contains("mpcp-keys.signed.json"), "{out}");
        let read = |p: PathBuf| -> Value {
            crate::canonical::parse_strict(&std::fs::read(p).unwrap()).unwrap()
        };
        let plain = KeySet::from_value(&read(dir.join("mpcp-keys.json"))).unwrap();
        let pinned = KeySet::from_value(&read(f.dir.join("root.json"))).unwrap();
        let inner = verify_signed_key_set(
            &read(dir.join("mpcp-keys.signed.json")),
            &pinned,
            f.ctx.clock.as_ref(),
            DEFAULT_DRIFT,
        )
        .unwrap();
        assert_eq!(inner, plain);
        assert!(matches!(
            f.sink.events().last().unwrap(),
            crate::events::Event::KeySetSigned { .. }
        ));
        // No temporary files left behind.
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(
            sh(
                &f,
                &format!("export --out {} --lifetime-hours 169", dir.display())
            )
            .unwrap_err()
            .code,
            ErrorCode::LifetimeExceeded
        );
        let _ = std::fs::remove_dir_all(&f.dir);
    }
}
