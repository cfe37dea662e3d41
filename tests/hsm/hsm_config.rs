//! The shipped configuration examples load, and the rules hold at file level.

use std::path::Path;

use crate::kit;
use mpcp_pa::ErrorCode;
use mpcp_pa::crypto::Alg;
use mpcp_pa::hsm::{HsmConfig, PinSource};
use mpcp_pa::keys::KeyRole;

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pkcs11-config")
        .join(name)
}

#[test]
fn default_example_is_one_token_per_role_with_env_pins() {
    let c = HsmConfig::load(&example("default.toml")).unwrap();
    assert!(!c.allow_shared_tokens);
    assert_eq!(c.tokens.len(), KeyRole::ALL.len());
    assert_eq!(
        c.role(KeyRole::ReceiptSigning).unwrap().algorithms,
        vec![Alg::ES256]
    );
    for t in c.tokens.values() {
        assert!(matches!(t.pin, PinSource::Env(_)));
    }
    assert_eq!(c.role(KeyRole::Audit).unwrap().algorithms, vec![Alg::EdDSA]);
    assert_eq!(c.softhsm2_conf, None);
}

#[test]
fn dev_examples_load() {
    let c = HsmConfig::load(&example("softhsm-dev.toml")).unwrap();
    assert_eq!(
        c.tokens["mpcp-root"].pin,
        PinSource::File(example("secrets/root.user.pin"))
    );
    let c = HsmConfig::load(&example("shared-token-dev.toml")).unwrap();
    assert!(c.allow_shared_tokens);
    assert_eq!(c.tokens.len(), 1);
}

#[test]
fn file_level_refusals() {
    let dir = kit::tmp::dir("hsm_config");
    let text = std::fs::read_to_string(example("default.toml")).unwrap();
    let write = |t: &str| {
        let p = dir.path().join("pkcs11.toml");
        std::fs::write(&p, t).unwrap();
        HsmConfig::load(&p)
    };
    // A PIN value is refused, and not echoed.
    let e =
        write(&text.replace("pin_env = \"MPCP_PA_PIN_ROOT\"", "pin = \"24681357\"")).unwrap_err();
    assert_eq!(e.code, ErrorCode::ConfigInvalid);
    assert!(!e.message.contains("24681357"), "{e}");
    // Sharing a token needs the development flag.
    let shared = std::fs::read_to_string(example("shared-token-dev.toml")).unwrap();
    let e = write(&shared.replace("allow_shared_tokens = true", "")).unwrap_err();
    assert!(e.message.contains("share token"), "{e}");
    // A gateway role is refused by name.
    let e = write(&format!(
        "{text}\n[roles.gateway]\ntoken = \"mpcp-root\"\nlabel_prefix = \"gw/\"\n"
    ))
    .unwrap_err();
    assert!(e.message.contains("never holds gateway"), "{e}");
    // The error names the file.
    assert!(e.message.contains("pkcs11.toml"), "{e}");
}

/// The receipt and XRPL account roles are optional; receipts are ES256 only, the XRPL
/// account ES256K or EdDSA.
#[test]
fn optional_roles_and_their_algorithms() {
    let text = std::fs::read_to_string(example("default.toml")).unwrap();
    let (required, _) = text.split_once("# Optional: scoped authorization").unwrap();
    let without = required
        .replace(
            "[tokens.mpcp-receipt-signing]\npin_env = \"MPCP_PA_PIN_RECEIPT_SIGNING\"\n",
            "",
        )
        .replace(
            "[tokens.mpcp-xrpl-account]\npin_env = \"MPCP_PA_PIN_XRPL_ACCOUNT\"\n",
            "",
        );
    let c = HsmConfig::parse(&without, Path::new("/")).unwrap();
    assert!(c.role(KeyRole::ReceiptSigning).is_err());
    assert!(c.role(KeyRole::XrplAccount).is_err());
    let full = HsmConfig::parse(&text, Path::new("/")).unwrap();
    assert_eq!(
        full.role(KeyRole::XrplAccount).unwrap().algorithms,
        vec![Alg::ES256K, Alg::EdDSA]
    );
    let ed = text.replace(
        "algorithms = [\"ES256\"]\n",
        "algorithms = [\"ES256\", \"EdDSA\"]\n",
    );
    let e = HsmConfig::parse(&ed, Path::new("/")).unwrap_err();
    assert_eq!(e.code, ErrorCode::ConfigInvalid);
    assert_eq!(e.field.as_deref(), Some("roles.receipt-signing.algorithms"));
    let p256 = text.replace(
        "algorithms = [\"ES256K\", \"EdDSA\"]\n",
        "algorithms = [\"ES256K\", \"ES256\"]\n",
    );
    let e = HsmConfig::parse(&p256, Path::new("/")).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("roles.xrpl-account.algorithms"));
    assert!(e.message.contains("XRPL"), "{e}");
}
