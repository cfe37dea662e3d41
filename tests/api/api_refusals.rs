//! What the audit log records of refused requests: a refusal of an authenticated token
//! (403 for its role, 429 rate limited) is an audit entry `request_refused` naming the token,
//! the route template and the code, never the body or a secret, and at most one entry per
//! token, route and code per minute, whose `count` says how many refusals it stands for.
//! Unauthenticated refusals (401) and reads are counted in memory, never logged.

use crate::kit;
use crate::kit::api::Harness;
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::events::Event;

fn refusals(h: &Harness) -> Vec<(String, String, String, u64)> {
    h.events()
        .into_iter()
        .filter_map(|(a, e)| match e {
            Event::RequestRefused {
                token_name,
                route,
                code,
                count,
            } => {
                assert_eq!(a.name, token_name);
                Some((token_name, route, code, count))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_refusals_are_logged_once_per_token_route_and_code_per_minute() {
    kit::child::own_process!(
        "authenticated_refusals_are_logged_once_per_token_route_and_code_per_minute"
    );
    let h = Harness::start(Limits {
        requests_per_second_per_token: 0,
        ..Limits::default()
    })
    .await;
    let issuer = h.token("issuer-1", ApiRole::Issuer);
    for _ in 0..50 {
        let (s, _) = h.get("/v1/keys", Some(&issuer)).await;
        assert_eq!(s, 403);
    }
    let (s, _) = h
        .post("/v1/tokens/issuer-1/revoke", Some(&issuer), "{}")
        .await;
    assert_eq!(s, 403);
    // 401s write nothing.
    let size = h.audit.size();
    for _ in 0..20 {
        let (s, _) = h.get("/v1/keys", Some("mpcppa_0000_nope")).await;
        assert_eq!(s, 401);
    }
    assert_eq!(h.audit.size(), size, "401 wrote to the audit log");
    assert_eq!(
        refusals(&h),
        vec![
            (
                "issuer-1".to_string(),
                "GET /v1/keys".to_string(),
                "FORBIDDEN".to_string(),
                1
            ),
            (
                "issuer-1".to_string(),
                "POST /v1/tokens/{name}/revoke".to_string(),
                "FORBIDDEN".to_string(),
                1
            ),
        ]
    );
    let c = h.state.request_counters().snapshot();
    assert_eq!(c.refusals_recorded, 2);
    assert_eq!(c.refusals_aggregated, 49);
    assert_eq!(c.unauthenticated, 20);
}

/// 429s of an authenticated token are recorded the same way: one entry per minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_refusals_are_logged_once_per_minute() {
    kit::child::own_process!("rate_limited_refusals_are_logged_once_per_minute");
    let h = Harness::start(Limits {
        requests_per_second_per_token: 1,
        burst_per_token: 1,
        ..Limits::default()
    })
    .await;
    let issuer = h.token("issuer-1", ApiRole::Issuer);
    let mut limited = 0;
    for _ in 0..30 {
        let (s, _) = h.get("/v1/grants/g-none", Some(&issuer)).await;
        limited += u64::from(s == 429);
    }
    assert!(limited >= 20, "only {limited} refused");
    let got = refusals(&h);
    assert_eq!(
        got,
        vec![(
            "issuer-1".to_string(),
            "GET /v1/grants/{grantId}".to_string(),
            "RATE_LIMITED".to_string(),
            1
        )]
    );
    let c = h.state.request_counters().snapshot();
    assert_eq!(c.refusals_recorded + c.refusals_aggregated, limited);
}
