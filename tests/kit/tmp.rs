//! The one temporary-directory scheme of the tests: a fresh directory under the system's
//! temporary directory, named after its user (`mpcp-pa-NAME-XXXXXX`, so a leftover one tells
//! which test it belongs to) and removed when dropped. Short paths, so Unix sockets fit.
//!
//! In a child process of [`super::child`], the directories go under a directory the parent
//! made for that child ([`BASE_VAR`]) and removes once the child has exited: so what a child
//! cannot remove itself (the process-wide development tokens of [`super::api::hsm`] live in
//! a static, which is never dropped) does not pile up in the system's temporary directory.

use std::ffi::OsStr;
use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A temporary directory, removed (with its contents) on drop. Dereferences to its path.
pub struct TmpDir(tempfile::TempDir);

/// The environment variable naming the directory a child's temporary directories go in.
pub const BASE_VAR: &str = "MPCP_PA_KIT_TMP";

/// A fresh, empty temporary directory for `name` (a test or file name).
pub fn dir(name: &str) -> TmpDir {
    let base = std::env::var_os(BASE_VAR).map_or_else(std::env::temp_dir, PathBuf::from);
    TmpDir(
        tempfile::Builder::new()
            .prefix(&format!("mpcp-pa-{name}-"))
            .tempdir_in(base)
            .expect("create a temporary directory"),
    )
}

impl TmpDir {
    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The directory's path, owned.
    pub fn to_path_buf(&self) -> PathBuf {
        self.0.path().to_path_buf()
    }
}

impl Deref for TmpDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for TmpDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<OsStr> for TmpDir {
    fn as_ref(&self) -> &OsStr {
        self.0.path().as_os_str()
    }
}

/// Every file below `dir`, as paths relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read a directory") {
            let p = e.expect("a directory entry").path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).expect("below the base").to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
