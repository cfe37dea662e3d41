//! End-to-end tests of the key registry and key-set publication on real SoftHSM2 tokens
//! (`crate::hsm`), each in its own child process with its own token directory and store.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::kit::child::isolated;
use crate::kit::hsm::{dev_backend, other_handle, slot_of, user_pin};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use mpcp_pa::algorithms::AlgorithmPolicy;
use mpcp_pa::audit::{AppendTicket, AuditConfig, AuditLog, AuditSink, Entry, SideWrites};
use mpcp_pa::canonical::{Domain, parse_strict, signing_digest};
use mpcp_pa::cli::keys::{KeysCommand, KeysContext, run};
use mpcp_pa::clock::{Clock, DEFAULT_DRIFT, FixedClock, SystemClock, parse_rfc3339};
use mpcp_pa::crypto::{Alg, AlgorithmGate};
use mpcp_pa::error::{Error, ErrorCode, Result};
use mpcp_pa::events::{Actor, Event, EventSink};
use mpcp_pa::hsm::HsmBackend;
use mpcp_pa::hsm::dev::token_label;
use mpcp_pa::jwk::KeySet;
use mpcp_pa::keys::keyset::{
    DEFAULT_SIGNED_LIFETIME, build_key_set, build_root_key_set, sign_key_set,
    verify_signed_key_set, verify_signed_key_set_gated,
};
use mpcp_pa::keys::{ActiveKeys, KeyBackend, KeyRegistry, KeyRole, KeyState};
use mpcp_pa::store::Store;

/// The audit log of the test's store, switchable to failing (audit outage).
struct Sink {
    log: AuditLog,
    fail: AtomicBool,
}

fn outage() -> Error {
    Error::new(ErrorCode::AuditUnavailable, "audit log down (test)")
}

impl Sink {
    fn open(store: &Store) -> Sink {
        let log = AuditLog::open(
            store,
            AuditConfig::new("pa.test/audit"),
            Arc::new(SystemClock),
        );
        Sink {
            log: log.unwrap(),
            fail: AtomicBool::new(false),
        }
    }

    /// Every entry: who and what.
    fn events(&self) -> Vec<(Actor, Event)> {
        let raw = self.log.entries(0, self.log.size()).unwrap();
        raw.iter()
            .map(|r| {
                let e: Entry = serde_json::from_slice(r).unwrap();
                (e.actor, e.event)
            })
            .collect()
    }
}

impl EventSink for Sink {
    fn record(&self, actor: &Actor, event: Event) -> Result<u64> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(outage());
        }
        self.log.record(actor, event)
    }
}

impl AuditSink for Sink {
    fn append(&self, actor: &Actor, event: Event, writes: SideWrites) -> AppendTicket {
        if self.fail.load(Ordering::SeqCst) {
            return AppendTicket::ready(Err(outage()));
        }
        self.log.append(actor, event, writes)
    }
}

struct Fx {
    reg: KeyRegistry,
    hsm: HsmBackend,
    sink: Arc<Sink>,
    clock: Arc<FixedClock>,
    store: Store,
    policy: Arc<AlgorithmPolicy>,
}

fn t(s: &str) -> time::OffsetDateTime {
    parse_rfc3339(s, "t").unwrap()
}

fn fx(dir: &Path, policy: AlgorithmPolicy) -> Fx {
    let (hsm, _) = dev_backend(dir);
    let store = Store::open(&dir.join("store")).unwrap();
    let sink = Arc::new(Sink::open(&store));
    let clock = Arc::new(FixedClock::new(t("2026-03-01T00:00:00Z")));
    let policy = Arc::new(policy);
    let reg = KeyRegistry::new(
        &store,
        Arc::new(hsm.clone()),
        sink.clone(),
        clock.clone(),
        policy.clone(),
    )
    .unwrap();
    Fx {
        reg,
        hsm,
        sink,
        clock,
        store,
        policy,
    }
}

fn officer() -> Actor {
    Actor {
        name: "test:carol".into(),
        role: "security-officer".into(),
    }
}

/// Handles of every token object on `role`'s token (seen through a separate session).
fn token_objects(dir: &Path, role: KeyRole) -> Vec<ObjectHandle> {
    let p = other_handle();
    let slot = slot_of(&p, &token_label(role));
    let s = p.open_ro_session(slot).unwrap();
    let pin = AuthPin::new(user_pin(dir, role.as_str()).into());
    // Another session of this process may already be logged in.
    let _ = s.login(UserType::User, Some(&pin));
    s.find_objects(&[Attribute::Token(true)]).unwrap()
}

