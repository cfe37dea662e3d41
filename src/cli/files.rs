//! The data directory is private to the appliance's user: directories 0700, files 0600.
//! [`private_umask`] makes everything the process creates so (sled, the TLS material and
//! the development tokens create their own files), and [`check_private`] refuses, at start,
//! a data directory in which anything is open to group or others: it may hold the audit
//! log, grants, token hashes and TLS keys. The appliance does not repair such a directory
//! itself; what was readable may have been read, and the operator decides (the message
//! says how to fix it).

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

/// Refuses (CONFIG_INVALID naming the path) a data directory that is, or contains, a
/// directory or file with any permission bit for group or others. Symbolic links are not
/// followed (their own mode means nothing); a missing data directory passes (it is created
/// private).
pub fn check_private(data_dir: &Path) -> Result<()> {
    if !data_dir.exists() {
        return Ok(());
    }
    let mut todo = vec![data_dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).map_err(|e| io(&p, e))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::new(
                ErrorCode::ConfigInvalid,
                format!(
                    "{} is open to group or others (mode {mode:03o}); the data directory must \
                     be private (directories 0700, files 0600): chmod -R go-rwx {}",
                    p.display(),
                    data_dir.display()
                ),
            ));
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).map_err(|e| io(&p, e))? {
                todo.push(e.map_err(|e| io(&p, e))?.path());
            }
        }
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
        check_private(d.path()).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o604)).unwrap();
        let e = check_private(d.path()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ConfigInvalid);
        assert!(e.message.contains(&f.display().to_string()), "{e}");
    }
}
