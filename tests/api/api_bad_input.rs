//! One table of malformed requests across every mutating endpoint (and the query parameters of
//! the reads), each with its expected status, stable code and field, driven over real TLS
//! against SoftHSM2 keys and a real sled store. Around every row the whole state is
//! snapshotted (every sled tree's entries and digest, the audit log size, the HSM's token
//! objects): a refused request must change nothing.

use crate::kit;
use crate::kit::api::Harness;
use crate::kit::api::snapshot::Snapshot;
use mpcp_pa::api::Limits;
use mpcp_pa::api::routes::table;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::clock::format_rfc3339;
use mpcp_pa::crypto::Alg;
use mpcp_pa::events::Actor;
use mpcp_pa::keys::KeyRole;
use reqwest::Method;
use serde_json::{Value, json};

const GATEWAY: &str = "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b5";
/// GATEWAY with its last character changed: the checksum no longer matches.
const BAD_CHECKSUM: &str = "r3wiVnf7xstXYBR4iVNdfie69BdV6xg7b6";
const DESTS: [&str; 2] = [
    "rBeSeHbNsfZ3dqofxZ8MsfEo6ZTRJ1iHqA",
    "rsXQfv9chTvpKmf55aC2Lb44PvXdTr7S4J",
];
/// hex("mpcp:approved-merchant"): a well-formed XLS-70 credential type.
const CREDENTIAL_TYPE: &str = "6D7063703A617070726F7665642D6D65726368616E74";
/// An Ed25519 public key (RFC 8032 test 1) standing for a third-party issuer's key.
const THIRD_PARTY_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const MAX_BODY: usize = 4096;
const POLICY_LIFETIME: i64 = 3600;

fn in_secs(s: i64) -> String {
    format_rfc3339(time::OffsetDateTime::now_utc() + time::Duration::seconds(s))
}

/// A well-formed key of a third-party issuer, as a bundle embeds it.
fn third_party_key() -> Value {
    json!({"kid": "other-1", "use": "sig", "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": THIRD_PARTY_X})
}

