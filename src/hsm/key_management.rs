//! Key pairs inside the token: generation with safe attributes, the attribute check, lookup
//! by CKA_ID, reading the public key back, destruction.
//!
//! Every key pair is generated on the token (`C_GenerateKeyPair`): the private key is a token
//! object with CKA_SENSITIVE=true, CKA_EXTRACTABLE=false and CKA_SIGN as its only capability
//! (no decrypt, unwrap, derive or sign-recover); the public key has CKA_VERIFY. After
//! generation the private key's attributes are read back and a key that is not sensitive,
//! never-extractable and generated on the token is destroyed (`HSM_KEY_ATTRIBUTES_UNSAFE`).
//!
//! CKA_EC_PARAMS: P-256 and secp256k1 use their named-curve OIDs; Ed25519 uses the RFC 8410
//! OID id-Ed25519 (1.3.101.112). SoftHSM2 2.6.1 accepts that OID as well as the PKCS#11 3.0
//! printable string "edwards25519"; keys carrying either are recognised.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::crypto::{Alg, PublicKey};
use crate::error::{Error, ErrorCode, Result};
use crate::hsm::pool::SessionCtx;
use crate::hsm::utils::{CkResultExt, Failure, exactly_one, lock};
use crate::seams::key_backend::GeneratedKey;

/// DER OID 1.3.101.112 (id-Ed25519, RFC 8410).
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER PrintableString "edwards25519" (PKCS#11 3.0 curve name form).
const ED25519_NAME: &[u8] = b"\x13\x0cedwards25519";
/// DER OID 1.3.132.0.10 (secp256k1).
const SECP256K1_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
/// DER OID 1.2.840.10045.3.1.7 (prime256v1 / P-256).
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Length of the random CKA_ID of a generated key pair.
pub const OBJECT_ID_LEN: usize = 16;

/// The CKA_EC_PARAMS used when generating a key for `alg`.
pub(crate) fn ec_params(alg: Alg) -> &'static [u8] {
    match alg {
        Alg::EdDSA => ED25519_OID,
        Alg::ES256K => SECP256K1_OID,
        Alg::ES256 => P256_OID,
    }
}

fn params_match(alg: Alg, params: &[u8]) -> bool {
    match alg {
        Alg::EdDSA => params == ED25519_OID || params == ED25519_NAME,
        _ => params == ec_params(alg),
    }
}

/// The PKCS#11 key type of keys for `alg`.
pub(crate) fn key_type(alg: Alg) -> KeyType {
    match alg {
        Alg::EdDSA => KeyType::EC_EDWARDS,
        Alg::ES256K | Alg::ES256 => KeyType::EC,
    }
}

fn keygen_mechanism(alg: Alg) -> Mechanism<'static> {
    match alg {
        Alg::EdDSA => Mechanism::EccEdwardsKeyPairGen,
        Alg::ES256K | Alg::ES256 => Mechanism::EccKeyPairGen,
    }
}

/// Attributes read back from a private key for [`check_private_attributes`].
pub(crate) const PRIVATE_CHECKED: [AttributeType; 9] = [
    AttributeType::Sensitive,
    AttributeType::Extractable,
    AttributeType::AlwaysSensitive,
    AttributeType::NeverExtractable,
    AttributeType::Local,
    AttributeType::Sign,
    AttributeType::Decrypt,
    AttributeType::Unwrap,
    AttributeType::Derive,
];

