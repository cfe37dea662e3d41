//! `mpcp-pa up`, the README's run command, on an empty data directory: it creates the
//! development tokens, one active key per role and the first security-officer token (shown
//! once), serves over TLS, and a second start changes nothing and shows no secret again.
//! The officer then creates an issuer token over the API and a grant is issued and verified
//! against the served key set.

use std::process::Command;

use crate::kit;
use crate::kit::bin::{client, json_post, up};
use mpcp_pa::clock::SystemClock;
use mpcp_pa::verify::Verifier;
use serde_json::{Value, json};

async fn post(c: &reqwest::Client, url: String, token: &str, body: &Value) -> (u16, Value) {
    let r = json_post(c, url, token, body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_creates_the_embedded_default_once_and_serves() {
    let _gate = kit::gate::shared();
    let dir = kit::tmp::dir("api_up");
    let data = dir.path().join("appliance");
    let (server, addr, stdout, seen) = up(&data, &[]);
    let officer = stdout.trim().to_string();
    assert!(officer.starts_with("mpcppa_"), "{stdout:?} {seen:#?}");
    let said = seen.join("\n");
    for role in ["grant-signing", "root", "audit", "receipt-signing"] {
        assert!(
            said.contains(&format!("generated and activated {role} key")),
            "{said}"
        );
    }
    assert!(!said.contains(&officer), "secret on stderr");
    // The default issuer names no place a gateway can fetch keys from: said at start.
    assert!(
        said.contains(
            "warning: gateways derive https://mpcp-pa.local/.well-known/mpcp-keys.json from \
             issuer \"mpcp-pa.local\", which they cannot fetch"
        ),
        "{said}"
    );

    let base = format!("https://{addr}");
    let c = client(&data);
    assert_eq!(
        c.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (s, created) = post(
        &c,
        format!("{base}/v1/tokens"),
        &officer,
        &json!({"name": "issuer-1", "role": "issuer"}),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let issuer = created["token"].as_str().unwrap().to_string();

    let (s, policy) = post(
        &c,
        format!("{base}/v1/policies"),
        &issuer,
        &json!({"version": "1.0"}),
    )
    .await;
    assert_eq!(s, 201, "{policy}");
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let grant_req = json!({
        "version": "1.0",
        "policyHash": policy["policyHash"],
        "subjectId": "agent-7",
        "scope": "SESSION",
        "allowedRails": ["xrpl"],
        "budgetMinor": "50000",
        "budgetCurrency": "XRP",
        "authorizedGateway": "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b5",
        "velocityLimit": {"maxPayments": 10, "windowSeconds": 3600},
        "expiresAt": fmt(now + time::Duration::hours(1)),
    });
    let (s, grant) = post(&c, format!("{base}/v1/grants"), &issuer, &grant_req).await;
    assert_eq!(s, 201, "{grant}");
    let keys: Value = serde_json::from_slice(
        &c.get(format!("{base}/.well-known/mpcp-keys.json"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let verifier = Verifier::new(std::sync::Arc::new(SystemClock));
    // The key set as published: the spec's plain document (the signed form is checked in
    // tests/api_signing.rs).
    let source = verifier.key_source(&keys, None).unwrap();
    let verified = verifier.verify(&grant, &source).unwrap();
    assert!(
        verified.kid.starts_with("grant-signing-"),
        "{}",
        verified.kid
    );
    server.stop();

    // A second start creates nothing and shows no secret.
    let (server, _addr, stdout, seen) = up(&data, &[]);
    assert!(stdout.trim().is_empty(), "secret shown again: {stdout:?}");
    assert!(
        !seen.iter().any(|l| l.starts_with("first use:")),
        "{seen:#?}"
    );
    server.stop();

    // The audit log holds it all, and no secret.
    let all = Command::new(env!("CARGO_BIN_EXE_mpcp-pa"))
        .arg("--data-dir")
        .arg(&data)
        .args(["audit", "entries"])
        .output()
        .unwrap();
    let text = String::from_utf8(all.stdout).unwrap();
    for action in [
        "key_generated",
        "token_created",
        "grant_issued",
        "startup",
        "shutdown",
    ] {
        assert!(
            text.contains(&format!("\"{action}\"")),
            "no {action}: {text}"
        );
    }
    assert!(
        !text.contains(&officer[10..]),
        "token secret in the audit log"
    );
}

/// Every directory under the data dir that is open to group or others, and every file that
/// is, with its mode.
fn loose_modes(root: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
        if !meta.file_type().is_symlink() && mode != want {
            out.push(format!("{} {mode:o}", p.display()));
        }
    }
    out
}

/// After `up`, every file under the data dir is 0600 and every directory 0700 (the store's,
/// the TLS material's, the development tokens'). A data dir or file opened to group or
/// others is made private again at the next start, which names the path it repaired.
#[test]
fn the_data_dir_is_private_and_a_loose_one_is_repaired_at_start() {
    let _gate = kit::gate::shared();
    use std::os::unix::fs::PermissionsExt;
    let dir = kit::tmp::dir("api_up");
    let data = dir.path().join("appliance");
    let (server, _addr, _stdout, seen) = up(&data, &[]);
    server.stop();
    let loose = loose_modes(&data);
    assert!(loose.is_empty(), "not private: {loose:#?}\n{seen:#?}");

    let opened = [
        (data.clone(), 0o755),
        (data.join("store"), 0o750),
        (data.join("store").join("conf"), 0o644),
    ];
    for (path, mode) in &opened {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let (server, _addr, _stdout, seen) = up(&data, &[]);
    server.stop();
    for (path, mode) in &opened {
        let said = format!(
            "warning: {} was open to group or others (mode {mode:03o}); made it private",
            path.display()
        );
        assert!(seen.contains(&said), "{said:?} not in {seen:#?}");
    }
    let loose = loose_modes(&data);
    assert!(loose.is_empty(), "not repaired: {loose:#?}");
}
