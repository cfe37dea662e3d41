//! Key generation, loading, signing and destruction on real SoftHSM2 tokens.

use crate::kit::child::isolated;
use crate::kit::hsm::{dev_backend, other_handle, refused, slot_of, user_pin};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use mpcp_pa::ErrorCode;
use mpcp_pa::crypto::{Alg, PublicKey};
use mpcp_pa::keys::{KeyBackend, KeyRole};

fn digest(i: u32) -> [u8; 32] {
    let mut d = [0u8; 32];
    d[..4].copy_from_slice(&i.to_be_bytes());
    d[31] = 0xa5;
    d
}

#[test]
fn generate_and_sign_each_algorithm() {
    isolated(module_path!(), "generate_and_sign_each_algorithm", |dir| {
        let (hsm, _) = dev_backend(dir);
        for (role, alg) in [
            (KeyRole::GrantSigning, Alg::EdDSA),
            (KeyRole::GrantSigning, Alg::ES256K),
            (KeyRole::Root, Alg::ES256),
            (KeyRole::Audit, Alg::EdDSA),
        ] {
            let k = hsm.generate(role, alg, "k1").unwrap();
            assert_eq!(k.label, format!("mpcp-pa/{role}/k1"));
            assert_eq!(k.object_id.len(), 16);
            assert_eq!(k.public.alg(), alg);
            let signer = hsm.signer(role, alg, &k.object_id, "kid-1").unwrap();
            assert_eq!(
                signer.public_key(),
                &k.public,
                "public key read back twice agrees"
            );
            assert_eq!((signer.kid(), signer.alg()), ("kid-1", alg));
            let jwk = k.public.to_jwk("kid-1", true);
            assert_eq!((jwk.kty.as_str(), jwk.crv.as_str()), (alg.kty(), alg.crv()));
            assert_eq!(PublicKey::from_jwk(&jwk).unwrap(), k.public);
            for i in 0..5 {
                let d = digest(i);
                let sig = signer.sign_digest(&d).unwrap();
                assert_eq!(sig.alg, alg);
                k.public.verify_digest(&d, &sig.bytes).unwrap();
                let mut other = d;
                other[0] ^= 0x80;
                assert_eq!(
                    k.public.verify_digest(&other, &sig.bytes).unwrap_err().code,
                    ErrorCode::SignatureInvalid
                );
            }
        }
        // Without a name the label carries the random id.
        let k = hsm.generate(KeyRole::Root, Alg::EdDSA, "").unwrap();
        assert_eq!(
            k.label,
            format!("mpcp-pa/root/{}", hex::encode(&k.object_id))
        );
        // Keys of a role live on that role's token only.
        let e = refused(hsm.signer(KeyRole::Audit, Alg::EdDSA, &k.object_id, "x"));
        assert_eq!(e.code, ErrorCode::KeyNotFound);
    });
}

#[test]
fn ecdsa_signatures_are_low_s_der() {
    isolated(module_path!(), "ecdsa_signatures_are_low_s_der", |dir| {
        let (hsm, _) = dev_backend(dir);
        for (alg, n) in [(Alg::ES256K, 400u32), (Alg::ES256, 200)] {
            let k = hsm.generate(KeyRole::GrantSigning, alg, "lows").unwrap();
            let s = hsm
                .signer(KeyRole::GrantSigning, alg, &k.object_id, "kid")
                .unwrap();
            for i in 0..n {
                let d = digest(i);
                let sig = s.sign_digest(&d).unwrap().bytes;
                let high = match alg {
                    Alg::ES256K => {
                        let p = k256::ecdsa::Signature::from_der(&sig).expect("DER");
                        p.normalize_s() != p
                    }
                    _ => {
                        let p = p256::ecdsa::Signature::from_der(&sig).expect("DER");
                        p.normalize_s() != p
                    }
                };
                assert!(!high, "{alg} signature {i} is high-S");
                k.public.verify_digest(&d, &sig).unwrap();
            }
        }
    });
}

