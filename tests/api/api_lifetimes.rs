//! The appliance's own grant-lifetime ceiling (`max_grant_lifetime`, default 30 days,
//! `serve --max-grant-lifetime-seconds`): it applies when a policy sets no
//! `maxGrantLifetimeSeconds`, and a policy can only shorten it, never lengthen it.

use crate::kit;
use std::time::Duration;

use crate::kit::api::{Harness, assert_error};
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::clock::format_rfc3339;
use serde_json::{Value, json};

fn in_secs(s: i64) -> String {
    format_rfc3339(time::OffsetDateTime::now_utc() + time::Duration::seconds(s))
}

fn grant(policy_hash: &str, expires_in: i64) -> String {
    json!({
        "version": "1.0",
        "policyHash": policy_hash,
        "subjectId": "vehicle-4711",
        "scope": "SESSION",
        "allowedRails": ["xrpl"],
        "expiresAt": in_secs(expires_in),
        "authorizedGateway": "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b5",
        "velocityLimit": {"maxPayments": 10, "windowSeconds": 3600},
        "budgetMinor": "50000",
        "budgetCurrency": "XRP"
    })
    .to_string()
}

async fn policy(h: &Harness, issuer: &str, body: Value) -> String {
    let (s, v) = h
        .post("/v1/policies", Some(issuer), &body.to_string())
        .await;
    assert_eq!(s, 201, "{v}");
    v["policyHash"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_appliance_ceiling_bounds_every_grant() {
    kit::child::own_process!("the_appliance_ceiling_bounds_every_grant");
    let day = 86400;
    let h = Harness::start(Limits::default()).await;
    let issuer = h.token("issuer-1", ApiRole::Issuer);
    let open = policy(&h, &issuer, json!({"version": "1.0"})).await;
    let long = policy(
        &h,
        &issuer,
        json!({"version": "1.0", "maxGrantLifetimeSeconds": 90 * day}),
    )
    .await;
    for hash in [&open, &long] {
        let e = h
            .post("/v1/grants", Some(&issuer), &grant(hash, 31 * day))
            .await;
        assert_error(&e, 400, "LIFETIME_EXCEEDED");
        assert!(
            e.1["message"].as_str().unwrap().contains("2592000"),
            "{}",
            e.1
        );
        let (s, v) = h
            .post("/v1/grants", Some(&issuer), &grant(hash, 29 * day))
            .await;
        assert_eq!(s, 201, "{v}");
    }

    // A lower configured ceiling wins over a policy that allows a day.
    let h = Harness::start_with(Limits::default(), |c| {
        c.max_grant_lifetime = Duration::from_secs(3600)
    })
    .await;
    let issuer = h.token("issuer-1", ApiRole::Issuer);
    let daily = policy(
        &h,
        &issuer,
        json!({"version": "1.0", "maxGrantLifetimeSeconds": day}),
    )
    .await;
    assert_error(
        &h.post("/v1/grants", Some(&issuer), &grant(&daily, 7200))
            .await,
        400,
        "LIFETIME_EXCEEDED",
    );
    let (s, v) = h
        .post("/v1/grants", Some(&issuer), &grant(&daily, 1800))
        .await;
    assert_eq!(s, 201, "{v}");
}
