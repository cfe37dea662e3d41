//! `hsm`: HSM setup and checks. `init-dev` creates SoftHSM2 development tokens in the data
//! directory; `probe` opens the HSM configuration and runs the startup probe.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::app::{Appliance, DataDir, Options};
use crate::error::Result;
use crate::hsm::dev::{SOFTHSM2_MODULE, init_dev_in};

/// Arguments of `mpcp-pa hsm`.
#[derive(Debug, Args)]
pub struct HsmArgs {
    #[command(subcommand)]
    command: HsmCommand,
}

#[derive(Debug, Subcommand)]
enum HsmCommand {
    /// DEVELOPMENT ONLY: create SoftHSM2 tokens (one per role) in the data directory, with
    /// random PINs in 0600 files under DATA_DIR/secrets/, and write DATA_DIR/pkcs11.toml.
    /// Idempotent: on an initialised directory it changes nothing.
    InitDev {
        /// The SoftHSM2 PKCS#11 module.
        #[arg(long, default_value = SOFTHSM2_MODULE)]
        module: PathBuf,
    },
    /// Open the HSM configuration, log in to every token and check it offers what the
    /// configured keys need.
    Probe {
        /// HSM configuration file (default: DATA_DIR/pkcs11.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Runs an `hsm` subcommand against `data_dir`.
pub fn run(args: HsmArgs, dir: &DataDir) -> Result<ExitCode> {
    let data_dir = dir.root();
    match args.command {
        HsmCommand::InitDev { module } => {
            let out = init_dev_in(&dir.dev_layout()?, &module)?;
            if out.unchanged() {
                println!(
                    "already initialised: {} (nothing changed)",
                    data_dir.display()
                );
            } else {
                for a in &out.actions {
                    println!("{a}");
                }
                println!(
                    "initialised development tokens in {}; HSM configuration: {}",
                    data_dir.display(),
                    out.config_path.display()
                );
                println!("warning: development only, the token PINs are stored in files");
            }
            Ok(ExitCode::SUCCESS)
        }
        HsmCommand::Probe { config } => {
            let mut app = Appliance::new(
                dir.clone(),
                Options {
                    hsm_config: config,
                    ..Options::default()
                },
            );
            let backend = app.hsm()?;
            for t in backend.report() {
                let roles: Vec<&str> = t.roles.iter().map(|r| r.as_str()).collect();
                let algs: Vec<&str> = t.algorithms.iter().map(|a| a.as_str()).collect();
                println!(
                    "token {:?} ({} {}, serial {}): roles {}; algorithms {}: OK",
                    t.label,
                    t.manufacturer,
                    t.model,
                    t.serial,
                    roles.join(", "),
                    algs.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
