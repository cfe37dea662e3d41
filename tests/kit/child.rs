//! A test re-run in a child process of its own. PKCS#11 library state and `SOFTHSM2_CONF`
//! are per process, so a test that needs its own SoftHSM2 tokens (or binds the process to a
//! data directory's configuration) runs in a fresh process: the parent re-executes the
//! current test binary filtered to exactly that test (`--exact NAME`), with an environment
//! variable that tells the child it is the one to do the work, and checks that the child
//! really ran it and passed.
//!
//! The parent holds the [`gate`](super::gate) meanwhile: shared ([`isolated`],
//! [`own_process!`]) or exclusive ([`isolated_alone`], [`alone!`]: timing-sensitive tests,
//! which must not share the machine with the rest of the binary).

use std::path::Path;
use std::process::Command;

use super::{gate, tmp};

const CHILD_VAR: &str = "MPCP_PA_KIT_CHILD";

/// How the parent runs the child: alongside other tests, or while no other gated test runs.
#[derive(Clone, Copy)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// libtest's name of the test `name` in the module `module` (a `module_path!()`: the crate's
/// name, which libtest leaves out, then the module path).
pub fn test_name(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_, path)) => format!("{path}::{name}"),
        None => name.to_string(),
    }
}

/// `true` in the child process that runs the test `name` of `module`, which then runs the
/// test's body; in the parent, runs that child in `mode`, asserts that it ran the test and
/// passed, and returns `false` (the test then returns).
pub fn in_child(module: &str, name: &str, mode: Mode) -> bool {
    let full = test_name(module, name);
    if std::env::var(CHILD_VAR).as_deref() == Ok(full.as_str()) {
        return true;
    }
    let _gate = match mode {
        Mode::Shared => (Some(gate::shared()), None),
        Mode::Exclusive => (None, Some(gate::exclusive())),
    };
    // Everything the child puts in temporary directories, removed once it has exited.
    let scratch = tmp::dir("child");
    let exe = std::env::current_exe().expect("current test binary");
    let out = Command::new(exe)
        .args([full.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, &full)
        .env(tmp::BASE_VAR, scratch.path())
        .env_remove("SOFTHSM2_CONF")
        .output()
        .expect("spawn child test process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child test {full} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    false
}

/// Runs `body` with a fresh temporary directory in a child process of its own. `module` is
/// the caller's `module_path!()`, `name` the test function's name.
pub fn isolated(module: &str, name: &str, body: impl FnOnce(&Path)) {
    isolated_in(module, name, Mode::Shared, body)
}

/// [`isolated`], while no other gated test of the binary runs (timing-sensitive tests).
pub fn isolated_alone(module: &str, name: &str, body: impl FnOnce(&Path)) {
    isolated_in(module, name, Mode::Exclusive, body)
}

fn isolated_in(module: &str, name: &str, mode: Mode, body: impl FnOnce(&Path)) {
    if in_child(module, name, mode) {
        let dir = tmp::dir(name);
        body(dir.path());
    }
}

/// `own_process!("NAME")` as the first statement of the test `NAME`: the rest of the test
/// runs in a child process of its own (alongside other tests); the parent only checks it.
#[allow(unused_macros)] // like `dead_code` for the kit: not every binary uses it
macro_rules! own_process {
    ($name:literal) => {
        if !$crate::kit::child::in_child(module_path!(), $name, $crate::kit::child::Mode::Shared) {
            return;
        }
    };
}

/// `alone!("NAME")`: [`own_process!`], while no other gated test of the binary runs.
#[allow(unused_macros)]
macro_rules! alone {
    ($name:literal) => {
        if !$crate::kit::child::in_child(module_path!(), $name, $crate::kit::child::Mode::Exclusive)
        {
            return;
        }
    };
}

#[allow(unused_imports)]
pub(crate) use {alone, own_process};
