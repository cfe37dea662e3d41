use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::algorithms::AlgorithmPolicy;
use crate::algorithms::test_fixtures::deprecating_es256k_toml;
use crate::clock::FixedClock;
use crate::crypto::Alg;
use crate::events::Event;
use crate::keys::KeyRole;
use crate::keys::test_support::{FlakySink, SoftBackend};
use crate::store::Store;

const DEPRECATING_ES256K: &str = deprecating_es256k_toml!("2026-03-02T00:00:00Z");

struct Fx {
    reg: Arc<KeyRegistry>,
    sink: Arc<FlakySink>,
    clock: Arc<FixedClock>,
    publisher: KeyPublisher,
    _store: Store,
}

fn op() -> Actor {
    Actor {
        name: "test:bob".into(),
        role: "security-officer".into(),
    }
}

fn fx(policy: &str, root_alg: Alg) -> Fx {
    let store = Store::temporary().unwrap();
    let sink = Arc::new(FlakySink::open(&store));
    let clock = Arc::new(FixedClock::new(
        parse_rfc3339("2026-03-01T00:00:00Z", "t").unwrap(),
    ));
    let reg = Arc::new(
        KeyRegistry::new(
            &store,
            Arc::new(SoftBackend::default()),
            sink.clone(),
            clock.clone(),
            Arc::new(AlgorithmPolicy::from_toml_str(policy).unwrap()),
        )
        .unwrap(),
    );
    let g = reg
        .generate(&op(), KeyRole::GrantSigning, Alg::EdDSA)
        .unwrap();
    reg.activate(&op(), &g.kid).unwrap();
    let r = reg.generate(&op(), KeyRole::Root, root_alg).unwrap();
    reg.activate(&op(), &r.kid).unwrap();
    let publisher = KeyPublisher::new(
        reg.clone(),
        sink.clone(),
        clock.clone(),
        Duration::from_secs(3600),
    );
    Fx {
        reg,
        sink,
        clock,
        publisher,
        _store: store,
    }
}

fn json(doc: &PublishedDocument) -> Value {
    serde_json::from_slice(&doc.body).unwrap()
}

fn signings(f: &Fx) -> usize {
    f.sink
        .events()
        .iter()
        .filter(|e| matches!(e, Event::KeySetSigned { .. }))
        .count()
}

#[test]
fn plain_set_is_the_spec_document_and_is_built_once_per_change() {
    let f = fx(crate::algorithms::BUILTIN_POLICY_TOML, Alg::EdDSA);
    assert!(f.publisher.current_key_set().is_none(), "nothing built yet");
    let first = f.publisher.key_set().unwrap();
    let v = json(&first);
    let members: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(members, ["keys", "version"]);
    assert_eq!(v["version"], "1.0");
    assert_eq!(v["keys"].as_array().unwrap().len(), 1);
    assert_eq!(
        first.etag,
        format!("\"{}\"", hex::encode(Sha256::digest(&first.body)))
    );
    // Unchanged keys: the same document, from memory.
    let again = f.publisher.current_key_set().unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    // A registry change makes it stale; the rebuild lists the new key.
    f.reg
        .generate(&op(), KeyRole::GrantSigning, Alg::ES256K)
        .unwrap();
    assert!(f.publisher.current_key_set().is_none());
    let second = f.publisher.key_set().unwrap();
    assert_eq!(json(&second)["keys"].as_array().unwrap().len(), 2);
    assert_ne!(first.etag, second.etag);
    // No signature, no audit entry for the plain form.
    assert_eq!(signings(&f), 0);
}

#[test]
fn plain_set_answers_without_root_key_or_audit_log() {
    let f = fx(crate::algorithms::BUILTIN_POLICY_TOML, Alg::EdDSA);
    let root = f.reg.active_kid(KeyRole::Root).unwrap().unwrap();
    f.reg.revoke(&op(), &root, "compromised").unwrap();
    let doc = f.publisher.key_set().unwrap();
    assert_eq!(json(&doc)["keys"].as_array().unwrap().len(), 1);
    let e = f.publisher.signed_key_set().unwrap_err();
    assert_eq!(e.code, ErrorCode::KeySetUnavailable);
    // The audit log failing does not matter to the plain form either.
    f.sink.fail.store(true, Ordering::SeqCst);
    f.reg
        .generate(&op(), KeyRole::GrantSigning, Alg::ES256K)
        .unwrap_err();
    assert!(f.publisher.key_set().is_ok());
}

