//! Interoperability: the project's signed vectors verify with Node's built-in crypto exactly as
//! the MPCP reference SDK verifies (`crypto.verify(null, digest, jwkKey, sig)`), with the digest
//! recomputed by an independent JavaScript canonicaliser. Fails where `node` is not installed.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn node_crypto_accepts_what_we_sign() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // A missing node fails the test: scripts/ensure-deps.sh installs it, and a skipped check
    // would pass without checking anything.
    assert!(
        Command::new("node").arg("--version").output().is_ok(),
        "`node` is required (scripts/ensure-deps.sh installs it)"
    );
    let out = Command::new("node")
        .arg(root.join("tests/interop/verify_vectors.mjs"))
        .arg(root.join("test-vectors/l2"))
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node disagreed with the manifest:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(", 0 disagreements"), "{stdout}");
}