#[test]
fn private_key_attributes_read_back() {
    isolated(module_path!(), "private_key_attributes_read_back", |dir| {
        let (hsm, _) = dev_backend(dir);
        let p = other_handle();
        for alg in Alg::ALL {
            let k = hsm.generate(KeyRole::Root, alg, "attrs").unwrap();
            // An independent session on the same token, through another handle.
            let session = p.open_ro_session(slot_of(&p, "mpcp-root")).unwrap();
            let pin = AuthPin::new(user_pin(dir, "root").into());
            match session.login(UserType::User, Some(&pin)) {
                Ok(())
                | Err(cryptoki::error::Error::Pkcs11(
                    cryptoki::error::RvError::UserAlreadyLoggedIn,
                    _,
                )) => {}
                Err(e) => panic!("login: {e}"),
            }
            let private = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Id(k.object_id.clone()),
                ])
                .unwrap();
            assert_eq!(private.len(), 1);
            let attrs = session
                .get_attributes(
                    private[0],
                    &[
                        AttributeType::Token,
                        AttributeType::Private,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                        AttributeType::Local,
                        AttributeType::Sign,
                        AttributeType::Decrypt,
                        AttributeType::Unwrap,
                        AttributeType::Derive,
                        AttributeType::SignRecover,
                        AttributeType::Label,
                    ],
                )
                .unwrap();
            for want in [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::AlwaysSensitive(true),
                Attribute::NeverExtractable(true),
                Attribute::Local(true),
                Attribute::Sign(true),
                Attribute::Decrypt(false),
                Attribute::Unwrap(false),
                Attribute::Derive(false),
                Attribute::SignRecover(false),
                Attribute::Label(b"mpcp-pa/root/attrs".to_vec()),
            ] {
                assert!(
                    attrs.contains(&want),
                    "{alg}: missing {want:?} in {attrs:?}"
                );
            }
            // The private value cannot be read.
            let value = session
                .get_attributes(private[0], &[AttributeType::Value])
                .unwrap();
            assert!(value.is_empty(), "{alg}: CKA_VALUE readable: {value:?}");
            let public = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::Id(k.object_id.clone()),
                ])
                .unwrap();
            let attrs = session
                .get_attributes(public[0], &[AttributeType::Verify, AttributeType::Token])
                .unwrap();
            assert!(
                attrs.contains(&Attribute::Verify(true)) && attrs.contains(&Attribute::Token(true))
            );
        }
    });
}

#[test]
fn destroy_and_unknown_keys() {
    isolated(module_path!(), "destroy_and_unknown_keys", |dir| {
        let (hsm, _) = dev_backend(dir);
        let k = hsm.generate(KeyRole::Audit, Alg::EdDSA, "gone").unwrap();
        let s = hsm
            .signer(KeyRole::Audit, Alg::EdDSA, &k.object_id, "kid")
            .unwrap();
        s.sign_digest(&digest(1)).unwrap();
        hsm.destroy(KeyRole::Audit, &k.object_id).unwrap();
        // The signer's cached handle is stale now: the first call fails, and once the key
        // is looked up again by CKA_ID it is reported missing.
        assert!(s.sign_digest(&digest(2)).is_err());
        assert_eq!(
            s.sign_digest(&digest(3)).unwrap_err().code,
            ErrorCode::KeyNotFound
        );
        assert_eq!(
            refused(hsm.signer(KeyRole::Audit, Alg::EdDSA, &k.object_id, "kid")).code,
            ErrorCode::KeyNotFound
        );
        assert_eq!(
            hsm.destroy(KeyRole::Audit, &k.object_id).unwrap_err().code,
            ErrorCode::KeyNotFound
        );
        assert_eq!(
            refused(hsm.signer(KeyRole::Audit, Alg::EdDSA, &[0xee; 16], "kid")).code,
            ErrorCode::KeyNotFound
        );
        // Asking for a key as another algorithm is refused.
        let k = hsm.generate(KeyRole::Audit, Alg::EdDSA, "ed").unwrap();
        assert_eq!(
            refused(hsm.signer(KeyRole::Audit, Alg::ES256, &k.object_id, "kid")).code,
            ErrorCode::KeyAlgMismatch
        );
        // Other keys are untouched by a destroy.
        hsm.signer(KeyRole::Audit, Alg::EdDSA, &k.object_id, "kid")
            .unwrap();
    });
}

#[test]
fn keys_persist_across_backends() {
    isolated(module_path!(), "keys_persist_across_backends", |dir| {
        let (hsm, config) = dev_backend(dir);
        let k = hsm
            .generate(KeyRole::GrantSigning, Alg::ES256K, "persist")
            .unwrap();
        drop(hsm);
        let again = mpcp_pa::hsm::HsmBackend::open(&config).unwrap();
        let s = again
            .signer(KeyRole::GrantSigning, Alg::ES256K, &k.object_id, "kid")
            .unwrap();
        assert_eq!(s.public_key(), &k.public);
        let sig = s.sign_digest(&digest(9)).unwrap();
        k.public.verify_digest(&digest(9), &sig.bytes).unwrap();
    });
}

