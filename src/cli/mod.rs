//! The `mpcp-pa` command line. Each subcommand family lives in its own file; this module only
//! parses and dispatches. Exit status: 0 success, 1 refusal/invalid (with the stable code on
//! stderr or in the verdict line), 2 usage error (clap).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::DataDir;
use crate::error::Error;

mod artifact;
mod audit;
mod hsm;
pub mod keys;
mod ledger;
pub mod logging;
mod receipts;
pub mod serve;
pub mod tokens;
pub mod up;

/// Default data directory: tokens, store and configuration of one appliance live here.
pub const DEFAULT_DATA_DIR: &str = "mpcp-data";

/// mpcp-pa: HSM-backed Policy Authority for MPCP.
#[derive(Debug, Parser)]
#[command(name = "mpcp-pa", version = crate::VERSION_STRING, about)]
pub struct Cli {
    /// Data directory holding the SoftHSM2 tokens, the sled store and the configuration.
    #[arg(long, global = true, env = "MPCP_PA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify a signed artifact (grant, allowlist, key set, trust bundle) offline.
    Verify(artifact::VerifyArgs),
    /// Print the domain digest SHA-256(prefix || canonical_json(file)) in lowercase hex.
    Hash(artifact::HashArgs),
    /// Audit log: checkpoint, entries, proofs, export and offline verification.
    Audit(audit::AuditArgs),
    /// HSM setup and checks (development tokens, startup probe).
    Hsm(hsm::HsmArgs),
    /// Manage signing keys (generate, activate, rotate, revoke, destroy) and export key sets.
    Keys(keys::KeysArgs),
    /// The PA's XRPL account: show it, set its sequence counter, export signed transactions.
    Ledger(ledger::LedgerArgs),
    /// Print the pin-sha256 of the current and the next (backup) TLS key.
    Pins(serve::PinsArgs),
    /// Verify scoped authorization receipts offline (decision, outcome, binding).
    Receipts(receipts::ReceiptsArgs),
    /// Run the HTTPS service.
    Serve(serve::ServeArgs),
    /// API tokens: create, list, revoke, bootstrap (with the service stopped; while it runs,
    /// the security officer uses /v1/tokens).
    Tokens(tokens::TokensArgs),
    /// Run the appliance on the embedded default: create on first use the development
    /// tokens, one key per role and the first security-officer API token, then serve.
    Up(up::UpArgs),
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before anything creates a file: the data directory's contents are private.
    DataDir::private_umask();
    let dir = DataDir::new(&cli.data_dir);
    match &cli.command {
        Command::Serve(a) => logging::init(a.log_format, logging::DEFAULT_FILTER),
        Command::Up(a) => logging::init(a.serve.log_format, logging::DEFAULT_FILTER),
        // The other commands print their results; their log shows warnings only (such as
        // an HSM recovery), as text.
        _ => logging::init(logging::LogFormat::Text, "warn"),
    }
    let result = match cli.command {
        Command::Verify(a) => artifact::verify(a),
        Command::Hash(a) => artifact::hash(a),
        Command::Audit(a) => audit::run(&dir, a),
        Command::Hsm(a) => hsm::run(a, &dir),
        Command::Keys(a) => keys::main(&dir, a),
        Command::Ledger(a) => ledger::main(&dir, a),
        Command::Pins(a) => serve::pins_cmd(&dir, a),
        Command::Receipts(a) => receipts::run(a),
        Command::Serve(a) => dir
            .ensure_private()
            .and_then(|()| serve::serve_cmd(&dir, a)),
        Command::Tokens(a) => tokens::main(&dir, a),
        Command::Up(a) => dir.ensure_private().and_then(|()| up::up_cmd(&dir, a)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            ExitCode::from(1)
        }
    }
}

/// Prints an error as `error: CODE: message [field]`.
pub fn report(e: &Error) {
    match &e.field {
        Some(f) => eprintln!("error: {} (field {f})", e),
        None => eprintln!("error: {e}"),
    }
}
