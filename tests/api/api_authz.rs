//! The role × endpoint authorisation matrix, derived from the service's own route table (so a
//! new route is in the matrix the moment it is served): every route is called by no token, a
//! token of each role, a revoked token and malformed `Authorization` headers. A cell the
//! route's role does not allow must get 401 (no valid token) or 403 (valid token, other role)
//! with the JSON error body, and change nothing (every sled tree, the audit log, the HSM's
//! token objects); an allowed cell must not be refused as unauthenticated or forbidden.
//!
//! Each known route is called with a request that would succeed for its role, so a missing
//! check shows as a change of state, not only as a status; a route this file does not know
//! yet is called with placeholder path values and an empty object.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::kit;
use crate::kit::api::Harness;
use crate::kit::api::snapshot::Snapshot;
use mpcp_pa::api::Limits;
use mpcp_pa::api::routes::{RouteEntry, table};
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::clock::{SystemClock, format_rfc3339};
use mpcp_pa::crypto::Alg;
use mpcp_pa::events::{Actor, Event};
use mpcp_pa::keys::KeyRole;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

/// Snapshots count the HSM's token objects, which every harness of a process shares: each test
/// runs in a process of its own (`kit::child::own_process!`), and the tests run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const GATEWAY: &str = "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b5";
const DESTS: [&str; 2] = [
    "rBeSeHbNsfZ3dqofxZ8MsfEo6ZTRJ1iHqA",
    "rsXQfv9chTvpKmf55aC2Lb44PvXdTr7S4J",
];

fn in_secs(s: i64) -> String {
    format_rfc3339(time::OffsetDateTime::now_utc() + time::Duration::seconds(s))
}

/// A column of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    NoToken,
    Role(ApiRole),
    /// A revoked token of the route's role (of the issuer role on public routes).
    Revoked,
    /// `Basic <valid token of the route's role>`.
    BasicScheme,
    /// A valid token of the route's role without a scheme.
    NoScheme,
    /// `Bearer` and nothing else.
    EmptyBearer,
    /// A valid token of the route's role with its last character changed.
    Forged,
    /// Bytes that are not visible ASCII.
    NotAscii,
}

impl Caller {
    fn all() -> Vec<Caller> {
        let mut v = vec![Caller::NoToken];
        v.extend(ApiRole::ALL.into_iter().map(Caller::Role));
        v.extend([
            Caller::Revoked,
            Caller::BasicScheme,
            Caller::NoScheme,
            Caller::EmptyBearer,
            Caller::Forged,
            Caller::NotAscii,
        ]);
        v
    }

    fn label(self) -> String {
        match self {
            Caller::Role(r) => r.as_str().to_string(),
            other => format!("{other:?}"),
        }
    }
}

/// What a cell must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Allowed,
    Refused(u16, &'static str),
}

/// The rule under test, from the route's declared roles alone.
fn expected(route: &RouteEntry, caller: Caller) -> Expect {
    if route.role.is_none() {
        return Expect::Allowed;
    }
    match caller {
        Caller::Role(r) if route.allows(r) => Expect::Allowed,
        Caller::Role(_) => Expect::Refused(403, "FORBIDDEN"),
        _ => Expect::Refused(401, "UNAUTHORIZED"),
    }
}

struct Fixture {
    tokens: HashMap<ApiRole, String>,
    revoked: HashMap<ApiRole, String>,
    policy_hash: String,
    /// A pending grant-signing key (what a key revocation would revoke).
    pending_kid: String,
    /// A revoked key (what a destruction would schedule).
    revoked_kid: String,
}

async fn post_ok(h: &Harness, path: &str, token: &str, body: &Value) -> Value {
    let (status, v) = h.post(path, Some(token), &body.to_string()).await;
    assert!(status == 200 || status == 201, "setup {path}: {status} {v}");
    v
}

