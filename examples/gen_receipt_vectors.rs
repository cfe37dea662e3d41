//! Generates the scoped-authorization-receipt vectors under `test-vectors/receipts/` from a
//! fixed, published P-256 test key. Deterministic (RFC 6979 ECDSA): the vectors test runs it
//! into a temporary directory and requires the committed files to be identical.
//!
//! `cargo run --example gen_receipt_vectors -- test-vectors/receipts`

use std::path::Path;

use mpcp_pa::crypto::{PublicKey, b64url_encode};
use mpcp_pa::receipts::projection::{FALLBACK_PROJECTION, project};
use mpcp_pa::receipts::record::{DECISION_SIGNED, OUTCOME_SIGNED, decision_digest, signed_payload};
use p256::ecdsa::signature::Signer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The verification time of every vector.
pub const AT: &str = "2026-12-01T10:01:00Z";
/// The audience every vector's decision names.
pub const AUDIENCE: &str = "provider:hr-db";

fn signing_key(name: &str) -> p256::ecdsa::SigningKey {
    let secret: [u8; 32] = Sha256::digest(format!("mpcp-pa receipt test key {name}")).into();
    p256::ecdsa::SigningKey::from_slice(&secret).expect("fixed test key")
}

fn jwk(name: &str, active: bool, private: bool) -> Value {
    let k = signing_key(name);
    let public = PublicKey::P256(*k.verifying_key());
    let mut v = serde_json::to_value(public.to_jwk(name, active)).expect("jwk");
    if private {
        v["d"] = json!(b64url_encode(&k.to_bytes()));
    }
    v
}

fn sign(mut record: Value, key: &str, members: &[&str]) -> Value {
    record.as_object_mut().expect("object").remove("signature");
    let payload = signed_payload(&record, members).expect("payload");
    let sig: p256::ecdsa::Signature = signing_key(key).sign(&payload);
    record["signature"] = json!(hex::encode(sig.to_bytes()));
    record
}

/// The seed's example call (MCP PR #2867), as the gateway observed it.
fn seed_request() -> Value {
    json!({
        "name": "query_table",
        "arguments": {"limit": 10, "table": "employees"},
        "_meta": {"authorization_binding": {"nonce": "server-chosen-nonce-001"}},
    })
}

fn unsigned_decision(request: &Value, decision: &str, decided_at: &str, nonce: &str) -> Value {
    let p = project(FALLBACK_PROJECTION, request).expect("projection");
    json!({
        "version": 1,
        "alg": "ES256",
        "backLink": {
            "attestationDigest": p.digest,
            "attestationNonce": p.nonce,
            "fallbackProjection": FALLBACK_PROJECTION,
        },
        "decisionDerived": {"decision": decision, "decidedAt": decided_at, "policyId": "receipt-policy-1"},
        "issuerAsserted": {
            "iss": "did:web:pa.example.com",
            "sub": "agent:hr-assistant",
            "iat": decided_at,
            "nonce": nonce,
            "alg": "ES256",
            "secretVersion": "receipt-key-1",
            "aud": AUDIENCE,
            "expSeconds": 300,
        },
    })
}

const NONCE_A: &str = "6a1f0c93b2d84e57a0c1e2f3d4b5a697";
const NONCE_B: &str = "0b9e8d7c6b5a49382716050403020100";

fn decision(request: &Value, decision: &str, decided_at: &str) -> Value {
    sign(
        unsigned_decision(request, decision, decided_at, NONCE_A),
        "receipt-key-1",
        &DECISION_SIGNED,
    )
}

fn outcome(decision: &Value, status: &str) -> Value {
    let unsigned = json!({
        "version": 1,
        "alg": "ES256",
        "backLink": decision["backLink"],
        "outcomeDerived": {
            "status": status,
            "completedAt": "2026-12-01T10:00:05Z",
            "decisionDigest": decision_digest(decision).expect("digest"),
        },
        "receiptAsserted": {
            "iss": "did:web:pa.example.com",
            "sub": "agent:hr-assistant",
            "iat": "2026-12-01T10:00:05Z",
            "nonce": NONCE_B,
            "alg": "ES256",
            "secretVersion": "receipt-key-1",
            "aud": AUDIENCE,
        },
    });
    sign(unsigned, "receipt-key-1", &OUTCOME_SIGNED)
}

