//! Recovery without restarting: sessions closed, login lost, library finalised or PIN
//! changed behind the backend's back. The failing call errors with a clear code; the pool
//! re-opens sessions, logs in again, re-initialises the library as needed, and the next
//! call succeeds. Both ways a call runs are covered: inline on the caller's thread (under a
//! `CallWatch`, as the service signs) and handed off to a pool worker thread.

use std::sync::Arc;
use std::time::Duration;

use crate::kit::child::isolated_alone;
use crate::kit::hsm::{dev_backend, other_handle, slot_of, user_pin};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use mpcp_pa::ErrorCode;
use mpcp_pa::crypto::Alg;
use mpcp_pa::hsm::dev::SOFTHSM2_MODULE;
use mpcp_pa::hsm::{CallWatch, HsmBackend};
use mpcp_pa::keys::{KeyBackend, KeyRole};
use mpcp_pa::signer::DigestSigner;

fn signer(hsm: &HsmBackend, role: KeyRole, alg: Alg) -> Arc<dyn DigestSigner> {
    let k = hsm.generate(role, alg, "recovery").unwrap();
    hsm.signer(role, alg, &k.object_id, "kid").unwrap()
}

fn sign_ok(s: &Arc<dyn DigestSigner>, i: u8) {
    let d = [i; 32];
    let sig = s
        .sign_digest(&d)
        .unwrap_or_else(|e| panic!("sign {i}: {e}"));
    s.public_key().verify_digest(&d, &sig.bytes).unwrap();
}

/// Runs `f` with its HSM calls inline on this thread (as under `hsm::bounded`).
fn inline<T>(f: impl FnOnce() -> T) -> T {
    CallWatch::new().run(f)
}

/// Several sessions in the pool, so recovery has more than one to replace; two threads
/// sign inline, two hand their calls off.
fn warm(s: &Arc<dyn DigestSigner>) {
    std::thread::scope(|sc| {
        for t in 0..4u8 {
            sc.spawn(move || {
                let work = || (0..10).for_each(|i| sign_ok(s, t * 10 + i));
                if t % 2 == 0 { inline(work) } else { work() }
            });
        }
    });
}

#[test]
fn sessions_closed_elsewhere() {
    isolated_alone(module_path!(), "sessions_closed_elsewhere", |dir| {
        let (hsm, _) = dev_backend(dir);
        let grant = signer(&hsm, KeyRole::GrantSigning, Alg::ES256);
        let root = signer(&hsm, KeyRole::Root, Alg::EdDSA);
        warm(&grant);
        sign_ok(&root, 1);
        let slot = slot_of(&other_handle(), "mpcp-grant-signing");
        // C_CloseAllSessions through a raw handle on the same library.
        let raw = unsafe { cryptoki_sys::Pkcs11::new(SOFTHSM2_MODULE) }.unwrap();
        assert_eq!(
            unsafe { raw.C_CloseAllSessions(slot.id()) },
            cryptoki_sys::CKR_OK
        );

        let e = inline(|| grant.sign_digest(&[0; 32])).unwrap_err();
        assert_eq!(e.code, ErrorCode::HsmUnavailable, "{e}");
        assert!(e.message.contains("mpcp-grant-signing"), "{e}");
        // One failure for the whole pool; every later call succeeds, also concurrently.
        warm(&grant);
        for i in 0..20 {
            sign_ok(&grant, i);
        }
        // The other tokens never noticed.
        sign_ok(&root, 2);
    });
}

#[test]
fn login_lost_elsewhere() {
    isolated_alone(module_path!(), "login_lost_elsewhere", |dir| {
        let (hsm, _) = dev_backend(dir);
        let grant = signer(&hsm, KeyRole::GrantSigning, Alg::EdDSA);
        warm(&grant);
        let p = other_handle();
        let session = p
            .open_ro_session(slot_of(&p, "mpcp-grant-signing"))
            .unwrap();
        // Login state is per token and application: this logs out every pooled session.
        session.logout().unwrap();

        let e = grant.sign_digest(&[0; 32]).unwrap_err();
        assert_eq!(e.code, ErrorCode::HsmUnavailable, "{e}");
        assert!(e.message.contains("no longer logged in"), "{e}");
        warm(&grant);
    });
}

#[test]
fn library_finalized_elsewhere() {
    isolated_alone(module_path!(), "library_finalized_elsewhere", |dir| {
        let (hsm, _) = dev_backend(dir);
        let grant = signer(&hsm, KeyRole::GrantSigning, Alg::ES256K);
        let root = signer(&hsm, KeyRole::Root, Alg::EdDSA);
        warm(&grant);
        sign_ok(&root, 1);
        other_handle().finalize().unwrap();

        let e = inline(|| grant.sign_digest(&[0; 32])).unwrap_err();
        assert_eq!(e.code, ErrorCode::HsmUnavailable, "{e}");
        assert!(e.message.contains("CryptokiNotInitialized"), "{e}");
        // The library is initialised again; sessions and key handles of the old
        // generation are replaced, on every token.
        warm(&grant);
        sign_ok(&root, 2);
        let audit = signer(&hsm, KeyRole::Audit, Alg::ES256);
        sign_ok(&audit, 3);
    });
}

#[test]
fn failed_recovery_backs_off_then_recovers() {
    isolated_alone(
        module_path!(),
        "failed_recovery_backs_off_then_recovers",
        |dir| {
            let (hsm, _) = dev_backend(dir);
            let grant = signer(&hsm, KeyRole::GrantSigning, Alg::EdDSA);
            sign_ok(&grant, 1);
            let old = AuthPin::new(user_pin(dir, "grant-signing").into());
            let new = AuthPin::new("a-different-user-pin".into());
            let p = other_handle();
            let session = p
                .open_rw_session(slot_of(&p, "mpcp-grant-signing"))
                .unwrap();
            // Change the PIN behind the backend's back and drop the login.
            session.set_pin(&old, &new).unwrap();
            session.logout().unwrap();

            let e = grant.sign_digest(&[0; 32]).unwrap_err();
            assert_eq!(e.code, ErrorCode::HsmUnavailable, "{e}");
            // Recovery tries to log in with the configured PIN and fails...
            let e = inline(|| grant.sign_digest(&[0; 32])).unwrap_err();
            assert_eq!(e.code, ErrorCode::HsmPinInvalid, "{e}");
            // ...so the next calls fail fast until the backoff (100 ms first) has passed.
            let e = grant.sign_digest(&[0; 32]).unwrap_err();
            assert_eq!(e.code, ErrorCode::HsmUnavailable, "{e}");
            assert!(e.message.contains("next attempt in"), "{e}");

            session.login(UserType::User, Some(&new)).unwrap();
            session.set_pin(&new, &old).unwrap();
            session.logout().unwrap();
            std::thread::sleep(Duration::from_millis(250));
            sign_ok(&grant, 2);
            warm(&grant);
        },
    );
}
