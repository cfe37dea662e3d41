//! The data directory of one appliance: its layout and its permission rules.
//!
//! Layout (every path is produced here; lower layers take the paths they are given):
//! - `pkcs11.toml`: the HSM configuration ([`DataDir::hsm_config`]);
//! - `softhsm2.conf`, `tokens/`, `secrets/`: the SoftHSM2 development tokens and their PIN
//!   files ([`DataDir::dev_layout`]);
//! - `store/`: the sled database ([`DataDir::store`]);
//! - `tls/cert.pem`, `tls/key.pem`, `tls/next-key.pem`: the embedded default TLS material
//!   ([`DataDir::tls`]).
//!
//! The directory is private to the appliance's user: directories 0700, files 0600.
//! [`DataDir::private_umask`] makes everything the process creates so (sled, the TLS
//! material and the development tokens create their own files), and
//! [`DataDir::make_private`] repairs, at start, a data directory in which anything is open
//! to group or others (it may hold the audit log, grants, token hashes and TLS keys), naming
//! each path it repaired so the operator learns what was exposed; what cannot be repaired
//! refuses the start.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::api::tls::TlsPaths;
use crate::error::{Error, ErrorCode, Result};
use crate::hsm::dev::DevLayout;

/// The HSM configuration file's name.
pub const HSM_CONFIG_FILE: &str = "pkcs11.toml";
/// The SoftHSM2 configuration file's name (development tokens).
pub const SOFTHSM2_CONF_FILE: &str = "softhsm2.conf";
/// The sled database's directory name.
pub const STORE_DIR: &str = "store";
/// The directory of the embedded default TLS material.
pub const TLS_DIR: &str = "tls";
/// The default certificate chain's name under [`TLS_DIR`].
pub const TLS_CERT_FILE: &str = "cert.pem";
/// The default certificate key's name under [`TLS_DIR`].
pub const TLS_KEY_FILE: &str = "key.pem";
/// The default next (backup) key's name under [`TLS_DIR`].
pub const TLS_NEXT_KEY_FILE: &str = "next-key.pem";
/// The directory of the development tokens' PIN files.
pub const SECRETS_DIR: &str = "secrets";
/// SoftHSM2's token directory (development tokens).
pub const TOKENS_DIR: &str = "tokens";

/// One appliance's data directory. Holds only its root path: nothing is created or checked
/// until a method that says so is called, and every path method is a pure function of the
/// root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root` (as given: relative paths stay relative).
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The root path, as given to [`DataDir::new`].
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The HSM configuration file, `<root>/pkcs11.toml`.
    pub fn hsm_config(&self) -> PathBuf {
        self.root.join(HSM_CONFIG_FILE)
    }

    /// The sled database's directory, `<root>/store`.
    pub fn store(&self) -> PathBuf {
        self.root.join(STORE_DIR)
    }

    /// The directory of the embedded default TLS material, `<root>/tls`.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join(TLS_DIR)
    }

    /// The embedded default TLS material under [`DataDir::tls_dir`]: certificate, key and
    /// next key (always named; the files may not exist yet).
    pub fn tls(&self) -> TlsPaths {
        let dir = self.tls_dir();
        TlsPaths {
            cert: dir.join(TLS_CERT_FILE),
            key: dir.join(TLS_KEY_FILE),
            next_key: Some(dir.join(TLS_NEXT_KEY_FILE)),
        }
    }

    /// The directory of the development tokens' PIN files, `<root>/secrets`.
    pub fn secrets(&self) -> PathBuf {
        self.root.join(SECRETS_DIR)
    }

    /// SoftHSM2's token directory, `<root>/tokens`.
    pub fn tokens(&self) -> PathBuf {
        self.root.join(TOKENS_DIR)
    }

    /// The SoftHSM2 configuration file, `<root>/softhsm2.conf`.
    pub fn softhsm2_conf(&self) -> PathBuf {
        self.root.join(SOFTHSM2_CONF_FILE)
    }

    /// Development SoftHSM2 tokens in this directory, with the SoftHSM2 module at its Debian
    /// path (see [`crate::hsm::dev`]). Idempotent.
    pub fn init_dev(&self) -> Result<crate::hsm::dev::DevInit> {
        crate::hsm::dev::init_dev_in(
            &self.dev_layout()?,
            Path::new(crate::hsm::dev::SOFTHSM2_MODULE),
        )
    }

    /// Where `hsm init-dev` writes: the root is created if missing and resolved (SoftHSM2
    /// is given absolute paths), then every path is the one of this layout under it.
    pub fn dev_layout(&self) -> Result<DevLayout> {
        let resolved = DataDir::new(crate::hsm::dev::resolve_dir(&self.root)?);
        Ok(DevLayout {
            config: resolved.hsm_config(),
            softhsm2_conf: resolved.softhsm2_conf(),
            tokens: resolved.tokens(),
            secrets: resolved.secrets(),
            dir: resolved.root,
        })
    }

    /// Sets the process umask to 077 so that every file and directory created afterwards is
    /// open to its owner only. Call it before anything opens the data directory.
    pub fn private_umask() {
        crate::os::set_private_umask();
    }

    /// Makes the data directory private at start: every directory or file in it (itself
    /// included) with a permission bit for group or others loses those bits, and the
    /// returned lines name each path repaired with its former mode, for the caller to print.
    /// A path that cannot be repaired (another owner, a read-only mount) is CONFIG_INVALID
    /// naming it. Symbolic links are not followed (their own mode means nothing); a missing
    /// data directory passes (it is created private).
    pub fn make_private(&self) -> Result<Vec<String>> {
        let mut repaired = Vec::new();
        if !self.root.exists() {
            return Ok(repaired);
        }
        let mut todo = vec![self.root.clone()];
        while let Some(p) = todo.pop() {
            let meta = std::fs::symlink_metadata(&p).map_err(|e| io(&p, e))?;
            if meta.file_type().is_symlink() {
                continue;
            }
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & !0o077))
                    .map_err(|e| {
                        Error::new(
                            ErrorCode::ConfigInvalid,
                            format!(
                                "{} is open to group or others (mode {:03o}) and cannot be made \
                                 private ({e}); the data directory must be private (directories \
                                 0700, files 0600)",
                                p.display(),
                                mode & 0o777
                            ),
                        )
                    })?;
                repaired.push(format!(
                    "{} was open to group or others (mode {:03o}); made it private",
                    p.display(),
                    mode & 0o777
                ));
            }
            if meta.is_dir() {
                for e in std::fs::read_dir(&p).map_err(|e| io(&p, e))? {
                    todo.push(e.map_err(|e| io(&p, e))?.path());
                }
            }
        }
        Ok(repaired)
    }

    /// [`DataDir::make_private`], printing each repair as a warning on stderr.
    pub fn ensure_private(&self) -> Result<()> {
        for line in self.make_private()? {
            eprintln!("warning: {line}");
        }
        Ok(())
    }
}

