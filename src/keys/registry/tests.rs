//! Unit tests of the key registry against the TEST-ONLY in-memory backend
//! ([`crate::keys::test_support::SoftBackend`]); end-to-end tests against SoftHSM2 live in
//! tests/keys_*.rs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::algorithms::test_fixtures::deprecating_es256k_toml;
use crate::clock::FixedClock;
use crate::crypto::AlgorithmGate;
use crate::keys::test_support::{FlakySink, SoftBackend};

const DAY: Duration = Duration::from_secs(86400);

const DEPRECATING_ES256K: &str = deprecating_es256k_toml!("2026-06-01T00:00:00Z");

struct Fx {
    reg: KeyRegistry,
    backend: Arc<SoftBackend>,
    sink: Arc<FlakySink>,
    clock: Arc<FixedClock>,
    _store: Store,
}

fn t(s: &str) -> time::OffsetDateTime {
    parse_rfc3339(s, "t").unwrap()
}

fn fx_with(policy: AlgorithmPolicy) -> Fx {
    let store = Store::temporary().unwrap();
    let backend = Arc::new(SoftBackend::default());
    let sink = Arc::new(FlakySink::open(&store));
    let clock = Arc::new(FixedClock::new(t("2026-03-01T00:00:00Z")));
    let reg = KeyRegistry::new(
        &store,
        backend.clone(),
        sink.clone(),
        clock.clone(),
        Arc::new(policy),
    )
    .unwrap();
    Fx {
        reg,
        backend,
        sink,
        clock,
        _store: store,
    }
}

fn fx() -> Fx {
    fx_with(AlgorithmPolicy::builtin().unwrap())
}

fn officer() -> Actor {
    Actor {
        name: "test:alice".into(),
        role: "security-officer".into(),
    }
}

/// Everything a refused operation must leave unchanged.
#[derive(Debug, PartialEq)]
struct Snapshot {
    records: Vec<KeyRecord>,
    active: BTreeMap<String, Option<String>>,
    objects: Vec<Vec<u8>>,
    events: usize,
}

fn snapshot(f: &Fx) -> Snapshot {
    Snapshot {
        records: f.reg.list().unwrap(),
        active: KeyRole::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), f.reg.active_kid(*r).unwrap()))
            .collect(),
        objects: f.backend.objects().into_keys().collect(),
        events: f.sink.events().len(),
    }
}

/// Runs `op`, asserts it is refused with `code`, and that nothing changed.
#[track_caller]
fn refused<T: std::fmt::Debug>(f: &Fx, code: ErrorCode, op: impl FnOnce() -> Result<T>) -> Error {
    let before = snapshot(f);
    let err = op().expect_err("operation should be refused");
    assert_eq!(err.code, code, "{err}");
    assert_eq!(snapshot(f), before, "refused operation changed state");
    err
}

fn new_key(f: &Fx, role: KeyRole, alg: Alg) -> KeyRecord {
    f.reg.generate(&officer(), role, alg).unwrap()
}

fn verify_sig(rec: &KeyRecord, signer: &dyn DigestSigner) {
    let d = [0x42u8; 32];
    let sig = signer.sign_digest(&d).unwrap();
    rec.public_key()
        .unwrap()
        .verify_digest(&d, &sig.bytes)
        .unwrap();
}

#[test]
fn generate_registers_a_published_pending_key() {
    let f = fx();
    let rec = new_key(&f, KeyRole::GrantSigning, Alg::EdDSA);
    assert_eq!(rec.state, KeyState::Pending);
    assert!(rec.kid.starts_with("grant-signing-eddsa-"), "{}", rec.kid);
    assert_eq!(
        rec.kid,
        kid_for(KeyRole::GrantSigning, &rec.public_key().unwrap()).unwrap()
    );
    assert_eq!(rec.created_at, "2026-03-01T00:00:00Z");
    assert!(rec.public_jwk.d.is_none() && rec.public_jwk.active.is_none());
    // The token object exists under the recorded id and label.
    let objects = f.backend.objects();
    let obj = &objects[&rec.object_id_bytes().unwrap()];
    assert_eq!(obj.label, rec.label);
    assert_eq!((obj.role, obj.alg), (KeyRole::GrantSigning, Alg::EdDSA));
    // Audited with the caller as actor.
    let events = f.sink.entries();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, officer());
    assert_eq!(
        events[0].1,
        Event::KeyGenerated {
            kid: rec.kid.clone(),
            role: "grant-signing".into(),
            alg: "EdDSA".into()
        }
    );
    // Published before it signs.
    let published = f.reg.published_keys(KeyRole::GrantSigning).unwrap();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].active, Some(true));
    assert_eq!(
        f.reg
            .active_signer(KeyRole::GrantSigning)
            .err()
            .unwrap()
            .code,
        ErrorCode::KeyNotFound
    );
    assert_eq!(f.reg.get(&rec.kid).unwrap(), rec);
}

#[test]
fn generate_refusals_leave_registry_and_token_unchanged() {
    let f = fx();
    new_key(&f, KeyRole::Root, Alg::EdDSA);
    // Registry refusal after generation (same public key -> same kid): objects destroyed.
    f.backend.repeat_secret.store(true, Ordering::SeqCst);
    let e = refused(&f, ErrorCode::Conflict, || {
        f.reg.generate(&officer(), KeyRole::Root, Alg::EdDSA)
    });
    assert!(e.message.contains("already registered"), "{e}");
    // ES256 may not sign grants (policy decision).
    refused(&f, ErrorCode::AlgorithmUnsupported, || {
        f.reg
            .generate(&officer(), KeyRole::GrantSigning, Alg::ES256)
    });
    // Token failure: nothing registered.
    f.backend.fail_generate.store(true, Ordering::SeqCst);
    refused(&f, ErrorCode::HsmError, || {
        f.reg.generate(&officer(), KeyRole::Root, Alg::EdDSA)
    });
    f.backend.fail_generate.store(false, Ordering::SeqCst);
    // Audit failure after the token generated the pair: the new objects are destroyed again.
    f.sink.fail.store(true, Ordering::SeqCst);
    refused(&f, ErrorCode::AuditUnavailable, || {
        f.reg.generate(&officer(), KeyRole::Root, Alg::ES256K)
    });
    f.sink.fail.store(false, Ordering::SeqCst);
    // Audit keys sign C2SP notes: anything but EdDSA is refused before the token is asked.
    for alg in [Alg::ES256K, Alg::ES256] {
        refused(&f, ErrorCode::AlgorithmUnsupported, || {
            f.reg.generate(&officer(), KeyRole::Audit, alg)
        });
    }
}