/// Approves `other.test` in bundle `b` and embeds `key` as its only key (`issuers[1]`).
fn with_third_party(b: &mut Value, key: Value) {
    b["approvedIssuers"] = json!(["pa.test", "other.test"]);
    b["issuers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"issuer": "other.test", "keys": [key]}));
}

/// Who sends a row.
#[derive(Debug, Clone, Copy)]
enum Who {
    Anonymous,
    As(ApiRole),
}

/// One malformed request and what the service must answer.
#[derive(Debug, Clone)]
struct Row {
    name: String,
    method: Method,
    path: String,
    who: Who,
    headers: Vec<(&'static str, String)>,
    /// Content-Type sent with the body (None: no header).
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    status: u16,
    code: &'static str,
    field: Option<String>,
}

impl Row {
    fn new(name: &str, method: Method, path: &str, who: Who) -> Row {
        Row {
            name: name.to_string(),
            method,
            path: path.to_string(),
            who,
            headers: Vec::new(),
            content_type: None,
            body: None,
            status: 0,
            code: "",
            field: None,
        }
    }
    fn post(name: &str, path: &str, role: ApiRole) -> Row {
        Row::new(name, Method::POST, path, Who::As(role))
    }
    fn get(name: &str, path: &str, who: Who) -> Row {
        Row::new(name, Method::GET, path, who)
    }
    /// A GET of the audit log, as the auditor.
    fn audit(name: &str, path_and_query: &str) -> Row {
        Row::get(name, path_and_query, Who::As(ApiRole::Auditor))
    }
    /// A JSON body (sent as application/json).
    fn json(self, v: &Value) -> Row {
        self.raw(v.to_string().as_bytes())
    }
    /// Body bytes as given, sent as application/json.
    fn raw(mut self, body: &[u8]) -> Row {
        self.body = Some(body.to_vec());
        self.content_type = Some("application/json");
        self
    }
    fn content_type(mut self, ct: Option<&'static str>) -> Row {
        self.content_type = ct;
        self
    }
    fn header(mut self, name: &'static str, value: &str) -> Row {
        self.headers.push((name, value.to_string()));
        self
    }
    fn expect(mut self, status: u16, code: &'static str) -> Row {
        self.status = status;
        self.code = code;
        self
    }
    fn field(mut self, f: &str) -> Row {
        self.field = Some(f.to_string());
        self
    }
}

/// What the table needs to exist before it runs.
struct Fixture {
    issuer: String,
    officer: String,
    auditor: String,
    requester: String,
    consumer: String,
    policy_hash: String,
    /// Body of the grant issued under Idempotency-Key `k-setup`.
    setup_grant: Value,
    /// The active grant-signing key.
    active_kid: String,
    /// The active root key.
    root_kid: String,
    /// A grant-signing key revoked after it was active.
    revoked_kid: String,
    /// A revoked key whose destruction is scheduled.
    scheduled_kid: String,
    /// The published JWKs of the grant-signing role, by kid.
    jwks: Vec<Value>,
}

impl Fixture {
    fn token(&self, role: ApiRole) -> &str {
        match role {
            ApiRole::Issuer => &self.issuer,
            ApiRole::SecurityOfficer => &self.officer,
            ApiRole::Auditor => &self.auditor,
            ApiRole::ReceiptRequester => &self.requester,
            ApiRole::ReceiptConsumer => &self.consumer,
            ApiRole::Monitoring => unreachable!("no bad-input row is sent as monitoring"),
        }
    }
    fn jwk(&self, kid: &str) -> Value {
        self.jwks
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap_or_else(|| panic!("{kid} is not published"))
            .clone()
    }
    fn grant(&self, id: &str) -> Value {
        json!({
            "version": "1.0",
            "grantId": id,
            "policyHash": self.policy_hash,
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
    fn grant_with(&self, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut g = self.grant("g-new");
        f(g.as_object_mut().unwrap());
        g
    }
    fn bundle(&self) -> Value {
        json!({
            "bundleId": "b-new",
            "category": "parking",
            "approvedIssuers": ["pa.test"],
            "issuers": [{"issuer": "pa.test", "keys": [self.jwk(&self.active_kid)]}],
            "expiresAt": in_secs(3 * 3600)
        })
    }
    fn bundle_with(&self, f: impl FnOnce(&mut Value)) -> Value {
        let mut b = self.bundle();
        f(&mut b);
        b
    }
    fn allowlist(&self) -> Value {
        json!({"allowlistId": "list-new", "destinations": DESTS, "expiresAt": in_secs(3600)})
    }
    fn allowlist_with(&self, f: impl FnOnce(&mut Value)) -> Value {
        let mut a = self.allowlist();
        f(&mut a);
        a
    }
}

async fn ok(h: &Harness, path: &str, token: &str, body: &Value, key: Option<&str>) -> Value {
    let mut req = h
        .client
        .post(h.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let (status, v) = kit::api::read(req.send().await.unwrap()).await;
    assert!(status == 200 || status == 201, "setup {path}: {status} {v}");
    v
}

async fn setup(h: &Harness) -> Fixture {
    let issuer = h.token("issuer-1", ApiRole::Issuer);
    let officer = h.token("officer-1", ApiRole::SecurityOfficer);
    let auditor = h.token("auditor-1", ApiRole::Auditor);
    let requester = h.token("requester-1", ApiRole::ReceiptRequester);
    let consumer = h.token("consumer-1", ApiRole::ReceiptConsumer);
    let policy = json!({"version": "1.0", "maxGrantLifetimeSeconds": POLICY_LIFETIME});
    let policy_hash = ok(h, "/v1/policies", &issuer, &policy, None).await["policyHash"]
        .as_str()
        .unwrap()
        .to_string();
    let mut fx = Fixture {
        issuer,
        officer,
        auditor,
        requester,
        consumer,
        policy_hash,
        setup_grant: Value::Null,
        active_kid: String::new(),
        root_kid: String::new(),
        revoked_kid: String::new(),
        scheduled_kid: String::new(),
        jwks: Vec::new(),
    };
    fx.setup_grant = fx.grant("g-live");
    ok(
        h,
        "/v1/grants",
        &fx.issuer,
        &fx.setup_grant,
        Some("k-setup"),
    )
    .await;
    for id in ["g-revoked", "g-reason-a", "g-reason-b"] {
        ok(h, "/v1/grants", &fx.issuer, &fx.grant(id), None).await;
    }
    ok(
        h,
        "/v1/grants/g-revoked/revoke",
        &fx.issuer,
        &json!({"reason": "lost"}),
        None,
    )
    .await;
    let list = json!({"allowlistId": "list-1", "destinations": DESTS, "expiresAt": in_secs(3600)});
    ok(h, "/v1/destination-allowlists", &fx.issuer, &list, None).await;

    // Key states: an active key, a revoked (once active) key, a revoked key scheduled for
    // destruction.
    let rot = ok(
        h,
        "/v1/keys/grant-signing/rotate",
        &fx.officer,
        &json!({}),
        None,
    )
    .await;
    fx.revoked_kid = rot["retired"]["kid"].as_str().unwrap().to_string();
    fx.active_kid = rot["activated"]["kid"].as_str().unwrap().to_string();
    let path = format!("/v1/keys/{}/revoke", fx.revoked_kid);
    ok(h, &path, &fx.officer, &json!({"reason": "test"}), None).await;
    let reg = h.registry.clone();
    let spare = tokio::task::spawn_blocking(move || {
        reg.generate(&Actor::cli(), KeyRole::GrantSigning, Alg::EdDSA)
            .unwrap()
    })
    .await
    .unwrap();
    fx.scheduled_kid = spare.kid.clone();
    let path = format!("/v1/keys/{}/revoke", fx.scheduled_kid);
    ok(h, &path, &fx.officer, &json!({"reason": "test"}), None).await;
    let path = format!("/v1/keys/{}/destroy", fx.scheduled_kid);
    ok(h, &path, &fx.officer, &json!({"waitDays": 1}), None).await;
    fx.root_kid = h.registry.active_kid(KeyRole::Root).unwrap().unwrap();

    let (status, keys) = h.get("/.well-known/mpcp-keys.json", None).await;
    assert_eq!(status, 200, "{keys}");
    fx.jwks = keys["keys"].as_array().unwrap().clone();
    let bundle = fx.bundle_with(|b| b["bundleId"] = json!("b-1"));
    ok(h, "/v1/trust-bundles", &fx.officer, &bundle, None).await;
    fx
}

/// The table. `fx` names what exists; every row must be refused.
fn rows(fx: &Fixture) -> Vec<Row> {
    use ApiRole::{Issuer, SecurityOfficer as Officer};
    let policy = json!({"version": "1.0", "maxGrantLifetimeSeconds": 60});
    let revoke = |grant: &str| format!("/v1/grants/{grant}/revoke");
    let key_op = |kid: &str, op: &str| format!("/v1/keys/{kid}/{op}");
    let huge_pad = "x".repeat(MAX_BODY + 1);
    let (zero, unknown_hash) = ("00".repeat(32), "ab".repeat(32));
    let inclusion = "/v1/audit/proofs/inclusion";
    vec![
        // --- POST /v1/policies
        Row::post("policy: truncated JSON", "/v1/policies", Issuer)
            .raw(br#"{"version":"1.0""#)
            .expect(400, "JSON_MALFORMED"),
        Row::post("policy: empty body", "/v1/policies", Issuer)
            .raw(b"")
            .expect(400, "JSON_MALFORMED"),
        Row::post("policy: duplicate key", "/v1/policies", Issuer)
            .raw(br#"{"version":"1.0","version":"1.0"}"#)
            .expect(400, "JSON_DUPLICATE_KEY"),
        Row::post("policy: float", "/v1/policies", Issuer)
            .raw(br#"{"version":"1.0","maxGrantLifetimeSeconds":60.5}"#)
            .expect(400, "JSON_NUMBER_NOT_INTEGER"),
        Row::post("policy: unsafe integer", "/v1/policies", Issuer)
            .raw(br#"{"version":"1.0","n":9007199254740993}"#)
            .expect(400, "JSON_NUMBER_OUT_OF_RANGE"),
        Row::post("policy: invalid UTF-8", "/v1/policies", Issuer)
            .raw(b"{\"version\":\"1.0\",\"note\":\"\xff\xfe\"}")
            .expect(400, "JSON_INVALID_UTF8"),
        Row::post("policy: nesting too deep", "/v1/policies", Issuer)
            .raw(
                format!(
                    r#"{{"version":"1.0","deep":{}{}}}"#,
                    "[".repeat(40),
                    "]".repeat(40)
                )
                .as_bytes(),
            )
            .expect(400, "JSON_TOO_DEEP"),
        Row::post("policy: unsupported version", "/v1/policies", Issuer)
            .json(&json!({"version": "2.0"}))
            .expect(400, "VERSION_UNSUPPORTED"),
        Row::post("policy: missing version", "/v1/policies", Issuer)
            .json(&json!({"allowedRails": ["xrpl"]}))
            .expect(400, "SCHEMA_INVALID")
            .field("version"),
        Row::post("policy: not an object", "/v1/policies", Issuer)
            .raw(b"[]")
            .expect(400, "SCHEMA_INVALID"),
        Row::post("policy: zero lifetime", "/v1/policies", Issuer)
            .json(&json!({"version": "1.0", "maxGrantLifetimeSeconds": 0}))
            .expect(400, "SCHEMA_INVALID")
            .field("maxGrantLifetimeSeconds"),
        Row::post("policy: lifetime as string", "/v1/policies", Issuer)
            .json(&json!({"version": "1.0", "maxGrantLifetimeSeconds": "60"}))
            .expect(400, "SCHEMA_INVALID"),
        Row::post("policy: text/plain", "/v1/policies", Issuer)
            .json(&policy)
            .content_type(Some("text/plain"))
            .expect(415, "UNSUPPORTED_MEDIA_TYPE"),
        Row::post("policy: no content type", "/v1/policies", Issuer)
            .json(&policy)
            .content_type(None)
            .expect(415, "UNSUPPORTED_MEDIA_TYPE"),
        Row::post("policy: charset other than UTF-8", "/v1/policies", Issuer)
            .json(&policy)
            .content_type(Some("application/json; charset=latin1"))
            .expect(415, "UNSUPPORTED_MEDIA_TYPE"),
        Row::post("policy: oversize", "/v1/policies", Issuer)
            .json(&json!({"version": "1.0", "pad": huge_pad}))
            .expect(413, "PAYLOAD_TOO_LARGE"),
        // --- POST /v1/grants
        Row::post("grant: rails other than xrpl", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("allowedRails".into(), json!(["xrpl", "evm"]));
            }))
            .expect(400, "GRANT_NOT_CONFORMING")
            .field("allowedRails"),
        Row::post("grant: no authorizedGateway", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.remove("authorizedGateway");
            }))
            .expect(400, "GRANT_NOT_CONFORMING")
            .field("authorizedGateway"),
        Row::post("grant: no velocityLimit", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.remove("velocityLimit");
            }))
            .expect(400, "GRANT_NOT_CONFORMING")
            .field("velocityLimit"),
        Row::post(
            "grant: velocityLimit of zero payments",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert(
                "velocityLimit".into(),
                json!({"maxPayments": 0, "windowSeconds": 60}),
            );
        }))
        .expect(400, "GRANT_NOT_CONFORMING")
        .field("velocityLimit"),
        Row::post("grant: revocationEndpoint", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("revocationEndpoint".into(), json!("https://pa.test/r"));
            }))
            .expect(400, "GRANT_NOT_CONFORMING")
            .field("revocationEndpoint"),
        Row::post("grant: ERC20 asset", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert(
                    "allowedAssets".into(),
                    json!([{"kind": "ERC20", "chainId": 1, "token": "0xabc"}]),
                );
            }))
            .expect(400, "GRANT_NOT_CONFORMING")
            .field("allowedAssets[0]"),
        Row::post("grant: deprecated xrpl:nft anchor", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("anchorRef".into(), json!("xrpl:nft:0001"));
            }))
            .expect(400, "GRANT_NOT_CONFORMING")
            .field("anchorRef"),
        Row::post("grant: unknown policyHash", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("policyHash".into(), json!("ab".repeat(32)));
            }))
            .expect(400, "POLICY_HASH_MISMATCH")
            .field("policyHash"),
        Row::post("grant: policyHash not hex", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("policyHash".into(), json!("not-a-hash"));
            }))
            .expect(400, "SCHEMA_INVALID")
            .field("policyHash"),
        Row::post("grant: expiresAt in the past", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("expiresAt".into(), json!(in_secs(-60)));
            }))
            .expect(400, "TIMESTAMP_INVALID")
            .field("expiresAt"),
        Row::post("grant: expiresAt beyond the policy", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("expiresAt".into(), json!(in_secs(POLICY_LIFETIME + 600)));
            }))
            .expect(400, "LIFETIME_EXCEEDED")
            .field("expiresAt"),
        Row::post("grant: expiresAt not RFC 3339", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("expiresAt".into(), json!("tomorrow"));
            }))
            .expect(400, "TIMESTAMP_INVALID")
            .field("expiresAt"),
        Row::post("grant: cumulative cap over budget", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("offlineMaxCumulativePayment".into(), json!("50001"));
                g.insert("offlineMaxCumulativePaymentCurrency".into(), json!("XRP"));
            }))
            .expect(400, "AMOUNT_INCONSISTENT")
            .field("offlineMaxCumulativePayment"),
        Row::post("grant: single cap over budget", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("offlineMaxSinglePayment".into(), json!("60000"));
                g.insert("offlineMaxSinglePaymentCurrency".into(), json!("XRP"));
            }))
            .expect(400, "AMOUNT_INCONSISTENT")
            .field("offlineMaxSinglePayment"),
        Row::post("grant: single cap over cumulative", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("offlineMaxSinglePayment".into(), json!("200"));
                g.insert("offlineMaxSinglePaymentCurrency".into(), json!("XRP"));
                g.insert("offlineMaxCumulativePayment".into(), json!("100"));
            }))
            .expect(400, "AMOUNT_INCONSISTENT")
            .field("offlineMaxSinglePayment"),
        Row::post("grant: cap in another currency", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("offlineMaxCumulativePayment".into(), json!("10"));
                g.insert("offlineMaxCumulativePaymentCurrency".into(), json!("USD"));
            }))
            .expect(400, "AMOUNT_INCONSISTENT")
            .field("offlineMaxCumulativePayment"),
        Row::post("grant: decimal amount", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("budgetMinor".into(), json!("500.00"));
            }))
            .expect(400, "AMOUNT_INVALID")
            .field("budgetMinor"),
        Row::post("grant: amount as a number", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("budgetMinor".into(), json!(50000));
            }))
            .expect(400, "SCHEMA_INVALID"),
        Row::post("grant: float", "/v1/grants", Issuer)
            .raw(
                fx.grant("g-new")
                    .to_string()
                    .replace(r#""windowSeconds":3600"#, r#""windowSeconds":3600.5"#)
                    .as_bytes(),
            )
            .expect(400, "JSON_NUMBER_NOT_INTEGER"),
        Row::post("grant: nested duplicate key", "/v1/grants", Issuer)
            .raw(
                fx.grant("g-new")
                    .to_string()
                    .replace(
                        r#""maxPayments":10"#,
                        r#""maxPayments":10,"maxPayments":99"#,
                    )
                    .as_bytes(),
            )
            .expect(400, "JSON_DUPLICATE_KEY"),
        Row::post(
            "grant: unknown member of velocityLimit",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert(
                "velocityLimit".into(),
                json!({"maxPayments": 1, "windowSeconds": 60, "burst": 2}),
            );
        }))
        .expect(400, "UNKNOWN_FIELD")
        .field("burst"),
        Row::post("grant: reused grantId", "/v1/grants", Issuer)
            .json(&fx.grant("g-live"))
            .expect(409, "CONFLICT")
            .field("grantId"),
        Row::post("grant: bad gateway checksum", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("authorizedGateway".into(), json!(BAD_CHECKSUM));
            }))
            .expect(400, "ADDRESS_INVALID")
            .field("authorizedGateway"),
        Row::post("grant: bad destination", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert(
                    "destinationAllowlist".into(),
                    json!([DESTS[0], "r0OlIl0OlIl0OlIl0OlIl0OlIl0OlIl"]),
                );
            }))
            .expect(400, "ADDRESS_INVALID")
            .field("destinationAllowlist[1]"),
        Row::post("grant: bad IOU issuer", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert(
                    "allowedAssets".into(),
                    json!([
                        {"kind": "XRP"},
                        {"kind": "IOU", "currency": "USD", "issuer": BAD_CHECKSUM}
                    ]),
                );
            }))
            .expect(400, "ADDRESS_INVALID")
            .field("allowedAssets[1].issuer"),
        Row::post("grant: bad credential issuer", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("activeGrantCredentialIssuer".into(), json!("rShort"));
            }))
            .expect(400, "ADDRESS_INVALID")
            .field("activeGrantCredentialIssuer"),
        // A valid address that is neither the PA's own account nor a declared issuer.
        Row::post("grant: unknown credential issuer", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert(
                    "activeGrantCredentialIssuer".into(),
                    json!("rHb9CJAWyB4rj91VRWn96DkukG4bwdtyTh"),
                );
            }))
            .expect(400, "CREDENTIAL_ISSUER_UNKNOWN")
            .field("activeGrantCredentialIssuer"),
        Row::post("grant: unsupported scope", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("scope".into(), json!("GLOBAL"));
            }))
            .expect(400, "SCOPE_UNSUPPORTED")
            .field("scope"),
        Row::post("grant: issuer supplied", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("issuer".into(), json!("someone-else"));
            }))
            .expect(400, "SCHEMA_INVALID")
            .field("issuer"),
        Row::post("grant: signature supplied", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("signature".into(), json!("AAAA"));
            }))
            .expect(400, "SCHEMA_INVALID")
            .field("signature"),
        Row::post("grant: issuedAt supplied", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("issuedAt".into(), json!(in_secs(0)));
            }))
            .expect(400, "SCHEMA_INVALID")
            .field("issuedAt"),
        Row::post("grant: empty grantId", "/v1/grants", Issuer)
            .json(&fx.grant(""))
            .expect(400, "SCHEMA_INVALID")
            .field("grantId"),
        Row::post("grant: missing subjectId", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.remove("subjectId");
            }))
            .expect(400, "SCHEMA_INVALID")
            .field("subjectId"),
        Row::post(
            "grant: Idempotency-Key reused for another request",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant("g-other"))
        .header("idempotency-key", "k-setup")
        .expect(409, "IDEMPOTENCY_CONFLICT")
        .field("Idempotency-Key"),
        Row::post("grant: Idempotency-Key with a space", "/v1/grants", Issuer)
            .json(&fx.grant("g-new"))
            .header("idempotency-key", "a b")
            .expect(400, "SCHEMA_INVALID")
            .field("Idempotency-Key"),
        Row::post("grant: Idempotency-Key too long", "/v1/grants", Issuer)
            .json(&fx.grant("g-new"))
            .header("idempotency-key", &"k".repeat(256))
            .expect(400, "SCHEMA_INVALID")
            .field("Idempotency-Key"),
        Row::post("grant: Idempotency-Key not ASCII", "/v1/grants", Issuer)
            .json(&fx.grant("g-new"))
            .header("idempotency-key", "schl\u{fc}ssel")
            .expect(400, "SCHEMA_INVALID")
            .field("Idempotency-Key"),
        Row::post("grant: form-encoded", "/v1/grants", Issuer)
            .raw(b"grantId=g-new")
            .content_type(Some("application/x-www-form-urlencoded"))
            .expect(415, "UNSUPPORTED_MEDIA_TYPE"),
        Row::post("grant: oversize", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("x-pad".into(), json!(huge_pad));
            }))
            .expect(413, "PAYLOAD_TOO_LARGE"),
        // --- POST /v1/grants: identifiers (one ASCII rule, 1..=46 bytes)
        Row::post(
            "grant: grantId with a zero-width space",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant("g-live\u{200b}"))
        .expect(400, "SCHEMA_INVALID")
        .field("grantId"),
        Row::post("grant: grantId with a bidi override", "/v1/grants", Issuer)
            .json(&fx.grant("g-\u{202e}evil"))
            .expect(400, "SCHEMA_INVALID")
            .field("grantId"),
        Row::post(
            "grant: grantId with a Cyrillic lookalike",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant("g-n\u{435}w"))
        .expect(400, "SCHEMA_INVALID")
        .field("grantId"),
        Row::post("grant: grantId of 47 bytes", "/v1/grants", Issuer)
            .json(&fx.grant(&format!("g-{}", "x".repeat(45))))
            .expect(400, "SCHEMA_INVALID")
            .field("grantId"),
        Row::post("grant: grantId of 61 bytes", "/v1/grants", Issuer)
            .json(&fx.grant(&"g".repeat(61)))
            .expect(400, "SCHEMA_INVALID")
            .field("grantId"),
        Row::post("grant: grantId starting with a dot", "/v1/grants", Issuer)
            .json(&fx.grant(".g-new"))
            .expect(400, "SCHEMA_INVALID")
            .field("grantId"),
        Row::post("grant: grantId with a colon", "/v1/grants", Issuer)
            .json(&fx.grant("g:new"))
            .expect(400, "SCHEMA_INVALID")
            .field("grantId"),
        // --- POST /v1/grants: control and format characters in caller-supplied text
        Row::post(
            "grant: control character in operatorId",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert("operatorId".into(), json!("op\u{7}-12"));
        }))
        .expect(400, "SCHEMA_INVALID")
        .field("operatorId"),
        Row::post("grant: zero-width space in subjectId", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("subjectId".into(), json!("vehicle-4711\u{200b}"));
            }))
            .expect(400, "SCHEMA_INVALID")
            .field("subjectId"),
        Row::post("grant: bidi isolate in reasons", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("reasons".into(), json!(["OK", "x\u{2066}y\u{2069}"]));
            }))
            .expect(400, "SCHEMA_INVALID")
            .field("reasons[1]"),
        Row::post("grant: newline in allowedPurposes", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("allowedPurposes".into(), json!(["transport:toll\n"]));
            }))
            .expect(400, "SCHEMA_INVALID")
            .field("allowedPurposes[0]"),
        Row::post(
            "grant: bidi override in an extension member",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert("x-note".into(), json!({"list": [{"text": "a\u{202e}b"}]}));
        }))
        .expect(400, "SCHEMA_INVALID")
        .field("x-note.list[0].text"),
        Row::post(
            "grant: zero-width space in a member name",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert("budgetMinor\u{200b}".into(), json!("1"));
        }))
        .expect(400, "SCHEMA_INVALID")
        .field("budgetMinor\u{200b}"),
        // --- POST /v1/grants: credential pairs
        Row::post(
            "grant: gateway credential issuer without type",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert("gatewayCredentialIssuer".into(), json!(GATEWAY));
        }))
        .expect(400, "SCHEMA_INVALID")
        .field("gatewayCredentialType"),
        Row::post(
            "grant: gateway credential type without issuer",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert("gatewayCredentialType".into(), json!(CREDENTIAL_TYPE));
        }))
        .expect(400, "SCHEMA_INVALID")
        .field("gatewayCredentialIssuer"),
        Row::post(
            "grant: merchant credential issuer without type",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert("merchantCredentialIssuer".into(), json!(DESTS[0]));
        }))
        .expect(400, "SCHEMA_INVALID")
        .field("merchantCredentialType"),
        Row::post(
            "grant: merchant credential type without issuer",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert("merchantCredentialType".into(), json!(CREDENTIAL_TYPE));
        }))
        .expect(400, "SCHEMA_INVALID")
        .field("merchantCredentialIssuer"),
        Row::post(
            "grant: subject credential issuer without type",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert("subjectCredentialIssuer".into(), json!(DESTS[1]));
        }))
        .expect(400, "SCHEMA_INVALID")
        .field("subjectCredentialType"),
        Row::post(
            "grant: subject credential type without issuer",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert("subjectCredentialType".into(), json!(CREDENTIAL_TYPE));
        }))
        .expect(400, "SCHEMA_INVALID")
        .field("subjectCredentialIssuer"),
        // --- POST /v1/grants: currencies and offline caps
        Row::post("grant: budgetCurrency of two letters", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("budgetCurrency".into(), json!("US"));
            }))
            .expect(400, "SCHEMA_INVALID")
            .field("budgetCurrency"),
        Row::post(
            "grant: budgetCurrency of five letters",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert("budgetCurrency".into(), json!("RLUSD"));
        }))
        .expect(400, "SCHEMA_INVALID")
        .field("budgetCurrency"),
        Row::post(
            "grant: budgetCurrency hex with a zero first byte",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert(
                "budgetCurrency".into(),
                json!(format!("00{}", "55".repeat(19))),
            );
        }))
        .expect(400, "SCHEMA_INVALID")
        .field("budgetCurrency"),
        Row::post("grant: budgetCurrency with a space", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("budgetCurrency".into(), json!("U D"));
            }))
            .expect(400, "SCHEMA_INVALID")
            .field("budgetCurrency"),
        Row::post(
            "grant: single-cap currency not a code",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert("offlineMaxSinglePayment".into(), json!("10"));
            g.insert(
                "offlineMaxSinglePaymentCurrency".into(),
                json!("\u{20ac}UR"),
            );
        }))
        .expect(400, "SCHEMA_INVALID")
        .field("offlineMaxSinglePaymentCurrency"),
        Row::post(
            "grant: cumulative-cap currency not a code",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert("offlineMaxCumulativePayment".into(), json!("10"));
            g.insert("offlineMaxCumulativePaymentCurrency".into(), json!("EURO"));
        }))
        .expect(400, "SCHEMA_INVALID")
        .field("offlineMaxCumulativePaymentCurrency"),
        Row::post(
            "grant: 38-digit caps without a budget",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.remove("budgetMinor");
            g.remove("budgetCurrency");
            g.insert("offlineMaxSinglePayment".into(), json!("9".repeat(38)));
            g.insert("offlineMaxCumulativePayment".into(), json!("9".repeat(38)));
        }))
        .expect(400, "SCHEMA_INVALID")
        .field("budgetMinor"),
        Row::post("grant: cap without budgetCurrency", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.remove("budgetCurrency");
                g.insert("offlineMaxCumulativePayment".into(), json!("10"));
            }))
            .expect(400, "SCHEMA_INVALID")
            .field("budgetCurrency"),
        Row::post(
            "grant: cap currency other than the budget's",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert("offlineMaxSinglePayment".into(), json!("10"));
            g.insert("offlineMaxSinglePaymentCurrency".into(), json!("USD"));
        }))
        .expect(400, "AMOUNT_INCONSISTENT")
        .field("offlineMaxSinglePayment"),
        // --- POST /v1/grants: one RFC 3339 profile
        Row::post(
            "grant: expiresAt with 20 fractional digits",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            let t = in_secs(600).replace('Z', ".99999999999999999999Z");
            g.insert("expiresAt".into(), json!(t));
        }))
        .expect(400, "TIMESTAMP_INVALID")
        .field("expiresAt"),
        Row::post("grant: expiresAt with a lowercase t", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("expiresAt".into(), json!(in_secs(600).replace('T', "t")));
            }))
            .expect(400, "TIMESTAMP_INVALID")
            .field("expiresAt"),
        Row::post("grant: expiresAt with a lowercase z", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert("expiresAt".into(), json!(in_secs(600).replace('Z', "z")));
            }))
            .expect(400, "TIMESTAMP_INVALID")
            .field("expiresAt"),
        Row::post("grant: expiresAt with an offset", "/v1/grants", Issuer)
            .json(&fx.grant_with(|g| {
                g.insert(
                    "expiresAt".into(),
                    json!(in_secs(600).replace('Z', "+00:00")),
                );
            }))
            .expect(400, "TIMESTAMP_INVALID")
            .field("expiresAt"),
        Row::post(
            "grant: expiresAt with an empty fraction",
            "/v1/grants",
            Issuer,
        )
        .json(&fx.grant_with(|g| {
            g.insert("expiresAt".into(), json!(in_secs(600).replace('Z', ".Z")));
        }))
        .expect(400, "TIMESTAMP_INVALID")
        .field("expiresAt"),
        // --- POST /v1/grants/{grantId}/revoke
        Row::post("revoke grant: unknown grant", &revoke("g-nope"), Issuer)
            .json(&json!({"reason": "x"}))
            .expect(404, "NOT_FOUND")
            .field("grantId"),
        Row::post("revoke grant: revoked twice", &revoke("g-revoked"), Issuer)
            .json(&json!({"reason": "again"}))
            .expect(409, "CONFLICT")
            .field("grantId"),
        Row::post("revoke grant: no reason", &revoke("g-live"), Issuer)
            .json(&json!({}))
            .expect(400, "SCHEMA_INVALID")
            .field("reason"),
        Row::post("revoke grant: blank reason", &revoke("g-live"), Issuer)
            .json(&json!({"reason": "  "}))
            .expect(400, "SCHEMA_INVALID")
            .field("reason"),
        Row::post(
            "revoke grant: reason not a string",
            &revoke("g-live"),
            Issuer,
        )
        .json(&json!({"reason": 7}))
        .expect(400, "SCHEMA_INVALID")
        .field("reason"),
        Row::post("revoke grant: unknown member", &revoke("g-live"), Issuer)
            .json(&json!({"reason": "x", "because": "y"}))
            .expect(400, "UNKNOWN_FIELD")
            .field("because"),
        Row::post(
            "revoke grant: control characters",
            &revoke("g-reason-a"),
            Issuer,
        )
        .json(&json!({"reason": "line\nbreak"}))
        .expect(400, "SCHEMA_INVALID")
        .field("reason"),
        Row::post(
            "revoke grant: reason over 512 characters",
            &revoke("g-reason-b"),
            Issuer,
        )
        .json(&json!({"reason": "r".repeat(513)}))
        .expect(400, "SCHEMA_INVALID")
        .field("reason"),
        Row::post("revoke grant: no body", &revoke("g-live"), Issuer)
            .content_type(None)
            .expect(415, "UNSUPPORTED_MEDIA_TYPE"),
        // --- POST /v1/destination-allowlists
        Row::post(
            "allowlist: bad address",
            "/v1/destination-allowlists",
            Issuer,
        )
        .json(&fx.allowlist_with(|a| a["destinations"] = json!([DESTS[0], BAD_CHECKSUM])))
        .expect(400, "ADDRESS_INVALID")
        .field("destinations[1]"),
        Row::post(
            "allowlist: duplicate destination",
            "/v1/destination-allowlists",
            Issuer,
        )
        .json(&fx.allowlist_with(|a| a["destinations"] = json!([DESTS[0], DESTS[0]])))
        .expect(400, "SCHEMA_INVALID")
        .field("destinations[1]"),
        Row::post(
            "allowlist: sequence supplied",
            "/v1/destination-allowlists",
            Issuer,
        )
        .json(&fx.allowlist_with(|a| a["sequence"] = json!(7)))
        .expect(400, "UNKNOWN_FIELD")
        .field("sequence"),
        Row::post(
            "allowlist: issuer supplied",
            "/v1/destination-allowlists",
            Issuer,
        )
        .json(&fx.allowlist_with(|a| a["issuer"] = json!("someone-else")))
        .expect(400, "UNKNOWN_FIELD")
        .field("issuer"),
        Row::post("allowlist: expired", "/v1/destination-allowlists", Issuer)
            .json(&fx.allowlist_with(|a| a["expiresAt"] = json!(in_secs(-1))))
            .expect(400, "TIMESTAMP_INVALID")
            .field("expiresAt"),
        Row::post(
            "allowlist: lifetime over 30 days",
            "/v1/destination-allowlists",
            Issuer,
        )
        .json(&fx.allowlist_with(|a| a["expiresAt"] = json!(in_secs(31 * 86400))))
        .expect(400, "LIFETIME_EXCEEDED")
        .field("expiresAt"),
        Row::post(
            "allowlist: no allowlistId",
            "/v1/destination-allowlists",
            Issuer,
        )
        .json(&json!({"destinations": DESTS, "expiresAt": in_secs(3600)}))
        .expect(400, "SCHEMA_INVALID")
        .field("allowlistId"),
        Row::post(
            "allowlist: version 2.0",
            "/v1/destination-allowlists",
            Issuer,
        )
        .json(&fx.allowlist_with(|a| a["version"] = json!("2.0")))
        .expect(400, "VERSION_UNSUPPORTED"),
        Row::post(
            "allowlist: destinations not a list",
            "/v1/destination-allowlists",
            Issuer,
        )
        .json(&fx.allowlist_with(|a| a["destinations"] = json!(DESTS[0])))
        .expect(400, "SCHEMA_INVALID"),
        Row::post(
            "allowlist: allowlistId with a bidi override",
            "/v1/destination-allowlists",
            Issuer,
        )
        .json(&fx.allowlist_with(|a| a["allowlistId"] = json!("list-\u{202e}1")))
        .expect(400, "SCHEMA_INVALID")
        .field("allowlistId"),
        Row::post(
            "allowlist: allowlistId of 47 bytes",
            "/v1/destination-allowlists",
            Issuer,
        )
        .json(&fx.allowlist_with(|a| a["allowlistId"] = json!("l".repeat(47))))
        .expect(400, "SCHEMA_INVALID")
        .field("allowlistId"),
        Row::post(
            "allowlist: allowlistId with a slash",
            "/v1/destination-allowlists",
            Issuer,
        )
        .json(&fx.allowlist_with(|a| a["allowlistId"] = json!("list/1")))
        .expect(400, "SCHEMA_INVALID")
        .field("allowlistId"),
        Row::post(
            "allowlist: expiresAt with a lowercase t",
            "/v1/destination-allowlists",
            Issuer,
        )
        .json(&fx.allowlist_with(|a| a["expiresAt"] = json!(in_secs(3600).replace('T', "t"))))
        .expect(400, "TIMESTAMP_INVALID")
        .field("expiresAt"),
        // --- POST /v1/trust-bundles
        Row::post("bundle: lifetime over 7 days", "/v1/trust-bundles", Officer)
            .json(&fx.bundle_with(|b| b["expiresAt"] = json!(in_secs(7 * 86400 + 3600))))
            .expect(400, "LIFETIME_EXCEEDED")
            .field("expiresAt"),
        Row::post("bundle: expired", "/v1/trust-bundles", Officer)
            .json(&fx.bundle_with(|b| b["expiresAt"] = json!(in_secs(-60))))
            .expect(400, "TIMESTAMP_INVALID")
            .field("expiresAt"),
        Row::post(
            "bundle: expiresAt not RFC 3339",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| b["expiresAt"] = json!("2030-02-30T00:00:00Z")))
        .expect(400, "TIMESTAMP_INVALID")
        .field("expiresAt"),
        Row::post("bundle: version 2.0", "/v1/trust-bundles", Officer)
            .json(&fx.bundle_with(|b| b["version"] = json!("2.0")))
            .expect(400, "VERSION_UNSUPPORTED"),
        Row::post("bundle: issuedAt supplied", "/v1/trust-bundles", Officer)
            .json(&fx.bundle_with(|b| b["issuedAt"] = json!(in_secs(0))))
            .expect(400, "SCHEMA_INVALID")
            .field("issuedAt"),
        Row::post(
            "bundle: unknown geography member",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| b["geography"] = json!({"region": "EU", "city": "Berlin"})))
        .expect(400, "UNKNOWN_FIELD")
        .field("city"),
        Row::post("bundle: issuer not approved", "/v1/trust-bundles", Officer)
            .json(&fx.bundle_with(|b| b["approvedIssuers"] = json!(["someone-else"])))
            .expect(400, "ISSUER_NOT_APPROVED")
            .field("issuers[0].issuer"),
        Row::post("bundle: key not the PA's", "/v1/trust-bundles", Officer)
            .json(&fx.bundle_with(|b| b["issuers"][0]["keys"][0]["kid"] = json!("not-ours")))
            .expect(404, "KEY_NOT_FOUND")
            .field("issuers[0].keys[0]"),
        Row::post(
            "bundle: revoked key as published",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| {
            b["issuers"][0]["keys"] = json!([fx.jwk(&fx.active_kid), fx.jwk(&fx.revoked_kid)])
        }))
        .expect(400, "KEY_REVOKED")
        .field("issuers[0].keys[1]"),
        Row::post(
            "bundle: revoked key claimed active",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| {
            let mut k = fx.jwk(&fx.revoked_kid);
            k["active"] = json!(true);
            b["issuers"][0]["keys"] = json!([k]);
        }))
        .expect(400, "KEY_REVOKED")
        .field("issuers[0].keys[0]"),
        Row::post("bundle: key with another x", "/v1/trust-bundles", Officer)
            .json(&fx.bundle_with(|b| {
                b["issuers"][0]["keys"][0]["x"] = fx.jwk(&fx.revoked_kid)["x"].clone()
            }))
            .expect(400, "KEY_FORMAT_INVALID")
            .field("issuers[0].keys[0]"),
        Row::post("bundle: private key material", "/v1/trust-bundles", Officer)
            .json(&fx.bundle_with(|b| {
                b["issuers"][0]["keys"][0]["d"] =
                    json!("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A");
            }))
            .expect(400, "KEY_PRIVATE_MATERIAL")
            .field("issuers[0].keys[0].d"),
        Row::post(
            "bundle: alg conflicts with curve",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| b["issuers"][0]["keys"][0]["alg"] = json!("ES256K")))
        .expect(400, "KEY_ALG_MISMATCH")
        .field("issuers[0].keys[0].alg"),
        Row::post(
            "bundle: revokedGrantIds supplied",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| b["revokedGrantIds"] = json!([])))
        .expect(400, "SCHEMA_INVALID")
        .field("revokedGrantIds"),
        Row::post("bundle: bundleKeyId supplied", "/v1/trust-bundles", Officer)
            .json(&fx.bundle_with(|b| b["bundleKeyId"] = json!(fx.root_kid)))
            .expect(400, "SCHEMA_INVALID")
            .field("bundleKeyId"),
        Row::post("bundle: reused bundleId", "/v1/trust-bundles", Officer)
            .json(&fx.bundle_with(|b| b["bundleId"] = json!("b-1")))
            .expect(409, "CONFLICT")
            .field("bundleId"),
        Row::post("bundle: no category", "/v1/trust-bundles", Officer)
            .json(&fx.bundle_with(|b| {
                b.as_object_mut().unwrap().remove("category");
            }))
            .expect(400, "SCHEMA_INVALID")
            .field("category"),
        // --- POST /v1/trust-bundles: key format (every embedded key has kid and use "sig")
        Row::post("bundle: PA key without use", "/v1/trust-bundles", Officer)
            .json(&fx.bundle_with(|b| {
                b["issuers"][0]["keys"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("use");
            }))
            .expect(400, "KEY_FORMAT_INVALID")
            .field("issuers[0].keys[0].use"),
        Row::post(
            "bundle: third-party key without use",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| {
            let mut k = third_party_key();
            k.as_object_mut().unwrap().remove("use");
            with_third_party(b, k);
        }))
        .expect(400, "KEY_FORMAT_INVALID")
        .field("issuers[1].keys[0].use"),
        Row::post(
            "bundle: third-party key with use enc",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| {
            let mut k = third_party_key();
            k["use"] = json!("enc");
            with_third_party(b, k);
        }))
        .expect(400, "KEY_FORMAT_INVALID")
        .field("issuers[1].keys[0].use"),
        Row::post(
            "bundle: third-party key without kid",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| {
            let mut k = third_party_key();
            k.as_object_mut().unwrap().remove("kid");
            with_third_party(b, k);
        }))
        .expect(400, "KEY_FORMAT_INVALID")
        .field("issuers[1].keys[0].kid"),
        Row::post(
            "bundle: third-party key with an empty kid",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| {
            let mut k = third_party_key();
            k["kid"] = json!("");
            with_third_party(b, k);
        }))
        .expect(400, "KEY_FORMAT_INVALID")
        .field("issuers[1].keys[0].kid"),
        // --- POST /v1/trust-bundles: identifiers, text and timestamps
        Row::post(
            "bundle: bundleId with a zero-width space",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| b["bundleId"] = json!("b-1\u{200b}")))
        .expect(400, "SCHEMA_INVALID")
        .field("bundleId"),
        Row::post("bundle: bundleId of 47 bytes", "/v1/trust-bundles", Officer)
            .json(&fx.bundle_with(|b| b["bundleId"] = json!("b".repeat(47))))
            .expect(400, "SCHEMA_INVALID")
            .field("bundleId"),
        Row::post(
            "bundle: bundleId starting with a dash",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| b["bundleId"] = json!("-b-new")))
        .expect(400, "SCHEMA_INVALID")
        .field("bundleId"),
        Row::post(
            "bundle: bidi override in merchant",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| b["merchant"] = json!("did:web:\u{202e}evil.test")))
        .expect(400, "SCHEMA_INVALID")
        .field("merchant"),
        Row::post(
            "bundle: zero-width space in category",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| b["category"] = json!("parking\u{200b}")))
        .expect(400, "SCHEMA_INVALID")
        .field("category"),
        Row::post(
            "bundle: tab in geography region",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| b["geography"] = json!({"region": "EU\t"})))
        .expect(400, "SCHEMA_INVALID")
        .field("geography.region"),
        Row::post(
            "bundle: BOM in an approved issuer",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| b["approvedIssuers"] = json!(["pa.test", "\u{feff}other.test"])))
        .expect(400, "SCHEMA_INVALID")
        .field("approvedIssuers[1]"),
        Row::post(
            "bundle: expiresAt with a lowercase z",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| b["expiresAt"] = json!(in_secs(3 * 3600).replace('Z', "z"))))
        .expect(400, "TIMESTAMP_INVALID")
        .field("expiresAt"),
        Row::post(
            "bundle: expiresAt with 10 fractional digits",
            "/v1/trust-bundles",
            Officer,
        )
        .json(&fx.bundle_with(|b| {
            b["expiresAt"] = json!(in_secs(3 * 3600).replace('Z', ".0000000001Z"))
        }))
        .expect(400, "TIMESTAMP_INVALID")
        .field("expiresAt"),
        // --- POST /v1/keys/{role}/rotate
        Row::post("rotate: gateway role", "/v1/keys/gateway/rotate", Officer)
            .json(&json!({}))
            .expect(400, "SCHEMA_INVALID")
            .field("role"),
        Row::post("rotate: unknown role", "/v1/keys/signing/rotate", Officer)
            .json(&json!({}))
            .expect(400, "SCHEMA_INVALID")
            .field("role"),
        Row::post(
            "rotate: unknown kid",
            "/v1/keys/grant-signing/rotate",
            Officer,
        )
        .json(&json!({"kid": "kid-nope"}))
        .expect(404, "KEY_NOT_FOUND")
        .field("kid"),
        Row::post(
            "rotate: kid of another role",
            "/v1/keys/grant-signing/rotate",
            Officer,
        )
        .json(&json!({"kid": fx.root_kid}))
        .expect(400, "KEY_ROLE_MISMATCH")
        .field("kid"),
        Row::post(
            "rotate: active kid",
            "/v1/keys/grant-signing/rotate",
            Officer,
        )
        .json(&json!({"kid": fx.active_kid}))
        .expect(409, "KEY_STATE_INVALID")
        .field("kid"),
        Row::post(
            "rotate: revoked kid",
            "/v1/keys/grant-signing/rotate",
            Officer,
        )
        .json(&json!({"kid": fx.revoked_kid}))
        .expect(400, "KEY_REVOKED")
        .field("kid"),
        Row::post(
            "rotate: kid and alg",
            "/v1/keys/grant-signing/rotate",
            Officer,
        )
        .json(&json!({"kid": fx.active_kid, "alg": "EdDSA"}))
        .expect(400, "SCHEMA_INVALID")
        .field("alg"),
        Row::post(
            "rotate: unknown alg",
            "/v1/keys/grant-signing/rotate",
            Officer,
        )
        .json(&json!({"alg": "RS256"}))
        .expect(400, "ALGORITHM_UNSUPPORTED")
        .field("alg"),
        Row::post(
            "rotate: unknown member",
            "/v1/keys/grant-signing/rotate",
            Officer,
        )
        .json(&json!({"size": 256}))
        .expect(400, "UNKNOWN_FIELD")
        .field("size"),
        Row::post(
            "rotate: text/plain",
            "/v1/keys/grant-signing/rotate",
            Officer,
        )
        .raw(b"{}")
        .content_type(Some("text/plain"))
        .expect(415, "UNSUPPORTED_MEDIA_TYPE"),
        Row::post(
            "rotate: untyped non-empty body",
            "/v1/keys/grant-signing/rotate",
            Officer,
        )
        .raw(b"{}")
        .content_type(None)
        .expect(415, "UNSUPPORTED_MEDIA_TYPE"),
        // --- POST /v1/keys/{kid}/revoke
        Row::post(
            "revoke key: unknown kid",
            &key_op("kid-nope", "revoke"),
            Officer,
        )
        .json(&json!({"reason": "x"}))
        .expect(404, "KEY_NOT_FOUND")
        .field("kid"),
        Row::post(
            "revoke key: twice",
            &key_op(&fx.revoked_kid, "revoke"),
            Officer,
        )
        .json(&json!({"reason": "again"}))
        .expect(400, "KEY_REVOKED")
        .field("kid"),
        Row::post(
            "revoke key: no reason",
            &key_op(&fx.active_kid, "revoke"),
            Officer,
        )
        .json(&json!({}))
        .expect(400, "SCHEMA_INVALID")
        .field("reason"),
        Row::post(
            "revoke key: control characters",
            &key_op(&fx.active_kid, "revoke"),
            Officer,
        )
        .json(&json!({"reason": "line\nbreak"}))
        .expect(400, "SCHEMA_INVALID")
        .field("reason"),
        // --- POST /v1/keys/{kid}/destroy
        Row::post(
            "revoke key: reason over 512 characters",
            &key_op(&fx.active_kid, "revoke"),
            Officer,
        )
        .json(&json!({"reason": "r".repeat(513)}))
        .expect(400, "SCHEMA_INVALID")
        .field("reason"),
        Row::post(
            "destroy: active key",
            &key_op(&fx.active_kid, "destroy"),
            Officer,
        )
        .json(&json!({"waitDays": 1}))
        .expect(409, "KEY_STATE_INVALID")
        .field("kid"),
        Row::post(
            "destroy: unknown kid",
            &key_op("kid-nope", "destroy"),
            Officer,
        )
        .json(&json!({}))
        .expect(404, "KEY_NOT_FOUND")
        .field("kid"),
        Row::post(
            "destroy: already scheduled",
            &key_op(&fx.scheduled_kid, "destroy"),
            Officer,
        )
        .json(&json!({"waitDays": 2}))
        .expect(409, "KEY_STATE_INVALID")
        .field("kid"),
        Row::post(
            "destroy: negative wait",
            &key_op(&fx.revoked_kid, "destroy"),
            Officer,
        )
        .json(&json!({"waitDays": -1}))
        .expect(400, "SCHEMA_INVALID")
        .field("waitDays"),
        Row::post(
            "destroy: wait as string",
            &key_op(&fx.revoked_kid, "destroy"),
            Officer,
        )
        .json(&json!({"waitDays": "1"}))
        .expect(400, "SCHEMA_INVALID")
        .field("waitDays"),
        Row::post(
            "destroy: wait over ten years",
            &key_op(&fx.revoked_kid, "destroy"),
            Officer,
        )
        .json(&json!({"waitDays": 4000}))
        .expect(400, "SCHEMA_INVALID")
        .field("waitDays"),
        // --- reads: query parameters and path values
        Row::audit(
            "entries: range past the log",
            "/v1/audit/entries?start=100000",
        )
        .expect(400, "PROOF_OUT_OF_RANGE"),
        Row::audit(
            "entries: more than 1000",
            "/v1/audit/entries?start=0&end=1001",
        )
        .expect(400, "PROOF_OUT_OF_RANGE"),
        Row::audit(
            "entries: end before start",
            "/v1/audit/entries?start=5&end=2",
        )
        .expect(400, "PROOF_OUT_OF_RANGE"),
        Row::audit(
            "inclusion: empty tree",
            "/v1/audit/proofs/inclusion?index=0&size=0",
        )
        .expect(400, "PROOF_OUT_OF_RANGE"),
        Row::audit("entries: negative start", "/v1/audit/entries?start=-1")
            .expect(400, "SCHEMA_INVALID"),
        Row::audit("entries: unknown parameter", "/v1/audit/entries?limit=5")
            .expect(400, "SCHEMA_INVALID"),
        Row::audit(
            "inclusion: index out of range",
            "/v1/audit/proofs/inclusion?index=100000",
        )
        .expect(400, "PROOF_OUT_OF_RANGE"),
        Row::audit(
            "inclusion: size beyond the log",
            "/v1/audit/proofs/inclusion?index=0&size=100000",
        )
        .expect(400, "PROOF_OUT_OF_RANGE"),
        Row::audit(
            "inclusion: index and leafHash",
            &format!("{inclusion}?index=0&leafHash={zero}"),
        )
        .expect(400, "SCHEMA_INVALID"),
        Row::audit(
            "inclusion: leafHash not hex",
            "/v1/audit/proofs/inclusion?leafHash=xyz",
        )
        .expect(400, "SCHEMA_INVALID")
        .field("leafHash"),
        Row::audit(
            "inclusion: unknown leaf",
            &format!("{inclusion}?leafHash={zero}"),
        )
        .expect(404, "NOT_FOUND"),
        Row::audit(
            "consistency: from after to",
            "/v1/audit/proofs/consistency?from=5&to=2",
        )
        .expect(400, "PROOF_OUT_OF_RANGE"),
        Row::audit(
            "consistency: to beyond the log",
            "/v1/audit/proofs/consistency?from=1&to=100000",
        )
        .expect(400, "PROOF_OUT_OF_RANGE"),
        Row::audit("consistency: no from", "/v1/audit/proofs/consistency")
            .expect(400, "SCHEMA_INVALID"),
        Row::get(
            "trust bundles: unknown filter",
            "/v1/trust-bundles?colour=red",
            Who::Anonymous,
        )
        .expect(400, "SCHEMA_INVALID"),
        Row::get(
            "policy: hash not hex",
            "/v1/policies/not-a-hash",
            Who::As(Issuer),
        )
        .expect(400, "SCHEMA_INVALID")
        .field("policyHash"),
        Row::get(
            "policy: unknown hash",
            &format!("/v1/policies/{unknown_hash}"),
            Who::As(Issuer),
        )
        .expect(404, "NOT_FOUND")
        .field("policyHash"),
        // --- POST /v1/audit/checkpoints (takes no parameters)
        Row::post(
            "checkpoint: member in body",
            "/v1/audit/checkpoints",
            ApiRole::Auditor,
        )
        .json(&json!({"size": 1}))
        .expect(400, "UNKNOWN_FIELD")
        .field("size"),
        Row::post(
            "checkpoint: malformed JSON",
            "/v1/audit/checkpoints",
            ApiRole::Auditor,
        )
        .raw(b"{")
        .expect(400, "JSON_MALFORMED"),
        Row::post(
            "checkpoint: text body",
            "/v1/audit/checkpoints",
            ApiRole::SecurityOfficer,
        )
        .raw(b"now")
        .content_type(Some("text/plain"))
        .expect(415, "UNSUPPORTED_MEDIA_TYPE"),
        // --- POST /v1/tokens, POST /v1/tokens/{name}/revoke
        Row::post("token: unknown role", "/v1/tokens", Officer)
            .json(&json!({"name": "t-1", "role": "gateway"}))
            .expect(400, "SCHEMA_INVALID")
            .field("role"),
        Row::post("token: role missing", "/v1/tokens", Officer)
            .json(&json!({"name": "t-1"}))
            .expect(400, "SCHEMA_INVALID")
            .field("role"),
        Row::post("token: name with a space", "/v1/tokens", Officer)
            .json(&json!({"name": "t 1", "role": "issuer"}))
            .expect(400, "SCHEMA_INVALID")
            .field("name"),
        Row::post("token: name of 47 bytes", "/v1/tokens", Officer)
            .json(&json!({"name": "t".repeat(47), "role": "issuer"}))
            .expect(400, "SCHEMA_INVALID")
            .field("name"),
        Row::post("token: name starting with a dot", "/v1/tokens", Officer)
            .json(&json!({"name": ".t-1", "role": "issuer"}))
            .expect(400, "SCHEMA_INVALID")
            .field("name"),
        Row::post("token: name with a zero-width space", "/v1/tokens", Officer)
            .json(&json!({"name": "t-1\u{200b}", "role": "issuer"}))
            .expect(400, "SCHEMA_INVALID")
            .field("name"),
        Row::post("token: name taken", "/v1/tokens", Officer)
            .json(&json!({"name": "issuer-1", "role": "issuer"}))
            .expect(409, "CONFLICT")
            .field("name"),
        Row::post("token: caller-chosen secret", "/v1/tokens", Officer)
            .json(&json!({"name": "t-1", "role": "issuer", "secret": "mine"}))
            .expect(400, "UNKNOWN_FIELD")
            .field("secret"),
        Row::post("token: bad Idempotency-Key", "/v1/tokens", Officer)
            .json(&json!({"name": "t-1", "role": "issuer"}))
            .header("idempotency-key", "k 1")
            .expect(400, "SCHEMA_INVALID")
            .field("Idempotency-Key"),
        Row::post("revoke token: unknown", "/v1/tokens/nobody/revoke", Officer)
            .json(&json!({}))
            .expect(404, "NOT_FOUND")
            .field("name"),
        Row::post(
            "revoke token: member in body",
            "/v1/tokens/issuer-1/revoke",
            Officer,
        )
        .json(&json!({"reason": "x"}))
        .expect(400, "UNKNOWN_FIELD")
        .field("reason"),
        Row::get("grant: unknown", "/v1/grants/g-nope", Who::As(Issuer))
            .expect(404, "NOT_FOUND")
            .field("grantId"),
        Row::get(
            "allowlist: unknown",
            "/v1/destination-allowlists/list-nope",
            Who::Anonymous,
        )
        .expect(404, "NOT_FOUND")
        .field("allowlistId"),
        // --- PUT /v1/receipts/policy
        receipt_policy_row("receipt policy: otherwise allow", |p| {
            p["otherwise"] = json!("allow")
        })
        .expect(400, "SCHEMA_INVALID")
        .field("otherwise"),
        receipt_policy_row("receipt policy: version 2", |p| p["version"] = json!(2))
            .expect(400, "VERSION_UNSUPPORTED")
            .field("version"),
        receipt_policy_row("receipt policy: no rules", |p| p["rules"] = json!([]))
            .expect(400, "SCHEMA_INVALID")
            .field("rules"),
        receipt_policy_row("receipt policy: max age over an hour", |p| {
            p["rules"][0]["maxAgeSeconds"] = json!(3601)
        })
        .expect(400, "SCHEMA_INVALID")
        .field("rules[0].maxAgeSeconds"),
        receipt_policy_row("receipt policy: partial wildcard", |p| {
            p["rules"][0]["tools"] = json!(["query_*"])
        })
        .expect(400, "SCHEMA_INVALID")
        .field("rules[0].tools[0]"),
        receipt_policy_row("receipt policy: unknown member", |p| p["extra"] = json!(1))
            .expect(400, "UNKNOWN_FIELD")
            .field("extra"),
        // --- POST /v1/receipts/decisions
        decision_row("decision: no authorization_binding", |d| {
            d["request"]["_meta"] = json!({"progressToken": 1})
        })
        .expect(400, "AUTHORIZATION_BINDING_INVALID")
        .field("request._meta.authorization_binding"),
        decision_row("decision: empty binding nonce", |d| {
            d["request"]["_meta"]["authorization_binding"]["nonce"] = json!("")
        })
        .expect(400, "AUTHORIZATION_BINDING_INVALID")
        .field("request._meta.authorization_binding"),
        decision_row("decision: arguments not an object", |d| {
            d["request"]["arguments"] = json!([1])
        })
        .expect(400, "AUTHORIZATION_BINDING_INVALID")
        .field("request.arguments"),
        decision_row("decision: no tool name", |d| {
            d["request"].as_object_mut().unwrap().remove("name");
        })
        .expect(400, "AUTHORIZATION_BINDING_INVALID")
        .field("request.name"),
        decision_row("decision: actionId with a space", |d| {
            d["actionId"] = json!("a 1")
        })
        .expect(400, "SCHEMA_INVALID")
        .field("actionId"),
        decision_row("decision: audience with a space", |d| {
            d["audience"] = json!("mcp://a b")
        })
        .expect(400, "SCHEMA_INVALID")
        .field("audience"),
        decision_row("decision: caller-chosen record member", |d| {
            d["decisionDerived"] = json!({"decision": "allow"})
        })
        .expect(400, "UNKNOWN_FIELD")
        .field("decisionDerived"),
        decision_row("decision: float argument", |d| {
            d["request"]["arguments"]["limit"] = json!(1.5)
        })
        .expect(400, "JSON_NUMBER_NOT_INTEGER"),
        // --- POST /v1/receipts/consume
        Row::post(
            "consume: no request",
            "/v1/receipts/consume",
            ApiRole::ReceiptConsumer,
        )
        .json(&json!({"decision": {}}))
        .expect(400, "SCHEMA_INVALID")
        .field("request"),
        Row::post(
            "consume: unknown member",
            "/v1/receipts/consume",
            ApiRole::ReceiptConsumer,
        )
        .json(&json!({"decision": {}, "request": {}, "outcome": {}}))
        .expect(400, "UNKNOWN_FIELD")
        .field("outcome"),
        // --- POST /v1/receipts/outcomes
        outcome_row("outcome: digest not sha256", |o| {
            o["decisionDigest"] = json!("abc")
        })
        .expect(400, "SCHEMA_INVALID")
        .field("decisionDigest"),
        outcome_row("outcome: unknown status", |o| o["status"] = json!("done"))
            .expect(400, "SCHEMA_INVALID")
            .field("status"),
        outcome_row("outcome: commitment digest of another projection", |o| {
            o["resultCommitment"] = json!({"projection": "x",
                "projectionDigest": format!("sha256:{}", "0".repeat(64))})
        })
        .expect(400, "SCHEMA_INVALID")
        .field("resultCommitment.projectionDigest"),
        outcome_row("outcome: unknown decision", |_| {})
            .expect(404, "NOT_FOUND")
            .field("decisionDigest"),
    ]
}

