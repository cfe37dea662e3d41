//! Scoped authorization receipts through the running service (SoftHSM2 receipt key, sled,
//! TLS): decisions signed in the HSM and checked by the library verifier and by the
//! independent Node checker, the single-use registry with its distinct verdicts, outcomes
//! signed once and replayed byte for byte, supersession, and policy changes.

use std::collections::BTreeMap;

use crate::kit;
use crate::kit::api::{Harness, PROVIDER, assert_error, read};
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::events::Event;
use mpcp_pa::receipts::record::decision_digest;
use mpcp_pa::receipts::verify::{Expect, ReceiptKeys, admit, pair};
use serde_json::{Value, json};

const SEED_DIGEST: &str = "sha256:aeac6a08f83dafe8569a1a195e2874b863a7e3c7d751b6c368dbc3850fd549bb";

/// The seed's `tools/call` params, with a non-binding `_meta` member the gateway saw.
fn seed_call(extra_meta: Value) -> Value {
    let mut meta = json!({"authorization_binding": {"nonce": "server-chosen-nonce-001"}});
    if let (Some(m), Some(extra)) = (meta.as_object_mut(), extra_meta.as_object()) {
        m.extend(extra.clone());
    }
    json!({
        "name": "query_table",
        "arguments": {"limit": 10, "table": "employees"},
        "_meta": meta,
    })
}

fn policy(id: &str) -> Value {
    json!({
        "version": 1,
        "policyId": id,
        "rules": [
            {"requesters": ["requester-1"], "audiences": [PROVIDER], "tools": ["query_table"],
             "decision": "allow", "maxAgeSeconds": 300, "reason": "hr-read"},
            {"requesters": ["*"], "audiences": ["*"], "tools": ["drop_table"],
             "decision": "block", "maxAgeSeconds": 60}
        ],
        "otherwise": "escalate",
    })
}

struct Fx {
    h: Harness,
    officer: String,
    requester: String,
    consumer: String,
}

impl Fx {
    async fn start() -> Fx {
        let h = Harness::start(Limits::default()).await;
        Fx {
            officer: h.token("officer-1", ApiRole::SecurityOfficer),
            requester: h.token("requester-1", ApiRole::ReceiptRequester),
            consumer: h.token("consumer-1", ApiRole::ReceiptConsumer),
            h,
        }
    }

    async fn put_policy(&self, p: &Value) -> (u16, Value) {
        self.h
            .put("/v1/receipts/policy", &self.officer, &p.to_string())
            .await
    }

    /// A decision for `call`, with the raw response bytes.
    async fn decide_raw(&self, call: &Value, action: &str, key: Option<&str>) -> (u16, Vec<u8>) {
        let body = json!({
            "audience": PROVIDER,
            "actionId": action,
            "subject": "agent:hr-assistant",
            "request": call,
        });
        let mut req = self
            .h
            .client
            .post(self.h.url("/v1/receipts/decisions"))
            .bearer_auth(&self.requester)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }

    async fn decide(&self, call: &Value, action: &str) -> Value {
        let (status, bytes) = self.decide_raw(call, action, None).await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&bytes));
        serde_json::from_slice(&bytes).unwrap()
    }

    async fn consume_as(&self, token: &str, decision: &Value, call: &Value) -> (u16, Value) {
        self.h
            .post(
                "/v1/receipts/consume",
                Some(token),
                &json!({"decision": decision, "request": call}).to_string(),
            )
            .await
    }

    async fn consume(&self, decision: &Value, call: &Value) -> (u16, Value) {
        self.consume_as(&self.consumer, decision, call).await
    }

    async fn outcome_raw(&self, body: &Value) -> (u16, Vec<u8>) {
        let r = self
            .h
            .client
            .post(self.h.url("/v1/receipts/outcomes"))
            .bearer_auth(&self.consumer)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }

    async fn keys(&self) -> Value {
        let (status, v) = self
            .h
            .get("/.well-known/mpcp-receipt-keys.json", None)
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }
}

fn verdict(got: &(u16, Value), status: u16, code: &str, verdict: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert_eq!(got.1["verdict"], verdict, "{}", got.1);
}

fn expect_now() -> Expect<'static> {
    Expect {
        now: time::OffsetDateTime::now_utc(),
        max_age: std::time::Duration::from_secs(3600),
        skew: std::time::Duration::from_secs(300),
        audience: Some(PROVIDER),
    }
}

