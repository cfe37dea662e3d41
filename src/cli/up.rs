//! `mpcp-pa up`: the embedded default, the README's "run" command. It creates on first use
//! what an appliance in DATA_DIR lacks, then runs `serve`:
//! - SoftHSM2 development tokens and `pkcs11.toml` (as `hsm init-dev`), if no HSM
//!   configuration exists; an existing configuration (a real HSM) is used as it is;
//! - for each key role that has never had a key, an Ed25519 key generated in its token and
//!   activated (as `keys rotate --role ROLE --alg EdDSA`); a role whose keys were all revoked
//!   is left to the security team, since generating one behind its back would undo an
//!   emergency revocation;
//! - the first security-officer API token (as `tokens bootstrap`), printed once on stdout.
//!
//! Every step goes through the same registry and token store as the separate commands, so
//! each is in the audit log as the console operator. A second `up` changes nothing.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use crate::api::ledger_book::LedgerBook;
use crate::api::tokens::TokenStore;
use crate::app::{Appliance, DataDir, Options};
use crate::error::Result;
use crate::events::Actor;
use crate::hsm::dev::SOFTHSM2_MODULE;
use crate::keys::KeyRole;

use super::serve::{ServeArgs, serve_cmd};

/// Arguments of `mpcp-pa up`: those of `serve`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Everything `serve` takes.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// What the first-use steps did, for the operator.
#[derive(Debug, Default)]
pub struct Prepared {
    /// One line per change made.
    pub actions: Vec<String>,
    /// Roles with no active key after preparation (the service is not ready for them).
    pub without_active_key: Vec<KeyRole>,
}

/// Creates what DATA_DIR lacks (see the module doc). The bootstrap token, if created, is
/// printed on stdout here, the only time it is ever shown.
pub fn prepare(dir: &DataDir, serve: &ServeArgs) -> Result<Prepared> {
    let mut out = Prepared::default();
    let mut app = Appliance::new(
        dir.clone(),
        Options {
            algorithm_policy: serve.algorithm_policy.clone(),
            ..Options::default()
        },
    );
    if let Some(init) = app.create_dev_hsm_if_missing(Path::new(SOFTHSM2_MODULE))? {
        out.actions.extend(init.actions);
        out.actions.push(format!(
            "development SoftHSM2 tokens in {} (their PINs are in files: development only)",
            dir.root().display()
        ));
    }
    app.hsm()?;
    let store = app.store()?;
    let audit = app.audit()?;
    app.policy()?;
    let registry = app.registry()?;
    let clock = app.clock();
    let actor = Actor::cli();
    let ledger = LedgerBook::open(&store)?;
    // The XRPL account first: the first grant-signing and root keys then sign their
    // self-issued credentials with it.
    let mut roles = KeyRole::ALL.to_vec();
    roles.sort_by_key(|r| *r != KeyRole::XrplAccount);
    for role in roles.into_iter().filter(|r| registry.is_configured(*r)) {
        if registry.list_role(role)?.is_empty() {
            let prepared = registry.prepare_rotate(&actor, role, None, Some(role.default_alg()))?;
            let (r, tx) = ledger.commit_key_change(&registry, prepared, serve.xrpl_fee_drops)?;
            out.actions.push(format!(
                "generated and activated {} key {}",
                role, r.activated.kid
            ));
            if let Some(t) = tx {
                out.actions.push(format!(
                    "signed {} {} for {}",
                    t.transaction_type.as_str(),
                    t.hash,
                    r.activated.kid
                ));
            }
            if role == KeyRole::XrplAccount {
                let account = ledger.account(registry.as_ref())?;
                out.actions.push(format!(
                    "the PA's XRPL account is {} (fund it, then `mpcp-pa ledger set-sequence`)",
                    account.address
                ));
            }
        }
        if registry.active_kid(role)?.is_none() {
            out.without_active_key.push(role);
        }
    }
    let tokens = TokenStore::open(&store)?;
    if let Some(t) = tokens.bootstrap(&actor, audit.as_ref(), clock.as_ref())? {
        out.actions.push(format!(
            "created the first security-officer API token {:?}",
            t.name
        ));
        eprintln!(
            "The security-officer API token below is shown only now. Keep it; it creates the \
             issuer and auditor tokens (POST /v1/tokens):"
        );
        println!("{}", t.secret.as_str());
    }
    store.flush()?;
    Ok(out)
}

/// Entry point of `mpcp-pa up`.
pub fn up_cmd(dir: &DataDir, a: UpArgs) -> Result<ExitCode> {
    let prepared = prepare(dir, &a.serve)?;
    for line in &prepared.actions {
        eprintln!("first use: {line}");
    }
    for role in &prepared.without_active_key {
        eprintln!(
            "warning: the {role} role has no active key (revoked?); rotate one in with \
             `POST /v1/keys/{role}/rotate` or `mpcp-pa keys rotate --role {role}`"
        );
    }
    let scheme = if a.serve.insecure_http_loopback {
        "http"
    } else {
        "https"
    };
    eprintln!(
        "authenticate with `Authorization: Bearer <token>`; the public key set is at \
         {scheme}://{}/.well-known/mpcp-keys.json",
        a.serve.listen
    );
    serve_cmd(dir, a.serve)
}