/// Refuses a private key that is not sensitive, extractable now or ever, not generated on
/// the token, unable to sign, or able to decrypt, unwrap or derive. Missing required
/// attributes count as unsafe.
pub fn check_private_attributes(attrs: &[Attribute]) -> Result<()> {
    let get = |t: AttributeType| {
        attrs.iter().find_map(|a| match (t, a) {
            (AttributeType::Sensitive, Attribute::Sensitive(v))
            | (AttributeType::Extractable, Attribute::Extractable(v))
            | (AttributeType::AlwaysSensitive, Attribute::AlwaysSensitive(v))
            | (AttributeType::NeverExtractable, Attribute::NeverExtractable(v))
            | (AttributeType::Local, Attribute::Local(v))
            | (AttributeType::Sign, Attribute::Sign(v))
            | (AttributeType::Decrypt, Attribute::Decrypt(v))
            | (AttributeType::Unwrap, Attribute::Unwrap(v))
            | (AttributeType::Derive, Attribute::Derive(v)) => Some(*v),
            _ => None,
        })
    };
    let required: [(AttributeType, bool, &str); 6] = [
        (AttributeType::Sensitive, true, "CKA_SENSITIVE must be true"),
        (
            AttributeType::Extractable,
            false,
            "CKA_EXTRACTABLE must be false",
        ),
        (
            AttributeType::AlwaysSensitive,
            true,
            "CKA_ALWAYS_SENSITIVE must be true",
        ),
        (
            AttributeType::NeverExtractable,
            true,
            "CKA_NEVER_EXTRACTABLE must be true",
        ),
        (
            AttributeType::Local,
            true,
            "CKA_LOCAL must be true (generated on the token)",
        ),
        (AttributeType::Sign, true, "CKA_SIGN must be true"),
    ];
    let mut problems = Vec::new();
    for (t, want, why) in required {
        if get(t) != Some(want) {
            problems.push(why);
        }
    }
    for (t, why) in [
        (AttributeType::Decrypt, "CKA_DECRYPT must be false"),
        (AttributeType::Unwrap, "CKA_UNWRAP must be false"),
        (AttributeType::Derive, "CKA_DERIVE must be false"),
    ] {
        if get(t) == Some(true) {
            problems.push(why);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::HsmKeyAttributesUnsafe,
            format!("private key refused: {}", problems.join(", ")),
        ))
    }
}

/// The public key from CKA_EC_POINT bytes: a DER OCTET STRING wrapping the point (PKCS#11)
/// or the bare point (some modules). Told apart by length, since a bare uncompressed EC
/// point also starts with 0x04.
pub fn decode_ec_point(alg: Alg, bytes: &[u8]) -> Result<PublicKey> {
    let point: &[u8] = match (alg, bytes.len(), bytes.first(), bytes.get(1)) {
        (Alg::EdDSA, 32, _, _) => bytes,
        (Alg::EdDSA, 34, Some(0x04), Some(0x20)) => &bytes[2..],
        (Alg::ES256K | Alg::ES256, 65, Some(0x04), _) => bytes,
        (Alg::ES256K | Alg::ES256, 33, Some(0x02 | 0x03), _) => bytes,
        (Alg::ES256K | Alg::ES256, 67, Some(0x04), Some(0x41)) => &bytes[2..],
        (Alg::ES256K | Alg::ES256, 35, Some(0x04), Some(0x21)) => &bytes[2..],
        _ => {
            return Err(Error::new(
                ErrorCode::KeyFormatInvalid,
                format!(
                    "CKA_EC_POINT of {} bytes is not a {alg} public key",
                    bytes.len()
                ),
            ));
        }
    };
    PublicKey::from_bytes(alg, point)
}

/// The single token object of `class` with CKA_ID `id`. `KEY_NOT_FOUND` when there is none.
pub(crate) fn find_key(
    ctx: &SessionCtx<'_>,
    class: ObjectClass,
    id: &[u8],
) -> Result<ObjectHandle, Failure> {
    let found = ctx
        .session
        .find_objects(&[
            Attribute::Token(true),
            Attribute::Class(class),
            Attribute::Id(id.to_vec()),
        ])
        .on(ctx.label, "C_FindObjects")?;
    exactly_one(
        &found,
        || {
            Error::new(
                ErrorCode::KeyNotFound,
                format!(
                    "token {:?}: no {class} with id {}",
                    ctx.label,
                    hex::encode(id)
                ),
            )
        },
        |n| {
            Error::new(
                ErrorCode::HsmError,
                format!(
                    "token {:?}: {n} objects of class {class} share id {}",
                    ctx.label,
                    hex::encode(id)
                ),
            )
        },
    )
}

