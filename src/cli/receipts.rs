//! `receipts verify`: checks scoped authorization receipts offline, with the receipt key
//! set only (no HSM, no store), and prints one verdict line; exit 0 only when valid.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::artifact::read_file;
use crate::canonical::parse_strict;
use crate::clock::parse_rfc3339;
use crate::error::Result;
use crate::receipts::{Expect, ReceiptKeys, Verdict, admit, check_decision, effective, pair};

/// Arguments of `mpcp-pa receipts`.
#[derive(Debug, Args)]
pub struct ReceiptsArgs {
    /// The receipt operation.
    #[command(subcommand)]
    pub command: ReceiptsCommand,
}

/// Receipt operations.
#[derive(Debug, Subcommand)]
pub enum ReceiptsCommand {
    /// Verify a decision record alone, with its outcome (pairing), with the observed
    /// request (binding), or several decisions under one binding (supersession).
    Verify(VerifyArgs),
}

/// Arguments of `mpcp-pa receipts verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Decision record(s). Several: the effective one (latest `decidedAt`) is checked;
    /// distinct records sharing it are `ambiguous`.
    #[arg(long = "decision", required = true)]
    pub decisions: Vec<PathBuf>,
    /// The receipt key set (JWKS, as `/.well-known/mpcp-receipt-keys.json` serves it).
    #[arg(long)]
    pub keys: PathBuf,
    /// An outcome record to pair with the effective decision.
    #[arg(long)]
    pub outcome: Option<PathBuf>,
    /// The `tools/call` params as observed (`{name, arguments, _meta}`): the decision
    /// must be `allow` and bind exactly this call.
    #[arg(long)]
    pub request: Option<PathBuf>,
    /// The audience (provider) the decision must name.
    #[arg(long)]
    pub audience: Option<String>,
    /// Longest age of a decision in seconds, whatever its `expSeconds` says.
    #[arg(long, default_value_t = 300)]
    pub max_age_seconds: u64,
    /// Allowed clock skew in seconds for a decision issued in the future.
    #[arg(long, default_value_t = 30)]
    pub skew_seconds: u64,
    /// Verify as of this time (RFC 3339 UTC) instead of now.
    #[arg(long)]
    pub at: Option<String>,
}

fn read_json(path: &PathBuf) -> Result<Value> {
    parse_strict(&read_file(path)?).map_err(|e| e.within(&path.display().to_string()))
}

/// Runs `receipts`.
pub fn run(a: ReceiptsArgs) -> Result<ExitCode> {
    match a.command {
        ReceiptsCommand::Verify(v) => verify(v),
    }
}

fn verify(a: VerifyArgs) -> Result<ExitCode> {
    let keys = ReceiptKeys::from_jwks(&read_json(&a.keys)?)?;
    let now = match &a.at {
        Some(t) => parse_rfc3339(t, "--at")?,
        None => time::OffsetDateTime::now_utc(),
    };
    let expect = Expect {
        now,
        max_age: Duration::from_secs(a.max_age_seconds),
        skew: Duration::from_secs(a.skew_seconds),
        audience: a.audience.as_deref(),
    };
    let decisions = a
        .decisions
        .iter()
        .map(read_json)
        .collect::<Result<Vec<_>>>()?;
    let outcome = a.outcome.as_ref().map(read_json).transpose()?;
    let request = a.request.as_ref().map(read_json).transpose()?;
    let verdict = check(
        &decisions,
        outcome.as_ref(),
        request.as_ref(),
        &keys,
        &expect,
    );
    match verdict {
        Ok(i) => {
            println!("valid decision={}", a.decisions[i].display());
            Ok(ExitCode::SUCCESS)
        }
        Err(v) => {
            println!("{v}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The index of the effective decision once every requested check passed.
fn check(
    decisions: &[Value],
    outcome: Option<&Value>,
    request: Option<&Value>,
    keys: &ReceiptKeys,
    expect: &Expect<'_>,
) -> std::result::Result<usize, Verdict> {
    let i = if decisions.len() == 1 {
        check_decision(&decisions[0], keys, expect)?;
        0
    } else {
        effective(decisions, keys, expect)?
    };
    if let Some(o) = outcome {
        pair(&decisions[i], o, keys, expect)?;
    }
    if let Some(r) = request {
        admit(&decisions[i], keys, expect, r)?;
    }
    Ok(i)
}
