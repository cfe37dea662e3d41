//! `mpcp-pa keys ...` end to end through the binary: SoftHSM2 development tokens made by
//! `hsm init-dev`, the store and audit log in the data directory, key-set export checked by
//! `mpcp-pa verify`, and every key operation found in the audit log.

use crate::kit;
use std::path::Path;
use std::process::{Command, Output};

const ORIGIN: &str = "pa.test.example/audit";

fn mpcp(dir: &Path, args: &[&str], origin: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpcp-pa"));
    c.arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("SOFTHSM2_CONF")
        .env_remove("MPCP_PA_AUDIT_ORIGIN")
        .env_remove("MPCP_PA_ALGORITHM_POLICY")
        .env("USER", "tester");
    if origin {
        c.env("MPCP_PA_AUDIT_ORIGIN", ORIGIN);
    }
    c.output().expect("run mpcp-pa")
}

#[track_caller]
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = mpcp(dir, args, true);
    assert!(
        out.status.success(),
        "mpcp-pa {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[track_caller]
fn refused(dir: &Path, args: &[&str], code: &str) {
    let out = mpcp(dir, args, true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(
        stderr.contains(code),
        "{args:?}: expected {code}, got {stderr}"
    );
}

fn generated_kid(stdout: &str) -> String {
    stdout
        .strip_prefix("generated ")
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected output {stdout:?}"))
        .to_string()
}

#[test]
fn key_lifecycle_export_and_audit_through_the_binary() {
    let _gate = kit::gate::shared();
    let tmp = kit::tmp::dir("keys_cli");
    let dir = tmp.path();
    ok(dir, &["hsm", "init-dev"]);

    let root = generated_kid(&ok(
        dir,
        &["keys", "generate", "--role", "root", "--alg", "ES256"],
    ));
    // The log now exists under ORIGIN: another origin is refused and changes nothing, and
    // no origin at all means the existing one.
    let out = Command::new(env!("CARGO_BIN_EXE_mpcp-pa"))
        .arg("--data-dir")
        .arg(dir)
        .args(["keys", "generate", "--role", "root", "--alg", "EdDSA"])
        .env_remove("SOFTHSM2_CONF")
        .env("MPCP_PA_AUDIT_ORIGIN", "other.example/audit")
        .output()
        .expect("run mpcp-pa");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CONFIG_INVALID"));
    let listed = String::from_utf8(mpcp(dir, &["keys", "list"], false).stdout).unwrap();
    assert_eq!(listed.matches("root-").count(), 1, "{listed}");
    let grant = generated_kid(&ok(
        dir,
        &[
            "keys",
            "generate",
            "--role",
            "grant-signing",
            "--alg",
            "EdDSA",
        ],
    ));
    assert!(root.starts_with("root-es256-") && grant.starts_with("grant-signing-eddsa-"));
    refused(
        dir,
        &[
            "keys",
            "generate",
            "--role",
            "grant-signing",
            "--alg",
            "ES256",
        ],
        "ALGORITHM_UNSUPPORTED",
    );
    ok(dir, &["keys", "activate", &root]);
    ok(dir, &["keys", "activate", &grant]);
    let standby = generated_kid(&ok(
        dir,
        &[
            "keys",
            "generate",
            "--role",
            "grant-signing",
            "--alg",
            "ES256K",
        ],
    ));
    refused(dir, &["keys", "activate", &standby], "KEY_STATE_INVALID");

    // Export, then check it as a gateway pinning the root would.
    let site = dir.join("site");
    let root_file = dir.join("root-keys.json");
    ok(
        dir,
        &[
            "keys",
            "export",
            "--out",
            site.to_str().unwrap(),
            "--root-out",
            root_file.to_str().unwrap(),
        ],
    );
    let verdict = ok(
        dir,
        &[
            "verify",
            site.join("mpcp-keys.signed.json").to_str().unwrap(),
            "--keys",
            root_file.to_str().unwrap(),
        ],
    );
    assert!(
        verdict.starts_with(&format!("VALID SignedKeySet {root}")),
        "{verdict}"
    );
    let plain: serde_json::Value =
        serde_json::from_slice(&std::fs::read(site.join("mpcp-keys.json")).unwrap()).unwrap();
    assert_eq!(plain["keys"].as_array().unwrap().len(), 2);
    assert_eq!(plain["version"], "1.0");
    assert_eq!(
        plain.as_object().unwrap().len(),
        2,
        "only version and keys: {plain}"
    );

    // Rotation to the standby, then emergency revocation of the old key.
    let out = ok(dir, &["keys", "rotate", "--role", "grant-signing"]);
    assert!(
        out.contains(&format!("activated {standby}")) && out.contains(&format!("retired {grant}"))
    );
    ok(dir, &["keys", "revoke", &grant, "--reason", "drill"]);
    refused(
        dir,
        &["keys", "revoke", &grant, "--reason", "drill"],
        "KEY_REVOKED",
    );
    refused(
        dir,
        &["keys", "schedule-destroy", &standby],
        "KEY_STATE_INVALID",
    );
    ok(
        dir,
        &["keys", "schedule-destroy", &grant, "--wait-days", "0"],
    );
    assert_eq!(
        ok(dir, &["keys", "run-destructions"]).trim(),
        format!("destroyed {grant}")
    );
    refused(
        dir,
        &["keys", "cancel-destroy", &grant],
        "KEY_STATE_INVALID",
    );
    let listing = ok(dir, &["keys", "list"]);
    let line = listing.lines().find(|l| l.starts_with(&grant)).unwrap();
    assert!(
        line.contains("destroyed") && line.contains("inactive"),
        "{line}"
    );

    // Every operation is in the audit log, attributed to the CLI operator.
    let entries = ok(dir, &["audit", "entries"]);
    let actions: Vec<(String, String)> = entries
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                e["event"]["action"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["actor"]["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let count = |a: &str| actions.iter().filter(|(x, _)| x == a).count();
    assert_eq!(count("key_generated"), 3, "{entries}");
    assert_eq!(count("key_activated"), 3);
    assert_eq!(count("key_set_signed"), 1);
    assert_eq!(count("key_revoked"), 1);
    assert_eq!(count("key_destroy_scheduled"), 1);
    assert_eq!(count("key_destroyed"), 1);
    assert!(
        actions.iter().all(|(_, who)| who == "cli:tester"),
        "{actions:?}"
    );
}
