//! The read-only console (`/console/`) of the real binary (`up`, TLS), in headless Chromium
//! (Debian package `chromium`, driven by `tests/interop/console_browser.mjs` over the
//! DevTools protocol): a wrong token is refused; the security officer sees the keys per role
//! with their states, the API tokens (names and roles, no secret) and readiness; the auditor
//! sees the audit log (size, latest checkpoint, recent entries, an inclusion proof), the
//! grants issued and revoked, the receipts, the XRPL account with its credential transactions, and each readiness check. No step logs a script error, an
//! exception or a Content-Security-Policy violation, the token is never stored by the
//! browser, and every asset is served with the strict policy. Screenshots of each step go
//! to a temporary directory, or to `MPCP_CONSOLE_SCREENSHOTS` (docs/console/ holds the
//! reference ones).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use crate::kit;
use crate::kit::bin::{
    announced, bin_command, client, grant_request, json_post, json_put, post_ok, spawn_lines,
};
use mpcp_pa::api::routes::console::CSP;
use serde_json::{Value, json};

/// GETs `path` with `token` and parses the JSON answer.
async fn get_json(http: &reqwest::Client, base: &str, token: &str, path: &str) -> Value {
    let r = http
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_each_page_refuses_a_wrong_token_and_logs_no_error() {
    let _gate = kit::gate::shared();
    let dir = kit::tmp::dir("console");
    let data = dir.path().join("appliance");
    let mut cmd = bin_command(&data, &["up", "--listen", "127.0.0.1:0"]);
    cmd.env_remove("SOFTHSM2_CONF")
        .env_remove("MPCP_PA_AUDIT_ORIGIN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mut server, lines) = spawn_lines(cmd);
    let addr = announced(&lines, Duration::from_secs(120)).expect("up did not start");
    std::thread::spawn(move || for _ in lines {});
    let mut stdout = BufReader::new(server.0.stdout.take().unwrap());
    let mut officer = String::new();
    stdout.read_line(&mut officer).unwrap();
    let officer = officer.trim().to_string();
    let base = format!("https://{addr}");
    let http = client(&data);

    // Something to show: tokens, a policy, two grants of which one is revoked.
    let make = |name: &str, role: &str| json!({"name": name, "role": role});
    let issuer = post_ok(
        &http,
        &base,
        &officer,
        "/v1/tokens",
        make("issuer-1", "issuer"),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let auditor = post_ok(
        &http,
        &base,
        &officer,
        "/v1/tokens",
        make("auditor-1", "auditor"),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let policy = json!({"version": "1.0", "maxGrantLifetimeSeconds": 86400});
    let ph = post_ok(&http, &base, &issuer, "/v1/policies", policy).await["policyHash"]
        .as_str()
        .unwrap()
        .to_string();
    let expires =
        mpcp_pa::clock::format_rfc3339(time::OffsetDateTime::now_utc() + time::Duration::hours(1));
    for id in ["g-shown-1", "g-shown-2"] {
        post_ok(
            &http,
            &base,
            &issuer,
            "/v1/grants",
            grant_request(id, &ph, &expires),
        )
        .await;
    }
    let revoke = json!({"reason": "console test"});
    post_ok(&http, &base, &issuer, "/v1/grants/g-shown-2/revoke", revoke).await;
    // A grant whose credential the PA's own XRPL account issues, then revoked.
    let account = get_json(&http, &base, &auditor, "/v1/ledger/account").await;
    let account = account["account"].as_str().unwrap().to_string();
    let mut ledger_grant = grant_request("g-ledger-shown", &ph, &expires);
    ledger_grant["activeGrantCredentialIssuer"] = json!(account);
    ledger_grant["subjectId"] = json!("rBeSeHbNsfZ3dqofxZ8MsfEo6ZTRJ1iHqA");
    post_ok(&http, &base, &issuer, "/v1/grants", ledger_grant).await;
    let revoke = json!({"reason": "console ledger"});
    post_ok(
        &http,
        &base,
        &issuer,
        "/v1/grants/g-ledger-shown/revoke",
        revoke,
    )
    .await;
    // A receipt policy and one call from decision to outcome.
    let requester = post_ok(
        &http,
        &base,
        &officer,
        "/v1/tokens",
        make("gateway-1", "receipt-requester"),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let consumer = post_ok(
        &http,
        &base,
        &officer,
        "/v1/tokens",
        json!({"name": "provider-1", "role": "receipt-consumer", "audiences": ["mcp://hr.test"]}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let receipt_policy = json!({"version": 1, "policyId": "console-receipts", "otherwise": "block",
        "rules": [{"requesters": ["gateway-1"], "audiences": ["mcp://hr.test"],
                   "tools": ["query_table"], "decision": "allow", "maxAgeSeconds": 300}]});
    let r = json_put(
        &http,
        format!("{base}/v1/receipts/policy"),
        &officer,
        receipt_policy.to_string(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let call = json!({"name": "query_table", "arguments": {"table": "employees"},
                      "_meta": {"authorization_binding": {"nonce": "console-nonce-1"}}});
    let decision = post_ok(
        &http,
        &base,
        &requester,
        "/v1/receipts/decisions",
        json!({"audience": "mcp://hr.test", "actionId": "act-console-1",
               "subject": "agent:console", "request": call}),
    )
    .await;
    let admitted = post_ok(
        &http,
        &base,
        &consumer,
        "/v1/receipts/consume",
        json!({"decision": decision, "request": call}),
    )
    .await;
    post_ok(
        &http,
        &base,
        &consumer,
        "/v1/receipts/outcomes",
        json!({"decisionDigest": admitted["decisionDigest"], "status": "executed"}),
    )
    .await;
    let checkpoint = json_post(
        &http,
        format!("{base}/v1/audit/checkpoints"),
        &auditor,
        "{}",
    )
    .send()
    .await
    .unwrap();
    assert!(checkpoint.status().is_success());

    // Every asset: the strict policy, the right type, nothing from elsewhere.
    for (path, ty) in [
        ("/console/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-security-policy"], CSP, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(ty),
            "{path}"
        );
        let body = r.text().await.unwrap();
        // Nothing fetched from elsewhere (the SVG namespace is a name, not a fetch).
        let own = body.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !own.contains("http://") && !own.contains("https://"),
            "{path} links out"
        );
        assert!(!body.contains("localStorage.setItem") && !body.contains("document.cookie ="));
    }

    let shots = match std::env::var_os("MPCP_CONSOLE_SCREENSHOTS") {
        Some(d) => std::path::PathBuf::from(d),
        None => dir.path().join("shots"),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let wrong = format!("mpcppa_{}_{}", "0".repeat(16), "A".repeat(43));
    let out = kit::node::run(
        "console_browser.mjs",
        [
            base.as_str(),
            officer.as_str(),
            auditor.as_str(),
            wrong.as_str(),
            shots.to_str().unwrap(),
        ],
    );
    let result: Value = serde_json::from_str(out.trim()).unwrap();
    let steps = result["steps"].as_array().unwrap();
    let step = |name: &str| -> &Value {
        steps
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step {name}: {result}"))
    };
    let text = |name: &str| step(name)["text"].as_str().unwrap().to_string();

    assert!(
        text("wrong-token").contains("token refused"),
        "{}",
        text("wrong-token")
    );
    assert!(text("wrong-token").contains("Sign in"));
    assert!(
        !text("wrong-token").contains("Sign out"),
        "no page before sign-in"
    );
    let keys = text("keys");
    for role in ["grant-signing", "root", "audit"] {
        assert!(keys.contains(&format!("Keys: {role}")), "{keys}");
        assert!(keys.contains(&format!("{role}-eddsa-")), "{keys}");
    }
    assert!(keys.contains("active"), "{keys}");
    assert!(
        keys.contains("signed in as security-officer (security-officer)"),
        "{keys}"
    );
    assert!(
        !keys.contains("Audit log"),
        "a tab the officer cannot read: {keys}"
    );
    let tokens = text("tokens");
    for name in ["security-officer", "issuer-1", "auditor-1"] {
        assert!(tokens.contains(name), "{tokens}");
    }
    assert!(text("ready-officer").contains("ready"));
    let audit = text("audit");
    assert!(audit.contains("latest checkpoint"), "{audit}");
    assert!(
        audit.contains("grant_issued") && audit.contains("token_created"),
        "{audit}"
    );
    assert!(
        audit.contains("\"treeSize\"") && audit.contains("\"proof\""),
        "{audit}"
    );
    let grants = text("grants");
    assert!(
        grants.contains("g-shown-1") && grants.contains("g-shown-2"),
        "{grants}"
    );
    assert!(grants.contains("console test"), "{grants}");
    assert!(grants.contains("grant-signing-eddsa-"), "{grants}");
    let receipts = text("receipts");
    for shown in [
        "Receipt policy console-receipts",
        "act-console-1",
        "query_table",
        "mcp://hr.test",
        "admitted",
        "executed",
    ] {
        assert!(receipts.contains(shown), "{shown}: {receipts}");
    }
    let ledger = text("ledger");
    for shown in [
        format!("XRPL account {account}"),
        "CredentialCreate".to_string(),
        "CredentialDelete".to_string(),
        "grant_issued g-ledger-shown".to_string(),
        "grant_revoked g-ledger-shown".to_string(),
        "signed".to_string(),
        // up signs the first grant-signing and root keys' credentials.
        "key_activated grant-signing-".to_string(),
        "key_activated root-".to_string(),
    ] {
        assert!(ledger.contains(&shown), "{shown}: {ledger}");
    }
    let ready = text("ready");
    assert!(
        ready.contains("grant-signing key") && ready.contains("store"),
        "{ready}"
    );
    assert!(!ready.contains("failing"), "{ready}");

    for s in steps {
        // The browser reports the wrong token's refusal (401) as a failed resource load. The
        // console never sends what its role would be refused (403, an audit entry); anything
        // else is an error of the console.
        let errors: Vec<&str> = s["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .filter(|e| {
                !(s["name"] == "wrong-token"
                    && e.starts_with("log network:")
                    && e.contains("status of 401"))
            })
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", s["name"]);
        assert_eq!(
            s["storage"], 0,
            "{}: the browser stored something",
            s["name"]
        );
        for secret in [&officer, &issuer, &auditor, &requester, &consumer] {
            assert!(!s["text"].as_str().unwrap().contains(secret.as_str()));
        }
        let png = shots.join(format!("{}.png", s["name"].as_str().unwrap()));
        assert!(std::fs::metadata(&png).unwrap().len() > 1000, "{png:?}");
    }
    assert!(result.get("failure").is_none(), "{result}");
    // Browsing refused nothing: no request_refused entry in the audit log.
    let entries = get_json(&http, &base, &auditor, "/v1/audit/entries").await;
    let refused: Vec<&Value> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["action"] == "request_refused")
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    server.stop();
}
