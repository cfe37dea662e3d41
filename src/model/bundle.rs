//! Trust Bundles: signed sets of approved issuers and their keys for offline verifiers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{check_id, check_version, from_value, parse_time, parse_window};
use crate::error::{Error, ErrorCode, Result};
use crate::jwk::Jwk;

/// Longest lifetime any bundle may have (low-assurance IoT profile). Issuance applies the
/// stricter per-profile bounds of policies/; a verifier refuses anything beyond this.
pub const MAX_BUNDLE_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Geographic scope of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Geography {
    /// Region name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// ISO 3166 country codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct TrustBundle {
    pub version: String,
    pub bundle_id: String,
    pub bundle_issuer: String,
    pub bundle_key_id: String,
    pub category: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geography: Option<Geography>,
    pub approved_issuers: Vec<String>,
    pub issuers: Vec<TrustBundleIssuer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
    pub expires_at: String,
    /// Grants revoked before this bundle was issued (for offline verifiers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_grant_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Members this implementation does not interpret, preserved exactly.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl TrustBundle {
    /// Parses and validates a bundle from a strict value.
    pub fn from_value(value: &Value) -> Result<TrustBundle> {
        let b: TrustBundle = from_value(value, "TrustBundle")?;
        b.validate()?;
        Ok(b)
    }

    /// Validates structure: every embedded issuer approved, every key public and active,
    /// timestamps, lifetime within [`MAX_BUNDLE_LIFETIME`].
    pub fn validate(&self) -> Result<()> {
        check_version(&self.version)?;
        check_id(&self.bundle_id, "bundleId")?;
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
