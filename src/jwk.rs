//! Public JWKs and key-set documents (`/.well-known/mpcp-keys.json`).
//!
//! A published key carries kid, use "sig", kty, crv, x (and y for EC), alg and `active`
//! (false = revoked: verifiers reject its signatures, and it stays listed for audit). A key
//! carrying private material (`d`) is refused wherever a public key is expected.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crypto::{Alg, PublicKey, b64url_decode_field};
use crate::error::{Error, ErrorCode, Result};

/// A JSON Web Key as MPCP publishes it. Unknown members are kept in `extra`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key identifier (issuerKeyId / bundleKeyId refer to it).
    pub kid: String,
    /// Key use; "sig" when present.
    #[serde(rename = "use")]
    pub use_: Option<String>,
    /// Key type: OKP or EC.
    pub kty: String,
    /// Curve: Ed25519, secp256k1 or P-256.
    pub crv: String,
    /// base64url x coordinate (or the Ed25519 public key).
    pub x: String,
    /// base64url y coordinate (EC only).
    pub y: Option<String>,
    /// JOSE algorithm; must agree with kty/crv.
    pub alg: Option<String>,
    /// false = revoked. Absent means active.
    pub active: Option<bool>,
    /// Private key member; present only so it can be detected and refused.
    pub d: Option<Value>,
    /// Members this implementation does not interpret, preserved as given.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Jwk {
    /// The key's algorithm: derived from kty/crv, refused when `alg` disagrees.
    pub fn algorithm(&self) -> Result<Alg> {
        let implied = Alg::from_kty_crv(&self.kty, &self.crv)?;
        if let Some(alg) = &self.alg
            && alg != implied.as_str()
        {
            return Err(Error::field(
                ErrorCode::KeyAlgMismatch,
                "alg",
                format!(
                    "key {:?}: alg {alg:?} conflicts with kty {} crv {}",
                    self.kid, self.kty, self.crv
                ),
            ));
        }
        Ok(implied)
    }

    /// Whether the key may verify signatures (not revoked).
    pub fn is_active(&self) -> bool {
        self.active != Some(false)
    }

    /// Checks that this is a well-formed public signing key and returns it.
    pub fn validate_public(&self) -> Result<PublicKey> {
        if self.d.is_some() {
            return Err(Error::field(
                ErrorCode::KeyPrivateMaterial,
                "d",
                format!("key {:?} contains private key material", self.kid),
            ));
        }
        if self.kid.is_empty() {
            return Err(Error::field(
                ErrorCode::KeyFormatInvalid,
                "kid",
                "empty kid",
            ));
        }
        if let Some(u) = &self.use_
            && u != "sig"
        {
            return Err(Error::field(
                ErrorCode::KeyFormatInvalid,
                "use",
                format!("key {:?} has use {u:?}, expected \"sig\"", self.kid),
            ));
        }
        PublicKey::from_jwk(self)
    }
}

impl Jwk {
    /// Checks the members trust-bundles.md § Key Format requires of every embedded key: a
    /// non-empty `kid` and `use` exactly "sig" (a key without `use` is refused, not assumed
    /// to be a signing key). Refusal is KEY_FORMAT_INVALID on `kid` or `use`, relative to the
    /// key (callers prefix its path with [`Error::within`]).
    pub fn check_key_format(&self) -> Result<()> {
        if self.kid.is_empty() {
            return Err(Error::field(
                ErrorCode::KeyFormatInvalid,
                "kid",
                "every key must have a non-empty kid",
            ));
        }
        if self.use_.as_deref() != Some("sig") {
            return Err(Error::field(
                ErrorCode::KeyFormatInvalid,
                "use",
                format!(
                    "key {:?} must have use \"sig\", got {:?}",
                    self.kid,
                    self.use_.as_deref()
                ),
            ));
        }
        Ok(())
    }
}