#[test]
fn generate_of_deprecated_algorithm_is_refused_from_the_effective_date() {
    let f = fx_with(AlgorithmPolicy::from_toml_str(DEPRECATING_ES256K).unwrap());
    f.clock.set(t("2026-05-31T23:59:59Z"));
    new_key(&f, KeyRole::GrantSigning, Alg::ES256K);
    f.clock.advance(Duration::from_secs(1));
    refused(&f, ErrorCode::AlgorithmDeprecated, || {
        f.reg
            .generate(&officer(), KeyRole::GrantSigning, Alg::ES256K)
    });
    new_key(&f, KeyRole::GrantSigning, Alg::EdDSA);
}

#[test]
fn activate_makes_the_pending_key_sign() {
    let f = fx();
    let rec = new_key(&f, KeyRole::GrantSigning, Alg::ES256K);
    f.clock.advance(DAY);
    let active = f.reg.activate(&officer(), &rec.kid).unwrap();
    assert_eq!(active.state, KeyState::Active);
    assert_eq!(active.activated_at.as_deref(), Some("2026-03-02T00:00:00Z"));
    assert_eq!(
        f.reg.active_kid(KeyRole::GrantSigning).unwrap(),
        Some(rec.kid.clone())
    );
    assert_eq!(
        f.sink.events().last().unwrap(),
        &Event::KeyActivated {
            kid: rec.kid.clone(),
            role: "grant-signing".into(),
            retired: None
        }
    );
    let signer = f.reg.active_signer(KeyRole::GrantSigning).unwrap();
    assert_eq!(signer.kid(), rec.kid);
    verify_sig(&rec, signer.as_ref());
    // Other roles are unaffected.
    assert_eq!(
        f.reg.active_signer(KeyRole::Root).err().unwrap().code,
        ErrorCode::KeyNotFound
    );
}

#[test]
fn activate_refusals() {
    let f = fx();
    let a = new_key(&f, KeyRole::GrantSigning, Alg::EdDSA);
    let b = new_key(&f, KeyRole::GrantSigning, Alg::EdDSA);
    refused(&f, ErrorCode::KeyNotFound, || {
        f.reg.activate(&officer(), "grant-signing-eddsa-0000")
    });
    f.reg.activate(&officer(), &a.kid).unwrap();
    // One active key per role: activating another is refused (use rotate).
    let e = refused(&f, ErrorCode::KeyStateInvalid, || {
        f.reg.activate(&officer(), &b.kid)
    });
    assert!(e.message.contains("rotate"), "{e}");
    // Only pending keys activate.
    refused(&f, ErrorCode::KeyStateInvalid, || {
        f.reg.activate(&officer(), &a.kid)
    });
    f.reg.revoke(&officer(), &b.kid, "test").unwrap();
    refused(&f, ErrorCode::KeyRevoked, || {
        f.reg.activate(&officer(), &b.kid)
    });
    // Audit failure: nothing changes.
    let c = new_key(&f, KeyRole::Root, Alg::EdDSA);
    f.sink.fail.store(true, Ordering::SeqCst);
    refused(&f, ErrorCode::AuditUnavailable, || {
        f.reg.activate(&officer(), &c.kid)
    });
}

#[test]
fn concurrent_activations_leave_exactly_one_active_key() {
    let f = Arc::new(fx());
    let kids: Vec<String> = (0..8)
        .map(|_| new_key(&f, KeyRole::Audit, Alg::EdDSA).kid)
        .collect();
    let handles: Vec<_> = kids
        .iter()
        .cloned()
        .map(|kid| {
            let f = f.clone();
            std::thread::spawn(move || f.reg.activate(&officer(), &kid).is_ok())
        })
        .collect();
    let ok = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(ok, 1);
    let active = f.reg.active_kid(KeyRole::Audit).unwrap().unwrap();
    let states: Vec<KeyState> = kids.iter().map(|k| f.reg.get(k).unwrap().state).collect();
    assert_eq!(states.iter().filter(|s| **s == KeyState::Active).count(), 1);
    assert_eq!(f.reg.get(&active).unwrap().state, KeyState::Active);
}

#[test]
fn rotate_to_a_named_pending_key_retires_the_previous_one() {
    let f = fx();
    let old = new_key(&f, KeyRole::GrantSigning, Alg::EdDSA);
    f.reg.activate(&officer(), &old.kid).unwrap();
    let old_signer = f.reg.active_signer(KeyRole::GrantSigning).unwrap();
    let new = new_key(&f, KeyRole::GrantSigning, Alg::ES256K);
    let r = f
        .reg
        .rotate(&officer(), KeyRole::GrantSigning, Some(&new.kid), None)
        .unwrap();
    assert!(!r.generated);
    assert_eq!(r.activated.kid, new.kid);
    assert_eq!(r.activated.state, KeyState::Active);
    let retired = r.retired.unwrap();
    assert_eq!(
        (retired.kid.as_str(), retired.state),
        (old.kid.as_str(), KeyState::Retired)
    );
    assert!(retired.retired_at.is_some());
    assert_eq!(f.reg.get(&old.kid).unwrap().state, KeyState::Retired);
    assert_eq!(
        f.sink.events().last().unwrap(),
        &Event::KeyActivated {
            kid: new.kid.clone(),
            role: "grant-signing".into(),
            retired: Some(old.kid.clone())
        }
    );
    // The retired key stays published active so issued grants keep verifying...
    let published = f.reg.published_keys(KeyRole::GrantSigning).unwrap();
    assert!(published.iter().all(|k| k.active == Some(true)));
    // ...but signs nothing new, even through a signer handed out before the rotation.
    let e = old_signer.sign_digest(&[1u8; 32]).unwrap_err();
    assert_eq!(e.code, ErrorCode::KeyStateInvalid);
    let signer = f.reg.active_signer(KeyRole::GrantSigning).unwrap();
    assert_eq!(signer.kid(), new.kid);
    verify_sig(&new, signer.as_ref());
}

