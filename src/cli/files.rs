//! The data directory is private to the appliance's user: directories 0700, files 0600.
//! [`private_umask`] makes everything the process creates so (sled, the TLS material and
//! the development tokens create their own files), and [`make_private`] repairs, at start,
//! a data directory in which anything is open to group or others (it may hold the audit
//! log, grants, token hashes and TLS keys), naming each path it repaired so the operator
//! learns what was exposed; what cannot be repaired refuses the start.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, ErrorCode, Result};

/// Sets the process umask to 077 so that every file and directory created afterwards is
/// open to its owner only. Call it before anything opens the data directory.
pub fn private_umask() {
    // SAFETY: umask only swaps the process's file-mode mask; it takes no pointers.
    unsafe {
        libc::umask(0o077);
    }
}

/// Makes a data directory private at start: every directory or file in it (itself
/// included) with a permission bit for group or others loses those bits, and the returned
/// lines name each path repaired with its former mode, for the caller to print. A path that
/// cannot be repaired (another owner, a read-only mount) is CONFIG_INVALID naming it.
/// Symbolic links are not followed (their own mode means nothing); a missing data directory
/// passes (it is created private).
pub fn make_private(data_dir: &Path) -> Result<Vec<String>> {
    let mut repaired = Vec::new();
    if !data_dir.exists() {
        return Ok(repaired);
    }
    let mut todo = vec![data_dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).map_err(|e| io(&p, e))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & !0o077)).map_err(
                |e| {
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
                },
            )?;
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

/// [`make_private`], printing each repair as a warning on stderr.
pub fn ensure_private(data_dir: &Path) -> Result<()> {
    for line in make_private(data_dir)? {
        eprintln!("warning: {line}");
    }
    Ok(())
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

    #[test]
    fn a_file_open_to_others_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(make_private(d.path()).unwrap().is_empty());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o604)).unwrap();
        let said = make_private(d.path()).unwrap();
        assert_eq!(said.len(), 1);
        assert!(said[0].contains(&f.display().to_string()), "{said:?}");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
