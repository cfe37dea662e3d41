//! Key discovery as a spec-following gateway sees it: the real `mpcp-pa` binary over TLS on
//! loopback, its data directory (SoftHSM2 tokens and sled store) on a tmpfs this test mounts,
//! and a resolver written in Node from key-resolution.md alone
//! (`tests/interop/resolve_grants.mjs`): it derives the key set URL from each grant's
//! `issuer`, fetches `/.well-known/mpcp-keys.json`, finds the grant's kid and verifies an
//! EdDSA and an ES256K grant with Node's crypto.
//!
//! The same resolver keeps getting 200 and the spec document through every server-side
//! failure: a deprecation of the root key's algorithm taking effect, the root key revoked,
//! the root key's token objects vanished (and restored: signing resumes without a restart),
//! the token directory unreachable, and the store's disk full. No public response names a
//! token label, an object id or a PKCS#11 code. Needs root (mount) and node.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::kit;
use crate::kit::bin::{client, grant_request, officer_token, serve_on_at, up_at};
use crate::kit::tmpfs::Tmpfs;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use serde_json::{Value, json};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Pa {
    data: PathBuf,
    base: String,
    http: reqwest::Client,
}

impl Pa {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.http.get(url),
            _ => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string()),
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        )
    }

    async fn ok(&self, path: &str, token: &str, body: Value) -> Value {
        let (status, v) = self.call("POST", path, Some(token), body).await;
        assert!((200..300).contains(&status), "POST {path}: {status} {v}");
        v
    }

    /// Runs the Node resolver on the grant files; returns grantId -> result.
    fn resolve(&self, grants: &[PathBuf]) -> Vec<(String, String)> {
        let ca = mpcp_pa::app::DataDir::new(&self.data).tls().cert;
        let stdout = kit::node::run(
            "resolve_grants.mjs",
            std::iter::once(ca.as_os_str()).chain(grants.iter().map(|g| g.as_os_str())),
        );
        stdout
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["grant"].as_str().unwrap().to_string(),
                    v["result"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Both grants resolve and verify, and the plain document is the spec's.
    async fn gateway_still_verifies(&self, grants: &[PathBuf], when: &str) {
        let got = self.resolve(grants);
        assert_eq!(
            got,
            vec![
                ("g-eddsa".to_string(), "VALID".to_string()),
                ("g-es256k".to_string(), "VALID".to_string())
            ],
            "{when}"
        );
        let (status, doc, _) = self.get("/.well-known/mpcp-keys.json").await;
        assert_eq!(status, 200, "{when}: {doc}");
        let members: Vec<&String> = doc.as_object().unwrap().keys().collect();
        assert_eq!(members, ["keys", "version"], "{when}");
    }
}

/// Asserts that a public response names no HSM internals.
fn no_internals(text: &str, object_ids: &[String]) {
    for needle in [
        "mpcp-root",
        "mpcp-grant-signing",
        "mpcp-audit",
        "CKO_",
        "CKR_",
        "C_",
    ] {
        assert!(
            !text.contains(needle),
            "{needle:?} in a public response: {text}"
        );
    }
    for id in object_ids {
        assert!(
            !text.contains(id.as_str()),
            "object id in a public response: {text}"
        );
    }
}

/// Waits until `f` returns true (polling), or panics after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The root token: (PKCS#11 handle, slot) from the data directory's SoftHSM2 configuration.
fn root_token(data: &Path) -> (Pkcs11, cryptoki::slot::Slot, AuthPin) {
    // The test runs in a process of its own (`kit::child::alone!`), which the library's own
    // once-per-process binding points at this data directory's configuration (no other
    // test's tokens are loaded here, and the variable is not set behind anyone's back).
    mpcp_pa::hsm::bind_softhsm2_conf(&data.join("softhsm2.conf")).unwrap();
    let p = Pkcs11::new(mpcp_pa::hsm::dev::SOFTHSM2_MODULE).unwrap();
    let _ = p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = p
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p.get_token_info(*s).unwrap().label() == "mpcp-root")
        .unwrap();
    let pin = std::fs::read_to_string(data.join("secrets/root.user.pin")).unwrap();
    (p, slot, AuthPin::new(pin.trim_end().to_string().into()))
}

