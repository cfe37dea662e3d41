//! `verify` and `hash`: offline artifact commands that need neither HSM nor store.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::canonical::{Domain, digest_with_prefix, parse_strict};
use crate::error::{Error, ErrorCode, Result};

/// Arguments of `mpcp-pa verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The signed artifact (PolicyGrant, DestinationAllowlist, signed key set or Trust Bundle).
    pub artifact: PathBuf,
    /// Verification keys: a JWKS file, a signed key set or a Trust Bundle.
    #[arg(long)]
    pub keys: PathBuf,
    /// Root keys (JWKS) that signed the Trust Bundle or key set given with --keys.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Verify as of this RFC 3339 time instead of now.
    #[arg(long)]
    pub at: Option<String>,
    /// Clock drift tolerance in seconds.
    #[arg(long, default_value_t = 300)]
    pub drift_seconds: u64,
}

/// Arguments of `mpcp-pa hash`.
#[derive(Debug, Args)]
pub struct HashArgs {
    /// Domain prefix, e.g. `MPCP:Policy:1.0:`.
    pub prefix: String,
    /// JSON file to hash.
    pub file: PathBuf,
}

/// Reads a file, mapping failures to a stable code.
pub fn read_file(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::new(ErrorCode::Io, format!("cannot read {}: {e}", path.display()))
    })
}

pub fn hash(a: HashArgs) -> Result<ExitCode> {
    Domain::parse_prefix(&a.prefix)?;
    let value = parse_strict(&read_file(&a.file)?)?;
    println!("{}", hex::encode(digest_with_prefix(&a.prefix, &value)?));
    Ok(ExitCode::SUCCESS)
}

pub fn verify(_a: VerifyArgs) -> Result<ExitCode> {
    Err(Error::new(ErrorCode::Internal, "verify: wired in the next commit"))
}
