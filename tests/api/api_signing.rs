//! Signing through the service with SoftHSM2 keys, checked by the offline verifier:
//! grants (with Idempotency-Key replay, conflict and concurrent duplicates), refusals that
//! sign nothing, revocation into trust bundles, destination allowlist sequences, the signed
//! key set with ETag revalidation, key management, and no release without an audit entry.

use mpcp_pa::api::artifacts::trees;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::kit;
use crate::kit::api::{Harness, assert_error};
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::clock::{SystemClock, format_rfc3339};
use mpcp_pa::events::Event;
use mpcp_pa::jwk::KeySet;
use mpcp_pa::keys::keyset::build_root_key_set;
use mpcp_pa::verify::{KeySource, Verifier};
use serde_json::{Value, json};

const GATEWAY: &str = "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b5";
const DESTS: [&str; 2] = [
    "rBeSeHbNsfZ3dqofxZ8MsfEo6ZTRJ1iHqA",
    "rsXQfv9chTvpKmf55aC2Lb44PvXdTr7S4J",
];

fn in_secs(s: i64) -> String {
    format_rfc3339(time::OffsetDateTime::now_utc() + time::Duration::seconds(s))
}

fn grant_body(policy_hash: &str, grant_id: Option<&str>, expires_in: i64) -> Value {
    let mut g = json!({
        "version": "1.0",
        "policyHash": policy_hash,
        "subjectId": "vehicle-4711",
        "scope": "SESSION",
        "allowedRails": ["xrpl"],
        "expiresAt": in_secs(expires_in),
        "authorizedGateway": GATEWAY,
        "velocityLimit": {"maxPayments": 10, "windowSeconds": 3600},
        "budgetMinor": "50000",
        "budgetCurrency": "XRP",
        "x-vendorNote": {"kept": true}
    });
    if let Some(id) = grant_id {
        g["grantId"] = json!(id);
    }
    g
}

fn verifier() -> Verifier {
    Verifier::new(Arc::new(SystemClock))
}

fn root_keys(h: &Harness) -> KeySet {
    build_root_key_set(h.registry.as_ref()).unwrap()
}

/// The served signed key set, checked against the root keys, as a key source.
async fn served_keys(h: &Harness) -> KeySource {
    let (status, signed) = h.get("/.well-known/mpcp-keys.signed.json", None).await;
    assert_eq!(status, 200, "{signed}");
    verifier().key_source(&signed, Some(&root_keys(h))).unwrap()
}

fn grants_issued(h: &Harness, id: &str) -> usize {
    h.events()
        .iter()
        .filter(|(_, e)| matches!(e, Event::GrantIssued { grant_id, .. } if grant_id == id))
        .count()
}