/// Receipt records sign their own JCS bytes with ES256 (raw `r || s`, not DER): the token
/// key signs them, a software verifier (ring) accepts them, a changed message
/// does not verify, the signatures are low-S, and keys of other algorithms refuse.
#[test]
fn receipt_keys_sign_es256_messages() {
    isolated(module_path!(), "receipt_keys_sign_es256_messages", |dir| {
        let (hsm, config) = dev_backend(dir);
        assert_eq!(
            config.role(KeyRole::ReceiptSigning).unwrap().algorithms,
            vec![Alg::ES256]
        );
        let e = refused(hsm.generate(KeyRole::ReceiptSigning, Alg::EdDSA, "ed"));
        assert_eq!(e.code, ErrorCode::AlgorithmUnsupported, "{}", e.message);
        let k = hsm
            .generate(KeyRole::ReceiptSigning, Alg::ES256, "r1")
            .unwrap();
        let signer = hsm
            .signer(KeyRole::ReceiptSigning, Alg::ES256, &k.object_id, "rk-1")
            .unwrap();
        let half_order =
            hex::decode("7fffffff800000007fffffffffffffffde737d56d38bcf4279dce5617e3192a8")
                .unwrap();
        for i in 0..8u8 {
            let message = format!("{{\"alg\":\"ES256\",\"n\":{i}}}").into_bytes();
            let sig = signer.sign_es256(&message).unwrap();
            let hex_sig = hex::encode(sig);
            assert!(mpcp_pa::receipts::verify::verify_es256_hex(
                &k.public, &message, &hex_sig
            ));
            assert!(sig[32..] <= half_order[..], "low-S");
            let mut other = message.clone();
            other[1] ^= 1;
            assert!(!mpcp_pa::receipts::verify::verify_es256_hex(
                &k.public, &other, &hex_sig
            ));
        }
        let ed = hsm.generate(KeyRole::Audit, Alg::EdDSA, "ed").unwrap();
        let ed = hsm
            .signer(KeyRole::Audit, Alg::EdDSA, &ed.object_id, "a-1")
            .unwrap();
        assert_eq!(
            ed.sign_es256(b"x").unwrap_err().code,
            ErrorCode::AlgorithmUnsupported
        );
    });
}

/// XRPL account keys on the token: ES256K and EdDSA keys sign credential transactions that
/// the XRPL Foundation's codec and keypairs accept (secp256k1 low-S DER over SHA-512-half,
/// Ed25519 over the bytes); ES256 is refused for the role, and a P-256 key refuses XRPL
/// signing.
#[test]
fn xrpl_account_keys_sign_transactions_the_ledger_accepts() {
    use mpcp_pa::api::ledger_book::account_key;
    use mpcp_pa::xrpl::credential_tx::{TxKind, UnsignedTx};
    isolated(
        module_path!(),
        "xrpl_account_keys_sign_transactions_the_ledger_accepts",
        |dir| {
            let (hsm, config) = dev_backend(dir);
            assert_eq!(
                config.role(KeyRole::XrplAccount).unwrap().algorithms,
                vec![Alg::ES256K, Alg::EdDSA]
            );
            let e = refused(hsm.generate(KeyRole::XrplAccount, Alg::ES256, "p"));
            assert_eq!(e.code, ErrorCode::AlgorithmUnsupported, "{}", e.message);
            let mut blobs = Vec::new();
            for alg in [Alg::ES256K, Alg::EdDSA] {
                let k = hsm.generate(KeyRole::XrplAccount, alg, "acct").unwrap();
                let signer = hsm
                    .signer(KeyRole::XrplAccount, alg, &k.object_id, "xa-1")
                    .unwrap();
                let key = account_key(&k.public).unwrap();
                for seq in 1..=4u32 {
                    let tx = UnsignedTx {
                        kind: TxKind::CredentialCreate,
                        key,
                        subject: "rBeSeHbNsfZ3dqofxZ8MsfEo6ZTRJ1iHqA".into(),
                        credential_type: format!("mpcp:active-grant:g-{seq}").into_bytes(),
                        expiration: Some(900_000_000),
                        sequence: seq,
                        fee_drops: 12,
                        last_ledger_sequence: None,
                    };
                    let data = tx.signing_data().unwrap();
                    let sig = signer.sign_xrpl(&data).unwrap();
                    k.public.verify_xrpl(&data, &sig).unwrap();
                    blobs.push((tx.assemble(&sig).unwrap(), key.address()));
                }
            }
            let results = crate::kit::xrpl::check_blobs(
                &blobs
                    .iter()
                    .map(|(b, _)| b.blob.clone())
                    .collect::<Vec<_>>(),
            );
            for (r, (signed, address)) in results.iter().zip(&blobs) {
                assert!(crate::kit::xrpl::valid(r), "{r}");
                assert_eq!(r["hash"], signed.hash);
                assert_eq!(r["tx"]["Account"], *address);
            }
            let p = hsm.generate(KeyRole::Root, Alg::ES256, "p").unwrap();
            let p = hsm
                .signer(KeyRole::Root, Alg::ES256, &p.object_id, "r-1")
                .unwrap();
            assert_eq!(
                p.sign_xrpl(b"STX\0").unwrap_err().code,
                ErrorCode::AlgorithmUnsupported
            );
        },
    );
}