/// Writes the records into a directory the Node checker reads as a vector manifest, with
/// the key set the service published, and runs it: every verdict must be reproduced.
/// One vector for the Node checker: id, decisions, outcome, request, expected verdict.
type Case<'a> = (
    &'a str,
    Vec<&'a Value>,
    Option<&'a Value>,
    Option<&'a Value>,
    &'a str,
);

fn node_checks(keys: &Value, vectors: Vec<Case<'_>>) {
    let dir = kit::tmp::dir("receipt-e2e");
    let p = dir.path();
    std::fs::write(p.join("keys.json"), keys.to_string()).unwrap();
    let at = mpcp_pa::clock::format_rfc3339(time::OffsetDateTime::now_utc());
    let mut list = Vec::new();
    for (i, (id, decisions, outcome, request, expect)) in vectors.into_iter().enumerate() {
        let mut names = Vec::new();
        for (j, d) in decisions.into_iter().enumerate() {
            let name = format!("d{i}-{j}.json");
            std::fs::write(p.join(&name), d.to_string()).unwrap();
            names.push(name);
        }
        let mut v = json!({"id": id, "at": at, "audience": PROVIDER, "maxAgeSeconds": 300,
                           "decisions": names, "expect": {"verdict": expect}});
        if let Some(o) = outcome {
            std::fs::write(p.join(format!("o{i}.json")), o.to_string()).unwrap();
            v["outcome"] = json!(format!("o{i}.json"));
        }
        if let Some(r) = request {
            std::fs::write(p.join(format!("r{i}.json")), r.to_string()).unwrap();
            v["request"] = json!(format!("r{i}.json"));
        }
        list.push(v);
    }
    std::fs::write(
        p.join("manifest.json"),
        json!({"keys": "keys.json", "vectors": list}).to_string(),
    )
    .unwrap();
    let out = kit::node::run("verify_receipts.mjs", [p]);
    assert!(out.contains(" verdicts reproduced"), "{out}");
}

fn events(h: &Harness) -> BTreeMap<&'static str, usize> {
    let mut n = BTreeMap::new();
    for (_, e) in h.events() {
        let k = match e {
            Event::ReceiptPolicySet { .. } => "policy",
            Event::ReceiptDecided { .. } => "decided",
            Event::ReceiptConsumed { .. } => "consumed",
            Event::ReceiptOutcomeSigned { .. } => "outcome",
            _ => continue,
        };
        *n.entry(k).or_default() += 1;
    }
    n
}