#[test]
fn rotate_picks_the_oldest_pending_key_or_generates_one() {
    let f = fx();
    let a = new_key(&f, KeyRole::Root, Alg::ES256);
    f.reg.activate(&officer(), &a.kid).unwrap();
    let p1 = new_key(&f, KeyRole::Root, Alg::EdDSA);
    let p2 = new_key(&f, KeyRole::Root, Alg::EdDSA);
    let r = f.reg.rotate(&officer(), KeyRole::Root, None, None).unwrap();
    assert_eq!(r.activated.kid, p1.kid);
    // With an algorithm filter the oldest pending key of that algorithm is chosen; none
    // exists for ES256K, so one is generated.
    let events_before = f.sink.events().len();
    let r = f
        .reg
        .rotate(&officer(), KeyRole::Root, None, Some(Alg::ES256K))
        .unwrap();
    assert!(r.generated);
    assert_eq!(r.activated.alg, Alg::ES256K);
    assert_eq!(r.retired.unwrap().kid, p1.kid);
    let ev = f.sink.events();
    assert_eq!(ev.len(), events_before + 2);
    assert!(matches!(ev[events_before], Event::KeyGenerated { .. }));
    assert!(matches!(ev[events_before + 1], Event::KeyActivated { .. }));
    // p2 is next.
    let r = f.reg.rotate(&officer(), KeyRole::Root, None, None).unwrap();
    assert_eq!(r.activated.kid, p2.kid);
    // No pending key left: generate one with the active key's algorithm.
    let r = f.reg.rotate(&officer(), KeyRole::Root, None, None).unwrap();
    assert!(r.generated);
    assert_eq!(r.activated.alg, Alg::EdDSA);
    assert_ne!(r.activated.kid, p2.kid);
}

#[test]
fn rotate_refusals() {
    let f = fx();
    // Role without any key and no algorithm named.
    refused(&f, ErrorCode::SchemaInvalid, || {
        f.reg.rotate(&officer(), KeyRole::GrantSigning, None, None)
    });
    let g = new_key(&f, KeyRole::GrantSigning, Alg::EdDSA);
    let r = new_key(&f, KeyRole::Root, Alg::EdDSA);
    refused(&f, ErrorCode::KeyRoleMismatch, || {
        f.reg
            .rotate(&officer(), KeyRole::GrantSigning, Some(&r.kid), None)
    });
    refused(&f, ErrorCode::KeyNotFound, || {
        f.reg
            .rotate(&officer(), KeyRole::GrantSigning, Some("nope"), None)
    });
    refused(&f, ErrorCode::SchemaInvalid, || {
        f.reg.rotate(
            &officer(),
            KeyRole::GrantSigning,
            Some(&g.kid),
            Some(Alg::EdDSA),
        )
    });
    f.reg.activate(&officer(), &g.kid).unwrap();
    refused(&f, ErrorCode::KeyStateInvalid, || {
        f.reg
            .rotate(&officer(), KeyRole::GrantSigning, Some(&g.kid), None)
    });
    // Generating an algorithm the role may not use.
    refused(&f, ErrorCode::AlgorithmUnsupported, || {
        f.reg
            .rotate(&officer(), KeyRole::GrantSigning, None, Some(Alg::ES256))
    });
}

#[test]
fn retire_stops_signing_without_successor() {
    let f = fx();
    let a = new_key(&f, KeyRole::Audit, Alg::EdDSA);
    refused(&f, ErrorCode::KeyStateInvalid, || {
        f.reg.retire(&officer(), &a.kid)
    });
    f.reg.activate(&officer(), &a.kid).unwrap();
    let r = f.reg.retire(&officer(), &a.kid).unwrap();
    assert_eq!(r.state, KeyState::Retired);
    assert_eq!(f.reg.active_kid(KeyRole::Audit).unwrap(), None);
    assert_eq!(
        f.sink.events().last().unwrap(),
        &Event::KeyRetired {
            kid: a.kid.clone(),
            role: "audit".into()
        }
    );
    assert_eq!(
        f.reg.active_signer(KeyRole::Audit).err().unwrap().code,
        ErrorCode::KeyNotFound
    );
    assert_eq!(
        f.reg.published_keys(KeyRole::Audit).unwrap()[0].active,
        Some(true)
    );
}

#[test]
fn revoke_from_every_live_state_and_refusals() {
    let f = fx();
    let pending = new_key(&f, KeyRole::GrantSigning, Alg::EdDSA);
    let active = new_key(&f, KeyRole::GrantSigning, Alg::EdDSA);
    let retired = new_key(&f, KeyRole::GrantSigning, Alg::EdDSA);
    f.reg.activate(&officer(), &retired.kid).unwrap();
    f.reg
        .rotate(&officer(), KeyRole::GrantSigning, Some(&active.kid), None)
        .unwrap();
    let signer = f.reg.active_signer(KeyRole::GrantSigning).unwrap();
    refused(&f, ErrorCode::SchemaInvalid, || {
        f.reg.revoke(&officer(), &active.kid, "  ")
    });
    refused(&f, ErrorCode::SchemaInvalid, || {
        f.reg.revoke(&officer(), &active.kid, "bad\ncontrol")
    });
    refused(&f, ErrorCode::KeyNotFound, || {
        f.reg.revoke(&officer(), "nope", "x")
    });
    for (rec, was) in [
        (&pending, KeyState::Pending),
        (&active, KeyState::Active),
        (&retired, KeyState::Retired),
    ] {
        assert_eq!(f.reg.get(&rec.kid).unwrap().state, was);
        let r = f
            .reg
            .revoke(&officer(), &rec.kid, "key compromise suspected")
            .unwrap();
        assert_eq!(r.state, KeyState::Revoked);
        assert_eq!(r.reason.as_deref(), Some("key compromise suspected"));
        assert_eq!(r.revoked_at.as_deref(), Some("2026-03-01T00:00:00Z"));
        assert_eq!(
            f.sink.events().last().unwrap(),
            &Event::KeyRevoked {
                kid: rec.kid.clone(),
                role: "grant-signing".into(),
                reason: "key compromise suspected".into()
            }
        );
        // Revoking twice is refused.
        refused(&f, ErrorCode::KeyRevoked, || {
            f.reg.revoke(&officer(), &rec.kid, "again")
        });
    }
    // The revoked active key no longer signs: the role has no active key, and a signer handed
    // out earlier refuses too.
    assert_eq!(f.reg.active_kid(KeyRole::GrantSigning).unwrap(), None);
    assert_eq!(
        f.reg
            .active_signer(KeyRole::GrantSigning)
            .err()
            .unwrap()
            .code,
        ErrorCode::KeyNotFound
    );
    assert_eq!(
        signer.sign_digest(&[0u8; 32]).unwrap_err().code,
        ErrorCode::KeyRevoked
    );
    // All three published active:false at once.
    let published = f.reg.published_keys(KeyRole::GrantSigning).unwrap();
    assert_eq!(published.len(), 3);
    assert!(published.iter().all(|k| k.active == Some(false)));
    // After an emergency revocation a standby key can be activated directly.
    let standby = new_key(&f, KeyRole::GrantSigning, Alg::ES256K);
    f.reg.activate(&officer(), &standby.kid).unwrap();
}

