//! Signature algorithms and the MPCP signing convention (SPEC-NOTES "Signatures"):
//! every signature covers the 32-byte domain digest `D`.
//! - EdDSA: pure Ed25519 over `D`.
//! - ES256K / ES256: ECDSA with SHA-256 over `D` (the curve signs `SHA-256(D)`), DER-encoded;
//!   ES256K must be low-S, and signers of this project emit low-S for both curves.
//! - Signatures travel as base64url without padding; standard base64 is accepted on input.

use base64::Engine;
use base64::engine::general_purpose::{
    STANDARD_PAD_INDIFFERENT, URL_SAFE_NO_PAD, URL_SAFE_NO_PAD_INDIFFERENT,
};
use ecdsa_core::signature::Verifier;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorCode, Result};

// Both curves re-export the same `ecdsa` crate; name it once.
use k256::ecdsa as ecdsa_core;

/// The signature algorithms of MPCP v1.0 (JOSE names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Alg {
    /// Ed25519 (JWK kty OKP, crv Ed25519).
    EdDSA,
    /// ECDSA secp256k1 with SHA-256 (kty EC, crv secp256k1).
    ES256K,
    /// ECDSA P-256 with SHA-256 (kty EC, crv P-256).
    ES256,
}

impl Alg {
    /// Every algorithm this implementation can verify.
    pub const ALL: [Alg; 3] = [Alg::EdDSA, Alg::ES256K, Alg::ES256];

    /// JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::ES256K => "ES256K",
            Alg::ES256 => "ES256",
        }
    }

    /// Parses a JOSE name; unknown names are refused.
    pub fn parse(s: &str) -> Result<Alg> {
        Alg::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::AlgorithmUnsupported,
                    format!("unsupported algorithm {s:?}"),
                )
            })
    }

    /// JWK `kty` of keys for this algorithm.
    pub fn kty(self) -> &'static str {
        match self {
            Alg::EdDSA => "OKP",
            Alg::ES256K | Alg::ES256 => "EC",
        }
    }

    /// JWK `crv` of keys for this algorithm.
    pub fn crv(self) -> &'static str {
        match self {
            Alg::EdDSA => "Ed25519",
            Alg::ES256K => "secp256k1",
            Alg::ES256 => "P-256",
        }
    }

    /// The algorithm implied by a JWK's kty/crv pair.
    pub fn from_kty_crv(kty: &str, crv: &str) -> Result<Alg> {
        Alg::ALL
            .into_iter()
            .find(|a| a.kty() == kty && a.crv() == crv)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::KeyFormatInvalid,
                    format!("unsupported key type kty={kty:?} crv={crv:?}"),
                )
            })
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Version-gated algorithm deprecation, as the verifier sees it: whether an artifact signed
/// with `alg` and issued at `issued_at` is still acceptable at `now`. An artifact without
/// `issuedAt` counts as newly issued (`issued_at = None` is judged as of `now`).
/// Implemented by the algorithm policy (policies/algorithms.toml).
pub trait AlgorithmGate: Send + Sync {
    /// Ok, or ALGORITHM_DEPRECATED / ALGORITHM_UNSUPPORTED.
    fn check_artifact(
        &self,
        alg: Alg,
        issued_at: Option<time::OffsetDateTime>,
        now: time::OffsetDateTime,
    ) -> Result<()>;
}

