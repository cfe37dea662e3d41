//! Unit tests of key-set publication against the registry with the TEST-ONLY in-memory
//! backend, plus the check of the generated documents against jwks/ (schemas and examples).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;
use crate::algorithms::AlgorithmPolicy;
use crate::algorithms::test_fixtures::deprecating_es256k_toml;
use crate::clock::{DEFAULT_DRIFT, FixedClock};
use crate::crypto::Alg;
use crate::keys::test_support::{FlakySink, SoftBackend};
use crate::keys::{KeyRegistry, KeyState};
use crate::signer::{DigestSigner, SoftwareSigner};
use crate::store::Store;
use serde_json::json;

const DEPRECATING_ES256K: &str = deprecating_es256k_toml!("2026-06-01T00:00:00Z");

struct Fx {
    reg: KeyRegistry,
    sink: Arc<FlakySink>,
    clock: Arc<FixedClock>,
    _store: Store,
}

fn t(s: &str) -> time::OffsetDateTime {
    parse_rfc3339(s, "t").unwrap()
}

fn fx_with(policy: &str) -> Fx {
    let store = Store::temporary().unwrap();
    let sink = Arc::new(FlakySink::open(&store));
    let clock = Arc::new(FixedClock::new(t("2026-03-01T00:00:00Z")));
    let reg = KeyRegistry::new(
        &store,
        Arc::new(SoftBackend::default()),
        sink.clone(),
        clock.clone(),
        Arc::new(AlgorithmPolicy::from_toml_str(policy).unwrap()),
    )
    .unwrap();
    Fx {
        reg,
        sink,
        clock,
        _store: store,
    }
}

fn fx() -> Fx {
    fx_with(crate::algorithms::BUILTIN_POLICY_TOML)
}

fn op() -> Actor {
    Actor {
        name: "test:bob".into(),
        role: "security-officer".into(),
    }
}

/// A registry holding grant-signing keys in every state and an active root key:
/// returns (pending, active, retired, revoked, destroyed) kids.
fn populated(f: &Fx) -> [String; 5] {
    let r = &f.reg;
    let g = |alg| r.generate(&op(), KeyRole::GrantSigning, alg).unwrap().kid;
    let destroyed = g(Alg::EdDSA);
    let revoked = g(Alg::ES256K);
    let retired = g(Alg::EdDSA);
    let active = g(Alg::ES256K);
    let pending = g(Alg::EdDSA);
    r.activate(&op(), &retired).unwrap();
    r.rotate(&op(), KeyRole::GrantSigning, Some(&active), None)
        .unwrap();
    r.revoke(&op(), &revoked, "test revocation").unwrap();
    r.revoke(&op(), &destroyed, "test revocation").unwrap();
    r.schedule_destroy(&op(), &destroyed, Duration::ZERO)
        .unwrap();
    assert_eq!(
        r.run_due_destructions(&op()).unwrap().destroyed,
        vec![destroyed.clone()]
    );
    let root = r.generate(&op(), KeyRole::Root, Alg::EdDSA).unwrap().kid;
    r.activate(&op(), &root).unwrap();
    for (kid, s) in [
        (&pending, KeyState::Pending),
        (&active, KeyState::Active),
        (&retired, KeyState::Retired),
        (&revoked, KeyState::Revoked),
        (&destroyed, KeyState::Destroyed),
    ] {
        assert_eq!(r.get(kid).unwrap().state, s);
    }
    [pending, active, retired, revoked, destroyed]
}

#[test]
fn key_set_publishes_grant_keys_with_state_dependent_active_flag() {
    let f = fx();
    let [pending, active, retired, revoked, destroyed] = populated(&f);
    let set = build_key_set(&f.reg).unwrap();
    assert_eq!(set.version, "1.0");
    // Exactly the spec's Key Set Document: version and keys, nothing else.
    assert!(set.extra.is_empty(), "{:?}", set.extra);
    let doc = key_set_value(&set).unwrap();
    let members: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(members, ["keys", "version"]);
    let flags: BTreeMap<&str, Option<bool>> = set
        .keys
        .iter()
        .map(|k| (k.kid.as_str(), k.active))
        .collect();
    assert_eq!(flags.len(), 5, "only grant-signing keys: {flags:?}");
    for kid in [&pending, &active, &retired] {
        assert_eq!(flags[kid.as_str()], Some(true), "{kid}");
    }
    for kid in [&revoked, &destroyed] {
        assert_eq!(flags[kid.as_str()], Some(false), "{kid}");
    }
    let v = key_set_value(&set).unwrap();
    for k in v["keys"].as_array().unwrap() {
        assert!(k.get("d").is_none());
        assert_eq!(k["use"], "sig");
        let alg = Alg::parse(k["alg"].as_str().unwrap()).unwrap();
        assert_eq!(k["kty"], alg.kty());
        assert_eq!(k["crv"], alg.crv());
        assert_eq!(k.get("y").is_some(), alg != Alg::EdDSA);
    }
    // Round trip through the strict validator.
    assert_eq!(KeySet::from_value(&v).unwrap(), set);
}