#[test]
fn destruction_lifecycle() {
    let f = fx();
    let k = new_key(&f, KeyRole::Root, Alg::ES256);
    f.reg.activate(&officer(), &k.kid).unwrap();
    let oid = k.object_id_bytes().unwrap();
    // An active (or pending, or retired) key cannot be scheduled: revoke first.
    let e = refused(&f, ErrorCode::KeyStateInvalid, || {
        f.reg
            .schedule_destroy(&officer(), &k.kid, DEFAULT_DESTROY_WAIT)
    });
    assert!(e.message.contains("revoke"), "{e}");
    refused(&f, ErrorCode::KeyNotFound, || {
        f.reg
            .schedule_destroy(&officer(), "nope", DEFAULT_DESTROY_WAIT)
    });
    refused(&f, ErrorCode::KeyStateInvalid, || {
        f.reg.cancel_destroy(&officer(), &k.kid)
    });
    f.reg.revoke(&officer(), &k.kid, "decommissioned").unwrap();
    refused(&f, ErrorCode::KeyStateInvalid, || {
        f.reg.cancel_destroy(&officer(), &k.kid)
    });
    refused(&f, ErrorCode::SchemaInvalid, || {
        f.reg
            .schedule_destroy(&officer(), &k.kid, MAX_DESTROY_WAIT + DAY)
    });

    let s = f
        .reg
        .schedule_destroy(&officer(), &k.kid, DEFAULT_DESTROY_WAIT)
        .unwrap();
    assert_eq!(s.destroy_after.as_deref(), Some("2026-03-31T00:00:00Z"));
    assert_eq!(s.state, KeyState::Revoked);
    assert_eq!(
        f.sink.events().last().unwrap(),
        &Event::KeyDestroyScheduled {
            kid: k.kid.clone(),
            role: "root".into(),
            not_before: "2026-03-31T00:00:00Z".into()
        }
    );
    refused(&f, ErrorCode::KeyStateInvalid, || {
        f.reg.schedule_destroy(&officer(), &k.kid, DAY)
    });
    // Cancel during the wait, then schedule again.
    let c = f.reg.cancel_destroy(&officer(), &k.kid).unwrap();
    assert_eq!(c.destroy_after, None);
    assert!(matches!(
        f.sink.events().last().unwrap(),
        Event::KeyDestroyCancelled { .. }
    ));
    f.reg
        .schedule_destroy(&officer(), &k.kid, DEFAULT_DESTROY_WAIT)
        .unwrap();

    // Not due yet: nothing happens.
    f.clock
        .advance(DEFAULT_DESTROY_WAIT - Duration::from_secs(1));
    let before = snapshot(&f);
    let run = f.reg.run_due_destructions(&Actor::system()).unwrap();
    assert!(run.destroyed.is_empty() && run.failed.is_empty());
    assert_eq!(snapshot(&f), before);

    // Due: a token failure leaves the key revoked and scheduled, object in place; retried.
    f.clock.advance(Duration::from_secs(1));
    f.backend.fail_destroy.store(true, Ordering::SeqCst);
    let run = f.reg.run_due_destructions(&Actor::system()).unwrap();
    assert_eq!(run.failed.len(), 1);
    assert_eq!(run.failed[0].1.code, ErrorCode::HsmError);
    assert!(f.backend.objects().contains_key(&oid));
    assert_eq!(f.reg.get(&k.kid).unwrap().state, KeyState::Revoked);
    f.backend.fail_destroy.store(false, Ordering::SeqCst);

    let run = f.reg.run_due_destructions(&Actor::system()).unwrap();
    assert_eq!(run.destroyed, vec![k.kid.clone()]);
    assert!(!f.backend.objects().contains_key(&oid));
    let d = f.reg.get(&k.kid).unwrap();
    assert_eq!(d.state, KeyState::Destroyed);
    assert_eq!(d.destroyed_at.as_deref(), Some("2026-03-31T00:00:00Z"));
    let (actor, ev) = f.sink.entries().last().unwrap().clone();
    assert_eq!(actor, Actor::system());
    assert_eq!(
        ev,
        Event::KeyDestroyed {
            kid: k.kid.clone(),
            role: "root".into()
        }
    );
    // Stays listed active:false.
    assert_eq!(
        f.reg.published_keys(KeyRole::Root).unwrap()[0].active,
        Some(false)
    );
    // Nothing more to do; every further operation on it is refused.
    assert!(
        f.reg
            .run_due_destructions(&Actor::system())
            .unwrap()
            .destroyed
            .is_empty()
    );
    refused(&f, ErrorCode::KeyStateInvalid, || {
        f.reg.cancel_destroy(&officer(), &k.kid)
    });
    refused(&f, ErrorCode::KeyStateInvalid, || {
        f.reg.revoke(&officer(), &k.kid, "x")
    });
    refused(&f, ErrorCode::KeyStateInvalid, || {
        f.reg.schedule_destroy(&officer(), &k.kid, DAY)
    });
    refused(&f, ErrorCode::KeyStateInvalid, || {
        f.reg.activate(&officer(), &k.kid)
    });
}