/// A verification key of one of the supported algorithms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Ed25519 public key.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// secp256k1 public key.
    Secp256k1(k256::ecdsa::VerifyingKey),
    /// P-256 public key.
    P256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// The key's algorithm.
    pub fn alg(&self) -> Alg {
        match self {
            PublicKey::Ed25519(_) => Alg::EdDSA,
            PublicKey::Secp256k1(_) => Alg::ES256K,
            PublicKey::P256(_) => Alg::ES256,
        }
    }

    /// Ed25519 key from its 32 bytes; EC keys from SEC1 bytes (compressed or uncompressed).
    pub fn from_bytes(alg: Alg, bytes: &[u8]) -> Result<PublicKey> {
        let bad = || {
            Error::new(
                ErrorCode::KeyFormatInvalid,
                format!("not a valid {alg} public key"),
            )
        };
        Ok(match alg {
            Alg::EdDSA => {
                let arr: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
                PublicKey::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&arr).map_err(|_| bad())?,
                )
            }
            Alg::ES256K => PublicKey::Secp256k1(
                k256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map_err(|_| bad())?,
            ),
            Alg::ES256 => PublicKey::P256(
                p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map_err(|_| bad())?,
            ),
        })
    }

    /// JWK coordinates: (x, Some(y)) for EC keys, (x, None) for Ed25519; base64url, no padding.
    pub fn coordinates(&self) -> (String, Option<String>) {
        let ec = |point: &[u8]| {
            (
                URL_SAFE_NO_PAD.encode(&point[1..33]),
                Some(URL_SAFE_NO_PAD.encode(&point[33..65])),
            )
        };
        match self {
            PublicKey::Ed25519(k) => (URL_SAFE_NO_PAD.encode(k.as_bytes()), None),
            PublicKey::Secp256k1(k) => ec(k.to_sec1_point(false).as_bytes()),
            PublicKey::P256(k) => ec(k.to_sec1_point(false).as_bytes()),
        }
    }

    /// Verifies `signature` over the 32-byte digest under the MPCP convention. Returns
    /// `SignatureEncodingInvalid` for undecodable bytes, `SignatureHighS` for a high-S
    /// secp256k1 signature and `SignatureInvalid` when the signature does not verify.
    pub fn verify_digest(&self, digest: &[u8; 32], signature: &[u8]) -> Result<()> {
        let invalid = || Error::new(ErrorCode::SignatureInvalid, "signature does not verify");
        let encoding = |what: &str| {
            Error::new(
                ErrorCode::SignatureEncodingInvalid,
                format!("signature is not a valid {what}"),
            )
        };
        match self {
            PublicKey::Ed25519(k) => {
                let sig = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| encoding("64-byte Ed25519 signature"))?;
                k.verify_strict(digest, &sig).map_err(|_| invalid())
            }
            PublicKey::Secp256k1(k) => {
                let sig = k256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| encoding("DER ECDSA signature"))?;
                if bool::from(k256::elliptic_curve::scalar::IsHigh::is_high(&*sig.s())) {
                    return Err(Error::new(
                        ErrorCode::SignatureHighS,
                        "secp256k1 signature is not low-S (s > n/2)",
                    ));
                }
                k.verify(digest, &sig).map_err(|_| invalid())
            }
            PublicKey::P256(k) => {
                // Strict DER and scalar ranges checked by p256 (its own error code); the
                // curve arithmetic is ring's, about 3.5x faster than p256's, which made the
                // signing self-check cost more than the ES256 signature itself. Same scheme:
                // ECDSA P-256 with SHA-256 over `D`.
                p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| encoding("DER ECDSA signature"))?;
                let point = k.to_sec1_point(false);
                ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ECDSA_P256_SHA256_ASN1,
                    point.as_bytes(),
                )
                .verify(digest, signature)
                .map_err(|_| invalid())
            }
        }
    }
}

/// SHA-512-half: the first 32 bytes of SHA-512, the XRPL's hash (what a secp256k1 account
/// key signs of a transaction's signing data).
pub fn sha512_half(data: &[u8]) -> [u8; 32] {
    let full = sha2::Sha512::digest(data);
    let mut out = [0u8; 32];
    out.copy_from_slice(&full[..32]);
    out
}

impl PublicKey {
    /// The key's compact bytes: 32 for Ed25519, SEC1 compressed (33) for EC keys.
    pub fn compressed_bytes(&self) -> Vec<u8> {
        match self {
            PublicKey::Ed25519(k) => k.as_bytes().to_vec(),
            PublicKey::Secp256k1(k) => k.to_sec1_point(true).as_bytes().to_vec(),
            PublicKey::P256(k) => k.to_sec1_point(true).as_bytes().to_vec(),
        }
    }