fn io(p: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorCode::ConfigInvalid,
        format!("cannot check the permissions of {}: {e}", p.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn every_path_is_under_the_root() {
        let d = DataDir::new("/data");
        assert_eq!(d.root(), Path::new("/data"));
        assert_eq!(d.hsm_config(), Path::new("/data/pkcs11.toml"));
        assert_eq!(d.softhsm2_conf(), Path::new("/data/softhsm2.conf"));
        assert_eq!(d.store(), Path::new("/data/store"));
        assert_eq!(d.secrets(), Path::new("/data/secrets"));
        assert_eq!(d.tokens(), Path::new("/data/tokens"));
        assert_eq!(d.tls_dir(), Path::new("/data/tls"));
        let tls = d.tls();
        assert_eq!(tls.cert, Path::new("/data/tls/cert.pem"));
        assert_eq!(tls.key, Path::new("/data/tls/key.pem"));
        assert_eq!(
            tls.next_key.as_deref(),
            Some(Path::new("/data/tls/next-key.pem"))
        );
    }

    #[test]
    fn dev_layout_creates_and_resolves_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("a/../b"));
        let layout = dir.dev_layout().unwrap();
        assert!(tmp.path().join("b").is_dir());
        assert_eq!(layout.dir, tmp.path().canonicalize().unwrap().join("b"));
        assert_eq!(layout.config, layout.dir.join(HSM_CONFIG_FILE));
    }

    #[test]
    fn a_missing_directory_passes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("absent"));
        assert!(dir.make_private().unwrap().is_empty());
        dir.ensure_private().unwrap();
    }

    #[test]
    fn a_file_open_to_others_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let dir = DataDir::new(d.path());
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(dir.make_private().unwrap().is_empty());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o604)).unwrap();
        let said = dir.make_private().unwrap();
        assert_eq!(said.len(), 1);
        assert!(said[0].contains(&f.display().to_string()), "{said:?}");
        assert_eq!(mode(&f), 0o600);
    }

    #[test]
    fn nested_directories_are_repaired_and_links_skipped() {
        let d = tempfile::tempdir().unwrap();
        let dir = DataDir::new(d.path());
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let tls = dir.tls_dir();
        std::fs::create_dir(&tls).unwrap();
        std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o750)).unwrap();
        let key = dir.tls().key;
        std::fs::write(&key, b"k").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
        let said = dir.make_private().unwrap();
        assert_eq!(said.len(), 3, "{said:?}");
        assert_eq!(mode(d.path()), 0o700);
        assert_eq!(mode(&tls), 0o700);
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(outside.path()), 0o755, "a link's target is left alone");
        assert!(
            dir.make_private().unwrap().is_empty(),
            "a second pass repairs nothing"
        );
    }
}
