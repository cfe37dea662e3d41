//! Token PINs: where they come from and how they are held.
//!
//! A PIN is never written in the configuration or given on the command line: the
//! configuration names an environment variable or a file that holds it. In memory it lives
//! in a [`Pin`], which zeroises its bytes on drop and prints as `Pin(<redacted>)`.

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::{Error, ErrorCode, Result};

/// Where a token's user PIN is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// The PIN is the value of this environment variable.
    Env(String),
    /// The PIN is the content of this file (one trailing newline ignored). The file must not
    /// be readable or writable by group or others.
    File(PathBuf),
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::Env(v) => write!(f, "environment variable {v}"),
            PinSource::File(p) => write!(f, "PIN file {}", p.display()),
        }
    }
}

/// A PIN held in memory that is zeroised on drop and never printed.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

impl Pin {
    /// Wraps a PIN value (for example a freshly generated one). Refuses an empty PIN.
    pub fn new(value: Zeroizing<String>) -> Result<Pin> {
        if value.is_empty() {
            return Err(Error::new(ErrorCode::ConfigInvalid, "empty PIN"));
        }
        Ok(Pin(value))
    }

    /// Reads the PIN of `token` from its source. Errors name the source, never the value.
    pub fn load(source: &PinSource, token: &str) -> Result<Pin> {
        match source {
            PinSource::Env(var) => {
                let value = std::env::var_os(var).ok_or_else(|| {
                    Error::new(
                        ErrorCode::ConfigInvalid,
                        format!("PIN of token {token:?}: environment variable {var} is not set"),
                    )
                })?;
                let value = Zeroizing::new(value.into_string().map_err(|_| {
                    Error::new(
                        ErrorCode::ConfigInvalid,
                        format!("PIN of token {token:?}: {var} is not valid UTF-8"),
                    )
                })?);
                Pin::new(value).map_err(|_| {
                    Error::new(
                        ErrorCode::ConfigInvalid,
                        format!("PIN of token {token:?}: environment variable {var} is empty"),
                    )
                })
            }
            PinSource::File(path) => Pin::read_file(path, token),
        }
    }

    fn read_file(path: &Path, token: &str) -> Result<Pin> {
        let err = |what: String| {
            Error::new(
                ErrorCode::ConfigInvalid,
                format!(
                    "PIN of token {token:?}: PIN file {}: {what}",
                    path.display()
                ),
            )
        };
        let meta = std::fs::metadata(path).map_err(|e| err(e.kind().to_string()))?;
        if !meta.is_file() {
            return Err(err("not a regular file".into()));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(err("accessible by group or others; chmod 600 it".into()));
            }
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| err(e.kind().to_string()))?);
        let mut text = Zeroizing::new(
            String::from_utf8(bytes.to_vec()).map_err(|_| err("not valid UTF-8".into()))?,
        );
        // Editors add one final newline; drop exactly that, nothing else.
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        Pin::new(text).map_err(|_| err("empty".into()))
    }

    /// The PIN as cryptoki wants it (a `secrecy` string that is zeroised on drop too).
    pub(crate) fn to_auth_pin(&self) -> cryptoki::types::AuthPin {
        cryptoki::types::AuthPin::new(self.0.as_str().into())
    }

    /// Writes the PIN to a new file with mode 0600 (development tokens only). Refuses to
    /// overwrite an existing file.
    pub(crate) fn write_new_file(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let io = |e: std::io::Error| {
            Error::new(
                ErrorCode::Io,
                format!("cannot write PIN file {}: {e}", path.display()),
            )
        };
        let mut f = opts.open(path).map_err(io)?;
        f.write_all(self.0.as_bytes()).map_err(io)?;
        f.write_all(b"\n").map_err(io)?;
        f.sync_all().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let p = Pin::new(Zeroizing::new("123456".into())).unwrap();
        assert_eq!(format!("{p:?}"), "Pin(<redacted>)");
        assert!(Pin::new(Zeroizing::new(String::new())).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn files_must_be_private_and_one_newline_is_dropped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user.pin");
        let pin = Pin::new(Zeroizing::new("s3cret-pin".into())).unwrap();
        pin.write_new_file(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(pin.write_new_file(&path).is_err(), "never overwrites");
        let back = Pin::load(&PinSource::File(path.clone()), "t").unwrap();
        assert_eq!(back.0.as_str(), "s3cret-pin");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Pin::load(&PinSource::File(path.clone()), "t").unwrap_err();
        assert_eq!(e.code, ErrorCode::ConfigInvalid);
        assert!(e.message.contains("chmod 600"), "{}", e.message);
        assert!(!e.message.contains("s3cret"));
    }

    #[test]
    fn missing_env_names_the_variable_not_a_value() {
        let e = Pin::load(&PinSource::Env("MPCP_PA_TEST_UNSET_PIN_VAR".into()), "tok").unwrap_err();
        assert!(e.message.contains("MPCP_PA_TEST_UNSET_PIN_VAR"));
    }
}