fn receipt_policy_row(name: &str, edit: impl FnOnce(&mut Value)) -> Row {
    let mut p = json!({
        "version": 1, "policyId": "p-1",
        "rules": [{"requesters": ["*"], "audiences": ["*"], "tools": ["query_table"],
                   "decision": "allow", "maxAgeSeconds": 60}],
        "otherwise": "block",
    });
    edit(&mut p);
    Row::new(
        name,
        Method::PUT,
        "/v1/receipts/policy",
        Who::As(ApiRole::SecurityOfficer),
    )
    .json(&p)
}

fn decision_row(name: &str, edit: impl FnOnce(&mut Value)) -> Row {
    let mut d = json!({
        "audience": "mcp://provider.test", "actionId": "act-1", "subject": "agent:a",
        "request": {"name": "query_table", "arguments": {"limit": 10},
                    "_meta": {"authorization_binding": {"nonce": "n-1"}}},
    });
    edit(&mut d);
    Row::post(name, "/v1/receipts/decisions", ApiRole::ReceiptRequester).json(&d)
}

fn outcome_row(name: &str, edit: impl FnOnce(&mut Value)) -> Row {
    let mut o =
        json!({"decisionDigest": format!("sha256:{}", "a".repeat(64)), "status": "executed"});
    edit(&mut o);
    Row::post(name, "/v1/receipts/outcomes", ApiRole::ReceiptConsumer).json(&o)
}