struct Out<'a> {
    dir: &'a Path,
    vectors: Vec<Value>,
}

impl Out<'_> {
    fn json(&self, rel: &str, v: &Value) {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, serde_json::to_string_pretty(v).expect("json") + "\n").expect("write");
    }

    /// One vector: its files, and the verdict `mpcp-pa receipts verify` must print.
    fn add(
        &mut self,
        id: &str,
        proves: &str,
        decisions: &[&Value],
        outcome: Option<&Value>,
        request: Option<&Value>,
        verdict: &str,
    ) {
        let mut entry = json!({"id": id, "proves": proves, "at": AT, "audience": AUDIENCE, "maxAgeSeconds": 300});
        let mut files = Vec::new();
        for (i, d) in decisions.iter().enumerate() {
            let rel = if decisions.len() == 1 {
                format!("records/{id}.decision.json")
            } else {
                format!("records/{id}.decision-{i}.json")
            };
            self.json(&rel, d);
            files.push(json!(rel));
        }
        entry["decisions"] = json!(files);
        if let Some(o) = outcome {
            let rel = format!("records/{id}.outcome.json");
            self.json(&rel, o);
            entry["outcome"] = json!(rel);
        }
        if let Some(r) = request {
            let rel = format!("requests/{id}.request.json");
            self.json(&rel, r);
            entry["request"] = json!(rel);
            if let Ok(p) = project(FALLBACK_PROJECTION, r) {
                entry["requestDigest"] = json!(p.digest);
            }
        }
        entry["expect"] = json!({"verdict": verdict});
        self.vectors.push(entry);
    }
}

fn edited(v: &Value, edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = v.clone();
    edit(&mut v);
    v
}

