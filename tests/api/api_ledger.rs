//! The XRPL side through the running service (SoftHSM2 xrpl-account key, sled, TLS): a grant
//! whose activeGrantCredentialIssuer is the PA's account commits its CredentialCreate, its
//! revocation the CredentialDelete; every blob is decoded and verified by the XRPL
//! Foundation's npm packages and checked against the spec's fields; refusals sign nothing.

use crate::kit;
use crate::kit::api::{Harness, assert_error};
use crate::kit::xrpl::{RIPPLE_EPOCH, check_blobs, flip_byte, hex_of, valid};
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::clock::{format_rfc3339, parse_rfc3339};
use mpcp_pa::events::Event;
use serde_json::{Value, json};

const GATEWAY: &str = "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b5";
/// The grant subject's XRPL account.
const SUBJECT: &str = "rBeSeHbNsfZ3dqofxZ8MsfEo6ZTRJ1iHqA";
/// An account the operator declared as issuing grant credentials itself.
const EXTERNAL: &str = "rsXQfv9chTvpKmf55aC2Lb44PvXdTr7S4J";

fn grant(policy_hash: &str, id: &str, issuer: &str, subject: &str) -> Value {
    json!({
        "version": "1.0",
        "grantId": id,
        "policyHash": policy_hash,
        "subjectId": subject,
        "scope": "SESSION",
        "allowedRails": ["xrpl"],
        "expiresAt": format_rfc3339(time::OffsetDateTime::now_utc() + time::Duration::hours(1)),
        "authorizedGateway": GATEWAY,
        "velocityLimit": {"maxPayments": 10, "windowSeconds": 3600},
        "budgetMinor": "50000",
        "budgetCurrency": "XRP",
        "activeGrantCredentialIssuer": issuer,
    })
}

struct Fx {
    h: Harness,
    issuer: String,
    officer: String,
    auditor: String,
    policy: String,
    account: String,
}

