//! The one temporary-directory scheme of the tests: a fresh directory under the system's
//! temporary directory, named after its user (`mpcp-pa-NAME-XXXXXX`, so a leftover one tells
//! which test it belongs to) and removed when dropped. Short paths, so Unix sockets fit.

use std::ffi::OsStr;
use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A temporary directory, removed (with its contents) on drop. Dereferences to its path.
pub struct TmpDir(tempfile::TempDir);

/// A fresh, empty temporary directory for `name` (a test or file name).
pub fn dir(name: &str) -> TmpDir {
    TmpDir(
        tempfile::Builder::new()
            .prefix(&format!("mpcp-pa-{name}-"))
            .tempdir()
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
