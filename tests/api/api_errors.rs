//! Errors, authentication, authorisation and limits over real TLS: every failure is a JSON
//! `{code, message, field?}` with the code's status, and changes nothing.

use mpcp_pa::api::artifacts::trees;
use std::time::Duration;

use crate::kit;
use crate::kit::api::{Harness, assert_error};
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::events::Event;
use serde_json::Value;

const POLICY: &str = r#"{"allowedRails":["xrpl"],"version":"1.0"}"#;
const POLICY_HASH: &str = "b807638320a19a14cc769ccfa37f82998c850eb863074c3b8170c284dce5a711";

fn small_limits() -> Limits {
    Limits {
        max_body_bytes: 1024,
        requests_per_second_per_token: 0,
        ..Limits::default()
    }
}

fn stored_policies(h: &Harness) -> usize {
    h.state.artifacts().count(trees::POLICIES).unwrap()
}

fn policy_events(h: &Harness) -> usize {
    h.events()
        .iter()
        .filter(|(_, e)| matches!(e, Event::PolicyStored { .. }))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_stable_codes_and_changes_nothing() {
    kit::child::own_process!("bad_input_is_refused_with_stable_codes_and_changes_nothing");
    let h = Harness::start(small_limits()).await;
    let issuer = h.token("issuer-1", ApiRole::Issuer);
    let t = Some(issuer.as_str());

    assert_error(
        &h.post("/v1/policies", t, r#"{"version":"1.0""#).await,
        400,
        "JSON_MALFORMED",
    );
    assert_error(
        &h.post("/v1/policies", t, r#"{"version":"1.0","version":"1.0"}"#)
            .await,
        400,
        "JSON_DUPLICATE_KEY",
    );
    assert_error(
        &h.post("/v1/policies", t, r#"{"version":"1.0","limit":1.5}"#)
            .await,
        400,
        "JSON_NUMBER_NOT_INTEGER",
    );
    assert_error(
        &h.post(
            "/v1/policies",
            t,
            r#"{"version":"1.0","n":9007199254740993}"#,
        )
        .await,
        400,
        "JSON_NUMBER_OUT_OF_RANGE",
    );
    assert_error(
        &h.post("/v1/policies", t, r#"{"version":"2.0"}"#).await,
        400,
        "VERSION_UNSUPPORTED",
    );
    assert_error(
        &h.post("/v1/policies", t, "[]").await,
        400,
        "SCHEMA_INVALID",
    );

    // Wrong content type: 415 before the body is looked at.
    let r = h
        .client
        .post(h.url("/v1/policies"))
        .bearer_auth(&issuer)
        .header("content-type", "text/plain")
        .body(POLICY)
        .send()
        .await
        .unwrap();
    assert_error(&kit::api::read(r).await, 415, "UNSUPPORTED_MEDIA_TYPE");
    let r = h
        .client
        .post(h.url("/v1/policies"))
        .bearer_auth(&issuer)
        .body(POLICY)
        .send()
        .await
        .unwrap();
    assert_error(&kit::api::read(r).await, 415, "UNSUPPORTED_MEDIA_TYPE");

    // Over the bound: by Content-Length, and by a chunked body that never declares its size.
    let big = format!(r#"{{"version":"1.0","pad":"{}"}}"#, "x".repeat(2000));
    assert_error(
        &h.post("/v1/policies", t, &big).await,
        413,
        "PAYLOAD_TOO_LARGE",
    );
    let mut chunked = String::new();
    for c in big.as_bytes().chunks(100) {
        chunked.push_str(&format!(
            "{:x}\r\n{}\r\n",
            c.len(),
            std::str::from_utf8(c).unwrap()
        ));
    }
    chunked.push_str("0\r\n\r\n");
    let raw = format!(
        "POST /v1/policies HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {issuer}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n{chunked}"
    );
    let resp = kit::api::raw_exchange(&h, raw.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains(r#""code":"PAYLOAD_TOO_LARGE""#), "{resp}");

    // Unknown member of a closed schema.
    let e = h
        .post(
            "/v1/grants/g-1/revoke",
            t,
            r#"{"reason":"x","because":"y"}"#,
        )
        .await;
    assert_error(&e, 400, "UNKNOWN_FIELD");
    assert_eq!(e.1["field"], "because");

    // Unknown query parameter.
    assert_error(
        &h.get("/v1/trust-bundles?colour=red", None).await,
        400,
        "SCHEMA_INVALID",
    );

    assert_eq!(stored_policies(&h), 0, "refused input stored nothing");
    assert_eq!(policy_events(&h), 0, "refused input recorded nothing");

    // The same policy, well-formed, is accepted: the refusals above were about the input.
    let ok = h.post("/v1/policies", t, POLICY).await;
    assert_eq!(ok.0, 201, "{}", ok.1);
    assert_eq!(ok.1["policyHash"], POLICY_HASH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles() {
    kit::child::own_process!("tokens_and_roles");
    let h = Harness::start(small_limits()).await;
    let issuer = h.token("issuer-1", ApiRole::Issuer);
    let auditor = h.token("auditor-1", ApiRole::Auditor);
    let officer = h.token("officer-1", ApiRole::SecurityOfficer);

    let missing = h.post("/v1/policies", None, POLICY).await;
    assert_error(&missing, 401, "UNAUTHORIZED");
    let r = h.client.post(h.url("/v1/policies")).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");

    let mut forged = issuer.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_error(
        &h.post("/v1/policies", Some(&forged), POLICY).await,
        401,
        "UNAUTHORIZED",
    );
    assert_error(
        &h.post("/v1/policies", Some("not-a-token"), POLICY).await,
        401,
        "UNAUTHORIZED",
    );
    let r = h
        .client
        .post(h.url("/v1/policies"))
        .header("authorization", format!("Basic {issuer}"))
        .header("content-type", "application/json")
        .body(POLICY)
        .send()
        .await
        .unwrap();
    assert_error(&kit::api::read(r).await, 401, "UNAUTHORIZED");

    // Valid tokens of the wrong role.
    assert_error(
        &h.post("/v1/policies", Some(&auditor), POLICY).await,
        403,
        "FORBIDDEN",
    );
    assert_error(
        &h.post("/v1/policies", Some(&officer), POLICY).await,
        403,
        "FORBIDDEN",
    );
    assert_error(&h.get("/v1/keys", Some(&issuer)).await, 403, "FORBIDDEN");
    assert_eq!(h.get("/v1/keys", Some(&officer)).await.0, 200);
    // Authorisation is decided before the body is read: a malformed body still gets 403.
    assert_error(
        &h.post("/v1/policies", Some(&auditor), "{").await,
        403,
        "FORBIDDEN",
    );
    assert_eq!(stored_policies(&h), 0);

    // Revocation takes effect on the next request.
    assert_eq!(h.post("/v1/policies", Some(&issuer), POLICY).await.0, 201);
    h.state
        .tokens()
        .revoke(
            "issuer-1",
            &mpcp_pa::events::Actor::cli(),
            h.audit.as_ref(),
            &mpcp_pa::clock::SystemClock,
        )
        .unwrap();
    assert_error(
        &h.post("/v1/policies", Some(&issuer), POLICY).await,
        401,
        "UNAUTHORIZED",
    );
    let actions: Vec<_> = h
        .events()
        .into_iter()
        .filter_map(|(a, e)| match e {
            Event::TokenCreated { token_name, .. } => Some(format!("created {token_name}")),
            Event::TokenRevoked { token_name } => {
                Some(format!("revoked {token_name} by {}", a.role))
            }
            Event::PolicyStored { .. } => Some(format!("policy by {}:{}", a.name, a.role)),
            _ => None,
        })
        .collect();
    assert_eq!(
        actions,
        [
            "created issuer-1",
            "created auditor-1",
            "created officer-1",
            "policy by issuer-1:issuer",
            "revoked issuer-1 by operator"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_errors_are_json() {
    kit::child::own_process!("routing_errors_are_json");
    let h = Harness::start(small_limits()).await;
    assert_error(&h.get("/nope", None).await, 404, "ROUTE_NOT_FOUND");
    let r = h.client.delete(h.url("/v1/policies")).send().await.unwrap();
    assert_error(&kit::api::read(r).await, 405, "METHOD_NOT_ALLOWED");
    assert_error(
        &h.get("/v1/destination-allowlists/unknown-list", None).await,
        404,
        "NOT_FOUND",
    );
    assert_error(
        &h.get("/.well-known/mpcp-trust-bundle.json", None).await,
        404,
        "NOT_FOUND",
    );
    let r = h.client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(kit::api::read(r).await.1["status"], "ok");
    assert_eq!(h.get("/readyz", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_per_token() {
    kit::child::own_process!("rate_limit_is_per_token");
    let h = Harness::start(Limits {
        requests_per_second_per_token: 1,
        burst_per_token: 3,
        ..Limits::default()
    })
    .await;
    let a = h.token("officer-a", ApiRole::SecurityOfficer);
    let b = h.token("officer-b", ApiRole::SecurityOfficer);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(h.get("/v1/keys", Some(&a)).await.0);
    }
    // A burst of 3 passes; at 1/s refill at most one more can within this loop.
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert!(
        statuses[3..].iter().filter(|s| **s == 429).count() >= 2,
        "{statuses:?}"
    );
    let limited = h.get("/v1/keys", Some(&a)).await;
    assert_error(&limited, 429, "RATE_LIMITED");
    // Another token has its own bucket.
    assert_eq!(h.get("/v1/keys", Some(&b)).await.0, 200);
}

/// Status, head and body of the HTTP/1.1 response to `request`, sent on a new TLS connection
/// while the answer is read (the service may answer before it has read everything).
async fn raw_response(h: &Harness, request: Vec<u8>) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut read, mut write) = tokio::io::split(kit::api::raw_connect(h).await);
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&request).await;
        let _ = write.flush().await;
        write
    });
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut raw)).await;
    drop(writer.await);
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, raw[at + 4..].to_vec())
}

/// A JSON error with `status` and `code`.
fn is_json_error(what: &str, got: &(u16, String, Vec<u8>), status: u16, code: &str) {
    let body: Value = serde_json::from_slice(&got.2).unwrap_or_else(|_| {
        panic!(
            "{what}: {} with a non-JSON body {:?}",
            got.0,
            String::from_utf8_lossy(&got.2)
        )
    });
    assert!(
        got.1.contains("content-type: application/json"),
        "{what}: {}",
        got.1
    );
    assert_error(&(got.0, body), status, code);
}

/// One of the answers hyper writes itself (README, "Errors that are not JSON"): `status`
/// with an empty body.
fn is_hyper_answer(what: &str, got: &(u16, String, Vec<u8>), status: u16) {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    assert!(got.1.contains("content-length: 0"), "{what}: {}", got.1);
    assert!(got.2.is_empty(), "{what}");
}

fn get_with(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{headers}\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_are_json_and_hyper_answers_only_what_it_must() {
    kit::child::own_process!("oversized_heads_are_json_and_hyper_answers_only_what_it_must");
    let limits = Limits {
        max_header_bytes: 16 * 1024,
        ..small_limits()
    };
    let h = Harness::start(limits).await;
    let big = |n: usize| "a".repeat(n);

    // What the service sees and answers in JSON.
    let got = raw_response(
        &h,
        get_with("/healthz", &format!("x-big: {}\r\n", big(20_000))),
    )
    .await;
    is_json_error("a 20 kB header", &got, 431, "HEADERS_TOO_LARGE");
    let many: String = (0..90)
        .map(|i| format!("x-h{i}: {}\r\n", big(300)))
        .collect();
    let got = raw_response(&h, get_with("/healthz", &many)).await;
    is_json_error("90 headers of 300 bytes", &got, 431, "HEADERS_TOO_LARGE");
    let got = raw_response(&h, get_with(&format!("/{}", big(20_000)), "")).await;
    is_json_error("a 20,000-character path", &got, 414, "URI_TOO_LONG");
    let got = raw_response(&h, get_with(&format!("/healthz?q={}", big(20_000)), "")).await;
    is_json_error("a 20,000-character query", &got, 414, "URI_TOO_LONG");
    // Under the limit, the request is served as usual.
    let got = raw_response(
        &h,
        get_with("/healthz", &format!("x-big: {}\r\n", big(8_000))),
    )
    .await;
    assert_eq!(got.0, 200);

    // What hyper answers itself, before any request exists (documented in the README).
    let got = raw_response(&h, get_with(&format!("/{}", big(70_000)), "")).await;
    is_hyper_answer("a 70,000-character path", &got, 414);
    let got = raw_response(
        &h,
        get_with("/healthz", &format!("x-big: {}\r\n", big(450_000))),
    )
    .await;
    is_hyper_answer("a head beyond the read buffer", &got, 431);
    let fields: String = (0..101).map(|i| format!("x-h{i}: 1\r\n")).collect();
    let got = raw_response(&h, get_with("/healthz", &fields)).await;
    is_hyper_answer("more than 100 header fields", &got, 431);
    let got = raw_response(
        &h,
        b"POST /v1/policies HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n".to_vec(),
    )
    .await;
    is_hyper_answer("a Content-Length that is not a number", &got, 400);
    let got = raw_response(
        &h,
        b"POST /v1/policies HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"
            .to_vec(),
    )
    .await;
    is_hyper_answer("two different Content-Lengths", &got, 400);
    let got = raw_response(
        &h,
        b"POST /v1/policies HTTP/1.1\r\nhost: x\r\ncontent-length: 18446744073709551615\r\n\r\n"
            .to_vec(),
    )
    .await;
    is_hyper_answer("a Content-Length of 2^64 - 1", &got, 431);
    let got = raw_response(
        &h,
        b"POST /v1/policies HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n".to_vec(),
    )
    .await;
    is_hyper_answer("a Transfer-Encoding not ending in chunked", &got, 400);
    let got = raw_response(&h, b"GET /healthz HTTP/1.7\r\nhost: x\r\n\r\n".to_vec()).await;
    is_hyper_answer("an unknown HTTP version", &got, 400);
    let got = raw_response(
        &h,
        b"GET /healthz HTTP/1.1\r\nbad header: x\r\n\r\n".to_vec(),
    )
    .await;
    is_hyper_answer("a malformed header name", &got, 400);
    let got = raw_response(&h, b"G(T /healthz HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()).await;
    is_hyper_answer("a malformed method", &got, 400);

    // HTTP/2: the same head limits, in JSON.
    let h2 = reqwest::Client::builder()
        .tls_backend_preconfigured(kit::api::client_tls(&h.tls, &[b"h2"]))
        .build()
        .unwrap();
    let r = h2
        .get(h.url("/healthz"))
        .header("x-big", big(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_error(&kit::api::read(r).await, 431, "HEADERS_TOO_LARGE");
    let r = h2
        .get(h.url(&format!("/{}", big(20_000))))
        .send()
        .await
        .unwrap();
    assert_error(&kit::api::read(r).await, 414, "URI_TOO_LONG");
}