impl Fx {
    async fn start() -> Fx {
        let h = Harness::start_with(Limits::default(), |c| {
            c.ledger.external_issuers = vec![EXTERNAL.to_string()];
        })
        .await;
        let issuer = h.token("issuer-1", ApiRole::Issuer);
        let officer = h.token("officer-1", ApiRole::SecurityOfficer);
        let auditor = h.token("auditor-1", ApiRole::Auditor);
        let (s, p) = h
            .post("/v1/policies", Some(&issuer), r#"{"version":"1.0"}"#)
            .await;
        assert!(s == 201 || s == 200, "{p}");
        let (s, a) = h.get("/v1/ledger/account", Some(&auditor)).await;
        assert_eq!(s, 200, "{a}");
        Fx {
            policy: p["policyHash"].as_str().unwrap().to_string(),
            account: a["account"].as_str().unwrap().to_string(),
            h,
            issuer,
            officer,
            auditor,
        }
    }

    async fn transactions(&self, query: &str) -> Vec<Value> {
        let (s, v) = self
            .h
            .get(
                &format!("/v1/ledger/transactions{query}"),
                Some(&self.auditor),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["transactions"].as_array().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_credentials_are_signed_in_the_hsm_and_decode_with_the_xrpl_codec() {
    kit::child::own_process!(
        "grant_credentials_are_signed_in_the_hsm_and_decode_with_the_xrpl_codec"
    );
    let fx = Fx::start().await;
    let (s, account) = fx.h.get("/v1/ledger/account", Some(&fx.officer)).await;
    assert_eq!(s, 200);
    assert_eq!(account["algorithm"], "ES256K", "secp256k1 is the default");
    assert_eq!(account["nextSequence"], 1);
    assert_eq!(
        fx.h.get("/v1/ledger/account", Some(&fx.issuer)).await.0,
        403,
        "an issuer does not read the ledger side"
    );

    // Issuance: the grant is the body, the transaction is named in a header.
    let body = grant(&fx.policy, "g-ledger-1", &fx.account, SUBJECT);
    let resp =
        fx.h.client
            .post(fx.h.url("/v1/grants"))
            .bearer_auth(&fx.issuer)
            .header("content-type", "application/json")
            .header("idempotency-key", "ledger-1")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 201);
    let named = resp
        .headers()
        .get("mpcp-credential-transaction")
        .expect("the grant response names its credential transaction")
        .to_str()
        .unwrap()
        .to_string();
    let signed_grant: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(signed_grant["grantId"], "g-ledger-1");
    assert!(named.starts_with("CredentialCreate; hash="), "{named}");
    assert!(named.contains("state=signed"), "{named}");

    let txs = fx.transactions("?grantId=g-ledger-1").await;
    assert_eq!(txs.len(), 1);
    let create = &txs[0];
    assert!(named.contains(create["hash"].as_str().unwrap()));
    assert_eq!(create["transactionType"], "CredentialCreate");
    assert_eq!(create["state"], "signed");
    assert_eq!(create["sequence"], 1);

    // A replay names the same transaction; nothing new is signed.
    let replay =
        fx.h.client
            .post(fx.h.url("/v1/grants"))
            .bearer_auth(&fx.issuer)
            .header("content-type", "application/json")
            .header("idempotency-key", "ledger-1")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
    assert_eq!(replay.status(), 201);
    assert_eq!(
        replay.headers()["mpcp-credential-transaction"]
            .to_str()
            .unwrap(),
        named
    );
    assert_eq!(fx.transactions("").await.len(), 1);

    // Revocation signs the matching CredentialDelete.
    let (s, revoked) =
        fx.h.post(
            "/v1/grants/g-ledger-1/revoke",
            Some(&fx.issuer),
            r#"{"reason":"subject lost its device"}"#,
        )
        .await;
    assert_eq!(s, 200, "{revoked}");
    assert_eq!(
        revoked["credentialTransaction"]["transactionType"],
        "CredentialDelete"
    );
    let txs = fx.transactions("?grantId=g-ledger-1").await;
    assert_eq!(txs.len(), 2);
    let delete = txs
        .iter()
        .find(|t| t["transactionType"] == "CredentialDelete")
        .unwrap();
    assert_eq!(delete["hash"], revoked["credentialTransaction"]["hash"]);
    assert_eq!(delete["sequence"], 2);
    let (_, g) = fx.h.get("/v1/grants/g-ledger-1", Some(&fx.issuer)).await;
    assert_eq!(g["credentialTransactions"].as_array().unwrap().len(), 2);

    // The XRPL Foundation's codec and keypairs: both blobs are valid transactions of the
    // PA's account with the spec's fields.
    let expires = parse_rfc3339(body["expiresAt"].as_str().unwrap(), "e").unwrap();
    let results = check_blobs(&[
        create["txBlob"].as_str().unwrap().to_string(),
        delete["txBlob"].as_str().unwrap().to_string(),
    ]);
    for (r, t) in results.iter().zip([create, delete]) {
        assert!(valid(r), "{r}");
        assert_eq!(r["hash"], t["hash"], "the id the appliance computed");
        let tx = &r["tx"];
        assert_eq!(tx["TransactionType"], t["transactionType"]);
        assert_eq!(tx["Account"], fx.account, "Issuer is the PA's account");
        assert_eq!(tx["Subject"], SUBJECT);
        assert_eq!(tx["CredentialType"], hex_of("mpcp:active-grant:g-ledger-1"));
        assert_eq!(tx["SigningPubKey"], account["publicKey"]);
    }
    assert_eq!(
        results[0]["tx"]["Expiration"],
        expires.unix_timestamp() - RIPPLE_EPOCH,
        "Expiration is the grant's expiresAt in ledger time"
    );
    assert!(results[1]["tx"].get("Expiration").is_none());

    // One flipped byte anywhere in a blob fails the codec's check.
    let blob = create["txBlob"].as_str().unwrap();
    let len = blob.len() / 2;
    let flipped: Vec<String> = (0..len).step_by(7).map(|i| flip_byte(blob, i)).collect();
    for (i, r) in check_blobs(&flipped).iter().enumerate() {
        assert!(!valid(r), "flipping byte {} went unnoticed: {r}", i * 7);
    }

    // The audit entries name the transactions.
    let events: Vec<Event> = fx.h.events().into_iter().map(|(_, e)| e).collect();
    assert!(events.iter().any(|e| matches!(e,
        Event::GrantIssued { grant_id, credential_tx: Some(h), .. }
            if grant_id == "g-ledger-1" && h == create["hash"].as_str().unwrap())));
    assert!(events.iter().any(|e| matches!(e,
        Event::GrantRevoked { grant_id, credential_tx: Some(h), .. }
            if grant_id == "g-ledger-1" && h == delete["hash"].as_str().unwrap())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credential_input_signs_nothing_and_external_issuers_are_theirs() {
    kit::child::own_process!("bad_credential_input_signs_nothing_and_external_issuers_are_theirs");
    let fx = Fx::start().await;
    let cases = [
        (
            grant(&fx.policy, "g-unknown", GATEWAY, SUBJECT),
            "CREDENTIAL_ISSUER_UNKNOWN",
            "activeGrantCredentialIssuer",
        ),
        (
            grant(&fx.policy, "g-subject", &fx.account, "vehicle-4711"),
            "CREDENTIAL_SUBJECT_INVALID",
            "subjectId",
        ),
        (
            // 18 bytes of prefix + 47 = 65 > 64: the identifier rule bounds every grantId
            // so, and says why.
            grant(&fx.policy, &"g".repeat(47), &fx.account, SUBJECT),
            "SCHEMA_INVALID",
            "grantId",
        ),
    ];
    for (body, code, field) in cases {
        let got =
            fx.h.post("/v1/grants", Some(&fx.issuer), &body.to_string())
                .await;
        assert_error(&got, 400, code);
        assert_eq!(got.1["field"], field, "{}", got.1);
        if field == "grantId" {
            assert!(
                got.1["message"]
                    .as_str()
                    .unwrap()
                    .contains("CredentialType"),
                "{}",
                got.1
            );
        }
    }
    assert!(fx.transactions("").await.is_empty(), "nothing was signed");
    let (_, a) = fx.h.get("/v1/ledger/account", Some(&fx.auditor)).await;
    assert_eq!(a["nextSequence"], 1, "no sequence was used");
    // 46 bytes is the longest grantId that fits.
    let (s, v) =
        fx.h.post(
            "/v1/grants",
            Some(&fx.issuer),
            &grant(&fx.policy, &"g".repeat(46), &fx.account, SUBJECT).to_string(),
        )
        .await;
    assert_eq!(s, 201, "{v}");

    // A declared external issuer: signed as before, no transaction of ours, no header.
    let resp =
        fx.h.client
            .post(fx.h.url("/v1/grants"))
            .bearer_auth(&fx.issuer)
            .header("content-type", "application/json")
            .body(grant(&fx.policy, "g-external", EXTERNAL, "vehicle-4711").to_string())
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(resp.headers().get("mpcp-credential-transaction").is_none());
    assert!(fx.transactions("?grantId=g-external").await.is_empty());
    let (s, v) =
        fx.h.post(
            "/v1/grants/g-external/revoke",
            Some(&fx.issuer),
            r#"{"reason":"done"}"#,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("credentialTransaction").is_none());
    assert_error(
        &fx.h
            .get("/v1/ledger/transactions?state=done", Some(&fx.auditor))
            .await,
        400,
        "SCHEMA_INVALID",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_grants_get_distinct_contiguous_sequences() {
    kit::child::own_process!("concurrent_grants_get_distinct_contiguous_sequences");
    let fx = Fx::start().await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (client, url, token) = (
            fx.h.client.clone(),
            fx.h.url("/v1/grants"),
            fx.issuer.clone(),
        );
        let body = grant(&fx.policy, &format!("g-c-{i}"), &fx.account, SUBJECT).to_string();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    let txs = fx.transactions("").await;
    let mut seqs: Vec<u64> = txs
        .iter()
        .map(|t| t["sequence"].as_u64().unwrap())
        .collect();
    seqs.sort();
    assert_eq!(seqs, (1..=12).collect::<Vec<u64>>());
    let (_, a) = fx.h.get("/v1/ledger/account", Some(&fx.auditor)).await;
    assert_eq!(a["nextSequence"], 13);
    let blobs: Vec<String> = txs
        .iter()
        .map(|t| t["txBlob"].as_str().unwrap().to_string())
        .collect();
    assert!(check_blobs(&blobs).iter().all(valid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_changes_sign_their_self_issued_credentials() {
    kit::child::own_process!("key_changes_sign_their_self_issued_credentials");
    let fx = Fx::start().await;
    let mut blobs = Vec::new();
    for (role, prefix) in [
        ("grant-signing", "mpcp:pa-signing-key:"),
        ("root", "mpcp:trust-bundle-signer:"),
    ] {
        let (s, r) =
            fx.h.post(&format!("/v1/keys/{role}/rotate"), Some(&fx.officer), "{}")
                .await;
        assert_eq!(s, 200, "{r}");
        let kid = r["activated"]["kid"].as_str().unwrap().to_string();
        assert_eq!(
            r["credentialTransaction"]["transactionType"],
            "CredentialCreate"
        );
        let (s, v) =
            fx.h.post(
                &format!("/v1/keys/{kid}/revoke"),
                Some(&fx.officer),
                r#"{"reason":"key compromise drill"}"#,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v["credentialTransaction"]["transactionType"],
            "CredentialDelete"
        );
        let txs = fx.transactions(&format!("?kid={kid}")).await;
        assert_eq!(txs.len(), 2, "{txs:?}");
        for t in &txs {
            assert_eq!(t["credentialType"], hex_of(&format!("{prefix}{kid}")));
            assert_eq!(t["subject"], fx.account, "self-issued");
            blobs.push((
                t["txBlob"].as_str().unwrap().to_string(),
                prefix,
                kid.clone(),
            ));
        }
        // The retired key (the harness's first, made before any ledger existed) has no
        // credential, so revoking it signs nothing.
        let old = r["retired"]["kid"].as_str().unwrap();
        let (s, v) =
            fx.h.post(
                &format!("/v1/keys/{old}/revoke"),
                Some(&fx.officer),
                r#"{"reason":"retired"}"#,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert!(v.get("credentialTransaction").is_none(), "{v}");
    }
    let results = check_blobs(&blobs.iter().map(|b| b.0.clone()).collect::<Vec<_>>());
    for (r, (_, prefix, kid)) in results.iter().zip(&blobs) {
        assert!(valid(r), "{r}");
        assert_eq!(r["tx"]["Account"], fx.account);
        assert_eq!(r["tx"]["Subject"], fx.account);
        assert_eq!(r["tx"]["CredentialType"], hex_of(&format!("{prefix}{kid}")));
    }
    let seqs: Vec<u64> = results
        .iter()
        .map(|r| r["tx"]["Sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_account_key_is_a_new_account() {
    kit::child::own_process!("a_rotated_account_key_is_a_new_account");
    let fx = Fx::start().await;
    let (s, v) =
        fx.h.post(
            "/v1/grants",
            Some(&fx.issuer),
            &grant(&fx.policy, "g-old-account", &fx.account, SUBJECT).to_string(),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, r) =
        fx.h.post("/v1/keys/xrpl-account/rotate", Some(&fx.officer), "{}")
            .await;
    assert_eq!(s, 200, "{r}");
    let (_, a) = fx.h.get("/v1/ledger/account", Some(&fx.auditor)).await;
    let new_account = a["account"].as_str().unwrap().to_string();
    assert_ne!(new_account, fx.account);
    assert_eq!(a["nextSequence"], 1, "a new account has its own counter");
    // The old account's credential cannot be deleted by the new key: the revocation is
    // recorded anyway, and the answer says what was not signed.
    let (s, v) =
        fx.h.post(
            "/v1/grants/g-old-account/revoke",
            Some(&fx.issuer),
            r#"{"reason":"after rotation"}"#,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["credentialError"]["code"], "LEDGER_ACCOUNT_CHANGED",
        "{v}"
    );
    assert!(v.get("credentialTransaction").is_none());
    assert_eq!(fx.transactions("?grantId=g-old-account").await.len(), 1);
    // Grants now name the new account; the old one is unknown.
    assert_error(
        &fx.h
            .post(
                "/v1/grants",
                Some(&fx.issuer),
                &grant(&fx.policy, "g-stale", &fx.account, SUBJECT).to_string(),
            )
            .await,
        400,
        "CREDENTIAL_ISSUER_UNKNOWN",
    );
    let (s, v) =
        fx.h.post(
            "/v1/grants",
            Some(&fx.issuer),
            &grant(&fx.policy, "g-new-account", &new_account, SUBJECT).to_string(),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let txs = fx.transactions("?grantId=g-new-account").await;
    assert_eq!(
        (
            txs[0]["account"].as_str().unwrap(),
            txs[0]["sequence"].as_u64()
        ),
        (new_account.as_str(), Some(1))
    );
}