    /// Verifies an XRPL transaction signature over `signing_data` as a ledger node does:
    /// secp256k1 low-S DER over SHA-512-half of the data, Ed25519 over the data. P-256 keys
    /// sign no XRPL transaction (ALGORITHM_UNSUPPORTED).
    pub fn verify_xrpl(&self, signing_data: &[u8], signature: &[u8]) -> Result<()> {
        let invalid = || Error::new(ErrorCode::SignatureInvalid, "signature does not verify");
        match self {
            PublicKey::Ed25519(k) => {
                let sig = ed25519_dalek::Signature::from_slice(signature).map_err(|_| {
                    Error::new(
                        ErrorCode::SignatureEncodingInvalid,
                        "signature is not a valid 64-byte Ed25519 signature",
                    )
                })?;
                k.verify_strict(signing_data, &sig).map_err(|_| invalid())
            }
            PublicKey::Secp256k1(k) => {
                let sig = k256::ecdsa::Signature::from_der(signature).map_err(|_| {
                    Error::new(
                        ErrorCode::SignatureEncodingInvalid,
                        "signature is not a valid DER ECDSA signature",
                    )
                })?;
                if bool::from(k256::elliptic_curve::scalar::IsHigh::is_high(&*sig.s())) {
                    return Err(Error::new(
                        ErrorCode::SignatureHighS,
                        "secp256k1 signature is not low-S (not fully canonical)",
                    ));
                }
                k256::ecdsa::signature::hazmat::PrehashVerifier::verify_prehash(
                    k,
                    &sha512_half(signing_data),
                    &sig,
                )
                .map_err(|_| invalid())
            }
            PublicKey::P256(_) => Err(Error::new(
                ErrorCode::AlgorithmUnsupported,
                "P-256 keys sign no XRPL transaction",
            )),
        }
    }
}

/// The message an ECDSA token signs for digest `D`: `SHA-256(D)` (CKM_ECDSA takes a hash).
pub fn ecdsa_prehash(digest: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(digest).into()
}

/// Turns a raw `r||s` ECDSA signature (as PKCS#11 CKM_ECDSA returns it) into low-S DER.
pub fn ecdsa_raw_to_der_low_s(alg: Alg, raw: &[u8]) -> Result<Vec<u8>> {
    let bad = || {
        Error::new(
            ErrorCode::SignatureEncodingInvalid,
            format!(
                "token returned a malformed {alg} signature ({} bytes)",
                raw.len()
            ),
        )
    };
    match alg {
        Alg::ES256K => {
            let sig = k256::ecdsa::Signature::from_slice(raw).map_err(|_| bad())?;
            Ok(sig.normalize_s().to_der().as_bytes().to_vec())
        }
        Alg::ES256 => {
            let sig = p256::ecdsa::Signature::from_slice(raw).map_err(|_| bad())?;
            Ok(sig.normalize_s().to_der().as_bytes().to_vec())
        }
        Alg::EdDSA => Err(Error::new(
            ErrorCode::Internal,
            "EdDSA signatures are not DER",
        )),
    }
}

/// The raw `r || s` of a P-256 signature as the token returned it, checked and normalised
/// to low-S (SIGNATURE_ENCODING_INVALID when it is not a signature).
pub fn p256_raw_low_s(raw: &[u8]) -> Result<[u8; 64]> {
    let sig = p256::ecdsa::Signature::from_slice(raw).map_err(|_| {
        Error::new(
            ErrorCode::SignatureEncodingInvalid,
            format!(
                "token returned a malformed ES256 signature ({} bytes)",
                raw.len()
            ),
        )
    })?;
    Ok(sig.normalize_s().to_bytes().into())
}

/// Returns the other member `(r, n - s)` of a secp256k1 signature's malleability pair, in
/// DER. Used to build negative test vectors (a verifier must refuse the high-S form).
pub fn secp256k1_flip_s(der: &[u8]) -> Result<Vec<u8>> {
    use k256::elliptic_curve::ff::PrimeField;
    let sig = k256::ecdsa::Signature::from_der(der).map_err(|_| {
        Error::new(
            ErrorCode::SignatureEncodingInvalid,
            "not a DER secp256k1 signature",
        )
    })?;
    let (r, s) = sig.split_scalars();
    let flipped = k256::ecdsa::Signature::from_scalars(r.to_repr(), (-*s).to_repr())
        .map_err(|_| Error::new(ErrorCode::Internal, "cannot rebuild signature"))?;
    Ok(flipped.to_der().as_bytes().to_vec())
}

