//! Independent checkers written in JavaScript (`tests/interop/*.mjs`), run with Node's
//! built-in crypto. A missing `node` fails the test: `scripts/ensure-deps.sh` installs it, and
//! a skipped check would pass without checking anything.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

/// Runs `tests/interop/<script>` with `args`; returns its stdout. Panics, with both of its
/// outputs, unless it exits 0.
pub fn run<I, S>(script: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    let out = Command::new("node")
        .arg(path)
        .args(args)
        .output()
        .expect("`node` is required (scripts/ensure-deps.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