#[test]
fn deprecated_algorithm_keys_are_published_inactive_from_the_effective_date() {
    let f = fx_with(DEPRECATING_ES256K);
    let es = f
        .reg
        .generate(&op(), KeyRole::GrantSigning, Alg::ES256K)
        .unwrap()
        .kid;
    let ed = f
        .reg
        .generate(&op(), KeyRole::GrantSigning, Alg::EdDSA)
        .unwrap()
        .kid;
    let active_of = |set: &KeySet, kid: &str| set.find(kid).unwrap().active;
    f.clock.set(t("2026-05-31T23:59:59Z"));
    let before = build_key_set(&f.reg).unwrap();
    assert_eq!(active_of(&before, &es), Some(true));
    f.clock.set(t("2026-06-01T00:00:00Z"));
    let after = build_key_set(&f.reg).unwrap();
    assert_eq!(active_of(&after, &es), Some(false));
    assert_eq!(active_of(&after, &ed), Some(true));
}

fn root_set(f: &Fx) -> KeySet {
    build_root_key_set(&f.reg).unwrap()
}

#[test]
fn signed_key_set_round_trip_and_audit() {
    let f = fx();
    populated(&f);
    let root = root_set(&f);
    let n = f.sink.events().len();
    let signed = sign_key_set(
        &f.reg,
        f.sink.as_ref(),
        &op(),
        f.clock.as_ref(),
        DEFAULT_SIGNED_LIFETIME,
    )
    .unwrap();
    assert_eq!(signed["version"], "1.0");
    assert_eq!(signed["issuedAt"], "2026-03-01T00:00:00Z");
    assert_eq!(signed["expiresAt"], "2026-03-02T00:00:00Z");
    let root_kid = f.reg.active_kid(KeyRole::Root).unwrap().unwrap();
    assert_eq!(signed["signerKeyId"], root_kid.as_str());
    // Audited, with the digest that was signed.
    let events = f.sink.entries();
    assert_eq!(events.len(), n + 1);
    let digest = signing_digest(Domain::KeySet, "1.0", &signed).unwrap();
    assert_eq!(events[n].0, op());
    assert_eq!(
        events[n].1,
        Event::KeySetSigned {
            signer_key_id: root_kid,
            digest: hex::encode(digest)
        }
    );
    let inner = verify_signed_key_set(&signed, &root, f.clock.as_ref(), DEFAULT_DRIFT).unwrap();
    assert_eq!(inner, build_key_set(&f.reg).unwrap());
    // Via canonical bytes and the strict parser, as a gateway would receive it.
    let bytes = crate::canonical::canonical_bytes(&signed).unwrap();
    let parsed = crate::canonical::parse_strict(&bytes).unwrap();
    verify_signed_key_set_gated(
        &parsed,
        &root,
        f.clock.as_ref(),
        DEFAULT_DRIFT,
        Some(Arc::new(f.reg.policy().clone())),
    )
    .unwrap();
}

#[test]
fn signing_refusals_release_nothing() {
    let f = fx();
    f.reg
        .generate(&op(), KeyRole::GrantSigning, Alg::EdDSA)
        .unwrap();
    let sign = |lifetime| sign_key_set(&f.reg, f.sink.as_ref(), &op(), f.clock.as_ref(), lifetime);
    // No active root key.
    assert_eq!(
        sign(DEFAULT_SIGNED_LIFETIME).unwrap_err().code,
        ErrorCode::KeyNotFound
    );
    let root = f
        .reg
        .generate(&op(), KeyRole::Root, Alg::ES256)
        .unwrap()
        .kid;
    f.reg.activate(&op(), &root).unwrap();
    let n = f.sink.events().len();
    for bad in [Duration::ZERO, MAX_SIGNED_LIFETIME + Duration::from_secs(1)] {
        assert_eq!(sign(bad).unwrap_err().code, ErrorCode::LifetimeExceeded);
    }
    // Audit down: no document.
    f.sink.fail.store(true, Ordering::SeqCst);
    assert_eq!(
        sign(DEFAULT_SIGNED_LIFETIME).unwrap_err().code,
        ErrorCode::AuditUnavailable
    );
    f.sink.fail.store(false, Ordering::SeqCst);
    assert_eq!(f.sink.events().len(), n);
    sign(MAX_SIGNED_LIFETIME).unwrap();
}