/// Sends a row; returns the status, the body (JSON, or the text as a string) and the
/// Content-Type.
async fn send(h: &Harness, fx: &Fixture, row: &Row) -> (u16, Value, Option<String>) {
    let mut req = h.client.request(row.method.clone(), h.url(&row.path));
    if let Who::As(role) = row.who {
        req = req.bearer_auth(fx.token(role));
    }
    if let Some(ct) = row.content_type {
        req = req.header("content-type", ct);
    }
    for (k, v) in &row.headers {
        req = req.header(*k, v);
    }
    if let Some(b) = &row.body {
        req = req.body(b.clone());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.bytes().await.unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v, ctype)
}

/// Why `got` is not the row's expected answer, if it is not.
fn mismatch(row: &Row, got: &(u16, Value, Option<String>)) -> Option<String> {
    let (status, body, ctype) = got;
    let obj = body.as_object();
    let shape_ok = ctype.as_deref() == Some("application/json")
        && obj.is_some_and(|o| {
            o.get("message").is_some_and(Value::is_string)
                && o.keys()
                    .all(|k| ["code", "message", "field"].contains(&k.as_str()))
        });
    let field = body.get("field").and_then(Value::as_str);
    if *status != row.status
        || body.get("code").and_then(Value::as_str) != Some(row.code)
        || !shape_ok
        || (row.field.is_some() && field != row.field.as_deref())
    {
        return Some(format!(
            "expected {} {} field {:?}, got {status} {body}",
            row.status, row.code, row.field
        ));
    }
    None
}

