//! DestinationAllowlist: a project extension (not in the MPCP spec). A signed, versioned list
//! of XRPL destinations a gateway may pay, hashed under `MPCP:DestinationAllowlist:1.0:` with
//! the same canonicalisation and signature convention as spec artifacts. Closed schema.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{check_id, check_identifier, check_text_tree, check_version, from_value, parse_window};
use crate::error::{Error, ErrorCode, Result};
use crate::xrpl::validate_classic_address;

/// Largest number of destinations in one allowlist.
pub const MAX_DESTINATIONS: usize = 10_000;

/// A signed destination allowlist version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationAllowlist {
    /// "1.0".
    pub version: String,
    /// Stable identifier of the list across versions.
    pub allowlist_id: String,
    /// The PA identifier.
    pub issuer: String,
    /// kid of the grant-signing key that signed this version.
    pub issuer_key_id: String,
    /// XRPL classic addresses, unique.
    pub destinations: Vec<String>,
    /// RFC 3339 issuance time.
    pub issued_at: String,
    /// RFC 3339 expiry.
    pub expires_at: String,
    /// Monotonic version number (>= 1); a gateway keeps the highest it has seen.
    pub sequence: u64,
    /// base64url signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl DestinationAllowlist {
    /// Parses and validates an allowlist from a strict value (no control or format
    /// character in any string or member name, then [`DestinationAllowlist::validate`]).
    pub fn from_value(value: &Value) -> Result<DestinationAllowlist> {
        check_text_tree(value)?;
        let a: DestinationAllowlist = from_value(value, "DestinationAllowlist")?;
        a.validate()?;
        Ok(a)
    }

    /// Validates every member (allowlistId by the identifier rule).
    pub fn validate(&self) -> Result<()> {
        check_version(&self.version)?;
        check_identifier(&self.allowlist_id, "allowlistId")?;
        check_id(&self.issuer, "issuer")?;
        check_id(&self.issuer_key_id, "issuerKeyId")?;
        parse_window(&self.issued_at, &self.expires_at)?;
        if self.sequence < 1 {
            return Err(Error::field(
                ErrorCode::SchemaInvalid,
                "sequence",
                "sequence must be >= 1",
            ));
        }
        if self.destinations.len() > MAX_DESTINATIONS {
            return Err(Error::field(
                ErrorCode::SchemaInvalid,
                "destinations",
                format!("at most {MAX_DESTINATIONS} destinations"),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, d) in self.destinations.iter().enumerate() {
            let field = format!("destinations[{i}]");
            validate_classic_address(d, &field)?;
            if !seen.insert(d) {
                return Err(Error::field(
                    ErrorCode::SchemaInvalid,
                    field,
                    format!("duplicate destination {d}"),
                ));
            }
        }
        Ok(())
    }
}
