//! The appliance's few direct calls into the operating system. It is the one module allowed
//! `unsafe` (the crate denies it everywhere else): each call is small, takes no pointer from
//! its caller, and states why it is sound.

use std::ffi::OsStr;
use std::path::Path;

/// Sets the process umask to 077, so that every file and directory created afterwards is
/// open to its owner only.
pub fn set_private_umask() {
    // SAFETY: umask only swaps the process's file-mode mask; it takes no pointers.
    unsafe {
        libc::umask(0o077);
    }
}

/// Free bytes for unprivileged writers on the file system holding `path` (`statvfs`), or
/// `None` when it cannot be asked.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Allocates the blocks of `file` from `offset` for `len` bytes without changing its size
/// (`fallocate` with `FALLOC_FL_KEEP_SIZE`), so that later writes into that range find their
/// blocks already taken and cannot meet ENOSPC.
pub fn preallocate(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::ErrorKind::InvalidInput.into());
    };
    // SAFETY: fallocate takes a file descriptor that `file` keeps open for the call, and
    // integers; no pointers.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets an environment variable that a PKCS#11 module reads inside `C_Initialize`. Sound
/// only as the HSM layer uses it: once per process, under its own lock, before the module
/// that reads it is initialised.
pub(crate) fn set_module_env(key: &str, value: &OsStr) {
    // SAFETY: std serialises its own environment accesses; the only foreign reader of this
    // variable is the PKCS#11 module inside C_Initialize, which runs after this returns.
    unsafe { std::env::set_var(key, value) };
}
