//! `tokens`: API token administration at the console. A secret is printed once, on stdout,
//! at creation and never again; `list` shows names, roles and states only. Each creation and
//! revocation is one durable append of the audit log, attributed to the CLI operator: the
//! record change and its entry are on disk together (or neither is) before the command
//! reports success.
//!
//! sled locks the data directory, so these commands run while the service is stopped.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::api::tokens::{ApiRole, LastOfficer, NewToken, TokenStore};
use crate::app::{Appliance, DataDir, Options};
use crate::audit::AuditSink;
use crate::clock::Clock;
use crate::error::Result;
use crate::events::Actor;
use crate::store::Store;

/// Arguments of `mpcp-pa tokens`.
#[derive(Debug, Args)]
pub struct TokensArgs {
    /// The token operation.
    #[command(subcommand)]
    pub command: TokensCommand,
}

/// Token subcommands.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token with exactly one role and print its secret once.
    Create {
        /// Unique name (1-46 of A-Z a-z 0-9 . _ -, starting with a letter or digit); names of
        /// revoked tokens stay taken.
        #[arg(long)]
        name: String,
        /// issuer, security-officer, auditor, receipt-requester, receipt-consumer or
        /// monitoring (reads only GET /metrics).
        #[arg(long, value_parser = parse_role)]
        role: ApiRole,
        /// An audience (MCP provider) a receipt-consumer token serves; repeat for several.
        /// Required for receipt-consumer, refused for other roles.
        #[arg(long = "audience")]
        audiences: Vec<String>,
    },
    /// List tokens (names, roles, creation and revocation times; never secrets).
    List,
    /// Revoke a token by name. The last active security-officer token is refused
    /// (LAST_OFFICER) unless `--allow-no-officer` is given.
    Revoke {
        /// Token name.
        name: String,
        /// Break-glass: revoke even the last active security-officer token (a new one can
        /// then only be created here, with `tokens create --role security-officer`).
        #[arg(long)]
        allow_no_officer: bool,
    },
    /// Create the first security-officer token, only if none was ever created.
    Bootstrap,
}

fn parse_role(s: &str) -> std::result::Result<ApiRole, String> {
    ApiRole::parse(s).map_err(|e| e.message)
}

fn print_new(t: &NewToken) {
    eprintln!(
        "created token {:?} (role {}); the secret below is shown only now:",
        t.name, t.role
    );
    println!("{}", t.secret.as_str());
}

/// Entry point of `mpcp-pa tokens`: the store and audit log of `dir`.
pub fn main(dir: &DataDir, args: TokensArgs) -> Result<ExitCode> {
    let mut app = Appliance::new(
        dir.clone(),
        Options {
            store_lock_hint: Some("is the service running? it holds the store lock".into()),
            ..Options::default()
        },
    );
    let log = app.audit()?;
    run(args, &app.store()?, log.as_ref(), app.clock().as_ref())
}

/// Runs a token subcommand against `store`, committing each change with its entry through
/// `sink` (waited for: the command returns once both are durable).
pub fn run(
    args: TokensArgs,
    store: &Store,
    sink: &dyn AuditSink,
    clock: &dyn Clock,
) -> Result<ExitCode> {
    let tokens = TokenStore::open(store)?;
    let actor = Actor::cli();
    match args.command {
        TokensCommand::Create {
            name,
            role,
            audiences,
        } => {
            let change = tokens.prepare_create_for(&name, role, &audiences, &actor, clock)?;
            print_new(&change.commit(sink)?);
        }
        TokensCommand::List => {
            for t in tokens.list()? {
                let state = match &t.revoked_at {
                    Some(at) => format!("revoked {at}"),
                    None => "active".to_string(),
                };
                println!(
                    "{}\t{}\tcreated {}\t{}",
                    t.name, t.role, t.created_at, state
                );
            }
        }
        TokensCommand::Revoke {
            name,
            allow_no_officer,
        } => {
            let last = if allow_no_officer {
                LastOfficer::Allow
            } else {
                LastOfficer::Refuse
            };
            tokens
                .prepare_revoke_with(&name, &actor, clock, last)?
                .commit(sink)?;
            eprintln!("revoked token {name:?}");
        }
        TokensCommand::Bootstrap => match tokens.bootstrap(&actor, sink, clock)? {
            Some(t) => print_new(&t),
            None => {
                eprintln!("a security-officer token already exists; nothing created");
                return Ok(ExitCode::from(1));
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}