#[test]
fn deprecation_publishes_active_false_at_its_instant_in_both_forms() {
    // The grant key is ES256K here; ES256K is deprecated from 2026-03-02.
    let f = fx(DEPRECATING_ES256K, Alg::EdDSA);
    let k = f
        .reg
        .generate(&op(), KeyRole::GrantSigning, Alg::ES256K)
        .unwrap();
    let active = |doc: &PublishedDocument, path: &[&str]| -> bool {
        let mut v = json(doc);
        for p in path {
            v = v[*p].clone();
        }
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["kid"] == k.kid.as_str())
            .unwrap()["active"]
            .as_bool()
            .unwrap()
    };
    assert!(active(&f.publisher.key_set().unwrap(), &[]));
    assert!(active(&f.publisher.signed_key_set().unwrap(), &["keySet"]));
    assert!(f.publisher.current_key_set().is_some());
    f.clock.advance(Duration::from_secs(24 * 3600));
    // No registry change, yet both documents are stale at the effective instant.
    assert!(f.publisher.current_key_set().is_none());
    assert!(f.publisher.current_signed_key_set().is_none());
    assert!(!active(&f.publisher.key_set().unwrap(), &[]));
    assert!(!active(&f.publisher.signed_key_set().unwrap(), &["keySet"]));
}

#[test]
fn signed_set_is_signed_once_and_kept_through_a_refresh_failure_only_while_accurate() {
    let f = fx(crate::algorithms::BUILTIN_POLICY_TOML, Alg::EdDSA);
    let first = f.publisher.signed_key_set().unwrap();
    assert_eq!(signings(&f), 1);
    assert!(Arc::ptr_eq(&first, &f.publisher.signed_key_set().unwrap()));
    assert_eq!(signings(&f), 1);
    // Past half its lifetime with the audit log failing: the same keys, not expired, so the
    // last signed document is still served.
    f.sink.fail.store(true, Ordering::SeqCst);
    f.clock.advance(Duration::from_secs(1900));
    assert!(Arc::ptr_eq(&first, &f.publisher.signed_key_set().unwrap()));
    // Past its expiry it is not.
    f.clock.advance(Duration::from_secs(1800));
    assert_eq!(
        f.publisher.signed_key_set().unwrap_err().code,
        ErrorCode::AuditUnavailable
    );
    // Back: signed again.
    f.sink.fail.store(false, Ordering::SeqCst);
    let again = f.publisher.signed_key_set().unwrap();
    assert_ne!(first.etag, again.etag);
    assert_eq!(signings(&f), 2);
}

#[test]
fn signed_set_with_stale_keys_is_never_served() {
    let f = fx(crate::algorithms::BUILTIN_POLICY_TOML, Alg::EdDSA);
    f.publisher.signed_key_set().unwrap();
    let grant = f.reg.active_kid(KeyRole::GrantSigning).unwrap().unwrap();
    f.reg.revoke(&op(), &grant, "compromised").unwrap();
    f.sink.fail.store(true, Ordering::SeqCst);
    // The keys changed and the new set cannot be signed (audit failing): 503, not the old
    // document that still lists the revoked key as active.
    let e = f.publisher.signed_key_set().unwrap_err();
    assert_eq!(e.code, ErrorCode::AuditUnavailable);
    let plain = json(&f.publisher.key_set().unwrap());
    assert_eq!(plain["keys"][0]["active"], false);
}

#[test]
fn signed_set_of_a_deprecated_root_is_not_served() {
    // Root ES256K, deprecated from 2026-03-02; the last signed document is not kept.
    let f = fx(DEPRECATING_ES256K, Alg::ES256K);
    f.publisher.signed_key_set().unwrap();
    f.clock.advance(Duration::from_secs(24 * 3600));
    assert_eq!(
        f.publisher.signed_key_set().unwrap_err().code,
        ErrorCode::KeySetUnavailable
    );
    assert!(f.publisher.key_set().is_ok());
}
