//! Signatures made inside a SoftHSM2 token verify in Node's built-in crypto exactly as the
//! MPCP reference SDK verifies them (`tests/interop/verify_vectors.mjs`, with its own
//! canonicaliser), for every algorithm; a tampered twin of each is refused by Node too.
//! Fails where `node` is not installed (scripts/ensure-deps.sh installs it).

use std::process::Command;

use crate::kit::child::isolated;
use crate::kit::hsm::dev_backend;
use mpcp_pa::canonical::{Domain, signing_digest};
use mpcp_pa::crypto::Alg;
use mpcp_pa::keys::{KeyBackend, KeyRole};
use mpcp_pa::signer::sign_artifact;
use serde_json::{Value, json};

fn grant(kid: &str, n: usize) -> Value {
    json!({
        "version": "1.0",
        "grantId": format!("hsm-node-{n}"),
        "policyHash": "a".repeat(64),
        "issuer": "pa.hsm.test",
        "issuerKeyId": kid,
        "subjectId": "vehicle-4711",
        "scope": "SESSION",
        "allowedRails": ["xrpl"],
        "issuedAt": "2026-06-01T00:00:00Z",
        "expiresAt": "2026-06-02T00:00:00Z",
        "authorizedGateway": "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b5",
        "velocityLimit": {"maxPayments": 10, "windowSeconds": 3600},
        "budgetMinor": "50000",
        "budgetCurrency": "XRP",
        "x-note": {"n": n, "unicode": "Zürich ✓"}
    })
}

#[test]
fn node_verifies_hsm_signatures() {
    // A missing node fails the test: scripts/ensure-deps.sh installs it, and a skipped check
    // would pass without checking anything.
    assert!(
        Command::new("node").arg("--version").output().is_ok(),
        "`node` is required (scripts/ensure-deps.sh installs it)"
    );
    isolated(module_path!(), "node_verifies_hsm_signatures", |dir| {
        let (hsm, _) = dev_backend(dir);
        let out = dir.join("vectors");
        std::fs::create_dir_all(out.join("artifacts")).unwrap();
        std::fs::create_dir_all(out.join("keys")).unwrap();
        let prefix = Domain::PolicyGrant.prefix("1.0").unwrap();
        let (mut keys, mut vectors) = (Vec::new(), Vec::new());
        for (i, alg) in Alg::ALL.into_iter().enumerate() {
            let kid = format!("hsm-{alg}");
            let k = hsm.generate(KeyRole::GrantSigning, alg, &kid).unwrap();
            let signer = hsm
                .signer(KeyRole::GrantSigning, alg, &k.object_id, &kid)
                .unwrap();
            keys.push(serde_json::to_value(k.public.to_jwk(&kid, true)).unwrap());
            for n in 0..3 {
                let signed =
                    sign_artifact(signer.as_ref(), Domain::PolicyGrant, "1.0", &grant(&kid, n))
                        .unwrap();
                let mut tampered = signed.clone();
                tampered["budgetMinor"] = json!("50001");
                for (id, art, valid) in [
                    (format!("{alg}-{n}"), signed, true),
                    (format!("{alg}-{n}-tampered"), tampered, false),
                ] {
                    let digest = signing_digest(Domain::PolicyGrant, "1.0", &art).unwrap();
                    let file = format!("artifacts/{id}.json");
                    std::fs::write(out.join(&file), art.to_string()).unwrap();
                    vectors.push(json!({
                        "id": id,
                        "artifact": file,
                        "domainPrefix": prefix,
                        "signedDigest": hex::encode(digest),
                        "signatureValid": valid,
                    }));
                }
            }
            assert_eq!(i + 1, keys.len());
        }
        std::fs::write(
            out.join("keys/jwks.json"),
            json!({"version": "1.0", "keys": keys}).to_string(),
        )
        .unwrap();
        std::fs::write(
            out.join("keys/root-jwks.json"),
            json!({"version": "1.0", "keys": []}).to_string(),
        )
        .unwrap();
        std::fs::write(
            out.join("manifest.json"),
            json!({"vectors": vectors}).to_string(),
        )
        .unwrap();

        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/interop/verify_vectors.mjs");
        let run = Command::new("node").arg(script).arg(&out).output().unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "node disagreed:\n{stdout}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            stdout.contains("18 vectors checked") && stdout.contains(", 0 disagreements"),
            "{stdout}"
        );
    });
}
