//! The `mpcp-pa` binary end to end: development tokens, keys and API tokens from the CLI,
//! `serve` over TLS with the generated development certificate, SIGTERM drains and stops it,
//! and the audit log holds startup, the requests' events and shutdown.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::kit;
use crate::kit::bin::{announced, client, json_post, sigterm, spawn_serve};
use serde_json::Value;

fn bin(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mpcp-pa"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout {}\nstderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_from_the_command_line() {
    let _gate = kit::gate::shared();
    let dir = kit::tmp::dir("api_serve");
    let data = dir.path();
    ok(&bin(data, &["hsm", "init-dev"]));
    for role in ["grant-signing", "root", "audit"] {
        ok(&bin(
            data,
            &["keys", "rotate", "--role", role, "--alg", "EdDSA"],
        ));
    }
    let officer = ok(&bin(data, &["tokens", "bootstrap"])).trim().to_string();
    assert!(officer.starts_with("mpcppa_"));
    let again = bin(data, &["tokens", "bootstrap"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(again.stdout.is_empty(), "no second secret");
    let issuer = ok(&bin(
        data,
        &["tokens", "create", "--name", "iss-1", "--role", "issuer"],
    ))
    .trim()
    .to_string();
    let listed = ok(&bin(data, &["tokens", "list"]));
    assert!(listed.contains("iss-1\tissuer") && listed.contains("security-officer"));
    for secret in [&officer, &issuer] {
        assert!(!listed.contains(secret.splitn(3, '_').nth(2).unwrap()));
    }
    let bad = bin(
        data,
        &["tokens", "create", "--name", "x", "--role", "admin"],
    );
    assert_eq!(bad.status.code(), Some(2));

    // Plain HTTP off loopback is refused before anything starts.
    let refused = bin(
        data,
        &["serve", "--insecure-http-loopback", "--listen", "0.0.0.0:0"],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("CONFIG_INVALID"));

    let (server, lines) = spawn_serve(data, &["--issuer", "pa.cli.test"]);
    let addr = announced(&lines, Duration::from_secs(60)).expect("server announced its address");
    let base = format!("https://{addr}");
    let c = client(data);

    assert_eq!(
        c.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The spec's key set needs no signature; the signed form is signed (and recorded) once.
    for path in [
        "/.well-known/mpcp-keys.json",
        "/.well-known/mpcp-keys.signed.json",
        "/.well-known/mpcp-keys.json",
    ] {
        let ks = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(ks.status(), 200, "{path}");
    }
    let r = json_post(
        &c,
        format!("{base}/v1/policies"),
        &issuer,
        r#"{"version":"1.0"}"#,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .get(format!("{base}/v1/keys"))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The pins printed by the CLI are those of the key the server presents.
    let pins: Value = serde_json::from_str(&ok(&bin(data, &["pins", "--json"]))).unwrap();
    assert!(pins["current"].is_string() && pins["next"].is_string());
    // The store is the running service's: token administration waits for it to stop.
    let locked = bin(data, &["tokens", "list"]);
    assert_eq!(locked.status.code(), Some(1));

    sigterm(&server.0);
    let mut server = server;
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = server.0.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(status.expect("server stopped on SIGTERM").success());

    let entries = ok(&bin(data, &["audit", "entries"]));
    let actions: Vec<String> = entries
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event"]["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let tail: Vec<&str> = actions
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        ["startup", "key_set_signed", "policy_stored", "shutdown"],
        "{actions:?}"
    );
    assert!(actions.iter().filter(|a| *a == "token_created").count() == 2);
}
