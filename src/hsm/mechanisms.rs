//! The startup probe: does each token offer what its roles' keys need?
//!
//! For every algorithm a role may use, the token must list the key-pair generation and the
//! signing mechanism (`C_GetMechanismList`), flag them for that use and accept 256-bit keys
//! (`C_GetMechanismInfo`). Mechanism lists say nothing about curves, so the probe then
//! generates a throw-away session key pair per algorithm, signs a digest with it exactly as
//! the signer does and verifies the result in software. Anything missing is refused with
//! `HSM_MECHANISM_UNSUPPORTED` before the appliance serves a request.

use cryptoki::mechanism::MechanismType;

use crate::crypto::Alg;
use crate::error::{Error, ErrorCode};
use crate::hsm::asym_sign::{finish_signature, sign_in_session, token_message};
use crate::hsm::key_management::{destroy_session_objects, generate};
use crate::hsm::pool::SessionCtx;
use crate::hsm::utils::{CkResultExt, Failure};
use crate::seams::key_role::KeyRole;

/// What a token was found to offer at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenReport {
    /// Token label.
    pub label: String,
    /// Roles whose keys live on it.
    pub roles: Vec<KeyRole>,
    /// Algorithms checked (mechanisms listed and a self-test signature verified).
    pub algorithms: Vec<Alg>,
    /// CK_TOKEN_INFO manufacturer.
    pub manufacturer: String,
    /// CK_TOKEN_INFO model.
    pub model: String,
    /// CK_TOKEN_INFO serial number.
    pub serial: String,
}

#[derive(Debug, Clone, Copy)]
enum Use {
    GenerateKeyPair,
    Sign,
}

/// The mechanisms keys of `alg` need.
fn required(alg: Alg) -> [(MechanismType, Use); 2] {
    match alg {
        Alg::EdDSA => [
            (
                MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
                Use::GenerateKeyPair,
            ),
            (MechanismType::EDDSA, Use::Sign),
        ],
        Alg::ES256K | Alg::ES256 => [
            (MechanismType::ECC_KEY_PAIR_GEN, Use::GenerateKeyPair),
            (MechanismType::ECDSA, Use::Sign),
        ],
    }
}

fn unsupported(label: &str, msg: String) -> Failure {
    Error::new(
        ErrorCode::HsmMechanismUnsupported,
        format!("token {label:?}: {msg}"),
    )
    .into()
}

/// Checks the mechanism list and mechanism info of the token for `algs`.
pub(crate) fn check_mechanisms(ctx: &SessionCtx<'_>, algs: &[Alg]) -> Result<(), Failure> {
    let p11 = ctx.module.ctx();
    let list = p11
        .get_mechanism_list(ctx.slot)
        .on(ctx.label, "C_GetMechanismList")?;
    for &alg in algs {
        for (mech, use_) in required(alg) {
            if !list.contains(&mech) {
                return Err(unsupported(
                    ctx.label,
                    format!("{mech} (needed for {alg} keys) is not offered"),
                ));
            }
            let info = p11
                .get_mechanism_info(ctx.slot, mech)
                .on(ctx.label, "C_GetMechanismInfo")?;
            let flagged = match use_ {
                Use::GenerateKeyPair => info.generate_key_pair(),
                Use::Sign => info.sign(),
            };
            if !flagged {
                return Err(unsupported(
                    ctx.label,
                    format!("{mech} is not usable for {use_:?} (needed for {alg} keys)"),
                ));
            }
            let (min, max) = (info.min_key_size(), info.max_key_size());
            // Sizes are in bits for EC mechanisms; 0/0 means "not reported".
            if (min, max) != (0, 0) && !(min..=max).contains(&256) {
                return Err(unsupported(
                    ctx.label,
                    format!("{mech} supports key sizes {min}..={max} bits, not 256"),
                ));
            }
        }
    }
    Ok(())
}

/// Generates a session key pair for `alg`, signs a digest as the signer does and verifies
/// the signature in software; the key pair is destroyed afterwards.
pub(crate) fn self_test(ctx: &SessionCtx<'_>, alg: Alg) -> Result<(), Failure> {
    let (key, [private, public]) =
        generate(ctx, alg, "mpcp-pa-self-test-", "", false).map_err(|mut f| {
            if f.error.code == ErrorCode::HsmError {
                f.error.code = ErrorCode::HsmMechanismUnsupported;
            }
            f.error.message = format!("{alg} self-test: {}", f.error.message);
            f
        })?;
    let digest = [0x5au8; 32];
    let outcome =
        sign_in_session(ctx, alg, private, &token_message(alg, &digest)).and_then(|raw| {
            let sig = finish_signature(alg, raw)?;
            key.public.verify_digest(&digest, &sig).map_err(|e| {
                Failure::from(Error::new(
                    ErrorCode::HsmMechanismUnsupported,
                    format!(
                        "token {:?}: {alg} self-test signature does not verify ({})",
                        ctx.label, e.code
                    ),
                ))
            })
        });
    destroy_session_objects(ctx, &[private, public]);
    outcome
}
