//! C2SP note signatures made inside real SoftHSM2 tokens: pure Ed25519 (`CKM_EDDSA`) over the
//! raw note bytes with an audit key, checked with `ed25519-dalek` against the key's public
//! half; keys of other algorithms are refused.

use crate::kit::child::isolated;
use crate::kit::hsm::{dev_backend, refused};
use ed25519_dalek::{Signature, Verifier as _};
use mpcp_pa::ErrorCode;
use mpcp_pa::audit::{Checkpoint, Vkey, verify_checkpoint};
use mpcp_pa::crypto::{Alg, PublicKey};
use mpcp_pa::keys::{KeyBackend, KeyRole};

#[test]
fn audit_key_signs_raw_note_bytes_of_any_length() {
    isolated(
        module_path!(),
        "audit_key_signs_raw_note_bytes_of_any_length",
        |dir| {
            let (hsm, _) = dev_backend(dir);
            let k = hsm.generate(KeyRole::Audit, Alg::EdDSA, "cp").unwrap();
            let PublicKey::Ed25519(public) = k.public else {
                panic!("not Ed25519")
            };
            let s = hsm
                .note_signer(
                    KeyRole::Audit,
                    &k.object_id,
                    "audit-kid",
                    "pa.hsm.test/audit",
                )
                .unwrap();
            assert_eq!(s.key_name(), "pa.hsm.test/audit");
            assert_eq!(s.public_key(), public.to_bytes());
            // Messages shorter and much longer than a digest: the token signs the bytes as they
            // are (a digest of them would not verify as a pure Ed25519 signature).
            for len in [0usize, 1, 31, 32, 33, 200, 4096] {
                let msg: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let sig = Signature::from_bytes(&s.sign(&msg).unwrap());
                public.verify(&msg, &sig).unwrap();
                if len > 0 {
                    let mut other = msg.clone();
                    other[len - 1] ^= 1;
                    assert!(public.verify(&other, &sig).is_err());
                }
            }
            // A checkpoint signed in the token verifies under the vkey of the token's public key.
            let cp = Checkpoint {
                origin: "pa.hsm.test/audit".into(),
                size: 42,
                root: [3; 32],
            };
            let note = cp.sign(s.as_ref()).unwrap();
            let vkey = Vkey::ed25519("pa.hsm.test/audit", public.to_bytes());
            assert_eq!(
                verify_checkpoint(&note, &vkey, &[], 0).unwrap().checkpoint,
                cp
            );
            let other = ed25519_dalek::SigningKey::from_bytes(&[0x11; 32]).verifying_key();
            let impostor = Vkey::ed25519("pa.hsm.test/audit", other.to_bytes());
            assert!(verify_checkpoint(&note, &impostor, &[], 0).is_err());
        },
    );
}

#[test]
fn only_ed25519_keys_sign_notes() {
    isolated(module_path!(), "only_ed25519_keys_sign_notes", |dir| {
        let (hsm, _) = dev_backend(dir);
        for alg in [Alg::ES256, Alg::ES256K] {
            let k = hsm.generate(KeyRole::Root, alg, "ec").unwrap();
            let e = refused(hsm.note_signer(KeyRole::Root, &k.object_id, "kid", "pa/audit"));
            assert_eq!(e.code, ErrorCode::KeyAlgMismatch, "{e}");
        }
        let k = hsm.generate(KeyRole::Audit, Alg::EdDSA, "ok").unwrap();
        // An invalid note key name is refused before the token is asked.
        let e = refused(hsm.note_signer(KeyRole::Audit, &k.object_id, "kid", "bad name"));
        assert_eq!(e.code, ErrorCode::ConfigInvalid, "{e}");
        // A key of another role's token is not found on this role's token.
        let e = refused(hsm.note_signer(KeyRole::GrantSigning, &k.object_id, "kid", "pa/audit"));
        assert_eq!(e.code, ErrorCode::KeyNotFound, "{e}");
    });
}