#[test]
fn root_key_of_deprecated_algorithm_no_longer_signs_key_sets() {
    let f = fx_with(DEPRECATING_ES256K);
    let root = f
        .reg
        .generate(&op(), KeyRole::Root, Alg::ES256K)
        .unwrap()
        .kid;
    f.reg.activate(&op(), &root).unwrap();
    let sign = || {
        sign_key_set(
            &f.reg,
            f.sink.as_ref(),
            &op(),
            f.clock.as_ref(),
            DEFAULT_SIGNED_LIFETIME,
        )
    };
    let before = sign().unwrap();
    f.clock.set(t("2026-06-01T00:00:00Z"));
    assert_eq!(sign().unwrap_err().code, ErrorCode::AlgorithmDeprecated);
    // A gated verifier still accepts the document issued before the date, within its life...
    let pinned = KeySet {
        version: "1.0".into(),
        keys: vec![f.reg.get(&root).unwrap().published_jwk(true)],
        extra: BTreeMap::new(),
    };
    f.clock.set(t("2026-03-01T12:00:00Z"));
    let gate: Arc<dyn AlgorithmGate> = Arc::new(f.reg.policy().clone());
    verify_signed_key_set_gated(
        &before,
        &pinned,
        f.clock.as_ref(),
        DEFAULT_DRIFT,
        Some(gate.clone()),
    )
    .unwrap();
    // ...and refuses one issued at or after it.
    let soft = SoftwareSigner::from_secret("soft-root", Alg::ES256K, &[9u8; 32]).unwrap();
    let pinned_soft = KeySet {
        version: "1.0".into(),
        keys: vec![soft.public_key().to_jwk("soft-root", true)],
        extra: BTreeMap::new(),
    };
    let late = forge(
        &soft,
        &before["keySet"],
        "2026-06-01T00:00:00Z",
        "2026-06-02T00:00:00Z",
    );
    f.clock.set(t("2026-06-01T01:00:00Z"));
    assert_eq!(
        verify_signed_key_set_gated(
            &late,
            &pinned_soft,
            f.clock.as_ref(),
            DEFAULT_DRIFT,
            Some(gate)
        )
        .unwrap_err()
        .code,
        ErrorCode::AlgorithmDeprecated
    );
    // Without a gate the same document verifies (the gate is what refuses it).
    verify_signed_key_set(&late, &pinned_soft, f.clock.as_ref(), DEFAULT_DRIFT).unwrap();
}

/// Signs a key-set document with a software key (test vectors for the verifier).
fn forge(signer: &SoftwareSigner, key_set: &Value, issued: &str, expires: &str) -> Value {
    let unsigned = json!({
        "version": "1.0",
        "keySet": key_set,
        "issuedAt": issued,
        "expiresAt": expires,
        "signerKeyId": signer.kid(),
    });
    sign_artifact(signer, Domain::KeySet, "1.0", &unsigned).unwrap()
}

