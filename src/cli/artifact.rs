//! `verify` and `hash`: offline artifact commands that need neither HSM nor store.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::canonical::{Domain, digest_with_prefix, parse_strict};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, FixedClock, SystemClock, parse_rfc3339};
use crate::error::{Error, ErrorCode, Result};
use crate::jwk::KeySet;
use crate::verify::{Verified, Verifier};

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
    /// Verify as of this time (RFC 3339, UTC: YYYY-MM-DDTHH:MM:SS[.f]Z) instead of now.
    #[arg(long)]
    pub at: Option<String>,
    /// Clock drift tolerance in seconds.
    #[arg(long, default_value_t = 300)]
    pub drift_seconds: u64,
    /// Algorithm policy whose deprecations apply (default: the policy built into this
    /// binary, policies/algorithms.toml): an artifact issued at or after a deprecation's
    /// effective date with that algorithm is ALGORITHM_DEPRECATED.
    #[arg(long, env = "MPCP_PA_ALGORITHM_POLICY")]
    pub algorithm_policy: Option<PathBuf>,
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
        Error::new(
            ErrorCode::Io,
            format!("cannot read {}: {e}", path.display()),
        )
    })
}

/// Runs `hash`: prints the lowercase hex domain digest.
pub fn hash(a: HashArgs) -> Result<ExitCode> {
    Domain::parse_prefix(&a.prefix)?;
    let value = parse_strict(&read_file(&a.file)?)?;
    println!("{}", hex::encode(digest_with_prefix(&a.prefix, &value)?));
    Ok(ExitCode::SUCCESS)
}

/// Runs `verify`: prints exactly one verdict line, `VALID ...` (exit 0) or
/// `INVALID <CODE> ...` (exit 1), whatever went wrong (unreadable file, bad JSON, bad keys).
pub fn verify(a: VerifyArgs) -> Result<ExitCode> {
    match verify_files(&a) {
        Ok(v) => {
            println!(
                "VALID {} {} kid={} alg={}",
                v.kind.name(),
                v.id,
                v.kid,
                v.alg
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let field = e
                .field
                .as_deref()
                .map(|f| format!(" (field {f})"))
                .unwrap_or_default();
            println!("INVALID {} {}{field}", e.code, e.message);
            Ok(ExitCode::from(1))
        }
    }
}

fn verify_files(a: &VerifyArgs) -> Result<Verified> {
    let clock: Arc<dyn Clock> = match &a.at {
        Some(at) => Arc::new(FixedClock::new(parse_rfc3339(at, "--at")?)),
        None => Arc::new(SystemClock),
    };
    let policy = crate::app::load_policy(a.algorithm_policy.as_deref())?;
    let verifier = Verifier::new(clock)
        .with_drift(Duration::from_secs(a.drift_seconds))
        .with_algorithm_gate(Arc::new(policy));
    let root = match &a.root {
        Some(p) => Some(KeySet::from_value(&parse_strict(&read_file(p)?)?)?),
        None => None,
    };
    let keys = verifier.key_source(&parse_strict(&read_file(&a.keys)?)?, root.as_ref())?;
    let artifact = parse_strict(&read_file(&a.artifact)?)?;
    verifier.verify(&artifact, &keys)
}
