//! Policy documents through the service: the stored hash is the L0 policy vector, storing
//! again is a no-op, the document reads back, and only the first store is recorded.

use crate::kit;
use crate::kit::api::{Harness, assert_error};
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::events::Event;

const L0_HASH: &str = "b807638320a19a14cc769ccfa37f82998c850eb863074c3b8170c284dce5a711";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_hash_and_read_back() {
    kit::child::own_process!("store_hash_and_read_back");
    let h = Harness::start(Limits::default()).await;
    let t = h.token("issuer-1", ApiRole::Issuer);
    let t = Some(t.as_str());
    let first = h
        .post(
            "/v1/policies",
            t,
            r#"{"version":"1.0","allowedRails":["xrpl"]}"#,
        )
        .await;
    assert_eq!(first.0, 201, "{}", first.1);
    assert_eq!(first.1["policyHash"], L0_HASH);
    // Same document, other member order and whitespace: same policy, nothing new.
    let again = h
        .post(
            "/v1/policies",
            t,
            "{ \"allowedRails\" : [ \"xrpl\" ] , \"version\" : \"1.0\" }",
        )
        .await;
    assert_eq!(
        (again.0, &again.1["policyHash"]),
        (200, &first.1["policyHash"])
    );
    let got = h.get(&format!("/v1/policies/{L0_HASH}"), t).await;
    assert_eq!(got.0, 200);
    assert_eq!(
        got.1["policy"],
        serde_json::json!({"allowedRails": ["xrpl"], "version": "1.0"})
    );
    assert_error(
        &h.get(&format!("/v1/policies/{}", "0".repeat(64)), t).await,
        404,
        "NOT_FOUND",
    );
    assert_error(
        &h.get("/v1/policies/not-a-hash", t).await,
        400,
        "SCHEMA_INVALID",
    );
    let stored: Vec<_> = h
        .events()
        .into_iter()
        .filter_map(|(a, e)| match e {
            Event::PolicyStored { policy_hash } => Some((a.name, policy_hash)),
            _ => None,
        })
        .collect();
    assert_eq!(stored, [("issuer-1".to_string(), L0_HASH.to_string())]);
}