/// The route template a concrete path is served by.
fn route_of(method: &Method, path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap();
    let segs: Vec<&str> = path.split('/').collect();
    table()
        .into_iter()
        .find(|e| {
            let t: Vec<&str> = e.path.split('/').collect();
            e.method.as_str() == method.as_str()
                && t.len() == segs.len()
                && t.iter()
                    .zip(&segs)
                    .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
        })
        .map(|e| e.path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_with_their_code_and_change_nothing() {
    kit::child::own_process!("malformed_requests_are_refused_with_their_code_and_change_nothing");
    let h = Harness::start(Limits {
        max_body_bytes: MAX_BODY,
        requests_per_second_per_token: 0,
        ..Limits::default()
    })
    .await;
    let fx = setup(&h).await;
    let rows = rows(&fx);
    assert!(rows.len() >= 40, "only {} rows", rows.len());

    // Every mutating route has rows, and every row hits a served route.
    let mut covered = std::collections::BTreeSet::new();
    for row in &rows {
        let route = route_of(&row.method, &row.path)
            .unwrap_or_else(|| panic!("{}: no route serves {}", row.name, row.path));
        covered.insert((row.method.to_string(), route));
    }
    for e in table().into_iter().filter(|e| e.method != Method::GET) {
        assert!(
            covered.contains(&(e.method.to_string(), e.path)),
            "no bad-input row for the mutating route {} {}: add rows for it",
            e.method,
            e.path
        );
    }

    let mut failures = Vec::new();
    for row in &rows {
        let before = Snapshot::of(&h);
        let got = send(&h, &fx, row).await;
        let after = Snapshot::of(&h);
        if let Some(m) = mismatch(row, &got) {
            failures.push(format!("{}: {m}", row.name));
        }
        let changed = before.diff(&after);
        if !changed.is_empty() {
            failures.push(format!("{}: state changed: {changed:?}", row.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );

    // The fixtures the rows collide with are still what they were.
    let (_, g) = h.get("/v1/grants/g-live", Some(&fx.issuer)).await;
    assert_eq!(g["status"], "active");
    let (status, _) = h.get("/v1/grants/g-new", Some(&fx.issuer)).await;
    assert_eq!(status, 404, "no refused grant was stored");
}

/// A log writer over a shared buffer, for reading what the service logged.
#[derive(Clone)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bad_input_table_is_logged_a_line_per_row_and_never_a_secret() {
    kit::child::own_process!("the_bad_input_table_is_logged_a_line_per_row_and_never_a_secret");
    // The service log exactly as `serve` writes it (JSON lines, its default filter).
    let buffer = LogBuffer(Default::default());
    let writer = buffer.clone();
    mpcp_pa::cli::logging::install(
        true,
        false,
        tracing_subscriber::EnvFilter::new(mpcp_pa::cli::logging::DEFAULT_FILTER),
        move || writer.clone(),
    );
    let h = Harness::start(Limits {
        max_body_bytes: MAX_BODY,
        requests_per_second_per_token: 0,
        ..Limits::default()
    })
    .await;
    let fx = setup(&h).await;
    let rows = rows(&fx);
    let before = buffer.0.lock().unwrap().len();
    for row in &rows {
        send(&h, &fx, row).await;
    }
    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lines = log[before..]
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["message"] == "request" || v["message"] == "request failed")
        .count();
    assert_eq!(lines, rows.len(), "one log line per row");
    for token in [&fx.issuer, &fx.officer, &fx.auditor] {
        // mpcppa_<id>_<secret> (the secret's alphabet includes `_`).
        let secret = token
            .strip_prefix("mpcppa_")
            .unwrap()
            .split_once('_')
            .unwrap()
            .1;
        assert!(secret.len() >= 20);
        assert!(!log.contains(secret), "a token secret is in the log");
    }
}
