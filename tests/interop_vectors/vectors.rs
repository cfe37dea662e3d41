//! Conformance vectors: the spec's L0 digests, and the project's L2 manifest replayed through
//! the `mpcp-pa verify` binary from the files alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kit;
use mpcp_pa::canonical::{Domain, digest_with_prefix, parse_strict, signing_digest};
use serde_json::Value;

#[path = "../../examples/gen_vectors.rs"]
mod gen_vectors;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(p: &Path) -> Value {
    parse_strict(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

#[test]
fn l0_spec_digests_reproduce() {
    let dir = root().join("test-vectors/l0");
    let expected = read_json(&dir.join("expected-hashes.json"));
    let mut checked = 0;
    for (name, entry) in expected.as_object().unwrap() {
        let Some(prefix) = entry.get("prefix").and_then(Value::as_str) else {
            continue;
        };
        Domain::parse_prefix(prefix).unwrap();
        let input = read_json(&dir.join(entry["sourceFile"].as_str().unwrap()));
        let got = hex::encode(digest_with_prefix(prefix, &input).unwrap());
        assert_eq!(got, entry["sha256_hex"].as_str().unwrap(), "{name}");
        checked += 1;
    }
    assert_eq!(checked, 3);
}

#[test]
fn l2_manifest_replays_through_the_cli() {
    let dir = root().join("test-vectors/l2");
    let manifest = read_json(&dir.join("manifest.json"));
    let vectors = manifest["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 30, "manifest shrank");
    let bin = env!("CARGO_BIN_EXE_mpcp-pa");
    let mut codes = std::collections::BTreeSet::new();
    for v in vectors {
        let id = v["id"].as_str().unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("verify")
            .arg(dir.join(v["artifact"].as_str().unwrap()))
            .arg("--keys")
            .arg(dir.join(v["keys"].as_str().unwrap()))
            .arg("--at")
            .arg(v["at"].as_str().unwrap())
            .arg("--drift-seconds")
            .arg(v["driftSeconds"].as_u64().unwrap().to_string());
        if let Some(r) = v.get("root").and_then(Value::as_str) {
            cmd.arg("--root").arg(dir.join(r));
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout.lines().count(),
            1,
            "{id}: one verdict line, got {stdout:?}"
        );
        match v["expect"]["code"].as_str() {
            None => {
                assert!(out.status.success(), "{id}: expected valid, got {stdout}");
                assert!(stdout.starts_with("VALID "), "{id}: {stdout}");
            }
            Some(code) => {
                assert_eq!(out.status.code(), Some(1), "{id}: {stdout}");
                assert!(
                    stdout.starts_with(&format!("INVALID {code} ")),
                    "{id}: expected {code}, got {stdout}"
                );
                codes.insert(code.to_string());
            }
        }
        // The published digest is what the artifact hashes to under its domain.
        if let Some(d) = v.get("signedDigest").and_then(Value::as_str) {
            let (domain, version) =
                Domain::parse_prefix(v["domainPrefix"].as_str().unwrap()).unwrap();
            let art = read_json(&dir.join(v["artifact"].as_str().unwrap()));
            assert_eq!(
                hex::encode(signing_digest(domain, &version, &art).unwrap()),
                d,
                "{id}"
            );
        }
    }
    for required in [
        "POLICY_GRANT_SIGNATURE_INVALID",
        "KEY_REVOKED",
        "SIGNATURE_HIGH_S",
        "KEY_ALG_MISMATCH",
        "ARTIFACT_EXPIRED",
        "GRANT_NOT_CONFORMING",
        "ADDRESS_INVALID",
        "JSON_DUPLICATE_KEY",
    ] {
        assert!(codes.contains(required), "no vector exercises {required}");
    }
}

#[test]
fn committed_vectors_regenerate_byte_for_byte() {
    let tmp = kit::tmp::dir("vectors");
    gen_vectors::generate(&tmp);
    let committed = root().join("test-vectors/l2");
    let files = kit::tmp::files_under(&tmp);
    assert!(files.len() > 30);
    for rel in &files {
        let a = std::fs::read(tmp.join(rel)).unwrap();
        let b = std::fs::read(committed.join(rel)).unwrap_or_default();
        assert!(
            a == b,
            "test-vectors/l2/{} differs from the generator: run `cargo run --example gen_vectors`",
            rel.display()
        );
    }
    let committed_files = kit::tmp::files_under(&committed);
    assert_eq!(
        committed_files.len(),
        files.len(),
        "stray files in test-vectors/l2"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// `verify` applies version-gated deprecation: the valid ES256K vector is refused once a
/// policy deprecates ES256K before its issuedAt, and still accepted when the deprecation
/// takes effect after it.
#[test]
fn verify_cli_applies_algorithm_deprecation() {
    let dir = root().join("test-vectors/l2");
    let tmp = kit::tmp::dir("vectors");
    let policy = |effective: &str| {
        let p = tmp.path().join(format!("alg-{}.toml", &effective[..4]));
        std::fs::write(
            &p,
            format!(
                "implemented = \"1.0\"\n\
                 [[deprecations]]\nalgorithm = \"ES256K\"\ndeprecated_in = \"1.1\"\n\
                 effective = \"{effective}\"\n\
                 [versions.\"1.0\"]\nalgorithms = [\"EdDSA\", \"ES256K\", \"ES256\"]\n\
                 [versions.\"1.0\".roles]\ngrant-signing = [\"EdDSA\", \"ES256K\"]\n\
                 root = [\"EdDSA\", \"ES256K\", \"ES256\"]\naudit = [\"EdDSA\"]\n"
            ),
        )
        .unwrap();
        p
    };
    let run = |p: &Path| {
        Command::new(env!("CARGO_BIN_EXE_mpcp-pa"))
            .arg("verify")
            .arg(dir.join("artifacts/grant-es256k-valid.json"))
            .arg("--keys")
            .arg(dir.join("keys/jwks.json"))
            .arg("--at")
            .arg("2026-06-01T12:00:00Z")
            .arg("--algorithm-policy")
            .arg(p)
            .env_remove("MPCP_PA_ALGORITHM_POLICY")
            .output()
            .unwrap()
    };
    let before = run(&policy("2020-01-01T00:00:00Z"));
    let stdout = String::from_utf8_lossy(&before.stdout);
    assert_eq!(before.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with("INVALID ALGORITHM_DEPRECATED "),
        "{stdout}"
    );
    let after = run(&policy("2099-01-01T00:00:00Z"));
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stdout)
    );
}