#[test]
fn destruction_of_an_already_missing_object_completes() {
    let f = fx();
    let k = new_key(&f, KeyRole::Audit, Alg::EdDSA);
    f.reg.revoke(&officer(), &k.kid, "test").unwrap();
    f.reg
        .schedule_destroy(&officer(), &k.kid, Duration::ZERO)
        .unwrap();
    // The object vanished (e.g. crash after the token destroyed it, before the commit).
    f.backend
        .destroy(KeyRole::Audit, &k.object_id_bytes().unwrap())
        .unwrap();
    let run = f.reg.run_due_destructions(&Actor::system()).unwrap();
    assert_eq!(run.destroyed, vec![k.kid.clone()]);
    assert_eq!(f.reg.get(&k.kid).unwrap().state, KeyState::Destroyed);
}

#[test]
fn destruction_removes_token_objects_first_and_a_later_run_completes_it() {
    // Order: C_DestroyObject, then `key_destroyed` with the record in one append. An audit
    // outage (or a crash) between leaves the objects gone and the record revoked, scheduled
    // and due, with no entry; the next run finds the objects gone and completes it.
    let f = fx();
    let k = new_key(&f, KeyRole::Audit, Alg::EdDSA);
    let other = new_key(&f, KeyRole::Root, Alg::EdDSA);
    let oid = k.object_id_bytes().unwrap();
    f.reg.revoke(&officer(), &k.kid, "test").unwrap();
    f.reg.schedule_destroy(&officer(), &k.kid, DAY).unwrap();
    f.clock.advance(DAY);
    let record_before = f.reg.get(&k.kid).unwrap();
    let entries_before = f.sink.events().len();
    f.sink.fail.store(true, Ordering::SeqCst);
    let run = f.reg.run_due_destructions(&Actor::system()).unwrap();
    assert_eq!(run.failed.len(), 1);
    assert_eq!(run.failed[0].1.code, ErrorCode::AuditUnavailable);
    assert!(run.destroyed.is_empty());
    assert!(!f.backend.objects().contains_key(&oid), "objects go first");
    assert_eq!(f.reg.get(&k.kid).unwrap(), record_before);
    assert_eq!(f.sink.events().len(), entries_before);
    // Other mutations are refused by the outage as well.
    refused(&f, ErrorCode::AuditUnavailable, || {
        f.reg.revoke(&officer(), &other.kid, "x")
    });
    f.sink.fail.store(false, Ordering::SeqCst);
    // A due destruction cannot be cancelled: the record must reach `destroyed`.
    let e = refused(&f, ErrorCode::KeyStateInvalid, || {
        f.reg.cancel_destroy(&officer(), &k.kid)
    });
    assert!(e.message.contains("no longer be cancelled"), "{e}");
    let run = f.reg.run_due_destructions(&Actor::system()).unwrap();
    assert_eq!(run.destroyed, vec![k.kid.clone()]);
    assert!(run.failed.is_empty());
    assert_eq!(f.reg.get(&k.kid).unwrap().state, KeyState::Destroyed);
    let events = f.sink.events();
    assert_eq!(events.len(), entries_before + 1);
    assert_eq!(
        events.last().unwrap(),
        &Event::KeyDestroyed {
            kid: k.kid.clone(),
            role: "audit".into()
        }
    );
}

/// Which kids' records and which roles' active pointers differ between two snapshots.
fn changes(before: &Snapshot, after: &Snapshot) -> (Vec<String>, Vec<String>) {
    let old: BTreeMap<&str, &KeyRecord> =
        before.records.iter().map(|r| (r.kid.as_str(), r)).collect();
    let records = after
        .records
        .iter()
        .filter(|r| old.get(r.kid.as_str()) != Some(r))
        .map(|r| r.kid.clone())
        .collect();
    let active = after
        .active
        .iter()
        .filter(|(role, kid)| before.active.get(*role) != Some(kid))
        .map(|(role, _)| role.clone())
        .collect();
    (records, active)
}

#[test]
fn every_mutation_commits_one_entry_with_its_records() {
    let f = fx();
    let officer = officer();
    // Runs `op`; asserts it appended exactly the `events` named, changed exactly the records
    // of `kids` and the active pointers of `roles`, and that the entries are in the log.
    #[track_caller]
    fn step<T>(
        f: &Fx,
        op: impl FnOnce() -> Result<T>,
        events: impl FnOnce(&T) -> Vec<Event>,
        kids: impl FnOnce(&T) -> Vec<String>,
        roles: &[&str],
    ) -> T {
        let before = snapshot(f);
        let out = op().unwrap();
        let after = snapshot(f);
        let expected = events(&out);
        assert_eq!(after.events, before.events + expected.len());
        assert_eq!(f.sink.events()[before.events..], expected[..]);
        let (mut changed, active) = changes(&before, &after);
        let mut want = kids(&out);
        changed.sort();
        want.sort();
        assert_eq!(changed, want);
        assert_eq!(active, roles);
        out
    }
    let gen_event = |r: &KeyRecord| Event::KeyGenerated {
        kid: r.kid.clone(),
        role: r.role.as_str().into(),
        alg: r.alg.as_str().into(),
    };
    let a = step(
        &f,
        || f.reg.generate(&officer, KeyRole::Root, Alg::EdDSA),
        |r| vec![gen_event(r)],
        |r| vec![r.kid.clone()],
        &[],
    );
    step(
        &f,
        || f.reg.activate(&officer, &a.kid),
        |r| {
            vec![Event::KeyActivated {
                kid: r.kid.clone(),
                role: "root".into(),
                retired: None,
            }]
        },
        |r| vec![r.kid.clone()],
        &["root"],
    );
    let b = new_key(&f, KeyRole::Root, Alg::EdDSA);
    step(
        &f,
        || f.reg.rotate(&officer, KeyRole::Root, Some(&b.kid), None),
        |r| {
            vec![Event::KeyActivated {
                kid: b.kid.clone(),
                role: "root".into(),
                retired: r.retired.as_ref().map(|p| p.kid.clone()),
            }]
        },
        |_| vec![a.kid.clone(), b.kid.clone()],
        &["root"],
    );
    // A rotation that generates its key: two appends, each with its own record change.
    let c = step(
        &f,
        || f.reg.rotate(&officer, KeyRole::Root, None, None),
        |r| {
            vec![
                gen_event(&r.activated),
                Event::KeyActivated {
                    kid: r.activated.kid.clone(),
                    role: "root".into(),
                    retired: Some(b.kid.clone()),
                },
            ]
        },
        |r| vec![b.kid.clone(), r.activated.kid.clone()],
        &["root"],
    )
    .activated;
    step(
        &f,
        || f.reg.retire(&officer, &c.kid),
        |r| {
            vec![Event::KeyRetired {
                kid: r.kid.clone(),
                role: "root".into(),
            }]
        },
        |r| vec![r.kid.clone()],
        &["root"],
    );
    f.reg
        .activate(&officer, &new_key(&f, KeyRole::Root, Alg::EdDSA).kid)
        .unwrap();
    let d = f.reg.active_kid(KeyRole::Root).unwrap().unwrap();
    // Revoking the active key clears the active pointer in the same append.
    step(
        &f,
        || f.reg.revoke(&officer, &d, "compromised"),
        |r| {
            vec![Event::KeyRevoked {
                kid: r.kid.clone(),
                role: "root".into(),
                reason: "compromised".into(),
            }]
        },
        |r| vec![r.kid.clone()],
        &["root"],
    );
    assert_eq!(f.reg.active_kid(KeyRole::Root).unwrap(), None);
    step(
        &f,
        || f.reg.schedule_destroy(&officer, &d, DAY),
        |r| {
            vec![Event::KeyDestroyScheduled {
                kid: r.kid.clone(),
                role: "root".into(),
                not_before: r.destroy_after.clone().unwrap(),
            }]
        },
        |r| vec![r.kid.clone()],
        &[],
    );
    step(
        &f,
        || f.reg.cancel_destroy(&officer, &d),
        |r| {
            vec![Event::KeyDestroyCancelled {
                kid: r.kid.clone(),
                role: "root".into(),
            }]
        },
        |r| vec![r.kid.clone()],
        &[],
    );
    f.reg
        .schedule_destroy(&officer, &d, Duration::ZERO)
        .unwrap();
    step(
        &f,
        || f.reg.run_due_destructions(&Actor::system()),
        |_| {
            vec![Event::KeyDestroyed {
                kid: d.clone(),
                role: "root".into(),
            }]
        },
        |_| vec![d.clone()],
        &[],
    );
}

