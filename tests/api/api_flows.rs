//! End-to-end key lifecycle flows through the running service (SoftHSM2 keys, sled, TLS),
//! checked by the offline verifier (the library and the `mpcp-pa verify` command) against what
//! the service publishes: the signed key set at `/.well-known/mpcp-keys.json` and trust
//! bundles it signs with the root key.
//!
//! What tests/api_signing.rs proves already (a grant verifying against the served key set,
//! idempotent replay and conflict, revoked grants in `revokedGrantIds`, rotation changing the
//! published set) is not repeated; these flows follow grants across key rotation and key
//! revocation.

use crate::kit;
use mpcp_pa::api::artifacts::trees;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use crate::kit::api::{Harness, assert_error};
use mpcp_pa::ErrorCode;
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::clock::{SystemClock, format_rfc3339};
use mpcp_pa::events::Event;
use mpcp_pa::jwk::KeySet;
use mpcp_pa::keys::keyset::build_root_key_set;
use mpcp_pa::verify::{KeySource, Verifier};
use serde_json::{Value, json};

const GATEWAY: &str = "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b5";

fn in_secs(s: i64) -> String {
    format_rfc3339(time::OffsetDateTime::now_utc() + time::Duration::seconds(s))
}

fn verifier() -> Verifier {
    Verifier::new(Arc::new(SystemClock))
}

/// The root public keys, as distributed out of band.
fn root_keys(h: &Harness) -> KeySet {
    build_root_key_set(h.registry.as_ref()).unwrap()
}

struct Flow {
    h: Harness,
    issuer: String,
    officer: String,
    policy_hash: String,
}

impl Flow {
    async fn start() -> Flow {
        let h = Harness::start(Limits::default()).await;
        let issuer = h.token("issuer-1", ApiRole::Issuer);
        let officer = h.token("officer-1", ApiRole::SecurityOfficer);
        let (status, p) = h
            .post(
                "/v1/policies",
                Some(&issuer),
                r#"{"version":"1.0","maxGrantLifetimeSeconds":7200}"#,
            )
            .await;
        assert_eq!(status, 201, "{p}");
        let policy_hash = p["policyHash"].as_str().unwrap().to_string();
        Flow {
            h,
            issuer,
            officer,
            policy_hash,
        }
    }

    fn grant_body(&self, id: &str) -> Value {
        json!({
            "version": "1.0",
            "grantId": id,
            "policyHash": self.policy_hash,
            "subjectId": "vehicle-4711",
            "scope": "SESSION",
            "allowedRails": ["xrpl"],
            "expiresAt": in_secs(3600),
            "authorizedGateway": GATEWAY,
            "velocityLimit": {"maxPayments": 10, "windowSeconds": 3600},
            "budgetMinor": "50000",
            "budgetCurrency": "XRP"
        })
    }

    async fn issue_grant(&self, id: &str) -> Value {
        let (status, g) = self
            .h
            .post(
                "/v1/grants",
                Some(&self.issuer),
                &self.grant_body(id).to_string(),
            )
            .await;
        assert_eq!(status, 201, "{g}");
        g
    }

    /// The served key set, fetched now and checked against the root keys.
    async fn fetched_keys(&self) -> KeySet {
        let (status, signed) = self.h.get("/.well-known/mpcp-keys.signed.json", None).await;
        assert_eq!(status, 200, "{signed}");
        match verifier()
            .key_source(&signed, Some(&root_keys(&self.h)))
            .unwrap()
        {
            KeySource::Jwks(set) => set,
            KeySource::Bundle(_) => unreachable!("a key set is not a bundle"),
        }
    }

    async fn rotate(&self, body: &str) -> (String, String) {
        let (status, rot) = self
            .h
            .post("/v1/keys/grant-signing/rotate", Some(&self.officer), body)
            .await;
        assert_eq!(status, 200, "{rot}");
        (
            rot["retired"]["kid"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            rot["activated"]["kid"].as_str().unwrap().to_string(),
        )
    }

    /// Issues a trust bundle naming the PA with `keys` (JWK values).
    async fn bundle(&self, keys: &[Value]) -> (u16, Value) {
        let body = json!({
            "category": "parking",
            "approvedIssuers": ["pa.test"],
            "issuers": [{"issuer": "pa.test", "keys": keys}],
            "expiresAt": in_secs(6 * 3600)
        });
        self.h
            .post("/v1/trust-bundles", Some(&self.officer), &body.to_string())
            .await
    }

    /// A verified bundle as a key source, as an offline verifier builds it.
    fn through(&self, bundle: &Value) -> KeySource {
        verifier()
            .key_source(bundle, Some(&root_keys(&self.h)))
            .unwrap()
    }
}

fn kid_of(grant: &Value) -> &str {
    grant["issuerKeyId"].as_str().unwrap()
}

fn published<'a>(set: &'a KeySet, kid: &str) -> Option<&'a mpcp_pa::jwk::Jwk> {
    set.keys.iter().find(|k| k.kid == kid)
}

