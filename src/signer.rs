//! Signing artifacts through the signing seam ([`DigestSigner`], defined in
//! [`crate::seams::digest_signer`] and re-exported here): one key that signs 32-byte domain
//! digests under the MPCP convention (see [`crate::crypto`]). The HSM backend implements
//! [`DigestSigner`] for token keys; the [`SoftwareSigner`] here exists for unit tests of other layers and for generating the
//! published test vectors, and is never what the appliance service signs with.

use ed25519_dalek::Signer as _;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::canonical::{Domain, signing_digest};
use crate::crypto::{Alg, PublicKey, b64url_encode};
use crate::error::{Error, ErrorCode, Result};
pub use crate::seams::digest_signer::{DigestSignature, DigestSigner};

/// Signs an artifact value: computes the domain digest over it without `signature` and
/// returns a copy with `signature` (base64url) set. The caller has already put the signer's
/// kid in the artifact's key-id member.
pub fn sign_artifact(
    signer: &dyn DigestSigner,
    domain: Domain,
    version: &str,
    artifact: &Value,
) -> Result<Value> {
    let digest = signing_digest(domain, version, artifact)?;
    let sig = signer.sign_digest(&digest)?;
    let mut out = artifact.clone();
    match &mut out {
        Value::Object(map) => {
            map.insert("signature".into(), Value::String(b64url_encode(&sig.bytes)));
        }
        _ => {
            return Err(Error::new(
                ErrorCode::SchemaInvalid,
                "artifact is not a JSON object",
            ));
        }
    }
    Ok(out)
}

enum SoftKey {
    Ed25519(ed25519_dalek::SigningKey),
    Secp256k1(k256::ecdsa::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

/// A private key held in process memory. For tests and vector generation only: it is the
/// very thing the appliance exists to avoid, so no service code path constructs one.
pub struct SoftwareSigner {
    kid: String,
    key: SoftKey,
    public: PublicKey,
}

impl std::fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareSigner")
            .field("kid", &self.kid)
            .field("alg", &self.public.alg())
            .finish_non_exhaustive()
    }
}

impl SoftwareSigner {
    /// A signer from a 32-byte private scalar / Ed25519 seed.
    pub fn from_secret(kid: &str, alg: Alg, secret: &[u8; 32]) -> Result<SoftwareSigner> {
        let bad = || Error::new(ErrorCode::KeyFormatInvalid, format!("invalid {alg} secret"));
        let (key, public) = match alg {
            Alg::EdDSA => {
                let k = ed25519_dalek::SigningKey::from_bytes(secret);
                let p = PublicKey::Ed25519(k.verifying_key());
                (SoftKey::Ed25519(k), p)
            }
            Alg::ES256K => {
                let k = k256::ecdsa::SigningKey::from_slice(secret).map_err(|_| bad())?;
                let p = PublicKey::Secp256k1(*k.verifying_key());
                (SoftKey::Secp256k1(k), p)
            }
            Alg::ES256 => {
                let k = p256::ecdsa::SigningKey::from_slice(secret).map_err(|_| bad())?;
                let p = PublicKey::P256(*k.verifying_key());
                (SoftKey::P256(k), p)
            }
        };
        Ok(SoftwareSigner {
            kid: kid.to_string(),
            key,
            public,
        })
    }

    /// The private scalar / seed, for publishing test-vector key pairs.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(match &self.key {
            SoftKey::Ed25519(k) => k.to_bytes(),
            SoftKey::Secp256k1(k) => k.to_bytes().into(),
            SoftKey::P256(k) => k.to_bytes().into(),
        })
    }
}

impl DigestSigner for SoftwareSigner {
    fn kid(&self) -> &str {
        &self.kid
    }
    fn alg(&self) -> Alg {
        self.public.alg()
    }
    fn public_key(&self) -> &PublicKey {
        &self.public
    }
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<DigestSignature> {
        // RFC 6979 deterministic nonces (ECDSA) and Ed25519 are both deterministic, so the
        // published vectors regenerate byte for byte.
        let bytes = match &self.key {
            SoftKey::Ed25519(k) => k.sign(digest).to_bytes().to_vec(),
            SoftKey::Secp256k1(k) => {
                let s: k256::ecdsa::Signature = ecdsa_sign(k, digest);
                s.normalize_s().to_der().as_bytes().to_vec()
            }
            SoftKey::P256(k) => {
                let s: p256::ecdsa::Signature = ecdsa_sign(k, digest);
                s.normalize_s().to_der().as_bytes().to_vec()
            }
        };
        Ok(DigestSignature {
            kid: self.kid.clone(),
            alg: self.alg(),
            bytes,
        })
    }
    fn sign_es256(&self, message: &[u8]) -> Result<[u8; 64]> {
        self.es256(message)
    }
    fn sign_xrpl(&self, signing_data: &[u8]) -> Result<Vec<u8>> {
        match &self.key {
            SoftKey::Ed25519(k) => Ok(k.sign(signing_data).to_bytes().to_vec()),
            SoftKey::Secp256k1(k) => {
                let hash = crate::crypto::sha512_half(signing_data);
                let s: k256::ecdsa::Signature =
                    k256::ecdsa::signature::hazmat::PrehashSigner::sign_prehash(k, &hash)
                        .map_err(|e| Error::new(ErrorCode::Internal, format!("sign: {e}")))?;
                Ok(s.normalize_s().to_der().as_bytes().to_vec())
            }
            SoftKey::P256(_) => Err(crate::seams::digest_signer::not_xrpl(&self.kid, self.alg())),
        }
    }
}

impl SoftwareSigner {
    fn es256(&self, message: &[u8]) -> Result<[u8; 64]> {
        match &self.key {
            SoftKey::P256(k) => {
                let s: p256::ecdsa::Signature = k256::ecdsa::signature::Signer::sign(k, message);
                Ok(s.normalize_s().to_bytes().into())
            }
            _ => Err(crate::seams::digest_signer::not_es256(
                &self.kid,
                self.alg(),
            )),
        }
    }
}

fn ecdsa_sign<K, S>(key: &K, digest: &[u8; 32]) -> S
where
    K: k256::ecdsa::signature::Signer<S>,
{
    // `Signer::sign` hashes its message with SHA-256 first: the curve signs SHA-256(D).
    key.sign(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::ecdsa_prehash;

    #[test]
    fn every_algorithm_round_trips_and_ecdsa_signs_sha256_of_digest() {
        let d = [9u8; 32];
        for alg in Alg::ALL {
            let s = SoftwareSigner::from_secret("k", alg, &[5u8; 32]).unwrap();
            let sig = s.sign_digest(&d).unwrap();
            s.public_key().verify_digest(&d, &sig.bytes).unwrap();
            let mut other = d;
            other[0] ^= 1;
            assert!(s.public_key().verify_digest(&other, &sig.bytes).is_err());
        }
        // The ECDSA convention: a prehash verifier over SHA-256(D) accepts the signature.
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        let s = SoftwareSigner::from_secret("k", Alg::ES256, &[5u8; 32]).unwrap();
        let sig = s.sign_digest(&d).unwrap();
        let PublicKey::P256(vk) = s.public_key() else {
            unreachable!()
        };
        let parsed = p256::ecdsa::Signature::from_der(&sig.bytes).unwrap();
        vk.verify_prehash(&ecdsa_prehash(&d), &parsed).unwrap();
    }
}