#[test]
fn a_caller_write_commits_with_the_change_or_refuses_all_of_it() {
    let f = fx();
    let a = new_key(&f, KeyRole::GrantSigning, Alg::EdDSA);
    let extra = f._store.tree("test/extra").unwrap();
    extra.insert("taken", "x").unwrap();
    let conflict = || Error::new(ErrorCode::IdempotencyConflict, "extra write refused");
    // The caller's write fails: no entry, no record change, no active pointer.
    let before = snapshot(&f);
    let mut p = f.reg.prepare_activate(&officer(), &a.kid).unwrap();
    p.writes.insert_new("test/extra", "taken", "y", conflict());
    let e = f.reg.commit(p).unwrap_err();
    assert_eq!(e.code, ErrorCode::IdempotencyConflict);
    assert_eq!(snapshot(&f), before);
    assert_eq!(extra.get("taken").unwrap().unwrap().as_ref(), b"x");
    // It succeeds: entry, records and the caller's write together.
    let mut p = f.reg.prepare_activate(&officer(), &a.kid).unwrap();
    p.writes.insert_new("test/extra", "mine", "z", conflict());
    let r = f.reg.commit(p).unwrap();
    assert_eq!(r.activated.state, KeyState::Active);
    assert_eq!(f.reg.get(&a.kid).unwrap(), r.activated);
    assert_eq!(extra.get("mine").unwrap().unwrap().as_ref(), b"z");
    assert_eq!(f.sink.events().len(), before.events + 1);
    // A prepared change that is dropped changes nothing and releases the lock.
    let b = new_key(&f, KeyRole::GrantSigning, Alg::EdDSA);
    let before = snapshot(&f);
    drop(f.reg.prepare_revoke(&officer(), &b.kid, "x").unwrap());
    assert_eq!(snapshot(&f), before);
    f.reg.revoke(&officer(), &b.kid, "x").unwrap();
}

#[test]
fn rotation_that_generates_keeps_its_key_pending_when_the_switch_fails() {
    let f = fx();
    let a = new_key(&f, KeyRole::Root, Alg::EdDSA);
    f.reg.activate(&officer(), &a.kid).unwrap();
    f._store
        .tree("test/extra")
        .unwrap()
        .insert("taken", "x")
        .unwrap();
    let n = f.sink.events().len();
    let mut p = f
        .reg
        .prepare_rotate(&officer(), KeyRole::Root, None, None)
        .unwrap();
    // The generated key is already registered (its own append), the switch is not.
    let generated = p.outcome.activated.kid.clone();
    assert!(p.outcome.generated);
    assert_eq!(f.reg.get(&generated).unwrap().state, KeyState::Pending);
    assert_eq!(f.sink.events().len(), n + 1);
    p.writes.insert_new(
        "test/extra",
        "taken",
        "y",
        Error::new(ErrorCode::Conflict, "extra"),
    );
    assert_eq!(f.reg.commit(p).unwrap_err().message, "extra");
    assert_eq!(f.reg.get(&generated).unwrap().state, KeyState::Pending);
    assert_eq!(
        f.reg.active_kid(KeyRole::Root).unwrap(),
        Some(a.kid.clone())
    );
    assert_eq!(f.sink.events().len(), n + 1);
    // A retry (as after a crash between the two appends) picks that key, generating none.
    let objects = f.backend.objects().len();
    let r = f.reg.rotate(&officer(), KeyRole::Root, None, None).unwrap();
    assert_eq!(
        (r.activated.kid.as_str(), r.generated),
        (generated.as_str(), false)
    );
    assert_eq!(f.backend.objects().len(), objects);
    assert_eq!(f.sink.events().len(), n + 2);
}

