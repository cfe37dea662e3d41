//! The service log of the real binary (`up --log-format json`) over TLS: every response
//! carries an `x-request-id` and the request's one log line carries the same id, with the
//! route template (never the raw path), the status and the token's name; a caller's
//! well-formed id is kept, a malformed one replaced; and no token secret or PIN ever
//! appears in the log, bad requests included (wrong and malformed tokens, a secret in the
//! query string, in a malformed request id, in a body that is refused).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use crate::kit;
use crate::kit::bin::{announced, bin_command, client, grant_request, json_post, spawn_lines};
use serde_json::{Value, json};

/// One request as the client saw it: status and the `x-request-id` it was answered with.
struct Seen {
    what: String,
    status: u16,
    id: String,
}

async fn send(req: reqwest::RequestBuilder, what: &str, seen: &mut Vec<Seen>) -> Value {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let id = r
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("{what}: no x-request-id"))
        .to_str()
        .unwrap()
        .to_string();
    let body = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    seen.push(Seen {
        what: what.to_string(),
        status,
        id,
    });
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_logged_once_with_its_id_and_never_a_secret() {
    let _gate = kit::gate::shared();
    let dir = kit::tmp::dir("observability");
    let data = dir.path().join("appliance");
    let mut cmd = bin_command(
        &data,
        &["up", "--listen", "127.0.0.1:0", "--log-format", "json"],
    );
    cmd.env_remove("SOFTHSM2_CONF")
        .env_remove("MPCP_PA_AUDIT_ORIGIN")
        .env_remove("MPCP_PA_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mut server, lines) = spawn_lines(cmd);
    let addr = announced(&lines, Duration::from_secs(120)).expect("up did not start");
    let mut stdout = BufReader::new(server.0.stdout.take().unwrap());
    let mut officer = String::new();
    stdout.read_line(&mut officer).unwrap();
    let officer = officer.trim().to_string();
    assert!(officer.starts_with("mpcppa_"), "{officer:?}");

    let base = format!("https://{addr}");
    let http = client(&data);
    let mut seen = Vec::new();
    let mut secrets = vec![officer.clone()];
    let token = |name: &str, role: &str| {
        json_post(
            &http,
            format!("{base}/v1/tokens"),
            &officer,
            json!({"name": name, "role": role}).to_string(),
        )
    };
    let issuer = send(token("issuer-1", "issuer"), "create issuer", &mut seen).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let auditor = send(token("auditor-1", "auditor"), "create auditor", &mut seen).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    secrets.extend([issuer.clone(), auditor.clone()]);
    let policy = json!({"version": "1.0", "maxGrantLifetimeSeconds": 86400});
    let ph = send(
        json_post(
            &http,
            format!("{base}/v1/policies"),
            &issuer,
            policy.to_string(),
        ),
        "store policy",
        &mut seen,
    )
    .await["policyHash"]
        .as_str()
        .unwrap()
        .to_string();
    let expires =
        mpcp_pa::clock::format_rfc3339(time::OffsetDateTime::now_utc() + time::Duration::hours(1));
    let grant = grant_request("g-logged", &ph, &expires).to_string();
    send(
        json_post(&http, format!("{base}/v1/grants"), &issuer, grant)
            .header("x-request-id", "gateway.req-42"),
        "grant with the caller's id",
        &mut seen,
    )
    .await;
    send(
        http.get(format!("{base}/v1/grants/g-logged"))
            .bearer_auth(&issuer),
        "read the grant",
        &mut seen,
    )
    .await;

    // Bad requests, several carrying a secret where a careless log would write it.
    let (id, secret) = issuer
        .strip_prefix("mpcppa_")
        .unwrap()
        .split_once('_')
        .unwrap();
    let wrong = format!("mpcppa_{id}_{}", "A".repeat(secret.len()));
    send(
        http.get(format!("{base}/v1/grants/g-logged"))
            .bearer_auth(&wrong),
        "wrong secret",
        &mut seen,
    )
    .await;
    send(
        http.get(format!("{base}/v1/grants/g-logged"))
            .header("authorization", format!("Basic {issuer}")),
        "malformed authorization",
        &mut seen,
    )
    .await;
    send(
        http.get(format!("{base}/v1/keys")).bearer_auth(&issuer),
        "forbidden for the role",
        &mut seen,
    )
    .await;
    send(
        http.get(format!("{base}/v1/grants/{issuer}?token={issuer}"))
            .bearer_auth(&issuer),
        "secret in the path and query",
        &mut seen,
    )
    .await;
    send(
        http.get(format!("{base}/v1/keys"))
            .bearer_auth(&officer)
            .header("x-request-id", &officer),
        "secret as request id",
        &mut seen,
    )
    .await;
    send(
        http.get(format!("{base}/v1/keys"))
            .bearer_auth(&officer)
            .header("x-request-id", "not a valid id!"),
        "malformed request id",
        &mut seen,
    )
    .await;
    send(
        json_post(
            &http,
            format!("{base}/v1/tokens"),
            &officer,
            format!(r#"{{"name": "x", "role": "issuer", "secret": "{officer}"}}"#),
        ),
        "secret in a refused body",
        &mut seen,
    )
    .await;
    send(
        json_post(
            &http,
            format!("{base}/v1/policies"),
            &issuer,
            format!("{{\"{auditor}\":"),
        ),
        "secret in a malformed body",
        &mut seen,
    )
    .await;
    server.stop();
    // Everything written until the process ended (the channel closes at EOF).
    let mut log = Vec::new();
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(10)) {
        log.push(l);
    }

    // The caller's well-formed id is kept; the malformed and secret ones are replaced.
    let by_what: BTreeMap<&str, &Seen> = seen.iter().map(|s| (s.what.as_str(), s)).collect();
    assert_eq!(by_what["grant with the caller's id"].id, "gateway.req-42");
    assert_ne!(by_what["secret as request id"].id, officer);
    assert_ne!(by_what["malformed request id"].id, "not a valid id!");

    // One line per request, found by its id, with the route template and the token name.
    let requests: Vec<Value> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "request" || v["message"] == "request failed")
        .collect();
    for s in &seen {
        let mine: Vec<&Value> = requests
            .iter()
            .filter(|v| v["span"]["request_id"] == s.id.as_str())
            .collect();
        assert_eq!(
            mine.len(),
            1,
            "{}: {} log lines with id {}",
            s.what,
            mine.len(),
            s.id
        );
        assert_eq!(mine[0]["status"], s.status, "{}", s.what);
        assert!(mine[0]["latency_ms"].is_number(), "{}", s.what);
    }
    let line = |what: &str| {
        let id = &by_what[what].id;
        requests
            .iter()
            .find(|v| v["span"]["request_id"] == id.as_str())
            .unwrap()
    };
    let grant_line = line("read the grant");
    assert_eq!(grant_line["span"]["route"], "/v1/grants/{grantId}");
    assert_eq!(grant_line["span"]["method"], "GET");
    assert_eq!(grant_line["token"], "issuer-1");
    assert_eq!(line("forbidden for the role")["code"], "FORBIDDEN");
    assert_eq!(line("forbidden for the role")["token"], "issuer-1");
    assert_eq!(line("wrong secret")["status"], 401);
    assert_eq!(line("wrong secret")["token"], "-");

    // The key and token changes are logged, by name, with the id of the request that made
    // them.
    let text = log.join("\n");
    let created = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            v["message"] == "audit: change recorded"
                && v["event"]
                    .as_str()
                    .is_some_and(|e| e.contains(r#""tokenName":"issuer-1""#))
        })
        .unwrap_or_else(|| panic!("no change line for issuer-1: {text}"));
    assert_eq!(created["actor"], "security-officer");
    assert_eq!(
        created["span"]["request_id"],
        by_what["create issuer"].id.as_str()
    );
    assert!(text.contains("audit checkpoint signed"), "{text}");

    // No secret: API tokens (and their secret parts), HSM PINs.
    for role in ["grant-signing", "root", "audit"] {
        for kind in ["user", "so"] {
            let pin =
                std::fs::read_to_string(data.join(format!("secrets/{role}.{kind}.pin"))).unwrap();
            secrets.push(pin.trim().to_string());
        }
    }
    // A token is mpcppa_<id>_<secret> (the secret's alphabet includes `_`).
    let parts: Vec<String> = secrets
        .iter()
        .filter_map(|t| t.strip_prefix("mpcppa_")?.split_once('_'))
        .map(|(_, s)| s.to_string())
        .collect();
    secrets.extend(parts);
    for s in &secrets {
        assert!(s.len() >= 8, "a secret this short proves nothing: {s:?}");
        assert!(!text.contains(s.as_str()), "a secret is in the log");
    }
}
