//! API token administration over the running service (security officer): a created token
//! works at once with exactly its role, its secret is shown once and never listed, revocation
//! takes effect on the next request, and every change is in the audit log as the officer.

mod api_common;

use api_common::{Harness, assert_error};
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::events::Event;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officer_creates_lists_and_revokes_tokens() {
    let h = Harness::start(Limits::default()).await;
    let officer = h.token("officer-1", ApiRole::SecurityOfficer);
    let o = Some(officer.as_str());

    let created = h
        .post("/v1/tokens", o, r#"{"name":"issuer-a","role":"issuer"}"#)
        .await;
    assert_eq!(created.0, 201, "{}", created.1);
    assert_eq!(created.1["name"], "issuer-a");
    assert_eq!(created.1["role"], "issuer");
    let secret = created.1["token"].as_str().unwrap().to_string();

    // The new token works at once, with its role and no other.
    assert_eq!(h.get("/v1/grants/none", Some(&secret)).await.0, 404);
    assert_error(&h.get("/v1/keys", Some(&secret)).await, 403, "FORBIDDEN");
    assert_error(
        &h.post(
            "/v1/tokens",
            Some(&secret),
            r#"{"name":"x","role":"security-officer"}"#,
        )
        .await,
        403,
        "FORBIDDEN",
    );

    // Listed without secret material.
    let listed = h.get("/v1/tokens", o).await;
    assert_eq!(listed.0, 200, "{}", listed.1);
    let text = listed.1.to_string();
    assert!(
        text.contains("issuer-a") && text.contains("officer-1"),
        "{text}"
    );
    let secret_part = secret.rsplit('_').next().unwrap();
    assert!(!text.contains(secret_part), "secret listed: {text}");
    assert!(
        !text.to_lowercase().contains("sha256"),
        "hash listed: {text}"
    );

    // Refusals change nothing.
    assert_error(
        &h.post("/v1/tokens", o, r#"{"name":"issuer-a","role":"issuer"}"#)
            .await,
        409,
        "CONFLICT",
    );
    assert_error(
        &h.post("/v1/tokens", o, r#"{"name":"b","role":"gateway"}"#)
            .await,
        400,
        "SCHEMA_INVALID",
    );
    assert_error(
        &h.post(
            "/v1/tokens",
            o,
            r#"{"name":"b","role":"issuer","secret":"mine"}"#,
        )
        .await,
        400,
        "UNKNOWN_FIELD",
    );
    let r = h
        .client
        .post(h.url("/v1/tokens"))
        .bearer_auth(&officer)
        .header("content-type", "application/json")
        .header("idempotency-key", "k1")
        .body(r#"{"name":"c","role":"issuer"}"#)
        .send()
        .await
        .unwrap();
    assert_error(&api_common::read(r).await, 400, "SCHEMA_INVALID");
    assert_eq!(h.state.tokens().list().unwrap().len(), 2);

    // Revocation: effective on the next request; twice is a conflict; unknown is 404.
    let revoked = h.post("/v1/tokens/issuer-a/revoke", o, "{}").await;
    assert_eq!(revoked.0, 200, "{}", revoked.1);
    assert_eq!(revoked.1["token"]["active"], false);
    assert_error(
        &h.get("/v1/grants/none", Some(&secret)).await,
        401,
        "UNAUTHORIZED",
    );
    assert_error(
        &h.post("/v1/tokens/issuer-a/revoke", o, "{}").await,
        409,
        "CONFLICT",
    );
    assert_error(
        &h.post("/v1/tokens/nobody/revoke", o, "{}").await,
        404,
        "NOT_FOUND",
    );

    let changes: Vec<String> = h
        .events()
        .into_iter()
        .filter_map(|(a, e)| match e {
            Event::TokenCreated { token_name, .. } => {
                Some(format!("created {token_name} by {}", a.name))
            }
            Event::TokenRevoked { token_name } => {
                Some(format!("revoked {token_name} by {}", a.name))
            }
            _ => None,
        })
        .collect();
    let console = mpcp_pa::events::Actor::cli().name;
    assert_eq!(
        changes,
        [
            format!("created officer-1 by {console}"),
            "created issuer-a by officer-1".to_string(),
            "revoked issuer-a by officer-1".to_string()
        ]
    );
}