#[test]
fn audit_outage_changes_nothing_for_any_mutation() {
    let f = fx();
    let o = officer();
    let active = new_key(&f, KeyRole::GrantSigning, Alg::EdDSA);
    f.reg.activate(&o, &active.kid).unwrap();
    let pending = new_key(&f, KeyRole::GrantSigning, Alg::EdDSA);
    let root = new_key(&f, KeyRole::Root, Alg::EdDSA);
    let revoked = new_key(&f, KeyRole::Audit, Alg::EdDSA);
    f.reg.revoke(&o, &revoked.kid, "x").unwrap();
    let scheduled = new_key(&f, KeyRole::Audit, Alg::EdDSA);
    f.reg.revoke(&o, &scheduled.kid, "x").unwrap();
    f.reg.schedule_destroy(&o, &scheduled.kid, DAY).unwrap();
    f.sink.fail.store(true, Ordering::SeqCst);
    let down = ErrorCode::AuditUnavailable;
    // `refused` compares records, active pointers, token objects and entries.
    refused(&f, down, || f.reg.generate(&o, KeyRole::Root, Alg::EdDSA));
    refused(&f, down, || f.reg.activate(&o, &root.kid));
    refused(&f, down, || {
        f.reg
            .rotate(&o, KeyRole::GrantSigning, Some(&pending.kid), None)
    });
    // Generating rotation: the new objects are destroyed again.
    refused(&f, down, || {
        f.reg.rotate(&o, KeyRole::Audit, None, Some(Alg::EdDSA))
    });
    refused(&f, down, || f.reg.retire(&o, &active.kid));
    refused(&f, down, || f.reg.revoke(&o, &active.kid, "x"));
    refused(&f, down, || f.reg.schedule_destroy(&o, &revoked.kid, DAY));
    refused(&f, down, || f.reg.cancel_destroy(&o, &scheduled.kid));
    // The signing key still signs.
    let signer = f.reg.active_signer(KeyRole::GrantSigning).unwrap();
    verify_sig(&active, signer.as_ref());
}

/// Releases a prepared change's lock at once and returns its commit, to run later: as if
/// another change slipped in between.
fn stale_commit<T>(p: Prepared<T>) -> impl FnOnce(&Fx) -> Result<u64> {
    let Prepared {
        actor,
        event,
        writes,
        guard,
        ..
    } = p;
    drop(guard);
    move |f: &Fx| f.sink.append(&actor, event, writes).wait()
}

#[test]
fn a_concurrent_change_refuses_the_stale_commit_with_conflict() {
    // The lock serialises changes in one process; the conditional writes are the second
    // line and make a stale change harmless. Simulate a change that slipped in between by
    // releasing a prepared change's lock and committing it after another change.
    let f = fx();
    let o = officer();
    // A record changed: revoke prepared on the active key, which a rotation then retires.
    let a = new_key(&f, KeyRole::Root, Alg::EdDSA);
    f.reg.activate(&o, &a.kid).unwrap();
    let b = new_key(&f, KeyRole::Root, Alg::EdDSA);
    let commit = stale_commit(f.reg.prepare_revoke(&o, &a.kid, "x").unwrap());
    f.reg.rotate(&o, KeyRole::Root, Some(&b.kid), None).unwrap();
    let before = snapshot(&f);
    let e = commit(&f).unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains(&a.kid), "{e}");
    assert_eq!(snapshot(&f), before);
    // Only the active pointer changed: the activated key's record is as read.
    let c = new_key(&f, KeyRole::Audit, Alg::EdDSA);
    let d = new_key(&f, KeyRole::Audit, Alg::EdDSA);
    let commit = stale_commit(f.reg.prepare_activate(&o, &c.kid).unwrap());
    f.reg.activate(&o, &d.kid).unwrap();
    let before = snapshot(&f);
    let e = commit(&f).unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains("active key of role audit"), "{e}");
    assert_eq!(snapshot(&f), before);
    // Removing the active pointer checks it too: retire prepared, then the pointer moves
    // (written directly: no registry operation moves it without touching the record).
    let commit = stale_commit(f.reg.prepare_retire(&o, &d.kid).unwrap());
    f.reg.active.insert("audit", c.kid.as_bytes()).unwrap();
    let before = snapshot(&f);
    let e = commit(&f).unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert_eq!(snapshot(&f), before);
    f.reg.active.insert("audit", d.kid.as_bytes()).unwrap();
    // A record that must not exist yet (a second registration of one kid).
    let before = snapshot(&f);
    let raw = f.reg.stored(&d.kid).unwrap().raw;
    let mut again = f.reg.get(&d.kid).unwrap();
    again.state = KeyState::Pending;
    let plan = Plan {
        records: vec![(None, again)],
        active: None,
    };
    let event = Event::KeyGenerated {
        kid: d.kid.clone(),
        role: "audit".into(),
        alg: "EdDSA".into(),
    };
    let e = f
        .sink
        .append(&o, event, plan.writes().unwrap())
        .wait()
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert_eq!(f.reg.stored(&d.kid).unwrap().raw, raw);
    assert_eq!(snapshot(&f), before);
}

#[test]
fn a_prepared_change_holds_the_lock_until_committed() {
    let f = Arc::new(fx());
    let a = new_key(&f, KeyRole::Root, Alg::EdDSA);
    let p = f.reg.prepare_revoke(&officer(), &a.kid, "x").unwrap();
    let objects = f.backend.objects().len();
    let (tx, rx) = std::sync::mpsc::channel();
    let f2 = f.clone();
    let other = std::thread::spawn(move || {
        let r = f2.reg.generate(&officer(), KeyRole::Root, Alg::EdDSA);
        tx.send(()).unwrap();
        r
    });
    // The other change cannot start (it would generate a token object) while `p` is held.
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "a change ran while a prepared change held the lock"
    );
    assert_eq!(f.backend.objects().len(), objects);
    f.reg.commit(p).unwrap();
    other.join().unwrap().unwrap();
    assert_eq!(f.backend.objects().len(), objects + 1);
}

