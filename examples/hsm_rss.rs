//! How much resident memory SoftHSM2 keeps per signature: a development token set in a
//! temporary directory, one key, and `n` signatures, VmRSS printed at each tenth; through the
//! appliance's signer (pool, bounded call) or, with `RAW=1`, straight through cryptoki on a
//! second handle of the same library. It separates what the HSM library keeps from what the
//! service does, for `benches/soak.rs` (docs/performance.md, "Memory").
//!
//! Run: `cargo run --release --example hsm_rss -- 200000 [EdDSA|ES256]`.

use mpcp_pa::crypto::Alg;
use mpcp_pa::keys::{KeyBackend, KeyRole};
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
        / 1024.0
}
fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let alg = match std::env::args().nth(2).as_deref() {
        Some("ES256") => Alg::ES256,
        _ => Alg::EdDSA,
    };
    let dir = tempfile::tempdir().unwrap();
    let init = mpcp_pa::app::DataDir::new(dir.path()).init_dev().unwrap();
    let hsm = mpcp_pa::hsm::HsmBackend::open(&init.config).unwrap();
    let role = if alg == Alg::ES256 {
        KeyRole::Root
    } else {
        KeyRole::GrantSigning
    };
    let k = hsm.generate(role, alg, "rss").unwrap();
    let s = hsm.signer(role, alg, &k.object_id, "kid").unwrap();
    if std::env::var("RAW").is_ok() {
        // C_Sign straight through cryptoki, on a second handle of the same library.
        use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
        use cryptoki::object::{Attribute, ObjectClass};
        let p11 = Pkcs11::new(mpcp_pa::hsm::dev::SOFTHSM2_MODULE).unwrap();
        let _ = p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        let label = if alg == Alg::ES256 {
            "mpcp-root"
        } else {
            "mpcp-grant-signing"
        };
        let slot = p11
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| p11.get_token_info(*s).unwrap().label() == label)
            .unwrap();
        let session = p11.open_rw_session(slot).unwrap();
        let key = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(k.object_id.clone()),
            ])
            .unwrap()[0];
        let mech = if alg == Alg::ES256 {
            cryptoki::mechanism::Mechanism::Ecdsa
        } else {
            cryptoki::mechanism::Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
                cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
            ))
        };
        for i in 0..n {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&i.to_be_bytes());
            session.sign(&mech, key, &d).unwrap();
            if (i + 1) % (n / 10) == 0 {
                println!("raw {:>8} {:>8.1}", i + 1, rss_mib());
            }
        }
        return;
    }
    for i in 0..n {
        let mut d = [0u8; 32];
        d[..8].copy_from_slice(&i.to_be_bytes());
        s.sign_digest(&d).unwrap();
        if (i + 1) % (n / 10) == 0 {
            println!("{:>8} {:>8.1}", i + 1, rss_mib());
        }
    }
}
