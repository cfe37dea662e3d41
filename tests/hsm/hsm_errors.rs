//! Refusals with stable codes: wrong PIN, missing module, missing token, missing mechanism,
//! shared tokens, timeouts.

use std::path::Path;

use crate::kit::child::isolated;
use crate::kit::hsm::{dev_backend, dev_config_edited, refused, user_pin};
use mpcp_pa::ErrorCode;
use mpcp_pa::crypto::Alg;
use mpcp_pa::hsm::{HsmBackend, HsmConfig};
use mpcp_pa::keys::{KeyBackend, KeyRole};

fn open_err(config: &Path) -> mpcp_pa::Error {
    let c = HsmConfig::load(config).unwrap();
    refused(HsmBackend::open(&c))
}

#[test]
fn wrong_pin_is_refused() {
    isolated(module_path!(), "wrong_pin_is_refused", |dir| {
        let init = mpcp_pa::app::DataDir::new(dir).init_dev().unwrap();
        let real = user_pin(dir, "root");
        // Rewriting the content keeps the file's 0600 mode.
        std::fs::write(dir.join("secrets/root.user.pin"), "wrong-pin-0000\n").unwrap();
        let e = refused(HsmBackend::open(&init.config));
        assert_eq!(e.code, ErrorCode::HsmPinInvalid, "{e}");
        assert!(e.message.contains("mpcp-root"), "{e}");
        assert!(!e.message.contains("wrong-pin-0000") && !e.message.contains(&real));
        // Back to the right PIN: opening works again in the same process.
        std::fs::write(dir.join("secrets/root.user.pin"), format!("{real}\n")).unwrap();
        HsmBackend::open(&init.config).unwrap();
    });
}

#[test]
fn pin_from_environment() {
    isolated(module_path!(), "pin_from_environment", |dir| {
        let path = dev_config_edited(dir, |t| {
            t.replace(
                "pin_file = \"secrets/audit.user.pin\"",
                "pin_env = \"MPCP_PA_TEST_AUDIT_PIN\"",
            )
        });
        let e = open_err(&path);
        assert_eq!(e.code, ErrorCode::ConfigInvalid);
        assert!(e.message.contains("MPCP_PA_TEST_AUDIT_PIN"), "{e}");
        // SAFETY: this child process runs a single test on one thread at this point.
        unsafe { std::env::set_var("MPCP_PA_TEST_AUDIT_PIN", user_pin(dir, "audit")) };
        let hsm = HsmBackend::open(&HsmConfig::load(&path).unwrap()).unwrap();
        hsm.generate(KeyRole::Audit, Alg::EdDSA, "env").unwrap();
    });
}

#[test]
fn missing_module_names_the_path() {
    isolated(module_path!(), "missing_module_names_the_path", |dir| {
        let path = dev_config_edited(dir, |t| {
            t.replace(
                "/usr/lib/softhsm/libsofthsm2.so",
                "/nonexistent/libpkcs11-missing.so",
            )
        });
        let e = open_err(&path);
        assert_eq!(e.code, ErrorCode::HsmUnavailable);
        assert!(
            e.message.contains("/nonexistent/libpkcs11-missing.so"),
            "{e}"
        );

        let fake = dir.join("not-a-module.so");
        std::fs::write(&fake, "not an ELF file").unwrap();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/nonexistent/libpkcs11-missing.so", fake.to_str().unwrap());
        std::fs::write(&path, text).unwrap();
        let e = open_err(&path);
        assert_eq!(e.code, ErrorCode::HsmUnavailable);
        assert!(e.message.contains("not-a-module.so"), "{e}");
    });
}

#[test]
fn missing_token_is_refused() {
    isolated(module_path!(), "missing_token_is_refused", |dir| {
        let path = dev_config_edited(dir, |t| t.replace("mpcp-root", "mpcp-nope"));
        let e = open_err(&path);
        assert_eq!(e.code, ErrorCode::HsmTokenNotFound, "{e}");
        assert!(e.message.contains("mpcp-nope"), "{e}");
    });
}

