//! The XRPL Foundation's own clients as checkers: `tests/interop/xrpl_check.mjs` decodes each
//! blob with `ripple-binary-codec`, verifies its signature with `ripple-keypairs`, derives the
//! account from its key and re-encodes it (`scripts/ensure-deps.sh` installs the packages; a
//! missing one fails the test).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

/// Ripple epoch offset (seconds from the Unix epoch to 2000-01-01).
pub const RIPPLE_EPOCH: i64 = 946_684_800;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// Checks every blob (uppercase hex) with the npm codec; one result per blob, in order:
/// `{ok, tx, hash, signatureValid, accountMatchesKey, canonical, signingPubKey}`.
pub fn check_blobs(blobs: &[String]) -> Vec<Value> {
    let mut child = Command::new("node")
        .arg(script("xrpl_check.mjs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`node` is required (scripts/ensure-deps.sh installs it)");
    {
        let mut stdin = child.stdin.take().unwrap();
        for b in blobs {
            writeln!(stdin, "{}", json!({ "blob": b })).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "xrpl_check.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), blobs.len(), "one result per blob");
    lines
}

/// Whether the npm codec accepts `result` as a valid transaction of its own signer: it
/// decodes, re-encodes to the same bytes, its signature verifies and its account is its key's.
pub fn valid(result: &Value) -> bool {
    result["ok"] == true
        && result["signatureValid"] == true
        && result["accountMatchesKey"] == true
        && result["canonical"] == true
}

/// `blob` with the byte at `index` flipped (bits inverted), as uppercase hex.
pub fn flip_byte(blob: &str, index: usize) -> String {
    let mut bytes = hex::decode(blob).unwrap();
    bytes[index] ^= 0xFF;
    hex::encode_upper(bytes)
}

/// Uppercase hex of `s`'s UTF-8 bytes (a CredentialType).
pub fn hex_of(s: &str) -> String {
    hex::encode_upper(s.as_bytes())
}