/// Encodes signature bytes as base64url without padding.
pub fn b64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a signature: base64url (the MPCP form) or standard base64, padded or not. A string
/// mixing both alphabets is refused.
pub fn decode_signature(s: &str) -> Result<Vec<u8>> {
    let url = s.contains(['-', '_']);
    let std = s.contains(['+', '/']);
    let res = match (url, std) {
        (true, true) => None,
        (false, true) => STANDARD_PAD_INDIFFERENT.decode(s).ok(),
        _ => URL_SAFE_NO_PAD_INDIFFERENT.decode(s).ok(),
    };
    res.filter(|b| !b.is_empty()).ok_or_else(|| {
        Error::field(
            ErrorCode::SignatureEncodingInvalid,
            "signature",
            "signature is not base64url or base64",
        )
    })
}

pub(crate) fn b64url_decode_field(s: &str, field: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| {
        Error::field(
            ErrorCode::KeyFormatInvalid,
            field,
            format!("JWK member {field} is not base64url without padding"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_high_s_is_normalised() {
        use k256::ecdsa::{Signature, SigningKey, signature::Signer};
        let sk = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let d = [1u8; 32];
        let sig: Signature = sk.sign(&d);
        let high_der = secp256k1_flip_s(sig.to_der().as_bytes()).unwrap();
        let high = Signature::from_der(&high_der).unwrap();
        let pk = PublicKey::Secp256k1(*sk.verifying_key());
        assert_eq!(
            pk.verify_digest(&d, &high_der).unwrap_err().code,
            ErrorCode::SignatureHighS
        );
        let fixed = ecdsa_raw_to_der_low_s(Alg::ES256K, &high.to_bytes()).unwrap();
        pk.verify_digest(&d, &fixed).unwrap();
    }

    #[test]
    fn p256_verification_agrees_with_the_p256_crate() {
        use p256::ecdsa::{Signature, SigningKey, signature::Signer};
        for i in 1..=16u8 {
            let sk = SigningKey::from_slice(&[i; 32]).unwrap();
            let pk = PublicKey::P256(*sk.verifying_key());
            let d = [i.wrapping_mul(31); 32];
            let sig: Signature = sk.sign(&d);
            let der = sig.to_der().as_bytes().to_vec();
            pk.verify_digest(&d, &der).unwrap();
            assert!(sk.verifying_key().verify(&d, &sig).is_ok());
            // The other S of the same signature: P-256 has no low-S rule, both accept it.
            let (r, s) = sig.split_scalars();
            let flipped = Signature::from_scalars(*r, -*s).unwrap();
            assert!(sk.verifying_key().verify(&d, &flipped).is_ok());
            pk.verify_digest(&d, flipped.to_der().as_bytes()).unwrap();
            let mut other = d;
            other[0] ^= 1;
            assert_eq!(
                pk.verify_digest(&other, &der).unwrap_err().code,
                ErrorCode::SignatureInvalid
            );
            let wrong = PublicKey::P256(
                *SigningKey::from_slice(&[i + 100; 32])
                    .unwrap()
                    .verifying_key(),
            );
            assert_eq!(
                wrong.verify_digest(&d, &der).unwrap_err().code,
                ErrorCode::SignatureInvalid
            );
            assert_eq!(
                pk.verify_digest(&d, &sig.to_bytes()).unwrap_err().code,
                ErrorCode::SignatureEncodingInvalid
            );
        }
    }

    #[test]
    fn signature_alphabets() {
        assert_eq!(decode_signature("-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode_signature("+/8=").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode_signature("+/8").unwrap(), vec![0xfb, 0xff]);
        assert!(decode_signature("-/8").is_err());
        assert!(decode_signature("").is_err());
        assert!(decode_signature("a b").is_err());
    }
}