#[test]
fn deprecation_across_the_effective_date() {
    let f = fx_with(AlgorithmPolicy::from_toml_str(DEPRECATING_ES256K).unwrap());
    f.clock.set(t("2026-05-31T23:00:00Z"));
    let k1 = new_key(&f, KeyRole::GrantSigning, Alg::ES256K);
    let k2 = new_key(&f, KeyRole::GrantSigning, Alg::ES256K);
    let ed = new_key(&f, KeyRole::GrantSigning, Alg::EdDSA);
    f.reg.activate(&officer(), &k1.kid).unwrap();
    let held = f.reg.active_signer(KeyRole::GrantSigning).unwrap();
    verify_sig(&k1, held.as_ref());
    assert!(
        f.reg
            .published_keys(KeyRole::GrantSigning)
            .unwrap()
            .iter()
            .all(|k| k.active == Some(true))
    );

    // Cross the effective date with the same registry and policy objects.
    f.clock.set(t("2026-06-01T00:00:00Z"));
    assert_eq!(
        held.sign_digest(&[0u8; 32]).unwrap_err().code,
        ErrorCode::AlgorithmDeprecated
    );
    assert_eq!(
        f.reg
            .active_signer(KeyRole::GrantSigning)
            .err()
            .unwrap()
            .code,
        ErrorCode::AlgorithmDeprecated
    );
    let published: BTreeMap<String, Option<bool>> = f
        .reg
        .published_keys(KeyRole::GrantSigning)
        .unwrap()
        .into_iter()
        .map(|k| (k.kid, k.active))
        .collect();
    assert_eq!(published[&k1.kid], Some(false));
    assert_eq!(published[&k2.kid], Some(false));
    assert_eq!(published[&ed.kid], Some(true));
    // A pending ES256K key cannot be rotated in; rotation skips it for the EdDSA one.
    refused(&f, ErrorCode::AlgorithmDeprecated, || {
        f.reg
            .rotate(&officer(), KeyRole::GrantSigning, Some(&k2.kid), None)
    });
    let r = f
        .reg
        .rotate(&officer(), KeyRole::GrantSigning, None, None)
        .unwrap();
    assert_eq!(r.activated.kid, ed.kid);
    let signer = f.reg.active_signer(KeyRole::GrantSigning).unwrap();
    verify_sig(&ed, signer.as_ref());
    // The verifier side of the same policy.
    let p = f.reg.policy();
    let now = f.clock.now();
    assert!(
        p.check_artifact(Alg::ES256K, Some(t("2026-05-31T23:59:59Z")), now)
            .is_ok()
    );
    assert_eq!(
        p.check_artifact(Alg::ES256K, Some(now), now)
            .unwrap_err()
            .code,
        ErrorCode::AlgorithmDeprecated
    );
}

#[test]
fn active_signer_is_cached_per_key() {
    let f = fx();
    let a = new_key(&f, KeyRole::GrantSigning, Alg::EdDSA);
    f.reg.activate(&officer(), &a.kid).unwrap();
    for _ in 0..3 {
        verify_sig(
            &a,
            f.reg.active_signer(KeyRole::GrantSigning).unwrap().as_ref(),
        );
    }
    assert_eq!(f.backend.signer_loads.load(Ordering::SeqCst), 1);
    let b = new_key(&f, KeyRole::GrantSigning, Alg::EdDSA);
    f.reg
        .rotate(&officer(), KeyRole::GrantSigning, Some(&b.kid), None)
        .unwrap();
    verify_sig(
        &b,
        f.reg.active_signer(KeyRole::GrantSigning).unwrap().as_ref(),
    );
    verify_sig(
        &b,
        f.reg.active_signer(KeyRole::GrantSigning).unwrap().as_ref(),
    );
    assert_eq!(f.backend.signer_loads.load(Ordering::SeqCst), 2);
}

#[test]
fn state_survives_a_new_registry_on_the_same_store() {
    let f = fx();
    let a = new_key(&f, KeyRole::Root, Alg::EdDSA);
    f.reg.activate(&officer(), &a.kid).unwrap();
    let again = KeyRegistry::new(
        &f._store,
        f.backend.clone(),
        f.sink.clone(),
        f.clock.clone(),
        Arc::new(AlgorithmPolicy::builtin().unwrap()),
    )
    .unwrap();
    assert_eq!(again.list().unwrap(), f.reg.list().unwrap());
    assert_eq!(again.active_signer(KeyRole::Root).unwrap().kid(), a.kid);
}

#[test]
fn checkpoint_signer_is_the_active_audit_key_and_refuses_after_rotation() {
    use crate::audit::{Checkpoint, Vkey, verify_checkpoint};
    use crate::keys::CheckpointKeys;
    let f = fx();
    let origin = "pa.t/audit";
    assert_eq!(
        f.reg.checkpoint_signer(origin).err().unwrap().code,
        ErrorCode::AuditKeyMissing
    );
    // A pending audit key does not sign checkpoints either.
    let a = new_key(&f, KeyRole::Audit, Alg::EdDSA);
    assert_eq!(
        f.reg.checkpoint_signer(origin).err().unwrap().code,
        ErrorCode::AuditKeyMissing
    );
    f.reg.activate(&officer(), &a.kid).unwrap();
    let s = f.reg.checkpoint_signer(origin).unwrap();
    assert_eq!(s.key_name(), origin);
    // The vkey follows from the registered public JWK alone.
    let x = |jwk: &crate::jwk::Jwk| -> [u8; 32] {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&jwk.x)
            .unwrap()
            .try_into()
            .unwrap()
    };
    let registered = x(&a.public_jwk);
    assert_eq!(s.public_key(), registered);
    let cp = Checkpoint {
        origin: origin.into(),
        size: 1,
        root: [9; 32],
    };
    let note = cp.sign(s.as_ref()).unwrap();
    verify_checkpoint(&note, &Vkey::ed25519(origin, registered), &[], 0).unwrap();
    // Rotation: the signer handed out before refuses; a new one is the new key.
    let rot = f
        .reg
        .rotate(&officer(), KeyRole::Audit, None, Some(Alg::EdDSA))
        .unwrap();
    assert_eq!(
        cp.sign(s.as_ref()).unwrap_err().code,
        ErrorCode::KeyStateInvalid
    );
    let s2 = f.reg.checkpoint_signer(origin).unwrap();
    assert_ne!(s2.public_key(), registered);
    assert_eq!(s2.public_key(), x(&rot.activated.public_jwk));
    // Revoked: no checkpoint key at all.
    f.reg
        .revoke(&officer(), &rot.activated.kid, "test")
        .unwrap();
    assert_eq!(
        cp.sign(s2.as_ref()).unwrap_err().code,
        ErrorCode::KeyRevoked
    );
    assert_eq!(
        f.reg.checkpoint_signer(origin).err().unwrap().code,
        ErrorCode::AuditKeyMissing
    );
}
