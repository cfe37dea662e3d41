//! `serve` and `pins`: the HTTPS service and the TLS key pins gateways hold.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::api::tls::{TlsPaths, pins};
use crate::error::{Error, ErrorCode, Result};

/// TLS material options shared by `serve` and `pins`.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Certificate chain (PEM). Default: the development certificate under <data-dir>/tls/,
    /// generated on first start.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of the certificate (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The next (backup) TLS key (PEM), whose pin gateways hold alongside the current one.
    #[arg(long, requires = "tls_cert")]
    pub tls_next_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The configured files, or the embedded default in `data_dir`.
    pub fn paths(&self, data_dir: &Path) -> TlsPaths {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => TlsPaths {
                cert: cert.clone(),
                key: key.clone(),
                next_key: self.tls_next_key.clone(),
            },
            _ => TlsPaths::default_in(data_dir),
        }
    }

    /// Whether the embedded default is in use.
    pub fn is_default(&self) -> bool {
        self.tls_cert.is_none()
    }
}

/// Arguments of `mpcp-pa pins`.
#[derive(Debug, Args)]
pub struct PinsArgs {
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Print `{"current": ..., "next": ...}` instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// Prints the `pin-sha256` of the current and the next TLS key.
pub fn pins_cmd(data_dir: &Path, a: PinsArgs) -> Result<ExitCode> {
    let paths = a.tls.paths(data_dir);
    if a.tls.is_default() && !paths.key.exists() {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!(
                "no TLS key at {}: start `mpcp-pa serve` once to generate the development \
                 certificate, or pass --tls-cert/--tls-key",
                paths.key.display()
            ),
        ));
    }
    let p = pins(&paths)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"current": p.current, "next": p.next})
        );
    } else {
        println!("current pin-sha256=\"{}\"", p.current);
        match &p.next {
            Some(n) => println!("next    pin-sha256=\"{n}\""),
            None => eprintln!("warning: no next (backup) key configured; pin only the current key"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