fn jwk_values(set: &KeySet, keep: impl Fn(&mpcp_pa::jwk::Jwk) -> bool) -> Vec<Value> {
    set.keys
        .iter()
        .filter(|k| keep(k))
        .map(|k| serde_json::to_value(k).unwrap())
        .collect()
}

/// Runs `mpcp-pa verify` on files written to `dir`; returns (success, stdout + stderr).
fn cli_verify(dir: &Path, artifact: &Value, keys: &Value, root: &KeySet) -> (bool, String) {
    let write = |name: &str, v: &Value| {
        let p = dir.join(name);
        std::fs::write(&p, serde_json::to_vec(v).unwrap()).unwrap();
        p
    };
    let a = write("artifact.json", artifact);
    let k = write("keys.json", keys);
    let r = write("root.json", &serde_json::to_value(root).unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_mpcp-pa"))
        .arg("verify")
        .arg(&a)
        .arg("--keys")
        .arg(&k)
        .arg("--root")
        .arg(&r)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_old_grants_verifiable_and_new_grants_use_the_new_key() {
    kit::child::own_process!("rotation_keeps_old_grants_verifiable_and_new_grants_use_the_new_key");
    let f = Flow::start().await;
    let old = f.issue_grant("g-before").await;
    let old_kid = kid_of(&old).to_string();
    let replay_body = f.grant_body("g-replayed").to_string();
    let first =
        f.h.client
            .post(f.h.url("/v1/grants"))
            .bearer_auth(&f.issuer)
            .header("content-type", "application/json")
            .header("idempotency-key", "k-across-rotation")
            .body(replay_body.clone())
            .send()
            .await
            .unwrap();
    assert_eq!(first.status(), 201);
    let first_bytes = first.bytes().await.unwrap();

    let (retired, new_kid) = f.rotate("{}").await;
    assert_eq!(retired, old_kid);
    assert_ne!(new_kid, old_kid);

    // The key set fetched after the rotation lists both keys active; the old grant verifies.
    let after = f.fetched_keys().await;
    assert_eq!(published(&after, &old_kid).unwrap().active, Some(true));
    assert_eq!(published(&after, &new_kid).unwrap().active, Some(true));
    let keys = KeySource::Jwks(after.clone());
    assert_eq!(verifier().verify(&old, &keys).unwrap().id, "g-before");

    // New grants carry the new kid, verify, and are audited under it.
    let new = f.issue_grant("g-after").await;
    assert_eq!(kid_of(&new), new_kid);
    verifier().verify(&new, &keys).unwrap();
    let audited: Vec<_> =
        f.h.events()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::GrantIssued {
                    grant_id,
                    issuer_key_id,
                    ..
                } => Some((grant_id, issuer_key_id)),
                _ => None,
            })
            .collect();
    assert!(audited.contains(&("g-before".to_string(), old_kid.clone())));
    assert!(audited.contains(&("g-after".to_string(), new_kid.clone())));

    // A retry of a request answered before the rotation replays that answer (old kid, same
    // bytes) instead of signing again with the new key.
    let again =
        f.h.client
            .post(f.h.url("/v1/grants"))
            .bearer_auth(&f.issuer)
            .header("content-type", "application/json")
            .header("idempotency-key", "k-across-rotation")
            .body(replay_body)
            .send()
            .await
            .unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.bytes().await.unwrap(), first_bytes);
    let replayed: Value = serde_json::from_slice(&first_bytes).unwrap();
    assert_eq!(kid_of(&replayed), old_kid);
    assert_eq!(audited.iter().filter(|(g, _)| g == "g-replayed").count(), 1);

    // A rotation to another algorithm: new grants follow it; earlier ones still verify.
    let (retired, es_kid) = f.rotate(r#"{"alg":"ES256K"}"#).await;
    assert_eq!(retired, new_kid);
    let es = f.issue_grant("g-es256k").await;
    assert_eq!(kid_of(&es), es_kid);
    let latest = f.fetched_keys().await;
    assert_eq!(
        published(&latest, &es_kid).unwrap().alg.as_deref(),
        Some("ES256K")
    );
    let keys = KeySource::Jwks(latest.clone());
    for g in [&old, &new, &es] {
        verifier().verify(g, &keys).unwrap();
    }

    // A trust bundle with every published key verifies each grant offline: in the library
    // and with `mpcp-pa verify` on files.
    let (status, bundle) = f.bundle(&jwk_values(&latest, |_| true)).await;
    assert_eq!(status, 201, "{bundle}");
    let source = f.through(&bundle);
    let root = root_keys(&f.h);
    for g in [&old, &new, &es] {
        verifier().verify(g, &source).unwrap();
        let (ok, out) = cli_verify(f.h.dir.path(), g, &bundle, &root);
        assert!(ok, "mpcp-pa verify {}: {out}", g["grantId"]);
    }
    // The offline path refuses what it should: a bundle whose signature does not hold.
    let mut tampered = bundle.clone();
    tampered["category"] = json!("fuel");
    let (ok, out) = cli_verify(f.h.dir.path(), &old, &tampered, &root);
    assert!(!ok, "a tampered bundle must not verify: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_revocation_reaches_the_key_set_and_the_next_bundle() {
    kit::child::own_process!("key_revocation_reaches_the_key_set_and_the_next_bundle");
    let f = Flow::start().await;
    let old = f.issue_grant("g-old-key").await;
    let old_kid = kid_of(&old).to_string();
    let (_, new_kid) = f.rotate("{}").await;
    let new = f.issue_grant("g-new-key").await;
    assert_eq!(kid_of(&new), new_kid);

    // Before the revocation a bundle carries both keys and vouches for both grants.
    let before = f.fetched_keys().await;
    let (status, bundle_before) = f.bundle(&jwk_values(&before, |_| true)).await;
    assert_eq!(status, 201, "{bundle_before}");
    verifier().verify(&old, &f.through(&bundle_before)).unwrap();

    let path = format!("/v1/keys/{old_kid}/revoke");
    let (status, rev) =
        f.h.post(&path, Some(&f.officer), r#"{"reason":"compromised"}"#)
            .await;
    assert_eq!(status, 200, "{rev}");
    assert_eq!(rev["key"]["state"], "revoked");

    // The key set marks it active:false and keeps listing it; its grants no longer verify.
    let after = f.fetched_keys().await;
    assert_eq!(published(&after, &old_kid).unwrap().active, Some(false));
    assert_eq!(published(&after, &new_kid).unwrap().active, Some(true));
    let keys = KeySource::Jwks(after.clone());
    assert_eq!(
        verifier().verify(&old, &keys).unwrap_err().code,
        ErrorCode::KeyRevoked
    );
    verifier().verify(&new, &keys).unwrap();
    let (_, listed) = f.h.get("/v1/keys", Some(&f.officer)).await;
    let state = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == old_kid.as_str())
        .map(|k| k["state"].clone());
    assert_eq!(state, Some(json!("revoked")), "revoked keys stay listed");

    // The next bundle may not embed the revoked key, neither as published nor claimed active.
    let as_published = jwk_values(&after, |_| true);
    let e = f.bundle(&as_published).await;
    assert_error(&e, 400, "KEY_REVOKED");
    let claimed: Vec<Value> = as_published
        .iter()
        .cloned()
        .map(|mut k| {
            k["active"] = json!(true);
            k
        })
        .collect();
    assert_error(&f.bundle(&claimed).await, 400, "KEY_REVOKED");
    assert_eq!(
        f.h.state.artifacts().count(trees::BUNDLES).unwrap(),
        1,
        "no bundle stored"
    );

    // Built from the active keys, it omits the revoked key: the old grant no longer verifies
    // through it, the new one does.
    let (status, bundle) = f.bundle(&jwk_values(&after, |k| k.is_active())).await;
    assert_eq!(status, 201, "{bundle}");
    let kids: Vec<&str> = bundle["issuers"][0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [new_kid.as_str()]);
    let source = f.through(&bundle);
    assert_eq!(
        verifier().verify(&old, &source).unwrap_err().code,
        ErrorCode::KeyNotFound
    );
    verifier().verify(&new, &source).unwrap();
    let root = root_keys(&f.h);
    let (ok, out) = cli_verify(f.h.dir.path(), &old, &bundle, &root);
    assert!(!ok, "old grant through the new bundle: {out}");
    let (ok, out) = cli_verify(f.h.dir.path(), &new, &bundle, &root);
    assert!(ok, "new grant through the new bundle: {out}");

    // Emergency revocation of the active key: nothing is signed until a key is rotated in.
    let path = format!("/v1/keys/{new_kid}/revoke");
    let (status, _) =
        f.h.post(&path, Some(&f.officer), r#"{"reason":"compromised too"}"#)
            .await;
    assert_eq!(status, 200);
    let grants_before = f.h.state.artifacts().count(trees::GRANTS).unwrap();
    let (status, body) =
        f.h.post(
            "/v1/grants",
            Some(&f.issuer),
            &f.grant_body("g-no-key").to_string(),
        )
        .await;
    assert_error(&(status, body), 404, "KEY_NOT_FOUND");
    assert_eq!(
        f.h.state.artifacts().count(trees::GRANTS).unwrap(),
        grants_before
    );
    let (_, fresh) = f.rotate(r#"{"alg":"EdDSA"}"#).await;
    let g = f.issue_grant("g-fresh-key").await;
    assert_eq!(kid_of(&g), fresh);
    let latest = f.fetched_keys().await;
    verifier()
        .verify(&g, &KeySource::Jwks(latest.clone()))
        .unwrap();
    let actives: Vec<&str> = latest
        .keys
        .iter()
        .filter(|k| k.is_active())
        .map(|k| k.kid.as_str())
        .collect();
    assert_eq!(actives, [fresh.as_str()]);
    assert_eq!(latest.keys.len(), 3, "both revoked keys stay listed");
}