/// One high-risk call from decision to outcome, and every way a provider can be asked to
/// run it again or differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_consume_and_outcome_over_the_service() {
    kit::child::own_process!("decision_consume_and_outcome_over_the_service");
    let f = Fx::start().await;
    let gateway_view = seed_call(json!({"progressToken": "gw-7"}));
    let provider_view = seed_call(json!({"traceparent": "00-abc-01", "progressToken": 9}));

    // Nothing is decided before a policy is set.
    let (status, body) = f.decide_raw(&gateway_view, "act-0", None).await;
    assert_error(
        &(status, serde_json::from_slice(&body).unwrap()),
        409,
        "RECEIPT_POLICY_NOT_SET",
    );
    assert_eq!(f.put_policy(&policy("hr-1")).await.0, 201);
    assert_eq!(f.put_policy(&policy("hr-1")).await.0, 200, "unchanged");
    let (status, got) = f.h.get("/v1/receipts/policy", Some(&f.officer)).await;
    assert_eq!((status, &got["policy"]["policyId"]), (200, &json!("hr-1")));

    // The receipt key set: P-256, active, from the HSM.
    let keys = f.keys().await;
    let list = keys["keys"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{keys}");
    assert_eq!(
        (&list[0]["crv"], &list[0]["active"]),
        (&json!("P-256"), &json!(true))
    );
    let receipt_keys = ReceiptKeys::from_jwks(&keys).unwrap();

    // A missing binding fails closed, naming the member.
    let mut unbound = gateway_view.clone();
    unbound["_meta"] = json!({"progressToken": "gw-7"});
    let (status, body) = f.decide_raw(&unbound, "act-x", None).await;
    let got = (status, serde_json::from_slice::<Value>(&body).unwrap());
    assert_error(&got, 400, "AUTHORIZATION_BINDING_INVALID");
    assert_eq!(got.1["field"], "request._meta.authorization_binding");

    // The decision: the seed's digest, whatever non-binding _meta the gateway saw.
    let d = f.decide(&gateway_view, "act-1").await;
    assert_eq!(d["backLink"]["attestationDigest"], SEED_DIGEST);
    assert_eq!(d["backLink"]["attestationNonce"], "server-chosen-nonce-001");
    assert_eq!(d["decisionDerived"]["decision"], "allow");
    assert_eq!(d["issuerAsserted"]["aud"], PROVIDER);
    assert_eq!(d["issuerAsserted"]["nonce"].as_str().unwrap().len(), 64);
    assert_eq!(d["signature"].as_str().unwrap().len(), 128);
    admit(&d, &receipt_keys, &expect_now(), &provider_view).expect("admitted offline");
    let digest = decision_digest(&d).unwrap();

    // Idempotency-Key: the same record byte for byte.
    let mut elsewhere = gateway_view.clone();
    elsewhere["_meta"]["authorization_binding"]["nonce"] = json!("nonce-idem");
    let a = f.decide_raw(&elsewhere, "act-9", Some("k-1")).await;
    let b = f.decide_raw(&elsewhere, "act-9", Some("k-1")).await;
    assert_eq!((a.0, b.0), (201, 201));
    assert_eq!(a.1, b.1);
    // A provider whose admitted answer was lost retries under its Idempotency-Key and gets
    // it again; without the key the retry is already_consumed.
    let consume_keyed = || async {
        let body = json!({"decision": serde_json::from_slice::<Value>(&a.1).unwrap(),
                          "request": elsewhere});
        let r =
            f.h.client
                .post(f.h.url("/v1/receipts/consume"))
                .bearer_auth(&f.consumer)
                .header("content-type", "application/json")
                .header("idempotency-key", "c-1")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
        let replayed = r.headers().contains_key("idempotent-replayed");
        let (status, v) = read(r).await;
        (status, replayed, v)
    };
    let (s1, r1, v1) = consume_keyed().await;
    let (s2, r2, v2) = consume_keyed().await;
    assert_eq!(
        (s1, r1, &v1["verdict"]),
        (200, false, &json!("admitted")),
        "{v1}"
    );
    assert_eq!((s2, r2, &v2), (200, true, &v1), "{v2}");
    let first: Value = serde_json::from_slice(&a.1).unwrap();
    verdict(
        &f.consume(&first, &elsewhere).await,
        409,
        "RECEIPT_ALREADY_CONSUMED",
        "already_consumed",
    );

    // Checks before the registry: another audience's consumer, changed arguments.
    let other = f.h.token_for(
        "consumer-other",
        ApiRole::ReceiptConsumer,
        &["mcp://other.test".to_string()],
    );
    let got = f.consume_as(&other, &d, &provider_view).await;
    verdict(&got, 403, "RECEIPT_REFUSED", "wrong_audience");
    let mut changed = provider_view.clone();
    changed["arguments"]["limit"] = json!(10000);
    verdict(
        &f.consume(&d, &changed).await,
        403,
        "RECEIPT_REFUSED",
        "digest_mismatch",
    );
    let mut forged = d.clone();
    forged["decisionDerived"]["reason"] = json!("anything");
    verdict(
        &f.consume(&forged, &provider_view).await,
        403,
        "RECEIPT_REFUSED",
        "signature_invalid",
    );
    assert_eq!(
        events(&f.h).get("consumed"),
        Some(&1),
        "refusals change nothing (the one admission is the keyed one above)"
    );

    // The first consume admits; a retry is already_consumed, without an outcome yet.
    let got = f.consume(&d, &provider_view).await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(
        (&got.1["verdict"], &got.1["decisionDigest"]),
        (&json!("admitted"), &json!(digest))
    );
    let got = f.consume(&d, &provider_view).await;
    verdict(&got, 409, "RECEIPT_ALREADY_CONSUMED", "already_consumed");
    assert!(got.1.get("outcome").is_none());
    // The consumed call retried with changed arguments, or another tool, is out of scope.
    verdict(
        &f.consume(&d, &changed).await,
        409,
        "RECEIPT_OUT_OF_SCOPE",
        "out_of_scope",
    );
    let mut renamed = provider_view.clone();
    renamed["name"] = json!("query_table_v2");
    verdict(
        &f.consume(&d, &renamed).await,
        409,
        "RECEIPT_OUT_OF_SCOPE",
        "out_of_scope",
    );

    // The outcome: signed once, replayed byte for byte, never changed.
    let report = json!({"decisionDigest": digest, "status": "executed",
        "resultCommitment": {"projection": "{\"rows\":10}",
            "projectionDigest": mpcp_pa::receipts::projection::sha256_tagged(b"{\"rows\":10}")}});
    let (status, first) = f.outcome_raw(&report).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&first));
    let (status, again) = f.outcome_raw(&report).await;
    assert_eq!((status, &again), (200, &first), "replayed byte for byte");
    let mut refused = report.clone();
    refused["status"] = json!("refused");
    let (status, body) = f.outcome_raw(&refused).await;
    assert_error(
        &(status, serde_json::from_slice(&body).unwrap()),
        409,
        "RECEIPT_OUTCOME_EXISTS",
    );
    let outcome: Value = serde_json::from_slice(&first).unwrap();
    pair(&d, &outcome, &receipt_keys, &expect_now()).expect("outcome pairs");
    let got = f.consume(&d, &provider_view).await;
    verdict(&got, 409, "RECEIPT_ALREADY_CONSUMED", "already_consumed");
    assert_eq!(got.1["outcome"], outcome, "the prior outcome comes back");

    // A later decision under the same binding supersedes the first, strictly later.
    let d2 = f.decide(&gateway_view, "act-1").await;
    assert!(
        d2["decisionDerived"]["decidedAt"].as_str() > d["decisionDerived"]["decidedAt"].as_str()
    );
    verdict(
        &f.consume(&d, &provider_view).await,
        403,
        "RECEIPT_REFUSED",
        "superseded",
    );
    verdict(
        &f.consume(&d2, &provider_view).await,
        409,
        "RECEIPT_ALREADY_CONSUMED",
        "already_consumed",
    );

    // The consumed nonce with other arguments is another digest: out of scope.
    let mut other_call = gateway_view.clone();
    other_call["arguments"]["table"] = json!("salaries");
    let d3 = f.decide(&other_call, "act-3").await;
    verdict(
        &f.consume(&d3, &other_call).await,
        409,
        "RECEIPT_OUT_OF_SCOPE",
        "out_of_scope",
    );
    // An outcome for a decision that was never admitted.
    let (status, body) = f
        .outcome_raw(&json!({"decisionDigest": decision_digest(&d3).unwrap(), "status": "errored"}))
        .await;
    assert_error(
        &(status, serde_json::from_slice(&body).unwrap()),
        409,
        "RECEIPT_NOT_CONSUMED",
    );

    // A blocked tool is a signed block decision, denied at consume.
    let mut drop = seed_call(json!({}));
    drop["name"] = json!("drop_table");
    drop["_meta"]["authorization_binding"]["nonce"] = json!("nonce-drop");
    let blocked = f.decide(&drop, "act-4").await;
    assert_eq!(blocked["decisionDerived"]["decision"], "block");
    verdict(
        &f.consume(&blocked, &drop).await,
        403,
        "RECEIPT_REFUSED",
        "denied",
    );

    // A tool no rule names gets the policy's otherwise: a signed escalate, denied at consume.
    let mut held = seed_call(json!({}));
    held["name"] = json!("export_table");
    held["_meta"]["authorization_binding"]["nonce"] = json!("nonce-held");
    let escalated = f.decide(&held, "act-6").await;
    assert_eq!(escalated["decisionDerived"]["decision"], "escalate");
    verdict(
        &f.consume(&escalated, &held).await,
        403,
        "RECEIPT_REFUSED",
        "denied",
    );

    // A policy change puts an unconsumed allow decision out of scope.
    let mut fresh = seed_call(json!({}));
    fresh["_meta"]["authorization_binding"]["nonce"] = json!("nonce-fresh");
    let pending = f.decide(&fresh, "act-5").await;
    assert_eq!(f.put_policy(&policy("hr-2")).await.0, 201);
    verdict(
        &f.consume(&pending, &fresh).await,
        409,
        "RECEIPT_OUT_OF_SCOPE",
        "out_of_scope",
    );

    // Node's crypto reaches the same verdicts on what the HSM signed.
    node_checks(
        &f.keys().await,
        vec![
            ("admitted", vec![&d], None, Some(&provider_view), "valid"),
            ("paired", vec![&d], Some(&outcome), None, "valid"),
            (
                "superseding",
                vec![&d, &d2],
                None,
                Some(&provider_view),
                "valid",
            ),
            (
                "changed_args",
                vec![&d],
                None,
                Some(&changed),
                "digest_mismatch",
            ),
            ("blocked", vec![&blocked], None, Some(&drop), "denied"),
            ("forged", vec![&forged], None, None, "signature_invalid"),
        ],
    );

    // The metrics count what was done, by decision and by verdict.
    let auditor = f.h.token("auditor-1", ApiRole::Auditor);
    let r =
        f.h.client
            .get(f.h.url("/metrics"))
            .bearer_auth(&auditor)
            .send()
            .await
            .unwrap();
    let text = r.text().await.unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    };
    for (decision, n) in [("allow", 5.0), ("block", 1.0), ("escalate", 1.0)] {
        let series = format!("mpcp_receipt_decisions_total{{decision=\"{decision}\"}}");
        assert_eq!(value(&series), n, "{series}");
    }
    for (verdict, n) in [
        ("admitted", 3.0),
        ("already_consumed", 4.0),
        ("out_of_scope", 4.0),
        ("wrong_audience", 1.0),
        ("digest_mismatch", 1.0),
        ("signature_invalid", 1.0),
        ("superseded", 1.0),
        ("denied", 2.0),
    ] {
        let series = format!("mpcp_receipt_consume_verdicts_total{{verdict=\"{verdict}\"}}");
        assert_eq!(value(&series), n, "{series}");
    }
    assert_eq!(value("mpcp_receipt_outcomes_total"), 1.0);

    let n = events(&f.h);
    assert_eq!(n["policy"], 2);
    assert_eq!(n["decided"], 7, "{n:?}");
    assert_eq!(n["consumed"], 2);
    assert_eq!(n["outcome"], 1);
}