fn objects_with_id(dir: &Path, role: KeyRole, id: &[u8]) -> usize {
    let p = other_handle();
    let slot = slot_of(&p, &token_label(role));
    let s = p.open_ro_session(slot).unwrap();
    let pin = AuthPin::new(user_pin(dir, role.as_str()).into());
    let _ = s.login(UserType::User, Some(&pin));
    s.find_objects(&[Attribute::Token(true), Attribute::Id(id.to_vec())])
        .unwrap()
        .len()
}

fn sign_and_check(reg: &KeyRegistry, role: KeyRole) {
    let signer = reg.active_signer(role).unwrap();
    let rec = reg.get(signer.kid()).unwrap();
    let d = [0x5au8; 32];
    let sig = signer.sign_digest(&d).unwrap();
    rec.public_key()
        .unwrap()
        .verify_digest(&d, &sig.bytes)
        .unwrap();
}

#[test]
fn lifecycle_on_softhsm_tokens() {
    isolated(module_path!(), "lifecycle_on_softhsm_tokens", |dir| {
        let f = fx(dir, AlgorithmPolicy::builtin().unwrap());
        let a = &officer();
        // Every role and algorithm the policy allows.
        let g1 = f
            .reg
            .generate(a, KeyRole::GrantSigning, Alg::EdDSA)
            .unwrap();
        let g2 = f
            .reg
            .generate(a, KeyRole::GrantSigning, Alg::ES256K)
            .unwrap();
        let r1 = f.reg.generate(a, KeyRole::Root, Alg::ES256).unwrap();
        let a1 = f.reg.generate(a, KeyRole::Audit, Alg::EdDSA).unwrap();
        for rec in [&g1, &g2, &r1, &a1] {
            assert_eq!(rec.state, KeyState::Pending);
            assert_eq!(
                objects_with_id(dir, rec.role, &rec.object_id_bytes().unwrap()),
                2
            );
            assert!(
                rec.label.ends_with(&format!("key-{}", rec.seq)),
                "{}",
                rec.label
            );
        }
        // ES256 may not sign grants: refused before the token is touched.
        let before = token_objects(dir, KeyRole::GrantSigning).len();
        assert_eq!(
            f.reg
                .generate(a, KeyRole::GrantSigning, Alg::ES256)
                .unwrap_err()
                .code,
            ErrorCode::AlgorithmUnsupported
        );
        assert_eq!(token_objects(dir, KeyRole::GrantSigning).len(), before);

        for rec in [&g1, &r1, &a1] {
            f.reg.activate(a, &rec.kid).unwrap();
            sign_and_check(&f.reg, rec.role);
        }
        // Rotation to the ES256K key; the old signer stops.
        let old = f.reg.active_signer(KeyRole::GrantSigning).unwrap();
        let rot = f.reg.rotate(a, KeyRole::GrantSigning, None, None).unwrap();
        assert_eq!(rot.activated.kid, g2.kid);
        assert_eq!(rot.retired.unwrap().kid, g1.kid);
        assert_eq!(
            old.sign_digest(&[0u8; 32]).unwrap_err().code,
            ErrorCode::KeyStateInvalid
        );
        sign_and_check(&f.reg, KeyRole::GrantSigning);

        // Emergency: revoke the active key; the role stops signing at once.
        f.reg.revoke(a, &g2.kid, "suspected compromise").unwrap();
        assert_eq!(
            f.reg
                .active_signer(KeyRole::GrantSigning)
                .err()
                .unwrap()
                .code,
            ErrorCode::KeyNotFound
        );
        let rot = f
            .reg
            .rotate(a, KeyRole::GrantSigning, None, Some(Alg::EdDSA))
            .unwrap();
        assert!(rot.generated && rot.retired.is_none());
        sign_and_check(&f.reg, KeyRole::GrantSigning);

        // Destruction removes both token objects after the wait.
        let id = g2.object_id_bytes().unwrap();
        f.reg
            .schedule_destroy(a, &g2.kid, Duration::from_secs(86400))
            .unwrap();
        assert!(
            f.reg
                .run_due_destructions(&Actor::system())
                .unwrap()
                .destroyed
                .is_empty()
        );
        assert_eq!(objects_with_id(dir, KeyRole::GrantSigning, &id), 2);
        f.clock.advance(Duration::from_secs(86400));
        let run = f.reg.run_due_destructions(&Actor::system()).unwrap();
        assert_eq!(run.destroyed, vec![g2.kid.clone()]);
        assert_eq!(objects_with_id(dir, KeyRole::GrantSigning, &id), 0);
        assert_eq!(f.reg.get(&g2.kid).unwrap().state, KeyState::Destroyed);
        assert_eq!(
            f.hsm
                .signer(KeyRole::GrantSigning, Alg::ES256K, &id, &g2.kid)
                .err()
                .unwrap()
                .code,
            ErrorCode::KeyNotFound
        );
        assert_eq!(
            f.reg.cancel_destroy(a, &g2.kid).unwrap_err().code,
            ErrorCode::KeyStateInvalid
        );

        // Published: g1 retired (true), g2 destroyed (false), new key active (true).
        let set = build_key_set(&f.reg).unwrap();
        assert_eq!(set.find(&g1.kid).unwrap().active, Some(true));
        assert_eq!(set.find(&g2.kid).unwrap().active, Some(false));
        assert_eq!(set.find(&rot.activated.kid).unwrap().active, Some(true));
        // Every change was audited, with its actor.
        let events = f.sink.events();
        assert!(events.iter().any(|(who, e)| who == &Actor::system()
            && matches!(e, Event::KeyDestroyed { kid, .. } if *kid == g2.kid)));
        let revoked = events.iter().find_map(|(who, e)| match e {
            Event::KeyRevoked { kid, reason, .. } if *kid == g2.kid => Some((who, reason)),
            _ => None,
        });
        assert_eq!(
            revoked,
            Some((&officer(), &"suspected compromise".to_string()))
        );
        // State lives in the store: a registry on a fresh backend sees it and signs.
        drop(f.reg);
        let again = KeyRegistry::new(
            &f.store,
            Arc::new(f.hsm.clone()),
            f.sink.clone(),
            f.clock.clone(),
            f.policy.clone(),
        )
        .unwrap();
        sign_and_check(&again, KeyRole::Root);
    });
}

