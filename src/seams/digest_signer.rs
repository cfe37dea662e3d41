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
}
