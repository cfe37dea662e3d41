//! Concurrency: many threads signing through the pools at once (half of them inline on their
//! own thread, as the service signs under `hsm::bounded`, half handing calls off to pool
//! worker threads), with key generation and destruction (serialised inside the backend)
//! running alongside.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::kit::child::isolated_alone;
use crate::kit::hsm::dev_config_edited;
use mpcp_pa::crypto::Alg;
use mpcp_pa::hsm::{CallWatch, HsmBackend, HsmConfig};
use mpcp_pa::keys::{KeyBackend, KeyRole};
use mpcp_pa::signer::DigestSigner;

const THREADS: usize = 8;
const PER_THREAD: usize = 200;

#[test]
fn concurrent_signing_all_verifies() {
    isolated_alone(module_path!(), "concurrent_signing_all_verifies", |dir| {
        // Fewer sessions than threads, so checkout waits and session reuse are exercised.
        let path = dev_config_edited(dir, |t| t.replace("pool_size = 4", "pool_size = 3"));
        let hsm = HsmBackend::open(&HsmConfig::load(&path).unwrap()).unwrap();
        let signers: Vec<Arc<dyn DigestSigner>> = [
            (KeyRole::GrantSigning, Alg::EdDSA),
            (KeyRole::GrantSigning, Alg::ES256K),
            (KeyRole::Root, Alg::ES256),
            (KeyRole::GrantSigning, Alg::ES256),
        ]
        .into_iter()
        .map(|(role, alg)| {
            let k = hsm.generate(role, alg, &format!("stress-{alg}")).unwrap();
            hsm.signer(role, alg, &k.object_id, &format!("kid-{alg}"))
                .unwrap()
        })
        .collect();
        let verified = AtomicUsize::new(0);
        let churned = AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for t in 0..THREADS {
                let (signers, verified) = (&signers, &verified);
                sc.spawn(move || {
                    let work = || {
                        for i in 0..PER_THREAD {
                            let s = &signers[(t + i) % signers.len()];
                            let mut d = [0u8; 32];
                            d[..8].copy_from_slice(&((t * PER_THREAD + i) as u64).to_be_bytes());
                            let sig = s
                                .sign_digest(&d)
                                .unwrap_or_else(|e| panic!("thread {t} signature {i}: {e}"));
                            s.public_key()
                                .verify_digest(&d, &sig.bytes)
                                .unwrap_or_else(|e| {
                                    panic!("thread {t} signature {i} ({}): {e}", s.alg())
                                });
                            verified.fetch_add(1, Ordering::Relaxed);
                        }
                    };
                    if t % 2 == 0 {
                        CallWatch::new().run(work)
                    } else {
                        work()
                    }
                });
            }
            // Key generation and destruction alongside (SoftHSM2 2.6.1 needs them serialised).
            for g in 0..2 {
                let (hsm, churned) = (&hsm, &churned);
                sc.spawn(move || {
                    for i in 0..6 {
                        let alg = Alg::ALL[(g + i) % 3];
                        let role = if g == 0 {
                            KeyRole::GrantSigning
                        } else {
                            KeyRole::Audit
                        };
                        let k = hsm.generate(role, alg, &format!("churn-{g}-{i}")).unwrap();
                        hsm.destroy(role, &k.object_id).unwrap();
                        churned.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(verified.load(Ordering::Relaxed), THREADS * PER_THREAD);
        assert_eq!(churned.load(Ordering::Relaxed), 12);
    });
}