#[test]
fn missing_mechanism_is_refused() {
    isolated(module_path!(), "missing_mechanism_is_refused", |dir| {
        // A token without CKM_EDDSA (SoftHSM2's mechanism allow-list); init-dev keeps an
        // existing softhsm2.conf.
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        std::fs::write(
            dir.join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
                 slots.mechanisms = CKM_ECDSA,CKM_EC_KEY_PAIR_GEN,CKM_EC_EDWARDS_KEY_PAIR_GEN\n",
                dir.canonicalize().unwrap().join("tokens").display()
            ),
        )
        .unwrap();
        let init = mpcp_pa::app::DataDir::new(dir).init_dev().unwrap();
        let e = refused(HsmBackend::open(&init.config));
        assert_eq!(e.code, ErrorCode::HsmMechanismUnsupported, "{e}");
        assert!(e.message.contains("CKM_EDDSA"), "{e}");

        // Configured for ECDSA only, the same tokens are fine, and EdDSA is refused by name.
        // (The receipt role, written after them, is ES256 already; the XRPL account role,
        // written last, is narrowed to ES256K.)
        let text = std::fs::read_to_string(&init.config_path).unwrap();
        let (roles, receipts) = text.split_once("[roles.receipt-signing]").unwrap();
        let roles = roles.replace(
            "label_prefix",
            "algorithms = [\"ES256K\", \"ES256\"]\nlabel_prefix",
        );
        let receipts = receipts.replace(
            "label_prefix = \"mpcp-pa/xrpl-account/\"",
            "algorithms = [\"ES256K\"]\nlabel_prefix = \"mpcp-pa/xrpl-account/\"",
        );
        std::fs::write(
            &init.config_path,
            format!("{roles}[roles.receipt-signing]{receipts}"),
        )
        .unwrap();
        let hsm = HsmBackend::open(&HsmConfig::load(&init.config_path).unwrap()).unwrap();
        assert_eq!(hsm.report()[0].algorithms, vec![Alg::ES256K, Alg::ES256]);
        assert_eq!(
            hsm.generate(KeyRole::Root, Alg::EdDSA, "x")
                .unwrap_err()
                .code,
            ErrorCode::AlgorithmUnsupported
        );
        let k = hsm.generate(KeyRole::Root, Alg::ES256K, "x").unwrap();
        let s = hsm
            .signer(KeyRole::Root, Alg::ES256K, &k.object_id, "kid")
            .unwrap();
        k.public
            .verify_digest(&[1; 32], &s.sign_digest(&[1; 32]).unwrap().bytes)
            .unwrap();
    });
}

#[test]
fn shared_tokens_need_the_dev_flag() {
    isolated(module_path!(), "shared_tokens_need_the_dev_flag", |dir| {
        let path = dev_config_edited(dir, |t| {
            t.replace(
                "[tokens.mpcp-root]\npin_file = \"secrets/root.user.pin\"\n",
                "",
            )
            .replace("token = \"mpcp-root\"", "token = \"mpcp-grant-signing\"")
        });
        let e = HsmConfig::load(&path).unwrap_err();
        assert_eq!(e.code, ErrorCode::ConfigInvalid);
        assert!(e.message.contains("share token"), "{e}");

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("allow_shared_tokens = true\n{text}")).unwrap();
        let hsm = HsmBackend::open(&HsmConfig::load(&path).unwrap()).unwrap();
        assert_eq!(hsm.token_of(KeyRole::Root).unwrap(), "mpcp-grant-signing");
        let root = hsm.generate(KeyRole::Root, Alg::EdDSA, "r").unwrap();
        let grant = hsm
            .generate(KeyRole::GrantSigning, Alg::EdDSA, "g")
            .unwrap();
        assert_eq!(root.label, "mpcp-pa/root/r");
        for (role, k) in [(KeyRole::Root, &root), (KeyRole::GrantSigning, &grant)] {
            let s = hsm.signer(role, Alg::EdDSA, &k.object_id, "kid").unwrap();
            k.public
                .verify_digest(&[7; 32], &s.sign_digest(&[7; 32]).unwrap().bytes)
                .unwrap();
        }
    });
}

#[test]
fn timeout_abandons_the_call_and_the_process_carries_on() {
    isolated(
        module_path!(),
        "timeout_abandons_the_call_and_the_process_carries_on",
        |dir| {
            let (_, config) = dev_backend(dir);
            // The startup probe (login, key generation and a signature per algorithm) cannot
            // finish within 1 ms.
            let mut hurried = config.clone();
            hurried.call_timeout = std::time::Duration::from_millis(1);
            let e = refused(HsmBackend::open(&hurried));
            assert_eq!(e.code, ErrorCode::HsmTimeout, "{e}");
            assert!(e.message.contains("abandoned"), "{e}");
            // The abandoned call finishes on its own thread; the module stays usable.
            let hsm = HsmBackend::open(&config).unwrap();
            let k = hsm
                .generate(KeyRole::Audit, Alg::EdDSA, "after-timeout")
                .unwrap();
            let s = hsm
                .signer(KeyRole::Audit, Alg::EdDSA, &k.object_id, "kid")
                .unwrap();
            k.public
                .verify_digest(&[2; 32], &s.sign_digest(&[2; 32]).unwrap().bytes)
                .unwrap();
        },
    );
}
