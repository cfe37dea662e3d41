//! The signing seam: one key that signs 32-byte domain digests under the MPCP convention
//! (see [`crate::crypto`]). The HSM backend implements [`DigestSigner`] for token keys;
//! `crate::signer::SoftwareSigner` implements it for tests and test vectors.

use std::sync::Arc;

use crate::crypto::{Alg, PublicKey};
use crate::error::Result;

/// A signer shared between threads: what key backends and active keys hand out.
pub type SharedSigner = Arc<dyn DigestSigner>;

/// A signature over a digest, with the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestSignature {
    /// The signing key's kid.
    pub kid: String,
    /// The algorithm used.
    pub alg: Alg,
    /// Signature bytes: 64 bytes for Ed25519, low-S DER for ECDSA.
    pub bytes: Vec<u8>,
}

/// One signing key. Implementations are blocking (an HSM round trip); async callers run them
/// off the runtime. The kid is known before signing because artifacts name their signer
/// inside the signed payload.
pub trait DigestSigner: Send + Sync {
    /// The key's kid.
    fn kid(&self) -> &str;
    /// The key's algorithm.
    fn alg(&self) -> Alg;
    /// The key's public half.
    fn public_key(&self) -> &PublicKey;
    /// Signs the 32-byte digest `D` (Ed25519 over `D`; ECDSA over `SHA-256(D)`, low-S DER).
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<DigestSignature>;
    /// Signs `message` as JOSE ES256 does (ECDSA P-256 over `SHA-256(message)`) and returns
    /// the raw `r || s` pair, low-S: the signature of formats that sign their own bytes
    /// rather than an MPCP digest (SEP-2828 receipt records). ES256 keys only; others are
    /// refused with ALGORITHM_UNSUPPORTED.
    fn sign_es256(&self, message: &[u8]) -> Result<[u8; 64]>;
    /// Signs an XRPL transaction's signing data (`STX\0` || canonical fields) as the ledger
    /// verifies it: secp256k1 ECDSA over SHA-512-half of the data, low-S DER ("fully
    /// canonical"); Ed25519 over the data itself. ES256 keys are refused with
    /// ALGORITHM_UNSUPPORTED (the ledger has no P-256 accounts).
    fn sign_xrpl(&self, signing_data: &[u8]) -> Result<Vec<u8>>;
}

/// The refusal of [`DigestSigner::sign_xrpl`] by a P-256 key.
pub fn not_xrpl(kid: &str, alg: Alg) -> crate::error::Error {
    crate::error::Error::new(
        crate::error::ErrorCode::AlgorithmUnsupported,
        format!("key {kid} is {alg}; XRPL accounts are secp256k1 (ES256K) or Ed25519 (EdDSA)"),
    )
}

/// The refusal of [`DigestSigner::sign_es256`] by a key of another algorithm.
pub fn not_es256(kid: &str, alg: Alg) -> crate::error::Error {
    crate::error::Error::new(
        crate::error::ErrorCode::AlgorithmUnsupported,
        format!("key {kid} is {alg}; only ES256 keys sign ES256 messages"),
    )
}
