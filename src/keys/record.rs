//! What the key registry stores per key: the record, its lifecycle state, and the kid format.
//!
//! # kid format
//!
//! `<role>-<alg>-<t>` where `<role>` is the key role (`grant-signing`, `root`, `audit`),
//! `<alg>` the JOSE algorithm in lower case (`eddsa`, `es256k`, `es256`) and `<t>` the first
//! 16 hex digits (64 bits) of the key's RFC 7638 JWK thumbprint, i.e. SHA-256 over the
//! canonical JSON of its required public members (`crv`, `kty`, `x`[, `y`]). Example:
//! `grant-signing-eddsa-3f0c1a2b4d5e6f70`. The kid is therefore stable (a function of the public
//! key alone), unique in practice, and checkable by anyone holding the published JWK.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::canonical::canonical_bytes;
use crate::crypto::{Alg, PublicKey};
use crate::error::{Error, ErrorCode, Result};
use crate::jwk::Jwk;
use crate::keys::KeyRole;

/// Lifecycle state of a key.
///
/// `pending` -> `active` -> `retired`; `revoked` is reachable from pending, active and
/// retired; `destroyed` only from revoked (after the destruction wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyState {
    /// Generated and published (so caches learn it), signs nothing yet.
    Pending,
    /// The role's signing key (at most one per role).
    Active,
    /// Signs nothing new; still published active so issued artifacts keep verifying.
    Retired,
    /// Emergency revocation: published `active: false`, never signs again.
    Revoked,
    /// Token objects removed; still listed `active: false` for audit.
    Destroyed,
}

impl KeyState {
    /// Name used in listings and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
            KeyState::Revoked => "revoked",
            KeyState::Destroyed => "destroyed",
        }
    }

    /// Whether a key in this state is published `active: true` (before the algorithm policy
    /// is applied): pending, active and retired keys are; revoked and destroyed keys are not.
    pub fn published_active(self) -> bool {
        matches!(
            self,
            KeyState::Pending | KeyState::Active | KeyState::Retired
        )
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One key as the registry stores it (JSON in the sled tree `keys`, keyed by kid).
/// Timestamps are RFC 3339 UTC with whole seconds.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRecord {
    /// Key id (see the module documentation for the format).
    pub kid: String,
    /// Registry-wide creation sequence number (orders keys; "oldest pending" uses it).
    pub seq: u64,
    /// Role the key serves.
    pub role: KeyRole,
    /// Signature algorithm.
    pub alg: Alg,
    /// PKCS#11 CKA_ID of the key objects, lowercase hex.
    pub object_id: String,
    /// PKCS#11 CKA_LABEL of the key objects.
    pub label: String,
    /// Public JWK (kid, use, kty, crv, x[, y], alg; `active` is computed at publication).
    pub public_jwk: Jwk,
    /// Lifecycle state.
    pub state: KeyState,
    /// When the key was generated.
    pub created_at: String,
    /// When it became active.
    pub activated_at: Option<String>,
    /// When it was retired.
    pub retired_at: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// Earliest destruction time, while a destruction is scheduled.
    pub destroy_after: Option<String>,
    /// When the token objects were destroyed.
    pub destroyed_at: Option<String>,
    /// Revocation reason as the operator gave it.
    pub reason: Option<String>,
}

impl KeyRecord {
    /// The CKA_ID bytes.
    pub fn object_id_bytes(&self) -> Result<Vec<u8>> {
        hex::decode(&self.object_id).map_err(|_| {
            Error::new(
                ErrorCode::StoreError,
                format!("key {}: stored object id is not hex", self.kid),
            )
        })
    }

    /// The public key.
    pub fn public_key(&self) -> Result<PublicKey> {
        PublicKey::from_jwk(&self.public_jwk)
    }

    /// The JWK as published, with `active` set as given.
    pub fn published_jwk(&self, active: bool) -> Jwk {
        let mut jwk = self.public_jwk.clone();
        jwk.active = Some(active);
        jwk
    }

    /// Serialised form stored in sled.
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| {
            Error::new(
                ErrorCode::Internal,
                format!("key record serialisation: {e}"),
            )
        })
    }

    /// Parses a stored record.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<KeyRecord> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::new(ErrorCode::StoreError, format!("corrupt key record: {e}")))
    }
}

/// RFC 7638 JWK thumbprint (SHA-256) of a public key.
pub fn jwk_thumbprint(public: &PublicKey) -> Result<[u8; 32]> {
    let alg = public.alg();
    let (x, y) = public.coordinates();
    let mut members = serde_json::Map::new();
    members.insert("crv".into(), alg.crv().into());
    members.insert("kty".into(), alg.kty().into());
    members.insert("x".into(), x.into());
    if let Some(y) = y {
        members.insert("y".into(), y.into());
    }
    // RFC 7638 asks for lexicographic member order without whitespace: exactly JCS here.
    let bytes = canonical_bytes(&serde_json::Value::Object(members))?;
    Ok(Sha256::digest(&bytes).into())
}

/// The kid of a key of `role` (see the module documentation).
pub fn kid_for(role: KeyRole, public: &PublicKey) -> Result<String> {
    let tp = jwk_thumbprint(public)?;
    Ok(format!(
        "{}-{}-{}",
        role.as_str(),
        public.alg().as_str().to_ascii_lowercase(),
        hex::encode(&tp[..8])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::{DigestSigner, SoftwareSigner};

    #[test]
    fn thumbprint_matches_rfc7638_example_form_and_kid_is_stable() {
        // RFC 8037 appendix A.3: thumbprint of the Ed25519 example key.
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kid": "k", "kty": "OKP", "crv": "Ed25519", "x": x
        }))
        .unwrap();
        let pk = PublicKey::from_jwk(&jwk).unwrap();
        let tp = jwk_thumbprint(&pk).unwrap();
        assert_eq!(
            crate::crypto::b64url_encode(&tp),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        assert_eq!(
            kid_for(KeyRole::GrantSigning, &pk).unwrap(),
            format!("grant-signing-eddsa-{}", hex::encode(&tp[..8]))
        );
        let s = SoftwareSigner::from_secret("x", Alg::ES256K, &[3u8; 32]).unwrap();
        let kid = kid_for(KeyRole::Root, s.public_key()).unwrap();
        assert!(kid.starts_with("root-es256k-") && kid.len() == "root-es256k-".len() + 16);
        assert_eq!(kid, kid_for(KeyRole::Root, s.public_key()).unwrap());
    }
}