#[test]
fn failed_registration_leaves_no_token_object() {
    isolated(
        module_path!(),
        "failed_registration_leaves_no_token_object",
        |dir| {
            let f = fx(dir, AlgorithmPolicy::builtin().unwrap());
            let before = token_objects(dir, KeyRole::Root).len();
            f.sink.fail.store(true, Ordering::SeqCst);
            assert_eq!(
                f.reg
                    .generate(&officer(), KeyRole::Root, Alg::ES256K)
                    .unwrap_err()
                    .code,
                ErrorCode::AuditUnavailable
            );
            assert_eq!(token_objects(dir, KeyRole::Root).len(), before);
            assert!(f.reg.list().unwrap().is_empty());
            f.sink.fail.store(false, Ordering::SeqCst);
            f.reg
                .generate(&officer(), KeyRole::Root, Alg::ES256K)
                .unwrap();
            assert_eq!(token_objects(dir, KeyRole::Root).len(), before + 2);
        },
    );
}

const DEPRECATING_ES256K: &str = r#"
implemented = "1.0"
[[deprecations]]
algorithm = "ES256K"
deprecated_in = "1.1"
effective = "2026-06-01T00:00:00Z"
[versions."1.0"]
algorithms = ["EdDSA", "ES256K", "ES256"]
[versions."1.0".roles]
grant-signing = ["EdDSA", "ES256K"]
root = ["EdDSA", "ES256K", "ES256"]
audit = ["EdDSA"]
"#;

#[test]
fn deprecation_effective_date_on_tokens() {
    isolated(
        module_path!(),
        "deprecation_effective_date_on_tokens",
        |dir| {
            let f = fx(
                dir,
                AlgorithmPolicy::from_toml_str(DEPRECATING_ES256K).unwrap(),
            );
            let a = &officer();
            f.clock.set(t("2026-05-31T23:59:00Z"));
            let k = f
                .reg
                .generate(a, KeyRole::GrantSigning, Alg::ES256K)
                .unwrap();
            let standby = f
                .reg
                .generate(a, KeyRole::GrantSigning, Alg::EdDSA)
                .unwrap();
            f.reg.activate(a, &k.kid).unwrap();
            let held = f.reg.active_signer(KeyRole::GrantSigning).unwrap();
            held.sign_digest(&[1u8; 32]).unwrap();
            f.clock.set(t("2026-06-01T00:00:00Z"));
            assert_eq!(
                held.sign_digest(&[1u8; 32]).unwrap_err().code,
                ErrorCode::AlgorithmDeprecated
            );
            assert_eq!(
                f.reg
                    .generate(a, KeyRole::GrantSigning, Alg::ES256K)
                    .unwrap_err()
                    .code,
                ErrorCode::AlgorithmDeprecated
            );
            assert_eq!(
                build_key_set(&f.reg).unwrap().find(&k.kid).unwrap().active,
                Some(false)
            );
            let rot = f.reg.rotate(a, KeyRole::GrantSigning, None, None).unwrap();
            assert_eq!(rot.activated.kid, standby.kid);
            sign_and_check(&f.reg, KeyRole::GrantSigning);
            assert!(
                f.policy
                    .check_artifact(Alg::ES256K, Some(t("2026-05-31T23:59:00Z")), f.clock.now())
                    .is_ok()
            );
        },
    );
}