/// A key-set document: `{"version":"1.0","keys":[...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    /// Document version, "1.0".
    pub version: String,
    /// The keys, revoked ones included (active:false).
    pub keys: Vec<Jwk>,
    /// Members this implementation does not interpret (e.g. the implemented spec version).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl KeySet {
    /// Parses and validates a key set from a strict JSON value: version 1.0, every key a valid
    /// public key, kids unique.
    pub fn from_value(value: &Value) -> Result<KeySet> {
        let set: KeySet = serde_json::from_value(value.clone())
            .map_err(|e| Error::new(ErrorCode::KeySetInvalid, format!("not a key set: {e}")))?;
        set.validate()?;
        Ok(set)
    }

    /// Validates version, keys and kid uniqueness.
    pub fn validate(&self) -> Result<()> {
        if self.version != "1.0" {
            return Err(Error::field(
                ErrorCode::KeySetInvalid,
                "version",
                format!("key set version {:?} is not 1.0", self.version),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            k.validate_public()
                .map_err(|e| e.within(&format!("keys[{i}]")))?;
            if !seen.insert(k.kid.as_str()) {
                return Err(Error::field(
                    ErrorCode::KeySetInvalid,
                    format!("keys[{i}].kid"),
                    format!("duplicate kid {:?}", k.kid),
                ));
            }
        }
        Ok(())
    }

    /// The key with `kid`, if listed.
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}

/// The JWK conversions of [`PublicKey`]: they live here, on top of [`crate::crypto`], so that
/// the algorithms know nothing of the JWK encoding.
impl PublicKey {
    /// The key from a public JWK (kty/crv/x/y; `alg`, if present, must agree; `d` refused).
    pub fn from_jwk(jwk: &Jwk) -> Result<PublicKey> {
        let alg = jwk.algorithm()?;
        let x = b64url_decode_field(&jwk.x, "x")?;
        match alg {
            Alg::EdDSA => {
                if jwk.y.is_some() {
                    return Err(Error::field(
                        ErrorCode::KeyFormatInvalid,
                        "y",
                        "OKP key has y",
                    ));
                }
                PublicKey::from_bytes(alg, &x)
            }
            Alg::ES256K | Alg::ES256 => {
                let y = jwk.y.as_deref().ok_or_else(|| {
                    Error::field(ErrorCode::KeyFormatInvalid, "y", "EC key without y")
                })?;
                let y = b64url_decode_field(y, "y")?;
                if x.len() != 32 || y.len() != 32 {
                    return Err(Error::new(
                        ErrorCode::KeyFormatInvalid,
                        "EC coordinates must be 32 bytes each",
                    ));
                }
                let mut sec1 = Vec::with_capacity(65);
                sec1.push(0x04);
                sec1.extend_from_slice(&x);
                sec1.extend_from_slice(&y);
                PublicKey::from_bytes(alg, &sec1)
            }
        }
    }

    /// A public JWK for this key (`use: sig`, `alg` set, `active` as given).
    pub fn to_jwk(&self, kid: &str, active: bool) -> Jwk {
        let (x, y) = self.coordinates();
        let alg = self.alg();
        Jwk {
            kid: kid.to_string(),
            use_: Some("sig".to_string()),
            kty: alg.kty().to_string(),
            crv: alg.crv().to_string(),
            x,
            y,
            alg: Some(alg.as_str().to_string()),
            active: Some(active),
            d: None,
            extra: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::parse_strict;

    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn ed(extra: &str) -> Value {
        parse_strict(
            format!(
                r#"{{"version":"1.0","keys":[{{"kid":"k1","use":"sig","kty":"OKP","crv":"Ed25519","x":"{ED_X}"{extra}}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn accepts_public_and_refuses_bad_keys() {
        let set = KeySet::from_value(&ed(r#","alg":"EdDSA","active":false,"x5t":"keep""#)).unwrap();
        assert!(!set.keys[0].is_active());
        assert_eq!(set.keys[0].extra["x5t"], "keep");
        let code = |extra: &str| KeySet::from_value(&ed(extra)).unwrap_err().code;
        assert_eq!(code(r#","alg":"ES256K""#), ErrorCode::KeyAlgMismatch);
        assert_eq!(code(r#","d":"AAAA""#), ErrorCode::KeyPrivateMaterial);
        assert_eq!(code(r#","y":"AAAA""#), ErrorCode::KeyFormatInvalid);
        let dup = parse_strict(
            format!(
                r#"{{"version":"1.0","keys":[{{"kid":"k","kty":"OKP","crv":"Ed25519","x":"{ED_X}"}},{{"kid":"k","kty":"OKP","crv":"Ed25519","x":"{ED_X}"}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            KeySet::from_value(&dup).unwrap_err().code,
            ErrorCode::KeySetInvalid
        );
    }
}
