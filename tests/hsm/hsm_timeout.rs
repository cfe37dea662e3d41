//! Timeouts of calls that really hang: SoftHSM2 reads the token's `generation` file under a
//! blocking `fcntl` lock on every key access, so holding open-file-description write locks
//! on the token's files (which conflict with the library's locks even in this process) makes
//! `C_Sign` block until they are released.
//!
//! Checked for both ways a call runs (see `mpcp_pa::hsm::bounded`):
//! - inline under `bounded()`: the async caller is freed at the call's deadline with
//!   HSM_TIMEOUT while the call still hangs; the hung call keeps its session (pool of one:
//!   the next caller times out waiting for a session); once it returns, late, it reports
//!   HSM_TIMEOUT, its session is closed (not reused) and the next call succeeds;
//! - handed off (a plain blocking caller): the caller is freed at the deadline and the
//!   session of the abandoned call is closed once the call returns.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::kit::child::isolated_alone;
use crate::kit::hsm::{dev_config_edited, other_handle, slot_of};
use mpcp_pa::ErrorCode;
use mpcp_pa::crypto::Alg;
use mpcp_pa::hsm::dev::SOFTHSM2_MODULE;
use mpcp_pa::hsm::{CallWatch, HsmBackend, HsmConfig, bounded};
use mpcp_pa::keys::{KeyBackend, KeyRole};
use mpcp_pa::signer::DigestSigner;

const TIMEOUT: Duration = Duration::from_millis(400);

/// Write-locks every file of every token until the guard is dropped, or at the latest after
/// `SAFETY_RELEASE` (so that a regression fails the test instead of hanging it).
fn hang_tokens(dir: &Path) -> Hang {
    let mut held = Vec::new();
    let files = std::fs::read_dir(dir.join("tokens"))
        .unwrap()
        .flat_map(|t| std::fs::read_dir(t.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path());
    for path in files {
        let f = File::options().read(true).write(true).open(&path).unwrap();
        // SAFETY: a zeroed `flock` is a valid value; the fd is open for the call.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as _;
        fl.l_whence = libc::SEEK_SET as _;
        let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        assert_eq!(rc, 0, "lock {}", path.display());
        held.push(f);
    }
    assert!(!held.is_empty());
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let _ = rx.recv_timeout(SAFETY_RELEASE);
        drop(held);
    });
    Hang(Some((tx, thread)))
}

const SAFETY_RELEASE: Duration = Duration::from_secs(8);

struct Hang(Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>);

impl Drop for Hang {
    fn drop(&mut self) {
        if let Some((tx, thread)) = self.0.take() {
            let _ = tx.send(());
            thread.join().unwrap();
        }
    }
}

/// Handles of the sessions this process has open on the grant-signing token (SoftHSM2 never
/// reuses handle numbers).
fn open_sessions() -> BTreeSet<u64> {
    let slot = slot_of(&other_handle(), "mpcp-grant-signing").id();
    let raw = unsafe { cryptoki_sys::Pkcs11::new(SOFTHSM2_MODULE) }.unwrap();
    (1..=20_000u64)
        .filter(|h| {
            let mut info = cryptoki_sys::CK_SESSION_INFO::default();
            let rv = unsafe { raw.C_GetSessionInfo(*h as _, &mut info) };
            rv == cryptoki_sys::CKR_OK && info.slotID == slot
        })
        .collect()
}

/// A backend with one session per token and a short timeout, and an EdDSA grant signer.
fn setup(dir: &Path) -> (HsmBackend, Arc<dyn DigestSigner>) {
    let path = dev_config_edited(dir, |t| {
        t.replace("pool_size = 4", "pool_size = 1").replace(
            "call_timeout_ms = 5000",
            &format!("call_timeout_ms = {}", TIMEOUT.as_millis()),
        )
    });
    let hsm = HsmBackend::open(&HsmConfig::load(&path).unwrap()).unwrap();
    let k = hsm
        .generate(KeyRole::GrantSigning, Alg::EdDSA, "timeout")
        .unwrap();
    let s = hsm
        .signer(KeyRole::GrantSigning, Alg::EdDSA, &k.object_id, "kid")
        .unwrap();
    sign_ok(&s, 0);
    (hsm, s)
}