#[test]
fn verifier_refusals() {
    let f = fx();
    populated(&f);
    let root = root_set(&f);
    let signed = sign_key_set(
        &f.reg,
        f.sink.as_ref(),
        &op(),
        f.clock.as_ref(),
        DEFAULT_SIGNED_LIFETIME,
    )
    .unwrap();
    let clock = FixedClock::new(t("2026-03-01T12:00:00Z"));
    let check = |v: &Value, root: &KeySet| {
        verify_signed_key_set(v, root, &clock, DEFAULT_DRIFT).map(|_| ())
    };
    let code = |v: &Value| check(v, &root).unwrap_err().code;
    check(&signed, &root).unwrap();

    let mut tampered = signed.clone();
    tampered["keySet"]["keys"][0]["active"] = json!(true);
    tampered["keySet"]["keys"][4]["active"] = json!(true);
    assert_eq!(code(&tampered), ErrorCode::SignatureInvalid);
    let mut extended = signed.clone();
    extended["expiresAt"] = json!("2026-03-05T00:00:00Z");
    assert_eq!(code(&extended), ErrorCode::SignatureInvalid);
    let mut unknown = signed.clone();
    unknown["note"] = json!("x");
    assert_eq!(code(&unknown), ErrorCode::UnknownField);
    let mut missing = signed.clone();
    missing.as_object_mut().unwrap().remove("issuedAt");
    assert_eq!(code(&missing), ErrorCode::SchemaInvalid);
    let mut version = signed.clone();
    version["version"] = json!("2.0");
    assert_eq!(code(&version), ErrorCode::VersionUnsupported);
    let mut garbled = signed.clone();
    garbled["signature"] = json!("***");
    assert_eq!(code(&garbled), ErrorCode::SignatureEncodingInvalid);

    // Signer not pinned / pinned but revoked.
    let other = KeySet {
        version: "1.0".into(),
        keys: vec![],
        extra: BTreeMap::new(),
    };
    assert_eq!(
        check(&signed, &other).unwrap_err().code,
        ErrorCode::KeyNotFound
    );
    let mut revoked_root = root.clone();
    revoked_root.keys[0].active = Some(false);
    assert_eq!(
        check(&signed, &revoked_root).unwrap_err().code,
        ErrorCode::KeyRevoked
    );
    // A different key under the pinned kid: signature does not verify.
    let soft = SoftwareSigner::from_secret("x", Alg::EdDSA, &[1u8; 32]).unwrap();
    let mut swapped = root.clone();
    swapped.keys[0] = soft.public_key().to_jwk(&swapped.keys[0].kid, true);
    assert_eq!(
        check(&signed, &swapped).unwrap_err().code,
        ErrorCode::SignatureInvalid
    );

    // Time: expiry and not-before, with drift.
    let at = |s: &str| {
        verify_signed_key_set(&signed, &root, &FixedClock::new(t(s)), DEFAULT_DRIFT).map(|_| ())
    };
    at("2026-03-02T00:05:00Z").unwrap();
    assert_eq!(
        at("2026-03-02T00:05:01Z").unwrap_err().code,
        ErrorCode::ArtifactExpired
    );
    at("2026-02-28T23:55:00Z").unwrap();
    assert_eq!(
        at("2026-02-28T23:54:59Z").unwrap_err().code,
        ErrorCode::ArtifactNotYetValid
    );

    // Documents signed by a pinned key but malformed inside.
    let soft = SoftwareSigner::from_secret("soft-root", Alg::EdDSA, &[7u8; 32]).unwrap();
    let pinned = KeySet {
        version: "1.0".into(),
        keys: vec![soft.public_key().to_jwk("soft-root", true)],
        extra: BTreeMap::new(),
    };
    let inner = signed["keySet"].clone();
    let ok = forge(
        &soft,
        &inner,
        "2026-03-01T00:00:00Z",
        "2026-03-08T00:00:00Z",
    );
    check(&ok, &pinned).unwrap();
    let long = forge(
        &soft,
        &inner,
        "2026-03-01T00:00:00Z",
        "2026-03-08T00:00:01Z",
    );
    assert_eq!(
        check(&long, &pinned).unwrap_err().code,
        ErrorCode::LifetimeExceeded
    );
    let backwards = forge(
        &soft,
        &inner,
        "2026-03-01T12:00:00Z",
        "2026-03-01T11:59:00Z",
    );
    assert_eq!(
        check(&backwards, &pinned).unwrap_err().code,
        ErrorCode::SchemaInvalid
    );
    let bad_time = forge(&soft, &inner, "yesterday", "2026-03-02T00:00:00Z");
    assert_eq!(
        check(&bad_time, &pinned).unwrap_err().code,
        ErrorCode::TimestampInvalid
    );
    let mut with_d = inner.clone();
    with_d["keys"][0]["d"] = json!("AAAA");
    let e = check(
        &forge(
            &soft,
            &with_d,
            "2026-03-01T00:00:00Z",
            "2026-03-02T00:00:00Z",
        ),
        &pinned,
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::KeyPrivateMaterial);
    assert!(
        e.field.as_deref().is_some_and(|f| f.ends_with("keys[0].d")),
        "{e:?}"
    );
    let mut bad_version = inner.clone();
    bad_version["version"] = json!("0.9");
    assert_eq!(
        check(
            &forge(
                &soft,
                &bad_version,
                "2026-03-01T00:00:00Z",
                "2026-03-02T00:00:00Z"
            ),
            &pinned
        )
        .unwrap_err()
        .code,
        ErrorCode::KeySetInvalid
    );
}