#[test]
fn signed_key_set_from_the_root_token() {
    isolated(
        module_path!(),
        "signed_key_set_from_the_root_token",
        |dir| {
            let f = fx(dir, AlgorithmPolicy::builtin().unwrap());
            let a = &officer();
            for (role, alg) in [
                (KeyRole::GrantSigning, Alg::EdDSA),
                (KeyRole::GrantSigning, Alg::ES256K),
                (KeyRole::Root, Alg::ES256),
            ] {
                let k = f.reg.generate(a, role, alg).unwrap();
                if f.reg.active_kid(role).unwrap().is_none() {
                    f.reg.activate(a, &k.kid).unwrap();
                }
            }
            let root = build_root_key_set(&f.reg).unwrap();
            let signed = sign_key_set(
                &f.reg,
                f.sink.as_ref(),
                a,
                f.clock.as_ref(),
                DEFAULT_SIGNED_LIFETIME,
            )
            .unwrap();
            let digest = signing_digest(Domain::KeySet, "1.0", &signed).unwrap();
            assert!(f.sink.events().iter().any(|(_, e)| matches!(
                e,
                Event::KeySetSigned { digest: d, .. } if *d == hex::encode(digest)
            )));
            let inner =
                verify_signed_key_set(&signed, &root, f.clock.as_ref(), DEFAULT_DRIFT).unwrap();
            assert_eq!(inner, build_key_set(&f.reg).unwrap());
            let gate: Arc<dyn AlgorithmGate> = f.policy.clone();
            verify_signed_key_set_gated(
                &signed,
                &root,
                f.clock.as_ref(),
                DEFAULT_DRIFT,
                Some(gate),
            )
            .unwrap();
            // Revoking the root key: the gateway pinning it refuses the document.
            let root_kid = f.reg.active_kid(KeyRole::Root).unwrap().unwrap();
            f.reg.revoke(a, &root_kid, "rotation drill").unwrap();
            let revoked_root = build_root_key_set(&f.reg).unwrap();
            assert_eq!(
                verify_signed_key_set(&signed, &revoked_root, f.clock.as_ref(), DEFAULT_DRIFT)
                    .unwrap_err()
                    .code,
                ErrorCode::KeyRevoked
            );
            assert_eq!(
                sign_key_set(
                    &f.reg,
                    f.sink.as_ref(),
                    a,
                    f.clock.as_ref(),
                    DEFAULT_SIGNED_LIFETIME
                )
                .unwrap_err()
                .code,
                ErrorCode::KeyNotFound
            );
        },
    );
}

#[test]
fn cli_export_on_tokens() {
    isolated(module_path!(), "cli_export_on_tokens", |dir| {
        let f = fx(dir, AlgorithmPolicy::builtin().unwrap());
        let ctx = KeysContext {
            store: f.store.clone(),
            backend: Arc::new(f.hsm.clone()),
            sink: f.sink.clone(),
            clock: f.clock.clone(),
            policy: f.policy.clone(),
            actor: Actor::cli(),
        };
        let mut out = Vec::new();
        for (role, alg) in [
            (KeyRole::GrantSigning, Alg::EdDSA),
            (KeyRole::Root, Alg::EdDSA),
        ] {
            run(KeysCommand::Generate { role, alg }, &ctx, &mut out).unwrap();
            let kid = f.reg.list_role(role).unwrap()[0].kid.clone();
            run(KeysCommand::Activate { kid }, &ctx, &mut out).unwrap();
        }
        let site = dir.join("site");
        let root_file = dir.join("root.json");
        run(
            KeysCommand::Export {
                out: site.clone(),
                lifetime_hours: 2,
                root_out: Some(root_file.clone()),
            },
            &ctx,
            &mut out,
        )
        .unwrap();
        let read = |p: &Path| parse_strict(&std::fs::read(p).unwrap()).unwrap();
        let root = KeySet::from_value(&read(&root_file)).unwrap();
        let inner = verify_signed_key_set(
            &read(&site.join("mpcp-keys.signed.json")),
            &root,
            f.clock.as_ref(),
            DEFAULT_DRIFT,
        )
        .unwrap();
        assert_eq!(
            inner,
            KeySet::from_value(&read(&site.join("mpcp-keys.json"))).unwrap()
        );
        let published = f.reg.published_keys(KeyRole::GrantSigning).unwrap();
        assert_eq!(inner.keys, published);
    });
}