/// The files of a token directory (path -> bytes).
fn snapshot_dir(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(dir).unwrap() {
        let d = d.unwrap().path();
        if d.is_dir() {
            for f in std::fs::read_dir(&d).unwrap() {
                let f = f.unwrap().path();
                out.push((f.clone(), std::fs::read(&f).unwrap()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_gateway_discovers_keys_through_every_server_side_failure() {
    kit::child::alone!("a_spec_gateway_discovers_keys_through_every_server_side_failure");
    let tmp = kit::tmp::dir("discovery");
    let mnt = Tmpfs::mount(&tmp.path().join("mnt"), "48m");
    let data = mnt.0.join("data");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let issuer = format!("https://localhost:{port}");

    // First start: tokens, keys and the first officer token.
    let (server, _addr, stdout, _) = up_at(&data, &listen, &["--issuer", &issuer]);
    let officer = officer_token(&stdout);
    let pa = Pa {
        data: data.clone(),
        base: format!("https://{listen}"),
        http: client(&data),
    };
    let issuer_tok = pa
        .ok(
            "/v1/tokens",
            &officer,
            json!({"name": "issuer-1", "role": "issuer"}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let ph = pa
        .ok(
            "/v1/policies",
            &issuer_tok,
            json!({"version": "1.0", "maxGrantLifetimeSeconds": 86400}),
        )
        .await["policyHash"]
        .as_str()
        .unwrap()
        .to_string();
    let expires =
        mpcp_pa::clock::format_rfc3339(time::OffsetDateTime::now_utc() + time::Duration::hours(12));
    let grant_req = |id: &str| grant_request(id, &ph, &expires);
    let mut grants = Vec::new();
    for (id, alg) in [("g-eddsa", None), ("g-es256k", Some("ES256K"))] {
        if let Some(alg) = alg {
            pa.ok(
                "/v1/keys/grant-signing/rotate",
                &officer,
                json!({"alg": alg}),
            )
            .await;
        }
        let g = pa.ok("/v1/grants", &issuer_tok, grant_req(id)).await;
        assert_eq!(g["issuer"], issuer.as_str());
        let file = tmp.path().join(format!("{id}.json"));
        std::fs::write(&file, g.to_string()).unwrap();
        grants.push(file);
    }
    pa.gateway_still_verifies(&grants, "healthy").await;
    let (status, signed, _) = pa.get("/.well-known/mpcp-keys.signed.json").await;
    assert_eq!(status, 200, "{signed}");
    assert_eq!(
        signed["keySet"],
        pa.get("/.well-known/mpcp-keys.json").await.1,
        "the signed form wraps exactly the plain document"
    );
    // The root moves to ES256, whose deprecation takes effect shortly after the restart.
    pa.ok("/v1/keys/root/rotate", &officer, json!({"alg": "ES256"}))
        .await;
    server.stop();

    let effective = time::OffsetDateTime::now_utc() + time::Duration::seconds(4);
    let policy = tmp.path().join("algorithms.toml");
    std::fs::write(
        &policy,
        format!(
            "implemented = \"1.0\"\n[[deprecations]]\nalgorithm = \"ES256\"\n\
             deprecated_in = \"1.1\"\neffective = \"{}\"\n\
             [versions.\"1.0\"]\nalgorithms = [\"EdDSA\", \"ES256K\", \"ES256\"]\n\
             [versions.\"1.0\".roles]\ngrant-signing = [\"EdDSA\", \"ES256K\"]\n\
             root = [\"EdDSA\", \"ES256K\", \"ES256\"]\naudit = [\"EdDSA\"]\n",
            mpcp_pa::clock::format_rfc3339(effective)
        ),
    )
    .unwrap();
    let (server, _) = serve_on_at(
        &data,
        &listen,
        &[
            "--issuer",
            &issuer,
            "--algorithm-policy",
            policy.to_str().unwrap(),
            "--rate-per-token",
            "0",
        ],
    );
    assert_eq!(pa.get("/.well-known/mpcp-keys.signed.json").await.0, 200);
    eventually(
        Duration::from_secs(20),
        "the deprecation to take effect",
        || async { pa.get("/.well-known/mpcp-keys.signed.json").await.0 == 503 },
    )
    .await;
    let (_, e, text) = pa.get("/.well-known/mpcp-keys.signed.json").await;
    assert_eq!(e["code"], "KEY_SET_UNAVAILABLE", "{e}");
    no_internals(&text, &[]);
    pa.gateway_still_verifies(&grants, "root algorithm deprecated")
        .await;

    // Root revocation: the signed form is unavailable (503, never 4xx), discovery is not.
    pa.ok("/v1/keys/root/rotate", &officer, json!({"alg": "EdDSA"}))
        .await;
    assert_eq!(pa.get("/.well-known/mpcp-keys.signed.json").await.0, 200);
    let (_, keys) = pa
        .call("GET", "/v1/keys", Some(&officer), Value::Null)
        .await;
    let records = keys["keys"].as_array().unwrap().clone();
    let root_of = |state: &str| {
        records
            .iter()
            .find(|k| k["role"] == "root" && k["state"] == state)
            .cloned()
            .unwrap()
    };
    let root = root_of("active");
    pa.ok(
        &format!("/v1/keys/{}/revoke", root["kid"].as_str().unwrap()),
        &officer,
        json!({"reason": "drill"}),
    )
    .await;
    let (status, e, text) = pa.get("/.well-known/mpcp-keys.signed.json").await;
    assert_eq!(
        (status, e["code"].as_str()),
        (503, Some("KEY_SET_UNAVAILABLE"))
    );
    no_internals(&text, &[]);
    pa.gateway_still_verifies(&grants, "root revoked").await;

    // A new root key, whose token objects then vanish behind the appliance's back.
    let rot = pa
        .ok("/v1/keys/root/rotate", &officer, json!({"alg": "EdDSA"}))
        .await;
    let root_oid = rot["activated"]["objectId"].as_str().unwrap().to_string();
    assert_eq!(pa.get("/.well-known/mpcp-keys.signed.json").await.0, 200);
    let tokens_dir = data.join("tokens");
    let backup = snapshot_dir(&tokens_dir);
    let (p11, slot, pin) = root_token(&data);
    {
        let s = p11.open_rw_session(slot).unwrap();
        s.login(UserType::User, Some(&pin)).unwrap();
        let id = hex::decode(&root_oid).unwrap();
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            for h in s
                .find_objects(&[Attribute::Class(class), Attribute::Id(id.clone())])
                .unwrap()
            {
                s.destroy_object(h).unwrap();
            }
        }
    }
    // A registry change makes the signed form due for a new signature, which cannot happen.
    pa.ok(
        "/v1/keys/grant-signing/rotate",
        &officer,
        json!({"alg": "EdDSA"}),
    )
    .await;
    let ids = [root_oid.clone()];
    let (status, e, text) = pa.get("/.well-known/mpcp-keys.signed.json").await;
    assert_eq!(status, 503, "{e}");
    assert_eq!(e["code"], "KEY_MATERIAL_MISSING", "{e}");
    no_internals(&text, &ids);
    let (status, e, text) = pa.get("/readyz").await;
    assert_eq!(
        (status, e["code"].as_str()),
        (503, Some("NOT_READY")),
        "{e}"
    );
    assert!(text.contains("root key: KEY_MATERIAL_MISSING"), "{text}");
    no_internals(&text, &ids);
    pa.gateway_still_verifies(&grants, "root key objects gone")
        .await;

    // Restored from the backup: readiness and signing come back without a restart.
    for (path, bytes) in &backup {
        if !path.exists() {
            std::fs::write(path, bytes).unwrap();
        }
    }
    {
        // Any change through another session makes SoftHSM2 re-read the token directory.
        let s = p11.open_rw_session(slot).unwrap();
        s.login(UserType::User, Some(&pin)).unwrap();
        let h = s
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Label(b"restore-marker".to_vec()),
            ])
            .unwrap();
        s.destroy_object(h).unwrap();
    }
    eventually(
        Duration::from_secs(10),
        "readyz after the restore",
        || async { pa.get("/readyz").await.0 == 200 },
    )
    .await;
    let (status, signed, _) = pa.get("/.well-known/mpcp-keys.signed.json").await;
    assert_eq!(status, 200, "{signed}");
    assert_eq!(signed["signerKeyId"], rot["activated"]["kid"]);

    // The token directory unreachable: discovery does not touch a token.
    let moved = data.join("tokens.moved");
    std::fs::rename(&tokens_dir, &moved).unwrap();
    pa.gateway_still_verifies(&grants, "token directory unreachable")
        .await;
    std::fs::rename(&moved, &tokens_dir).unwrap();

    // The disk full: changes fail closed, discovery answers.
    let filler = mnt.0.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=64"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    // sled has some space allocated already: write until the disk refuses.
    let mut refused = None;
    for i in 0..5000 {
        let (status, e) = pa
            .call(
                "POST",
                "/v1/grants",
                Some(&issuer_tok),
                grant_req(&format!("g-fill-{i}")),
            )
            .await;
        if status != 201 {
            refused = Some((status, e));
            break;
        }
    }
    let (status, e) = refused.expect("the full disk never refused a write");
    assert_eq!(status, 503, "a grant on a full disk: {e}");
    pa.gateway_still_verifies(&grants, "disk full").await;
    std::fs::remove_file(&filler).unwrap();
    // Space freed: the appliance recovers by itself (tests/disk_full.rs) and stops cleanly.
    server.stop();
}