/// Reads the attributes that identify a key's algorithm and checks them against `alg`.
fn check_key_alg(ctx: &SessionCtx<'_>, handle: ObjectHandle, alg: Alg) -> Result<(), Failure> {
    let attrs = ctx
        .session
        .get_attributes(handle, &[AttributeType::KeyType, AttributeType::EcParams])
        .on(ctx.label, "C_GetAttributeValue")?;
    let mut kt = None;
    let mut params = None;
    for a in attrs {
        match a {
            Attribute::KeyType(k) => kt = Some(k),
            Attribute::EcParams(p) => params = Some(p),
            _ => {}
        }
    }
    if kt != Some(key_type(alg)) || !params.as_deref().is_some_and(|p| params_match(alg, p)) {
        return Err(Error::new(
            ErrorCode::KeyAlgMismatch,
            format!("token {:?}: key is not a {alg} key ({kt:?})", ctx.label),
        )
        .into());
    }
    Ok(())
}

/// Reads and checks the private key's safety attributes.
pub(crate) fn check_private_key(ctx: &SessionCtx<'_>, handle: ObjectHandle) -> Result<(), Failure> {
    let attrs = ctx
        .session
        .get_attributes(handle, &PRIVATE_CHECKED)
        .on(ctx.label, "C_GetAttributeValue")?;
    check_private_attributes(&attrs).map_err(|mut e| {
        e.message = format!("token {:?}: {}", ctx.label, e.message);
        Failure::from(e)
    })
}

/// Reads a public key object back from the token and checks it is an `alg` key.
pub(crate) fn read_public_key(
    ctx: &SessionCtx<'_>,
    handle: ObjectHandle,
    alg: Alg,
) -> Result<PublicKey, Failure> {
    check_key_alg(ctx, handle, alg)?;
    let attrs = ctx
        .session
        .get_attributes(handle, &[AttributeType::EcPoint])
        .on(ctx.label, "C_GetAttributeValue")?;
    let point = attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .ok_or_else(|| {
            Error::new(
                ErrorCode::KeyFormatInvalid,
                "public key without CKA_EC_POINT",
            )
        })?;
    Ok(decode_ec_point(alg, &point)?)
}

/// An existing key pair, checked: the private key is safe and of `alg`; returns the
/// private key handle and the public key read from the public object.
pub(crate) fn load(
    ctx: &SessionCtx<'_>,
    alg: Alg,
    id: &[u8],
) -> Result<(ObjectHandle, PublicKey), Failure> {
    let private = find_key(ctx, ObjectClass::PRIVATE_KEY, id)?;
    check_key_alg(ctx, private, alg)?;
    check_private_key(ctx, private)?;
    let public = find_key(ctx, ObjectClass::PUBLIC_KEY, id)?;
    Ok((private, read_public_key(ctx, public, alg)?))
}