/// Providers racing to consume one decision: exactly one is admitted, every other gets
/// already_consumed, and one registry entry and one audit entry exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumes_admit_exactly_once() {
    kit::child::own_process!("concurrent_consumes_admit_exactly_once");
    let f = std::sync::Arc::new(Fx::start().await);
    assert_eq!(f.put_policy(&policy("hr-1")).await.0, 201);
    let call = seed_call(json!({}));
    let d = f.decide(&call, "act-1").await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (f, d, call) = (f.clone(), d.clone(), call.clone());
        tasks.push(tokio::spawn(async move { f.consume(&d, &call).await }));
    }
    let mut verdicts = BTreeMap::new();
    for t in tasks {
        let (status, v) = t.await.unwrap();
        *verdicts
            .entry((status, v["verdict"].as_str().unwrap().to_string()))
            .or_insert(0) += 1;
    }
    assert_eq!(
        verdicts,
        BTreeMap::from([
            ((200, "admitted".to_string()), 1),
            ((409, "already_consumed".to_string()), 15)
        ])
    );
    assert_eq!(events(&f.h)["consumed"], 1);
}

/// The receipt key follows the lifecycle of every role: after a rotation new records name
/// the new key and records of the old one still verify; once the old key is revoked it is
/// published `active: false` and what it signed is refused (`unknown_key`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_receipt_key_no_longer_authenticates() {
    kit::child::own_process!("a_revoked_receipt_key_no_longer_authenticates");
    let f = Fx::start().await;
    assert_eq!(f.put_policy(&policy("hr-1")).await.0, 201);
    let call = |nonce: &str| {
        let mut c = seed_call(json!({}));
        c["_meta"]["authorization_binding"]["nonce"] = json!(nonce);
        c
    };
    let before = f.decide(&call("n-before"), "act-1").await;
    let held = f.decide(&call("n-held"), "act-2").await;
    let old = before["issuerAsserted"]["secretVersion"].clone();
    let (status, rot) =
        f.h.post("/v1/keys/receipt-signing/rotate", Some(&f.officer), "{}")
            .await;
    assert_eq!(status, 200, "{rot}");
    let new = rot["activated"]["kid"].clone();
    assert_ne!(new, old);
    let after = f.decide(&call("n-after"), "act-3").await;
    assert_eq!(after["issuerAsserted"]["secretVersion"], new);
    assert_eq!(
        f.consume(&before, &call("n-before")).await.0,
        200,
        "old key still active"
    );

    let (status, rev) =
        f.h.post(
            &format!("/v1/keys/{}/revoke", old.as_str().unwrap()),
            Some(&f.officer),
            r#"{"reason":"compromised"}"#,
        )
        .await;
    assert_eq!(status, 200, "{rev}");
    let keys = f.keys().await;
    let published: Vec<(Value, Value)> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kid"].clone(), k["active"].clone()))
        .collect();
    assert!(published.contains(&(old.clone(), json!(false))), "{keys}");
    assert!(published.contains(&(new.clone(), json!(true))), "{keys}");
    verdict(
        &f.consume(&held, &call("n-held")).await,
        403,
        "RECEIPT_REFUSED",
        "unknown_key",
    );
    assert_eq!(f.consume(&after, &call("n-after")).await.0, 200);
}
