//! Interoperability: the project's signed vectors verify with Node's built-in crypto exactly as
//! the MPCP reference SDK verifies (`crypto.verify(null, digest, jwkKey, sig)`), with the digest
//! recomputed by an independent JavaScript canonicaliser. Fails where `node` is not installed.

use std::path::PathBuf;

use crate::kit;

#[test]
fn node_crypto_accepts_what_we_sign() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let stdout = kit::node::run("verify_vectors.mjs", [root.join("test-vectors/l2")]);
    assert!(stdout.contains(", 0 disagreements"), "{stdout}");
}
