//! Audit log reads through the service (auditor role): entries written by service actions,
//! proofs that verify with the audit module's RFC 9162 verifier, and the latest checkpoint.
//!
//! The first test signs its checkpoint with the audit module's in-process note key to read it
//! back; the second has the service sign checkpoints on demand with the audit role's key in
//! SoftHSM2 and checks them independently of the appliance's note code.

use crate::kit;
use crate::kit::api::{Harness, assert_error};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::audit::SoftwareNoteSigner;
use mpcp_pa::audit::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use mpcp_pa::keys::KeyRole;

fn hash(v: &serde_json::Value) -> Hash {
    STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditor_reads_entries_proofs_and_checkpoint() {
    kit::child::own_process!("auditor_reads_entries_proofs_and_checkpoint");
    let h = Harness::start(Limits::default()).await;
    // The harness's key generation and activation come first.
    let base = h.audit.size();
    let auditor = h.token("auditor-1", ApiRole::Auditor);
    let issuer = h.token("issuer-1", ApiRole::Issuer);
    let a = Some(auditor.as_str());
    assert_eq!(
        h.post("/v1/policies", Some(&issuer), r#"{"version":"1.0"}"#)
            .await
            .0,
        201
    );

    // Only the auditor reads the log.
    assert_error(
        &h.get("/v1/audit/entries", Some(&issuer)).await,
        403,
        "FORBIDDEN",
    );
    assert_error(&h.get("/v1/audit/entries", None).await, 401, "UNAUTHORIZED");

    let (status, body) = h.get(&format!("/v1/audit/entries?start={base}"), a).await;
    assert_eq!(status, 200, "{body}");
    // The issuer's 403 is itself an entry (`request_refused`); the 401 is not.
    assert_eq!(body["size"], base + 4);
    let entries = body["entries"].as_array().unwrap();
    let actions: Vec<_> = entries
        .iter()
        .map(|e| e["event"]["action"].clone())
        .collect();
    assert_eq!(
        actions,
        [
            "token_created",
            "token_created",
            "policy_stored",
            "request_refused"
        ]
    );
    assert_eq!(entries[2]["actor"]["name"], "issuer-1");
    assert_eq!(entries[2]["actor"]["role"], "issuer");
    // No secret ever reaches the log.
    let text = body.to_string();
    for secret in [&auditor, &issuer] {
        let tail = secret.splitn(3, '_').nth(2).unwrap();
        assert!(!text.contains(tail));
    }

    // Inclusion of the policy entry in the current tree, by index and by leaf hash.
    let (last, size) = (base + 2, base + 3);
    let raw = h.audit.entries(last, size).unwrap().remove(0);
    let leaf = leaf_hash(&raw);
    let (_, p) = h
        .get(
            &format!("/v1/audit/proofs/inclusion?index={last}&size={size}"),
            a,
        )
        .await;
    let proof: Vec<Hash> = p["proof"].as_array().unwrap().iter().map(hash).collect();
    verify_inclusion(last, size, &leaf, &proof, &hash(&p["rootHash"])).unwrap();
    let by_hash = h
        .get(
            &format!("/v1/audit/proofs/inclusion?leafHash={}", hex::encode(leaf)),
            a,
        )
        .await;
    assert_eq!(by_hash.1["index"], last);
    assert_error(
        &h.get("/v1/audit/proofs/inclusion?index=1&leafHash=00", a)
            .await,
        400,
        "SCHEMA_INVALID",
    );
    assert_error(
        &h.get(
            &format!("/v1/audit/proofs/inclusion?index={size}&size={size}"),
            a,
        )
        .await,
        400,
        "PROOF_OUT_OF_RANGE",
    );

    // Consistency from the tree before the requests to now.
    let (_, c) = h
        .get(&format!("/v1/audit/proofs/consistency?from={base}"), a)
        .await;
    let proof: Vec<Hash> = c["proof"].as_array().unwrap().iter().map(hash).collect();
    verify_consistency(
        base,
        size,
        &hash(&c["fromRoot"]),
        &hash(&c["toRoot"]),
        &proof,
    )
    .unwrap();

    // Checkpoint: none yet, then the one signed.
    assert_error(&h.get("/v1/audit/checkpoint", a).await, 404, "NOT_FOUND");
    let key = SoftwareNoteSigner::from_seed("pa.test/audit", &[7u8; 32]).unwrap();
    h.audit.sign_checkpoint(&key).unwrap();
    let (status, cp) = h.get("/v1/audit/checkpoint", a).await;
    assert_eq!(status, 200);
    // The checkpoint covers the whole log, the `request_refused` entry included.
    let size = h.audit.size();
    assert_eq!(cp["size"], size);
    assert_eq!(cp["origin"], "pa.test/audit");
    assert_eq!(hash(&cp["rootHash"]), h.audit.root(size).unwrap());
    let head = format!("pa.test/audit\n{size}\n");
    assert!(cp["note"].as_str().unwrap().starts_with(&head));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_on_demand_are_signed_by_the_hsm_audit_key() {
    kit::child::own_process!("checkpoints_on_demand_are_signed_by_the_hsm_audit_key");
    let h = Harness::start_with_keys(
        Limits::default(),
        &[KeyRole::GrantSigning, KeyRole::Root],
        |_| {},
    )
    .await;
    let auditor = h.token("auditor-1", ApiRole::Auditor);
    let officer = h.token("officer-1", ApiRole::SecurityOfficer);
    let issuer = h.token("issuer-1", ApiRole::Issuer);
    let origin = "pa.test/audit";

    // Only auditors and security officers may ask, and nothing is signed without an audit key.
    assert_error(
        &h.post("/v1/audit/checkpoints", None, "{}").await,
        401,
        "UNAUTHORIZED",
    );
    assert_error(
        &h.post("/v1/audit/checkpoints", Some(&issuer), "{}").await,
        403,
        "FORBIDDEN",
    );
    assert_error(
        &h.post("/v1/audit/checkpoints", Some(&auditor), "{}").await,
        503,
        "AUDIT_KEY_MISSING",
    );
    assert!(h.audit.latest_checkpoint().unwrap().is_none());

    // The security officer puts an audit key in service.
    let (status, rot) = h
        .post(
            "/v1/keys/audit/rotate",
            Some(&officer),
            r#"{"alg":"EdDSA"}"#,
        )
        .await;
    assert_eq!(status, 200, "{rot}");
    let kid = rot["activated"]["kid"].as_str().unwrap().to_string();
    let public = kit::note_check::jwk_public(&rot["activated"]["publicJwk"]);
    let vkey = kit::note_check::vkey(origin, &public);
    let (status, vkeys) = h.get("/v1/audit/vkeys", Some(&auditor)).await;
    assert_eq!(status, 200, "{vkeys}");
    assert_eq!(vkeys["origin"], origin);
    assert_eq!(vkeys["vkeys"][0]["vkey"], vkey.as_str());
    assert_eq!(vkeys["vkeys"][0]["kid"], kid.as_str());
    assert_eq!(vkeys["vkeys"][0]["signsCheckpoints"], true);

    // On demand: signed now (201), covering every entry, verifiable with the vkey computed
    // from the published JWK alone.
    let (status, cp) = h.post("/v1/audit/checkpoints", Some(&auditor), "{}").await;
    assert_eq!(status, 201, "{cp}");
    let head = kit::note_check::verify(cp["note"].as_str().unwrap(), origin, &public);
    assert_eq!(head.size, h.audit.size());
    assert_eq!(cp["size"], head.size);
    assert_eq!(cp["vkey"], vkey.as_str());
    assert_eq!(cp["kid"], kid.as_str());
    // Nothing new since: the same checkpoint (200), also for the security officer.
    let (status, again) = h.post("/v1/audit/checkpoints", Some(&officer), "{}").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, cp);
    // The log grows: the next one covers it.
    assert_eq!(
        h.post("/v1/policies", Some(&issuer), r#"{"version":"1.0"}"#)
            .await
            .0,
        201
    );
    let (status, next) = h.post("/v1/audit/checkpoints", Some(&auditor), "{}").await;
    assert_eq!(status, 201, "{next}");
    let next_head = kit::note_check::verify(next["note"].as_str().unwrap(), origin, &public);
    assert_eq!(next_head.size, head.size + 1);
    let (status, latest) = h.get("/v1/audit/checkpoint", Some(&auditor)).await;
    assert_eq!(status, 200);
    assert_eq!(latest, next);
    // The log signed nothing inconsistent: the later tree extends the earlier one.
    assert_eq!(h.audit.checkpoints().unwrap().len(), 2);
}
