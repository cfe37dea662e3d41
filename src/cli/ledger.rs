//! `ledger`: the PA's XRPL account at the console (run while the service is stopped: sled
//! locks the data directory).
//!
//! - `ledger account` prints the account the active xrpl-account key holds and its
//!   sequence counter.
//! - `ledger set-sequence N` sets the counter (the account's `Sequence` on the ledger, read
//!   with any XRPL tool), audited as `ledger_sequence_set`. Without ledger access this is
//!   how the appliance learns where the account stands.
//! - `ledger export` prints the signed blobs not yet final, in sequence order, as JSON
//!   (`{"account", "transactions": [{id, transactionType, sequence, hash, txBlob, state}]}`),
//!   for submission by any tool (`submit` takes `txBlob` as it is).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::api::ledger_book::{AccountState, LedgerBook, TxFilter, TxState};
use crate::app::{Appliance, DataDir, Options};
use crate::audit::{AuditSink, SideWrites};
use crate::clock::format_rfc3339;
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Actor, Event};

/// Arguments of `mpcp-pa ledger`.
#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// The ledger operation.
    #[command(subcommand)]
    pub command: LedgerCommand,
}

/// Ledger subcommands.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Print the PA's XRPL account (from the active xrpl-account key) and its counter.
    Account,
    /// Set the sequence the next transaction consumes (the account's Sequence on the
    /// ledger). Transactions already signed keep theirs.
    SetSequence {
        /// The sequence (1 or more).
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        sequence: u32,
    },
    /// Print the signed transactions as JSON, in sequence order: those not yet final
    /// (signed or submitted) unless `--all`.
    Export {
        /// Every transaction of the outbox, final ones included.
        #[arg(long)]
        all: bool,
    },
}

/// Entry point of `mpcp-pa ledger`.
pub fn main(dir: &DataDir, args: LedgerArgs) -> Result<ExitCode> {
    let mut app = Appliance::new(
        dir.clone(),
        Options {
            store_lock_hint: Some("is the service running? it holds the store lock".into()),
            ..Options::default()
        },
    );
    let book = LedgerBook::open(&app.store()?)?;
    match args.command {
        LedgerCommand::Export { all } => {
            let mut txs = book.list(&TxFilter::default())?;
            if !all {
                txs.retain(|t| !t.state.is_final());
            }
            let out: Vec<_> = txs
                .iter()
                .map(|t| {
                    json!({
                        "id": t.id,
                        "account": t.account,
                        "transactionType": t.transaction_type,
                        "sequence": t.sequence,
                        "hash": t.hash,
                        "txBlob": t.tx_blob,
                        "state": t.state,
                    })
                })
                .collect();
            let doc = json!({ "transactions": out });
            println!(
                "{}",
                serde_json::to_string_pretty(&doc)
                    .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?
            );
        }
        LedgerCommand::Account => {
            let registry = app.registry()?;
            let account = book.account(registry.as_ref())?;
            let (_, state) = book.account_state(&account.address)?;
            println!(
                "account {}\nkid {}\npublicKey {}\nnextSequence {} ({})",
                account.address,
                account.kid,
                account.key.hex(),
                state.next_sequence,
                state.source
            );
        }
        LedgerCommand::SetSequence { sequence } => {
            let registry = app.registry()?;
            let log = app.audit()?;
            let account = book.account(registry.as_ref())?;
            let (read, _) = book.account_state(&account.address)?;
            let pending = book.list(&TxFilter {
                state: Some(TxState::Signed),
                ..TxFilter::default()
            })?;
            if !pending.is_empty() {
                eprintln!(
                    "note: {} signed transaction(s) keep their sequences; a submitter re-signs \
                     them after a gap",
                    pending.len()
                );
            }
            let state = AccountState {
                next_sequence: sequence,
                source: "operator".into(),
                updated_at: Some(format_rfc3339(app.clock().now())),
            };
            let mut writes = SideWrites::new();
            book.counter_write(&mut writes, &account.address, read, &state)?;
            log.append(
                &Actor::cli(),
                Event::LedgerSequenceSet {
                    account: account.address.clone(),
                    sequence,
                    source: "operator".into(),
                },
                writes,
            )
            .wait()?;
            eprintln!(
                "the next transaction of {} consumes sequence {sequence}",
                account.address
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