// ---------------------------------------------------------------------------------------
// jwks/: schemas and examples.

fn jwks_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("jwks")
}

fn read_json(path: &std::path::Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    crate::canonical::parse_strict(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A validator for the subset of JSON Schema 2020-12 the jwks/ schemas use. Every keyword it
/// meets must be one it checks (or a pure annotation), so a schema cannot silently use a
/// keyword this test ignores.
struct MiniSchema {
    docs: BTreeMap<String, Value>,
}

const ANNOTATIONS: [&str; 5] = ["$schema", "$id", "title", "description", "$comment"];

impl MiniSchema {
    fn resolve(&self, base: &str, reference: &str) -> (String, Value) {
        let (file, pointer) = reference.split_once('#').unwrap_or((reference, ""));
        let file = if file.is_empty() { base } else { file };
        let doc = self
            .docs
            .get(file)
            .unwrap_or_else(|| panic!("unknown $ref {reference}"));
        let target = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("bad $ref pointer {reference}"))
            .clone();
        (file.to_string(), target)
    }

    fn check(
        &self,
        base: &str,
        schema: &Value,
        v: &Value,
        path: &str,
    ) -> std::result::Result<(), String> {
        let s = schema.as_object().expect("schema object");
        for (kw, arg) in s {
            match kw.as_str() {
                k if ANNOTATIONS.contains(&k) || k == "$defs" || k == "examples" => {}
                "$ref" => {
                    let (file, target) = self.resolve(base, arg.as_str().unwrap());
                    self.check(&file, &target, v, path)?;
                }
                "type" => {
                    let ok = match arg.as_str().unwrap() {
                        "object" => v.is_object(),
                        "array" => v.is_array(),
                        "string" => v.is_string(),
                        "boolean" => v.is_boolean(),
                        "integer" => v.is_i64() || v.is_u64(),
                        other => panic!("type {other} not supported by the test"),
                    };
                    if !ok {
                        return Err(format!("{path}: not of type {arg}"));
                    }
                }
                "const" if v != arg => return Err(format!("{path}: {v} != const {arg}")),
                "const" => {}
                "enum" => {
                    if !arg.as_array().unwrap().contains(v) {
                        return Err(format!("{path}: {v} not in enum"));
                    }
                }
                "minLength" => {
                    let n = v.as_str().map(|s| s.chars().count()).unwrap_or(usize::MAX);
                    if n < arg.as_u64().unwrap() as usize {
                        return Err(format!("{path}: shorter than minLength"));
                    }
                }
                "pattern" => {
                    let Some(text) = v.as_str() else { continue };
                    let ok = match arg.as_str().unwrap() {
                        "^[A-Za-z0-9_-]+$" => {
                            !text.is_empty()
                                && text
                                    .bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                        }
                        "^[0-9]+\\.[0-9]+$" => crate::algorithms::SpecVersion::parse(text).is_ok(),
                        other => panic!("pattern {other} not supported by the test"),
                    };
                    if !ok {
                        return Err(format!("{path}: {text:?} does not match {arg}"));
                    }
                }
                "format" => {
                    assert_eq!(arg, "date-time", "format not supported by the test");
                    if let Some(text) = v.as_str() {
                        parse_rfc3339(text, path).map_err(|e| e.message)?;
                    }
                }
                "required" => {
                    if let Some(o) = v.as_object() {
                        for r in arg.as_array().unwrap() {
                            if !o.contains_key(r.as_str().unwrap()) {
                                return Err(format!("{path}: missing required {r}"));
                            }
                        }
                    }
                }
                "properties" => {
                    if let Some(o) = v.as_object() {
                        for (name, sub) in arg.as_object().unwrap() {
                            if let Some(child) = o.get(name) {
                                self.check(base, sub, child, &format!("{path}.{name}"))?;
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    assert_eq!(arg, &Value::Bool(false), "only additionalProperties:false");
                    let known = s.get("properties").and_then(Value::as_object);
                    let extra = v.as_object().and_then(|o| {
                        o.keys()
                            .find(|k| !known.is_some_and(|p| p.contains_key(*k)))
                    });
                    if let Some(extra) = extra {
                        return Err(format!("{path}: additional property {extra}"));
                    }
                }
                "items" => {
                    if let Some(a) = v.as_array() {
                        for (i, item) in a.iter().enumerate() {
                            self.check(base, arg, item, &format!("{path}[{i}]"))?;
                        }
                    }
                }
                "oneOf" => {
                    let matching = arg
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|sub| self.check(base, sub, v, path).is_ok())
                        .count();
                    if matching != 1 {
                        return Err(format!("{path}: matches {matching} oneOf branches"));
                    }
                }
                "not" => {
                    if self.check(base, arg, v, path).is_ok() {
                        return Err(format!("{path}: matches a `not` schema"));
                    }
                }
                other => panic!("schema keyword {other} not supported by the test"),
            }
        }
        Ok(())
    }
}

fn schemas() -> MiniSchema {
    let mut docs = BTreeMap::new();
    for name in ["mpcp-keys.schema.json", "mpcp-keys.signed.schema.json"] {
        let doc = read_json(&jwks_dir().join(name));
        assert_eq!(
            doc["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        docs.insert(name.to_string(), doc);
    }
    MiniSchema { docs }
}

fn validate(s: &MiniSchema, schema: &str, v: &Value) -> std::result::Result<(), String> {
    let root = s.docs[schema].clone();
    s.check(schema, &root, v, "$")
}

/// Deterministic documents from the test backend (software keys derived from a counter and a
/// fixed clock): the same bytes on every run.
fn generated_documents() -> (Value, Value, Value) {
    let f = fx();
    populated(&f);
    let set = key_set_value(&build_key_set(&f.reg).unwrap()).unwrap();
    let signed = sign_key_set(
        &f.reg,
        f.sink.as_ref(),
        &op(),
        f.clock.as_ref(),
        DEFAULT_SIGNED_LIFETIME,
    )
    .unwrap();
    let root = key_set_value(&root_set(&f)).unwrap();
    (set, signed, root)
}

#[test]
fn generated_documents_match_schemas_and_examples() {
    let s = schemas();
    let (set, signed, root) = generated_documents();
    let examples = jwks_dir().join("examples");
    let files = [
        ("mpcp-keys.json", &set, "mpcp-keys.schema.json"),
        (
            "mpcp-keys.signed.json",
            &signed,
            "mpcp-keys.signed.schema.json",
        ),
        ("mpcp-root-keys.json", &root, "mpcp-keys.schema.json"),
    ];
    if std::env::var_os("MPCP_WRITE_JWKS_EXAMPLES").is_some() {
        std::fs::create_dir_all(&examples).unwrap();
        for (name, v, _) in files {
            let mut text = serde_json::to_string_pretty(v).unwrap();
            text.push('\n');
            std::fs::write(examples.join(name), text).unwrap();
        }
    }
    for (name, v, schema) in files {
        validate(&s, schema, v).unwrap_or_else(|e| panic!("generated {name}: {e}"));
        let example = read_json(&examples.join(name));
        validate(&s, schema, &example).unwrap_or_else(|e| panic!("example {name}: {e}"));
        assert_eq!(
            &example, v,
            "jwks/examples/{name} is stale; regenerate with MPCP_WRITE_JWKS_EXAMPLES=1 cargo test --lib keys::keyset"
        );
    }
    // The example signed key set verifies against the example root keys.
    let root_set = KeySet::from_value(&read_json(&examples.join("mpcp-root-keys.json"))).unwrap();
    let example_signed = read_json(&examples.join("mpcp-keys.signed.json"));
    let clock = FixedClock::new(t("2026-03-01T00:00:00Z"));
    verify_signed_key_set(&example_signed, &root_set, &clock, DEFAULT_DRIFT).unwrap();
}

#[test]
fn schemas_refuse_what_the_appliance_must_never_publish() {
    let s = schemas();
    let (set, signed, _) = generated_documents();
    let bad = |mutate: &dyn Fn(&mut Value), schema: &str, base: &Value| {
        let mut v = base.clone();
        mutate(&mut v);
        assert!(validate(&s, schema, &v).is_err(), "schema accepted {v}");
    };
    let keys = "mpcp-keys.schema.json";
    bad(&|v| v["keys"][0]["d"] = json!("AAAA"), keys, &set);
    bad(&|v| v["keys"][0]["use"] = json!("enc"), keys, &set);
    bad(
        &|v| {
            v["keys"][0]
                .as_object_mut()
                .unwrap()
                .remove("active")
                .map(|_| ())
                .unwrap()
        },
        keys,
        &set,
    );
    bad(&|v| v["keys"][0]["alg"] = json!("ES256K"), keys, &set); // conflicts with kty/crv
    bad(&|v| v["keys"][1]["alg"] = json!("ES256"), keys, &set);
    bad(&|v| v["keys"][0]["y"] = json!("AAAA"), keys, &set); // OKP with y
    bad(
        &|v| {
            v["keys"][1]
                .as_object_mut()
                .unwrap()
                .remove("y")
                .map(|_| ())
                .unwrap()
        },
        keys,
        &set,
    );
    bad(&|v| v["keys"][0]["x"] = json!("a+b/"), keys, &set);
    bad(&|v| v["version"] = json!("1.1"), keys, &set);
    let signed_schema = "mpcp-keys.signed.schema.json";
    bad(
        &|v| v["issuedAt"] = json!("yesterday"),
        signed_schema,
        &signed,
    );
    bad(&|v| v["extra"] = json!(1), signed_schema, &signed);
    bad(
        &|v| v["keySet"]["keys"][0]["d"] = json!("AAAA"),
        signed_schema,
        &signed,
    );
    bad(
        &|v| {
            v.as_object_mut()
                .unwrap()
                .remove("signature")
                .map(|_| ())
                .unwrap()
        },
        signed_schema,
        &signed,
    );
}

#[test]
fn project_vectors_replay_through_the_key_set_verifier() {
    // test-vectors/l2 holds signed key sets made by the vector generator; the publisher's
    // verifier must agree with the manifest on both.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-vectors/l2");
    let root = KeySet::from_value(&read_json(&dir.join("keys/root-jwks.json"))).unwrap();
    let clock = FixedClock::new(t("2026-06-01T12:00:00Z"));
    let valid = read_json(&dir.join("artifacts/keyset-signed-valid.json"));
    let inner = verify_signed_key_set(&valid, &root, &clock, DEFAULT_DRIFT).unwrap();
    assert_eq!(KeySet::from_value(&valid["keySet"]).unwrap(), inner);
    let tampered = read_json(&dir.join("artifacts/keyset-tampered.json"));
    assert_eq!(
        verify_signed_key_set(&tampered, &root, &clock, DEFAULT_DRIFT)
            .unwrap_err()
            .code,
        ErrorCode::SignatureInvalid
    );
}

#[test]
fn key_set_urls_follow_the_spec_table() {
    for (issuer, url) in [
        (
            "operator.example.com",
            "https://operator.example.com/.well-known/mpcp-keys.json",
        ),
        (
            "https://operator.example.com",
            "https://operator.example.com/.well-known/mpcp-keys.json",
        ),
        (
            "https://pa.example.com:8443/",
            "https://pa.example.com:8443/.well-known/mpcp-keys.json",
        ),
        (
            "did:web:operator.example.com",
            "https://operator.example.com/.well-known/mpcp-keys.json",
        ),
        (
            "did:web:operator.example.com:path:to:key",
            "https://operator.example.com/path/to/key/.well-known/mpcp-keys.json",
        ),
    ] {
        assert_eq!(key_set_url(issuer).unwrap(), url, "{issuer}");
    }
    for bad in [
        "http://pa.example.com",
        "https://pa.example.com/x",
        "",
        "did:web:",
    ] {
        assert_eq!(
            key_set_url(bad).unwrap_err().code,
            ErrorCode::SchemaInvalid,
            "{bad:?}"
        );
    }
    for unreachable in [
        "mpcp-pa.local",
        "pa",
        "https://localhost:8443",
        "127.0.0.1",
        "pa.internal",
        "http://pa.example.org",
    ] {
        assert!(unreachable_issuer(unreachable).is_some(), "{unreachable}");
    }
    assert!(
        unreachable_issuer("mpcp-pa.local")
            .unwrap()
            .contains("https://mpcp-pa.local/.well-known/mpcp-keys.json")
    );
    for fine in [
        "pa.operator.com",
        "https://pa.operator.com",
        "did:web:pa.operator.com",
    ] {
        assert_eq!(unreachable_issuer(fine), None, "{fine}");
    }
}