/// Writes every receipt vector and the manifest into `dir`.
pub fn generate(dir: &Path) {
    let mut out = Out {
        dir,
        vectors: Vec::new(),
    };
    out.json(
        "keys/receipt-keys.json",
        &json!({"keys": [jwk("receipt-key-1", true, false), jwk("receipt-key-0", false, false)]}),
    );
    out.json(
        "keys/receipt-key-1.private.jwk.json",
        &jwk("receipt-key-1", true, true),
    );

    let req = seed_request();
    let allow = decision(&req, "allow", "2026-12-01T10:00:00Z");
    out.add("seed_example", "the seed's own call: its projection digest is sha256:aeac6a08...549bb and an allow decision over it is admitted", &[&allow], None, Some(&req), "valid");
    out.add(
        "decision_alone",
        "a decision checked without the call: authenticity, schema, freshness, audience",
        &[&allow],
        None,
        None,
        "valid",
    );
    let provider_view = edited(&req, |v| {
        v["_meta"]["progressToken"] = json!(17);
        v["_meta"]["traceparent"] =
            json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    });
    out.add(
        "provider_view_other_meta",
        "gateway and provider views differing only in non-binding _meta project to the same digest",
        &[&allow],
        None,
        Some(&provider_view),
        "valid",
    );
    out.add(
        "changed_arguments",
        "the provider saw other arguments",
        &[&allow],
        None,
        Some(&edited(&req, |v| v["arguments"]["limit"] = json!(1000))),
        "digest_mismatch",
    );
    out.add(
        "changed_tool_name",
        "the provider saw another tool",
        &[&allow],
        None,
        Some(&edited(&req, |v| v["name"] = json!("drop_table"))),
        "digest_mismatch",
    );
    out.add(
        "changed_binding_nonce",
        "the call carries another binding nonce",
        &[&allow],
        None,
        Some(&edited(&req, |v| {
            v["_meta"]["authorization_binding"]["nonce"] = json!("server-chosen-nonce-002")
        })),
        "nonce_mismatch",
    );
    out.add(
        "changed_binding_member",
        "the binding block gained a member: it is bound whole",
        &[&allow],
        None,
        Some(&edited(&req, |v| {
            v["_meta"]["authorization_binding"]["scope"] = json!("read")
        })),
        "digest_mismatch",
    );
    out.add(
        "binding_missing",
        "no _meta.authorization_binding: fail closed, never widen to the whole _meta",
        &[&allow],
        None,
        Some(&edited(&req, |v| v["_meta"] = json!({"progressToken": 1}))),
        "binding_missing",
    );
    out.add(
        "binding_malformed",
        "a binding without a non-empty string nonce",
        &[&allow],
        None,
        Some(&edited(&req, |v| {
            v["_meta"]["authorization_binding"] = json!({"nonce": ""})
        })),
        "binding_malformed",
    );
    out.add(
        "arguments_missing",
        "a call without arguments",
        &[&allow],
        None,
        Some(&edited(&req, |v| {
            drop(v.as_object_mut().expect("o").remove("arguments"))
        })),
        "arguments_missing",
    );
    let renamed = sign(
        edited(
            &unsigned_decision(&req, "allow", "2026-12-01T10:00:00Z", NONCE_A),
            |v| {
                v["backLink"]["fallbackProjection"] =
                    json!("tools_call_params_plus_meta_authorization_binding_v2")
            },
        ),
        "receipt-key-1",
        &DECISION_SIGNED,
    );
    out.add(
        "projection_id_changed",
        "the projection id changed without recomputing: unknown projection, fail closed",
        &[&renamed],
        None,
        Some(&req),
        "projection_unknown",
    );
    let unnamed = sign(
        edited(
            &unsigned_decision(&req, "allow", "2026-12-01T10:00:00Z", NONCE_A),
            |v| {
                drop(
                    v["backLink"]
                        .as_object_mut()
                        .expect("o")
                        .remove("fallbackProjection"),
                )
            },
        ),
        "receipt-key-1",
        &DECISION_SIGNED,
    );
    out.add(
        "projection_missing",
        "a record naming no projection cannot be checked against a call",
        &[&unnamed],
        None,
        Some(&req),
        "projection_unknown",
    );
    let intl =
        edited(
            &req,
            |v| {
                v["arguments"] =
                    json!({"table": "employés", "filter": "部署 = '営業'", "limit": 10})
            },
        );
    out.add(
        "non_ascii_arguments",
        "arguments outside ASCII hash as their UTF-8 under JCS",
        &[&decision(&intl, "allow", "2026-12-01T10:00:00Z")],
        None,
        Some(&intl),
        "valid",
    );
    out.add(
        "substituted_decision",
        "block turned into allow after signing",
        &[&edited(
            &decision(&req, "block", "2026-12-01T10:00:00Z"),
            |v| v["decisionDerived"]["decision"] = json!("allow"),
        )],
        None,
        Some(&req),
        "signature_invalid",
    );
    let executed = outcome(&allow, "executed");
    out.add(
        "outcome_pairs",
        "an outcome pairs with its decision: same backLink, decisionDigest of this very record",
        &[&allow],
        Some(&executed),
        None,
        "valid",
    );
    out.add(
        "substituted_outcome",
        "refused turned into executed after signing",
        &[&allow],
        Some(&edited(&outcome(&allow, "refused"), |v| {
            v["outcomeDerived"]["status"] = json!("executed")
        })),
        None,
        "signature_invalid",
    );
    let other = decision(&req, "allow", "2026-12-01T10:00:01Z");
    out.add(
        "outcome_of_another_decision",
        "same binding, other decision: check B refuses the pairing",
        &[&other],
        Some(&executed),
        None,
        "not_paired",
    );
    out.add("replay_offline", "a replayed decision verifies offline: single use is the registry's (POST /v1/receipts/consume answers already_consumed)", &[&allow], None, Some(&req), "valid");
    let old = decision(&req, "allow", "2026-12-01T09:50:00Z");
    out.add(
        "expired_decision",
        "issued 11 minutes before the verification time with expSeconds 300",
        &[&old],
        None,
        Some(&req),
        "expired",
    );
    let other_aud = sign(
        edited(
            &unsigned_decision(&req, "allow", "2026-12-01T10:00:00Z", NONCE_A),
            |v| v["issuerAsserted"]["aud"] = json!("provider:payroll"),
        ),
        "receipt-key-1",
        &DECISION_SIGNED,
    );
    out.add(
        "wrong_audience",
        "a decision for another provider",
        &[&other_aud],
        None,
        Some(&req),
        "wrong_audience",
    );
    let none = sign(
        edited(
            &unsigned_decision(&req, "allow", "2026-12-01T10:00:00Z", NONCE_A),
            |v| {
                v["alg"] = json!("none");
                v["issuerAsserted"]["alg"] = json!("none");
            },
        ),
        "receipt-key-1",
        &DECISION_SIGNED,
    );
    out.add(
        "alg_none",
        "alg none, even with a valid signature by the receipt key",
        &[&none],
        None,
        Some(&req),
        "alg_unsupported",
    );
    let hs = sign(
        edited(
            &unsigned_decision(&req, "allow", "2026-12-01T10:00:00Z", NONCE_A),
            |v| {
                v["alg"] = json!("HS256");
                v["issuerAsserted"]["alg"] = json!("HS256");
            },
        ),
        "receipt-key-1",
        &DECISION_SIGNED,
    );
    out.add(
        "alg_hs256",
        "HS256 is not accepted across a trust boundary",
        &[&hs],
        None,
        Some(&req),
        "alg_unsupported",
    );
    let mismatch = sign(
        edited(
            &unsigned_decision(&req, "allow", "2026-12-01T10:00:00Z", NONCE_A),
            |v| v["issuerAsserted"]["alg"] = json!("RS256"),
        ),
        "receipt-key-1",
        &DECISION_SIGNED,
    );
    out.add(
        "alg_mismatch",
        "the issuer block's alg differs from the record's",
        &[&mismatch],
        None,
        Some(&req),
        "alg_mismatch",
    );
    let unknown = sign(
        edited(
            &unsigned_decision(&req, "allow", "2026-12-01T10:00:00Z", NONCE_A),
            |v| v["decisionDerived"]["approvedBy"] = json!("someone"),
        ),
        "receipt-key-1",
        &DECISION_SIGNED,
    );
    out.add(
        "unknown_member",
        "closed schema: an unknown member, even signed, is refused",
        &[&unknown],
        None,
        Some(&req),
        "schema_invalid",
    );
    let retired = sign(
        edited(
            &unsigned_decision(&req, "allow", "2026-12-01T10:00:00Z", NONCE_A),
            |v| v["issuerAsserted"]["secretVersion"] = json!("receipt-key-0"),
        ),
        "receipt-key-0",
        &DECISION_SIGNED,
    );
    out.add(
        "retired_key",
        "signed by a receipt key that is no longer active",
        &[&retired],
        None,
        Some(&req),
        "unknown_key",
    );
    out.add(
        "blocked",
        "a block decision is not admitted",
        &[&decision(&req, "block", "2026-12-01T10:00:00Z")],
        None,
        Some(&req),
        "denied",
    );
    let esc = decision(&req, "escalate", "2026-12-01T10:00:00Z");
    out.add(
        "escalated",
        "an escalate decision is not admitted",
        &[&esc],
        None,
        Some(&req),
        "denied",
    );
    let later_allow = decision(&req, "allow", "2026-12-01T10:00:30Z");
    out.add(
        "superseded_escalate",
        "a human's later allow supersedes the escalate",
        &[&esc, &later_allow],
        None,
        Some(&req),
        "valid",
    );
    let later_block = sign(
        unsigned_decision(&req, "block", "2026-12-01T10:00:30Z", NONCE_B),
        "receipt-key-1",
        &DECISION_SIGNED,
    );
    out.add("equal_decided_at", "two distinct decisions share the latest decidedAt: ambiguous, never resolved by order or nonce", &[&later_allow, &later_block], None, None, "ambiguous");

    out.json("manifest.json", &json!({
        "description": "mpcp-pa scoped authorization receipt vectors; see test-vectors/receipts/README.md",
        "version": 1,
        "keys": "keys/receipt-keys.json",
        "projection": FALLBACK_PROJECTION,
        "vectors": out.vectors,
    }));
}

#[allow(dead_code)]
fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "test-vectors/receipts".into());
    generate(Path::new(&dir));
    println!("wrote receipt vectors to {dir}");
}
