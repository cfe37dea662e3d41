//! Policy documents: the policy a grant is issued from. The spec leaves their content open;
//! the appliance needs `version` (the hash domain) and reads the project's lifetime bound.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{check_version, from_value};
use crate::canonical::{Domain, domain_digest};
use crate::error::{Error, ErrorCode, Result};

/// A policy document. Every member is preserved; `policyHash` covers the document as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDocument {
    /// Artifact version ("1.0"): selects the hash domain.
    pub version: String,
    /// Project extension: the longest grant lifetime (seconds) this policy allows.
    #[serde(
        rename = "maxGrantLifetimeSeconds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_grant_lifetime_seconds: Option<u64>,
    /// Every other member, as given.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl PolicyDocument {
    /// Parses and validates a policy document from a strict value.
    pub fn from_value(value: &Value) -> Result<PolicyDocument> {
        let doc: PolicyDocument = from_value(value, "policy document")?;
        check_version(&doc.version)?;
        if doc.max_grant_lifetime_seconds == Some(0) {
            return Err(Error::field(
                ErrorCode::SchemaInvalid,
                "maxGrantLifetimeSeconds",
                "maxGrantLifetimeSeconds must be >= 1",
            ));
        }
        Ok(doc)
    }

    /// `policyHash` = lowercase hex SHA-256("MPCP:Policy:{version}:" || canonical_json(doc)),
    /// computed over the value as given (not a re-serialisation).
    pub fn policy_hash(value: &Value) -> Result<String> {
        let doc = PolicyDocument::from_value(value)?;
        Ok(hex::encode(domain_digest(
            Domain::Policy,
            &doc.version,
            value,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l0_policy_vector() {
        let v = crate::canonical::parse_strict(br#"{"allowedRails":["xrpl"],"version":"1.0"}"#)
            .unwrap();
        assert_eq!(
            PolicyDocument::policy_hash(&v).unwrap(),
            "b807638320a19a14cc769ccfa37f82998c850eb863074c3b8170c284dce5a711"
        );
        let bad = crate::canonical::parse_strict(br#"{"version":"9"}"#).unwrap();
        assert_eq!(
            PolicyDocument::policy_hash(&bad).unwrap_err().code,
            ErrorCode::VersionUnsupported
        );
    }
}