fn sign_ok(s: &Arc<dyn DigestSigner>, i: u8) {
    let d = [i; 32];
    let sig = s
        .sign_digest(&d)
        .unwrap_or_else(|e| panic!("sign {i}: {e}"));
    s.public_key().verify_digest(&d, &sig.bytes).unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn inline_call_frees_the_async_caller_and_its_session_is_discarded() {
    isolated_alone(
        module_path!(),
        "inline_call_frees_the_async_caller_and_its_session_is_discarded",
        |dir| {
            let (_hsm, signer) = setup(dir);
            let before = open_sessions();
            assert_eq!(before.len(), 1, "one pooled session: {before:?}");
            let rt = runtime();
            let lock = hang_tokens(dir);

            let (late_tx, late_rx) = std::sync::mpsc::channel();
            let s = signer.clone();
            let started = Instant::now();
            let e = rt
                .block_on(bounded(move || {
                    let on_thread = std::thread::current().id();
                    let first = s.sign_digest(&[1; 32]);
                    // After the caller was freed: the call's own outcome, and a second call.
                    let second = s.sign_digest(&[2; 32]);
                    let _ = late_tx.send((on_thread, first, second));
                    Ok(())
                }))
                .unwrap_err();
            let waited = started.elapsed();
            assert_eq!(e.code, ErrorCode::HsmTimeout, "{e}");
            assert!(e.message.contains("caller stopped waiting"), "{e}");
            assert!(waited >= TIMEOUT, "freed before the deadline: {waited:?}");
            assert!(waited < TIMEOUT * 5, "freed late: {waited:?}");

            // The hung call still holds the only session: the next caller times out waiting.
            let e = rt
                .block_on(bounded({
                    let s = signer.clone();
                    move || s.sign_digest(&[3; 32])
                }))
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::HsmTimeout, "{e}");
            assert!(
                late_rx.try_recv().is_err(),
                "the first call is still hanging"
            );

            drop(lock);
            let (thread, first, second) = late_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_ne!(thread, std::thread::current().id());
            let first = first.unwrap_err();
            assert_eq!(first.code, ErrorCode::HsmTimeout, "{first}");
            assert!(first.message.contains("returned late"), "{first}");
            let second = second.unwrap_err();
            assert_eq!(second.code, ErrorCode::HsmTimeout, "{second}");
            assert!(second.message.contains("not started"), "{second}");

            // The overrun session was closed, not reused; signing goes on with a new one.
            rt.block_on(bounded({
                let s = signer.clone();
                move || {
                    sign_ok(&s, 4);
                    Ok(())
                }
            }))
            .unwrap();
            let after = open_sessions();
            assert_eq!(after.len(), 1, "{after:?}");
            assert!(before.is_disjoint(&after), "{before:?} reused in {after:?}");
        },
    );
}

#[test]
fn sync_caller_under_a_watch_gets_the_timeout_when_the_call_returns() {
    isolated_alone(
        module_path!(),
        "sync_caller_under_a_watch_gets_the_timeout_when_the_call_returns",
        |dir| {
            let (_hsm, signer) = setup(dir);
            let lock = hang_tokens(dir);
            let s = signer.clone();
            let t = std::thread::spawn(move || CallWatch::new().run(|| s.sign_digest(&[1; 32])));
            std::thread::sleep(TIMEOUT + Duration::from_millis(200));
            assert!(
                !t.is_finished(),
                "nobody can free an inline caller but its watcher"
            );
            drop(lock);
            let e = t.join().unwrap().unwrap_err();
            assert_eq!(e.code, ErrorCode::HsmTimeout, "{e}");
            assert!(e.message.contains("returned late"), "{e}");
            sign_ok(&signer, 2);
        },
    );
}

#[test]
fn handed_off_call_frees_the_caller_and_its_session_is_discarded() {
    isolated_alone(
        module_path!(),
        "handed_off_call_frees_the_caller_and_its_session_is_discarded",
        |dir| {
            let (_hsm, signer) = setup(dir);
            let before = open_sessions();
            let lock = hang_tokens(dir);
            let started = Instant::now();
            let e = signer.sign_digest(&[1; 32]).unwrap_err();
            let waited = started.elapsed();
            assert_eq!(e.code, ErrorCode::HsmTimeout, "{e}");
            assert!(e.message.contains("abandoned"), "{e}");
            assert!(waited >= TIMEOUT && waited < TIMEOUT * 5, "{waited:?}");
            // Still hanging, it keeps the only session.
            let e = signer.sign_digest(&[2; 32]).unwrap_err();
            assert_eq!(e.code, ErrorCode::HsmTimeout, "{e}");
            assert!(e.message.contains("no free HSM session"), "{e}");

            drop(lock);
            // The next call waits for the abandoned one to return and its slot to free up.
            sign_ok(&signer, 3);
            let after = open_sessions();
            assert_eq!(after.len(), 1, "{after:?}");
            assert!(before.is_disjoint(&after), "{before:?} reused in {after:?}");
        },
    );
}
