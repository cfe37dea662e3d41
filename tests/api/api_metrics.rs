//! `GET /metrics` in the service (real TLS, SoftHSM2, sled): the text passes `promtool check
//! metrics`, and the counters move by exactly what a scripted run did: N grants signed, a
//! replay and a conflict of an `Idempotency-Key`, a refused body, an unknown route,
//! rate-limit refusals; the keys by role and state and the open connections are there.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::kit;
use crate::kit::api::Harness;
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::clock::format_rfc3339;
use serde_json::{Value, json};

const GATEWAY: &str = "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b5";
const GRANTS: u64 = 3;
/// Connections one peer may hold.
const PER_PEER: usize = 2;

/// The value of the series `series` (name and labels as rendered), 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(h: &Harness, token: &str) -> String {
    let r = h
        .client
        .get(h.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    r.text().await.unwrap()
}

/// `promtool check metrics` on `text` (the Debian `prometheus` package, which
/// scripts/ensure-deps.sh installs): parse errors and lint problems fail.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is needed: scripts/ensure-deps.sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn post(
    h: &Harness,
    path: &str,
    token: &str,
    body: &Value,
    key: Option<&str>,
) -> (u16, bool) {
    let mut req = h
        .client
        .post(h.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let r = req.send().await.unwrap();
    (
        r.status().as_u16(),
        r.headers().contains_key("idempotent-replayed"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_what_was_done_and_promtool_accepts_them() {
    kit::child::own_process!("counters_move_by_exactly_what_was_done_and_promtool_accepts_them");
    let h = Harness::start(Limits {
        requests_per_second_per_token: 1,
        burst_per_token: 20,
        max_connections_per_ip: PER_PEER,
        ..Limits::default()
    })
    .await;
    let issuer = h.token("issuer-1", ApiRole::Issuer);
    // A scraper's token: it reads the metrics and nothing else.
    let auditor = h.token("prometheus-1", ApiRole::Monitoring);
    let hammer = h.token("auditor-2", ApiRole::Auditor);
    let policy = json!({"version": "1.0", "maxGrantLifetimeSeconds": 86400});
    let (status, _) = h
        .post("/v1/policies", Some(&issuer), &policy.to_string())
        .await;
    assert_eq!(status, 201);
    let (_, p) = h
        .post("/v1/policies", Some(&issuer), &policy.to_string())
        .await;
    let ph = p["policyHash"].as_str().unwrap().to_string();
    let grant = |id: &str| {
        json!({
            "version": "1.0", "grantId": id, "policyHash": ph, "subjectId": "vehicle-4711",
            "scope": "SESSION", "allowedRails": ["xrpl"], "authorizedGateway": GATEWAY,
            "velocityLimit": {"maxPayments": 10, "windowSeconds": 3600},
            "budgetMinor": "50000", "budgetCurrency": "XRP",
            "expiresAt": format_rfc3339(time::OffsetDateTime::now_utc() + time::Duration::hours(1)),
        })
    };

    let before = scrape(&h, &auditor).await;
    let first = grant("g-0");
    for i in 0..GRANTS {
        let body = if i == 0 {
            first.clone()
        } else {
            grant(&format!("g-{i}"))
        };
        let (status, replayed) =
            post(&h, "/v1/grants", &issuer, &body, Some(&format!("k-{i}"))).await;
        assert_eq!((status, replayed), (201, false));
    }
    // The same key and body: replayed. The same key, another body: a conflict.
    assert_eq!(
        post(&h, "/v1/grants", &issuer, &first, Some("k-0")).await,
        (201, true)
    );
    let other = grant("g-other");
    assert_eq!(
        post(&h, "/v1/grants", &issuer, &other, Some("k-0")).await,
        (409, false)
    );
    // A refused body and an unknown route.
    assert_eq!(
        post(&h, "/v1/grants", &issuer, &json!({}), None).await.0,
        400
    );
    assert_eq!(h.get("/v1/nowhere/123", None).await.0, 404);
    let after = scrape(&h, &auditor).await;

    let delta = |series: &str| value(&after, series) - value(&before, series);
    let sig = r#"{role="grant-signing",alg="EdDSA"}"#;
    assert_eq!(delta(&format!("mpcp_signatures_total{sig}")), GRANTS as f64);
    assert_eq!(
        delta(&format!("mpcp_hsm_sign_duration_seconds_count{sig}")),
        GRANTS as f64
    );
    let grants = |status: u16| {
        format!(r#"mpcp_http_requests_total{{method="POST",route="/v1/grants",status="{status}"}}"#)
    };
    // The replay answers the stored 201 again.
    assert_eq!(delta(&grants(201)), (GRANTS + 1) as f64);
    assert_eq!(delta(&grants(409)), 1.0);
    assert_eq!(delta(&grants(400)), 1.0);
    assert_eq!(
        delta(r#"mpcp_http_requests_total{method="GET",route="unmatched",status="404"}"#),
        1.0
    );
    assert_eq!(
        delta(
            r#"mpcp_http_request_duration_seconds_count{method="POST",route="/v1/grants",status="201"}"#
        ),
        (GRANTS + 1) as f64
    );
    assert_eq!(
        delta(r#"mpcp_http_requests_total{method="GET",route="/metrics",status="200"}"#),
        1.0,
        "the first scrape"
    );
    assert_eq!(delta("mpcp_idempotent_replays_total"), 1.0);
    assert_eq!(delta("mpcp_idempotency_conflicts_total"), 1.0);
    // One entry per grant, nothing for the refusals, the replay or the conflict.
    assert_eq!(delta("mpcp_audit_appends_total"), GRANTS as f64);
    assert_eq!(delta("mpcp_audit_append_failures_total"), 0.0);
    assert_eq!(
        value(&after, "mpcp_audit_log_entries"),
        h.audit.size() as f64
    );
    assert!(value(&after, "mpcp_audit_batch_entries_count") >= GRANTS as f64);
    assert!(value(&after, "mpcp_connections_open") >= 1.0);
    for role in ["grant-signing", "root", "audit"] {
        assert_eq!(
            value(
                &after,
                &format!(r#"mpcp_keys{{role="{role}",state="active"}}"#)
            ),
            1.0,
            "{role}"
        );
    }
    assert_eq!(
        value(
            &after,
            r#"mpcp_hsm_sessions_in_use{token="mpcp-grant-signing"}"#
        ),
        0.0,
        "every session checked back in"
    );

    // Rate-limit refusals: counted exactly as the client saw them.
    let mut refused = 0u64;
    for _ in 0..30 {
        let (status, _) = h.get("/v1/audit/checkpoint", Some(&hammer)).await;
        if status == 429 {
            refused += 1;
        }
    }
    assert!(refused >= 5, "only {refused} refusals");
    let last = scrape(&h, &auditor).await;
    assert_eq!(
        value(&last, "mpcp_rate_limited_total") - value(&after, "mpcp_rate_limited_total"),
        refused as f64
    );
    promtool_check(&last);
    // No label carries a token name or a secret.
    for secret in [&issuer, &auditor, &hammer] {
        assert!(!last.contains(secret.as_str()));
    }
    for name in ["issuer-1", "prometheus-1", "auditor-2"] {
        assert!(!last.contains(name), "{name} in the metrics");
    }

    // A peer of its own (127.0.0.2) opens PER_PEER + 3 connections: 3 are refused at accept,
    // the others are open while held.
    let mut held = Vec::new();
    for _ in 0..PER_PEER + 3 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        held.push(socket.connect(h.addr).await.unwrap());
    }
    // Polled with a token of its own, slowly enough to stay within its rate limit.
    let poller = h.token("auditor-3", ApiRole::Auditor);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refused_delta = loop {
        let now = scrape(&h, &poller).await;
        let d = value(&now, "mpcp_connections_refused_total")
            - value(&last, "mpcp_connections_refused_total");
        let open = value(&now, "mpcp_connections_open") - value(&last, "mpcp_connections_open");
        if (d >= 3.0 && open >= PER_PEER as f64) || std::time::Instant::now() > deadline {
            // The held ones (and at most one more, should the client open another).
            assert!(
                (PER_PEER as f64..=PER_PEER as f64 + 1.0).contains(&open),
                "{open} more connections open while {PER_PEER} are held"
            );
            break d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    };
    assert_eq!(refused_delta, 3.0);
    drop(held);

    // OpenMetrics for a scraper that asks for it.
    let r = h
        .client
        .get(h.url("/metrics"))
        .bearer_auth(&auditor)
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));
    // The monitoring and auditor roles read them, no other; a monitoring token reads nothing
    // else.
    let reader = h.token("auditor-4", ApiRole::Auditor);
    let r = h
        .client
        .get(h.url("/metrics"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h.get("/metrics", Some(&issuer)).await.0, 403);
    assert_eq!(h.get("/metrics", None).await.0, 401);
    for path in [
        "/v1/audit/entries",
        "/v1/audit/checkpoint",
        "/v1/keys",
        "/v1/tokens",
    ] {
        assert_eq!(h.get(path, Some(&auditor)).await.0, 403, "{path}");
    }
}

/// The families `text` declares (`# TYPE name kind`).
fn families(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_operations_describes_every_served_metric_and_its_samples_are_valid() {
    kit::child::own_process!(
        "docs_operations_describes_every_served_metric_and_its_samples_are_valid"
    );
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    // Every family the service serves has a row (the reverse, with every family touched, is
    // a unit test of `mpcp_pa::metrics`).
    let h = Harness::start(Limits::default()).await;
    let auditor = h.token("auditor-1", ApiRole::Auditor);
    let served = families(&scrape(&h, &auditor).await);
    assert!(served.len() > 10, "{served:?}");
    for family in &served {
        assert!(
            doc.contains(&format!("| `{family}` |")),
            "{family} is not described in docs/operations.md"
        );
    }
    // The sample scrape configuration and alert rules pass promtool.
    let yaml: Vec<&str> = doc
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(yaml.len(), 2, "a scrape configuration and the alert rules");
    let dir = kit::tmp::dir("operations_doc");
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, yaml[1]).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (Debian package prometheus)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // promtool checks that the files a configuration names exist: give it empty ones.
    let config = yaml[0].replace("/etc/prometheus/", &format!("{}/", dir.path().display()));
    for f in ["mpcp-pa-monitoring.token", "mpcp-pa-ca.pem"] {
        std::fs::write(dir.path().join(f), "").unwrap();
    }
    let scrape_config = dir.path().join("prometheus.yml");
    std::fs::write(&scrape_config, config).unwrap();
    let out = Command::new("promtool")
        .args(["check", "config", "--syntax-only"])
        .arg(&scrape_config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
