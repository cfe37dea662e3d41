//! API token administration over the running service (security officer): a created token
//! works at once with exactly its role, its secret is shown once and never listed, revocation
//! takes effect on the next request, and every change is in the audit log as the officer.

use crate::kit;
use crate::kit::api::{Harness, assert_error};
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::events::Event;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officer_creates_lists_and_revokes_tokens() {
    kit::child::own_process!("officer_creates_lists_and_revokes_tokens");
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
    assert_eq!(h.state.tokens().list().unwrap().len(), 2);

    // With an Idempotency-Key: created once; a retry says so without the secret.
    let send = |key: &'static str, path: &'static str, body: &'static str| {
        h.client
            .post(h.url(path))
            .bearer_auth(&officer)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body)
            .send()
    };
    let first = send("k1", "/v1/tokens", r#"{"name":"c","role":"auditor"}"#)
        .await
        .unwrap();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = kit::api::read(first).await;
    assert_eq!(first.0, 201, "{}", first.1);
    let c_secret = first.1["token"].as_str().unwrap().to_string();
    let c_part = c_secret.splitn(3, '_').nth(2).unwrap().to_string();
    let entries_before = h.events().len();
    for body in [
        r#"{"name":"c","role":"auditor"}"#,
        r#"{ "role": "auditor", "name": "c" }"#,
    ] {
        let again = send("k1", "/v1/tokens", body).await.unwrap();
        assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
        let again = kit::api::read(again).await;
        assert_error(&again, 409, "TOKEN_SECRET_NOT_REPLAYED");
        assert_eq!(again.1["field"], "name");
        let msg = again.1["message"].as_str().unwrap();
        assert!(msg.contains(r#""c""#) && msg.contains("revoke"), "{msg}");
        assert!(!again.1.to_string().contains(&c_part));
    }
    // The same key for another request is refused; the created token works.
    assert_error(
        &kit::api::read(
            send("k1", "/v1/tokens", r#"{"name":"d","role":"auditor"}"#)
                .await
                .unwrap(),
        )
        .await,
        409,
        "IDEMPOTENCY_CONFLICT",
    );
    assert_eq!(h.get("/v1/audit/vkeys", Some(&c_secret)).await.0, 200);
    assert_eq!(h.events().len(), entries_before, "replays logged nothing");
    // Neither the idempotency record nor any other stored value holds the secret.
    for name in h.store.db().tree_names() {
        for item in h.store.db().open_tree(&name).unwrap().iter() {
            let (_, v) = item.unwrap();
            let v = String::from_utf8_lossy(&v);
            assert!(!v.contains(&c_part), "secret stored in {name:?}");
        }
    }
    // A revocation with a key replays its first response byte for byte.
    let revoked = send("k2", "/v1/tokens/c/revoke", "{}").await.unwrap();
    let revoked_bytes = revoked.bytes().await.unwrap();
    let again = send("k2", "/v1/tokens/c/revoke", "{}").await.unwrap();
    assert_eq!(
        (
            again.status().as_u16(),
            again.headers().get("idempotent-replayed").is_some()
        ),
        (200, true)
    );
    assert_eq!(again.bytes().await.unwrap(), revoked_bytes);
    assert_error(
        &h.get("/v1/audit/vkeys", Some(&c_secret)).await,
        401,
        "UNAUTHORIZED",
    );
    assert_eq!(h.state.tokens().list().unwrap().len(), 3);

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
            "created c by officer-1".to_string(),
            "revoked c by officer-1".to_string(),
            "revoked issuer-a by officer-1".to_string()
        ]
    );
}
