//! Trust Bundles: signed sets of approved issuers and their keys for offline verifiers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    check_id, check_identifier, check_text_tree, check_version, from_value, parse_time,
    parse_window,
};
use crate::error::{Error, ErrorCode, Result};
use crate::jwk::Jwk;

/// Longest lifetime any bundle may have (low-assurance IoT profile). Issuance applies the
/// stricter per-profile bounds of policies/; a verifier refuses anything beyond this.
pub const MAX_BUNDLE_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Geographic scope of a bundle.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Geography {
    /// Region name.
    pub region: Option<String>,
    /// ISO 3166 country codes.
    pub country_codes: Option<Vec<String>>,
}

/// The keys of one approved issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustBundleIssuer {
    /// Issuer identifier (must be in approvedIssuers).
    pub issuer: String,
    /// The issuer's public keys (never revoked ones).
    pub keys: Vec<Jwk>,
}

/// A Trust Bundle.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct TrustBundle {
    pub version: String,
    pub bundle_id: String,
    pub bundle_issuer: String,
    pub bundle_key_id: String,
    pub category: String,
    pub merchant: Option<String>,
    pub geography: Option<Geography>,
    pub approved_issuers: Vec<String>,
    pub issuers: Vec<TrustBundleIssuer>,
    pub issued_at: Option<String>,
    pub expires_at: String,
    /// Grants revoked before this bundle was issued (for offline verifiers).
    pub revoked_grant_ids: Option<Vec<String>>,
    pub signature: Option<String>,
    /// Members this implementation does not interpret, preserved exactly.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl TrustBundle {
    /// Parses and validates a bundle from a strict value: no control or format character in
    /// any string or member name ([`check_text_tree`]), every embedded key with a string
    /// `kid` (KEY_FORMAT_INVALID at its path rather than a bare serde error), then
    /// [`TrustBundle::validate`].
    pub fn from_value(value: &Value) -> Result<TrustBundle> {
        check_text_tree(value)?;
        check_kids_present(value)?;
        let b: TrustBundle = from_value(value, "TrustBundle")?;
        b.validate()?;
        Ok(b)
    }

    /// Validates structure: bundleId by the identifier rule, every embedded issuer approved,
    /// every key public, of the Key Format (kid, use "sig") and active, timestamps, lifetime
    /// within [`MAX_BUNDLE_LIFETIME`].
    pub fn validate(&self) -> Result<()> {
        check_version(&self.version)?;
        check_identifier(&self.bundle_id, "bundleId")?;
        check_id(&self.bundle_issuer, "bundleIssuer")?;
        check_id(&self.bundle_key_id, "bundleKeyId")?;
        check_id(&self.category, "category")?;
        let expires = parse_time(&self.expires_at, "expiresAt")?;
        if let Some(issued) = &self.issued_at {
            let (issued, _) = parse_window(issued, &self.expires_at)?;
            if expires - issued > MAX_BUNDLE_LIFETIME {
                return Err(Error::field(
                    ErrorCode::LifetimeExceeded,
                    "expiresAt",
                    "bundle lifetime exceeds 30 days",
                ));
            }
        }
        for (i, entry) in self.issuers.iter().enumerate() {
            let at = format!("issuers[{i}]");
            if !self.approved_issuers.contains(&entry.issuer) {
                return Err(Error::field(
                    ErrorCode::IssuerNotApproved,
                    format!("{at}.issuer"),
                    format!("issuer {:?} is not in approvedIssuers", entry.issuer),
                ));
            }
            for (j, k) in entry.keys.iter().enumerate() {
                let kat = format!("{at}.keys[{j}]");
                k.validate_public().map_err(|e| e.within(&kat))?;
                k.check_key_format().map_err(|e| e.within(&kat))?;
                if !k.is_active() {
                    return Err(Error::field(
                        ErrorCode::KeyRevoked,
                        kat,
                        format!("bundle embeds revoked key {:?}", k.kid),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The key `kid` of `issuer`, if the issuer is approved and embeds it.
    pub fn find_key(&self, issuer: &str, kid: &str) -> Option<&Jwk> {
        if !self.approved_issuers.iter().any(|a| a == issuer) {
            return None;
        }
        self.issuers
            .iter()
            .filter(|e| e.issuer == issuer)
            .flat_map(|e| e.keys.iter())
            .find(|k| k.kid == kid)
    }
}

/// `issuers[i].keys[j].kid` must be a string; typed parsing would refuse its absence too, but
/// without the key's path.
fn check_kids_present(value: &Value) -> Result<()> {
    let issuers = value.get("issuers").and_then(Value::as_array);
    for (i, entry) in issuers.into_iter().flatten().enumerate() {
        let keys = entry.get("keys").and_then(Value::as_array);
        for (j, key) in keys.into_iter().flatten().enumerate() {
            if key.is_object() && !key.get("kid").is_some_and(Value::is_string) {
                return Err(Error::field(
                    ErrorCode::KeyFormatInvalid,
                    format!("issuers[{i}].keys[{j}].kid"),
                    "every embedded key must have a string kid",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn base() -> Value {
        json!({
            "version": "1.0",
            "bundleId": "bundle-eu-ev-001",
            "bundleIssuer": "did:web:root.example.com",
            "bundleKeyId": "root-1",
            "category": "ev-charging",
            "merchant": "did:web:chargers.example.com",
            "geography": {"region": "EU", "countryCodes": ["DE"]},
            "approvedIssuers": ["did:web:pa.example.com", "did:web:other.example.com"],
            "issuers": [
                {"issuer": "did:web:pa.example.com", "keys": [
                    {"kid": "pa-1", "use": "sig", "kty": "OKP", "crv": "Ed25519", "x": ED_X}
                ]},
                {"issuer": "did:web:other.example.com", "keys": [
                    {"kid": "other-1", "use": "sig", "kty": "OKP", "crv": "Ed25519", "x": ED_X}
                ]}
            ],
            "issuedAt": "2026-06-01T06:00:00Z",
            "expiresAt": "2026-06-01T18:00:00Z"
        })
    }

    fn refusal_with(f: impl FnOnce(&mut Value)) -> (ErrorCode, String) {
        let mut v = base();
        f(&mut v);
        match TrustBundle::from_value(&v) {
            Ok(_) => panic!("accepted: {v}"),
            Err(e) => (e.code, e.field.unwrap_or_default()),
        }
    }

    #[test]
    fn valid_bundle_passes() {
        TrustBundle::from_value(&base()).unwrap();
    }

    #[test]
    fn every_embedded_key_has_kid_and_use_sig() {
        use ErrorCode::*;
        fn key(v: &mut Value, i: usize) -> &mut serde_json::Map<String, Value> {
            v["issuers"][i]["keys"][0].as_object_mut().unwrap()
        }
        type Edit = fn(&mut Value);
        let cases: [(Edit, &str); 6] = [
            (
                |v| {
                    key(v, 1).remove("use");
                },
                "issuers[1].keys[0].use",
            ),
            (
                |v| {
                    key(v, 1).insert("use".into(), json!("enc"));
                },
                "issuers[1].keys[0].use",
            ),
            (
                |v| {
                    key(v, 0).insert("use".into(), Value::Null);
                },
                "issuers[0].keys[0].use",
            ),
            (
                |v| {
                    key(v, 1).remove("kid");
                },
                "issuers[1].keys[0].kid",
            ),
            (
                |v| {
                    key(v, 1).insert("kid".into(), json!(7));
                },
                "issuers[1].keys[0].kid",
            ),
            (
                |v| {
                    key(v, 1).insert("kid".into(), json!(""));
                },
                "issuers[1].keys[0].kid",
            ),
        ];
        for (f, field) in cases {
            assert_eq!(refusal_with(f), (KeyFormatInvalid, field.to_string()));
        }
    }

    #[test]
    fn identifiers_text_and_timestamps() {
        use ErrorCode::*;
        for bad in [
            "b".repeat(47),
            "b-1\u{200b}".into(),
            "-b".into(),
            "b 1".into(),
        ] {
            assert_eq!(
                refusal_with(|v| v["bundleId"] = json!(bad.clone())),
                (SchemaInvalid, "bundleId".into()),
                "{bad:?}"
            );
        }
        assert_eq!(
            refusal_with(|v| v["merchant"] = json!("did:web:\u{202e}x")),
            (SchemaInvalid, "merchant".into())
        );
        assert_eq!(
            refusal_with(|v| v["geography"]["countryCodes"][0] = json!("D\u{200d}E")),
            (SchemaInvalid, "geography.countryCodes[0]".into())
        );
        assert_eq!(
            refusal_with(|v| v["expiresAt"] = json!("2026-06-01T18:00:00+00:00")),
            (TimestampInvalid, "expiresAt".into())
        );
    }
}