/// Generates a key pair for `alg` with a random CKA_ID, labelled `prefix` + `name` (+ the hex
/// of the CKA_ID when `name` is empty), checks it and reads
/// its public key back; returns it with the handles `[private, public]`. `token_object = false` makes session objects (startup self-test).
/// Holds the module's object lock for the whole generation.
pub(crate) fn generate(
    ctx: &SessionCtx<'_>,
    alg: Alg,
    prefix: &str,
    name: &str,
    token_object: bool,
) -> Result<(GeneratedKey, [ObjectHandle; 2]), Failure> {
    let _serial = lock(&ctx.module.object_lock);
    let id = ctx
        .session
        .generate_random_vec(OBJECT_ID_LEN as u32)
        .on(ctx.label, "C_GenerateRandom")?;
    let label = if name.is_empty() {
        format!("{prefix}{}", hex::encode(&id))
    } else {
        format!("{prefix}{name}")
    };
    let public_template = [
        Attribute::Token(token_object),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
        Attribute::EcParams(ec_params(alg).to_vec()),
        Attribute::Id(id.clone()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let private_template = [
        Attribute::Token(token_object),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Copyable(false),
        Attribute::Sign(true),
        Attribute::SignRecover(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Id(id.clone()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let (public, private) = ctx
        .session
        .generate_key_pair(&keygen_mechanism(alg), &public_template, &private_template)
        .on(ctx.label, "C_GenerateKeyPair")?;
    let checked = check_private_key(ctx, private)
        .and_then(|()| check_key_alg(ctx, private, alg))
        .and_then(|()| read_public_key(ctx, public, alg));
    match checked {
        Ok(public_key) => Ok((
            GeneratedKey {
                object_id: id,
                label,
                public: public_key,
            },
            [private, public],
        )),
        Err(f) => {
            // Never leave a key behind that we refused.
            destroy_handles(ctx.session, &[private, public]);
            Err(f)
        }
    }
}

fn destroy_handles(session: &Session, handles: &[ObjectHandle]) {
    for h in handles {
        // Best effort on an error path; the original failure is what the caller sees.
        let _ = session.destroy_object(*h);
    }
}

/// Destroys every token object with CKA_ID `id` (the key pair). `KEY_NOT_FOUND` when none.
pub(crate) fn destroy(ctx: &SessionCtx<'_>, id: &[u8]) -> Result<usize, Failure> {
    let _serial = lock(&ctx.module.object_lock);
    let found = ctx
        .session
        .find_objects(&[Attribute::Token(true), Attribute::Id(id.to_vec())])
        .on(ctx.label, "C_FindObjects")?;
    if found.is_empty() {
        return Err(Error::new(
            ErrorCode::KeyNotFound,
            format!("token {:?}: no key with id {}", ctx.label, hex::encode(id)),
        )
        .into());
    }
    for h in &found {
        ctx.session
            .destroy_object(*h)
            .on(ctx.label, "C_DestroyObject")?;
    }
    Ok(found.len())
}

/// Destroys session objects created by the self-test (under the object lock).
pub(crate) fn destroy_session_objects(ctx: &SessionCtx<'_>, handles: &[ObjectHandle]) {
    let _serial = lock(&ctx.module.object_lock);
    destroy_handles(ctx.session, handles);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safe() -> Vec<Attribute> {
        vec![
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::AlwaysSensitive(true),
            Attribute::NeverExtractable(true),
            Attribute::Local(true),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ]
    }

    #[test]
    fn attribute_check_refuses_each_unsafe_property() {
        check_private_attributes(&safe()).unwrap();
        let flips: [(usize, Attribute); 9] = [
            (0, Attribute::Sensitive(false)),
            (1, Attribute::Extractable(true)),
            (2, Attribute::AlwaysSensitive(false)),
            (3, Attribute::NeverExtractable(false)),
            (4, Attribute::Local(false)),
            (5, Attribute::Sign(false)),
            (6, Attribute::Decrypt(true)),
            (7, Attribute::Unwrap(true)),
            (8, Attribute::Derive(true)),
        ];
        for (i, bad) in flips {
            let mut a = safe();
            a[i] = bad.clone();
            let e = check_private_attributes(&a).unwrap_err();
            assert_eq!(e.code, ErrorCode::HsmKeyAttributesUnsafe, "{bad:?}");
        }
        // A token that does not report CKA_LOCAL is not trusted.
        let mut a = safe();
        a.remove(4);
        assert!(check_private_attributes(&a).is_err());
    }

    #[test]
    fn ec_points_wrapped_and_raw() {
        use crate::signer::{DigestSigner, SoftwareSigner};
        for alg in Alg::ALL {
            let s = SoftwareSigner::from_secret("k", alg, &[3u8; 32]).unwrap();
            let raw: Vec<u8> = match s.public_key() {
                PublicKey::Ed25519(k) => k.as_bytes().to_vec(),
                PublicKey::Secp256k1(k) => k.to_sec1_point(false).as_bytes().to_vec(),
                PublicKey::P256(k) => k.to_sec1_point(false).as_bytes().to_vec(),
            };
            let mut wrapped = vec![0x04, raw.len() as u8];
            wrapped.extend_from_slice(&raw);
            assert_eq!(
                &decode_ec_point(alg, &raw).unwrap(),
                s.public_key(),
                "{alg} raw"
            );
            assert_eq!(
                &decode_ec_point(alg, &wrapped).unwrap(),
                s.public_key(),
                "{alg} wrapped"
            );
            assert!(decode_ec_point(alg, &wrapped[..wrapped.len() - 1]).is_err());
        }
    }

    #[test]
    fn ed25519_params_in_both_forms() {
        assert!(params_match(Alg::EdDSA, ED25519_OID));
        assert!(params_match(Alg::EdDSA, ED25519_NAME));
        assert!(!params_match(Alg::ES256, SECP256K1_OID));
        assert_eq!(ED25519_NAME.len(), 14);
    }
}