async fn setup(h: &Harness) -> Fixture {
    let mut tokens = HashMap::new();
    let mut revoked = HashMap::new();
    for role in ApiRole::ALL {
        tokens.insert(role, h.token(&format!("{role}-1"), role));
        let name = format!("{role}-revoked");
        revoked.insert(role, h.token(&name, role));
        h.state
            .tokens()
            .revoke(&name, &Actor::cli(), h.audit.as_ref(), &SystemClock)
            .unwrap();
    }
    let issuer = tokens[&ApiRole::Issuer].clone();
    let officer = tokens[&ApiRole::SecurityOfficer].clone();
    let policy_hash = post_ok(
        h,
        "/v1/policies",
        &issuer,
        &json!({"version": "1.0", "maxGrantLifetimeSeconds": 3600}),
    )
    .await["policyHash"]
        .as_str()
        .unwrap()
        .to_string();
    let mut fx = Fixture {
        tokens,
        revoked,
        policy_hash,
        pending_kid: String::new(),
        revoked_kid: String::new(),
    };
    post_ok(h, "/v1/grants", &issuer, &grant(&fx, "g-live")).await;
    post_ok(h, "/v1/grants", &issuer, &grant(&fx, "g-target")).await;
    let list = json!({"allowlistId": "list-1", "destinations": DESTS, "expiresAt": in_secs(3600)});
    post_ok(h, "/v1/destination-allowlists", &issuer, &list).await;
    for which in 0..2 {
        let reg = h.registry.clone();
        let rec = tokio::task::spawn_blocking(move || {
            reg.generate(&Actor::cli(), KeyRole::GrantSigning, Alg::EdDSA)
                .unwrap()
        })
        .await
        .unwrap();
        if which == 0 {
            fx.pending_kid = rec.kid;
        } else {
            let path = format!("/v1/keys/{}/revoke", rec.kid);
            post_ok(h, &path, &officer, &json!({"reason": "setup"})).await;
            fx.revoked_kid = rec.kid;
        }
    }
    fx
}

fn grant(fx: &Fixture, id: &str) -> Value {
    json!({
        "version": "1.0",
        "grantId": id,
        "policyHash": fx.policy_hash,
        "subjectId": "vehicle-4711",
        "scope": "SESSION",
        "allowedRails": ["xrpl"],
        "expiresAt": in_secs(600),
        "authorizedGateway": GATEWAY,
        "velocityLimit": {"maxPayments": 10, "windowSeconds": 3600},
        "budgetMinor": "50000",
        "budgetCurrency": "XRP"
    })
}

/// Routes this file knows how to call successfully. Keyed by (method, template).
const KNOWN: [(&str, &str); 22] = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/.well-known/mpcp-keys.json"),
    ("GET", "/.well-known/mpcp-keys.signed.json"),
    ("GET", "/.well-known/mpcp-trust-bundle.json"),
    ("GET", "/v1/trust-bundles"),
    ("GET", "/v1/destination-allowlists/{allowlistId}"),
    ("POST", "/v1/policies"),
    ("GET", "/v1/policies/{policyHash}"),
    ("POST", "/v1/grants"),
    ("GET", "/v1/grants/{grantId}"),
    ("POST", "/v1/grants/{grantId}/revoke"),
    ("POST", "/v1/destination-allowlists"),
    ("POST", "/v1/trust-bundles"),
    ("GET", "/v1/keys"),
    ("POST", "/v1/keys/{role}/rotate"),
    ("POST", "/v1/keys/{kid}/revoke"),
    ("POST", "/v1/keys/{kid}/destroy"),
    ("GET", "/v1/audit/checkpoint"),
    ("GET", "/v1/audit/entries"),
    ("GET", "/v1/audit/proofs/inclusion"),
    ("GET", "/v1/audit/proofs/consistency"),
];