async fn post_idem(
    h: &Harness,
    path: &str,
    token: &str,
    key: &str,
    body: &str,
) -> reqwest::Response {
    h.client
        .post(h.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn policy(h: &Harness, issuer: &str, max_lifetime: u64) -> String {
    let doc = format!(r#"{{"version":"1.0","maxGrantLifetimeSeconds":{max_lifetime}}}"#);
    let (status, body) = h.post("/v1/policies", Some(issuer), &doc).await;
    assert!(status == 201 || status == 200, "{body}");
    body["policyHash"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_verify_and_idempotency_replays_the_first_response() {
    kit::child::own_process!("grants_verify_and_idempotency_replays_the_first_response");
    let h = Harness::start(Limits::default()).await;
    let issuer = h.token("issuer-1", ApiRole::Issuer);
    let ph = policy(&h, &issuer, 7200).await;

    let body = grant_body(&ph, Some("grant-1"), 3600).to_string();
    let first = post_idem(&h, "/v1/grants", &issuer, "k-1", &body).await;
    assert_eq!(first.status(), 201);
    let first_bytes = first.bytes().await.unwrap();
    let grant: Value = serde_json::from_slice(&first_bytes).unwrap();
    assert_eq!(grant["issuer"], "pa.test");
    assert_eq!(
        grant["x-vendorNote"],
        json!({"kept": true}),
        "unknown members preserved"
    );
    let verified = verifier().verify(&grant, &served_keys(&h).await).unwrap();
    assert_eq!(verified.id, "grant-1");
    assert_eq!(grants_issued(&h, "grant-1"), 1);

    // The client lost the response and retries: same bytes, same signature, nothing new.
    let again = post_idem(&h, "/v1/grants", &issuer, "k-1", &body).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.bytes().await.unwrap(), first_bytes);
    assert_eq!(grants_issued(&h, "grant-1"), 1);

    // Same key, different request: conflict, distinct from a replay.
    let other = grant_body(&ph, Some("grant-2"), 3600).to_string();
    let r = post_idem(&h, "/v1/grants", &issuer, "k-1", &other).await;
    assert_error(&kit::api::read(r).await, 409, "IDEMPOTENCY_CONFLICT");
    assert_eq!(grants_issued(&h, "grant-2"), 0);
    // Without the key, reusing a grantId is a plain conflict on the artifact.
    assert_error(
        &h.post("/v1/grants", Some(&issuer), &body).await,
        409,
        "CONFLICT",
    );

    // Concurrent duplicates: one signature, one audit entry, every caller the same answer.
    let dup = grant_body(&ph, Some("grant-3"), 3600).to_string();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, url, t, b) = (
            h.client.clone(),
            h.url("/v1/grants"),
            issuer.clone(),
            dup.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(url)
                .bearer_auth(t)
                .header("content-type", "application/json")
                .header("idempotency-key", "k-concurrent")
                .body(b)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap())
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "all duplicates get the first response"
    );
    assert_eq!(answers[0].0, 201);
    assert_eq!(grants_issued(&h, "grant-3"), 1);

    // A generated grantId when none is given.
    let (status, g) = h
        .post(
            "/v1/grants",
            Some(&issuer),
            &grant_body(&ph, None, 600).to_string(),
        )
        .await;
    assert_eq!(status, 201);
    assert!(g["grantId"].as_str().unwrap().starts_with("grant-"));
    mpcp_pa::model::check_identifier(g["grantId"].as_str().unwrap(), "grantId").unwrap();

    // Inputs at the edge of the identifier, text, timestamp and currency rules still sign
    // and verify: a 46-byte grantId, nine fraction digits, non-ASCII free text, a 40-hex
    // currency with caps in it, a complete credential pair.
    let edge_id = format!("g-{}", "e".repeat(44));
    let mut edge = grant_body(&ph, Some(&edge_id), 600);
    let currency = format!("52{}", "4C".repeat(19));
    let m = edge.as_object_mut().unwrap();
    m.insert(
        "expiresAt".into(),
        json!(in_secs(600).replace('Z', ".123456789Z")),
    );
    m.insert(
        "operatorId".into(),
        json!("Betreiber Zo\u{eb} \u{65e5}\u{672c}"),
    );
    m.insert("budgetCurrency".into(), json!(currency));
    m.insert("offlineMaxSinglePayment".into(), json!("100"));
    m.insert("offlineMaxSinglePaymentCurrency".into(), json!(currency));
    m.insert("offlineMaxCumulativePayment".into(), json!("1000"));
    m.insert("merchantCredentialIssuer".into(), json!(GATEWAY));
    m.insert(
        "merchantCredentialType".into(),
        json!(hex::encode_upper("mpcp:approved-merchant")),
    );
    let (status, g) = h.post("/v1/grants", Some(&issuer), &edge.to_string()).await;
    assert_eq!(status, 201, "{g}");
    assert_eq!(g["expiresAt"], edge["expiresAt"], "signed as given");
    verifier().verify(&g, &served_keys(&h).await).unwrap();
    assert_eq!(
        mpcp_pa::model::active_grant_credential_type(&edge_id).len(),
        128,
        "mpcp:active-grant:{{grantId}} is exactly the ledger's 64 bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_grants_sign_and_record_nothing() {
    kit::child::own_process!("refused_grants_sign_and_record_nothing");
    let h = Harness::start(Limits::default()).await;
    let issuer = h.token("issuer-1", ApiRole::Issuer);
    let t = Some(issuer.as_str());
    let ph = policy(&h, &issuer, 3600).await;
    let before = h.audit.size();

    let mut g = grant_body(&ph, Some("g-bad"), 600);
    g["allowedRails"] = json!(["evm"]);
    assert_error(
        &h.post("/v1/grants", t, &g.to_string()).await,
        400,
        "GRANT_NOT_CONFORMING",
    );
    let mut g = grant_body(&ph, Some("g-bad"), 600);
    g["revocationEndpoint"] = json!("https://x");
    assert_error(
        &h.post("/v1/grants", t, &g.to_string()).await,
        400,
        "GRANT_NOT_CONFORMING",
    );
    let mut g = grant_body(&ph, Some("g-bad"), 600);
    g["authorizedGateway"] = json!("r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b6");
    assert_error(
        &h.post("/v1/grants", t, &g.to_string()).await,
        400,
        "ADDRESS_INVALID",
    );
    let g = grant_body(&"0".repeat(64), Some("g-bad"), 600);
    assert_error(
        &h.post("/v1/grants", t, &g.to_string()).await,
        400,
        "POLICY_HASH_MISMATCH",
    );
    let g = grant_body(&ph, Some("g-bad"), 7200);
    assert_error(
        &h.post("/v1/grants", t, &g.to_string()).await,
        400,
        "LIFETIME_EXCEEDED",
    );
    let g = grant_body(&ph, Some("g-bad"), -60);
    assert_error(
        &h.post("/v1/grants", t, &g.to_string()).await,
        400,
        "TIMESTAMP_INVALID",
    );
    let mut g = grant_body(&ph, Some("g-bad"), 600);
    g["issuerKeyId"] = json!("mine");
    let e = h.post("/v1/grants", t, &g.to_string()).await;
    assert_error(&e, 400, "SCHEMA_INVALID");
    assert_eq!(e.1["field"], "issuerKeyId");

    assert_eq!(h.audit.size(), before, "nothing recorded");
    assert!(
        h.state.artifacts().count(trees::GRANTS).unwrap() == 0,
        "nothing stored"
    );
    assert_error(&h.get("/v1/grants/g-bad", t).await, 404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_signature_is_released_without_its_audit_entry() {
    kit::child::own_process!("no_signature_is_released_without_its_audit_entry");
    let h = Harness::start(Limits::default()).await;
    let issuer = h.token("issuer-1", ApiRole::Issuer);
    let officer = h.token("officer-1", ApiRole::SecurityOfficer);
    let ph = policy(&h, &issuer, 3600).await;
    let before = h.audit.size();
    h.sink.down.store(true, Ordering::SeqCst);

    let body = grant_body(&ph, Some("g-1"), 600).to_string();
    let r = post_idem(&h, "/v1/grants", &issuer, "k", &body).await;
    let got = kit::api::read(r).await;
    assert_error(&got, 503, "AUDIT_UNAVAILABLE");
    assert!(!got.1.to_string().contains("signature\""));
    let allow = json!({"allowlistId": "list-1", "destinations": DESTS, "expiresAt": in_secs(3600)});
    assert_error(
        &h.post(
            "/v1/destination-allowlists",
            Some(&issuer),
            &allow.to_string(),
        )
        .await,
        503,
        "AUDIT_UNAVAILABLE",
    );
    let bundle = json!({"category": "parking", "approvedIssuers": [], "issuers": [], "expiresAt": in_secs(3600)});
    assert_error(
        &h.post("/v1/trust-bundles", Some(&officer), &bundle.to_string())
            .await,
        503,
        "AUDIT_UNAVAILABLE",
    );
    // Signing the key set needs its audit entry too; the plain key set needs neither.
    assert_error(
        &h.get("/.well-known/mpcp-keys.signed.json", None).await,
        503,
        "AUDIT_UNAVAILABLE",
    );
    let (status, plain) = h.get("/.well-known/mpcp-keys.json", None).await;
    assert_eq!(status, 200, "{plain}");
    assert_eq!(plain["keys"].as_array().unwrap().len(), 1, "{plain}");
    assert_eq!(h.audit.size(), before);
    assert!(h.state.artifacts().count(trees::GRANTS).unwrap() == 0);
    assert!(h.state.artifacts().count(trees::ALLOWLISTS).unwrap() == 0);
    assert!(h.state.artifacts().count(trees::BUNDLES).unwrap() == 0);

    // Once the log is back, the same idempotency key runs the request afresh.
    h.sink.down.store(false, Ordering::SeqCst);
    let r = post_idem(&h, "/v1/grants", &issuer, "k", &body).await;
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("idempotent-replayed").is_none());
    assert_eq!(grants_issued(&h, "g-1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_trust_bundles() {
    kit::child::own_process!("revocation_reaches_trust_bundles");
    let h = Harness::start(Limits::default()).await;
    let issuer = h.token("issuer-1", ApiRole::Issuer);
    let officer = h.token("officer-1", ApiRole::SecurityOfficer);
    let ph = policy(&h, &issuer, 3600).await;
    let (_, grant) = h
        .post(
            "/v1/grants",
            Some(&issuer),
            &grant_body(&ph, Some("g-rev"), 1800).to_string(),
        )
        .await;
    assert_eq!(
        h.get("/v1/grants/g-rev", Some(&issuer)).await.1["status"],
        "active"
    );

    let (status, rev) = h
        .post(
            "/v1/grants/g-rev/revoke",
            Some(&issuer),
            r#"{"reason":"vehicle stolen"}"#,
        )
        .await;
    assert_eq!(status, 200, "{rev}");
    assert_eq!(
        rev["activeGrantCredentialType"],
        hex::encode_upper("mpcp:active-grant:g-rev")
    );
    let (_, got) = h.get("/v1/grants/g-rev", Some(&issuer)).await;
    assert_eq!(
        (got["status"].as_str(), got["revocationReason"].as_str()),
        (Some("revoked"), Some("vehicle stolen"))
    );
    assert_error(
        &h.post(
            "/v1/grants/g-rev/revoke",
            Some(&issuer),
            r#"{"reason":"again"}"#,
        )
        .await,
        409,
        "CONFLICT",
    );
    assert_error(
        &h.post("/v1/grants/nope/revoke", Some(&issuer), r#"{"reason":"x"}"#)
            .await,
        404,
        "NOT_FOUND",
    );

    // The bundle embeds the PA's published grant-signing key and lists the revoked grant.
    let keys = match served_keys(&h).await {
        KeySource::Jwks(set) => set.keys,
        _ => unreachable!(),
    };
    let bundle = json!({
        "category": "parking",
        "merchant": "m-1",
        "geography": {"region": "EU", "countryCodes": ["DE"]},
        "approvedIssuers": ["pa.test"],
        "issuers": [{"issuer": "pa.test", "keys": keys}],
        "expiresAt": in_secs(3 * 3600)
    });
    assert_error(
        &h.post("/v1/trust-bundles", Some(&issuer), &bundle.to_string())
            .await,
        403,
        "FORBIDDEN",
    );
    let (status, signed) = h
        .post("/v1/trust-bundles", Some(&officer), &bundle.to_string())
        .await;
    assert_eq!(status, 201, "{signed}");
    assert_eq!(signed["revokedGrantIds"], json!(["g-rev"]));
    let root = root_keys(&h);
    assert_eq!(signed["bundleKeyId"], root.keys[0].kid.as_str());
    let source = verifier().key_source(&signed, Some(&root)).unwrap();
    let e = verifier().verify(&grant, &source).unwrap_err();
    assert_eq!(e.code, mpcp_pa::ErrorCode::GrantRevoked);

    // Lifetime ceiling, and keys under the PA's name that are not its own.
    let mut long = bundle.clone();
    long["expiresAt"] = json!(in_secs(8 * 24 * 3600));
    assert_error(
        &h.post("/v1/trust-bundles", Some(&officer), &long.to_string())
            .await,
        400,
        "LIFETIME_EXCEEDED",
    );
    let mut foreign = bundle.clone();
    foreign["issuers"][0]["keys"][0]["kid"] = json!("not-ours");
    assert_error(
        &h.post("/v1/trust-bundles", Some(&officer), &foreign.to_string())
            .await,
        404,
        "KEY_NOT_FOUND",
    );

    // Public reads: filters, the well-known newest bundle, ETag revalidation.
    let (_, list) = h
        .get("/v1/trust-bundles?category=parking&region=EU", None)
        .await;
    assert_eq!(list["bundles"].as_array().unwrap().len(), 1);
    let (_, none) = h.get("/v1/trust-bundles?merchant=m-2", None).await;
    assert_eq!(none["bundles"], json!([]));
    let r = h
        .client
        .get(h.url("/.well-known/mpcp-trust-bundle.json"))
        .send()
        .await
        .unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    assert_eq!(kit::api::read(r).await.1, signed);
    let r = h
        .client
        .get(h.url("/.well-known/mpcp-trust-bundle.json"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_sequences_are_monotonic() {
    kit::child::own_process!("allowlist_sequences_are_monotonic");
    let h = Harness::start(Limits::default()).await;
    let issuer = h.token("issuer-1", ApiRole::Issuer);
    let body = json!({"allowlistId": "list-1", "destinations": DESTS, "expiresAt": in_secs(3600)});
    let (s1, v1) = h
        .post(
            "/v1/destination-allowlists",
            Some(&issuer),
            &body.to_string(),
        )
        .await;
    assert_eq!(s1, 201, "{v1}");
    let mut body2 = body.clone();
    body2["destinations"] = json!([DESTS[0]]);
    let (_, v2) = h
        .post(
            "/v1/destination-allowlists",
            Some(&issuer),
            &body2.to_string(),
        )
        .await;
    assert_eq!(
        (v1["sequence"].as_u64(), v2["sequence"].as_u64()),
        (Some(1), Some(2))
    );
    let keys = served_keys(&h).await;
    verifier().verify(&v2, &keys).unwrap();
    let (_, latest) = h.get("/v1/destination-allowlists/list-1", None).await;
    assert_eq!(latest, v2);
    let mut bad = body.clone();
    bad["sequence"] = json!(9);
    assert_error(
        &h.post(
            "/v1/destination-allowlists",
            Some(&issuer),
            &bad.to_string(),
        )
        .await,
        400,
        "UNKNOWN_FIELD",
    );
    let mut bad = body.clone();
    bad["destinations"] = json!(["rNotAnAddress"]);
    assert_error(
        &h.post(
            "/v1/destination-allowlists",
            Some(&issuer),
            &bad.to_string(),
        )
        .await,
        400,
        "ADDRESS_INVALID",
    );
    assert_eq!(
        h.get("/v1/destination-allowlists/list-1", None).await.1["sequence"],
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_set_revalidates_and_follows_key_management() {
    kit::child::own_process!("key_set_revalidates_and_follows_key_management");
    let h = Harness::start(Limits::default()).await;
    let officer = h.token("officer-1", ApiRole::SecurityOfficer);
    let issuer = h.token("issuer-1", ApiRole::Issuer);
    let r = h
        .client
        .get(h.url("/.well-known/mpcp-keys.signed.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let first = kit::api::read(r).await.1;
    let signed_before = h
        .events()
        .iter()
        .filter(|(_, e)| matches!(e, Event::KeySetSigned { .. }))
        .count();
    assert_eq!(signed_before, 1);
    // Revalidation costs no signature.
    let r = h
        .client
        .get(h.url("/.well-known/mpcp-keys.signed.json"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(
        h.get("/.well-known/mpcp-keys.signed.json", None).await.1,
        first
    );
    let old_kid = first["keySet"]["keys"][0]["kid"]
        .as_str()
        .unwrap()
        .to_string();

    // Rotation through the API changes the published set (new ETag, new signature).
    assert_error(
        &h.post("/v1/keys/grant-signing/rotate", Some(&issuer), "{}")
            .await,
        403,
        "FORBIDDEN",
    );
    assert_error(
        &h.post("/v1/keys/gateway/rotate", Some(&officer), "{}")
            .await,
        400,
        "SCHEMA_INVALID",
    );
    let (status, rot) = h
        .client
        .post(h.url("/v1/keys/grant-signing/rotate"))
        .bearer_auth(&officer)
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    let rot = kit::api::read(rot).await.1;
    assert_eq!(status, 200, "{rot}");
    assert_eq!(rot["retired"]["kid"], old_kid.as_str());
    let new_kid = rot["activated"]["kid"].as_str().unwrap().to_string();
    let r = h
        .client
        .get(h.url("/.well-known/mpcp-keys.signed.json"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let second = kit::api::read(r).await.1;
    let kids: Vec<_> = second["keySet"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert!(kids.contains(&json!(old_kid)) && kids.contains(&json!(new_kid)));

    // Revocation: the old key is listed active:false.
    let path = format!("/v1/keys/{old_kid}/revoke");
    assert_error(
        &h.post(&path, Some(&officer), "{}").await,
        400,
        "SCHEMA_INVALID",
    );
    assert_eq!(
        h.post(&path, Some(&officer), r#"{"reason":"compromised"}"#)
            .await
            .0,
        200
    );
    let (_, third) = h.get("/.well-known/mpcp-keys.signed.json", None).await;
    let old = third["keySet"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == old_kid.as_str())
        .unwrap()
        .clone();
    assert_eq!(old["active"], false);
    verifier().key_source(&third, Some(&root_keys(&h))).unwrap();
    // Destruction is scheduled, not immediate.
    let (status, d) = h
        .post(
            &format!("/v1/keys/{old_kid}/destroy"),
            Some(&officer),
            r#"{"waitDays":1}"#,
        )
        .await;
    assert_eq!(status, 200, "{d}");
    assert!(d["key"]["destroyAfter"].is_string());
    let (_, listed) = h.get("/v1/keys", Some(&officer)).await;
    let states: Vec<_> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_string(),
                k["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        states.contains(&(new_kid, "active".to_string())),
        "{states:?}"
    );
    assert!(!listed.to_string().contains("\"d\""), "no private material");
}