/// A request for `route` that succeeds for its role: concrete path and body (POST only).
/// `n` makes created ids unique per call.
fn probe(fx: &Fixture, route: &RouteEntry, n: usize) -> (String, Option<Value>) {
    let post = route.method == reqwest::Method::POST;
    let (path, body) = match (route.method.as_str(), route.path) {
        ("GET", "/v1/destination-allowlists/{allowlistId}") => {
            ("/v1/destination-allowlists/list-1".to_string(), None)
        }
        ("POST", "/v1/policies") => (
            route.path.to_string(),
            Some(json!({"version": "1.0", "note": format!("probe-{n}")})),
        ),
        ("GET", "/v1/policies/{policyHash}") => (format!("/v1/policies/{}", fx.policy_hash), None),
        ("POST", "/v1/grants") => (
            route.path.to_string(),
            Some(grant(fx, &format!("g-probe-{n}"))),
        ),
        ("GET", "/v1/grants/{grantId}") => ("/v1/grants/g-live".to_string(), None),
        ("POST", "/v1/grants/{grantId}/revoke") => (
            "/v1/grants/g-target/revoke".to_string(),
            Some(json!({"reason": "probe"})),
        ),
        ("POST", "/v1/destination-allowlists") => (
            route.path.to_string(),
            Some(
                json!({"allowlistId": format!("list-probe-{n}"), "destinations": DESTS, "expiresAt": in_secs(3600)}),
            ),
        ),
        ("POST", "/v1/trust-bundles") => (
            route.path.to_string(),
            Some(
                json!({"category": "parking", "approvedIssuers": [], "issuers": [], "expiresAt": in_secs(3600)}),
            ),
        ),
        ("POST", "/v1/keys/{role}/rotate") => {
            ("/v1/keys/grant-signing/rotate".to_string(), Some(json!({})))
        }
        ("POST", "/v1/keys/{kid}/revoke") => (
            format!("/v1/keys/{}/revoke", fx.pending_kid),
            Some(json!({"reason": "probe"})),
        ),
        ("POST", "/v1/keys/{kid}/destroy") => (
            format!("/v1/keys/{}/destroy", fx.revoked_kid),
            Some(json!({"waitDays": 1})),
        ),
        ("GET", "/v1/audit/entries") => ("/v1/audit/entries?start=0&end=1".to_string(), None),
        ("GET", "/v1/audit/proofs/inclusion") => {
            ("/v1/audit/proofs/inclusion?index=0".to_string(), None)
        }
        ("GET", "/v1/audit/proofs/consistency") => {
            ("/v1/audit/proofs/consistency?from=1".to_string(), None)
        }
        (_, template) => {
            // Not known yet: placeholder path values, an empty object as the body.
            let path = template
                .split('/')
                .map(|s| {
                    if s.starts_with('{') && s.ends_with('}') {
                        "probe-1"
                    } else {
                        s
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            (path, post.then(|| json!({})))
        }
    };
    (path, body)
}

fn authorization(fx: &Fixture, route: &RouteEntry, caller: Caller) -> Option<HeaderValue> {
    let own = fx.tokens[&route.role.unwrap_or(ApiRole::Issuer)].clone();
    let value = match caller {
        Caller::NoToken => return None,
        Caller::Role(r) => format!("Bearer {}", fx.tokens[&r]),
        Caller::Revoked => format!(
            "Bearer {}",
            fx.revoked[&route.role.unwrap_or(ApiRole::Issuer)]
        ),
        Caller::BasicScheme => format!("Basic {own}"),
        Caller::NoScheme => own,
        Caller::EmptyBearer => "Bearer".to_string(),
        Caller::Forged => {
            let mut t = own;
            let last = t.pop().unwrap();
            t.push(if last == 'A' { 'B' } else { 'A' });
            format!("Bearer {t}")
        }
        Caller::NotAscii => {
            let mut v = b"Bearer ".to_vec();
            v.extend_from_slice(own.as_bytes());
            v.push(0xff);
            return Some(HeaderValue::from_bytes(&v).unwrap());
        }
    };
    Some(HeaderValue::from_str(&value).unwrap())
}

/// Why a cell's answer is wrong, if it is.
fn check_cell(
    expect: Expect,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
) -> Option<String> {
    match expect {
        Expect::Allowed => (status == 401 || status == 403 || status >= 500)
            .then(|| format!("allowed, but got {status} {body}")),
        Expect::Refused(want, code) => {
            let shape_ok = headers
                .get("content-type")
                .is_some_and(|v| v == "application/json")
                && body.get("code").and_then(Value::as_str) == Some(code)
                && body.get("message").is_some_and(Value::is_string)
                && body.as_object().is_some_and(|o| {
                    o.keys()
                        .all(|k| ["code", "message", "field"].contains(&k.as_str()))
                });
            let challenge_ok = want != 401
                || headers
                    .get("www-authenticate")
                    .is_some_and(|v| v == "Bearer");
            (status != want || !shape_ok || !challenge_ok).then(|| {
                format!(
                    "expected {want} {code}, got {status} {body} (www-authenticate {:?})",
                    headers.get("www-authenticate")
                )
            })
        }
    }
}

/// Every operation of the OpenAPI document.
fn documented() -> BTreeSet<(String, String)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/mpcp-pa.json"))
            .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_every_caller_its_role_does_not_allow() {
    kit::child::own_process!("every_route_refuses_every_caller_its_role_does_not_allow");
    let routes = table();
    let served: BTreeSet<(String, String)> = routes
        .iter()
        .map(|e| (e.method.to_string(), e.path.to_string()))
        .collect();
    // The route table is the service's; the document must not name a route it lacks.
    for op in documented() {
        assert!(
            served.contains(&op),
            "documented but not in the table: {op:?}"
        );
    }
    for (m, p) in KNOWN {
        assert!(
            served.contains(&(m.to_string(), p.to_string())),
            "probe for a route no longer served: {m} {p}"
        );
    }

    let _serial = SERIAL.lock().await;
    let h = Harness::start(Limits {
        requests_per_second_per_token: 0,
        ..Limits::default()
    })
    .await;
    let fx = setup(&h).await;
    let callers = Caller::all();

    let mut failures = Vec::new();
    let mut cells: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut n = 0;
    for route in &routes {
        // Refused cells first, while the probe still names something that would change.
        let mut order: Vec<Caller> = callers.clone();
        order.sort_by_key(|c| expected(route, *c) == Expect::Allowed);
        for caller in order {
            n += 1;
            let expect = expected(route, caller);
            let (path, body) = probe(&fx, route, n);
            let mut req = h.client.request(route.method.clone(), h.url(&path));
            if let Some(v) = authorization(&fx, route, caller) {
                req = req.header("authorization", v);
            }
            if let Some(b) = &body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let before = Snapshot::of(&h);
            let events_before = h.audit.size();
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await.unwrap();
            let value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            let cell = format!("{} {} as {}", route.method, route.path, caller.label());
            if let Some(why) = check_cell(expect, status, &headers, &value) {
                failures.push(format!("{cell}: {why}"));
            }
            if expect != Expect::Allowed {
                // A 403 of an authenticated token may add its one `request_refused` entry.
                let entries = u64::from(status == 403);
                let changed = refusal_changes(&h, &before, events_before, entries);
                if !changed.is_empty() {
                    failures.push(format!("{cell}: refused, yet changed {changed:?}"));
                }
            }
            cells
                .entry((route.method.to_string(), route.path.to_string()))
                .or_default()
                .insert(caller.label());
        }
    }

    // Every route of the table got every column.
    assert_eq!(cells.len(), routes.len());
    for (route, got) in &cells {
        assert_eq!(got.len(), callers.len(), "{route:?} missed callers");
    }
    assert!(
        failures.is_empty(),
        "{} of {} cells failed:\n{}",
        failures.len(),
        routes.len() * callers.len(),
        failures.join("\n")
    );
}

/// One row of the ownership matrix: `caller` (a token name) calls `path` with `body` on an
/// artifact `issuer-1` created; `want` is the status and, when refused, the code.
struct OwnerRow {
    caller: &'static str,
    path: &'static str,
    body: Value,
    want: (u16, Option<&'static str>),
}

/// Grants and allowlists belong to the issuer token that created them: another issuer is
/// refused with 403 NOT_OWNER and nothing changes; the owner may revoke and version them;
/// a security officer may revoke any grant (emergency) but not version an allowlist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_changes_only_what_its_own_token_issued() {
    kit::child::own_process!("an_issuer_changes_only_what_its_own_token_issued");
    let _serial = SERIAL.lock().await;
    let h = Harness::start(Limits {
        requests_per_second_per_token: 0,
        ..Limits::default()
    })
    .await;
    let mut tokens = HashMap::new();
    for (name, role) in [
        ("issuer-1", ApiRole::Issuer),
        ("issuer-2", ApiRole::Issuer),
        ("officer-1", ApiRole::SecurityOfficer),
        ("auditor-1", ApiRole::Auditor),
    ] {
        tokens.insert(name, h.token(name, role));
    }
    let policy_hash = post_ok(
        &h,
        "/v1/policies",
        &tokens["issuer-1"],
        &json!({"version": "1.0", "maxGrantLifetimeSeconds": 3600}),
    )
    .await["policyHash"]
        .as_str()
        .unwrap()
        .to_string();
    let fx = Fixture {
        tokens: HashMap::new(),
        revoked: HashMap::new(),
        policy_hash,
        pending_kid: String::new(),
        revoked_kid: String::new(),
    };
    for id in ["g-own", "g-emergency"] {
        post_ok(&h, "/v1/grants", &tokens["issuer-1"], &grant(&fx, id)).await;
    }
    let list =
        |n: &str| json!({"allowlistId": n, "destinations": DESTS, "expiresAt": in_secs(3600)});
    post_ok(
        &h,
        "/v1/destination-allowlists",
        &tokens["issuer-1"],
        &list("list-own"),
    )
    .await;

    let reason = json!({"reason": "row"});
    let rows = [
        // Refused rows first, while the target is still unchanged.
        OwnerRow {
            caller: "issuer-2",
            path: "/v1/grants/g-own/revoke",
            body: reason.clone(),
            want: (403, Some("NOT_OWNER")),
        },
        OwnerRow {
            caller: "issuer-2",
            path: "/v1/destination-allowlists",
            body: list("list-own"),
            want: (403, Some("NOT_OWNER")),
        },
        OwnerRow {
            caller: "officer-1",
            path: "/v1/destination-allowlists",
            body: list("list-own"),
            want: (403, Some("FORBIDDEN")),
        },
        OwnerRow {
            caller: "auditor-1",
            path: "/v1/grants/g-own/revoke",
            body: reason.clone(),
            want: (403, Some("FORBIDDEN")),
        },
        OwnerRow {
            caller: "issuer-1",
            path: "/v1/grants/g-own/revoke",
            body: reason.clone(),
            want: (200, None),
        },
        OwnerRow {
            caller: "issuer-1",
            path: "/v1/destination-allowlists",
            body: list("list-own"),
            want: (201, None),
        },
        OwnerRow {
            caller: "officer-1",
            path: "/v1/grants/g-emergency/revoke",
            body: reason.clone(),
            want: (200, None),
        },
        // A list another issuer creates is its own, under a new id.
        OwnerRow {
            caller: "issuer-2",
            path: "/v1/destination-allowlists",
            body: list("list-other"),
            want: (201, None),
        },
        OwnerRow {
            caller: "issuer-1",
            path: "/v1/destination-allowlists",
            body: list("list-other"),
            want: (403, Some("NOT_OWNER")),
        },
    ];
    let mut failures = Vec::new();
    for row in rows {
        let before = Snapshot::of(&h);
        let events_before = h.audit.size();
        let (status, v) = h
            .post(row.path, Some(&tokens[row.caller]), &row.body.to_string())
            .await;
        let cell = format!("POST {} as {}", row.path, row.caller);
        let code = v.get("code").and_then(Value::as_str);
        if status != row.want.0 || (row.want.1.is_some() && code != row.want.1) {
            failures.push(format!("{cell}: expected {:?}, got {status} {v}", row.want));
        }
        if row.want.0 == 403 {
            let changed = refusal_changes(&h, &before, events_before, 1);
            if !changed.is_empty() {
                failures.push(format!("{cell}: refused, yet changed {changed:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // What the owner's and the officer's revocations left.
    let (_, g) = h
        .get("/v1/grants/g-emergency", Some(&tokens["issuer-1"]))
        .await;
    assert_eq!(g["status"], "revoked");
    let (_, l) = h.get("/v1/destination-allowlists/list-own", None).await;
    assert_eq!(l["sequence"], 2);
}

/// What a refused request changed besides the `request_refused` audit entries that record
/// refusals of authenticated tokens (at most `allowed_entries` of them).
fn refusal_changes(
    h: &Harness,
    before: &Snapshot,
    events_before: u64,
    allowed_entries: u64,
) -> Vec<String> {
    let after = Snapshot::of(h);
    let mut out: Vec<String> = before.diff(&after);
    let new: Vec<_> = h
        .events()
        .into_iter()
        .skip(events_before as usize)
        .collect();
    let only_refusals = new
        .iter()
        .all(|(_, e)| matches!(e, Event::RequestRefused { .. }));
    if only_refusals && new.len() as u64 <= allowed_entries {
        out.retain(|l| !l.starts_with("tree \"audit/") && !l.starts_with("audit log size"));
    } else {
        out.push(format!("audit entries {new:?}"));
    }
    out
}

/// The last active security-officer token cannot be revoked over the API, neither by itself
/// nor (once it is the last) through another name; 409 LAST_OFFICER and nothing changes.
/// With a second officer, either may be revoked; the console refuses the same unless told
/// `--allow-no-officer` (break-glass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_security_officer_token_cannot_be_revoked() {
    kit::child::own_process!("the_last_security_officer_token_cannot_be_revoked");
    let _serial = SERIAL.lock().await;
    let h = Harness::start(Limits {
        requests_per_second_per_token: 0,
        ..Limits::default()
    })
    .await;
    let so1 = h.token("officer-1", ApiRole::SecurityOfficer);
    let revoke = |name: &str| format!("/v1/tokens/{name}/revoke");

    let before = Snapshot::of(&h);
    let events_before = h.audit.size();
    let got = h.post(&revoke("officer-1"), Some(&so1), "{}").await;
    kit::api::assert_error(&got, 409, "LAST_OFFICER");
    let changed = refusal_changes(&h, &before, events_before, 1);
    assert!(changed.is_empty(), "refused, yet changed {changed:?}");

    // A second officer: the first may now go, and then the second is the last.
    let so2 = h.token("officer-2", ApiRole::SecurityOfficer);
    let (s, v) = h.post(&revoke("officer-1"), Some(&so2), "{}").await;
    assert_eq!(s, 200, "{v}");
    let got = h.post(&revoke("officer-2"), Some(&so2), "{}").await;
    kit::api::assert_error(&got, 409, "LAST_OFFICER");
    // Other roles are not officers: revoking them is unaffected.
    h.token("issuer-1", ApiRole::Issuer);
    let (s, v) = h.post(&revoke("issuer-1"), Some(&so2), "{}").await;
    assert_eq!(s, 200, "{v}");

    // The console: refused the same way, unless it is break-glass.
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: mpcp_pa::cli::tokens::TokensArgs,
    }
    let cli = |argv: &[&str]| {
        Cli::try_parse_from(std::iter::once("tokens").chain(argv.iter().copied()))
            .unwrap()
            .args
    };
    let err = mpcp_pa::cli::tokens::run(
        cli(&["revoke", "officer-2"]),
        &h.store,
        h.audit.as_ref(),
        &SystemClock,
    )
    .unwrap_err();
    assert_eq!(err.code.as_str(), "LAST_OFFICER", "{err}");
    mpcp_pa::cli::tokens::run(
        cli(&["revoke", "--allow-no-officer", "officer-2"]),
        &h.store,
        h.audit.as_ref(),
        &SystemClock,
    )
    .unwrap();
    assert!(
        h.state
            .tokens()
            .list()
            .unwrap()
            .iter()
            .all(|t| t.role != ApiRole::SecurityOfficer || t.revoked_at.is_some())
    );
}
